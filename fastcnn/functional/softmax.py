"""Softmax, log-softmax and the fused, numerically stable softmax cross-entropy.

``softmax``/``log_softmax`` and their backward passes work along any axis of an
array of any ``ndim >= 1``: the chosen axis is moved last, the data viewed as
``(rows, k)`` and every row normalised by the kernels of
:mod:`fastcnn.kernels.softmax`, each row shifted by its own maximum.

``cross_entropy`` follows ``torch.nn.functional.cross_entropy`` without class
weights and without ``ignore_index``; ``cross_entropy_with_grad`` returns the loss
and its gradient with respect to the logits from one pass over the data.
"""

from __future__ import annotations

from numbers import Integral
from typing import Any

import numpy as np

from fastcnn._validation import (
    check_array,
    check_choice,
    check_fits_dtype,
    check_int,
    check_real,
    check_same_dtype,
    kernel_ready,
)
from fastcnn.functional._workspace import Workspace, check_workspace, take
from fastcnn.kernels.softmax import (
    cross_entropy_index_rows,
    cross_entropy_prob_rows,
    log_softmax_backward_rows,
    log_softmax_rows,
    softmax_backward_rows,
    softmax_rows,
)

REDUCTIONS = ("mean", "sum", "none")

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1

#: Cross-entropy with index targets runs on one thread below this much work,
#: counted as ``n * (k + ROW_COST)`` (a row costs about as much as ROW_COST
#: classes beyond its own). Measured on two cores: 4096x10 and 256x1000 take
#: 0.1-0.25 ms on one thread, less than or about what waking a second thread
#: costs, and much less when the second core is busy with other work.
PARALLEL_WORK = 1 << 19
ROW_COST = 48

# The kernels' gradient factor when no gradient is wanted.
_EMPTY = {np.dtype(d): np.empty(0, dtype=d) for d in (np.float32, np.float64)}


def _check_axis(axis: Any, ndim: int) -> int:
    axis = check_int(axis, "axis")
    if not -ndim <= axis < ndim:
        raise ValueError(
            f"axis must be in [{-ndim}, {ndim}) for a {ndim}-d input, got {axis}"
        )
    return axis % ndim


def _check_at_least_1d(x: Any, name: str) -> np.ndarray:
    checked = check_array(x, name)
    # check_array's contiguous copy of a 0-d array is 1-d: test the original.
    if x.ndim == 0:
        raise ValueError(f"{name} must be at least 1-d, got 0-d shape {x.shape}")
    return checked


def _along_rows(
    kernel, axis: int, name: str, workspace: Workspace | None, *arrays: np.ndarray
) -> np.ndarray:
    """Run a row kernel on ``arrays`` with ``axis`` moved last; return its output.

    Arrays are taken from ``workspace`` under ``"<name>.<array>"``.
    """
    first = arrays[0]
    shape, dtype = first.shape, first.dtype
    if first.size == 0:
        return take(workspace, f"{name}.out", shape, dtype)
    last = first.ndim - 1
    if axis != last:
        moved = []
        for index, a in enumerate(arrays):
            view = np.moveaxis(a, axis, -1)
            copy = take(workspace, f"{name}.moved{index}", view.shape, dtype)
            copy[...] = view
            moved.append(copy)
        arrays = tuple(moved)
    k = arrays[0].shape[-1]
    rows = tuple(a.reshape(-1, k) for a in arrays)
    out_name = f"{name}.out_moved" if axis != last else f"{name}.out"
    out = take(workspace, out_name, rows[0].shape, dtype)
    kernel(*rows, out)
    out = out.reshape(arrays[0].shape)
    if axis != last:
        result = take(workspace, f"{name}.out", shape, dtype)
        result[...] = np.moveaxis(out, -1, axis)
        out = result
    return out


def softmax(
    x: np.ndarray, axis: int = -1, *, workspace: Workspace | None = None
) -> np.ndarray:
    """Softmax of ``x`` along ``axis``.

    Parameters
    ----------
    x : numpy.ndarray, shape (...), float32 or float64, ndim >= 1
        Input scores.
    axis : int, default -1
        The axis to normalise along.
    workspace : Workspace, optional
        Buffers to reuse instead of allocating; the arrays returned are then views
        of it, overwritten by the next call (see Workspace).

    Returns
    -------
    numpy.ndarray, shape (...), dtype of ``x``
        ``exp(x - m) / sum(exp(x - m))`` along ``axis``, ``m`` the maximum of each
        slice along ``axis``.

    Notes
    -----
    The output has the shape of the input. A slice of all ``-inf`` gives NaN (as in
    PyTorch); ``-inf`` elsewhere gives probability 0; NaN propagates to its slice.
    """
    x = _check_at_least_1d(x, "x")
    axis = _check_axis(axis, x.ndim)
    workspace = check_workspace(workspace)
    return _along_rows(softmax_rows, axis, "softmax", workspace, x)


