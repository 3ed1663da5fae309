"""2-d max and average pooling, as PyTorch's ``F.max_pool2d`` and ``F.avg_pool2d``.

Input is ``(N, C, H, W)`` or unbatched ``(C, H, W)``, float32 or float64; the
output keeps the layout and the dtype. The work is done by the parallel Numba
kernels of :mod:`fastcnn.kernels.pooling`, one block of ``(n, c)`` planes per
thread. 2x2 windows with stride 2 and no padding over an even height and width,
the pooling of most CNNs, take kernels of their own that read the input once;
max pooling then keeps, for the backward pass, the position of each maximum
in its window in one byte (two per output, in the kernels' layout) instead of
a four-byte flat index.

Every function takes a keyword-only ``workspace``: a
:class:`~fastcnn.functional.Workspace` whose buffers the outputs, the context's
arrays and the gradients are then taken from, under names starting with
``"max_pool2d."`` and ``"avg_pool2d."``.

Unlike PyTorch there is no ``dilation``, ``return_indices`` or
``divisor_override`` argument; in :func:`max_pool2d` ``ceil_mode`` is therefore
the fifth positional argument, where PyTorch has ``dilation`` (a non-bool there
raises TypeError).
"""

from __future__ import annotations

from dataclasses import dataclass
from math import prod
from typing import Any

import numpy as np

from fastcnn._config import get_num_threads
from fastcnn._validation import check_array, check_pair
from fastcnn.functional._workspace import (
    Workspace,
    check_current,
    check_workspace,
    stamp,
    take,
)
from fastcnn.kernels import pooling as kernels

__all__ = [
    "AvgPool2dContext",
    "MaxPool2dContext",
    "avg_pool2d",
    "avg_pool2d_backward",
    "avg_pool2d_forward",
    "max_pool2d",
    "max_pool2d_backward",
    "max_pool2d_forward",
]

Pair = int | tuple[int, int]

# Flat indices within a plane are int32 unless a plane is too large for them.
_INT32_LIMIT = 2**31 - 1

# The kernels work on a padded copy of each plane that holds every window whole,
# with scratch buffers of its size per thread. Windows far larger than the input
# would make that copy huge, so it may hold at most this many elements, or four
# times the input plane's, whichever is more.
_PADDED_PLANE_LIMIT = 2**24


@dataclass(frozen=True)
class _Window:
    """Validated window arguments and the shapes they give."""

    kernel_size: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]

    @property
    def planes(self) -> int:
        return prod(self.input_shape[:-2])

    @property
    def arguments(self) -> tuple[int, int, int, int, int, int]:
        """``(kh, kw, sh, sw, ph, pw)`` for the kernels."""
        return (*self.kernel_size, *self.stride, *self.padding)

    @property
    def halves(self) -> bool:
        """Whether the 2x2 kernels apply: 2x2 windows, stride 2, no padding, even
        height and width (``ceil_mode`` then changes nothing)."""
        h, w = self.input_shape[-2:]
        return (
            self.kernel_size == (2, 2)
            and self.stride == (2, 2)
            and self.padding == (0, 0)
            and h % 2 == 0
            and w % 2 == 0
        )


@dataclass(frozen=True)
class MaxPool2dContext:
    """What :func:`max_pool2d_backward` needs from :func:`max_pool2d_forward`.

    Opaque: pass it to :func:`max_pool2d_backward` unchanged.

    Attributes
    ----------
    indices : numpy.ndarray of int32, int64 or uint8
        Where each window's maximum is. In general, shape (N * C, H_out, W_out):
        its flat index ``ih * W + iw`` within its plane (int32 unless a plane is
        too large). For the 2x2 kernels (``window.halves``), shape
        (N * C * H_out, 2, W_out) of uint8: ``indices[r, 0, ow]`` is ``2 * i + j``
        for the maximum at row ``i``, column ``j`` of its window.
    window : _Window
        The forward pass's window arguments and shapes.
    dtype : numpy.dtype
        The forward input's dtype.
    workspace : Workspace or None
        The forward pass's workspace, which the backward pass takes its
        gradient from.
    stamp : tuple or None
        Which take of the workspace ``indices`` came from, so that the backward
        pass can refuse a context whose indices a later forward call overwrote.
    """

    indices: np.ndarray
    window: _Window
    dtype: np.dtype
    workspace: Workspace | None = None
    stamp: tuple | None = None


