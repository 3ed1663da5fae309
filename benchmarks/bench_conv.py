"""Benchmarks of conv2d forward and backward: fastcnn, the naive reference, PyTorch.

Each group ``conv2d_forward:<workload>`` / ``conv2d_backward:<workload>`` times the
three implementations on the same float32 data, fastcnn both allocating afresh and
reusing a Workspace. The backward benchmarks time the backward pass alone:
fastcnn reuses one forward context, PyTorch one retained autograd graph.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import torch_or_skip

from fastcnn.functional import Workspace
from fastcnn.functional.conv import conv2d, conv2d_backward, conv2d_forward
from fastcnn.reference import conv as reference

#: name -> input shape (N, C, H, W), output channels, square kernel, stride, padding
WORKLOADS = {
    "conv_first": {
        "x": (64, 1, 28, 28),
        "c_out": 16,
        "kernel": 3,
        "stride": 1,
        "padding": 1,
    },
    "conv_mid": {
        "x": (64, 16, 14, 14),
        "c_out": 32,
        "kernel": 3,
        "stride": 1,
        "padding": 1,
    },
    "conv_cifar": {
        "x": (32, 64, 32, 32),
        "c_out": 64,
        "kernel": 3,
        "stride": 1,
        "padding": 1,
    },
    "conv_stride2": {
        "x": (32, 32, 32, 32),
        "c_out": 64,
        "kernel": 3,
        "stride": 2,
        "padding": 1,
    },
    "conv_5x5": {
        "x": (64, 6, 14, 14),
        "c_out": 16,
        "kernel": 5,
        "stride": 1,
        "padding": 0,
    },
    # The two convolutions of fastcnn.nets.lenet() at batch 64.
    "lenet_conv1": {
        "x": (64, 1, 28, 28),
        "c_out": 8,
        "kernel": 3,
        "stride": 1,
        "padding": 1,
    },
    "lenet_conv2": {
        "x": (64, 8, 14, 14),
        "c_out": 16,
        "kernel": 3,
        "stride": 1,
        "padding": 1,
    },
}

# The reference loops in Python over every output element: seconds per call.
REFERENCE_ROUNDS = 3


def _data(name: str) -> dict:
    """Seeded float32 arrays and arguments of one workload."""
    spec = WORKLOADS[name]
    rng = np.random.default_rng(2024)
    c_in = spec["x"][1]
    kernel = spec["kernel"]
    x = rng.standard_normal(spec["x"], dtype=np.float32)
    weight = rng.standard_normal(
        (spec["c_out"], c_in, kernel, kernel), dtype=np.float32
    )
    weight /= np.float32(np.sqrt(c_in * kernel * kernel))
    bias = rng.standard_normal(spec["c_out"], dtype=np.float32)
    args = {"stride": spec["stride"], "padding": spec["padding"]}
    y = conv2d(x, weight, bias, **args)  # also compiles the kernels
    grad_output = rng.standard_normal(y.shape, dtype=np.float32)
    return {"x": x, "weight": weight, "bias": bias, "args": args, "grad": grad_output}


def _torch_setup(name: str):
    torch = torch_or_skip()
    data = _data(name)
    tensors = [
        torch.from_numpy(data[key]).requires_grad_() for key in ("x", "weight", "bias")
    ]
    return torch, data, tensors


@pytest.mark.parametrize("name", WORKLOADS)
def test_forward_fastcnn(benchmark, name):
    benchmark.group = f"conv2d_forward:{name}"
    data = _data(name)
    benchmark(conv2d, data["x"], data["weight"], data["bias"], **data["args"])


@pytest.mark.parametrize("name", WORKLOADS)
def test_forward_fastcnn_workspace(benchmark, name):
    benchmark.group = f"conv2d_forward:{name}"
    data = _data(name)
    ws = Workspace()
    conv2d(data["x"], data["weight"], data["bias"], **data["args"], workspace=ws)
    benchmark(
        conv2d, data["x"], data["weight"], data["bias"], **data["args"], workspace=ws
    )


@pytest.mark.parametrize("name", WORKLOADS)
def test_forward_reference(benchmark, name):
    benchmark.group = f"conv2d_forward:{name}"
    data = _data(name)
    benchmark.pedantic(
        reference.conv2d,
        args=(data["x"], data["weight"], data["bias"]),
        kwargs=data["args"],
        rounds=REFERENCE_ROUNDS,
        iterations=1,
    )


@pytest.mark.parametrize("name", WORKLOADS)
def test_forward_torch(benchmark, name):
    benchmark.group = f"conv2d_forward:{name}"
    torch, data, (x, weight, bias) = _torch_setup(name)
    conv = torch.nn.functional.conv2d

    def forward():
        with torch.no_grad():
            return conv(x, weight, bias, **data["args"])

    forward()
    benchmark(forward)


@pytest.mark.parametrize("name", WORKLOADS)
def test_backward_fastcnn(benchmark, name):
    benchmark.group = f"conv2d_backward:{name}"
    data = _data(name)
    _, ctx = conv2d_forward(data["x"], data["weight"], data["bias"], **data["args"])
    conv2d_backward(data["grad"], ctx)
    benchmark(conv2d_backward, data["grad"], ctx)


@pytest.mark.parametrize("name", WORKLOADS)
def test_backward_fastcnn_workspace(benchmark, name):
    benchmark.group = f"conv2d_backward:{name}"
    data = _data(name)
    ws = Workspace()
    _, ctx = conv2d_forward(
        data["x"], data["weight"], data["bias"], **data["args"], workspace=ws
    )
    conv2d_backward(data["grad"], ctx)
    benchmark(conv2d_backward, data["grad"], ctx)


@pytest.mark.parametrize("name", WORKLOADS)
def test_backward_reference(benchmark, name):
    benchmark.group = f"conv2d_backward:{name}"
    data = _data(name)
    benchmark.pedantic(
        reference.conv2d_backward,
        args=(data["grad"], data["x"], data["weight"], data["bias"]),
        kwargs=data["args"],
        rounds=REFERENCE_ROUNDS,
        iterations=1,
    )


@pytest.mark.parametrize("name", WORKLOADS)
def test_backward_torch(benchmark, name):
    benchmark.group = f"conv2d_backward:{name}"
    torch, data, tensors = _torch_setup(name)
    y = torch.nn.functional.conv2d(*tensors, **data["args"])
    grad = torch.from_numpy(data["grad"])

    def backward():
        return torch.autograd.grad(y, tensors, grad, retain_graph=True)

    backward()
    benchmark(backward)
