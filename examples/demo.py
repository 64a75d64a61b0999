"""`make demo`: a sentinel SN on the embedded ledger, shown ready, inspected, and stopped.

Generates certificates into a fresh workspace with gen-cert, starts `run-sn
--sentinel` as a real process, waits for its ready line, registers an SL-role
client over mutual TLS, prints what the ledger holds, and stops the node cleanly.
(The full swarm-training demo replaces this once SL nodes exist.)
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from swarm.identity import load_tls
from swarm.network.sn_client import SNClient

ROOT = Path(__file__).resolve().parent.parent
RUN = ROOT / "demo-run"
BIN = Path(sys.executable).parent
console = Console()


def main() -> int:
    shutil.rmtree(RUN, ignore_errors=True)
    RUN.mkdir()
    console.rule("[bold]swarm demo: the Swarm Network sentinel")
    subprocess.run([BIN / "gen-cert", "-e", "demo", "-i", "1", "--out", RUN / "workspace"],
                   check=True, stdout=subprocess.DEVNULL)
    certs = RUN / "workspace" / "demo" / "cert"
    console.print(f"certificates (gen-cert -e demo -i 1) in {certs}")

    argv = [BIN / "run-sn", "--sentinel", "--host-ip", "127.0.0.1",
            "--sn-api-port", "30304", "--sn-p2p-port", "30303",
            "--cert", certs / "sn-1-cert.pem", "--key", certs / "sn-1-key.pem",
            "--capath", certs / "ca" / "capath", "--data-dir", RUN / "sn-1"]
    console.print("$ run-sn --sentinel --sn-api-port 30304 ...")
    started = time.perf_counter()
    sentinel = subprocess.Popen([str(a) for a in argv], stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
    try:
        for line in sentinel.stdout:
            console.print(f"  [dim]sn-1 |[/] {line.rstrip()}")
            if "Starting SWARM-API-SERVER" in line:
                break
        else:
            console.print(f"[red]run-sn exited with {sentinel.wait()} before it was ready")
            return 1
        console.print(f"[green]sentinel ready in {time.perf_counter() - started:.2f} s[/]")

        tls = load_tls(certs / "sl-1-cert.pem", certs / "sl-1-key.pem", certs / "ca" / "capath")
        with SNClient("127.0.0.1:30304", tls) as sl:
            sl.register("127.0.0.1:30305")
            sl.configure(1, '{"demo": true}')
            status = sl.status()
            peers = sl.list_peers()

        table = Table(title="what the ledger holds")
        table.add_column("field")
        table.add_column("value")
        table.add_row("ledger", f"{status.ledger_kind} (chain id {status.chain_id}, "
                                f"block {status.block_number})")
        table.add_row("contract", status.contract_address)
        table.add_row("session", f"min_peers={status.min_peers} config={status.config_json}")
        for member in peers:
            table.add_row(f"member {member.node_id}",
                          f"{member.role}, {member.status}, {member.endpoint}, "
                          f"cert {member.fingerprint[:16]}…")
        console.print(table)
    finally:
        sentinel.send_signal(signal.SIGTERM)
        code = sentinel.wait(30)
        for line in sentinel.stdout:
            console.print(f"  [dim]sn-1 |[/] {line.rstrip()}")
    console.print(f"sentinel stopped (exit {code}); its ledger persists in {RUN / 'sn-1'}")
    return code


if __name__ == "__main__":
    sys.exit(main())
