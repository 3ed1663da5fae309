"""Element-wise activation layers: ReLU, LeakyReLU, Sigmoid and Tanh.

They take input of any shape (batched or not), keep float32/float64 input in its
dtype and convert other real dtypes to float32. Each keeps one array for its
backward pass: the input (ReLU, LeakyReLU) or the output (Sigmoid, Tanh).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from fastcnn._validation import check_real
from fastcnn.functional.activations import (
    leaky_relu,
    leaky_relu_backward,
    relu,
    relu_backward,
    sigmoid,
    sigmoid_backward,
    tanh,
    tanh_backward,
)
from fastcnn.layers._common import (
    LayerState,
    check_learning_rate,
    check_output_gradient,
    require_state,
)
from fastcnn.layers.base import Layer, as_layer_input


class _Activation(Layer):
    """Forward/backward plumbing of an element-wise activation.

    ``_keeps_output`` says whether backward needs the output (else the input).
    """

    _keeps_output = False

    def __init__(self) -> None:
        super().__init__()
        self._state: LayerState | None = None

    def _apply(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _derive(self, grad: np.ndarray, saved: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def forward(self, input: np.ndarray) -> np.ndarray:
        """Apply the activation element-wise."""
        x = as_layer_input(input, "input", None)
        y = self._apply(x)
        saved = y if self._keeps_output else x
        self._state = LayerState(saved, y.shape, y.dtype, unbatched=False)
        return y

    def backward(
        self, output_gradient: np.ndarray, learning_rate: float | None = None
    ) -> np.ndarray:
        """Return the input gradient (``learning_rate`` is accepted and unused)."""
        state = require_state(self, self._state)
        check_learning_rate(learning_rate)
        grad = check_output_gradient(output_gradient, state)
        return self._derive(grad, state.ctx)


class ReLU(_Activation):
    """Rectified linear unit, ``max(x, 0)``; NaN stays NaN.

    Notes
    -----
    The output has the input's shape. The gradient at ``x == 0`` is 0, as in
    PyTorch.
    """

    def _apply(self, x: np.ndarray) -> np.ndarray:
        return relu(x, workspace=self.workspace)

    def _adopt_output(self, y: np.ndarray) -> None:
        """Take ``y = relu(x)``, computed elsewhere, as this layer's last output.

        ``Sequential`` has a convolution apply the ReLU in its own last pass and
        hands the result here. The backward pass then uses ``y`` where it would
        use ``x``: ``y <= 0`` exactly where ``x <= 0`` (NaN in both or neither),
        so the gradient is the same.
        """
        self._state = LayerState(y, y.shape, y.dtype, unbatched=False)

    def _derive(self, grad: np.ndarray, saved: np.ndarray) -> np.ndarray:
        return relu_backward(grad, saved, workspace=self.workspace)


class LeakyReLU(_Activation):
    """Leaky rectified linear unit, ``x if x > 0 else negative_slope * x``.

    Parameters
    ----------
    negative_slope : float, default 0.01
        Slope for negative input.

    Notes
    -----
    The output has the input's shape.
    """

    def __init__(self, negative_slope: float = 0.01) -> None:
        super().__init__()
        self.negative_slope = check_real(negative_slope, "negative_slope")

    def _apply(self, x: np.ndarray) -> np.ndarray:
        return leaky_relu(x, self.negative_slope, workspace=self.workspace)

    def _derive(self, grad: np.ndarray, saved: np.ndarray) -> np.ndarray:
        return leaky_relu_backward(
            grad, saved, self.negative_slope, workspace=self.workspace
        )

    def get_config(self) -> dict[str, Any]:
        """Return the constructor arguments as JSON values."""
        return {"negative_slope": self.negative_slope}


class Sigmoid(_Activation):
    """Logistic function ``1 / (1 + exp(-x))``, stable for large ``|x|``.

    Notes
    -----
    The output has the input's shape; backward uses the output,
    ``grad * y * (1 - y)``.
    """

    _keeps_output = True

    def _apply(self, x: np.ndarray) -> np.ndarray:
        return sigmoid(x, workspace=self.workspace)

    def _derive(self, grad: np.ndarray, saved: np.ndarray) -> np.ndarray:
        return sigmoid_backward(grad, saved, workspace=self.workspace)


class Tanh(_Activation):
    """Hyperbolic tangent.

    Notes
    -----
    The output has the input's shape; backward uses the output,
    ``grad * (1 - y**2)``.
    """

    _keeps_output = True

    def _apply(self, x: np.ndarray) -> np.ndarray:
        return tanh(x, workspace=self.workspace)

    def _derive(self, grad: np.ndarray, saved: np.ndarray) -> np.ndarray:
        return tanh_backward(grad, saved, workspace=self.workspace)
