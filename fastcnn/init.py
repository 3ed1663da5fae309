"""Weight initialisation: PyTorch's defaults and the usual uniform schemes.

Every initialiser takes the array ``shape``, the ``dtype`` to create it in
(float32 or float64) and an ``rng``: an int seed, a ``numpy.random.Generator``
(advanced in place, so successive calls draw fresh values) or None (fresh
entropy from the operating system). The same seed always gives the same array.

Fans are computed as PyTorch does: for a dense weight ``(out, in)``,
``fan_in = in`` and ``fan_out = out``; for a convolution weight
``(C_out, C_in/groups, kH, kW)``, ``fan_in = C_in/groups*kH*kW`` and
``fan_out = C_out*kH*kW``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from numbers import Integral
from typing import Any

import numpy as np

from fastcnn._validation import FLOAT_DTYPES, check_choice, check_real

__all__ = [
    "as_generator",
    "default_parameters",
    "fan_in_and_fan_out",
    "kaiming_uniform",
    "uniform",
    "xavier_uniform",
    "zeros",
]

RngLike = int | np.random.Generator | None

_NONLINEARITIES = ("leaky_relu", "relu", "linear", "sigmoid", "tanh")


def as_generator(rng: RngLike, name: str = "rng") -> np.random.Generator:
    """Return a ``numpy.random.Generator`` for an int seed, a Generator or None.

    Parameters
    ----------
    rng : int, numpy.random.Generator or None
        A non-negative seed, a generator (returned as is) or None for fresh
        entropy.
    name : str, default "rng"
        The argument's name, for error messages.

    Returns
    -------
    numpy.random.Generator
    """
    if rng is None or isinstance(rng, np.random.Generator):
        return np.random.default_rng(rng)
    if isinstance(rng, bool) or not isinstance(rng, Integral):
        raise TypeError(
            f"{name} must be an int seed, a numpy.random.Generator or None, "
            f"got {type(rng).__name__}"
        )
    if rng < 0:
        raise ValueError(f"{name} must be a non-negative seed, got {rng}")
    return np.random.default_rng(int(rng))


def check_float_dtype(dtype: Any, name: str = "dtype") -> np.dtype:
    """Return ``dtype`` as a ``numpy.dtype`` if it is float32 or float64, else raise.

    Strings such as ``"float32"`` are accepted (that is how layer configs store
    the dtype).
    """
    try:
        resolved = np.dtype(dtype)
    except TypeError:
        resolved = None
    if resolved is None or dtype is None or resolved not in FLOAT_DTYPES:
        raise TypeError(f"{name} must be float32 or float64, got {dtype!r}")
    return resolved


def _check_shape(shape: Any, name: str = "shape", *, min_ndim: int = 0) -> tuple:
    if isinstance(shape, Integral) and not isinstance(shape, bool):
        shape = (shape,)
    if not isinstance(shape, Sequence) or isinstance(shape, str):
        raise TypeError(f"{name} must be a tuple of ints, got {type(shape).__name__}")
    for size in shape:
        if isinstance(size, bool) or not isinstance(size, Integral):
            raise TypeError(f"{name} must be a tuple of ints, got {shape!r}")
        if size < 0:
            raise ValueError(f"{name} must have non-negative sizes, got {shape!r}")
    if len(shape) < min_ndim:
        raise ValueError(
            f"{name} must have at least {min_ndim} dimensions to define fan_in and "
            f"fan_out, got {tuple(shape)!r}"
        )
    return tuple(int(size) for size in shape)


def fan_in_and_fan_out(shape: Sequence[int]) -> tuple[int, int]:
    """Return ``(fan_in, fan_out)`` of a weight of the given shape.

    Parameters
    ----------
    shape : tuple of int
        ``(out, in)`` for a dense weight or ``(C_out, C_in/groups, kH, kW)`` for
        a convolution weight (any number of trailing kernel axes).

    Returns
    -------
    fan_in, fan_out : int

    Notes
    -----
    ``fan_in = shape[1] * prod(shape[2:])`` and
    ``fan_out = shape[0] * prod(shape[2:])``.
    """
    shape = _check_shape(shape, min_ndim=2)
    receptive = math.prod(shape[2:])
    return shape[1] * receptive, shape[0] * receptive


def _gain(nonlinearity: str, a: float) -> float:
    if nonlinearity == "leaky_relu":
        return math.sqrt(2.0 / (1.0 + a * a))
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "tanh":
        return 5.0 / 3.0
    return 1.0


def uniform(
    shape: Sequence[int],
    bound: float,
    *,
    dtype: Any = np.float32,
    rng: RngLike = None,
) -> np.ndarray:
    """Draw an array from ``U(-bound, bound)``.

    Parameters
    ----------
    shape : tuple of int
        Shape of the array.
    bound : float
        Half-width of the interval, ``>= 0``.
    dtype : {float32, float64}, default float32
        The array's dtype.
    rng : int, numpy.random.Generator or None
        Seed or generator.

    Returns
    -------
    numpy.ndarray of shape ``shape``
        Values in ``[-bound, bound]``, drawn in float64 and rounded to ``dtype``.
    """
    shape = _check_shape(shape)
    bound = check_real(bound, "bound", low=0.0)
    dtype = check_float_dtype(dtype)
    generator = as_generator(rng)
    return generator.uniform(-bound, bound, size=shape).astype(dtype)


def kaiming_uniform(
    shape: Sequence[int],
    a: float = 0.0,
    mode: str = "fan_in",
    nonlinearity: str = "leaky_relu",
    *,
    dtype: Any = np.float32,
    rng: RngLike = None,
) -> np.ndarray:
    """He initialisation: ``U(-bound, bound)`` with ``bound = gain*sqrt(3/fan)``.

    Parameters
    ----------
    shape : tuple of int
        Weight shape, at least 2-d (see :func:`fan_in_and_fan_out`).
    a : float, default 0.0
        Negative slope of the leaky ReLU that follows (used by
        ``nonlinearity="leaky_relu"`` only).
    mode : {"fan_in", "fan_out"}, default "fan_in"
        Which fan keeps the variance: of the forward pass or of the backward pass.
    nonlinearity : {"leaky_relu", "relu", "linear", "sigmoid", "tanh"}
        Chooses the gain: ``sqrt(2/(1+a**2))``, ``sqrt(2)``, 1, 1 and 5/3.
    dtype : {float32, float64}, default float32
        The array's dtype.
    rng : int, numpy.random.Generator or None
        Seed or generator.

    Returns
    -------
    numpy.ndarray of shape ``shape``

    Notes
    -----
    With ``a=sqrt(5)`` (PyTorch's default for its layers) the bound is
    ``1/sqrt(fan_in)``.
    """
    fan_in, fan_out = fan_in_and_fan_out(shape)
    a = check_real(a, "a")
    check_choice(mode, "mode", ("fan_in", "fan_out"))
    check_choice(nonlinearity, "nonlinearity", _NONLINEARITIES)
    fan = fan_in if mode == "fan_in" else fan_out
    if fan == 0:
        raise ValueError(f"shape must have a non-zero {mode}, got {tuple(shape)!r}")
    bound = _gain(nonlinearity, a) * math.sqrt(3.0 / fan)
    return uniform(shape, bound, dtype=dtype, rng=rng)


def xavier_uniform(
    shape: Sequence[int],
    gain: float = 1.0,
    *,
    dtype: Any = np.float32,
    rng: RngLike = None,
) -> np.ndarray:
    """Glorot initialisation: ``U(-b, b)`` with ``b = gain*sqrt(6/(fan_in+fan_out))``.

    Parameters
    ----------
    shape : tuple of int
        Weight shape, at least 2-d (see :func:`fan_in_and_fan_out`).
    gain : float, default 1.0
        Scale factor, ``>= 0``.
    dtype : {float32, float64}, default float32
        The array's dtype.
    rng : int, numpy.random.Generator or None
        Seed or generator.

    Returns
    -------
    numpy.ndarray of shape ``shape``
    """
    fan_in, fan_out = fan_in_and_fan_out(shape)
    gain = check_real(gain, "gain", low=0.0)
    if fan_in + fan_out == 0:
        raise ValueError(f"shape must have non-zero fans, got {tuple(shape)!r}")
    bound = gain * math.sqrt(6.0 / (fan_in + fan_out))
    return uniform(shape, bound, dtype=dtype, rng=rng)


def zeros(
    shape: Sequence[int],
    *,
    dtype: Any = np.float32,
    rng: RngLike = None,
) -> np.ndarray:
    """Return an array of zeros.

    Parameters
    ----------
    shape : int or tuple of int
        Shape of the array.
    dtype : {float32, float64}, default float32
        The array's dtype.
    rng : int, numpy.random.Generator or None
        Not used; accepted so that every initialiser has the same signature.

    Returns
    -------
    numpy.ndarray of shape ``shape``
    """
    shape = _check_shape(shape)
    as_generator(rng)
    return np.zeros(shape, dtype=check_float_dtype(dtype))


def default_parameters(
    weight_shape: Sequence[int],
    *,
    bias: bool = True,
    dtype: Any = np.float32,
    rng: RngLike = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """PyTorch's default initialisation of a dense or convolution layer.

    Parameters
    ----------
    weight_shape : tuple of int
        ``(out, in)`` or ``(C_out, C_in/groups, kH, kW)``.
    bias : bool, default True
        Whether to create a bias of shape ``(weight_shape[0],)``.
    dtype : {float32, float64}, default float32
        The dtype of both arrays.
    rng : int, numpy.random.Generator or None
        Seed or generator; the weight is drawn first, then the bias.

    Returns
    -------
    weight : numpy.ndarray of shape ``weight_shape``
    bias : numpy.ndarray of shape ``(weight_shape[0],)`` or None

    Notes
    -----
    Both are drawn from ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``: the weight by
    Kaiming-uniform with ``a=sqrt(5)``, the bias directly, as ``torch.nn.Linear``
    and ``torch.nn.Conv2d`` do. The values themselves differ from PyTorch's
    (another random generator).
    """
    generator = as_generator(rng)
    weight = kaiming_uniform(weight_shape, a=math.sqrt(5.0), dtype=dtype, rng=generator)
    if not bias:
        return weight, None
    fan_in, _ = fan_in_and_fan_out(weight_shape)
    bound = 1.0 / math.sqrt(fan_in)
    return weight, uniform((weight_shape[0],), bound, dtype=dtype, rng=generator)
