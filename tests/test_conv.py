"""Tests of conv2d: forward and gradients against the reference, PyTorch and errors."""

from __future__ import annotations

import numba
import numpy as np
import pytest
from conftest import assert_close
from hypothesis import given, settings
from hypothesis import strategies as st

import fastcnn.functional.conv as conv_module
from fastcnn.functional import Workspace, set_winograd
from fastcnn.functional.conv import conv2d, conv2d_backward, conv2d_forward
from fastcnn.kernels.conv_direct import conv2d_direct
from fastcnn.reference import conv as reference

# (x shape, weight shape, keyword arguments, with bias)
CASES = {
    "3x3_pad1": ((2, 3, 7, 7), (4, 3, 3, 3), {"padding": 1}, True),
    "stride2": ((2, 3, 9, 9), (4, 3, 3, 3), {"stride": 2, "padding": 1}, True),
    "stride_pair": ((2, 2, 9, 8), (3, 2, 3, 3), {"stride": (2, 1)}, True),
    "padding_pair": ((2, 2, 6, 7), (3, 2, 3, 3), {"padding": (1, 2)}, True),
    "valid": ((2, 2, 6, 7), (3, 2, 3, 2), {"padding": "valid"}, True),
    "same_odd": ((2, 2, 6, 7), (3, 2, 3, 5), {"padding": "same"}, True),
    "same_even": ((2, 2, 6, 7), (3, 2, 4, 2), {"padding": "same"}, True),
    "same_dilated": (
        (1, 2, 8, 7),
        (3, 2, 2, 3),
        {"padding": "same", "dilation": 3},
        True,
    ),
    "dilation": ((2, 2, 9, 9), (3, 2, 3, 3), {"dilation": 2, "padding": 1}, True),
    "dilation_pair": ((2, 2, 9, 10), (3, 2, 2, 3), {"dilation": (1, 3)}, True),
    "groups": ((2, 4, 6, 6), (6, 2, 3, 3), {"groups": 2, "padding": 1}, True),
    "depthwise": ((2, 3, 6, 6), (3, 1, 3, 3), {"groups": 3, "padding": 1}, True),
    "depthwise_x2": ((2, 3, 6, 6), (6, 1, 3, 3), {"groups": 3}, True),
    "no_bias": ((2, 3, 7, 7), (4, 3, 3, 3), {"padding": 1}, False),
    "rectangular": ((2, 2, 7, 11), (3, 2, 2, 4), {"stride": (1, 2)}, True),
    "batch1": ((1, 3, 6, 6), (2, 3, 3, 3), {}, True),
    "one_channel": ((3, 1, 6, 6), (1, 1, 3, 3), {"padding": 1}, True),
    "kernel_1x1": ((2, 3, 5, 4), (4, 3, 1, 1), {}, True),
    "kernel_fills_padded": ((2, 2, 5, 4), (3, 2, 7, 6), {"padding": 1}, True),
    "stride_not_dividing": ((2, 2, 8, 8), (3, 2, 3, 3), {"stride": 3}, True),
    "all_mixed": (
        (2, 4, 11, 9),
        (4, 2, 3, 2),
        {"stride": (2, 3), "padding": (2, 1), "dilation": (2, 1), "groups": 2},
        True,
    ),
}

DTYPES = [np.float64, np.float32]


