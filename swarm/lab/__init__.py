"""The experiment lab: `swarm sweep` grids of swarm experiments, and the tasks they run."""
