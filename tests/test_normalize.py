"""Normalize: the fixed standardisation layer that puts data statistics in a model."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import assert_close

import fastcnn
from fastcnn.layers import Normalize


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_forward_standardises_and_keeps_the_dtype(rng, dtype):
    x = rng.random((4, 1, 5, 5)).astype(dtype)
    y = Normalize(0.25, 0.5).forward(x)
    assert_close(y, (x.astype(np.float64) - 0.25) / 0.5, dtype)


def test_backward_matches_finite_differences(rng):
    layer = Normalize(0.1, 0.3)
    x = rng.standard_normal((3, 2, 4))
    upstream = rng.standard_normal((3, 2, 4))
    layer.forward(x)
    grad = layer.backward(upstream)
    eps = 1e-6
    numeric = np.empty_like(x)
    for i in np.ndindex(x.shape):
        bump = np.zeros_like(x)
        bump[i] = eps
        plus = (layer.forward(x + bump) * upstream).sum()
        minus = (layer.forward(x - bump) * upstream).sum()
        numeric[i] = (plus - minus) / (2 * eps)
    np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-9)


def test_integer_pixels_are_converted_to_float32():
    y = Normalize(0.0, 255.0).forward(np.array([[0, 255]], dtype=np.uint8))
    assert y.dtype == np.float32
    np.testing.assert_array_equal(y, [[0.0, 1.0]])


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"std": 0.0}, ValueError, "std"),
        ({"std": -1.0}, ValueError, "std"),
        ({"mean": float("nan")}, ValueError, "mean"),
        ({"mean": "0.5"}, TypeError, "mean"),
    ],
)
def test_bad_arguments_are_refused(kwargs, error, match):
    with pytest.raises(error, match=match):
        Normalize(**kwargs)


def test_a_model_with_normalize_saves_and_loads_bit_exactly(tmp_path, rng):
    model = fastcnn.lenet(image_size=8, normalize=(0.2, 0.3), rng=0)
    x = rng.random((5, 1, 8, 8)).astype(np.float32)
    path = tmp_path / "model.npz"
    model.save(path)
    loaded = fastcnn.Sequential.load(path)
    assert isinstance(loaded.layers[0], Normalize)
    assert loaded.layers[0].get_config() == {"mean": 0.2, "std": 0.3}
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))
