"""Numba settings for every fastcnn kernel, in one place.

Kernels never pass ``fastmath=``, ``parallel=`` or ``cache=`` themselves; they are
decorated with :func:`parallel_kernel` or :func:`serial_kernel` from this module.

Fast-math flags
    ``reassoc``, ``contract``, ``nsz`` and ``arcp`` let LLVM vectorise reductions
    and fuse multiply-adds. ``nnan`` and ``ninf`` are never set, so NaN and inf
    propagate exactly as IEEE 754 says; ``afn`` is left out so ``exp``/``log``
    keep full precision in float64.

Threading layer
    Unless ``NUMBA_THREADING_LAYER`` is set, fastcnn runs its parallel kernels on
    Intel TBB when the ``tbb`` package is installed (``pip install fastcnn[tbb]``;
    the ``train`` extra includes it) and on Numba's own ``workqueue`` layer
    otherwise; never on GNU OpenMP, which a forked child cannot use. Both chosen
    layers survive ``fork``. TBB starts a parallel region in microseconds where
    ``workqueue``, which puts its threads to sleep after every region, needs a
    wake-up that costs about 100 us on a virtual machine: the kernels of a training
    step are too short for that. Results are the same on either layer (every
    ``prange`` iteration owns what it writes). ``workqueue`` must not launch two
    parallel regions at once, so every parallel kernel call holds
    :data:`KERNEL_LOCK`, whichever layer runs; calls from several Python threads
    are therefore serialised, each of them still using all of Numba's threads. A
    forked child gets a fresh, unheld lock, even when another thread of the parent
    held it at the fork.

Thread counts
    :func:`set_num_threads` sets the Numba threads of the calling Python thread
    only; it leaves the BLAS thread pool behind NumPy's matrix products alone.
    OpenBLAS's results change in the last bits with its own thread count, so a
    fastcnn setting that resized it would make ``conv2d`` and ``linear`` give
    different bits for different fastcnn thread counts; every Numba kernel gives
    the same bits for any thread count. ``docs/threading.md`` has the details.

Caching
    Compiled kernels are cached on disk (``__pycache__`` beside the module, or
    ``NUMBA_CACHE_DIR``). Where no cache location is writable, a read-only install
    with an unwritable home for instance, kernels are compiled in memory on every
    run instead of failing at import. A cache entry is found again by the hash of
    its kernel's source file and the argument types, not by the compile options:
    the options in this module (:data:`FASTMATH`, ``error_model``) are constants,
    and changing them needs the cached ``*.nbi``/``*.nbc`` files deleted.

Bounds checking
    Numba checks no index inside a ``prange`` loop body, even with
    ``NUMBA_BOUNDSCHECK=1``. With bounds checking on, parallel kernels are
    therefore compiled serially (``prange`` runs as ``range``, every access
    checked), and nothing is cached: a checked kernel is never reused by an
    unchecked run, nor an unchecked one by a checked run.
"""

from __future__ import annotations

import ctypes
import functools
import os
import sys
import threading
import weakref
from collections.abc import Callable
from typing import Any

import numba

from fastcnn._validation import check_int

FASTMATH: frozenset[str] = frozenset({"reassoc", "contract", "nsz", "arcp"})

#: The oldest TBB interface version Numba's TBB layer accepts.
_TBB_INTERFACE_MINIMUM = 12060


def _tbb_loads() -> bool:
    """Whether Numba's TBB threading layer can be loaded in this process.

    The ``tbb`` wheel puts ``libtbb`` in the environment's ``lib`` folder, which
    the dynamic loader does not search in a virtual environment; loading it from
    there by path first lets Numba's TBB layer find it by name. Numba needs TBB
    2021.6 or newer (interface version 12060). Importing Numba's layer module
    starts no threads.
    """
    names = {"linux": "libtbb.so.12", "darwin": "libtbb.12.dylib"}
    name = names.get(sys.platform)
    if name is None:
        return False
    bundled = os.path.join(sys.prefix, "lib", name)
    try:
        libtbb = ctypes.CDLL(bundled if os.path.exists(bundled) else name)
        libtbb.TBB_runtime_interface_version.restype = ctypes.c_int
        if libtbb.TBB_runtime_interface_version() < _TBB_INTERFACE_MINIMUM:
            return False
        from numba.np.ufunc import tbbpool  # noqa: F401
    except (ImportError, OSError, AttributeError):
        return False
    return True


