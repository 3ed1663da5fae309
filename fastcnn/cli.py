"""The ``fastcnn`` command line: ``fastcnn train`` and ``fastcnn info``."""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

DATASETS = ("mnist", "fashion-mnist", "digits")


#: The largest finite float32: the model trains in float32, so a larger rate or
#: momentum would become inf.
_FLOAT32_MAX = 3.4028234663852886e38


def _number(
    convert: Callable[[str], Any], minimum: int, strict: bool, maximum: float | None
) -> Callable[[str], Any]:
    """An argparse type: ``convert(text)``, at least (or above) ``minimum``.

    A float ``maximum`` also caps the value (NaN fails every comparison, so it is
    refused too).
    """
    what = "an integer" if convert is int else "a number"
    bound = f"{'>' if strict else '>='} {minimum}"
    if maximum is not None:
        bound += f" and at most {maximum:.8g} (float32)"

    def parse(text: str) -> Any:
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        fits = value > minimum if strict else value >= minimum
        if not fits or (maximum is not None and not value <= maximum):
            raise argparse.ArgumentTypeError(f"expected {what} {bound}, got {text}")
        return value

    return parse


_positive_int = _number(int, 1, strict=False, maximum=None)
_non_negative_int = _number(int, 0, strict=False, maximum=None)
_positive_float = _number(float, 0, strict=True, maximum=_FLOAT32_MAX)
_non_negative_float = _number(float, 0, strict=False, maximum=_FLOAT32_MAX)


def _folder(text: str) -> Path:
    path = Path(text)
    if path.expanduser().exists() and not path.expanduser().is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a file, not a folder")
    return path


def _train_conflicts(args: argparse.Namespace) -> str | None:
    """Return what is wrong with a combination of ``train`` options, if anything."""
    if args.optimizer != "sgd" and args.momentum is not None:
        return f"--momentum applies to --optimizer sgd only, not {args.optimizer}"
    if args.dataset == "digits" and args.data_dir is not None:
        return (
            "--data-dir does not apply to --dataset digits, which is read from "
            "scikit-learn"
        )
    return None


