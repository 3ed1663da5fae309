"""2-d max and average pooling layers."""

from __future__ import annotations

from typing import Any

import numpy as np

from fastcnn._validation import check_pair
from fastcnn.functional.pooling import (
    avg_pool2d_backward,
    avg_pool2d_forward,
    max_pool2d_backward,
    max_pool2d_forward,
    output_size,
)
from fastcnn.layers._common import (
    LayerState,
    check_flag,
    check_input_ndim,
    check_learning_rate,
    check_output_gradient,
    check_per_sample_shape,
    compact_pair,
    require_state,
)
from fastcnn.layers.base import Layer, as_layer_input

_LAYOUT = "(N, C, H, W) or unbatched (C, H, W)"


class _Pool2D(Layer):
    """Window arguments, shape logic and the forward/backward plumbing of pooling."""

    def __init__(
        self,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] | None,
        padding: int | tuple[int, int],
        ceil_mode: bool,
    ) -> None:
        super().__init__()
        self.kernel_size = check_pair(kernel_size, "kernel_size", minimum=1)
        if stride is None:
            self.stride = self.kernel_size
        else:
            self.stride = check_pair(stride, "stride", minimum=1)
        self.padding = check_pair(padding, "padding", minimum=0)
        for p, k in zip(self.padding, self.kernel_size, strict=True):
            if 2 * p > k:
                raise ValueError(
                    f"padding must be at most half of kernel_size={self.kernel_size}, "
                    f"got {self.padding}"
                )
        self.ceil_mode = check_flag(ceil_mode, "ceil_mode")
        self._state: LayerState | None = None

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        """Return ``(C, H_out, W_out)`` for a per-sample ``(C, H, W)``."""
        c, h, w = check_per_sample_shape(input_shape, 3, "(C, H, W)")
        sizes = tuple(
            output_size(size, k, s, p, self.ceil_mode)
            for size, k, s, p in zip(
                (h, w), self.kernel_size, self.stride, self.padding, strict=True
            )
        )
        if min(sizes) < 1:
            raise ValueError(
                f"input of spatial size {(h, w)} is too small for kernel_size="
                f"{self.kernel_size} with padding={self.padding}"
            )
        return (c, *sizes)

    def _pool_forward(self, x: np.ndarray) -> tuple[np.ndarray, Any]:
        raise NotImplementedError

    def _pool_backward(self, grad: np.ndarray, ctx: Any) -> np.ndarray:
        raise NotImplementedError

    def forward(self, input: np.ndarray) -> np.ndarray:
        """Pool ``input`` of shape (N, C, H, W) or (C, H, W)."""
        x = as_layer_input(input, "input", None)
        check_input_ndim(x, (3, 4), _LAYOUT)
        self.output_shape(x.shape[-3:])
        unbatched = x.ndim == 3
        if unbatched:
            x = x[np.newaxis]

        y, ctx = self._pool_forward(x)
        if unbatched:
            y = y[0]
        self._state = LayerState(ctx, y.shape, y.dtype, unbatched)
        return y

    def backward(
        self, output_gradient: np.ndarray, learning_rate: float | None = None
    ) -> np.ndarray:
        """Return the input gradient (``learning_rate`` is accepted and unused)."""
        state = require_state(self, self._state)
        check_learning_rate(learning_rate)
        grad = check_output_gradient(output_gradient, state)
        grad_input = self._pool_backward(grad, state.ctx)
        return grad_input[0] if state.unbatched else grad_input

    def get_config(self) -> dict[str, Any]:
        """Return the constructor arguments as JSON values."""
        return {
            "kernel_size": compact_pair(self.kernel_size),
            "stride": compact_pair(self.stride),
            "padding": compact_pair(self.padding),
            "ceil_mode": self.ceil_mode,
        }


class MaxPool2D(_Pool2D):
    """2-d max pooling over NCHW input, as ``torch.nn.MaxPool2d``.

    Parameters
    ----------
    kernel_size : int or (int, int)
        Window size ``(kH, kW)``.
    stride : int, (int, int) or None, default None
        Step between windows; None means ``kernel_size``.
    padding : int or (int, int), default 0
        Implicit ``-inf`` border on both sides, at most half the kernel size.
    ceil_mode : bool, default False
        Round the output size up instead of down (the last window must still
        start inside the input or the left padding).

    Notes
    -----
    Input ``(N, C, H, W)`` or ``(C, H, W)`` gives output of the same layout with
    ``H_out = floor_or_ceil((H + 2*pH - kH)/sH) + 1`` (and ``W_out`` alike).
    The gradient of a window goes to its first maximum in row-major order.
    Input keeps float32/float64; other real dtypes become float32.
    """

    def __init__(
        self,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] | None = None,
        padding: int | tuple[int, int] = 0,
        ceil_mode: bool = False,
    ) -> None:
        super().__init__(kernel_size, stride, padding, ceil_mode)

    def _pool_forward(self, x: np.ndarray) -> tuple[np.ndarray, Any]:
        return max_pool2d_forward(
            x,
            self.kernel_size,
            self.stride,
            self.padding,
            self.ceil_mode,
            workspace=self.workspace,
        )

    def _pool_backward(self, grad: np.ndarray, ctx: Any) -> np.ndarray:
        return max_pool2d_backward(grad, ctx)


class AvgPool2D(_Pool2D):
    """2-d average pooling over NCHW input, as ``torch.nn.AvgPool2d``.

    Parameters
    ----------
    kernel_size : int or (int, int)
        Window size ``(kH, kW)``.
    stride : int, (int, int) or None, default None
        Step between windows; None means ``kernel_size``.
    padding : int or (int, int), default 0
        Implicit zero border on both sides, at most half the kernel size.
    ceil_mode : bool, default False
        Round the output size up instead of down (the last window must still
        start inside the input or the left padding).
    count_include_pad : bool, default True
        Whether padded zeros count in the divisor of each window.

    Notes
    -----
    Input ``(N, C, H, W)`` or ``(C, H, W)`` gives output of the same layout with
    ``H_out = floor_or_ceil((H + 2*pH - kH)/sH) + 1`` (and ``W_out`` alike).
    Input keeps float32/float64; other real dtypes become float32.
    """

    def __init__(
        self,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] | None = None,
        padding: int | tuple[int, int] = 0,
        ceil_mode: bool = False,
        count_include_pad: bool = True,
    ) -> None:
        super().__init__(kernel_size, stride, padding, ceil_mode)
        self.count_include_pad = check_flag(count_include_pad, "count_include_pad")

    def _pool_forward(self, x: np.ndarray) -> tuple[np.ndarray, Any]:
        return avg_pool2d_forward(
            x,
            self.kernel_size,
            self.stride,
            self.padding,
            self.ceil_mode,
            self.count_include_pad,
            workspace=self.workspace,
        )

    def _pool_backward(self, grad: np.ndarray, ctx: Any) -> np.ndarray:
        return avg_pool2d_backward(grad, ctx)

    def get_config(self) -> dict[str, Any]:
        """Return the constructor arguments as JSON values."""
        return {**super().get_config(), "count_include_pad": self.count_include_pad}
