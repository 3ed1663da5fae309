"""Tests for fastcnn.functional.pooling against references, PyTorch and edge cases."""

from __future__ import annotations

import numba
import numpy as np
import pytest
from conftest import assert_close
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from fastcnn.functional import Workspace
from fastcnn.functional import pooling as F
from fastcnn.kernels import pooling as kernels
from fastcnn.reference import pooling as R

DTYPES = [np.float32, np.float64]
OPS = ["max", "avg"]

# (kernel_size, stride, padding): overlapping, rectangular, padded, strided
# windows, and kernels of 5 and 7 whose reduction passes overlap.
WINDOWS = [
    (1, None, 0),
    (2, None, 0),
    (2, 1, 1),
    (3, 1, 1),
    (3, 2, 1),
    ((2, 3), (1, 2), (1, 0)),
    ((3, 2), (2, 3), (0, 1)),
    (4, 3, 2),
    (5, 2, 2),
    ((7, 1), 1, (3, 0)),
]


def forward(op: str, x, kernel_size, stride=None, padding=0, ceil_mode=False):
    """The fastcnn forward of ``op`` with ``count_include_pad`` left at its default."""
    if op == "max":
        return F.max_pool2d_forward(x, kernel_size, stride, padding, ceil_mode)
    return F.avg_pool2d_forward(x, kernel_size, stride, padding, ceil_mode)


def backward(op: str, grad_output, ctx):
    if op == "max":
        return F.max_pool2d_backward(grad_output, ctx)
    return F.avg_pool2d_backward(grad_output, ctx)


def numeric_grad(objective, x: np.ndarray, h: float = 1e-6) -> np.ndarray:
    """Central finite differences of the scalar ``objective`` at float64 ``x``."""
    grad = np.empty_like(x)
    for index in np.ndindex(x.shape):
        plus, minus = x.copy(), x.copy()
        plus[index] += h
        minus[index] -= h
        grad[index] = (objective(plus) - objective(minus)) / (2 * h)
    return grad


def distinct_values(rng, shape) -> np.ndarray:
    """Float64 input whose elements differ by at least 0.01 (no ties)."""
    size = int(np.prod(shape))
    return (rng.permutation(size) * 0.01 - size * 0.005).reshape(shape)


