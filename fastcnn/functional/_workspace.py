"""Arrays kept between calls, so that repeated calls allocate nothing.

A training loop calls the same operations with the same shapes thousands of
times. Allocating their outputs and scratch arrays afresh each time costs more
than it seems: large NumPy arrays come from ``mmap``, and the operating system
gives each new page to the process through a page fault, which on a virtual
machine can cost more than the arithmetic that fills the page. A
:class:`Workspace` hands out the same memory again instead.
"""

from __future__ import annotations

from math import prod

import numpy as np

__all__ = ["Workspace"]


class Workspace:
    """Named arrays that the functional operations reuse from call to call.

    Pass one to a functional operation's ``workspace`` argument and every array
    it would allocate (scratch, outputs and gradients) is taken from the
    workspace instead. Each name keeps a flat buffer that only grows: a later
    call needing fewer elements gets a view of the buffer's leading part, a
    call needing more replaces the buffer.

    The arrays returned by an operation called with a workspace are views of
    its buffers, overwritten by the next call of the same operation with the
    same workspace. Copy what you keep. A workspace is not thread-safe: give
    each thread its own.

    Examples
    --------
    >>> import numpy as np
    >>> from fastcnn.functional import Workspace, relu
    >>> ws = Workspace()
    >>> a = relu(np.array([-1.0, 2.0]), workspace=ws)
    >>> b = relu(np.array([3.0, -4.0]), workspace=ws)
    >>> np.shares_memory(a, b)
    True
    """

    def __init__(self) -> None:
        self._buffers: dict[str, np.ndarray] = {}
        # How many times each name has been taken: a forward context records
        # the counts of the arrays it keeps, and its backward pass refuses to
        # run once a later call has taken (and so overwritten) one of them.
        self._takes: dict[str, int] = {}

    def take(self, name: str, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        """An uninitialised C-contiguous array of ``shape`` and ``dtype``.

        Parameters
        ----------
        name : str
            The buffer's key; callers use ``"<operation>.<array>"``, so that no
            two arrays alive at the same time share a name.
        shape : tuple of int
            Shape of the array returned.
        dtype : numpy.dtype
            Its dtype. A buffer of another dtype is replaced.

        Returns
        -------
        numpy.ndarray
            A view of the named buffer; its contents are whatever the buffer
            held.
        """
        dtype = np.dtype(dtype)
        size = prod(shape)
        buffer = self._buffers.get(name)
        if buffer is None or buffer.dtype != dtype or buffer.size < size:
            buffer = np.empty(size, dtype=dtype)
            self._buffers[name] = buffer
        self._takes[name] = self._takes.get(name, 0) + 1
        return buffer[:size].reshape(shape)

    def clear(self) -> None:
        """Drop every buffer (the memory is freed once nothing else holds it)."""
        self._buffers.clear()
        self._takes = {name: count + 1 for name, count in self._takes.items()}

    @property
    def nbytes(self) -> int:
        """Bytes held by the workspace's buffers."""
        return sum(buffer.nbytes for buffer in self._buffers.values())

    def __repr__(self) -> str:
        return f"Workspace({len(self._buffers)} buffers, {self.nbytes} bytes)"


def take(
    workspace: Workspace | None, name: str, shape: tuple[int, ...], dtype: np.dtype
) -> np.ndarray:
    """``workspace.take(...)``, or a new array when ``workspace`` is None."""
    if workspace is None:
        return np.empty(shape, dtype=dtype)
    return workspace.take(name, shape, dtype)


def take_zeros(
    workspace: Workspace | None, name: str, shape: tuple[int, ...], dtype: np.dtype
) -> np.ndarray:
    """Like :func:`take`, filled with zeros."""
    if workspace is None:
        return np.zeros(shape, dtype=dtype)
    array = workspace.take(name, shape, dtype)
    array.fill(0)
    return array


def check_workspace(workspace: object) -> Workspace | None:
    """Return ``workspace`` if it is None or a Workspace, else raise TypeError."""
    if workspace is not None and not isinstance(workspace, Workspace):
        raise TypeError(
            f"workspace must be a fastcnn.functional.Workspace or None, "
            f"got {type(workspace).__name__}"
        )
    return workspace


def stamp(workspace: Workspace | None, *names: str) -> tuple | None:
    """Record which takes of ``names`` a forward context's arrays come from."""
    if workspace is None:
        return None
    return names, tuple(workspace._takes.get(name, 0) for name in names)


def check_current(workspace: Workspace | None, recorded: tuple | None, op: str) -> None:
    """Raise RuntimeError if a later call has overwritten a context's arrays.

    ``recorded`` is what :func:`stamp` returned when the forward pass of ``op``
    took them.
    """
    if workspace is None or recorded is None:
        return
    names, counts = recorded
    if tuple(workspace._takes.get(name, 0) for name in names) != counts:
        raise RuntimeError(
            f"ctx is out of date: a later {op}_forward call with the same "
            "workspace has overwritten the arrays it refers to; run the backward "
            "pass before the next forward call, or give each call its own Workspace"
        )
