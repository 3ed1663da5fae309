"""A drop-in for the layer API of the classic "neural network from scratch" tutorial.

Scripts written against that tutorial's modules run unchanged once their imports
point here::

    from fastcnn.tutorial import Dense, Tanh, mse, mse_prime, train, predict

    network = [Dense(2, 3), Tanh(), Dense(3, 1), Tanh()]
    train(network, mse, mse_prime, X, Y, epochs=10000, learning_rate=0.1)

Everything is float64 and one sample at a time, as in the tutorial; parameters
are drawn from NumPy's global generator, so ``np.random.seed`` gives the
tutorial's initial values. Networks of the built-in layers with the built-in
losses train whole epochs inside one compiled Numba function
(:mod:`fastcnn.tutorial.network`); any other layer or loss runs through the
plain per-layer loop with the same semantics.
"""

from fastcnn.tutorial.layers import (
    Activation,
    Convolutional,
    Dense,
    Layer,
    Reshape,
    Sigmoid,
    Softmax,
    Tanh,
)
from fastcnn.tutorial.losses import (
    binary_cross_entropy,
    binary_cross_entropy_prime,
    mse,
    mse_prime,
)
from fastcnn.tutorial.network import predict, train

__all__ = [
    "Activation",
    "Convolutional",
    "Dense",
    "Layer",
    "Reshape",
    "Sigmoid",
    "Softmax",
    "Tanh",
    "binary_cross_entropy",
    "binary_cross_entropy_prime",
    "mse",
    "mse_prime",
    "predict",
    "train",
]
