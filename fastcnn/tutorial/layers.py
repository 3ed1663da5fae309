"""The layers of the tutorial API: one sample at a time, float64, plain SGD.

Each layer keeps the input (or output) of its last ``forward`` call and, in
``backward(output_gradient, learning_rate)``, returns the gradient with respect to
that input after updating its own parameters in place. Dense and convolutional
layers compute with the Numba kernels of :mod:`fastcnn.tutorial._compiled`, which
the compiled :func:`fastcnn.tutorial.train` runs as well; the activations use
NumPy.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from fastcnn._validation import check_int, check_real, kernel_ready
from fastcnn.tutorial import _compiled

__all__ = [
    "Activation",
    "Convolutional",
    "Dense",
    "Layer",
    "Reshape",
    "Sigmoid",
    "Softmax",
    "Tanh",
]


def as_float64(value: Any, name: str) -> np.ndarray:
    """Return ``value`` as a C-contiguous float64 array, or raise TypeError.

    Lists and arrays of any real dtype (bool, integer, float) are accepted, as
    NumPy would accept them in the tutorial's arithmetic.
    """
    array = np.asarray(value)
    if array.dtype.kind not in "biuf":
        raise TypeError(
            f"{name} must be an array of real numbers, got dtype {array.dtype}"
        )
    return kernel_ready(np.ascontiguousarray(array, dtype=np.float64))


def _check_shape(array: np.ndarray, name: str, shape: tuple[int, ...]) -> None:
    if array.shape != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {array.shape}")


def _shape_of(value: Any) -> str:
    if isinstance(value, np.ndarray):
        return f"shape {value.shape}"
    return f"{type(value).__name__}"


def _shape_tuple(value: Any, name: str) -> tuple[int, ...]:
    if not isinstance(value, (tuple, list)):
        raise TypeError(f"{name} must be a tuple of ints, got {value!r}")
    return tuple(check_int(v, name, minimum=1) for v in value)


def _check_learning_rate(learning_rate: Any) -> float:
    return check_real(learning_rate, "learning_rate")


def _flat(param: np.ndarray) -> tuple[np.ndarray, bool]:
    # A flat float64 view of a parameter array for the kernels, and whether the
    # kernels' result must be copied back (the array was replaced by one that
    # has no such view: another dtype, a transposed view, ...).
    if param.dtype == np.float64 and param.flags.c_contiguous and param.flags.writeable:
        return param.reshape(-1), False
    return np.array(param, dtype=np.float64).reshape(-1), True


def _sigmoid(x: np.ndarray) -> np.ndarray:
    # exp of a non-positive number only, so no overflow for large |x|.
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def _sigmoid_prime(x: np.ndarray) -> np.ndarray:
    s = _sigmoid(x)
    return s * (1.0 - s)


def _tanh(x: np.ndarray) -> np.ndarray:
    return np.tanh(x)


def _tanh_prime(x: np.ndarray) -> np.ndarray:
    return 1.0 - np.tanh(x) ** 2


class Layer:
    """Base class of the tutorial's layers.

    Subclasses implement ``forward(input)``, returning the output, and
    ``backward(output_gradient, learning_rate)``, updating their parameters
    with plain SGD and returning the gradient with respect to the input. A
    network is a list of layers; :func:`fastcnn.tutorial.train` runs any
    subclass (user-defined ones through the plain per-layer loop).

    This is the tutorial's own base class, separate from
    :class:`fastcnn.layers.base.Layer`: ``output_shape`` is an attribute here,
    and ``learning_rate`` is required.

    Attributes
    ----------
    input : numpy.ndarray or None
        The input of the last ``forward`` call.
    output : numpy.ndarray or None
        The output of the last ``forward`` call.
    """

    def __init__(self) -> None:
        self.input: np.ndarray | None = None
        self.output: np.ndarray | None = None

    def forward(self, input: Any) -> np.ndarray:
        """Return the layer's output for ``input`` and keep what backward needs."""
        raise NotImplementedError(f"{type(self).__name__} does not define forward")

    def backward(self, output_gradient: Any, learning_rate: float) -> np.ndarray:
        """Update the parameters and return the gradient with respect to the input."""
        raise NotImplementedError(f"{type(self).__name__} does not define backward")

    def _last_input(self) -> np.ndarray:
        if self.input is None:
            raise RuntimeError(f"{type(self).__name__}.backward called before forward")
        return self.input


