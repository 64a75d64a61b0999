"""swarm.keras.SwarmCallback where tf.keras is Keras 2 (tf-keras, TF_USE_LEGACY_KERAS=1).

TensorFlow picks the Keras behind tf.keras once per process, so each case runs a
TensorFlow 2 program (keras2_program.py) in a subprocess, against the stand-in SL node.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from swarm.callback import FINAL_LOG_LINE

pytest.importorskip("tf_keras", reason="tf-keras is not installed (pip install 'swarm[keras2]')")

PROGRAM = Path(__file__).with_name("keras2_program.py")
REPO = Path(__file__).resolve().parents[2]


def run_program(out_dir: Path, mode: str) -> tuple[dict, str]:
    env = {**os.environ, "TF_USE_LEGACY_KERAS": "1", "TF_CPP_MIN_LOG_LEVEL": "2",
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, str(PROGRAM), str(out_dir), mode], env=env,
                          cwd=out_dir, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads((out_dir / "result.json").read_text()), proc.stdout + proc.stderr


def test_a_keras2_program_trains_syncs_and_saves_with_model_save_dir(sl_node, tmp_path):
    standin = sl_node()
    result, output = run_program(tmp_path, "fit")
    assert result["keras_2"] and result["model_module"].startswith("tf_keras")
    assert standin.hellos[0].framework == "keras"
    # Every weight travels, BatchNorm's moving statistics included.
    assert len(standin.layout.tensors) == result["tensors"] == 8
    batches = 2 * -(-1797 // 64)
    assert batches // 8 + 1 <= len(standin.syncs) <= batches + 1  # adaptive: 4 +/- changes
    assert standin.received[-1].call == "Finish"
    # The final swarm model is what the program ends with, saves and loads back.
    final = standin.layout.unflatten(standin.final())
    saved = np.load(tmp_path / "final.npz")
    assert all(np.array_equal(saved[f"arr_{i}"], w) for i, w in enumerate(final))
    assert result["saved_dir"] and result["saved_matches"]
    assert result["final_model_path"].endswith("saved_models/digits_mlp.keras")
    assert Path(result["final_model_path"]).is_file()
    # Adaptive sync measured the merged model (metric state kept: accuracy is sane).
    assert len(re.findall(r"Validation loss after round", output)) == len(standin.syncs)
    assert all(0.0 < a <= 1.0 for a in result["accuracy"])
    assert output.rstrip().splitlines()[-1].endswith(FINAL_LOG_LINE)


def test_a_one_shot_generator_as_ads_val_data_is_validated_on_every_merge(sl_node, tmp_path):
    standin = sl_node()
    result, output = run_program(tmp_path, "generator")
    losses = re.findall(r"Validation loss after round \d+: (\S+)", output)
    assert len(losses) == len(standin.syncs) >= 3
    assert all(np.isfinite(float(loss)) for loss in losses)


def test_a_non_finite_weight_or_a_keras3_model_is_refused_clearly(sl_node, tmp_path):
    standin = sl_node()
    result, _ = run_program(tmp_path, "nan")
    message = result["error"]
    assert "tensor '2' at index (5,)" in message
    assert re.search(r"\(batch_normalization(_\d+)?/gamma:0\)", message), message
    assert standin.received == []
    assert result["mixed_error"].startswith("the model is a Keras 3 model but swarm.keras "
                                            "uses Keras 2 (tf-keras 2.21"), result
