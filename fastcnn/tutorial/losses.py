"""The tutorial's losses and their gradients with respect to the prediction.

Each loss is the mean over the elements of one sample; its ``_prime`` is the
gradient of that mean with respect to ``y_pred``, with ``y_pred``'s shape.
``y_true`` must have as many elements as ``y_pred`` and broadcast to its shape
(``(1,)`` against ``(1, 1)`` is fine, ``(2,)`` against ``(2, 1)`` is refused
because broadcasting would pair every target with every prediction).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from fastcnn.tutorial.layers import as_float64

__all__ = ["binary_cross_entropy", "binary_cross_entropy_prime", "mse", "mse_prime"]


def targets_fit(true_shape: tuple[int, ...], pred_shape: tuple[int, ...]) -> bool:
    """Return whether targets of ``true_shape`` pair elementwise with ``pred_shape``."""
    if true_shape == pred_shape:
        return True
    if math.prod(true_shape) != math.prod(pred_shape):
        return False
    try:
        return np.broadcast_shapes(true_shape, pred_shape) == tuple(pred_shape)
    except ValueError:
        return False


def _pair(y_true: Any, y_pred: Any) -> tuple[np.ndarray, np.ndarray]:
    y_true = as_float64(y_true, "y_true")
    y_pred = as_float64(y_pred, "y_pred")
    if not targets_fit(y_true.shape, y_pred.shape):
        raise ValueError(
            f"y_true must have the shape of y_pred {y_pred.shape}, got {y_true.shape}"
        )
    return y_true, y_pred


def mse(y_true: Any, y_pred: Any) -> np.float64:
    """Mean squared error ``mean((y_true - y_pred) ** 2)``.

    Parameters
    ----------
    y_true : numpy.ndarray, shape (n, 1)
        Targets of one sample (any shape with ``y_pred``'s elements, see the
        module docstring).
    y_pred : numpy.ndarray, shape (n, 1)
        Prediction of one sample.

    Returns
    -------
    numpy.float64
    """
    y_true, y_pred = _pair(y_true, y_pred)
    return np.mean((y_true - y_pred) ** 2)


def mse_prime(y_true: Any, y_pred: Any) -> np.ndarray:
    """Gradient of :func:`mse` with respect to ``y_pred``: ``2 (y_pred - y_true) / n``.

    Returns
    -------
    numpy.ndarray of float64, shape of ``y_pred``
    """
    y_true, y_pred = _pair(y_true, y_pred)
    return 2.0 * (y_pred - y_true) / y_pred.size


def binary_cross_entropy(y_true: Any, y_pred: Any) -> np.float64:
    """Binary cross-entropy ``mean(-y log(p) - (1 - y) log(1 - p))``.

    Parameters
    ----------
    y_true : numpy.ndarray, shape (n, 1)
        Targets in [0, 1].
    y_pred : numpy.ndarray, shape (n, 1)
        Predicted probabilities ``p``, in (0, 1); 0 or 1 give inf or nan with
        NumPy's warning, as the formula does (no clipping).

    Returns
    -------
    numpy.float64
    """
    y_true, y_pred = _pair(y_true, y_pred)
    return np.mean(-y_true * np.log(y_pred) - (1.0 - y_true) * np.log(1.0 - y_pred))


def binary_cross_entropy_prime(y_true: Any, y_pred: Any) -> np.ndarray:
    """Gradient of :func:`binary_cross_entropy`: ``((1 - y) / (1 - p) - y / p) / n``.

    Returns
    -------
    numpy.ndarray of float64, shape of ``y_pred``
    """
    y_true, y_pred = _pair(y_true, y_pred)
    return ((1.0 - y_true) / (1.0 - y_pred) - y_true / y_pred) / y_pred.size
