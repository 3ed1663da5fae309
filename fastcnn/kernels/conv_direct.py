"""Numba kernel of 2-d convolution computed directly, without a column matrix.

For stride 1 the windows of one output row start at consecutive positions of the
input row. The kernel therefore copies each input plane of a sample into a
zero-bordered plane of row width ``Wp = W_out + (kW - 1) * dW`` stored flat, and
for every kernel tap ``(i, j)`` adds ``weight[co, ci, i, j]`` times the
contiguous run ``plane[i * dH * Wp + j * dW + q]``, ``q < H_out * Wp``, to the
output channel's accumulator. Position ``q = oh * Wp + ow`` holds output
``(oh, ow)``; the columns ``ow >= W_out`` are computed and dropped. The long
contiguous loops vectorise, and the taps of one kernel row are fused into one
pass over the accumulators of four output channels at a time, so that each
accumulator is loaded and stored once per kernel row rather than once per tap.
A kernel row can skip the output rows whose windows meet it only in all-zero
rows of the plane (the input gradient pads by the whole kernel's reach, so a
5x5 kernel spends more than a quarter of its work there otherwise); the forward
pass multiplies them anyway, so that an infinite filter tap meeting the zero
border gives NaN, as the reference's sum does.

This beats the column matrix and matrix products when the filters are small
(few input channels times taps): the column matrix is then as large as the
output, and copying it in and out costs more than the arithmetic.
"""

from __future__ import annotations

import numpy as np
from numba import prange

from fastcnn._config import parallel_kernel, serial_kernel
from fastcnn.kernels._small import serial_below

#: Output channels accumulated together in one pass over a plane.
_BLOCK = 4


@serial_kernel
def _run_bounds(i, dil_h, wp, length, top, bottom):
    """The part ``q0 <= q < q1`` of a run that kernel row ``i`` must add.

    Output row ``oh`` reads plane row ``oh + i * dil_h``; only plane rows
    ``top <= r < bottom`` may hold anything but zeros.
    """
    h_out = length // wp
    first = max(0, top - i * dil_h)
    last = min(h_out, bottom - i * dil_h)
    q0 = first * wp
    return q0, max(q0, last * wp)


@serial_kernel
def _add_rows3(acc, planes, taps, wp, dil_h, dil_w, top, bottom):
    """Add all 3-wide kernel rows of four output channels to their accumulators.

    ``acc[b, q] += sum_(c, i, j) taps[b, c, i, j] * planes[c, i * dil_h * wp + j
    * dil_w + q]`` for ``q < acc.shape[1]``, one kernel row ``(c, i)`` at a time:
    each accumulator is read and written once per kernel row, and each input
    value loaded once for the four channels. Only plane rows ``top <= r <
    bottom`` are read (see :func:`_run_bounds`).
    """
    length = acc.shape[1]
    for i in range(taps.shape[2]):
        q0, q1 = _run_bounds(i, dil_h, wp, length, top, bottom)
        n = q1 - q0
        a0 = acc[0, q0:q1]
        a1 = acc[1, q0:q1]
        a2 = acc[2, q0:q1]
        a3 = acc[3, q0:q1]
        for c in range(planes.shape[0]):
            row = planes[c, i * dil_h * wp + q0 :]
            w00, w01, w02 = taps[0, c, i, 0], taps[0, c, i, 1], taps[0, c, i, 2]
            w10, w11, w12 = taps[1, c, i, 0], taps[1, c, i, 1], taps[1, c, i, 2]
            w20, w21, w22 = taps[2, c, i, 0], taps[2, c, i, 1], taps[2, c, i, 2]
            w30, w31, w32 = taps[3, c, i, 0], taps[3, c, i, 1], taps[3, c, i, 2]
            s0 = row[:n]
            s1 = row[dil_w : dil_w + n]
            s2 = row[2 * dil_w : 2 * dil_w + n]
            for q in range(n):
                v0 = s0[q]
                v1 = s1[q]
                v2 = s2[q]
                a0[q] += w00 * v0 + w01 * v1 + w02 * v2
                a1[q] += w10 * v0 + w11 * v1 + w12 * v2
                a2[q] += w20 * v0 + w21 * v1 + w22 * v2
                a3[q] += w30 * v0 + w31 * v1 + w32 * v2


