"""Shared set-up for the benchmark suite.

Every fastcnn kernel is timed beside its naive NumPy reference and, when PyTorch
is installed, beside PyTorch running with the same number of threads. The thread
counts are recorded in the machine information of every saved result.
"""

from __future__ import annotations

import os

import numba
import numpy as np
import pytest


def torch_or_skip():
    """Return PyTorch limited to Numba's thread count, or skip the benchmark."""
    torch = pytest.importorskip("torch")
    torch.set_num_threads(numba.get_num_threads())
    return torch


def pytest_benchmark_update_machine_info(config, machine_info):
    machine_info["numba_version"] = numba.__version__
    machine_info["numba_threads"] = numba.get_num_threads()
    machine_info["numpy_version"] = np.__version__
    machine_info["cpu_count"] = os.cpu_count()
    try:
        import torch
    except ImportError:
        return
    machine_info["torch_version"] = torch.__version__
    machine_info["torch_threads"] = numba.get_num_threads()


def pytest_report_header(config):
    return f"fastcnn benchmarks: {numba.get_num_threads()} Numba threads"
