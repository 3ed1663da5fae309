"""Naive float64 references for softmax, log-softmax and softmax cross-entropy.

Written from the definitions with an explicit Python loop over rows; every function
returns float64 whatever the input dtype. The test oracle and benchmark baseline
for :mod:`fastcnn.functional.softmax`.
"""

from __future__ import annotations

import math

import numpy as np


def _rows(x: np.ndarray, axis: int) -> np.ndarray:
    """``x`` in float64 with ``axis`` moved last, as a (rows, k) copy."""
    moved = np.moveaxis(np.asarray(x, dtype=np.float64), axis, -1)
    return moved.reshape(-1, moved.shape[-1]).copy()


def _unrows(rows: np.ndarray, shape: tuple[int, ...], axis: int) -> np.ndarray:
    moved_shape = np.moveaxis(np.empty(shape, dtype=np.uint8), axis, -1).shape
    return np.moveaxis(rows.reshape(moved_shape), -1, axis)


def _logsumexp(row: np.ndarray) -> float:
    """``log(sum(exp(row)))``, computed as ``m + log(sum(exp(row - m)))``.

    ``m`` is the row maximum; a row of all -inf, or one holding +inf or NaN, gives
    NaN through ``row - m``.
    """
    peak = float(np.max(row))
    return peak + math.log(float(np.sum(np.exp(row - peak))))


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Softmax ``exp(x) / sum(exp(x))`` along ``axis``, in float64."""
    rows = _rows(x, axis)
    out = np.empty_like(rows)
    for i in range(rows.shape[0]):
        out[i] = np.exp(rows[i] - _logsumexp(rows[i]))
    return _unrows(out, np.shape(x), axis)


def log_softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Log-softmax ``x - log(sum(exp(x)))`` along ``axis``, in float64."""
    rows = _rows(x, axis)
    out = np.empty_like(rows)
    for i in range(rows.shape[0]):
        out[i] = rows[i] - _logsumexp(rows[i])
    return _unrows(out, np.shape(x), axis)


def softmax_backward(
    grad_output: np.ndarray, y: np.ndarray, axis: int = -1
) -> np.ndarray:
    """Jacobian-vector product of softmax: ``J^T g`` with ``J = diag(y) - y y^T``."""
    g = _rows(grad_output, axis)
    p = _rows(y, axis)
    out = np.empty_like(p)
    for i in range(p.shape[0]):
        jacobian = np.diag(p[i]) - np.outer(p[i], p[i])
        out[i] = jacobian.T @ g[i]
    return _unrows(out, np.shape(y), axis)


def log_softmax_backward(
    grad_output: np.ndarray, y_log: np.ndarray, axis: int = -1
) -> np.ndarray:
    """Jacobian-vector product of log-softmax, ``J = I - 1 softmax^T``."""
    g = _rows(grad_output, axis)
    logp = _rows(y_log, axis)
    out = np.empty_like(logp)
    for i in range(logp.shape[0]):
        k = logp.shape[1]
        jacobian = np.eye(k) - np.outer(np.ones(k), np.exp(logp[i]))
        out[i] = jacobian.T @ g[i]
    return _unrows(out, np.shape(y_log), axis)


def target_distribution(
    target: np.ndarray | int, n: int, k: int, label_smoothing: float = 0.0
) -> np.ndarray:
    """The (n, k) float64 target distribution: one-hot rows or given probabilities,
    then ``(1 - label_smoothing) * y + label_smoothing / k``."""
    target = np.asarray(target)
    if target.dtype.kind in "iu":
        y = np.zeros((n, k))
        for i, t in enumerate(target.reshape(n)):
            y[i, int(t)] = 1.0
    else:
        y = target.astype(np.float64).reshape(n, k)
    return (1.0 - label_smoothing) * y + label_smoothing / k


def _reduce(losses: np.ndarray, reduction: str, unbatched: bool) -> np.ndarray:
    if reduction == "none":
        return losses.reshape(()) if unbatched else losses
    total = math.fsum(losses)
    if reduction == "mean":
        total = total / len(losses) if len(losses) else math.nan
    return np.asarray(total)


def cross_entropy(
    logits: np.ndarray,
    target: np.ndarray | int,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
) -> np.ndarray:
    """Cross-entropy ``logsumexp(o) * sum(y) - sum(y * o)`` per row, in float64.

    Classes with ``y == 0`` add nothing (also where ``o`` is -inf). "mean" divides
    by the number of rows.
    """
    o = np.asarray(logits, dtype=np.float64)
    unbatched = o.ndim == 1
    o = o.reshape(-1, o.shape[-1])
    n, k = o.shape
    y = target_distribution(target, n, k, label_smoothing)
    losses = np.empty(n)
    for i in range(n):
        weighted = sum(y[i, j] * o[i, j] for j in range(k) if y[i, j] != 0)
        losses[i] = _logsumexp(o[i]) * np.sum(y[i]) - weighted
    return _reduce(losses, reduction, unbatched)


def cross_entropy_backward(
    logits: np.ndarray,
    target: np.ndarray | int,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
    grad_output: float | np.ndarray = 1.0,
) -> np.ndarray:
    """Gradient ``(softmax(o) * sum(y) - y) * grad_output`` of the cross-entropy,
    divided by the number of rows for "mean", in float64."""
    o = np.asarray(logits, dtype=np.float64)
    shape = o.shape
    o = o.reshape(-1, o.shape[-1])
    n, k = o.shape
    y = target_distribution(target, n, k, label_smoothing)
    scale = np.broadcast_to(np.asarray(grad_output, dtype=np.float64), (n,))
    if reduction == "mean":
        scale = scale / n
    grad = np.empty((n, k))
    for i in range(n):
        p = np.exp(o[i] - _logsumexp(o[i]))
        grad[i] = (p * np.sum(y[i]) - y[i]) * scale[i]
    return grad.reshape(shape)
