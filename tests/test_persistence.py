"""Model files and checkpoints lose nothing, and damaged or hostile files are refused.

Each test opens with the failure it guards against. Files are written by
:mod:`fastcnn.serialization`; the tests damage them byte by byte, kill a process
in the middle of saving, resume training from checkpoints, and plant payloads
that would run code if anything were unpickled.
"""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import threading
import time
import tracemalloc
import zipfile

import numpy as np
import pytest

from fastcnn import serialization
from fastcnn.layers import (
    Conv2D,
    Dense,
    Dropout,
    Flatten,
    MaxPool2D,
    ReLU,
)
from fastcnn.models import Sequential
from fastcnn.optim import SGD, Adam
from fastcnn.serialization import (
    load_checkpoint,
    load_model,
    save_checkpoint,
    save_model,
)


def small_model(dropout_seed: int = 11) -> Sequential:
    """A CNN for 8x8 images with four classes, with dropout."""
    return Sequential(
        [
            Conv2D(1, 3, 3, padding=1, rng=0),
            ReLU(),
            MaxPool2D(2),
            Flatten(),
            Dropout(0.3, rng=dropout_seed),
            Dense(48, 4, rng=1),
        ]
    )


def image_data(n: int = 40, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, 1, 8, 8)).astype(np.float32), rng.integers(0, 4, n)


def assert_same_params(actual: Sequential, expected: Sequential) -> None:
    assert actual.params.keys() == expected.params.keys()
    for key, value in expected.params.items():
        np.testing.assert_array_equal(actual.params[key], value, err_msg=key)
        assert actual.params[key].dtype == value.dtype, key


def read_members(path) -> tuple[dict, dict[str, np.ndarray]]:
    """Return the parsed header and the other arrays of a fastcnn file."""
    with np.load(path, allow_pickle=False) as archive:
        arrays = {key: archive[key] for key in archive.files}
    return json.loads(str(arrays.pop("__fastcnn__"))), arrays


def write_members(path, header: dict, arrays: dict[str, np.ndarray]) -> None:
    np.savez(path, __fastcnn__=np.array(json.dumps(header)), **arrays)


# ----------------------------------------------------------------------
# Atomic saving


_SAVER = textwrap.dedent(
    """
    import sys

    import numpy as np

    from fastcnn import Dense, Sequential, save_model

    model = Sequential([Dense(1200, 1200, dtype="float64", rng=0)])
    weight, bias = model.layers[0].weight, model.layers[0].bias
    base = np.arange(weight.size, dtype=np.float64).reshape(weight.shape) / 7
    for version in range(1_000_000):
        weight[...] = base + version
        bias[...] = version
        print("begin", version, flush=True)
        save_model(sys.argv[1], model)
        print("end", version, flush=True)
    """
)


def _collect_lines(stream, lines: list[str]) -> None:
    for line in stream:
        lines.append(line.split())


