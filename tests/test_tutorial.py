"""Tests for fastcnn.tutorial, the drop-in for the "from scratch" tutorial API.

The layers are compared with the tutorial's formulas written out here in NumPy,
their backward passes with finite differences, and the compiled ``train`` with
the plain per-layer loop it replaces.
"""

from __future__ import annotations

import gzip
import os
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
from conftest import assert_close
from hypothesis import given, settings
from hypothesis import strategies as st

from fastcnn.tutorial import (
    Activation,
    Convolutional,
    Dense,
    Layer,
    Reshape,
    Sigmoid,
    Softmax,
    Tanh,
    _compiled,
    binary_cross_entropy,
    binary_cross_entropy_prime,
    mse,
    mse_prime,
    predict,
    train,
)

MNIST_DIR = Path(os.environ.get("FASTCNN_DATA", "/work/shared/data")) / "mnist"

XOR_X = np.reshape([[0, 0], [0, 1], [1, 0], [1, 1]], (4, 2, 1)).astype(np.float64)
XOR_Y = np.reshape([[0], [1], [1], [0]], (4, 1, 1)).astype(np.float64)


# --- reference formulas ------------------------------------------------------------


def valid_cross_correlation(a, k):
    kh, kw = k.shape
    out = np.empty((a.shape[0] - kh + 1, a.shape[1] - kw + 1))
    for y in range(out.shape[0]):
        for x in range(out.shape[1]):
            out[y, x] = np.sum(a[y : y + kh, x : x + kw] * k)
    return out


def full_convolution(a, k):
    kh, kw = k.shape
    padded = np.pad(a, ((kh - 1, kh - 1), (kw - 1, kw - 1)))
    return valid_cross_correlation(padded, k[::-1, ::-1])


def numerical_gradient(f, x, eps=1e-6):
    """Central differences of the scalar ``f()`` with respect to ``x``, in place."""
    grad = np.zeros_like(x)
    for idx in np.ndindex(*x.shape):
        saved = x[idx]
        x[idx] = saved + eps
        up = f()
        x[idx] = saved - eps
        down = f()
        x[idx] = saved
        grad[idx] = (up - down) / (2 * eps)
    return grad


class CallCounter:
    """Wraps a function and counts its calls."""

    def __init__(self, fn):
        self.fn = fn
        self.calls = 0

    def __call__(self, *args):
        self.calls += 1
        return self.fn(*args)


@pytest.fixture
def compiled_calls(monkeypatch):
    counter = CallCounter(_compiled.train_epochs)
    monkeypatch.setattr(_compiled, "train_epochs", counter)
    return counter


def xor_network(seed=0):
    np.random.seed(seed)  # noqa: NPY002 - the tutorial's layers use the global generator
    return [Dense(2, 3), Tanh(), Dense(3, 1), Tanh()]


def parameters(network):
    names = ("weights", "bias", "kernels", "biases")
    return [
        getattr(layer, n).copy()
        for layer in network
        for n in names
        if hasattr(layer, n)
    ]


def per_layer(fn):
    """``fn`` wrapped in a new function: the compiled path does not recognise it."""
    return lambda y_true, y_pred: fn(y_true, y_pred)


# --- initial values ------------------------------------------------------------------


def test_dense_draws_weights_then_bias_from_global_generator():
    np.random.seed(5)  # noqa: NPY002
    layer = Dense(3, 2)
    np.random.seed(5)  # noqa: NPY002
    weights = np.random.randn(2, 3)  # noqa: NPY002
    bias = np.random.randn(2, 1)  # noqa: NPY002
    assert_close(layer.weights, weights)
    assert_close(layer.bias, bias)