def log_softmax(
    x: np.ndarray, axis: int = -1, *, workspace: Workspace | None = None
) -> np.ndarray:
    """Logarithm of the softmax of ``x`` along ``axis``, computed without ``log(exp)``.

    Parameters
    ----------
    x : numpy.ndarray, shape (...), float32 or float64, ndim >= 1
        Input scores.
    axis : int, default -1
        The axis to normalise along.
    workspace : Workspace, optional
        Buffers to reuse instead of allocating; the arrays returned are then views
        of it, overwritten by the next call (see Workspace).

    Returns
    -------
    numpy.ndarray, shape (...), dtype of ``x``
        ``x - m - log(sum(exp(x - m)))`` along ``axis``, ``m`` the maximum of each
        slice along ``axis``.

    Notes
    -----
    The output has the shape of the input. Logits of size 1e4 stay finite; a slice
    of all ``-inf`` gives NaN (as in PyTorch).
    """
    x = _check_at_least_1d(x, "x")
    axis = _check_axis(axis, x.ndim)
    workspace = check_workspace(workspace)
    return _along_rows(log_softmax_rows, axis, "log_softmax", workspace, x)


def _check_backward_pair(
    grad_output: Any, output: Any, output_name: str
) -> tuple[np.ndarray, np.ndarray]:
    output = _check_at_least_1d(output, output_name)
    grad_output = _check_at_least_1d(grad_output, "grad_output")
    check_same_dtype(output, output_name, grad_output=grad_output)
    if grad_output.shape != output.shape:
        raise ValueError(
            f"grad_output must have the shape of {output_name} {output.shape}, "
            f"got {grad_output.shape}"
        )
    return grad_output, output


def softmax_backward(
    grad_output: np.ndarray,
    y: np.ndarray,
    axis: int = -1,
    *,
    workspace: Workspace | None = None,
) -> np.ndarray:
    """Gradient of a loss with respect to the input of :func:`softmax`.

    Parameters
    ----------
    grad_output : numpy.ndarray, shape (...)
        Gradient of the loss with respect to ``y``, same dtype as ``y``.
    y : numpy.ndarray, shape (...), float32 or float64, ndim >= 1
        The output of ``softmax(x, axis)``.
    axis : int, default -1
        The axis the forward pass normalised along.
    workspace : Workspace, optional
        Buffers to reuse instead of allocating; the arrays returned are then views
        of it, overwritten by the next call (see Workspace).

    Returns
    -------
    numpy.ndarray, shape (...), dtype of ``y``
        ``y * (grad_output - sum(grad_output * y))``, the sum along ``axis``.
    """
    grad_output, y = _check_backward_pair(grad_output, y, "y")
    axis = _check_axis(axis, y.ndim)
    workspace = check_workspace(workspace)
    return _along_rows(
        softmax_backward_rows, axis, "softmax_backward", workspace, grad_output, y
    )


def log_softmax_backward(
    grad_output: np.ndarray,
    y_log: np.ndarray,
    axis: int = -1,
    *,
    workspace: Workspace | None = None,
) -> np.ndarray:
    """Gradient of a loss with respect to the input of :func:`log_softmax`.

    Parameters
    ----------
    grad_output : numpy.ndarray, shape (...)
        Gradient of the loss with respect to ``y_log``, same dtype as ``y_log``.
    y_log : numpy.ndarray, shape (...), float32 or float64, ndim >= 1
        The output of ``log_softmax(x, axis)``.
    axis : int, default -1
        The axis the forward pass normalised along.
    workspace : Workspace, optional
        Buffers to reuse instead of allocating; the arrays returned are then views
        of it, overwritten by the next call (see Workspace).

    Returns
    -------
    numpy.ndarray, shape (...), dtype of ``y_log``
        ``grad_output - exp(y_log) * sum(grad_output)``, the sum along ``axis``.
    """
    grad_output, y_log = _check_backward_pair(grad_output, y_log, "y_log")
    axis = _check_axis(axis, y_log.ndim)
    workspace = check_workspace(workspace)
    return _along_rows(
        log_softmax_backward_rows,
        axis,
        "log_softmax_backward",
        workspace,
        grad_output,
        y_log,
    )


