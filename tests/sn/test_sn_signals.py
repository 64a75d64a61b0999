"""run-sn stops on the first SIGTERM or SIGINT within seconds, in every state."""

from __future__ import annotations

import signal
import subprocess
import threading
import time

import pytest

from swarm.daemon import detached_nodes, stop_nodes
from swarm.network.sn_client import SNClient, SwarmNetworkError

from swarm_testing import READY, REPO, free_port, run_sn_argv

STOP_WITHIN_S = 15.0


def stops_at_once(proc, sig: int) -> float:
    started = time.monotonic()
    proc.proc.send_signal(sig)
    code = proc.wait_exit(STOP_WITHIN_S)
    assert code == 0, proc.output[-2000:]
    return time.monotonic() - started


def test_a_sentinel_restarted_after_sigkill_stops_on_the_first_sigterm(sites, start_sn):
    alpha, beta, _ = sites
    sentinel = start_sn(alpha)
    with SNClient(sentinel.target, beta.material("sl"), retry_s=0) as sl:
        sl.register("127.0.0.1:46002")
        sl.configure(2)
    sentinel.proc.kill(signal.SIGKILL)
    restarted = start_sn(alpha, None, data_dir=sentinel.data_dir, api_port=sentinel.api_port,
                         p2p_port=sentinel.p2p_port)
    # A node keeps a WaitRound parked and heartbeats, as SL nodes do.
    waiter = SNClient(restarted.target, beta.material("sl"), retry_s=0)
    parked = threading.Thread(target=lambda: _ignore(lambda: waiter.wait_round(1, 60)),
                              daemon=True)
    parked.start()
    waiter.heartbeat()
    time.sleep(1)
    assert stops_at_once(restarted.proc, signal.SIGTERM) < STOP_WITHIN_S
    parked.join(10)
    assert not parked.is_alive()
    waiter.close()


def _ignore(call) -> None:
    try:
        call()
    except SwarmNetworkError:
        pass


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_starting_sn_stops_on_the_first_signal(sites, start_sn, sig):
    """A joiner still waiting for its sentinel (nobody listens there) stops at once."""
    alpha, beta, _ = sites
    sentinel = start_sn(alpha)
    sentinel.proc.kill(signal.SIGKILL)  # the joiner now retries for its 30 s
    joiner = start_sn(beta, sentinel, wait=False)
    joiner.proc.wait_for("is unreachable", timeout_s=60)  # retrying its sentinel
    assert joiner.proc.proc.poll() is None
    assert READY not in joiner.proc.output
    stops_at_once(joiner.proc, sig)


def test_ctrl_c_while_run_sn_d_waits_stops_the_launcher_not_the_node(sites, tmp_path,
                                                                      monkeypatch):
    monkeypatch.setenv("SWARM_RUN_DIR", str(tmp_path / "run"))
    nobody = free_port()  # a sentinel that is not there: the joiner waits for it
    argv = run_sn_argv(sites[1], tmp_path / "sn", free_port(), free_port(), "--sentinel-ip",
                       "127.0.0.1", "--sentinel-api-port", str(nobody), "-d")
    launcher = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
    log = tmp_path / "sn" / "sn.log"
    deadline = time.monotonic() + 60
    while not (log.exists() and "is unreachable" in log.read_text()):
        assert time.monotonic() < deadline and launcher.poll() is None
        time.sleep(0.2)
    launcher.send_signal(signal.SIGINT)
    _, err = launcher.communicate(timeout=STOP_WITHIN_S)
    assert launcher.returncode == 130 and "stop it with `stop-swarm`" in err, err
    nodes = detached_nodes("sn")
    assert len(nodes) == 1  # the node runs on, and stop-swarm finds it
    assert stop_nodes(nodes, grace_s=STOP_WITHIN_S) == []  # its first SIGTERM stopped it
