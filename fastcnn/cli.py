"""The ``fastcnn`` command line: ``fastcnn train`` and ``fastcnn info``."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

DATASETS = ("mnist", "fashion-mnist", "digits")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {value}")
    return value


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of the ``fastcnn`` command."""
    parser = argparse.ArgumentParser(
        prog="fastcnn", description="Numba-accelerated CNNs for the CPU."
    )
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser(
        "train",
        help="train the LeNet-style CNN on MNIST (or a similar dataset)",
        description="Train a small LeNet-style CNN and report its test accuracy.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    train.add_argument("--dataset", choices=DATASETS, default="mnist")
    train.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="folder with the IDX files (default: $FASTCNN_DATA, else the cache)",
    )
    train.add_argument(
        "--train", default="train", help='training split, e.g. "test[:8000]"'
    )
    train.add_argument(
        "--eval", default="test", help='evaluation split, e.g. "test[8000:]"'
    )
    train.add_argument("--epochs", type=_positive_int, default=3)
    train.add_argument("--batch-size", type=_positive_int, default=64)
    train.add_argument("--optimizer", choices=("sgd", "adam"), default="sgd")
    train.add_argument(
        "--lr",
        type=_positive_float,
        default=None,
        help="learning rate (default: 0.02 for sgd, 0.001 for adam)",
    )
    train.add_argument(
        "--momentum",
        type=float,
        default=None,
        help="SGD momentum (default: 0.9; sgd only)",
    )
    train.add_argument("--seed", type=_non_negative_int, default=0)
    train.add_argument(
        "--threads",
        type=_positive_int,
        default=None,
        help="threads for the kernels (default: all cores)",
    )
    train.add_argument(
        "--save", type=Path, default=None, help="where to save the trained model"
    )
    train.add_argument(
        "--no-download",
        action="store_true",
        help="fail instead of downloading missing dataset files",
    )
    train.add_argument("--quiet", action="store_true", help="no progress bars")

    commands.add_parser("info", help="show versions and threading settings")
    return parser


def _limit_threads(n: int) -> None:
    # Numba's threads, and the BLAS pool behind the matrix products of conv2d
    # and linear, once for the whole process (before any kernel runs).
    import numba

    import fastcnn

    limit = numba.config.NUMBA_NUM_THREADS
    if n > limit:
        raise ValueError(f"--threads must be at most {limit} on this machine, got {n}")
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
    train = loader(args.train, data_dir=args.data_dir, download=download)
    test = loader(args.eval, data_dir=args.data_dir, download=download)
    return train, test


def _train(args: argparse.Namespace) -> int:
    import fastcnn
    from fastcnn.losses import CrossEntropyLoss
    from fastcnn.nets import lenet
    from fastcnn.optim import SGD, Adam

    if args.threads is not None:
        _limit_threads(args.threads)

    if args.save is not None:
        # Refuse an impossible destination before training, not after it.
        if args.save.is_dir():
            raise ValueError(f"--save must be a file path, got the folder {args.save}")
        if not args.save.resolve().parent.is_dir():
            raise ValueError(
                f"--save: the folder {args.save.resolve().parent} does not exist"
            )

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
    print(f"training time: {wall:.1f} s for {args.epochs} epochs")
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
    if (
        args.command == "train"
        and args.optimizer != "sgd"
        and args.momentum is not None
    ):
        parser.error(
            f"--momentum applies to --optimizer sgd only, not {args.optimizer}"
        )
    try:
        if args.command == "train":
            return _train(args)
        return _info()
    except KeyboardInterrupt:
        print("fastcnn: interrupted", file=sys.stderr)
        return 130
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