def test_convolutional_draws_kernels_then_biases_from_global_generator():
    np.random.seed(6)  # noqa: NPY002
    layer = Convolutional((2, 5, 4), 3, 4)
    np.random.seed(6)  # noqa: NPY002
    kernels = np.random.randn(4, 2, 3, 3)  # noqa: NPY002
    biases = np.random.randn(4, 3, 2)  # noqa: NPY002
    assert_close(layer.kernels, kernels)
    assert_close(layer.biases, biases)
    assert layer.output_shape == (4, 3, 2)
    assert layer.kernels_shape == (4, 2, 3, 3)
    assert (layer.depth, layer.input_depth, layer.input_shape) == (4, 2, (2, 5, 4))


# --- layers against the tutorial's formulas ------------------------------------


def test_dense_forward_and_backward_follow_the_formulas(rng):
    np.random.seed(1)  # noqa: NPY002
    layer = Dense(5, 3)
    w0, b0 = layer.weights.copy(), layer.bias.copy()
    x = rng.standard_normal((5, 1))
    g = rng.standard_normal((3, 1))

    assert_close(layer.forward(x), w0 @ x + b0)
    grad_in = layer.backward(g, 0.05)

    assert_close(grad_in, w0.T @ g)
    assert_close(layer.weights, w0 - 0.05 * (g @ x.T))
    assert_close(layer.bias, b0 - 0.05 * g)


def test_read_only_input_compiles_no_second_kernel(rng):
    # Numba compiles a separate version of a kernel for read-only arrays.
    np.random.seed(1)  # noqa: NPY002
    layer = Dense(5, 3)
    x = rng.standard_normal((5, 1))
    expected = layer.forward(x).copy()
    compiled = len(_compiled.dense_forward.signatures)
    x.setflags(write=False)

    np.testing.assert_array_equal(layer.forward(x), expected)
    assert len(_compiled.dense_forward.signatures) == compiled


@pytest.mark.parametrize(
    ("input_shape", "kernel_size", "depth"),
    [((1, 6, 6), 3, 2), ((2, 7, 5), 3, 3), ((3, 4, 6), 1, 2), ((2, 5, 5), 5, 1)],
)
def test_convolutional_forward_and_backward_follow_the_formulas(
    rng, input_shape, kernel_size, depth
):
    np.random.seed(2)  # noqa: NPY002
    layer = Convolutional(input_shape, kernel_size, depth)
    k0, b0 = layer.kernels.copy(), layer.biases.copy()
    x = rng.standard_normal(input_shape)
    g = rng.standard_normal(layer.output_shape)
    c = input_shape[0]

    expected = b0.copy()
    for i in range(depth):
        for j in range(c):
            expected[i] += valid_cross_correlation(x[j], k0[i, j])
    assert_close(layer.forward(x), expected)

    grad_in = layer.backward(g, 0.1)
    expected_grad_in = np.zeros(input_shape)
    kernels_grad = np.zeros_like(k0)
    for i in range(depth):
        for j in range(c):
            expected_grad_in[j] += full_convolution(g[i], k0[i, j])
            kernels_grad[i, j] = valid_cross_correlation(x[j], g[i])
    assert_close(grad_in, expected_grad_in)
    assert_close(layer.kernels, k0 - 0.1 * kernels_grad)
    assert_close(layer.biases, b0 - 0.1 * g)


@settings(max_examples=15)
@given(
    c=st.integers(1, 3),
    h=st.integers(1, 9),
    w=st.integers(1, 9),
    k=st.integers(1, 4),
    depth=st.integers(1, 3),
    seed=st.integers(0, 2**16),
)
def test_convolutional_matches_formulas_for_any_shape(c, h, w, k, depth, seed):
    k = min(k, h, w)
    gen = np.random.default_rng(seed)
    np.random.seed(seed)  # noqa: NPY002
    layer = Convolutional((c, h, w), k, depth)
    k0, b0 = layer.kernels.copy(), layer.biases.copy()
    x = gen.standard_normal((c, h, w))
    g = gen.standard_normal(layer.output_shape)

    out = layer.forward(x)
    grad_in = layer.backward(g, 1.0)

    for i in range(depth):
        expected = b0[i]
        for j in range(c):
            expected = expected + valid_cross_correlation(x[j], k0[i, j])
        assert_close(out[i], expected, scale=10)
    expected_grad_in = sum(
        np.stack([full_convolution(g[i], k0[i, j]) for j in range(c)])
        for i in range(depth)
    )
    assert_close(grad_in, expected_grad_in, scale=10)