def _make(rng, x_shape, w_shape, with_bias, dtype=np.float64):
    x = rng.standard_normal(x_shape).astype(dtype)
    weight = rng.standard_normal(w_shape).astype(dtype)
    bias = rng.standard_normal(w_shape[0]).astype(dtype) if with_bias else None
    return x, weight, bias


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_forward_matches_reference(rng, case, dtype):
    x_shape, w_shape, kwargs, with_bias = case
    x, weight, bias = _make(rng, x_shape, w_shape, with_bias, dtype)

    y = conv2d(x, weight, bias, **kwargs)

    assert_close(y, reference.conv2d(x, weight, bias, **kwargs), dtype=dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_backward_matches_reference(rng, case, dtype):
    x_shape, w_shape, kwargs, with_bias = case
    x, weight, bias = _make(rng, x_shape, w_shape, with_bias, dtype)
    y, ctx = conv2d_forward(x, weight, bias, **kwargs)
    grad_output = rng.standard_normal(y.shape).astype(dtype)

    grads = conv2d_backward(grad_output, ctx)
    expected = reference.conv2d_backward(grad_output, x, weight, bias, **kwargs)

    for actual, wanted in zip(grads[:2], expected[:2], strict=True):
        assert_close(actual, wanted, dtype=dtype)
    if with_bias:
        assert_close(grads[2], expected[2], dtype=dtype)
    else:
        assert grads[2] is None


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_many_chunks_match_one(rng, monkeypatch, case):
    x_shape, w_shape, kwargs, with_bias = case
    x, weight, bias = _make(rng, (5, *x_shape[1:]), w_shape, with_bias)
    y, ctx = conv2d_forward(x, weight, bias, **kwargs)
    grad_output = rng.standard_normal(y.shape)
    grads = conv2d_backward(grad_output, ctx)

    # One sample per chunk: partial weight gradients are summed across chunks.
    monkeypatch.setattr(conv_module, "_CHUNK_BYTES", 1)
    y_chunked, ctx_chunked = conv2d_forward(x, weight, bias, **kwargs)
    grads_chunked = conv2d_backward(grad_output, ctx_chunked)

    assert_close(y_chunked, y)
    for actual, wanted in zip(grads_chunked, grads, strict=True):
        if wanted is not None:
            assert_close(actual, wanted)


def test_uncovered_input_rows_and_columns_get_zero_gradient(rng):
    # 8 = 2 * 3 + 2: the windows of stride 3 cover rows and columns 0..5 only.
    x, weight, bias = _make(rng, (2, 2, 8, 8), (3, 2, 3, 3), True)
    y, ctx = conv2d_forward(x, weight, bias, stride=3)
    grad_input = conv2d_backward(rng.standard_normal(y.shape), ctx)[0]

    assert np.all(grad_input[:, :, 6:, :] == 0.0)
    assert np.all(grad_input[:, :, :, 6:] == 0.0)
    assert np.all(grad_input[:, :, :6, :6] != 0.0)


def test_same_padding_keeps_size_and_puts_extra_zero_bottom_right(rng):
    x, weight, _ = _make(rng, (1, 1, 5, 6), (1, 1, 2, 2), False)

    y = conv2d(x, weight, padding="same")

    # Even kernel: pad 0 on top/left and 1 on bottom/right, so y[0, 0] sees x[0:2, 0:2].
    assert y.shape == x.shape
    assert np.isclose(y[0, 0, 0, 0], np.sum(x[0, 0, :2, :2] * weight[0, 0]))
    assert np.isclose(y[0, 0, -1, -1], x[0, 0, -1, -1] * weight[0, 0, 0, 0])


@pytest.mark.parametrize("dtype", DTYPES)
def test_unbatched_input_gives_unbatched_output_and_gradients(rng, dtype):
    x, weight, bias = _make(rng, (1, 3, 6, 5), (4, 3, 3, 2), True, dtype)
    y_batched, ctx_batched = conv2d_forward(x, weight, bias, padding=1)
    grad_output = rng.standard_normal(y_batched.shape).astype(dtype)
    grads_batched = conv2d_backward(grad_output, ctx_batched)

    y, ctx = conv2d_forward(x[0], weight, bias, padding=1)
    grads = conv2d_backward(grad_output[0], ctx)

    assert_close(y, y_batched[0])
    assert_close(grads[0], grads_batched[0][0])
    assert_close(grads[1], grads_batched[1])
    assert_close(grads[2], grads_batched[2])


def test_strided_and_negative_stride_views(rng):
    base_x = rng.standard_normal((4, 6, 9, 12))
    base_w = rng.standard_normal((5, 3, 3, 4))
    x = base_x[::2, ::2, ::-1, 1::2]  # (2, 3, 9, 6): strided and reversed
    weight = base_w[::-1, :, :, ::-2]  # (5, 3, 3, 2)
    bias = rng.standard_normal(10)[::-2]
    assert not x.flags.c_contiguous and not weight.flags.c_contiguous

    y, ctx = conv2d_forward(x, weight, bias, padding=1)
    grad_output = rng.standard_normal((*y.shape[:3], 2 * y.shape[3]))[..., ::-2]
    grads = conv2d_backward(grad_output, ctx)

    assert_close(y, reference.conv2d(x, weight, bias, padding=1))
    expected = reference.conv2d_backward(grad_output, x, weight, bias, padding=1)
    for actual, wanted in zip(grads, expected, strict=True):
        assert_close(actual, wanted)


def test_gradients_match_finite_differences(rng):
    x, weight, bias = _make(rng, (2, 2, 5, 4), (4, 1, 2, 3), True)
    kwargs = {"stride": (1, 2), "padding": 1, "dilation": (2, 1), "groups": 2}
    y, ctx = conv2d_forward(x, weight, bias, **kwargs)
    grad_output = rng.standard_normal(y.shape)
    grads = conv2d_backward(grad_output, ctx)

    def loss(x_, weight_, bias_):
        return float(np.sum(conv2d(x_, weight_, bias_, **kwargs) * grad_output))

    step = 1e-6
    arrays = [x, weight, bias]
    for index, (array, grad) in enumerate(zip(arrays, grads, strict=True)):
        numeric = np.zeros_like(array)
        for pos in np.ndindex(array.shape):
            plus = [a.copy() for a in arrays]
            minus = [a.copy() for a in arrays]
            plus[index][pos] += step
            minus[index][pos] -= step
            numeric[pos] = (loss(*plus) - loss(*minus)) / (2 * step)
        np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-7)


