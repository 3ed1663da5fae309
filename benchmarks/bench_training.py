"""Benchmarks of the ``fastcnn train`` model: a training step and inference.

Groups ``training_step:b<N>`` and ``inference:b<N>`` time fastcnn's LeNet
(``fastcnn.nets.lenet()``, SGD with momentum 0.9, cross-entropy) beside its
PyTorch twin with the same weights, on the same float32 batch of N 28x28 images.
There is no naive reference here: the per-op groups hold those.
"""

from __future__ import annotations

import pytest
from compare import make_models
from conftest import torch_or_skip

BATCHES = [1, 16, 64, 256]
batches = pytest.mark.parametrize("batch", BATCHES)


@batches
def test_training_step_fastcnn(benchmark, batch):
    benchmark.group = f"training_step:b{batch}"
    step = make_models(batch, None)["fast_step"]
    step()

    benchmark(step)


@batches
def test_training_step_torch(benchmark, batch):
    benchmark.group = f"training_step:b{batch}"
    step = make_models(batch, torch_or_skip())["torch_step"]
    step()

    benchmark(step)


@batches
def test_inference_fastcnn(benchmark, batch):
    benchmark.group = f"inference:b{batch}"
    infer = make_models(batch, None)["fast_infer"]
    infer()

    benchmark(infer)


@batches
def test_inference_torch(benchmark, batch):
    benchmark.group = f"inference:b{batch}"
    infer = make_models(batch, torch_or_skip())["torch_infer"]
    infer()

    benchmark(infer)
