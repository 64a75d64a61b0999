"""Control-plane figures of the Swarm Network, printed as a table.

- Sentinel start to the `Starting SWARM-API-SERVER` line (fresh ledger and restart).
- Ledger transactions per second (LedgerClient straight on the chain).
- Through the SN API, N SL clients per round: check-in RPC latency and seal latency
  (from the last check-in sent to every client holding the sealed round).
- In process, the sentinel's ledger thread over many rounds (N check-ins, the seal, one
  merged digest): JSON-RPC requests per round by method and CPU per round, which depend
  far less on how loaded the machine is than latencies do (only the number of event polls
  follows the clock). `--ledger-only` prints just these.

Runs real run-sn processes over mTLS on loopback, on the embedded chain, through a
joining SN (ledger reached via the sentinel), and on anvil when it is installed.

    .venv/bin/python benchmarks/sn_control_plane.py [--repeats 5] [--rounds 10] [--peers 8]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from certs.gen_cert import main as gen_cert  # noqa: E402
from swarm.identity import issue_node_certificate, write_pem_cert, write_pem_key  # noqa: E402
from swarm.lab.launch import (READY, SENTINEL_READY_TIMEOUT_S, NodeProcess, Site,  # noqa: E402
                              free_port, run_sn_argv)
from swarm.ledger import EmbeddedChain, connect_external, external_account, open_or_deploy  # noqa: E402
from swarm.network.sn_client import SNClient  # noqa: E402


class Workspace:
    """gen-cert's site 'bench' plus extra SL and SN certificates from the same CA."""

    def __init__(self, root: Path, peers: int):
        assert gen_cert(["-e", "bench", "-i", "1", "--out", str(root)]) == 0
        self.dir = root / "bench" / "cert"
        ca_key, ca_cert = self.site(1).ca()
        for index in range(2, peers + 1):
            for role in ("sl", "sn"):
                key, cert = issue_node_certificate(ca_key, ca_cert, role=role, index=index,
                                                   site="bench")
                write_pem_key(self.dir / f"{role}-{index}-key.pem", key)
                write_pem_cert(self.dir / f"{role}-{index}-cert.pem", cert)

    def site(self, index: int) -> Site:
        """The certificates of index `index` (all under the one CA)."""
        return Site("bench", index, self.dir)

    def tls_args(self, role: str, index: int) -> list[str]:
        return self.site(index).tls_args(role)

    def material(self, role: str, index: int):
        return self.site(index).material(role)


class SN:
    """A run-sn process (the launcher library's); `ready_s` is the time from spawn to
    its ready line."""

    def __init__(self, ws: Workspace, index: int, data_dir: Path, *extra: str):
        self.api_port, self.p2p_port = free_port(), free_port()
        argv = run_sn_argv(ws.site(index), data_dir, self.api_port, self.p2p_port,
                           "--log-level", "WARNING", *extra)
        started = time.perf_counter()
        self.proc = NodeProcess(argv, name=f"sn-{index}")
        self.proc.wait_for(READY, SENTINEL_READY_TIMEOUT_S)
        self.ready_s = time.perf_counter() - started

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.api_port}"

    def stop(self, kill: bool = False) -> None:
        if kill:
            self.proc.kill()
        else:
            self.proc.stop(30)


def bench_startup(ws: Workspace, tmp: Path, repeats: int) -> list[tuple]:
    fresh, restart = [], []
    for i in range(repeats):
        sn = SN(ws, 1, tmp / f"start{i}", "--sentinel")
        fresh.append(sn.ready_s)
        sn.stop(kill=True)
        again = SN(ws, 1, tmp / f"start{i}", "--sentinel")  # reopens the journaled chain
        restart.append(again.ready_s)
        again.stop()
    return [("sentinel start → ready line (fresh ledger)", fresh, "s"),
            ("sentinel start → ready line (restart, SIGKILLed before)", restart, "s")]


def bench_tx_rate(name: str, client, count: int) -> tuple:
    started = time.perf_counter()
    for i in range(count):
        client.register_node(f"rate/sl-{i}", "sl", hashlib.sha256(f"{name}{i}".encode()).digest(),
                             f"127.0.0.1:{20000 + i}")
    rate = count / (time.perf_counter() - started)
    return (f"ledger transactions per second ({name})", [rate], "tx/s")


