"""Naive float64 reference of the SGD update.

Written from the update rule of :class:`fastcnn.optim.SGD` (that of
``torch.optim.SGD``), one element at a time; the test oracle for
:func:`fastcnn.kernels.optim.sgd_step`.
"""

from __future__ import annotations

import numpy as np


def sgd_step(
    param: np.ndarray,
    grad: np.ndarray,
    buf: np.ndarray | None,
    lr: float,
    momentum: float = 0.0,
    dampening: float = 0.0,
    weight_decay: float = 0.0,
    nesterov: bool = False,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Return the updated parameter and momentum buffer, in float64.

    ``buf`` is None before the first step with momentum; the buffer returned is
    None when ``momentum == 0``.
    """
    param = np.array(param, dtype=np.float64)
    grad = np.asarray(grad, dtype=np.float64)
    new_buf = None if momentum == 0 else np.empty_like(param)
    for k in np.ndindex(param.shape):
        g = grad[k] + weight_decay * param[k]
        if momentum != 0:
            b = g if buf is None else momentum * float(buf[k]) + (1 - dampening) * g
            new_buf[k] = b
            g = g + momentum * b if nesterov else b
        param[k] -= lr * g
    return param, new_buf
