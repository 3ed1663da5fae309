"""The 2-d convolution layer."""

from __future__ import annotations

from typing import Any

import numpy as np

from fastcnn._validation import check_int, check_pair
from fastcnn.functional.conv import conv2d_backward, conv2d_relu_forward, output_size
from fastcnn.init import RngLike, check_float_dtype, default_parameters
from fastcnn.layers._common import (
    LayerState,
    Parameter,
    ParametrisedLayer,
    check_flag,
    check_input_ndim,
    check_per_sample_shape,
    compact_pair,
)
from fastcnn.layers.base import as_layer_input

_LAYOUT = "(N, C, H, W) or unbatched (C, H, W)"


class Conv2D(ParametrisedLayer):
    """2-d convolution (cross-correlation) over NCHW input, as ``torch.nn.Conv2d``.

    Parameters
    ----------
    in_channels : int
        Channels of the input, ``C_in``.
    out_channels : int
        Channels of the output, ``C_out``.
    kernel_size : int or (int, int)
        Window size ``(kH, kW)``.
    stride : int or (int, int), default 1
        Step between windows, ``>= 1``.
    padding : int, (int, int), "valid" or "same", default 0
        Zeros added on both sides of each spatial axis. ``"valid"`` is 0;
        ``"same"`` keeps the spatial size (stride 1 only; with an even dilated
        kernel the extra zero goes on the bottom/right, as PyTorch).
    dilation : int or (int, int), default 1
        Spacing between kernel elements (1 means none).
    groups : int, default 1
        Number of blocked connections; must divide both channel counts.
    bias : bool, default True
        Whether to add a learned bias.
    dtype : {float32, float64} or str, default float32
        The dtype of the parameters, the computation and the output. Input of
        another dtype (float64 into a float32 layer too) is converted to it.
    rng : int, numpy.random.Generator or None
        Seed or generator for the initial parameters (PyTorch's default scheme,
        see :func:`fastcnn.init.default_parameters`).

    Attributes
    ----------
    weight : numpy.ndarray of shape (C_out, C_in/groups, kH, kW)
    bias : numpy.ndarray of shape (C_out,) or None
        Both are the arrays in ``params``; assigning a new array replaces the
        entry there.

    Notes
    -----
    Input ``(N, C_in, H, W)`` or ``(C_in, H, W)`` gives output
    ``(N, C_out, H_out, W_out)`` or ``(C_out, H_out, W_out)`` with
    ``H_out = floor((H + 2*pH - dH*(kH-1) - 1)/sH) + 1`` (and ``W_out`` alike).
    ``rng`` is not part of :meth:`get_config`.
    """

    weight = Parameter()
    bias = Parameter(optional=True)

    _functional_backward = conv2d_backward

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] | str = 0,
        dilation: int | tuple[int, int] = 1,
        groups: int = 1,
        bias: bool = True,
        dtype: Any = np.float32,
        rng: RngLike = None,
    ) -> None:
        super().__init__()
        self.in_channels = check_int(in_channels, "in_channels", minimum=1)
        self.out_channels = check_int(out_channels, "out_channels", minimum=1)
        self.kernel_size = check_pair(kernel_size, "kernel_size", minimum=1)
        self.stride = check_pair(stride, "stride", minimum=1)
        self.dilation = check_pair(dilation, "dilation", minimum=1)
        self.groups = check_int(groups, "groups", minimum=1)
        if isinstance(padding, str):
            if padding not in ("valid", "same"):
                raise ValueError(
                    f"padding must be an int, a pair of ints, 'valid' or 'same', "
                    f"got {padding!r}"
                )
            if padding == "same" and self.stride != (1, 1):
                raise ValueError(
                    f"padding='same' needs stride 1, got stride={self.stride}"
                )
            self.padding: tuple[int, int] | str = padding
        else:
            self.padding = check_pair(padding, "padding", minimum=0)
        for name, channels in (
            ("in_channels", self.in_channels),
            ("out_channels", self.out_channels),
        ):
            if channels % self.groups:
                raise ValueError(
                    f"{name} must be divisible by groups={self.groups}, got {channels}"
                )
        has_bias = check_flag(bias, "bias")
        self.dtype = check_float_dtype(dtype)

        self.weight, self.bias = default_parameters(
            self._parameter_shape("weight"),
            bias=has_bias,
            dtype=self.dtype,
            rng=rng,
        )
        self._state: LayerState | None = None

    def _parameter_shape(self, name: str) -> tuple[int, ...]:
        if name == "bias":
            return (self.out_channels,)
        kh, kw = self.kernel_size
        return (self.out_channels, self.in_channels // self.groups, kh, kw)

    @classmethod
    def parameter_shapes(cls, arguments: dict[str, Any]) -> dict[str, tuple[int, ...]]:
        """Return ``{"weight": (C_out, C_in/groups, kH, kW), "bias": (C_out,)}``.

        See :meth:`Layer.parameter_shapes`; there is no bias entry when
        ``arguments["bias"]`` is false.
        """
        in_channels = check_int(arguments["in_channels"], "in_channels", minimum=1)
        out_channels = check_int(arguments["out_channels"], "out_channels", minimum=1)
        kh, kw = check_pair(arguments["kernel_size"], "kernel_size", minimum=1)
        groups = check_int(arguments["groups"], "groups", minimum=1)
        if in_channels % groups:
            raise ValueError(
                f"in_channels must be divisible by groups={groups}, got {in_channels}"
            )
        shapes = {"weight": (out_channels, in_channels // groups, kh, kw)}
        if check_flag(arguments["bias"], "bias"):
            shapes["bias"] = (out_channels,)
        return shapes

    def _spatial_output(self, h: int, w: int) -> tuple[int, int]:
        if self.padding == "same":
            return h, w
        padding = (0, 0) if self.padding == "valid" else self.padding
        sizes = tuple(
            output_size(size, k, s, p, d)
            for size, k, s, p, d in zip(
                (h, w),
                self.kernel_size,
                self.stride,
                padding,
                self.dilation,
                strict=True,
            )
        )
        if min(sizes) < 1:
            raise ValueError(
                f"input of spatial size {(h, w)} is too small for kernel_size="
                f"{self.kernel_size} with dilation={self.dilation} and "
                f"padding={self.padding}"
            )
        return sizes

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        """Return ``(C_out, H_out, W_out)`` for a per-sample ``(C_in, H, W)``."""
        c, h, w = check_per_sample_shape(input_shape, 3, "(C, H, W)")
        if c != self.in_channels:
            raise ValueError(
                f"input must have {self.in_channels} channels (axis -3), got {c}"
            )
        return (self.out_channels, *self._spatial_output(h, w))

    def forward(self, input: np.ndarray) -> np.ndarray:
        """Convolve ``input`` of shape (N, C_in, H, W) or (C_in, H, W)."""
        return self._forward(input, relu=False)

    def _forward(self, input: np.ndarray, *, relu: bool) -> np.ndarray:
        """:meth:`forward`; with ``relu`` the output is passed through a ReLU.

        The state kept for :meth:`backward` is the convolution's alone: backward
        then takes the gradient with respect to the output before the ReLU.
        """
        x = as_layer_input(input, "input", self.dtype)
        check_input_ndim(x, (3, 4), _LAYOUT)
        self.output_shape(x.shape[-3:])
        unbatched = x.ndim == 3
        if unbatched:
            x = x[np.newaxis]

        y, ctx = conv2d_relu_forward(
            x,
            self.weight,
            self.bias,
            self.stride,
            self.padding,
            self.dilation,
            self.groups,
            self.workspace,
            relu=relu,
        )
        if unbatched:
            y = y[0]
        self._state = LayerState(ctx, y.shape, y.dtype, unbatched)
        return y

    def get_config(self) -> dict[str, Any]:
        """Return the constructor arguments (without ``rng``) as JSON values."""
        padding = self.padding
        return {
            "in_channels": self.in_channels,
            "out_channels": self.out_channels,
            "kernel_size": compact_pair(self.kernel_size),
            "stride": compact_pair(self.stride),
            "padding": padding if isinstance(padding, str) else compact_pair(padding),
            "dilation": compact_pair(self.dilation),
            "groups": self.groups,
            "bias": self.bias is not None,
            "dtype": self.dtype.name,
        }
