"""Numbers that go wrong: NaN, inf, huge logits and divergent training.

Each test opens with the failure it guards against. The rule throughout: a NaN
or an infinity in the input is never hidden. Every op gives NaN exactly where
its float64 reference (and PyTorch) gives NaN, and +-inf where they give +-inf;
the values around them stay finite and correct. Infinities that an op maps to a
finite value by its definition (``relu(-inf) = 0``, ``sigmoid(inf) = 1``, a max
window that also holds a larger number, a softmax probability of ``exp(-inf) =
0``) do so in the reference too.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from conftest import assert_close
from hypothesis import given
from hypothesis import strategies as st

from fastcnn import functional as F
from fastcnn._validation import check_fits_dtype
from fastcnn.layers import (
    Conv2D,
    Dense,
    Flatten,
    MaxPool2D,
    ReLU,
    Sigmoid,
    SoftmaxCrossEntropy,
    Tanh,
)
from fastcnn.losses import BCELoss, CrossEntropyLoss, MSELoss
from fastcnn.models import NonFiniteLossError, Sequential
from fastcnn.optim import SGD, Adam
from fastcnn.reference import activations as R_act
from fastcnn.reference import conv as R_conv
from fastcnn.reference import dense as R_dense
from fastcnn.reference import pooling as R_pool
from fastcnn.reference import softmax as R_soft

DTYPES = [np.float32, np.float64]
REDUCTIONS = ["mean", "sum", "none"]
SPECIALS = [math.nan, math.inf, -math.inf]


def assert_same_non_finite(actual: np.ndarray, expected: np.ndarray, dtype) -> None:
    """NaN and +-inf exactly where ``expected`` has them; the rest close to it."""
    actual = np.asarray(actual)
    expected = np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape
    assert actual.dtype == np.dtype(dtype)
    wide = actual.astype(np.float64)
    np.testing.assert_array_equal(np.isnan(wide), np.isnan(expected))
    np.testing.assert_array_equal(np.isposinf(wide), np.isposinf(expected))
    np.testing.assert_array_equal(np.isneginf(wide), np.isneginf(expected))
    finite = np.isfinite(expected)
    assert_close(actual[finite], expected[finite], dtype, scale=10.0)


def _with(x: np.ndarray, index: tuple[int, ...], value: float) -> np.ndarray:
    x = x.copy()
    x[index] = value
    return x


@pytest.fixture
def quiet():
    """Silence NumPy's invalid-value warnings raised by the float64 references."""
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        yield


# ---------------------------------------------------------------------------
# NaN and inf propagate through every op
# ---------------------------------------------------------------------------

CONV_SETTINGS = [
    {},
    {"stride": 2, "padding": 1},
    {"padding": "same", "dilation": 2},
    {"groups": 2},
]


