"""Image classification data sets as NumPy arrays, ready for the layers.

MNIST and Fashion-MNIST are read from their standard IDX files, gzip-compressed
(``.gz``) or raw, and downloaded with checksums verified when they are missing. The
8x8 digits come from scikit-learn, which ships them, so they need no network.

Where the IDX files are looked for, first match wins:

1. ``data_dir``, when given: the folder that holds the four files itself;
2. ``$FASTCNN_DATA/<dataset>``, when the environment variable is set (one
   subfolder per data set, ``mnist`` or ``fashion_mnist``, because both use the
   same file names);
3. ``<user cache>/fastcnn/<dataset>``, the user's cache folder as
   ``pooch.os_cache("fastcnn")`` names it.

Files that are missing there are downloaded into that same folder. pooch (the
``train`` extra) is needed for downloading only; files put in place by hand are read
without it.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import math
import os
import re
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from fastcnn._validation import check_choice, check_int, check_real

__all__ = [
    "BASE_URLS",
    "CHECKSUMS",
    "DatasetNotFoundError",
    "DownloadError",
    "data_folder",
    "describe_data_location",
    "load_digits",
    "load_fashion_mnist",
    "load_mnist",
    "one_hot",
    "read_idx",
]

ENV_VAR = "FASTCNN_DATA"

# Where each data set is downloaded from; a mirror can be put in place here or
# passed per call as ``base_url``.
BASE_URLS: dict[str, str] = {
    "mnist": "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "fashion_mnist": "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
}

# The md5 sums the data sets' maintainers publish for the gzip files.
CHECKSUMS: dict[str, dict[str, str]] = {
    "mnist": {
        "train-images-idx3-ubyte.gz": "md5:f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "train-labels-idx1-ubyte.gz": "md5:d53e105ee54ea40749a09fcbcd1e9432",
        "t10k-images-idx3-ubyte.gz": "md5:9fb629c4189551a2d022fa330f9573f3",
        "t10k-labels-idx1-ubyte.gz": "md5:ec29112dd5afa0611ce80d1b7f02629c",
    },
    "fashion_mnist": {
        "train-images-idx3-ubyte.gz": "md5:8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "train-labels-idx1-ubyte.gz": "md5:25c81989df183df01b3e8a0aad5dffbe",
        "t10k-images-idx3-ubyte.gz": "md5:bef4ecab320f06d8554ea6380940ec79",
        "t10k-labels-idx1-ubyte.gz": "md5:bb300cfdad3c16e7a12a480ee83cd310",
    },
}

_DISPLAY_NAMES = {"mnist": "MNIST", "fashion_mnist": "Fashion-MNIST"}

# File stems of each split, images first.
_SPLIT_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}

# IDX type codes (the third byte of the magic number) and their big-endian dtypes.
_IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_IMAGES_MAGIC = 0x00000803
_LABELS_MAGIC = 0x00000801
_IMAGE_SIZE = (28, 28)
_NUM_CLASSES = 10

_SPLIT_PATTERN = re.compile(r"(train|test)(?:\[(-?\d+)?:(-?\d+)?\])?")
_SPLIT_FORMS = (
    "'train', 'test', or a slice of either such as 'test[:8000]', "
    "'test[8000:]', 'train[1000:2000]' or 'train[-500:]'"
)

_INSTALL_HINT = 'pip install "fastcnn[train]"'


class DatasetNotFoundError(FileNotFoundError):
    """The files of a data set are neither in their folder nor downloadable.

    Attributes
    ----------
    folder : pathlib.Path or None
        The folder the files were looked for in.
    missing : tuple of str
        The names of the files not found there.
    """

    folder: Path | None = None
    missing: tuple[str, ...] = ()


class DownloadError(OSError):
    """A file could not be downloaded, or its checksum did not match."""


# ---------------------------------------------------------------- IDX files


def _idx_bytes(path: Path) -> bytes:
    """Return the IDX content of ``path``, decompressing it when it is gzip."""
    data = path.read_bytes()
    if data[:2] != b"\x1f\x8b":
        return data
    try:
        return gzip.decompress(data)
    except (EOFError, OSError, zlib.error) as exc:
        raise ValueError(f"{path} is a damaged gzip file: {exc}") from exc


def _parse_idx(
    data: bytes, path: Path, expected_magic: int | None = None
) -> np.ndarray:
    """Return a read-only big-endian view of the array an IDX file holds.

    Raises ValueError naming ``path`` for a bad magic number, a header or data
    shorter than the header promises, or bytes beyond the data.
    """
    if len(data) < 4:
        raise ValueError(
            f"{path} is truncated: {len(data)} bytes, fewer than the 4-byte IDX "
            f"magic number"
        )
    magic = int.from_bytes(data[:4], "big")
    type_code, ndim = data[2], data[3]
    if data[:2] != b"\x00\x00" or type_code not in _IDX_DTYPES or ndim == 0:
        raise ValueError(
            f"{path} is not an IDX file: its magic number is 0x{magic:08X}, "
            f"expected 0x0000TTDD with a type code TT in "
            f"{sorted(f'0x{t:02X}' for t in _IDX_DTYPES)} and DD >= 1 dimensions"
        )
    if expected_magic is not None and magic != expected_magic:
        raise ValueError(
            f"{path} has magic number 0x{magic:08X}, expected 0x{expected_magic:08X} "
            f"(unsigned bytes, {expected_magic & 0xFF}-d); is it the right file?"
        )

    header_size = 4 + 4 * ndim
    if len(data) < header_size:
        raise ValueError(
            f"{path} is truncated: its header declares {ndim} dimensions, which "
            f"need {header_size} header bytes, but the file holds {len(data)} bytes"
        )
    shape = tuple(
        int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)
    )
    dtype = _IDX_DTYPES[type_code]
    expected = header_size + math.prod(shape) * dtype.itemsize
    if len(data) < expected:
        raise ValueError(
            f"{path} is truncated: its header declares shape {shape}, which needs "
            f"{expected} bytes, but the file holds {len(data)} bytes"
        )
    if len(data) > expected:
        raise ValueError(
            f"{path} has {len(data) - expected} bytes beyond the {expected} its "
            f"header (shape {shape}) accounts for"
        )
    flat = np.frombuffer(data, dtype=dtype, count=math.prod(shape), offset=header_size)
    return flat.reshape(shape)


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an array from an IDX file, gzip-compressed or raw.

    Parameters
    ----------
    path : str or os.PathLike
        The file. Gzip compression is recognised from the content, not the name.

    Returns
    -------
    numpy.ndarray
        The array, of the shape and element type the header declares, in native
        byte order (uint8, int8, int16, int32, float32 or float64).

    Raises
    ------
    ValueError
        If the file is not IDX (bad magic number), is shorter than its header
        promises, has bytes beyond the data, or is a damaged gzip file.

    Notes
    -----
    An IDX file is a 4-byte magic number ``0x0000TTDD`` (``TT`` the element type,
    ``DD`` the number of dimensions), then each dimension as a big-endian uint32,
    then the elements in C order, big-endian.
    """
    path = Path(path)
    array = _parse_idx(_idx_bytes(path), path)
    return array.astype(array.dtype.newbyteorder("="))


