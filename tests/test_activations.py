"""Tests for fastcnn.functional.activations against references, PyTorch, edge cases."""

from __future__ import annotations

import warnings

import numba
import numpy as np
import pytest
from conftest import assert_close
from hypothesis import given, settings
from hypothesis import strategies as st

import fastcnn
from fastcnn.functional import activations as F
from fastcnn.kernels._small import launch_threshold
from fastcnn.kernels.activations import CHUNK
from fastcnn.reference import activations as R

DTYPES = [np.float32, np.float64]
SHAPES = [(), (1,), (7,), (3, 5), (2, 3, 4, 5), (CHUNK + 3,)]

# name, forward, backward, whether backward takes the output (else the input)
ACTIVATIONS = [
    ("relu", F.relu, F.relu_backward, False),
    ("leaky_relu", F.leaky_relu, F.leaky_relu_backward, False),
    ("sigmoid", F.sigmoid, F.sigmoid_backward, True),
    ("tanh", F.tanh, F.tanh_backward, True),
]
NAMES = [name for name, *_ in ACTIVATIONS]
BY_NAME = {name: rest for name, *rest in ACTIVATIONS}


def numeric_grad(function, x: np.ndarray, h: float = 1e-6) -> np.ndarray:
    """Element-wise central differences of an element-wise ``function``."""
    return (function(x + h) - function(x - h)) / (2 * h)


def away_from_kinks(rng, shape) -> np.ndarray:
    """Normal samples kept at least 0.01 away from 0, where relu has its kink."""
    x = rng.normal(size=shape) * 3
    return np.where(np.abs(x) < 0.01, 0.5, x)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("name", NAMES)
def test_activations_match_reference(rng, dtype, shape, name):
    forward, backward, from_output = BY_NAME[name]
    # np.asarray: a 0-d shape gives a numpy scalar
    x = np.asarray(rng.normal(size=shape) * 3, dtype=dtype)
    g = np.asarray(rng.normal(size=shape), dtype=dtype)

    y = forward(x)
    grad = backward(g, y if from_output else x)

    assert_close(y, getattr(R, name)(x), dtype)
    assert_close(
        grad, getattr(R, f"{name}_backward")(g, y if from_output else x), dtype
    )


@pytest.mark.parametrize("negative_slope", [0.0, 0.2, -0.5, 3.0])
def test_leaky_relu_uses_its_negative_slope(rng, negative_slope):
    x = rng.normal(size=(4, 6))
    g = rng.normal(size=(4, 6))

    assert_close(
        F.leaky_relu(x, negative_slope), R.leaky_relu(x, negative_slope=negative_slope)
    )
    assert_close(
        F.leaky_relu_backward(g, x, negative_slope),
        R.leaky_relu_backward(g, x, negative_slope=negative_slope),
    )


