"""Softmax and the fused softmax cross-entropy output layer."""

from __future__ import annotations

from typing import Any

import numpy as np

from fastcnn._validation import check_int
from fastcnn.functional.softmax import cross_entropy, softmax, softmax_backward
from fastcnn.layers._common import (
    LayerState,
    check_learning_rate,
    check_output_gradient,
    require_state,
)
from fastcnn.layers.base import Layer, as_layer_input


class Softmax(Layer):
    """Softmax along ``axis``: ``exp(x - max) / sum(exp(x - max))``.

    Parameters
    ----------
    axis : int, default -1
        The axis that sums to 1, counted on the input as given (no batch axis
        is added or assumed).

    Notes
    -----
    The output has the input's shape. Backward is the exact Jacobian-vector
    product ``y * (g - sum(g * y, axis))``. To train a classifier, prefer
    :class:`SoftmaxCrossEntropy`, whose gradient is simpler and more accurate.
    """

    def __init__(self, axis: int = -1) -> None:
        super().__init__()
        self.axis = check_int(axis, "axis")
        self._state: LayerState | None = None

    def forward(self, input: np.ndarray) -> np.ndarray:
        """Return the softmax of ``input`` along ``axis``."""
        x = as_layer_input(input, "input", None)
        if x.ndim == 0:
            raise ValueError("input must be at least 1-d, got a 0-d array")
        if not -x.ndim <= self.axis < x.ndim:
            raise ValueError(
                f"axis={self.axis} is out of range for input of shape {x.shape}"
            )
        y = softmax(x, axis=self.axis)
        self._state = LayerState(y, y.shape, y.dtype, unbatched=False)
        return y

    def backward(
        self, output_gradient: np.ndarray, learning_rate: float | None = None
    ) -> np.ndarray:
        """Return the input gradient (``learning_rate`` is accepted and unused)."""
        state = require_state(self, self._state)
        check_learning_rate(learning_rate)
        grad = check_output_gradient(output_gradient, state)
        return softmax_backward(grad, state.ctx, axis=self.axis)

    def get_config(self) -> dict[str, Any]:
        """Return the constructor arguments as JSON values."""
        return {"axis": self.axis}


class SoftmaxCrossEntropy(Layer):
    """Softmax output layer fused with the cross-entropy loss.

    ``forward(logits)`` returns the class probabilities,
    ``cross_entropy(y_true)`` the mean loss of that forward, and
    ``backward(y_true)`` the gradient of the mean loss with respect to the
    logits, ``(softmax(logits) - y) / N``: cheaper and more accurate than a
    Softmax layer followed by a separate loss.

    Notes
    -----
    ``logits`` has shape ``(N, K)`` or unbatched ``(K,)``. ``y_true`` is either
    class indices of an integer dtype, shape ``(N,)`` (a Python int or 0-d
    array for unbatched logits), or target probabilities of shape ``(N, K)``
    (``(K,)``), one-hot or not, each row summing to 1. The loss of a row is
    ``logsumexp(z) - sum(y * z)``, computed from the logits, so it stays finite
    even where a probability rounds to 0. Probabilities keep the logits' dtype
    (float32/float64; other real dtypes become float32).
    """

    def __init__(self) -> None:
        super().__init__()
        self._state: LayerState | None = None

    def forward(self, logits: np.ndarray) -> np.ndarray:
        """Return ``softmax(logits)`` along the last axis."""
        z = as_layer_input(logits, "logits", None)
        if z.ndim not in (1, 2):
            raise ValueError(
                f"logits must be 2-d (N, K) or unbatched 1-d (K,), got shape {z.shape}"
            )
        if z.shape[-1] == 0:
            raise ValueError(f"logits must have at least one class, got {z.shape}")
        unbatched = z.ndim == 1
        if unbatched:
            z = z[np.newaxis]

        probabilities = softmax(z, axis=-1)
        output = probabilities[0] if unbatched else probabilities
        self._state = LayerState((z, probabilities), output.shape, z.dtype, unbatched)
        return output

    def _target(self, y_true: Any, state: LayerState) -> np.ndarray:
        """Return ``y_true`` batched: int64 indices (N,) or probabilities (N, K)."""
        z, _ = state.ctx
        n, k = z.shape
        if isinstance(y_true, (int, np.integer)) and not isinstance(y_true, bool):
            y_true = np.asarray(y_true)
        if not isinstance(y_true, np.ndarray):
            raise TypeError(
                f"y_true must be a numpy.ndarray, got {type(y_true).__name__}"
            )

        logits_shape = state.output_shape
        if y_true.shape == logits_shape:
            return as_layer_input(y_true, "y_true", state.dtype).reshape(n, k)
        if y_true.shape != logits_shape[:-1]:
            raise ValueError(
                f"y_true must have shape {logits_shape[:-1]} (class indices) or "
                f"{logits_shape} (probabilities) for logits of shape "
                f"{logits_shape}, got {y_true.shape}"
            )
        if y_true.dtype.kind not in "iu":
            raise TypeError(
                f"y_true of class indices must have an integer dtype, got "
                f"{y_true.dtype}; convert it first, e.g. y_true.astype(np.int64)"
            )
        outside = (y_true < 0) | (y_true >= k)
        if outside.any():
            raise ValueError(
                f"y_true must hold class indices in [0, {k}), got {y_true[outside][0]}"
            )
        return y_true.reshape(n).astype(np.int64)

    def cross_entropy(self, y_true: np.ndarray) -> float:
        """Return the mean cross-entropy of the last forward's logits."""
        state = self._require_forward("cross_entropy")
        target = self._target(y_true, state)
        z, _ = state.ctx
        return float(cross_entropy(z, target, reduction="mean"))

    def backward(
        self, y_true: np.ndarray, learning_rate: float | None = None
    ) -> np.ndarray:
        """Return ``(softmax(logits) - y) / N``, the gradient of the mean loss.

        Parameters
        ----------
        y_true : numpy.ndarray
            Class indices ``(N,)`` or target probabilities ``(N, K)``.
        learning_rate : float, optional
            Accepted for the common calling convention and unused (no
            parameters).

        Returns
        -------
        numpy.ndarray of shape (N, K), or (K,) for unbatched logits
        """
        state = self._require_forward("backward")
        check_learning_rate(learning_rate)
        target = self._target(y_true, state)

        _, probabilities = state.ctx
        n = probabilities.shape[0]
        grad = probabilities.copy()
        if target.ndim == 1:
            grad[np.arange(n), target] -= 1
        else:
            grad -= target
        grad /= state.dtype.type(max(n, 1))
        return grad[0] if state.unbatched else grad

    def _require_forward(self, method: str) -> LayerState:
        if self._state is None:
            raise RuntimeError(
                f"SoftmaxCrossEntropy.{method} was called before forward; "
                "call forward first"
            )
        return self._state
