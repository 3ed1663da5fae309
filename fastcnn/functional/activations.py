"""Element-wise activations and their backward passes, for arrays of any shape.

``relu`` and ``leaky_relu`` take their backward pass from the input ``x``,
``sigmoid`` and ``tanh`` from their output ``y``. Outputs have the input's shape and
dtype; the work is done by the chunked parallel kernels of
:mod:`fastcnn.kernels.activations`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from fastcnn._validation import (
    check_array,
    check_fits_dtype,
    check_real,
    check_same_dtype,
)
from fastcnn.functional._workspace import Workspace, check_workspace, take
from fastcnn.kernels.activations import (
    leaky_relu_backward_flat,
    leaky_relu_flat,
    relu_backward_flat,
    relu_flat,
    sigmoid_backward_flat,
    sigmoid_flat,
    tanh_backward_flat,
    tanh_flat,
)


def _check_any_shape(x: Any, name: str) -> np.ndarray:
    # check_array's contiguous copy of a 0-d array is 1-d: keep the original shape.
    return check_array(x, name).reshape(x.shape)


def _check_scalars(scalars: dict[str, float], dtype: np.dtype) -> tuple[float, ...]:
    """The kernels' scalar arguments, each refused if it overflows ``dtype``."""
    return tuple(check_fits_dtype(v, k, dtype) for k, v in scalars.items())


def _elementwise(
    kernel,
    name: str,
    x: Any,
    scalars: dict[str, float],
    *,
    workspace: Workspace | None,
) -> np.ndarray:
    x = _check_any_shape(x, "x")
    values = _check_scalars(scalars, x.dtype)
    workspace = check_workspace(workspace)
    out = take(workspace, f"{name}.y", x.shape, x.dtype)
    kernel(x.reshape(-1), *values, out.reshape(-1))
    return out


def _elementwise_backward(
    kernel,
    name: str,
    grad_output: Any,
    saved: Any,
    saved_name: str,
    scalars: dict[str, float],
    *,
    workspace: Workspace | None,
) -> np.ndarray:
    workspace = check_workspace(workspace)
    saved = _check_any_shape(saved, saved_name)
    grad_output = _check_any_shape(grad_output, "grad_output")
    check_same_dtype(saved, saved_name, grad_output=grad_output)
    values = _check_scalars(scalars, saved.dtype)
    if grad_output.shape != saved.shape:
        raise ValueError(
            f"grad_output must have the shape of {saved_name} {saved.shape}, "
            f"got {grad_output.shape}"
        )
    out = take(workspace, f"{name}.grad_input", saved.shape, saved.dtype)
    kernel(grad_output.reshape(-1), saved.reshape(-1), *values, out.reshape(-1))
    return out


def relu(x: np.ndarray, *, workspace: Workspace | None = None) -> np.ndarray:
    """Rectified linear unit ``max(x, 0)``, element-wise.

    Parameters
    ----------
    x : numpy.ndarray, shape (...), float32 or float64
    workspace : Workspace, optional
        Buffers to reuse instead of allocating; the array returned is then a view
        of it, overwritten by the next call (see :class:`Workspace`).

    Returns
    -------
    numpy.ndarray, shape (...), dtype of ``x``
        ``x`` where ``x >= 0``, else 0; NaN stays NaN (as in PyTorch).

    Notes
    -----
    The output has the shape of the input, 0-d included.
    """
    return _elementwise(relu_flat, "relu", x, {}, workspace=workspace)


def relu_backward(
    grad_output: np.ndarray, x: np.ndarray, *, workspace: Workspace | None = None
) -> np.ndarray:
    """Gradient of a loss with respect to the input of :func:`relu`.

    Parameters
    ----------
    grad_output : numpy.ndarray, shape (...)
        Gradient with respect to ``relu(x)``, same shape and dtype as ``x``.
    x : numpy.ndarray, shape (...), float32 or float64
        The input of the forward pass.

    workspace : Workspace, optional
        Buffers to reuse instead of allocating; the array returned is then a view
        of it, overwritten by the next call (see :class:`Workspace`).

    Returns
    -------
    numpy.ndarray, shape (...), dtype of ``x``
        ``grad_output`` where ``x > 0``, else 0. As in PyTorch the gradient at
        ``x == 0`` is 0, and where ``x`` is NaN ``grad_output`` passes unchanged.
    """
    return _elementwise_backward(
        relu_backward_flat, "relu", grad_output, x, "x", {}, workspace=workspace
    )


def leaky_relu(
    x: np.ndarray,
    negative_slope: float = 0.01,
    *,
    workspace: Workspace | None = None,
) -> np.ndarray:
    """Leaky rectified linear unit, element-wise.

    Parameters
    ----------
    x : numpy.ndarray, shape (...), float32 or float64
    negative_slope : float, default 0.01
        Factor applied to the non-positive inputs; any number that is finite in
        the dtype of ``x`` (a float32 ``x`` refuses ``1e300``).

    workspace : Workspace, optional
        Buffers to reuse instead of allocating; the array returned is then a view
        of it, overwritten by the next call (see :class:`Workspace`).

    Returns
    -------
    numpy.ndarray, shape (...), dtype of ``x``
        ``x`` where ``x > 0``, else ``negative_slope * x``.

    Notes
    -----
    The output has the shape of the input, 0-d included.
    """
    slope = {"negative_slope": check_real(negative_slope, "negative_slope")}
    return _elementwise(leaky_relu_flat, "leaky_relu", x, slope, workspace=workspace)


