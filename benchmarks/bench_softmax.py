"""Benchmarks of softmax and the fused softmax cross-entropy.

Each group times fastcnn beside the naive reference and PyTorch on float32 logits
with integer class targets. ``cross_entropy_backward`` groups time the loss and
its gradient together: fastcnn's fused ``cross_entropy_with_grad``, the reference's
two functions, PyTorch's forward plus ``backward``; fastcnn also with a
``Workspace``, as a training loop calls it.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import torch_or_skip

import fastcnn.functional as F
from fastcnn.reference import softmax as R

#: name -> (rows n, classes k)
WORKLOADS = {"4096x10": (4096, 10), "256x1000": (256, 1000)}


def make_inputs(name: str) -> tuple[np.ndarray, np.ndarray]:
    n, k = WORKLOADS[name]
    rng = np.random.default_rng(7)
    logits = (rng.normal(size=(n, k)) * 3).astype(np.float32)
    target = rng.integers(0, k, size=n)
    return logits, target


workloads = pytest.mark.parametrize("name", list(WORKLOADS))


@workloads
def test_cross_entropy_forward_fastcnn(benchmark, name):
    benchmark.group = f"cross_entropy_forward:{name}"
    logits, target = make_inputs(name)
    F.cross_entropy(logits, target)

    benchmark(F.cross_entropy, logits, target)


@workloads
def test_cross_entropy_forward_reference(benchmark, name):
    benchmark.group = f"cross_entropy_forward:{name}"
    logits, target = make_inputs(name)

    benchmark.pedantic(R.cross_entropy, (logits, target), rounds=3, iterations=1)


@workloads
def test_cross_entropy_forward_torch(benchmark, name):
    torch = torch_or_skip()
    benchmark.group = f"cross_entropy_forward:{name}"
    logits, target = (torch.from_numpy(a) for a in make_inputs(name))
    cross_entropy = torch.nn.functional.cross_entropy

    with torch.no_grad():
        cross_entropy(logits, target)
        benchmark(cross_entropy, logits, target)


@workloads
def test_cross_entropy_backward_fastcnn(benchmark, name):
    benchmark.group = f"cross_entropy_backward:{name}"
    logits, target = make_inputs(name)
    F.cross_entropy_with_grad(logits, target)

    benchmark(F.cross_entropy_with_grad, logits, target)


@workloads
def test_cross_entropy_backward_fastcnn_workspace(benchmark, name):
    benchmark.group = f"cross_entropy_backward:{name}"
    logits, target = make_inputs(name)
    workspace = F.Workspace()
    F.cross_entropy_with_grad(logits, target, workspace=workspace)

    benchmark(F.cross_entropy_with_grad, logits, target, workspace=workspace)


@workloads
def test_cross_entropy_backward_reference(benchmark, name):
    benchmark.group = f"cross_entropy_backward:{name}"
    logits, target = make_inputs(name)

    def loss_and_grad():
        return R.cross_entropy(logits, target), R.cross_entropy_backward(logits, target)

    benchmark.pedantic(loss_and_grad, rounds=3, iterations=1)


@workloads
def test_cross_entropy_backward_torch(benchmark, name):
    torch = torch_or_skip()
    benchmark.group = f"cross_entropy_backward:{name}"
    logits_np, target_np = make_inputs(name)
    target = torch.from_numpy(target_np)

    def loss_and_grad():
        logits = torch.from_numpy(logits_np).requires_grad_()
        loss = torch.nn.functional.cross_entropy(logits, target)
        loss.backward()
        return loss, logits.grad

    loss_and_grad()
    benchmark(loss_and_grad)


@workloads
def test_softmax_fastcnn(benchmark, name):
    benchmark.group = f"softmax:{name}"
    logits, _ = make_inputs(name)
    F.softmax(logits)

    benchmark(F.softmax, logits)


@workloads
def test_softmax_reference(benchmark, name):
    benchmark.group = f"softmax:{name}"
    logits, _ = make_inputs(name)

    benchmark.pedantic(R.softmax, (logits,), rounds=3, iterations=1)


@workloads
def test_softmax_torch(benchmark, name):
    torch = torch_or_skip()
    benchmark.group = f"softmax:{name}"
    logits = torch.from_numpy(make_inputs(name)[0])

    torch.softmax(logits, -1)
    benchmark(torch.softmax, logits, -1)