@pytest.mark.parametrize("name", NAMES)
def test_backward_matches_finite_differences(rng, name):
    forward, backward, from_output = BY_NAME[name]
    x = away_from_kinks(rng, (5, 4))
    g = rng.normal(size=(5, 4))
    y = forward(x)

    grad = backward(g, y if from_output else x)

    reference = getattr(R, name)
    expected = g * numeric_grad(reference, x)
    np.testing.assert_allclose(grad, expected, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", NAMES)
def test_activations_match_torch(rng, torch, dtype, name):
    forward, backward, from_output = BY_NAME[name]
    x = (rng.normal(size=(3, 4, 5)) * 3).astype(dtype)
    x[0, 0, :3] = [0.0, -0.0, np.nan]
    g = rng.normal(size=(3, 4, 5)).astype(dtype)
    torch_function = {
        "relu": torch.relu,
        "leaky_relu": torch.nn.functional.leaky_relu,
        "sigmoid": torch.sigmoid,
        "tanh": torch.tanh,
    }[name]
    xt = torch.tensor(x, requires_grad=True)
    yt = torch_function(xt)
    yt.backward(torch.tensor(g))

    y = forward(x)
    grad = backward(g, y if from_output else x)

    np.testing.assert_array_equal(np.isnan(y), np.isnan(yt.detach().numpy()))
    np.testing.assert_array_equal(np.isnan(grad), np.isnan(xt.grad.numpy()))
    assert_close(y, yt.detach().numpy())
    assert_close(grad, xt.grad.numpy())


@pytest.mark.parametrize("dtype", DTYPES)
def test_sigmoid_of_huge_inputs_is_finite_without_warnings(dtype):
    x = np.array([-1e4, -100.0, 0.0, 100.0, 1e4], dtype=dtype)

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y = F.sigmoid(x)

    assert np.all(np.isfinite(y))
    np.testing.assert_array_equal(y[[0, 2, 4]], np.array([0.0, 0.5, 1.0], dtype))
    assert 0.0 < y[1] < 1e-40 or (dtype == np.float32 and y[1] == 0.0)
    assert_close(F.tanh(x), np.array([-1.0, -1.0, 0.0, 1.0, 1.0]), dtype)


@pytest.mark.parametrize("name", NAMES)
def test_activations_propagate_nan(name):
    forward = BY_NAME[name][0]
    x = np.array([np.nan, -1.0, 1.0], dtype=np.float32)

    y = forward(x)

    assert np.isnan(y[0])
    assert np.all(np.isfinite(y[1:]))


def test_relu_backward_is_zero_at_zero_and_passes_nan_inputs_like_torch():
    x = np.array([0.0, -0.0, np.nan, -2.0, 2.0])
    g = np.full(5, 3.0)

    np.testing.assert_array_equal(F.relu_backward(g, x), [0.0, 0.0, 3.0, 0.0, 3.0])
    np.testing.assert_array_equal(
        F.leaky_relu_backward(g, x, 0.5), [1.5, 1.5, 1.5, 1.5, 3.0]
    )


@pytest.mark.parametrize("name", NAMES)
def test_activations_accept_strided_views_and_keep_shape(rng, name):
    forward, backward, from_output = BY_NAME[name]
    base = rng.normal(size=(6, 8, 3))
    x = base[::-2, 1::3]
    g = rng.normal(size=(6, 8, 3))[1::2, ::-3]

    y = forward(x)
    saved = y if from_output else x

    assert y.shape == x.shape and y.flags.c_contiguous
    assert_close(y, getattr(R, name)(x))
    assert_close(backward(g, saved), getattr(R, f"{name}_backward")(g, saved))


@settings(max_examples=20)
@given(
    shape=st.lists(st.integers(0, 6), min_size=0, max_size=4),
    name=st.sampled_from(NAMES),
    seed=st.integers(0, 2**16),
)
def test_activations_hypothesis_shapes(shape, name, seed):
    forward, backward, from_output = BY_NAME[name]
    rng = np.random.default_rng(seed)
    x = np.asarray(rng.normal(size=shape) * 4)
    g = np.asarray(rng.normal(size=shape))

    y = forward(x)
    saved = y if from_output else x

    assert_close(y, getattr(R, name)(x))
    assert_close(backward(g, saved), getattr(R, f"{name}_backward")(g, saved))


@pytest.mark.parametrize("name", NAMES)
def test_activations_are_bit_identical_for_1_and_2_threads(rng, name):
    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("needs at least 2 Numba threads")
    forward, backward, from_output = BY_NAME[name]
    x = rng.normal(size=3 * CHUNK + 5).astype(np.float32)
    g = rng.normal(size=x.shape).astype(np.float32)
    before = fastcnn.get_num_threads()
    results = []
    try:
        for threads in (1, 2):
            fastcnn.set_num_threads(threads)
            y = forward(x)
            results.append((y, backward(g, y if from_output else x)))
    finally:
        fastcnn.set_num_threads(before)

    for one, two in zip(*results, strict=True):
        np.testing.assert_array_equal(one, two)


X = np.zeros((2, 3))

ERRORS = [
    (lambda: F.relu([1.0]), TypeError, "x"),
    (lambda: F.sigmoid(np.zeros(3, np.int32)), TypeError, "x"),
    (lambda: F.tanh(np.zeros(3, np.float16)), TypeError, "x"),
    (lambda: F.leaky_relu(X, "0.1"), TypeError, "negative_slope"),
    (lambda: F.leaky_relu(X, np.inf), ValueError, "negative_slope"),
    (lambda: F.leaky_relu_backward(X, X, None), TypeError, "negative_slope"),
    (lambda: F.relu_backward(X, np.zeros((3, 2))), ValueError, "grad_output"),
    (lambda: F.relu_backward(X.astype(np.float32), X), TypeError, "grad_output"),
    (lambda: F.relu_backward(X, X.astype(np.float32)), TypeError, "grad_output"),
    (lambda: F.sigmoid_backward(X, "y"), TypeError, "y"),
    (lambda: F.tanh_backward(np.zeros(6), X), ValueError, "grad_output"),
    (lambda: F.leaky_relu_backward(X, [[0.0]]), TypeError, "x"),
]


@pytest.mark.parametrize(("call", "error", "match"), ERRORS)
def test_bad_arguments_raise_naming_the_argument(call, error, match):
    with pytest.raises(error, match=match):
        call()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_parallel_and_serial_compiles_give_the_same_bits(rng, dtype):
    # Calls below ELEMENTWISE_SERIAL_WORK never reach the parallel compile
    # through the wrappers; compare the two compiles directly.
    from fastcnn.kernels import activations as kernels

    x = rng.standard_normal(5000).astype(dtype)
    x[::7] = 0.0
    g = rng.standard_normal(5000).astype(dtype)
    calls = {
        "relu_flat": (x,),
        "relu_backward_flat": (g, x),
        "leaky_relu_flat": (x, 0.1),
        "leaky_relu_backward_flat": (g, x, 0.1),
        "sigmoid_flat": (x,),
        "sigmoid_backward_flat": (g, x),
        "tanh_flat": (x,),
        "tanh_backward_flat": (g, x),
    }
    for name, args in calls.items():
        kernel = getattr(kernels, name)
        serial, parallel = np.empty_like(x), np.empty_like(x)
        kernel.serial(*args, serial)
        kernel.parallel(*args, parallel)
        np.testing.assert_array_equal(parallel, serial, err_msg=name)
        assert kernel.threshold == launch_threshold(kernels.ELEMENTWISE_SERIAL_WORK)
