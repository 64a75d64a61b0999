"""The SN node's single ledger thread."""

from __future__ import annotations

import logging
import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import replace
from typing import Callable

from swarm.ledger import (STATUS_ACTIVE, STATUS_INACTIVE, STATUS_REVOKED, LedgerClient,
                          LedgerError, Member, MergeStatus, TxResult, node_key)

from sn_node.directory import MemberDirectory
from sn_node.merges import MergeBook, MergeDecision
from sn_node.read_model import ReadModel
from sn_node.rounds import CheckIn, RoundBook, SealedRound, SealPlan

log = logging.getLogger("swarm.sn.ledger")

#: Half the blocks the embedded chain keeps (swarm.ledger.embedded.KEEP_BLOCKS).
RESYNC_AFTER_BLOCKS = 512


class LedgerLoop:
    """Runs every ledger transaction of one SN node, and follows the ledger's events.

    One thread keeps the account's nonces in order and batches naturally: whatever
    arrives while a transaction is in flight goes out in the next one. RPC handlers
    hand it writes through `submit()` and wait on the returned future. Between
    writes it polls the ledger's events (fast while a round is open, slowly when
    idle) to learn other SN nodes' check-ins, seals and members. What the events say
    also goes to `view`, the SN's read model, so that readers never call the ledger.
    """

    def __init__(self, ledger: LedgerClient, directory: MemberDirectory, rounds: RoundBook,
                 fast_poll_s: float = 0.02, idle_poll_s: float = 0.5,
                 view: ReadModel | None = None):
        self.ledger = ledger
        self.directory = directory
        self.rounds = rounds
        self.view = view or ReadModel(directory, rounds)
        self._fast_poll_s = fast_poll_s
        self._idle_poll_s = idle_poll_s
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._next_block = 0
        self._members_stale = True
        self._registered_at: dict[bytes, float] = {}  # key -> when its registration event arrived
        self.min_peers: int | None = None
        self.config_json = ""
        self.finished = 0
        self.transactions = 0
        self.receipts = None  # the SN's ReceiptBook: gets the receipt events
        self.merges = MergeBook(self.submit)  # merged-digest votes and decisions
        self._votes: dict[int, dict[bytes, bytes]] = {}  # round -> id -> digest, until agreed
        self._thread = threading.Thread(target=self._run, name="sn-ledger", daemon=True)

    # --- lifecycle ------------------------------------------------------------------

    def load(self) -> None:
        """Reads the ledger's current state before the SN starts serving."""
        # Read the block first: events after it are replayed, and handling them twice is harmless.
        self._next_block = self.ledger.block_number() + 1
        self.view.note_block(self._next_block - 1)
        self._refresh_members()
        self._refresh_config()
        if self.finished:  # which nodes: the events that said so may be long pruned
            for member in self.directory.all():
                if member.role_name == "sl" and self.ledger.is_finished(member.node_id):
                    self.view.note_finished(node_key(member.node_id), self.finished)
        last = self.ledger.last_sealed_round()
        if last and self.rounds.sealed(last) is None:
            try:
                self.rounds.note_sealed(self._sealed_round(last))
            except LedgerError as error:  # its block is pruned: rounds go on from the next one
                log.warning("cannot read the last sealed round: %s", error)
                return
            merged = self.rounds.sealed(last).merged_digest
            self.view.note_sealed(last, self.rounds.sealed(last).keys)
            if merged:
                self.rounds.note_merged(last, merged)
                self.view.note_merged(last, merged)
                self.merges.note(last, MergeDecision(MergeStatus.AGREED, merged))

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=10)

    def poke(self) -> None:
        """Something changed (a check-in, a transaction through the tunnel): act now."""
        self._wake.set()

    def submit(self, fn: Callable, *args) -> Future:
        """Runs fn(ledger_client, *args) on the ledger thread; the future holds its result."""
        future: Future = Future()
        self._jobs.put((future, fn, args))
        self._wake.set()
        return future

    # --- the loop ---------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._step()
            except Exception:  # the SN must outlive a flaky ledger; say so and go on
                log.exception("ledger step failed; retrying")
                self._stop.wait(0.5)
            timeout = self._idle_poll_s if not self.rounds.has_open() else self._fast_poll_s
            wake = self.rounds.next_wakeup()
            if wake is not None:
                timeout = min(timeout, wake)
            self._wake.wait(timeout)
            self._wake.clear()

    def _step(self) -> None:
        self._poll_events()
        while True:
            try:
                future, fn, args = self._jobs.get_nowait()
            except queue.Empty:
                break
            if future.set_running_or_notify_cancel():
                try:
                    result = fn(self.ledger, *args)
                except Exception as error:  # handed to the waiting RPC
                    future.set_exception(error)
                    continue
                if isinstance(result, TxResult):
                    # The waiter sees its own effects at once (e.g. the merged digest it
                    # just recorded); the poll sees these events again, harmlessly.
                    self._apply(result.events)
                    self.transactions += 1
                future.set_result(result)
        # Membership changes arrive as events (applied in _poll_events); a full re-read
        # (1 + 2M contract calls) only when asked for or after a gap.
        if self._members_stale:
            self._refresh_members()
        now = time.monotonic()
        self._registered_at = {k: t for k, t in self._registered_at.items()
                               if now - t < self.directory.liveness_timeout_s}
        for member in self.directory.silent_members():
            if node_key(member.node_id) in self._registered_at:
                continue  # (re)registered just now: its first heartbeat is on its way
            log.warning("%s has sent no heartbeat for %.0f s: marking it inactive",
                        member.node_id, self.directory.liveness_timeout_s)
            try:
                self.ledger.set_status(member.node_id, STATUS_INACTIVE)
                self.transactions += 1
            except LedgerError as error:
                log.warning("could not mark %s inactive: %s", member.node_id, error)
            self.directory.mark_inactive(node_key(member.node_id))
            self._members_stale = True
        self._seal_ready_rounds()

    def swarm_done(self) -> bool:
        """min_peers nodes have finished: the ledger takes no more rounds."""
        return self.min_peers is not None and self.finished >= self.min_peers

    def _seal_ready_rounds(self) -> None:
        if self.swarm_done():
            return
        plans = self.rounds.plan(self.min_peers, self.directory.active_sl_keys(),
                                 several_sn=self.directory.sn_count() > 1)
        for plan in plans:
            ok = self._send(plan)
            self.rounds.sent(plan, ok)
            if ok and plan.seal_keys is not None:
                # Waiters wake now; the ledger's own RoundSealed event follows and is a no-op.
                self.view.note_sealed(plan.round, tuple(plan.seal_keys))
                self._report_left_out(self.rounds.note_sealed(self.rounds.sealed_as_planned(plan)))

    def _send(self, plan: SealPlan) -> bool:
        keys = list(plan.check_ins)
        weights = [plan.check_ins[k].weight for k in keys]
        digests = [plan.check_ins[k].digest for k in keys]
        started = time.perf_counter()
        try:
            if plan.seal_keys is None:
                self.ledger.check_in(plan.round, keys, weights, digests)
            elif keys:
                self.ledger.check_in_and_seal(plan.round, keys, weights, digests,
                                              list(plan.seal_keys))
            else:
                self.ledger.seal(plan.round, list(plan.seal_keys))
        except LedgerError as error:
            # Another SN sealed first, or a member changed under us: the events say how.
            log.info("round %d: %s", plan.round, error)
            self._poll_events()
            return False
        self.transactions += 1
        what = "checked in" if plan.seal_keys is None else "sealed"
        log.info("round %d %s (%d participant(s)) in %.0f ms", plan.round, what,
                 len(plan.seal_keys or keys), (time.perf_counter() - started) * 1000)
        return True

    def _report_left_out(self, keys: list[bytes]) -> None:
        for key in keys:
            member = self.directory.get(key)
            log.info("%s checked in too late for the sealed round",
                     member.node_id if member else key.hex())

    def _poll_events(self) -> None:
        try:
            events, self._next_block = self.ledger.events_since(self._next_block)
        except Exception:
            # Fallen further behind than the embedded chain keeps blocks (it prunes old
            # ones): the events are gone, so read the state instead and follow from now.
            behind = self.ledger.block_number() - self._next_block
            if behind < RESYNC_AFTER_BLOCKS:
                raise
            log.warning("ledger events of %d blocks cannot be read: reloading the ledger's state",
                        behind)
            self.load()
            return
        self.view.note_block(self._next_block - 1)
        self._apply(events)

    def _apply(self, events) -> None:
        members: dict[bytes, Member] | None = None  # changed by this batch of events
        for event in events:
            name, args = event.name, event.args
            if name == "CheckedIn":  # one event per batch
                for key, weight, digest in zip(args["ids"], args["weights"], args["digests"]):
                    self.rounds.note_check_in(args["round"], key, CheckIn(weight, digest))
                    self.view.note_check_in(args["round"], key)
            elif name == "RoundSealed":  # carries the lists: no read of the round needed
                self.view.note_sealed(args["round"], tuple(args["participants"]))
                if self.rounds.sealed(args["round"]) is None:
                    self._report_left_out(self.rounds.note_sealed(SealedRound(
                        args["round"], tuple(args["participants"]), tuple(args["weights"]),
                        tuple(args["digests"]), b"")))
            elif name == "MergeCommitted":  # a vote: who committed what, until agreed
                self._votes.setdefault(args["round"], {})[args["id"]] = args["digest"]
                for old in [r for r in self._votes if r < args["round"] - 16]:
                    del self._votes[old]
            elif name == "MergeAgreed":  # a strict majority's digest: the round's record
                self.rounds.note_merged(args["round"], args["digest"])
                self.view.note_merged(args["round"], args["digest"])
                self.merges.note_events((event,))
                for key, vote in self._votes.pop(args["round"], {}).items():
                    if vote != args["digest"]:  # outvoted (perhaps it came first)
                        self.view.note_mismatch(args["round"], key, args["digest"], vote)
            elif name == "MergeFailed":
                log.warning("round %d: no merged digest can reach a majority (%d of %d "
                            "participants committed; at most %d agree): the round failed",
                            args["round"], args["votes"], args["participants"], args["topVotes"])
                self.merges.note_events((event,))
            elif name == "MergeMismatch":
                self.view.note_mismatch(args["round"], args["id"], args["expected"],
                                        args["actual"])
                log.warning("round %d: a participant committed merged digest %s but the "
                            "ledger holds %s", args["round"], args["actual"].hex()[:16],
                            args["expected"].hex()[:16])
            elif name in ("ReceiptsSubmitted", "ReceiptsFrozen"):
                if self.receipts is not None:
                    self.receipts.note_chain_event(name, args)
            elif name == "Configured":
                self._refresh_config()
            elif name == "NodeFinished":
                self.finished = args["finishedCount"]
                self.view.note_finished(args["id"], self.finished)
            elif name in ("MemberRegistered", "StatusChanged", "Revoked"):
                if name == "Revoked":
                    self.directory.note_revoked(args["fingerprint"].hex())
                    known = self.directory.get(args["id"])
                    self.view.note_revoked(args["fingerprint"].hex(),
                                           known.node_id if known else "", args["reason"])
                if name == "MemberRegistered":
                    self._registered_at[args["id"]] = time.monotonic()
                if members is None:
                    members = {node_key(m.node_id): m for m in self.directory.all()}
                _apply_member_event(members, name, args)
        if members is not None:
            self.directory.replace(list(members.values()))
            self.view.note_members(self.directory.all())

    def _sealed_round(self, round_number: int) -> SealedRound:
        info = self.ledger.round_info(round_number)
        return SealedRound(round_number, tuple(info.participants), tuple(info.weights),
                           tuple(info.digests), info.merged_digest or b"")

    def refresh_members_now(self) -> None:
        """Re-reads every member, on the ledger thread: a read from another thread could
        land between the thread's event batches and undo a registration it just applied."""
        self._on_ledger_thread(self._refresh_members)

    def refresh_config_now(self) -> None:
        self._on_ledger_thread(self._refresh_config)

    def _on_ledger_thread(self, read: Callable[[], object]):
        if not self._thread.is_alive() or threading.current_thread() is self._thread:
            return read()
        return self.submit(lambda ledger: read()).result(timeout=60)

    def read(self, fn: Callable):
        """fn(ledger) on the ledger thread (the only ledger caller); returns its result."""
        return self._on_ledger_thread(lambda: fn(self.ledger))

    def refresh_round(self, round_number: int) -> None:
        """Makes sure a sealed round's merge decision is known, reading the ledger if it is
        not (e.g. its events passed before a restart)."""
        sealed = self.rounds.sealed(round_number)
        if sealed is not None and sealed.merged_digest:
            return  # once recorded, a round's merged digest never changes
        state = self.read(lambda ledger: ledger.merge_status(round_number))
        if state.status == MergeStatus.AGREED:
            self.rounds.note_merged(round_number, state.digest)
            self.view.note_merged(round_number, state.digest)
            self.merges.note(round_number, MergeDecision(MergeStatus.AGREED, state.digest))
        elif state.status == MergeStatus.FAILED:
            self.merges.note(round_number, MergeDecision(MergeStatus.FAILED))

    def _refresh_members(self) -> None:
        self.directory.replace(self.ledger.members())
        self.view.note_members(self.directory.all())
        self._members_stale = False

    def _refresh_config(self) -> None:
        config = self.ledger.config()
        if config.configured:
            self.min_peers, self.config_json = config.min_peers, config.config_json
        self.finished = self.ledger.finished_count()
        self.view.note_config(self.min_peers, self.config_json, self.finished)


