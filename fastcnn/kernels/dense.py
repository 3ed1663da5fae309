"""Numba kernels for the bias parts of a dense (linear) layer.

The matrix products of :func:`fastcnn.functional.dense.linear` go through
``np.matmul`` (BLAS); these kernels add the bias and sum the bias gradient. Both
are race-free: every ``prange`` iteration owns the elements it writes, so results
do not depend on the number of threads. Arithmetic is in the arrays' dtype.
"""

from __future__ import annotations

from numba import prange

from fastcnn._config import parallel_kernel
from fastcnn.kernels._small import serial_below

#: Output features summed together by one iteration of :func:`sum_rows_into`; a
#: constant compiled into the kernel (see :mod:`fastcnn._config`, Caching).
FEATURE_BLOCK = 32

#: Elements below which the bias kernels run on one thread: they do one addition
#: per element, and measured with TBB on two cores (whose launches are eight
#: times cheaper than workqueue's, see :mod:`fastcnn.kernels._small`) two threads
#: win only from about 2**18 elements.
BIAS_SERIAL_WORK = 1 << 21


@serial_below(0, BIAS_SERIAL_WORK)
@parallel_kernel
def add_bias_rows(y, bias):
    """Add ``bias`` to every row of ``y`` in place.

    Parameters
    ----------
    y : numpy.ndarray, shape (rows, out_features)
        The product ``x @ weight.T``, C-contiguous.
    bias : numpy.ndarray, shape (out_features,)
        Same dtype as ``y``.
    """
    rows, out_features = y.shape
    # Each iteration owns row i of y.
    for i in prange(rows):
        for j in range(out_features):
            y[i, j] += bias[j]


@serial_below(0, BIAS_SERIAL_WORK)
@parallel_kernel
def sum_rows_into(grad_output, grad_bias):
    """Write the column sums of ``grad_output`` to ``grad_bias``.

    Parameters
    ----------
    grad_output : numpy.ndarray, shape (rows, out_features)
        C-contiguous.
    grad_bias : numpy.ndarray, shape (out_features,)
        Output: ``grad_bias[j] = sum_i grad_output[i, j]``, summed over ``i`` in
        increasing order.
    """
    rows, out_features = grad_output.shape
    blocks = (out_features + FEATURE_BLOCK - 1) // FEATURE_BLOCK
    # Each iteration owns one block of FEATURE_BLOCK entries of grad_bias.
    for b in prange(blocks):
        start = b * FEATURE_BLOCK
        stop = min(start + FEATURE_BLOCK, out_features)
        for j in range(start, stop):
            grad_bias[j] = 0
        for i in range(rows):
            for j in range(start, stop):
                grad_bias[j] += grad_output[i, j]