def test_activations_follow_the_formulas(rng):
    x = rng.standard_normal((6, 1)) * 3
    g = rng.standard_normal((6, 1))

    tanh = Tanh()
    assert_close(tanh.forward(x), np.tanh(x))
    assert_close(tanh.backward(g, 0.1), g * (1 - np.tanh(x) ** 2))

    sigmoid = Sigmoid()
    s = 1 / (1 + np.exp(-x))
    assert_close(sigmoid.forward(x), s)
    assert_close(sigmoid.backward(g, 0.1), g * s * (1 - s))

    softmax = Softmax()
    e = np.exp(x)
    s = e / e.sum()
    assert_close(softmax.forward(x), s)
    jacobian = (np.identity(6) - s.T) * s
    assert_close(softmax.backward(g, 0.1), jacobian @ g)


def test_sigmoid_and_softmax_do_not_overflow():
    x = np.array([[-1000.0], [-30.0], [0.0], [30.0], [1000.0]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        s = Sigmoid().forward(x)
        p = Softmax().forward(x)
    assert_close(s[[0, 2, 4]], np.array([[0.0], [0.5], [1.0]]))
    assert_close(s[1], np.exp([-30.0]) / (1 + np.exp([-30.0])))
    assert_close(p, np.array([[0.0], [0.0], [0.0], [0.0], [1.0]]))


def test_reshape_forward_and_back():
    layer = Reshape((2, 3, 2), (12, 1))
    x = np.arange(12.0).reshape(2, 3, 2)
    out = layer.forward(x)
    assert_close(out, x.reshape(12, 1))
    assert_close(layer.backward(out * 2, 0.1), x * 2)


def test_losses_follow_the_formulas(rng):
    y = rng.random((4, 1))
    p = rng.uniform(0.05, 0.95, (4, 1))
    assert_close(np.float64(mse(y, p)), np.mean((y - p) ** 2))
    assert_close(mse_prime(y, p), 2 * (p - y) / 4)
    bce = np.mean(-y * np.log(p) - (1 - y) * np.log(1 - p))
    assert_close(np.float64(binary_cross_entropy(y, p)), bce)
    assert_close(binary_cross_entropy_prime(y, p), ((1 - y) / (1 - p) - y / p) / 4)


@pytest.mark.parametrize(
    ("loss", "loss_prime"),
    [(mse, mse_prime), (binary_cross_entropy, binary_cross_entropy_prime)],
)
def test_loss_gradients_match_finite_differences(rng, loss, loss_prime):
    y = rng.random((3, 1))
    p = rng.uniform(0.1, 0.9, (3, 1))
    expected = numerical_gradient(lambda: loss(y, p), p)
    assert_close(loss_prime(y, p), expected, scale=1e4)


# --- backward passes against finite differences ------------------------------------


def check_layer_gradients(layer, x, rng, param_names=()):
    """Compare backward's input and parameter gradients with finite differences."""
    g = rng.standard_normal(layer.forward(x).shape)

    def objective():
        return float(np.sum(layer.forward(x) * g))

    expected_input = numerical_gradient(objective, x)
    expected_params = {
        n: numerical_gradient(objective, getattr(layer, n)) for n in param_names
    }
    before = {n: getattr(layer, n).copy() for n in param_names}

    layer.forward(x)
    grad_in = layer.backward(g, 1.0)
    assert_close(grad_in, expected_input, scale=1e4)
    for name in param_names:
        step = before[name] - getattr(layer, name)  # lr = 1: the gradient itself
        assert_close(step, expected_params[name], scale=1e4)


def test_dense_backward_matches_finite_differences(rng):
    np.random.seed(3)  # noqa: NPY002
    check_layer_gradients(
        Dense(4, 3), rng.standard_normal((4, 1)), rng, ("weights", "bias")
    )


def test_convolutional_backward_matches_finite_differences(rng):
    np.random.seed(4)  # noqa: NPY002
    layer = Convolutional((2, 5, 6), 3, 2)
    check_layer_gradients(
        layer, rng.standard_normal((2, 5, 6)), rng, ("kernels", "biases")
    )


@pytest.mark.parametrize(
    "layer",
    [Tanh(), Sigmoid(), Softmax(), Reshape((3, 2), (6, 1))],
    ids=["tanh", "sigmoid", "softmax", "reshape"],
)
def test_parameter_free_backward_matches_finite_differences(rng, layer):
    check_layer_gradients(layer, rng.standard_normal((3, 2)), rng)


# --- train and predict -----------------------------------------------------------


def test_builtin_network_trains_in_the_compiled_kernel(compiled_calls):
    network = xor_network()
    train(
        network,
        mse,
        mse_prime,
        XOR_X,
        XOR_Y,
        epochs=5,
        learning_rate=0.1,
        verbose=False,
    )
    assert compiled_calls.calls >= 1


def test_compiled_train_keeps_the_layers_arrays(compiled_calls):
    network = xor_network()
    weights, bias = network[0].weights, network[0].bias
    initial = weights.copy()
    train(
        network,
        mse,
        mse_prime,
        XOR_X,
        XOR_Y,
        epochs=20,
        learning_rate=0.1,
        verbose=False,
    )
    assert compiled_calls.calls >= 1
    assert network[0].weights is weights
    assert network[0].bias is bias
    assert np.abs(weights - initial).max() > 1e-3


def xor_case(rng):
    return xor_network(1), xor_network(1), XOR_X, XOR_Y


def one_hot_samples(rng, n, sample_shape, classes):
    x = rng.standard_normal((n, *sample_shape)) * 0.5
    y = np.eye(classes)[rng.integers(0, classes, n)].reshape(n, classes, 1)
    return x, y


def conv_case(rng):
    nets = []
    for _ in range(2):
        np.random.seed(7)  # noqa: NPY002
        nets.append(
            [
                Convolutional((2, 6, 5), 3, 2),
                Sigmoid(),
                Reshape((2, 4, 3), (24, 1)),
                Dense(24, 3),
                Tanh(),
                Dense(3, 2),
                Sigmoid(),
            ]
        )
    return (*nets, *one_hot_samples(rng, 6, (2, 6, 5), 2))


def softmax_case(rng):
    nets = []
    for _ in range(2):
        np.random.seed(8)  # noqa: NPY002
        nets.append([Dense(3, 5), Sigmoid(), Dense(5, 3), Softmax()])
    return (*nets, *one_hot_samples(rng, 5, (3, 1), 3))


@pytest.mark.parametrize(
    ("case", "loss", "loss_prime"),
    [
        (xor_case, mse, mse_prime),
        (conv_case, binary_cross_entropy, binary_cross_entropy_prime),
        (softmax_case, mse, mse_prime),
    ],
    ids=["dense-tanh-mse", "conv-sigmoid-bce", "softmax-mse"],
)
def test_compiled_train_equals_per_layer_train(
    rng, compiled_calls, capsys, case, loss, loss_prime
):
    fast, plain, x, y = case(rng)

    train(fast, loss, loss_prime, x, y, epochs=30, learning_rate=0.1)
    assert compiled_calls.calls >= 1
    fast_lines = capsys.readouterr().out.splitlines()
    calls = compiled_calls.calls
    train(
        plain,
        per_layer(loss),
        per_layer(loss_prime),
        x,
        y,
        epochs=30,
        learning_rate=0.1,
    )
    assert compiled_calls.calls == calls
    plain_lines = capsys.readouterr().out.splitlines()

    for a, b in zip(parameters(fast), parameters(plain), strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-10)
    assert len(fast_lines) == len(plain_lines) == 30
    fast_errors = [float(line.split("error=")[1]) for line in fast_lines]
    plain_errors = [float(line.split("error=")[1]) for line in plain_lines]
    np.testing.assert_allclose(fast_errors, plain_errors, rtol=1e-10)
    # Each layer keeps the last sample's input and output, as after the plain loop.
    for a, b in zip(fast, plain, strict=True):
        if isinstance(a, (Dense, Convolutional, Activation, Softmax)):
            np.testing.assert_allclose(a.input, b.input, rtol=0, atol=1e-10)
            np.testing.assert_allclose(a.output, b.output, rtol=0, atol=1e-10)


def test_xor_reaches_the_tutorial_result():
    network = xor_network(0)
    train(
        network,
        mse,
        mse_prime,
        XOR_X,
        XOR_Y,
        epochs=10000,
        learning_rate=0.1,
        verbose=False,
    )
    outputs = np.array([predict(network, x) for x in XOR_X])
    np.testing.assert_allclose(outputs, XOR_Y, atol=0.1)


def test_predict_accepts_nested_lists():
    network = xor_network(0)
    out = predict(network, [[0.25], [0.75]])
    assert_close(out, predict(network, np.array([[0.25], [0.75]])))
    assert out.shape == (1, 1)


def test_verbose_prints_one_line_per_epoch(capsys):
    train(xor_network(), mse, mse_prime, XOR_X, XOR_Y, epochs=3, learning_rate=0.1)
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(",")[0] for line in lines] == ["1/3", "2/3", "3/3"]
    for line in lines:
        assert re.fullmatch(r"\d+/3, error=\d\.\d+(e-\d+)?", line), line

    train(xor_network(), mse, mse_prime, XOR_X, XOR_Y, epochs=3, verbose=False)
    assert capsys.readouterr().out == ""


def test_verbose_error_is_the_mean_loss_over_samples(capsys):
    network = xor_network(2)
    outputs = [predict(network, x) for x in XOR_X]
    expected = np.mean([mse(y, o) for y, o in zip(XOR_Y, outputs, strict=True)])
    train(network, mse, mse_prime, XOR_X, XOR_Y, epochs=1, learning_rate=0.0)
    printed = float(capsys.readouterr().out.split("error=")[1])
    np.testing.assert_allclose(printed, expected, rtol=1e-12)


def test_strided_training_data_gives_the_same_result():
    x = np.ascontiguousarray(XOR_X[::-1])
    y = np.ascontiguousarray(XOR_Y[::-1])
    contiguous, strided = xor_network(3), xor_network(3)
    train(contiguous, mse, mse_prime, x, y, epochs=50, learning_rate=0.1, verbose=False)
    train(
        strided,
        mse,
        mse_prime,
        XOR_X[::-1],
        XOR_Y[::-1],
        epochs=50,
        learning_rate=0.1,
        verbose=False,
    )
    for a, b in zip(parameters(contiguous), parameters(strided), strict=True):
        assert_close(a, b)


# --- user-defined layers, activations and losses (the per-layer loop) ----------------


def relu(x):
    return np.maximum(x, 0)


def relu_prime(x):
    return (x > 0).astype(float)


class Scale(Layer):
    """A user layer: multiplies by one trainable scalar."""

    def __init__(self, value):
        self.factor = value

    def forward(self, input):
        self.input = input
        return self.factor * input

    def backward(self, output_gradient, learning_rate):
        grad = float(np.sum(output_gradient * self.input))
        grad_in = self.factor * output_gradient
        self.factor -= learning_rate * grad
        return grad_in


def test_custom_activation_and_user_layer_train_as_the_formulas_say(compiled_calls):
    np.random.seed(9)  # noqa: NPY002
    network = [Dense(2, 4), Activation(relu, relu_prime), Scale(0.5), Dense(4, 1)]
    w1, b1 = network[0].weights.copy(), network[0].bias.copy()
    w2, b2 = network[3].weights.copy(), network[3].bias.copy()
    factor, lr = 0.5, 0.05

    train(
        network, mse, mse_prime, XOR_X, XOR_Y, epochs=3, learning_rate=lr, verbose=False
    )
    assert compiled_calls.calls == 0

    for _ in range(3):
        for x, y in zip(XOR_X, XOR_Y, strict=True):
            z1 = w1 @ x + b1
            a1 = relu(z1)
            s = factor * a1
            out = w2 @ s + b2
            g = 2 * (out - y) / y.size
            g_s = w2.T @ g
            w2, b2 = w2 - lr * g @ s.T, b2 - lr * g
            g_a1 = factor * g_s
            factor -= lr * float(np.sum(g_s * a1))
            g_z1 = g_a1 * relu_prime(z1)
            w1, b1 = w1 - lr * g_z1 @ x.T, b1 - lr * g_z1

    assert_close(network[0].weights, w1)
    assert_close(network[0].bias, b1)
    assert_close(np.float64(network[2].factor), np.float64(factor))
    assert_close(network[3].weights, w2)
    assert_close(network[3].bias, b2)


def test_subclass_of_a_builtin_layer_runs_its_own_methods(compiled_calls):
    class CountingTanh(Tanh):
        calls = 0

        def forward(self, input):
            CountingTanh.calls += 1
            return super().forward(input)

    np.random.seed(0)  # noqa: NPY002
    network = [Dense(2, 3), CountingTanh(), Dense(3, 1), Tanh()]
    train(network, mse, mse_prime, XOR_X, XOR_Y, epochs=2, verbose=False)
    assert CountingTanh.calls == 8
    assert compiled_calls.calls == 0


def test_layer_used_twice_runs_the_per_layer_loop(compiled_calls):
    np.random.seed(0)  # noqa: NPY002
    shared = Tanh()
    network = [Dense(2, 3), shared, Dense(3, 3), shared, Dense(3, 1)]
    train(network, mse, mse_prime, XOR_X, XOR_Y, epochs=2, verbose=False)
    assert compiled_calls.calls == 0


def test_replaced_parameter_arrays_are_updated_in_place():
    np.random.seed(0)  # noqa: NPY002
    layer = Dense(3, 2)
    layer.weights = np.asfortranarray(layer.weights)
    weights = layer.weights
    w0 = weights.copy()
    x = np.ones((3, 1))
    g = np.ones((2, 1))
    layer.forward(x)
    layer.backward(g, 0.5)
    assert layer.weights is weights
    assert_close(weights, w0 - 0.5 * g @ x.T)


def test_base_layer_methods_must_be_overridden():
    with pytest.raises(NotImplementedError, match="forward"):
        Layer().forward(np.zeros((1, 1)))
    with pytest.raises(NotImplementedError, match="backward"):
        Layer().backward(np.zeros((1, 1)), 0.1)


# --- errors --------------------------------------------------------------------------


def test_wrong_input_shapes_name_the_argument():
    np.random.seed(0)  # noqa: NPY002
    with pytest.raises(ValueError, match=r"input must have shape \(2, 1\), got \(2,\)"):
        Dense(2, 3).forward(np.zeros(2))
    with pytest.raises(ValueError, match=r"input must have shape \(1, 5, 5\)"):
        Convolutional((1, 5, 5), 3, 2).forward(np.zeros((5, 5)))
    with pytest.raises(ValueError, match=r"input must have 6 elements"):
        Reshape((2, 3), (6, 1)).forward(np.zeros((2, 2)))

    dense = Dense(2, 3)
    dense.forward(np.zeros((2, 1)))
    with pytest.raises(ValueError, match=r"output_gradient must have shape \(3, 1\)"):
        dense.backward(np.zeros((1, 3)), 0.1)
    tanh = Tanh()
    tanh.forward(np.zeros((2, 1)))
    with pytest.raises(ValueError, match="output_gradient must have shape"):
        tanh.backward(np.zeros((3, 1)), 0.1)
    with pytest.raises(
        ValueError, match=r"y_true must have the shape of y_pred \(2, 1\)"
    ):
        mse(np.zeros(2), np.zeros((2, 1)))


def test_replaced_parameters_of_the_wrong_shape_are_named():
    np.random.seed(0)  # noqa: NPY002
    dense = Dense(2, 3)
    dense.bias = np.zeros((2, 1))
    with pytest.raises(ValueError, match=r"bias must have shape \(3, 1\), got shape"):
        dense.forward(np.zeros((2, 1)))
    conv = Convolutional((1, 5, 5), 3, 2)
    conv.kernels = np.zeros((2, 1, 3, 2))
    with pytest.raises(ValueError, match=r"kernels must have shape \(depth, 1, k, k\)"):
        conv.forward(np.zeros((1, 5, 5)))
    conv.kernels = np.zeros((2, 1, 2, 2))
    x = np.zeros((1, 1, 5, 5))
    y = np.zeros((1, 2, 3, 3))
    with pytest.raises(ValueError, match=r"biases must have shape \(2, 4, 4\)"):
        train([conv], mse, mse_prime, x, y, verbose=False)


def test_train_checks_its_arguments():
    network = xor_network()
    with pytest.raises(ValueError, match="y_train must hold one target per sample"):
        train(network, mse, mse_prime, XOR_X, XOR_Y[:3], verbose=False)
    with pytest.raises(ValueError, match="x_train must hold at least one sample"):
        train(network, mse, mse_prime, XOR_X[:0], XOR_Y[:0], verbose=False)
    with pytest.raises(ValueError, match="epochs must be >= 0"):
        train(network, mse, mse_prime, XOR_X, XOR_Y, epochs=-1, verbose=False)
    with pytest.raises(TypeError, match="learning_rate must be a real number"):
        train(network, mse, mse_prime, XOR_X, XOR_Y, learning_rate="0.1", verbose=False)
    with pytest.raises(TypeError, match="x_train must be an array or a sequence"):
        train(network, mse, mse_prime, 3, XOR_Y, verbose=False)


def test_train_with_mismatched_samples_raises_the_layers_error():
    network = xor_network()
    with pytest.raises(
        ValueError, match=r"input must have shape \(2, 1\), got \(3, 1\)"
    ):
        train(network, mse, mse_prime, np.zeros((4, 3, 1)), XOR_Y, verbose=False)
    with pytest.raises(ValueError, match=r"y_true must have the shape of y_pred"):
        train(network, mse, mse_prime, XOR_X, np.zeros((4, 2, 1)), verbose=False)


def test_constructor_arguments_are_checked():
    with pytest.raises(TypeError, match="input_size must be an int"):
        Dense(2.5, 3)
    with pytest.raises(ValueError, match="output_size must be >= 1"):
        Dense(2, 0)
    with pytest.raises(ValueError, match="kernel_size must be at most"):
        Convolutional((1, 4, 6), 5, 2)
    with pytest.raises(ValueError, match="input_shape must be a tuple"):
        Convolutional((4, 6), 3, 2)
    with pytest.raises(ValueError, match="as many elements"):
        Reshape((2, 3), (5, 1))
    with pytest.raises(TypeError, match="activation must be callable"):
        Activation(1.0, np.cos)


def test_non_numeric_input_and_backward_before_forward():
    np.random.seed(0)  # noqa: NPY002
    with pytest.raises(TypeError, match="input must be an array of real numbers"):
        Dense(2, 1).forward(np.array([["a"], ["b"]]))
    with pytest.raises(RuntimeError, match="backward called before forward"):
        Dense(2, 1).backward(np.zeros((1, 1)), 0.1)


# --- the MNIST 0-vs-1 example --------------------------------------------------------


def read_idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    shape = tuple(
        int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)
    )
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def load_mnist_test():
    try:
        from fastcnn.datasets import load_mnist
    except ImportError:
        images = read_idx(MNIST_DIR / "t10k-images-idx3-ubyte.gz")
        labels = read_idx(MNIST_DIR / "t10k-labels-idx1-ubyte.gz")
        x = images[:, np.newaxis].astype(np.float32) / np.float32(255)
        return x, labels.astype(np.int64)
    return load_mnist("test", data_dir=MNIST_DIR)


