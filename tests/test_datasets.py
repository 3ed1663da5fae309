"""Tests of fastcnn.datasets: IDX parsing, folders, splits, downloads, digits."""

from __future__ import annotations

import contextlib
import functools
import gzip
import hashlib
import http.server
import socket
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from fastcnn import datasets
from fastcnn.datasets import (
    DatasetNotFoundError,
    DownloadError,
    data_folder,
    describe_data_location,
    load_digits,
    load_fashion_mnist,
    load_mnist,
    one_hot,
    read_idx,
)

REAL_MNIST = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"
TEST_FILES = ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
TRAIN_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte")
IDX_TYPE_CODES = {
    np.dtype(np.uint8): 0x08,
    np.dtype(np.int8): 0x09,
    np.dtype(np.int16): 0x0B,
    np.dtype(np.int32): 0x0C,
    np.dtype(np.float32): 0x0D,
    np.dtype(np.float64): 0x0E,
}


# ---------------------------------------------------------------- helpers


def idx_bytes(array: np.ndarray, *, magic: int | None = None) -> bytes:
    """Encode ``array`` as an IDX file (big-endian header and elements)."""
    if magic is None:
        magic = (IDX_TYPE_CODES[array.dtype] << 8) | array.ndim
    header = magic.to_bytes(4, "big") + b"".join(
        d.to_bytes(4, "big") for d in array.shape
    )
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def write_file(path: Path, data: bytes, *, compress: bool) -> Path:
    if compress:
        path = path.with_name(path.name + ".gz")
        data = gzip.compress(data, mtime=0)
    path.write_bytes(data)
    return path


def make_split(rng, n: int = 12) -> tuple[np.ndarray, np.ndarray]:
    images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    images[0, 0, 0], images[0, 0, 1] = 0, 255  # both ends of the pixel range
    labels = rng.integers(0, 10, size=n, dtype=np.uint8)
    return images, labels


def write_split(
    folder: Path,
    images: np.ndarray,
    labels: np.ndarray,
    *,
    split: str = "test",
    compress: bool = True,
) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    stems = TEST_FILES if split == "test" else TRAIN_FILES
    write_file(folder / stems[0], idx_bytes(images), compress=compress)
    write_file(folder / stems[1], idx_bytes(labels), compress=compress)


def md5_of(path: Path) -> str:
    return "md5:" + hashlib.md5(path.read_bytes()).hexdigest()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):
        pass