class _Parser(argparse.ArgumentParser):
    """An argument parser that also checks combinations of its options.

    ``check`` takes the parsed namespace and returns a problem, reported like
    any other bad argument: this parser's usage line and exit status 2.
    """

    def __init__(
        self,
        *args: Any,
        check: Callable[[argparse.Namespace], str | None] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.check = check

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: Any = None
    ) -> tuple[argparse.Namespace, list[str]]:
        namespace, extras = super().parse_known_args(args, namespace)
        if self.check is not None:
            problem = self.check(namespace)
            if problem:
                self.error(problem)
        return namespace, extras


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of the ``fastcnn`` command."""
    parser = argparse.ArgumentParser(
        prog="fastcnn", description="Numba-accelerated CNNs for the CPU."
    )
    commands = parser.add_subparsers(
        dest="command", required=True, parser_class=_Parser
    )

    # Every option's help states its default once (no ArgumentDefaultsHelpFormatter:
    # it adds "(default: None)" after the defaults spelled out below).
    train = commands.add_parser(
        "train",
        help="train the LeNet-style CNN on MNIST (or a similar dataset)",
        description="Train a small LeNet-style CNN and report its test accuracy.",
        check=_train_conflicts,
    )
    train.add_argument(
        "--dataset",
        choices=DATASETS,
        default="mnist",
        help="data set to train and evaluate on (default: %(default)s)",
    )
    train.add_argument(
        "--data-dir",
        type=_folder,
        default=None,
        help="folder with the IDX files of mnist or fashion-mnist (default: "
        "$FASTCNN_DATA/<dataset>, else the user cache folder)",
    )
    train.add_argument(
        "--train",
        default="train",
        help='training split, e.g. "test[:8000]" (default: %(default)s)',
    )
    train.add_argument(
        "--eval",
        default="test",
        help='evaluation split, e.g. "test[8000:]" (default: %(default)s)',
    )
    train.add_argument(
        "--epochs",
        type=_positive_int,
        default=3,
        help="epochs to train (default: %(default)s)",
    )
    train.add_argument(
        "--batch-size",
        type=_positive_int,
        default=64,
        help="samples per training step (default: %(default)s)",
    )
    train.add_argument(
        "--optimizer",
        choices=("sgd", "adam"),
        default="sgd",
        help="optimiser (default: %(default)s)",
    )
    train.add_argument(
        "--lr",
        type=_positive_float,
        default=None,
        help="learning rate (default: 0.02 for sgd, 0.001 for adam)",
    )
    train.add_argument(
        "--momentum",
        type=_non_negative_float,
        default=None,
        help="SGD momentum, >= 0; sgd only (default: 0.9)",
    )
    train.add_argument(
        "--seed",
        type=_non_negative_int,
        default=0,
        help="seed of the initial weights and of the shuffling (default: %(default)s)",
    )
    train.add_argument(
        "--threads",
        type=_positive_int,
        default=None,
        help="threads for the kernels (default: all of Numba's threads: the "
        "CPUs available, or $NUMBA_NUM_THREADS)",
    )
    train.add_argument(
        "--save",
        type=Path,
        default=None,
        help="file to save the trained model to (default: not saved)",
    )
    train.add_argument(
        "--no-download",
        action="store_true",
        help="fail instead of downloading missing dataset files (default: "
        "download them)",
    )
    train.add_argument(
        "--quiet",
        action="store_true",
        help="no progress bars (default: a progress bar per epoch)",
    )

    commands.add_parser("info", help="show versions and threading settings")
    return parser


def _limit_threads(n: int) -> None:
    # Numba's threads, and the BLAS pool behind the matrix products of conv2d
    # and linear, once for the whole process (before any kernel runs).
    import numba

    import fastcnn

    limit = numba.config.NUMBA_NUM_THREADS
    if n > limit:
        if "NUMBA_NUM_THREADS" in os.environ:
            source = "the value of the NUMBA_NUM_THREADS environment variable"
        else:
            source = "the number of CPUs available to this process"
        raise ValueError(f"--threads must be at most {limit}, {source}, got {n}")
    fastcnn.set_num_threads(n)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return
    threadpool_limits(limits=n, user_api="blas")


def _load(args: argparse.Namespace):
    from fastcnn import datasets

    if args.dataset == "digits":
        return datasets.load_digits(args.train), datasets.load_digits(args.eval)
    loader = (
        datasets.load_mnist if args.dataset == "mnist" else datasets.load_fashion_mnist
    )
    download = not args.no_download
    try:
        train = loader(args.train, data_dir=args.data_dir, download=download)
        test = loader(args.eval, data_dir=args.data_dir, download=download)
    except datasets.DatasetNotFoundError as error:
        if error.folder is None:
            raise
        # The library's message speaks of its arguments; say it in options.
        raise datasets.DatasetNotFoundError(
            f"{args.dataset} files missing from {error.folder}: "
            f"{', '.join(error.missing)} (raw files without .gz are read too). "
            f"Put them there, point --data-dir at a folder holding them (or set "
            f"${datasets.ENV_VAR} to a folder with a '{args.dataset}' subfolder), "
            f"or drop --no-download to fetch them"
        ) from error
    return train, test


def _check_save(path: Path) -> None:
    """Refuse a destination the model could not be saved to, before training.

    A file is created in the destination's folder and removed again: only that
    tells whether the folder takes new files (a read-only file system, /proc,
    permissions, ...).
    """
    from fastcnn.serialization import _check_save_path, _open_temporary

    try:
        _check_save_path(path)  # what saving itself refuses: a folder, no name
    except (ValueError, OSError) as error:
        raise ValueError(f"--save: {error}") from error
    folder = path.resolve().parent
    if not folder.exists():
        raise ValueError(f"--save: the folder {folder} does not exist")
    if not folder.is_dir():
        raise ValueError(f"--save: {folder} is a file, not a folder")
    try:
        fd, probe = _open_temporary(str(folder), path.name)
    except OSError as error:
        reason = error.strerror or str(error)
        raise ValueError(
            f"--save: cannot create files in the folder {folder} ({reason})"
        ) from error
    os.close(fd)
    os.unlink(probe)


def _train(args: argparse.Namespace) -> int:
    import fastcnn
    from fastcnn.losses import CrossEntropyLoss
    from fastcnn.nets import lenet
    from fastcnn.optim import SGD, Adam

    if args.threads is not None:
        _limit_threads(args.threads)

    if args.save is not None:
        _check_save(args.save)

    (x_train, y_train), (x_test, y_test) = _load(args)
    # The training set's statistics go into the model, so that the saved model
    # takes raw pixels.
    model = lenet(
        in_channels=x_train.shape[1],
        image_size=x_train.shape[2:],
        num_classes=10,
        normalize=(float(x_train.mean()), float(x_train.std())),
        rng=args.seed,
    )
    if args.optimizer == "sgd":
        lr = 0.02 if args.lr is None else args.lr
        momentum = 0.9 if args.momentum is None else args.momentum
        optimizer = SGD(model, lr=lr, momentum=momentum)
    else:
        lr = 1e-3 if args.lr is None else args.lr
        optimizer = Adam(model, lr=lr)

    print(
        f"fastcnn {fastcnn.__version__}: training on {len(x_train)} {args.dataset} "
        f"images ({args.train}), evaluating on {len(x_test)} ({args.eval}), "
        f"{fastcnn.get_num_threads()} threads"
    )
    start = time.perf_counter()
    model.fit(
        x_train,
        y_train,
        epochs=args.epochs,
        batch_size=args.batch_size,
        loss=CrossEntropyLoss(),
        optimizer=optimizer,
        seed=args.seed,
        verbose=0 if args.quiet else 1,
    )
    wall = time.perf_counter() - start
    loss, accuracy = model.evaluate(x_test, y_test)
    print(f"test accuracy: {accuracy:.2%} (loss {loss:.4f}) on {len(x_test)} images")
    epochs = "epoch" if args.epochs == 1 else "epochs"
    print(f"training time: {wall:.1f} s for {args.epochs} {epochs}")
    if args.save is not None:
        model.save(args.save)
        print(f"model saved to {args.save}")
    return 0


def _info() -> int:
    import numba
    import numpy as np

    import fastcnn

    # A tiny parallel kernel call makes Numba load its threading layer.
    from fastcnn.functional.activations import relu

    relu(np.zeros(4, dtype=np.float32))
    print(f"fastcnn {fastcnn.__version__}")
    print(f"numpy {np.__version__}, numba {numba.__version__}")
    print(f"threads: {fastcnn.get_num_threads()}")
    print(f"threading layer: {numba.threading_layer()}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``fastcnn`` command line; return its exit status.

    Parameters
    ----------
    argv : sequence of str, optional
        The arguments after the program name (default: ``sys.argv[1:]``).

    Returns
    -------
    int
        0 on success, 1 when the command failed (the reason is printed on one
        line to standard error), 2 for invalid arguments.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        status = _train(args) if args.command == "train" else _info()
        # Here rather than at exit, so that a closed pipe is handled below.
        sys.stdout.flush()
        return status
    except KeyboardInterrupt:
        print("fastcnn: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader of standard output went away (``fastcnn info | head -1``):
        # not an error of this command. Python's own flush at exit would raise
        # again, so standard output is pointed at /dev/null first.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except (
        OSError,
        ValueError,
        TypeError,
        RuntimeError,
        FloatingPointError,
        ImportError,
    ) as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        print(f"fastcnn {args.command}: error: {reason}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