@serial_kernel
def _add_rows3_one(acc, planes, taps, wp, dil_h, dil_w, top, bottom):
    """:func:`_add_rows3` for one output channel: ``acc`` 1-d, ``taps`` 3-d."""
    length = acc.shape[0]
    for i in range(taps.shape[1]):
        q0, q1 = _run_bounds(i, dil_h, wp, length, top, bottom)
        n = q1 - q0
        dst = acc[q0:q1]
        for c in range(planes.shape[0]):
            row = planes[c, i * dil_h * wp + q0 :]
            w0, w1, w2 = taps[c, i, 0], taps[c, i, 1], taps[c, i, 2]
            s0 = row[:n]
            s1 = row[dil_w : dil_w + n]
            s2 = row[2 * dil_w : 2 * dil_w + n]
            for q in range(n):
                dst[q] += w0 * s0[q] + w1 * s1[q] + w2 * s2[q]


@serial_kernel
def _add_rows5_pair(acc0, acc1, planes, t0, t1, wp, dil_h, dil_w, top, bottom):
    """:func:`_add_rows3` for 5-wide kernel rows of two output channels.

    ``acc0`` and ``acc1`` are their 1-d accumulators, ``t0`` and ``t1`` their
    (C_in, kH, 5) filters: ten taps a pass.
    """
    length = acc0.shape[0]
    for i in range(t0.shape[1]):
        q0, q1 = _run_bounds(i, dil_h, wp, length, top, bottom)
        n = q1 - q0
        a0 = acc0[q0:q1]
        a1 = acc1[q0:q1]
        for c in range(planes.shape[0]):
            row = planes[c, i * dil_h * wp + q0 :]
            s0 = row[:n]
            s1 = row[dil_w : dil_w + n]
            s2 = row[2 * dil_w : 2 * dil_w + n]
            s3 = row[3 * dil_w : 3 * dil_w + n]
            s4 = row[4 * dil_w : 4 * dil_w + n]
            w00, w01, w02 = t0[c, i, 0], t0[c, i, 1], t0[c, i, 2]
            w03, w04 = t0[c, i, 3], t0[c, i, 4]
            w10, w11, w12 = t1[c, i, 0], t1[c, i, 1], t1[c, i, 2]
            w13, w14 = t1[c, i, 3], t1[c, i, 4]
            for q in range(n):
                v0 = s0[q]
                v1 = s1[q]
                v2 = s2[q]
                v3 = s3[q]
                v4 = s4[q]
                a0[q] += w00 * v0 + w01 * v1 + w02 * v2 + w03 * v3 + w04 * v4
                a1[q] += w10 * v0 + w11 * v1 + w12 * v2 + w13 * v3 + w14 * v4


@serial_kernel
def _accumulate(acc, planes, weight, co, block, wp, dil_h, dil_w, top, bottom):
    """Set ``acc[:block]`` to the sums of filters ``co .. co + block - 1``.

    ``acc[b, q] = sum_(c, i, j) weight[co + b, c, i, j] * planes[c, i * dil_h *
    wp + j * dil_w + q]``, reading plane rows ``top <= r < bottom`` only. A
    serial function of its own, so that the parallel kernel's loop body, which
    Numba compiles slowly, stays small.
    """
    c_in, kh, kw = weight.shape[1], weight.shape[2], weight.shape[3]
    length = acc.shape[1]
    acc[:] = 0
    if block == _BLOCK and kw == 3:
        taps = weight[co : co + _BLOCK]
        _add_rows3(acc, planes, taps, wp, dil_h, dil_w, top, bottom)
    elif kw == 5:
        # Two filters a pass (as fast per tap as four, timed apart); a lone
        # last filter is paired with itself and its copy's accumulator dropped.
        for b in range(0, block, 2):
            second = b + 1 if b + 1 < block else b
            _add_rows5_pair(
                acc[b],
                acc[b + 1],
                planes,
                weight[co + b],
                weight[co + second],
                wp,
                dil_h,
                dil_w,
                top,
                bottom,
            )
    elif kw == 3:
        for b in range(block):
            taps = weight[co + b]
            _add_rows3_one(acc[b], planes, taps, wp, dil_h, dil_w, top, bottom)
    else:
        for c in range(c_in):
            for i in range(kh):
                q0, q1 = _run_bounds(i, dil_h, wp, length, top, bottom)
                n = q1 - q0
                row = planes[c, i * dil_h * wp + q0 :]
                for j in range(kw):
                    run = row[j * dil_w : j * dil_w + n]
                    for b in range(block):
                        tap = weight[co + b, c, i, j]
                        dst = acc[b, q0:q1]
                        for q in range(n):
                            dst[q] += tap * run[q]


