"""Tests for fastcnn.functional.softmax against references, PyTorch and edge cases."""

from __future__ import annotations

import numba
import numpy as np
import pytest
from conftest import assert_close
from hypothesis import given, settings
from hypothesis import strategies as st

import fastcnn
import fastcnn.functional as F
from fastcnn.kernels.softmax import (
    BLOCK_ELEMENTS,
    cross_entropy_index_rows,
    exp_array,
    log_array,
)
from fastcnn.reference import softmax as R

DTYPES = [np.float32, np.float64]
REDUCTIONS = ["mean", "sum", "none"]


def numeric_grad(objective, x: np.ndarray, h: float = 1e-6) -> np.ndarray:
    """Central finite differences of the scalar ``objective`` at float64 ``x``."""
    grad = np.empty_like(x)
    for index in np.ndindex(x.shape):
        plus, minus = x.copy(), x.copy()
        plus[index] += h
        minus[index] -= h
        grad[index] = (objective(plus) - objective(minus)) / (2 * h)
    return grad


def make_target(rng, kind: str, n: int, k: int, dtype) -> np.ndarray:
    if kind == "index":
        return rng.integers(0, k, size=n)
    probs = rng.random((n, k))
    return (probs / probs.sum(axis=1, keepdims=True)).astype(dtype)


@pytest.fixture
def two_thread_counts():
    """Yields (1, 2) and restores the thread count afterwards."""
    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("needs at least 2 Numba threads")
    before = fastcnn.get_num_threads()
    yield (1, 2)
    fastcnn.set_num_threads(before)


# ---------------------------------------------------------------- softmax


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    ("shape", "axis"),
    [((7,), -1), ((4, 9), -1), ((4, 9), 0), ((2, 3, 5), 1), ((2, 3, 4, 5), -3)],
)
def test_softmax_and_log_softmax_match_reference(rng, dtype, shape, axis):
    x = (rng.normal(size=shape) * 3).astype(dtype)

    assert_close(F.softmax(x, axis), R.softmax(x, axis), dtype)
    assert_close(F.log_softmax(x, axis), R.log_softmax(x, axis), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("shape", "axis"), [((5, 6), -1), ((3, 4, 2), 1)])
def test_softmax_backward_match_reference(rng, dtype, shape, axis):
    x = rng.normal(size=shape).astype(dtype)
    g = rng.normal(size=shape).astype(dtype)
    y = F.softmax(x, axis)
    y_log = F.log_softmax(x, axis)

    assert_close(F.softmax_backward(g, y, axis), R.softmax_backward(g, y, axis), dtype)
    assert_close(
        F.log_softmax_backward(g, y_log, axis),
        R.log_softmax_backward(g, y_log, axis),
        dtype,
    )


