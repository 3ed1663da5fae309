"""The dense (fully connected) layer's forward and backward pass, as in F.linear.

The matrix products go through ``np.dot`` (BLAS), on one BLAS thread (see
:mod:`fastcnn.functional._blas`); adding the bias and summing its gradient are the
parallel Numba kernels of :mod:`fastcnn.kernels.dense`.

Like the kernels, the products pass NaN, inf and overflow on without a
``RuntimeWarning``: they run under ``np.errstate(all="ignore")``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from fastcnn._validation import check_array, check_same_dtype
from fastcnn.functional._blas import single_blas_thread
from fastcnn.functional._workspace import Workspace, check_workspace, take
from fastcnn.kernels.dense import add_bias_rows, sum_rows_into


@dataclass(frozen=True)
class LinearContext:
    """What :func:`linear_backward` needs from the forward pass (treat as opaque).

    Attributes
    ----------
    x : numpy.ndarray, shape (m, in_features)
        The input, C-contiguous, its leading axes flattened into ``m``.
    weight : numpy.ndarray, shape (out_features, in_features)
        The weight of the forward pass.
    has_bias : bool
        Whether the forward pass added a bias.
    input_shape : tuple of int
        The shape of the input as given, ``(..., in_features)``.
    workspace : Workspace or None
        The forward's workspace, which the backward pass also takes its arrays
        from.
    """

    x: np.ndarray
    weight: np.ndarray
    has_bias: bool
    input_shape: tuple[int, ...]
    workspace: Workspace | None = None


def _check_linear_args(
    x: Any, weight: Any, bias: Any
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    checked = check_array(x, "x")
    # check_array's contiguous copy of a 0-d array is 1-d: test the original.
    if x.ndim == 0:
        raise ValueError(
            f"x must be at least 1-d (..., in_features), got 0-d {x.shape}"
        )
    x = checked
    weight = check_array(weight, "weight", ndim=2)
    if bias is not None:
        bias = check_array(bias, "bias", ndim=1)
    check_same_dtype(x, "x", weight=weight, bias=bias)
    out_features, in_features = weight.shape
    if x.shape[-1] != in_features:
        raise ValueError(
            f"weight of shape {weight.shape} expects {in_features} input features, "
            f"but x of shape {x.shape} has {x.shape[-1]} (its last axis)"
        )
    if bias is not None and bias.shape != (out_features,):
        raise ValueError(
            f"bias must have shape ({out_features},) to match weight of shape "
            f"{weight.shape}, got {bias.shape}"
        )
    return x, weight, bias


def linear_forward(
    x: np.ndarray,
    weight: np.ndarray,
    bias: np.ndarray | None = None,
    *,
    workspace: Workspace | None = None,
) -> tuple[np.ndarray, LinearContext]:
    """Compute ``x @ weight.T + bias`` and keep what :func:`linear_backward` needs.

    Parameters
    ----------
    x : numpy.ndarray, shape (..., in_features), float32 or float64
        Input; any number of leading axes, including none (a single sample).
    weight : numpy.ndarray, shape (out_features, in_features)
        Same dtype as ``x``.
    bias : numpy.ndarray, shape (out_features,), optional
        Same dtype as ``x``.
    workspace : Workspace, optional
        Buffers to reuse instead of allocating; the arrays returned are then views
        of it, overwritten by the next call (see :class:`Workspace`).

    Returns
    -------
    y : numpy.ndarray, shape (..., out_features), dtype of ``x``
        The output.
    ctx : LinearContext
        Holds references to ``x`` (contiguous) and ``weight``; do not modify them
        in place before the backward pass.

    Notes
    -----
    The output shape is ``x.shape[:-1] + (out_features,)``.
    """
    x, weight, bias = _check_linear_args(x, weight, bias)
    workspace = check_workspace(workspace)
    out_features, in_features = weight.shape
    # The row count is explicit: reshape(-1, 0) is ambiguous for in_features == 0.
    rows = math.prod(x.shape[:-1])
    x2d = x.reshape(rows, in_features)

    y = take(workspace, "linear.y", (rows, out_features), x.dtype)
    # np.dot rather than np.matmul, here and in the backward pass: with ``out``
    # matmul costs several microseconds more per call, which a batch of one
    # image notices; both hand the product to BLAS.
    # NaN, inf and overflow pass on silently, as in the Numba kernels: without
    # the errstate NumPy would warn about them after the product.
    with (
        single_blas_thread(rows * in_features * out_features),
        np.errstate(all="ignore"),
    ):
        np.dot(x2d, weight.T, out=y)
    if bias is not None:
        add_bias_rows(y, bias)

    ctx = LinearContext(x2d, weight, bias is not None, x.shape, workspace)
    return y.reshape((*x.shape[:-1], out_features)), ctx


def linear(
    x: np.ndarray,
    weight: np.ndarray,
    bias: np.ndarray | None = None,
    *,
    workspace: Workspace | None = None,
) -> np.ndarray:
    """Dense layer ``y = x @ weight.T + bias``, as ``torch.nn.functional.linear``.

    Parameters
    ----------
    x : numpy.ndarray, shape (..., in_features), float32 or float64
        Input; any number of leading axes, including none (a single sample).
    weight : numpy.ndarray, shape (out_features, in_features)
        Same dtype as ``x``.
    bias : numpy.ndarray, shape (out_features,), optional
        Same dtype as ``x``.
    workspace : Workspace, optional
        Buffers to reuse instead of allocating; the array returned is then a view
        of it, overwritten by the next call (see :class:`Workspace`).

    Returns
    -------
    numpy.ndarray, shape (..., out_features), dtype of ``x``

    Notes
    -----
    The output shape is ``x.shape[:-1] + (out_features,)``.
    """
    return linear_forward(x, weight, bias, workspace=workspace)[0]


def linear_backward(
    grad_output: np.ndarray, ctx: LinearContext, *, input_gradient: bool = True
) -> tuple[np.ndarray | None, np.ndarray, np.ndarray | None]:
    """Gradients of a loss with respect to the input, weight and bias of a linear.

    Parameters
    ----------
    grad_output : numpy.ndarray, shape (..., out_features)
        Gradient with respect to the output of :func:`linear_forward`, with the
        output's shape and dtype.
    ctx : LinearContext
        The context returned by :func:`linear_forward`. When the forward had a
        workspace, the gradients are taken from it too.
    input_gradient : bool, default True
        Whether to compute ``grad_input``; the first layer of a network does not
        need it.

    Returns
    -------
    grad_input : numpy.ndarray, shape (..., in_features), or None
        ``grad_output @ weight``, the shape of the forward input; None when
        ``input_gradient`` is False.
    grad_weight : numpy.ndarray, shape (out_features, in_features)
        ``grad_output^T @ x`` summed over every leading axis.
    grad_bias : numpy.ndarray, shape (out_features,), or None
        ``grad_output`` summed over every leading axis; None when the forward pass
        had no bias.
    """
    if not isinstance(ctx, LinearContext):
        raise TypeError(
            "ctx must be the LinearContext returned by linear_forward, got "
            f"{type(ctx).__name__}"
        )
    out_features = ctx.weight.shape[0]
    # check_array's contiguous copy of a 0-d array is 1-d: keep the original shape.
    grad_output = check_array(grad_output, "grad_output").reshape(grad_output.shape)
    check_same_dtype(ctx.weight, "weight", grad_output=grad_output)
    want = (*ctx.input_shape[:-1], out_features)
    if grad_output.shape != want:
        raise ValueError(
            f"grad_output must have the shape of the forward output {want}, "
            f"got {grad_output.shape}"
        )
    g2d = grad_output.reshape(math.prod(grad_output.shape[:-1]), out_features)

    workspace, dtype = ctx.workspace, grad_output.dtype

    grad_input = None
    with single_blas_thread(ctx.x.size * out_features), np.errstate(all="ignore"):
        if input_gradient:
            grad_input = take(
                workspace, "linear.grad_input", (len(g2d), ctx.x.shape[1]), dtype
            )
            np.dot(g2d, ctx.weight, out=grad_input)
            grad_input = grad_input.reshape(ctx.input_shape)
        grad_weight = take(workspace, "linear.grad_weight", ctx.weight.shape, dtype)
        # (np.matmul does not even hand this product to BLAS for a single row.)
        np.dot(g2d.T, ctx.x, out=grad_weight)
    grad_bias = None
    if ctx.has_bias:
        grad_bias = take(workspace, "linear.grad_bias", (out_features,), dtype)
        sum_rows_into(g2d, grad_bias)
    return grad_input, grad_weight, grad_bias