@pytest.mark.slow
def test_a_process_killed_while_saving_leaves_a_complete_file(tmp_path):
    # Guards against writing the destination in place: a process killed half
    # way through a save would leave a truncated file and lose the model.
    path = tmp_path / "model.npz"
    base = np.arange(1200 * 1200, dtype=np.float64).reshape(1200, 1200) / 7
    rng = np.random.default_rng(2024)
    killed_while_saving = 0
    # At least six kills; more (up to 20) while none has yet landed during a
    # save, which the random delays can miss on a loaded machine.
    for attempt in range(20):
        if attempt >= 6 and killed_while_saving:
            break
        child = subprocess.Popen(
            [sys.executable, "-c", _SAVER, str(path)],
            stdout=subprocess.PIPE,
            text=True,
        )
        lines: list[list[str]] = []
        reader = threading.Thread(target=_collect_lines, args=(child.stdout, lines))
        reader.start()
        try:
            deadline = time.monotonic() + 60
            while ["end", "0"] not in lines:
                assert child.poll() is None, "the saving process died on its own"
                assert time.monotonic() < deadline, "the first save never finished"
                time.sleep(0.005)
            time.sleep(rng.uniform(0.0, 0.3))
            child.send_signal(signal.SIGKILL)
        finally:
            child.kill()
            child.wait(timeout=30)
            reader.join(timeout=30)
        assert child.returncode == -signal.SIGKILL
        # The child prints "begin 0", "end 0", "begin 1", ... The kill may cut the
        # last line short; the complete lines before it say where the child was.
        complete = 0
        for i, line in enumerate(lines):
            if line != [("begin", "end")[i % 2], str(i // 2)]:
                break
            complete += 1
        assert complete >= max(2, len(lines) - 1), lines[-3:]
        cut_short = complete < len(lines)
        last_kind, last_version = lines[complete - 1][0], int(lines[complete - 1][1])
        killed_while_saving += last_kind == "begin" and not cut_short

        model = load_model(path)
        version = int(model.layers[0].bias[0])
        if last_kind == "end" or cut_short:
            # Killed between saves: after "end v" (before the next save began),
            # or while printing "end v" (save v complete).
            assert version == last_version
        else:
            # The save that was interrupted, if its rename had already happened,
            # else the one before it.
            assert last_version - 1 <= version <= last_version
        np.testing.assert_array_equal(model.layers[0].weight, base + version)
        np.testing.assert_array_equal(model.layers[0].bias, np.full(1200, version))

    # Otherwise the test above proved nothing about interrupted saves.
    assert killed_while_saving >= 1
    # Interrupted saves leave only hidden temporary files beside the model.
    assert all(
        name == "model.npz" or name.startswith(".model.npz.")
        for name in os.listdir(tmp_path)
    )


# ----------------------------------------------------------------------
# Checkpoints: resuming equals training straight through


@pytest.mark.parametrize(
    "make_optimizer",
    [
        lambda model: SGD(model, lr=0.05, momentum=0.9, weight_decay=1e-3),
        lambda model: Adam(model, lr=0.01),
    ],
    ids=["sgd-momentum", "adam"],
)
def test_chained_resumes_equal_training_straight_through(tmp_path, make_optimizer):
    # Guards against a checkpoint missing any state: momentum buffers, Adam's
    # moments and step counts, the dropout generators or the epoch; each would
    # make the resumed parameters drift from the straight run.
    x, y = image_data()
    fit = dict(batch_size=8, seed=5, verbose=0)

    straight = small_model()
    straight_optimizer = make_optimizer(straight)
    straight.fit(x, y, epochs=5, optimizer=straight_optimizer, **fit)

    model = small_model()
    optimizer = make_optimizer(model)
    epoch = 0
    for stop in (1, 3, 5):
        model.fit(x, y, epochs=stop, optimizer=optimizer, initial_epoch=epoch, **fit)
        path = tmp_path / f"epoch{stop}.npz"
        save_checkpoint(path, model, optimizer, epoch=stop)
        del model, optimizer  # everything below comes from the file
        model, optimizer, epoch = load_checkpoint(path)
        assert epoch == stop
        assert all(a is b for a, b in zip(optimizer.layers, model.layers, strict=True))

    assert_same_params(model, straight)
    expected, actual = straight_optimizer.state_dict(), optimizer.state_dict()
    assert actual["hyperparameters"] == expected["hyperparameters"]
    assert actual["state"].keys() == expected["state"].keys()
    for key, entry in expected["state"].items():
        assert actual["state"][key].keys() == entry.keys()
        for name, value in entry.items():
            np.testing.assert_array_equal(actual["state"][key][name], value)
    # The dropout generator continues where the straight run's is.
    state = model.layers[4]._rng.bit_generator.state
    assert state == straight.layers[4]._rng.bit_generator.state


def test_checkpoint_file_holds_parameters_optimizer_state_and_epoch(tmp_path):
    # Guards against a checkpoint silently dropping one of its three parts.
    x, y = image_data(n=16)
    model = small_model()
    optimizer = Adam(model, lr=0.01)
    model.fit(x, y, epochs=2, batch_size=8, optimizer=optimizer, seed=0, verbose=0)
    path = tmp_path / "c.npz"
    save_checkpoint(path, model, optimizer, epoch=2)

    header, arrays = read_members(path)
    assert header["version"] == serialization.FORMAT_VERSION
    assert header["kind"] == "checkpoint" and header["epoch"] == 2
    assert header["optimizer"]["class"] == "Adam"
    for key, param in model.params.items():
        np.testing.assert_array_equal(arrays[key], param)
        for entry in ("exp_avg", "exp_avg_sq"):
            assert arrays[f"optimizer.{key}.{entry}"].shape == param.shape
        assert header["optimizer"]["state"][key]["step"] == 4
    generators = header["layers"][4]["generators"]
    assert generators["_rng"] == model.layers[4]._rng.bit_generator.state


# ----------------------------------------------------------------------
# The format version


def test_the_format_version_is_written_and_checked(tmp_path):
    # Guards against files of a future layout being read as if they were ours.
    path = tmp_path / "m.npz"
    save_model(path, small_model())
    header, arrays = read_members(path)
    assert header["format"] == "fastcnn"
    assert header["version"] == serialization.FORMAT_VERSION

    future = serialization.FORMAT_VERSION + 1
    write_members(path, {**header, "version": future}, arrays)
    message = rf"format version {future}; this fastcnn reads version 1"
    with pytest.raises(ValueError, match=message):
        load_model(path)
    with pytest.raises(ValueError, match="format version"):
        load_checkpoint(path)

    header.pop("version")
    write_members(path, header, arrays)
    with pytest.raises(ValueError, match="format version None"):
        load_model(path)


# ----------------------------------------------------------------------
# Damaged files


@pytest.fixture
def saved_file(tmp_path):
    """A checkpoint with an Adam state, its bytes and its model."""
    x, y = image_data(n=8)
    model = small_model()
    optimizer = Adam(model, lr=0.01)
    model.fit(x, y, epochs=1, batch_size=8, optimizer=optimizer, seed=0, verbose=0)
    path = tmp_path / "c.npz"
    save_checkpoint(path, model, optimizer, epoch=1)
    return path, path.read_bytes(), model


def test_every_truncation_is_a_value_error(saved_file, tmp_path):
    # Guards against a partial file (full disk, interrupted copy) loading as a
    # smaller model or failing with an unrelated exception.
    _, data, _ = saved_file
    damaged = tmp_path / "damaged.npz"
    lengths = sorted(
        set(range(0, len(data), 37)) | set(range(len(data) - 64, len(data)))
    )
    for length in lengths:
        damaged.write_bytes(data[:length])
        for load in (load_model, load_checkpoint):
            with pytest.raises(ValueError, match=r"not a fastcnn model file|corrupted"):
                load(damaged)


def test_every_flipped_byte_is_refused_or_harmless(saved_file, tmp_path):
    # Guards against corrupted bytes loading as silently different parameters:
    # the zip members' CRC-32 covers every array and the header, so a flip must
    # raise ValueError unless it hit a byte that carries no data (a timestamp).
    _, data, model = saved_file
    damaged = tmp_path / "damaged.npz"
    refused = 0
    for position in range(0, len(data), 4):
        flipped = bytearray(data)
        flipped[position] ^= 0x5A
        damaged.write_bytes(bytes(flipped))
        try:
            loaded, optimizer, epoch = load_checkpoint(damaged)
        except ValueError:
            refused += 1
            continue
        assert_same_params(loaded, model)
        assert epoch == 1 and isinstance(optimizer, Adam)
    assert refused > 0.8 * len(range(0, len(data), 4))


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (
            lambda h, a: a.update({"layer5.weight": a["layer5.weight"][:, :-1]}),
            r"layer5.weight has shape \(4, 47\)",
        ),
        (
            lambda h, a: a.update({"layer5.weight": a["layer5.weight"].T.copy()}),
            r"needs shape \(4, 48\)",
        ),
        (
            lambda h, a: a.update({"layer0.weight": a.pop("layer5.weight")}),
            "layer0.weight has shape",
        ),
        (lambda h, a: a.update({"layer0.beta": a.pop("layer0.bias")}), "missing"),
        (
            lambda h, a: a.update({"layer3.weight": np.zeros(2, np.float32)}),
            "belong to no layer",
        ),
        (
            lambda h, a: h["layers"][0]["config"].update(out_channels=5),
            r"needs shape \(5, 1, 3, 3\)",
        ),
        (lambda h, a: h["layers"][0].update(params=["weight"]), "has parameters"),
        (
            lambda h, a: h["layers"][0]["config"].update(colour="red"),
            "cannot be built",
        ),
        (
            lambda h, a: a.update({"layer0.bias": a["layer0.bias"].astype(np.int32)}),
            "dtype int32",
        ),
    ],
    ids=[
        "narrower",
        "transposed",
        "swapped-layers",
        "renamed",
        "extra",
        "config-shape",
        "param-list",
        "config-key",
        "dtype",
    ],
)
def test_mismatched_shapes_and_keys_are_value_errors(tmp_path, edit, match):
    # Guards against a file whose arrays and config disagree loading anyway
    # (broadcast, transposed or dropped arrays).
    path = tmp_path / "m.npz"
    save_model(path, small_model())
    header, arrays = read_members(path)
    edit(header, arrays)
    write_members(path, header, arrays)
    with pytest.raises(ValueError, match=match):
        load_model(path)


