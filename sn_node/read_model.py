"""The SN's read model: what the swarm looks like, in memory, fed by the ledger thread.

Nothing here reads the ledger. The ledger thread (`sn_node.ledger_loop`) tells the
model what its events say (check-ins, seals, merges, members, the session, finished
nodes), the SN API adds what only it sees (local check-ins, the RoundOutcomes SL nodes
report), and liveness comes from the member directory's heartbeats. `GetStatus`,
`swarm status` and the dashboard all read from here, so watching a swarm costs the
ledger nothing.

API (thread-safe; callers never block the ledger thread):

    model.snapshot(rounds=None, events=None) -> swarm.swarm_view.Snapshot
        A typed, immutable record of everything `swarm status` shows; `.to_dict()`
        gives JSON-ready data, `Snapshot.from_dict` reads it back. `rounds` / `events`:
        only that many of the newest (None: all kept).
    model.round(n) -> RoundView | None
        One kept round.
    model.version -> int
        Grows by one with every change; `snapshot().version` is the version it shows.
    model.subscribe(max_queued=256) -> Subscription
        Change notifications: `sub.get(timeout_s)` returns the next `EventView` (None
        on timeout or once closed); iterating yields them until `sub.close()` (or
        `model.unsubscribe(sub)`; a Subscription is also a context manager). A
        subscriber that falls `max_queued` behind loses the
        oldest notifications and finds `sub.lagged` set: take a fresh snapshot.
    model.wait_for_change(after_version, timeout_s) -> int
        Blocks until the version passes `after_version` (or the timeout); returns the
        version now. The simplest way to push snapshots to a page.

In a running SN the model is `SwarmNetworkNode.view` (also `LedgerLoop.view`).
Liveness (heartbeats, "last heard") and the block number change without a notification:
a page that shows them re-reads snapshots now and then (e.g. every second).
Memory is bounded: the last `keep_rounds` rounds and `keep_events` events.
"""

from __future__ import annotations

import json
import queue
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field, replace
from typing import Callable

from swarm.ledger import Member, node_key
from swarm.swarm_view import (EventView, MemberView, NodeOutcome, RoundView, SessionView,
                              Snapshot, WaitView)

from sn_node.directory import MemberDirectory
from sn_node.rounds import RoundBook

__all__ = ["ReadModel", "Subscription", "Snapshot", "MemberView", "RoundView", "WaitView",
           "SessionView", "EventView", "NodeOutcome"]

KEEP_ROUNDS = 50
KEEP_EVENTS = 200


@dataclass
class _Round:
    round: int
    checked_in: dict[bytes, float] = field(default_factory=dict)  # key -> when seen
    participants: tuple[bytes, ...] = ()
    sealed_at: float | None = None
    merged_at: float | None = None
    merged_digest: bytes = b""
    disagreed: set[bytes] = field(default_factory=set)
    reports: dict[str, NodeOutcome] = field(default_factory=dict)

    @property
    def opened_at(self) -> float | None:
        return min(self.checked_in.values()) if self.checked_in else None


