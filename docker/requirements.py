"""Prints the pinned requirements of one image, read from pyproject.toml (the only place
pins live): `python requirements.py ROLE [EXTRA,...]`.

ROLE node: every dependency of the project (run-sn, run-sl, swarm-data, ...), plus extras.
ROLE sidecar: only what a training program's SwarmCallback imports (gRPC to its SL node,
NumPy), plus extras: no ledger, no web3, no plotting, so the NumPy sidecar image stays small.
ROLE only: the extras' pins alone (what an image installs with --no-deps, e.g. keras2).
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

SIDECAR = ("grpcio", "protobuf", "numpy")
ROLES = ("node", "sidecar", "only")


def _name(requirement: str) -> str:
    return re.split(r"[\s\[<>=!~;]", requirement, maxsplit=1)[0].lower()


def requirements(pyproject: Path, role: str, extras: list[str]) -> list[str]:
    project = tomllib.loads(pyproject.read_text())["project"]
    optional = project.get("optional-dependencies", {})
    unknown = [e for e in extras if e not in optional]
    if role not in ROLES or unknown:
        raise SystemExit(f"requirements.py: unknown role {role!r} or extras {unknown} "
                         f"(roles {ROLES}, extras {sorted(optional)})")
    base = project["dependencies"]
    if role == "sidecar":
        base = [r for r in base if _name(r) in SIDECAR]
    elif role == "only":
        base = []
    lines = [r.split("#")[0].strip() for r in base]
    for extra in extras:
        lines += [r.split("#")[0].strip() for r in optional[extra]]
    return lines


if __name__ == "__main__":
    role, extras = sys.argv[1], [e for e in ",".join(sys.argv[2:]).split(",") if e]
    here = Path(__file__).resolve().parent
    pyproject = next(p for p in (here / "pyproject.toml", here.parent / "pyproject.toml") if p.exists())
    print("\n".join(requirements(pyproject, role, extras)))
