"""Numba kernels for softmax, log-softmax and the fused softmax cross-entropy.

Every kernel works on C-contiguous 2-D arrays of shape ``(rows, k)``, normalising
along the last axis, and is parallel over rows: each ``prange`` iteration reads and
writes its own row only, so results do not depend on the number of threads. Each
row is shifted by its own maximum before ``exp``, never by a batch-wide one.
Arithmetic is in the arrays' dtype.
"""

from __future__ import annotations

import numpy as np
from numba import prange

from fastcnn._config import parallel_kernel
from fastcnn.kernels._small import serial_below


@serial_below(0)
@parallel_kernel
def softmax_rows(x, out):
    """Write ``exp(x - max) / sum(exp(x - max))`` of every row of ``x`` to ``out``.

    Parameters
    ----------
    x : numpy.ndarray, shape (rows, k), k >= 1
        Input scores.
    out : numpy.ndarray, shape (rows, k)
        Output probabilities, same dtype as ``x``.
    """
    rows, k = x.shape
    # Each iteration owns row i of out.
    for i in prange(rows):
        peak = x[i, 0]
        for j in range(1, k):
            if x[i, j] > peak:
                peak = x[i, j]
        total = x.dtype.type(0)
        for j in range(k):
            e = np.exp(x[i, j] - peak)
            out[i, j] = e
            total += e
        scale = x.dtype.type(1) / total
        for j in range(k):
            out[i, j] *= scale


@serial_below(0)
@parallel_kernel
def log_softmax_rows(x, out):
    """Write ``x - max - log(sum(exp(x - max)))`` of every row of ``x`` to ``out``.

    Parameters
    ----------
    x : numpy.ndarray, shape (rows, k), k >= 1
        Input scores.
    out : numpy.ndarray, shape (rows, k)
        Output log-probabilities, same dtype as ``x``.
    """
    rows, k = x.shape
    # Each iteration owns row i of out.
    for i in prange(rows):
        peak = x[i, 0]
        for j in range(1, k):
            if x[i, j] > peak:
                peak = x[i, j]
        total = x.dtype.type(0)
        for j in range(k):
            total += np.exp(x[i, j] - peak)
        log_total = np.log(total)
        # Two passes through memory: written as one expression, reassociation
        # would fold it into x - (peak + log_total), which rounds to the
        # spacing of peak (5e-4 at 1e4 in float32).
        for j in range(k):
            out[i, j] = x[i, j] - peak
        for j in range(k):
            out[i, j] -= log_total


@serial_below(0)
@parallel_kernel
def softmax_backward_rows(grad_output, y, out):
    """Write the softmax Jacobian-vector product ``y * (g - sum(g * y))`` per row.

    Parameters
    ----------
    grad_output : numpy.ndarray, shape (rows, k)
        Gradient of the loss with respect to the softmax output.
    y : numpy.ndarray, shape (rows, k)
        The softmax output of the forward pass.
    out : numpy.ndarray, shape (rows, k)
        Gradient with respect to the softmax input.
    """
    rows, k = y.shape
    # Each iteration owns row i of out.
    for i in prange(rows):
        dot = y.dtype.type(0)
        for j in range(k):
            dot += grad_output[i, j] * y[i, j]
        for j in range(k):
            out[i, j] = y[i, j] * (grad_output[i, j] - dot)


@serial_below(0)
@parallel_kernel
def log_softmax_backward_rows(grad_output, y_log, out):
    """Write the log-softmax Jacobian-vector product ``g - exp(y_log) * sum(g)``.

    Parameters
    ----------
    grad_output : numpy.ndarray, shape (rows, k)
        Gradient of the loss with respect to the log-softmax output.
    y_log : numpy.ndarray, shape (rows, k)
        The log-softmax output of the forward pass.
    out : numpy.ndarray, shape (rows, k)
        Gradient with respect to the log-softmax input.
    """
    rows, k = y_log.shape
    # Each iteration owns row i of out.
    for i in prange(rows):
        total = y_log.dtype.type(0)
        for j in range(k):
            total += grad_output[i, j]
        for j in range(k):
            out[i, j] = grad_output[i, j] - np.exp(y_log[i, j]) * total


