"""The tutorial's two classic examples: fastcnn.tutorial against the original.

``tutorial:xor``
    ``Dense(2, 3), Tanh(), Dense(3, 1), Tanh()``, mse, 10000 epochs, learning rate
    0.1, the four XOR samples.
``tutorial:mnist01``
    Digits 0 and 1 of the MNIST test set, 100 of each for training, scaled to
    [0, 1]; ``Convolutional((1, 28, 28), 3, 5), Sigmoid(), Reshape, Dense(3380, 100),
    Sigmoid(), Dense(100, 2), Sigmoid()``, binary cross-entropy, 20 epochs,
    learning rate 0.1. The accuracy on the other 0/1 test images is recorded in
    ``extra_info``. Skipped when the MNIST folder is missing.

Each group times fastcnn.tutorial (compiled, warmed up on the same data),
``tutorial_baseline`` (the original one-sample-at-a-time NumPy/SciPy code) and,
when it is installed, PyTorch doing the same one-sample SGD. Every round starts
from the same seeded initial parameters.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import tutorial_baseline
from conftest import torch_or_skip

from fastcnn import tutorial

MNIST_DIR = Path(os.environ.get("FASTCNN_DATA", "/work/shared/data")) / "mnist"
SEED = 0

XOR_X = np.reshape([[0, 0], [0, 1], [1, 0], [1, 1]], (4, 2, 1)).astype(np.float64)
XOR_Y = np.reshape([[0], [1], [1], [0]], (4, 1, 1)).astype(np.float64)
XOR_EPOCHS = 10000
MNIST_EPOCHS = 20


def xor_network(api):
    np.random.seed(SEED)  # noqa: NPY002 - both APIs draw from the global generator
    return [api.Dense(2, 3), api.Tanh(), api.Dense(3, 1), api.Tanh()]


def mnist_network(api):
    np.random.seed(SEED)  # noqa: NPY002
    return [
        api.Convolutional((1, 28, 28), 3, 5),
        api.Sigmoid(),
        api.Reshape((5, 26, 26), (5 * 26 * 26, 1)),
        api.Dense(5 * 26 * 26, 100),
        api.Sigmoid(),
        api.Dense(100, 2),
        api.Sigmoid(),
    ]


@pytest.fixture(scope="module")
def mnist01():
    """Training images and one-hot labels, held-out images and labels."""
    if not MNIST_DIR.is_dir():
        pytest.skip(f"no MNIST data in {MNIST_DIR}")
    from fastcnn.datasets import load_mnist

    images, labels = load_mnist("test", data_dir=MNIST_DIR)
    zeros = np.flatnonzero(labels == 0)
    ones = np.flatnonzero(labels == 1)
    chosen = np.concatenate([zeros[:100], ones[:100]])
    order = np.random.default_rng(SEED).permutation(chosen)
    held_out = np.concatenate([zeros[100:], ones[100:]])
    x_train = images[order]
    y_train = np.eye(2)[labels[order]].reshape(-1, 2, 1)
    return x_train, y_train, images[held_out], labels[held_out]


def accuracy(api, network, images, labels):
    predicted = [np.argmax(api.predict(network, x)) for x in images]
    return float(np.mean(np.array(predicted) == labels))


def run_api(benchmark, api, make_network, loss, loss_prime, x, y, epochs, rounds):
    trained = []

    def setup():
        trained.append(make_network(api))
        return (trained[-1], loss, loss_prime, x, y), {
            "epochs": epochs,
            "learning_rate": 0.1,
            "verbose": False,
        }

    benchmark.pedantic(api.train, setup=setup, rounds=rounds, iterations=1)
    return trained[-1]


# --- XOR -------------------------------------------------------------------------


def test_xor_fastcnn(benchmark):
    benchmark.group = "tutorial:xor"
    api = tutorial
    api.train(xor_network(api), api.mse, api.mse_prime, XOR_X, XOR_Y, 2, 0.1, False)
    network = run_api(
        benchmark,
        api,
        xor_network,
        api.mse,
        api.mse_prime,
        XOR_X,
        XOR_Y,
        XOR_EPOCHS,
        rounds=5,
    )
    outputs = np.array([api.predict(network, x) for x in XOR_X])
    assert np.abs(outputs - XOR_Y).max() < 0.1


def test_xor_baseline(benchmark):
    benchmark.group = "tutorial:xor"
    api = tutorial_baseline
    run_api(
        benchmark,
        api,
        xor_network,
        api.mse,
        api.mse_prime,
        XOR_X,
        XOR_Y,
        XOR_EPOCHS,
        rounds=3,
    )


def test_xor_torch(benchmark):
    torch = torch_or_skip()
    benchmark.group = "tutorial:xor"
    x = torch.from_numpy(XOR_X.reshape(4, 2))
    y = torch.from_numpy(XOR_Y.reshape(4, 1))

    def setup():
        params = [torch.from_numpy(p.copy()) for p in parameters(xor_network(tutorial))]
        for p in params:
            p.requires_grad_(True)
        return (params,), {}

    def forward(params, sample):
        w1, b1, w2, b2 = params
        hidden = torch.tanh(w1 @ sample + b1[:, 0])
        return torch.tanh(w2 @ hidden + b2[:, 0])

    def run(params):
        for _ in range(XOR_EPOCHS):
            for i in range(4):
                loss = torch.mean((y[i] - forward(params, x[i])) ** 2)
                sgd_step(torch, params, loss, 0.1)

    run(setup()[0][0])
    benchmark.pedantic(run, setup=setup, rounds=2, iterations=1)


# --- MNIST 0 versus 1 --------------------------------------------------------------


def test_mnist01_fastcnn(benchmark, mnist01):
    benchmark.group = "tutorial:mnist01"
    x, y, test_x, test_y = mnist01
    api = tutorial
    loss, loss_prime = api.binary_cross_entropy, api.binary_cross_entropy_prime
    api.train(mnist_network(api), loss, loss_prime, x, y, 1, 0.1, False)
    network = run_api(
        benchmark, api, mnist_network, loss, loss_prime, x, y, MNIST_EPOCHS, rounds=3
    )
    benchmark.extra_info["accuracy"] = accuracy(api, network, test_x, test_y)


def test_mnist01_baseline(benchmark, mnist01):
    benchmark.group = "tutorial:mnist01"
    x, y, test_x, test_y = mnist01
    api = tutorial_baseline
    loss, loss_prime = api.binary_cross_entropy, api.binary_cross_entropy_prime
    network = run_api(
        benchmark, api, mnist_network, loss, loss_prime, x, y, MNIST_EPOCHS, rounds=3
    )
    benchmark.extra_info["accuracy"] = accuracy(api, network, test_x, test_y)


def test_mnist01_torch(benchmark, mnist01):
    torch = torch_or_skip()
    benchmark.group = "tutorial:mnist01"
    x_np, y_np, test_x, test_y = mnist01
    x = torch.from_numpy(x_np.astype(np.float64))
    y = torch.from_numpy(y_np.reshape(-1, 2))
    functional = torch.nn.functional

    def setup():
        params = [
            torch.from_numpy(p.copy()) for p in parameters(mnist_network(tutorial))
        ]
        for p in params:
            p.requires_grad_(True)
        return (params,), {}

    def forward(params, sample):
        kernels, biases, w1, b1, w2, b2 = params
        conv = functional.conv2d(sample[None], kernels)[0] + biases
        hidden = torch.sigmoid(w1 @ torch.sigmoid(conv).reshape(-1) + b1[:, 0])
        return torch.sigmoid(w2 @ hidden + b2[:, 0])

    def run(params):
        for _ in range(MNIST_EPOCHS):
            for i in range(len(x)):
                p = forward(params, x[i])
                t = y[i]
                loss = torch.mean(-t * torch.log(p) - (1 - t) * torch.log(1 - p))
                sgd_step(torch, params, loss, 0.1)

    warm = setup()[0][0]
    forward(warm, x[0]).sum().backward()
    trained = []

    def setup_and_keep():
        args, kwargs = setup()
        trained.append(args[0])
        return args, kwargs

    benchmark.pedantic(run, setup=setup_and_keep, rounds=2, iterations=1)
    with torch.no_grad():
        inputs = torch.from_numpy(test_x.astype(np.float64))
        predicted = [int(torch.argmax(forward(trained[-1], s))) for s in inputs]
    benchmark.extra_info["accuracy"] = float(np.mean(np.array(predicted) == test_y))


def parameters(network):
    """The trainable arrays of a tutorial network, in layer order."""
    names = ("kernels", "biases", "weights", "bias")
    return [getattr(layer, n) for layer in network for n in names if hasattr(layer, n)]


def sgd_step(torch, params, loss, learning_rate):
    """Back-propagate ``loss`` and take one plain SGD step on ``params``."""
    loss.backward()
    with torch.no_grad():
        for p in params:
            p -= learning_rate * p.grad
            p.grad = None
