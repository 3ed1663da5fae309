"""Naive float64 references for the element-wise activations.

Written from the definitions with an explicit Python loop over elements; every
function returns float64 whatever the input dtype. The test oracle for
:mod:`fastcnn.functional.activations`.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np


def _map(function: Callable[..., float], *arrays: np.ndarray) -> np.ndarray:
    """Apply ``function`` to the elements of same-shaped arrays, in float64."""
    flat = [np.asarray(a, dtype=np.float64).reshape(-1) for a in arrays]
    out = np.empty(flat[0].size)
    for i in range(out.size):
        out[i] = function(*(float(a[i]) for a in flat))
    return out.reshape(np.shape(arrays[0]))


def relu(x: np.ndarray) -> np.ndarray:
    """``max(x, 0)``; NaN stays NaN."""
    return _map(lambda v: v if math.isnan(v) or v >= 0 else 0.0, x)


def relu_backward(grad_output: np.ndarray, x: np.ndarray) -> np.ndarray:
    """``grad_output`` where ``x > 0``, 0 where ``x <= 0``; passes through at NaN."""
    return _map(lambda g, v: 0.0 if v <= 0 else g, grad_output, x)


def leaky_relu(x: np.ndarray, negative_slope: float = 0.01) -> np.ndarray:
    """``x`` where ``x > 0``, else ``negative_slope * x``."""
    return _map(lambda v: v if v > 0 else negative_slope * v, x)


def leaky_relu_backward(
    grad_output: np.ndarray, x: np.ndarray, negative_slope: float = 0.01
) -> np.ndarray:
    """``grad_output`` where ``x > 0``, else ``negative_slope * grad_output``."""
    return _map(lambda g, v: g if v > 0 else negative_slope * g, grad_output, x)


def _sigmoid(v: float) -> float:
    # 1 / (1 + exp(-v)), with the exponent kept non-positive so it cannot overflow.
    if v >= 0:
        return 1.0 / (1.0 + math.exp(-v))
    e = math.exp(v)
    return e / (1.0 + e)


def sigmoid(x: np.ndarray) -> np.ndarray:
    """``1 / (1 + exp(-x))``."""
    return _map(_sigmoid, x)


def sigmoid_backward(grad_output: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``grad_output * y * (1 - y)``, the derivative written through the output."""
    return _map(lambda g, s: g * s * (1.0 - s), grad_output, y)


def tanh(x: np.ndarray) -> np.ndarray:
    """``(exp(x) - exp(-x)) / (exp(x) + exp(-x))``, via :func:`math.tanh`."""
    return _map(math.tanh, x)


def tanh_backward(grad_output: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``grad_output * (1 - y**2)``, the derivative written through the output."""
    return _map(lambda g, t: g * (1.0 - t * t), grad_output, y)