class Subscription:
    """One subscriber's queue of change notifications (see the module docstring)."""

    def __init__(self, owner: ReadModel, max_queued: int):
        self._owner = owner
        self._queue: queue.Queue = queue.Queue(maxsize=max_queued)
        self.closed = False
        self.lagged = False

    def _put(self, event: EventView) -> None:
        while True:
            try:
                self._queue.put_nowait(event)
                return
            except queue.Full:
                self.lagged = True
                try:
                    self._queue.get_nowait()
                except queue.Empty:
                    pass

    def get(self, timeout_s: float | None = None) -> EventView | None:
        if self.closed:
            return None
        try:
            item = self._queue.get(timeout=timeout_s)
        except queue.Empty:
            return None
        return item  # None: closed meanwhile

    def __iter__(self):
        while True:
            item = self.get()
            if item is None:
                return
            yield item

    def close(self) -> None:
        self._owner.unsubscribe(self)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class ReadModel:
    """The swarm as one SN sees it (see the module docstring)."""

    def __init__(self, directory: MemberDirectory, rounds: RoundBook, sn_node_id: str = "",
                 keep_rounds: int = KEEP_ROUNDS, keep_events: int = KEEP_EVENTS,
                 clock: Callable[[], float] = time.time):
        self._directory = directory
        self._book = rounds
        self._clock = clock
        self._keep_rounds = keep_rounds
        self._lock = threading.Condition()
        self._version = 0
        self._static = {"sn_node_id": sn_node_id, "sentinel": False, "ledger_kind": "",
                        "contract_address": "", "chain_id": 0}
        self._block_number = 0
        self._min_peers: int | None = None
        self._config_json = ""
        self._finished_count = 0
        self._finished: set[bytes] = set()
        self._rounds: OrderedDict[int, _Round] = OrderedDict()
        self._events: deque[EventView] = deque(maxlen=keep_events)
        self._subscribers: list[Subscription] = []
        self._known_members: dict[bytes, tuple[str, str]] = {}  # key -> (node id, status)
        self._names: dict[bytes, str] = {}  # every key ever seen -> node id

    # --- the API for readers ---------------------------------------------------------

    @property
    def version(self) -> int:
        with self._lock:
            return self._version

    def subscribe(self, max_queued: int = 256) -> Subscription:
        sub = Subscription(self, max_queued)
        with self._lock:
            self._subscribers.append(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        with self._lock:
            if sub in self._subscribers:
                self._subscribers.remove(sub)
        sub.closed = True
        try:
            sub._queue.put_nowait(None)  # wakes a reader blocked in get()
        except queue.Full:
            pass

    def wait_for_change(self, after_version: int, timeout_s: float) -> int:
        deadline = time.monotonic() + timeout_s
        with self._lock:
            while self._version <= after_version:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._lock.wait(left)
            return self._version

    def node_facts(self) -> dict:
        """The SN's own facts and the last block read: GetStatus's cheap fields."""
        with self._lock:
            return {**self._static, "block_number": self._block_number}

    def round(self, round_number: int) -> RoundView | None:
        """One kept round (cheaper than a whole snapshot)."""
        with self._lock:
            record = self._rounds.get(round_number)
            return self._round_view(record) if record is not None else None

    def snapshot(self, rounds: int | None = None, events: int | None = None) -> Snapshot:
        now = self._clock()
        members = self._directory.all()
        with self._lock:
            min_peers = self._min_peers
            try:
                config = json.loads(self._config_json) if self._config_json else {}
            except ValueError:
                config = {"unparsed": self._config_json}
            session = SessionView(
                configured=min_peers is not None, min_peers=min_peers or 0,
                config=config if isinstance(config, dict) else {"value": config},
                finished_count=self._finished_count,
                swarm_done=min_peers is not None and self._finished_count >= min_peers)
            member_views = [MemberView(
                node_id=m.node_id, role=m.role_name, status=m.status_name,
                endpoint=m.endpoint, alive=self._directory.alive(node_key(m.node_id)),
                heartbeat_age_s=_rounded(self._directory.heartbeat_age(node_key(m.node_id))),
                controlled_here=self._directory.controlled_here(m),
                finished=node_key(m.node_id) in self._finished)
                for m in sorted(members, key=lambda m: (m.role_name, m.node_id))]
            # The round book is the authority; the rounds kept here can only be newer
            # (e.g. a seal this model has seen before the book).
            last_sealed = max([self._book.last_sealed or 0] + [
                r.round for r in self._rounds.values() if r.sealed_at is not None])
            latest_round = max([0] + [r.round for r in self._rounds.values() if r.merged_digest])
            latest = self._book.latest_merged
            if latest is None or latest_round > latest[0]:
                latest = (latest_round, b"") if latest_round else latest
            current = None
            if min_peers is not None and not session.swarm_done:
                current = self._waiting(last_sealed + 1, members, min_peers, now)
            kept = list(self._rounds.values())
            kept = kept[len(kept) - rounds:] if rounds is not None and rounds < len(kept) else kept
            recent = list(self._events)
            recent = recent[len(recent) - events:] if events is not None and events < len(recent) \
                else recent
            return Snapshot(
                version=self._version, at=now, block_number=self._block_number,
                session=session, members=member_views, current=current,
                last_sealed_round=last_sealed,
                latest_merged_round=latest[0] if latest else 0,
                rounds=[self._round_view(r) for r in kept], events=recent, **self._static)

    # --- fed by the SN (ledger thread and API) ---------------------------------------

    def set_node(self, **static) -> None:
        """The SN's own facts: sn_node_id, sentinel, ledger_kind, contract_address, chain_id."""
        with self._lock:
            self._static.update({k: v for k, v in static.items() if k in self._static})
            self._changed(None)

    def note_block(self, block_number: int) -> None:
        """The ledger thread has read events up to this block (no notification: too chatty)."""
        with self._lock:
            self._block_number = max(self._block_number, block_number)

    def note_config(self, min_peers: int | None, config_json: str, finished_count: int) -> None:
        with self._lock:
            if (min_peers, config_json, finished_count) == (
                    self._min_peers, self._config_json, self._finished_count):
                return
            new_session = min_peers is not None and self._min_peers is None
            self._min_peers, self._config_json = min_peers, config_json
            self._finished_count = finished_count
            self._changed(self._event("config", detail=f"min_peers {min_peers}")
                          if new_session else None)

    def note_finished(self, key: bytes, finished_count: int) -> None:
        with self._lock:
            if key in self._finished:
                return
            self._finished.add(key)
            self._finished_count = max(self._finished_count, finished_count)
            self._changed(self._event("finished", node_id=self._name(key),
                                      detail=f"{finished_count} finished"))

    def note_members(self, members: list[Member]) -> None:
        """The directory's members now: registrations and status changes become events."""
        with self._lock:
            events = []
            for m in members:
                key = node_key(m.node_id)
                self._names[key] = m.node_id
                before = self._known_members.get(key)
                if before is None or before[1] != m.status_name:
                    detail = (f"registered ({m.role_name}) at {m.endpoint}" if before is None
                              else f"{before[1]} -> {m.status_name}")
                    events.append(self._event("member", node_id=m.node_id, detail=detail))
                self._known_members[key] = (m.node_id, m.status_name)
            for event in events:
                self._changed(event)

    def note_revoked(self, fingerprint: str, node_id: str = "", reason: str = "") -> None:
        with self._lock:
            self._changed(self._event("revoked", node_id=node_id,
                                      detail=f"certificate {fingerprint[:16]}… {reason}".strip()))

    def note_check_in(self, round_number: int, key: bytes) -> None:
        """A check-in: this SN's own (from the API) or another's (a ledger event)."""
        with self._lock:
            if round_number <= (self._book.last_sealed or 0) and round_number not in self._rounds:
                return  # an old round replayed after a restart
            record = self._round(round_number)
            if key in record.checked_in or record.sealed_at is not None:
                return
            record.checked_in[key] = self._clock()
            self._changed(self._event("check_in", round_number, self._name(key)))

    def note_sealed(self, round_number: int, participants: tuple[bytes, ...]) -> None:
        with self._lock:
            record = self._round(round_number)
            if record.sealed_at is not None:
                return
            record.sealed_at = self._clock()
            record.participants = tuple(participants)
            self._changed(self._event("sealed", round_number,
                                      detail=f"{len(participants)} participant(s)"))

    def note_merged(self, round_number: int, digest: bytes) -> None:
        with self._lock:
            record = self._round(round_number)
            if record.merged_digest:
                return
            record.merged_digest = bytes(digest)
            record.merged_at = self._clock()
            self._changed(self._event("merged", round_number, detail=bytes(digest).hex()[:16]))

    def note_mismatch(self, round_number: int, key: bytes, expected: bytes, actual: bytes) -> None:
        with self._lock:
            record = self._round(round_number)
            if key in record.disagreed:
                return
            record.disagreed.add(key)
            self._changed(self._event(
                "mismatch", round_number, self._name(key),
                f"committed {bytes(actual).hex()[:16]}, ledger holds {bytes(expected).hex()[:16]}"))

    def note_outcome(self, node_id: str, outcome: NodeOutcome, round_number: int) -> None:
        """An SL node's report of how a round ended there."""
        with self._lock:
            if round_number > (self._book.last_sealed or 0) - self._keep_rounds:
                self._round(round_number).reports[node_id] = outcome
                self._changed(self._event("outcome", round_number, node_id, outcome.status))

    def note_metrics(self, node_id: str, round_number: int, metrics: dict[str, float]) -> None:
        """Validation metrics an SL node measured on round `round_number`'s merged model
        (reported with a later outcome): onto its report of that round, if kept."""
        with self._lock:
            record = self._rounds.get(round_number)
            report = record.reports.get(node_id) if record else None
            if report is not None:
                record.reports[node_id] = replace(report, metrics=dict(metrics))
                self._changed(None)

    # --- inside ------------------------------------------------------------------------

    def _name(self, key: bytes) -> str:
        name = self._names.get(key)
        if name is None:
            member = self._directory.get(key)
            name = member.node_id if member else key.hex()[:16]
            if member:
                self._names[key] = name
        return name

    def _round(self, round_number: int) -> _Round:
        record = self._rounds.get(round_number)
        if record is None:
            record = self._rounds[round_number] = _Round(round_number)
            self._rounds = OrderedDict(sorted(self._rounds.items()))
            while len(self._rounds) > self._keep_rounds:
                self._rounds.popitem(last=False)
            record = self._rounds.get(round_number) or _Round(round_number)
        return record

    def _event(self, kind: str, round_number: int | None = None, node_id: str = "",
               detail: str = "") -> EventView:
        return EventView(seq=self._version + 1, at=self._clock(), kind=kind,
                         round=round_number, node_id=node_id, detail=detail)

    def _changed(self, event: EventView | None) -> None:
        """Under the lock: bump the version, keep the event, tell the subscribers."""
        self._version += 1
        if event is not None:
            if event.seq != self._version:
                event = EventView(self._version, event.at, event.kind, event.round,
                                  event.node_id, event.detail)
            self._events.append(event)
            for sub in self._subscribers:
                sub._put(event)
        self._lock.notify_all()

    def _waiting(self, round_number: int, members: list[Member], min_peers: int,
                 now: float) -> WaitView:
        record = self._rounds.get(round_number)
        keys = set(self._book.checked_in(round_number))
        if record is not None:
            keys |= set(record.checked_in)
        checked = sorted(self._name(k) for k in keys)
        missing = sorted(m.node_id for m in members
                         if m.role_name == "sl" and m.status_name != "revoked"
                         and node_key(m.node_id) not in keys)
        opened = record.opened_at if record is not None else None
        return WaitView(round=round_number, checked_in=checked, missing=missing,
                        short_by=max(0, min_peers - len(keys)),
                        waiting_s=_rounded(now - opened) if opened is not None else None)

    def _round_view(self, r: _Round) -> RoundView:
        opened = r.opened_at
        state = "merged" if r.merged_digest else "sealed" if r.sealed_at is not None else "open"
        dropped: dict[str, str] = {}
        for report in r.reports.values():
            for node, why in report.dropped.items():
                dropped.setdefault(node, why)
        checked = r.participants if r.sealed_at is not None and r.participants else r.checked_in
        return RoundView(
            round=r.round, state=state,
            checked_in=sorted(self._name(k) for k in (r.checked_in or checked)),
            participants=[self._name(k) for k in r.participants],
            opened_at=opened, sealed_at=r.sealed_at, merged_at=r.merged_at,
            seal_wait_s=_rounded(r.sealed_at - opened)
            if r.sealed_at is not None and opened is not None else None,
            merge_s=_rounded(r.merged_at - r.sealed_at)
            if r.merged_at is not None and r.sealed_at is not None else None,
            merged_digest=r.merged_digest.hex(),
            disagreed=sorted(self._name(k) for k in r.disagreed), dropped=dropped,
            bytes_sent=sum(o.bytes_sent for o in r.reports.values()),
            bytes_received=sum(o.bytes_received for o in r.reports.values()),
            reports=[r.reports[n] for n in sorted(r.reports)])


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 3)