def _check_logits(logits: Any) -> np.ndarray:
    logits = check_array(logits, "logits", ndim=(1, 2))
    if logits.shape[-1] == 0:
        raise ValueError(
            f"logits must have at least one class (last axis), got shape {logits.shape}"
        )
    return logits


def _check_target(target: Any, logits: np.ndarray) -> tuple[bool, np.ndarray]:
    """Return ``(is_index, target)`` with ``target`` shaped ``(n,)`` or ``(n, k)``."""
    n, k = (1, logits.shape[0]) if logits.ndim == 1 else logits.shape
    if isinstance(target, Integral) and not isinstance(target, (bool, np.bool_)):
        if not _INT64_MIN <= target <= _INT64_MAX:
            # np.asarray would give an object array and a message about dtypes.
            raise ValueError(
                f"target must hold class indices in [0, {k}), got an int beyond "
                "the int64 range"
            )
        target = np.asarray(target)
    if not isinstance(target, np.ndarray):
        raise TypeError(
            "target must be a numpy.ndarray of class indices (integer dtype) or of "
            f"class probabilities (dtype {logits.dtype}), got {type(target).__name__}"
        )
    kind = target.dtype.kind
    if kind in "iu":
        want = logits.shape[:-1]
        if target.shape != want:
            raise ValueError(
                f"target of class indices must have shape {want} for logits of "
                f"shape {logits.shape}, got {target.shape}"
            )
        if target.size:
            low, high = target.min(), target.max()
            if low < 0 or high >= k:
                bad = low if low < 0 else high
                raise ValueError(
                    f"target must hold class indices in [0, {k}), got {bad}"
                )
        return True, target.reshape(n)
    if kind == "f":
        if target.shape != logits.shape and target.shape == logits.shape[:-1]:
            # The shape of class indices: float labels, not probabilities.
            raise TypeError(
                f"target of class indices must have an integer dtype, got "
                f"{target.dtype}; convert it first, e.g. target.astype(np.int64)"
            )
        if target.dtype != logits.dtype:
            raise TypeError(
                f"target of class probabilities must have the dtype of logits "
                f"({logits.dtype}), got {target.dtype}; convert it first, e.g. "
                f"target.astype(np.{logits.dtype})"
            )
        if target.shape != logits.shape:
            raise ValueError(
                f"target of class probabilities must have the shape of logits "
                f"{logits.shape}, got {target.shape}"
            )
        return False, kernel_ready(target).reshape(n, k)
    raise TypeError(
        "target must have an integer dtype (class indices) or the dtype of logits "
        f"({logits.dtype}, class probabilities), got {target.dtype}"
    )


def _grad_scale(
    grad_output: Any,
    reduction: str,
    logits: np.ndarray,
    n: int,
    name: str,
    workspace: Workspace | None,
) -> np.ndarray:
    """Factor of the gradient: ``grad_output``, divided by n for "mean".

    Shape ``(n,)`` for a per-row ``grad_output``, else ``(1,)`` (one factor that
    the kernels apply to every row).
    """
    dtype = logits.dtype
    if isinstance(grad_output, np.ndarray):
        # check_array's copy of a 0-d array is 1-d: keep the original shape.
        shape = grad_output.shape
        grad_output = check_array(grad_output, "grad_output").reshape(shape)
        check_same_dtype(logits, "logits", grad_output=grad_output)
        per_row = reduction == "none" and logits.ndim == 2
        if shape != () and not (per_row and shape == (n,)):
            want = f"() or ({n},)" if per_row else "()"
            raise ValueError(
                f"grad_output must have shape {want} for reduction={reduction!r} "
                f"and logits of shape {logits.shape}, got {shape}"
            )
        values = grad_output.reshape(-1)
    else:
        value = check_real(grad_output, "grad_output")
        values = dtype.type(check_fits_dtype(value, "grad_output", dtype))
    size = 1 if np.ndim(values) == 0 else n
    scale = take(workspace, f"{name}.grad_scale", (size,), dtype)
    scale[...] = values
    if reduction == "mean" and n > 0:
        np.divide(scale, dtype.type(n), out=scale)
    return scale