@pytest.mark.parametrize("axis", [0, 1])
def test_softmax_backward_matches_finite_differences(rng, axis):
    x = rng.normal(size=(3, 4))
    g = rng.normal(size=(3, 4))

    grad = F.softmax_backward(g, F.softmax(x, axis), axis)
    expected = numeric_grad(lambda v: np.sum(R.softmax(v, axis) * g), x)
    np.testing.assert_allclose(grad, expected, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("axis", [0, 1])
def test_log_softmax_backward_matches_finite_differences(rng, axis):
    x = rng.normal(size=(3, 4))
    g = rng.normal(size=(3, 4))

    grad = F.log_softmax_backward(g, F.log_softmax(x, axis), axis)
    expected = numeric_grad(lambda v: np.sum(R.log_softmax(v, axis) * g), x)
    np.testing.assert_allclose(grad, expected, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("axis", [0, 1, -1])
def test_softmax_matches_torch_forward_and_backward(rng, torch, dtype, axis):
    x = rng.normal(size=(6, 5)).astype(dtype) * 4
    g = rng.normal(size=(6, 5)).astype(dtype)
    xt = torch.tensor(x, requires_grad=True)
    torch.softmax(xt, axis).backward(torch.tensor(g))
    x_log = torch.tensor(x, requires_grad=True)
    torch.log_softmax(x_log, axis).backward(torch.tensor(g))

    y = F.softmax(x, axis)
    y_log = F.log_softmax(x, axis)
    assert_close(y, torch.softmax(torch.tensor(x), axis).numpy())
    assert_close(y_log, torch.log_softmax(torch.tensor(x), axis).numpy())
    assert_close(F.softmax_backward(g, y, axis), xt.grad.numpy())
    assert_close(F.log_softmax_backward(g, y_log, axis), x_log.grad.numpy())


@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_subtracts_the_maximum_of_each_row(dtype):
    # One row near +1e4 and one near -1e4: a batch-wide shift would underflow the
    # second row to 0/0.
    x = np.array([[1e4, 1e4 - 1, 1e4 - 2], [-1e4, -1e4 - 1, -1e4 - 2]], dtype=dtype)
    row = R.softmax(np.array([0.0, -1.0, -2.0]))

    y = F.softmax(x)
    y_log = F.log_softmax(x)

    assert_close(y, np.stack([row, row]), dtype)
    assert np.all(np.isfinite(y_log))
    assert_close(y_log, R.log_softmax(x.astype(np.float64)), dtype, scale=10)


@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_of_huge_logits_is_finite(dtype):
    x = np.array([[1e4, -1e4, 0.0]], dtype=dtype)

    assert_close(F.softmax(x), np.array([[1.0, 0.0, 0.0]]), dtype)
    assert_close(F.log_softmax(x), np.array([[0.0, -2e4, -1e4]]), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_gives_zero_probability_at_minus_inf(dtype):
    x = np.array([[0.0, -np.inf, 0.0]], dtype=dtype)

    assert_close(F.softmax(x), np.array([[0.5, 0.0, 0.5]]), dtype)
    assert F.log_softmax(x)[0, 1] == -np.inf


@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_of_all_minus_inf_row_is_nan_like_torch(dtype):
    x = np.array([[-np.inf, -np.inf], [0.0, 0.0]], dtype=dtype)

    for y in (F.softmax(x), F.log_softmax(x)):
        assert np.all(np.isnan(y[0]))
        assert np.all(np.isfinite(y[1]))


@pytest.mark.parametrize("function", [F.softmax, F.log_softmax])
def test_softmax_propagates_nan_to_its_row_only(function):
    x = np.array([[0.0, np.nan, 1.0], [0.0, 1.0, 2.0]])

    y = function(x)

    assert np.all(np.isnan(y[0]))
    assert_close(
        y[1], R.softmax(x[1]) if function is F.softmax else R.log_softmax(x[1])
    )


def test_softmax_accepts_strided_views(rng):
    base = rng.normal(size=(6, 10))
    view = base[::-2, 1::3]

    assert_close(F.softmax(view, 0), R.softmax(view, 0))
    assert_close(F.log_softmax(view), R.log_softmax(view))


def test_softmax_of_empty_arrays_keeps_their_shape():
    assert F.softmax(np.zeros((0, 4))).shape == (0, 4)
    assert F.log_softmax(np.zeros((3, 0), np.float32)).dtype == np.float32


@settings(max_examples=25)
@given(
    shape=st.lists(st.integers(1, 5), min_size=1, max_size=4),
    axis_seed=st.integers(0, 3),
    seed=st.integers(0, 2**16),
)
def test_softmax_hypothesis_shapes(shape, axis_seed, seed):
    x = np.random.default_rng(seed).normal(size=shape) * 5
    axis = axis_seed % len(shape)
    g = np.random.default_rng(seed + 1).normal(size=shape)

    y = F.softmax(x, axis)

    assert_close(y, R.softmax(x, axis))
    assert_close(np.sum(y, axis=axis), np.ones(np.delete(shape, axis)))
    assert_close(F.log_softmax(x, axis), R.log_softmax(x, axis))
    assert_close(F.softmax_backward(g, y, axis), R.softmax_backward(g, y, axis))


def test_softmax_kernels_are_bit_identical_for_1_and_2_threads(rng, two_thread_counts):
    x = rng.normal(size=(257, 33)).astype(np.float32)
    g = rng.normal(size=(257, 33)).astype(np.float32)
    results = []
    for threads in two_thread_counts:
        fastcnn.set_num_threads(threads)
        y = F.softmax(x)
        results.append((y, F.log_softmax(x, 0), F.softmax_backward(g, y)))

    for one, two in zip(*results, strict=True):
        np.testing.assert_array_equal(one, two)


# ----------------------------------------------------------- cross_entropy


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", ["index", "prob"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("label_smoothing", [0.0, 0.1, 1.0])
def test_cross_entropy_matches_reference(rng, dtype, kind, reduction, label_smoothing):
    logits = (rng.normal(size=(9, 6)) * 3).astype(dtype)
    target = make_target(rng, kind, 9, 6, dtype)
    args = (logits, target, reduction, label_smoothing)

    loss = F.cross_entropy(*args)
    grad = F.cross_entropy_backward(*args)
    fused_loss, fused_grad = F.cross_entropy_with_grad(*args)

    assert_close(loss, R.cross_entropy(*args), dtype)
    assert_close(grad, R.cross_entropy_backward(*args), dtype)
    np.testing.assert_array_equal(fused_loss, loss)
    np.testing.assert_array_equal(fused_grad, grad)


@pytest.mark.parametrize("kind", ["index", "prob"])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.3])
def test_cross_entropy_backward_matches_finite_differences(
    rng, kind, reduction, label_smoothing
):
    logits = rng.normal(size=(3, 4))
    target = make_target(rng, kind, 3, 4, np.float64)

    grad = F.cross_entropy_backward(
        logits, target, reduction, label_smoothing, grad_output=0.7
    )

    def objective(v):
        return 0.7 * float(R.cross_entropy(v, target, reduction, label_smoothing))

    np.testing.assert_allclose(
        grad, numeric_grad(objective, logits), rtol=1e-6, atol=1e-8
    )


@pytest.mark.parametrize("kind", ["index", "prob"])
def test_cross_entropy_backward_none_scales_each_row(rng, kind):
    logits = rng.normal(size=(4, 3))
    target = make_target(rng, kind, 4, 3, np.float64)
    weights = rng.normal(size=4)

    grad = F.cross_entropy_backward(logits, target, "none", 0.2, grad_output=weights)

    def objective(v):
        return float(np.dot(R.cross_entropy(v, target, "none", 0.2), weights))

    np.testing.assert_allclose(
        grad, numeric_grad(objective, logits), rtol=1e-6, atol=1e-8
    )


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", ["index", "prob"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("label_smoothing", [0.0, 0.25])
def test_cross_entropy_matches_torch(
    rng, torch, dtype, kind, reduction, label_smoothing
):
    logits = (rng.normal(size=(8, 5)) * 2).astype(dtype)
    target = make_target(rng, kind, 8, 5, dtype)
    upstream = rng.normal(size=8).astype(dtype) if reduction == "none" else 1.0
    logits_t = torch.tensor(logits, requires_grad=True)
    loss_t = torch.nn.functional.cross_entropy(
        logits_t,
        torch.tensor(target),
        reduction=reduction,
        label_smoothing=label_smoothing,
    )
    loss_t.backward(torch.tensor(upstream, dtype=loss_t.dtype).expand_as(loss_t))

    loss = F.cross_entropy(logits, target, reduction, label_smoothing)
    grad = F.cross_entropy_backward(
        logits, target, reduction, label_smoothing, grad_output=upstream
    )

    assert_close(loss, loss_t.detach().numpy())
    assert_close(grad, logits_t.grad.numpy())


@pytest.mark.parametrize("kind", ["index", "prob"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_cross_entropy_unbatched_matches_torch(rng, torch, kind, reduction):
    logits = rng.normal(size=5)
    target = (
        np.array(3) if kind == "index" else make_target(rng, kind, 1, 5, np.float64)[0]
    )
    logits_t = torch.tensor(logits, requires_grad=True)
    loss_t = torch.nn.functional.cross_entropy(
        logits_t, torch.tensor(target), reduction=reduction, label_smoothing=0.1
    )
    loss_t.backward()

    loss, grad = F.cross_entropy_with_grad(logits, target, reduction, 0.1)

    assert_close(loss, loss_t.detach().numpy())
    assert_close(grad, logits_t.grad.numpy())


def test_cross_entropy_accepts_a_python_int_target_for_1d_logits():
    logits = np.array([0.5, 1.5, -1.0])

    assert_close(F.cross_entropy(logits, 1), R.cross_entropy(logits, 1))
    assert_close(F.cross_entropy(logits, np.int8(2)), R.cross_entropy(logits, 2))


@pytest.mark.parametrize("dtype", DTYPES)
def test_cross_entropy_mean_and_sum_are_0d_arrays_of_the_logits_dtype(rng, dtype):
    logits = rng.normal(size=(4, 3)).astype(dtype)
    target = rng.integers(0, 3, size=4)

    for reduction in ("mean", "sum"):
        loss = F.cross_entropy(logits, target, reduction)
        assert isinstance(loss, np.ndarray)
        assert loss.shape == ()
        assert loss.dtype == dtype
    assert F.cross_entropy(logits, target, "none").shape == (4,)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", ["index", "prob"])
def test_cross_entropy_of_huge_logits_is_finite_and_exact(dtype, kind):
    logits = np.array([[1e4, -1e4, 0.0], [-1e4, 1e4, 1e4]], dtype=dtype)
    if kind == "index":
        target = np.array([1, 0])
    else:
        target = np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]], dtype=dtype)

    loss, grad = F.cross_entropy_with_grad(logits, target, "none")

    # Exact values: 2e4, and 2e4 + log 2.
    assert_close(loss, np.array([2e4, 2e4 + np.log(2.0)]), dtype)
    assert_close(grad, np.array([[1.0, -1.0, 0.0], [-1.0, 0.5, 0.5]]), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_cross_entropy_rows_of_opposite_scales_are_both_correct(dtype):
    # The row maximum, not the batch maximum, must be subtracted.
    logits = np.array([[1e4, 1e4 - 1.0], [-1e4, -1e4 - 1.0]], dtype=dtype)
    target = np.array([1, 1])
    loss_one = np.log1p(np.exp(1.0))
    p = 1.0 / (1.0 + np.exp(-1.0))

    loss, grad = F.cross_entropy_with_grad(logits, target, "none")

    assert_close(loss, np.array([loss_one, loss_one]), dtype, scale=10)
    assert_close(grad, np.array([[p, -p], [p, -p]]), dtype, scale=10)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", ["index", "prob"])
def test_cross_entropy_minus_inf_where_target_is_zero(dtype, kind):
    logits = np.array([[2.0, -np.inf, 0.0]], dtype=dtype)
    if kind == "index":
        target = np.array([0])
    else:
        target = np.array([[0.75, 0.0, 0.25]], dtype=dtype)

    loss, grad = F.cross_entropy_with_grad(logits, target, "sum")

    assert np.isfinite(loss)
    assert grad[0, 1] == 0.0
    assert np.all(np.isfinite(grad))
    finite = np.array([2.0, 0.0])
    y = np.array([1.0, 0.0]) if kind == "index" else np.array([0.75, 0.25])
    assert_close(loss, R.cross_entropy(finite[None], y[None], "sum"), dtype)


def test_cross_entropy_minus_inf_index_target_matches_torch(torch):
    logits = np.array([[2.0, -np.inf, 0.0], [1.0, 0.0, -np.inf]])
    target = np.array([0, 1])
    logits_t = torch.tensor(logits, requires_grad=True)
    loss_t = torch.nn.functional.cross_entropy(logits_t, torch.tensor(target))
    loss_t.backward()

    loss, grad = F.cross_entropy_with_grad(logits, target)

    assert_close(loss, loss_t.detach().numpy())
    assert_close(grad, logits_t.grad.numpy())


def test_cross_entropy_minus_inf_with_positive_target_is_infinite():
    logits = np.array([[0.0, -np.inf]])

    assert F.cross_entropy(logits, np.array([1])) == np.inf
    # label smoothing gives every class a positive target
    assert F.cross_entropy(logits, np.array([0]), label_smoothing=0.1) == np.inf


@pytest.mark.parametrize("kind", ["index", "prob"])
def test_cross_entropy_propagates_nan(kind):
    logits = np.array([[0.0, np.nan, 1.0], [0.0, 1.0, 2.0]])
    target = make_target(np.random.default_rng(0), kind, 2, 3, np.float64)

    loss, grad = F.cross_entropy_with_grad(logits, target, "none")

    assert np.isnan(loss[0])
    assert np.all(np.isnan(grad[0]))
    assert np.isfinite(loss[1])
    assert np.isnan(F.cross_entropy(logits, target, "mean"))


def test_cross_entropy_of_an_empty_batch_follows_torch():
    logits = np.zeros((0, 4), np.float32)
    target = np.zeros(0, np.int64)

    assert np.isnan(F.cross_entropy(logits, target, "mean"))
    assert F.cross_entropy(logits, target, "sum") == 0.0
    assert F.cross_entropy(logits, target, "none").shape == (0,)
    assert F.cross_entropy_backward(logits, target).shape == (0, 4)


@pytest.mark.parametrize("target_dtype", [np.int8, np.int32, np.uint8, np.uint64])
def test_cross_entropy_accepts_every_integer_target_dtype(rng, target_dtype):
    logits = rng.normal(size=(5, 4))
    target = np.array([0, 3, 2, 1, 3], dtype=target_dtype)

    assert_close(F.cross_entropy(logits, target), R.cross_entropy(logits, target))


def test_cross_entropy_accepts_strided_views(rng):
    logits = rng.normal(size=(10, 8))[::-2, ::2]
    target = np.arange(10)[::2] % 4

    assert_close(F.cross_entropy(logits, target), R.cross_entropy(logits, target))
    assert_close(
        F.cross_entropy_backward(logits, target),
        R.cross_entropy_backward(logits, target),
    )


@settings(max_examples=25)
@given(
    n=st.integers(1, 12),
    k=st.integers(1, 12),
    kind=st.sampled_from(["index", "prob"]),
    reduction=st.sampled_from(REDUCTIONS),
    label_smoothing=st.floats(0.0, 1.0),
    seed=st.integers(0, 2**16),
)
def test_cross_entropy_hypothesis(n, k, kind, reduction, label_smoothing, seed):
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(n, k)) * 4
    target = make_target(rng, kind, n, k, np.float64)
    args = (logits, target, reduction, label_smoothing)

    loss, grad = F.cross_entropy_with_grad(*args)

    assert_close(loss, R.cross_entropy(*args), scale=10)
    assert_close(grad, R.cross_entropy_backward(*args))


