"""Tests for fastcnn.functional.dense against the reference, PyTorch and edge cases."""

from __future__ import annotations

import numba
import numpy as np
import pytest
from conftest import assert_close
from hypothesis import given, settings
from hypothesis import strategies as st

import fastcnn
from fastcnn.functional import dense as F
from fastcnn.kernels.dense import add_bias_rows, sum_rows_into
from fastcnn.reference import dense as R

DTYPES = [np.float32, np.float64]


def numeric_grad(objective, x: np.ndarray, h: float = 1e-6) -> np.ndarray:
    """Central finite differences of the scalar ``objective`` at float64 ``x``."""
    grad = np.empty_like(x)
    for index in np.ndindex(x.shape):
        plus, minus = x.copy(), x.copy()
        plus[index] += h
        minus[index] -= h
        grad[index] = (objective(plus) - objective(minus)) / (2 * h)
    return grad


def make_args(rng, x_shape, out_features, dtype, with_bias=True):
    in_features = x_shape[-1]
    x = rng.normal(size=x_shape).astype(dtype)
    weight = rng.normal(size=(out_features, in_features)).astype(dtype)
    bias = rng.normal(size=out_features).astype(dtype) if with_bias else None
    return x, weight, bias


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("x_shape", [(7,), (5, 7), (2, 3, 7), (70, 40)])
@pytest.mark.parametrize("with_bias", [True, False])
def test_linear_forward_and_backward_match_reference(rng, dtype, x_shape, with_bias):
    x, weight, bias = make_args(rng, x_shape, 37, dtype, with_bias)
    grad_output = rng.normal(size=(*x_shape[:-1], 37)).astype(dtype)

    y, ctx = F.linear_forward(x, weight, bias)
    grads = F.linear_backward(grad_output, ctx)
    expected = R.linear_backward(grad_output, x, weight, bias)

    scale = x_shape[-1] / 4
    assert_close(y, R.linear(x, weight, bias), dtype, scale=scale)
    assert_close(
        F.linear(x, weight, bias), R.linear(x, weight, bias), dtype, scale=scale
    )
    assert_close(grads[0], expected[0], dtype, scale=scale)
    rows = int(np.prod(x_shape[:-1]))
    assert_close(grads[1], expected[1], dtype, scale=max(rows, 1) / 4)
    if with_bias:
        assert_close(grads[2], expected[2], dtype, scale=max(rows, 1) / 4)
    else:
        assert grads[2] is None


@pytest.mark.parametrize("with_bias", [True, False])
def test_linear_backward_matches_finite_differences(rng, with_bias):
    x, weight, bias = make_args(rng, (2, 3, 4), 5, np.float64, with_bias)
    g = rng.normal(size=(2, 3, 5))

    grad_input, grad_weight, grad_bias = F.linear_backward(
        g, F.linear_forward(x, weight, bias)[1]
    )

    def objective(x_, w_, b_):
        return float(np.sum(R.linear(x_, w_, b_) * g))

    def close(actual, expected):
        np.testing.assert_allclose(actual, expected, rtol=1e-6, atol=1e-8)

    close(grad_input, numeric_grad(lambda v: objective(v, weight, bias), x))
    close(grad_weight, numeric_grad(lambda v: objective(x, v, bias), weight))
    if with_bias:
        close(grad_bias, numeric_grad(lambda v: objective(x, weight, v), bias))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("x_shape", [(6,), (4, 6), (2, 3, 6)])
def test_linear_matches_torch(rng, torch, dtype, x_shape):
    x, weight, bias = make_args(rng, x_shape, 3, dtype)
    g = rng.normal(size=(*x_shape[:-1], 3)).astype(dtype)
    tensors = [torch.tensor(a, requires_grad=True) for a in (x, weight, bias)]
    y_t = torch.nn.functional.linear(*tensors)
    y_t.backward(torch.tensor(g))

    y, ctx = F.linear_forward(x, weight, bias)
    grads = F.linear_backward(g, ctx)

    assert_close(y, y_t.detach().numpy())
    for grad, tensor in zip(grads, tensors, strict=True):
        assert_close(grad, tensor.grad.numpy())


def test_linear_accepts_strided_views(rng):
    x = rng.normal(size=(8, 10))[::-2, ::2]
    weight = rng.normal(size=(6, 10))[::2, 1::2]
    bias = rng.normal(size=6)[::-2]
    g = rng.normal(size=(4, 6))[:, ::2]

    y, ctx = F.linear_forward(x, weight, bias)
    grads = F.linear_backward(g, ctx)

    assert_close(y, R.linear(x, weight, bias))
    for actual, expected in zip(
        grads, R.linear_backward(g, x, weight, bias), strict=True
    ):
        assert_close(actual, expected)


def test_linear_of_an_empty_batch(rng):
    x, weight, bias = make_args(rng, (0, 4), 3, np.float32)

    y, ctx = F.linear_forward(x, weight, bias)
    grad_input, grad_weight, grad_bias = F.linear_backward(np.zeros((0, 3), "f4"), ctx)

    assert y.shape == (0, 3)
    assert grad_input.shape == (0, 4)
    np.testing.assert_array_equal(grad_weight, np.zeros((3, 4), np.float32))
    np.testing.assert_array_equal(grad_bias, np.zeros(3, np.float32))


def test_linear_propagates_nan(rng):
    x, weight, bias = make_args(rng, (3, 4), 2, np.float64)
    x[1, 2] = np.nan
    bias[0] = np.nan

    y = F.linear(x, weight, bias)

    assert np.all(np.isnan(y[1]))
    assert np.all(np.isnan(y[:, 0]))
    assert np.isfinite(y[0, 1]) and np.isfinite(y[2, 1])