@pytest.mark.parametrize("value", SPECIALS, ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("settings", CONV_SETTINGS, ids=["plain", "s2p1", "same", "g2"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_conv2d_propagates_non_finite_input(dtype, settings, value, rng, quiet):
    # Guards against a non-finite input value being dropped by the column matrix
    # or the matrix product, or leaking into windows that do not hold it.
    groups = settings.get("groups", 1)
    x = _with(rng.standard_normal((2, 4, 7, 6)), (0, 1, 3, 2), value).astype(dtype)
    weight = rng.standard_normal((4, 4 // groups, 3, 3)).astype(dtype)
    bias = rng.standard_normal(4).astype(dtype)

    y = F.conv2d(x, weight, bias, **settings)
    expected = R_conv.conv2d(x, weight, bias, **settings)
    assert not np.isfinite(expected).all()
    assert_same_non_finite(y, expected, dtype)
    assert np.isfinite(y[1]).all()


@pytest.mark.parametrize("where", ["weight", "bias"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_conv2d_propagates_nan_parameters(dtype, where, rng, quiet):
    x = rng.standard_normal((2, 2, 5, 5)).astype(dtype)
    weight = rng.standard_normal((3, 2, 3, 3)).astype(dtype)
    bias = rng.standard_normal(3).astype(dtype)
    if where == "weight":
        weight[1, 0, 2, 1] = np.nan
    else:
        bias[1] = np.nan

    y = F.conv2d(x, weight, bias, padding=1)
    assert np.isnan(y[:, 1]).all()
    assert np.isfinite(y[:, [0, 2]]).all()


@pytest.mark.parametrize("value", SPECIALS, ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize(
    "settings",
    [(2, None, 0, False), (3, 1, 1, False), (2, 2, 1, True)],
    ids=["k2", "k3s1p1", "k2p1ceil"],
)
@pytest.mark.parametrize("dtype", DTYPES)
def test_max_pool2d_propagates_non_finite_input(dtype, settings, value, rng):
    # Guards against a NaN losing the comparison with its neighbours (every
    # comparison with NaN is false) and so vanishing from the maximum.
    x = _with(rng.standard_normal((2, 3, 6, 5)), (1, 2, 2, 3), value).astype(dtype)
    y = F.max_pool2d(x, *settings)
    expected = R_pool.max_pool2d(x, *settings)
    if value != -math.inf:
        assert not np.isfinite(expected).all()
    assert_same_non_finite(y, expected, dtype)


@pytest.mark.parametrize("position", ["first", "middle", "last"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_max_pool2d_window_holding_nan_is_nan_wherever_it_sits(dtype, position):
    window = np.array([[3.0, 1.0], [2.0, 5.0]])
    spot = {"first": (0, 0), "middle": (0, 1), "last": (1, 1)}[position]
    window[spot] = np.nan
    x = np.tile(window, (1, 1, 2, 2)).astype(dtype)
    y, ctx = F.max_pool2d_forward(x, 2)
    assert np.isnan(y).all()
    grad = F.max_pool2d_backward(np.ones(y.shape, dtype), ctx)
    # The gradient goes to the NaN, the element that was selected.
    assert grad.sum() == y.size
    assert (grad[np.isnan(x)] == 1).all()


@pytest.mark.parametrize("value", SPECIALS, ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("count_include_pad", [True, False])
@pytest.mark.parametrize("dtype", DTYPES)
def test_avg_pool2d_propagates_non_finite_input(dtype, count_include_pad, value, rng):
    x = _with(rng.standard_normal((2, 2, 6, 6)), (0, 1, 0, 5), value).astype(dtype)
    args = (3, 2, 1, True, count_include_pad)
    y = F.avg_pool2d(x, *args)
    expected = R_pool.avg_pool2d(x, *args)
    assert not np.isfinite(expected).all()
    assert_same_non_finite(y, expected, dtype)


@pytest.mark.parametrize("value", SPECIALS, ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("where", ["x", "weight", "bias"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_linear_propagates_non_finite_values(dtype, where, value, rng, quiet):
    arrays = {
        "x": rng.standard_normal((4, 6)),
        "weight": rng.standard_normal((3, 6)),
        "bias": rng.standard_normal(3),
    }
    index = {"x": (2, 4), "weight": (1, 5), "bias": (2,)}[where]
    arrays[where][index] = value
    x, weight, bias = (arrays[k].astype(dtype) for k in ("x", "weight", "bias"))

    y = F.linear(x, weight, bias)
    expected = R_dense.linear(x, weight, bias)
    assert not np.isfinite(expected).all()
    assert_same_non_finite(y, expected, dtype)


ACTIVATIONS = {
    "relu": (F.relu, R_act.relu),
    "leaky_relu": (lambda x: F.leaky_relu(x, 0.1), lambda x: R_act.leaky_relu(x, 0.1)),
    "sigmoid": (F.sigmoid, R_act.sigmoid),
    "tanh": (F.tanh, R_act.tanh),
}


@pytest.mark.parametrize("name", ACTIVATIONS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_activations_propagate_nan_and_map_inf_as_defined(dtype, name):
    fast, reference = ACTIVATIONS[name]
    x = np.array([np.nan, np.inf, -np.inf, 0.0, -2.0, 3.0, np.nan], dtype)
    y = fast(x)
    assert np.isnan(y[[0, -1]]).all()
    assert_same_non_finite(y, reference(x), dtype)


BACKWARDS = {
    "relu": (F.relu_backward, R_act.relu_backward),
    "leaky_relu": (F.leaky_relu_backward, R_act.leaky_relu_backward),
    "sigmoid": (F.sigmoid_backward, R_act.sigmoid_backward),
    "tanh": (F.tanh_backward, R_act.tanh_backward),
}


@pytest.mark.parametrize("name", BACKWARDS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_activation_backwards_propagate_nan_gradients(dtype, name, rng):
    fast, reference = BACKWARDS[name]
    saved = rng.uniform(0.1, 0.9, 6).astype(dtype)
    grad = _with(rng.standard_normal(6), (3,), np.nan).astype(dtype)
    result = fast(grad, saved)
    assert np.isnan(result[3])
    assert_same_non_finite(result, reference(grad, saved), dtype)


@pytest.mark.parametrize("value", SPECIALS, ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("function", ["softmax", "log_softmax"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_propagates_non_finite_logits_within_their_row(
    dtype, function, value, rng, quiet
):
    # NaN or +inf in a row makes that row NaN (as in PyTorch); -inf is a logit
    # of probability exactly 0. Other rows are untouched.
    x = _with(rng.standard_normal((3, 5)), (1, 2), value).astype(dtype)
    y = getattr(F, function)(x)
    expected = getattr(R_soft, function)(x)
    assert_same_non_finite(y, expected, dtype)
    assert np.isfinite(y[[0, 2]]).all()
    if math.isnan(value) or value > 0:
        assert np.isnan(y[1]).all()


@pytest.mark.parametrize("value", [math.nan, math.inf], ids=["nan", "inf"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("kind", ["index", "probability"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_cross_entropy_propagates_nan_and_inf_logits(
    dtype, kind, reduction, value, rng, quiet
):
    # Guards against a loss that clamps or skips a non-finite logit and so hides
    # a diverged network.
    logits = _with(rng.standard_normal((4, 3)), (2, 1), value).astype(dtype)
    labels = np.array([0, 2, 0, 1])
    target = labels if kind == "index" else np.eye(3, dtype=dtype)[labels]

    loss, grad = F.cross_entropy_with_grad(logits, target, reduction)
    expected = R_soft.cross_entropy(logits, target, reduction)
    assert np.isnan(loss).any()
    assert_same_non_finite(loss, expected, dtype)
    assert np.isnan(grad[2]).all()
    assert np.isfinite(grad[[0, 1, 3]]).all()


@pytest.mark.parametrize("dtype", DTYPES)
def test_cross_entropy_propagates_nan_in_probability_targets(dtype, rng):
    logits = rng.standard_normal((3, 4)).astype(dtype)
    target = np.full((3, 4), 0.25, dtype)
    target[1, 2] = np.nan
    losses = F.cross_entropy(logits, target, reduction="none")
    assert np.isnan(losses[1])
    assert np.isfinite(losses[[0, 2]]).all()
    assert np.isnan(F.cross_entropy(logits, target))


@pytest.mark.parametrize("dtype", DTYPES)
def test_backward_passes_propagate_nan_gradients(dtype, rng, quiet):
    x = rng.standard_normal((2, 2, 6, 6)).astype(dtype)
    weight = rng.standard_normal((3, 2, 3, 3)).astype(dtype)

    y, ctx = F.conv2d_forward(x, weight, padding=1)
    g = _with(rng.standard_normal(y.shape), (0, 1, 2, 2), np.nan).astype(dtype)
    grad_input, grad_weight, _ = F.conv2d_backward(g, ctx)
    ref_input, ref_weight, _ = R_conv.conv2d_backward(g, x, weight, padding=1)
    assert np.isnan(grad_input[0]).any() and np.isfinite(grad_input[1]).all()
    assert_same_non_finite(grad_input, ref_input, dtype)
    assert_same_non_finite(grad_weight, ref_weight, dtype)

    for forward, backward, reference in (
        (F.max_pool2d_forward, F.max_pool2d_backward, R_pool.max_pool2d_backward),
        (F.avg_pool2d_forward, F.avg_pool2d_backward, R_pool.avg_pool2d_backward),
    ):
        y, ctx = forward(x, 2)
        g = _with(rng.standard_normal(y.shape), (1, 0, 1, 2), np.nan).astype(dtype)
        got = backward(g, ctx)
        assert np.isnan(got[1, 0]).any() and np.isfinite(got[0]).all()
        assert_same_non_finite(got, reference(g, x, 2), dtype)

    flat = x.reshape(2, -1)
    dense_weight = rng.standard_normal((3, flat.shape[1])).astype(dtype)
    y, ctx = F.linear_forward(flat, dense_weight)
    g = _with(rng.standard_normal(y.shape), (1, 0), np.nan).astype(dtype)
    got = F.linear_backward(g, ctx)
    want = R_dense.linear_backward(g, flat, dense_weight)
    assert np.isnan(got[0][1]).all() and np.isfinite(got[0][0]).all()
    for a, b in zip(got[:2], want[:2], strict=True):
        assert_same_non_finite(a, b, dtype)


def test_nan_in_one_sample_stays_in_that_sample_through_a_network(rng):
    model = Sequential(
        [
            Conv2D(1, 3, 3, padding=1, rng=0),
            ReLU(),
            MaxPool2D(2),
            Flatten(),
            Dense(27, 4, rng=1),
            SoftmaxCrossEntropy(),
        ]
    )
    x = _with(rng.standard_normal((3, 1, 6, 6)), (1, 0, 4, 4), np.nan)
    probabilities = model.forward(x)
    assert np.isnan(probabilities[1]).all()
    assert np.isfinite(probabilities[[0, 2]]).all()
    grad = model.backward(np.array([0, 1, 2]))
    assert np.isnan(grad[1]).any()
    assert np.isfinite(grad[[0, 2]]).all()


# ---------------------------------------------------------------------------
# Training stops when the loss becomes non-finite
# ---------------------------------------------------------------------------


def _classifier() -> Sequential:
    return Sequential(
        [
            Conv2D(1, 2, 3, rng=0),
            ReLU(),
            MaxPool2D(2),
            Flatten(),
            Dense(8, 3, rng=0),
        ]
    )


def _data(n: int = 64):
    data_rng = np.random.default_rng(5)
    x = data_rng.random((n, 1, 6, 6)).astype(np.float32)
    y = data_rng.integers(0, 3, n)
    return x, y


# NumPy's RuntimeWarnings must not replace NonFiniteLossError (python -W error).
@pytest.mark.filterwarnings("error::RuntimeWarning")
@pytest.mark.parametrize("value", [math.nan, math.inf], ids=["nan", "inf"])
def test_fit_stops_at_the_batch_holding_a_non_finite_sample(value):
    # Guards against training carrying on with NaN parameters after a bad sample.
    x, y = _data()
    x[37, 0, 2, 2] = value
    model = _classifier()
    with pytest.raises(NonFiniteLossError) as caught:
        model.fit(x, y, batch_size=8, shuffle=False, verbose=0)
    error = caught.value
    assert isinstance(error, FloatingPointError)
    assert (error.epoch, error.step) == (1, 37 // 8 + 1)
    assert math.isnan(error.loss)
    assert "epoch 1, step 5" in str(error)
    # The failing batch's update was not applied: earlier steps left finite values.
    assert all(np.isfinite(p).all() for p in model.params.values())


def test_fit_names_the_step_of_the_shuffled_position_of_a_nan_sample():
    x, y = _data()
    x[11, 0, 0, 0] = np.nan
    seed, epoch, batch_size = 4, 2, 8
    position = int(
        np.flatnonzero(np.random.default_rng([seed, epoch]).permutation(len(x)) == 11)[
            0
        ]
    )
    model = _classifier()
    with pytest.raises(NonFiniteLossError, match=f"epoch 3, step {position // 8 + 1}"):
        model.fit(
            x,
            y,
            epochs=3,
            initial_epoch=epoch,
            batch_size=batch_size,
            seed=seed,
            verbose=0,
        )


# NumPy's RuntimeWarnings must not replace NonFiniteLossError (python -W error).
@pytest.mark.filterwarnings("error::RuntimeWarning")
@pytest.mark.parametrize("optimizer", [SGD, Adam])
def test_fit_stops_when_a_huge_learning_rate_makes_the_loss_nan(optimizer):
    x, y = _data()
    model = _classifier()
    with pytest.raises(NonFiniteLossError) as caught:
        model.fit(
            x,
            y,
            epochs=3,
            batch_size=8,
            optimizer=optimizer(model, lr=1e30),
            shuffle=False,
            verbose=0,
        )
    # The first step is computed with the initial parameters, so its loss is
    # finite; the step after the first huge update is not.
    assert (caught.value.epoch, caught.value.step) == (1, 2)
    assert "epoch 1, step 2" in str(caught.value)


# NumPy's RuntimeWarnings must not replace NonFiniteLossError (python -W error).
@pytest.mark.filterwarnings("error::RuntimeWarning")
def test_fit_stops_when_a_regression_loss_overflows_to_inf():
    x, _ = _data()
    targets = np.ones((len(x), 1), np.float32)
    model = Sequential([Flatten(), Dense(36, 1, rng=0)])
    with pytest.raises(NonFiniteLossError, match="became inf at epoch 1, step 2"):
        model.fit(
            x,
            targets,
            loss=MSELoss(),
            optimizer=SGD(model, lr=1e30),
            batch_size=16,
            shuffle=False,
            verbose=0,
        )


def test_fit_stops_on_nan_targets_and_with_an_output_layer_loss():
    x, y = _data()
    one_hot = np.eye(3, dtype=np.float32)[y]
    one_hot[20] = np.nan
    with pytest.raises(NonFiniteLossError, match="epoch 1, step 3"):
        _classifier().fit(x, one_hot, batch_size=8, shuffle=False, verbose=0)

    x[50, 0, 1, 1] = np.nan
    model = Sequential([Flatten(), Dense(36, 3, rng=0), SoftmaxCrossEntropy()])
    with pytest.raises(NonFiniteLossError, match="epoch 1, step 7"):
        model.fit(x, y, batch_size=8, shuffle=False, verbose=0)


def test_bce_loss_keeps_saturated_sigmoids_finite_but_reports_nan():
    # PyTorch's -100 floor on the logarithms keeps a saturated prediction finite;
    # a NaN prediction is not hidden by it.
    loss = BCELoss(reduction="none")
    prediction = np.array([0.0, 1.0, 0.0, 1.0, np.nan])
    values = loss(prediction, np.array([0.0, 1.0, 1.0, 0.0, 1.0]))
    np.testing.assert_array_equal(values[:4], [0.0, 0.0, 100.0, 100.0])
    assert math.isnan(values[4])


def test_evaluate_reports_a_nan_loss_instead_of_hiding_it():
    x, y = _data(16)
    x[3, 0, 0, 0] = np.nan
    loss, accuracy = _classifier().evaluate(x, y)
    assert math.isnan(loss)
    assert 0.0 <= accuracy <= 1.0


# ---------------------------------------------------------------------------
# Softmax and cross-entropy with huge and -inf logits
# ---------------------------------------------------------------------------

HUGE_LOGITS = np.array(
    [
        [1e4, -1e4, 0.0, 5.0],
        [-1e4, -1e4, 1e4, 1e4],
        [-1e4, -1e4, -1e4, -1e4],
        [1e4, 1e4, 1e4, 1e4],
        [-1e4, 1e4, -1e4, -1e4],
    ]
)
HUGE_LABELS = np.array([1, 0, 2, 3, 0])
SOFT_TARGET = np.array(
    [
        [0.5, 0.5, 0.0, 0.0],
        [0.1, 0.2, 0.3, 0.4],
        [0.0, 0.0, 0.0, 1.0],
        [0.25, 0.25, 0.25, 0.25],
        [0.0, 0.3, 0.0, 0.7],
    ]
)


def _targets(kind: str, labels: np.ndarray, k: int, dtype, soft=None):
    if kind == "index":
        return labels
    if kind == "one-hot":
        return np.eye(k, dtype=dtype)[labels]
    return soft.astype(dtype)


@pytest.mark.parametrize("smoothing", [0.0, 0.1, 1.0])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("kind", ["index", "one-hot", "soft"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_cross_entropy_is_finite_and_exact_for_logits_of_1e4(
    dtype, kind, reduction, smoothing
):
    # Guards against exp overflowing (exp(1e4) is inf) and log(0) for classes
    # whose probability underflows.
    logits = HUGE_LOGITS.astype(dtype)
    target = _targets(kind, HUGE_LABELS, 4, dtype, SOFT_TARGET)

    loss, grad = F.cross_entropy_with_grad(logits, target, reduction, smoothing)
    assert np.isfinite(loss).all() and np.isfinite(grad).all()
    expected = R_soft.cross_entropy(logits, target, reduction, smoothing)
    assert_close(loss, expected, dtype)
    expected_grad = R_soft.cross_entropy_backward(logits, target, reduction, smoothing)
    assert_close(grad, expected_grad, dtype)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("kind", ["index", "one-hot", "soft"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_cross_entropy_is_finite_with_minus_inf_where_the_target_is_zero(
    dtype, kind, reduction
):
    # Guards against 0 * (-inf) = NaN: a class with target 0 must add nothing,
    # whatever its logit.
    logits = np.array(
        [
            [-np.inf, 1.0, 2.0],
            [3.0, -np.inf, -np.inf],
            [0.0, 0.5, -np.inf],
            [-np.inf, -np.inf, 4.0],
        ],
        dtype,
    )
    labels = np.array([2, 0, 1, 2])
    soft = np.array([[0, 0.4, 0.6], [1, 0, 0], [0.3, 0.7, 0], [0, 0, 1]])
    target = _targets(kind, labels, 3, dtype, soft)

    loss, grad = F.cross_entropy_with_grad(logits, target, reduction)
    assert np.isfinite(loss).all() and np.isfinite(grad).all()
    assert_close(loss, R_soft.cross_entropy(logits, target, reduction), dtype)
    assert (grad[np.isneginf(logits)] == 0).all()
    assert_close(grad, R_soft.cross_entropy_backward(logits, target, reduction), dtype)


@pytest.mark.parametrize("smoothing", [0.0, 0.2])
@pytest.mark.parametrize("dtype", DTYPES)
def test_cross_entropy_is_plus_inf_where_a_minus_inf_class_has_target_mass(
    dtype, smoothing
):
    # Label smoothing gives every class some target mass, so a -inf logit then
    # costs an infinite loss: +inf, as the definition says, never NaN.
    logits = np.array([[-np.inf, 1.0, 2.0], [0.0, 1.0, 2.0]], dtype)
    labels = np.array([0 if smoothing == 0 else 1, 1])
    losses = F.cross_entropy(logits, labels, "none", smoothing)
    assert np.isposinf(losses[0]) and np.isfinite(losses[1])
    assert np.isposinf(F.cross_entropy(logits, labels, "mean", smoothing))


@pytest.mark.parametrize("dtype", DTYPES)
def test_cross_entropy_unbatched_huge_and_minus_inf_logits(dtype):
    logits = np.array([1e4, -np.inf, -1e4, 0.0], dtype)
    loss, grad = F.cross_entropy_with_grad(logits, 0)
    assert loss == 0.0
    np.testing.assert_array_equal(grad, np.zeros(4, dtype))
    loss = F.cross_entropy(logits, np.array(2), label_smoothing=0.0)
    assert_close(loss, R_soft.cross_entropy(logits, 2), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_loss_objects_and_output_layer_stay_finite_for_huge_logits(dtype):
    logits = HUGE_LOGITS.astype(dtype)
    expected = float(R_soft.cross_entropy(logits, HUGE_LABELS))
    for smoothing in (0.0, 0.1):
        criterion = CrossEntropyLoss(label_smoothing=smoothing)
        value = criterion(logits, HUGE_LABELS)
        assert math.isfinite(value)
        assert np.isfinite(criterion.backward()).all()
    assert math.isclose(CrossEntropyLoss()(logits, HUGE_LABELS), expected, rel_tol=1e-4)

    layer = SoftmaxCrossEntropy()
    probabilities = layer.forward(logits)
    assert np.isfinite(probabilities).all()
    for target in (HUGE_LABELS, np.eye(4, dtype=dtype)[HUGE_LABELS]):
        assert math.isclose(layer.cross_entropy(target), expected, rel_tol=1e-4)
        assert np.isfinite(layer.backward(target)).all()


@pytest.mark.parametrize("dtype", DTYPES)
def test_output_layer_is_finite_with_minus_inf_where_the_target_is_zero(dtype):
    logits = np.array([[-np.inf, 1.0, 2.0], [3.0, -np.inf, 0.0]], dtype)
    layer = SoftmaxCrossEntropy()
    layer.forward(logits)
    for target in (np.array([1, 2]), np.eye(3, dtype=dtype)[[1, 2]]):
        assert math.isfinite(layer.cross_entropy(target))
        grad = layer.backward(target)
        assert np.isfinite(grad).all()
        assert (grad[np.isneginf(logits)] == 0).all()


@pytest.mark.parametrize("function", ["softmax", "log_softmax"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_is_finite_for_logits_of_1e4(dtype, function):
    y = getattr(F, function)(HUGE_LOGITS.astype(dtype))
    assert np.isfinite(y).all()
    if function == "softmax":
        assert_close(y.sum(axis=1), np.ones(5), dtype)
        assert_close(y, R_soft.softmax(HUGE_LOGITS), dtype)
    elif dtype == np.float64:
        assert_close(y, R_soft.log_softmax(HUGE_LOGITS), dtype)
    else:
        # Results near 0 are absolute-accurate to the spacing of the logits.
        spacing = float(np.spacing(np.float32(1e4)))
        np.testing.assert_allclose(y, R_soft.log_softmax(HUGE_LOGITS), atol=spacing)


def test_float32_log_softmax_keeps_small_results_exact_next_to_huge_logits():
    # A row of -1e4 has log-probabilities log(1/4) = -1.3862944; computing
    # x - (max + log(sum)) instead of (x - max) - log(sum) would be off by up to
    # ulp(1e4) / 2 = 5e-4, far outside float32's tolerance.
    logits = np.full((1, 4), -1e4, np.float32)
    assert_close(F.log_softmax(logits), np.full((1, 4), -math.log(4.0)), np.float32)


@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_with_minus_inf_gives_zero_probability_and_all_minus_inf_nan(dtype):
    logits = np.array([[-np.inf, 0.0, 1.0], [-np.inf] * 3], dtype)
    with np.errstate(invalid="ignore"):
        y = F.softmax(logits)
        log_y = F.log_softmax(logits)
    assert y[0, 0] == 0.0 and np.isneginf(log_y[0, 0])
    assert_close(y[0, 1:].sum(), 1.0, dtype)
    # A row without any finite logit has no distribution: NaN, as in PyTorch.
    assert np.isnan(y[1]).all() and np.isnan(log_y[1]).all()


@pytest.mark.parametrize("dtype", DTYPES)
def test_sigmoid_and_tanh_are_finite_for_1e4_without_warnings(dtype):
    # Guards against exp(1e4) overflowing inside 1 / (1 + exp(-x)).
    x = np.array([-1e4, -100.0, 0.0, 100.0, 1e4], dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for y in (F.sigmoid(x), Sigmoid().forward(x), F.tanh(x), Tanh().forward(x)):
            assert y.dtype == dtype
            assert np.isfinite(y).all()
        y = F.sigmoid(x)
        np.testing.assert_array_equal(y[[0, 4]], [0.0, 1.0])
        assert_close(y, R_act.sigmoid(x), dtype)
        grad = F.sigmoid_backward(np.ones_like(x), y)
        assert np.isfinite(grad).all()
        assert grad[0] == 0.0 and grad[4] == 0.0

        layer = Sigmoid()
        layer.forward(x)
        assert np.isfinite(layer.backward(np.ones_like(x))).all()
        np.testing.assert_array_equal(F.tanh(x)[[0, 4]], [-1.0, 1.0])


# ---------------------------------------------------------------------------
# Max pooling never outputs the -inf of its padding
# ---------------------------------------------------------------------------

LOWEST = {np.float32: np.finfo(np.float32).min, np.float64: np.finfo(np.float64).min}


@pytest.mark.parametrize(
    ("kernel_size", "stride", "padding", "ceil_mode"),
    [
        (2, 1, 1, False),
        (3, 2, 1, True),
        ((3, 2), (2, 3), (1, 1), True),
        (4, 3, 2, True),
    ],
)
@pytest.mark.parametrize("dtype", DTYPES)
def test_max_pool2d_with_padding_never_outputs_minus_inf(
    dtype, kernel_size, stride, padding, ceil_mode
):
    # Guards against a window made only of padding (or of padding and the
    # ceil_mode overhang) returning the -inf used for the padded cells.
    x = np.full((1, 2, 5, 7), LOWEST[dtype], dtype)
    args = (kernel_size, stride, padding, ceil_mode)
    y, ctx = F.max_pool2d_forward(x, *args)
    assert np.isfinite(y).all()
    np.testing.assert_array_equal(y, np.full(y.shape, LOWEST[dtype], dtype))
    grad = F.max_pool2d_backward(np.ones(y.shape, dtype), ctx)
    assert grad.sum() == y.size  # every window sent its gradient to an input


@given(
    data=st.data(),
    dtype=st.sampled_from(DTYPES),
    h=st.integers(1, 7),
    w=st.integers(1, 7),
    kh=st.integers(1, 4),
    kw=st.integers(1, 4),
    sh=st.integers(1, 3),
    sw=st.integers(1, 3),
    ceil_mode=st.booleans(),
)
def test_max_pool2d_with_padding_is_finite_for_finite_input(
    data, dtype, h, w, kh, kw, sh, sw, ceil_mode
):
    ph = data.draw(st.integers(0, kh // 2))
    pw = data.draw(st.integers(0, kw // 2))
    seed = data.draw(st.integers(0, 2**32 - 1))
    x = -np.random.default_rng(seed).exponential(1e30, (2, 1, h, w)).astype(dtype)
    args = ((kh, kw), (sh, sw), (ph, pw), ceil_mode)
    try:
        y = F.max_pool2d(x, *args)
    except ValueError as error:
        assert "does not fit" in str(error)
        return
    assert np.isfinite(y).all()
    np.testing.assert_array_equal(y, R_pool.max_pool2d(x, *args).astype(dtype))


# ---------------------------------------------------------------------------
# Finite hyper-parameters that overflow the parameters' dtype
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float16, np.float32])
def test_the_overflow_check_agrees_with_numpy_rounding_at_the_boundary(dtype):
    # Guards against refusing values that round down to the largest finite
    # value, or accepting ones that round up to inf.
    top = np.finfo(dtype).max
    largest = float(top)
    # The spacing between the two largest finite values, within the dtype.
    ulp = largest - float(np.nextafter(top, dtype(0)))
    halfway = largest + ulp / 2
    for below in (largest, np.nextafter(halfway, 0.0)):
        assert np.isfinite(np.array(below).astype(dtype))
        assert check_fits_dtype(below, "x", dtype) == below
        assert check_fits_dtype(-below, "x", dtype) == -below
    with np.errstate(over="ignore"):
        assert np.isinf(np.array(halfway).astype(dtype))
    for above in (halfway, -halfway, 1e300):
        with pytest.raises(ValueError, match=f"x=.* overflows {np.dtype(dtype)}"):
            check_fits_dtype(above, "x", dtype)


def test_float64_keeps_the_float64_range_for_hyper_parameters():
    # Guards against applying float32's limit to float64 arrays.
    x = np.array([-1.0, 2.0])
    np.testing.assert_array_equal(F.leaky_relu(x, 1e300), [-1e300, 2.0])
    np.testing.assert_array_equal(
        F.leaky_relu_backward(np.ones(2), x, -1e300), [-1e300, 1.0]
    )
    logits = np.zeros((2, 2))
    target = np.array([0, 1])
    assert_close(
        F.cross_entropy_backward(logits, target, grad_output=1e300),
        1e300 * F.cross_entropy_backward(logits, target),
    )
    with pytest.raises(ValueError, match=r"negative_slope=1e\+300 overflows float32"):
        F.leaky_relu(x.astype(np.float32), 1e300)


@pytest.mark.parametrize("value", SPECIALS, ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("where", ["input", "weight"])
@pytest.mark.parametrize(
    ("channels", "padding"),
    [((3, 4), 0), ((3, 4), 1), ((32, 64), 1)],
    ids=["direct_p0", "direct_p1", "winograd_size_p1"],
)
@pytest.mark.parametrize("dtype", DTYPES)
def test_conv2d_gradients_hold_non_finite_values_where_the_reference_does(
    dtype, channels, padding, where, value, rng, quiet
):
    # Guards against the direct 3x3 kernels, which multiply the zero border and
    # the columns past each row's end too: a NaN or inf times such a zero gave
    # NaN in weight gradients and input positions the value never reaches.
    c_in, c_out = channels
    x = rng.standard_normal((2, c_in, 6, 7))
    weight = rng.standard_normal((c_out, c_in, 3, 3))
    if where == "input":
        x = _with(x, (0, 1, 2, 0), value)
    else:
        weight = _with(weight, (1, 0, 0, 0), value)
    x, weight = x.astype(dtype), weight.astype(dtype)
    bias = rng.standard_normal(c_out).astype(dtype)
    y, ctx = F.conv2d_forward(x, weight, bias, padding=padding)
    grad_output = rng.standard_normal(y.shape).astype(dtype)

    grads = F.conv2d_backward(grad_output, ctx)
    expected = R_conv.conv2d_backward(grad_output, x, weight, bias, padding=padding)

    assert_same_non_finite(y, R_conv.conv2d(x, weight, bias, padding=padding), dtype)
    for actual, wanted in zip(grads, expected, strict=True):
        assert_same_non_finite(actual, wanted, dtype)
    # The value reaches some gradient entries and not others.
    touched = grads[1] if where == "input" else grads[0]
    assert not np.isfinite(touched).all() and np.isfinite(touched).any()