class LedgerReceipts:
    """The receipts functions of the ledger, sent by the ledger thread
    (sn_node.receipts.ChainReceipts)."""

    def __init__(self, loop: LedgerLoop, timeout_s: float):
        self._loop = loop
        self._timeout_s = timeout_s

    def submit(self, round_number: int, phase: int, key: bytes, bits: bytes,
               remaining_s: float) -> None:
        future = self._loop.submit(lambda ledger: ledger.submit_receipts(
            round_number, phase, key, bits, remaining_s))
        try:
            future.result(timeout=self._timeout_s)
        except TimeoutError:
            raise LedgerError("submitReceipts", "the ledger did not answer in time") from None

    def freeze(self, round_number: int, phase: int) -> None:
        def done(future: Future) -> None:
            if future.exception() is not None:  # too early, or another SN froze it first
                log.debug("round %d phase %d: %s", round_number, phase, future.exception())

        self._loop.submit(lambda ledger: ledger.freeze_receipts(round_number, phase)
                          ).add_done_callback(done)


def _apply_member_event(members: dict[bytes, Member], name: str, args) -> None:
    """Applies one membership event to a {key: Member} map, as the contract does.

    last_seen is not in the events: the poll follows the chain within a second,
    so the local clock stands in for the block's timestamp.
    """
    now = int(time.time())
    if name == "MemberRegistered":
        members[args["id"]] = Member(args["id"], args["nodeId"], args["role"], args["fingerprint"],
                                     args["endpoint"], STATUS_ACTIVE, now, args["controller"])
        return
    key = args["id"]
    member = members.get(key)
    if member is None:
        return  # revoked before it ever registered: nothing to update
    status = args["status"] if name == "StatusChanged" else STATUS_REVOKED
    members[key] = replace(member, status=status, last_seen=now)
