"""Where an SL node's RoundOutcomes go besides rounds.jsonl: its SN, metrics, a progress line.

`Outcomes` fans one outcome out to several sinks; a sink that fails is logged and
never stops the round. `OutcomeReporter` sends outcomes to the SN from its own
thread: training never waits on the SN, and an SN that is down only loses reports.
"""

from __future__ import annotations

import logging
import queue
import threading
from dataclasses import replace
from typing import Callable

from swarm.protos import sn_api_pb2 as pb

log = logging.getLogger("swarm.sl")

MAX_QUEUED = 64


class Outcomes:
    """Calls every sink with each outcome, in order; the first is the outcome log."""

    def __init__(self, *sinks: Callable):
        self._sinks = list(sinks)
        self._metrics: tuple[int, dict[str, float]] | None = None
        self._metrics_lock = threading.Lock()

    def note_metrics(self, round_number: int, metrics: dict[str, float]) -> None:
        """The sidecar's validation metrics of round `round_number`'s merged model:
        put on the next outcome (that round's own outcome is already recorded)."""
        with self._metrics_lock:
            self._metrics = (round_number, dict(metrics))

    def add(self, sink: Callable) -> None:
        self._sinks.append(sink)

    def __call__(self, outcome) -> None:
        with self._metrics_lock:
            pending, self._metrics = self._metrics, None
        if pending is not None and not outcome.metrics_round:
            outcome = replace(outcome, metrics_round=pending[0], metrics=pending[1])
        for i, sink in enumerate(self._sinks):
            if i == 0:
                sink(outcome)  # the log of record: its failure is the caller's to see
                continue
            try:
                sink(outcome)
            except Exception:  # a watcher must never fail a round; say so and go on
                log.exception("round %s: an outcome sink failed", outcome.round)


def to_report(outcome) -> pb.OutcomeReport:
    return pb.OutcomeReport(
        round=outcome.round, status=outcome.status, reason=outcome.reason[:1024],
        participants=list(outcome.participants), contributors=list(outcome.contributors),
        dropped=dict(outcome.dropped), control_s=outcome.control_s,
        exchange_s=outcome.exchange_s, bytes_sent=outcome.bytes_sent,
        bytes_received=outcome.bytes_received, model_bytes=outcome.model_bytes,
        merged_digest=outcome.merged_digest, merge_method=outcome.merge_method,
        agreed={None: 0, True: 1, False: 2}[outcome.agreed], finished_at=outcome.finished_at,
        metrics=outcome.metrics, metrics_round=outcome.metrics_round)


class OutcomeReporter:
    """Queues merged and failed outcomes and sends them to the SN from a daemon thread.

    The queue is bounded: while the SN is unreachable the oldest reports are dropped
    (the outcome log keeps every one). One warning per outage, not one per report.
    """

    def __init__(self, sn, timeout_s: float = 5.0):
        self._sn = sn
        self._timeout_s = timeout_s
        self._queue: queue.Queue = queue.Queue(maxsize=MAX_QUEUED)
        self._failing = False
        self.sent = 0
        self._thread = threading.Thread(target=self._run, name="sl-outcome-report", daemon=True)
        self._thread.start()

    def __call__(self, outcome) -> None:
        if outcome.status not in ("merged", "failed"):
            return
        try:
            self._queue.put_nowait(outcome)
        except queue.Full:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                pass
            self._queue.put_nowait(outcome)

    def close(self) -> None:
        self._queue.put(None)

    def _run(self) -> None:
        while True:
            outcome = self._queue.get()
            if outcome is None:
                return
            try:
                self._sn.report_outcome(to_report(outcome), timeout_s=self._timeout_s)
                self.sent += 1
                self._failing = False
            except Exception as error:  # best effort: the SN may be down or older
                if not self._failing:
                    log.warning("round %d: could not report the outcome to the SN: %s",
                                outcome.round, error)
                self._failing = True
