"""`swarm status` on a swarm stalled for want of peers names the nodes it waits for."""

from __future__ import annotations

import json
import subprocess
import sys
import time

from swarm.network.sn_client import SNClient
from swarm_testing import REPO, free_port

SIDECAR = "tests/sl/digits_numpy_sidecar.py"


def status(site, sn, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "swarm.cli.status", "--sn", sn.target,
                           *site.tls_args("swci"), *extra], cwd=REPO, capture_output=True,
                          text=True, timeout=60)


def test_status_of_a_stalled_swarm_names_the_missing_nodes(sites, start_sn, start_sl):
    alpha, beta, gamma = sites
    sn = start_sn(alpha)
    # gamma's SL node registers, then goes quiet before its first round: min_peers is 3,
    # so alpha and beta wait for it.
    gamma_id = gamma.material("sl").identity.node_id
    with SNClient(sn.target, gamma.material("sl"), retry_s=0) as client:
        client.register(f"127.0.0.1:{free_port()}")
    nodes = []
    for index, site in enumerate((alpha, beta)):
        env = {"NODE_INDEX": str(index), "NUM_NODES": "3", "MAX_EPOCHS": "2",
               "MIN_PEERS": "3"}
        nodes.append(start_sl(site, sn, SIDECAR, env)[0])
    checked = sorted(site.material("sl").identity.node_id for site in (alpha, beta))

    deadline = time.monotonic() + 120
    while True:
        done = status(alpha, sn, "--json")
        assert done.returncode == 0, done.stderr
        snap = json.loads(done.stdout)
        current = snap["current"]
        if current and current["checked_in"] == checked and (current["waiting_s"] or 0) >= 2:
            break
        assert time.monotonic() < deadline, snap
        time.sleep(1)
    assert current["round"] == 1 and current["missing"] == [gamma_id]
    assert current["short_by"] == 1 and snap["session"]["min_peers"] == 3
    assert not snap["rounds"] or snap["rounds"][-1]["state"] == "open"

    shown = status(alpha, sn)
    assert shown.returncode == 0, shown.stderr
    text = shown.stdout
    assert "round 1: waiting" in text and f"for {gamma_id}" in text, text
    [row] = [line for line in text.splitlines() if line.strip().startswith("waiting for")]
    assert gamma_id in row, text
    for node_id in checked:
        assert node_id in text
    # --watch off a terminal prints a full status per refresh until stopped.
    try:
        subprocess.run([sys.executable, "-m", "swarm.cli.status", "--sn", sn.target,
                        *alpha.tls_args("swci"), "--watch", "--interval", "0.5"], cwd=REPO,
                       capture_output=True, text=True, timeout=6)
        raise AssertionError("--watch ended by itself")
    except subprocess.TimeoutExpired as stopped:
        watched = (stopped.stdout or b"").decode()
    assert watched.count("recent rounds") >= 2 and gamma_id in watched, watched
    # run-sl shows the same line, as plain `progress:` lines when not on a terminal.
    line = nodes[0].wait_for("progress: round 1: waiting", timeout_s=60)
    assert gamma_id in line

    # A certificate of the wrong role is refused with a line saying so.
    wrong = subprocess.run([sys.executable, "-m", "swarm.cli.status", "--sn", sn.target,
                            *alpha.tls_args("sl")], cwd=REPO, capture_output=True, text=True,
                           timeout=60)
    assert wrong.returncode == 2 and "needs an swci-INDEX-cert.pem" in wrong.stderr
