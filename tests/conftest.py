"""Shared fixtures; the helpers they use live in swarm_testing.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from swarm_testing import SN, NodeProcess, Site, free_port, make_sites, run_sl_argv, run_sn_argv, READY


@pytest.fixture(scope="session")
def sites(tmp_path_factory) -> list[Site]:
    """Three sites that trust each other: alpha (1), beta (2), gamma (3)."""
    return make_sites(tmp_path_factory.mktemp("workspace"),
                      [("alpha", 1), ("beta", 2), ("gamma", 3)])


@pytest.fixture
def processes():
    """Starts NodeProcesses and stops every one of them at the end of the test."""
    started: list[NodeProcess] = []

    def start(argv: list[str], env: dict | None = None) -> NodeProcess:
        proc = NodeProcess(argv, env)
        started.append(proc)
        return proc

    yield start
    for proc in reversed(started):
        proc.stop()
    for proc in started:  # shown by pytest only when the test failed
        print(f"----- {' '.join(proc.argv[1:4])} … (exit {proc.proc.returncode})\n{proc.output}")


@pytest.fixture
def start_sn(processes, tmp_path):
    """start_sn(site, sentinel=None|SN, *extra) -> a ready SN node process."""
    count = [0]

    def start(site: Site, sentinel: SN | None = None, *extra: str,
              data_dir: Path | None = None, api_port: int | None = None,
              p2p_port: int | None = None, wait: bool = True) -> SN:
        count[0] += 1
        data_dir = data_dir or tmp_path / f"sn{count[0]}"
        api_port, p2p_port = api_port or free_port(), p2p_port or free_port()
        role = (["--sentinel"] if sentinel is None else
                ["--sentinel-ip", "127.0.0.1", "--sentinel-api-port", str(sentinel.api_port)])
        proc = processes(run_sn_argv(site, data_dir, api_port, p2p_port, *role, *extra))
        sn = SN(proc, api_port, p2p_port, data_dir)
        if wait:
            proc.wait_for(READY)
        return sn

    return start


@pytest.fixture
def start_sl(processes, tmp_path):
    """start_sl(site, sn, ml_cmd, ml_env, *extra) -> (NodeProcess, its data dir)."""

    def start(site: Site, sn: SN, ml_cmd: str, ml_env: dict[str, str], *extra: str,
              name: str | None = None):
        data_dir = tmp_path / (name or f"sl-{site.name}")
        # Never the sidecar's default ./model, which would land in the repository.
        ml_env = {"MODEL_DIR": str(data_dir / "model"), **ml_env}
        proc = processes(run_sl_argv(site, sn, data_dir, free_port(), ml_cmd, ml_env, *extra))
        return proc, data_dir

    return start
