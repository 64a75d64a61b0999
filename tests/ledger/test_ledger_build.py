"""The committed contract artifact is exactly what the source compiles to."""
from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

from swarm.ledger import load_artifact, load_or_create_account
from swarm.ledger.build import ARTIFACT, SOURCE

REPO = Path(__file__).resolve().parents[2]


def _check(*extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "swarm.ledger.build", "--check", *extra], cwd=REPO,
                          capture_output=True, text=True, timeout=120)


def test_committed_artifact_matches_fresh_build():
    proc = _check()
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_check_detects_a_stale_artifact(tmp_path):
    stale = json.loads(ARTIFACT.read_text())
    stale["bytecode"] = stale["bytecode"][:-2] + "00"
    path = tmp_path / "SwarmLedger.json"
    path.write_text(json.dumps(stale))
    proc = _check("--artifact", str(path))
    assert proc.returncode == 1 and "bytecode" in proc.stderr


def test_artifact_records_compiler_and_source_hash():
    import hashlib

    art = load_artifact()
    assert art["compiler"].startswith("vyper 0.4.3")
    assert art["evmVersion"] == "cancun"
    assert art["sourceSha256"] == hashlib.sha256(SOURCE.read_bytes()).hexdigest()
    assert "#pragma evm-version cancun" in SOURCE.read_text().replace("# pragma", "#pragma")


def test_account_key_file_is_private_and_stable(tmp_path):
    path = tmp_path / "node" / "ledger.key"
    acct = load_or_create_account(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_or_create_account(path).address == acct.address
    os.chmod(path, 0o644)
    assert load_or_create_account(path).address == acct.address
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
