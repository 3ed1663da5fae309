"""2-d convolution (cross-correlation) with PyTorch's ``F.conv2d`` semantics.

Stride-1, single-group convolutions with 3- or 5-wide filters (the usual 3x3
and 5x5 layers) are computed directly by :mod:`fastcnn.kernels.conv_direct`,
without a column matrix: the forward pass writes NCHW output with the bias, the
backward pass takes ``grad_input`` as a direct convolution of ``grad_output``
with the flipped filters and the weight gradient as sums over shares of the
batch. Between many channels (:data:`_WINOGRAD_MIN_CHANNELS` on both sides and
:data:`_WINOGRAD_MIN_PAIRS` pairs), 3x3 convolutions without dilation, forward
and ``grad_input``, use Winograd's F(2x2, 3x3) algorithm instead
(:mod:`fastcnn.kernels.conv_winograd`).

Every other convolution is lowered to matrix products. For a chunk of samples, a
Numba kernel copies the input windows into a column matrix
(:mod:`fastcnn.kernels.conv` describes its layout) and one ``np.matmul`` (BLAS)
per group multiplies it by the filters; a second kernel then moves the whole
product into NCHW order, adding the bias. The backward pass gathers
``grad_output`` into the product's order (summing the bias gradient on the way),
takes the weight gradient and the column-matrix gradient from two more products
per chunk, and sums the latter back into the input with a fourth kernel. Chunks
keep the column matrix small enough to stay in the cache; when the batch needs
more than one chunk, the backward pass rebuilds each chunk's columns rather than
keeping them all from the forward pass.

The matrix products and the NumPy sums run under ``np.errstate(all="ignore")``:
NaN, inf and overflow pass on without a ``RuntimeWarning``, as in the kernels.

With a :class:`~fastcnn.functional.Workspace`, every array either path allocates
in Python (outputs, gradients, column matrices, products, shares) is taken from
it. The direct kernels allocate their scratch inside (per share of the batch,
one sample's padded input and four output planes), which does not grow with
the batch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from fastcnn._validation import (
    check_array,
    check_choice,
    check_int,
    check_pair,
    check_same_dtype,
)
from fastcnn.functional._workspace import (
    Workspace,
    check_current,
    check_workspace,
    stamp,
    take,
    take_zeros,
)
from fastcnn.kernels.activations import relu_flat
from fastcnn.kernels.conv import col2im, gather_grad_output, im2col, scatter_output
from fastcnn.kernels.conv_direct import conv2d_direct, conv2d_direct_grad_weight
from fastcnn.kernels.conv_winograd import (
    TILE_COLUMNS,
    conv2d_winograd,
    sums_of_squares,
    winograd_filters,
)

__all__ = [
    "Conv2dContext",
    "conv2d",
    "conv2d_backward",
    "conv2d_forward",
    "output_size",
    "set_winograd",
]

# Bytes of a chunk's column matrix and product: small enough to stay in the
# cache between the kernel that writes them and the code that reads them.
_CHUNK_BYTES = 1 << 23

#: Kernel widths that stride-1, single-group convolutions compute directly
#: (:mod:`fastcnn.kernels.conv_direct`) rather than through matrix products.
#: Measured on the benchmarks' workloads (one thread, interleaved), the direct
#: kernels beat the products on every 3x3 convolution, forward and backward. On
#: the 5x5 one (64x6x14x14 to 16 channels, two threads), with twenty taps of four
#: filters a pass, the forward pass took 0.60-0.65 ms against the products'
#: 0.84-0.89 ms, and forward plus backward 2.4-2.5 ms against 2.2-3.5 ms; ten
#: taps of two filters a pass, which the kernel now uses, are as fast.
_DIRECT_KERNEL_WIDTHS = (3, 5)

#: Channels that both sides of a direct 3x3 convolution (dilation 1) need, and
#: input-output channel pairs it needs in all, before Winograd's F(2x2, 3x3)
#: algorithm (:mod:`fastcnn.kernels.conv_winograd`) computes it. Its transforms
#: cost about as much as the multiplications it saves unless the matrix products
#: are large. Measured against the direct kernel on 64-sample batches of 7x7 to
#: 28x28 planes (two threads), it took 1.3 to 2 times as long with 4 to 16 input
#: channels, 0.8 to 1.07 times as long with 32 in and 32 out, 0.67 to 0.9 with 32
#: in and 64 out and 0.57 to 0.82 with 64 and 64.
_WINOGRAD_MIN_CHANNELS = 32
_WINOGRAD_MIN_PAIRS = 2048

#: Whether the Winograd kernel may be used at all (see :func:`set_winograd`).
_winograd_enabled = True

#: Shares of the batch whose weight gradients the direct backward pass sums at
#: the end: enough to keep two or four threads busy, few enough that the shares
#: stay small (each is as large as the weight).
_GRAD_SHARES = 8

#: Elements a padded input plane may hold: beyond it the padding (or the input)
#: is refused before anything is allocated.
_MAX_PLANE = 2**31 - 1

Pair = int | tuple[int, int]


def resolve_padding(
    padding: Any,
    kernel_size: tuple[int, int],
    stride: tuple[int, int],
    dilation: tuple[int, int],
) -> tuple[int, int, int, int]:
    """Turn a ``padding`` argument into ``(top, bottom, left, right)`` zero counts.

    Parameters
    ----------
    padding : int, pair of int, ``"valid"`` or ``"same"``
        ``"valid"`` means no padding. ``"same"`` pads so that the output has the
        input's size (stride 1 only); when the dilated kernel extent is even, the
        extra zero goes on the bottom/right, as in PyTorch.
    kernel_size, stride, dilation : pair of int
        Already validated.

    Returns
    -------
    tuple of int
        ``(pad_top, pad_bottom, pad_left, pad_right)``.
    """
    if isinstance(padding, str):
        check_choice(padding, "padding", ("valid", "same"))
        if padding == "valid":
            return 0, 0, 0, 0
        if stride != (1, 1):
            raise ValueError(
                f"padding='same' needs stride 1 (as in PyTorch), got stride={stride}"
            )
        pads = []
        for size, dil in zip(kernel_size, dilation, strict=True):
            total = dil * (size - 1)
            pads += [total // 2, total - total // 2]
        return pads[0], pads[1], pads[2], pads[3]
    pad_h, pad_w = check_pair(padding, "padding", minimum=0)
    return pad_h, pad_h, pad_w, pad_w


@dataclass(frozen=True, eq=False)
class Conv2dContext:
    """What :func:`conv2d_backward` needs from a :func:`conv2d_forward` call.

    Opaque: pass it to :func:`conv2d_backward` unchanged. It keeps references to
    the forward's ``x`` and ``weight`` (not copies), so modifying them in place
    before the backward pass changes the gradients. When the whole batch fitted
    in one chunk it also keeps the forward's column matrix, which the backward
    pass then reuses instead of rebuilding it. It keeps the forward's workspace,
    from which the backward pass takes its own arrays, and which take of the
    workspace the kept column matrix came from: the backward pass refuses a
    context whose columns a later forward call has overwritten.
    """

    x: np.ndarray
    weight: np.ndarray
    has_bias: bool
    window: tuple[int, ...]
    groups: int
    chunk: int
    cols: np.ndarray | None
    direct: bool
    output_shape: tuple[int, ...]
    unbatched: bool
    workspace: Workspace | None
    stamp: tuple | None = None


def _check_arguments(x, weight, bias, stride, padding, dilation, groups):
    """Validate the forward's arguments; return them normalised, x made 4-d."""
    x = check_array(x, "x", ndim=(3, 4))
    weight = check_array(weight, "weight", ndim=4)
    if bias is not None:
        bias = check_array(bias, "bias", ndim=1)
    check_same_dtype(x, "x", weight=weight, bias=bias)
    stride = check_pair(stride, "stride", minimum=1)
    dilation = check_pair(dilation, "dilation", minimum=1)
    groups = check_int(groups, "groups", minimum=1)

    if 0 in weight.shape:
        raise ValueError(
            f"weight must not have a zero-size dimension, got {weight.shape}"
        )
    c_out, c_in_group, kh, kw = weight.shape
    pads = resolve_padding(padding, (kh, kw), stride, dilation)

    unbatched = x.ndim == 3
    if unbatched:
        x = x[None]
    c_in = x.shape[1]
    if c_in != c_in_group * groups:
        raise ValueError(
            f"x has {c_in} channels, but weight.shape[1] * groups = "
            f"{c_in_group} * {groups} = {c_in_group * groups}"
        )
    if c_out % groups != 0:
        raise ValueError(
            f"weight.shape[0] (out channels) must be divisible by groups, "
            f"got {c_out} out channels and groups={groups}"
        )
    if bias is not None and bias.shape != (c_out,):
        raise ValueError(f"bias must have shape ({c_out},), got {bias.shape}")
    # As in PyTorch, only the batch may be empty, even when padding would hold
    # the window.
    if 0 in x.shape[2:]:
        raise ValueError(
            f"x must have non-zero H and W (only N may be 0), got shape "
            f"{x.shape[1:] if unbatched else x.shape}"
        )

    height, width = x.shape[2:]
    if height * width > _MAX_PLANE:
        raise ValueError(
            f"x has planes of {height}x{width} = {height * width} elements (H x W), "
            "more than 2**31 - 1"
        )
    h_padded = height + pads[0] + pads[1]
    w_padded = width + pads[2] + pads[3]
    if h_padded * w_padded > _MAX_PLANE:
        raise ValueError(
            f"padding={padding!r:.40} makes the padded plane of x {h_padded}x"
            f"{w_padded} = {h_padded * w_padded} elements, more than 2**31 - 1"
        )
    extent = (dilation[0] * (kh - 1) + 1, dilation[1] * (kw - 1) + 1)
    if extent[0] > h_padded or extent[1] > w_padded:
        raise ValueError(
            f"the dilated kernel (weight's {kh}x{kw} with dilation={dilation} spans "
            f"{extent[0]}x{extent[1]}) is larger than the padded input of x "
            f"({h_padded}x{w_padded})"
        )
    h_out = output_size(x.shape[2], kh, stride[0], pads[:2], dilation[0])
    w_out = output_size(x.shape[3], kw, stride[1], pads[2:], dilation[1])
    return x, weight, bias, stride, pads, dilation, groups, (h_out, w_out), unbatched


