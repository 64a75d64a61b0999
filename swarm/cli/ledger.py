"""`swarm ledger show|verify|export`: read a swarm's ledger back, check it, write it out.

Sources (one of):
  --data-dir DIR                 a copy of a sentinel's data directory (embedded chain, read offline)
  --ledger-url URL --contract A  an external JSON-RPC chain (anvil, geth, Besu); --data-dir DIR
                                 instead of --contract reads the address from its ledger.json
  --sn HOST:PORT (+ --cert/--key/--capath of an SN)  a running sentinel's embedded chain, through
                                 its ledger port (--sn-p2p-port)

`verify` exits 1 naming every finding; 2 when the ledger cannot be read.
"""

from __future__ import annotations

import argparse
import json
import sys
from contextlib import contextmanager
from pathlib import Path

from swarm.cli.args import port

PROG = "swarm ledger"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description="Show, verify or export a swarm's ledger: members, "
                                "rounds, update and merged digests, disagreements, revocations.")
    p.add_argument("action", choices=["show", "verify", "export"],
                   help="show: print the ledger; verify: re-check its rules and digests (exit 1 on "
                        "any finding); export: write JSON and CSV to --out")
    src = p.add_argument_group("source")
    src.add_argument("--data-dir", metavar="DIR",
                     help="a (copy of a) sentinel's data directory; read offline, never written")
    src.add_argument("--ledger-url", metavar="URL", help="an external JSON-RPC chain holding the ledger")
    src.add_argument("--contract", metavar="ADDRESS", help="with --ledger-url: the ledger contract's address")
    src.add_argument("--from-block", type=int, default=None, metavar="N",
                     help="with --ledger-url/--sn: the block the ledger was deployed in (default: its "
                          "ledger.json's, else 0)")
    src.add_argument("--sn", metavar="HOST:PORT", help="a running sentinel SN's API address")
    src.add_argument("--sn-p2p-port", type=port, default=30303, metavar="PORT",
                     help="with --sn: the sentinel's SN-to-SN ledger port (default 30303)")
    src.add_argument("--cert", help="with --sn: an SN certificate of the swarm (sn-INDEX-cert.pem)")
    src.add_argument("--key", help="with --sn: its private key")
    src.add_argument("--capath", help="with --sn: the swarm's CA certificates")
    p.add_argument("--model", nargs="+", default=[], metavar="FILE",
                   help="verify: saved final models (.npz) that must be the last merged round's")
    p.add_argument("--out", metavar="DIR", help="export: the directory to write to")
    p.add_argument("--json", action="store_true", help="show: print the report as JSON")
    p.add_argument("-v", "--verbose", action="store_true", help="show: full digests")
    return p


@contextmanager
def _history(args, parser):
    from swarm.ledger import LedgerError, connect_external
    from swarm.ledger.audit import open_data_dir, read_history

    sources = sum(bool(x) for x in (args.ledger_url, args.sn)) + bool(args.data_dir and not args.ledger_url)
    if sources != 1:
        parser.error("give one source: --data-dir DIR, --ledger-url URL (with --contract or --data-dir), "
                     "or --sn HOST:PORT")
    if args.ledger_url:
        address, first = args.contract, args.from_block
        if not address:
            if not args.data_dir:
                parser.error("--ledger-url needs --contract ADDRESS (or --data-dir with the sentinel's ledger.json)")
            meta_path = Path(args.data_dir) / "ledger.json"
            if not meta_path.exists():
                raise LedgerError("audit", f"{meta_path} does not exist: give --contract ADDRESS")
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            address = meta["contract_address"]
            first = meta.get("deploy_block", 0) if first is None else first
        w3 = connect_external(args.ledger_url)
        yield read_history(w3, address, first_block=first or 0, source=args.ledger_url)
    elif args.sn:
        if not (args.cert and args.key and args.capath):
            parser.error("--sn needs --cert, --key and --capath (an SN certificate of the swarm)")
        from web3 import Web3

        from swarm.ledger.tunnel import LedgerTunnelProvider
        from swarm.identity import TlsConfigError, load_tls
        from swarm.network.sn_client import SNClient

        try:
            tls = load_tls(args.cert, args.key, args.capath)
        except TlsConfigError as error:
            raise LedgerError("audit", str(error)) from None
        with SNClient(args.sn, tls, timeout_s=15.0) as sn:
            status = sn.status()
        if status.ledger_kind == "tunnel":
            raise LedgerError("audit", f"{args.sn} is not the sentinel: give the sentinel's address to --sn")
        if status.ledger_kind != "embedded":
            raise LedgerError("audit", f"{args.sn} keeps its ledger on an external chain: read it there with "
                                       f"--ledger-url URL --contract {status.contract_address}")
        host = args.sn.rsplit(":", 1)[0]
        # One eth_getLogs may span the whole history: give it longer than a node's calls.
        tunnel = LedgerTunnelProvider(f"{host}:{args.sn_p2p_port}", tls, timeout_s=120.0)
        try:
            yield read_history(Web3(tunnel), status.contract_address, first_block=args.from_block or 0,
                               source=f"SN {args.sn}")
        finally:
            tunnel.close()
    else:
        with open_data_dir(args.data_dir) as history:
            yield history


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.action == "export" and not args.out:
        parser.error("export needs --out DIR")
    if args.model and args.action != "verify":
        parser.error("--model goes with verify")
    from swarm.ledger import LedgerError
    from swarm.ledger.audit import build_report, export, format_report

    try:
        with _history(args, parser) as history:
            report = build_report(history, args.model)
    except (LedgerError, OSError, ConnectionError) as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 2
    except Exception as error:  # noqa: BLE001 - web3 and grpc raise many kinds; all mean "cannot read"
        print(f"{PROG}: error: cannot read the ledger: {type(error).__name__}: {error}", file=sys.stderr)
        return 2
    if args.action == "show":
        if args.json:
            print(json.dumps(report.to_json(), indent=1))
        else:
            print(format_report(report, args.verbose))
        return 0
    if args.action == "export":
        for path in export(report, args.out):
            print(path)
        return 0
    rounds = len(report.rounds)
    if not report.findings:
        print(f"ledger {report.contract_address}: OK: {len(report.members)} members, {rounds} rounds, "
              f"{len(args.model)} model(s) checked; no findings")
        return 0
    for finding in report.findings:
        print(finding.line())
    print(f"ledger {report.contract_address}: {len(report.findings)} finding(s) in {rounds} rounds",
          file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
