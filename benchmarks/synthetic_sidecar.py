"""An ML sidecar with no model: random weights of a given size, synced ROUNDS times.

For benchmarks and tests of the swarm itself: each "batch" nudges the weights and
syncs (syncFrequency 1). Environment: NODE_INDEX, MIN_PEERS, MODEL_BYTES (float32
elements x 4), ROUNDS, optionally SHAPE (e.g. "64x10", the weights' shape instead) and
NODE_WEIGHTAGE. The initial weights are standard normal, seeded by NODE_INDEX.

Records, under MODEL_DIR: handoff.jsonl, one line per sync that loaded a merged model
(perf_counter times: before the sync, the channel's Handoff, set_weights, the merged
model loaded; the sidecar's CPU seconds for the sync), and final.json with the SHA-256 of the final weights' bytes.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import numpy as np

from swarm.callback import LocalChannel, SwarmCallback


def main() -> int:
    node = int(os.environ.get("NODE_INDEX", "0"))
    rounds = int(os.environ.get("ROUNDS", "5"))
    if os.environ.get("SHAPE"):
        shape = tuple(int(n) for n in os.environ["SHAPE"].split("x"))
    else:
        shape = (int(os.environ.get("MODEL_BYTES", str(1 << 20))) // 4,)
    rng = np.random.default_rng(node)
    weights = {"w": rng.standard_normal(shape).astype(np.float32)}
    model_dir = Path(os.environ.get("MODEL_DIR") or "./model")
    model_dir.mkdir(parents=True, exist_ok=True)
    records = (model_dir / "handoff.jsonl").open("w", encoding="utf-8")
    before = [0.0, 0.0]  # perf_counter, process CPU seconds
    set_times = [0.0, 0.0]

    def set_weights(new):
        set_times[0] = time.perf_counter()
        weights["w"] = np.array(new["w"], dtype=np.float32)
        set_times[1] = time.perf_counter()

    channel = LocalChannel()

    def merged(round_no: int) -> None:
        handoff = channel.last_handoff
        records.write(json.dumps({"round": round_no, "before": before[0],
                                  "set": set_times, "loaded": time.perf_counter(),
                                  "cpu_s": time.process_time() - before[1],
                                  "cpu_now": time.process_time(),
                                  "handoff": handoff.as_dict() if handoff else None}) + "\n")
        records.flush()

    callback = SwarmCallback(lambda: {"w": weights["w"]}, set_weights, syncFrequency=1,
                             minPeers=int(os.environ.get("MIN_PEERS", "2")),
                             nodeWeightage=int(os.environ.get("NODE_WEIGHTAGE", "1")),
                             checkinModelOnTrainEnd="inactive", channel=channel)
    callback.add_merge_listener(merged)
    before[:] = time.perf_counter(), time.process_time()
    callback.on_train_begin()
    for _ in range(rounds):
        weights["w"] += np.float32(0.01)  # "training"
        before[:] = time.perf_counter(), time.process_time()
        callback.on_batch_end()
        if callback.swarm_done:
            break
    callback.on_train_end()
    channel.close()
    records.close()
    (model_dir / "final.json").write_text(json.dumps({
        "rounds": callback.rounds_done,
        "weights_sha256": hashlib.sha256(weights["w"].tobytes()).hexdigest()}))
    print(f"node {node}: {callback.rounds_done} rounds", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
