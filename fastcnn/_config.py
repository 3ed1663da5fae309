"""Numba settings for every fastcnn kernel, in one place.

Kernels never pass ``fastmath=``, ``parallel=`` or ``cache=`` themselves; they are
decorated with :func:`parallel_kernel` or :func:`serial_kernel` from this module.

Fast-math flags
    ``reassoc``, ``contract``, ``nsz`` and ``arcp`` let LLVM vectorise reductions
    and fuse multiply-adds. ``nnan`` and ``ninf`` are never set, so NaN and inf
    propagate exactly as IEEE 754 says; ``afn`` is left out so ``exp``/``log``
    keep full precision in float64.

Threading layer
    Unless ``NUMBA_THREADING_LAYER`` is set, fastcnn asks Numba for its
    ``workqueue`` layer: it ships with every Numba wheel (results do not depend on
    which optional runtime happens to be installed) and it is safe in a process
    forked after kernels have run, which GNU OpenMP is not. ``workqueue`` must not
    launch two parallel regions at once, so every parallel kernel call holds
    :data:`KERNEL_LOCK`; calls from several Python threads are therefore serialised,
    each of them still using all of Numba's threads.

Caching
    Compiled kernels are cached on disk (``__pycache__`` beside the module, or
    ``NUMBA_CACHE_DIR``). Where no cache location is writable, a read-only install
    with an unwritable home for instance, kernels are compiled in memory on every
    run instead of failing at import.
"""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Callable
from typing import Any

import numba

FASTMATH: frozenset[str] = frozenset({"reassoc", "contract", "nsz", "arcp"})

if "NUMBA_THREADING_LAYER" not in os.environ:
    numba.config.THREADING_LAYER = "workqueue"

#: Held for the duration of every parallel kernel call (see the module docstring).
KERNEL_LOCK = threading.RLock()


def _njit(fn: Callable, parallel: bool) -> Any:
    options = dict(parallel=parallel, fastmath=set(FASTMATH), error_model="numpy")
    try:
        return numba.njit(cache=True, **options)(fn)
    except RuntimeError:
        # Numba found no writable place for its cache: compile in memory instead.
        return numba.njit(cache=False, **options)(fn)


def serial_kernel(fn: Callable) -> Any:
    """Compile ``fn`` as a single-threaded Numba kernel with fastcnn's settings."""
    return _njit(fn, parallel=False)


def parallel_kernel(fn: Callable) -> Callable:
    """Compile ``fn`` as a parallel (``prange``) Numba kernel with fastcnn's settings.

    The returned callable holds :data:`KERNEL_LOCK` while the kernel runs. The
    compiled dispatcher stays reachable as ``.dispatcher`` (and the Python source as
    ``.py_func``) for tests and benchmarks.
    """
    dispatcher = _njit(fn, parallel=True)

    @functools.wraps(fn)
    def locked(*args):
        with KERNEL_LOCK:
            return dispatcher(*args)

    locked.dispatcher = dispatcher
    locked.py_func = fn
    return locked


def get_num_threads() -> int:
    """Return the number of threads fastcnn's parallel kernels use."""
    return numba.get_num_threads()


def set_num_threads(n: int) -> None:
    """Set the number of threads for Numba kernels and, if possible, for BLAS.

    Parameters
    ----------
    n : int
        Thread count, between 1 and ``numba.config.NUMBA_NUM_THREADS``.

    Notes
    -----
    The BLAS thread pool behind NumPy's matrix products (used by ``conv2d`` and
    ``linear``) is limited too when ``threadpoolctl`` is installed (it is part of
    the ``train`` extra).
    """
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"n must be an int, got {type(n).__name__}")
    limit = numba.config.NUMBA_NUM_THREADS
    if not 1 <= n <= limit:
        raise ValueError(f"n must be between 1 and {limit}, got {n}")
    numba.set_num_threads(n)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return
    threadpool_limits(limits=n, user_api="blas")
