"""The Keras 2 sidecar image (swarm-ml:keras2, built only on request: build-images.sh
keras2): a tf.keras program gets Keras 2 (tf-keras) and trains to the end with its SL
node, the container run through the Docker SDK."""

from __future__ import annotations

import subprocess

import pytest

from sl_node.sidecar import SDK_ENGINE
from swarm.callback import FINAL_LOG_LINE

from container_testing import containers_named

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
        docker_api, engine, container_sl, tmp_path):
    found = subprocess.run([engine, "image", "exists", IMAGE], capture_output=True, timeout=60)
    if found.returncode != 0:
        pytest.skip(f"{IMAGE} is built only on request: docker/build-images.sh keras2")
    code, model = tmp_path / "code", tmp_path / "model"
    code.mkdir()
    model.mkdir()
    (code / "train.py").write_text(PROGRAM)
    node = container_sl(IMAGE, SDK_ENGINE, "swarm-test-keras2",
                        "--ml-v", f"{code}:/job:ro", "--ml-v", f"{model}:/model", "--ml-w", "/job",
                        "--ml-cmd", "train.py", env=docker_api,
                        ml_env={"MODEL_DIR": "/model", "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert node.proc.wait_exit(480) == 0, node.proc.output[-4000:]
    log = node.sidecar_log
    assert "keras-2 True tf_keras." in log, log[-3000:]
    assert FINAL_LOG_LINE in log
    assert containers_named(engine, node.name) == []
