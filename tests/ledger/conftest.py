"""Fixtures for the ledger tests: real chains, real contract, no mocks."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import pytest

from swarm.ledger import EmbeddedChain, LedgerClient, load_or_create_account, open_or_deploy
from swarm.ledger.client import fund


def fp(name: str) -> bytes:
    """A stand-in certificate fingerprint (SHA-256, as for a cert's DER)."""
    return hashlib.sha256(name.encode()).digest()


def digest(tag: str | int) -> bytes:
    return hashlib.sha256(f"update-{tag}".encode()).digest()


SENTINEL = "site0/sn-1"
SN2 = "site2/sn-1"
SLS1 = ["site1/sl-1", "site1/sl-2", "site1/sl-3"]  # controlled by the sentinel
SLS2 = ["site2/sl-1"]  # controlled by SN2


@dataclass
class Swarm:
    """A deployed ledger with two SNs, four SL nodes and an unregistered outsider."""

    chain: EmbeddedChain
    sn1: LedgerClient  # sentinel
    sn2: LedgerClient
    outsider: LedgerClient
    data_dir: Path


def build_swarm(w3, data_dir: Path, funder, *, sentinel_account=None) -> tuple[LedgerClient, LedgerClient, LedgerClient]:
    sn1 = open_or_deploy(w3, data_dir, sentinel_node_id=SENTINEL, fingerprint=fp(SENTINEL),
                         endpoint="10.0.0.1:30304", account=sentinel_account, funder=funder)
    acc2 = load_or_create_account(data_dir / "sn2.key")
    out = load_or_create_account(data_dir / "outsider.key")
    fund(w3, sn1.account, acc2.address, 10**19)
    fund(w3, sn1.account, out.address, 10**19)
    sn1.register_sn(SN2, fp(SN2), "10.0.0.2:30304", acc2.address)
    sn2 = LedgerClient(w3, sn1.address, acc2)
    for name in SLS1:
        sn1.register_node(name, "sl", fp(name), f"{name}:30305")
    for name in SLS2:
        sn2.register_node(name, "sl", fp(name), f"{name}:30305")
    return sn1, sn2, LedgerClient(w3, sn1.address, out)


@pytest.fixture
def chain(tmp_path):
    c = EmbeddedChain(tmp_path / "chain")
    yield c
    c.close()


@pytest.fixture
def swarm(chain, tmp_path) -> Swarm:
    sn1, sn2, outsider = build_swarm(chain.w3, tmp_path / "chain", chain.dev_accounts[0])
    return Swarm(chain, sn1, sn2, outsider, tmp_path / "chain")