@pytest.mark.parametrize(
    ("layer", "config"),
    [
        (5, {"in_features": 10**9, "out_features": 10**9}),
        (5, {"in_features": 48, "out_features": 400_000}),
        (0, {"in_channels": 100_000, "out_channels": 100_000, "kernel_size": 3}),
    ],
    ids=["dense-1e18", "dense-76MB", "conv-9e10"],
)
def test_a_huge_layer_in_the_config_is_refused_before_allocating(
    tmp_path, layer, config
):
    # Guards against building the layer from a doctored config before looking
    # at the stored arrays: Dense(10**9, 10**9) would try to allocate exabytes,
    # and a merely large layer would be allocated and initialised in full.
    path = tmp_path / "m.npz"
    save_model(path, small_model())
    header, arrays = read_members(path)
    header["layers"][layer]["config"].update(config)
    write_members(path, header, arrays)

    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match="needs shape"):
            load_model(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 * 2**20


def test_compressed_members_are_refused(tmp_path):
    # Guards against a decompression bomb: a small compressed file could
    # inflate to far more memory than it takes on disk.
    path = tmp_path / "m.npz"
    save_model(path, small_model())
    header, arrays = read_members(path)
    np.savez_compressed(path, __fastcnn__=np.array(json.dumps(header)), **arrays)
    with pytest.raises(ValueError, match="is compressed"):
        load_model(path)


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"PK\x05\x06" + bytes(18),  # an empty zip archive
        b"\x93NUMPY",
        b"not a model at all\n",
        json.dumps({"format": "fastcnn", "version": 1}).encode(),
    ],
    ids=["empty", "empty-zip", "npy-magic", "text", "bare-json"],
)
def test_files_that_are_not_fastcnn_files_are_value_errors(tmp_path, content):
    # Guards against arbitrary bytes reaching np.load's pickle fallback or
    # escaping as EOFError, BadZipFile or KeyError.
    path = tmp_path / "m.npz"
    path.write_bytes(content)
    with pytest.raises(ValueError, match="not a fastcnn model file"):
        load_model(path)


