"""The examples' run scripts (through examples/common/launch.py) and compose files."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sl_node.cli import build_parser as sl_parser
from sn_node.cli import build_parser as sn_parser
from swarm.callback import FINAL_LOG_LINE
from swarm_testing import REPO

sys.path.insert(0, str(REPO / "examples" / "common"))
import launch  # noqa: E402

EXAMPLES = ["cifar10-keras", "cifar10-pytorch", "mnist-numpy", "cifar100-convnext"]
MNIST_RUN = REPO / "examples" / "mnist-numpy" / "run.sh"


def run_script(example: str, *args: str, timeout_s: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([str(REPO / "examples" / example / "run.sh"), *args], text=True,
                          capture_output=True, timeout=timeout_s,
                          env={**os.environ, "PYTHON": sys.executable})


@pytest.mark.parametrize("example", EXAMPLES)
def test_run_script_helps_and_dry_runs_the_swarm_it_would_start(example, tmp_path):
    helped = run_script(example, "--help")
    assert helped.returncode == 0 and "--local" in helped.stdout, helped.stderr
    run_dir = tmp_path / "run"
    dry = run_script(example, "--dry-run", "--run-dir", str(run_dir))
    assert dry.returncode == 0, dry.stderr
    commands = [shlex.split(line) for line in dry.stdout.splitlines()]
    programs = [Path(argv[0]).name for argv in commands]
    assert programs == ["gen-cert", "gen-cert", "run-sn", "run-sl", "run-sl"], dry.stdout
    for argv in commands[3:]:
        assert argv[argv.index("--ml-w") + 1] == str(REPO / "examples" / example)
        assert argv[argv.index("--ml-cmd") + 1] == "train.py"
    assert not run_dir.exists(), "a dry run creates nothing"


def test_run_script_attack_flags_reach_every_training_program(tmp_path):
    # The README's "Every example takes --attack KIND --poison-ratio R" meant run.sh too.
    dry = run_script("mnist-numpy", "--dry-run", "--run-dir", str(tmp_path / "run"),
                     "--attack", "signflip", "--poison-ratio", "0.25")
    assert dry.returncode == 0, dry.stderr
    sl = [shlex.split(line) for line in dry.stdout.splitlines() if "run-sl" in line]
    assert len(sl) == 2
    for argv in sl:
        env = [argv[i + 1] for i, arg in enumerate(argv) if arg == "--ml-e"]
        assert "ATTACK=signflip" in env and "POISON_RATIO=0.25" in env, env


def test_mnist_run_script_runs_a_two_node_swarm_then_the_local_baseline(tmp_path):
    run_dir, data_dir = tmp_path / "run", tmp_path / "data"
    common = ["--run-dir", str(run_dir), "--data-dir", str(data_dir), "--synth",
              "--port-base", "0", "-e", "MAX_EPOCHS=1", "-e", "TRAIN_SAMPLES=512"]
    swarm = run_script("mnist-numpy", *common)
    assert swarm.returncode == 0, swarm.stdout[-4000:]
    assert (data_dir / "mnist.npz").exists(), "--synth wrote the missing data file"
    for node in (1, 2):
        final = [line for line in swarm.stdout.splitlines() if FINAL_LOG_LINE in line]
        assert any(line.lstrip().startswith(f"sl-{node} |") for line in final), swarm.stdout
        metrics = json.loads((run_dir / f"model-{node}" / "metrics.json").read_text())
        assert metrics["mode"] == "swarm" and metrics["rounds"]
    assert "stopping SN node" in swarm.stdout  # the sentinel is stopped after the SL nodes
    local = run_script("mnist-numpy", *common, "--local")
    assert local.returncode == 0, local.stdout[-4000:]
    for node in (1, 2):
        metrics = json.loads((run_dir / f"local-model-{node}" / "metrics.json").read_text())
        assert metrics["mode"] == "local" and metrics["rounds"] == []


def processes_mentioning(text: str) -> list[int]:
    """Live processes whose command line or environment mentions `text`."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            if any(text.encode() in (proc / part).read_bytes() for part in ("cmdline", "environ")):
                found.append(int(proc.name))
        except OSError:
            continue
    return found


def test_ctrl_c_stops_the_sentinel_the_sl_nodes_and_their_sidecars(tmp_path):
    run_dir = tmp_path / "run"
    launcher = subprocess.Popen(
        [str(MNIST_RUN), "--run-dir", str(run_dir), "--data-dir", str(tmp_path / "data"),
         "--synth", "--port-base", "0", "-e", "MAX_EPOCHS=100000", "-e", "TRAIN_SAMPLES=256"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "PYTHON": sys.executable})
    try:
        for line in launcher.stdout:  # training is under way on both nodes
            if re.search(r"node-1 INFO: Epoch 2:", line):
                break
        assert len(processes_mentioning(str(run_dir))) >= 5  # launcher, SN, 2 SL, sidecars
        launcher.send_signal(signal.SIGINT)
        assert launcher.wait(60) == 130
    finally:
        if launcher.poll() is None:
            launcher.kill()
    deadline = time.monotonic() + 10
    while processes_mentioning(str(run_dir)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert processes_mentioning(str(run_dir)) == []


def compose_commands(path: Path) -> dict[str, list[str]]:
    """Each service's command in a compose file, as argv (folded `>-` blocks joined)."""
    commands, service, lines = {}, None, path.read_text().splitlines()
    for number, line in enumerate(lines):
        if re.match(r"^  [a-z0-9-]+:$", line):
            service = line.strip().rstrip(":")
        elif line.strip().startswith("command:"):
            text = line.split(":", 1)[1].strip()
            if text == ">-":
                block = []
                for follow in lines[number + 1:]:
                    if not follow.startswith("      "):
                        break
                    block.append(follow.strip())
                text = " ".join(block)
            commands[service] = shlex.split(text)
    return commands


def option_strings(parser) -> set[str]:
    return {option for action in parser._actions for option in action.option_strings}


@pytest.mark.parametrize("example", EXAMPLES)
def test_compose_file_uses_real_flags_paths_and_the_launchers_layout(example):
    compose = REPO / "examples" / example / "docker-compose.yml"
    text = compose.read_text()
    assert (REPO / "docker" / "Dockerfile").exists() and "dockerfile: docker/Dockerfile" in text
    commands = compose_commands(compose)
    assert set(commands) == {"certs", "sn-1", "sl-1", "sl-2"}
    known = {"run-sn": option_strings(sn_parser()), "run-sl": option_strings(sl_parser())}
    for service in ("sn-1", "sl-1", "sl-2"):
        argv = commands[service]
        flags = {token for token in argv if token.startswith("--")}
        assert flags <= known[argv[0]], (service, flags - known[argv[0]])
    certs = commands["certs"]
    assert certs[:2] == ["python", "examples/common/launch.py"]
    launch.parse_args(certs[2:])  # flags the launcher accepts
    sl = commands["sl-1"]
    workdir = sl[sl.index("--ml-w") + 1]
    assert workdir == f"/app/examples/{example}" and (REPO / "examples" / example / "train.py").exists()
    # Certificates where the launcher's --certs-only puts them.
    for role, service, site in (("sn", "sn-1", 1), ("sl", "sl-1", 1), ("sl", "sl-2", 2)):
        tls = launch.tls_args(Path("/swarm/run"), site, role)
        argv = commands[service]
        assert [argv[argv.index(flag) + 1] for flag in tls[::2]] == tls[1::2]