@contextlib.contextmanager
def serve(folder: Path):
    """Serve ``folder`` over HTTP on the loopback address; yield its base URL."""
    handler = functools.partial(QuietHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture(autouse=True)
def isolated_folders(tmp_path, monkeypatch):
    """Keep every test away from the real cache folder and any proxy."""
    monkeypatch.delenv("FASTCNN_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    try:
        import pooch
    except ImportError:
        return
    else:
        monkeypatch.setattr(
            pooch, "os_cache", lambda project: tmp_path / "os-cache" / project
        )


# ---------------------------------------------------------------- IDX files


@pytest.mark.parametrize("compress", [False, True], ids=["raw", "gzip"])
@pytest.mark.parametrize(
    "dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64]
)
def test_read_idx_round_trips_every_element_type(tmp_path, rng, dtype, compress):
    array = (rng.standard_normal((3, 4, 5)) * 100).astype(dtype)
    path = write_file(tmp_path / "a-idx", idx_bytes(array), compress=compress)

    result = read_idx(path)

    assert result.dtype == np.dtype(dtype)
    assert result.dtype.isnative
    np.testing.assert_array_equal(result, array)


# The autouse folder fixture only sets environment variables, which every example
# may share.
shared_fixtures = settings(suppress_health_check=[HealthCheck.function_scoped_fixture])


@shared_fixtures
@given(shape=st.lists(st.integers(0, 4), min_size=1, max_size=4))
def test_read_idx_keeps_the_header_shape(tmp_path_factory, shape):
    array = np.arange(int(np.prod(shape)), dtype=np.int16).reshape(shape)
    path = tmp_path_factory.mktemp("idx") / "shape-idx"
    path.write_bytes(idx_bytes(array))

    np.testing.assert_array_equal(read_idx(path), array)
    assert read_idx(path).shape == tuple(shape)


def test_read_idx_detects_gzip_from_content_not_name(tmp_path):
    array = np.arange(6, dtype=np.uint8).reshape(2, 3)
    path = tmp_path / "misnamed-idx"
    path.write_bytes(gzip.compress(idx_bytes(array)))

    np.testing.assert_array_equal(read_idx(path), array)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x00\x00", "truncated"),
        (b"\x12\x34\x08\x01" + bytes(8), "not an IDX file"),
        (b"\x00\x00\x07\x01" + bytes(8), "not an IDX file"),
        (b"\x00\x00\x08\x00", "not an IDX file"),
        (b"\x00\x00\x08\x03" + (2).to_bytes(4, "big"), "truncated: its header"),
        (b"\x00\x00\x08\x01" + (10).to_bytes(4, "big") + bytes(9), "truncated"),
        (b"\x00\x00\x08\x01" + (10).to_bytes(4, "big") + bytes(11), "1 bytes beyond"),
    ],
    ids=[
        "short-magic",
        "bad-leading-bytes",
        "unknown-type",
        "zero-dims",
        "short-header",
        "short-data",
        "trailing-bytes",
    ],
)
def test_read_idx_rejects_damaged_files_naming_them(tmp_path, data, message):
    path = tmp_path / "damaged-idx"
    path.write_bytes(data)

    with pytest.raises(ValueError, match=message) as info:
        read_idx(path)
    assert str(path) in str(info.value)


