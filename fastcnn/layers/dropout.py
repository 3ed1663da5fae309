"""Inverted dropout."""

from __future__ import annotations

from typing import Any

import numpy as np

from fastcnn._validation import check_real
from fastcnn.init import RngLike, as_generator
from fastcnn.layers._common import (
    LayerState,
    check_learning_rate,
    check_output_gradient,
    require_state,
)
from fastcnn.layers.base import Layer, as_layer_input


class Dropout(Layer):
    """Zero each element with probability ``p`` in training; identity in eval.

    Parameters
    ----------
    p : float, default 0.5
        Probability of zeroing an element, in ``[0, 1)``.
    rng : int, numpy.random.Generator or None
        Seed or generator for the masks; each training-mode forward draws a new
        mask from it, so a seeded layer repeats the same sequence of masks.

    Notes
    -----
    Inverted dropout: in training mode the kept elements are scaled by
    ``1/(1-p)`` so the expected output equals the input; in evaluation mode
    (``layer.eval()``) the input is returned unchanged. The output has the
    input's shape and dtype (float32/float64 kept, other real dtypes become
    float32). ``rng`` is not part of :meth:`get_config`.
    """

    def __init__(self, p: float = 0.5, rng: RngLike = None) -> None:
        super().__init__()
        self.p = check_real(p, "p", low=0.0, high=1.0, high_inclusive=False)
        self._rng = as_generator(rng)
        self._state: LayerState | None = None

    def forward(self, input: np.ndarray) -> np.ndarray:
        """Apply a fresh mask in training mode; return the input in eval mode."""
        x = as_layer_input(input, "input", None)
        mask = None
        if self.training and self.p > 0.0:
            keep = self._rng.random(x.shape, dtype=x.dtype) >= x.dtype.type(self.p)
            # Overflow and NaN pass on silently, as in the kernels.
            with np.errstate(all="ignore"):
                mask = keep.astype(x.dtype) * x.dtype.type(1.0 / (1.0 - self.p))
                y = x * mask
        else:
            y = x
        self._state = LayerState(mask, y.shape, y.dtype, unbatched=False)
        return y

    def backward(
        self, output_gradient: np.ndarray, learning_rate: float | None = None
    ) -> np.ndarray:
        """Return the gradient through the last forward's mask (or unchanged)."""
        state = require_state(self, self._state)
        check_learning_rate(learning_rate)
        grad = check_output_gradient(output_gradient, state)
        if state.ctx is None:
            return grad
        with np.errstate(all="ignore"):
            return grad * state.ctx

    def get_config(self) -> dict[str, Any]:
        """Return the constructor arguments (without ``rng``) as JSON values."""
        return {"p": self.p}
