"""The command line: ``fastcnn train`` and ``fastcnn info``."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import fastcnn
from fastcnn import _config
from fastcnn.cli import build_parser, main

MNIST = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"
needs_mnist = pytest.mark.skipif(
    not (MNIST / "t10k-images-idx3-ubyte.gz").exists(),
    reason=f"the MNIST test set is not in {MNIST}",
)

ACCURACY = re.compile(r"test accuracy: ([0-9.]+)%")


def _accuracy(output: str) -> float:
    match = ACCURACY.search(output)
    assert match, output
    return float(match.group(1))


@pytest.mark.slow
@needs_mnist
def test_train_reaches_97_percent_on_held_out_mnist_and_is_reproducible(
    tmp_path, capsys
):
    args = [
        "train",
        "--train",
        "test[:8000]",
        "--eval",
        "test[8000:]",
        "--data-dir",
        str(MNIST),
        "--epochs",
        "3",
        "--seed",
        "0",
        "--quiet",
    ]
    assert main([*args, "--save", str(tmp_path / "a.npz")]) == 0
    first = capsys.readouterr().out
    assert _accuracy(first) >= 97.0
    assert f"model saved to {tmp_path / 'a.npz'}" in first

    assert main([*args, "--save", str(tmp_path / "b.npz")]) == 0
    second = capsys.readouterr().out
    assert _accuracy(second) == _accuracy(first)
    a = fastcnn.Sequential.load(tmp_path / "a.npz")
    b = fastcnn.Sequential.load(tmp_path / "b.npz")
    for key, value in a.params.items():
        np.testing.assert_array_equal(value, b.params[key], err_msg=key)


def test_train_on_the_offline_digits_saves_a_model_that_predicts(tmp_path, capsys):
    pytest.importorskip("sklearn")
    path = tmp_path / "digits.npz"
    status = main(
        [
            "train",
            "--dataset",
            "digits",
            "--epochs",
            "2",
            "--quiet",
            "--save",
            str(path),
        ]
    )
    assert status == 0
    assert _accuracy(capsys.readouterr().out) > 50.0
    model = fastcnn.Sequential.load(path)
    from fastcnn.datasets import load_digits

    x, y = load_digits("test")
    assert model.predict(x).shape == (len(x), 10)
    assert model.evaluate(x, y)[1] > 0.5


def test_missing_data_fails_with_one_line_naming_the_folder(tmp_path, capsys):
    status = main(
        ["train", "--data-dir", str(tmp_path), "--no-download", "--epochs", "1"]
    )
    assert status == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err
    assert err.startswith("fastcnn train: error:")
    assert str(tmp_path) in err
    # Advice in the command's options, not the library's arguments.
    assert "--data-dir" in err and "--no-download" in err
    assert "download=True" not in err and "data_dir=" not in err


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["train", "--epochs", "0"], "--epochs"),
        (["train", "--batch-size", "x"], "--batch-size"),
        (["train", "--lr", "-1"], "--lr"),
        (["train", "--optimizer", "rmsprop"], "--optimizer"),
        (["train", "--dataset", "cifar"], "--dataset"),
        (["train", "--optimizer", "adam", "--momentum", "0.5"], "--momentum"),
        (["train", "--momentum", "nan"], "argument --momentum: expected a number >="),
        (["train", "--momentum", "inf"], "argument --momentum: expected a number >="),
        (["train", "--momentum", "-5"], "argument --momentum: expected a number >="),
        (["train", "--momentum", "1e39"], "at most 3.4028235e+38 (float32)"),
        (["train", "--lr", "1e39"], "argument --lr: expected a number > 0"),
        (["train", "--lr", "inf"], "argument --lr: expected a number > 0"),
        (["train", "--momentum", "x"], "argument --momentum: expected a number"),
        ([], "command"),
    ],
)
def test_invalid_arguments_exit_with_status_2(argv, fragment, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert fragment in capsys.readouterr().err


def test_too_many_threads_is_an_error(capsys):
    status = main(["train", "--dataset", "digits", "--threads", "100000"])
    assert status == 1
    assert "--threads" in capsys.readouterr().err


def test_bad_split_is_an_error_naming_it(capsys):
    pytest.importorskip("sklearn")
    status = main(["train", "--dataset", "digits", "--train", "train[::2]"])
    assert status == 1
    assert "split" in capsys.readouterr().err


def test_python_dash_m_runs_the_same_command():
    result = subprocess.run(
        [sys.executable, "-m", "fastcnn", "info"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert f"fastcnn {fastcnn.__version__}" in result.stdout
    assert f"threading layer: {_config.PREFERRED_LAYER}" in result.stdout


def test_a_closed_standard_output_is_not_an_error():
    # As in `fastcnn info | head -c 1`: the reader has gone before the output.
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        result = subprocess.run(
            [sys.executable, "-m", "fastcnn", "info"],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=300,
            check=False,
        )
    finally:
        os.close(write_end)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""


def test_one_epoch_is_singular(capsys):
    pytest.importorskip("sklearn")
    args = ["train", "--dataset", "digits", "--epochs", "1", "--quiet"]
    assert main(args) == 0
    assert re.search(
        r"training time: [\d.]+ s for 1 epoch$", capsys.readouterr().out, re.M
    )


def test_negative_seed_is_refused_naming_the_option(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--seed", "-1"])
    assert exit_info.value.code == 2
    assert "--seed" in capsys.readouterr().err


@pytest.mark.parametrize("where", ["missing-folder", "a-folder"])
def test_impossible_save_path_fails_before_training(tmp_path, capsys, where):
    target = tmp_path / "absent" / "m.npz" if where == "missing-folder" else tmp_path
    status = main(["train", "--dataset", "digits", "--save", str(target)])
    assert status == 1
    captured = capsys.readouterr()
    assert "--save" in captured.err
    assert "test accuracy" not in captured.out  # nothing was trained


def _exit_2(argv, capsys) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    return capsys.readouterr().err


def test_momentum_with_adam_is_reported_by_the_train_parser(capsys):
    # Guards against the top-level usage ("usage: fastcnn [-h] ...") and
    # "fastcnn: error:" for a problem with train's options.
    err = _exit_2(["train", "--optimizer", "adam", "--momentum", "0.5"], capsys)
    assert err.startswith("usage: fastcnn train ")
    assert err.rstrip().endswith(
        "fastcnn train: error: --momentum applies to --optimizer sgd only, not adam"
    )


def test_momentum_zero_is_accepted_by_the_parser():
    args = build_parser().parse_args(["train", "--momentum", "0"])
    assert args.momentum == 0.0


def test_data_dir_with_digits_is_refused(tmp_path, capsys):
    err = _exit_2(["train", "--dataset", "digits", "--data-dir", str(tmp_path)], capsys)
    assert err.startswith("usage: fastcnn train ")
    assert "--data-dir does not apply to --dataset digits" in err


def test_a_file_as_data_dir_is_reported_as_not_a_folder(tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_bytes(b"x")
    err = _exit_2(["train", "--data-dir", str(afile), "--no-download"], capsys)
    assert f"argument --data-dir: {afile} is a file, not a folder" in err


def _train_help(capsys) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--help"])
    assert exit_info.value.code == 0
    return capsys.readouterr().out


def test_help_shows_every_default_once(capsys):
    text = _train_help(capsys)
    options = text.split("options:", 1)[1]
    entries = re.split(r"\n  (?=-)", options)
    helps = {
        entry.split()[0].rstrip(","): " ".join(entry.split())
        for entry in entries
        if entry.strip()
    }
    assert set(helps) >= {"--epochs", "--lr", "--threads", "--quiet", "--save"}
    for option, entry in helps.items():
        if option == "-h":
            continue
        assert entry.count("(default:") == 1, entry
        assert "(default: None)" not in entry, entry
    assert "(default: 0.02 for sgd, 0.001 for adam)" in helps["--lr"]
    assert "(default: 3)" in helps["--epochs"]
    assert "(default: 64)" in helps["--batch-size"]


def test_too_many_threads_says_where_the_limit_comes_from(capsys, monkeypatch):
    import numba

    monkeypatch.setattr(numba.config, "NUMBA_NUM_THREADS", 1)
    monkeypatch.setenv("NUMBA_NUM_THREADS", "1")
    assert main(["train", "--dataset", "digits", "--threads", "2"]) == 1
    assert capsys.readouterr().err.strip() == (
        "fastcnn train: error: --threads must be at most 1, the value of the "
        "NUMBA_NUM_THREADS environment variable, got 2"
    )
    monkeypatch.delenv("NUMBA_NUM_THREADS")
    assert main(["train", "--dataset", "digits", "--threads", "2"]) == 1
    err = capsys.readouterr().err
    assert "at most 1, the number of CPUs available to this process, got 2" in err


def test_save_into_a_file_is_reported_as_not_a_folder(tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_bytes(b"x")
    status = main(["train", "--dataset", "digits", "--save", str(afile / "m.npz")])
    assert status == 1
    captured = capsys.readouterr()
    assert captured.err.strip() == (
        f"fastcnn train: error: --save: {afile} is a file, not a folder"
    )
    assert captured.out == ""


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs /proc")
def test_save_into_a_folder_that_takes_no_files_fails_before_training(capsys):
    status = main(["train", "--dataset", "digits", "--save", "/proc/m.npz"])
    assert status == 1
    captured = capsys.readouterr()
    assert captured.err.startswith(
        "fastcnn train: error: --save: cannot create files in the folder /proc ("
    )
    assert ".tmp" not in captured.err
    assert captured.out == ""  # nothing was loaded or trained


def test_save_probe_leaves_no_file_behind(tmp_path, monkeypatch, capsys):
    # The writability probe runs; the run then stops at a bad split, before
    # training, so the folder must be as it was.
    pytest.importorskip("sklearn")
    status = main(
        [
            "train",
            "--dataset",
            "digits",
            "--train",
            "train[::2]",
            "--save",
            str(tmp_path / "m.npz"),
        ]
    )
    assert status == 1
    assert "split" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_save_to_a_folder_without_write_permission_fails_before_training(
    tmp_path, monkeypatch, capsys
):
    # Permissions do not stop root, so the refusal is simulated where the file
    # would be created.
    from fastcnn import serialization

    def refuse(folder, base):
        raise PermissionError(13, "Permission denied", os.path.join(folder, base))

    monkeypatch.setattr(serialization, "_open_temporary", refuse)
    status = main(["train", "--dataset", "digits", "--save", str(tmp_path / "m.npz")])
    assert status == 1
    captured = capsys.readouterr()
    assert captured.err.strip() == (
        f"fastcnn train: error: --save: cannot create files in the folder {tmp_path} "
        "(Permission denied)"
    )
    assert captured.out == ""