# ---------------------------------------------------------------- references


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("ceil_mode", [False, True])
@pytest.mark.parametrize(("kernel_size", "stride", "padding"), WINDOWS)
def test_max_pool2d_matches_reference(
    rng, kernel_size, stride, padding, ceil_mode, dtype
):
    x = rng.normal(size=(2, 3, 9, 10)).astype(dtype)

    y, ctx = F.max_pool2d_forward(x, kernel_size, stride, padding, ceil_mode)
    g = rng.normal(size=y.shape).astype(dtype)
    grad_input = F.max_pool2d_backward(g, ctx)

    expected = R.max_pool2d(x, kernel_size, stride, padding, ceil_mode)
    np.testing.assert_array_equal(y, expected.astype(dtype))
    assert y.dtype == dtype
    expected_grad = R.max_pool2d_backward(g, x, kernel_size, stride, padding, ceil_mode)
    assert_close(grad_input, expected_grad, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("count_include_pad", [True, False])
@pytest.mark.parametrize("ceil_mode", [False, True])
@pytest.mark.parametrize(("kernel_size", "stride", "padding"), WINDOWS)
def test_avg_pool2d_matches_reference(
    rng, kernel_size, stride, padding, ceil_mode, count_include_pad, dtype
):
    x = rng.normal(size=(2, 3, 9, 10)).astype(dtype)
    args = (kernel_size, stride, padding, ceil_mode, count_include_pad)

    y, ctx = F.avg_pool2d_forward(x, *args)
    g = rng.normal(size=y.shape).astype(dtype)
    grad_input = F.avg_pool2d_backward(g, ctx)

    assert_close(y, R.avg_pool2d(x, *args), dtype)
    assert_close(grad_input, R.avg_pool2d_backward(g, x.shape, *args), dtype)


def test_public_forward_is_first_output_of_forward_pair(rng):
    x = rng.normal(size=(2, 2, 6, 7))

    np.testing.assert_array_equal(
        F.max_pool2d(x, 3, 2, 1, True), F.max_pool2d_forward(x, 3, 2, 1, True)[0]
    )
    np.testing.assert_array_equal(
        F.avg_pool2d(x, 3, 2, 1, True, False),
        F.avg_pool2d_forward(x, 3, 2, 1, True, False)[0],
    )


def test_reference_avg_backward_accepts_the_input_or_its_shape(rng):
    x = rng.normal(size=(1, 2, 5, 5))
    g = rng.normal(size=(1, 2, 2, 2))

    np.testing.assert_array_equal(
        R.avg_pool2d_backward(g, x, 2), R.avg_pool2d_backward(g, x.shape, 2)
    )


def test_max_kernel_writes_int64_indices_like_int32(rng):
    """Planes too large for int32 get int64 indices; the kernel accepts both."""
    x = rng.normal(size=(3, 8, 9))
    results = []
    for index_dtype in (np.int32, np.int64):
        y = np.empty((3, 4, 5))
        indices = np.empty((3, 4, 5), dtype=index_dtype)
        kernels.max_pool2d_forward(x, 3, 3, 2, 2, 1, 1, y, indices, 2)
        results.append((y, indices))

    np.testing.assert_array_equal(results[0][0], results[1][0])
    np.testing.assert_array_equal(results[0][1], results[1][1])
    np.testing.assert_array_equal(results[0][0], R.max_pool2d(x[None], 3, 2, 1)[0])


# ---------------------------------------------------------------- semantics


@pytest.mark.parametrize(
    ("kernel_size", "stride", "padding"), [(2, 2, 0), (3, 1, 0), (3, 2, 1), (2, 1, 1)]
)
def test_max_ties_send_gradient_to_first_element_of_window(
    kernel_size, stride, padding
):
    x = np.full((1, 1, 6, 7), 3.0)

    y, ctx = F.max_pool2d_forward(x, kernel_size, stride, padding)
    grad_input = F.max_pool2d_backward(np.ones_like(y), ctx)

    expected = np.zeros_like(x)
    for oh in range(y.shape[2]):
        for ow in range(y.shape[3]):
            ih = max(oh * stride - padding, 0)
            iw = max(ow * stride - padding, 0)
            expected[0, 0, ih, iw] += 1.0
    np.testing.assert_array_equal(grad_input, expected)
    np.testing.assert_array_equal(y, np.full_like(y, 3.0))


@pytest.mark.parametrize("op", OPS)
def test_elements_no_window_covers_get_zero_gradient(rng, op):
    # 7 x 7 with kernel 2 and stride 3: rows and columns 2 and 5 fall between
    # windows, row and column 6 lie past the last one.
    x = rng.normal(size=(2, 2, 7, 7)) + 10.0

    y, ctx = forward(op, x, 2, 3)
    g = rng.normal(size=y.shape)
    grad_input = backward(op, g, ctx)

    uncovered = np.ones((7, 7), dtype=bool)
    for row in (0, 3):
        for col in (0, 3):
            uncovered[row : row + 2, col : col + 2] = False
    assert y.shape == (2, 2, 2, 2)
    assert np.all(grad_input[:, :, uncovered] == 0.0)
    # Each window passes on its whole gradient, to one element or spread evenly.
    assert_close(grad_input.sum(axis=(2, 3)), g.sum(axis=(2, 3)))


@pytest.mark.parametrize("dtype", DTYPES)
def test_max_padding_never_wins(dtype):
    x = np.full((1, 2, 4, 5), -1e30, dtype=dtype)
    x[0, 1] = -np.inf

    y, ctx = F.max_pool2d_forward(x, 3, 2, 1)
    grad_input = F.max_pool2d_backward(np.ones_like(y), ctx)

    np.testing.assert_array_equal(y[0, 0], np.full(y.shape[2:], dtype(-1e30)))
    # An all -inf input may give -inf, but the gradient still reaches the input.
    np.testing.assert_array_equal(y[0, 1], np.full(y.shape[2:], -np.inf))
    assert grad_input.sum() == y.size


@pytest.mark.parametrize("dtype", DTYPES)
def test_nan_propagates_to_every_window_holding_it(rng, dtype):
    x = rng.normal(size=(1, 1, 6, 6)).astype(dtype)
    x[0, 0, 2, 3] = np.nan

    y_max, ctx = F.max_pool2d_forward(x, 3, 1)
    y_avg = F.avg_pool2d(x, 3, 1)
    grad_input = F.max_pool2d_backward(np.ones_like(y_max), ctx)

    holds_nan = np.zeros((4, 4), dtype=bool)
    holds_nan[0:3, 1:4] = True
    assert np.all(np.isnan(y_max[0, 0][holds_nan]))
    assert not np.any(np.isnan(y_max[0, 0][~holds_nan]))
    np.testing.assert_array_equal(np.isnan(y_avg[0, 0]), holds_nan)
    # Every window holding the NaN routes its gradient to it.
    assert grad_input[0, 0, 2, 3] == holds_nan.sum()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    ("kernel_size", "stride", "padding", "ceil_mode"),
    [(2, 2, 0, False), (3, 1, 1, False), (3, 2, 1, True)],
)
def test_non_finite_values_match_reference(
    rng, kernel_size, stride, padding, ceil_mode, dtype
):
    # Planes holding NaN or infinity take another path than finite ones.
    x = np.round(rng.normal(size=(2, 3, 7, 8)), 1)
    x[0, 0, 3, 4] = np.inf
    x[0, 1, 0, 0] = -np.inf
    x[1, 0, 2, 2] = x[1, 0, 5, 1] = np.nan
    x[1, 2] = -np.inf
    x = x.astype(dtype)
    args = (kernel_size, stride, padding, ceil_mode)

    y, ctx = F.max_pool2d_forward(x, *args)
    g = rng.normal(size=y.shape).astype(dtype)

    np.testing.assert_array_equal(y, R.max_pool2d(x, *args).astype(dtype))
    assert_close(
        F.max_pool2d_backward(g, ctx), R.max_pool2d_backward(g, x, *args), dtype
    )
    assert_close(F.avg_pool2d(x, *args), R.avg_pool2d(x, *args), dtype)