@st.composite
def conv_problems(draw):
    groups = draw(st.integers(1, 3))
    c_in = groups * draw(st.integers(1, 2))
    c_out = groups * draw(st.integers(1, 2))
    kernel = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    dilation = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    if stride == (1, 1) and draw(st.booleans()):
        padding = draw(st.sampled_from(["same", "valid"]))
        pads = conv_module.resolve_padding(padding, kernel, stride, dilation)
        pad_h, pad_w = pads[0] + pads[1], pads[2] + pads[3]
    else:
        padding = (draw(st.integers(0, 2)), draw(st.integers(0, 2)))
        pad_h, pad_w = 2 * padding[0], 2 * padding[1]
    extent = [d * (k - 1) + 1 for d, k in zip(dilation, kernel, strict=True)]
    h = max(1, extent[0] - pad_h) + draw(st.integers(0, 5))
    w = max(1, extent[1] - pad_w) + draw(st.integers(0, 5))
    n = draw(st.integers(1, 3))
    return {
        "x_shape": (n, c_in, h, w),
        "w_shape": (c_out, c_in // groups, *kernel),
        "kwargs": {
            "stride": stride,
            "padding": padding,
            "dilation": dilation,
            "groups": groups,
        },
        "with_bias": draw(st.booleans()),
        "seed": draw(st.integers(0, 2**16)),
    }


@settings(max_examples=30)
@given(problem=conv_problems())
def test_property_matches_reference(problem):
    rng = np.random.default_rng(problem["seed"])
    kwargs = problem["kwargs"]
    x, weight, bias = _make(
        rng, problem["x_shape"], problem["w_shape"], problem["with_bias"]
    )

    y, ctx = conv2d_forward(x, weight, bias, **kwargs)
    grad_output = rng.standard_normal(y.shape)
    grads = conv2d_backward(grad_output, ctx)

    assert_close(y, reference.conv2d(x, weight, bias, **kwargs))
    expected = reference.conv2d_backward(grad_output, x, weight, bias, **kwargs)
    for actual, wanted in zip(grads, expected, strict=True):
        if wanted is None:
            assert actual is None
        else:
            assert_close(actual, wanted)


TORCH_CASES = ["3x3_pad1", "same_even", "same_dilated", "all_mixed", "depthwise_x2"]


def _torch_conv(torch, x, weight, bias, kwargs):
    tensors = [
        None if a is None else torch.tensor(a, requires_grad=True)
        for a in (x, weight, bias)
    ]
    y = torch.nn.functional.conv2d(*tensors, **kwargs)
    return tensors, y


@pytest.mark.filterwarnings("ignore:Using padding='same'")
@pytest.mark.parametrize("name", TORCH_CASES)
def test_agrees_with_torch(rng, torch, name):
    x_shape, w_shape, kwargs, with_bias = CASES[name]
    x, weight, bias = _make(rng, x_shape, w_shape, with_bias)
    y, ctx = conv2d_forward(x, weight, bias, **kwargs)
    grad_output = rng.standard_normal(y.shape)
    grads = conv2d_backward(grad_output, ctx)

    tensors, y_torch = _torch_conv(torch, x, weight, bias, kwargs)
    grads_torch = torch.autograd.grad(y_torch, tensors, torch.tensor(grad_output))

    np.testing.assert_allclose(y, y_torch.detach().numpy(), rtol=1e-9, atol=1e-12)
    for actual, wanted in zip(grads, grads_torch, strict=True):
        np.testing.assert_allclose(actual, wanted.numpy(), rtol=1e-9, atol=1e-12)


@pytest.mark.filterwarnings("ignore:Using padding='same'")
@pytest.mark.parametrize("name", TORCH_CASES)
def test_reference_agrees_with_torch(rng, torch, name):
    x_shape, w_shape, kwargs, with_bias = CASES[name]
    x, weight, bias = _make(rng, x_shape, w_shape, with_bias)
    tensors, y_torch = _torch_conv(torch, x, weight, bias, kwargs)
    grad_output = rng.standard_normal(tuple(y_torch.shape))
    grads_torch = torch.autograd.grad(y_torch, tensors, torch.tensor(grad_output))

    y = reference.conv2d(x, weight, bias, **kwargs)
    grads = reference.conv2d_backward(grad_output, x, weight, bias, **kwargs)

    np.testing.assert_allclose(y, y_torch.detach().numpy(), rtol=1e-9, atol=1e-12)
    for actual, wanted in zip(grads, grads_torch, strict=True):
        np.testing.assert_allclose(actual, wanted.numpy(), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("chunk_bytes", [None, 1], ids=["one_chunk", "per_sample"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_one_and_two_threads_give_identical_bits(rng, monkeypatch, dtype, chunk_bytes):
    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("Numba was started with a single thread")
    if chunk_bytes is not None:
        monkeypatch.setattr(conv_module, "_CHUNK_BYTES", chunk_bytes)
    x, weight, bias = _make(rng, (5, 6, 11, 10), (8, 3, 3, 2), True, dtype)
    grad_output = None
    results = []
    original = numba.get_num_threads()
    try:
        for threads in (1, 2):
            numba.set_num_threads(threads)
            y, ctx = conv2d_forward(x, weight, bias, stride=(1, 2), groups=2)
            if grad_output is None:
                grad_output = rng.standard_normal(y.shape).astype(dtype)
            results.append((y, *conv2d_backward(grad_output, ctx)))
    finally:
        numba.set_num_threads(original)

    for single, double in zip(*results, strict=True):
        np.testing.assert_array_equal(single, double, strict=True)


def test_empty_batch_gives_empty_output_and_zero_gradients(rng):
    x, weight, bias = _make(rng, (0, 3, 7, 6), (4, 3, 3, 3), True, np.float32)

    y, ctx = conv2d_forward(x, weight, bias, padding=1)
    grad_input, grad_weight, grad_bias = conv2d_backward(
        np.zeros((0, 4, 7, 6), np.float32), ctx
    )

    assert y.shape == (0, 4, 7, 6) and y.dtype == np.float32
    assert grad_input.shape == (0, 3, 7, 6) and grad_input.dtype == np.float32
    assert_close(grad_weight, np.zeros(weight.shape), dtype=np.float32)
    assert_close(grad_bias, np.zeros(4), dtype=np.float32)


X = np.zeros((2, 4, 6, 6))
W = np.zeros((6, 2, 3, 3))

FORWARD_ERRORS = [
    ({"x": np.zeros((4, 6))}, ValueError, "x must be 3-d or 4-d"),
    ({"x": np.zeros((1, 2, 4, 6, 6))}, ValueError, "x must be 3-d or 4-d"),
    ({"x": [[[0.0]]]}, TypeError, r"x must be a numpy\.ndarray"),
    ({"x": X.astype(np.int64)}, TypeError, r"x must have dtype.*astype"),
    ({"weight": np.zeros((6, 2, 3))}, ValueError, "weight must be 4-d"),
    ({"weight": W.astype(np.float32)}, TypeError, "weight must have the same dtype"),
    ({"weight": np.zeros((6, 2, 0, 3))}, ValueError, "weight must not have a zero"),
    ({"bias": np.zeros(6, np.float32)}, TypeError, "bias must have the same dtype"),
    ({"bias": np.zeros(5)}, ValueError, r"bias must have shape \(6,\)"),
    ({"bias": np.zeros((6, 1))}, ValueError, "bias must be 1-d"),
    ({"groups": 1}, ValueError, r"x has 4 channels, but weight\.shape"),
    ({"weight": np.zeros((5, 2, 3, 3))}, ValueError, "divisible by groups"),
    ({"groups": 0}, ValueError, "groups must be >= 1"),
    ({"groups": 2.0}, TypeError, "groups must be an int"),
    ({"stride": 0}, ValueError, "stride must be >= 1"),
    ({"stride": (1, 0)}, ValueError, "stride must be >= 1"),
    ({"stride": 1.5}, TypeError, "stride must be an int"),
    ({"dilation": 0}, ValueError, "dilation must be >= 1"),
    ({"dilation": (0, 1)}, ValueError, "dilation must be >= 1"),
    ({"padding": -1}, ValueError, "padding must be >= 0"),
    ({"padding": (1, -2)}, ValueError, "padding must be >= 0"),
    ({"padding": (1, 2, 3)}, ValueError, "padding must be an int or a pair"),
    ({"padding": None}, TypeError, "padding must be an int or a pair"),
    ({"padding": "full"}, ValueError, "padding must be one of 'valid', 'same'"),
    ({"padding": "same", "stride": 2}, ValueError, "padding='same' needs stride 1"),
    ({"weight": np.zeros((6, 2, 7, 3))}, ValueError, "larger than the padded input"),
    ({"dilation": 3}, ValueError, "larger than the padded input"),
]


@pytest.mark.parametrize(("changes", "error", "match"), FORWARD_ERRORS)
def test_bad_forward_arguments_raise(changes, error, match):
    arguments = {"x": X, "weight": W, "bias": None, "groups": 2, **changes}
    with pytest.raises(error, match=match):
        conv2d_forward(**arguments)


def test_bad_backward_arguments_raise():
    y, ctx = conv2d_forward(X, W, groups=2)

    with pytest.raises(ValueError, match="grad_output must have the forward output"):
        conv2d_backward(np.zeros((2, 6, 4, 5)), ctx)
    with pytest.raises(TypeError, match="grad_output must have dtype float64"):
        conv2d_backward(y.astype(np.float32), ctx)
    with pytest.raises(TypeError, match=r"grad_output must be a numpy\.ndarray"):
        conv2d_backward(y.tolist(), ctx)
    with pytest.raises(TypeError, match="ctx must be the Conv2dContext"):
        conv2d_backward(y, {"x": X})


WORKSPACE_CASES = ["3x3_pad1", "stride2", "groups", "no_bias", "kernel_1x1"]


def _run_with(x, weight, bias, kwargs, grad_output, workspace):
    y, ctx = conv2d_forward(x, weight, bias, **kwargs, workspace=workspace)
    return (y, *conv2d_backward(grad_output, ctx))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", WORKSPACE_CASES)
def test_workspace_gives_the_same_results(rng, name, dtype):
    x_shape, w_shape, kwargs, with_bias = CASES[name]
    x, weight, bias = _make(rng, x_shape, w_shape, with_bias, dtype)
    y = conv2d(x, weight, bias, **kwargs)
    grad_output = rng.standard_normal(y.shape).astype(dtype)

    fresh = _run_with(x, weight, bias, kwargs, grad_output, None)
    reused = _run_with(x, weight, bias, kwargs, grad_output, Workspace())

    assert_close(conv2d(x, weight, bias, **kwargs, workspace=Workspace()), y)
    for actual, wanted in zip(reused, fresh, strict=True):
        if wanted is None:
            assert actual is None
        else:
            np.testing.assert_array_equal(actual, wanted, strict=True)


@pytest.mark.parametrize(
    ("direct", "chunk_bytes"),
    [(True, None), (False, None), (False, 1)],
    ids=["direct", "products_one_chunk", "products_per_sample"],
)
def test_second_call_with_a_workspace_allocates_nothing(
    rng, monkeypatch, direct, chunk_bytes
):
    if not direct:
        monkeypatch.setattr(conv_module, "_DIRECT_KERNEL_WIDTHS", ())
    if chunk_bytes is not None:
        monkeypatch.setattr(conv_module, "_CHUNK_BYTES", chunk_bytes)
    x, weight, bias = _make(rng, (3, 4, 8, 7), (5, 4, 3, 3), True, np.float32)
    grad_output = rng.standard_normal((3, 5, 8, 7)).astype(np.float32)
    ws = Workspace()

    first = _run_with(x, weight, bias, {"padding": 1}, grad_output, ws)
    first_copies = [a.copy() for a in first]
    nbytes = ws.nbytes
    second = _run_with(x + 1, weight, bias, {"padding": 1}, grad_output, ws)

    assert ws.nbytes == nbytes
    for a, b in zip(first, second, strict=True):
        assert np.shares_memory(a, b)
    # The second call overwrote the first call's arrays with its own results.
    assert not np.array_equal(first[0], first_copies[0])
    expected = _run_with(x + 1, weight, bias, {"padding": 1}, grad_output, None)
    for actual, wanted in zip(second, expected, strict=True):
        np.testing.assert_array_equal(actual, wanted, strict=True)


def test_smaller_batch_after_larger_with_a_workspace(rng):
    x, weight, bias = _make(rng, (4, 3, 7, 6), (4, 3, 3, 3), True)
    ws = Workspace()
    y_large = conv2d(x, weight, bias, padding=1, workspace=ws)
    assert y_large.shape == (4, 4, 7, 6)

    y, ctx = conv2d_forward(x[:2], weight, bias, padding=1, workspace=ws)
    grad_output = rng.standard_normal(y.shape)
    grads = conv2d_backward(grad_output, ctx)

    assert_close(y, reference.conv2d(x[:2], weight, bias, padding=1))
    expected = reference.conv2d_backward(grad_output, x[:2], weight, bias, padding=1)
    for actual, wanted in zip(grads, expected, strict=True):
        assert_close(actual, wanted)


@pytest.mark.parametrize("bad", [{}, "workspace", np.zeros(3)])
def test_workspace_of_the_wrong_type_raises(bad):
    with pytest.raises(TypeError, match=r"workspace must be a fastcnn\.functional"):
        conv2d_forward(X, W, groups=2, workspace=bad)
    with pytest.raises(TypeError, match=r"workspace must be a fastcnn\.functional"):
        conv2d(X, W, groups=2, workspace=bad)


@pytest.fixture
def any_width_direct(monkeypatch):
    """Let the direct kernels take stride-1 single-group convolutions of any width."""
    monkeypatch.setattr(conv_module, "_DIRECT_KERNEL_WIDTHS", tuple(range(1, 8)))


def _assert_case_matches_reference(rng, case, dtype):
    """Run a CASES entry on 3 samples, forward and backward, against the reference.

    Returns the forward context, for the caller to check which path ran.
    """
    x_shape, w_shape, kwargs, with_bias = case
    x, weight, bias = _make(rng, (3, *x_shape[1:]), w_shape, with_bias, dtype)
    y, ctx = conv2d_forward(x, weight, bias, **kwargs)
    grad_output = rng.standard_normal(y.shape).astype(dtype)
    grads = conv2d_backward(grad_output, ctx)

    assert_close(y, reference.conv2d(x, weight, bias, **kwargs), dtype=dtype)
    expected = reference.conv2d_backward(grad_output, x, weight, bias, **kwargs)
    for actual, wanted in zip(grads, expected, strict=True):
        if wanted is None:
            assert actual is None
        else:
            assert_close(actual, wanted, dtype=dtype)
    return ctx


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_direct_kernel_matches_reference(rng, any_width_direct, case, dtype):
    ctx = _assert_case_matches_reference(rng, case, dtype)

    # No case pads by more than its kernel reaches: only stride and groups decide.
    kwargs = case[2]
    assert ctx.direct == (kwargs.get("stride", 1) == 1 and kwargs.get("groups", 1) == 1)


@pytest.mark.parametrize(
    ("x_shape", "w_shape", "padding"),
    [
        ((4, 1, 28, 28), (8, 1, 3, 3), 1),
        ((3, 8, 14, 14), (16, 8, 3, 3), 1),
        ((2, 5, 9, 12), (6, 5, 3, 3), 0),
        ((2, 6, 14, 14), (16, 6, 5, 5), 0),
        ((2, 3, 9, 10), (5, 3, 5, 5), 2),
    ],
)
def test_direct_kernel_agrees_with_torch(
    rng, torch, any_width_direct, x_shape, w_shape, padding
):
    x, weight, bias = _make(rng, x_shape, w_shape, True)
    y, ctx = conv2d_forward(x, weight, bias, padding=padding)
    grad_output = rng.standard_normal(y.shape)
    grads = conv2d_backward(grad_output, ctx)

    tensors, y_torch = _torch_conv(torch, x, weight, bias, {"padding": padding})
    grads_torch = torch.autograd.grad(y_torch, tensors, torch.tensor(grad_output))
    assert ctx.direct
    assert_close(y, y_torch.detach().numpy())
    for actual, wanted in zip(grads, grads_torch, strict=True):
        assert_close(actual, wanted.numpy())


def test_3x3_and_5x5_stride_one_take_the_direct_kernel_and_4x4_the_products(rng):
    x, weight, _ = _make(rng, (2, 3, 9, 9), (4, 3, 3, 3), False)
    assert conv2d_forward(x, weight, padding=1)[1].direct
    x, weight, _ = _make(rng, (2, 3, 9, 9), (4, 3, 5, 5), False)
    assert conv2d_forward(x, weight)[1].direct
    x, weight, _ = _make(rng, (2, 3, 9, 9), (4, 3, 4, 4), False)
    assert not conv2d_forward(x, weight)[1].direct


def test_padding_wider_than_the_kernel_reach_uses_products(rng):
    x, weight, bias = _make(rng, (2, 2, 5, 5), (3, 2, 3, 3), True)

    y, ctx = conv2d_forward(x, weight, bias, padding=3)
    grads = conv2d_backward(np.ones_like(y), ctx)

    assert not ctx.direct
    assert_close(y, reference.conv2d(x, weight, bias, padding=3))
    expected = reference.conv2d_backward(np.ones_like(y), x, weight, bias, padding=3)
    assert_close(grads[0], expected[0])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    ("w_shape", "kwargs"),
    [
        ((16, 8, 3, 3), {"padding": 1}),
        ((16, 8, 5, 3), {"dilation": (1, 2)}),
        ((16, 8, 3, 5), {"padding": 2}),
    ],
)
def test_direct_kernel_one_and_two_threads_identical(
    rng, any_width_direct, dtype, w_shape, kwargs
):
    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("Numba was started with a single thread")
    # Large enough for the parallel compile (not the serial twin) to run, for
    # the output and for grad_input.
    x, weight, bias = _make(rng, (10, 8, 20, 21), w_shape, True, dtype)
    grad_output = None
    results = []
    original = numba.get_num_threads()
    try:
        for threads in (1, 2):
            numba.set_num_threads(threads)
            y, ctx = conv2d_forward(x, weight, bias, **kwargs)
            if grad_output is None:
                grad_output = rng.standard_normal(y.shape).astype(dtype)
            results.append((y, *conv2d_backward(grad_output, ctx)))
    finally:
        numba.set_num_threads(original)

    assert ctx.direct and min(y.size, x.size) >= 1 << 15
    for single, double in zip(*results, strict=True):
        np.testing.assert_array_equal(single, double, strict=True)


@pytest.mark.parametrize("c_out", [1, 2, 3, 5, 6])
@pytest.mark.parametrize("k", [1, 2, 3, 5])
def test_direct_kernel_skipping_the_zero_rows_changes_no_finite_sum(rng, k, c_out):
    # Padding by the kernel's whole reach, as the input gradient does: the outer
    # kernel rows meet only the zero rows for k - 1 output rows each.
    x, weight, bias = _make(rng, (2, 3, 6, 7), (c_out, 3, k, k), True)
    pad = k - 1
    full = np.empty((2, c_out, 6 + pad, 7 + pad))
    skipping = np.empty_like(full)

    conv2d_direct(x, weight, bias, full, pad, pad, 1, 1, False, False)
    conv2d_direct(x, weight, bias, skipping, pad, pad, 1, 1, False, True)

    # Equal up to rounding: the loops over the shorter runs split into vector
    # and remainder iterations at other places, which may associate the sums
    # differently.
    assert_close(skipping, full)
    assert_close(full, reference.conv2d(x, weight, bias, padding=pad))


def test_direct_kernel_skipping_the_zero_rows_forms_no_product_with_them(rng):
    # Only the top kernel row's middle tap is nonzero, and infinite: in the full
    # sum it meets the two zero rows above the input (0 * inf = NaN); skipped,
    # those rows add nothing.
    x = rng.uniform(1.0, 2.0, (1, 1, 4, 4))
    weight = np.zeros((1, 1, 3, 3))
    weight[0, 0, 0, 1] = np.inf
    full = np.empty((1, 1, 6, 6))
    skipping = np.empty_like(full)

    conv2d_direct(x, weight, np.zeros(1), full, 2, 2, 1, 1, False, False)
    conv2d_direct(x, weight, np.zeros(1), skipping, 2, 2, 1, 1, False, True)

    assert np.isnan(full[0, 0, :2]).all()
    np.testing.assert_array_equal(skipping[0, 0, :2], 0.0)
    # Rows 2 to 5 meet the input: inf where the tap's column does too, and NaN
    # where it meets the zero columns, which neither kernel skips.
    np.testing.assert_array_equal(skipping[0, 0, 2:], full[0, 0, 2:])
    assert np.isposinf(skipping[0, 0, 2:, 1:5]).all()


@pytest.mark.parametrize("shares", [1, 2, 4])
def test_direct_weight_gradient_in_any_number_of_shares(rng, monkeypatch, shares):
    # 5 samples in 1, 2 or 4 shares of ceil(5 / shares): with 4, the last is empty.
    monkeypatch.setattr(conv_module, "_GRAD_SHARES", shares)
    x, weight, bias = _make(rng, (5, 3, 8, 9), (5, 3, 3, 3), True)
    y, ctx = conv2d_forward(x, weight, bias, padding=1)
    grad_output = rng.standard_normal(y.shape)

    grads = conv2d_backward(grad_output, ctx)

    assert ctx.direct
    expected = reference.conv2d_backward(grad_output, x, weight, bias, padding=1)
    for actual, wanted in zip(grads, expected, strict=True):
        assert_close(actual, wanted)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_products_path_matches_reference(rng, monkeypatch, case, dtype):
    # Every case through the column matrix, the stride-1 ones included.
    monkeypatch.setattr(conv_module, "_DIRECT_KERNEL_WIDTHS", ())
    x_shape, w_shape, kwargs, with_bias = case
    x, weight, bias = _make(rng, x_shape, w_shape, with_bias, dtype)
    y, ctx = conv2d_forward(x, weight, bias, **kwargs)
    grad_output = rng.standard_normal(y.shape).astype(dtype)
    grads = conv2d_backward(grad_output, ctx)

    assert not ctx.direct
    assert_close(y, reference.conv2d(x, weight, bias, **kwargs), dtype=dtype)
    expected = reference.conv2d_backward(grad_output, x, weight, bias, **kwargs)
    for actual, wanted in zip(grads, expected, strict=True):
        if wanted is None:
            assert actual is None
        else:
            assert_close(actual, wanted, dtype=dtype)


@settings(max_examples=60, deadline=None)
@given(
    size=st.integers(1, 40),
    kernel_size=st.integers(1, 7),
    stride=st.integers(1, 4),
    before=st.integers(0, 3),
    after=st.integers(0, 3),
    dilation=st.integers(1, 3),
)
def test_output_size_is_the_length_pytorch_gives(
    torch, size, kernel_size, stride, before, after, dilation
):
    expected = conv_module.output_size(
        size, kernel_size, stride, (before, after), dilation
    )
    x = torch.zeros((1, 1, 1, size + before + after), dtype=torch.float64)
    w = torch.zeros((1, 1, 1, kernel_size), dtype=torch.float64)
    conv = torch.nn.functional.conv2d
    if expected < 1:  # the window does not fit
        with pytest.raises(RuntimeError):
            conv(x, w, stride=(1, stride), dilation=(1, dilation))
        return
    y = conv(x, w, stride=(1, stride), dilation=(1, dilation))
    assert y.shape[-1] == expected
    if before == after:
        assert (
            conv_module.output_size(size, kernel_size, stride, before, dilation)
            == expected
        )


@pytest.fixture
def winograd_calls(monkeypatch):
    """Send every 3x3, dilation-1 direct convolution to the Winograd kernel.

    Returns the list of calls the kernel received (their ``x`` arrays).
    """
    calls = []
    kernel = conv_module.conv2d_winograd

    def spy(x, *args):
        calls.append(x)
        return kernel(x, *args)

    monkeypatch.setattr(conv_module, "_WINOGRAD_MIN_CHANNELS", 1)
    monkeypatch.setattr(conv_module, "_WINOGRAD_MIN_PAIRS", 1)
    monkeypatch.setattr(conv_module, "conv2d_winograd", spy)
    return calls


def _takes_winograd(w_shape, kwargs):
    return (
        w_shape[2:] == (3, 3)
        and kwargs.get("stride", 1) == 1
        and kwargs.get("groups", 1) == 1
        and kwargs.get("dilation", 1) == 1
    )


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_winograd_kernel_matches_reference(rng, winograd_calls, case, dtype):
    _assert_case_matches_reference(rng, case, dtype)

    # Forward and grad_input, or neither.
    _, w_shape, kwargs, _ = case
    assert len(winograd_calls) == (2 if _takes_winograd(w_shape, kwargs) else 0)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    ("x_shape", "padding"),
    [
        ((3, 32, 14, 14), 1),
        ((2, 32, 9, 7), 0),
        ((2, 32, 8, 11), 2),
        ((2, 32, 7, 6), (2, 0)),
        ((1, 32, 3, 3), 1),
    ],
)
def test_winograd_kernel_agrees_with_torch(rng, torch, x_shape, padding, dtype):
    # 32 channels in, 64 out: the default thresholds take the Winograd kernel
    # (for grad_input, 64 in and 32 out).
    calls = []
    kernel = conv_module.conv2d_winograd
    x, weight, bias = _make(rng, x_shape, (64, 32, 3, 3), True)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(
            conv_module,
            "conv2d_winograd",
            lambda x, *args: calls.append(x) or kernel(x, *args),
        )
        y, ctx = conv2d_forward(
            x.astype(dtype), weight.astype(dtype), bias.astype(dtype), padding=padding
        )
        grad_output = rng.standard_normal(y.shape)
        grads = conv2d_backward(grad_output.astype(dtype), ctx)

    tensors, y_torch = _torch_conv(torch, x, weight, bias, {"padding": padding})
    grads_torch = torch.autograd.grad(y_torch, tensors, torch.tensor(grad_output))
    assert len(calls) == 2
    assert_close(y, y_torch.detach().numpy(), dtype=dtype)
    for actual, wanted in zip(grads, grads_torch, strict=True):
        assert_close(actual, wanted.numpy(), dtype=dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_winograd_kernel_fuses_relu(rng, winograd_calls, dtype):
    x, weight, bias = _make(rng, (4, 6, 9, 8), (5, 6, 3, 3), True, dtype)
    y, _ = conv_module.conv2d_relu_forward(x, weight, bias, 1, 1, 1, 1, None, relu=True)
    plain = reference.conv2d(x, weight, bias, padding=1)

    assert len(winograd_calls) == 1
    assert (plain < 0).any()
    assert_close(y, np.where(plain < 0, 0, plain), dtype=dtype)


@pytest.mark.parametrize("value", [np.inf, -np.inf, np.nan, 1e30])
def test_non_finite_or_huge_values_go_to_the_direct_kernel(rng, winograd_calls, value):
    # An inf added to an opposite inf inside the transforms would give NaN where
    # the direct sum gives +-inf; a huge float32 value could overflow a sum.
    x, weight, bias = _make(rng, (2, 4, 6, 6), (3, 4, 3, 3), True, np.float32)
    for target in (x, weight):
        changed = target.copy()
        changed.flat[7] = value
        args = (changed, weight, bias) if target is x else (x, changed, bias)
        with np.errstate(all="ignore"):
            y = conv2d(*args, padding=1)
            expected = reference.conv2d(*args, padding=1)
        assert not winograd_calls
        np.testing.assert_array_equal(np.isnan(y), np.isnan(expected))
        np.testing.assert_array_equal(np.isinf(y), np.isinf(expected))
    conv2d(x, weight, bias, padding=1)
    assert len(winograd_calls) == 1


@pytest.mark.parametrize("dtype", DTYPES)
def test_winograd_kernel_one_and_two_threads_identical(rng, winograd_calls, dtype):
    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("Numba was started with a single thread")
    x, weight, bias = _make(rng, (9, 32, 13, 12), (64, 32, 3, 3), True, dtype)
    grad_output = rng.standard_normal((9, 64, 13, 12)).astype(dtype)
    results = []
    original = numba.get_num_threads()
    try:
        for threads in (1, 2):
            numba.set_num_threads(threads)
            y, ctx = conv2d_forward(x, weight, bias, padding=1)
            results.append((y, *conv2d_backward(grad_output, ctx)))
    finally:
        numba.set_num_threads(original)

    # Forward and grad_input on each thread count, large enough to run in
    # parallel (more than one group of samples).
    assert len(winograd_calls) == 4
    for single, double in zip(*results, strict=True):
        np.testing.assert_array_equal(single, double, strict=True)


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 4),
    c_in=st.integers(1, 5),
    c_out=st.integers(1, 6),
    size=st.tuples(st.integers(1, 9), st.integers(1, 9)),
    padding=st.tuples(st.integers(0, 2), st.integers(0, 2)),
    seed=st.integers(0, 2**16),
)
def test_property_winograd_matches_reference(n, c_in, c_out, size, padding, seed):
    # Every plane size from 1x1 (odd and even, output as small as one row), every
    # padding the kernel takes, grad_input padded 2 - padding.
    h, w = max(size[0], 3 - 2 * padding[0]), max(size[1], 3 - 2 * padding[1])
    rng = np.random.default_rng(seed)
    x, weight, bias = _make(rng, (n, c_in, h, w), (c_out, c_in, 3, 3), True)
    calls = []
    kernel = conv_module.conv2d_winograd
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(conv_module, "_WINOGRAD_MIN_CHANNELS", 1)
        patch.setattr(conv_module, "_WINOGRAD_MIN_PAIRS", 1)
        patch.setattr(
            conv_module,
            "conv2d_winograd",
            lambda x, *args: calls.append(x) or kernel(x, *args),
        )
        y, ctx = conv2d_forward(x, weight, bias, padding=padding)
        grad_output = rng.standard_normal(y.shape)
        grads = conv2d_backward(grad_output, ctx)

    assert len(calls) == 2
    assert_close(y, reference.conv2d(x, weight, bias, padding=padding))
    expected = reference.conv2d_backward(grad_output, x, weight, bias, padding=padding)
    for actual, wanted in zip(grads, expected, strict=True):
        assert_close(actual, wanted)


@pytest.mark.parametrize("dtype", DTYPES)
def test_winograd_sample_gives_the_same_bits_in_any_batch(rng, winograd_calls, dtype):
    # Samples are grouped for the matrix products by the batch size; a sample's
    # result must not depend on its group or its place in it.
    x, weight, bias = _make(rng, (7, 8, 13, 11), (6, 8, 3, 3), True, dtype)
    whole = conv2d(x, weight, bias, padding=1)
    one_by_one = [conv2d(x[i : i + 1], weight, bias, padding=1) for i in range(7)]
    by_three = [conv2d(x[i : i + 3], weight, bias, padding=1) for i in (0, 3, 6)]

    assert len(winograd_calls) == 1 + 7 + 3
    np.testing.assert_array_equal(whole, np.concatenate(one_by_one), strict=True)
    np.testing.assert_array_equal(whole, np.concatenate(by_three), strict=True)


def test_set_winograd_false_gives_the_direct_sum(rng):
    # A large tap that meets only the zero padding on the top row: Winograd's
    # rounding error follows the tap, the direct sum's follows the output.
    x, weight, bias = _make(rng, (2, 32, 8, 8), (64, 32, 3, 3), True, np.float32)
    weight[:, 0, 0, 1] = 1e6
    calls = []
    kernel = conv_module.conv2d_winograd
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(
            conv_module,
            "conv2d_winograd",
            lambda x, *args: calls.append(x) or kernel(x, *args),
        )
        fast = conv2d(x, weight, bias, padding=1)
        previous = set_winograd(False)
        try:
            exact = conv2d(x, weight, bias, padding=1)
        finally:
            assert set_winograd(previous) is False
    expected = reference.conv2d(x, weight, bias, padding=1)

    assert previous is True and len(calls) == 1
    top = (slice(None), slice(None), 0)
    assert_close(exact[top], expected[top], dtype=np.float32)
    assert np.abs(fast[top] - expected[top]).max() > 1e-3


@pytest.mark.parametrize("bad", [1, None, "no"])
def test_set_winograd_takes_a_bool(bad):
    with pytest.raises(TypeError, match="enabled must be a bool, got"):
        set_winograd(bad)