class Dense(Layer):
    """Fully connected layer on a column vector: ``weights @ x + bias``.

    Parameters
    ----------
    input_size, output_size : int
        Lengths of the input and output columns.

    Attributes
    ----------
    weights : numpy.ndarray of float64, shape (output_size, input_size)
        Drawn with ``np.random.randn`` (the global NumPy generator).
    bias : numpy.ndarray of float64, shape (output_size, 1)
        Drawn with ``np.random.randn`` after the weights.

    Notes
    -----
    The input is one column of shape ``(input_size, 1)``; the output has shape
    ``(output_size, 1)``. A 1-d vector or a block of several columns raises
    ValueError here, where the tutorial's NumPy code would broadcast a 1-d
    vector into an ``(output_size, output_size)`` result.
    """

    def __init__(self, input_size: int, output_size: int) -> None:
        super().__init__()
        input_size = check_int(input_size, "input_size", minimum=1)
        output_size = check_int(output_size, "output_size", minimum=1)
        self.weights = np.random.randn(output_size, input_size)  # noqa: NPY002
        self.bias = np.random.randn(output_size, 1)  # noqa: NPY002

    def _sizes(self) -> tuple[int, int]:
        """Return ``(output_size, input_size)``, checking ``weights`` against ``bias``.

        Raises ValueError when the arrays were replaced by ones that do not fit
        together.
        """
        w, b = self.weights, self.bias
        if not isinstance(w, np.ndarray) or w.ndim != 2:
            raise ValueError(f"weights must be a 2-d array, got {_shape_of(w)}")
        n_out = w.shape[0]
        if not isinstance(b, np.ndarray) or b.shape != (n_out, 1):
            raise ValueError(f"bias must have shape {(n_out, 1)}, got {_shape_of(b)}")
        return w.shape

    def forward(self, input: Any) -> np.ndarray:
        """Return ``weights @ input + bias``.

        Parameters
        ----------
        input : numpy.ndarray, shape (input_size, 1)

        Returns
        -------
        numpy.ndarray of float64, shape (output_size, 1)
        """
        n_out, n_in = self._sizes()
        x = as_float64(input, "input")
        _check_shape(x, "input", (n_in, 1))
        w, _ = _flat(self.weights)
        b, _ = _flat(self.bias)
        out = np.empty((n_out, 1))
        _compiled.dense_forward(
            w, 0, b, 0, x.reshape(-1), 0, out.reshape(-1), 0, n_out, n_in
        )
        self.input = x
        self.output = out
        return out

    def backward(self, output_gradient: Any, learning_rate: float) -> np.ndarray:
        """Take an SGD step and return ``weights.T @ output_gradient``.

        The input gradient uses the weights before the step, ``weights -=
        learning_rate * output_gradient @ input.T`` and ``bias -= learning_rate
        * output_gradient``.

        Parameters
        ----------
        output_gradient : numpy.ndarray, shape (output_size, 1)
        learning_rate : float

        Returns
        -------
        numpy.ndarray of float64, shape (input_size, 1)
        """
        n_out, n_in = self._sizes()
        x = self._last_input()
        g = as_float64(output_gradient, "output_gradient")
        _check_shape(g, "output_gradient", (n_out, 1))
        lr = _check_learning_rate(learning_rate)
        w, copy_w = _flat(self.weights)
        b, copy_b = _flat(self.bias)
        grad_in = np.empty((n_in, 1))
        _compiled.dense_backward(
            w,
            0,
            b,
            0,
            x.reshape(-1),
            0,
            g.reshape(-1),
            0,
            grad_in.reshape(-1),
            0,
            lr,
            n_out,
            n_in,
        )
        if copy_w:
            self.weights[...] = w.reshape(self.weights.shape)
        if copy_b:
            self.bias[...] = b.reshape(self.bias.shape)
        return grad_in


