"""Loss functions with PyTorch's reductions and a ``backward`` for training loops.

Each loss is an object: ``loss(prediction, target)`` (or ``loss.forward``)
returns the loss and keeps the gradient with respect to ``prediction``, which
``loss.backward()`` returns. With ``reduction="mean"`` or ``"sum"`` the loss is a
Python float and the gradient is that of the reduced loss; with ``"none"`` the
loss is an array of per-element (per-sample for cross-entropy) losses and the
gradient is that of their sum.

NaN, inf and overflow give their IEEE results without a NumPy ``RuntimeWarning``
(the arithmetic runs under ``np.errstate(all="ignore")``), as in the kernels: a
diverging training run is reported by its NaN or inf loss.
"""

from __future__ import annotations

from numbers import Integral
from typing import Any

import numpy as np

from fastcnn._validation import (
    check_array,
    check_choice,
    check_fits_dtype,
    check_real,
    kernel_ready,
)
from fastcnn.functional.softmax import cross_entropy_with_grad

__all__ = ["BCELoss", "CrossEntropyLoss", "Loss", "MSELoss"]

_REDUCTIONS = ("mean", "sum", "none")

# PyTorch's floor for (1 - p) * p in the gradient of the binary cross-entropy: a
# single-precision 1e-12, also in float64.
_BCE_GRAD_EPSILON = float(np.float32(1e-12))


def _as_target(target: Any, prediction: np.ndarray) -> np.ndarray:
    """Return a real-valued ``target`` of ``prediction``'s shape in its dtype."""
    if not isinstance(target, np.ndarray):
        raise TypeError(f"target must be a numpy.ndarray, got {type(target).__name__}")
    if target.dtype.kind not in "biuf":
        raise TypeError(f"target must have a real numeric dtype, got {target.dtype}")
    if target.shape != prediction.shape:
        raise ValueError(
            f"target must have the shape of prediction {prediction.shape}, "
            f"got {target.shape}"
        )
    # Values beyond float32 become inf, without a warning.
    with np.errstate(all="ignore"):
        return kernel_ready(target, prediction.dtype)


def _check_not_empty(prediction: np.ndarray) -> None:
    if prediction.size == 0:
        raise ValueError(f"prediction must not be empty, got shape {prediction.shape}")


class Loss:
    """Base class of the losses.

    Parameters
    ----------
    reduction : {"mean", "sum", "none"}, default "mean"
        How the per-element losses are reduced.
    """

    def __init__(self, reduction: str = "mean") -> None:
        self.reduction = check_choice(reduction, "reduction", _REDUCTIONS)
        self._grad: np.ndarray | None = None
        self._loss_shape: tuple[int, ...] = ()

    def forward(self, prediction: np.ndarray, target: np.ndarray) -> float | np.ndarray:
        """Return the loss and keep its gradient for :meth:`backward`."""
        raise NotImplementedError

    def __call__(
        self, prediction: np.ndarray, target: np.ndarray
    ) -> float | np.ndarray:
        return self.forward(prediction, target)

    def _reduce(self, losses: np.ndarray) -> float | np.ndarray:
        # Called inside the errstate of forward.
        if self.reduction == "mean":
            return float(np.mean(losses))
        if self.reduction == "sum":
            return float(np.sum(losses))
        return losses

    def backward(self, grad_output: float | np.ndarray | None = None) -> np.ndarray:
        """Return the gradient of the last forward's loss w.r.t. its prediction.

        Parameters
        ----------
        grad_output : float or numpy.ndarray, optional
            Gradient flowing into the loss: a scalar for ``"mean"`` and ``"sum"``,
            an array of the loss's shape for ``"none"``. Defaults to 1. A scalar
            must be finite in the prediction's dtype (float32 refuses ``1e300``).

        Returns
        -------
        numpy.ndarray
            Same shape and dtype as the last ``prediction``.
        """
        if self._grad is None:
            raise RuntimeError(
                f"{type(self).__name__}.backward was called before forward"
            )
        if grad_output is None:
            return self._grad
        dtype = self._grad.dtype
        if isinstance(grad_output, np.ndarray) and grad_output.ndim > 0:
            if self.reduction != "none" or grad_output.shape != self._loss_shape:
                raise ValueError(
                    f"grad_output must be a scalar or, for reduction='none', an "
                    f"array of the loss's shape {self._loss_shape}, got shape "
                    f"{grad_output.shape}"
                )
            with np.errstate(all="ignore"):
                go = grad_output.astype(dtype)
                return self._grad * go.reshape(
                    go.shape + (1,) * (self._grad.ndim - go.ndim)
                )
        value = check_real(grad_output, "grad_output")
        factor = dtype.type(check_fits_dtype(value, "grad_output", dtype))
        with np.errstate(all="ignore"):
            return self._grad * factor

    def __repr__(self) -> str:
        return f"{type(self).__name__}(reduction={self.reduction!r})"


