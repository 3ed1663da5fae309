"""Naive NumPy references for every kernel, written from the definitions.

Explicit Python loops over output positions, computed in float64: slow and
plainly correct. The test suite uses them as its oracle and the benchmark suite
as its baseline. Import the op modules directly, e.g.
``from fastcnn.reference import conv``; ``conv.conv2d(...)``.
"""

from fastcnn.reference import activations, conv, dense, pooling, softmax

__all__ = ["activations", "conv", "dense", "pooling", "softmax"]