class Convolutional(Layer):
    """Valid cross-correlation with ``depth`` kernels, one bias per output element.

    Parameters
    ----------
    input_shape : tuple of int
        ``(input_depth, height, width)`` of one input sample.
    kernel_size : int
        Side of the square kernels, at most ``min(height, width)``.
    depth : int
        Number of output channels.

    Attributes
    ----------
    kernels : numpy.ndarray of float64, shape (depth, input_depth, k, k)
        Drawn with ``np.random.randn`` first.
    biases : numpy.ndarray of float64, shape (depth, h_out, w_out)
        Drawn with ``np.random.randn`` after the kernels.
    input_shape, output_shape, kernels_shape : tuple of int
    depth, input_depth : int

    Notes
    -----
    ``output[i] = biases[i] + sum_j valid_cross_correlation(input[j], kernels[i, j])``
    with ``h_out = height - kernel_size + 1`` and ``w_out = width - kernel_size + 1``
    (stride 1, no padding).
    """

    def __init__(self, input_shape: tuple[int, int, int], kernel_size: int, depth: int):
        super().__init__()
        if not isinstance(input_shape, (tuple, list)) or len(input_shape) != 3:
            raise ValueError(
                "input_shape must be a tuple (input_depth, height, width), "
                f"got {input_shape!r}"
            )
        input_depth, height, width = (
            check_int(v, "input_shape", minimum=1) for v in input_shape
        )
        kernel_size = check_int(kernel_size, "kernel_size", minimum=1)
        depth = check_int(depth, "depth", minimum=1)
        if kernel_size > min(height, width):
            raise ValueError(
                f"kernel_size must be at most min(height, width) = "
                f"{min(height, width)}, got {kernel_size}"
            )
        self.depth = depth
        self.input_depth = input_depth
        self.input_shape = (input_depth, height, width)
        self.output_shape = (depth, height - kernel_size + 1, width - kernel_size + 1)
        self.kernels_shape = (depth, input_depth, kernel_size, kernel_size)
        self.kernels = np.random.randn(*self.kernels_shape)  # noqa: NPY002
        self.biases = np.random.randn(*self.output_shape)  # noqa: NPY002

    def _sizes(self) -> tuple[int, int, int, int, int]:
        """Return ``(depth, input_depth, height, width, kernel_size)``.

        Raises ValueError when ``kernels`` or ``biases`` were replaced by arrays
        that do not fit ``input_shape`` or each other.
        """
        c, h, w = self.input_shape
        k, b = self.kernels, self.biases
        if (
            not isinstance(k, np.ndarray)
            or k.ndim != 4
            or k.shape[1] != c
            or k.shape[2] != k.shape[3]
            or k.shape[2] > min(h, w)
        ):
            raise ValueError(
                f"kernels must have shape (depth, {c}, k, k) with k <= {min(h, w)}, "
                f"got {_shape_of(k)}"
            )
        depth, _, ks, _ = k.shape
        out_shape = (depth, h - ks + 1, w - ks + 1)
        if not isinstance(b, np.ndarray) or b.shape != out_shape:
            raise ValueError(f"biases must have shape {out_shape}, got {_shape_of(b)}")
        return depth, c, h, w, ks

    def forward(self, input: Any) -> np.ndarray:
        """Return the biases plus the valid cross-correlations, summed over channels.

        Parameters
        ----------
        input : numpy.ndarray, shape (input_depth, height, width)

        Returns
        -------
        numpy.ndarray of float64, shape (depth, h_out, w_out)
        """
        sizes = self._sizes()
        x = as_float64(input, "input")
        _check_shape(x, "input", self.input_shape)
        k, _ = _flat(self.kernels)
        b, _ = _flat(self.biases)
        out = np.empty(self.biases.shape)
        _compiled.conv_forward(x.reshape(-1), 0, k, 0, b, 0, out.reshape(-1), 0, *sizes)
        self.input = x
        self.output = out
        return out

    def backward(self, output_gradient: Any, learning_rate: float) -> np.ndarray:
        """Take an SGD step and return the gradient with respect to the input.

        ``input_gradient[j] = sum_i full_convolution(output_gradient[i],
        kernels[i, j])`` with the kernels before the step; then ``kernels[i, j]
        -= learning_rate * valid_cross_correlation(input[j], output_gradient[i])``
        and ``biases -= learning_rate * output_gradient``.

        Parameters
        ----------
        output_gradient : numpy.ndarray, shape (depth, h_out, w_out)
        learning_rate : float

        Returns
        -------
        numpy.ndarray of float64, shape (input_depth, height, width)
        """
        sizes = self._sizes()
        x = self._last_input()
        g = as_float64(output_gradient, "output_gradient")
        _check_shape(g, "output_gradient", self.biases.shape)
        lr = _check_learning_rate(learning_rate)
        k, copy_k = _flat(self.kernels)
        b, copy_b = _flat(self.biases)
        grad_in = np.empty(self.input_shape)
        _compiled.conv_backward(
            x.reshape(-1),
            0,
            k,
            0,
            b,
            0,
            g.reshape(-1),
            0,
            grad_in.reshape(-1),
            0,
            lr,
            True,
            *sizes,
        )
        if copy_k:
            self.kernels[...] = k.reshape(self.kernels.shape)
        if copy_b:
            self.biases[...] = b.reshape(self.biases.shape)
        return grad_in


