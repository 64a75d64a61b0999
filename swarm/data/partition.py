"""Which training samples each node of a swarm gets, and each node's own seed.

Every node calls ``partition`` with the same labels, ``num_nodes``, scheme and base
``seed``, and its own ``node_index``. Each computes the same global split (all
randomness is drawn from the base seed), so the nodes' index sets are disjoint and
together cover every sample exactly once. Schemes:

- ``"iid"``: stratified at random: each class's samples are shuffled and dealt out in
  turn, so every node's class proportions match the global ones (to one sample per
  class) and node sizes differ by at most one.
- ``"label"``: by label, round robin over the sorted class list: node i gets every
  class whose rank r (0 for the smallest label) has r % num_nodes == i. Needs at least
  as many classes as nodes.
- ``"dirichlet"``: for each class, proportions p ~ Dirichlet(alpha, ..., alpha) over
  the nodes; the class's shuffled samples are cut into runs of those sizes. Small
  alpha (0.1) gives skewed, few-class nodes, large alpha (100) nearly iid ones. A node
  can get no samples at all when alpha is small and the nodes many.

``node_seed`` derives the seed a node uses for its own shuffles and augmentations.
"""

from __future__ import annotations

import hashlib

import numpy as np

PARTITION_SCHEMES = ("iid", "label", "dirichlet")


def node_seed(base_seed: int, node_index: int) -> int:
    """A node's own seed: the first 4 bytes (big-endian) of SHA-256(f"{base_seed}:{node_index}").

    Nodes of one run differ, reruns with the same base seed repeat, and anyone can
    recompute it (e.g. ``node_seed(0, 1) == int.from_bytes(sha256(b"0:1").digest()[:4], "big")``).
    """
    digest = hashlib.sha256(f"{base_seed}:{node_index}".encode()).digest()
    return int.from_bytes(digest[:4], "big")


def partition(labels: np.ndarray, num_nodes: int, node_index: int, *, scheme: str = "iid",
              alpha: float = 0.5, seed: int = 0) -> np.ndarray:
    """The sorted indices into ``labels`` that node ``node_index`` of ``num_nodes`` trains on."""
    if not 0 <= node_index < num_nodes:
        raise ValueError(f"node_index must be in 0..{num_nodes - 1}, not {node_index}")
    return partition_all(labels, num_nodes, scheme=scheme, alpha=alpha, seed=seed)[node_index]


def partition_all(labels: np.ndarray, num_nodes: int, *, scheme: str = "iid",
                  alpha: float = 0.5, seed: int = 0) -> list[np.ndarray]:
    """Every node's sorted indices: disjoint, and together all of ``range(len(labels))``."""
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"labels must be one-dimensional, not of shape {labels.shape}")
    if num_nodes < 1:
        raise ValueError(f"num_nodes must be at least 1, not {num_nodes}")
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    by_class = [rng.permutation(np.flatnonzero(labels == c)) for c in classes]
    if scheme == "iid":
        dealt = np.concatenate(by_class) if by_class else np.empty(0, np.int64)
        parts = [dealt[node::num_nodes] for node in range(num_nodes)]
    elif scheme == "label":
        if len(classes) < num_nodes:
            raise ValueError(f"the label partition needs at least as many classes as nodes "
                             f"({len(classes)} classes, {num_nodes} nodes)")
        parts = [np.concatenate(by_class[node::num_nodes]) for node in range(num_nodes)]
    elif scheme == "dirichlet":
        if not alpha > 0:
            raise ValueError(f"alpha must be positive, not {alpha}")
        runs = [_dirichlet_runs(rng, members, num_nodes, alpha) for members in by_class]
        parts = [np.concatenate([run[node] for run in runs] or [np.empty(0, np.int64)])
                 for node in range(num_nodes)]
    else:
        raise ValueError(f"unknown partition scheme {scheme!r}; "
                         f"choose from {', '.join(PARTITION_SCHEMES)}")
    return [np.sort(part).astype(np.int64) for part in parts]


def _dirichlet_runs(rng: np.random.Generator, members: np.ndarray, num_nodes: int,
                    alpha: float) -> list[np.ndarray]:
    """``members`` cut into ``num_nodes`` runs sized by proportions ~ Dirichlet(alpha)."""
    proportions = rng.dirichlet(np.full(num_nodes, alpha))
    cuts = np.round(np.cumsum(proportions)[:-1] * len(members)).astype(int)
    return np.split(members, cuts)
