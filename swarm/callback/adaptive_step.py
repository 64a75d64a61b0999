"""What a node sends when its optimizer scales every coordinate's step (Adam and kin).

Averaging models works for SGD: each node's update is its gradient times the rate, and
the mean of the updates is the update for the mean gradient. Adam-family optimizers
normalise each coordinate's step to about the learning rate whatever the gradient's
size, so on label-skewed sites the nodes' steps point different ways at the same
length and their mean is a fraction of any one step: measured on digits split by
label over three sites, the swarm ends near a single site (README, "Defaults").

So, for those optimizers, a node sends

    merged + 1.5 * peers * (local - merged) + momentum * (merged - previous merged)

where `merged` is the last merged model it loaded, shortened where needed so that what
it adds to `merged` is never longer than `1.5 * peers * |local - merged|` (momentum turns
the step, it does not lengthen it), and without the momentum term when this node's step
points against the merged model's last step (a restart). Without that bound, on similar
sites the merged model moved up to peers / (1 - momentum) node steps per round and
diverged near convergence (digits, 8 random sites, 60 epochs: 0.385 against 0.870 for
plain averaging; benchmarks/adam_label_skew.py). The mean over the peers is then the
merged model plus 1.5 x the SUM of their steps (the steps one model trained on all their
data would have taken, and half again: a server learning rate of 1.5 x the number of
peers; the restart is in O'Donoghue and Candes, "Adaptive Restart for Accelerated
Gradient Schemes", 2015) plus heavy-ball momentum on the merged model's own steps
(FedAvgM: Hsu, Qi and Brown, "Measuring the
Effects of Non-Identical Data Distribution for Federated Visual Classification", 2019;
server learning rates: Reddi et al., "Adaptive Federated Optimization", ICLR 2021).
It needs nothing from the merge: every node still loads the plain merged model, so the
nodes stay bit-identical, and any merge method applies.
"""

from __future__ import annotations

import numpy as np

# Optimizers whose step per coordinate is normalised (lower-case class names, PyTorch
# and Keras spellings).
ADAPTIVE_OPTIMIZERS = frozenset({
    "adam", "adamw", "adamax", "nadam", "radam", "sparseadam", "rmsprop", "adagrad",
    "adadelta", "adafactor", "lion", "lamb",
})
# Momentum on the merged model's steps (the server momentum of FedAvgM, 0.9 there). It
# carries the label-skewed case (digits by label, 3 sites, median of 3 seeds: 0.625
# without, 0.76 with 0.5); 0.5 rather than 0.8 because, even with the length bound, 0.8
# fell below plain averaging on 8 similar sites over 60 epochs (0.858 against 0.887)
# where 0.5 stays above it (0.913). README "Defaults"; benchmarks/adam_label_skew.py.
MOMENTUM = 0.5
# The server learning rate in units of the number of peers: a node's step counts GAIN x
# peers times in what it sends. 1.5 rather than 1: the label-skewed case under the real
# schedule goes 0.577 -> 0.644 (median of 8 seeds) with the restart below, while 8 similar
# sites over 60 epochs stay where 1 had them (0.923 -> 0.930, plain averaging 0.875);
# 2 fell below plain averaging there once momentum was 0.6 (0.840).
GAIN = 1.5


def is_adaptive(optimizer_name: str) -> bool:
    return optimizer_name.lower() in ADAPTIVE_OPTIMIZERS


class AdaptiveStep:
    """Turns this node's model into the update it sends, for an Adam-family optimizer.

    `mask` marks the flat-vector elements the optimizer trains (buffers such as
    BatchNorm statistics and counters are sent unchanged). `loaded(flat, round)` records
    each merged model loaded into the model; momentum needs two consecutive rounds.
    `bounded=False` drops the length bound (for benchmarks only: it diverges, see above);
    `gain` and `restart` are there for the benchmark's rows too.
    """

    def __init__(self, mask: np.ndarray, momentum: float = MOMENTUM, bounded: bool = True,
                 gain: float = GAIN, restart: bool = True):
        self.mask = mask
        self.momentum = momentum
        self.bounded = bounded
        self.gain = gain
        self.restart = restart
        self._merged: np.ndarray | None = None
        self._round: int | None = None
        self._velocity: np.ndarray | None = None

    def loaded(self, flat: np.ndarray, round_no: int) -> None:
        if self._merged is not None and self._round is not None and round_no == self._round + 1:
            self._velocity = flat - self._merged
        else:  # a first merge, a catch-up or a missed round: no step to carry on
            self._velocity = None
        self._merged = flat.copy()
        self._round = round_no

    def outgoing(self, flat: np.ndarray, peers: int) -> np.ndarray:
        """The update to send for this node's model `flat`, with `peers` contributors."""
        if self._merged is None or peers <= 1:  # alone, a node trains as it would locally
            return flat
        out = flat.copy()
        m = self.mask
        base = self._merged[m]
        scale = np.asarray(self.gain * max(1, peers), dtype=flat.dtype)
        own = flat[m] - base
        step = scale * own
        if self._velocity is not None and self.momentum:
            velocity = self._velocity[m]
            # Restart: momentum only while this node's step goes the way the merged model
            # went (O'Donoghue and Candes, "Adaptive Restart for Accelerated Gradient
            # Schemes", 2015). Near convergence on similar sites the steps turn back and
            # forth; with GAIN 1.5, carrying momentum through those turns took 8 similar
            # sites over 60 epochs to 0.840 at worst (0.890 with the restart).
            if not self.restart or float(np.dot(own, velocity)) >= 0:
                step = step + np.asarray(self.momentum, dtype=flat.dtype) * velocity
                if self.bounded:
                    limit = float(scale) * float(np.linalg.norm(own))
                    length = float(np.linalg.norm(step))
                    if length > limit:
                        step = step * np.asarray(limit / length if length else 0.0,
                                                 dtype=flat.dtype)
        out[m] = base + step
        return out