def output_size(
    size: int,
    kernel_size: int,
    stride: int = 1,
    padding: int | tuple[int, int] = 0,
    dilation: int = 1,
) -> int:
    """Output length of a convolution along one axis, PyTorch's formula.

    Parameters
    ----------
    size : int
        Input length.
    kernel_size, stride, dilation : int
        The convolution's window along the axis.
    padding : int or (int, int), default 0
        Zeros on each side, or ``(before, after)``.

    Returns
    -------
    int
        ``floor((size + before + after - dilation * (kernel_size - 1) - 1) /
        stride) + 1``; below 1 when the dilated window does not fit.
    """
    before, after = (padding, padding) if isinstance(padding, int) else padding
    return (size + before + after - dilation * (kernel_size - 1) - 1) // stride + 1


def _uses_direct(weight_shape, stride, pads, dilation, groups) -> bool:
    """Whether the direct kernel computes this convolution (forward and backward).

    The backward pass computes ``grad_input`` as a direct convolution of
    ``grad_output`` with padding ``dilation * (k - 1) - pad``, so no side may be
    padded by more than the dilated kernel extent minus one.
    """
    kh, kw = weight_shape[2:]
    reach_h, reach_w = dilation[0] * (kh - 1), dilation[1] * (kw - 1)
    return (
        kw in _DIRECT_KERNEL_WIDTHS
        and stride == (1, 1)
        and groups == 1
        and max(pads[:2]) <= reach_h
        and max(pads[2:]) <= reach_w
    )


