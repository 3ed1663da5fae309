"""The command line: ``fastcnn train`` and ``fastcnn info``."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import fastcnn
from fastcnn import _config
from fastcnn.cli import main

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


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["train", "--epochs", "0"], "--epochs"),
        (["train", "--batch-size", "x"], "--batch-size"),
        (["train", "--lr", "-1"], "--lr"),
        (["train", "--optimizer", "rmsprop"], "--optimizer"),
        (["train", "--dataset", "cifar"], "--dataset"),
        (["train", "--optimizer", "adam", "--momentum", "0.5"], "--momentum"),
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
