"""Numba kernels for softmax, log-softmax and the fused softmax cross-entropy.

Every row kernel works on C-contiguous 2-D arrays of shape ``(rows, k)``,
normalising along the last axis, and is parallel over rows (or blocks of rows):
each ``prange`` iteration reads and writes its own rows only, so results do not
depend on the number of threads. Each row is shifted by its own maximum before
``exp``, never by a batch-wide one. Arithmetic is in the arrays' dtype.

The exponentials come from :func:`exp`, written here in plain arithmetic so that
LLVM vectorises the loops that call it; Numba's ``np.exp`` is a scalar call into
the C library that no loop around it can vectorise. :func:`log` does the same for
float32, and :func:`maxnum` lets the maximum of a long row vectorise.
"""

from __future__ import annotations

import llvmlite.ir as ir
import numpy as np
from numba import prange, types
from numba.core import cgutils
from numba.extending import intrinsic, overload

from fastcnn._config import parallel_kernel, serial_kernel
from fastcnn.kernels._small import serial_below

# ------------------------------------------------------------------------- exp

LOG2E = 1.4426950408889634
# ln(2) as a sum of two parts, each rounded to the dtype: HI holds the leading 16
# (float32) or 32 (float64) bits, LO the rest.
LN2_HI_32 = 6.9313812256e-01
LN2_LO_32 = 9.0580006145e-06
LN2_HI_64 = 6.93147180369123816490e-01
LN2_LO_64 = 1.90821492927058770002e-10


def _bitcast_intrinsic(source, result):
    """An intrinsic reinterpreting the bits of a ``source`` scalar as ``result``."""

    @intrinsic
    def bitcast(typingctx, value):
        if value != source:
            return None

        def codegen(context, builder, signature, args):
            return builder.bitcast(args[0], context.get_value_type(result))

        return result(source), codegen

    return bitcast


_float32_from_bits = _bitcast_intrinsic(types.int32, types.float32)
_bits_from_float32 = _bitcast_intrinsic(types.float32, types.int32)
_float64_from_bits = _bitcast_intrinsic(types.int64, types.float64)
_bits_from_float64 = _bitcast_intrinsic(types.float64, types.int64)


@intrinsic
def _fma(typingctx, a, b, c):
    """``a * b + c`` rounded once (LLVM's ``fma``, which reassociation leaves be)."""
    if not (a == b == c and a in (types.float32, types.float64)):
        return None

    def codegen(context, builder, signature, args):
        return builder.fma(*args)

    return a(a, a, a), codegen


def exp(x):
    """``e ** x`` of a float32 or float64 scalar, in a form loops can vectorise.

    In compiled code this is the branch-free arithmetic of ``_exp_float32`` and
    ``_exp_float64`` (chosen by the overload below); called from Python it is
    ``np.exp``.

    Parameters
    ----------
    x : float32 or float64
        The exponent.

    Returns
    -------
    float32 or float64
        ``exp(x)`` in the dtype of ``x``, within 1 ulp of the exact value
        (subnormal results included); ``+inf`` past the largest finite result,
        ``0`` below half the smallest subnormal, ``exp(-inf) = 0``,
        ``exp(inf) = inf``, NaN stays NaN.

    Notes
    -----
    ``x = n ln2 + r`` with ``n`` the integer nearest to ``x / ln2`` and ``|r| <=
    ln2 / 2``. ``r`` is computed with two fused multiply-adds, one per part of
    ln2: an ordinary ``(x - n ln2_hi) - n ln2_lo`` would be folded back into
    ``x - n ln2`` by the reassociation the kernels are compiled with, costing up
    to 200 ulp. ``exp(r)`` is its Taylor polynomial (degree 7 in float32, 13 in
    float64) by Horner's rule. ``2 ** n`` is applied in two halves built in the
    exponent bits: the first is added to the exponent field of the polynomial
    (exact, the result stays normal), the second multiplies, so a result in the
    subnormal range is rounded once. On a CPU without FMA instructions ``fma`` is
    a library call: still exact, no longer fast.
    """
    return np.exp(x)


