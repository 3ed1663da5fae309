"""The layer contract shared by every fastcnn layer."""

from __future__ import annotations

from typing import Any

import numpy as np

from fastcnn.functional._workspace import Workspace

_REFUSED_KINDS = {
    "c": "complex",
    "O": "object",
    "U": "string",
    "S": "bytes",
    "V": "void",
    "M": "datetime",
    "m": "timedelta",
}


def as_layer_input(x: Any, name: str, dtype: np.dtype | None) -> np.ndarray:
    """Convert a layer's input to a float array, or raise TypeError.

    Parameters
    ----------
    x : array_like
        The input. Must be a ``numpy.ndarray`` of a real numeric dtype (bool,
        integer, float16, float32 or float64), not a masked array.
    name : str
        The argument's name, for error messages.
    dtype : numpy.dtype or None
        The dtype of the layer's parameters. Layers with parameters convert their
        input to it (float64 data into a float32 layer is converted to float32).
        Layers without parameters pass ``None``: float32 and float64 input keeps
        its dtype, any other real dtype becomes float32.

    Returns
    -------
    numpy.ndarray
        A C-contiguous float32 or float64 array. Values beyond the range of
        ``dtype`` (1e300 into float32) become +-inf, without a warning, as the
        kernels pass infinities on.
    """
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{name} must be a numpy.ndarray, got {type(x).__name__}")
    if isinstance(x, np.ma.MaskedArray):
        raise TypeError(
            f"{name} must be a plain numpy.ndarray, got a masked array (its mask "
            f"would be ignored); fill it first, e.g. {name}.filled(0.0)"
        )
    kind = x.dtype.kind
    if kind in _REFUSED_KINDS:
        raise TypeError(
            f"{name} must have a real numeric dtype, got {x.dtype} "
            f"({_REFUSED_KINDS[kind]})"
        )
    if dtype is None:
        dtype = x.dtype if x.dtype in (np.float32, np.float64) else np.float32
    if x.dtype == dtype:
        return np.asarray(x, order="C")
    # float64 -> float32 overflows to inf; NumPy would warn about it.
    with np.errstate(all="ignore"):
        return np.asarray(x, dtype=dtype, order="C")


class Layer:
    """Base class of every layer.

    A layer maps ``forward(input)`` to an output and, in ``backward``, maps the
    gradient of the loss with respect to that output to the gradient with respect
    to the input. This is the calling convention of the classic "neural network
    from scratch" layer API, so code written against it works with fastcnn's
    layers.

    Attributes
    ----------
    params : dict of str to numpy.ndarray
        The trainable arrays, e.g. ``{"weight": ..., "bias": ...}``; empty for
        layers without parameters. The arrays are updated in place.
    grads : dict of str to numpy.ndarray
        The gradients of the last ``backward`` call, keyed like ``params``.
    training : bool
        Whether the layer is in training mode (``Dropout`` uses it).
    workspace : Workspace or None
        Buffers the layer reuses from call to call for its outputs, gradients
        and scratch arrays; None (the default for a layer on its own) means
        fresh arrays on every call. :class:`~fastcnn.models.Sequential` gives
        each of its layers one. With a workspace, what ``forward`` and
        ``backward`` return is overwritten by the layer's next call: copy what
        you keep.
    """

    def __init__(self) -> None:
        self.params: dict[str, np.ndarray] = {}
        self.grads: dict[str, np.ndarray] = {}
        self.training = True
        self.workspace: Workspace | None = None

    def forward(self, input: np.ndarray) -> np.ndarray:
        """Compute the layer's output and keep what ``backward`` needs."""
        raise NotImplementedError

    def backward(
        self, output_gradient: np.ndarray, learning_rate: float | None = None
    ) -> np.ndarray:
        """Back-propagate ``output_gradient`` through the last ``forward`` call.

        Parameters
        ----------
        output_gradient : numpy.ndarray
            Gradient of the loss with respect to the last output, same shape.
        learning_rate : float, optional
            When given, the parameters are also updated in place with plain SGD,
            ``param -= learning_rate * grad``. It must be finite, ``>= 0`` and
            finite in the parameters' dtype (``1e300`` is refused for float32).

        Returns
        -------
        numpy.ndarray
            Gradient with respect to the last input, same shape as that input.
        """
        raise NotImplementedError

    def __call__(self, input: np.ndarray) -> np.ndarray:
        return self.forward(input)

    def train(self, mode: bool = True) -> Layer:
        """Set training mode (``True``) or evaluation mode (``False``)."""
        self.training = bool(mode)
        return self

    def eval(self) -> Layer:
        """Set evaluation mode."""
        return self.train(False)

    def zero_grad(self) -> None:
        """Forget the gradients of the last backward pass."""
        self.grads = {}

    def get_config(self) -> dict[str, Any]:
        """Return the constructor arguments as JSON-serialisable values."""
        return {}

    @classmethod
    def parameter_shapes(
        cls, arguments: dict[str, Any]
    ) -> dict[str, tuple[int, ...]] | None:
        """Return the shapes of the parameters a layer built with ``arguments`` has.

        Loading a model file compares them with the stored arrays before building
        the layer, so that a configuration asking for a huge layer is refused
        without allocating it. Nothing is allocated here.

        Parameters
        ----------
        arguments : dict
            Every constructor argument by name, defaults filled in.

        Returns
        -------
        dict of str to tuple of int, or None
            Parameter name to shape. None (the default) means unknown: the layer
            is built to find out, which suits layers whose size does not grow
            with their configuration.

        Raises
        ------
        TypeError, ValueError
            If the arguments are invalid, as the constructor would.
        """
        return None

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        """Return the per-sample output shape for a per-sample ``input_shape``."""
        return tuple(input_shape)

    def num_parameters(self) -> int:
        """Return the number of trainable scalars."""
        return int(sum(p.size for p in self.params.values()))

    def _apply_sgd(self, learning_rate: float | None) -> None:
        # The tutorial convention: a learning rate given to backward is a plain
        # SGD step on every parameter, in place and in the parameter's dtype.
        # The caller has checked that the rate is finite in that dtype; an
        # update that overflows gives inf or NaN without a warning, as the
        # kernels do.
        if learning_rate is None:
            return
        with np.errstate(all="ignore"):
            for key, param in self.params.items():
                param -= param.dtype.type(learning_rate) * self.grads[key]

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"