def test_foreign_npz_and_npy_files_are_value_errors(tmp_path):
    # Guards against a NumPy file of someone else's arrays loading as a model.
    np.savez(tmp_path / "weights.npz", weight=np.ones((3, 3)))
    with pytest.raises(ValueError, match="no '__fastcnn__' entry"):
        load_model(tmp_path / "weights.npz")
    np.save(tmp_path / "weights.npy", np.ones((3, 3)))
    with pytest.raises(ValueError, match=r"not an \.npz archive"):
        load_model(tmp_path / "weights.npy")


def test_unreadable_paths_are_os_errors(tmp_path):
    # Guards against "cannot read" being reported as "bad content" (or the
    # reverse): only a file that cannot be read at all is an OSError.
    with pytest.raises(FileNotFoundError):
        load_model(tmp_path / "missing.npz")
    with pytest.raises(IsADirectoryError):
        load_checkpoint(tmp_path)


# ----------------------------------------------------------------------
# Nothing is ever unpickled


class _Payload:
    """Creates the file ``marker`` when unpickled."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _object_array(marker) -> np.ndarray:
    array = np.empty(1, dtype=object)
    array[0] = _Payload(os.fspath(marker))
    return array


def test_the_payloads_below_would_run_if_unpickled(tmp_path):
    # The control for the next test: these files really do execute code when
    # loaded with pickling allowed.
    marker = tmp_path / "ran"
    np.savez(tmp_path / "evil.npz", x=_object_array(marker), allow_pickle=True)
    with np.load(tmp_path / "evil.npz", allow_pickle=True) as archive:
        archive["x"]
    assert marker.exists()


@pytest.mark.parametrize("where", ["parameter", "header", "optimizer", "pickle"])
def test_object_arrays_and_pickles_are_refused_not_executed(tmp_path, where):
    # Guards against np.load(allow_pickle=True) or pickle.load anywhere in the
    # loading path: a model file from the internet must not run code.
    marker = tmp_path / "ran"
    path = tmp_path / "evil.npz"
    model = small_model()
    optimizer = SGD(model, lr=0.1, momentum=0.9)
    x, y = image_data(n=8)
    model.fit(x, y, epochs=1, batch_size=8, optimizer=optimizer, seed=0, verbose=0)
    save_checkpoint(path, model, optimizer, epoch=1)
    header, arrays = read_members(path)
    header_array = np.array(json.dumps(header))
    if where == "parameter":
        arrays["layer5.bias"] = _object_array(marker)
    elif where == "header":
        header_array = _object_array(marker)
    else:
        arrays["optimizer.layer5.bias.momentum_buffer"] = _object_array(marker)
    if where == "pickle":
        with open(path, "wb") as file:
            pickle.dump(_Payload(os.fspath(marker)), file)
    else:
        np.savez(path, __fastcnn__=header_array, **arrays, allow_pickle=True)

    for load in (load_model, load_checkpoint):
        with pytest.raises(ValueError):
            load(path)
    assert not marker.exists()


def test_saved_files_contain_no_object_arrays(tmp_path):
    # Guards against a save path that would need allow_pickle=True to read back.
    path = tmp_path / "c.npz"
    model = small_model()
    optimizer = Adam(model)
    x, y = image_data(n=8)
    model.fit(x, y, epochs=1, batch_size=8, optimizer=optimizer, seed=0, verbose=0)
    save_checkpoint(path, model, optimizer, epoch=1)
    with zipfile.ZipFile(path) as archive:
        assert all(i.compress_type == zipfile.ZIP_STORED for i in archive.infolist())
    with np.load(path, allow_pickle=False) as archive:
        kinds = {archive[key].dtype.kind for key in archive.files}
    assert kinds <= {"f", "U"}
