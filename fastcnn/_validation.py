"""Argument checks shared by the functional API and the layers.

Every check raises before any kernel runs, with a message that names the argument,
says what was expected and echoes what was given. TypeError is for the wrong kind
of object or dtype, ValueError for a wrong value or shape.
"""

from __future__ import annotations

import functools
import math
import reprlib
from collections.abc import Iterable
from numbers import Integral, Real
from typing import Any

import numpy as np

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))

#: Largest accepted window size, stride, padding or dilation. Kernels compute in
#: 64-bit integers; with every such argument below 2**31 their products cannot
#: overflow.
MAX_WINDOW_ARGUMENT = 2**31 - 1


def _describe(value: Any) -> str:
    if isinstance(value, np.ndarray):
        return f"array of shape {value.shape} and dtype {value.dtype}"
    # A whole data set passed as a list must not end up in the message.
    text = reprlib.repr(value)
    if len(text) > 80:
        text = text[:76] + " ..."
    return f"{type(value).__name__} {text}"


def kernel_ready(x: np.ndarray, dtype: Any = None) -> np.ndarray:
    """Return ``x`` (cast to ``dtype``) as a C-contiguous, writeable array.

    ``x`` itself when it already is one, else a copy. Numba compiles a separate
    version of every kernel for read-only arrays (``np.frombuffer``, read-only
    memory maps, ``setflags(write=False)``): on first use that costs seconds of
    compiling per kernel, where the copy costs one pass over the data. Unlike
    ``np.ascontiguousarray``, a 0-d array stays 0-d.
    """
    flags = x.flags
    if (dtype is None or x.dtype == dtype) and flags.c_contiguous and flags.writeable:
        return x
    return np.array(x, dtype=dtype, order="C")


def check_array(
    x: Any,
    name: str,
    *,
    ndim: int | Iterable[int] | None = None,
    dtype: np.dtype | None = None,
) -> np.ndarray:
    """Return ``x`` as a C-contiguous float32/float64 array, or raise.

    Parameters
    ----------
    x : object
        The argument to check. It must already be a ``numpy.ndarray``; a masked
        array is refused, other subclasses are viewed as plain arrays.
    name : str
        The argument's name, for the error message.
    ndim : int or iterable of int, optional
        The accepted numbers of dimensions.
    dtype : numpy.dtype, optional
        The one accepted dtype; by default float32 and float64 are accepted.

    Returns
    -------
    numpy.ndarray
        ``x`` itself when it is a writeable C-contiguous plain array, else a
        plain view or a C-contiguous copy (so strided and negative-stride views
        give correct results, and read-only arrays compile no second set of
        kernels; see :func:`kernel_ready`).
    """
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{name} must be a numpy.ndarray, got {_describe(x)}")
    if isinstance(x, np.ma.MaskedArray):
        raise TypeError(
            f"{name} must be a plain numpy.ndarray, got a masked array (its mask "
            f"would be ignored); fill it first, e.g. {name}.filled(0.0)"
        )
    if type(x) is not np.ndarray:
        # Other subclasses (np.matrix, ...) are read as plain arrays.
        x = x.view(np.ndarray)
    accepted = FLOAT_DTYPES if dtype is None else (np.dtype(dtype),)
    if x.dtype not in accepted:
        names = " or ".join(str(d) for d in accepted)
        raise TypeError(
            f"{name} must have dtype {names}, got {x.dtype}; "
            f"convert it first, e.g. {name}.astype(np.{accepted[0]})"
        )
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, Integral) else tuple(ndim)
        if x.ndim not in allowed:
            want = " or ".join(f"{d}-d" for d in allowed)
            raise ValueError(f"{name} must be {want}, got {x.ndim}-d shape {x.shape}")
    return kernel_ready(x)


def check_same_dtype(reference: np.ndarray, ref_name: str, **others: Any) -> None:
    """Raise TypeError unless every array in ``others`` has ``reference``'s dtype."""
    for name, arr in others.items():
        if arr is not None and arr.dtype != reference.dtype:
            raise TypeError(
                f"{name} must have the same dtype as {ref_name} ({reference.dtype}), "
                f"got {arr.dtype}"
            )


def _is_integer(value: Any) -> bool:
    """Whether ``value`` is an integer other than a bool (int, np.int64, ...)."""
    # The exact-type test first: the ABC check costs a microsecond per call, which
    # the small calls of a batch-1 training step notice.
    if type(value) is int:
        return True
    return not isinstance(value, bool) and isinstance(value, Integral)