class Reshape(Layer):
    """Reshape to ``output_shape`` forward and the gradient back to ``input_shape``.

    Parameters
    ----------
    input_shape, output_shape : tuple of int
        Shapes with the same number of elements.
    """

    def __init__(self, input_shape: tuple[int, ...], output_shape: tuple[int, ...]):
        super().__init__()
        self.input_shape = _shape_tuple(input_shape, "input_shape")
        self.output_shape = _shape_tuple(output_shape, "output_shape")
        if math.prod(self.input_shape) != math.prod(self.output_shape):
            raise ValueError(
                f"output_shape {self.output_shape} must have as many elements as "
                f"input_shape {self.input_shape}"
            )

    def forward(self, input: Any) -> np.ndarray:
        """Return ``input`` reshaped to ``output_shape``."""
        x = as_float64(input, "input")
        if x.size != math.prod(self.output_shape):
            raise ValueError(
                f"input must have {math.prod(self.output_shape)} elements to be "
                f"reshaped to {self.output_shape}, got shape {x.shape}"
            )
        self.input = x
        self.output = x.reshape(self.output_shape)
        return self.output

    def backward(self, output_gradient: Any, learning_rate: float) -> np.ndarray:
        """Return ``output_gradient`` reshaped to ``input_shape``."""
        g = as_float64(output_gradient, "output_gradient")
        _check_shape(g, "output_gradient", self.output_shape)
        return g.reshape(self.input_shape)


class Activation(Layer):
    """An elementwise function with its derivative.

    Parameters
    ----------
    activation : callable
        Maps an array to an array of the same shape.
    activation_prime : callable
        The derivative of ``activation``, elementwise.

    Notes
    -----
    ``backward`` returns ``output_gradient * activation_prime(input)``; the
    learning rate is unused.
    """

    def __init__(
        self,
        activation: Callable[[np.ndarray], np.ndarray],
        activation_prime: Callable[[np.ndarray], np.ndarray],
    ) -> None:
        super().__init__()
        if not callable(activation):
            raise TypeError(f"activation must be callable, got {activation!r}")
        if not callable(activation_prime):
            raise TypeError(
                f"activation_prime must be callable, got {activation_prime!r}"
            )
        self.activation = activation
        self.activation_prime = activation_prime

    def forward(self, input: Any) -> np.ndarray:
        """Return ``activation(input)``, keeping ``input``."""
        self.input = as_float64(input, "input")
        self.output = self.activation(self.input)
        return self.output

    def backward(self, output_gradient: Any, learning_rate: float) -> np.ndarray:
        """Return ``output_gradient * activation_prime(input)``."""
        x = self._last_input()
        g = as_float64(output_gradient, "output_gradient")
        _check_shape(g, "output_gradient", x.shape)
        return g * self.activation_prime(x)


class Tanh(Activation):
    """Hyperbolic tangent, derivative ``1 - tanh(x) ** 2``."""

    def __init__(self) -> None:
        super().__init__(_tanh, _tanh_prime)


class Sigmoid(Activation):
    """Logistic function ``1 / (1 + exp(-x))``, derivative ``s * (1 - s)``.

    Computed without overflow: ``exp`` is only taken of ``-|x|``.
    """

    def __init__(self) -> None:
        super().__init__(_sigmoid, _sigmoid_prime)


class Softmax(Layer):
    """Softmax over all elements of the input (one column).

    Notes
    -----
    ``s = exp(x - max(x)) / sum(exp(x - max(x)))``; the maximum is subtracted
    for stability and does not change the result. ``backward`` returns the
    Jacobian-vector product ``s * (g - sum(s * g))``, the learning rate is
    unused.
    """

    def forward(self, input: Any) -> np.ndarray:
        """Return the softmax of ``input``, same shape."""
        x = as_float64(input, "input")
        if x.size == 0:
            raise ValueError(
                f"input must have at least one element, got shape {x.shape}"
            )
        e = np.exp(x - x.max())
        self.input = x
        self.output = e / e.sum()
        return self.output

    def backward(self, output_gradient: Any, learning_rate: float) -> np.ndarray:
        """Return ``s * (output_gradient - sum(s * output_gradient))``."""
        if self.output is None:
            raise RuntimeError("Softmax.backward called before forward")
        s = self.output
        g = as_float64(output_gradient, "output_gradient")
        _check_shape(g, "output_gradient", s.shape)
        return s * (g - np.sum(s * g))