# ------------------------------------------------------- folders and splits


def _check_dataset(dataset: Any) -> str:
    return check_choice(dataset, "dataset", _DISPLAY_NAMES)


def _cache_root() -> Path:
    """The user cache folder of fastcnn, as pooch names it when it is installed."""
    try:
        import pooch
    except ImportError:
        base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
        return Path(base) / "fastcnn"
    return Path(pooch.os_cache("fastcnn"))


def _resolve_folder(dataset: str, data_dir: Any) -> tuple[Path, str]:
    """Return the data folder and a phrase saying where it came from."""
    if data_dir is not None:
        if not isinstance(data_dir, (str, os.PathLike)):
            raise TypeError(
                f"data_dir must be a str, an os.PathLike or None, got "
                f"{type(data_dir).__name__} {data_dir!r}"
            )
        return Path(data_dir).expanduser(), "the data_dir argument"
    root = os.environ.get(ENV_VAR)
    if root:
        return Path(root).expanduser() / dataset, f"${ENV_VAR}/{dataset}"
    return _cache_root() / dataset, "the user cache folder"


def data_folder(
    dataset: str = "mnist", data_dir: str | os.PathLike[str] | None = None
) -> Path:
    """Return the folder where a data set's files are looked for and downloaded to.

    Parameters
    ----------
    dataset : {"mnist", "fashion_mnist"}
        The data set.
    data_dir : str or os.PathLike, optional
        A folder that holds the files itself; returned as given when not None.

    Returns
    -------
    pathlib.Path
        ``data_dir``, else ``$FASTCNN_DATA/<dataset>``, else
        ``pooch.os_cache("fastcnn")/<dataset>``. The folder need not exist.
    """
    return _resolve_folder(_check_dataset(dataset), data_dir)[0]