def _exp_float32(x):
    f = np.float32
    # Clamped where the result is already inf (or 0); NaN is put back at the end.
    xc = x if x < f(89.0) else f(89.0)
    xc = xc if xc > f(-104.5) else f(-104.5)
    t = xc * f(LOG2E)
    n = np.int32(t + (f(0.5) if t >= f(0) else f(-0.5)))
    fn = np.float32(n)
    r = _fma(-fn, f(LN2_HI_32), xc)
    r = _fma(-fn, f(LN2_LO_32), r)
    p = f(1.0 / 5040)
    p = p * r + f(1.0 / 720)
    p = p * r + f(1.0 / 120)
    p = p * r + f(1.0 / 24)
    p = p * r + f(1.0 / 6)
    p = p * r + f(0.5)
    p = p * r + f(1.0)
    p = p * r + f(1.0)
    n1 = n >> np.int32(1)
    n2 = n - n1
    q = _float32_from_bits(np.int32(_bits_from_float32(p) + (n1 << np.int32(23))))
    y = q * _float32_from_bits(np.int32((n2 + np.int32(127)) << np.int32(23)))
    return y if x == x else x


def _exp_float64(x):
    xc = x if x < 710.0 else 710.0
    xc = xc if xc > -746.0 else -746.0
    t = xc * LOG2E
    n = np.int32(t + (0.5 if t >= 0 else -0.5))
    fn = np.float64(n)
    r = _fma(-fn, LN2_HI_64, xc)
    r = _fma(-fn, LN2_LO_64, r)
    p = 1.0 / 6227020800
    p = p * r + 1.0 / 479001600
    p = p * r + 1.0 / 39916800
    p = p * r + 1.0 / 3628800
    p = p * r + 1.0 / 362880
    p = p * r + 1.0 / 40320
    p = p * r + 1.0 / 5040
    p = p * r + 1.0 / 720
    p = p * r + 1.0 / 120
    p = p * r + 1.0 / 24
    p = p * r + 1.0 / 6
    p = p * r + 0.5
    p = p * r + 1.0
    p = p * r + 1.0
    n1 = np.int64(n >> np.int32(1))
    n2 = np.int64(n) - n1
    q = _float64_from_bits(_bits_from_float64(p) + (n1 << 52))
    y = q * _float64_from_bits((n2 + 1023) << 52)
    return y if x == x else x


@overload(exp)
def _exp_overload(x):
    if x == types.float32:
        return _exp_float32
    if x == types.float64:
        return _exp_float64
    return None


@serial_kernel
def exp_array(x, out):
    """Write :func:`exp` of every element of the 1-d array ``x`` to ``out``.

    Parameters
    ----------
    x : numpy.ndarray, shape (size,)
        Exponents, float32 or float64.
    out : numpy.ndarray, shape (size,)
        Output, same dtype as ``x``.
    """
    for i in range(x.shape[0]):
        out[i] = exp(x[i])


# ------------------------------------------------------------------ log and max

LN2 = 0.6931471805599453
SQRT2 = 1.4142135623730951


def log(x):
    """Natural logarithm of a float32 or float64 scalar; vectorisable for float32.

    In compiled code float32 arguments take the branch-free arithmetic of
    ``_log_float32`` and float64 arguments ``np.log`` (a scalar library call);
    called from Python it is ``np.log``.

    Parameters
    ----------
    x : float32 or float64
        The argument.

    Returns
    -------
    float32 or float64
        ``log(x)`` in the dtype of ``x``, within 1 ulp (float32: 0.51 ulp); ``-inf``
        at zero, NaN below zero and for NaN, ``inf`` at ``inf``.

    Notes
    -----
    A float32 argument is widened to float64 (subnormals become normal) and split
    into ``2 ** e * m`` with ``m`` in ``[sqrt(1/2), sqrt(2))`` through its bits;
    ``log(m) = 2 atanh(s)``, ``s = (m - 1) / (m + 1)``, is a short series in
    ``s ** 2``, and ``e ln2 + log(m)`` is rounded to float32 once.
    """
    return np.log(x)