def check_int(value: Any, name: str, *, minimum: int | None = None) -> int:
    """Return ``value`` as a Python int, or raise (bools are refused)."""
    if not _is_integer(value):
        raise TypeError(f"{name} must be an int, got {_describe(value)}")
    value = int(value)
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def check_pair(value: Any, name: str, *, minimum: int) -> tuple[int, int]:
    """Normalise an int or a pair of ints to ``(int, int)``, each ``>= minimum``.

    Each must also be at most :data:`MAX_WINDOW_ARGUMENT`.
    """
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ValueError(
                f"{name} must be an int or a pair of ints, got {_describe(value)}"
            )
        first, second = value
    else:
        first = second = value
    for item in (first, second):
        if not _is_integer(item):
            raise TypeError(
                f"{name} must be an int or a pair of ints, got {_describe(value)}"
            )
        if item < minimum:
            raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
        if item > MAX_WINDOW_ARGUMENT:
            raise ValueError(
                f"{name} must be <= {MAX_WINDOW_ARGUMENT} (2**31 - 1), got {value!r}"
            )
    return int(first), int(second)


def check_real(
    value: Any,
    name: str,
    *,
    low: float | None = None,
    high: float | None = None,
    low_inclusive: bool = True,
    high_inclusive: bool = True,
) -> float:
    """Return ``value`` as a finite Python float inside the given bounds, or raise.

    TypeError for a non-number or a bool; ValueError for NaN, +-inf, an int
    beyond the float range (``10**400``) or a value outside the bounds.
    """
    if type(value) is not float and (
        isinstance(value, bool) or not isinstance(value, Real)
    ):
        raise TypeError(f"{name} must be a real number, got {_describe(value)}")
    try:
        value = float(value)
    except OverflowError:
        # An int beyond the float range: float() raises instead of giving inf.
        # (Its bit count, not its digits: str() refuses ints of 4300+ digits.)
        size = f" of {value.bit_length()} bits" if isinstance(value, int) else ""
        raise ValueError(
            f"{name} must be finite, got an int{size}, too large for a float "
            "(beyond 2**1024)"
        ) from None
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    if low is not None and (value < low or (value == low and not low_inclusive)):
        sign = ">=" if low_inclusive else ">"
        raise ValueError(f"{name} must be {sign} {low}, got {value}")
    if high is not None and (value > high or (value == high and not high_inclusive)):
        sign = "<=" if high_inclusive else "<"
        raise ValueError(f"{name} must be {sign} {high}, got {value}")
    return value


@functools.cache
def _overflow_threshold(dtype: np.dtype) -> float:
    """Smallest magnitude that rounds to infinity when cast to ``dtype``.

    Half a unit in the last place above the largest finite value (for float32,
    ``2**128 - 2**103``: the midpoint rounds to the even ``2**128``). For float64
    and dtypes that are not float16/32/64 it is infinite: a Python float
    always fits.
    """
    if dtype.kind != "f" or dtype.itemsize >= 8:
        return math.inf
    info = np.finfo(dtype)
    # The spacing at the largest value is 2**(maxexp - 1 - nmant).
    return float(info.max) + 2.0 ** (info.maxexp - 2 - info.nmant)


def check_fits_dtype(value: float, name: str, dtype: np.dtype | type) -> float:
    """Return ``value`` if casting it to ``dtype`` gives a finite number, or raise.

    Parameters
    ----------
    value : float
        A finite value, already checked by :func:`check_real`.
    name : str
        The argument's name, for the error message.
    dtype : numpy.dtype
        The float dtype the value is cast to (float32 parameters, say).

    Returns
    -------
    float
        ``value`` unchanged.

    Raises
    ------
    ValueError
        If ``dtype.type(value)`` would be infinite, e.g. ``lr=1e300`` for
        float32 parameters.
    """
    dtype = np.dtype(dtype)
    if abs(value) >= _overflow_threshold(dtype):
        largest = np.finfo(dtype).max
        raise ValueError(
            f"{name}={value!r} overflows {dtype} (it would become inf; the "
            f"largest finite {dtype} is {largest:.8g})"
        )
    return value


def check_choice(value: Any, name: str, choices: Iterable[str]) -> str:
    """Raise ValueError unless ``value`` is one of ``choices``."""
    choices = tuple(choices)
    if not isinstance(value, str) or value not in choices:
        listed = ", ".join(repr(c) for c in choices)
        raise ValueError(f"{name} must be one of {listed}, got {value!r}")
    return value