@pytest.mark.slow
@pytest.mark.skipif(not MNIST_DIR.is_dir(), reason=f"no MNIST data in {MNIST_DIR}")
def test_mnist_zero_versus_one_reaches_95_percent():
    images, labels = load_mnist_test()
    zeros = np.flatnonzero(labels == 0)
    ones = np.flatnonzero(labels == 1)
    order = np.random.default_rng(0).permutation(
        np.concatenate([zeros[:100], ones[:100]])
    )
    held_out = np.concatenate([zeros[100:400], ones[100:400]])
    x_train = images[order]
    y_train = np.eye(2)[labels[order]].reshape(-1, 2, 1)

    np.random.seed(0)  # noqa: NPY002
    network = [
        Convolutional((1, 28, 28), 3, 5),
        Sigmoid(),
        Reshape((5, 26, 26), (5 * 26 * 26, 1)),
        Dense(5 * 26 * 26, 100),
        Sigmoid(),
        Dense(100, 2),
        Sigmoid(),
    ]
    train(
        network,
        binary_cross_entropy,
        binary_cross_entropy_prime,
        x_train,
        y_train,
        epochs=20,
        learning_rate=0.1,
        verbose=False,
    )
    predicted = [np.argmax(predict(network, images[i])) for i in held_out]
    accuracy = np.mean(np.array(predicted) == labels[held_out])
    assert accuracy >= 0.95