def _log_float32(x):
    xd = np.float64(x)
    bits = _bits_from_float64(xd)
    e = np.int32(bits >> 52) - np.int32(1023)
    # The mantissa with the exponent of 1: m in [1, 2).
    m = _float64_from_bits((bits & 0x000FFFFFFFFFFFFF) | 0x3FF0000000000000)
    above = m > SQRT2
    m = m * 0.5 if above else m
    e = e + np.int32(1) if above else e
    s = (m - 1.0) / (m + 1.0)
    z = s * s
    series = 1.0 / 11
    series = series * z + 1.0 / 9
    series = series * z + 1.0 / 7
    series = series * z + 1.0 / 5
    series = series * z + 1.0 / 3
    series = series * z + 1.0
    y = np.float32(np.float64(e) * LN2 + 2.0 * s * series)
    y = y if x < np.float32(np.inf) else x
    y = y if x > np.float32(0) else np.float32(-np.inf)
    return y if x >= np.float32(0) else np.float32(np.nan) * x


def _log_float64(x):
    return np.log(x)


@overload(log)
def _log_overload(x):
    if x == types.float32:
        return _log_float32
    if x == types.float64:
        return _log_float64
    return None


@serial_kernel
def log_array(x, out):
    """Write :func:`log` of every element of the 1-d array ``x`` to ``out``.

    Parameters
    ----------
    x : numpy.ndarray, shape (size,)
        Arguments, float32 or float64.
    out : numpy.ndarray, shape (size,)
        Output, same dtype as ``x``.
    """
    for i in range(x.shape[0]):
        out[i] = log(x[i])


@intrinsic
def _maxnum_intrinsic(typingctx, a, b):
    if not (a == b and a in (types.float32, types.float64)):
        return None

    def codegen(context, builder, signature, args):
        value_type = context.get_value_type(a)
        name = "llvm.maxnum.f32" if a == types.float32 else "llvm.maxnum.f64"
        function_type = ir.FunctionType(value_type, [value_type, value_type])
        function = cgutils.get_or_insert_function(builder.module, function_type, name)
        return builder.call(function, args)

    return a(a, a), codegen


def maxnum(a, b):
    """The larger of ``a`` and ``b``, the other one where one is NaN.

    In compiled code this is LLVM's ``maxnum``: unlike a compare-and-select, a
    loop reducing with it is vectorised without assuming the absence of NaN.
    Called from Python it is ``np.fmax``.
    """
    return np.fmax(a, b)


@overload(maxnum)
def _maxnum_overload(a, b):
    if a == b and a in (types.float32, types.float64):
        return lambda a, b: _maxnum_intrinsic(a, b)
    return None


#: Rows of logits are handled in blocks of about this many elements: their
#: exponentials are taken in one loop over the block, not row by row.
BLOCK_ELEMENTS = 2048

#: Rows at least this long find their maximum with the vectorised ``maxnum``
#: reduction (a NaN may or may not come out; the sums that follow turn the row
#: to NaN either way); shorter rows compare plainly (cheaper to start). In
#: cross_entropy_index_rows shorter rows also take their exponentials in one
#: loop per block of rows.
LONG_ROW = 48


# ---------------------------------------------------------------- row kernels


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
        if k >= LONG_ROW:
            for j in range(1, k):
                peak = maxnum(peak, x[i, j])
        else:
            for j in range(1, k):
                if x[i, j] > peak:
                    peak = x[i, j]
        total = x.dtype.type(0)
        for j in range(k):
            e = exp(x[i, j] - peak)
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
        if k >= LONG_ROW:
            for j in range(1, k):
                peak = maxnum(peak, x[i, j])
        else:
            for j in range(1, k):
                if x[i, j] > peak:
                    peak = x[i, j]
        total = x.dtype.type(0)
        for j in range(k):
            total += exp(x[i, j] - peak)
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
            out[i, j] = grad_output[i, j] - exp(y_log[i, j]) * total


