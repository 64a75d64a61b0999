"""The ML sidecar program: the launcher a site's training program runs under
(`python -m ml_sidecar train.py`), in a container or as a local process."""
