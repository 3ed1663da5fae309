"""Benchmarks of the dense (linear) layer, forward and backward.

fastcnn (BLAS products plus Numba bias kernels) beside the naive reference and
PyTorch, on float32 data. Backward groups time the backward pass alone: PyTorch
back-propagates through a graph built once, kept with ``retain_graph``.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import torch_or_skip

from fastcnn.functional import dense as F
from fastcnn.reference import dense as R

#: name -> (batch n, in_features, out_features)
WORKLOADS = {"64x800-128": (64, 800, 128)}


def make_inputs(name: str) -> tuple[np.ndarray, ...]:
    n, in_features, out_features = WORKLOADS[name]
    rng = np.random.default_rng(11)
    x = rng.normal(size=(n, in_features)).astype(np.float32)
    weight = (rng.normal(size=(out_features, in_features)) * 0.03).astype(np.float32)
    bias = rng.normal(size=out_features).astype(np.float32)
    grad_output = rng.normal(size=(n, out_features)).astype(np.float32)
    return x, weight, bias, grad_output


workloads = pytest.mark.parametrize("name", list(WORKLOADS))


@workloads
def test_linear_forward_fastcnn(benchmark, name):
    benchmark.group = f"linear_forward:{name}"
    x, weight, bias, _ = make_inputs(name)
    F.linear_forward(x, weight, bias)

    benchmark(F.linear_forward, x, weight, bias)


@workloads
def test_linear_forward_reference(benchmark, name):
    benchmark.group = f"linear_forward:{name}"
    x, weight, bias, _ = make_inputs(name)

    benchmark.pedantic(R.linear, (x, weight, bias), rounds=3, iterations=1)


@workloads
def test_linear_forward_torch(benchmark, name):
    torch = torch_or_skip()
    benchmark.group = f"linear_forward:{name}"
    x, weight, bias, _ = (torch.from_numpy(a) for a in make_inputs(name))

    with torch.no_grad():
        torch.nn.functional.linear(x, weight, bias)
        benchmark(torch.nn.functional.linear, x, weight, bias)


@workloads
def test_linear_backward_fastcnn(benchmark, name):
    benchmark.group = f"linear_backward:{name}"
    x, weight, bias, grad_output = make_inputs(name)
    _, ctx = F.linear_forward(x, weight, bias)
    F.linear_backward(grad_output, ctx)

    benchmark(F.linear_backward, grad_output, ctx)


@workloads
def test_linear_backward_reference(benchmark, name):
    benchmark.group = f"linear_backward:{name}"
    x, weight, bias, grad_output = make_inputs(name)

    benchmark.pedantic(
        R.linear_backward, (grad_output, x, weight, bias), rounds=3, iterations=1
    )


@workloads
def test_linear_backward_torch(benchmark, name):
    torch = torch_or_skip()
    benchmark.group = f"linear_backward:{name}"
    x, weight, bias, grad_output = (torch.from_numpy(a) for a in make_inputs(name))
    inputs = tuple(a.requires_grad_() for a in (x, weight, bias))
    y = torch.nn.functional.linear(*inputs)

    def backward():
        return torch.autograd.grad(y, inputs, grad_output, retain_graph=True)

    backward()
    benchmark(backward)