class CrossEntropyLoss(Loss):
    """Softmax cross-entropy on logits, fused with its gradient.

    Parameters
    ----------
    reduction : {"mean", "sum", "none"}, default "mean"
        ``"mean"`` divides the summed per-sample losses by the batch size ``N``
        (for class-index and probability targets alike, as PyTorch does without
        class weights).
    label_smoothing : float, default 0.0
        In ``[0, 1]``; the target becomes ``(1 - label_smoothing) * y +
        label_smoothing / K``.

    Notes
    -----
    ``forward(prediction, target)`` takes logits ``prediction`` of shape ``(N, K)``
    (or ``(K,)`` with a 0-d integer target) and either class indices ``(N,)`` of an
    integer dtype, each in ``[0, K)``, or class probabilities ``(N, K)`` (e.g.
    one-hot rows), which are cast to the logits' dtype. The loss of a sample is
    ``logsumexp(o) * sum(y) - sum(y * o)``; the gradient is
    ``softmax(o) * sum(y) - y``, divided by ``N`` for ``"mean"``. The loss shape is
    ``(N,)`` for ``"none"``.
    """

    def __init__(self, reduction: str = "mean", label_smoothing: float = 0.0) -> None:
        super().__init__(reduction)
        self.label_smoothing = check_real(
            label_smoothing, "label_smoothing", low=0.0, high=1.0
        )

    def forward(self, prediction: np.ndarray, target: np.ndarray) -> float | np.ndarray:
        """Return the cross-entropy of ``prediction`` (logits) against ``target``.

        Parameters
        ----------
        prediction : numpy.ndarray of shape (N, K) or (K,)
            Logits, float32 or float64.
        target : numpy.ndarray of shape (N,) or (N, K)
            Class indices (integer dtype) or class probabilities.

        Returns
        -------
        float or numpy.ndarray of shape (N,)
            The reduced loss, or the per-sample losses for ``"none"``.
        """
        prediction = check_array(prediction, "prediction", ndim=(1, 2))
        _check_not_empty(prediction)
        target = self._check_target(target, prediction)
        loss, grad = cross_entropy_with_grad(
            prediction,
            target,
            reduction=self.reduction,
            label_smoothing=self.label_smoothing,
        )
        self._grad = grad
        self._loss_shape = np.shape(loss)
        if self.reduction == "none":
            return loss
        return float(loss)

    @staticmethod
    def _check_target(target: Any, prediction: np.ndarray) -> np.ndarray:
        n_classes = prediction.shape[-1]
        if isinstance(target, Integral) and not isinstance(target, (bool, np.bool_)):
            if not -(2**63) <= target < 2**63:
                # np.asarray would give an object array and a message about dtypes.
                raise ValueError(
                    f"target holds an int beyond the int64 range, outside "
                    f"[0, {n_classes}) for prediction with {n_classes} classes"
                )
            target = np.asarray(target)
        if not isinstance(target, np.ndarray):
            raise TypeError(
                f"target must be a numpy.ndarray, got {type(target).__name__}"
            )
        if target.dtype.kind in "iu":
            want = prediction.shape[:-1]
            if target.shape != want:
                raise ValueError(
                    f"target of class indices must have shape {want} for prediction "
                    f"of shape {prediction.shape}, got {target.shape}"
                )
            if target.size:
                low, high = int(target.min()), int(target.max())
                if low < 0 or high >= n_classes:
                    bad = low if low < 0 else high
                    raise ValueError(
                        f"target holds class index {bad}, outside [0, {n_classes}) "
                        f"for prediction with {n_classes} classes"
                    )
            # astype, not ascontiguousarray, which would make a 0-d target 1-d.
            return target.astype(np.int64, order="C", copy=False)
        if target.dtype.kind == "f":
            if target.shape == prediction.shape[:-1]:
                # The shape of class indices: float labels, not probabilities.
                raise TypeError(
                    f"target of class indices must have an integer dtype, got "
                    f"{target.dtype}; convert it first, e.g. target.astype(np.int64)"
                )
            if target.shape != prediction.shape:
                raise ValueError(
                    f"target of class probabilities must have the shape of "
                    f"prediction {prediction.shape}, got {target.shape}"
                )
            return _as_target(target, prediction)
        raise TypeError(
            "target must hold integer class indices or float class probabilities, "
            f"got dtype {target.dtype}"
        )

    def __repr__(self) -> str:
        return (
            f"CrossEntropyLoss(reduction={self.reduction!r}, "
            f"label_smoothing={self.label_smoothing!r})"
        )


