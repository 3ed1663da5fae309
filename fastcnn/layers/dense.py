"""The fully connected (dense) layer."""

from __future__ import annotations

from typing import Any

import numpy as np

from fastcnn._validation import check_int
from fastcnn.functional.dense import linear_backward, linear_forward
from fastcnn.init import RngLike, check_float_dtype, default_parameters
from fastcnn.layers._common import (
    LayerState,
    Parameter,
    ParametrisedLayer,
    check_flag,
    check_input_ndim,
    check_per_sample_shape,
)
from fastcnn.layers.base import as_layer_input


class Dense(ParametrisedLayer):
    """Affine map ``y = x @ weight.T + bias``, as ``torch.nn.Linear``.

    Parameters
    ----------
    in_features : int
        Size of each input sample.
    out_features : int
        Size of each output sample.
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
    weight : numpy.ndarray of shape (out_features, in_features)
    bias : numpy.ndarray of shape (out_features,) or None
        Both are the arrays in ``params``; assigning a new array replaces the
        entry there.

    Notes
    -----
    Input ``(N, in_features)`` or ``(in_features,)`` gives output
    ``(N, out_features)`` or ``(out_features,)``. Unlike ``torch.nn.Linear``,
    input with more than one leading axis is refused (flatten it first).
    ``rng`` is not part of :meth:`get_config`.
    """

    weight = Parameter()
    bias = Parameter(optional=True)

    _functional_backward = linear_backward

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        dtype: Any = np.float32,
        rng: RngLike = None,
    ) -> None:
        super().__init__()
        self.in_features = check_int(in_features, "in_features", minimum=1)
        self.out_features = check_int(out_features, "out_features", minimum=1)
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
            return (self.out_features,)
        return (self.out_features, self.in_features)

    @classmethod
    def parameter_shapes(cls, arguments: dict[str, Any]) -> dict[str, tuple[int, ...]]:
        """Return ``{"weight": (out_features, in_features), "bias": (out_features,)}``.

        See :meth:`Layer.parameter_shapes`; there is no bias entry when
        ``arguments["bias"]`` is false.
        """
        in_features = check_int(arguments["in_features"], "in_features", minimum=1)
        out_features = check_int(arguments["out_features"], "out_features", minimum=1)
        shapes = {"weight": (out_features, in_features)}
        if check_flag(arguments["bias"], "bias"):
            shapes["bias"] = (out_features,)
        return shapes

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        """Return ``(out_features,)`` for a per-sample ``(in_features,)``."""
        (features,) = check_per_sample_shape(input_shape, 1, "(in_features,)")
        if features != self.in_features:
            raise ValueError(
                f"input must have {self.in_features} features (last axis), "
                f"got {features}"
            )
        return (self.out_features,)

    def forward(self, input: np.ndarray) -> np.ndarray:
        """Apply the layer to ``input`` of shape (N, in_features) or (in_features,)."""
        x = as_layer_input(input, "input", self.dtype)
        check_input_ndim(x, (1, 2), "(N, in_features) or unbatched (in_features,)")
        self.output_shape(x.shape[-1:])
        unbatched = x.ndim == 1
        if unbatched:
            x = x[np.newaxis]

        y, ctx = linear_forward(x, self.weight, self.bias, workspace=self.workspace)
        if unbatched:
            y = y[0]
        self._state = LayerState(ctx, y.shape, y.dtype, unbatched)
        return y

    def get_config(self) -> dict[str, Any]:
        """Return the constructor arguments (without ``rng``) as JSON values."""
        return {
            "in_features": self.in_features,
            "out_features": self.out_features,
            "bias": self.bias is not None,
            "dtype": self.dtype.name,
        }
