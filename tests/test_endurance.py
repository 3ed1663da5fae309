"""Twenty epochs of training keep memory flat and the loss finite.

Trains the LeNet-style network of ``fastcnn train`` on part of the MNIST test
set, one ``fit`` call per epoch, and measures after every epoch both the memory
tracemalloc sees (Python objects, NumPy buffers and Numba's runtime allocations,
which go through CPython's allocator) and the resident set size. A context,
gradient or scratch buffer kept by mistake from step to step would make both
grow epoch after epoch.
"""

from __future__ import annotations

import gc
import math
import os
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from fastcnn.datasets import load_mnist
from fastcnn.nets import lenet
from fastcnn.optim import Adam

MNIST = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"
EPOCHS = 20
SAMPLES = 2000


def resident_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.slow
def test_twenty_epochs_hold_memory_flat_and_the_loss_finite():
    if not (MNIST / "t10k-images-idx3-ubyte.gz").exists():
        pytest.skip(f"the MNIST test set is not at {MNIST}")
    if not os.path.exists("/proc/self/statm"):
        pytest.skip("needs /proc to read the resident set size")
    x, y = load_mnist("test", data_dir=MNIST, download=False)
    x, y = x[:SAMPLES], y[:SAMPLES]

    model = lenet(rng=0)
    optimizer = Adam(model, lr=2e-3)
    losses, traced, resident = [], [], []
    tracemalloc.start()
    try:
        for epoch in range(EPOCHS):
            history = model.fit(
                x,
                y,
                epochs=epoch + 1,
                initial_epoch=epoch,
                batch_size=64,
                optimizer=optimizer,
                seed=1,
                verbose=0,
            )
            losses.append(history["loss"][0])
            gc.collect()
            traced.append(tracemalloc.get_traced_memory()[0])
            resident.append(resident_bytes())
    finally:
        tracemalloc.stop()

    assert all(math.isfinite(loss) for loss in losses)
    assert losses[-1] < 0.5 * losses[0]  # it did train
    assert np.isfinite(model.predict(x[:100])).all()

    # After the first epoch (compilation, optimiser state, first batches)
    # nothing may accumulate: a leak of one 64-image batch per step would add
    # about 6 MB per epoch here.
    mib = 2**20
    traced_growth = max(traced[1:]) - traced[0]
    resident_growth = max(resident[1:]) - resident[0]
    assert traced_growth < 1 * mib, [round(t / mib, 2) for t in traced]
    assert resident_growth < 32 * mib, [round(r / mib, 1) for r in resident]