def test_read_idx_rejects_truncated_gzip(tmp_path):
    data = gzip.compress(idx_bytes(np.zeros((50, 28, 28), np.uint8)))
    path = tmp_path / "cut-idx.gz"
    path.write_bytes(data[: len(data) // 2])

    with pytest.raises(ValueError, match="damaged gzip") as info:
        read_idx(path)
    assert str(path) in str(info.value)


# ---------------------------------------------------------------- loaders


@pytest.mark.parametrize("compress", [False, True], ids=["raw", "gzip"])
@pytest.mark.parametrize("loader", [load_mnist, load_fashion_mnist])
def test_loader_scales_images_and_widens_labels(tmp_path, rng, loader, compress):
    images, labels = make_split(rng)
    write_split(tmp_path, images, labels, compress=compress)

    x, y = loader("test", tmp_path, download=False)

    assert x.shape == (12, 1, 28, 28)
    assert x.dtype == np.float32
    assert y.shape == (12,)
    assert y.dtype == np.int64
    np.testing.assert_array_equal(x[:, 0], images.astype(np.float32) / 255)
    assert x.min() == 0.0
    assert x.max() == 1.0
    np.testing.assert_array_equal(y, labels)


def test_loader_reads_train_and_test_from_their_own_files(tmp_path, rng):
    train_images, train_labels = make_split(rng, n=7)
    test_images, test_labels = make_split(rng, n=5)
    write_split(tmp_path, train_images, train_labels, split="train")
    write_split(tmp_path, test_images, test_labels, split="test", compress=False)

    x_train, y_train = load_mnist("train", tmp_path, download=False)
    x_test, y_test = load_mnist("test", tmp_path, download=False)

    assert x_train.shape[0] == 7
    assert x_test.shape[0] == 5
    np.testing.assert_array_equal(y_train, train_labels)
    np.testing.assert_array_equal(y_test, test_labels)


def test_loader_rejects_swapped_files_by_magic_number(tmp_path, rng):
    _, labels = make_split(rng)
    write_file(tmp_path / TEST_FILES[0], idx_bytes(labels), compress=True)
    write_file(tmp_path / TEST_FILES[1], idx_bytes(labels), compress=True)

    with pytest.raises(
        ValueError, match="magic number 0x00000801, expected 0x00000803"
    ):
        load_mnist("test", tmp_path, download=False)


def test_loader_rejects_image_and_label_counts_that_differ(tmp_path, rng):
    images, labels = make_split(rng, n=12)
    write_split(tmp_path, images, labels[:11])

    with pytest.raises(ValueError, match=r"12 images but .* 11 labels") as info:
        load_mnist("test", tmp_path, download=False)
    assert TEST_FILES[0] in str(info.value)
    assert TEST_FILES[1] in str(info.value)


def test_loader_rejects_truncated_file(tmp_path, rng):
    images, labels = make_split(rng)
    write_split(tmp_path, images, labels, compress=False)
    path = tmp_path / TEST_FILES[0]
    path.write_bytes(path.read_bytes()[:-100])

    with pytest.raises(ValueError, match="truncated") as info:
        load_mnist("test", tmp_path, download=False)
    assert str(path) in str(info.value)


def test_loader_rejects_images_of_the_wrong_size(tmp_path, rng):
    images = rng.integers(0, 256, size=(4, 27, 28), dtype=np.uint8)
    write_split(tmp_path, images, np.zeros(4, np.uint8))

    with pytest.raises(ValueError, match="27x28 pixels, expected 28x28"):
        load_mnist("test", tmp_path, download=False)


def test_loader_rejects_labels_beyond_nine(tmp_path, rng):
    images, labels = make_split(rng)
    labels[3] = 10
    write_split(tmp_path, images, labels)

    with pytest.raises(ValueError, match=r"label 10, expected labels in 0\.\.9"):
        load_mnist("test", tmp_path, download=False)


def test_loader_prefers_gzip_when_both_forms_exist(tmp_path, rng):
    images, labels = make_split(rng)
    write_split(tmp_path, images, labels, compress=True)
    write_split(tmp_path, images, (labels + 1) % 10, compress=False)

    np.testing.assert_array_equal(
        load_mnist("test", tmp_path, download=False)[1], labels
    )


# ---------------------------------------------------------------- splits


@pytest.fixture(scope="module")
def sliced_folder(tmp_path_factory) -> tuple[Path, np.ndarray]:
    rng = np.random.default_rng(7)
    folder = tmp_path_factory.mktemp("sliced")
    images, labels = make_split(rng, n=20)
    labels = np.arange(20, dtype=np.uint8) % 10
    images[:, 0, 0] = np.arange(20)  # identifies each sample
    write_split(folder, images, labels, compress=False)
    return folder, images


@pytest.mark.parametrize(
    ("split", "expected"),
    [
        ("test", slice(None)),
        ("test[:8]", slice(0, 8)),
        ("test[8:]", slice(8, 20)),
        ("test[3:11]", slice(3, 11)),
        ("test[-5:]", slice(15, 20)),
        ("test[:-5]", slice(0, 15)),
        ("test[:]", slice(None)),
        ("test[0:20]", slice(None)),
    ],
)
def test_split_slices_select_those_samples(sliced_folder, split, expected):
    folder, _ = sliced_folder

    x, y = load_mnist(split, folder, download=False)

    np.testing.assert_array_equal(x[:, 0, 0, 0] * 255, np.arange(20)[expected])
    np.testing.assert_array_equal(y, (np.arange(20) % 10)[expected])


@shared_fixtures
@given(
    start=st.none() | st.integers(-20, 20),
    stop=st.none() | st.integers(-20, 20),
)
def test_split_slices_match_python_slicing(sliced_folder, start, stop):
    folder, _ = sliced_folder
    expected = np.arange(20)[start:stop]
    assume(expected.size > 0)
    split = f"test[{'' if start is None else start}:{'' if stop is None else stop}]"

    x, _ = load_mnist(split, folder, download=False)

    np.testing.assert_array_equal(np.round(x[:, 0, 0, 0] * 255), expected)


@pytest.mark.parametrize(
    "split",
    [
        "valid",
        "TEST",
        "test ",
        "test[5]",
        "test[::2]",
        "test[1:5:2]",
        "test[a:b]",
        "test[10%:]",
        "test(1:5)",
        "",
    ],
)
def test_malformed_split_names_the_accepted_forms(tmp_path, split):
    with pytest.raises(ValueError, match=r"split must be 'train', 'test', or a slice"):
        load_mnist(split, tmp_path, download=False)


@pytest.mark.parametrize(
    ("split", "message"),
    [
        ("test[:21]", "reaches past the 20 samples"),
        ("test[-21:]", "reaches past the 20 samples"),
        ("test[5:5]", "selects no samples"),
        ("test[9:3]", "selects no samples"),
        ("test[20:]", "selects no samples"),
    ],
)
def test_out_of_range_split_is_refused(sliced_folder, split, message):
    folder, _ = sliced_folder

    with pytest.raises(ValueError, match=message):
        load_mnist(split, folder, download=False)


def test_split_must_be_a_string(tmp_path):
    with pytest.raises(TypeError, match="split must be a str"):
        load_mnist(0, tmp_path, download=False)


def test_data_dir_must_be_a_path():
    with pytest.raises(TypeError, match=r"data_dir must be a str, an os\.PathLike"):
        load_mnist("test", 3, download=False)


@pytest.mark.parametrize("loader", [load_mnist, load_fashion_mnist])
@pytest.mark.parametrize(
    ("argument", "value"),
    [("download", "no"), ("download", 0), ("download", None), ("progress", "yes")],
)
def test_download_and_progress_must_be_bools(tmp_path, loader, argument, value):
    # Guards against "no" (truthy) starting a download, or 0 passing as False.
    with pytest.raises(TypeError, match=f"^{argument} must be a bool, got "):
        loader("test", tmp_path, **{argument: value})
    assert list(tmp_path.iterdir()) == []


def test_numpy_bools_are_accepted_for_download(tmp_path):
    with pytest.raises(DatasetNotFoundError):
        load_mnist("test", tmp_path, download=np.bool_(False))


def test_a_file_as_data_dir_is_not_called_a_folder_missing_files(tmp_path):
    afile = tmp_path / "afile"
    afile.write_bytes(b"x")
    with pytest.raises(ValueError, match=f"^{afile} .*is a file, not a folder"):
        load_mnist("test", afile, download=False)
    with pytest.raises(ValueError, match="is a file, not a folder"):
        load_fashion_mnist("test", afile)  # refused before any download


# ---------------------------------------------------------------- folders


def test_data_dir_beats_env_var_which_beats_cache(tmp_path, rng, monkeypatch):
    pooch = pytest.importorskip("pooch")
    images, _ = make_split(rng, n=3)
    explicit, env_root = tmp_path / "explicit", tmp_path / "env"
    cache = Path(pooch.os_cache("fastcnn")) / "mnist"
    for folder, label in ((explicit, 1), (env_root / "mnist", 2), (cache, 3)):
        write_split(folder, images, np.full(3, label, np.uint8))

    assert load_mnist("test", download=False)[1][0] == 3
    assert data_folder("mnist") == cache

    monkeypatch.setenv("FASTCNN_DATA", str(env_root))
    assert load_mnist("test", download=False)[1][0] == 2
    assert data_folder("mnist") == env_root / "mnist"
    assert data_folder("fashion_mnist") == env_root / "fashion_mnist"

    assert load_mnist("test", explicit, download=False)[1][0] == 1
    assert load_mnist("test", str(explicit), download=False)[1][0] == 1
    assert data_folder("mnist", explicit) == explicit


def test_empty_env_var_falls_back_to_cache(monkeypatch):
    pooch = pytest.importorskip("pooch")
    monkeypatch.setenv("FASTCNN_DATA", "")

    assert data_folder("mnist") == Path(pooch.os_cache("fastcnn")) / "mnist"


def test_cache_folder_without_pooch_follows_xdg(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pooch", None)

    assert data_folder("fashion_mnist") == (
        tmp_path / "xdg-cache" / "fastcnn" / "fashion_mnist"
    )


def test_data_folder_rejects_unknown_dataset():
    with pytest.raises(ValueError, match="dataset must be one of 'mnist'"):
        data_folder("cifar10")


def test_describe_data_location_lists_folder_and_files(tmp_path, rng):
    images, labels = make_split(rng, n=2)
    write_split(tmp_path, images, labels, compress=False)

    text = describe_data_location("mnist", tmp_path)

    assert f"looked for in {tmp_path} (the data_dir argument)" in text
    assert "t10k-images-idx3-ubyte[.gz]  found: t10k-images-idx3-ubyte\n" in text
    assert "train-images-idx3-ubyte[.gz]  missing" in text
    assert datasets.BASE_URLS["mnist"] in text


def test_missing_files_without_download_name_folder_and_files(tmp_path):
    with pytest.raises(DatasetNotFoundError) as info:
        load_fashion_mnist("train[:10]", tmp_path / "nowhere", download=False)

    message = str(info.value)
    assert isinstance(info.value, OSError)
    assert str(tmp_path / "nowhere") in message
    assert "train-images-idx3-ubyte.gz" in message
    assert "train-labels-idx1-ubyte.gz" in message
    assert "download=True" in message


# ---------------------------------------------------------------- real data


@pytest.fixture(scope="module")
def real_mnist() -> Path:
    if not (REAL_MNIST / "t10k-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"the MNIST test set is not at {REAL_MNIST}")
    return REAL_MNIST


def test_real_mnist_test_set(real_mnist):
    x, y = load_mnist("test", real_mnist, download=False)

    assert x.shape == (10000, 1, 28, 28)
    assert x.dtype == np.float32
    assert y.dtype == np.int64
    assert x.min() == 0.0
    assert x.max() == 1.0
    counts = np.bincount(y, minlength=10)
    assert counts.sum() == 10000
    assert counts.tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert y[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]


def test_real_mnist_slices_partition_the_test_set(real_mnist):
    x, y = load_mnist("test", real_mnist, download=False)
    x_head, y_head = load_mnist("test[:8000]", real_mnist, download=False)
    x_tail, y_tail = load_mnist("test[8000:]", real_mnist, download=False)

    assert x_head.shape[0] == 8000
    assert x_tail.shape[0] == 2000
    np.testing.assert_array_equal(np.concatenate([x_head, x_tail]), x)
    np.testing.assert_array_equal(np.concatenate([y_head, y_tail]), y)


# ---------------------------------------------------------------- downloads


@pytest.fixture
def pooch_module():
    return pytest.importorskip("pooch")


def test_download_fetches_missing_files_and_verifies_them(
    tmp_path, rng, monkeypatch, pooch_module
):
    images, labels = make_split(rng)
    served = tmp_path / "served"
    write_split(served, images, labels)
    for stem in TEST_FILES:
        path = served / f"{stem}.gz"
        monkeypatch.setitem(datasets.CHECKSUMS["mnist"], path.name, md5_of(path))
    target = tmp_path / "downloaded"

    with serve(served) as url:
        x, y = load_mnist("test", target, base_url=url)

    for stem in TEST_FILES:
        assert (target / f"{stem}.gz").read_bytes() == (
            served / f"{stem}.gz"
        ).read_bytes()
    assert sorted(p.name for p in target.iterdir()) == sorted(
        f"{stem}.gz" for stem in TEST_FILES
    )
    np.testing.assert_array_equal(y, labels)
    np.testing.assert_array_equal(x[:, 0], images / np.float32(255))

    # The files now in place are read without any server.
    np.testing.assert_array_equal(load_mnist("test", target, download=False)[1], labels)


def test_download_fetches_only_the_missing_file(
    tmp_path, rng, monkeypatch, pooch_module
):
    images, labels = make_split(rng)
    served = tmp_path / "served"
    write_split(served, images, labels)
    name = f"{TEST_FILES[1]}.gz"
    monkeypatch.setitem(datasets.CHECKSUMS["mnist"], name, md5_of(served / name))
    target = tmp_path / "target"
    write_split(target, images, labels, compress=False)
    (target / TEST_FILES[1]).unlink()
    (served / f"{TEST_FILES[0]}.gz").unlink()  # a request for it would fail

    with serve(served) as url:
        _, y = load_mnist("test", target, base_url=url)

    np.testing.assert_array_equal(y, labels)
    assert (target / name).is_file()
    assert not (target / f"{TEST_FILES[0]}.gz").exists()


def test_download_of_real_test_set_with_published_checksums(
    tmp_path, real_mnist, monkeypatch, pooch_module
):
    monkeypatch.setenv("FASTCNN_DATA", str(tmp_path / "root"))

    with serve(real_mnist) as url:
        x, y = load_mnist("test[:100]", base_url=url)

    folder = tmp_path / "root" / "mnist"
    for stem in TEST_FILES:
        path = folder / f"{stem}.gz"
        assert md5_of(path) == datasets.CHECKSUMS["mnist"][path.name]
    x_ref, y_ref = load_mnist("test[:100]", real_mnist, download=False)
    np.testing.assert_array_equal(x, x_ref)
    np.testing.assert_array_equal(y, y_ref)


def test_download_with_wrong_checksum_is_refused_and_discarded(
    tmp_path, rng, pooch_module
):
    images, labels = make_split(rng)
    served = tmp_path / "served"
    write_split(served, images, labels)  # not the published MNIST files
    target = tmp_path / "target"

    with serve(served) as url, pytest.raises(DownloadError, match="checksum") as info:
        load_mnist("test", target, base_url=url)

    assert isinstance(info.value, OSError)
    assert str(target) in str(info.value)
    assert list(target.glob("*idx*")) == []


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


def test_offline_download_names_folder_and_expected_files(tmp_path, pooch_module):
    target = tmp_path / "offline"

    with pytest.raises(DownloadError) as info:
        load_fashion_mnist("test", target, base_url=closed_port_url())

    message = str(info.value)
    assert str(target) in message
    assert "t10k-images-idx3-ubyte.gz" in message
    assert "t10k-labels-idx1-ubyte.gz" in message
    assert "Fashion-MNIST" in message


def test_missing_file_on_server_is_a_download_error(tmp_path, pooch_module):
    (tmp_path / "empty").mkdir()

    with serve(tmp_path / "empty") as url, pytest.raises(DownloadError, match="404"):
        load_mnist("train", tmp_path / "target", base_url=url)


def test_module_base_url_is_used_by_default(tmp_path, monkeypatch, pooch_module):
    url = closed_port_url()
    monkeypatch.setitem(datasets.BASE_URLS, "mnist", url)

    with pytest.raises(DownloadError, match=f"could not download {url}"):
        load_mnist("test", tmp_path / "target")


def test_without_pooch_missing_files_say_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pooch", None)

    with pytest.raises(DatasetNotFoundError) as info:
        load_mnist("test", tmp_path / "target")

    message = str(info.value)
    assert 'pip install "fastcnn[train]"' in message
    assert str(tmp_path / "target") in message
    assert "t10k-images-idx3-ubyte.gz" in message


def test_without_pooch_present_files_are_still_read(tmp_path, rng, monkeypatch):
    monkeypatch.setitem(sys.modules, "pooch", None)
    images, labels = make_split(rng)
    write_split(tmp_path, images, labels)

    np.testing.assert_array_equal(load_mnist("test", tmp_path)[1], labels)


# ---------------------------------------------------------------- digits


@pytest.fixture(scope="module")
def sklearn_digits():
    sklearn_datasets = pytest.importorskip("sklearn.datasets")
    return sklearn_datasets.load_digits()


def test_digits_split_the_samples_in_order(sklearn_digits):
    x_train, y_train = load_digits("train")
    x_test, y_test = load_digits("test")

    assert x_train.shape == (1437, 1, 8, 8)
    assert x_test.shape == (360, 1, 8, 8)
    assert x_train.dtype == x_test.dtype == np.float32
    assert y_train.dtype == y_test.dtype == np.int64
    np.testing.assert_array_equal(
        np.concatenate([x_train, x_test])[:, 0], sklearn_digits.images / 16
    )
    np.testing.assert_array_equal(
        np.concatenate([y_train, y_test]), sklearn_digits.target
    )
    assert x_train.min() == 0.0
    assert x_train.max() == 1.0


def test_digits_slices_and_test_size(sklearn_digits):
    x, y = load_digits("test[-100:]")
    np.testing.assert_array_equal(y, sklearn_digits.target[-100:])
    assert x.shape == (100, 1, 8, 8)

    x_train, _ = load_digits("train", test_size=0.5)
    x_test, _ = load_digits("test", test_size=0.5)
    assert x_train.shape[0] == 898
    assert x_test.shape[0] == 899

    _, y_head = load_digits("train[:10]")
    np.testing.assert_array_equal(y_head, np.arange(10))


@pytest.mark.parametrize("test_size", [0.0, 1.0, -0.1, 0.9999999])
def test_digits_refuse_a_test_size_leaving_a_split_empty(sklearn_digits, test_size):
    with pytest.raises(ValueError, match="test_size"):
        load_digits("train", test_size=test_size)


def test_digits_refuse_bad_split(sklearn_digits):
    with pytest.raises(ValueError, match="split must be"):
        load_digits("validation")
    with pytest.raises(ValueError, match="reaches past the 360 samples"):
        load_digits("test[:361]")


def test_digits_without_sklearn_say_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn", None)
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)

    with pytest.raises(ModuleNotFoundError, match=r'pip install "fastcnn\[digits\]"'):
        load_digits()


# ---------------------------------------------------------------- one_hot


@pytest.mark.parametrize("dtype", [np.int64, np.int32, np.uint8])
def test_one_hot_sets_one_entry_per_row(dtype):
    labels = np.array([2, 0, 3, 3, 1], dtype=dtype)

    out = one_hot(labels, 4)

    assert out.dtype == np.float32
    assert out.shape == (5, 4)
    np.testing.assert_array_equal(out.argmax(axis=1), labels)
    np.testing.assert_array_equal(out.sum(axis=1), np.ones(5))
    np.testing.assert_array_equal(out, np.eye(4, dtype=np.float32)[labels])


def test_one_hot_of_no_labels_is_empty():
    assert one_hot(np.array([], dtype=np.int64), 3).shape == (0, 3)


@pytest.mark.parametrize(
    ("labels", "num_classes", "error", "message"),
    [
        ([0, 1], 2, TypeError, "labels must be a numpy.ndarray"),
        (np.array([0.0, 1.0]), 2, TypeError, r"labels.astype\(np.int64\)"),
        (np.array([True, False]), 2, TypeError, "integer dtype, got bool"),
        (np.array([[0, 1]]), 2, ValueError, "labels must be 1-d, got 2-d"),
        (np.array([0, 1]), 0, ValueError, "num_classes must be >= 1, got 0"),
        (np.array([0, 1]), 2.0, TypeError, "num_classes must be an int"),
        (np.array([0, 5]), 5, ValueError, "0..4 for num_classes=5, got 5"),
        (np.array([0, -1]), 5, ValueError, "got -1"),
    ],
)
def test_one_hot_validates_its_arguments(labels, num_classes, error, message):
    with pytest.raises(error, match=message):
        one_hot(labels, num_classes)


def test_an_address_pooch_cannot_use_is_not_called_a_checksum_mismatch(
    tmp_path, pooch_module
):
    with pytest.raises(DownloadError) as info:
        load_mnist("test", tmp_path / "target", base_url="notaurl")
    message = str(info.value)
    assert "notaurl" in message
    assert "checksum" not in message


def test_the_files_of_another_data_set_are_refused(tmp_path, real_mnist):
    folder = tmp_path / "fashion"
    folder.mkdir()
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        (folder / name).symlink_to(real_mnist / name)

    with pytest.raises(ValueError, match="is the mnist data set's t10k-images"):
        load_fashion_mnist("test", folder, download=False)
    x, _ = load_mnist("test[:5]", folder, download=False)
    assert x.shape == (5, 1, 28, 28)
