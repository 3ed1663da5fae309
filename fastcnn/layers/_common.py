"""Helpers shared by the concrete layers: argument checks and parameter access."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from fastcnn._validation import check_fits_dtype, check_real
from fastcnn.layers.base import Layer, as_layer_input


def check_flag(value: Any, name: str) -> bool:
    """Return ``value`` if it is a bool, else raise TypeError."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__} {value!r}")
    return bool(value)


def check_learning_rate(
    learning_rate: Any, dtype: np.dtype | None = None
) -> float | None:
    """Return None or a finite, non-negative learning rate as a float.

    With ``dtype`` (the parameters' dtype, to which the rate is cast), a rate
    that overflows it is refused too.
    """
    if learning_rate is None:
        return None
    value = check_real(learning_rate, "learning_rate", low=0.0)
    if dtype is not None:
        check_fits_dtype(value, "learning_rate", dtype)
    return value


def check_input_ndim(x: np.ndarray, allowed: tuple[int, ...], layout: str) -> None:
    """Raise ValueError naming ``input`` unless ``x.ndim`` is one of ``allowed``."""
    if x.ndim not in allowed:
        want = " or ".join(f"{d}-d" for d in allowed)
        raise ValueError(f"input must be {want} ({layout}), got shape {x.shape}")


class PerSampleRankError(ValueError):
    """A per-sample shape of the wrong length, given to a layer's ``output_shape``.

    ``layout`` (e.g. ``"(C, H, W)"``) and ``ndim`` say what the layer takes, so
    that a caller can say it again in terms of its own argument.
    """

    def __init__(self, message: str, layout: str, ndim: int) -> None:
        super().__init__(message)
        self.layout = layout
        self.ndim = ndim


def check_per_sample_shape(input_shape: Any, ndim: int, layout: str) -> tuple:
    """Validate a per-sample shape given to ``output_shape``."""
    if not isinstance(input_shape, (tuple, list)) or not all(
        isinstance(s, (int, np.integer)) and not isinstance(s, bool)
        for s in input_shape
    ):
        raise TypeError(f"input_shape must be a tuple of ints, got {input_shape!r}")
    if len(input_shape) != ndim:
        raise PerSampleRankError(
            f"input_shape must be a per-sample {layout} shape of length {ndim}, "
            f"got {tuple(input_shape)!r}",
            layout,
            ndim,
        )
    return tuple(int(s) for s in input_shape)


def compact_pair(pair: tuple[int, int]) -> int | list[int]:
    """Return one int for a square pair, else a list (for configs and reprs)."""
    return pair[0] if pair[0] == pair[1] else list(pair)


class Parameter:
    """A layer attribute kept in ``layer.params`` under the attribute's name.

    Reading ``layer.weight`` returns ``layer.params["weight"]`` (the same array
    object), and assigning replaces the entry, so the attribute and the dict
    never disagree. An assigned array must have the parameter's shape; it is
    converted to the layer's dtype (arrays already of that dtype and
    C-contiguous are stored as they are, not copied). An optional parameter
    (a bias) may be set to None, which removes it from ``params``.
    """

    def __init__(self, optional: bool = False) -> None:
        self.optional = optional
        self.name = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, layer: Layer | None, owner: type) -> Any:
        if layer is None:
            return self
        return layer.params.get(self.name)

    def __set__(self, layer: Layer, value: Any) -> None:
        name = self.name
        if value is None:
            if not self.optional:
                raise TypeError(f"{name} must be a numpy.ndarray, got None")
            layer.params.pop(name, None)
            layer.grads.pop(name, None)
            return
        array = as_layer_input(value, name, layer.dtype)
        expected = layer._parameter_shape(name)
        if array.shape != expected:
            raise ValueError(f"{name} must have shape {expected}, got {array.shape}")
        if not array.flags.writeable:
            array = array.copy()
        layer.params[name] = array


class LayerState:
    """What one forward pass leaves for ``backward``: a context and the output shape."""

    __slots__ = ("ctx", "dtype", "output_shape", "unbatched")

    def __init__(
        self, ctx: Any, output_shape: tuple, dtype: np.dtype, unbatched: bool
    ) -> None:
        self.ctx = ctx
        self.output_shape = output_shape
        self.dtype = dtype
        self.unbatched = unbatched


def require_state(layer: Layer, state: LayerState | None) -> LayerState:
    """Return the forward state, or raise RuntimeError if forward never ran."""
    if state is None:
        raise RuntimeError(
            f"{type(layer).__name__}.backward was called before forward; "
            "call forward first"
        )
    return state


def check_output_gradient(output_gradient: Any, state: LayerState) -> np.ndarray:
    """Return ``output_gradient`` in the forward's dtype, batched like its context.

    Raises ValueError unless the gradient has the shape of the last output.
    """
    grad = as_layer_input(output_gradient, "output_gradient", state.dtype)
    if grad.shape != state.output_shape:
        raise ValueError(
            f"output_gradient must have the shape of the last output "
            f"{state.output_shape}, got {grad.shape}"
        )
    return grad[np.newaxis] if state.unbatched else grad


class ParametrisedLayer(Layer):
    """A layer with ``weight`` and an optional ``bias`` and one backward call.

    Subclasses set :attr:`_functional_backward`, a function ``(grad, ctx, *,
    input_gradient) -> (grad_input or None, grad_weight, grad_bias or None)``,
    and keep their forward's :class:`LayerState` in ``_state``.
    """

    _functional_backward: Callable
    _state: LayerState | None = None

    def backward(
        self,
        output_gradient: np.ndarray,
        learning_rate: float | None = None,
        *,
        input_gradient: bool = True,
    ) -> np.ndarray | None:
        """Return the input gradient; fill ``grads``; SGD step if ``learning_rate``.

        With ``input_gradient=False`` the input gradient is not computed and
        None is returned (the first layer of a network does not need it).
        """
        state = require_state(self, self._state)
        learning_rate = check_learning_rate(learning_rate, state.dtype)
        input_gradient = check_flag(input_gradient, "input_gradient")
        grad = check_output_gradient(output_gradient, state)

        grad_input, grad_weight, grad_bias = type(self)._functional_backward(
            grad, state.ctx, input_gradient=input_gradient
        )
        self.grads = {"weight": grad_weight}
        if grad_bias is not None:
            self.grads["bias"] = grad_bias
        self._apply_sgd(learning_rate)
        if grad_input is None:
            return None
        return grad_input[0] if state.unbatched else grad_input
