"""Naive float64 references for the dense (linear) layer.

Written from the definitions, one output element at a time; every function returns
float64 whatever the input dtype. The test oracle and benchmark baseline for
:mod:`fastcnn.functional.dense`.
"""

from __future__ import annotations

import numpy as np


def linear(
    x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None = None
) -> np.ndarray:
    """``y[..., j] = sum_k x[..., k] * weight[j, k] + bias[j]``, in float64."""
    x = np.asarray(x, dtype=np.float64)
    weight = np.asarray(weight, dtype=np.float64)
    out_features, in_features = weight.shape
    rows = x.reshape(-1, in_features)
    y = np.empty((rows.shape[0], out_features))
    for i in range(rows.shape[0]):
        for j in range(out_features):
            y[i, j] = np.dot(rows[i], weight[j])
            if bias is not None:
                y[i, j] += float(bias[j])
    return y.reshape((*x.shape[:-1], out_features))


def linear_backward(
    grad_output: np.ndarray,
    x: np.ndarray,
    weight: np.ndarray,
    bias: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Gradients ``(grad_input, grad_weight, grad_bias)`` of ``linear``, in float64.

    ``grad_input[i, k] = sum_j g[i, j] * weight[j, k]``,
    ``grad_weight[j, k] = sum_i g[i, j] * x[i, k]`` and
    ``grad_bias[j] = sum_i g[i, j]``, with ``i`` running over every leading axis;
    ``grad_bias`` is None when ``bias`` is None.
    """
    x = np.asarray(x, dtype=np.float64)
    weight = np.asarray(weight, dtype=np.float64)
    out_features, in_features = weight.shape
    rows = x.reshape(-1, in_features)
    g = np.asarray(grad_output, dtype=np.float64).reshape(-1, out_features)
    m = rows.shape[0]

    grad_input = np.empty((m, in_features))
    for i in range(m):
        for k in range(in_features):
            grad_input[i, k] = np.dot(g[i], weight[:, k])

    grad_weight = np.empty((out_features, in_features))
    for j in range(out_features):
        for k in range(in_features):
            grad_weight[j, k] = np.dot(g[:, j], rows[:, k])

    grad_bias = None
    if bias is not None:
        grad_bias = np.empty(out_features)
        for j in range(out_features):
            grad_bias[j] = np.sum(g[:, j])
    return grad_input.reshape(x.shape), grad_weight, grad_bias