@dataclass(frozen=True)
class AvgPool2dContext:
    """What :func:`avg_pool2d_backward` needs from :func:`avg_pool2d_forward`.

    Opaque: pass it to :func:`avg_pool2d_backward` unchanged. It holds no array.

    Attributes
    ----------
    window : _Window
        The forward pass's window arguments and shapes.
    count_include_pad : bool
        The forward pass's divisor rule.
    dtype : numpy.dtype
        The forward input's dtype.
    workspace : Workspace or None
        The forward pass's workspace, which the backward pass takes its
        gradient from.
    """

    window: _Window
    count_include_pad: bool
    dtype: np.dtype
    workspace: Workspace | None = None


def _check_flag(value: Any, name: str) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__} {value!r}")
    return bool(value)


def output_size(size: int, k: int, s: int, p: int, ceil_mode: bool) -> int:
    """PyTorch's pooling output length (may be < 1 when the window does not fit)."""
    out = (size + 2 * p - k + (s - 1 if ceil_mode else 0)) // s + 1
    if ceil_mode and (out - 1) * s >= size + p:
        out -= 1
    return out


def _check_window(
    x: np.ndarray, kernel_size: Any, stride: Any, padding: Any, ceil_mode: Any
) -> _Window:
    """Validate the window arguments against ``x`` and work out the output shape."""
    kernel = check_pair(kernel_size, "kernel_size", minimum=1)
    step = kernel if stride is None else check_pair(stride, "stride", minimum=1)
    pad = check_pair(padding, "padding", minimum=0)
    ceil_mode = _check_flag(ceil_mode, "ceil_mode")
    if any(2 * p > k for p, k in zip(pad, kernel, strict=True)):
        raise ValueError(
            f"padding must be at most half of kernel_size={kernel}, got padding={pad}"
        )

    # PyTorch accepts an empty batch only: channels and spatial sizes must be > 0.
    sizes = x.shape if x.ndim == 3 else x.shape[1:]
    if 0 in sizes:
        layout = "(C, H, W)" if x.ndim == 3 else "(N, C, H, W)"
        raise ValueError(
            f"x must have non-zero C, H and W in its {layout} shape (only N may be "
            f"0), got shape {x.shape}"
        )
    h, w = x.shape[-2:]
    out = tuple(
        output_size(size, k, s, p, ceil_mode)
        for size, k, s, p in zip((h, w), kernel, step, pad, strict=True)
    )
    if min(out) < 1:
        raise ValueError(
            f"kernel_size={kernel} with padding={pad} and stride={step} does not fit "
            f"x of spatial size {(h, w)}: the output size would be {out}"
        )
    padded = [
        max(size + 2 * p, (n - 1) * s + k)
        for size, n, k, s, p in zip((h, w), out, kernel, step, pad, strict=True)
    ]
    limit = max(_PADDED_PLANE_LIMIT, 4 * h * w)
    if padded[0] * padded[1] > limit:
        raise ValueError(
            f"kernel_size={kernel} with padding={pad} is too large for x of spatial "
            f"size {(h, w)}: the padded plane would be {padded[0]}x{padded[1]}, more "
            f"than fastcnn's limit of {limit} elements (unlike PyTorch)"
        )
    return _Window(kernel, step, pad, x.shape, (*x.shape[:-2], *out))


#: Windows already validated, by input shape and window arguments; only calls
#: whose arguments are plain ints, pairs of them and bools are remembered, so
#: that no other value can compare equal to a remembered key (``1.0 == 1``,
#: ``1 == True``).
_WINDOWS: dict[tuple, _Window] = {}
_WINDOWS_LIMIT = 256


def _is_plain(value: Any) -> bool:
    if type(value) is int:
        return True
    return (
        type(value) is tuple
        and len(value) == 2
        and type(value[0]) is int
        and type(value[1]) is int
    )


def _window(
    x: np.ndarray, kernel_size: Any, stride: Any, padding: Any, ceil_mode: Any
) -> _Window:
    """:func:`_check_window`, remembered for repeated calls with plain arguments."""
    plain = (
        _is_plain(kernel_size)
        and (stride is None or _is_plain(stride))
        and _is_plain(padding)
        and type(ceil_mode) is bool
    )
    if not plain:
        return _check_window(x, kernel_size, stride, padding, ceil_mode)
    key = (x.shape, kernel_size, stride, padding, ceil_mode)
    window = _WINDOWS.get(key)
    if window is None:
        window = _check_window(x, kernel_size, stride, padding, ceil_mode)
        if len(_WINDOWS) >= _WINDOWS_LIMIT:
            _WINDOWS.clear()
        _WINDOWS[key] = window
    return window


