"""Gaussian noise on the update: a model-poisoning attack in which a malicious node adds
N(0, sigma^2) noise to every coordinate of what it sends (its update plus noise).

Blanchard, El Mhamdi, Guerraoui, Stainer, "Machine Learning with Adversaries: Byzantine
Tolerant Gradient Descent", NeurIPS 2017 (Gaussian Byzantine workers).
"""

from __future__ import annotations

import numpy as np

DEFAULT_SIGMA = 1.0


def gaussian_noise(weights: np.ndarray, rng: np.random.Generator,
                   sigma: float = DEFAULT_SIGMA) -> np.ndarray:
    """weights + N(0, sigma^2) per coordinate, in the weights' dtype."""
    weights = np.asarray(weights)
    noise = rng.normal(0.0, sigma, size=weights.shape)
    return (weights + noise).astype(weights.dtype, copy=False)