def test_max_gradient_goes_to_last_nan_of_window():
    x = np.zeros((1, 1, 2, 2))
    x[0, 0, 0, 1] = np.nan
    x[0, 0, 1, 0] = np.nan

    y, ctx = F.max_pool2d_forward(x, 2)
    grad_input = F.max_pool2d_backward(np.ones_like(y), ctx)

    assert np.isnan(y[0, 0, 0, 0])
    np.testing.assert_array_equal(grad_input[0, 0], [[0.0, 0.0], [1.0, 0.0]])


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_unbatched_input_matches_batch_of_one(rng, op, dtype):
    x = rng.normal(size=(3, 7, 6)).astype(dtype)

    y, ctx = forward(op, x, 3, 2, 1, True)
    g = rng.normal(size=y.shape).astype(dtype)
    grad_input = backward(op, g, ctx)
    y_batched, ctx_batched = forward(op, x[None], 3, 2, 1, True)

    assert y.shape == y_batched.shape[1:]
    np.testing.assert_array_equal(y, y_batched[0])
    np.testing.assert_array_equal(grad_input, backward(op, g[None], ctx_batched)[0])
    assert grad_input.shape == x.shape
    assert grad_input.dtype == dtype


@pytest.mark.parametrize("op", OPS)
def test_empty_batch_gives_empty_output_and_gradient(op):
    x = np.empty((0, 3, 8, 8), dtype=np.float32)

    y, ctx = forward(op, x, 2)
    grad_input = backward(op, np.empty_like(y), ctx)

    assert y.shape == (0, 3, 4, 4)
    assert y.dtype == np.float32
    assert grad_input.shape == x.shape


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize(
    "view",
    [
        lambda a: a[:, :, ::-1, :],
        lambda a: a[:, :, :, ::2],
        lambda a: a.transpose(0, 1, 3, 2),
        lambda a: a[::2, 1:],
    ],
)
def test_non_contiguous_views_match_contiguous_copies(rng, op, view):
    base = rng.normal(size=(4, 3, 10, 12))
    x = view(base)
    assert not x.flags.c_contiguous

    y, ctx = forward(op, x, 3, 2, 1)
    g = rng.normal(size=y.shape)
    y_copy, ctx_copy = forward(op, np.ascontiguousarray(x), 3, 2, 1)

    np.testing.assert_array_equal(y, y_copy)
    g_view = np.swapaxes(np.swapaxes(g, 2, 3).copy(), 2, 3)
    np.testing.assert_array_equal(backward(op, g_view, ctx), backward(op, g, ctx_copy))


def test_output_dtype_follows_input_dtype(rng):
    x = rng.normal(size=(1, 2, 6, 6)).astype(np.float32)

    for op in OPS:
        y, ctx = forward(op, x, 2)
        assert y.dtype == np.float32
        assert backward(op, np.ones_like(y), ctx).dtype == np.float32


# ---------------------------------------------------------------- gradients


@pytest.mark.parametrize("count_include_pad", [True, False])
@pytest.mark.parametrize(
    ("kernel_size", "stride", "padding", "ceil_mode"),
    [(2, 2, 0, False), (3, 2, 1, True), ((2, 3), 1, (1, 1), False)],
)
def test_avg_gradient_matches_finite_differences(
    rng, kernel_size, stride, padding, ceil_mode, count_include_pad
):
    x = rng.normal(size=(1, 2, 5, 6))
    args = (kernel_size, stride, padding, ceil_mode, count_include_pad)
    y, ctx = F.avg_pool2d_forward(x, *args)
    g = rng.normal(size=y.shape)

    numeric = numeric_grad(lambda v: float(np.sum(g * F.avg_pool2d(v, *args))), x)

    assert_close(F.avg_pool2d_backward(g, ctx), numeric, scale=1e3)


