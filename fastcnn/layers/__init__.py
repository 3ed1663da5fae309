"""Layers: objects that hold parameters and what their backward pass needs.

Every layer follows the contract of :class:`fastcnn.layers.base.Layer`:
``forward(input)``, ``backward(output_gradient, learning_rate=None)`` returning
the input gradient, ``params``/``grads`` dicts, ``get_config()`` and
``output_shape(input_shape)``.
"""

from fastcnn.layers.activations import LeakyReLU, ReLU, Sigmoid, Tanh
from fastcnn.layers.base import Layer, as_layer_input
from fastcnn.layers.conv import Conv2D
from fastcnn.layers.dense import Dense
from fastcnn.layers.dropout import Dropout
from fastcnn.layers.normalize import Normalize
from fastcnn.layers.pooling import AvgPool2D, MaxPool2D
from fastcnn.layers.reshape import Flatten, Reshape
from fastcnn.layers.softmax import Softmax, SoftmaxCrossEntropy

__all__ = [
    "AvgPool2D",
    "Conv2D",
    "Dense",
    "Dropout",
    "Flatten",
    "Layer",
    "LeakyReLU",
    "MaxPool2D",
    "Normalize",
    "ReLU",
    "Reshape",
    "Sigmoid",
    "Softmax",
    "SoftmaxCrossEntropy",
    "Tanh",
    "as_layer_input",
]