def _cross_entropy(
    logits: Any,
    target: Any,
    reduction: str,
    label_smoothing: Any,
    grad_output: Any,
    want_loss: bool,
    want_grad: bool,
    name: str,
    workspace: Workspace | None,
) -> tuple[np.ndarray | None, np.ndarray | None]:
    logits = _check_logits(logits)
    is_index, target = _check_target(target, logits)
    reduction = check_choice(reduction, "reduction", REDUCTIONS)
    smoothing = check_real(label_smoothing, "label_smoothing", low=0.0, high=1.0)
    workspace = check_workspace(workspace)
    unbatched = logits.ndim == 1
    rows = logits.reshape(1, -1) if unbatched else logits
    n, k = rows.shape
    dtype = logits.dtype
    if want_grad:
        scale = _grad_scale(grad_output, reduction, logits, n, name, workspace)
        grad = take(workspace, f"{name}.grad", (n, k), dtype)
    else:
        # The kernels leave the exponentials there.
        scale = _EMPTY[dtype]
        grad = take(workspace, f"{name}.exps", (n, k), dtype)
    flags = target.flags
    if is_index and not (
        target.dtype == np.int64 and flags.c_contiguous and flags.writeable
    ):
        converted = take(workspace, f"{name}.target", (n,), np.int64)
        converted[...] = target.reshape(n)
        target = converted

    losses = take(workspace, f"{name}.losses", (n,), dtype)
    if is_index:
        totals = take(workspace, f"{name}.totals", (n,), dtype)
        kernel = cross_entropy_index_rows
        if n * (k + ROW_COST) < PARALLEL_WORK:
            kernel = kernel.serial
        kernel(rows, target, smoothing, scale, want_grad, losses, totals, grad)
    else:
        cross_entropy_prob_rows(rows, target, smoothing, scale, want_grad, losses, grad)

    loss = None
    if want_loss:
        if reduction == "none":
            loss = losses.reshape(()) if unbatched else losses
        else:
            # A fixed-order serial sum of the per-row losses, in float64; inf,
            # NaN and a total beyond float32 pass on without a warning.
            with np.errstate(all="ignore"):
                total = float(losses.sum(dtype=np.float64))
                if reduction == "mean":
                    total = total / n if n > 0 else float("nan")
                loss = np.asarray(total, dtype=dtype)
    if want_grad and unbatched:
        grad = grad.reshape(k)
    return loss, (grad if want_grad else None)


def cross_entropy(
    logits: np.ndarray,
    target: np.ndarray | int,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
    *,
    workspace: Workspace | None = None,
) -> np.ndarray:
    """Softmax cross-entropy between ``logits`` and ``target``, fused and stable.

    Parameters
    ----------
    logits : numpy.ndarray, shape (n, k) or (k,), float32 or float64
        Unnormalised class scores; ``k >= 1``.
    target : numpy.ndarray or int
        Either class indices, an integer array of shape ``(n,)`` with values in
        ``[0, k)`` (for 1-d logits: a 0-d integer array or an int), or class
        probabilities, an array of the shape and dtype of ``logits``.
    reduction : {"mean", "sum", "none"}, default "mean"
        "mean" divides the summed loss by ``n`` (for both kinds of target), "sum"
        sums it, "none" returns the loss of every row.
    label_smoothing : float, default 0.0
        ``eps`` in ``[0, 1]``: the target distribution ``y`` becomes
        ``(1 - eps) * y + eps / k``.
    workspace : Workspace, optional
        Buffers to reuse instead of allocating; the arrays returned are then views
        of it, overwritten by the next call (see Workspace).

    Returns
    -------
    numpy.ndarray, dtype of ``logits``
        Shape ``()`` for "mean" and "sum" (a 0-d array, not a Python float),
        ``(n,)`` for "none" (``()`` for 1-d logits).

    Notes
    -----
    Per row, with ``o`` the logits and ``y`` the (smoothed) target distribution,
    ``loss = logsumexp(o) * sum(y) - sum(y * o)``, both terms taken relative to the
    row maximum and classes with ``y == 0`` left out, so a logit of ``-inf`` whose
    target is zero gives a finite loss. For probability targets this differs from
    PyTorch, which returns NaN there. Logits are never clamped and no epsilon is
    added inside a logarithm. With ``n == 0``, "mean" gives NaN and "sum" gives 0,
    as in PyTorch. Class weights and ``ignore_index`` are not supported.
    """
    loss, _ = _cross_entropy(
        logits,
        target,
        reduction,
        label_smoothing,
        1.0,
        want_loss=True,
        want_grad=False,
        name="cross_entropy",
        workspace=workspace,
    )
    return loss


