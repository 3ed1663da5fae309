"""Parallel kernels that run single-threaded when their work is small.

Starting a parallel region (waking Numba's threads, handing out iterations and
waiting for the last one) costs tens of microseconds, more than a whole small call
takes on one thread: a batch of one image runs some twenty such kernels per
training step. :func:`serial_below` gives a parallel kernel a single-threaded
twin, a second compile of the same Python function, used when the array that
measures the kernel's work has fewer than :data:`SERIAL_WORK` elements.

Every ``prange`` iteration of a fastcnn kernel owns what it writes, so the twin,
which runs the iterations in order on one thread, computes the same values; where a
loop sums with reassociation, two compiles may vectorise it differently and differ
in the last bits (which compile runs depends on the size of the call, never on the
thread count). The twin is compiled under its own name (``<kernel>_serial``), so
that the on-disk cache never hands the parallel compile to the serial one or the
other way round (cache entries are told apart by name and argument types, not by
compile options).
"""

from __future__ import annotations

import types
from collections.abc import Callable
from typing import Any

import numba

from fastcnn import _config
from fastcnn._config import serial_kernel

#: Elements of the work-measuring array below which the serial twin runs.
SERIAL_WORK = 1 << 15

#: The thresholds above are measured on the ``workqueue`` layer, which wakes its
#: threads for every region (about 100 us on a virtual machine). TBB and OpenMP
#: start a region in a few microseconds, and parallel calls pay from about this
#: many times less work: measured with TBB on two cores, element-wise kernels from
#: 2**15 elements, the direct convolution from 4 samples of 3136 outputs.
CHEAP_LAUNCH_DIVISOR = 8


def launch_threshold(threshold: int) -> int:
    """Scale a serial threshold measured on ``workqueue`` to this process's layer.

    Parameters
    ----------
    threshold : int
        Elements below which a kernel runs serially on the ``workqueue`` layer.

    Returns
    -------
    int
        ``threshold`` on ``workqueue``, ``threshold // CHEAP_LAUNCH_DIVISOR`` on
        the layers that start parallel regions cheaply.
    """
    if str(numba.config.THREADING_LAYER).lower() == "workqueue":
        return threshold
    return threshold // CHEAP_LAUNCH_DIVISOR


class SizedKernel:
    """A parallel kernel and its serial twin, chosen per call by the work's size.

    Attributes
    ----------
    dispatcher : numba.core.dispatcher.Dispatcher
        The parallel compile (as on the wrappers of ``parallel_kernel``).
    serial : numba.core.dispatcher.Dispatcher
        The single-threaded compile.
    py_func : callable
        The Python source of both.
    """

    def __init__(
        self,
        kernel: Callable,
        work_arg: int,
        threshold: int = SERIAL_WORK,
        extent_arg: int | None = None,
    ) -> None:
        source = kernel.py_func
        twin = types.FunctionType(
            source.__code__,
            source.__globals__,
            f"{source.__name__}_serial",
            source.__defaults__,
            source.__closure__,
        )
        twin.__qualname__ = f"{source.__qualname__}_serial"
        twin.__module__ = source.__module__
        twin.__doc__ = source.__doc__
        self.parallel = kernel
        self.dispatcher = kernel.dispatcher
        self.serial = serial_kernel(twin)
        self.py_func = source
        self.work_arg = work_arg
        self.threshold = launch_threshold(threshold)
        self.extent_arg = extent_arg
        self.__name__ = source.__name__
        self.__qualname__ = source.__qualname__
        self.__doc__ = source.__doc__
        self.__module__ = source.__module__

    def __call__(self, *args: Any) -> Any:
        if (
            args[self.work_arg].size < self.threshold
            or (self.extent_arg is not None and len(args[self.extent_arg]) < 2)
            or _config.SERIAL_ONLY
        ):
            return self.serial(*args)
        return self.parallel(*args)

    def __repr__(self) -> str:
        return f"<SizedKernel {self.__module__}.{self.__qualname__}>"


def serial_below(
    work_arg: int, threshold: int = SERIAL_WORK, extent_arg: int | None = None
) -> Callable[[Callable], SizedKernel]:
    """Decorate a ``parallel_kernel`` to run serially when its work is small.

    Parameters
    ----------
    work_arg : int
        Position of the array argument whose size measures the call's work
        (usually the output).
    threshold : int, default SERIAL_WORK
        Elements of that array below which the serial twin runs on the
        ``workqueue`` layer (scaled by :func:`launch_threshold` on the others).
        Kernels doing little per element (a copy, a comparison) need more
        elements than :data:`SERIAL_WORK` before two threads pay for the launch.
    extent_arg : int, optional
        Position of the array whose first axis the ``prange`` loop runs over
        (the samples, the shares): with a single entry there is nothing to share
        out, and the serial twin runs whatever the work.
    """

    def decorate(kernel: Callable) -> SizedKernel:
        return SizedKernel(kernel, work_arg, threshold, extent_arg)

    return decorate
