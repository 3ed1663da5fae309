"""Naive float64 references for 2-d max and average pooling.

Written from the definitions with explicit Python loops over the output
positions (and over the elements of each window); every function returns float64
whatever the input dtype. The test oracle and benchmark baseline for
:mod:`fastcnn.functional.pooling`. Input is ``(N, C, H, W)`` or unbatched
``(C, H, W)``; arguments are not validated.
"""

from __future__ import annotations

import math

import numpy as np


def _as_pair(value: int | tuple[int, int]) -> tuple[int, int]:
    if isinstance(value, (tuple, list)):
        return int(value[0]), int(value[1])
    return int(value), int(value)


def _output_size(size: int, k: int, s: int, p: int, ceil_mode: bool) -> int:
    """``floor_or_ceil((size + 2p - k) / s) + 1``, PyTorch's rule with ceil_mode.

    With ``ceil_mode`` a window that would start beyond the input and its left
    padding is dropped.
    """
    span = (size + 2 * p - k) / s
    out = (math.ceil(span) if ceil_mode else math.floor(span)) + 1
    if ceil_mode and (out - 1) * s >= size + p:
        out -= 1
    return out


def _geometry(shape, kernel_size, stride, padding, ceil_mode):
    kh, kw = _as_pair(kernel_size)
    sh, sw = _as_pair(kernel_size if stride is None else stride)
    ph, pw = _as_pair(padding)
    h, w = shape[-2:]
    h_out = _output_size(h, kh, sh, ph, ceil_mode)
    w_out = _output_size(w, kw, sw, pw, ceil_mode)
    return (kh, kw, sh, sw, ph, pw), (h_out, w_out)


def _window(oh, ow, h, w, window):
    """Rows and columns of the input (not the padding) inside window (oh, ow),
    and the window's extent within the padded input."""
    kh, kw, sh, sw, ph, pw = window
    h0 = oh * sh - ph
    w0 = ow * sw - pw
    rows = range(max(h0, 0), min(h0 + kh, h))
    cols = range(max(w0, 0), min(w0 + kw, w))
    padded_area = (min(h0 + kh, h + ph) - h0) * (min(w0 + kw, w + pw) - w0)
    return rows, cols, padded_area


def _batched(x: np.ndarray) -> tuple[np.ndarray, bool]:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 3:
        return x[np.newaxis], True
    return x, False


def _argmax(plane: np.ndarray, rows: range, cols: range) -> tuple[int, int]:
    """Row-major scan: the first maximum wins, a NaN beats every number and a
    later NaN beats an earlier one (padded cells, being -inf, never win)."""
    best = -math.inf
    where = (rows[0], cols[0])
    for ih in rows:
        for iw in cols:
            v = plane[ih, iw]
            if v > best or math.isnan(v):
                best = v
                where = (ih, iw)
    return where


def max_pool2d(
    x: np.ndarray,
    kernel_size: int | tuple[int, int],
    stride: int | tuple[int, int] | None = None,
    padding: int | tuple[int, int] = 0,
    ceil_mode: bool = False,
) -> np.ndarray:
    """Maximum of every window of the ``-inf``-padded input, in float64."""
    xb, unbatched = _batched(x)
    n, c, h, w = xb.shape
    window, (h_out, w_out) = _geometry(
        xb.shape, kernel_size, stride, padding, ceil_mode
    )
    y = np.empty((n, c, h_out, w_out))
    for i in range(n):
        for ch in range(c):
            for oh in range(h_out):
                for ow in range(w_out):
                    rows, cols, _ = _window(oh, ow, h, w, window)
                    ih, iw = _argmax(xb[i, ch], rows, cols)
                    y[i, ch, oh, ow] = xb[i, ch, ih, iw]
    return y[0] if unbatched else y


def max_pool2d_backward(
    grad_output: np.ndarray,
    x: np.ndarray,
    kernel_size: int | tuple[int, int],
    stride: int | tuple[int, int] | None = None,
    padding: int | tuple[int, int] = 0,
    ceil_mode: bool = False,
) -> np.ndarray:
    """Gradient of :func:`max_pool2d` with respect to ``x``, in float64.

    Each output's gradient goes to the element its window selected (see
    :func:`max_pool2d`); elements selected by several windows sum them.
    """
    xb, unbatched = _batched(x)
    gb, _ = _batched(grad_output)
    n, c, h, w = xb.shape
    window, (h_out, w_out) = _geometry(
        xb.shape, kernel_size, stride, padding, ceil_mode
    )
    grad_input = np.zeros_like(xb)
    for i in range(n):
        for ch in range(c):
            for oh in range(h_out):
                for ow in range(w_out):
                    rows, cols, _ = _window(oh, ow, h, w, window)
                    ih, iw = _argmax(xb[i, ch], rows, cols)
                    grad_input[i, ch, ih, iw] += gb[i, ch, oh, ow]
    return grad_input[0] if unbatched else grad_input


def avg_pool2d(
    x: np.ndarray,
    kernel_size: int | tuple[int, int],
    stride: int | tuple[int, int] | None = None,
    padding: int | tuple[int, int] = 0,
    ceil_mode: bool = False,
    count_include_pad: bool = True,
) -> np.ndarray:
    """Mean of every window of the zero-padded input, in float64.

    The divisor is the window's area within the padded input when
    ``count_include_pad`` (cells beyond the padding, which ``ceil_mode`` may add,
    never count), else the number of input elements in the window.
    """
    xb, unbatched = _batched(x)
    n, c, h, w = xb.shape
    window, (h_out, w_out) = _geometry(
        xb.shape, kernel_size, stride, padding, ceil_mode
    )
    y = np.empty((n, c, h_out, w_out))
    for i in range(n):
        for ch in range(c):
            for oh in range(h_out):
                for ow in range(w_out):
                    rows, cols, padded_area = _window(oh, ow, h, w, window)
                    total = 0.0
                    for ih in rows:
                        for iw in cols:
                            total += float(xb[i, ch, ih, iw])
                    divisor = (
                        padded_area if count_include_pad else len(rows) * len(cols)
                    )
                    y[i, ch, oh, ow] = total / divisor
    return y[0] if unbatched else y


def avg_pool2d_backward(
    grad_output: np.ndarray,
    x_shape_or_x: tuple[int, ...] | np.ndarray,
    kernel_size: int | tuple[int, int],
    stride: int | tuple[int, int] | None = None,
    padding: int | tuple[int, int] = 0,
    ceil_mode: bool = False,
    count_include_pad: bool = True,
) -> np.ndarray:
    """Gradient of :func:`avg_pool2d` with respect to its input, in float64.

    ``x_shape_or_x`` is the input or its shape. Each output's gradient, divided
    by its window's divisor, is added to every input element of the window.
    """
    shape = (
        x_shape_or_x.shape
        if isinstance(x_shape_or_x, np.ndarray)
        else tuple(x_shape_or_x)
    )
    gb, unbatched = _batched(grad_output)
    if unbatched:
        shape = (1, *shape)
    n, c, h, w = shape
    window, (h_out, w_out) = _geometry(shape, kernel_size, stride, padding, ceil_mode)
    grad_input = np.zeros((n, c, h, w))
    for i in range(n):
        for ch in range(c):
            for oh in range(h_out):
                for ow in range(w_out):
                    rows, cols, padded_area = _window(oh, ow, h, w, window)
                    divisor = (
                        padded_area if count_include_pad else len(rows) * len(cols)
                    )
                    share = gb[i, ch, oh, ow] / divisor
                    for ih in rows:
                        for iw in cols:
                            grad_input[i, ch, ih, iw] += share
    return grad_input[0] if unbatched else grad_input