@pytest.mark.parametrize("kind", ["index", "prob"])
def test_cross_entropy_is_bit_identical_for_1_and_2_threads(
    rng, kind, two_thread_counts
):
    logits = rng.normal(size=(301, 17)).astype(np.float32)
    target = make_target(rng, kind, 301, 17, np.float32)
    results = []
    for threads in two_thread_counts:
        fastcnn.set_num_threads(threads)
        results.append(F.cross_entropy_with_grad(logits, target, "mean", 0.1))

    for one, two in zip(*results, strict=True):
        np.testing.assert_array_equal(one, two)


# ---------------------------------------------------------------- exp


def exp_ulp_errors(dtype, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Kernel ``exp`` of ``x`` and its error in ulp of the exactly rounded result."""
    out = np.empty_like(x)
    exp_array(x, out)
    with np.errstate(over="ignore", under="ignore"):
        exact = np.exp(x.astype(np.longdouble))
        ulp = np.spacing(exact.astype(dtype)).astype(np.longdouble)
        finite = exact < np.finfo(dtype).max
        err = np.abs(out[finite].astype(np.longdouble) - exact[finite]) / ulp[finite]
    return out, err


@pytest.mark.parametrize("dtype", DTYPES)
def test_exp_is_within_one_ulp_over_the_whole_range(dtype):
    # Every 4099th bit pattern of float32 (inputs of all magnitudes, subnormal
    # results included); float64 sampled from the range where exp is finite and
    # nonzero, plus uniform draws near 0.
    if dtype == np.float32:
        bits = np.arange(0, 2**32, 4099, dtype=np.uint64).astype(np.uint32)
        x = bits.view(np.float32)
    else:
        rng = np.random.default_rng(5)
        x = np.concatenate(
            [rng.uniform(-746.0, 710.0, 500_000), rng.uniform(-1.0, 1.0, 100_000)]
        )
    x = x[np.isfinite(x)]

    _, err = exp_ulp_errors(dtype, x)

    assert err.size > 100_000
    assert err.max() <= 1.0


@pytest.mark.parametrize("dtype", DTYPES)
def test_exp_specials_overflow_and_underflow(dtype):
    info = np.finfo(dtype)
    big = np.log(np.longdouble(info.max))
    tiny = np.log(np.longdouble(info.smallest_subnormal))
    specials = [np.nan, np.inf, -np.inf, 0.0, -0.0]
    edges = [big * 1.001, big * 1.5, tiny - 1.0, tiny + 0.5, -1e30, 1e30]
    x = np.array(specials + edges, dtype=dtype)
    out = np.empty_like(x)
    exp_array(x, out)

    assert np.isnan(out[0])
    np.testing.assert_array_equal(out[1:5], [np.inf, 0.0, 1.0, 1.0])
    np.testing.assert_array_equal(out[5:7], [np.inf, np.inf])
    assert out[7] == 0.0
    # Just inside the subnormal range: the smallest subnormal times e ** 0.5.
    assert 0 < out[8] <= 2 * info.smallest_subnormal
    np.testing.assert_array_equal(out[9:], [0.0, np.inf])


def test_exp_in_the_subnormal_range_is_within_one_ulp():
    for dtype, low, high in [(np.float32, -104.0, -87.0), (np.float64, -745.0, -708.0)]:
        x = np.linspace(low, high, 20_001, dtype=dtype)

        out, err = exp_ulp_errors(dtype, x)

        assert (out[x < high - 1] < np.finfo(dtype).tiny).any()
        assert err.max() <= 1.0


def test_log_is_within_one_ulp_and_keeps_the_specials():
    bits = np.arange(0, 2**32, 997, dtype=np.uint64).astype(np.uint32)
    specials = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 1.0, -1.0, 1e-45])
    x = np.concatenate([bits.view(np.float32), specials.astype(np.float32)])
    out = np.empty_like(x)
    log_array(x, out)

    with np.errstate(divide="ignore", invalid="ignore"):
        exact = np.log(x.astype(np.longdouble))
        expected = np.log(x)
    finite = np.isfinite(exact)
    ulp = np.spacing(np.abs(exact[finite]).astype(np.float32)).astype(np.longdouble)
    err = np.abs(out[finite].astype(np.longdouble) - exact[finite]) / ulp
    assert err.max() <= 1.0
    np.testing.assert_array_equal(out[~finite], expected[~finite])

    x64 = np.concatenate([np.geomspace(1e-300, 1e300, 1001), specials])
    out64 = np.empty_like(x64)
    log_array(x64, out64)
    with np.errstate(divide="ignore", invalid="ignore"):
        np.testing.assert_array_equal(out64, np.log(x64))


@pytest.mark.parametrize("k", [10, 100])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.2])
def test_cross_entropy_kernel_parallel_compile_is_thread_count_independent(
    rng, k, label_smoothing, two_thread_counts
):
    # The functional wrapper runs small calls on one thread: compare the
    # compiles directly, over several blocks of rows. The parallel compile gives
    # the same bits for every thread count. The serial twin agrees to rounding
    # only: LLVM may vectorise the row sums of two compiles differently (a
    # parallel kernel loaded from Numba's cache does not always sum as the same
    # kernel freshly compiled).
    n = 3 * BLOCK_ELEMENTS // k + 7
    logits = (rng.normal(size=(n, k)) * 4).astype(np.float32)
    target = rng.integers(0, k, size=n)
    scale = np.full(1, 1.0 / n, np.float32)

    def run(kernel):
        losses, totals = np.empty(n, np.float32), np.empty(n, np.float32)
        grad = np.empty_like(logits)
        kernel(logits, target, label_smoothing, scale, True, losses, totals, grad)
        return losses, grad

    serial = run(cross_entropy_index_rows.serial)
    results = []
    for threads in two_thread_counts:
        fastcnn.set_num_threads(threads)
        results.append(run(cross_entropy_index_rows.parallel))

    for losses, grad in results[1:]:
        np.testing.assert_array_equal(losses, results[0][0])
        np.testing.assert_array_equal(grad, results[0][1])
    assert_close(results[0][0], serial[0], np.float32)
    assert_close(results[0][1], serial[1], np.float32)
    expected = R.cross_entropy(logits, target, "none", label_smoothing)
    assert_close(serial[0], expected, np.float32)
    assert_close(results[0][0], expected, np.float32)


@pytest.mark.parametrize("k", [10, 100])
def test_long_and_short_rows_propagate_nan_and_ignore_minus_inf(rng, k):
    # Rows of 100 take their maximum with maxnum, which skips a NaN: the NaN must
    # still reach the whole row, and only that row.
    logits = rng.normal(size=(3, k))
    logits[0, k // 2] = np.nan
    logits[1, k // 3] = -np.inf
    target = np.array([1, 1, 2])

    loss, grad = F.cross_entropy_with_grad(logits, target, "none")
    probs = F.softmax(logits)
    log_probs = F.log_softmax(logits)

    for row_result in (grad, probs, log_probs):
        assert np.isnan(row_result[0]).all()
        assert not np.isnan(row_result[1:]).any()
    assert np.isnan(loss[0]) and np.isfinite(loss[1:]).all()
    assert probs[1, k // 3] == 0.0 and grad[1, k // 3] == 0.0
    assert_close(loss[1:], R.cross_entropy(logits[1:], target[1:], "none"))


# ---------------------------------------------------------------- workspace


WORKSPACE_CALLS = {
    "softmax": lambda x, t, ws: (F.softmax(x, 0, workspace=ws),),
    "log_softmax": lambda x, t, ws: (F.log_softmax(x, workspace=ws),),
    "softmax_backward": lambda x, t, ws: (
        F.softmax_backward(x, F.softmax(x, 0), 0, workspace=ws),
    ),
    "log_softmax_backward": lambda x, t, ws: (
        F.log_softmax_backward(x, F.log_softmax(x), workspace=ws),
    ),
    "cross_entropy": lambda x, t, ws: (F.cross_entropy(x, t, "none", workspace=ws),),
    "cross_entropy_backward": lambda x, t, ws: (
        F.cross_entropy_backward(x, t.astype(np.int32), "sum", workspace=ws),
    ),
    "cross_entropy_with_grad": lambda x, t, ws: F.cross_entropy_with_grad(
        x, t, label_smoothing=0.1, workspace=ws
    ),
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("op", list(WORKSPACE_CALLS))
def test_workspace_results_equal_fresh_ones_and_reuse_memory(rng, dtype, op):
    call = WORKSPACE_CALLS[op]
    x = rng.normal(size=(12, 7)).astype(dtype)
    t = rng.integers(0, 7, size=12)
    ws = F.Workspace()

    expected = call(x, t, None)
    first = call(x, t, ws)
    for a, b in zip(expected, first, strict=True):
        np.testing.assert_array_equal(a, b)
    held = ws.nbytes
    second = call(x * 2, t, ws)

    assert held > 0
    assert ws.nbytes == held
    for a, b, c in zip(first, second, call(x * 2, t, None), strict=True):
        np.testing.assert_array_equal(b, c)
        if a.ndim > 0:
            assert np.shares_memory(a, b)


@pytest.mark.parametrize("op", list(WORKSPACE_CALLS))
def test_workspace_serves_a_smaller_batch_after_a_larger(rng, op):
    call = WORKSPACE_CALLS[op]
    x = rng.normal(size=(40, 9))
    t = rng.integers(0, 9, size=40)
    ws = F.Workspace()
    call(x, t, ws)
    held = ws.nbytes

    small = call(x[:5], t[:5], ws)

    assert ws.nbytes == held
    for a, b in zip(small, call(x[:5], t[:5], None), strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("op", list(WORKSPACE_CALLS))
def test_workspace_of_the_wrong_type_raises_type_error(op):
    with pytest.raises(TypeError, match="workspace must be"):
        WORKSPACE_CALLS[op](np.ones((2, 3)), np.array([0, 2]), {})


def test_cross_entropy_forward_and_backward_keep_their_arrays_apart(rng):
    # One workspace for the loss, the gradient and a later loss: the gradient
    # must not be overwritten by the forward-only call.
    x = rng.normal(size=(6, 4))
    t = rng.integers(0, 4, size=6)
    ws = F.Workspace()
    grad = F.cross_entropy_backward(x, t, workspace=ws)
    kept = grad.copy()

    F.cross_entropy(x * 3, t, workspace=ws)
    F.cross_entropy_with_grad(x * 5, t, workspace=ws)

    np.testing.assert_array_equal(grad, kept)


# ------------------------------------------------------------------ errors

X = np.zeros((2, 3))
IDX = np.array([0, 2])

SOFTMAX_ERRORS = [
    (lambda: F.softmax([1.0, 2.0]), TypeError, "x"),
    (lambda: F.softmax(np.zeros(3, np.int64)), TypeError, "x"),
    (lambda: F.softmax(np.array(1.0)), ValueError, "x"),
    (lambda: F.softmax(X, 2), ValueError, "axis"),
    (lambda: F.log_softmax(X, -3), ValueError, "axis"),
    (lambda: F.log_softmax(X, 1.0), TypeError, "axis"),
    (lambda: F.softmax_backward(X, np.zeros((3, 2))), ValueError, "grad_output"),
    (lambda: F.softmax_backward(X.astype(np.float32), X), TypeError, "grad_output"),
    (lambda: F.log_softmax_backward(X, "y"), TypeError, "y_log"),
    (lambda: F.log_softmax_backward(X, X, axis=5), ValueError, "axis"),
]

CE_ERRORS = [
    (lambda: F.cross_entropy(np.zeros((2, 3, 4)), IDX), ValueError, "logits"),
    (lambda: F.cross_entropy(np.zeros(()), 0), ValueError, "logits"),
    (lambda: F.cross_entropy(np.zeros((2, 0)), IDX), ValueError, "logits"),
    (lambda: F.cross_entropy(X.astype(np.int32), IDX), TypeError, "logits"),
    (lambda: F.cross_entropy(X, np.array([0, 1, 2])), ValueError, "target"),
    (lambda: F.cross_entropy(X, np.array([[0, 1]])), ValueError, "target"),
    (lambda: F.cross_entropy(X, np.array([0, 3])), ValueError, "target.*3"),
    (lambda: F.cross_entropy(X, np.array([-1, 0])), ValueError, "target.*-1"),
    (lambda: F.cross_entropy(X, np.zeros((2, 4))), ValueError, "target"),
    (lambda: F.cross_entropy(X, np.zeros(2)), TypeError, "integer dtype"),
    (lambda: F.cross_entropy(X, np.zeros((2, 3), np.float32)), TypeError, "target"),
    (lambda: F.cross_entropy(X, np.array([True, False])), TypeError, "target"),
    (lambda: F.cross_entropy(X, np.zeros(2, complex)), TypeError, "target"),
    (lambda: F.cross_entropy(X, [0, 1]), TypeError, "target"),
    (lambda: F.cross_entropy(X, 1), ValueError, "target"),
    (lambda: F.cross_entropy(np.zeros(3), True), TypeError, "target"),
    (lambda: F.cross_entropy(np.zeros(3), 3), ValueError, "target.*3"),
    (lambda: F.cross_entropy(X, IDX, "avg"), ValueError, "reduction"),
    (lambda: F.cross_entropy(X, IDX, None), ValueError, "reduction"),
    (lambda: F.cross_entropy(X, IDX, "mean", 1.5), ValueError, "label_smoothing"),
    (lambda: F.cross_entropy(X, IDX, "mean", -0.1), ValueError, "label_smoothing"),
    (lambda: F.cross_entropy(X, IDX, "mean", "0.1"), TypeError, "label_smoothing"),
    (
        lambda: F.cross_entropy_with_grad(X, IDX, label_smoothing=np.nan),
        ValueError,
        "label_smoothing",
    ),
    (
        lambda: F.cross_entropy_backward(X, IDX, "mean", 0.0, np.ones(2)),
        ValueError,
        "grad_output",
    ),
    (
        lambda: F.cross_entropy_backward(X, IDX, "none", 0.0, np.ones(3)),
        ValueError,
        "grad_output",
    ),
    (
        lambda: F.cross_entropy_backward(X, IDX, "none", 0.0, np.ones(2, np.float32)),
        TypeError,
        "grad_output",
    ),
    (
        lambda: F.cross_entropy_backward(X, IDX, "sum", 0.0, "1"),
        TypeError,
        "grad_output",
    ),
]


@pytest.mark.parametrize(("call", "error", "match"), SOFTMAX_ERRORS + CE_ERRORS)
def test_bad_arguments_raise_naming_the_argument(call, error, match):
    with pytest.raises(error, match=match):
        call()
