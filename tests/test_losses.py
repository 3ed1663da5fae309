"""Tests for fastcnn.losses against PyTorch and finite differences."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import assert_close

from fastcnn.losses import BCELoss, CrossEntropyLoss, MSELoss

REDUCTIONS = ["mean", "sum", "none"]


def numeric_gradient(loss_fn, prediction, target, h=1e-6):
    """Central differences of the summed loss with respect to ``prediction``."""
    grad = np.zeros_like(prediction)
    for index in np.ndindex(prediction.shape):
        plus, minus = prediction.copy(), prediction.copy()
        plus[index] += h
        minus[index] -= h
        up = np.sum(loss_fn.forward(plus, target))
        down = np.sum(loss_fn.forward(minus, target))
        grad[index] = (up - down) / (2 * h)
    return grad


def torch_loss_and_grad(torch, fn, prediction, target, reduction):
    p = torch.tensor(prediction, requires_grad=True)
    loss = fn(p, torch.tensor(target), reduction=reduction)
    loss.sum().backward()
    return loss.detach().numpy(), p.grad.numpy()


def check_result(result, expected, reduction, dtype):
    if reduction == "none":
        assert_close(result, expected.astype(dtype), dtype)
    else:
        assert isinstance(result, float)
        assert_close(np.asarray(result, dtype=dtype), expected.astype(dtype), dtype)


# ----------------------------------------------------------------------
# Cross-entropy


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("label_smoothing", [0.0, 0.2])
@pytest.mark.parametrize("target_kind", ["index", "probability"])
def test_cross_entropy_matches_torch(
    torch, rng, reduction, label_smoothing, target_kind
):
    logits = rng.standard_normal((6, 5)) * 3
    if target_kind == "index":
        target = rng.integers(0, 5, size=6)
    else:
        target = rng.dirichlet(np.ones(5), size=6)
    loss_fn = CrossEntropyLoss(reduction=reduction, label_smoothing=label_smoothing)
    loss = loss_fn(logits, target)
    grad = loss_fn.backward()

    p = torch.tensor(logits, requires_grad=True)
    ref = torch.nn.functional.cross_entropy(
        p, torch.tensor(target), reduction=reduction, label_smoothing=label_smoothing
    )
    ref.sum().backward()
    check_result(loss, ref.detach().numpy(), reduction, np.float64)
    assert_close(grad, p.grad.numpy())


def test_cross_entropy_float32_and_one_hot_float64_target(rng):
    logits = rng.standard_normal((4, 3)).astype(np.float32)
    labels = np.array([0, 2, 1, 2])
    one_hot = np.eye(3)[labels]  # float64 target with float32 logits: cast
    by_index = CrossEntropyLoss()
    by_prob = CrossEntropyLoss()
    loss_index = by_index(logits, labels)
    loss_prob = by_prob(logits, one_hot)
    assert by_index.backward().dtype == np.float32
    assert by_prob.backward().dtype == np.float32
    assert loss_index == pytest.approx(loss_prob, rel=1e-6)
    assert_close(by_prob.backward(), by_index.backward())


def test_cross_entropy_finite_differences(rng):
    logits = rng.standard_normal((3, 4))
    target = np.array([3, 0, 1])
    loss_fn = CrossEntropyLoss(reduction="sum", label_smoothing=0.1)
    loss_fn(logits, target)
    analytic = loss_fn.backward()
    numeric = numeric_gradient(CrossEntropyLoss("sum", 0.1), logits, target)
    np.testing.assert_allclose(analytic, numeric, rtol=1e-6, atol=1e-8)


def test_cross_entropy_unbatched(torch, rng):
    logits = rng.standard_normal(4)
    loss_fn = CrossEntropyLoss()
    loss = loss_fn(logits, np.array(2))
    p = torch.tensor(logits, requires_grad=True)
    ref = torch.nn.functional.cross_entropy(p, torch.tensor(2))
    ref.backward()
    assert loss == pytest.approx(ref.item(), rel=1e-12)
    assert_close(loss_fn.backward(), p.grad.numpy())


def test_backward_grad_output_scales(rng):
    logits = rng.standard_normal((3, 4))
    target = np.array([1, 2, 3])
    loss_fn = CrossEntropyLoss(reduction="none")
    loss_fn(logits, target)
    weights = np.array([0.5, 0.0, 2.0])
    weighted = loss_fn.backward(weights)
    assert_close(weighted, loss_fn.backward() * weights[:, None])
    with pytest.raises(ValueError, match="grad_output"):
        loss_fn.backward(np.ones(4))
    mean_fn = CrossEntropyLoss()
    mean_fn(logits, target)
    assert_close(mean_fn.backward(3.0), 3.0 * mean_fn.backward())


@pytest.mark.parametrize(
    ("logits", "target", "error", "match"),
    [
        (np.zeros((2, 3)), np.array([0, 3]), ValueError, r"class index 3.*\[0, 3\)"),
        (np.zeros((2, 3)), np.array([-1, 0]), ValueError, "class index -1"),
        (np.zeros((2, 3)), np.array([0, 1, 2]), ValueError, r"shape \(2,\)"),
        (np.zeros((2, 3)), np.zeros((2, 4)), ValueError, "probabilities"),
        (np.zeros((2, 3)), np.array([True, False]), TypeError, "target"),
        (np.zeros((2, 3)), [0, 1], TypeError, "target must be a numpy.ndarray"),
        (np.zeros((2, 3), dtype=np.int64), np.array([0, 1]), TypeError, "prediction"),
        (np.zeros((2, 3, 4)), np.array([0, 1]), ValueError, "prediction"),
        (np.zeros((0, 3)), np.zeros(0, dtype=int), ValueError, "empty"),
    ],
)
def test_cross_entropy_errors(logits, target, error, match):
    with pytest.raises(error, match=match):
        CrossEntropyLoss()(logits, target)


@pytest.mark.parametrize(
    ("logits", "target"),
    [
        (np.zeros((2, 3)), np.array([0.0, 2.0])),
        (np.zeros((2, 3), np.float32), np.array([0.0, 2.0])),
        (np.zeros((2, 3)), np.array([0.0, 2.0], np.float32)),
        (np.zeros(3), np.array(1.0)),
    ],
    ids=["f64-f64", "f32-f64", "f64-f32", "unbatched"],
)
def test_float_class_labels_get_an_integer_dtype_hint(logits, target):
    # Labels of the shape of class indices but a float dtype: the message is
    # about the dtype, not about the shape of probability rows.
    with pytest.raises(
        TypeError,
        match=r"target of class indices must have an integer dtype, got float\d\d; "
        r"convert it first, e.g. target.astype\(np.int64\)",
    ):
        CrossEntropyLoss()(logits, target)
    # Converted as suggested, they are the class indices.
    CrossEntropyLoss()(logits, target.astype(np.int64))


# ----------------------------------------------------------------------
# Mean squared error


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_mse_matches_torch(torch, rng, reduction, dtype):
    prediction = rng.standard_normal((4, 3, 2)).astype(dtype)
    target = rng.standard_normal((4, 3, 2)).astype(dtype)
    loss_fn = MSELoss(reduction)
    loss = loss_fn(prediction, target)
    grad = loss_fn.backward()
    ref, ref_grad = torch_loss_and_grad(
        torch, torch.nn.functional.mse_loss, prediction, target, reduction
    )
    check_result(loss, ref, reduction, dtype)
    assert_close(grad, ref_grad)


def test_mse_finite_differences_and_int_target(rng):
    prediction = rng.standard_normal((3, 2))
    target = rng.integers(-2, 3, size=(3, 2))  # ints are cast to the dtype
    loss_fn = MSELoss()
    loss_fn(prediction, target)
    numeric = numeric_gradient(MSELoss(), prediction, target)
    np.testing.assert_allclose(loss_fn.backward(), numeric, rtol=1e-6, atol=1e-9)


def test_mse_errors():
    with pytest.raises(ValueError, match=r"target must have the shape of prediction"):
        MSELoss()(np.zeros((2, 3)), np.zeros((3, 2)))
    with pytest.raises(TypeError, match="target must have a real numeric dtype"):
        MSELoss()(np.zeros(2), np.array(["a", "b"]))
    with pytest.raises(TypeError, match="astype"):
        MSELoss()(np.zeros(2, dtype=np.float16), np.zeros(2))


# ----------------------------------------------------------------------
# Binary cross-entropy


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_bce_matches_torch(torch, rng, reduction, dtype):
    prediction = rng.uniform(0.01, 0.99, size=(5, 3)).astype(dtype)
    target = rng.uniform(0, 1, size=(5, 3)).astype(dtype)
    target[0] = [0.0, 1.0, 0.5]
    loss_fn = BCELoss(reduction)
    loss = loss_fn(prediction, target)
    ref, ref_grad = torch_loss_and_grad(
        torch, torch.nn.functional.binary_cross_entropy, prediction, target, reduction
    )
    check_result(loss, ref, reduction, dtype)
    assert_close(loss_fn.backward(), ref_grad)


def test_bce_clamps_log_at_minus_100_like_torch(torch):
    # p exactly 0 or 1 against the opposite target: log(0) is clamped to -100.
    prediction = np.array([0.0, 1.0, 0.0, 1.0, 1e-50])
    target = np.array([1.0, 0.0, 0.0, 1.0, 1.0])
    loss_fn = BCELoss("none")
    loss = loss_fn(prediction, target)
    ref, ref_grad = torch_loss_and_grad(
        torch, torch.nn.functional.binary_cross_entropy, prediction, target, "none"
    )
    np.testing.assert_array_equal(loss, [100.0, 100.0, 0.0, 0.0, 100.0])
    assert_close(loss, ref)
    assert np.all(np.isfinite(loss_fn.backward()))
    assert_close(loss_fn.backward(), ref_grad)


def test_bce_finite_differences(rng):
    prediction = rng.uniform(0.1, 0.9, size=(2, 3))
    target = rng.uniform(0, 1, size=(2, 3))
    loss_fn = BCELoss()
    loss_fn(prediction, target)
    numeric = numeric_gradient(BCELoss(), prediction, target)
    np.testing.assert_allclose(loss_fn.backward(), numeric, rtol=1e-6, atol=1e-9)


def test_bce_nan_prediction_gives_nan_loss():
    assert np.isnan(BCELoss()(np.array([0.5, np.nan]), np.array([1.0, 0.0])))


@pytest.mark.parametrize(
    ("prediction", "target", "match"),
    [
        (np.array([0.5, 1.5]), np.array([0.0, 1.0]), "prediction must hold values"),
        (np.array([-0.1, 0.5]), np.array([0.0, 1.0]), "prediction must hold values"),
        (np.array([0.5, 0.5]), np.array([0.0, 2.0]), "target must hold values"),
    ],
)
def test_bce_out_of_range(prediction, target, match):
    with pytest.raises(ValueError, match=match):
        BCELoss()(prediction, target)


def test_bce_gives_the_sigmoid_hint_for_predictions_only():
    with pytest.raises(ValueError, match="apply a sigmoid to logits first"):
        BCELoss()(np.array([0.5, 3.0]), np.array([0.0, 1.0]))
    with pytest.raises(ValueError) as caught:
        BCELoss()(np.array([0.5, 0.5]), np.array([0.0, 3.0]))
    assert str(caught.value) == "target must hold values in [0, 1], got 3.0"


# ----------------------------------------------------------------------
# Shared behaviour


@pytest.mark.parametrize("cls", [CrossEntropyLoss, MSELoss, BCELoss])
def test_backward_before_forward(cls):
    with pytest.raises(RuntimeError, match="before forward"):
        cls().backward()


@pytest.mark.parametrize("cls", [CrossEntropyLoss, MSELoss, BCELoss])
def test_unknown_reduction(cls):
    with pytest.raises(ValueError, match="reduction must be one of"):
        cls(reduction="average")


def test_label_smoothing_is_checked():
    with pytest.raises(ValueError, match="label_smoothing must be <= 1"):
        CrossEntropyLoss(label_smoothing=1.5)


@pytest.mark.parametrize("cls", [CrossEntropyLoss, MSELoss, BCELoss])
def test_backward_grad_output_must_be_finite_in_the_prediction_dtype(cls):
    prediction = np.array([[0.25, 0.75]])
    target = np.array([1]) if cls is CrossEntropyLoss else np.array([[0.0, 1.0]])
    loss_fn = cls()
    loss_fn(prediction.astype(np.float32), target)
    with pytest.raises(ValueError, match=r"grad_output=-1e\+39 overflows float32"):
        loss_fn.backward(-1e39)
    # float64 keeps its own range: 1e300 scales the float64 gradient.
    loss_fn(prediction, target)
    assert_close(loss_fn.backward(1e300), 1e300 * loss_fn.backward())