@serial_kernel
def _write_block(acc, y, bias, co, block, wp, relu):
    """Write ``acc[:block]`` plus the bias (and ReLU) to channels ``co ..`` of ``y``.

    ``y`` is one sample's (C_out, H_out, W_out) output. Row by row through 1-d
    views, with the ReLU test outside the loops: a loop over 2-d indices with
    the test inside did not vectorise and took two thirds of conv_first's time.
    """
    h_out, w_out = y.shape[1], y.shape[2]
    zero = y.dtype.type(0)
    for b in range(block):
        offset = bias[co + b]
        src = acc[b]
        dst = y[co + b]
        for oh in range(h_out):
            from_row = src[oh * wp : oh * wp + w_out]
            to_row = dst[oh]
            if relu:
                for ow in range(w_out):
                    value = from_row[ow] + offset
                    to_row[ow] = zero if value < zero else value
            else:
                for ow in range(w_out):
                    to_row[ow] = from_row[ow] + offset


@serial_below(3, extent_arg=0)
@parallel_kernel
def conv2d_direct(
    x, weight, bias, y, pad_top, pad_left, dil_h, dil_w, relu, skip_border
):
    """Stride-1, single-group convolution written straight into NCHW output.

    Parameters
    ----------
    x : ndarray, shape (N, C_in, H, W)
        C-contiguous input.
    weight : ndarray, shape (C_out, C_in, kH, kW)
        C-contiguous filters.
    bias : ndarray, shape (C_out,)
        Per-channel offset (zeros for a convolution without bias).
    y : ndarray, shape (N, C_out, H_out, W_out)
        Output, overwritten; ``H_out + (kH - 1) * dil_h`` must be at least
        ``pad_top + H`` and likewise for the width (padding never reaches past
        the windows).
    pad_top, pad_left, dil_h, dil_w : int
        Top/left zero padding and dilation.
    relu : bool
        Whether to write ``relu(conv + bias)`` (0 for negative values, NaN kept)
        instead of ``conv + bias``, in the same pass.
    skip_border : bool
        Whether to skip the products of filter taps with the rows of zeros above
        and below the input. Exact only for finite filters: an infinite tap
        times a skipped zero would have been NaN.
    """
    n_batch, c_in, h, w = x.shape
    c_out, kh, kw = weight.shape[0], weight.shape[2], weight.shape[3]
    h_out, w_out = y.shape[2], y.shape[3]
    wp = w_out + (kw - 1) * dil_w
    hp = h_out + (kh - 1) * dil_h
    length = h_out * wp
    # Reading run q < length at tap (kH - 1, kW - 1) reaches this far.
    plane_size = hp * wp + (kw - 1) * dil_w
    # Plane rows that can hold anything but zeros.
    top = pad_top if skip_border else 0
    bottom = pad_top + h if skip_border else hp

    # Each iteration owns sample n: y[n] and its own scratch planes.
    for n in prange(n_batch):
        planes = np.zeros((c_in, plane_size), dtype=x.dtype)
        for c in range(c_in):
            for r in range(h):
                start = (r + pad_top) * wp + pad_left
                planes[c, start : start + w] = x[n, c, r]

        acc = np.empty((_BLOCK, length), dtype=y.dtype)
        for co in range(0, c_out, _BLOCK):
            block = min(_BLOCK, c_out - co)
            _accumulate(acc, planes, weight, co, block, wp, dil_h, dil_w, top, bottom)
            _write_block(acc, y[n], bias, co, block, wp, relu)


