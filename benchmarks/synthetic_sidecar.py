"""An ML sidecar with no model: random weights of a given size, synced ROUNDS times.

For benchmarks and tests of the swarm itself: each "batch" nudges the weights and
syncs (syncFrequency 1). Environment: NODE_INDEX, MIN_PEERS, MODEL_BYTES (float32
elements x 4), ROUNDS, optionally SHAPE (e.g. "64x10", the weights' shape instead) and
NODE_WEIGHTAGE. The initial weights are standard normal, seeded by NODE_INDEX.
"""

from __future__ import annotations

import os

import numpy as np

from swarm.callback import SwarmCallback


def main() -> int:
    node = int(os.environ.get("NODE_INDEX", "0"))
    rounds = int(os.environ.get("ROUNDS", "5"))
    if os.environ.get("SHAPE"):
        shape = tuple(int(n) for n in os.environ["SHAPE"].split("x"))
    else:
        shape = (int(os.environ.get("MODEL_BYTES", str(1 << 20))) // 4,)
    rng = np.random.default_rng(node)
    weights = {"w": rng.standard_normal(shape).astype(np.float32)}

    def set_weights(new):
        weights["w"] = np.array(new["w"], dtype=np.float32)

    callback = SwarmCallback(lambda: {"w": weights["w"]}, set_weights, syncFrequency=1,
                             minPeers=int(os.environ.get("MIN_PEERS", "2")),
                             nodeWeightage=int(os.environ.get("NODE_WEIGHTAGE", "1")),
                             checkinModelOnTrainEnd="inactive")
    callback.on_train_begin()
    for _ in range(rounds):
        weights["w"] += np.float32(0.01)  # "training"
        callback.on_batch_end()
        if callback.swarm_done:
            break
    callback.on_train_end()
    print(f"node {node}: {callback.rounds_done} rounds", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
