"""run-sl (and the sidecar launcher it starts) stops on the first SIGTERM or SIGINT."""

from __future__ import annotations

import os
import signal
import time

from swarm_testing import SN, free_port

SIDECAR = "tests/sl/digits_numpy_sidecar.py"
STOP_WITHIN_S = 20.0


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().rsplit(")", 1)[1].split()[0] == "Z"


def sidecar_pid(sl_pid: int) -> int:
    children = open(f"/proc/{sl_pid}/task/{sl_pid}/children").read().split()
    assert len(children) == 1, children
    return int(children[0])


def test_run_sl_retrying_an_absent_sn_stops_on_the_first_sigterm(sites, start_sl, tmp_path):
    nobody = SN(proc=None, api_port=free_port(), p2p_port=0, data_dir=tmp_path)
    env = {"NODE_INDEX": "0", "NUM_NODES": "2", "MIN_PEERS": "2"}
    proc, _ = start_sl(sites[0], nobody, f"-m ml_sidecar {SIDECAR}", env)
    proc.wait_for("is unreachable", timeout_s=60)  # now in the SN client's retries
    assert proc.proc.poll() is None
    child = sidecar_pid(proc.proc.pid)
    started = time.monotonic()
    proc.proc.send_signal(signal.SIGTERM)
    assert proc.wait_exit(STOP_WITHIN_S) == 0, proc.output[-2000:]
    assert time.monotonic() - started < STOP_WITHIN_S
    deadline = time.monotonic() + 10
    while not gone(child) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert gone(child), "the sidecar launcher outlived its node"


def test_run_sl_mid_training_stops_on_the_first_sigint(sites, start_sn, start_sl, tmp_path):
    alpha, beta, _ = sites
    sn = start_sn(alpha)
    nodes = []
    for index, site in enumerate((alpha, beta)):
        env = {"NODE_INDEX": str(index), "NUM_NODES": "2", "MAX_EPOCHS": "200",
               "MIN_PEERS": "2", "MODEL_DIR": str(tmp_path / f"model-{index}")}
        nodes.append(start_sl(site, sn, f"-m ml_sidecar {SIDECAR}", env)[0])
    nodes[0].wait_for("round 2 merged", timeout_s=180)
    children = [sidecar_pid(proc.proc.pid) for proc in nodes]
    started = time.monotonic()
    for proc in nodes:
        proc.proc.send_signal(signal.SIGINT)
    for proc in nodes:
        proc.wait_exit(STOP_WITHIN_S)
    assert time.monotonic() - started < STOP_WITHIN_S
    deadline = time.monotonic() + 10
    while not all(gone(c) for c in children) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert all(gone(c) for c in children)
    assert sn.proc.proc.poll() is None
