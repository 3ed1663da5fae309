"""Matrix products on one BLAS thread.

OpenBLAS's worker threads keep spinning for a while after every multi-threaded
product (up to a tenth of a second by default) before they go to sleep. On a
machine with as many cores as Numba has threads they take those cores from the
Numba kernels that run next: measured on two cores, a LeNet training step at
batch 256, whose only BLAS products are those of its two dense layers, took 14.6
ms with those products on two BLAS threads and 8.3 ms with them on one. The
products of a small CNN's dense layers gain little from a second BLAS thread, so
:func:`single_blas_thread` runs them on one.

It needs ``threadpoolctl`` (part of the ``train`` extra) to reach the BLAS
library; without it the BLAS pool is left as it is. The previous thread count is
restored when the last of the overlapping calls (from several Python threads)
leaves, so NumPy code outside fastcnn keeps its BLAS threads.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

#: Multiply-adds (``m * n * k``) up to which OpenBLAS runs a product on one
#: thread by itself (65536 times its default GEMM_MULTITHREAD_THRESHOLD of 4):
#: smaller products need no limit.
BLAS_SINGLE_THREAD_WORK = 65536 * 4

_lock = threading.Lock()
_depth = 0
_saved: list[tuple[Any, int]] = []
_libraries: list[Any] | None = None


def _blas_libraries() -> list[Any]:
    """The BLAS libraries loaded in the process, as threadpoolctl controllers."""
    global _libraries
    if _libraries is None:
        try:
            from threadpoolctl import ThreadpoolController
        except ImportError:
            _libraries = []
        else:
            controller = ThreadpoolController().select(user_api="blas")
            _libraries = list(controller.lib_controllers)
    return _libraries


@contextmanager
def single_blas_thread(work: int) -> Iterator[None]:
    """Run the products inside on one BLAS thread.

    Parameters
    ----------
    work : int
        Multiply-adds of the product (``m * n * k``). Up to
        :data:`BLAS_SINGLE_THREAD_WORK` OpenBLAS uses one thread anyway, and the
        pool is not touched.
    """
    global _depth
    if work <= BLAS_SINGLE_THREAD_WORK or not _blas_libraries():
        yield
        return
    with _lock:
        if _depth == 0:
            _saved[:] = [(lib, lib.num_threads) for lib in _blas_libraries()]
            for lib, threads in _saved:
                if threads != 1:
                    lib.set_num_threads(1)
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                for lib, threads in _saved:
                    if threads != 1:
                        lib.set_num_threads(threads)