def leaky_relu_backward(
    grad_output: np.ndarray,
    x: np.ndarray,
    negative_slope: float = 0.01,
    *,
    workspace: Workspace | None = None,
) -> np.ndarray:
    """Gradient of a loss with respect to the input of :func:`leaky_relu`.

    Parameters
    ----------
    grad_output : numpy.ndarray, shape (...)
        Gradient with respect to ``leaky_relu(x)``, same shape and dtype as ``x``.
    x : numpy.ndarray, shape (...), float32 or float64
        The input of the forward pass.
    negative_slope : float, default 0.01
        The slope of the forward pass; finite in the dtype of ``x``.

    workspace : Workspace, optional
        Buffers to reuse instead of allocating; the array returned is then a view
        of it, overwritten by the next call (see :class:`Workspace`).

    Returns
    -------
    numpy.ndarray, shape (...), dtype of ``x``
        ``grad_output`` where ``x > 0``, else ``negative_slope * grad_output``
        (also at ``x == 0``, as in PyTorch).
    """
    slope = {"negative_slope": check_real(negative_slope, "negative_slope")}
    return _elementwise_backward(
        leaky_relu_backward_flat,
        "leaky_relu",
        grad_output,
        x,
        "x",
        slope,
        workspace=workspace,
    )


def sigmoid(x: np.ndarray, *, workspace: Workspace | None = None) -> np.ndarray:
    """Logistic sigmoid ``1 / (1 + exp(-x))``, element-wise.

    Parameters
    ----------
    x : numpy.ndarray, shape (...), float32 or float64
    workspace : Workspace, optional
        Buffers to reuse instead of allocating; the array returned is then a view
        of it, overwritten by the next call (see :class:`Workspace`).

    Returns
    -------
    numpy.ndarray, shape (...), dtype of ``x``

    Notes
    -----
    The output has the shape of the input, 0-d included. Computed from
    ``exp(-|x|)``, so no ``exp`` overflows: inputs of size 1e4 give exactly 0 or 1,
    without a warning.
    """
    return _elementwise(sigmoid_flat, "sigmoid", x, {}, workspace=workspace)


def sigmoid_backward(
    grad_output: np.ndarray, y: np.ndarray, *, workspace: Workspace | None = None
) -> np.ndarray:
    """Gradient of a loss with respect to the input of :func:`sigmoid`.

    Parameters
    ----------
    grad_output : numpy.ndarray, shape (...)
        Gradient with respect to ``y``, same shape and dtype as ``y``.
    y : numpy.ndarray, shape (...), float32 or float64
        The output of the forward pass, ``sigmoid(x)``.

    workspace : Workspace, optional
        Buffers to reuse instead of allocating; the array returned is then a view
        of it, overwritten by the next call (see :class:`Workspace`).

    Returns
    -------
    numpy.ndarray, shape (...), dtype of ``y``
        ``grad_output * y * (1 - y)``.
    """
    return _elementwise_backward(
        sigmoid_backward_flat, "sigmoid", grad_output, y, "y", {}, workspace=workspace
    )


def tanh(x: np.ndarray, *, workspace: Workspace | None = None) -> np.ndarray:
    """Hyperbolic tangent, element-wise.

    Parameters
    ----------
    x : numpy.ndarray, shape (...), float32 or float64
    workspace : Workspace, optional
        Buffers to reuse instead of allocating; the array returned is then a view
        of it, overwritten by the next call (see :class:`Workspace`).

    Returns
    -------
    numpy.ndarray, shape (...), dtype of ``x``

    Notes
    -----
    The output has the shape of the input, 0-d included.
    """
    return _elementwise(tanh_flat, "tanh", x, {}, workspace=workspace)


def tanh_backward(
    grad_output: np.ndarray, y: np.ndarray, *, workspace: Workspace | None = None
) -> np.ndarray:
    """Gradient of a loss with respect to the input of :func:`tanh`.

    Parameters
    ----------
    grad_output : numpy.ndarray, shape (...)
        Gradient with respect to ``y``, same shape and dtype as ``y``.
    y : numpy.ndarray, shape (...), float32 or float64
        The output of the forward pass, ``tanh(x)``.

    workspace : Workspace, optional
        Buffers to reuse instead of allocating; the array returned is then a view
        of it, overwritten by the next call (see :class:`Workspace`).

    Returns
    -------
    numpy.ndarray, shape (...), dtype of ``y``
        ``grad_output * (1 - y**2)``.
    """
    return _elementwise_backward(
        tanh_backward_flat, "tanh", grad_output, y, "y", {}, workspace=workspace
    )
