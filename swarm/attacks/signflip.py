"""Sign flipping with scaling: a model-poisoning attack in which a malicious node sends
the opposite of its update, scaled up, so that a plain mean moves against the others.

Update w - r (r: the last merged model) becomes -scale * (w - r): the node sends
r - scale * (w - r). Sign flipping: Li, Xu, Chen, Giannakis, Ling, "RSA: Byzantine-Robust
Stochastic Aggregation Methods for Distributed Learning from Heterogeneous Datasets",
AAAI 2019; scaling ("boosting") the malicious update: Bhagoji, Chakraborty, Mittal,
Calo, "Analyzing Federated Learning through an Adversarial Lens", ICML 2019.
"""

from __future__ import annotations

import numpy as np

DEFAULT_SCALE = 10.0


def sign_flip(weights: np.ndarray, reference: np.ndarray, scale: float = DEFAULT_SCALE) -> np.ndarray:
    """reference - scale * (weights - reference), in the weights' dtype."""
    weights = np.asarray(weights)
    reference = np.asarray(reference, dtype=weights.dtype)
    return (reference - weights.dtype.type(scale) * (weights - reference)).astype(weights.dtype, copy=False)