@serial_kernel
def _dot_rows3(grads, planes, out, wp, dil_h, dil_w):
    """Correlate four output-gradient planes with every 3-wide kernel row.

    ``out[b, c, i, j] += sum_q grads[b, q] * planes[c, i * dil_h * wp + j *
    dil_w + q]`` for ``q < grads.shape[1]``: the twelve sums of a kernel row
    ``(c, i)`` share each load of the input row and of ``grads``.
    """
    length = grads.shape[1]
    g0 = grads[0]
    g1 = grads[1]
    g2 = grads[2]
    g3 = grads[3]
    # Sums in the arrays' dtype.
    zero = grads.dtype.type(0)
    for c in range(planes.shape[0]):
        for i in range(out.shape[2]):
            row = planes[c, i * dil_h * wp :]
            s0 = row[:length]
            s1 = row[dil_w : dil_w + length]
            s2 = row[2 * dil_w : 2 * dil_w + length]
            t00 = t01 = t02 = t10 = t11 = t12 = zero
            t20 = t21 = t22 = t30 = t31 = t32 = zero
            for q in range(length):
                v0 = s0[q]
                v1 = s1[q]
                v2 = s2[q]
                u = g0[q]
                t00 += u * v0
                t01 += u * v1
                t02 += u * v2
                u = g1[q]
                t10 += u * v0
                t11 += u * v1
                t12 += u * v2
                u = g2[q]
                t20 += u * v0
                t21 += u * v1
                t22 += u * v2
                u = g3[q]
                t30 += u * v0
                t31 += u * v1
                t32 += u * v2
            out[0, c, i, 0] += t00
            out[0, c, i, 1] += t01
            out[0, c, i, 2] += t02
            out[1, c, i, 0] += t10
            out[1, c, i, 1] += t11
            out[1, c, i, 2] += t12
            out[2, c, i, 0] += t20
            out[2, c, i, 1] += t21
            out[2, c, i, 2] += t22
            out[3, c, i, 0] += t30
            out[3, c, i, 1] += t31
            out[3, c, i, 2] += t32


@serial_kernel
def _dot_row5(grads, row, out, dil_w):
    """Correlate four output-gradient planes with one input row at 5 offsets.

    ``out[b, j] += sum_q grads[b, q] * row[q + j * dil_w]`` for ``q <
    grads.shape[1]``, two gradient planes per pass.
    """
    length = grads.shape[1]
    s0 = row[:length]
    s1 = row[dil_w : dil_w + length]
    s2 = row[2 * dil_w : 2 * dil_w + length]
    s3 = row[3 * dil_w : 3 * dil_w + length]
    s4 = row[4 * dil_w : 4 * dil_w + length]
    zero = grads.dtype.type(0)
    for b in range(0, grads.shape[0], 2):
        g0 = grads[b]
        g1 = grads[b + 1]
        t00 = t01 = t02 = t03 = t04 = zero
        t10 = t11 = t12 = t13 = t14 = zero
        for q in range(length):
            v0 = s0[q]
            v1 = s1[q]
            v2 = s2[q]
            v3 = s3[q]
            v4 = s4[q]
            u = g0[q]
            t00 += u * v0
            t01 += u * v1
            t02 += u * v2
            t03 += u * v3
            t04 += u * v4
            u = g1[q]
            t10 += u * v0
            t11 += u * v1
            t12 += u * v2
            t13 += u * v3
            t14 += u * v4
        out[b, 0] += t00
        out[b, 1] += t01
        out[b, 2] += t02
        out[b, 3] += t03
        out[b, 4] += t04
        out[b + 1, 0] += t10
        out[b + 1, 1] += t11
        out[b + 1, 2] += t12
        out[b + 1, 3] += t13
        out[b + 1, 4] += t14


