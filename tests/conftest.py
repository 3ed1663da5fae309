"""Shared test fixtures and the one place for numerical tolerances."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

# Every kernel is compared with its float64 reference under these tolerances.
TOLERANCES = {
    np.dtype(np.float64): {"rtol": 1e-9, "atol": 1e-11},
    np.dtype(np.float32): {"rtol": 2e-4, "atol": 2e-5},
}

settings.register_profile(
    "fastcnn",
    deadline=None,  # the first call of a kernel compiles it
    max_examples=40,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile("fastcnn")


def assert_close(actual, expected, dtype=None, *, scale: float = 1.0) -> None:
    """Compare shape, then dtype, then values under the tolerance of ``dtype``.

    ``expected`` may be of a wider dtype (the float64 reference); ``dtype`` is the
    dtype ``actual`` must have, by default ``expected``'s. ``scale`` widens both
    tolerances for quantities that accumulate many terms.
    """
    actual = np.asarray(actual)
    expected = np.asarray(expected)
    dtype = np.dtype(expected.dtype if dtype is None else dtype)
    assert actual.shape == expected.shape, f"shape {actual.shape} != {expected.shape}"
    assert actual.dtype == dtype, f"dtype {actual.dtype} != {dtype}"
    tol = TOLERANCES[dtype]
    np.testing.assert_allclose(
        actual.astype(np.float64),
        expected.astype(np.float64),
        rtol=tol["rtol"] * scale,
        atol=tol["atol"] * scale,
    )


@pytest.fixture
def rng() -> np.random.Generator:
    """A seeded generator, the same in every test."""
    return np.random.default_rng(20261203)


@pytest.fixture(scope="session")
def torch():
    """PyTorch, when it is installed (tests that use it are skipped otherwise)."""
    torch = pytest.importorskip("torch")
    torch.set_default_dtype(torch.float64)
    return torch