def _find(folder: Path, stem: str) -> Path | None:
    """Return the gzip or raw file named ``stem`` in ``folder``, if there is one."""
    for name in (f"{stem}.gz", stem):
        candidate = folder / name
        if candidate.is_file():
            return candidate
    return None


def describe_data_location(
    dataset: str = "mnist", data_dir: str | os.PathLike[str] | None = None
) -> str:
    """Say in a few lines where a data set is looked for and which files are there.

    Parameters
    ----------
    dataset : {"mnist", "fashion_mnist"}
        The data set.
    data_dir : str or os.PathLike, optional
        As for :func:`load_mnist`.

    Returns
    -------
    str
        A multi-line message: the folder and why it was chosen, each expected file
        with whether it is present, and where missing files are downloaded from.
    """
    dataset = _check_dataset(dataset)
    folder, origin = _resolve_folder(dataset, data_dir)
    lines = [
        f"{_DISPLAY_NAMES[dataset]} files are looked for in {folder} ({origin}).",
        f"Pass data_dir or set ${ENV_VAR} (a folder with a '{dataset}' subfolder) "
        f"to look elsewhere.",
    ]
    for stems in _SPLIT_FILES.values():
        for stem in stems:
            found = _find(folder, stem)
            state = f"found: {found.name}" if found is not None else "missing"
            lines.append(f"  {stem}[.gz]  {state}")
    lines.append(f"Missing files are downloaded from {BASE_URLS[dataset]}.")
    return "\n".join(lines)


def _parse_split(split: Any) -> tuple[str, int | None, int | None]:
    """Split ``"test[8000:]"`` into ``("test", 8000, None)``, or raise."""
    if not isinstance(split, str):
        raise TypeError(
            f"split must be a str such as {_SPLIT_FORMS}, got "
            f"{type(split).__name__} {split!r}"
        )
    match = _SPLIT_PATTERN.fullmatch(split)
    if match is None:
        raise ValueError(f"split must be {_SPLIT_FORMS}; got {split!r}")
    name, start, stop = match.groups()
    return (
        name,
        None if start is None else int(start),
        None if stop is None else int(stop),
    )


def _slice_bounds(split: str, start: int | None, stop: int | None, n: int) -> slice:
    """Turn slice bounds into a non-empty ``slice`` within ``n`` samples, or raise."""
    bounds = []
    for bound, default in ((start, 0), (stop, n)):
        if bound is None:
            bound = default
        elif bound < 0:
            bound += n
        if not 0 <= bound <= n:
            raise ValueError(
                f"split {split!r} reaches past the {n} samples of its split; "
                f"bounds must lie in [-{n}, {n}]"
            )
        bounds.append(bound)
    if bounds[0] >= bounds[1]:
        raise ValueError(f"split {split!r} selects no samples out of {n}")
    return slice(*bounds)


# ------------------------------------------------------------ downloading


def _missing_message(dataset: str, folder: Path, origin: str, stems: list[str]) -> str:
    names = ", ".join(f"{stem}.gz" for stem in stems)
    return (
        f"{_DISPLAY_NAMES[dataset]} files missing from {folder} ({origin}): {names} "
        f"(raw files without .gz are read too). Put them in that folder, pass "
        f"data_dir=<folder holding them>, or set ${ENV_VAR} to a folder with a "
        f"'{dataset}' subfolder holding them"
    )


