"""Numba kernels of 2-d convolution lowered to matrix products.

The functional layer turns a convolution into ``np.matmul`` calls on a column
matrix; these kernels do the memory-bound steps around them. A chunk of ``m``
samples starting at sample ``n_start`` is processed at a time. Its column matrix
``cols`` has shape ``(C_in * kH * kW, m, H_out, W_out)``, and for input channel
``c``::

    cols[(c * kH + i) * kW + j, n, oh, ow]
        = x_padded[n_start + n, c, oh * sH + i * dH, ow * sW + j * dW]

where ``x_padded`` is ``x`` with ``pad_top`` zero rows above and ``pad_left`` zero
columns on the left (and as many zeros below and on the right as the windows
reach). Viewed as ``(groups, C_in / groups * kH * kW, m * H_out * W_out)`` it is
the right operand of each group's matrix product with its filters.

Every kernel takes arrays and ints only and validates nothing. Windows are read
from a zero-bordered copy of their input plane, so the copy loops need no bounds
checks.
"""

from __future__ import annotations

import numpy as np
from numba import prange

from fastcnn._config import parallel_kernel
from fastcnn.kernels._small import serial_below


@serial_below(1)
@parallel_kernel
def im2col(
    x, cols, n_start, kh, kw, stride_h, stride_w, pad_top, pad_left, dil_h, dil_w
):
    """Write the column matrix of samples ``n_start .. n_start + m - 1``.

    Parameters
    ----------
    x : ndarray, shape (N, C_in, H, W)
        C-contiguous input.
    cols : ndarray, shape (C_in * kh * kw, m, H_out, W_out)
        Output, overwritten entirely; padding positions get 0.
    n_start : int
        First sample of the chunk.
    kh, kw, stride_h, stride_w, pad_top, pad_left, dil_h, dil_w : int
        Kernel size, stride, top/left padding and dilation.
    """
    c_in, h, w = x.shape[1], x.shape[2], x.shape[3]
    m, h_out, w_out = cols.shape[1], cols.shape[2], cols.shape[3]
    h_buf = max((h_out - 1) * stride_h + (kh - 1) * dil_h + 1, pad_top + h)
    w_buf = max((w_out - 1) * stride_w + (kw - 1) * dil_w + 1, pad_left + w)

    # Each iteration owns the rows of input channel c at sample n of cols.
    for t in prange(m * c_in):
        n = t // c_in
        c = t - n * c_in
        buf = np.zeros((h_buf, w_buf), dtype=x.dtype)
        buf[pad_top : pad_top + h, pad_left : pad_left + w] = x[n_start + n, c]

        for i in range(kh):
            for j in range(kw):
                out = cols[(c * kh + i) * kw + j, n]
                src = buf[i * dil_h :, j * dil_w :]
                if stride_w == 1:
                    for oh in range(h_out):
                        for ow in range(w_out):
                            out[oh, ow] = src[oh * stride_h, ow]
                else:
                    for oh in range(h_out):
                        for ow in range(w_out):
                            out[oh, ow] = src[oh * stride_h, ow * stride_w]


@serial_below(0)
@parallel_kernel
def col2im(
    grad_cols,
    grad_input,
    n_start,
    kh,
    kw,
    stride_h,
    stride_w,
    pad_top,
    pad_left,
    dil_h,
    dil_w,
):
    """Sum a column-matrix gradient back into input planes (the adjoint of im2col).

    Parameters
    ----------
    grad_cols : ndarray, shape (C_in * kh * kw, m, H_out, W_out)
        Gradient with respect to the column matrix of the chunk.
    grad_input : ndarray, shape (N, C_in, H, W)
        Output; the planes of samples ``n_start .. n_start + m - 1`` are
        overwritten. Input positions no window covers get exactly 0.
    n_start : int
        First sample of the chunk.
    kh, kw, stride_h, stride_w, pad_top, pad_left, dil_h, dil_w : int
        As in :func:`im2col`.
    """
    c_in, h, w = grad_input.shape[1], grad_input.shape[2], grad_input.shape[3]
    m, h_out, w_out = grad_cols.shape[1], grad_cols.shape[2], grad_cols.shape[3]
    h_buf = max((h_out - 1) * stride_h + (kh - 1) * dil_h + 1, pad_top + h)
    w_buf = max((w_out - 1) * stride_w + (kw - 1) * dil_w + 1, pad_left + w)

    # Each iteration owns the input plane (n_start + n, c): no two write alike.
    for t in prange(m * c_in):
        n = t // c_in
        c = t - n * c_in

        # Kernel offsets are added in a fixed order, into a padded plane.
        buf = np.zeros((h_buf, w_buf), dtype=grad_input.dtype)
        for i in range(kh):
            for j in range(kw):
                src = grad_cols[(c * kh + i) * kw + j, n]
                dst = buf[i * dil_h :, j * dil_w :]
                if stride_w == 1:
                    for oh in range(h_out):
                        for ow in range(w_out):
                            dst[oh * stride_h, ow] += src[oh, ow]
                else:
                    for oh in range(h_out):
                        for ow in range(w_out):
                            dst[oh * stride_h, ow * stride_w] += src[oh, ow]

        grad_input[n_start + n, c] = buf[pad_top : pad_top + h, pad_left : pad_left + w]


@serial_below(0)
@parallel_kernel
def scatter_output(out, y, bias):
    """Move the product ``(C_out, N, L)`` into NCHW output, adding the bias.

    Parameters
    ----------
    out : ndarray, shape (C_out, N, L)
        The filters times the column matrix, all chunks.
    y : ndarray, shape (N, C_out, L)
        Output, overwritten: ``y[n, c] = out[c, n] + bias[c]``.
    bias : ndarray, shape (C_out,)
        Per-channel offset (zeros for a convolution without bias).
    """
    c_out, n_batch, length = out.shape

    # Each iteration owns the row y[n, c].
    for t in prange(n_batch * c_out):
        n = t // c_out
        c = t - n * c_out
        b = bias[c]
        src = out[c, n]
        dst = y[n, c]
        for k in range(length):
            dst[k] = src[k] + b


@serial_below(0)
@parallel_kernel
def gather_grad_output(grad_output, go, grad_bias):
    """Copy ``grad_output`` to ``(C_out, N, L)`` order and sum the bias gradient.

    Parameters
    ----------
    grad_output : ndarray, shape (N, C_out, L)
        Gradient with respect to the convolution's output.
    go : ndarray, shape (C_out, N, L)
        Output, overwritten: ``go[c, n] = grad_output[n, c]``.
    grad_bias : ndarray, shape (C_out,), float64
        Output: each channel's sum over samples and positions, accumulated in
        float64 whatever the dtype of ``grad_output``.
    """
    c_out, n_batch, length = go.shape

    # Each iteration owns channel c: go[c] and grad_bias[c], summed in fixed order.
    for c in prange(c_out):
        total = 0.0
        for n in range(n_batch):
            src = grad_output[n, c]
            dst = go[c, n]
            for k in range(length):
                value = src[k]
                dst[k] = value
                total += value
        grad_bias[c] = total
