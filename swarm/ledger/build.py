"""Rebuild the committed SwarmLedger artifact from its Vyper source.

    python -m swarm.ledger.build           # rewrite contracts/SwarmLedger.json
    python -m swarm.ledger.build --check   # exit 1 if the committed artifact is stale

The artifact pins the compiler version and the source's SHA-256 so that a
reviewer can tell which source produced the bytecode running on a ledger.
Needs the `vyper` package (a dev dependency); nodes only read the JSON.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

CONTRACTS_DIR = Path(__file__).resolve().parent / "contracts"
SOURCE = CONTRACTS_DIR / "SwarmLedger.vy"
ARTIFACT = CONTRACTS_DIR / "SwarmLedger.json"
EVM_VERSION = "cancun"  # also pinned by the pragma in the source


def build_artifact() -> dict:
    """Compile the source and return the artifact as a dict."""
    try:
        import vyper
        from vyper.compiler import compile_code
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise SystemExit("swarm.ledger.build needs vyper: pip install -e '.[dev]'") from exc
    source = SOURCE.read_text(encoding="utf-8")
    # A fixed contract path keeps the output independent of the checkout location.
    out = compile_code(source, contract_path="SwarmLedger.vy", output_formats=["abi", "bytecode"])
    return {
        "contractName": "SwarmLedger",
        "compiler": f"vyper {vyper.__version__}",
        "evmVersion": EVM_VERSION,
        "sourcePath": "swarm/ledger/contracts/SwarmLedger.vy",
        "sourceSha256": hashlib.sha256(source.encode("utf-8")).hexdigest(),
        "abi": out["abi"],
        "bytecode": out["bytecode"],
    }


def render(artifact: dict) -> str:
    """Canonical text form, so equal artifacts are byte-identical files."""
    return json.dumps(artifact, indent=1, sort_keys=True) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m swarm.ledger.build", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare with the committed artifact; exit 1 if it differs")
    parser.add_argument("--artifact", type=Path, default=ARTIFACT, help=argparse.SUPPRESS)  # tests point it elsewhere
    args = parser.parse_args(argv)
    artifact = args.artifact
    fresh = render(build_artifact())
    if args.check:
        committed = artifact.read_text(encoding="utf-8") if artifact.exists() else ""
        if committed == fresh:
            print(f"{artifact.name} is up to date")
            return 0
        try:
            old = json.loads(committed) if committed else {}
        except ValueError:
            old = {}
        new = json.loads(fresh)
        differing = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k)) or ["formatting"]
        print(f"{artifact.name} is stale ({', '.join(differing)} differ); run: python -m swarm.ledger.build",
              file=sys.stderr)
        return 1
    artifact.write_text(fresh, encoding="utf-8")
    print(f"wrote {artifact}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
