"""run-sl --ml-image says in one line what is wrong before any node starts: no engine,
an engine whose daemon does not answer, an image that is not there, a volume path that
does not exist; and the container command keeps docker's volume options (:ro)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from sl_node.sidecar import SidecarSpec, container_command, parse_volume
from swarm_testing import REPO


def run_sl(site, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sl_node.cli", *site.tls_args("sl"),
                           "--ml-cmd", "train.py", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=120, env={**os.environ, **(env or {})})


def test_ro_and_other_volume_options_reach_the_engine(tmp_path):
    spec = SidecarSpec(cmd=["train.py"], image="swarm-ml:numpy", engine="podman",
                       volumes=[parse_volume(f"{tmp_path}:/data:ro"),
                                parse_volume(f"{tmp_path}:/model")])
    argv = container_command(spec, Path("/var/swarm/sl-1/sl.sock"))
    assert f"{tmp_path}:/data:ro" in argv and f"{tmp_path}:/model" in argv
    assert "--init" in argv and argv[-2:] == ["swarm-ml:numpy", "train.py"]
    assert "--rm" in argv
    kept = container_command(SidecarSpec(cmd=[], image="i", keep=True), Path("/s/sl.sock"))
    assert "--rm" not in kept  # --ml-keep


def test_a_volume_path_that_does_not_exist_is_named(sites, tmp_path):
    missing = tmp_path / "no-such-dir"
    done = run_sl(sites[0], "--ml-image", "swarm-ml:numpy", "--ml-v", f"{missing}:/data:ro")
    assert done.returncode == 2
    assert f"{missing} does not exist on this host" in done.stderr
    relative = run_sl(sites[0], "--ml-v", f"{tmp_path}:data")
    assert relative.returncode == 2 and "must be absolute" in relative.stderr


def test_no_engine_at_all_is_one_line(sites, tmp_path):
    done = run_sl(sites[0], "--ml-image", "swarm-ml:numpy", "--data-dir", str(tmp_path),
                  env={"PATH": str(tmp_path)})  # neither docker nor podman on PATH
    assert done.returncode == 1
    error = done.stderr.strip().splitlines()[-1]
    assert error.startswith("run-sl: error: no container engine answers for --ml-image")
    assert "docker: not installed" in error and "podman: not installed" in error


@pytest.mark.skipif(not shutil.which("docker"), reason="needs the docker client")
def test_a_docker_client_without_a_daemon_is_named_or_passed_over(engine, sites, tmp_path):
    down = {"DOCKER_HOST": f"unix://{tmp_path}/no-daemon.sock"}
    asked = run_sl(sites[0], "--ml-image", "swarm-ml:numpy", "--ml-engine", "docker",
                   "--data-dir", str(tmp_path / "a"), env=down)
    assert asked.returncode == 1
    assert "run-sl: error: --ml-engine docker:" in asked.stderr
    assert "no-daemon.sock" in asked.stderr  # docker's own reason, one line
    # Without --ml-engine the daemon-less docker is passed over for podman, which answers
    # (and then says the image is missing: proof that podman was asked).
    auto = run_sl(sites[0], "--ml-image", "swarm-ml:no-such-image", "--data-dir",
                  str(tmp_path / "b"), env=down)
    assert auto.returncode == 1
    assert "--ml-image swarm-ml:no-such-image: no such image in podman" in auto.stderr


def test_a_missing_image_is_named_before_any_node_starts(engine, sites, tmp_path):
    done = run_sl(sites[0], "--ml-image", "swarm-ml:no-such-image", "--ml-engine", engine,
                  "--data-dir", str(tmp_path))
    assert done.returncode == 1
    assert (f"run-sl: error: --ml-image swarm-ml:no-such-image: no such image in {engine}"
            in done.stderr)
    assert "build-images.sh" in done.stderr