def bench_rounds(label: str, ws: Workspace, targets: list[str], peers: int,
                 rounds: int) -> list[tuple]:
    """`peers` SL clients spread over the SN targets; each round all check in, all wait."""
    clients = [SNClient(targets[i % len(targets)], ws.material("sl", i + 1)) for i in range(peers)]
    try:
        for i, client in enumerate(clients):
            client.register(f"127.0.0.1:{30000 + i}")
        for client in clients:
            client.configure(peers)
        checkin_ms, seal_ms = [], []
        for r in range(1, rounds + 1):
            done = [0.0] * peers
            last_sent = [0.0]
            barrier = threading.Barrier(peers)

            def one(i: int) -> None:
                barrier.wait()
                t = time.perf_counter()
                clients[i].check_in(r, 10, hashlib.sha256(f"{r}/{i}".encode()).digest())
                checkin_ms.append((time.perf_counter() - t) * 1000)
                last_sent[0] = max(last_sent[0], time.perf_counter())
                info = clients[i].wait_round(r, 30)
                assert info.sealed and len(info.participants) == peers, info
                done[i] = time.perf_counter()

            threads = [threading.Thread(target=one, args=(i,)) for i in range(peers)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            seal_ms.append((max(done) - last_sent[0]) * 1000)
        return [(f"check-in RPC, {peers} SL ({label})", checkin_ms, "ms"),
                (f"seal latency, last check-in → all sealed, {peers} SL ({label})", seal_ms, "ms")]
    finally:
        for client in clients:
            client.close()


def bench_ledger_thread(tmp: Path, peers: int, rounds: int) -> list[tuple]:
    """The sentinel's ledger thread, in process, on a counting JSON-RPC transport."""
    import collections
    import json

    from sn_node.directory import MemberDirectory
    from sn_node.ledger_loop import LedgerLoop
    from sn_node.rounds import CheckIn, RoundBook
    from swarm.ledger import LedgerClient, TransportProvider, node_key
    from web3 import Web3

    chain = EmbeddedChain(tmp / "loop-chain")
    setup = open_or_deploy(chain.w3, tmp / "loop-chain", sentinel_node_id="loop/sn-1",
                           fingerprint=b"\x01" * 32, endpoint="127.0.0.1:1",
                           funder=chain.dev_accounts[0])
    names = [f"loop/sl-{i}" for i in range(peers)]
    for name in names:
        setup.register_node(name, "sl", hashlib.sha256(name.encode()).digest(), "127.0.0.1:2")
    setup.configure(peers, "{}")
    counts: collections.Counter = collections.Counter()

    def transport(request: bytes) -> bytes:
        counts[json.loads(request)["method"]] += 1
        return chain.handle_json_rpc(request)

    ledger = LedgerClient(Web3(TransportProvider(transport)), setup.address, setup.account)
    directory = MemberDirectory(ledger.account.address, 3600.0, ledger_is_revoked=ledger.is_revoked)
    book = RoundBook(0.0)
    loop = LedgerLoop(ledger, directory, book)
    loop.load()
    loop.start()
    keys = [node_key(n) for n in names]
    try:
        for key in keys:
            directory.heartbeat(key)
        counts.clear()
        cpu = time.process_time()
        for r in range(1, rounds + 1):
            for i, key in enumerate(keys):
                book.check_in(r, key, CheckIn(1, hashlib.sha256(f"{r}/{i}".encode()).digest()))
            loop.poke()
            assert book.wait_sealed(r, 60) is not None, f"round {r} not sealed"
            loop.submit(lambda lc, r=r: lc.commit_merged_batch(r, keys, [hashlib.sha256(
                f"m{r}".encode()).digest()] * len(keys))).result(60)
            loop.refresh_round(r)
        cpu = (time.process_time() - cpu) / rounds
    finally:
        loop.stop()
        chain.close()
    per_round = {m: n / rounds for m, n in sorted(counts.items())}
    detail = ", ".join(f"{m} {n:.1f}" for m, n in per_round.items())
    print(f"ledger requests per round ({peers} SL, 1 SN): {detail}")
    return [(f"ledger JSON-RPC requests per round, {peers} SL (in process, 1 SN)",
             [sum(per_round.values())], "req"),
            (f"ledger-side CPU per round, {peers} SL (in process, 1 SN)", [cpu * 1000], "ms")]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--peers", type=int, default=8)
    parser.add_argument("--tx", type=int, default=50, help="transactions for the tx/s figure")
    parser.add_argument("--ledger-only", action="store_true",
                        help="only the in-process ledger-thread figures")
    args = parser.parse_args()
    anvil = shutil.which("anvil") or str(REPO / ".tools/node_modules/.bin/anvil")
    rows: list[tuple] = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        rows += bench_ledger_thread(tmp, args.peers, 3 * args.rounds)
    if args.ledger_only:
        print_table(rows)
        return 0
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        ws = Workspace(tmp / "ws", args.peers)
        rows += bench_startup(ws, tmp, args.repeats)

        chain = EmbeddedChain(tmp / "rate-chain")
        client = open_or_deploy(chain.w3, tmp / "rate-chain", sentinel_node_id="rate/sn-1",
                                fingerprint=b"\x01" * 32, endpoint="127.0.0.1:1",
                                funder=chain.dev_accounts[0])
        rows.append(bench_tx_rate("embedded", client, args.tx))
        chain.close()

        sentinel = SN(ws, 1, tmp / "sentinel", "--sentinel")
        joiner = SN(ws, 2, tmp / "joiner", "--sentinel-ip", "127.0.0.1",
                    "--sentinel-api-port", str(sentinel.api_port))
        try:
            rows += bench_rounds("embedded, 1 SN", ws, [sentinel.target], args.peers, args.rounds)
        finally:
            joiner.stop()
            sentinel.stop()
        sentinel = SN(ws, 1, tmp / "sentinel2", "--sentinel")
        joiner = SN(ws, 2, tmp / "joiner2", "--sentinel-ip", "127.0.0.1",
                    "--sentinel-api-port", str(sentinel.api_port))
        try:
            rows += bench_rounds("embedded, 2 SN", ws, [sentinel.target, joiner.target],
                                 args.peers, args.rounds)
        finally:
            joiner.stop()
            sentinel.stop()

        if Path(anvil).exists():
            port = free_port()
            node = NodeProcess([anvil, "--host", "127.0.0.1", "--port", str(port), "--silent"],
                               name="anvil")
            url = f"http://127.0.0.1:{port}"
            try:
                for _ in range(100):
                    try:
                        w3 = connect_external(url)
                        break
                    except Exception:
                        time.sleep(0.1)
                client = open_or_deploy(w3, tmp / "rate-anvil", sentinel_node_id="rate/sn-1",
                                        fingerprint=b"\x01" * 32, endpoint="127.0.0.1:1",
                                        account=external_account(w3))
                rows.append(bench_tx_rate("anvil", client, args.tx))
                sentinel = SN(ws, 1, tmp / "sentinel3", "--sentinel", "--ledger-url", url)
                try:
                    rows += bench_rounds("anvil, 1 SN", ws, [sentinel.target], args.peers,
                                         args.rounds)
                finally:
                    sentinel.stop()
            finally:
                node.stop(10)

    print_table(rows)
    return 0


def print_table(rows: list[tuple]) -> None:
    table = Table(title=f"SN control plane ({os.cpu_count()} CPU cores; medians)")
    for column in ("figure", "median", "min", "max", "n"):
        table.add_column(column, justify="left" if column == "figure" else "right")
    for name, values, unit in rows:
        fmt = (lambda v: f"{v:.2f} {unit}") if unit == "s" else (lambda v: f"{v:.1f} {unit}")
        table.add_row(name, fmt(statistics.median(values)), fmt(min(values)), fmt(max(values)),
                      str(len(values)))
    Console(width=140).print(table)


if __name__ == "__main__":
    sys.exit(main())
