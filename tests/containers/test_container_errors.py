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

from sl_node.sidecar import (SDK_ENGINE, SidecarSpec, container_command, container_config,
                             parse_volume)
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


def test_the_sdk_container_means_what_the_cli_flags_mean(tmp_path):
    spec = SidecarSpec(cmd=["train.py", "--epochs", "2"], entrypoint=["python", "-u"],
                       image="swarm-ml:numpy", engine=SDK_ENGINE, name="ml-1", workdir="/job",
                       env={"A": "1"}, volumes=[parse_volume(f"{tmp_path}:/data:ro")])
    config = container_config(spec, Path("/var/swarm/sl-1/sl.sock"))
    assert config["volumes"] == ["/var/swarm/sl-1:/swarm-sl", f"{tmp_path}:/data:ro"]
    assert config["environment"] == {"SWARM_SL_ADDRESS": "unix:///swarm-sl/sl.sock", "A": "1"}
    assert config["entrypoint"] == ["python"]
    assert config["command"] == ["-u", "train.py", "--epochs", "2"]
    assert config["init"] and config["auto_remove"] and config["working_dir"] == "/job"
    image_default = container_config(SidecarSpec(cmd=[], image="i", keep=True), Path("/s/sl.sock"))
    assert image_default["entrypoint"] is None and image_default["command"] is None
    assert not image_default["auto_remove"]  # --ml-keep


def test_the_sdk_not_installed_is_one_line(sites, tmp_path):
    shim = tmp_path / "shim"
    shim.mkdir()  # `import docker` fails as it does where the package is not installed
    (shim / "docker.py").write_text("raise ImportError(\"No module named 'docker'\")\n")
    done = run_sl(sites[0], "--ml-image", "swarm-ml:numpy", "--ml-engine", SDK_ENGINE,
                  "--data-dir", str(tmp_path / "sl"),
                  env={"PYTHONPATH": f"{shim}:{os.environ.get('PYTHONPATH', '')}"})
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == (
        "run-sl: error: --ml-engine docker-sdk: the Docker SDK is not installed "
        "(pip install docker==7.1.0, the project's `docker` extra)")


def test_a_docker_api_that_does_not_answer_is_one_line(sites, tmp_path):
    pytest.importorskip("docker.errors", reason="needs the Docker SDK (the docker extra)")
    socket = tmp_path / "no-daemon.sock"
    done = run_sl(sites[0], "--ml-image", "swarm-ml:numpy", "--ml-engine", SDK_ENGINE,
                  "--data-dir", str(tmp_path / "sl"), env={"DOCKER_HOST": f"unix://{socket}"})
    assert done.returncode == 1
    error = done.stderr.strip().splitlines()
    assert len(error) == 1, done.stderr
    assert error[0].startswith(f"run-sl: error: --ml-engine docker-sdk: no Docker API answers "
                               f"at unix://{socket}: ")
    assert "set DOCKER_HOST" in error[0]


def test_a_missing_image_through_the_sdk_is_named(docker_api, sites, tmp_path):
    done = run_sl(sites[0], "--ml-image", "swarm-ml:no-such-image", "--ml-engine", SDK_ENGINE,
                  "--data-dir", str(tmp_path), env={"DOCKER_HOST": docker_api["DOCKER_HOST"]})
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1].startswith(
        f"run-sl: error: --ml-image swarm-ml:no-such-image: no such image at "
        f"{docker_api['DOCKER_HOST']} (build it")
