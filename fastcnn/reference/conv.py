"""Naive NumPy reference for 2-d convolution, written from the definition.

Every output element ``y[n, c_out, oh, ow]`` is computed by its own Python loop
iteration as the dot product of one input window with one filter, and the backward
pass scatters each output gradient back along the same windows. The code is slow
on purpose: it is the oracle of the tests and the baseline of the benchmarks, so
it avoids every trick (im2col, Numba, BLAS layouts) the fast path relies on.

The arguments mean what they mean in :func:`fastcnn.functional.conv.conv2d`;
padding is resolved by the same helper, so ``"valid"`` and ``"same"`` agree.
"""

from __future__ import annotations

import numpy as np

from fastcnn.functional.conv import resolve_padding


def _as_pair(value: int | tuple[int, int]) -> tuple[int, int]:
    if isinstance(value, (tuple, list)):
        return int(value[0]), int(value[1])
    return int(value), int(value)


def _geometry(x, weight, stride, padding, dilation):
    stride = _as_pair(stride)
    dilation = _as_pair(dilation)
    kh, kw = weight.shape[2], weight.shape[3]
    pad_top, pad_bottom, pad_left, pad_right = resolve_padding(
        padding, (kh, kw), stride, dilation
    )
    h_padded = x.shape[2] + pad_top + pad_bottom
    w_padded = x.shape[3] + pad_left + pad_right
    h_out = (h_padded - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    w_out = (w_padded - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    return stride, dilation, (pad_top, pad_bottom, pad_left, pad_right), h_out, w_out


def _window(h_start, w_start, kh, kw, dilation):
    """Index slices of one dilated kernel window in the padded input."""
    rows = slice(h_start, h_start + dilation[0] * (kh - 1) + 1, dilation[0])
    cols = slice(w_start, w_start + dilation[1] * (kw - 1) + 1, dilation[1])
    return rows, cols


def conv2d(
    x: np.ndarray,
    weight: np.ndarray,
    bias: np.ndarray | None = None,
    stride: int | tuple[int, int] = 1,
    padding: int | tuple[int, int] | str = 0,
    dilation: int | tuple[int, int] = 1,
    groups: int = 1,
) -> np.ndarray:
    """Reference 2-d cross-correlation, one output element per loop iteration.

    Parameters
    ----------
    x : ndarray, shape (N, C_in, H, W) or (C_in, H, W)
        Input; an unbatched input gives an unbatched output.
    weight : ndarray, shape (C_out, C_in / groups, kH, kW)
        Filters.
    bias : ndarray, shape (C_out,), optional
        Added to every output position of each channel.
    stride, padding, dilation, groups
        As in :func:`fastcnn.functional.conv.conv2d`.

    Returns
    -------
    ndarray, shape (N, C_out, H_out, W_out) or (C_out, H_out, W_out), float64

    Notes
    -----
    ``H_out = floor((H + pad_top + pad_bottom - dH * (kH - 1) - 1) / sH) + 1``
    and likewise for ``W_out``. Arguments are not validated.
    """
    unbatched = x.ndim == 3
    x = np.asarray(x, dtype=np.float64)
    if unbatched:
        x = x[None]
    weight = np.asarray(weight, dtype=np.float64)
    stride, dilation, pads, h_out, w_out = _geometry(
        x, weight, stride, padding, dilation
    )
    pad_top, pad_bottom, pad_left, pad_right = pads
    x_padded = np.pad(x, ((0, 0), (0, 0), (pad_top, pad_bottom), (pad_left, pad_right)))

    n_batch = x.shape[0]
    c_out, c_in_group, kh, kw = weight.shape
    c_out_group = c_out // groups
    y = np.zeros((n_batch, c_out, h_out, w_out))
    for n in range(n_batch):
        for co in range(c_out):
            ci = (co // c_out_group) * c_in_group
            for oh in range(h_out):
                for ow in range(w_out):
                    rows, cols = _window(
                        oh * stride[0], ow * stride[1], kh, kw, dilation
                    )
                    window = x_padded[n, ci : ci + c_in_group, rows, cols]
                    y[n, co, oh, ow] = np.sum(window * weight[co])
    if bias is not None:
        y += np.asarray(bias, dtype=np.float64)[None, :, None, None]
    return y[0] if unbatched else y


def conv2d_backward(
    grad_output: np.ndarray,
    x: np.ndarray,
    weight: np.ndarray,
    bias: np.ndarray | None = None,
    stride: int | tuple[int, int] = 1,
    padding: int | tuple[int, int] | str = 0,
    dilation: int | tuple[int, int] = 1,
    groups: int = 1,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Reference gradients of :func:`conv2d`, scattered output element by element.

    For every output element, ``grad_output[n, c_out, oh, ow]`` times the filter is
    added to the input window it was computed from, times the window is added to
    the filter's gradient, and it is added to the bias gradient of its channel.

    Parameters
    ----------
    grad_output : ndarray, shape (N, C_out, H_out, W_out) or (C_out, H_out, W_out)
        Gradient of the loss with respect to the output of :func:`conv2d`.
    x, weight, bias, stride, padding, dilation, groups
        The arguments of the forward call.

    Returns
    -------
    grad_input : ndarray, shape of ``x``, float64
    grad_weight : ndarray, shape of ``weight``, float64
    grad_bias : ndarray, shape (C_out,), float64, or None
        None when ``bias`` is None.
    """
    unbatched = x.ndim == 3
    x = np.asarray(x, dtype=np.float64)
    grad_output = np.asarray(grad_output, dtype=np.float64)
    if unbatched:
        x = x[None]
        grad_output = grad_output[None]
    weight = np.asarray(weight, dtype=np.float64)
    stride, dilation, pads, h_out, w_out = _geometry(
        x, weight, stride, padding, dilation
    )
    pad_top, pad_bottom, pad_left, pad_right = pads
    x_padded = np.pad(x, ((0, 0), (0, 0), (pad_top, pad_bottom), (pad_left, pad_right)))

    n_batch, _, h, w = x.shape
    c_out, c_in_group, kh, kw = weight.shape
    c_out_group = c_out // groups
    grad_padded = np.zeros_like(x_padded)
    grad_weight = np.zeros_like(weight)
    grad_bias = np.zeros(c_out)
    for n in range(n_batch):
        for co in range(c_out):
            ci = (co // c_out_group) * c_in_group
            for oh in range(h_out):
                for ow in range(w_out):
                    g = grad_output[n, co, oh, ow]
                    rows, cols = _window(
                        oh * stride[0], ow * stride[1], kh, kw, dilation
                    )
                    grad_padded[n, ci : ci + c_in_group, rows, cols] += g * weight[co]
                    grad_weight[co] += g * x_padded[n, ci : ci + c_in_group, rows, cols]
                    grad_bias[co] += g

    grad_input = grad_padded[:, :, pad_top : pad_top + h, pad_left : pad_left + w]
    grad_input = grad_input[0] if unbatched else grad_input
    return grad_input, grad_weight, (None if bias is None else grad_bias)
