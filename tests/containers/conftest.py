"""Container fixtures: a container engine that runs (set up here when it is missing and
we are root), the images built once per machine (docker/build-images.sh skips an image
already built from the same sources), and run-sl command lines with --ml-image."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from swarm_testing import REPO, SN, NodeProcess

from container_testing import run_sl_container_argv, unique

ENGINE = "podman"
SETUP = REPO / "docker" / "setup-podman.sh"
BUILD = REPO / "docker" / "build-images.sh"
IMAGES = {"numpy": "swarm-ml:numpy", "torch": "swarm-ml:torch", "node": "swarm-node:latest"}


def _engine_runs() -> str | None:
    """Why podman cannot run a container here, or None."""
    if not shutil.which(ENGINE):
        return f"{ENGINE} is not installed"
    try:
        run = subprocess.run([ENGINE, "run", "--rm", "python:3.11-slim", "true"],
                             capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        return f"`{ENGINE} run` did not finish within 120 s"
    return None if run.returncode == 0 else (run.stderr.strip().splitlines() or ["?"])[-1]


@pytest.fixture(scope="session")
def engine() -> str:
    """podman, working: set up by docker/setup-podman.sh (idempotent) when it does not run
    yet and we are root; skipped only where no engine can run (not root, nothing set up)."""
    problem = _engine_runs()
    if problem and os.geteuid() == 0:
        setup = subprocess.run(["bash", str(SETUP)], capture_output=True, text=True, timeout=1800)
        assert setup.returncode == 0, f"docker/setup-podman.sh failed:\n{setup.stdout}\n{setup.stderr}"
        problem = _engine_runs()
        assert problem is None, f"podman set up but cannot run a container: {problem}"
    if problem:
        pytest.skip(f"no container engine here ({problem}); setting podman up needs root: "
                    f"run `make containers` (docker/setup-podman.sh) as root")
    return ENGINE


def build(engine: str, name: str) -> str:
    done = subprocess.run(["bash", str(BUILD), name], capture_output=True, text=True,
                          timeout=3600, env={**os.environ, "ENGINE": engine,
                                             "PYTHON": sys.executable})
    assert done.returncode == 0, f"docker/build-images.sh {name} failed:\n{done.stdout}\n{done.stderr}"
    return IMAGES[name]


@pytest.fixture(scope="session")
def numpy_image(engine) -> str:
    return build(engine, "numpy")


@pytest.fixture(scope="session")
def torch_image(engine) -> str:
    return build(engine, "torch")


@pytest.fixture
def remove_containers(engine):
    """Names to remove at the end of the test, whatever happened in it."""
    names: list[str] = []
    yield names
    for name in names:
        subprocess.run([engine, "rm", "-f", name], capture_output=True, timeout=60)


PODMAN_SOCKET = "/run/podman/podman.sock"


def _api_answers() -> bool:
    try:
        ping = subprocess.run(["curl", "-s", "--max-time", "5", "--unix-socket", PODMAN_SOCKET,
                               "http://d/_ping"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return ping.stdout.strip() == "OK"


@pytest.fixture(scope="session")
def compose(engine) -> dict[str, str]:
    """docker-compose (Debian's 1.29) against podman's Docker API: the environment to run
    it with. Set up (setup-podman.sh --compose --service) when missing and we are root."""
    if (not shutil.which("docker-compose") or not _api_answers()) and os.geteuid() == 0:
        setup = subprocess.run(["bash", str(SETUP), "--compose", "--service"],
                               capture_output=True, text=True, timeout=1800)
        assert setup.returncode == 0, f"setup-podman.sh --compose --service failed:\n{setup.stderr}"
    if not shutil.which("docker-compose") or not _api_answers():
        pytest.skip("docker-compose or podman's Docker API is missing; setting them up needs "
                    "root: run `make containers` as root")
    return {**os.environ, "DOCKER_HOST": f"unix://{PODMAN_SOCKET}"}


@pytest.fixture(scope="session")
def docker_api(engine) -> dict[str, str]:
    """podman's Docker API and the Docker SDK (the `docker` extra): the environment that
    points run-sl --ml-engine docker-sdk at it. Set up (setup-podman.sh --service) when the
    API does not answer and we are root."""
    try:
        import docker
    except ImportError:
        docker = None
    if not hasattr(docker, "DockerClient"):  # not installed: this repository's docker/
        pytest.skip("the Docker SDK is not installed (the `docker` extra: make venv)")
    if not _api_answers() and os.geteuid() == 0:
        setup = subprocess.run(["bash", str(SETUP), "--service"], capture_output=True,
                               text=True, timeout=1800)
        assert setup.returncode == 0, f"setup-podman.sh --service failed:\n{setup.stderr}"
    if not _api_answers():
        pytest.skip("podman's Docker API is not serving; setting it up needs root: run "
                    "`make containers` as root")
    return {**os.environ, "DOCKER_HOST": f"unix://{PODMAN_SOCKET}"}


@pytest.fixture(scope="session")
def node_image(engine) -> str:
    return build(engine, "node")


@dataclass
class ContainerSL:
    """An SL node process whose sidecar runs in a container named `name`."""

    proc: NodeProcess
    name: str
    data_dir: Path

    @property
    def sidecar_log(self) -> str:
        return (self.data_dir / "ml-sidecar.log").read_text()


@pytest.fixture
def container_sl(sites, start_sn, processes, remove_containers, tmp_path):
    """container_sl(image, engine, prefix, *ml_args, node=0, env=None, ml_env={}) -> ContainerSL:
    SL node `node` (on site `node`; the one sentinel started with the first) whose sidecar
    runs in `image` through `engine`, its container uniquely named from `prefix` and
    removed at the end whatever happened; `ml_env` pairs go in as --ml-e, `env` to run-sl."""
    sentinel: list[SN] = []

    def start(image: str, engine: str, prefix: str, *ml_args: str, node: int = 0,
              env: dict[str, str] | None = None,
              ml_env: dict[str, str] | None = None) -> ContainerSL:
        if not sentinel:
            sentinel.append(start_sn(sites[0]))
        name = unique(prefix)
        remove_containers.append(name)
        data_dir = tmp_path / f"sl-{node}"
        argv = run_sl_container_argv(
            sites[node], sentinel[0], data_dir, image, engine, "--ml-name", name, *ml_args,
            *[f"--ml-e={key}={value}" for key, value in (ml_env or {}).items()])
        return ContainerSL(processes(argv, env), name, data_dir)

    return start