@settings(max_examples=25)
@given(
    leading=st.lists(st.integers(0, 4), min_size=0, max_size=3),
    in_features=st.integers(1, 9),
    out_features=st.integers(1, 70),
    with_bias=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_linear_hypothesis_shapes(leading, in_features, out_features, with_bias, seed):
    rng = np.random.default_rng(seed)
    x_shape = (*leading, in_features)
    x, weight, bias = make_args(rng, x_shape, out_features, np.float64, with_bias)
    g = rng.normal(size=(*leading, out_features))

    y, ctx = F.linear_forward(x, weight, bias)
    grads = F.linear_backward(g, ctx)

    assert_close(y, R.linear(x, weight, bias))
    for actual, expected in zip(
        grads, R.linear_backward(g, x, weight, bias), strict=True
    ):
        if expected is None:
            assert actual is None
        else:
            assert_close(actual, expected)


def test_bias_kernels_are_bit_identical_for_1_and_2_threads(rng):
    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("needs at least 2 Numba threads")
    g = rng.normal(size=(513, 130)).astype(np.float32)
    bias = rng.normal(size=130).astype(np.float32)
    before = fastcnn.get_num_threads()
    results = []
    try:
        for threads in (1, 2):
            fastcnn.set_num_threads(threads)
            y = g.copy()
            add_bias_rows(y, bias)
            grad_bias = np.empty(130, np.float32)
            sum_rows_into(g, grad_bias)
            results.append((y, grad_bias))
    finally:
        fastcnn.set_num_threads(before)

    for one, two in zip(*results, strict=True):
        np.testing.assert_array_equal(one, two)
    assert_close(results[0][1], g.astype(np.float64).sum(axis=0), np.float32, scale=30)


X = np.zeros((2, 3))
W = np.zeros((4, 3))
B = np.zeros(4)
_, CTX = F.linear_forward(X, W, B)

ERRORS = [
    (lambda: F.linear([[1.0, 2.0, 3.0]], W), TypeError, "x"),
    (lambda: F.linear(X.astype(np.int64), W), TypeError, "x"),
    (lambda: F.linear(np.array(1.0), W), ValueError, "x"),
    (lambda: F.linear(X, W[0]), ValueError, "weight"),
    (lambda: F.linear(X, np.zeros((4, 5))), ValueError, "weight.*5.*3"),
    (lambda: F.linear(X, W.astype(np.float32)), TypeError, "weight"),
    (lambda: F.linear(X, W, np.zeros(5)), ValueError, "bias"),
    (lambda: F.linear(X, W, np.zeros((1, 4))), ValueError, "bias"),
    (lambda: F.linear(X, W, B.astype(np.float32)), TypeError, "bias"),
    (lambda: F.linear(X, W, 1.0), TypeError, "bias"),
    (lambda: F.linear_backward(np.zeros((2, 3)), CTX), ValueError, "grad_output"),
    (lambda: F.linear_backward(np.zeros((2, 4), "f4"), CTX), TypeError, "grad_output"),
    (lambda: F.linear_backward(np.zeros((2, 4)), None), TypeError, "ctx"),
]


@pytest.mark.parametrize(("call", "error", "match"), ERRORS)
def test_bad_arguments_raise_naming_the_argument(call, error, match):
    with pytest.raises(error, match=match):
        call()


def _blas_threads() -> list[int]:
    from threadpoolctl import threadpool_info

    return [
        lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"
    ]


def test_large_products_run_on_one_blas_thread_and_the_pool_is_restored(
    rng, monkeypatch
):
    # Guards against multi-threaded BLAS products whose spinning threads take the
    # cores from the Numba kernels after them, and against a pool left shrunk.
    threadpoolctl = pytest.importorskip("threadpoolctl")
    seen = []
    real_dot = np.dot

    def recording_dot(*args, **kwargs):
        seen.append(_blas_threads())
        return real_dot(*args, **kwargs)

    x = rng.standard_normal((256, 784)).astype(np.float32)
    weight = rng.standard_normal((64, 784)).astype(np.float32)
    with threadpoolctl.threadpool_limits(2, user_api="blas"):
        before = _blas_threads()
        if not before or max(before) < 2:
            pytest.skip("needs a BLAS pool of at least 2 threads")
        monkeypatch.setattr(np, "dot", recording_dot)
        y, ctx = F.linear_forward(x, weight)
        F.linear_backward(np.ones_like(y), ctx)
        monkeypatch.undo()
        assert _blas_threads() == before
    assert len(seen) == 3  # y, grad_input, grad_weight
    assert all(threads == [1] * len(before) for threads in seen), seen
    np.testing.assert_allclose(y, x @ weight.T, rtol=1e-5, atol=1e-4)


def test_small_products_leave_the_blas_pool_alone(rng, monkeypatch):
    # One-sample products run on one BLAS thread anyway: no calls into BLAS's
    # thread settings for them.
    threadpoolctl = pytest.importorskip("threadpoolctl")
    x = rng.standard_normal((1, 10)).astype(np.float32)
    weight = rng.standard_normal((3, 10)).astype(np.float32)
    with threadpoolctl.threadpool_limits(2, user_api="blas"):
        before = _blas_threads()
        seen = []
        real_dot = np.dot
        monkeypatch.setattr(
            np,
            "dot",
            lambda *a, **k: (seen.append(_blas_threads()), real_dot(*a, **k))[1],
        )
        F.linear(x, weight)
        monkeypatch.undo()
    assert seen == [before]