@serial_below(0)
@parallel_kernel
def cross_entropy_index_rows(
    logits, target, smoothing, grad_scale, want_grad, losses, totals, grad
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
    grad_scale : numpy.ndarray, shape (n,) or (1,)
        Factor applied to row ``i`` of the gradient (the one factor of every row
        when of shape ``(1,)``).
    want_grad : bool
        Whether to finish ``grad``; when false ``grad_scale`` is not read (it may
        be empty) and ``grad`` is left holding the exponentials ``exp(o - max)``.
    losses : numpy.ndarray, shape (n,)
        Output: the loss of every row.
    totals : numpy.ndarray, shape (n,)
        Scratch: the normaliser ``sum(exp(o - max))`` of every row.
    grad : numpy.ndarray, shape (n, k)
        Output: ``(softmax(o) * sum(y) - y) * grad_scale[i]`` for every row.

    Notes
    -----
    Rows go in blocks of ``BLOCK_ELEMENTS // k``. Rows shorter than ``LONG_ROW``
    have their shifted logits written to ``grad``, exponentiated in one loop over
    the block (leaving no scalar remainder per row), then summed row by row;
    longer rows are exponentiated and summed in one loop each. The gradient is
    normalised row by row, and the logarithms of the normalisers are taken after
    the blocks, in one loop over ``totals``.
    """
    # Elements are indexed in place: a row view per row (logits[i]) costs
    # reference counting, a fifth of the time for rows of 10.
    n, k = logits.shape
    zero = logits.dtype.type(0)
    one = logits.dtype.type(1)
    eps = logits.dtype.type(smoothing)
    off = eps / logits.dtype.type(k)
    on = (one - eps) + off
    scale_step = 1 if grad_scale.shape[0] == n else 0
    block_rows = max(1, BLOCK_ELEMENTS // k)
    # Each iteration owns rows start:stop of losses, totals and grad.
    for block in prange((n + block_rows - 1) // block_rows):
        start = block * block_rows
        stop = min(start + block_rows, n)
        for i in range(start, stop):
            t = target[i]
            peak = logits[i, 0]
            if k >= LONG_ROW:
                for j in range(1, k):
                    peak = maxnum(peak, logits[i, j])
            else:
                for j in range(1, k):
                    if logits[i, j] > peak:
                        peak = logits[i, j]

            # With eps == 0 only the target class carries weight.
            weighted = on * (logits[i, t] - peak)
            if off != 0:
                others = zero
                for j in range(k):
                    if j != t:
                        others += logits[i, j] - peak
                weighted += off * others
            losses[i] = weighted

            if k >= LONG_ROW:
                total = zero
                for j in range(k):
                    e = exp(logits[i, j] - peak)
                    grad[i, j] = e
                    total += e
                totals[i] = total
            else:
                for j in range(k):
                    grad[i, j] = logits[i, j] - peak

        if k < LONG_ROW:
            # Short rows: one flat loop over the block, no scalar remainder per row.
            shifted = grad[start:stop].reshape(-1)
            for m in range(shifted.shape[0]):
                shifted[m] = exp(shifted[m])
            for i in range(start, stop):
                total = zero
                for j in range(k):
                    total += grad[i, j]
                totals[i] = total

        if want_grad:
            for i in range(start, stop):
                # sum(y) is 1 for index targets.
                t = target[i]
                scale = grad_scale[i * scale_step]
                inv_total = one / totals[i]
                target_p = grad[i, t] * inv_total
                if off != 0:
                    for j in range(k):
                        grad[i, j] = (grad[i, j] * inv_total - off) * scale
                else:
                    factor = inv_total * scale
                    for j in range(k):
                        grad[i, j] *= factor
                grad[i, t] = (target_p - on) * scale

    for i in range(n):
        losses[i] = log(totals[i]) - losses[i]


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
    grad_scale : numpy.ndarray, shape (n,) or (1,)
        Factor applied to row ``i`` of the gradient (the one factor of every row
        when of shape ``(1,)``).
    want_grad : bool
        Whether to finish ``grad``; when false ``grad_scale`` is not read (it may
        be empty) and ``grad`` is left holding the exponentials ``exp(o - max)``.
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
    scale_step = 1 if grad_scale.shape[0] == n else 0
    # Each iteration owns row i of losses and of grad.
    for i in prange(n):
        peak = logits[i, 0]
        if k >= LONG_ROW:
            for j in range(1, k):
                peak = maxnum(peak, logits[i, j])
        else:
            for j in range(1, k):
                if logits[i, j] > peak:
                    peak = logits[i, j]
        total = logits.dtype.type(0)
        target_sum = logits.dtype.type(0)
        weighted = logits.dtype.type(0)
        for j in range(k):
            shifted = logits[i, j] - peak
            e = exp(shifted)
            total += e
            y = keep * target[i, j] + off
            target_sum += y
            if y != 0:
                weighted += y * shifted
            grad[i, j] = e
        losses[i] = np.log(total) * target_sum - weighted
        if want_grad:
            scale = grad_scale[i * scale_step]
            factor = target_sum / total
            for j in range(k):
                y = keep * target[i, j] + off
                grad[i, j] = (grad[i, j] * factor - y) * scale