@serial_below(0)
@parallel_kernel
def cross_entropy_index_rows(
    logits, target, smoothing, grad_scale, want_grad, losses, grad
):
    """Per-row cross-entropy (and its gradient) for class-index targets.

    Row ``i``'s target distribution is ``y = (1 - smoothing) * onehot(target[i]) +
    smoothing / k``. The loss is ``logsumexp(o) * sum(y) - sum(y * o)`` with both
    terms taken relative to the row maximum, and with classes where ``y == 0``
    left out of the second sum (so a logit of -inf there keeps the loss finite).

    Parameters
    ----------
    logits : numpy.ndarray, shape (n, k), k >= 1
        Unnormalised scores ``o``.
    target : numpy.ndarray of int64, shape (n,)
        Class indices, each in ``[0, k)`` (not checked here).
    smoothing : float
        Label smoothing ``eps`` in ``[0, 1]``.
    grad_scale : numpy.ndarray, shape (n,)
        Factor applied to row ``i`` of the gradient.
    want_grad : bool
        Whether to write ``grad``; when false ``grad_scale`` and ``grad`` are
        not touched (they may be empty).
    losses : numpy.ndarray, shape (n,)
        Output: the loss of every row.
    grad : numpy.ndarray, shape (n, k)
        Output: ``(softmax(o) * sum(y) - y) * grad_scale[i]`` for every row.
    """
    n, k = logits.shape
    one = logits.dtype.type(1)
    eps = logits.dtype.type(smoothing)
    off = eps / logits.dtype.type(k)
    on = (one - eps) + off
    # Each iteration owns row i of losses and of grad.
    for i in prange(n):
        t = target[i]
        peak = logits[i, 0]
        for j in range(1, k):
            if logits[i, j] > peak:
                peak = logits[i, j]
        total = logits.dtype.type(0)
        others = logits.dtype.type(0)
        for j in range(k):
            shifted = logits[i, j] - peak
            e = np.exp(shifted)
            total += e
            if j != t:
                others += shifted
            if want_grad:
                grad[i, j] = e
        # With eps == 0 only the target class carries weight.
        weighted = on * (logits[i, t] - peak)
        if off != 0:
            weighted += off * others
        losses[i] = np.log(total) - weighted
        if want_grad:
            # sum(y) is 1 for index targets.
            scale = grad_scale[i]
            inv_total = one / total
            target_p = grad[i, t] * inv_total
            for j in range(k):
                grad[i, j] = (grad[i, j] * inv_total - off) * scale
            grad[i, t] = (target_p - on) * scale


@serial_below(0)
@parallel_kernel
def cross_entropy_prob_rows(
    logits, target, smoothing, grad_scale, want_grad, losses, grad
):
    """Per-row cross-entropy (and its gradient) for class-probability targets.

    Row ``i``'s target distribution is ``y = (1 - smoothing) * target[i] +
    smoothing / k``; rows need not sum to one. The loss is ``logsumexp(o) * sum(y)
    - sum(y * o)``, both terms relative to the row maximum, leaving out classes
    where ``y == 0`` (so a logit of -inf there keeps the loss finite).

    Parameters
    ----------
    logits : numpy.ndarray, shape (n, k), k >= 1
        Unnormalised scores ``o``.
    target : numpy.ndarray, shape (n, k)
        Target probabilities, same dtype as ``logits``.
    smoothing : float
        Label smoothing ``eps`` in ``[0, 1]``.
    grad_scale : numpy.ndarray, shape (n,)
        Factor applied to row ``i`` of the gradient.
    want_grad : bool
        Whether to write ``grad``; when false ``grad_scale`` and ``grad`` are
        not touched (they may be empty).
    losses : numpy.ndarray, shape (n,)
        Output: the loss of every row.
    grad : numpy.ndarray, shape (n, k)
        Output: ``(softmax(o) * sum(y) - y) * grad_scale[i]`` for every row.
    """
    n, k = logits.shape
    one = logits.dtype.type(1)
    eps = logits.dtype.type(smoothing)
    off = eps / logits.dtype.type(k)
    keep = one - eps
    # Each iteration owns row i of losses and of grad.
    for i in prange(n):
        peak = logits[i, 0]
        for j in range(1, k):
            if logits[i, j] > peak:
                peak = logits[i, j]
        total = logits.dtype.type(0)
        target_sum = logits.dtype.type(0)
        weighted = logits.dtype.type(0)
        for j in range(k):
            shifted = logits[i, j] - peak
            e = np.exp(shifted)
            total += e
            y = keep * target[i, j] + off
            target_sum += y
            if y != 0:
                weighted += y * shifted
            if want_grad:
                grad[i, j] = e
        losses[i] = np.log(total) * target_sum - weighted
        if want_grad:
            scale = grad_scale[i]
            factor = target_sum / total
            for j in range(k):
                y = keep * target[i, j] + off
                grad[i, j] = (grad[i, j] * factor - y) * scale