@serial_kernel
def _add_sample_grads(
    x, grad_output, weight_part, bias_part, pad_top, pad_left, dil_h, dil_w
):
    """Add one sample's weight and bias gradients to ``weight_part``, ``bias_part``.

    ``x`` is the sample's (C_in, H, W) input, ``grad_output`` its (C_out, H_out,
    W_out) output gradient; the other arguments are as in
    :func:`conv2d_direct_grad_weight`, without the leading share axis.
    """
    c_in, h, w = x.shape
    c_out, kh, kw = weight_part.shape[0], weight_part.shape[2], weight_part.shape[3]
    h_out, w_out = grad_output.shape[1], grad_output.shape[2]
    wp = w_out + (kw - 1) * dil_w
    hp = h_out + (kh - 1) * dil_h
    length = h_out * wp
    plane_size = hp * wp + (kw - 1) * dil_w

    planes = np.zeros((c_in, plane_size), dtype=x.dtype)
    for c in range(c_in):
        for r in range(h):
            start = (r + pad_top) * wp + pad_left
            planes[c, start : start + w] = x[c, r]

    # grad_output in the planes' row width; the dropped columns stay 0.
    grads = np.zeros((c_out, length), dtype=x.dtype)
    for co in range(c_out):
        total = 0.0
        for oh in range(h_out):
            from_row = grad_output[co, oh]
            to_row = grads[co, oh * wp : oh * wp + w_out]
            for ow in range(w_out):
                value = from_row[ow]
                to_row[ow] = value
                total += value
        bias_part[co] += total

    for co in range(0, c_out, _BLOCK):
        block = min(_BLOCK, c_out - co)
        if block == _BLOCK and kw == 3:
            part = weight_part[co : co + _BLOCK]
            _dot_rows3(grads[co : co + _BLOCK], planes, part, wp, dil_h, dil_w)
            fused = True
        else:
            fused = False
        for c in range(0 if fused else c_in):
            for i in range(kh):
                row = planes[c, i * dil_h * wp :]
                taps = weight_part[co : co + block, c, i]
                if block == _BLOCK and kw == 5:
                    _dot_row5(grads[co : co + _BLOCK], row, taps, dil_w)
                else:
                    for b in range(block):
                        src = grads[co + b]
                        for j in range(kw):
                            run = row[j * dil_w : j * dil_w + length]
                            total = x.dtype.type(0)
                            for q in range(length):
                                total += src[q] * run[q]
                            taps[b, j] += total


@serial_below(1, extent_arg=2)
@parallel_kernel
def conv2d_direct_grad_weight(
    x, grad_output, weight_parts, bias_parts, pad_top, pad_left, dil_h, dil_w
):
    """Weight and bias gradients of :func:`conv2d_direct`, in shares of samples.

    Parameters
    ----------
    x : ndarray, shape (N, C_in, H, W)
        The forward's input, C-contiguous.
    grad_output : ndarray, shape (N, C_out, H_out, W_out)
        Gradient with respect to the forward's output, C-contiguous.
    weight_parts : ndarray, shape (G, C_out, C_in, kH, kW)
        Output, overwritten: share g is the weight gradient of samples ``g * S
        .. g * S + S - 1`` (``S = ceil(N / G)``), added in sample order. Summed
        over g (in any fixed order) it is the weight gradient.
    bias_parts : ndarray, shape (G, C_out), float64
        Output, overwritten: the same samples' sums of ``grad_output[n, co]``.
    pad_top, pad_left, dil_h, dil_w : int
        As in :func:`conv2d_direct`.
    """
    n_batch = x.shape[0]
    shares = weight_parts.shape[0]
    per_share = -(-n_batch // shares) if shares > 0 else 0

    # Each iteration owns share g: weight_parts[g], bias_parts[g] and its scratch.
    for g in prange(shares):
        weight_parts[g] = 0
        bias_parts[g] = 0
        for n in range(g * per_share, min(n_batch, (g + 1) * per_share)):
            _add_sample_grads(
                x[n],
                grad_output[n],
                weight_parts[g],
                bias_parts[g],
                pad_top,
                pad_left,
                dil_h,
                dil_w,
            )
