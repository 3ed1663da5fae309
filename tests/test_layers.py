"""Tests of fastcnn.layers and fastcnn.init."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from conftest import assert_close

from fastcnn import init
from fastcnn.layers import (
    AvgPool2D,
    Conv2D,
    Dense,
    Dropout,
    Flatten,
    LeakyReLU,
    MaxPool2D,
    ReLU,
    Reshape,
    Sigmoid,
    Softmax,
    SoftmaxCrossEntropy,
    Tanh,
)

# Central differences in float64: truncation and rounding errors stay near 1e-9.
FD_EPS = 1e-6
FD_TOL = {"rtol": 1e-6, "atol": 1e-8}

# (id, factory building a float64 layer, batched input shape)
LAYER_CASES = [
    (
        "conv",
        lambda: Conv2D(3, 4, 3, stride=2, padding=1, dtype=np.float64, rng=1),
        (2, 3, 7, 6),
    ),
    (
        "conv_same_groups",
        lambda: Conv2D(
            4,
            6,
            (2, 3),
            padding="same",
            dilation=(1, 2),
            groups=2,
            bias=False,
            dtype=np.float64,
            rng=2,
        ),
        (2, 4, 5, 6),
    ),
    (
        "conv_rect_stride",
        lambda: Conv2D(
            2, 3, (2, 3), stride=(2, 1), padding=(0, 1), dtype=np.float64, rng=3
        ),
        (1, 2, 5, 4),
    ),
    ("dense", lambda: Dense(5, 3, dtype=np.float64, rng=4), (4, 5)),
    ("dense_nobias", lambda: Dense(6, 2, bias=False, dtype=np.float64, rng=5), (3, 6)),
    ("maxpool", lambda: MaxPool2D(3, 2, padding=1), (2, 2, 7, 6)),
    ("maxpool_ceil", lambda: MaxPool2D(2, ceil_mode=True), (1, 3, 5, 5)),
    ("avgpool", lambda: AvgPool2D(2), (2, 2, 6, 4)),
    (
        "avgpool_pad_ceil",
        lambda: AvgPool2D(3, 2, 1, ceil_mode=True, count_include_pad=False),
        (1, 2, 6, 5),
    ),
    ("relu", ReLU, (3, 4, 5)),
    ("leaky_relu", lambda: LeakyReLU(0.2), (3, 7)),
    ("sigmoid", Sigmoid, (2, 3, 4)),
    ("tanh", Tanh, (2, 6)),
    ("softmax", Softmax, (3, 5)),
    ("softmax_axis1", lambda: Softmax(axis=1), (2, 4, 3)),
    ("flatten", Flatten, (2, 3, 2, 2)),
    ("reshape", lambda: Reshape(-1, 2), (3, 2, 4)),
]
CASE_IDS = [case[0] for case in LAYER_CASES]


def finite_difference(f, array: np.ndarray) -> np.ndarray:
    """Central-difference gradient of the scalar ``f()`` with respect to ``array``.

    ``array`` is perturbed in place, one element at a time, and restored.
    """
    grad = np.zeros_like(array)
    flat = array.reshape(-1)
    grad_flat = grad.reshape(-1)
    for i in range(flat.size):
        original = flat[i]
        flat[i] = original + FD_EPS
        plus = f()
        flat[i] = original - FD_EPS
        minus = f()
        flat[i] = original
        grad_flat[i] = (plus - minus) / (2 * FD_EPS)
    return grad


def one_hot(indices: np.ndarray, k: int) -> np.ndarray:
    return np.eye(k)[indices]


# ---------------------------------------------------------------------------
# Gradients against finite differences (float64)
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "factory", "shape"), LAYER_CASES, ids=CASE_IDS)
def test_backward_matches_finite_differences(name, factory, shape, rng):
    layer = factory()
    x = rng.standard_normal(shape)
    y = layer.forward(x)
    weights = rng.standard_normal(y.shape)

    grad_input = layer.backward(weights)
    assert grad_input.shape == x.shape
    assert grad_input.dtype == np.float64
    assert set(layer.grads) == set(layer.params)

    def loss() -> float:
        return float(np.sum(layer.forward(x) * weights))

    np.testing.assert_allclose(grad_input, finite_difference(loss, x), **FD_TOL)
    for key, param in layer.params.items():
        assert layer.grads[key].shape == param.shape
        np.testing.assert_allclose(
            layer.grads[key], finite_difference(loss, param), **FD_TOL
        )


@pytest.mark.parametrize("target_kind", ["indices", "probabilities"])
def test_softmax_cross_entropy_gradient_matches_finite_differences(target_kind, rng):
    layer = SoftmaxCrossEntropy()
    logits = rng.standard_normal((4, 5))
    if target_kind == "indices":
        target = np.array([0, 4, 2, 2])
    else:
        target = rng.dirichlet(np.ones(5), size=4)

    layer.forward(logits)
    grad = layer.backward(target)

    def loss() -> float:
        layer.forward(logits)
        return layer.cross_entropy(target)

    np.testing.assert_allclose(grad, finite_difference(loss, logits), **FD_TOL)


# ---------------------------------------------------------------------------
# Agreement with PyTorch modules (float64)
# ---------------------------------------------------------------------------


def torch_twin(layer, torch):
    """A torch.nn module computing what ``layer`` computes, with copied weights."""
    nn = torch.nn
    if isinstance(layer, Conv2D):
        module = nn.Conv2d(
            layer.in_channels,
            layer.out_channels,
            layer.kernel_size,
            stride=layer.stride,
            padding=layer.padding,
            dilation=layer.dilation,
            groups=layer.groups,
            bias=layer.bias is not None,
        )
    elif isinstance(layer, Dense):
        module = nn.Linear(
            layer.in_features, layer.out_features, bias=layer.bias is not None
        )
    elif isinstance(layer, MaxPool2D):
        module = nn.MaxPool2d(
            layer.kernel_size, layer.stride, layer.padding, ceil_mode=layer.ceil_mode
        )
    elif isinstance(layer, AvgPool2D):
        module = nn.AvgPool2d(
            layer.kernel_size,
            layer.stride,
            layer.padding,
            ceil_mode=layer.ceil_mode,
            count_include_pad=layer.count_include_pad,
        )
    elif isinstance(layer, LeakyReLU):
        module = nn.LeakyReLU(layer.negative_slope)
    elif isinstance(layer, Softmax):
        module = nn.Softmax(dim=layer.axis)
    elif isinstance(layer, Reshape):
        module = nn.Unflatten(1, layer.shape)
    else:
        module = {
            ReLU: nn.ReLU,
            Sigmoid: nn.Sigmoid,
            Tanh: nn.Tanh,
            Flatten: nn.Flatten,
        }[type(layer)]()
    with torch.no_grad():
        for key, param in layer.params.items():
            getattr(module, key).copy_(torch.from_numpy(param))
    return module.double()


@pytest.mark.filterwarnings("ignore:Using padding='same':UserWarning")
@pytest.mark.parametrize(("name", "factory", "shape"), LAYER_CASES, ids=CASE_IDS)
def test_agrees_with_torch(name, factory, shape, rng, torch):
    layer = factory()
    if isinstance(layer, Reshape):
        # nn.Unflatten splits a flat axis; feed the layer flat samples too.
        shape = (shape[0], math.prod(shape[1:]))
    module = torch_twin(layer, torch)
    x = rng.standard_normal(shape)
    weights = rng.standard_normal(layer.forward(x).shape)

    x_torch = torch.tensor(x, requires_grad=True)
    y_torch = module(x_torch)
    (y_torch * torch.from_numpy(weights)).sum().backward()

    assert_close(layer.forward(x), y_torch.detach().numpy())
    assert_close(layer.backward(weights), x_torch.grad.numpy())
    for key in layer.params:
        assert_close(layer.grads[key], getattr(module, key).grad.numpy())


@pytest.mark.parametrize("target_kind", ["indices", "one_hot", "probabilities"])
def test_softmax_cross_entropy_agrees_with_torch(target_kind, rng, torch):
    logits = rng.standard_normal((6, 4)) * 3
    indices = rng.integers(0, 4, size=6)
    if target_kind == "indices":
        target, target_torch = indices, torch.from_numpy(indices)
    else:
        target = (
            one_hot(indices, 4)
            if target_kind == "one_hot"
            else rng.dirichlet(np.ones(4), size=6)
        )
        target_torch = torch.from_numpy(target)

    layer = SoftmaxCrossEntropy()
    probabilities = layer.forward(logits)
    loss = layer.cross_entropy(target)
    grad = layer.backward(target)

    logits_torch = torch.tensor(logits, requires_grad=True)
    loss_torch = torch.nn.functional.cross_entropy(logits_torch, target_torch)
    loss_torch.backward()

    assert_close(probabilities, torch.softmax(logits_torch, 1).detach().numpy())
    assert isinstance(loss, float)
    assert loss == pytest.approx(loss_torch.item(), rel=1e-12)
    assert_close(grad, logits_torch.grad.numpy())


# ---------------------------------------------------------------------------
# SGD update, parameters and dtypes
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    ("factory", "shape"),
    [
        (lambda dtype: Conv2D(2, 3, 3, padding=1, dtype=dtype, rng=0), (2, 2, 5, 5)),
        (lambda dtype: Dense(4, 3, dtype=dtype, rng=0), (5, 4)),
    ],
    ids=["conv", "dense"],
)
def test_learning_rate_applies_exact_sgd_step(factory, shape, dtype, rng):
    plain, stepped = factory(dtype), factory(dtype)
    x = rng.standard_normal(shape)
    grad_output = rng.standard_normal(plain.forward(x).shape)
    stepped.forward(x)
    before = {key: param.copy() for key, param in stepped.params.items()}
    weight_object = stepped.weight

    expected_input_grad = plain.backward(grad_output)
    grad_input = stepped.backward(grad_output, learning_rate=0.1)

    # The input gradient comes from the weights of the forward pass.
    np.testing.assert_array_equal(grad_input, expected_input_grad)
    lr = np.dtype(dtype).type(0.1)
    for key, param in stepped.params.items():
        assert param.dtype == dtype
        np.testing.assert_array_equal(param, before[key] - lr * stepped.grads[key])
        assert not np.array_equal(param, before[key])
    assert stepped.weight is weight_object
    assert stepped.params["weight"] is weight_object


@pytest.mark.parametrize(
    "factory",
    [lambda: Conv2D(2, 3, 3, rng=0), lambda: Dense(4, 3, rng=0)],
    ids=["conv", "dense"],
)
def test_float32_layer_converts_float64_input(factory, rng):
    layer = factory()
    shape = (2, 2, 5, 5) if isinstance(layer, Conv2D) else (3, 4)
    x = rng.standard_normal(shape)

    y = layer.forward(x)
    grad_input = layer.backward(np.ones(y.shape))

    assert y.dtype == np.float32
    assert grad_input.dtype == np.float32
    assert all(g.dtype == np.float32 for g in layer.grads.values())
    assert_close(y, layer.forward(x.astype(np.float32)), dtype=np.float32)


@pytest.mark.parametrize(
    "layer",
    [ReLU(), Sigmoid(), MaxPool2D(2), AvgPool2D(2), Flatten(), Dropout(0.5, rng=0)],
    ids=["relu", "sigmoid", "maxpool", "avgpool", "flatten", "dropout"],
)
def test_parameterless_layers_keep_float_dtypes_and_convert_integers(layer, rng):
    x = rng.standard_normal((2, 3, 4, 4))
    for dtype in (np.float32, np.float64):
        y = layer.forward(x.astype(dtype))
        assert y.dtype == dtype
        assert layer.backward(np.ones(y.shape)).dtype == dtype
    assert layer.forward(np.arange(96).reshape(2, 3, 4, 4)).dtype == np.float32


def test_parameters_are_the_params_arrays():
    layer = Conv2D(4, 6, (3, 2), groups=2, rng=0)
    assert layer.weight.shape == (6, 2, 3, 2)
    assert layer.bias.shape == (6,)
    assert layer.weight is layer.params["weight"]
    assert layer.bias is layer.params["bias"]
    assert list(layer.params) == ["weight", "bias"]
    assert layer.num_parameters() == 6 * 2 * 3 * 2 + 6

    dense = Dense(5, 3, bias=False, rng=0)
    assert dense.weight.shape == (3, 5)
    assert dense.bias is None
    assert list(dense.params) == ["weight"]


def test_assigned_parameters_replace_params_and_are_used(rng):
    layer = Dense(3, 2, dtype=np.float64, rng=0)
    weight = rng.standard_normal((2, 3))
    x = rng.standard_normal((4, 3))

    layer.weight = weight
    layer.bias = None

    assert layer.weight is weight
    assert layer.params["weight"] is weight
    assert "bias" not in layer.params
    np.testing.assert_allclose(layer.forward(x), x @ weight.T, rtol=1e-14)
    layer.backward(np.ones((4, 2)))
    assert set(layer.grads) == {"weight"}
    assert layer.get_config()["bias"] is False


def test_assigned_parameter_is_converted_to_the_layer_dtype(rng):
    layer = Conv2D(1, 2, 3, rng=0)
    layer.weight = rng.standard_normal((2, 1, 3, 3))
    assert layer.weight.dtype == np.float32
    assert layer.params["weight"] is layer.weight


@pytest.mark.parametrize(
    ("value", "error", "match"),
    [
        (
            np.zeros((3, 2)),
            ValueError,
            r"weight must have shape \(2, 3\), got \(3, 2\)",
        ),
        ([[0.0] * 3] * 2, TypeError, "weight must be a numpy.ndarray"),
        (None, TypeError, "weight must be a numpy.ndarray, got None"),
        (np.zeros((2, 3), dtype=complex), TypeError, "weight must have a real"),
    ],
)
def test_bad_parameter_assignment_raises(value, error, match):
    layer = Dense(3, 2, rng=0)
    with pytest.raises(error, match=match):
        layer.weight = value


# ---------------------------------------------------------------------------
# Unbatched input
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("factory", "shape"),
    [
        (lambda: Conv2D(2, 3, 3, padding=1, dtype=np.float64, rng=0), (2, 5, 4)),
        (lambda: Dense(4, 3, dtype=np.float64, rng=0), (4,)),
        (lambda: MaxPool2D(2), (3, 4, 5)),
        (lambda: AvgPool2D(3, 1, 1), (2, 4, 4)),
        (ReLU, (3, 4, 4)),
    ],
    ids=["conv", "dense", "maxpool", "avgpool", "relu"],
)
def test_unbatched_input_matches_a_batch_of_one(factory, shape, rng):
    single, batch = factory(), factory()
    x = rng.standard_normal(shape)

    y = single.forward(x)
    y_batch = batch.forward(x[np.newaxis])
    grad_output = rng.standard_normal(y.shape)
    grad_input = single.backward(grad_output)
    grad_batch = batch.backward(grad_output[np.newaxis])

    assert_close(y, y_batch[0])
    assert_close(grad_input, grad_batch[0])
    for key in single.grads:
        assert_close(single.grads[key], batch.grads[key])


def test_softmax_cross_entropy_unbatched(rng):
    logits = rng.standard_normal(5)
    layer, batch = SoftmaxCrossEntropy(), SoftmaxCrossEntropy()

    probabilities = layer.forward(logits)
    batch.forward(logits[np.newaxis])

    assert probabilities.shape == (5,)
    assert layer.cross_entropy(3) == pytest.approx(batch.cross_entropy(np.array([3])))
    assert_close(layer.backward(3), batch.backward(np.array([3]))[0])
    assert_close(layer.backward(one_hot(3, 5)), probabilities - one_hot(3, 5))


def test_non_contiguous_input_gives_the_contiguous_result(rng):
    layer = Conv2D(2, 3, 3, dtype=np.float64, rng=0)
    x = rng.standard_normal((2, 2, 8, 10))
    view = x[:, :, ::-2, ::2]
    assert_close(layer.forward(view), layer.forward(np.ascontiguousarray(view)))


# ---------------------------------------------------------------------------
# Dropout
# ---------------------------------------------------------------------------


def test_dropout_training_zeroes_a_fraction_p_and_scales_the_rest(rng):
    layer = Dropout(0.3, rng=0)
    x = rng.uniform(1.0, 2.0, size=(200, 500))

    y = layer.forward(x)
    kept = y != 0

    assert abs(1 - kept.mean() - 0.3) < 0.005
    np.testing.assert_allclose(y[kept], x[kept] / 0.7, rtol=1e-15)
    assert abs(y.mean() / x.mean() - 1) < 0.01


def test_dropout_backward_uses_the_forward_mask(rng):
    layer = Dropout(0.5, rng=1)
    x = rng.uniform(1.0, 2.0, size=(4, 50))
    grad_output = rng.standard_normal((4, 50))

    kept = layer.forward(x) != 0
    grad_input = layer.backward(grad_output)

    np.testing.assert_array_equal(grad_input, np.where(kept, grad_output * 2.0, 0.0))


def test_dropout_eval_mode_is_the_identity(rng):
    layer = Dropout(0.9, rng=0).eval()
    x = rng.standard_normal((3, 8))
    grad_output = rng.standard_normal((3, 8))

    np.testing.assert_array_equal(layer.forward(x), x)
    np.testing.assert_array_equal(layer.backward(grad_output), grad_output)
    layer.train()
    assert np.count_nonzero(layer.forward(x)) < x.size


def test_dropout_seed_reproduces_masks_and_p_zero_is_identity(rng):
    x = rng.standard_normal((10, 10))
    first, second = Dropout(0.5, rng=42), Dropout(0.5, rng=42)
    outputs = [first.forward(x) for _ in range(2)]

    np.testing.assert_array_equal(outputs[0], second.forward(x))
    np.testing.assert_array_equal(outputs[1], second.forward(x))
    assert not np.array_equal(outputs[0], outputs[1])
    np.testing.assert_array_equal(Dropout(0.0, rng=0).forward(x), x)


# ---------------------------------------------------------------------------
# SoftmaxCrossEntropy
# ---------------------------------------------------------------------------


def test_softmax_cross_entropy_index_and_one_hot_targets_agree(rng):
    logits = rng.standard_normal((5, 3)).astype(np.float32)
    indices = np.array([0, 2, 1, 1, 0])
    layer = SoftmaxCrossEntropy()

    probabilities = layer.forward(logits)

    assert probabilities.dtype == np.float32
    assert_close(probabilities.sum(axis=1), np.ones(5, dtype=np.float32))
    assert layer.cross_entropy(indices) == pytest.approx(
        layer.cross_entropy(one_hot(indices, 3)), rel=1e-6
    )
    expected = (probabilities - one_hot(indices, 3)) / 5
    assert_close(layer.backward(indices), expected, dtype=np.float32)
    assert_close(layer.backward(one_hot(indices, 3)), expected, dtype=np.float32)


def test_softmax_cross_entropy_loss_is_finite_for_huge_logits():
    layer = SoftmaxCrossEntropy()
    layer.forward(np.array([[1e4, -1e4, 0.0]]))
    assert layer.cross_entropy(np.array([1])) == pytest.approx(2e4)


@pytest.mark.parametrize(
    ("target", "error", "match"),
    [
        (np.array([0, 3]), ValueError, r"y_true must hold class indices in \[0, 3\)"),
        (np.array([0, -1]), ValueError, "got -1"),
        (np.array([0.0, 1.0]), TypeError, "integer dtype.*astype"),
        (np.zeros((2, 4)), ValueError, r"y_true must have shape \(2,\)"),
        ([0, 1], TypeError, "y_true must be a numpy.ndarray"),
    ],
)
def test_softmax_cross_entropy_bad_targets_raise(target, error, match):
    layer = SoftmaxCrossEntropy()
    layer.forward(np.zeros((2, 3)))
    with pytest.raises(error, match=match):
        layer.backward(target)
    with pytest.raises(error, match=match):
        layer.cross_entropy(target)


def test_softmax_cross_entropy_before_forward_raises():
    with pytest.raises(RuntimeError, match="before forward"):
        SoftmaxCrossEntropy().backward(np.array([0]))
    with pytest.raises(RuntimeError, match="before forward"):
        SoftmaxCrossEntropy().cross_entropy(np.array([0]))


# ---------------------------------------------------------------------------
# Initialisation
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("layer", "fan_in"),
    [
        (Dense(300, 400, rng=0), 300),
        (Conv2D(8, 64, 5, groups=2, rng=0), 4 * 5 * 5),
        (Conv2D(3, 500, (2, 3), dtype=np.float64, rng=0), 3 * 2 * 3),
    ],
    ids=["dense", "conv_groups", "conv_rect"],
)
def test_default_init_is_uniform_within_one_over_sqrt_fan_in(layer, fan_in):
    bound = 1 / math.sqrt(fan_in)
    weight = layer.weight.astype(np.float64)
    assert np.abs(weight).max() <= bound
    assert np.abs(weight).max() > 0.99 * bound
    assert abs(weight.mean()) < 0.02 * bound
    assert weight.var() == pytest.approx(bound**2 / 3, rel=0.03)
    assert np.abs(layer.bias).max() <= bound
    assert np.abs(layer.bias).max() > 0.9 * bound


def test_init_seeds_are_reproducible_and_generators_advance():
    first, second = Dense(20, 10, rng=7), Dense(20, 10, rng=7)
    np.testing.assert_array_equal(first.weight, second.weight)
    np.testing.assert_array_equal(first.bias, second.bias)
    assert not np.array_equal(first.weight, Dense(20, 10, rng=8).weight)

    generator = np.random.default_rng(3)
    a = init.kaiming_uniform((4, 5), rng=generator)
    b = init.kaiming_uniform((4, 5), rng=generator)
    assert not np.array_equal(a, b)
    np.testing.assert_array_equal(a, init.kaiming_uniform((4, 5), rng=3))


def test_fans_and_init_helpers():
    assert init.fan_in_and_fan_out((6, 4)) == (4, 6)
    assert init.fan_in_and_fan_out((16, 3, 5, 2)) == (30, 160)

    relu = init.kaiming_uniform((1000, 50), nonlinearity="relu", rng=0)
    assert relu.dtype == np.float32
    assert np.abs(relu).max() <= math.sqrt(6 / 50)
    assert np.abs(relu).max() > 0.99 * math.sqrt(6 / 50)
    fan_out = init.kaiming_uniform(
        (10, 1000), mode="fan_out", nonlinearity="linear", dtype=np.float64, rng=0
    )
    assert fan_out.dtype == np.float64
    assert np.abs(fan_out).max() <= math.sqrt(3 / 10)
    assert np.abs(fan_out).max() > 0.99 * math.sqrt(3 / 10)

    xavier = init.xavier_uniform((300, 100), gain=2.0, dtype="float64", rng=0)
    assert np.abs(xavier).max() <= 2.0 * math.sqrt(6 / 400)
    assert np.abs(xavier).max() > 0.99 * 2.0 * math.sqrt(6 / 400)

    zeros = init.zeros((2, 3), dtype=np.float64)
    assert zeros.dtype == np.float64
    assert not zeros.any()


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: init.kaiming_uniform((5,)), ValueError, "at least 2 dimensions"),
        (lambda: init.kaiming_uniform((3, 0)), ValueError, "non-zero fan_in"),
        (lambda: init.kaiming_uniform((3, 4), mode="in"), ValueError, "mode"),
        (lambda: init.xavier_uniform((3, 4), dtype=np.int32), TypeError, "dtype"),
        (lambda: init.zeros((2, -1)), ValueError, "shape"),
        (lambda: init.zeros((2, 3), rng="seed"), TypeError, "rng"),
        (lambda: init.zeros((2, 3), rng=-1), ValueError, "rng"),
        (lambda: init.uniform((2,), -1.0), ValueError, "bound"),
    ],
)
def test_init_bad_arguments_raise(call, error, match):
    with pytest.raises(error, match=match):
        call()


# ---------------------------------------------------------------------------
# Configuration and output shapes
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "factory", "shape"), LAYER_CASES, ids=CASE_IDS)
def test_output_shape_matches_forward(name, factory, shape, rng):
    layer = factory()
    y = layer.forward(rng.standard_normal(shape))
    assert layer.output_shape(shape[1:]) == y.shape[1:]


@pytest.mark.parametrize(
    "layer",
    [
        Conv2D(4, 6, (3, 2), stride=2, padding=(1, 0), groups=2, dtype=np.float64),
        Conv2D(1, 2, 3, padding="same", bias=False),
        Dense(3, 2, bias=False, dtype="float64"),
        MaxPool2D(3, 2, 1, ceil_mode=True),
        AvgPool2D((2, 3), count_include_pad=False),
        ReLU(),
        LeakyReLU(0.3),
        Sigmoid(),
        Tanh(),
        Softmax(axis=1),
        Flatten(),
        Reshape(2, -1),
        Dropout(0.25),
        SoftmaxCrossEntropy(),
    ],
    ids=lambda layer: type(layer).__name__,
)
def test_get_config_is_json_and_rebuilds_the_layer(layer):
    config = layer.get_config()
    loaded = json.loads(json.dumps(config))
    rebuilt = type(layer)(**loaded)

    assert rebuilt.get_config() == config
    assert {k: p.shape for k, p in rebuilt.params.items()} == {
        k: p.shape for k, p in layer.params.items()
    }
    assert repr(layer).startswith(type(layer).__name__ + "(")


def test_get_config_values():
    assert Conv2D(4, 6, (3, 2), stride=2, groups=2, dtype=np.float64).get_config() == {
        "in_channels": 4,
        "out_channels": 6,
        "kernel_size": [3, 2],
        "stride": 2,
        "padding": 0,
        "dilation": 1,
        "groups": 2,
        "bias": True,
        "dtype": "float64",
    }
    assert Dense(3, 2).get_config()["dtype"] == "float32"
    assert MaxPool2D(2).get_config() == {
        "kernel_size": 2,
        "stride": 2,
        "padding": 0,
        "ceil_mode": False,
    }
    assert Reshape((1, 28, 28)).get_config() == {"shape": [1, 28, 28]}
    assert Dropout(0.25).get_config() == {"p": 0.25}


def test_output_shape_rejects_mismatched_samples():
    with pytest.raises(ValueError, match="input must have 3 channels"):
        Conv2D(3, 4, 3).output_shape((4, 8, 8))
    with pytest.raises(ValueError, match="too small"):
        Conv2D(3, 4, 5).output_shape((3, 4, 8))
    with pytest.raises(ValueError, match="input must have 5 features"):
        Dense(5, 2).output_shape((6,))
    with pytest.raises(ValueError, match="cannot be reshaped"):
        Reshape(3, 3).output_shape((2, 4))
    with pytest.raises(ValueError, match="input_shape"):
        MaxPool2D(2).output_shape((4, 4))


# ---------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: Conv2D(0, 4, 3), ValueError, "in_channels must be >= 1"),
        (lambda: Conv2D(3.0, 4, 3), TypeError, "in_channels must be an int"),
        (lambda: Conv2D(3, 4, 0), ValueError, "kernel_size must be >= 1"),
        (lambda: Conv2D(3, 4, (3, 3, 3)), ValueError, "kernel_size"),
        (lambda: Conv2D(3, 4, 3, stride=0), ValueError, "stride"),
        (lambda: Conv2D(3, 4, 3, padding=-1), ValueError, "padding"),
        (lambda: Conv2D(3, 4, 3, padding="full"), ValueError, "padding must be"),
        (lambda: Conv2D(3, 4, 3, 2, "same"), ValueError, "padding='same' needs"),
        (lambda: Conv2D(3, 4, 3, dilation=0), ValueError, "dilation"),
        (lambda: Conv2D(3, 4, 3, groups=2), ValueError, "in_channels must be div"),
        (lambda: Conv2D(4, 3, 3, groups=2), ValueError, "out_channels must be div"),
        (lambda: Conv2D(3, 4, 3, bias=1), TypeError, "bias must be a bool"),
        (lambda: Conv2D(3, 4, 3, dtype=np.int32), TypeError, "dtype must be float32"),
        (lambda: Dense(3, 4, dtype="float16"), TypeError, "dtype must be float32"),
        (lambda: Dense(3, 4, dtype=None), TypeError, "dtype"),
        (lambda: Dense(0, 4), ValueError, "in_features"),
        (lambda: Dense(3, True), TypeError, "out_features"),
        (lambda: Dense(3, 4, rng=1.5), TypeError, "rng"),
        (lambda: MaxPool2D(0), ValueError, "kernel_size"),
        (lambda: MaxPool2D(2, stride=0), ValueError, "stride"),
        (lambda: MaxPool2D(2, padding=2), ValueError, "padding must be at most half"),
        (lambda: AvgPool2D(2, ceil_mode="no"), TypeError, "ceil_mode"),
        (lambda: AvgPool2D(2, count_include_pad=None), TypeError, "count_include"),
        (lambda: LeakyReLU("0.1"), TypeError, "negative_slope"),
        (lambda: Softmax(axis=1.0), TypeError, "axis"),
        (lambda: Dropout(1.0), ValueError, "p must be < 1"),
        (lambda: Dropout(-0.1), ValueError, "p must be >= 0"),
        (lambda: Dropout("half"), TypeError, "p must be a real"),
        (lambda: Reshape(), ValueError, "shape must be a non-empty"),
        (lambda: Reshape(2, 0), ValueError, "shape must hold sizes"),
        (lambda: Reshape(-1, -1), ValueError, "at most one -1"),
        (lambda: Reshape(2.0), TypeError, "shape must hold ints"),
        (lambda: Reshape(2, shape=(2,)), TypeError, "either"),
    ],
)
def test_bad_constructor_arguments_raise(call, error, match):
    with pytest.raises(error, match=match):
        call()


@pytest.mark.parametrize(
    ("layer", "x", "error", "match"),
    [
        (
            Conv2D(3, 4, 3),
            np.zeros((2, 4, 8, 8)),
            ValueError,
            "input must have 3 channels.*got 4",
        ),
        (Conv2D(3, 4, 3), np.zeros((3, 8)), ValueError, "input must be 3-d or 4-d"),
        (Conv2D(3, 4, 5), np.zeros((3, 4, 4)), ValueError, "input of spatial size"),
        (Conv2D(3, 4, 3), np.zeros((3, 8, 8), complex), TypeError, "input must have"),
        (Dense(5, 2), np.zeros((2, 4)), ValueError, "input must have 5 features.*4"),
        (Dense(5, 2), np.zeros((2, 2, 5)), ValueError, "input must be 1-d or 2-d"),
        (Dense(5, 2), [0.0] * 5, TypeError, "input must be a numpy.ndarray"),
        (MaxPool2D(3), np.zeros((1, 1, 2, 5)), ValueError, "too small"),
        (AvgPool2D(2), np.zeros((4, 4)), ValueError, "input must be 3-d or 4-d"),
        (ReLU(), np.array(["a"]), TypeError, "input must have a real"),
        (Softmax(axis=2), np.zeros((2, 3)), ValueError, "axis=2 is out of range"),
        (Reshape(4, 4), np.zeros((2, 3, 5)), ValueError, "cannot be reshaped"),
        (SoftmaxCrossEntropy(), np.zeros((2, 3, 4)), ValueError, "logits must be"),
    ],
)
def test_bad_input_raises(layer, x, error, match):
    with pytest.raises(error, match=match):
        layer.forward(x)


@pytest.mark.parametrize(("name", "factory", "shape"), LAYER_CASES, ids=CASE_IDS)
def test_backward_before_forward_and_wrong_gradient_shape_raise(
    name, factory, shape, rng
):
    layer = factory()
    with pytest.raises(RuntimeError, match="backward was called before forward"):
        layer.backward(np.zeros(shape))

    y = layer.forward(rng.standard_normal(shape))
    with pytest.raises(ValueError, match="output_gradient must have the shape"):
        layer.backward(np.zeros((*y.shape, 1)))
    with pytest.raises(ValueError, match="learning_rate"):
        layer.backward(np.zeros(y.shape), learning_rate=-1.0)