class MSELoss(Loss):
    """Mean squared error, ``(prediction - target) ** 2`` per element.

    Parameters
    ----------
    reduction : {"mean", "sum", "none"}, default "mean"
        ``"mean"`` divides by the number of elements.

    Notes
    -----
    ``prediction`` is a float32/float64 array of any shape; ``target`` must have
    the same shape (no broadcasting) and is cast to ``prediction``'s dtype. The
    gradient is ``2 * (prediction - target)``, divided by the number of elements
    for ``"mean"``.
    """

    def forward(self, prediction: np.ndarray, target: np.ndarray) -> float | np.ndarray:
        """Return the squared error of ``prediction`` against ``target``.

        Parameters
        ----------
        prediction : numpy.ndarray of any shape
            Float32 or float64 predictions.
        target : numpy.ndarray of prediction's shape
            Real-valued targets.

        Returns
        -------
        float or numpy.ndarray of prediction's shape
            The reduced loss, or the element-wise losses for ``"none"``.
        """
        prediction = check_array(prediction, "prediction")
        _check_not_empty(prediction)
        target = _as_target(target, prediction)
        scalar = prediction.dtype.type
        norm = 2.0 / prediction.size if self.reduction == "mean" else 2.0
        with np.errstate(all="ignore"):
            diff = prediction - target
            self._grad = diff * scalar(norm)
            self._loss_shape = diff.shape
            return self._reduce(diff * diff)


class BCELoss(Loss):
    """Binary cross-entropy between probabilities and targets in ``[0, 1]``.

    Parameters
    ----------
    reduction : {"mean", "sum", "none"}, default "mean"
        ``"mean"`` divides by the number of elements.

    Notes
    -----
    Per element, as PyTorch: ``-(y * max(log(p), -100) + (1 - y) * max(log(1 - p),
    -100))``, so ``p`` of exactly 0 or 1 gives a finite loss. The gradient is
    ``(p - y) / max((1 - p) * p, 1e-12)`` (1e-12 rounded to float32, as PyTorch
    does), divided by the number of elements for ``"mean"``. Unlike PyTorch, a NaN
    prediction is not an error: it gives a NaN loss, so a training loop can report
    where it diverged; finite values outside
    ``[0, 1]`` raise ValueError.
    """

    def forward(self, prediction: np.ndarray, target: np.ndarray) -> float | np.ndarray:
        """Return the binary cross-entropy of ``prediction`` against ``target``.

        Parameters
        ----------
        prediction : numpy.ndarray of any shape
            Probabilities in ``[0, 1]``, float32 or float64.
        target : numpy.ndarray of prediction's shape
            Targets in ``[0, 1]``.

        Returns
        -------
        float or numpy.ndarray of prediction's shape
            The reduced loss, or the element-wise losses for ``"none"``.
        """
        prediction = check_array(prediction, "prediction")
        _check_not_empty(prediction)
        target = _as_target(target, prediction)
        # The sigmoid hint fits the prediction only: a target is no logit.
        hints = {
            "prediction": " (BCELoss expects probabilities; apply a sigmoid to "
            "logits first)",
            "target": "",
        }
        for name, arr in (("prediction", prediction), ("target", target)):
            if np.any((arr < 0) | (arr > 1)):
                bad = arr[(arr < 0) | (arr > 1)].flat[0]
                raise ValueError(
                    f"{name} must hold values in [0, 1], got {bad}{hints[name]}"
                )

        scalar = prediction.dtype.type
        floor = scalar(-100.0)
        one = scalar(1.0)
        # log(0) is floored; NaN predictions give NaN, without a warning.
        with np.errstate(all="ignore"):
            log_p = np.maximum(np.log(prediction), floor)
            log_1mp = np.maximum(np.log1p(-prediction), floor)
            losses = (target - one) * log_1mp - target * log_p

            grad = (prediction - target) / np.maximum(
                (one - prediction) * prediction, scalar(_BCE_GRAD_EPSILON)
            )
            if self.reduction == "mean":
                grad /= scalar(prediction.size)
            self._grad = grad
            self._loss_shape = losses.shape
            return self._reduce(losses)