def _check_grad_output(
    grad_output: Any, window: _Window, dtype: np.dtype
) -> np.ndarray:
    grad_output = check_array(grad_output, "grad_output", ndim=len(window.output_shape))
    if grad_output.dtype != dtype:
        raise TypeError(
            f"grad_output must have the dtype of the forward input ({dtype}), "
            f"got {grad_output.dtype}"
        )
    if grad_output.shape != window.output_shape:
        raise ValueError(
            f"grad_output must have the shape of the forward output "
            f"{window.output_shape}, got {grad_output.shape}"
        )
    return grad_output


def _planes(a: np.ndarray) -> np.ndarray:
    """View a C-contiguous ``(..., H, W)`` array as ``(planes, H, W)``."""
    return a.reshape(-1, *a.shape[-2:])


def max_pool2d_forward(
    x: np.ndarray,
    kernel_size: Pair,
    stride: Pair | None = None,
    padding: Pair = 0,
    ceil_mode: bool = False,
    *,
    workspace: Workspace | None = None,
) -> tuple[np.ndarray, MaxPool2dContext]:
    """2-d max pooling that also returns what :func:`max_pool2d_backward` needs.

    Parameters
    ----------
    x, kernel_size, stride, padding, ceil_mode
        As in :func:`max_pool2d`.
    workspace : Workspace, optional
        Buffers to reuse instead of allocating; the arrays returned are then
        views of it, overwritten by the next call (see Workspace).

    Returns
    -------
    y : numpy.ndarray, shape (N, C, H_out, W_out) or (C, H_out, W_out)
        The window maxima, dtype of ``x``.
    ctx : MaxPool2dContext
        Holds where every maximum is (no reference to ``x``) and the workspace.

    Notes
    -----
    ``H_out = floor_or_ceil((H + 2 * padding[0] - kernel_size[0]) / stride[0]) + 1``
    and likewise ``W_out``; see :func:`max_pool2d`.
    """
    x = check_array(x, "x", ndim=(3, 4))
    window = _window(x, kernel_size, stride, padding, ceil_mode)
    workspace = check_workspace(workspace)

    y = take(workspace, "max_pool2d.y", window.output_shape, x.dtype)
    planes = window.planes
    h_out, w_out = window.output_shape[-2:]
    if window.halves:
        shape = (planes * h_out, 2, w_out)
        indices_name = "max_pool2d.positions"
        indices = take(workspace, indices_name, shape, np.uint8)
        if planes > 0:
            kernels.max_pool2d_2x2_forward(
                _planes(x), _planes(y), indices, get_num_threads()
            )
    else:
        large = x.shape[-2] * x.shape[-1] > _INT32_LIMIT
        index_dtype = np.int64 if large else np.int32
        shape = (planes, h_out, w_out)
        indices_name = "max_pool2d.indices"
        indices = take(workspace, indices_name, shape, index_dtype)
        if planes > 0:
            kernels.max_pool2d_forward(
                _planes(x), *window.arguments, _planes(y), indices, get_num_threads()
            )
    recorded = stamp(workspace, indices_name)
    return y, MaxPool2dContext(indices, window, x.dtype, workspace, recorded)


def max_pool2d(
    x: np.ndarray,
    kernel_size: Pair,
    stride: Pair | None = None,
    padding: Pair = 0,
    ceil_mode: bool = False,
    *,
    workspace: Workspace | None = None,
) -> np.ndarray:
    """2-d max pooling, as ``torch.nn.functional.max_pool2d``.

    Parameters
    ----------
    x : numpy.ndarray, shape (N, C, H, W) or (C, H, W), float32 or float64
        Input. N may be 0 (the output is then empty); C, H and W may not.
    kernel_size : int or (int, int)
        Window size ``(kH, kW)``, each >= 1.
    stride : int, (int, int) or None, default None
        Step between windows, each >= 1; None means ``kernel_size``.
    padding : int or (int, int), default 0
        Implicit ``-inf`` border on both sides, at most half the kernel size.
    ceil_mode : bool, default False
        Round the output size up instead of down; a window must still start
        inside the input or its left/top padding.
    workspace : Workspace, optional
        Buffers to reuse instead of allocating; the arrays returned are then
        views of it, overwritten by the next call (see Workspace).

    Returns
    -------
    numpy.ndarray, shape (N, C, H_out, W_out) or (C, H_out, W_out)
        The maximum of every window, dtype of ``x``.

    Raises
    ------
    TypeError
        ``x`` is not a float32/float64 array, or an argument has the wrong type.
    ValueError
        ``x`` is not 3-d or 4-d or has a zero C, H or W; ``kernel_size`` or
        ``stride`` < 1; ``padding`` < 0 or more than half the kernel; the window
        does not fit the padded input (output size < 1); or, unlike PyTorch, the
        window is so large that the padded plane would hold more than
        ``max(2**24, 4 * H * W)`` elements.

    Notes
    -----
    ``H_out = floor((H + 2 * padding[0] - kernel_size[0]) / stride[0]) + 1``, with
    ``ceil`` instead of ``floor`` under ``ceil_mode`` (dropping a last window
    that would start at or beyond ``H + padding[0]``); ``W_out`` alike. Padded
    cells never win, so no output is ``-inf`` unless the input is. A window
    holding NaN gives NaN. Unlike PyTorch there is no ``dilation`` argument.
    """
    return max_pool2d_forward(
        x, kernel_size, stride, padding, ceil_mode, workspace=workspace
    )[0]