def set_winograd(enabled: bool) -> bool:
    """Allow or forbid Winograd's algorithm for 3x3 convolutions; return the old value.

    With it allowed (the default), 3x3 stride-1 convolutions between many
    channels (32 or more on each side, 2048 or more channel pairs), forward and
    input gradient, use Winograd's F(2x2, 3x3) algorithm, which needs 16 instead
    of 36 multiplications per 2x2 outputs and channel pair. Its rounding error is
    bounded by the magnitudes of the filters times those of the inputs, not by
    the output's own magnitude as the direct sum's is: an output much smaller
    than the filter taps that make it (a large tap meeting the zero padding, or
    terms that cancel) can be off by far more than its last bits. On normally
    scaled filters and inputs, float32 results stay within about 1e-6 of the
    largest output. Forbidding it gives the direct sum everywhere, which took 1.3
    to 1.5 times as long on 64 channels in and out (32x32 planes).

    Parameters
    ----------
    enabled : bool
        True to allow Winograd's algorithm, False to forbid it. The setting is
        process-wide and read at every call.

    Returns
    -------
    bool
        The setting before this call, for restoring it.

    Examples
    --------
    >>> import fastcnn.functional as F
    >>> previous = F.set_winograd(False)
    >>> F.set_winograd(previous)
    False
    """
    global _winograd_enabled
    if not isinstance(enabled, (bool, np.bool_)):
        raise TypeError(f"enabled must be a bool, got {type(enabled).__name__}")
    previous = _winograd_enabled
    _winograd_enabled = bool(enabled)
    return previous


