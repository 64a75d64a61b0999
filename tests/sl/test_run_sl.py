"""run-sl: its command line, the sidecar launcher, and a node whose model differs."""

from __future__ import annotations

import subprocess
import time
import sys
from pathlib import Path

import numpy as np

from sl_node.sidecar import SidecarSpec, Volume, container_command, local_command, parse_volume

from swarm_testing import REPO

SYNTHETIC = "benchmarks/synthetic_sidecar.py"


def run_sl(*args: str):
    return subprocess.run([sys.executable, "-m", "sl_node.cli", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=60)


def test_run_sl_says_what_is_missing(sites):
    nothing_to_run = run_sl(*sites[0].tls_args("sl"))
    assert nothing_to_run.returncode == 2
    assert "say what the ML sidecar runs" in nothing_to_run.stderr
    wrong_role = run_sl(*sites[0].tls_args("sn"), "--ml-cmd", "x.py")
    assert wrong_role.returncode == 2
    assert "is a 'sn' certificate" in wrong_role.stderr and "sl-INDEX-cert.pem" in wrong_role.stderr
    bad_volume = run_sl(*sites[0].tls_args("sl"), "--ml-cmd", "x.py", "--ml-v", "nocolon")
    assert bad_volume.returncode == 2 and "--ml-v 'nocolon' is not SRC:DST" in bad_volume.stderr
    bad_env = run_sl(*sites[0].tls_args("sl"), "--ml-cmd", "x.py", "--ml-e", "NOVALUE")
    assert bad_env.returncode == 2 and "--ml-e 'NOVALUE' is not KEY=VALUE" in bad_env.stderr


def test_a_local_sidecar_sees_volume_paths_rewritten_to_the_host(tmp_path):
    src = tmp_path / "model"
    src.mkdir()
    spec = SidecarSpec(cmd=["train.py", "--out", "/tmp/test/model/run1"],
                       entrypoint=["python3"], workdir="/tmp/test/model",
                       env={"MODEL_DIR": "/tmp/test/model", "OTHER": "/elsewhere"},
                       volumes=[parse_volume(f"{src}:/tmp/test/model")])
    argv, env, workdir = local_command(spec, Path("/run/sl.sock"))
    assert argv == ["python3", "train.py", "--out", f"{src}/run1"]
    assert env["MODEL_DIR"] == str(src) and env["OTHER"] == "/elsewhere"
    assert workdir == str(src)
    assert env["SWARM_SL_ADDRESS"] == "unix:///run/sl.sock"


def test_a_container_sidecar_gets_the_socket_directory_mounted():
    spec = SidecarSpec(cmd=["train.py"], entrypoint=["python3"], workdir="/job",
                       env={"MAX_EPOCHS": "3"}, volumes=[Volume("/data/a", "/data")],
                       image="user/train:1", name="ml-1", engine="podman")
    argv = container_command(spec, Path("/var/swarm/sl-1/sl.sock"))
    assert argv[:3] == ["podman", "run", "--rm"]
    assert "/var/swarm/sl-1:/swarm-sl" in argv
    assert "SWARM_SL_ADDRESS=unix:///swarm-sl/sl.sock" in argv
    assert argv[argv.index("--entrypoint") + 1] == "python3"
    assert argv[-2:] == ["user/train:1", "train.py"]
    assert "MAX_EPOCHS=3" in argv and "/data/a:/data" in argv and "ml-1" in argv


def test_a_node_whose_model_differs_is_refused_when_its_sidecar_connects(sites, start_sn,
                                                                        start_sl):
    alpha, beta, _ = sites
    sn = start_sn(alpha)
    first, _ = start_sl(alpha, sn, SYNTHETIC,
                        {"NODE_INDEX": "0", "MIN_PEERS": "1", "ROUNDS": "2", "SHAPE": "64x10"})
    first.wait_for("sidecar (numpy) connected")
    other, _ = start_sl(beta, sn, SYNTHETIC,
                        {"NODE_INDEX": "1", "MIN_PEERS": "1", "ROUNDS": "2", "SHAPE": "64x12"})
    assert other.wait_exit(120) != 0
    assert "model differs from the swarm's" in other.output
    assert first.wait_exit(120) == 0, first.output[-2000:]


WEIGHTED_SIDECAR = """\
import os
import numpy as np
from swarm.callback import SwarmCallback
w = {"w": np.zeros(1000, np.float32)}
def set_w(new):
    w["w"] = np.array(new["w"], dtype=np.float32)
cb = SwarmCallback(lambda: w, set_w, syncFrequency=1, minPeers=2,
                   nodeWeightage=int(os.environ["NODE_WEIGHTAGE"]))
cb.on_train_begin()
# One batch of "training": each node's own values, merged by weight in the next round.
w["w"] = np.random.default_rng(int(os.environ["NODE_INDEX"])).standard_normal(1000).astype(np.float32)
cb.on_batch_end()
cb.on_train_end()
np.save(os.path.join(os.environ["MODEL_DIR"], "final.npy"), w["w"])
"""


def test_node_weightage_weights_the_merge(sites, start_sn, start_sl, tmp_path):
    alpha, beta, _ = sites
    sn = start_sn(alpha)
    sidecar = tmp_path / "weighted.py"
    sidecar.write_text(WEIGHTED_SIDECAR)
    nodes = []
    for index, (site, weightage) in enumerate(((alpha, 90), (beta, 10))):
        (tmp_path / f"m{index}").mkdir()
        env = {"NODE_INDEX": str(index), "NODE_WEIGHTAGE": str(weightage),
               "MODEL_DIR": str(tmp_path / f"m{index}")}
        nodes.append(start_sl(site, sn, str(sidecar), env)[0])
    for proc in nodes:
        assert proc.wait_exit(120) == 0, proc.output[-2000:]
    trained = [np.random.default_rng(i).standard_normal(1000).astype(np.float32) for i in (0, 1)]
    expected = (90 * trained[0].astype(np.float64) + 10 * trained[1]) / 100
    for index in (0, 1):
        final = np.load(tmp_path / f"m{index}" / "final.npy")
        np.testing.assert_allclose(final, expected, rtol=1e-6, atol=1e-6)


def test_sigterm_stops_run_sl_and_its_sidecar_promptly(sites, start_sn, start_sl, tmp_path):
    alpha, _, _ = sites
    sn = start_sn(alpha)
    pid_file = tmp_path / "sidecar.pid"
    sidecar = tmp_path / "sleeper.py"
    # A sidecar that connects nothing and would run for an hour.
    sidecar.write_text("import os, sys, time\n"
                       f"open({str(pid_file)!r}, 'w').write(str(os.getpid()))\n"
                       "print('sleeping', flush=True)\ntime.sleep(3600)\n")
    node, _ = start_sl(alpha, sn, str(sidecar), {})
    node.wait_for("sleeping")
    started = time.monotonic()
    node.proc.terminate()
    node.wait_exit(30)
    # Well under the 15 s grace a sidecar gets: the sleeper dies of its SIGTERM.
    assert time.monotonic() - started < 8, node.output
    sidecar_pid = int(pid_file.read_text())
    deadline = time.monotonic() + 5
    while Path(f"/proc/{sidecar_pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not Path(f"/proc/{sidecar_pid}").exists()
