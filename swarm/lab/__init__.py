"""The experiment lab: task runners (tasks, inproc, launch) and the sweep around them."""