def max_pool2d_backward(grad_output: np.ndarray, ctx: MaxPool2dContext) -> np.ndarray:
    """Gradient of :func:`max_pool2d` with respect to its input.

    Parameters
    ----------
    grad_output : numpy.ndarray, shape (N, C, H_out, W_out) or (C, H_out, W_out)
        Gradient with respect to the output, with the forward output's shape and
        dtype.
    ctx : MaxPool2dContext
        The context returned by :func:`max_pool2d_forward`. When the forward
        pass had a workspace, the gradient is taken from it too (a view,
        overwritten by the next backward call).

    Returns
    -------
    numpy.ndarray, shape (N, C, H, W) or (C, H, W)
        Each output's gradient is added to the input element that was its
        window's maximum: the first one in row-major order when several tie (as
        PyTorch on the CPU), the last NaN when the window holds NaN. Elements
        that no window selected get exactly zero.
    """
    if not isinstance(ctx, MaxPool2dContext):
        raise TypeError(
            "ctx must be the MaxPool2dContext returned by max_pool2d_forward, got "
            f"{type(ctx).__name__}"
        )
    window = ctx.window
    grad_output = _check_grad_output(grad_output, window, ctx.dtype)
    check_current(ctx.workspace, ctx.stamp, "max_pool2d")

    grad_input = take(
        ctx.workspace, "max_pool2d.grad_input", window.input_shape, ctx.dtype
    )
    if window.planes == 0:
        return grad_input
    if window.halves:
        kernels.max_pool2d_2x2_backward(
            _planes(grad_output), ctx.indices, _planes(grad_input), get_num_threads()
        )
    else:
        kernels.max_pool2d_backward(
            _planes(grad_output), ctx.indices, _planes(grad_input)
        )
    return grad_input


def avg_pool2d_forward(
    x: np.ndarray,
    kernel_size: Pair,
    stride: Pair | None = None,
    padding: Pair = 0,
    ceil_mode: bool = False,
    count_include_pad: bool = True,
    *,
    workspace: Workspace | None = None,
) -> tuple[np.ndarray, AvgPool2dContext]:
    """2-d average pooling that also returns what :func:`avg_pool2d_backward` needs.

    Parameters
    ----------
    x, kernel_size, stride, padding, ceil_mode, count_include_pad
        As in :func:`avg_pool2d`.
    workspace : Workspace, optional
        Buffers to reuse instead of allocating; the arrays returned are then
        views of it, overwritten by the next call (see Workspace).

    Returns
    -------
    y : numpy.ndarray, shape (N, C, H_out, W_out) or (C, H_out, W_out)
        The window means, dtype of ``x``.
    ctx : AvgPool2dContext
        The window arguments and shapes (no array) and the workspace.

    Notes
    -----
    ``H_out = floor_or_ceil((H + 2 * padding[0] - kernel_size[0]) / stride[0]) + 1``
    and likewise ``W_out``; see :func:`avg_pool2d`.
    """
    x = check_array(x, "x", ndim=(3, 4))
    window = _window(x, kernel_size, stride, padding, ceil_mode)
    count_include_pad = _check_flag(count_include_pad, "count_include_pad")
    workspace = check_workspace(workspace)

    y = take(workspace, "avg_pool2d.y", window.output_shape, x.dtype)
    if window.planes > 0 and window.halves:
        kernels.avg_pool2d_2x2_forward(_planes(x), _planes(y), get_num_threads())
    elif window.planes > 0:
        kernels.avg_pool2d_forward(
            _planes(x),
            *window.arguments,
            int(count_include_pad),
            _planes(y),
            get_num_threads(),
        )
    return y, AvgPool2dContext(window, count_include_pad, x.dtype, workspace)


