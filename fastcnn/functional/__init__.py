"""The functional API: validated, allocating wrappers around the Numba kernels.

Layouts, argument names, defaults and output shapes follow
``torch.nn.functional``; ``docs/pytorch.md`` lists the differences (``x`` for
``input``, ``axis`` for ``dim``, arguments PyTorch has and fastcnn does not).
Every op with a gradient has a pair ``op_forward(...) -> (output, ctx)`` and
``op_backward(grad_output, ctx)``; ``op(...)`` is the forward alone. Inputs must
be float32 or float64 arrays, and the output keeps the input's dtype. Ops that
allocate take an optional ``workspace`` (a :class:`Workspace`) whose buffers they
reuse from call to call instead.
"""

from fastcnn.functional._workspace import Workspace
from fastcnn.functional.activations import (
    leaky_relu,
    leaky_relu_backward,
    relu,
    relu_backward,
    sigmoid,
    sigmoid_backward,
    tanh,
    tanh_backward,
)
from fastcnn.functional.conv import (
    conv2d,
    conv2d_backward,
    conv2d_forward,
    set_winograd,
)
from fastcnn.functional.dense import linear, linear_backward, linear_forward
from fastcnn.functional.pooling import (
    avg_pool2d,
    avg_pool2d_backward,
    avg_pool2d_forward,
    max_pool2d,
    max_pool2d_backward,
    max_pool2d_forward,
)
from fastcnn.functional.softmax import (
    cross_entropy,
    cross_entropy_backward,
    cross_entropy_with_grad,
    log_softmax,
    log_softmax_backward,
    softmax,
    softmax_backward,
)

__all__ = [
    "Workspace",
    "avg_pool2d",
    "avg_pool2d_backward",
    "avg_pool2d_forward",
    "conv2d",
    "conv2d_backward",
    "conv2d_forward",
    "cross_entropy",
    "cross_entropy_backward",
    "cross_entropy_with_grad",
    "leaky_relu",
    "leaky_relu_backward",
    "linear",
    "linear_backward",
    "linear_forward",
    "log_softmax",
    "log_softmax_backward",
    "max_pool2d",
    "max_pool2d_backward",
    "max_pool2d_forward",
    "relu",
    "relu_backward",
    "set_winograd",
    "sigmoid",
    "sigmoid_backward",
    "softmax",
    "softmax_backward",
    "tanh",
    "tanh_backward",
]
