"""Normalize: a fixed affine rescaling of the input, ``(x - mean) / std``."""

from __future__ import annotations

from typing import Any

import numpy as np

from fastcnn._validation import check_real
from fastcnn.functional._workspace import take
from fastcnn.layers._common import (
    LayerState,
    check_learning_rate,
    check_output_gradient,
    require_state,
)
from fastcnn.layers.base import Layer, as_layer_input


class Normalize(Layer):
    """Standardise the input with a fixed mean and standard deviation.

    Putting the data set's statistics inside the model (as the first layer) means
    a saved model takes raw data, such as MNIST pixels in [0, 1], and nobody has to
    remember the preprocessing. The layer has no trainable parameters.

    Parameters
    ----------
    mean : float
        Subtracted from every element.
    std : float
        Divides every element after the subtraction; must be > 0.

    Notes
    -----
    Like ``torchvision.transforms.Normalize`` with one channel, applied to a batch
    of any shape. float32 and float64 input keep their dtype, other real dtypes
    become float32.
    """

    def __init__(self, mean: float = 0.0, std: float = 1.0) -> None:
        super().__init__()
        self.mean = check_real(mean, "mean")
        self.std = check_real(std, "std", low=0.0, low_inclusive=False)
        self._state: LayerState | None = None

    def forward(self, input: np.ndarray) -> np.ndarray:
        """Return ``(input - mean) / std``."""
        x = as_layer_input(input, "input", None)
        y = take(self.workspace, "normalize.y", x.shape, x.dtype)
        # Overflow (a float64 mean or scale beyond float32's range included) and
        # NaN pass on silently, as in the kernels.
        with np.errstate(all="ignore"):
            scale = x.dtype.type(1.0 / self.std)
            np.subtract(x, x.dtype.type(self.mean), out=y)
            np.multiply(y, scale, out=y)
        self._state = LayerState(scale, y.shape, y.dtype, unbatched=False)
        return y

    def backward(
        self, output_gradient: np.ndarray, learning_rate: float | None = None
    ) -> np.ndarray:
        """Return ``output_gradient / std`` (``learning_rate`` is unused)."""
        state = require_state(self, self._state)
        check_learning_rate(learning_rate)
        grad = check_output_gradient(output_gradient, state)
        grad_input = take(
            self.workspace, "normalize.grad_input", grad.shape, grad.dtype
        )
        with np.errstate(all="ignore"):
            return np.multiply(grad, state.ctx, out=grad_input)

    def get_config(self) -> dict[str, Any]:
        return {"mean": self.mean, "std": self.std}
