"""Shared fixtures; the helpers they use live in swarm_testing.py."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from swarm_testing import (REPO, SN, NodeProcess, Site, free_port, make_sites, run_sl_argv,
                           run_sn_argv, READY)


@pytest.fixture(scope="session")
def sites(tmp_path_factory) -> list[Site]:
    """Three sites that trust each other: alpha (1), beta (2), gamma (3)."""
    return make_sites(tmp_path_factory.mktemp("workspace"),
                      [("alpha", 1), ("beta", 2), ("gamma", 3)])


@pytest.fixture
def processes():
    """Starts NodeProcesses and stops every one of them at the end of the test."""
    started: list[NodeProcess] = []

    def start(argv: list[str], env: dict | None = None) -> NodeProcess:
        proc = NodeProcess(argv, env)
        started.append(proc)
        return proc

    yield start
    for proc in reversed(started):
        proc.stop()
    for proc in started:  # shown by pytest only when the test failed
        print(f"----- {' '.join(proc.argv[1:4])} … (exit {proc.proc.returncode})\n{proc.output}")


@pytest.fixture
def start_sn(processes, tmp_path):
    """start_sn(site, sentinel=None|SN, *extra) -> a ready SN node process."""
    count = [0]

    def start(site: Site, sentinel: SN | None = None, *extra: str,
              data_dir: Path | None = None, api_port: int | None = None,
              p2p_port: int | None = None, wait: bool = True) -> SN:
        count[0] += 1
        data_dir = data_dir or tmp_path / f"sn{count[0]}"
        api_port, p2p_port = api_port or free_port(), p2p_port or free_port()
        role = (["--sentinel"] if sentinel is None else
                ["--sentinel-ip", "127.0.0.1", "--sentinel-api-port", str(sentinel.api_port)])
        proc = processes(run_sn_argv(site, data_dir, api_port, p2p_port, *role, *extra))
        sn = SN(proc, api_port, p2p_port, data_dir)
        if wait:
            proc.wait_for(READY)
        return sn

    return start


@pytest.fixture
def start_sl(processes, tmp_path):
    """start_sl(site, sn, ml_cmd, ml_env, *extra) -> (NodeProcess, its data dir)."""

    def start(site: Site, sn: SN, ml_cmd: str, ml_env: dict[str, str], *extra: str,
              name: str | None = None):
        data_dir = tmp_path / (name or f"sl-{site.name}")
        # Never the sidecar's default ./model, which would land in the repository.
        ml_env = {"MODEL_DIR": str(data_dir / "model"), **ml_env}
        proc = processes(run_sl_argv(site, sn, data_dir, free_port(), ml_cmd, ml_env, *extra))
        return proc, data_dir

    return start


# ---- a four-node swarm with one Byzantine participant --------------------------------
# (tests/sl/test_byzantine_swarm.py on one SN, test_byzantine_two_sn.py on two)

BYZANTINE_SIDECAR = "tests/sl/digits_numpy_sidecar.py"


@pytest.fixture(scope="session")
def four_sites(tmp_path_factory) -> list[Site]:
    return make_sites(tmp_path_factory.mktemp("four"),
                      [("alpha", 1), ("beta", 2), ("gamma", 3), ("delta", 4)])


@pytest.fixture
def byzantine_swarm(four_sites, processes, tmp_path):
    """run(sns, fault) starts four SL nodes (node i on sns[i % len(sns)]), the fourth
    (delta) with SWARM_FAULTS=fault; waits for the three honest ones, checks they exited
    0 with identical weights and that the fourth misbehaved; -> (honest, byzantine)."""

    def run(sns: list[SN], fault: str) -> tuple[list[NodeProcess], NodeProcess]:
        nodes = []
        for index, site in enumerate(four_sites):
            env = {"NODE_INDEX": str(index), "NUM_NODES": "4", "MAX_EPOCHS": "6",
                   "MIN_PEERS": "3", "SYNC_FREQUENCY": "2",
                   "MODEL_DIR": str(tmp_path / f"model-{index}")}
            argv = run_sl_argv(site, sns[index % len(sns)], tmp_path / f"sl-{index}",
                               free_port(), BYZANTINE_SIDECAR, env, "--peer-timeout", "2")
            nodes.append(processes(argv, env={"SWARM_FAULTS": fault} if index == 3 else None))
        honest, byzantine = nodes[:3], nodes[3]
        for proc in honest:
            assert proc.wait_exit(400) == 0, proc.output[-3000:]
        results = [json.loads((tmp_path / f"model-{i}" / "result.json").read_text())
                   for i in range(3)]
        assert len({r["weights_sha256"] for r in results}) == 1, results
        assert "EXPERIMENT: this node misbehaves on purpose" in byzantine.output
        return honest, byzantine

    return run


# ---- anvil ---------------------------------------------------------------------------
# `.bin/anvil` is a Node wrapper that spawns the real binary: killing the wrapper alone
# (SIGKILL is not forwarded) left the binary running after the suite. So anvil runs in
# its own process group, stopped as a group, and every group is checked empty.

ANVIL_START_TIMEOUT_S = 30.0
_anvil_groups: list[int] = []  # every anvil process group this session started


def anvil_binary() -> str | None:
    local = REPO / ".tools" / "node_modules" / ".bin" / "anvil"
    return str(local) if local.exists() else shutil.which("anvil")


def process_group(pgid: int) -> list[int]:
    """The live (not zombie) processes of group `pgid`, from /proc."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z" and int(fields[2]) == pgid:  # state, ppid, pgrp
            members.append(int(entry.name))
    return members


