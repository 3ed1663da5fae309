"""Numba kernel of the SGD update, one pass over a parameter.

The update of :class:`fastcnn.optim.SGD` written with NumPy takes five passes
over each parameter and allocates two temporaries; this kernel reads the
parameter, its gradient and its momentum buffer once and writes them in place.
Parameters of a small CNN are small, so the kernel is single-threaded.
"""

from __future__ import annotations

from fastcnn._config import serial_kernel


@serial_kernel
def sgd_step(param, grad, buf, lr, momentum, dampening, weight_decay, nesterov, first):
    """Apply one SGD step to ``param`` in place, as ``torch.optim.SGD`` does.

    Parameters
    ----------
    param : numpy.ndarray, shape (size,)
        The parameter, flat and C-contiguous; updated in place.
    grad : numpy.ndarray, shape (size,)
        Its gradient, same dtype.
    buf : numpy.ndarray, shape (size,)
        The momentum buffer, same dtype; written when ``momentum != 0`` (its
        contents are ignored when ``first`` is True), unused otherwise.
    lr, momentum, dampening, weight_decay : scalar of the parameter's dtype
        The hyperparameters.
    nesterov : bool
        Nesterov momentum.
    first : bool
        Whether this is the buffer's first step: it then starts as the
        (decayed) gradient itself, without dampening.
    """
    keep = 1 - dampening
    for k in range(param.size):
        p = param[k]
        g = grad[k]
        if weight_decay != 0:
            g = g + weight_decay * p
        if momentum != 0:
            b = g if first else momentum * buf[k] + keep * g
            buf[k] = b
            g = g + momentum * b if nesterov else b
        param[k] = p - lr * g