def _direct_convolution(
    x: np.ndarray,
    weight: np.ndarray,
    bias: np.ndarray,
    y: np.ndarray,
    pad_top: int,
    pad_left: int,
    dilation: tuple[int, int],
    relu: bool,
    workspace: Workspace | None,
    name: str,
    skip_border: bool = False,
) -> None:
    """Write a convolution :func:`_uses_direct` accepts into ``y`` (NCHW).

    3x3 filters without dilation between many channels go to the Winograd
    kernel, whose transformed filters are kept in ``workspace`` under ``name``;
    everything else to the direct kernel. Both take padding up to the kernel's
    reach on every side. ``skip_border`` lets the direct kernel skip the zero
    rows of the padding, which is exact for finite filters only.
    """
    c_out, c_in, kh, kw = weight.shape
    h_out, w_out = y.shape[2:]
    if (
        _winograd_enabled
        and (kh, kw) == (3, 3)
        and dilation == (1, 1)
        and min(c_in, c_out) >= _WINOGRAD_MIN_CHANNELS
        and c_in * c_out >= _WINOGRAD_MIN_PAIRS
        and _winograd_is_safe(x, weight, workspace, name)
    ):
        filters = take(workspace, name, (16, c_out, c_in), weight.dtype)
        winograd_filters(weight, filters)
        tiles = ((h_out + 1) // 2) * ((w_out + 1) // 2 + 1)
        group = max(1, -(-TILE_COLUMNS // max(tiles, 1)))
        conv2d_winograd(x, filters, bias, y, pad_top, pad_left, group, relu)
    else:
        conv2d_direct(
            x, weight, bias, y, pad_top, pad_left, *dilation, relu, skip_border
        )


def _winograd_is_safe(
    x: np.ndarray, weight: np.ndarray, workspace: Workspace | None, name: str
) -> bool:
    """Whether the Winograd kernel gives what the direct sum would, up to rounding.

    Its transforms add several inputs (or filter taps) before multiplying, so an
    infinity can meet another of opposite sign and give NaN where the direct sum
    gives +-inf, and a sum can overflow where the direct products do not. Both
    are ruled out when the inputs and filters hold no NaN or inf and bound every
    intermediate value well below the dtype's largest: the transformed values are
    at most 4 (inputs) and 9/4 (filters) times the largest magnitudes, and the
    output transform adds 9 products of sums over the channels. The square roots
    of the sums of squares bound those magnitudes (one pass that vectorises);
    a sum that overflows sends the call to the direct kernel.
    """
    n, c_in = x.shape[:2]
    if n == 0:
        return False
    squares_x = take(workspace, f"{name}.input_squares", (n,), np.float64)
    squares_w = take(workspace, f"{name}.filter_squares", (len(weight),), np.float64)
    sums_of_squares(x, squares_x)
    sums_of_squares(weight, squares_w)
    bound = 4 * 2.25 * 9 * 16 * c_in * math.sqrt(squares_x.max() * squares_w.max())
    return bound < float(np.finfo(x.dtype).max)


def _chunk_view(work: np.ndarray, size: int) -> np.ndarray:
    """The first ``size`` samples of a chunk buffer whose axis 1 is the sample.

    The view is C-contiguous (the buffer's leading part, reshaped), so that it
    can be reshaped freely for the matrix products.
    """
    shape = (work.shape[0], size, *work.shape[2:])
    return work.reshape(-1)[: math.prod(shape)].reshape(shape)


def _chunk_size(n: int, bytes_per_sample: int) -> int:
    """Samples per chunk: chunks of equal size, each within ``_CHUNK_BYTES``.

    A single sample larger than the budget makes a chunk of its own.
    """
    per_chunk = max(1, _CHUNK_BYTES // bytes_per_sample)
    chunks = max(1, -(-n // per_chunk))
    return max(1, -(-n // chunks))


def conv2d_forward(
    x: np.ndarray,
    weight: np.ndarray,
    bias: np.ndarray | None = None,
    stride: Pair = 1,
    padding: Pair | str = 0,
    dilation: Pair = 1,
    groups: int = 1,
    *,
    workspace: Workspace | None = None,
) -> tuple[np.ndarray, Conv2dContext]:
    """2-d convolution, also returning the context its backward pass needs.

    Parameters
    ----------
    x : ndarray, shape (N, C_in, H, W) or (C_in, H, W)
        Input, float32 or float64. An unbatched input gives an unbatched output.
    weight : ndarray, shape (C_out, C_in / groups, kH, kW)
        Filters, same dtype as ``x``.
    bias : ndarray, shape (C_out,), optional
        Added to each output channel, same dtype as ``x``.
    stride : int or pair of int, default 1
        Step between windows, ``>= 1``.
    padding : int, pair of int, ``"valid"`` or ``"same"``, default 0
        Zeros added on each side (``>= 0``). ``"valid"`` is 0; ``"same"`` keeps
        the input size (stride 1 only) and, for an even dilated kernel extent,
        puts the extra zero on the bottom/right, as PyTorch does.
    dilation : int or pair of int, default 1
        Spacing between kernel taps, ``>= 1`` (1 means none).
    groups : int, default 1
        Number of channel groups, dividing ``C_in`` and ``C_out``; ``groups ==
        C_in`` is a depthwise convolution.
    workspace : Workspace, optional
        Buffers to reuse instead of allocating; the arrays returned are then
        views of it, overwritten by the next call (see Workspace). The backward
        pass takes its arrays from the same workspace.

    Returns
    -------
    y : ndarray, shape (N, C_out, H_out, W_out) or (C_out, H_out, W_out)
        The output, in the dtype of ``x``.
    ctx : Conv2dContext
        Opaque; pass it to :func:`conv2d_backward`.

    Raises
    ------
    TypeError
        If an array is not a float32/float64 ndarray, the dtypes differ, or an
        argument (``workspace`` included) has the wrong type.
    ValueError
        If a shape or value is wrong: ``x`` not 3-d or 4-d, channels not matching
        ``weight.shape[1] * groups``, ``C_out`` not divisible by ``groups``, a
        bias of the wrong shape, an unknown padding string, ``"same"`` with a
        stride above 1, a stride or dilation below 1, a negative padding, a zero
        ``H`` or ``W``, a dilated kernel larger than the padded input, or a plane
        of ``x`` (``H * W``, or its padded size) above 2**31 - 1 elements.

    Notes
    -----
    ``H_out = floor((H + pad_top + pad_bottom - dH * (kH - 1) - 1) / sH) + 1``,
    and likewise ``W_out``; with an int or pair padding ``p``,
    ``pad_top = pad_bottom = pH``, giving PyTorch's
    ``floor((H + 2 * pH - dH * (kH - 1) - 1) / sH) + 1``.

    An empty batch (``N == 0``) is allowed, as in PyTorch: the output is an
    empty ``(0, C_out, H_out, W_out)`` array and the backward pass returns a
    zero-size ``grad_input`` and zero ``grad_weight`` and ``grad_bias``.
    """
    return conv2d_relu_forward(
        x, weight, bias, stride, padding, dilation, groups, workspace, relu=False
    )


def conv2d_relu_forward(
    x: np.ndarray,
    weight: np.ndarray,
    bias: np.ndarray | None,
    stride: Pair,
    padding: Pair | str,
    dilation: Pair,
    groups: int,
    workspace: Workspace | None,
    *,
    relu: bool,
) -> tuple[np.ndarray, Conv2dContext]:
    """:func:`conv2d_forward`, optionally followed by a ReLU in the same pass.

    With ``relu`` the output is ``relu(conv2d(x, ...))``, written by the
    convolution's last pass, while the context stays that of the convolution:
    :func:`conv2d_backward` expects the gradient with respect to the
    convolution's output, before the ReLU. ``Sequential`` uses this for a
    ``Conv2D`` followed by a ``ReLU``, whose backward pass applies the ReLU's
    gradient from that output (``relu(v) > 0`` exactly where ``v > 0``).
    """
    x, weight, bias, stride, pads, dilation, groups, size_out, unbatched = (
        _check_arguments(x, weight, bias, stride, padding, dilation, groups)
    )
    workspace = check_workspace(workspace)
    has_bias = bias is not None
    n, c_in = x.shape[:2]
    c_out, c_in_group, kh, kw = weight.shape
    c_out_group = c_out // groups
    h_out, w_out = size_out
    length = h_out * w_out
    rows = c_in * kh * kw
    depth = c_in_group * kh * kw
    window = (kh, kw, stride[0], stride[1], pads[0], pads[2], dilation[0], dilation[1])
    filters = weight.reshape(groups, c_out_group, depth)
    if bias is None:
        bias = take_zeros(workspace, "conv2d.no_bias", (c_out,), x.dtype)

    m = _chunk_size(n, (rows + c_out) * length * x.itemsize)
    direct = _uses_direct(weight.shape, stride, pads, dilation, groups)
    y = take(workspace, "conv2d.y", (n, c_out, h_out, w_out), x.dtype)
    if direct:
        _direct_convolution(
            x,
            weight,
            bias,
            y,
            pads[0],
            pads[2],
            dilation,
            relu,
            workspace,
            "conv2d.winograd_filters",
        )
        cols = None
    else:
        cols = take(workspace, "conv2d.cols", (rows, min(m, n), h_out, w_out), x.dtype)
        out = take(workspace, "conv2d.product", (c_out, n, length), x.dtype)
        with np.errstate(all="ignore"):
            for n_start in range(0, n, m):
                size = min(m, n - n_start)
                cols_chunk = _chunk_view(cols, size)
                im2col(x, cols_chunk, n_start, *window)
                # The chunk's columns of out: a strided view, fine for BLAS.
                out_chunk = out[:, n_start : n_start + size]
                np.matmul(
                    filters,
                    cols_chunk.reshape(groups, depth, size * length),
                    out=out_chunk.reshape(groups, c_out_group, size * length),
                )
        scatter_output(out, y.reshape(n, c_out, length), bias)
        if relu:
            flat = y.reshape(-1)
            relu_flat(flat, flat)
        if m < n:
            cols = None

    output_shape = (c_out, h_out, w_out) if unbatched else y.shape
    ctx = Conv2dContext(
        x=x,
        weight=weight,
        has_bias=has_bias,
        window=window,
        groups=groups,
        chunk=m,
        cols=cols,
        direct=direct,
        output_shape=output_shape,
        unbatched=unbatched,
        workspace=workspace,
        stamp=None if cols is None else stamp(workspace, "conv2d.cols"),
    )
    return y.reshape(output_shape), ctx


def conv2d(
    x: np.ndarray,
    weight: np.ndarray,
    bias: np.ndarray | None = None,
    stride: Pair = 1,
    padding: Pair | str = 0,
    dilation: Pair = 1,
    groups: int = 1,
    *,
    workspace: Workspace | None = None,
) -> np.ndarray:
    """2-d convolution (cross-correlation) of ``x`` with ``weight``.

    Parameters
    ----------
    x : ndarray, shape (N, C_in, H, W) or (C_in, H, W)
        Input, float32 or float64.
    weight : ndarray, shape (C_out, C_in / groups, kH, kW)
        Filters, same dtype as ``x``.
    bias : ndarray, shape (C_out,), optional
        Per-channel offset.
    stride, padding, dilation, groups
        As in :func:`conv2d_forward`.
    workspace : Workspace, optional
        Buffers to reuse instead of allocating; the arrays returned are then
        views of it, overwritten by the next call (see Workspace).

    Returns
    -------
    ndarray, shape (N, C_out, H_out, W_out) or (C_out, H_out, W_out)
        In the dtype of ``x``.

    Notes
    -----
    ``H_out = floor((H + 2 * pH - dH * (kH - 1) - 1) / sH) + 1``; see
    :func:`conv2d_forward` for ``"same"`` padding, errors and empty batches.
    """
    return conv2d_forward(
        x, weight, bias, stride, padding, dilation, groups, workspace=workspace
    )[0]


def _direct_grad_input(
    grad_output: np.ndarray, ctx: Conv2dContext, grad_input: np.ndarray
) -> None:
    """Write ``grad_input`` as the direct convolution of ``grad_output``.

    With stride 1, ``grad_input`` is ``grad_output`` padded by ``dilation * (k -
    1) - pad`` on each side and correlated with the filters flipped in both
    spatial axes, ``C_in`` and ``C_out`` swapped. The padding's zero rows are
    skipped: the filters are finite here (:func:`conv2d_backward` sends
    non-finite ones to the products path).
    """
    weight, ws = ctx.weight, ctx.workspace
    c_out, c_in, kh, kw = weight.shape
    pad_top, pad_left, dil_h, dil_w = ctx.window[4:]
    flipped = take(ws, "conv2d.flipped_weight", (c_in, c_out, kh, kw), weight.dtype)
    flipped[...] = weight[:, :, ::-1, ::-1].transpose(1, 0, 2, 3)
    no_bias = take_zeros(ws, "conv2d.grad_input_bias", (c_in,), weight.dtype)
    h_out, w_out = ctx.output_shape[-2:]
    _direct_convolution(
        grad_output.reshape(-1, c_out, h_out, w_out),
        flipped,
        no_bias,
        grad_input,
        dil_h * (kh - 1) - pad_top,
        dil_w * (kw - 1) - pad_left,
        (dil_h, dil_w),
        False,
        ws,
        "conv2d.grad_input_winograd_filters",
        skip_border=True,
    )


def _products_backward(
    grad_output: np.ndarray, ctx: Conv2dContext, grad_input: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """Backward pass through the column matrix and matrix products.

    Writes ``grad_input`` unless it is None; returns the weight gradient, shape
    (groups, C_out / groups, C_in / groups * kH * kW), and the float64 bias
    gradient.
    """
    x, weight, groups, window, m = ctx.x, ctx.weight, ctx.groups, ctx.window, ctx.chunk
    n, c_in = x.shape[:2]
    c_out, c_in_group, kh, kw = weight.shape
    c_out_group = c_out // groups
    h_out, w_out = ctx.output_shape[-2:]
    length = h_out * w_out
    rows = c_in * kh * kw
    depth = c_in_group * kh * kw
    grad_output = grad_output.reshape(n, c_out, length)
    filters_t = weight.reshape(groups, c_out_group, depth).transpose(0, 2, 1)

    ws = ctx.workspace
    go = take(ws, "conv2d.grad_product", (c_out, n, length), x.dtype)
    grad_bias = take(ws, "conv2d.grad_bias_sum", (c_out,), np.float64)
    gather_grad_output(grad_output, go, grad_bias)

    cols = ctx.cols
    chunk_shape = (rows, min(m, n), h_out, w_out)
    if cols is None:
        # The forward kept no columns, so its buffer is free to rebuild them in.
        cols = take(ws, "conv2d.cols", chunk_shape, x.dtype)
    if grad_input is not None:
        grad_cols = take(ws, "conv2d.grad_cols", chunk_shape, x.dtype)
    grad_weight = take_zeros(
        ws, "conv2d.grad_weight", (groups, c_out_group, depth), x.dtype
    )
    partial = take(ws, "conv2d.grad_weight_part", grad_weight.shape, x.dtype)
    for n_start in range(0, n, m):
        size = min(m, n - n_start)
        cols_chunk = _chunk_view(cols, size)
        if ctx.cols is None:
            im2col(x, cols_chunk, n_start, *window)
        go_chunk = go[:, n_start : n_start + size].reshape(
            groups, c_out_group, size * length
        )
        cols_t = cols_chunk.reshape(groups, depth, size * length).transpose(0, 2, 1)
        np.matmul(go_chunk, cols_t, out=partial)
        grad_weight += partial
        if grad_input is None:
            continue

        grad_cols_chunk = _chunk_view(grad_cols, size)
        np.matmul(
            filters_t,
            go_chunk,
            out=grad_cols_chunk.reshape(groups, depth, size * length),
        )
        col2im(grad_cols_chunk, grad_input, n_start, *window)
    return grad_weight, grad_bias


def _all_finite(x: np.ndarray, weight: np.ndarray) -> bool:
    """Whether the direct backward pass gives NaN and inf where the reference does.

    The direct kernels multiply over whole rows of a zero-bordered plane, the
    columns past each output row included, and drop those products afterwards
    (weight gradient), or multiply the filters by the zero border as well
    (``grad_input``). A NaN or inf in ``x`` or in the filters turns such a
    product with zero into NaN, which then lands in sums the reference never
    forms: the weight gradient of taps that only meet it past a row's end, and
    input positions that only meet the NaN tap through the border. The products
    path forms exactly the reference's sums, so backward passes with non-finite
    values take it. The test is one sum over each array (NaN and inf carry
    through a sum; nothing allocated, nothing compiled, a few microseconds on a
    small batch); finite values whose sum overflows take the products path too,
    harmlessly. Called under ``np.errstate(all="ignore")``.
    """
    return math.isfinite(x.sum() + weight.sum())


def _direct_backward(
    grad_output: np.ndarray, ctx: Conv2dContext, grad_input: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """Backward pass of a convolution the direct kernel computed.

    Writes ``grad_input`` unless it is None; returns the weight gradient and
    the float64 bias gradient, both summed in order over the shares of
    :data:`_GRAD_SHARES` runs of consecutive samples (fewer for smaller
    batches). The number of
    shares depends on the batch alone, so the sums are the same for any thread
    count.
    """
    x, weight, ws = ctx.x, ctx.weight, ctx.workspace
    n, c_out = x.shape[0], weight.shape[0]
    pad_top, pad_left, dil_h, dil_w = ctx.window[4:]
    shares = min(n, _GRAD_SHARES)
    weight_parts = take(
        ws, "conv2d.grad_weight_parts", (shares, *weight.shape), x.dtype
    )
    bias_parts = take(ws, "conv2d.grad_bias_parts", (shares, c_out), np.float64)
    conv2d_direct_grad_weight(
        x, grad_output, weight_parts, bias_parts, pad_top, pad_left, dil_h, dil_w
    )
    grad_weight = take(ws, "conv2d.grad_weight", weight.shape, x.dtype)
    grad_bias = take(ws, "conv2d.grad_bias_sum", (c_out,), np.float64)
    np.sum(weight_parts, axis=0, out=grad_weight)
    np.sum(bias_parts, axis=0, out=grad_bias)
    if grad_input is not None:
        _direct_grad_input(grad_output, ctx, grad_input)
    return grad_weight, grad_bias


def conv2d_backward(
    grad_output: np.ndarray, ctx: Conv2dContext, *, input_gradient: bool = True
) -> tuple[np.ndarray | None, np.ndarray, np.ndarray | None]:
    """Gradients of :func:`conv2d_forward` with respect to its three inputs.

    Parameters
    ----------
    grad_output : ndarray, shape of the forward's output
        Gradient of the loss with respect to ``y``; same dtype as ``y``.
    ctx : Conv2dContext
        The context returned by :func:`conv2d_forward`.
    input_gradient : bool, default True
        Whether to compute ``grad_input``; the first layer of a network does not
        need it.

    Returns
    -------
    grad_input : ndarray, shape of ``x``, or None
        None when ``input_gradient`` is False.
    grad_weight : ndarray, shape (C_out, C_in / groups, kH, kW)
    grad_bias : ndarray, shape (C_out,), or None
        None when the forward had no bias.

    Raises
    ------
    TypeError
        If ``ctx`` is not a :class:`Conv2dContext`, or ``grad_output`` is not an
        ndarray of the forward's dtype.
    ValueError
        If ``grad_output`` does not have the forward output's shape.
    RuntimeError
        If a later forward call with the same workspace has overwritten the
        column matrix the context refers to.

    Notes
    -----
    With a workspace given to the forward pass, the gradients are views of its
    buffers (under other names than the forward's arrays), overwritten by the
    next backward call with that workspace.

    All gradients have the forward's dtype. ``grad_bias`` is summed in float64
    before being rounded to that dtype. Input positions that no window covers
    (stride not dividing the input) get exactly zero gradient.
    """
    if not isinstance(ctx, Conv2dContext):
        raise TypeError(
            f"ctx must be the Conv2dContext returned by conv2d_forward, "
            f"got {type(ctx).__name__}"
        )
    grad_output = check_array(grad_output, "grad_output", dtype=ctx.x.dtype)
    if grad_output.shape != ctx.output_shape:
        raise ValueError(
            f"grad_output must have the forward output's shape {ctx.output_shape}, "
            f"got {grad_output.shape}"
        )

    if not isinstance(input_gradient, (bool, np.bool_)):
        raise TypeError(
            f"input_gradient must be a bool, got {type(input_gradient).__name__}"
        )
    check_current(ctx.workspace, ctx.stamp, "conv2d")

    x, ws = ctx.x, ctx.workspace
    c_out = ctx.weight.shape[0]
    grad_input = None
    if input_gradient:
        grad_input = take(ws, "conv2d.grad_input", x.shape, x.dtype)
    grad_output = grad_output.reshape(x.shape[0], c_out, *ctx.output_shape[-2:])
    # The products, the sums of the shares and the rounding of the float64 bias
    # gradient pass NaN, inf and overflow on without a warning, as the kernels do.
    with np.errstate(all="ignore"):
        if ctx.direct and _all_finite(ctx.x, ctx.weight):
            grad_weight, grad_bias = _direct_backward(grad_output, ctx, grad_input)
        else:
            grad_weight, grad_bias = _products_backward(grad_output, ctx, grad_input)
        if ctx.has_bias:
            rounded = take(ws, "conv2d.grad_bias", (c_out,), x.dtype)
            rounded[...] = grad_bias
            grad_bias = rounded
        else:
            grad_bias = None

    if ctx.unbatched and grad_input is not None:
        grad_input = grad_input[0]
    return grad_input, grad_weight.reshape(ctx.weight.shape), grad_bias
