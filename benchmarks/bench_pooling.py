"""Benchmarks of 2-d max and average pooling, forward and backward.

Each group times fastcnn (allocating its outputs, and with a reused workspace)
beside the naive reference and PyTorch on float32 NCHW input. Backward groups
time the backward pass alone, from a context (fastcnn) or a graph (PyTorch)
built once by a forward pass outside the timing. The forward groups also time
``np.copyto`` of the input, the memory-bandwidth yardstick. The "pool" workload
takes fastcnn's 2x2 kernels, "overlap" (3x3 windows, stride 2) the general ones.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from conftest import torch_or_skip

from fastcnn.functional import Workspace
from fastcnn.functional import pooling as F
from fastcnn.reference import pooling as R

#: name -> input shape (N, C, H, W) and window arguments
WORKLOADS: dict[str, dict[str, Any]] = {
    "pool": {"shape": (64, 32, 28, 28), "kernel_size": 2, "stride": 2},
    "overlap": {"shape": (32, 16, 28, 28), "kernel_size": 3, "stride": 2},
}

OPS = ["max_pool2d", "avg_pool2d"]

workloads = pytest.mark.parametrize("name", list(WORKLOADS))
ops = pytest.mark.parametrize("op", OPS)


def make_input(name: str) -> tuple[np.ndarray, tuple[int, int]]:
    """Return the float32 input of workload ``name`` and its (kernel, stride)."""
    workload = WORKLOADS[name]
    rng = np.random.default_rng(11)
    x = rng.normal(size=workload["shape"]).astype(np.float32)
    return x, (workload["kernel_size"], workload["stride"])


def make_grad_output(x: np.ndarray, window: tuple[int, int]) -> np.ndarray:
    y = F.max_pool2d(x, *window)
    return np.random.default_rng(12).normal(size=y.shape).astype(np.float32)


# ---------------------------------------------------------------- forward


@ops
@workloads
def test_forward_fastcnn(benchmark, op, name):
    benchmark.group = f"{op}_forward:{name}"
    x, window = make_input(name)
    forward = getattr(F, f"{op}_forward")
    forward(x, *window)

    benchmark(forward, x, *window)


@ops
@workloads
def test_forward_fastcnn_workspace(benchmark, op, name):
    benchmark.group = f"{op}_forward:{name}"
    x, window = make_input(name)
    forward = getattr(F, f"{op}_forward")
    workspace = Workspace()
    forward(x, *window, workspace=workspace)

    benchmark(lambda: forward(x, *window, workspace=workspace))


@ops
@workloads
def test_forward_reference(benchmark, op, name):
    benchmark.group = f"{op}_forward:{name}"
    x, window = make_input(name)

    benchmark.pedantic(getattr(R, op), (x, *window), rounds=3, iterations=1)


@ops
@workloads
def test_forward_torch(benchmark, op, name):
    torch = torch_or_skip()
    benchmark.group = f"{op}_forward:{name}"
    x, window = make_input(name)
    xt = torch.from_numpy(x)
    forward = getattr(torch.nn.functional, op)

    with torch.no_grad():
        forward(xt, *window)
        benchmark(forward, xt, *window)


@ops
@workloads
def test_forward_copy_yardstick(benchmark, op, name):
    benchmark.group = f"{op}_forward:{name}"
    x, _ = make_input(name)
    out = np.empty_like(x)
    np.copyto(out, x)

    benchmark(np.copyto, out, x)


# ---------------------------------------------------------------- backward


@ops
@workloads
def test_backward_fastcnn(benchmark, op, name):
    benchmark.group = f"{op}_backward:{name}"
    x, window = make_input(name)
    grad_output = make_grad_output(x, window)
    _, ctx = getattr(F, f"{op}_forward")(x, *window)
    backward = getattr(F, f"{op}_backward")
    backward(grad_output, ctx)

    benchmark(backward, grad_output, ctx)


@ops
@workloads
def test_backward_fastcnn_workspace(benchmark, op, name):
    benchmark.group = f"{op}_backward:{name}"
    x, window = make_input(name)
    grad_output = make_grad_output(x, window)
    _, ctx = getattr(F, f"{op}_forward")(x, *window, workspace=Workspace())
    backward = getattr(F, f"{op}_backward")
    backward(grad_output, ctx)

    benchmark(backward, grad_output, ctx)


@ops
@workloads
def test_backward_reference(benchmark, op, name):
    benchmark.group = f"{op}_backward:{name}"
    x, window = make_input(name)
    grad_output = make_grad_output(x, window)
    # The max-pool reference finds the maxima again; the average needs the shape.
    second = x if op == "max_pool2d" else x.shape

    benchmark.pedantic(
        getattr(R, f"{op}_backward"),
        (grad_output, second, *window),
        rounds=3,
        iterations=1,
    )


@ops
@workloads
def test_backward_torch(benchmark, op, name):
    torch = torch_or_skip()
    benchmark.group = f"{op}_backward:{name}"
    x, window = make_input(name)
    grad_output = torch.from_numpy(make_grad_output(x, window))
    xt = torch.from_numpy(x).requires_grad_(True)
    yt = getattr(torch.nn.functional, op)(xt, *window)

    def backward():
        return torch.autograd.grad(yt, xt, grad_output, retain_graph=True)

    backward()
    benchmark(backward)