#: The threading layer fastcnn asks Numba for, unless NUMBA_THREADING_LAYER is set.
PREFERRED_LAYER = "tbb" if _tbb_loads() else "workqueue"

if "NUMBA_THREADING_LAYER" not in os.environ:
    numba.config.THREADING_LAYER = PREFERRED_LAYER

#: Held for the duration of every parallel kernel call (see the module docstring).
KERNEL_LOCK = threading.RLock()


#: True in a child forked while another thread of its parent was attached to TBB
#: (it had run a parallel kernel and was still alive). TBB cannot shut its
#: workers down for such a fork ("Unable to join threads to shut down before
#: fork()"), and a parallel region in the child may then never end; the child
#: therefore runs every kernel's single-threaded twin instead.
SERIAL_ONLY = False

# Python threads that have run a parallel kernel: TBB keeps each attached until
# it ends.
_kernel_threads: weakref.WeakSet[threading.Thread] = weakref.WeakSet()
_this_thread = threading.local()
_fork_unsafe = False


def _note_kernel_thread() -> None:
    _this_thread.noted = True
    _kernel_threads.add(threading.current_thread())


def _before_fork() -> None:
    global _fork_unsafe
    try:
        layer = numba.threading_layer()
    except ValueError:  # no parallel region has run yet
        layer = None
    me = threading.current_thread()
    _fork_unsafe = layer == "tbb" and any(
        thread is not me and thread.is_alive() for thread in list(_kernel_threads)
    )


def _in_child_after_fork() -> None:
    # The child has only the forking thread: a lock held by any other thread of
    # the parent would stay held for ever, so the child starts with a new one.
    global KERNEL_LOCK, SERIAL_ONLY, _this_thread
    KERNEL_LOCK = threading.RLock()
    SERIAL_ONLY = SERIAL_ONLY or _fork_unsafe
    _kernel_threads.clear()
    _this_thread = threading.local()


os.register_at_fork(before=_before_fork, after_in_child=_in_child_after_fork)


def _njit(fn: Callable, parallel: bool) -> Any:
    checked = bool(numba.config.BOUNDSCHECK)
    options = dict(
        parallel=parallel and not checked,
        fastmath=set(FASTMATH),
        error_model="numpy",
    )
    if checked:
        return numba.njit(cache=False, **options)(fn)
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
        if not getattr(_this_thread, "noted", False):
            _note_kernel_thread()
        with KERNEL_LOCK:
            return dispatcher(*args)

    locked.dispatcher = dispatcher
    locked.py_func = fn
    return locked


def get_num_threads() -> int:
    """Return the number of threads fastcnn's parallel kernels use."""
    return numba.get_num_threads()


def set_num_threads(n: int) -> None:
    """Set the number of threads fastcnn's Numba kernels use in this Python thread.

    Parameters
    ----------
    n : int
        Thread count, between 1 and ``numba.config.NUMBA_NUM_THREADS``; a
        Python or NumPy integer (not a bool).

    Notes
    -----
    Like ``numba.set_num_threads``, the setting belongs to the calling Python
    thread; other threads keep their own (all of Numba's threads by default).
    Results are bit-identical for every ``n``.

    The BLAS thread pool behind NumPy's matrix products (used by ``conv2d`` and
    ``linear``) is not changed: OpenBLAS's results depend on its own thread count,
    so changing it with ``n`` would make results depend on ``n``. Limit it, if
    needed, once for the whole process (``OPENBLAS_NUM_THREADS`` before Python
    starts, or ``threadpoolctl.threadpool_limits``).
    """
    n = check_int(n, "n")  # NumPy integers are accepted, bools refused
    limit = numba.config.NUMBA_NUM_THREADS
    if not 1 <= n <= limit:
        raise ValueError(f"n must be between 1 and {limit}, got {n}")
    numba.set_num_threads(n)