def _stop_group(proc: subprocess.Popen, timeout_s: float = 10.0) -> None:
    """SIGTERM to the whole group, SIGKILL past the timeout; fails if any member survives."""
    pgid = proc.pid
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, sig)
        deadline = time.monotonic() + timeout_s / 2
        while time.monotonic() < deadline:
            proc.poll()  # reaps the wrapper (our child) so it does not linger as a zombie
            if not process_group(pgid):
                return
            time.sleep(0.05)
    raise AssertionError(f"anvil process group {pgid} survives SIGKILL: {process_group(pgid)}")


@dataclass(frozen=True)
class Anvil:
    url: str
    pgid: int  # its process group: the wrapper and the binary it spawns

    def processes(self) -> list[int]:
        """The group's live processes (none once run_anvil has exited)."""
        return process_group(self.pgid)


@contextlib.contextmanager
def run_anvil() -> Iterator[Anvil]:
    """A fresh anvil on a free port, stopped (as a process group) on exit; skips the
    test when anvil is not installed."""
    binary = anvil_binary()
    if binary is None:
        pytest.skip("anvil binary not found (.tools/node_modules/.bin/anvil or PATH); run `make tools`")
    port = free_port()
    proc = subprocess.Popen([binary, "--host", "127.0.0.1", "--port", str(port), "--silent"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    _anvil_groups.append(proc.pid)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + ANVIL_START_TIMEOUT_S
        request = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "eth_chainId"}).encode()
        while True:
            try:
                urllib.request.urlopen(urllib.request.Request(
                    url, request, {"Content-Type": "application/json"}), timeout=2).read()
                break
            except OSError:
                assert proc.poll() is None, f"anvil exited: {proc.stderr.read().decode(errors='replace')}"
                assert time.monotonic() < deadline, "anvil did not start"
                time.sleep(0.05)
        yield Anvil(url, proc.pid)
    finally:
        _stop_group(proc)
        proc.stderr.close()


@pytest.fixture(scope="module")
def anvil_url() -> Iterator[str]:
    """One anvil shared by a test module (tests deploy their own contracts on it)."""
    with run_anvil() as anvil:
        yield anvil.url


@pytest.fixture
def start_anvil():
    """run_anvil itself, for a test that checks what stopping anvil leaves behind."""
    return run_anvil


@pytest.fixture(scope="session", autouse=True)
def no_anvil_left() -> Iterator[None]:
    """Fails the session if any anvil it started still runs at its end."""
    yield
    left = {pgid: members for pgid in _anvil_groups if (members := process_group(pgid))}
    assert not left, f"anvil processes outlived their fixtures (group: pids): {left}"