@pytest.mark.parametrize(
    ("network", "loss", "error", "match"),
    [
        ([], "mse", ValueError, "network"),
        ([1, 2], "mse", TypeError, r"network\[0\]"),
        (None, "not-a-function", TypeError, "loss must be a function"),
    ],
)
def test_train_refuses_a_network_or_loss_it_cannot_use(network, loss, error, match):
    from fastcnn import tutorial

    layers = [tutorial.Dense(2, 1)] if network is None else network
    loss_fn = tutorial.mse if loss == "mse" else loss
    x = np.zeros((4, 2, 1))
    y = np.zeros((4, 1, 1))
    with pytest.raises(error, match=match):
        tutorial.train(layers, loss_fn, tutorial.mse_prime, x, y, epochs=1)


@pytest.mark.parametrize(
    ("network", "match"),
    [
        (
            "one-layer",
            r"^network must be a list of layers, got Dense; put a single layer in a "
            r"list: \[layer\]$",
        ),
        (5, r"^network must be a list of layers, got int$"),
        ("abc", r"^network must be a list of layers, got str$"),
    ],
)
def test_a_network_that_is_not_a_list_of_layers_is_named(network, match):
    # Guards against "'Dense' object is not iterable", which names no argument.
    from fastcnn import tutorial

    layer = tutorial.Dense(2, 1)
    network = layer if network == "one-layer" else network
    x = np.zeros((4, 2, 1))
    y = np.zeros((4, 1, 1))
    with pytest.raises(TypeError, match=match):
        tutorial.train(network, tutorial.mse, tutorial.mse_prime, x, y, epochs=1)
    with pytest.raises(TypeError, match=match):
        tutorial.predict(network, x[0])


def test_a_network_may_be_any_iterable_of_layers():
    from fastcnn import tutorial

    layers = (tutorial.Dense(2, 1), tutorial.Tanh())
    x = np.ones((3, 2, 1))
    y = np.zeros((3, 1, 1))
    tutorial.train(
        iter(layers), tutorial.mse, tutorial.mse_prime, x, y, epochs=2, verbose=False
    )
    expected = tutorial.predict(list(layers), x[0])
    np.testing.assert_array_equal(tutorial.predict(iter(layers), x[0]), expected)