def _download(
    dataset: str,
    folder: Path,
    origin: str,
    stems: list[str],
    base_url: str,
    progress: bool,
) -> None:
    """Fetch the gzip files of ``stems`` into ``folder``, verifying each checksum."""
    try:
        import pooch
    except ImportError as exc:
        raise DatasetNotFoundError(
            _missing_message(dataset, folder, origin, stems)
            + f"; or install pooch to download them: {_INSTALL_HINT}"
        ) from exc

    if progress:
        try:
            import tqdm  # noqa: F401
        except ImportError:
            progress = False

    # pooch announces each download on its own logger; fastcnn stays quiet.
    logger = pooch.get_logger()
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        for stem in stems:
            name = f"{stem}.gz"
            url = base_url.rstrip("/") + "/" + name
            try:
                pooch.retrieve(
                    url,
                    known_hash=CHECKSUMS[dataset][name],
                    fname=name,
                    path=folder,
                    progressbar=progress,
                )
            except Exception as exc:
                # pooch reports a hash mismatch as a ValueError naming the hash;
                # a bad address is a ValueError too.
                mismatch = isinstance(exc, ValueError) and "hash" in str(exc)
                reason = (
                    "its checksum did not match the known one, so it was discarded"
                    if mismatch
                    else f"{type(exc).__name__}: {exc}"
                )
                raise DownloadError(
                    f"could not download {url} ({reason}). "
                    + _missing_message(dataset, folder, origin, stems)
                ) from exc
    finally:
        logger.setLevel(level)


# ---------------------------------------------------------------- loaders


def _check_not_another_dataset(dataset: str, path: Path) -> None:
    """Raise ValueError if ``path`` is, byte for byte, another data set's file.

    Only the published gzip files have known checksums: other files are read as
    they are.
    """
    others = {
        other: sums[path.name]
        for other, sums in CHECKSUMS.items()
        if other != dataset and path.name in sums
    }
    if not others:
        return
    digest = "md5:" + hashlib.md5(path.read_bytes()).hexdigest()
    for other, known in others.items():
        if digest == known:
            raise ValueError(
                f"{path} is the {other} data set's {path.name}, not {dataset}'s; "
                f"point data_dir at the {dataset} files"
            )


