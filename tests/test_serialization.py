"""Tests for fastcnn.serialization: model files, checkpoints, atomic writes."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from fastcnn import serialization
from fastcnn.layers import (
    AvgPool2D,
    Conv2D,
    Dense,
    Dropout,
    Flatten,
    Layer,
    LeakyReLU,
    MaxPool2D,
    ReLU,
    Reshape,
    Sigmoid,
    Softmax,
    SoftmaxCrossEntropy,
    Tanh,
)
from fastcnn.models import Sequential
from fastcnn.optim import SGD, Adam
from fastcnn.serialization import (
    load_checkpoint,
    load_model,
    register_layer,
    save_checkpoint,
    save_model,
)


def every_layer_model(dtype=np.float32) -> Sequential:
    """A small model holding one of each fastcnn layer; input (N, 64)."""
    return Sequential(
        [
            Reshape(1, 8, 8),
            Conv2D(1, 4, 3, padding=1, dtype=dtype, rng=0),
            LeakyReLU(0.1),
            AvgPool2D(2),
            Conv2D(4, 4, 3, groups=2, bias=False, dtype=dtype, rng=1),
            Tanh(),
            MaxPool2D(2),
            Flatten(),
            Dropout(0.25, rng=3),
            Dense(4, 5, dtype=dtype, rng=2),
            Sigmoid(),
            Softmax(),
            Dense(5, 3, dtype=dtype, rng=4),
            ReLU(),
            SoftmaxCrossEntropy(),
        ]
    )


def small_cnn(dropout_rng=None) -> Sequential:
    """A small CNN for 8x8 images with three classes."""
    return Sequential(
        [
            Conv2D(1, 4, 3, rng=0),
            ReLU(),
            MaxPool2D(2),
            Flatten(),
            Dropout(0.2, rng=dropout_rng),
            Dense(36, 3, rng=1),
        ]
    )


def image_data(n: int = 48, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Images whose class is the quadrant holding a bright square."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, size=n)
    x = 0.1 * rng.standard_normal((n, 1, 8, 8)).astype(np.float32)
    for i, label in enumerate(y):
        row, col = divmod(int(label), 2)
        x[i, 0, 4 * row : 4 * row + 4, 4 * col : 4 * col + 4] += 1.0
    return x, y


def assert_same_params(a: Sequential, b: Sequential) -> None:
    pa, pb = a.params, b.params
    assert pa.keys() == pb.keys()
    for key in pa:
        assert pa[key].dtype == pb[key].dtype, key
        np.testing.assert_array_equal(pa[key], pb[key], err_msg=key)


def rewrite(path, header=None, arrays=None) -> None:
    """Rewrite a saved file after changing its header and/or its arrays."""
    with np.load(path, allow_pickle=False) as archive:
        contents = {key: archive[key] for key in archive.files}
    parsed = json.loads(str(contents.pop("__fastcnn__")))
    if header is not None:
        header(parsed)
    if arrays is not None:
        arrays(contents)
    with open(path, "wb") as file:
        np.savez(file, __fastcnn__=np.array(json.dumps(parsed)), **contents)


# ----------------------------------------------------------------------
# Round trips


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_round_trip_is_bit_exact(tmp_path, rng, dtype):
    model = every_layer_model(dtype)
    x = rng.standard_normal((6, 64)).astype(dtype)
    path = tmp_path / "model.npz"
    save_model(path, model)
    loaded = load_model(path)

    assert [repr(layer) for layer in loaded] == [repr(layer) for layer in model]
    assert_same_params(model, loaded)
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))
    assert loaded.predict(x).dtype == dtype


def test_file_loads_without_pickle_and_has_the_documented_layout(tmp_path):
    model = small_cnn()
    path = tmp_path / "cnn.npz"
    model.save(path)
    with np.load(path, allow_pickle=False) as archive:
        files = set(archive.files)
        header = archive["__fastcnn__"]
        weight = archive["layer0.weight"]
    assert files == {
        "__fastcnn__",
        "layer0.weight",
        "layer0.bias",
        "layer5.weight",
        "layer5.bias",
    }
    assert header.ndim == 0 and header.dtype.kind == "U"
    parsed = json.loads(str(header))
    assert parsed["version"] == serialization.FORMAT_VERSION
    assert [entry["class"] for entry in parsed["layers"]][:3] == [
        "Conv2D",
        "ReLU",
        "MaxPool2D",
    ]
    np.testing.assert_array_equal(weight, model.params["layer0.weight"])


def test_sequential_save_and_load(tmp_path, rng):
    model = small_cnn()
    x = rng.standard_normal((3, 1, 8, 8)).astype(np.float32)
    model.save(str(tmp_path / "m.npz"))
    loaded = Sequential.load(tmp_path / "m.npz")
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))


def test_dropout_generator_state_is_saved(tmp_path):
    model = small_cnn(dropout_rng=5)
    x = np.ones((2, 1, 8, 8), dtype=np.float32)
    model.forward(x)  # advance the generator
    save_model(tmp_path / "m.npz", model)
    loaded = load_model(tmp_path / "m.npz")
    np.testing.assert_array_equal(loaded.forward(x), model.forward(x))


# ----------------------------------------------------------------------
# Checkpoints


@pytest.mark.parametrize(
    ("make_optimizer"),
    [
        lambda model: SGD(model, lr=0.05, momentum=0.9, nesterov=True),
        lambda model: Adam(model, lr=0.01, weight_decay=1e-4),
    ],
)
def test_resume_from_checkpoint_equals_training_straight_through(
    tmp_path, make_optimizer
):
    x, y = image_data()
    straight = small_cnn(dropout_rng=123)
    straight.fit(
        x,
        y,
        epochs=4,
        batch_size=8,
        optimizer=make_optimizer(straight),
        seed=9,
        verbose=0,
    )

    first = small_cnn(dropout_rng=123)
    optimizer = make_optimizer(first)
    first.fit(x, y, epochs=2, batch_size=8, optimizer=optimizer, seed=9, verbose=0)
    path = tmp_path / "checkpoint.npz"
    save_checkpoint(path, first, optimizer, epoch=2)

    model, loaded_optimizer, epoch = load_checkpoint(path)
    assert epoch == 2
    assert type(loaded_optimizer) is type(optimizer)
    assert loaded_optimizer.hyperparameters() == optimizer.hyperparameters()
    model.fit(
        x,
        y,
        epochs=4,
        batch_size=8,
        optimizer=loaded_optimizer,
        seed=9,
        verbose=0,
        initial_epoch=epoch,
    )
    assert_same_params(model, straight)


def test_checkpoint_without_optimizer_and_model_file_as_checkpoint(tmp_path):
    model = small_cnn()
    save_checkpoint(tmp_path / "c.npz", model, epoch=7)
    loaded, optimizer, epoch = load_checkpoint(tmp_path / "c.npz")
    assert (optimizer, epoch) == (None, 7)
    assert_same_params(loaded, model)

    save_model(tmp_path / "m.npz", model)
    loaded, optimizer, epoch = load_checkpoint(tmp_path / "m.npz")
    assert (optimizer, epoch) == (None, 0)
    # A checkpoint also loads as a plain model.
    assert_same_params(load_model(tmp_path / "c.npz"), model)


def test_save_checkpoint_argument_errors(tmp_path):
    model = small_cnn()
    with pytest.raises(ValueError, match="exactly the model's layers"):
        save_checkpoint(tmp_path / "c.npz", model, SGD(small_cnn(), lr=0.1))
    with pytest.raises(ValueError, match="epoch must be >= 0"):
        save_checkpoint(tmp_path / "c.npz", model, epoch=-1)
    with pytest.raises(TypeError, match="optimizer must be"):
        save_checkpoint(tmp_path / "c.npz", model, optimizer="adam")
    with pytest.raises(TypeError, match="model must be a Sequential"):
        save_model(tmp_path / "m.npz", [Dense(2, 2)])
    assert os.listdir(tmp_path) == []


def test_corrupted_optimizer_state_is_a_value_error(tmp_path):
    model = small_cnn()
    optimizer = Adam(model)
    x, y = image_data(n=8)
    model.fit(x, y, epochs=1, optimizer=optimizer, seed=0, verbose=0)
    path = tmp_path / "c.npz"
    save_checkpoint(path, model, optimizer, epoch=1)
    rewrite(path, arrays=lambda a: a.pop("optimizer.layer0.weight.exp_avg"))
    with pytest.raises(ValueError, match="optimiser state is invalid"):
        load_checkpoint(path)


# ----------------------------------------------------------------------
# Files that are not (valid) models


def test_unreadable_file_is_an_os_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_model(tmp_path / "missing.npz")
    with pytest.raises(OSError):
        load_model(tmp_path)  # a folder


@pytest.mark.parametrize(
    ("damage", "match"),
    [
        (lambda data: data[: len(data) // 2], "not a fastcnn model file"),
        (lambda data: data[:-30], "not a fastcnn model file"),
        (lambda data: b"", "not a fastcnn model file"),
        (lambda data: os.urandom(200), "not a fastcnn model file"),
    ],
)
def test_truncated_or_garbage_file_is_a_value_error(tmp_path, damage, match):
    path = tmp_path / "m.npz"
    save_model(path, small_cnn())
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(ValueError, match=match):
        load_model(path)


def test_flipped_bytes_in_a_parameter_are_detected(tmp_path):
    model = small_cnn()
    path = tmp_path / "m.npz"
    save_model(path, model)
    data = bytearray(path.read_bytes())
    start = bytes(data).find(model.params["layer5.weight"].tobytes())
    assert start > 0
    data[start + 10] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="corrupted"):
        load_model(path)


def test_plain_npy_and_foreign_npz_are_value_errors(tmp_path):
    np.save(tmp_path / "a.npy", np.zeros(3))
    with pytest.raises(ValueError, match=r"not an \.npz archive"):
        load_model(tmp_path / "a.npy")
    np.savez(tmp_path / "b.npz", weight=np.zeros(3))
    with pytest.raises(ValueError, match="no '__fastcnn__' entry"):
        load_model(tmp_path / "b.npz")


def _set_layer(index, **fields):
    def change(header):
        header["layers"][index].update(fields)

    return change


@pytest.mark.parametrize(
    ("header", "arrays", "match"),
    [
        (lambda h: h.update(version=99), None, "format version 99"),
        (lambda h: h.update(format="other"), None, "wrong format name"),
        (lambda h: h.pop("layers"), None, "malformed header"),
        (lambda h: h.update(layers=[]), None, "no layers"),
        (_set_layer(1, **{"class": "Conv3D"}), None, "unknown class 'Conv3D'"),
        (
            _set_layer(
                0, config={"in_channels": 0, "out_channels": 4, "kernel_size": 3}
            ),
            None,
            "cannot be built",
        ),
        (
            _set_layer(5, config={"in_features": 36, "out_features": 4}),
            None,
            r"layer5.weight has shape \(3, 36\)",
        ),
        (_set_layer(5, params=["weight"]), None, "has parameters"),
        (
            None,
            lambda a: a.update({"layer5.weight": np.zeros((3, 35), np.float32)}),
            "needs shape",
        ),
        (None, lambda a: a.update({"layer0.bias": np.zeros(4)}), "dtype float64"),
        (None, lambda a: a.pop("layer0.bias"), "'layer0.bias' is missing"),
        (
            None,
            lambda a: a.update({"layer9.weight": np.zeros(2)}),
            "belong to no layer",
        ),
        (
            _set_layer(4, generators={"_rng": {"bit_generator": "PCG64"}}),
            None,
            "generator '_rng'",
        ),
        (_set_layer(4, generators={"_other": {}}), None, "no random generator"),
    ],
)
def test_inconsistent_files_are_value_errors(tmp_path, header, arrays, match):
    path = tmp_path / "m.npz"
    save_model(path, small_cnn())
    rewrite(path, header=header, arrays=arrays)
    with pytest.raises(ValueError, match=match):
        load_model(path)


def test_header_that_is_not_json_or_not_text(tmp_path):
    path = tmp_path / "m.npz"
    np.savez(path, __fastcnn__=np.array("{not json"))
    with pytest.raises(ValueError, match="bad JSON"):
        load_model(path)
    np.savez(path, __fastcnn__=np.zeros(3))
    with pytest.raises(ValueError, match="not a 0-d unicode array"):
        load_model(path)
    np.savez(path, __fastcnn__=np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="corrupted"):
        load_model(path)


# ----------------------------------------------------------------------
# Atomic writes


def test_failed_save_leaves_the_old_file_intact(tmp_path, monkeypatch):
    path = tmp_path / "model.npz"
    old = small_cnn()
    save_model(path, old)
    old_bytes = path.read_bytes()

    def failing_writer(file, arrays):
        file.write(b"PK\x03\x04 half of an archive")
        raise OSError("no space left on device")

    monkeypatch.setattr(serialization, "_write_npz", failing_writer)
    new = Sequential([Dense(3, 2, rng=0)])
    with pytest.raises(OSError, match="no space left"):
        save_model(path, new)
    with pytest.raises(OSError, match="no space left"):
        save_checkpoint(path, new, SGD(new, lr=0.1), epoch=3)

    assert path.read_bytes() == old_bytes
    assert os.listdir(tmp_path) == ["model.npz"]  # no temporary file left behind
    assert_same_params(load_model(path), old)


def test_save_replaces_an_existing_file(tmp_path):
    path = tmp_path / "model.npz"
    save_model(path, small_cnn())
    replacement = Sequential([Dense(3, 2, rng=0)])
    save_model(path, replacement)
    assert os.listdir(tmp_path) == ["model.npz"]
    assert_same_params(load_model(path), replacement)


# ----------------------------------------------------------------------
# The layer registry


class Scale(Layer):
    """Multiplies its input by a learnable per-feature factor."""

    def __init__(self, features: int) -> None:
        super().__init__()
        self.features = features
        self.params["factor"] = np.ones(features)

    def forward(self, input):
        self._input = input
        return input * self.params["factor"]

    def get_config(self):
        return {"features": self.features}


def test_register_layer(tmp_path, monkeypatch):
    monkeypatch.setattr(
        serialization, "_LAYER_REGISTRY", dict(serialization._LAYER_REGISTRY)
    )
    model = Sequential([Dense(2, 3, dtype=np.float64, rng=0), Scale(3)])
    model.layers[1].params["factor"][:] = [1.0, 2.0, 3.0]
    with pytest.raises(TypeError, match="not a registered layer class"):
        save_model(tmp_path / "m.npz", model)

    assert register_layer(Scale) is Scale
    save_model(tmp_path / "m.npz", model)
    loaded = load_model(tmp_path / "m.npz")
    assert_same_params(loaded, model)

    class Other(Layer):
        pass

    Other.__name__ = "Scale"
    with pytest.raises(ValueError, match="already registered as 'Scale'"):
        register_layer(Other)
    with pytest.raises(TypeError, match="Layer subclass"):
        register_layer(int)


# ----------------------------------------------------------------------
# Destinations that cannot be written, named as the caller gave them


def _save_with(how: str, path) -> None:
    model = small_cnn()
    if how == "save_model":
        save_model(path, model)
    elif how == "save_checkpoint":
        save_checkpoint(path, model, SGD(model, lr=0.1), epoch=1)
    else:
        model.save(path)


SAVERS = ["save_model", "save_checkpoint", "Sequential.save"]


@pytest.mark.parametrize("how", SAVERS)
def test_a_missing_folder_is_named_not_the_temporary_file(tmp_path, how, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError) as info:
        _save_with(how, os.path.join("nope", "m.npz"))
    message = str(info.value)
    assert info.value.filename == os.path.join("nope", "m.npz")
    assert ".tmp" not in message
    assert "the folder 'nope' does not exist" in message
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("how", SAVERS)
def test_a_folder_as_destination_is_refused_before_writing(tmp_path, how):
    (tmp_path / "adir").mkdir()
    with pytest.raises(IsADirectoryError, match="path must name a file") as info:
        _save_with(how, tmp_path / "adir")
    assert info.value.filename == str(tmp_path / "adir")
    assert ".tmp" not in str(info.value)
    assert sorted(os.listdir(tmp_path)) == ["adir"]
    assert os.listdir(tmp_path / "adir") == []


def test_a_file_in_the_way_of_the_folder_is_named(tmp_path):
    (tmp_path / "afile").write_bytes(b"x")
    target = tmp_path / "afile" / "m.npz"
    with pytest.raises(NotADirectoryError) as info:
        save_model(target, small_cnn())
    assert info.value.filename == str(target)
    assert f"'{tmp_path / 'afile'}' is a file, not a folder" in str(info.value)


@pytest.mark.parametrize("how", SAVERS)
@pytest.mark.parametrize("path", ["", "sub/"])
def test_an_empty_or_folder_path_is_refused_up_front(tmp_path, monkeypatch, how, path):
    # Guards against "" being written as a temporary file in the parent of the
    # current folder, then failing to be renamed.
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    with pytest.raises(ValueError, match="path must name a file"):
        _save_with(how, path)
    assert os.listdir(tmp_path) == ["work"]
    assert os.listdir(work) == []


@pytest.mark.parametrize("how", SAVERS)
@pytest.mark.parametrize("path", [5, None, b"m.npz", 1.5])
def test_a_path_of_the_wrong_type_is_a_type_error_naming_path(tmp_path, how, path):
    with pytest.raises(TypeError, match=r"^path must be a str or an os\.PathLike"):
        _save_with(how, path)


def test_a_failed_write_without_errno_names_the_path(tmp_path, monkeypatch):
    def failing_writer(file, arrays):
        raise OSError("no space left on device")

    monkeypatch.setattr(serialization, "_write_npz", failing_writer)
    with pytest.raises(OSError) as info:
        save_model(tmp_path / "m.npz", small_cnn())
    assert str(info.value) == (
        f"cannot save to {str(tmp_path / 'm.npz')!r}: no space left on device"
    )
    assert os.listdir(tmp_path) == []


def test_a_failed_rename_names_the_path(tmp_path, monkeypatch):
    def failing_replace(source, destination):
        raise PermissionError(13, "Permission denied", source, None, destination)

    monkeypatch.setattr(serialization.os, "replace", failing_replace)
    with pytest.raises(PermissionError) as info:
        save_model(tmp_path / "m.npz", small_cnn())
    assert info.value.filename == str(tmp_path / "m.npz")
    assert ".tmp" not in str(info.value)
    assert os.listdir(tmp_path) == []


# ----------------------------------------------------------------------
# Messages of the loader


@pytest.mark.parametrize(
    "content",
    [b"hello world" * 10, b"\x80\x04K\x01.", b"PK not really a zip"],
    ids=["text", "pickle", "zip-magic-only"],
)
@pytest.mark.parametrize("load", [load_model, load_checkpoint])
def test_a_non_model_file_gets_no_advice_to_unpickle(tmp_path, content, load):
    # Guards against NumPy's message, which advises allow_pickle=True, being
    # relayed for a file that is not an .npz archive.
    path = tmp_path / "m.npz"
    path.write_bytes(content)
    with pytest.raises(ValueError, match="is not a fastcnn model file") as info:
        load(path)
    assert "pickle" not in str(info.value)


def _deep_header(path, depth: int) -> None:
    """Rewrite a saved model's config of layer 0 as a list nested ``depth`` deep."""
    with np.load(path, allow_pickle=False) as archive:
        contents = {key: archive[key] for key in archive.files}
    header = json.loads(str(contents.pop("__fastcnn__")))
    header["layers"][0]["config"]["in_channels"] = "@deep@"
    text = json.dumps(header).replace('"@deep@"', "[" * depth + "]" * depth)
    with open(path, "wb") as file:
        np.savez(file, __fastcnn__=np.array(text), **contents)


@pytest.mark.parametrize("depth", [100_000, 2_000])
@pytest.mark.parametrize("load", [load_model, load_checkpoint])
def test_a_header_nested_too_deep_is_a_malformed_header(tmp_path, depth, load):
    path = tmp_path / "m.npz"
    save_model(path, small_cnn())
    _deep_header(path, depth)
    with pytest.raises(ValueError, match=r"has a malformed header \(nested too deeply"):
        load(path)


def test_a_huge_config_is_cut_in_the_message(tmp_path):
    path = tmp_path / "m.npz"
    save_model(path, small_cnn())
    _deep_header(path, 300)
    with pytest.raises(ValueError, match=r"cannot be built from its config") as info:
        load_model(path)
    assert len(str(info.value)) < 600
    assert " ...: " in str(info.value)
