"""NaN, inf and overflow pass on without a NumPy RuntimeWarning, in every path.

The Numba kernels give IEEE results silently. The paths that compute with NumPy
(the matrix products of ``linear`` and ``conv2d``, the float64 -> float32 casts
of the layers, the losses and the optimisers) must do the same: under
``warnings.simplefilter("error")`` (``python -W error``, pytest's
``filterwarnings = error``) a NumPy warning would otherwise become the exception
a user sees, in place of a NaN output or of ``NonFiniteLossError``. Every test
here runs with warnings turned into errors and checks the IEEE result.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

import fastcnn
from fastcnn import functional as F
from fastcnn.layers import Conv2D, Dense, Flatten, MaxPool2D, ReLU
from fastcnn.losses import BCELoss, CrossEntropyLoss, MSELoss
from fastcnn.models import NonFiniteLossError, Sequential
from fastcnn.optim import SGD, Adam

pytestmark = pytest.mark.filterwarnings("error")

DTYPES = [np.float32, np.float64]
INF = math.inf
NAN = math.nan


def _big(dtype) -> float:
    """A finite value whose double overflows ``dtype``."""
    return float(np.finfo(dtype).max) * 0.75


# ---------------------------------------------------------------------------
# The matrix products
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
def test_linear_products_give_ieee_results_without_a_warning(dtype):
    big = _big(dtype)
    x = np.array([[INF, -INF, 0, 1, 2], [big] * 5], dtype)
    weight = np.ones((3, 5), dtype)
    y, ctx = F.linear_forward(x, weight)
    # inf - inf is NaN; five times ``big`` overflows to inf.
    np.testing.assert_array_equal(y, [[NAN] * 3, [INF] * 3])

    grad_output = np.array([[1.0] * 3, [2.0] * 3], dtype)
    grad_input, grad_weight, _ = F.linear_backward(grad_output, ctx)
    np.testing.assert_array_equal(grad_input, [[3.0] * 5, [6.0] * 5])
    # Column by column: inf + 2 * big = inf, -inf + 2 * big = -inf, and
    # 0 + 2 * big, 1 + 2 * big, 2 + 2 * big overflow to inf.
    np.testing.assert_array_equal(grad_weight, [[INF, -INF, INF, INF, INF]] * 3)


# Convolutions computed through matrix products (not 3x3 or 5x5 with stride 1).
PRODUCT_CONVS = [
    {"kernel": 4, "stride": 1, "padding": 0},
    {"kernel": 3, "stride": 2, "padding": 0},
]


@pytest.mark.parametrize("setting", PRODUCT_CONVS, ids=["4x4", "stride2"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_conv2d_products_give_ieee_results_without_a_warning(dtype, setting):
    big, k = _big(dtype), setting["kernel"]
    x = np.full((1, 1, 7, 7), big, dtype)
    weight = np.ones((1, 1, k, k), dtype)
    y, ctx = F.conv2d_forward(
        x, weight, np.zeros(1, dtype), setting["stride"], setting["padding"]
    )
    # Every window sums at least nine ``big``: inf.
    assert y.size > 1
    np.testing.assert_array_equal(y, np.full(y.shape, INF))

    grad_input, grad_weight, grad_bias = F.conv2d_backward(np.ones_like(y), ctx)
    # Each weight tap sums ``big`` over all output positions (more than one).
    np.testing.assert_array_equal(grad_weight, np.full(weight.shape, INF))
    np.testing.assert_array_equal(grad_bias, [y.size])
    assert np.isfinite(grad_input).all()

    x[0, 0, 0, 0], x[0, 0, 0, 1] = INF, -INF
    np.testing.assert_array_equal(F.conv2d(x, weight)[0, 0, 0, 0], NAN)


def test_conv2d_rounds_an_overflowing_float32_bias_gradient_to_inf_silently():
    # The bias gradient is summed in float64; the sum of 2 * 4 * 4 values of
    # ``big`` is beyond float32 and becomes inf when rounded to it.
    big = _big(np.float32)
    x = np.ones((2, 1, 6, 6), np.float32)
    y, ctx = F.conv2d_forward(
        x, np.ones((1, 1, 3, 3), np.float32), np.zeros(1, np.float32)
    )
    _, _, grad_bias = F.conv2d_backward(np.full(y.shape, big, np.float32), ctx)
    assert grad_bias.dtype == np.float32
    np.testing.assert_array_equal(grad_bias, [INF])


# ---------------------------------------------------------------------------
# Layers: the cast to the layer's dtype and the SGD step of backward
# ---------------------------------------------------------------------------


LAYERS = [
    (
        "Conv2D",
        lambda dtype=np.float32: Conv2D(1, 2, 3, rng=0, dtype=dtype),
        (2, 1, 5, 5),
    ),
    ("Dense", lambda dtype=np.float32: Dense(4, 3, rng=0, dtype=dtype), (2, 4)),
]


@pytest.mark.parametrize(
    ("factory", "shape"), [c[1:] for c in LAYERS], ids=["conv", "dense"]
)
def test_float64_values_beyond_float32_become_inf_in_a_layer_silently(factory, shape):
    layer = factory()
    x = np.ones(shape)
    x[0] = 1e300
    with np.errstate(over="ignore"):
        cast = x.astype(np.float32)
    assert np.isinf(cast[0]).all()
    np.testing.assert_array_equal(layer.forward(x), factory().forward(cast))

    # The output gradient and an assigned parameter are cast the same way.
    y = layer.forward(np.ones(shape))
    grad = layer.backward(np.full(y.shape, -1e300))
    assert not np.isfinite(grad).any()  # sums of +-inf: inf or NaN
    layer.weight = np.full(layer.weight.shape, 1e300)
    assert layer.weight.dtype == np.float32
    np.testing.assert_array_equal(layer.weight, np.full(layer.weight.shape, INF))


@pytest.mark.parametrize(
    ("factory", "shape"), [c[1:] for c in LAYERS], ids=["conv", "dense"]
)
@pytest.mark.parametrize("dtype", DTYPES)
def test_an_overflowing_sgd_step_in_backward_gives_inf_silently(factory, shape, dtype):
    layer = factory(dtype)
    y = layer.forward(np.ones(shape, dtype))
    # A finite learning rate whose product with the gradient overflows.
    lr = _big(dtype)
    layer.backward(np.full(y.shape, 4.0, dtype), lr)
    # Every input is 1 and every output gradient 4: each weight gradient is a
    # positive sum, so every weight steps to -inf.
    np.testing.assert_array_equal(layer.weight, np.full(layer.weight.shape, -INF))
    np.testing.assert_array_equal(layer.bias, np.full(layer.bias.shape, -INF))


# ---------------------------------------------------------------------------
# Losses
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
def test_mse_loss_of_inf_and_of_overflowing_errors_without_a_warning(dtype):
    loss = MSELoss()
    value = loss(np.array([INF, 1.0], dtype), np.array([INF, 1.0], dtype))
    assert math.isnan(value)  # inf - inf
    np.testing.assert_array_equal(loss.backward(), np.array([NAN, 0.0], dtype))

    # An error of sqrt(max) * 2 squares to beyond the dtype's range.
    huge = math.sqrt(float(np.finfo(dtype).max)) * 2
    assert loss(np.array([huge], dtype), np.zeros(1, dtype)) == INF
    assert MSELoss("sum")(np.array([huge, huge], dtype), np.zeros(2, dtype)) == INF


def test_mse_loss_casts_a_float64_target_beyond_float32_to_inf_silently():
    loss = MSELoss("none")
    losses = loss(np.zeros(2, np.float32), np.array([1e300, 1.0]))
    np.testing.assert_array_equal(losses, np.array([INF, 1.0], np.float32))


@pytest.mark.parametrize("make", [MSELoss, BCELoss], ids=["mse", "bce"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_loss_backward_with_an_overflowing_grad_output_gives_inf_silently(dtype, make):
    loss = make()
    loss(np.array([0.25], dtype), np.array([1.0], dtype))
    gradient = loss.backward()
    assert gradient[0] <= -1.5  # -1.5 for MSE, -4 for BCE
    np.testing.assert_array_equal(loss.backward(_big(dtype)), [-INF])


def test_loss_backward_casts_a_float64_grad_output_array_to_inf_silently():
    loss = MSELoss("none")
    loss(np.array([0.5, 0.5], np.float32), np.array([1.0, 1.0], np.float32))
    got = loss.backward(np.array([1e300, 1.0]))
    np.testing.assert_array_equal(got, np.array([-INF, -1.0], np.float32))


def test_cross_entropy_whose_sum_overflows_float32_is_inf_silently():
    # Each row's loss is about ``big`` (its target logit is 0, another is big);
    # three of them sum to beyond float32 in the float64 total.
    big = _big(np.float32)
    logits = np.array([[big, 0.0]] * 3, np.float32)
    target = np.ones(3, np.int64)
    rows = F.cross_entropy(logits, target, reduction="none")
    assert np.isfinite(rows).all()
    assert F.cross_entropy(logits, target, reduction="sum") == INF
    assert CrossEntropyLoss("sum")(logits, target) == INF


def test_cross_entropy_loss_casts_float64_probabilities_to_inf_silently():
    # The target inf times the logit 0 is NaN.
    logits = np.zeros((1, 2), np.float32)
    value = CrossEntropyLoss()(logits, np.array([[1e300, 0.0]]))
    assert math.isnan(value)


# ---------------------------------------------------------------------------
# Optimisers
# ---------------------------------------------------------------------------


def _dense(dtype=np.float32) -> Dense:
    layer = Dense(2, 2, rng=0, dtype=dtype)
    layer.weight = np.ones((2, 2), dtype)
    layer.bias = np.zeros(2, dtype)
    return layer


def test_sgd_casts_a_float64_gradient_beyond_float32_to_inf_silently():
    layer = _dense()
    layer.grads = {"weight": np.full((2, 2), 1e300), "bias": np.zeros(2)}
    SGD([layer], lr=0.5).step()
    np.testing.assert_array_equal(layer.weight, np.full((2, 2), -INF))
    np.testing.assert_array_equal(layer.bias, np.zeros(2))


@pytest.mark.parametrize("dtype", DTYPES)
def test_adam_with_an_overflowing_squared_gradient_steps_silently(dtype):
    # g * g overflows to inf, so the step m / (sqrt(inf) + eps) is exactly 0.
    layer = _dense(dtype)
    grad = np.full((2, 2), math.sqrt(float(np.finfo(dtype).max)) * 100, dtype)
    layer.grads = {"weight": grad, "bias": np.zeros(2, dtype)}
    optimizer = Adam([layer], lr=0.1)
    optimizer.step()
    assert np.isinf(optimizer.state["layer0.weight"]["exp_avg_sq"]).all()
    np.testing.assert_array_equal(layer.weight, np.ones((2, 2)))


# ---------------------------------------------------------------------------
# Sequential: inference on inf and a diverging fit
# ---------------------------------------------------------------------------


def _data(n: int = 16):
    rng = np.random.default_rng(0)
    return rng.random((n, 1, 28, 28)).astype(np.float32), np.arange(n) % 10


def test_predict_and_evaluate_of_inf_input_give_nan_silently():
    x, y = _data()
    x[3, 0, 10, 10:12] = INF, -INF
    # The dense layer's product meets inf - inf in sample 3.
    model = Sequential([Flatten(), Dense(784, 10, rng=0)])
    out = model.predict(x)
    # inf * w1 - inf * w2: inf where the two weights differ in sign, else NaN.
    assert not np.isfinite(out[3]).any() and np.isnan(out[3]).any()
    assert np.isfinite(np.delete(out, 3, axis=0)).all()
    loss, _ = model.evaluate(x, y)
    assert math.isnan(loss)


@pytest.mark.parametrize("optimizer", [SGD, Adam])
def test_a_diverging_fit_under_warnings_as_errors_raises_non_finite_loss(optimizer):
    x, y = _data()
    model = fastcnn.lenet(rng=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(NonFiniteLossError) as caught:
            model.fit(
                x,
                y,
                optimizer=optimizer(model, lr=1e30),
                epochs=3,
                batch_size=8,
                shuffle=False,
                verbose=0,
            )
    assert caught.value.epoch == 1 and caught.value.step == 2


def test_a_diverging_regression_fit_raises_non_finite_loss_without_a_warning():
    x, _ = _data()
    model = Sequential(
        [
            Conv2D(1, 2, 5, stride=2, rng=0),
            ReLU(),
            MaxPool2D(2),
            Flatten(),
            Dense(72, 1, rng=1),
        ]
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(NonFiniteLossError):
            model.fit(
                x,
                np.ones((len(x), 1), np.float32),
                loss=MSELoss(),
                optimizer=SGD(model, lr=1e30, momentum=0.9),
                epochs=3,
                batch_size=8,
                shuffle=False,
                verbose=0,
            )


def test_dropout_and_normalize_pass_overflow_on_without_a_warning():
    big = np.full((2, 3), 3e38, np.float32)
    dropout = fastcnn.Dropout(0.5, rng=0)
    normalize = fastcnn.Normalize(mean=-3e38, std=0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y = dropout.forward(big)
        grad = dropout.backward(big)
        z = normalize.forward(big)
        grad_z = normalize.backward(big)
    kept = y != 0
    assert kept.any() and np.isposinf(y[kept]).all()
    assert np.isposinf(grad[kept]).all() and (grad[~kept] == 0).all()
    assert np.isposinf(z).all() and np.isposinf(grad_z).all()
