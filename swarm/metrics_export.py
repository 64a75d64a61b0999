"""Prometheus metrics of a swarm node (SN or SL), served on `/metrics` by prometheus-client.

(Not to be confused with `swarm.metrics`, the training program's ML metrics.)

Each node has its own registry, so two nodes in one process never mix their series.
Metric names (all prefixed `swarm_`, with a `node` label on none: one endpoint per node):

    swarm_rounds_total{status}            rounds ended here (SL: merged|failed; SN: merged)
    swarm_round_seconds                   histogram: SL check-in to merged; SN first
                                          check-in to merged digest on the ledger
    swarm_last_round                      the last round that ended here
    swarm_bytes_sent_total                SL: this node's exchange bytes; SN: sum of reports
    swarm_bytes_received_total
    swarm_dropped_peers_total{stage}      updates left out: seal (checked in too late) or
                                          exchange (not received intact by every owner)
    swarm_refused_updates_total{reason}   SN: calls it refused, by typed reason
                                          (sn_api.proto Reason: ROUND_OVER, DUPLICATE_CHECK_IN...)
"""

from __future__ import annotations

import logging

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

log = logging.getLogger("swarm.metrics")

# Rounds take from tens of milliseconds (small models on one host) to minutes.
ROUND_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)


class NodeMetrics:
    """The counters of one node; `serve()` starts its /metrics endpoint."""

    def __init__(self, role: str):
        self.role = role
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.rounds = Counter("swarm_rounds", "Rounds ended at this node, by status",
                              ["status"], registry=r)
        self.round_seconds = Histogram("swarm_round_seconds",
                                       "Round latency: check-in to merged model",
                                       buckets=ROUND_BUCKETS, registry=r)
        self.last_round = Gauge("swarm_last_round", "The last round that ended here",
                                registry=r)
        self.bytes_sent = Counter("swarm_bytes_sent", "Exchange bytes sent to peers",
                                  registry=r)
        self.bytes_received = Counter("swarm_bytes_received",
                                      "Exchange bytes received from peers", registry=r)
        self.dropped = Counter("swarm_dropped_peers",
                               "Peers' updates left out of a round, by stage (seal|exchange)",
                               ["stage"], registry=r)
        self.refused = Counter("swarm_refused_updates",
                               "Calls refused, by typed reason code", ["reason"], registry=r)
        self._server = None

    # --- what a node reports -----------------------------------------------------------

    def observe_outcome(self, round_number: int, status: str, seconds: float,
                        bytes_sent: int, bytes_received: int, participants, dropped) -> None:
        """One round's outcome (an SL node's RoundOutcome, or one reported to the SN)."""
        if status not in ("merged", "failed"):
            return  # loaded (catch-up) and swarm_done are no rounds of this node's
        self.rounds.labels(status).inc()
        if status == "merged":
            self.round_seconds.observe(seconds)
        self.last_round.set(round_number)
        self.bytes_sent.inc(bytes_sent)
        self.bytes_received.inc(bytes_received)
        self.observe_dropped(participants, dropped)

    def observe_dropped(self, participants, dropped) -> None:
        # A dropped node outside the sealed set checked in too late; inside, its update
        # was not taken during the exchange.
        inside = set(participants)
        for node_id in dropped:
            self.dropped.labels("exchange" if node_id in inside else "seal").inc()

    def observe_round(self, round_number: int, seconds: float | None) -> None:
        """The SN saw a round merged on the ledger."""
        self.rounds.labels("merged").inc()
        self.last_round.set(round_number)
        if seconds is not None:
            self.round_seconds.observe(seconds)

    def observe_refusal(self, reason: str) -> None:
        self.refused.labels(reason).inc()

    # --- the endpoint ------------------------------------------------------------------

    def serve(self, port: int, host: str = "127.0.0.1") -> None:
        """Serves /metrics on host:port in a daemon thread (prometheus-client's server)."""
        self._server, _thread = start_http_server(port, addr=host, registry=self.registry)
        log.info("metrics on http://%s:%d/metrics", host, port)

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
