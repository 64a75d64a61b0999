"""The established product's example programs, with only the SwarmCallback import
changed (see each program's header), as two-node swarms on generated data: real SN and
SL nodes, the programs as their ML sidecars. Both nodes must end with the same model,
in the callback's saved model (and, for Keras, in the SavedModel the program saves itself),
and say the final line."""

from __future__ import annotations

import csv
import importlib.util

import numpy as np
import pytest

from swarm.callback import FINAL_LOG_LINE

pytestmark = pytest.mark.slow  # real swarms for tens of seconds: -m "not slow" skips them
PROGRAMS = "tests/compat/programs"


def mnist_like(path, seed: int, train: int, test: int = 256) -> None:
    """28x28 uint8 digits: one fixed pattern per class (the same on every node) plus noise."""
    patterns = np.random.default_rng(1234).random((10, 28, 28)) < 0.2
    rng = np.random.default_rng(seed)

    def draw(n):
        y = rng.integers(0, 10, n)
        x = patterns[y] * 200 + rng.integers(0, 56, (n, 28, 28))
        return x.astype("uint8"), y.astype("uint8")

    (x_train, y_train), (x_test, y_test) = draw(train), draw(test)
    path.mkdir(parents=True, exist_ok=True)
    np.savez(path / "mnist.npz", x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)


def fraud_like(path, seed: int, rows: int) -> None:
    """30 numeric features and a 0/1 class, with a header row, as the program reads them."""
    weights = np.random.default_rng(99).normal(size=30)
    rng = np.random.default_rng(seed)
    path.mkdir(parents=True, exist_ok=True)
    for name, n in (("SB19_CCFDUBL_BAL_TRAIN_2C.csv", rows), ("SB19_CCFDUBL_BAL_TEST_2C.csv", 256)):
        x = rng.normal(size=(n, 30))
        y = (x @ weights > 0).astype(float)
        with open(path / name, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow([f"V{i}" for i in range(30)] + ["Class"])
            writer.writerows(np.column_stack([x, y]).tolist())


def run_two_nodes(sites, start_sn, start_sl, tmp_path, program, make_data, env):
    sentinel = start_sn(sites[0])
    nodes = []
    for index, site in enumerate(sites[:2]):
        root = tmp_path / f"node{index}"
        make_data(root / "data", seed=index)
        node_env = {"DATA_DIR": str(root / "data"), "SCRATCH_DIR": str(root / "scratch"),
                    "MODEL_DIR": str(root / "model"), "MIN_PEERS": "2", "NODE_INDEX": str(index),
                    "TF_CPP_MIN_LOG_LEVEL": "2", **env}
        nodes.append(start_sl(site, sentinel, f"{PROGRAMS}/{program}", node_env)[0])
    for proc in nodes:
        assert proc.wait_exit(300) == 0, proc.output[-5000:]
    for proc in nodes:
        rounds = [i for i, line in enumerate(proc.lines) if "SwarmCallback INFO: Swarm round" in line]
        final = [i for i, line in enumerate(proc.lines) if line.endswith(FINAL_LOG_LINE)]
        # The start, at least one sync within training, the final round, then the line.
        assert len(rounds) >= 3 and len(final) == 1 and final[0] > rounds[-1], proc.output[-3000:]
    return [tmp_path / f"node{i}" for i in range(2)]


def savedmodel_weights(directory) -> dict[str, np.ndarray]:
    """The variables of a TensorFlow SavedModel directory (Keras 2's model.save(dir))."""
    import tensorflow as tf

    assert (directory / "saved_model.pb").is_file()
    reader = tf.train.load_checkpoint(str(directory / "variables" / "variables"))
    names = [n for n in reader.get_variable_to_shape_map()
             if n.startswith("layer_with_weights") and "OPTIMIZER_SLOT" not in n]
    assert names
    return {n: reader.get_tensor(n) for n in names}


def keras_file_weights(path) -> list[np.ndarray]:
    """The layers' weights in a .keras file (the callback's save), read without Keras
    (not the optimizer's or the metrics' state: those stay local to each node)."""
    import zipfile

    import h5py

    with zipfile.ZipFile(path) as archive, archive.open("model.weights.h5") as raw:
        with h5py.File(raw, "r") as h5:
            out = []
            h5.visititems(lambda name, obj: out.append((name, obj[()]))
                          if isinstance(obj, h5py.Dataset) else None)
    return [value for name, value in sorted(out, key=lambda item: item[0])
            if name.startswith("layers/")]


needs_tf_keras = pytest.mark.skipif(importlib.util.find_spec("tf_keras") is None,
                                    reason="tf-keras is not installed (pip install 'swarm[keras2]')")
KERAS2 = {"TF_USE_LEGACY_KERAS": "1"}


def assert_same_keras_models(roots, model_name, callback_name):
    first, second = (savedmodel_weights(root / "scratch" / model_name) for root in roots)
    assert first.keys() == second.keys()
    assert all(np.array_equal(first[k], second[k]) for k in first)
    a, b = (keras_file_weights(root / "model" / "saved_models" / f"{callback_name}.keras")
            for root in roots)
    assert len(a) == len(b) > 0 and all(np.array_equal(x, y) for x, y in zip(a, b))


@needs_tf_keras
def test_mnist_keras2_program_saves_with_model_save_dir(sites, start_sn, start_sl, tmp_path):
    roots = run_two_nodes(sites, start_sn, start_sl, tmp_path, "mnist_tf.py",
                          lambda path, seed: mnist_like(path, seed, train=4096),
                          {**KERAS2, "MAX_EPOCHS": "5"})
    assert_same_keras_models(roots, "mnist_tf", "sequential")


@needs_tf_keras
def test_fraud_detection_keras2_program(sites, start_sn, start_sl, tmp_path):
    roots = run_two_nodes(sites, start_sn, start_sl, tmp_path, "fraud-detection.py",
                          lambda path, seed: fraud_like(path, seed, rows=4096),
                          {**KERAS2, "MAX_EPOCHS": "2"})
    assert_same_keras_models(roots, "fraud-detection", "sequential")


def test_mnist_pytorch_program(sites, start_sn, start_sl, tmp_path):
    import torch

    roots = run_two_nodes(sites, start_sn, start_sl, tmp_path, "mnist_pyt.py",
                          lambda path, seed: mnist_like(path, seed, train=4096),
                          {"MAX_EPOCHS": "5", "OMP_NUM_THREADS": "1"})
    first, second = (torch.load(root / "model" / "saved_models" / "mnistNet.pt")
                     for root in roots)
    assert first.keys() == second.keys() and len(first) == 4
    assert all(torch.equal(first[k], second[k]) for k in first)
    # The program's own save: the whole pickled module (its class lives in its __main__).
    assert all((root / "scratch" / "mnist_pyt" / "saved_model.pt").is_file() for root in roots)