def _check_bool(value: Any, name: str) -> bool:
    """Return ``value`` if it is a bool (or a NumPy bool), else raise TypeError."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__} {value!r}")
    return bool(value)


def _load_idx_dataset(
    dataset: str,
    split: Any,
    data_dir: Any,
    download: bool,
    base_url: str | None,
    progress: bool,
) -> tuple[np.ndarray, np.ndarray]:
    name, start, stop = _parse_split(split)
    download = _check_bool(download, "download")
    progress = _check_bool(progress, "progress")
    folder, origin = _resolve_folder(dataset, data_dir)
    if folder.exists() and not folder.is_dir():
        raise ValueError(
            f"{folder} (from {origin}) is a file, not a folder; the {dataset} "
            "files are looked for in a folder"
        )
    stems = _SPLIT_FILES[name]

    missing = [stem for stem in stems if _find(folder, stem) is None]
    if missing:
        if not download:
            error = DatasetNotFoundError(
                _missing_message(dataset, folder, origin, missing)
                + "; or call with download=True to fetch them"
            )
            error.folder = folder
            error.missing = tuple(f"{stem}.gz" for stem in missing)
            raise error
        url = BASE_URLS[dataset] if base_url is None else base_url
        _download(dataset, folder, origin, missing, url, progress)

    images_path, labels_path = (_find(folder, stem) for stem in stems)
    for path in (images_path, labels_path):
        _check_not_another_dataset(dataset, path)
    images = _parse_idx(_idx_bytes(images_path), images_path, _IMAGES_MAGIC)
    labels = _parse_idx(_idx_bytes(labels_path), labels_path, _LABELS_MAGIC)
    if images.shape[1:] != _IMAGE_SIZE:
        raise ValueError(
            f"{images_path} holds images of {images.shape[1]}x{images.shape[2]} "
            f"pixels, expected {_IMAGE_SIZE[0]}x{_IMAGE_SIZE[1]}"
        )
    if images.shape[0] != labels.shape[0]:
        raise ValueError(
            f"{images_path} holds {images.shape[0]} images but {labels_path} holds "
            f"{labels.shape[0]} labels; the counts must match"
        )
    if labels.size and labels.max() >= _NUM_CLASSES:
        raise ValueError(
            f"{labels_path} holds label {labels.max()}, expected labels in "
            f"0..{_NUM_CLASSES - 1}"
        )

    selected = _slice_bounds(split, start, stop, images.shape[0])
    x = images[selected, np.newaxis].astype(np.float32)
    x /= np.float32(255)
    return x, labels[selected].astype(np.int64)


def load_mnist(
    split: str = "train",
    data_dir: str | os.PathLike[str] | None = None,
    *,
    download: bool = True,
    base_url: str | None = None,
    progress: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Load the MNIST handwritten digit images with their labels.

    Parameters
    ----------
    split : str, default "train"
        ``"train"`` (60,000 samples), ``"test"`` (10,000), or a slice of either in
        Python's notation: ``"test[:8000]"``, ``"test[8000:]"``,
        ``"train[1000:2000]"``, ``"train[-500:]"``. The slice must select at least
        one sample and stay within the split.
    data_dir : str or os.PathLike, optional
        A folder holding the IDX files itself. By default
        ``$FASTCNN_DATA/mnist``, else ``pooch.os_cache("fastcnn")/mnist``.
    download : bool, default True
        Whether files missing from the folder are downloaded into it (needs pooch,
        the ``train`` extra).
    base_url : str, optional
        Where to download from instead of ``BASE_URLS["mnist"]``; the files'
        checksums are verified all the same.
    progress : bool, default False
        Whether a download shows a progress bar (needs tqdm).

    Returns
    -------
    images : numpy.ndarray of float32, shape (N, 1, 28, 28)
        Pixel intensities scaled from 0..255 to [0, 1].
    labels : numpy.ndarray of int64, shape (N,)
        The classes, 0..9.

    Raises
    ------
    TypeError
        If ``split`` is not a str, ``data_dir`` not a path, or ``download`` or
        ``progress`` not a bool.
    ValueError
        If ``split`` is malformed or out of range, the data folder is a file, or
        a file is damaged: not IDX, truncated, of the wrong kind, or with image
        and label counts that differ.
    DatasetNotFoundError
        If files are missing and may not, or cannot without pooch, be downloaded.
    DownloadError
        If a download fails or a downloaded file's checksum does not match.

    Notes
    -----
    Each file ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
    ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte`` is read with or
    without ``.gz``; downloads fetch the ``.gz`` files of the split asked for.
    Files found in the folder are read as they are, without checksum.
    """
    return _load_idx_dataset("mnist", split, data_dir, download, base_url, progress)


