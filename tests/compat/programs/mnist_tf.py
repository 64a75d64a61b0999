############################################################################
## In the style of the established product's public MNIST Keras example
## (examples/mnist/model/mnist_tf.py): a TensorFlow 2 program written for tf.keras
## (Keras 2), run with TF_USE_LEGACY_KERAS=1. Changed: the SwarmCallback import, and
## the data read from $DATA_DIR/mnist.npz (no download here).
############################################################################

import tensorflow as tf
import numpy as np
import time
import datetime
from swarm.keras import SwarmCallback
import os
import logging

default_max_epochs = 5
default_min_peers = 2

def load_data(dataDir):
    """Loads the MNIST dataset from mnist.npz."""
    with np.load(os.path.join(dataDir, 'mnist.npz')) as f:
        x_train, y_train = f['x_train'], f['y_train']
        x_test, y_test = f['x_test'], f['y_test']
    return (x_train, y_train), (x_test, y_test)


def main():
  dataDir = os.getenv('DATA_DIR', '/platform/data')
  modelDir = os.getenv('MODEL_DIR', '/platform/model')
  max_epochs = int(os.getenv('MAX_EPOCHS', str(default_max_epochs)))
  min_peers = int(os.getenv('MIN_PEERS', str(default_min_peers)))
  scratchDir = os.getenv('SCRATCH_DIR', '/platform/scratch')
  os.makedirs(scratchDir, exist_ok=True)
  model_name = 'mnist_tf'

  (x_train, y_train),(x_test, y_test) = load_data(dataDir)
  x_train, x_test = x_train / 255.0, x_test / 255.0

  model = tf.keras.models.Sequential([
    tf.keras.layers.Flatten(input_shape=(28, 28)),
    tf.keras.layers.Dense(512, activation=tf.nn.relu),
    tf.keras.layers.Dropout(0.2),
    tf.keras.layers.Dense(10, activation=tf.nn.softmax)
  ])

  model.compile(optimizer='adam',
                loss='sparse_categorical_crossentropy',
                metrics=['accuracy'])

  # Create Swarm callback
  swarmCallback = SwarmCallback(syncFrequency=128,
                                minPeers=min_peers,
                                useAdaptiveSync=False,
                                adsValData=(x_test, y_test),
                                adsValBatchSize=8,
                                totalEpochs=max_epochs)
  swarmCallback.logger.setLevel(logging.DEBUG)

  model.fit(x_train, y_train,
            batch_size = 128,
            epochs=max_epochs,
            verbose=1,
            callbacks=[swarmCallback])

  # Save model and weights
  print('Saving the final Swarm model ...')
  swarmCallback.logger.info('Saving the final Swarm model ...')
  model_path = os.path.join(scratchDir, model_name)
  model.save(model_path)
  print('Saved the trained model!')
  swarmCallback.logger.info(f'Saved the trained model - {model_path}')

  swarmCallback.logger.info('Starting inference on the test data ...')
  loss, acc = model.evaluate(x_test, y_test)
  swarmCallback.logger.info('Test loss = %.5f' % (loss))
  swarmCallback.logger.info('Test accuracy = %.5f' % (acc))

if __name__ == '__main__':
  main()
