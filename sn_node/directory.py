"""The SN node's view of the swarm's members: the ledger's records plus liveness."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Callable

from swarm.ledger import Member, node_key


@dataclass(frozen=True)
class Liveness:
    last_heartbeat: float  # monotonic seconds
    marked_inactive: bool  # this SN set the member inactive on the ledger for silence


class MemberDirectory:
    """Caches the ledger's members and tracks heartbeats of the SL nodes this SN controls.

    The ledger holds who is a member; heartbeats are kept here, off the chain: only
    a change of liveness (silent for `liveness_timeout_s`, or back) becomes a ledger
    transaction, so a quiet swarm costs the ledger nothing.
    """

    def __init__(self, own_account: str, liveness_timeout_s: float,
                 ledger_is_revoked: Callable[[str], bool], clock=time.monotonic):
        self._own_account = own_account.lower()
        self.liveness_timeout_s = liveness_timeout_s
        self._clock = clock
        self._lock = threading.Lock()
        self._members: dict[bytes, Member] = {}
        self._fingerprints: set[str] = set()
        self._revoked: set[str] = set()
        self._ledger_is_revoked = ledger_is_revoked
        self._not_revoked: set[str] = set()  # non-members the ledger said are fine
        self._liveness: dict[bytes, Liveness] = {}
        # When each member was first seen here: a node is silent only once it has had a
        # full liveness timeout from then (or from this SN's start) to send a heartbeat.
        self._first_seen: dict[bytes, float] = {}

    def replace(self, members: list[Member]) -> None:
        now = self._clock()
        with self._lock:
            self._members = {node_key(m.node_id): m for m in members}
            for key in self._members:
                self._first_seen.setdefault(key, now)
            self._fingerprints = {m.fingerprint.hex() for m in members}
            self._revoked |= {m.fingerprint.hex() for m in members if m.status_name == "revoked"}

    def note_revoked(self, fingerprint: str) -> None:
        with self._lock:
            self._revoked.add(fingerprint)
            self._not_revoked.discard(fingerprint)

    def get(self, key: bytes) -> Member | None:
        with self._lock:
            return self._members.get(key)

    def by_node_id(self, node_id: str) -> Member | None:
        return self.get(node_key(node_id))

    def all(self) -> list[Member]:
        with self._lock:
            return list(self._members.values())

    def is_revoked(self, fingerprint: str) -> bool:
        """Checked on every call: members from the cache, other certificates asked once."""
        fingerprint = fingerprint.lower()
        with self._lock:
            if fingerprint in self._revoked:
                return True
            if fingerprint in self._fingerprints or fingerprint in self._not_revoked:
                return False
        revoked = self._ledger_is_revoked(fingerprint)
        with self._lock:
            (self._revoked if revoked else self._not_revoked).add(fingerprint)
        return revoked

    def controlled_here(self, member: Member) -> bool:
        return member.controller.lower() == self._own_account

    def active_sl_keys(self) -> set[bytes]:
        with self._lock:
            return {k for k, m in self._members.items() if m.role_name == "sl" and m.status_name == "active"}

    def sn_count(self) -> int:
        with self._lock:
            return sum(1 for m in self._members.values()
                       if m.role_name == "sn" and m.status_name == "active")

    # --- liveness ------------------------------------------------------------------

    def heartbeat(self, key: bytes) -> bool:
        """Notes a heartbeat; True when this SN had marked the node inactive (reactivate it)."""
        with self._lock:
            before = self._liveness.get(key)
            self._liveness[key] = Liveness(self._clock(), False)
            return bool(before and before.marked_inactive)

    def alive(self, key: bytes) -> bool:
        with self._lock:
            seen = self._liveness.get(key)
        return seen is not None and self._clock() - seen.last_heartbeat < self.liveness_timeout_s

    def heartbeat_age(self, key: bytes) -> float | None:
        """Seconds since the member's last heartbeat here; None when never heard."""
        with self._lock:
            seen = self._liveness.get(key)
        return None if seen is None else max(0.0, self._clock() - seen.last_heartbeat)

    def silent_members(self) -> list[Member]:
        """Active SL nodes controlled here that have been silent past the timeout."""
        now = self._clock()
        silent = []
        with self._lock:
            for key, member in self._members.items():
                if (member.role_name != "sl" or member.status_name != "active"
                        or member.controller.lower() != self._own_account):
                    continue
                seen = self._liveness.get(key)
                last = seen.last_heartbeat if seen else self._first_seen.get(key, now)
                if now - last >= self.liveness_timeout_s and not (seen and seen.marked_inactive):
                    silent.append(member)
        return silent

    def mark_inactive(self, key: bytes) -> None:
        with self._lock:
            seen = self._liveness.get(key)
            self._liveness[key] = Liveness(
                seen.last_heartbeat if seen else self._first_seen.get(key, self._clock()), True)