def avg_pool2d(
    x: np.ndarray,
    kernel_size: Pair,
    stride: Pair | None = None,
    padding: Pair = 0,
    ceil_mode: bool = False,
    count_include_pad: bool = True,
    *,
    workspace: Workspace | None = None,
) -> np.ndarray:
    """2-d average pooling, as ``torch.nn.functional.avg_pool2d``.

    Parameters
    ----------
    x : numpy.ndarray, shape (N, C, H, W) or (C, H, W), float32 or float64
        Input. N may be 0 (the output is then empty); C, H and W may not.
    kernel_size : int or (int, int)
        Window size ``(kH, kW)``, each >= 1.
    stride : int, (int, int) or None, default None
        Step between windows, each >= 1; None means ``kernel_size``.
    padding : int or (int, int), default 0
        Implicit zero border on both sides, at most half the kernel size.
    ceil_mode : bool, default False
        Round the output size up instead of down; a window must still start
        inside the input or its left/top padding.
    count_include_pad : bool, default True
        Divide by the window's area within the padded input (padded zeros count,
        cells that ``ceil_mode`` adds beyond the padding do not); if False,
        divide by the number of input elements in the window.
    workspace : Workspace, optional
        Buffers to reuse instead of allocating; the arrays returned are then
        views of it, overwritten by the next call (see Workspace).

    Returns
    -------
    numpy.ndarray, shape (N, C, H_out, W_out) or (C, H_out, W_out)
        The mean of every window, dtype of ``x`` (sums are accumulated in it).

    Raises
    ------
    TypeError
        ``x`` is not a float32/float64 array, or an argument has the wrong type.
    ValueError
        ``x`` is not 3-d or 4-d or has a zero C, H or W; ``kernel_size`` or
        ``stride`` < 1; ``padding`` < 0 or more than half the kernel; the window
        does not fit the padded input (output size < 1); or, unlike PyTorch, the
        window is so large that the padded plane would hold more than
        ``max(2**24, 4 * H * W)`` elements.

    Notes
    -----
    ``H_out = floor((H + 2 * padding[0] - kernel_size[0]) / stride[0]) + 1``, with
    ``ceil`` instead of ``floor`` under ``ceil_mode`` (dropping a last window
    that would start at or beyond ``H + padding[0]``); ``W_out`` alike. Unlike
    PyTorch there is no ``divisor_override`` argument.
    """
    return avg_pool2d_forward(
        x,
        kernel_size,
        stride,
        padding,
        ceil_mode,
        count_include_pad,
        workspace=workspace,
    )[0]


def avg_pool2d_backward(grad_output: np.ndarray, ctx: AvgPool2dContext) -> np.ndarray:
    """Gradient of :func:`avg_pool2d` with respect to its input.

    Parameters
    ----------
    grad_output : numpy.ndarray, shape (N, C, H_out, W_out) or (C, H_out, W_out)
        Gradient with respect to the output, with the forward output's shape and
        dtype.
    ctx : AvgPool2dContext
        The context returned by :func:`avg_pool2d_forward`. When the forward
        pass had a workspace, the gradient is taken from it too (a view,
        overwritten by the next backward call).

    Returns
    -------
    numpy.ndarray, shape (N, C, H, W) or (C, H, W)
        Each output's gradient, divided by its window's divisor, added to every
        input element of the window; elements outside every window get zero.
    """
    if not isinstance(ctx, AvgPool2dContext):
        raise TypeError(
            "ctx must be the AvgPool2dContext returned by avg_pool2d_forward, got "
            f"{type(ctx).__name__}"
        )
    window = ctx.window
    grad_output = _check_grad_output(grad_output, window, ctx.dtype)

    grad_input = take(
        ctx.workspace, "avg_pool2d.grad_input", window.input_shape, ctx.dtype
    )
    if window.planes == 0:
        return grad_input
    if window.halves:
        kernels.avg_pool2d_2x2_backward(
            _planes(grad_output), _planes(grad_input), get_num_threads()
        )
    else:
        kernels.avg_pool2d_backward(
            _planes(grad_output),
            *window.arguments,
            int(ctx.count_include_pad),
            _planes(grad_input),
            get_num_threads(),
        )
    return grad_input
