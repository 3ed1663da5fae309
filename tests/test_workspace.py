"""Buffers reused from call to call: functional.Workspace, layers and Sequential."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import assert_close

import fastcnn
from fastcnn import functional as F
from fastcnn.functional import Workspace


def test_take_reuses_the_buffer_and_grows_only_when_needed():
    ws = Workspace()
    first = ws.take("a", (4, 5), np.float32)
    again = ws.take("a", (4, 5), np.float32)
    smaller = ws.take("a", (2, 3), np.float32)
    assert np.shares_memory(first, again)
    assert np.shares_memory(first, smaller)
    assert smaller.flags.c_contiguous and smaller.shape == (2, 3)
    assert ws.nbytes == 4 * 5 * 4

    larger = ws.take("a", (10, 10), np.float32)
    assert not np.shares_memory(first, larger)
    assert ws.nbytes == 100 * 4

    other_dtype = ws.take("a", (10, 10), np.float64)
    assert other_dtype.dtype == np.float64
    assert ws.nbytes == 100 * 8


def test_names_keep_separate_buffers_and_clear_drops_them():
    ws = Workspace()
    a = ws.take("a", (8,), np.float64)
    b = ws.take("b", (8,), np.float64)
    assert not np.shares_memory(a, b)
    ws.clear()
    assert ws.nbytes == 0
    assert not np.shares_memory(a, ws.take("a", (8,), np.float64))


ELEMENTWISE = [
    (F.relu, F.relu_backward, False),
    (F.leaky_relu, F.leaky_relu_backward, False),
    (F.sigmoid, F.sigmoid_backward, True),
    (F.tanh, F.tanh_backward, True),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(("forward", "backward", "from_output"), ELEMENTWISE)
def test_activations_with_a_workspace_match_and_allocate_once(
    rng, dtype, forward, backward, from_output
):
    x = rng.standard_normal((6, 3, 5, 5)).astype(dtype)
    g = rng.standard_normal(x.shape).astype(dtype)
    expected_y = forward(x)
    expected_g = backward(g, expected_y if from_output else x)

    ws = Workspace()
    y = forward(x, workspace=ws)
    grad = backward(g, y if from_output else x, workspace=ws)
    assert_close(y, expected_y, dtype=dtype, scale=0.0)
    assert_close(grad, expected_g, dtype=dtype, scale=0.0)
    assert not np.shares_memory(y, grad)

    held = ws.nbytes
    y2 = forward(x, workspace=ws)
    assert np.shares_memory(y, y2)
    assert ws.nbytes == held

    # A smaller batch uses the leading part of the same buffers.
    y3 = forward(x[:2], workspace=ws)
    assert np.shares_memory(y, y3)
    np.testing.assert_array_equal(y3, expected_y[:2])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_linear_with_a_workspace_matches_and_allocates_once(rng, dtype):
    x = rng.standard_normal((7, 12)).astype(dtype)
    weight = rng.standard_normal((5, 12)).astype(dtype)
    bias = rng.standard_normal(5).astype(dtype)
    g = rng.standard_normal((7, 5)).astype(dtype)
    y0, ctx0 = F.linear_forward(x, weight, bias)
    expected = F.linear_backward(g, ctx0)

    ws = Workspace()
    y, ctx = F.linear_forward(x, weight, bias, workspace=ws)
    grads = F.linear_backward(g, ctx)
    np.testing.assert_array_equal(y, y0)
    for got, want in zip(grads, expected, strict=True):
        np.testing.assert_array_equal(got, want)

    held = ws.nbytes
    y2, ctx2 = F.linear_forward(x, weight, bias, workspace=ws)
    grads2 = F.linear_backward(g, ctx2)
    assert ws.nbytes == held
    assert np.shares_memory(y, y2)
    assert all(np.shares_memory(a, b) for a, b in zip(grads, grads2, strict=True))


def test_linear_backward_can_skip_the_input_gradient(rng):
    x = rng.standard_normal((4, 6))
    weight = rng.standard_normal((3, 6))
    g = rng.standard_normal((4, 3))
    _, ctx = F.linear_forward(x, weight, None)
    grad_input, grad_weight, grad_bias = F.linear_backward(g, ctx, input_gradient=False)
    assert grad_input is None and grad_bias is None
    np.testing.assert_array_equal(grad_weight, F.linear_backward(g, ctx)[1])


@pytest.mark.parametrize("op", [F.relu, F.sigmoid, F.tanh, F.linear])
def test_a_workspace_of_the_wrong_type_is_refused(op):
    x = np.ones((2, 3))
    args = (x, np.ones((4, 3))) if op is F.linear else (x,)
    with pytest.raises(TypeError, match=r"workspace must be a fastcnn\.functional"):
        op(*args, workspace={})


# ---------------------------------------------------------------- layers, models


def _lenet(batch_rng=0):
    return fastcnn.lenet(rng=batch_rng, normalize=(0.1, 0.3))


def test_layers_alone_allocate_fresh_outputs_and_sequential_gives_workspaces():
    layer = fastcnn.layers.ReLU()
    assert layer.workspace is None
    x = np.ones((2, 3), dtype=np.float32)
    assert not np.shares_memory(layer.forward(x), layer.forward(x))

    model = _lenet()
    assert all(isinstance(layer.workspace, Workspace) for layer in model.layers)
    assert len({id(layer.workspace) for layer in model.layers}) == len(model.layers)


def test_sequential_returns_arrays_that_later_calls_do_not_overwrite(rng):
    model = _lenet()
    a = rng.standard_normal((5, 1, 28, 28)).astype(np.float32)
    b = rng.standard_normal((5, 1, 28, 28)).astype(np.float32)
    out_a = model.forward(a)
    kept = out_a.copy()
    grad_a = model.backward(np.ones_like(out_a))
    kept_grad = grad_a.copy()

    out_b = model.forward(b)
    model.backward(np.ones_like(out_b))
    np.testing.assert_array_equal(out_a, kept)
    np.testing.assert_array_equal(grad_a, kept_grad)
    assert not np.array_equal(out_a, out_b)


def test_backward_without_input_gradient_gives_the_same_parameter_gradients(rng):
    x = rng.standard_normal((6, 1, 28, 28)).astype(np.float32)
    g = rng.standard_normal((6, 10)).astype(np.float32)
    full, skipping = _lenet(), _lenet()

    full.forward(x)
    grad_input = full.backward(g)
    skipping.forward(x)
    assert skipping.backward(g, input_gradient=False) is None

    assert grad_input.shape == x.shape
    assert full.grads.keys() == skipping.grads.keys()
    for key, value in full.grads.items():
        np.testing.assert_array_equal(skipping.grads[key], value, err_msg=key)


def test_backward_without_input_gradient_skips_leading_parameterless_layers(rng):
    model = _lenet()
    normalize = model.layers[0]
    assert not normalize.params
    calls = []
    original = normalize.backward

    def spy(*args, **kwargs):
        calls.append(args)
        return original(*args, **kwargs)

    normalize.backward = spy
    out = model.forward(rng.standard_normal((2, 1, 28, 28)).astype(np.float32))
    model.backward(np.ones_like(out), input_gradient=False)
    assert calls == []
    model.backward(np.ones_like(out))
    assert len(calls) == 1


def test_predict_keeps_every_batch(rng):
    model = _lenet()
    x = rng.standard_normal((10, 1, 28, 28)).astype(np.float32)
    in_batches = model.predict(x, batch_size=3)
    at_once = model.predict(x, batch_size=10)
    assert_close(in_batches, at_once, dtype=np.float32)
    assert not np.array_equal(in_batches[0], in_batches[3])


def test_steady_training_steps_allocate_nothing_that_grows_with_the_batch(rng):
    import tracemalloc

    batch = 128
    x = rng.standard_normal((batch, 1, 28, 28)).astype(np.float32)
    y = rng.integers(0, 10, size=batch)

    def make_step():
        model = fastcnn.lenet(rng=0)
        optimizer = fastcnn.SGD(model, lr=0.01, momentum=0.9)
        criterion = fastcnn.CrossEntropyLoss()

        def step():
            optimizer.zero_grad()
            criterion.forward(model.forward(x), y)
            model.backward(criterion.backward(), input_gradient=False)
            optimizer.step()

        return step

    make_step()()  # compile outside the measurement
    step = make_step()
    peaks = []
    tracemalloc.start()
    try:
        for _ in range(4):
            tracemalloc.reset_peak()
            before = tracemalloc.get_traced_memory()[0]
            step()
            peaks.append(tracemalloc.get_traced_memory()[1] - before)
    finally:
        tracemalloc.stop()
    # The input alone is 400 kB; a step that allocated its layers' outputs
    # would need several MB.
    assert peaks[0] > 2_000_000
    assert max(peaks[2:]) < 0.05 * peaks[0], peaks


@pytest.mark.parametrize("value", [0, 1, None, "no"])
def test_input_gradient_must_be_a_bool(value):
    model = _lenet()
    out = model.forward(np.ones((1, 1, 28, 28), dtype=np.float32))
    with pytest.raises(TypeError, match="input_gradient must be a bool"):
        model.backward(np.ones_like(out), input_gradient=value)
    with pytest.raises(TypeError, match="input_gradient must be a bool"):
        model.layers[-1].backward(np.ones_like(out), input_gradient=value)


@pytest.mark.parametrize("shape", [(2, 3, 8, 8), (2, 3, 9, 9)])
def test_a_context_overwritten_by_a_later_forward_call_is_refused(rng, shape):
    x = rng.standard_normal(shape)
    g = rng.standard_normal(F.max_pool2d(x, 2).shape)
    ws = Workspace()
    _, first = F.max_pool2d_forward(x, 2, workspace=ws)
    _, second = F.max_pool2d_forward(-x, 2, workspace=ws)
    with pytest.raises(RuntimeError, match="ctx is out of date"):
        F.max_pool2d_backward(g, first)
    # The newest context still works, and gives the fresh-array answer.
    _, fresh = F.max_pool2d_forward(-x, 2)
    np.testing.assert_array_equal(
        F.max_pool2d_backward(g, second), F.max_pool2d_backward(g, fresh)
    )


@pytest.mark.parametrize(
    ("x_shape", "w_shape", "options"),
    [
        ((2, 3, 9, 9), (4, 3, 3, 3), {"padding": 1}),  # direct kernel
        ((2, 3, 9, 9), (4, 3, 3, 3), {"stride": 2}),  # column matrix kept
        ((2, 4, 9, 9), (4, 2, 5, 5), {"groups": 2}),
    ],
)
def test_conv_backward_can_skip_the_input_gradient_and_refuses_stale_columns(
    rng, x_shape, w_shape, options
):
    x = rng.standard_normal(x_shape)
    weight = rng.standard_normal(w_shape)
    bias = rng.standard_normal(w_shape[0])
    y, ctx = F.conv2d_forward(x, weight, bias, **options)
    g = rng.standard_normal(y.shape)
    full = F.conv2d_backward(g, ctx)
    skipped = F.conv2d_backward(g, ctx, input_gradient=False)
    assert skipped[0] is None
    np.testing.assert_array_equal(skipped[1], full[1])
    np.testing.assert_array_equal(skipped[2], full[2])

    ws = Workspace()
    _, first = F.conv2d_forward(x, weight, bias, **options, workspace=ws)
    _, second = F.conv2d_forward(-x, weight, bias, **options, workspace=ws)
    if first.cols is not None:
        with pytest.raises(RuntimeError, match="ctx is out of date"):
            F.conv2d_backward(g, first)
    got = F.conv2d_backward(g, second)
    _, fresh = F.conv2d_forward(-x, weight, bias, **options)
    for a, b in zip(got, F.conv2d_backward(g, fresh), strict=True):
        np.testing.assert_array_equal(a, b)


def test_conv_padding_too_large_for_any_plane_names_padding():
    x = np.ones((1, 1, 4, 4), dtype=np.float32)
    w = np.ones((1, 1, 3, 3), dtype=np.float32)
    with pytest.raises(ValueError, match=r"padding=30000 makes the padded plane"):
        F.conv2d(x, w, padding=30000)
    with pytest.raises(ValueError, match=r"more than 2\*\*31 - 1"):
        F.conv2d(x, w, padding=10**9)