def load_fashion_mnist(
    split: str = "train",
    data_dir: str | os.PathLike[str] | None = None,
    *,
    download: bool = True,
    base_url: str | None = None,
    progress: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Load the Fashion-MNIST clothing images with their labels.

    The files, splits, folders and errors are those of :func:`load_mnist`; only
    the data set differs: ten classes of clothing (0 T-shirt/top, 1 trouser,
    2 pullover, 3 dress, 4 coat, 5 sandal, 6 shirt, 7 sneaker, 8 bag, 9 ankle
    boot) in the same format.

    Parameters
    ----------
    split : str, default "train"
        ``"train"`` (60,000 samples), ``"test"`` (10,000), or a slice of either
        such as ``"test[:8000]"``.
    data_dir : str or os.PathLike, optional
        A folder holding the IDX files itself. By default
        ``$FASTCNN_DATA/fashion_mnist``, else
        ``pooch.os_cache("fastcnn")/fashion_mnist``.
    download : bool, default True
        Whether files missing from the folder are downloaded into it.
    base_url : str, optional
        Where to download from instead of ``BASE_URLS["fashion_mnist"]``.
    progress : bool, default False
        Whether a download shows a progress bar (needs tqdm).

    Returns
    -------
    images : numpy.ndarray of float32, shape (N, 1, 28, 28)
        Pixel intensities scaled from 0..255 to [0, 1].
    labels : numpy.ndarray of int64, shape (N,)
        The classes, 0..9.
    """
    return _load_idx_dataset(
        "fashion_mnist", split, data_dir, download, base_url, progress
    )


def load_digits(
    split: str = "train", *, test_size: float = 0.2
) -> tuple[np.ndarray, np.ndarray]:
    """Load the 8x8 handwritten digits that scikit-learn ships, with their labels.

    Parameters
    ----------
    split : str, default "train"
        ``"train"`` (the first 1,437 of the 1,797 samples with the default
        ``test_size``), ``"test"`` (the remaining 360), or a slice of either such as
        ``"train[:1000]"`` or ``"test[-100:]"``.
    test_size : float, default 0.2
        The fraction of samples, taken from the end, that form ``"test"``;
        ``ceil(test_size * 1797)`` samples.

    Returns
    -------
    images : numpy.ndarray of float32, shape (N, 1, 8, 8)
        Pixel intensities scaled from 0..16 to [0, 1].
    labels : numpy.ndarray of int64, shape (N,)
        The digits, 0..9.

    Raises
    ------
    ModuleNotFoundError
        If scikit-learn (the ``digits`` extra) is not installed.
    TypeError, ValueError
        If ``split`` or ``test_size`` is malformed or out of range.

    Notes
    -----
    The split is deterministic (no shuffling): scikit-learn's order, train first.
    """
    name, start, stop = _parse_split(split)
    test_size = check_real(
        test_size,
        "test_size",
        low=0.0,
        high=1.0,
        low_inclusive=False,
        high_inclusive=False,
    )
    try:
        from sklearn.datasets import load_digits as sklearn_load_digits
    except ImportError as exc:
        raise ModuleNotFoundError(
            "load_digits reads the digits that scikit-learn ships; install it with "
            'pip install "fastcnn[digits]"'
        ) from exc

    bunch = sklearn_load_digits()
    n = bunch.images.shape[0]
    n_test = math.ceil(test_size * n)
    if not 0 < n_test < n:
        raise ValueError(
            f"test_size must leave at least one sample in each split of {n}, got "
            f"{test_size} ({n_test} test samples)"
        )
    part = slice(0, n - n_test) if name == "train" else slice(n - n_test, n)
    images = bunch.images[part]
    labels = bunch.target[part]

    selected = _slice_bounds(split, start, stop, images.shape[0])
    x = (images[selected, np.newaxis] / 16.0).astype(np.float32)
    return x, labels[selected].astype(np.int64)


def one_hot(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Encode integer class labels as rows of zeros with a one at the label.

    Parameters
    ----------
    labels : numpy.ndarray of int, shape (N,)
        Class indices in ``0..num_classes - 1``, of any integer dtype.
    num_classes : int
        The number of classes, at least 1.

    Returns
    -------
    numpy.ndarray of float32, shape (N, num_classes)
        ``out[i, labels[i]] == 1`` and every other element 0.

    Raises
    ------
    TypeError
        If ``labels`` is not an integer ndarray or ``num_classes`` not an int.
    ValueError
        If ``labels`` is not 1-d, ``num_classes < 1``, or a label is out of range.

    Notes
    -----
    Unlike ``torch.nn.functional.one_hot``, ``num_classes`` is required and the
    result is float32, the dtype a loss takes.
    """
    if not isinstance(labels, np.ndarray):
        raise TypeError(
            f"labels must be a numpy.ndarray of integers, got {type(labels).__name__}"
        )
    if labels.dtype.kind not in "iu":
        raise TypeError(
            f"labels must have an integer dtype, got {labels.dtype}; "
            f"convert it first, e.g. labels.astype(np.int64)"
        )
    if labels.ndim != 1:
        raise ValueError(
            f"labels must be 1-d, got {labels.ndim}-d shape {labels.shape}"
        )
    num_classes = check_int(num_classes, "num_classes", minimum=1)
    if labels.size:
        low, high = labels.min(), labels.max()
        if low < 0 or high >= num_classes:
            bad = low if low < 0 else high
            raise ValueError(
                f"labels must lie in 0..{num_classes - 1} for num_classes="
                f"{num_classes}, got {bad}"
            )

    out = np.zeros((labels.shape[0], num_classes), dtype=np.float32)
    out[np.arange(labels.shape[0]), labels] = 1.0
    return out