def cross_entropy_backward(
    logits: np.ndarray,
    target: np.ndarray | int,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
    grad_output: float | np.ndarray = 1.0,
    *,
    workspace: Workspace | None = None,
) -> np.ndarray:
    """Gradient of :func:`cross_entropy` with respect to ``logits``.

    Parameters
    ----------
    logits : numpy.ndarray, shape (n, k) or (k,), float32 or float64
        Unnormalised class scores; ``k >= 1``.
    target : numpy.ndarray or int
        Either class indices, an integer array of shape ``(n,)`` with values in
        ``[0, k)`` (for 1-d logits: a 0-d integer array or an int), or class
        probabilities, an array of the shape and dtype of ``logits``.
    reduction : {"mean", "sum", "none"}, default "mean"
        "mean" divides the summed loss by ``n`` (for both kinds of target), "sum"
        sums it, "none" returns the loss of every row.
    label_smoothing : float, default 0.0
        ``eps`` in ``[0, 1]``: the target distribution ``y`` becomes
        ``(1 - eps) * y + eps / k``.
    grad_output : float or numpy.ndarray, default 1.0
        Gradient of the final objective with respect to the loss: a scalar (or 0-d
        array), or for ``reduction="none"`` an array of shape ``(n,)`` with the
        dtype of ``logits``. A scalar must be finite in that dtype (float32
        logits refuse ``1e300``).
    workspace : Workspace, optional
        Buffers to reuse instead of allocating; the arrays returned are then views
        of it, overwritten by the next call (see Workspace).

    Returns
    -------
    numpy.ndarray, shape of ``logits``, dtype of ``logits``
        ``(softmax(o) * sum(y) - y) * grad_output``, divided by ``n`` for "mean".

    Notes
    -----
    Where a logit is ``-inf`` and its target is zero the gradient is exactly 0.
    """
    _, grad = _cross_entropy(
        logits,
        target,
        reduction,
        label_smoothing,
        grad_output,
        want_loss=False,
        want_grad=True,
        name="cross_entropy_backward",
        workspace=workspace,
    )
    return grad


def cross_entropy_with_grad(
    logits: np.ndarray,
    target: np.ndarray | int,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
    *,
    workspace: Workspace | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Cross-entropy and its gradient with respect to ``logits`` in one fused pass.

    Parameters
    ----------
    logits : numpy.ndarray, shape (n, k) or (k,), float32 or float64
        Unnormalised class scores; ``k >= 1``.
    target : numpy.ndarray or int
        Either class indices, an integer array of shape ``(n,)`` with values in
        ``[0, k)`` (for 1-d logits: a 0-d integer array or an int), or class
        probabilities, an array of the shape and dtype of ``logits``.
    reduction : {"mean", "sum", "none"}, default "mean"
        "mean" divides the summed loss by ``n`` (for both kinds of target), "sum"
        sums it, "none" returns the loss of every row.
    label_smoothing : float, default 0.0
        ``eps`` in ``[0, 1]``: the target distribution ``y`` becomes
        ``(1 - eps) * y + eps / k``.
    workspace : Workspace, optional
        Buffers to reuse instead of allocating; the arrays returned are then views
        of it, overwritten by the next call (see Workspace).

    Returns
    -------
    loss : numpy.ndarray, dtype of ``logits``
        As :func:`cross_entropy` returns it.
    grad : numpy.ndarray, shape of ``logits``, dtype of ``logits``
        As ``cross_entropy_backward(..., grad_output=1.0)`` returns it.

    Notes
    -----
    Each row's maximum, exponentials and normaliser are computed once and serve
    both the loss and the gradient.
    """
    return _cross_entropy(
        logits,
        target,
        reduction,
        label_smoothing,
        1.0,
        want_loss=True,
        want_grad=True,
        name="cross_entropy_with_grad",
        workspace=workspace,
    )
