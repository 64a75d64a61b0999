############################################################################
## In the style of the established product's public MNIST PyTorch example
## (examples/mnist-pyt/cpu-based/model/mnist_pyt.py). Changed: the SwarmCallback
## import, and the data read from $DATA_DIR/mnist.npz instead of torchvision's
## download (no network here; see the README on torchvision).
############################################################################

import datetime
import numpy as np
import os
from swarm.torch import SwarmCallback
import time
import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.optim as optim

default_max_epochs = 5
default_min_peers = 2
trainPrint = True
# tell swarm after how many batches
# should it Sync. We are not doing
# adaptiveRV here, its a simple and quick demo run
swSyncInterval = 128

class mnistNet(nn.Module):
    def __init__(self):
        super(mnistNet, self).__init__()
        self.dense = nn.Linear(784, 512)
        self.dropout = nn.Dropout(0.2)
        self.dense1 = nn.Linear(512, 10)

    def forward(self, x):
        x = torch.flatten(x, 1)
        x = self.dense(x)
        x = F.relu(x)
        x = self.dropout(x)
        x = self.dense1(x)
        output = F.log_softmax(x, dim=1)
        return output

def loadData(dataDir):
    with np.load(os.path.join(dataDir, 'mnist.npz')) as f:
        def ds(x, y):
            x = torch.tensor(x, dtype=torch.float32).unsqueeze(1) / 255.0
            return torch.utils.data.TensorDataset(x, torch.tensor(y, dtype=torch.long))
        return ds(f['x_train'], f['y_train']), ds(f['x_test'], f['y_test'])

def doTrainBatch(model,device,trainLoader,optimizer,epoch,swarmCallback):
    model.train()
    for batchIdx, (data, target) in enumerate(trainLoader):
        data, target = data.to(device), target.to(device)
        optimizer.zero_grad()
        output = model(data)
        loss = F.nll_loss(output, target)
        loss.backward()
        optimizer.step()
        if trainPrint and batchIdx % 100 == 0:
            print('Train Epoch: {} [{}/{} ({:.0f}%)]\tLoss: {:.6f}'.format(
                  epoch, batchIdx * len(data), len(trainLoader.dataset),
                  100. * batchIdx / len(trainLoader), loss.item()))
        # Swarm Learning Interface
        if swarmCallback is not None:
            swarmCallback.on_batch_end()

def test(model, device, testLoader):
    model.eval()
    testLoss = 0
    correct = 0
    with torch.no_grad():
        for data, target in testLoader:
            data, target = data.to(device), target.to(device)
            output = model(data)
            testLoss += F.nll_loss(output, target, reduction='sum').item()  # sum up batch loss
            pred = output.argmax(dim=1, keepdim=True)  # get the index of the max log-probability
            correct += pred.eq(target.view_as(pred)).sum().item()

    testLoss /= len(testLoader.dataset)

    print('\nTest set: Average loss: {:.4f}, Accuracy: {}/{} ({:.0f}%)\n'.format(
        testLoss, correct, len(testLoader.dataset),
        100. * correct / len(testLoader.dataset)))

def main():
    dataDir = os.getenv('DATA_DIR', '/platform/data')
    scratchDir = os.getenv('SCRATCH_DIR', '/platform/scratch')
    modelDir = os.getenv('MODEL_DIR', '/platform/model')
    max_epochs = int(os.getenv('MAX_EPOCHS', str(default_max_epochs)))
    min_peers = int(os.getenv('MIN_PEERS', str(default_min_peers)))
    batchSz = 128
    trainDs, testDs = loadData(dataDir)
    useCuda = torch.cuda.is_available()
    device = torch.device("cuda" if useCuda else "cpu")
    model = mnistNet().to(device)
    model_name = 'mnist_pyt'
    opt = optim.Adam(model.parameters())
    trainLoader = torch.utils.data.DataLoader(trainDs, batch_size=batchSz)
    testLoader = torch.utils.data.DataLoader(testDs, batch_size=batchSz)

    # Create Swarm callback
    swarmCallback = None

    lFArgsDict={}
    lFArgsDict['reduction']='sum'

    mFArgsDict={}
    mFArgsDict['task']="multiclass"
    mFArgsDict['num_classes']=10

    swarmCallback = SwarmCallback(syncFrequency=swSyncInterval,
                                  minPeers=min_peers,
                                  useAdaptiveSync=False,
                                  adsValData=testLoader,
                                  adsValBatchSize=batchSz,
                                  model=model,
                                  totalEpochs=max_epochs,
                                  lossFunction="CrossEntropyLoss",
                                  lossFunctionArgs=lFArgsDict,
                                  metricFunction="F1Score",
                                  metricFunctionArgs=mFArgsDict)

    # initalize swarmCallback and do first sync
    swarmCallback.on_train_begin()

    for epoch in range(1, max_epochs + 1):
        doTrainBatch(model,device,trainLoader,opt,epoch,swarmCallback)
        test(model,device,testLoader)
        swarmCallback.on_epoch_end(epoch)

    # handles what to do when training ends
    swarmCallback.on_train_end()

    # Save model and weights
    saved_model_path = os.path.join(scratchDir, model_name, 'saved_model.pt')
    # Pytorch model save function expects the directory to be created before hand.
    os.makedirs(scratchDir, exist_ok=True)
    os.makedirs(os.path.join(scratchDir, model_name), exist_ok=True)
    torch.save(model, saved_model_path)
    print('Saved the trained model!')

if __name__ == '__main__':
  main()
