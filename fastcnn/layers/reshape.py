"""Layers that change the per-sample shape: Flatten and Reshape.

Both treat the first axis as the batch axis and keep it, as ``torch.nn.Flatten``
does: an unbatched sample ``(C, H, W)`` is read as a batch of ``C`` samples, so
give a single sample a batch axis first (``x[np.newaxis]``). Outputs are views of
the input where NumPy can make them; backward reshapes the gradient back.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from numbers import Integral
from typing import Any

import numpy as np

from fastcnn.layers._common import (
    LayerState,
    check_learning_rate,
    check_output_gradient,
    require_state,
)
from fastcnn.layers.base import Layer, as_layer_input


def _check_shape_arg(value: Any, name: str) -> tuple[int, ...]:
    if not isinstance(value, (tuple, list)):
        raise TypeError(f"{name} must be a tuple of ints, got {type(value).__name__}")
    return tuple(int(size) for size in value)


def _check_batched(x: np.ndarray) -> None:
    if x.ndim < 1:
        raise ValueError(
            f"input must have a batch axis (at least 1-d), got shape {x.shape}"
        )


class _ReshapeBase(Layer):
    """Forward/backward plumbing shared by Flatten and Reshape."""

    def __init__(self) -> None:
        super().__init__()
        self._state: LayerState | None = None

    def forward(self, input: np.ndarray) -> np.ndarray:
        """Reshape every sample of ``input`` (first axis: batch)."""
        x = as_layer_input(input, "input", None)
        _check_batched(x)
        sample_shape = self.output_shape(x.shape[1:])
        y = x.reshape((x.shape[0], *sample_shape))
        self._state = LayerState(x.shape, y.shape, y.dtype, unbatched=False)
        return y

    def backward(
        self, output_gradient: np.ndarray, learning_rate: float | None = None
    ) -> np.ndarray:
        """Return the gradient reshaped to the input's shape."""
        state = require_state(self, self._state)
        check_learning_rate(learning_rate)
        grad = check_output_gradient(output_gradient, state)
        return grad.reshape(state.ctx)


class Flatten(_ReshapeBase):
    """Flatten every sample to one axis, keeping the batch axis.

    Notes
    -----
    Input ``(N, d1, ..., dk)`` gives output ``(N, d1*...*dk)``; 1-d input
    ``(N,)`` gives ``(N, 1)``. The first axis is always the batch axis (see the
    module docstring for unbatched input).
    """

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        """Return ``(prod(input_shape),)`` for a per-sample ``input_shape``."""
        return (math.prod(_check_shape_arg(input_shape, "input_shape")),)


class Reshape(_ReshapeBase):
    """Reshape every sample to ``shape``, keeping the batch axis.

    Parameters
    ----------
    *dims : int
        The per-sample target shape, e.g. ``Reshape(1, 28, 28)``; one entry may
        be -1 (inferred from the sample size).
    shape : tuple of int, optional
        The same given as one tuple (``Reshape(shape=(1, 28, 28))``, the form
        :meth:`get_config` returns); exclusive with ``dims``.

    Notes
    -----
    Input ``(N, *sample)`` gives output ``(N, *shape)``; ``prod(sample)`` must
    equal the product of ``shape`` (after inferring -1). The first axis is
    always the batch axis (see the module docstring for unbatched input).
    """

    def __init__(self, *dims: int, shape: Sequence[int] | None = None) -> None:
        super().__init__()
        if shape is not None and dims:
            raise TypeError(
                "give the target shape either as positional ints or as shape=, "
                f"got both {dims!r} and shape={shape!r}"
            )
        if shape is None:
            if len(dims) == 1 and isinstance(dims[0], (tuple, list)):
                shape = dims[0]
            else:
                shape = dims
        if not isinstance(shape, (tuple, list)) or not shape:
            raise ValueError(f"shape must be a non-empty tuple of ints, got {shape!r}")
        for size in shape:
            if isinstance(size, bool) or not isinstance(size, Integral):
                raise TypeError(f"shape must hold ints, got {tuple(shape)!r}")
            if size < 1 and size != -1:
                raise ValueError(
                    f"shape must hold sizes >= 1 and at most one -1, "
                    f"got {tuple(shape)!r}"
                )
        if sum(size == -1 for size in shape) > 1:
            raise ValueError(f"shape may hold at most one -1, got {tuple(shape)!r}")
        self.shape = tuple(int(size) for size in shape)

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        """Return the target shape for a per-sample ``input_shape``, -1 inferred."""
        size = math.prod(_check_shape_arg(input_shape, "input_shape"))
        known = math.prod(s for s in self.shape if s != -1)
        if -1 in self.shape:
            if size % known:
                raise ValueError(
                    f"input samples of shape {tuple(input_shape)} (size {size}) cannot "
                    f"be reshaped to {self.shape}"
                )
            return tuple(size // known if s == -1 else s for s in self.shape)
        if size != known:
            raise ValueError(
                f"input samples of shape {tuple(input_shape)} (size {size}) cannot be "
                f"reshaped to {self.shape} (size {known})"
            )
        return self.shape

    def get_config(self) -> dict[str, Any]:
        """Return the constructor arguments as JSON values."""
        return {"shape": list(self.shape)}
