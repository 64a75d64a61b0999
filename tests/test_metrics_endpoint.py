"""Prometheus /metrics on SN and SL nodes, scraped while a real two-node swarm trains; the
outcomes the SL nodes report reach the SN's read model."""

from __future__ import annotations

import time
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from swarm.network.sn_client import SNClient, SwarmNetworkError
from swarm_testing import free_port

SIDECAR = "tests/sl/digits_numpy_sidecar.py"


def scrape(port: int) -> dict[tuple[str, tuple], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_metrics_are_served_and_advance_during_a_real_swarm(sites, start_sn, start_sl):
    alpha, beta, gamma = sites
    sn_port, sl_port = free_port(), free_port()
    sn = start_sn(alpha, None, "--metrics-port", str(sn_port))
    nodes = []
    for index, site in enumerate((alpha, beta)):
        env = {"NODE_INDEX": str(index), "NUM_NODES": "2", "MAX_EPOCHS": "3", "MIN_PEERS": "2"}
        extra = ("--metrics-port", str(sl_port)) if index == 0 else ()
        nodes.append(start_sl(site, sn, SIDECAR, env, *extra)[0])

    # During training: the SL node's counters advance round by round.
    deadline = time.monotonic() + 240
    while True:
        try:
            sl = scrape(sl_port)
        except OSError:  # run-sl is still starting
            sl = {}
        if sl.get(("swarm_rounds_total", (("status", "merged"),)), 0) >= 2:
            break
        assert nodes[0].proc.poll() is None, nodes[0].output[-3000:]
        assert time.monotonic() < deadline, sl
        time.sleep(0.5)
    assert sl[("swarm_round_seconds_count", ())] >= 2
    assert sl[("swarm_bytes_sent_total", ())] > 0 and sl[("swarm_bytes_received_total", ())] > 0
    assert sl[("swarm_last_round", ())] >= 2

    # A check-in from a certificate the swarm never registered: refused, counted by reason.
    with SNClient(sn.target, gamma.material("sl"), retry_s=0) as outsider:
        try:
            outsider.check_in(1, 1, b"\x01" * 32)
        except SwarmNetworkError:
            pass
        else:
            raise AssertionError("an unregistered node's check-in was accepted")

    for proc in nodes:
        assert proc.wait_exit(300) == 0, proc.output[-3000:]
    snm = scrape(sn_port)
    merged = snm[("swarm_rounds_total", (("status", "merged"),))]
    assert merged >= 2 and snm[("swarm_round_seconds_count", ())] == merged
    # Bytes on the SN are the sum of what the SL nodes reported.
    assert snm[("swarm_bytes_sent_total", ())] > sl[("swarm_bytes_sent_total", ())]
    assert snm[("swarm_refused_updates_total", (("reason", "NOT_REGISTERED"),))] >= 1

    # The SN's read model holds both nodes' reports of each round, and who finished.
    with SNClient(sn.target, alpha.material("swci"), retry_s=10) as admin:
        view = admin.view()
    ids = sorted(site.material("sl").identity.node_id for site in (alpha, beta))
    assert sorted(view.finished_nodes) == ids and view.session.swarm_done
    reported = [r for r in view.rounds if r.state == "merged" and len(r.reports) == 2]
    assert reported, view.rounds
    for r in reported:
        assert sorted(o.node_id for o in r.reports) == ids == sorted(r.participants)
        assert r.bytes_sent > 0 and all(o.status == "merged" and o.agreed for o in r.reports)
        assert r.seal_wait_s is not None and r.merge_s is not None
