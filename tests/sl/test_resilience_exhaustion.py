"""An authenticated peer parking WaitRound calls on the SN cannot stop the swarm."""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest

from swarm.network.sn_client import SNClient, SwarmNetworkError
from swarm.protos import sn_api_pb2 as pb

pytestmark = pytest.mark.slow  # real swarms for tens of seconds: -m "not slow" skips them
SIDECAR = "tests/sl/digits_numpy_sidecar.py"


def test_forty_parked_wait_rounds_do_not_stop_a_three_node_swarm(sites, start_sn, start_sl,
                                                                tmp_path):
    alpha, beta, gamma = sites
    sn = start_sn(alpha, None, "--round-grace", "1")
    nodes = []
    for index, site in enumerate(sites):
        env = {"NODE_INDEX": str(index), "NUM_NODES": "3", "MAX_EPOCHS": "4",
               "MIN_PEERS": "3", "SYNC_FREQUENCY": "4",
               "MODEL_DIR": str(tmp_path / f"model-{index}")}
        nodes.append(start_sl(site, sn, SIDECAR, env)[0])
    nodes[0].wait_for("round 1 merged", timeout_s=180)

    # The attacker: an administrator's (swci) certificate, valid and authorised for WaitRound.
    attacker = SNClient(sn.target, alpha.material("swci"), timeout_s=30, retry_s=0)
    outcomes: list[str] = []
    lock = threading.Lock()
    done = threading.Event()

    def park(far: bool) -> None:
        while not done.is_set():
            last = attacker.status().last_sealed_round
            target = last + 10**6 if far else last + 1
            try:
                attacker.wait_round(target, timeout_s=120)
                outcome = "returned"
            except SwarmNetworkError as error:
                outcome = pb.Reason.Name(error.reason)
                if error.code not in (grpc.StatusCode.FAILED_PRECONDITION,
                                      grpc.StatusCode.RESOURCE_EXHAUSTED):
                    outcome = f"{error.code.name}: {error}"
            with lock:
                outcomes.append(outcome)

    with ThreadPoolExecutor(40) as pool:
        calls = [pool.submit(park, far=i % 2 == 0) for i in range(40)]
        for proc in nodes:
            assert proc.wait_exit(300) == 0, proc.output[-4000:]
        done.set()
        attacker.close()
        for call in calls:
            call.exception(timeout=150)
    results = [json.loads((tmp_path / f"model-{i}" / "result.json").read_text())
               for i in range(3)]
    assert len({r["weights_sha256"] for r in results}) == 1, results
    assert results[0]["rounds"] >= 3
    # Far-future rounds were refused at once; of the near ones, a few waited, the rest BUSY.
    assert outcomes.count("TOO_FAR_AHEAD") >= 20, outcomes[:50]
    assert outcomes.count("BUSY") >= 10, outcomes[:50]
    assert sn.proc.proc.poll() is None