@pytest.mark.parametrize(
    ("kernel_size", "stride", "padding", "ceil_mode"),
    [(2, 2, 0, False), (3, 1, 1, False), (3, 2, 1, True), ((3, 2), (1, 2), 1, True)],
)
def test_max_gradient_matches_finite_differences_away_from_ties(
    rng, kernel_size, stride, padding, ceil_mode
):
    x = distinct_values(rng, (1, 2, 5, 6))
    args = (kernel_size, stride, padding, ceil_mode)
    y, ctx = F.max_pool2d_forward(x, *args)
    g = rng.normal(size=y.shape)

    numeric = numeric_grad(lambda v: float(np.sum(g * F.max_pool2d(v, *args))), x)

    assert_close(F.max_pool2d_backward(g, ctx), numeric, scale=1e3)


@st.composite
def pool_problems(draw):
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    window = {
        "kernel_size": (kh, kw),
        "stride": draw(st.one_of(st.none(), st.tuples(*[st.integers(1, 4)] * 2))),
        "padding": (draw(st.integers(0, kh // 2)), draw(st.integers(0, kw // 2))),
        "ceil_mode": draw(st.booleans()),
    }
    shape = (
        draw(st.integers(0, 2)),
        draw(st.integers(1, 3)),
        draw(st.integers(1, 11)),
        draw(st.integers(1, 11)),
    )
    stride = window["stride"] or window["kernel_size"]
    for size, k, s, p in zip(
        shape[2:], window["kernel_size"], stride, window["padding"], strict=True
    ):
        span = size + 2 * p - k + (s - 1 if window["ceil_mode"] else 0)
        assume(span >= 0)
    count_include_pad, non_finite = draw(st.booleans()), draw(st.booleans())
    return shape, window, count_include_pad, non_finite, draw(st.integers(0, 2**32 - 1))


@settings(max_examples=30)
@given(problem=pool_problems())
def test_pooling_hypothesis_shapes_and_windows(problem):
    shape, window, count_include_pad, non_finite, seed = problem
    rng = np.random.default_rng(seed)
    x = np.round(rng.normal(size=shape), 1)  # rounded: ties happen too
    if non_finite and x.size > 0:
        x.flat[rng.integers(0, x.size, size=3)] = [np.nan, np.inf, -np.inf]
    args = tuple(window.values())

    y, ctx = F.max_pool2d_forward(x, *args)
    g = rng.normal(size=y.shape)
    np.testing.assert_array_equal(y, R.max_pool2d(x, *args))
    assert_close(F.max_pool2d_backward(g, ctx), R.max_pool2d_backward(g, x, *args))

    y, ctx = F.avg_pool2d_forward(x, *args, count_include_pad)
    assert_close(y, R.avg_pool2d(x, *args, count_include_pad))
    assert_close(
        F.avg_pool2d_backward(g, ctx),
        R.avg_pool2d_backward(g, x.shape, *args, count_include_pad),
    )


# ---------------------------------------------------------------- PyTorch

TORCH_CASES = [
    # (input shape, kernel_size, stride, padding, ceil_mode)
    ((2, 3, 8, 8), 2, None, 0, False),
    ((2, 3, 7, 9), 3, 2, 1, True),
    ((1, 2, 5, 5), 2, 2, 0, True),  # ceil_mode adds a clipped last window
    ((1, 2, 6, 6), 3, 3, 1, True),  # a window starting in the right padding
    ((1, 1, 1, 1), 2, 2, 0, True),  # window larger than the input
    ((1, 1, 4, 4), 3, 2, 1, False),
    ((2, 2, 9, 6), (3, 1), (2, 1), (1, 0), True),
    ((1, 3, 10, 10), 4, 1, 2, False),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    ("shape", "kernel_size", "stride", "padding", "ceil_mode"), TORCH_CASES
)
def test_max_pool2d_agrees_with_torch(
    torch, rng, shape, kernel_size, stride, padding, ceil_mode, dtype
):
    # Rounded values give ties, which must be broken as PyTorch breaks them.
    x = np.round(rng.normal(size=shape), 1).astype(dtype)
    xt = torch.tensor(x, requires_grad=True)
    yt = torch.nn.functional.max_pool2d(xt, kernel_size, stride, padding, 1, ceil_mode)
    g = rng.normal(size=tuple(yt.shape)).astype(dtype)
    yt.backward(torch.tensor(g))

    y, ctx = F.max_pool2d_forward(x, kernel_size, stride, padding, ceil_mode)

    np.testing.assert_array_equal(y, yt.detach().numpy())
    assert_close(
        F.max_pool2d_backward(g, ctx), xt.grad.numpy().astype(np.float64), dtype
    )


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("count_include_pad", [True, False])
@pytest.mark.parametrize(
    ("shape", "kernel_size", "stride", "padding", "ceil_mode"), TORCH_CASES
)
def test_avg_pool2d_agrees_with_torch(
    torch, rng, shape, kernel_size, stride, padding, ceil_mode, count_include_pad, dtype
):
    x = rng.normal(size=shape).astype(dtype)
    args = (kernel_size, stride, padding, ceil_mode, count_include_pad)
    xt = torch.tensor(x, requires_grad=True)
    yt = torch.nn.functional.avg_pool2d(xt, *args)
    g = rng.normal(size=tuple(yt.shape)).astype(dtype)
    yt.backward(torch.tensor(g))

    y, ctx = F.avg_pool2d_forward(x, *args)

    assert_close(y, yt.detach().numpy().astype(np.float64), dtype)
    assert_close(
        F.avg_pool2d_backward(g, ctx), xt.grad.numpy().astype(np.float64), dtype
    )


def test_max_pool2d_nan_gradient_agrees_with_torch(torch, rng):
    x = rng.normal(size=(1, 2, 6, 6))
    x[0, 0, 1, 1] = x[0, 0, 2, 2] = x[0, 1, 3, 0] = np.nan
    xt = torch.tensor(x, requires_grad=True)
    yt = torch.nn.functional.max_pool2d(xt, 3, 1, 1)
    yt.backward(torch.ones_like(yt))

    y, ctx = F.max_pool2d_forward(x, 3, 1, 1)

    np.testing.assert_array_equal(y, yt.detach().numpy())
    np.testing.assert_array_equal(
        F.max_pool2d_backward(np.ones_like(y), ctx), xt.grad.numpy()
    )


# ---------------------------------------------------------------- threads


@pytest.mark.parametrize("op", OPS)
def test_results_do_not_depend_on_thread_count(rng, op):
    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("needs at least 2 Numba threads")
    x = rng.normal(size=(3, 5, 13, 11)).astype(np.float32)
    g = rng.normal(size=(3, 5, 13, 11)).astype(np.float32)
    original = numba.get_num_threads()
    results = []
    try:
        for threads in (1, 2):
            numba.set_num_threads(threads)
            y, ctx = forward(op, x, 3, 1, 1)
            results.append((y, backward(op, g, ctx)))
    finally:
        numba.set_num_threads(original)

    for first, second in zip(results[0], results[1], strict=True):
        np.testing.assert_array_equal(first, second)


# ---------------------------------------------------------------- 2x2, stride 2

# (input shape, ceil_mode): even heights and widths take the 2x2 kernels; one
# output column, wide rows, and more output rows than one chunk of the kernels.
HALVING_CASES = [
    ((2, 3, 8, 6), False),
    ((2, 3, 8, 6), True),
    ((1, 2, 4, 2), False),
    ((3, 2, 6, 84), False),
    ((3, 5, 64, 50), False),
]


def halving_input(rng, shape, dtype) -> np.ndarray:
    """Rounded values (ties happen), with NaN, inf and -inf in the first plane."""
    x = np.round(rng.normal(size=shape), 1)
    x[0, 0, 0, 1] = np.nan
    x[0, 0, 1, 0] = np.nan
    x[0, 0, -1, -1] = np.inf
    x[0, 0, -2, 0] = -np.inf
    return x.astype(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("shape", "ceil_mode"), HALVING_CASES)
def test_2x2_max_pool2d_matches_reference(rng, shape, ceil_mode, dtype):
    x = halving_input(rng, shape, dtype)

    y, ctx = F.max_pool2d_forward(x, 2, 2, 0, ceil_mode)
    g = rng.normal(size=y.shape).astype(dtype)
    grad_input = F.max_pool2d_backward(g, ctx)

    assert ctx.window.halves
    np.testing.assert_array_equal(y, R.max_pool2d(x, 2, 2, 0, ceil_mode).astype(dtype))
    assert y.dtype == grad_input.dtype == dtype
    expected_grad = R.max_pool2d_backward(g, x, 2, 2, 0, ceil_mode)
    assert_close(grad_input, expected_grad, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("count_include_pad", [True, False])
@pytest.mark.parametrize(("shape", "ceil_mode"), HALVING_CASES)
def test_2x2_avg_pool2d_matches_reference(
    rng, shape, ceil_mode, count_include_pad, dtype
):
    x = rng.normal(size=shape).astype(dtype)
    args = (2, 2, 0, ceil_mode, count_include_pad)

    y, ctx = F.avg_pool2d_forward(x, *args)
    g = rng.normal(size=y.shape).astype(dtype)
    grad_input = F.avg_pool2d_backward(g, ctx)

    assert ctx.window.halves
    assert_close(y, R.avg_pool2d(x, *args), dtype)
    assert_close(grad_input, R.avg_pool2d_backward(g, x.shape, *args), dtype)
    assert y.dtype == grad_input.dtype == dtype


@pytest.mark.parametrize("dtype", DTYPES)
def test_2x2_max_pool2d_agrees_with_torch(torch, rng, dtype):
    x = halving_input(rng, (3, 4, 12, 10), dtype)
    x[1] = np.round(x[1])  # many ties
    xt = torch.tensor(x, requires_grad=True)
    yt = torch.nn.functional.max_pool2d(xt, 2)
    g = rng.normal(size=tuple(yt.shape)).astype(dtype)
    yt.backward(torch.tensor(g))

    y, ctx = F.max_pool2d_forward(x, 2)

    np.testing.assert_array_equal(y, yt.detach().numpy())
    np.testing.assert_array_equal(F.max_pool2d_backward(g, ctx), xt.grad.numpy())


@pytest.mark.parametrize("dtype", DTYPES)
def test_2x2_avg_pool2d_agrees_with_torch(torch, rng, dtype):
    x = rng.normal(size=(3, 4, 12, 10)).astype(dtype)
    xt = torch.tensor(x, requires_grad=True)
    yt = torch.nn.functional.avg_pool2d(xt, 2)
    g = rng.normal(size=tuple(yt.shape)).astype(dtype)
    yt.backward(torch.tensor(g))

    y, ctx = F.avg_pool2d_forward(x, 2)

    assert_close(y, yt.detach().numpy().astype(np.float64), dtype)
    assert_close(
        F.avg_pool2d_backward(g, ctx), xt.grad.numpy().astype(np.float64), dtype
    )


@pytest.mark.parametrize(
    ("window", "spot"),
    [([[3.0, 3.0], [3.0, 3.0]], (0, 0)), ([[1.0, 5.0], [5.0, 5.0]], (0, 1))],
)
def test_2x2_max_ties_send_gradient_to_first_maximum(window, spot):
    # Guards against the rows of a window being compared before its columns.
    x = np.tile(np.array(window), (2, 3, 2, 2))

    y, ctx = F.max_pool2d_forward(x, 2)
    grad_input = F.max_pool2d_backward(np.ones_like(y), ctx)

    expected = np.zeros((2, 2))
    expected[spot] = 1.0
    np.testing.assert_array_equal(grad_input, np.tile(expected, (2, 3, 2, 2)))


@pytest.mark.parametrize("dtype", DTYPES)
def test_2x2_max_gradient_goes_to_last_nan_and_nan_wins(dtype):
    x = np.zeros((1, 1, 2, 4), dtype)
    x[0, 0, 0, 0] = x[0, 0, 1, 0] = np.nan  # window 0: two NaNs
    x[0, 0, 0, 3] = np.nan  # window 1: a NaN before a larger number
    x[0, 0, 1, 2] = 7.0

    y, ctx = F.max_pool2d_forward(x, 2)
    grad_input = F.max_pool2d_backward(np.ones_like(y), ctx)

    assert np.isnan(y).all()
    np.testing.assert_array_equal(grad_input[0, 0], [[0, 0, 0, 1], [1, 0, 0, 0]])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("op", OPS)
def test_2x2_results_do_not_depend_on_thread_count(rng, op, dtype):
    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("needs at least 2 Numba threads")
    # Large enough for the parallel kernels.
    x = np.round(rng.normal(size=(2, 8, 256, 256)), 1).astype(dtype)
    assert x.size >= kernels.SERIAL_WORK_2X2
    g = rng.normal(size=(2, 8, 128, 128)).astype(dtype)
    original = numba.get_num_threads()
    results = []
    try:
        for threads in (1, 2):
            numba.set_num_threads(threads)
            y, ctx = forward(op, x, 2)
            results.append((y, backward(op, g, ctx)))
    finally:
        numba.set_num_threads(original)

    for first, second in zip(results[0], results[1], strict=True):
        np.testing.assert_array_equal(first, second)


@pytest.mark.parametrize("dtype", DTYPES)
def test_2x2_kernels_do_not_depend_on_the_blocks(rng, dtype):
    # Guards against chunks computed differently (vectorised or not) depending
    # on where a thread's block of output rows starts.
    x = rng.normal(size=(7, 30, 22)).astype(dtype)
    g = rng.normal(size=(7, 15, 11)).astype(dtype)
    results = []
    for blocks in (1, 2, 3, 8):
        for kind in ("serial", "parallel"):
            y = np.empty((7, 15, 11), dtype)
            positions = np.empty((7 * 15, 2, 11), np.uint8)
            means = np.empty_like(y)
            grad_max, grad_avg = np.empty_like(x), np.empty_like(x)
            getattr(kernels.max_pool2d_2x2_forward, kind)(x, y, positions, blocks)
            getattr(kernels.max_pool2d_2x2_backward, kind)(
                g, positions, grad_max, blocks
            )
            getattr(kernels.avg_pool2d_2x2_forward, kind)(x, means, blocks)
            getattr(kernels.avg_pool2d_2x2_backward, kind)(g, grad_avg, blocks)
            results.append((y, positions[:, 0], grad_max, means, grad_avg))

    np.testing.assert_array_equal(results[0][0], R.max_pool2d(x[None], 2)[0])
    for result in results[1:]:
        for first, other in zip(results[0], result, strict=True):
            np.testing.assert_array_equal(first, other)


def test_2x2_context_keeps_two_bytes_per_output(rng):
    x = rng.normal(size=(2, 3, 8, 6)).astype(np.float32)

    _, ctx = F.max_pool2d_forward(x, 2)

    assert ctx.indices.dtype == np.uint8
    assert ctx.indices.nbytes == 2 * 2 * 3 * 4 * 3


# ---------------------------------------------------------------- workspace

# (input shape, window arguments): the 2x2 kernels and the general ones.
WORKSPACE_CASES = [((4, 3, 8, 6), (2,)), ((4, 3, 9, 7), (3, 2, 1, True))]


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize(("shape", "args"), WORKSPACE_CASES)
def test_workspace_gives_the_same_results(rng, op, shape, args):
    x = rng.normal(size=shape).astype(np.float32)
    g = rng.normal(size=forward(op, x, *args)[0].shape).astype(np.float32)
    pair = (F.max_pool2d_forward, F.max_pool2d_backward)
    if op == "avg":
        pair = (F.avg_pool2d_forward, F.avg_pool2d_backward)
    ws = Workspace()

    y, ctx = pair[0](x, *args, workspace=ws)
    grad_input = pair[1](g, ctx)
    y_fresh, ctx_fresh = pair[0](x, *args)

    np.testing.assert_array_equal(y, y_fresh)
    np.testing.assert_array_equal(grad_input, pair[1](g, ctx_fresh))
    public = F.max_pool2d if op == "max" else F.avg_pool2d
    np.testing.assert_array_equal(public(x, *args, workspace=Workspace()), y)


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize(("shape", "args"), WORKSPACE_CASES)
def test_second_call_with_a_workspace_allocates_nothing(rng, op, shape, args):
    x = rng.normal(size=shape).astype(np.float32)
    pair = (F.max_pool2d_forward, F.max_pool2d_backward)
    if op == "avg":
        pair = (F.avg_pool2d_forward, F.avg_pool2d_backward)
    ws = Workspace()

    y1, ctx1 = pair[0](x, *args, workspace=ws)
    g = np.ones_like(y1)
    grad1 = pair[1](g, ctx1)
    nbytes = ws.nbytes
    y2, ctx2 = pair[0](x + 1, *args, workspace=ws)
    grad2 = pair[1](g, ctx2)

    assert nbytes > 0
    assert ws.nbytes == nbytes
    assert np.shares_memory(y1, y2)
    assert np.shares_memory(grad1, grad2)
    assert not np.shares_memory(y2, grad2)
    if op == "max":
        assert np.shares_memory(ctx1.indices, ctx2.indices)


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize(("shape", "args"), WORKSPACE_CASES)
def test_workspace_serves_a_smaller_batch_after_a_larger(rng, op, shape, args):
    big = rng.normal(size=shape)
    small = rng.normal(size=(1, *shape[1:]))
    ws = Workspace()

    for x in (big, small):
        if op == "max":
            y, ctx = F.max_pool2d_forward(x, *args, workspace=ws)
            grad_input = F.max_pool2d_backward(np.cos(y), ctx)
            expected_grad = R.max_pool2d_backward(np.cos(y), x, *args)
            np.testing.assert_array_equal(y, R.max_pool2d(x, *args))
        else:
            y, ctx = F.avg_pool2d_forward(x, *args, workspace=ws)
            grad_input = F.avg_pool2d_backward(np.cos(y), ctx)
            expected_grad = R.avg_pool2d_backward(np.cos(y), x.shape, *args)
            assert_close(y, R.avg_pool2d(x, *args))
        assert grad_input.shape == x.shape
        assert_close(grad_input, expected_grad)


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("function", ["forward", "public"])
def test_workspace_of_wrong_type_raises(op, function):
    x = np.ones((1, 1, 4, 4))
    functions = {
        ("max", "forward"): F.max_pool2d_forward,
        ("max", "public"): F.max_pool2d,
        ("avg", "forward"): F.avg_pool2d_forward,
        ("avg", "public"): F.avg_pool2d,
    }

    with pytest.raises(TypeError, match="workspace"):
        functions[op, function](x, 2, workspace={})


# ---------------------------------------------------------------- errors

BAD_ARGUMENTS = [
    # (keyword arguments, exception, argument named in the message)
    ({"x": [[[[1.0]]]]}, TypeError, "x"),
    ({"x": np.ones((1, 1, 4, 4), dtype=np.int64)}, TypeError, "x"),
    ({"x": np.ones((4, 4))}, ValueError, "x"),
    ({"x": np.ones((1, 1, 1, 4, 4))}, ValueError, "x"),
    ({"x": np.ones((1, 0, 4, 4))}, ValueError, "x"),
    ({"x": np.ones((1, 2, 0, 4))}, ValueError, "x"),
    ({"x": np.ones((0, 4, 4))}, ValueError, "x"),
    ({"kernel_size": 0}, ValueError, "kernel_size"),
    ({"kernel_size": 1.5}, TypeError, "kernel_size"),
    ({"kernel_size": (2, 2, 2)}, ValueError, "kernel_size"),
    ({"kernel_size": 5}, ValueError, "kernel_size"),  # larger than the 4x4 input
    ({"stride": 0}, ValueError, "stride"),
    ({"stride": "2"}, TypeError, "stride"),
    ({"padding": -1}, ValueError, "padding"),
    ({"padding": (0, 2), "kernel_size": 3}, ValueError, "padding"),
    ({"padding": 1.0}, TypeError, "padding"),
    ({"ceil_mode": 1}, TypeError, "ceil_mode"),
    ({"ceil_mode": None}, TypeError, "ceil_mode"),
]


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize(("changes", "error", "name"), BAD_ARGUMENTS)
def test_bad_arguments_raise_naming_the_argument(op, changes, error, name):
    arguments = {"x": np.ones((1, 1, 4, 4)), "kernel_size": 2, **changes}
    function = F.max_pool2d if op == "max" else F.avg_pool2d

    with pytest.raises(error, match=name):
        function(**arguments)


def test_int_input_error_suggests_astype():
    with pytest.raises(TypeError, match=r"x\.astype"):
        F.max_pool2d(np.ones((1, 1, 4, 4), dtype=np.int32), 2)


def test_bad_count_include_pad_raises():
    with pytest.raises(TypeError, match="count_include_pad"):
        F.avg_pool2d(np.ones((1, 1, 4, 4)), 2, count_include_pad="yes")


@pytest.mark.parametrize("op", OPS)
def test_bad_grad_output_raises_naming_it(op):
    y, ctx = forward(op, np.ones((2, 3, 6, 6)), 2)

    with pytest.raises(ValueError, match="grad_output"):
        backward(op, np.ones((2, 3, 3, 4)), ctx)
    with pytest.raises(ValueError, match="grad_output"):
        backward(op, np.ones((3, 3, 3)), ctx)
    with pytest.raises(TypeError, match="grad_output"):
        backward(op, np.ones(y.shape, dtype=np.float32), ctx)
    with pytest.raises(TypeError, match="grad_output"):
        backward(op, y.tolist(), ctx)


def test_backward_refuses_a_context_of_another_kind():
    y, max_ctx = F.max_pool2d_forward(np.ones((1, 1, 4, 4)), 2)
    _, avg_ctx = F.avg_pool2d_forward(np.ones((1, 1, 4, 4)), 2)

    with pytest.raises(TypeError, match="ctx"):
        F.max_pool2d_backward(y, avg_ctx)
    with pytest.raises(TypeError, match="ctx"):
        F.avg_pool2d_backward(y, max_ctx)
    with pytest.raises(TypeError, match="ctx"):
        F.max_pool2d_backward(y, None)
