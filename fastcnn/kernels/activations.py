"""Numba kernels for element-wise activations and their backward passes.

Every kernel works on flat C-contiguous arrays and is parallel over chunks of
:data:`CHUNK` consecutive elements: each ``prange`` iteration reads and writes its
own chunk only, so results do not depend on the number of threads. Arithmetic is
in the arrays' dtype.
"""

from __future__ import annotations

import numpy as np
from numba import prange

from fastcnn._config import parallel_kernel
from fastcnn.kernels._small import serial_below

#: Elements below which the element-wise kernels run on one thread: each element
#: costs about a nanosecond, and a parallel launch some 50 us on two cores, so
#: measured on 2**14 to 2**21 elements, two threads win only from about 2**18.
ELEMENTWISE_SERIAL_WORK = 1 << 18

#: Consecutive elements handled by one ``prange`` iteration; a constant compiled
#: into the kernels (see :mod:`fastcnn._config`, Caching).
CHUNK = 8192


@serial_below(0, ELEMENTWISE_SERIAL_WORK)
@parallel_kernel
def relu_flat(x, out):
    """``out = x`` where ``x >= 0`` or NaN, else 0 (NaN propagates)."""
    n = x.size
    zero = x.dtype.type(0)
    # Each iteration owns one chunk of out.
    for c in prange((n + CHUNK - 1) // CHUNK):
        for i in range(c * CHUNK, min(c * CHUNK + CHUNK, n)):
            out[i] = zero if x[i] < zero else x[i]


@serial_below(0, ELEMENTWISE_SERIAL_WORK)
@parallel_kernel
def relu_backward_flat(grad_output, x, out):
    """``out = grad_output`` where ``x > 0`` (or NaN), else 0."""
    n = x.size
    zero = x.dtype.type(0)
    # Each iteration owns one chunk of out.
    for c in prange((n + CHUNK - 1) // CHUNK):
        for i in range(c * CHUNK, min(c * CHUNK + CHUNK, n)):
            # Loaded unconditionally, so that the choice is a vector select rather
            # than a branch mispredicted on every other element.
            g = grad_output[i]
            out[i] = zero if x[i] <= zero else g


@serial_below(0, ELEMENTWISE_SERIAL_WORK)
@parallel_kernel
def leaky_relu_flat(x, negative_slope, out):
    """``out = x`` where ``x > 0``, else ``negative_slope * x``."""
    n = x.size
    zero = x.dtype.type(0)
    slope = x.dtype.type(negative_slope)
    # Each iteration owns one chunk of out.
    for c in prange((n + CHUNK - 1) // CHUNK):
        for i in range(c * CHUNK, min(c * CHUNK + CHUNK, n)):
            out[i] = x[i] if x[i] > zero else x[i] * slope


@serial_below(0, ELEMENTWISE_SERIAL_WORK)
@parallel_kernel
def leaky_relu_backward_flat(grad_output, x, negative_slope, out):
    """``out = grad_output`` where ``x > 0``, else ``negative_slope * grad_output``."""
    n = x.size
    zero = x.dtype.type(0)
    slope = x.dtype.type(negative_slope)
    # Each iteration owns one chunk of out.
    for c in prange((n + CHUNK - 1) // CHUNK):
        for i in range(c * CHUNK, min(c * CHUNK + CHUNK, n)):
            g = grad_output[i]
            out[i] = g if x[i] > zero else g * slope


@serial_below(0, ELEMENTWISE_SERIAL_WORK)
@parallel_kernel
def sigmoid_flat(x, out):
    """``out = 1 / (1 + exp(-x))`` through ``exp(-|x|)``, which never overflows."""
    n = x.size
    zero = x.dtype.type(0)
    one = x.dtype.type(1)
    # Each iteration owns one chunk of out.
    for c in prange((n + CHUNK - 1) // CHUNK):
        for i in range(c * CHUNK, min(c * CHUNK + CHUNK, n)):
            v = x[i]
            z = np.exp(-np.abs(v))
            r = one / (one + z)
            out[i] = r if v >= zero else z * r


@serial_below(0, ELEMENTWISE_SERIAL_WORK)
@parallel_kernel
def sigmoid_backward_flat(grad_output, y, out):
    """``out = grad_output * y * (1 - y)`` from the sigmoid output ``y``."""
    n = y.size
    one = y.dtype.type(1)
    # Each iteration owns one chunk of out.
    for c in prange((n + CHUNK - 1) // CHUNK):
        for i in range(c * CHUNK, min(c * CHUNK + CHUNK, n)):
            out[i] = grad_output[i] * (y[i] * (one - y[i]))


@serial_below(0, ELEMENTWISE_SERIAL_WORK)
@parallel_kernel
def tanh_flat(x, out):
    """``out = tanh(x)``."""
    n = x.size
    # Each iteration owns one chunk of out.
    for c in prange((n + CHUNK - 1) // CHUNK):
        for i in range(c * CHUNK, min(c * CHUNK + CHUNK, n)):
            out[i] = np.tanh(x[i])


@serial_below(0, ELEMENTWISE_SERIAL_WORK)
@parallel_kernel
def tanh_backward_flat(grad_output, y, out):
    """``out = grad_output * (1 - y * y)`` from the tanh output ``y``."""
    n = y.size
    one = y.dtype.type(1)
    # Each iteration owns one chunk of out.
    for c in prange((n + CHUNK - 1) // CHUNK):
        for i in range(c * CHUNK, min(c * CHUNK + CHUNK, n)):
            out[i] = grad_output[i] * (one - y[i] * y[i])
