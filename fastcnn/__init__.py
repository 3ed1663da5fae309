"""fastcnn: Numba-accelerated convolutional neural networks for the CPU.

The package is organised in tiers: ``fastcnn.kernels`` (Numba loops, no
validation), ``fastcnn.functional`` (validated wrappers with PyTorch's argument
names), ``fastcnn.layers`` (objects with ``forward``/``backward``), then models,
losses, optimisers and data sets. ``fastcnn.tutorial`` is a drop-in for the API
of the classic "neural network from scratch" tutorial, and ``fastcnn.reference``
holds the naive NumPy implementations that tests and benchmarks compare against.

Importing fastcnn compiles nothing: each kernel is compiled (or loaded from
Numba's on-disk cache) the first time it is called.
"""

from fastcnn import functional, init, layers
from fastcnn._config import get_num_threads, set_num_threads
from fastcnn.layers import (
    AvgPool2D,
    Conv2D,
    Dense,
    Dropout,
    Flatten,
    Layer,
    LeakyReLU,
    MaxPool2D,
    Normalize,
    ReLU,
    Reshape,
    Sigmoid,
    Softmax,
    SoftmaxCrossEntropy,
    Tanh,
)
from fastcnn.losses import BCELoss, CrossEntropyLoss, MSELoss
from fastcnn.models import Sequential
from fastcnn.nets import lenet
from fastcnn.optim import SGD, Adam
from fastcnn.serialization import (
    load_checkpoint,
    load_model,
    save_checkpoint,
    save_model,
)

__version__ = "0.1.0"

__all__ = [
    "SGD",
    "Adam",
    "AvgPool2D",
    "BCELoss",
    "Conv2D",
    "CrossEntropyLoss",
    "Dense",
    "Dropout",
    "Flatten",
    "Layer",
    "LeakyReLU",
    "MSELoss",
    "MaxPool2D",
    "Normalize",
    "ReLU",
    "Reshape",
    "Sequential",
    "Sigmoid",
    "Softmax",
    "SoftmaxCrossEntropy",
    "Tanh",
    "__version__",
    "functional",
    "get_num_threads",
    "init",
    "layers",
    "lenet",
    "load_checkpoint",
    "load_model",
    "save_checkpoint",
    "save_model",
    "set_num_threads",
]
