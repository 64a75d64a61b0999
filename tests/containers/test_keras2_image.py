"""The Keras 2 sidecar image (swarm-ml:keras2, built only on request: build-images.sh
keras2): a tf.keras program gets Keras 2 (tf-keras) and trains to the end with its SL
node, the container run through the Docker SDK."""

from __future__ import annotations

import subprocess

import pytest

from sl_node.sidecar import SDK_ENGINE
from swarm.callback import FINAL_LOG_LINE

from container_testing import containers_named, run_sl_container_argv, unique

IMAGE = "swarm-ml:keras2"
PROGRAM = """
import numpy as np
import tensorflow as tf
from swarm.keras import KERAS_2, SwarmCallback

x = np.random.RandomState(0).rand(256, 8).astype("float32")
y = (x.sum(axis=1) > 4).astype("int32")
model = tf.keras.Sequential([tf.keras.layers.Dense(2, input_shape=(8,), activation="softmax")])
model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
print("keras-2", KERAS_2, type(model).__module__, flush=True)
model.fit(x, y, batch_size=32, epochs=2, verbose=0,
          callbacks=[SwarmCallback(syncFrequency=4, minPeers=1)])
"""


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_tf_keras_program_gets_keras_2_and_trains_to_the_end(
        docker_api, engine, sites, start_sn, processes, remove_containers, tmp_path):
    found = subprocess.run([engine, "image", "exists", IMAGE], capture_output=True, timeout=60)
    if found.returncode != 0:
        pytest.skip(f"{IMAGE} is built only on request: docker/build-images.sh keras2")
    code, model = tmp_path / "code", tmp_path / "model"
    code.mkdir()
    model.mkdir()
    (code / "train.py").write_text(PROGRAM)
    name = unique("swarm-test-keras2")
    remove_containers.append(name)
    sn = start_sn(sites[0])
    node = processes(run_sl_container_argv(
        sites[0], sn, tmp_path / "sl", IMAGE, SDK_ENGINE, "--ml-name", name,
        "--ml-v", f"{code}:/job:ro", "--ml-v", f"{model}:/model", "--ml-w", "/job",
        "--ml-e", "MODEL_DIR=/model", "--ml-e", "TF_CPP_MIN_LOG_LEVEL=2",
        "--ml-cmd", "train.py"), docker_api)
    assert node.wait_exit(480) == 0, node.output[-4000:]
    log = (tmp_path / "sl" / "ml-sidecar.log").read_text()
    assert "keras-2 True tf_keras." in log, log[-3000:]
    assert FINAL_LOG_LINE in log
    assert containers_named(engine, name) == []
