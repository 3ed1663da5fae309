"""``train`` and ``predict`` for a network given as a list of tutorial layers.

When every layer is one of the built-in types (``Dense``, ``Convolutional``,
``Reshape``, ``Tanh``, ``Sigmoid``, ``Softmax``) and the loss and its gradient are
the built-in ones, :func:`train` packs the network into a program for the Numba
kernel :func:`fastcnn.tutorial._compiled.train_epochs` and runs whole epochs in
it; the parameters are copied back into the layers' own arrays afterwards.
Anything else (a user-defined layer, activation or loss, a subclass of a
built-in layer) is trained by the plain per-layer loop, with the same results.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from fastcnn._validation import check_int, check_real, kernel_ready
from fastcnn.tutorial import _compiled
from fastcnn.tutorial import layers as _layers
from fastcnn.tutorial.layers import (
    Convolutional,
    Dense,
    Layer,
    Reshape,
    Sigmoid,
    Softmax,
    Tanh,
)
from fastcnn.tutorial.losses import (
    binary_cross_entropy,
    binary_cross_entropy_prime,
    mse,
    mse_prime,
    targets_fit,
)

__all__ = ["predict", "train"]

_LOSS_CODES = {mse: _compiled.MSE, binary_cross_entropy: _compiled.BINARY_CROSS_ENTROPY}
_GRADIENT_CODES = {
    mse_prime: _compiled.MSE,
    binary_cross_entropy_prime: _compiled.BINARY_CROSS_ENTROPY,
}

# A compiled call trains epochs for about this long at most, so that verbose
# progress appears and Ctrl-C is answered while training.
_CALL_SECONDS = 0.25


def predict(network: Sequence[Layer], input: Any) -> Any:
    """Forward ``input`` through every layer of ``network``, in order.

    Parameters
    ----------
    network : sequence of Layer
    input : numpy.ndarray
        One sample, shaped as the first layer expects (for ``Dense``, a column
        ``(input_size, 1)``).

    Returns
    -------
    numpy.ndarray
        The last layer's output.
    """
    output = input
    for layer in _layer_list(network):
        output = layer.forward(output)
    return output


def _layer_list(network: Any) -> list[Any]:
    """Return ``network`` as a list, or raise TypeError naming ``network``."""
    is_layer = callable(getattr(network, "forward", None))
    if not is_layer and not isinstance(network, (str, bytes)):
        try:
            return list(network)
        except TypeError:
            pass
    hint = "; put a single layer in a list: [layer]" if is_layer else ""
    raise TypeError(
        f"network must be a list of layers, got {type(network).__name__}{hint}"
    )


def train(
    network: Sequence[Layer],
    loss: Callable[[Any, Any], Any],
    loss_prime: Callable[[Any, Any], Any],
    x_train: Any,
    y_train: Any,
    epochs: int = 1000,
    learning_rate: float = 0.01,
    verbose: bool = True,
) -> None:
    """Train ``network`` with plain SGD, one sample at a time, in order.

    For each epoch and each sample ``(x, y)``: forward ``x``, add ``loss(y,
    output)`` to the epoch's error, then back-propagate ``loss_prime(y,
    output)`` through the layers in reverse, each taking its SGD step.

    Parameters
    ----------
    network : sequence of Layer
        The layers; their parameters are updated in place.
    loss, loss_prime : callable
        ``loss(y_true, y_pred)`` and its gradient with respect to ``y_pred``.
    x_train : numpy.ndarray, shape (n_samples, ...)
        Inputs, or a sequence of ``n_samples`` arrays.
    y_train : numpy.ndarray, shape (n_samples, ...)
        Targets, as many as inputs.
    epochs : int, default 1000
    learning_rate : float, default 0.01
    verbose : bool, default True
        Print ``"{epoch}/{epochs}, error={error}"`` after every epoch, ``error``
        being the loss averaged over the samples. This is the one place in
        fastcnn that prints: the tutorial's documented behaviour.

    Notes
    -----
    Networks made of the built-in layers with the built-in losses run whole
    epochs in one compiled Numba function (see the module docstring); the
    results agree with the per-layer loop to float64 round-off.
    """
    epochs = check_int(epochs, "epochs", minimum=0)
    learning_rate = check_real(learning_rate, "learning_rate")
    layers = _layer_list(network)
    if not layers:
        raise ValueError("network must hold at least one layer, got none")
    for i, layer in enumerate(layers):
        if not (
            callable(getattr(layer, "forward", None))
            and callable(getattr(layer, "backward", None))
        ):
            raise TypeError(
                f"network[{i}] must be a layer with forward and backward methods, "
                f"got {type(layer).__name__}"
            )
    for name, function in (("loss", loss), ("loss_prime", loss_prime)):
        if not callable(function):
            raise TypeError(f"{name} must be a function, got {type(function).__name__}")
    n_samples = _sample_count(x_train, "x_train")
    if _sample_count(y_train, "y_train") != n_samples:
        raise ValueError(
            f"y_train must hold one target per sample of x_train ({n_samples}), "
            f"got {len(y_train)}"
        )
    if n_samples == 0:
        raise ValueError("x_train must hold at least one sample, got 0")

    program = _NetworkProgram.build(layers, loss, loss_prime, x_train, y_train)
    if program is None:
        _train_per_layer(
            layers, loss, loss_prime, x_train, y_train, epochs, learning_rate, verbose
        )
    else:
        program.train(epochs, learning_rate, verbose)


def _sample_count(data: Any, name: str) -> int:
    try:
        return len(data)
    except TypeError:
        raise TypeError(
            f"{name} must be an array or a sequence of samples, "
            f"got {type(data).__name__}"
        ) from None


def _report(epoch: int, epochs: int, error: Any) -> None:
    print(f"{epoch + 1}/{epochs}, error={error}")


def _train_per_layer(
    layers: list[Layer],
    loss: Callable[[Any, Any], Any],
    loss_prime: Callable[[Any, Any], Any],
    x_train: Any,
    y_train: Any,
    epochs: int,
    learning_rate: float,
    verbose: bool,
) -> None:
    # The plain loop: every layer's own forward and backward, sample by sample.
    n_samples = len(x_train)
    for epoch in range(epochs):
        error = 0
        for x, y in zip(x_train, y_train, strict=True):
            output = predict(layers, x)
            error += loss(y, output)
            grad = loss_prime(y, output)
            for layer in reversed(layers):
                grad = layer.backward(grad, learning_rate)
        error /= n_samples
        if verbose:
            _report(epoch, epochs, error)


def _builtin_code(layer: Any) -> int | None:
    # The program code of a built-in layer, or None for anything the compiled
    # path cannot reproduce (subclasses, replaced functions or methods).
    kind = type(layer)
    own = vars(layer)
    if "forward" in own or "backward" in own:
        return None
    if kind is Dense:
        return _compiled.DENSE
    if kind is Convolutional:
        return _compiled.CONVOLUTIONAL
    if kind is Reshape:
        return _compiled.RESHAPE
    if kind is Softmax:
        return _compiled.SOFTMAX
    functions = (own.get("activation"), own.get("activation_prime"))
    if kind is Tanh and functions == (_layers._tanh, _layers._tanh_prime):
        return _compiled.TANH
    if kind is Sigmoid and functions == (_layers._sigmoid, _layers._sigmoid_prime):
        return _compiled.SIGMOID
    return None


def _float64_samples(data: Any) -> np.ndarray | None:
    # All samples as one float64 array, or None when they do not stack.
    try:
        array = np.asarray(data)
    except ValueError:
        return None
    if array.dtype.kind not in "biuf" or array.ndim < 1:
        return None
    return kernel_ready(np.ascontiguousarray(array, dtype=np.float64))


def _is_parameter(array: np.ndarray) -> bool:
    # Parameters the packed buffer can be copied from and back into exactly.
    return array.dtype == np.float64 and array.flags.writeable


class _NetworkProgram:
    """A network of built-in layers packed for :func:`_compiled.train_epochs`."""

    def __init__(self, layers: list[Layer], loss_code: int, grad_code: int) -> None:
        self.layers = layers
        self.loss_code = loss_code
        self.grad_code = grad_code
        # Per layer: one program row; per activation: its per-sample shape (the
        # network input first); per parameter array: its offset in the buffer.
        self.rows: list[list[int]] = []
        self.shapes: list[tuple[int, ...]] = []
        self.parameters: list[tuple[np.ndarray, int]] = []
        self.n_params = 0
        self.x = np.empty((0, 0))
        self.y = np.empty((0, 0))

    @classmethod
    def build(
        cls,
        layers: list[Layer],
        loss: Any,
        loss_prime: Any,
        x_train: Any,
        y_train: Any,
    ) -> _NetworkProgram | None:
        """Return the packed network, or None when it must run layer by layer."""
        try:
            loss_code = _LOSS_CODES.get(loss)
            grad_code = _GRADIENT_CODES.get(loss_prime)
        except TypeError:  # an unhashable callable
            return None
        if loss_code is None or grad_code is None or not layers:
            return None
        # A layer used twice keeps only its last input in the per-layer loop,
        # which the compiled program would not reproduce.
        if len({id(layer) for layer in layers}) != len(layers):
            return None
        x = _float64_samples(x_train)
        y = _float64_samples(y_train)
        if x is None or y is None:
            return None

        program = cls(layers, loss_code, grad_code)
        shape = x.shape[1:]
        program.shapes.append(shape)
        for layer in layers:
            shape = program._add(layer, shape)
            if shape is None:
                return None
            program.shapes.append(shape)
        if not targets_fit(y.shape[1:], shape) or program._shares_parameters():
            return None

        program.x = x.reshape(len(x), -1)
        program.y = y.reshape(len(y), -1)
        return program

    def _add(self, layer: Any, shape: tuple[int, ...]) -> tuple[int, ...] | None:
        # Append one layer taking per-sample input of ``shape``; return its output
        # shape, or None when the layer's own forward would refuse the input (the
        # per-layer loop then raises its error).
        code = _builtin_code(layer)
        if code is None:
            return None
        size = math.prod(shape)
        sizes: list[int] = []
        weights = biases = None
        if code in (_compiled.DENSE, _compiled.CONVOLUTIONAL):
            try:
                sizes = list(layer._sizes())
            except ValueError:
                return None
            if code == _compiled.DENSE:
                weights, biases = layer.weights, layer.bias
                expected = (sizes[1], 1)
            else:
                weights, biases = layer.kernels, layer.biases
                expected = tuple(layer.input_shape)
            if shape != expected or not (
                _is_parameter(weights) and _is_parameter(biases)
            ):
                return None
            out_shape = biases.shape
        elif code == _compiled.RESHAPE:
            out_shape = tuple(layer.output_shape)
            if math.prod(out_shape) != size:
                return None
            sizes = [size]
        else:
            if size == 0:
                return None
            out_shape = shape
            sizes = [size]

        in_off = sum(math.prod(s) for s in self.shapes[:-1])
        out_off = in_off + size
        row = [code, in_off, out_off, 0, 0, *sizes]
        if weights is not None:
            row[_compiled.COL_WEIGHTS] = self._add_parameter(weights)
            row[_compiled.COL_BIASES] = self._add_parameter(biases)
        row += [0] * (_compiled.PROGRAM_COLUMNS - len(row))
        self.rows.append(row)
        return out_shape

    def _shares_parameters(self) -> bool:
        arrays = [array for array, _ in self.parameters]
        return any(
            np.may_share_memory(a, b)
            for i, a in enumerate(arrays)
            for b in arrays[i + 1 :]
        )

    def _add_parameter(self, array: np.ndarray) -> int:
        offset = self.n_params
        self.parameters.append((array, offset))
        self.n_params += array.size
        return offset

    def train(self, epochs: int, learning_rate: float, verbose: bool) -> None:
        """Run ``epochs`` epochs, then write parameters and last values back."""
        program = np.array(self.rows, dtype=np.int64)
        params = np.empty(self.n_params)
        for array, offset in self.parameters:
            params[offset : offset + array.size] = array.reshape(-1)
        n_acts = sum(math.prod(s) for s in self.shapes)
        acts = np.zeros(n_acts)
        grads = np.zeros(n_acts)
        errors = np.empty(epochs)

        done = 0
        per_call = 1
        try:
            while done < epochs:
                count = min(per_call, epochs - done)
                start = time.perf_counter()
                _compiled.train_epochs(
                    program,
                    params,
                    acts,
                    grads,
                    self.x,
                    self.y,
                    self.loss_code,
                    self.grad_code,
                    learning_rate,
                    errors[done : done + count],
                )
                elapsed = time.perf_counter() - start
                if verbose:
                    for epoch in range(done, done + count):
                        _report(epoch, epochs, errors[epoch])
                done += count
                if elapsed < _CALL_SECONDS / 2:
                    per_call *= 2
        finally:
            for array, offset in self.parameters:
                array[...] = params[offset : offset + array.size].reshape(array.shape)
            if done:
                self._keep_last_sample(acts)

    def _keep_last_sample(self, acts: np.ndarray) -> None:
        # Each layer's input and output attributes hold the last sample's values,
        # as after the per-layer loop.
        offset = 0
        for i, layer in enumerate(self.layers):
            shape_in, shape_out = self.shapes[i], self.shapes[i + 1]
            size_in = math.prod(shape_in)
            layer.input = acts[offset : offset + size_in].reshape(shape_in).copy()
            size_out = math.prod(shape_out)
            start = offset + size_in
            layer.output = acts[start : start + size_out].reshape(shape_out).copy()
            offset = start
