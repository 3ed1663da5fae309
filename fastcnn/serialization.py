"""Saving and loading models and training checkpoints as one ``.npz`` file.

File layout (format version 1)
    ``__fastcnn__``
        A 0-d numpy unicode array holding a JSON header: the format name and
        version, the kind of file (``"model"`` or ``"checkpoint"``), and for each
        layer its class name, its ``get_config()``, the names of its parameters
        and the states of the random generators it holds (``Dropout`` masks).
        Checkpoints add the epoch and the optimiser's class, hyperparameters and
        integer state.
    ``layer{i}.{name}``
        Parameter ``name`` of layer ``i``, in its own dtype.
    ``optimizer.layer{i}.{name}.{entry}``
        Array ``entry`` of the optimiser's state for that parameter
        (checkpoints only).

No array is an object array, so every file loads with
``np.load(path, allow_pickle=False)``; nothing is unpickled or evaluated: layer
classes are looked up by name in an explicit registry of fastcnn's layers
(extended with :func:`register_layer`), and the parameter shapes a layer's
config implies (:meth:`~fastcnn.layers.base.Layer.parameter_shapes`) are
checked against the stored arrays before the layer is built, so a doctored
config cannot make loading allocate more than the file holds. Files are written
atomically: a temporary file in the destination folder is written, flushed and
fsync'ed, then renamed over the destination, so a crash leaves either the old
file or the new one, never a partial file.
"""

from __future__ import annotations

import contextlib
import errno
import inspect
import io
import json
import os
import secrets
import zipfile
from collections.abc import Iterator, Mapping
from typing import Any, BinaryIO

import numpy as np

from fastcnn.layers import (
    AvgPool2D,
    Conv2D,
    Dense,
    Dropout,
    Flatten,
    LeakyReLU,
    MaxPool2D,
    Normalize,
    ReLU,
    Reshape,
    Sigmoid,
    Softmax,
    SoftmaxCrossEntropy,
    Tanh,
)
from fastcnn.layers.base import Layer
from fastcnn.models import Sequential
from fastcnn.optim import SGD, Adam, Optimizer

__all__ = [
    "FORMAT_VERSION",
    "load_checkpoint",
    "load_model",
    "register_layer",
    "save_checkpoint",
    "save_model",
]

#: Version of the file layout this module writes and reads.
FORMAT_VERSION = 1

_FORMAT_NAME = "fastcnn"
_HEADER_KEY = "__fastcnn__"
_OPTIMIZER_PREFIX = "optimizer."
# Every zip archive starts with a local file header, or, when it holds no
# member, with the end-of-central-directory record.
_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")

_LAYER_REGISTRY: dict[str, type[Layer]] = {
    cls.__name__: cls
    for cls in (
        AvgPool2D,
        Conv2D,
        Dense,
        Dropout,
        Flatten,
        LeakyReLU,
        MaxPool2D,
        Normalize,
        ReLU,
        Reshape,
        Sigmoid,
        Softmax,
        SoftmaxCrossEntropy,
        Tanh,
    )
}

_OPTIMIZER_REGISTRY: dict[str, type[Optimizer]] = {"SGD": SGD, "Adam": Adam}


def register_layer(cls: type[Layer]) -> type[Layer]:
    """Allow models holding layers of class ``cls`` to be saved and loaded.

    The class is found again by its ``__name__``, and rebuilt as
    ``cls(**layer.get_config())``. Usable as a class decorator.

    Raises
    ------
    TypeError
        If ``cls`` is not a subclass of :class:`~fastcnn.layers.base.Layer`.
    ValueError
        If another class is registered under the same name.
    """
    if not (isinstance(cls, type) and issubclass(cls, Layer)):
        raise TypeError(f"cls must be a Layer subclass, got {cls!r}")
    known = _LAYER_REGISTRY.get(cls.__name__)
    if known is not None and known is not cls:
        raise ValueError(
            f"cls: another layer class is already registered as {cls.__name__!r} "
            f"({known.__module__}.{known.__qualname__})"
        )
    _LAYER_REGISTRY[cls.__name__] = cls
    return cls


# ----------------------------------------------------------------------
# Writing


def _check_model(model: Any) -> Sequential:
    if not isinstance(model, Sequential):
        raise TypeError(f"model must be a Sequential, got {type(model).__name__}")
    for i, layer in enumerate(model.layers):
        name = type(layer).__name__
        if _LAYER_REGISTRY.get(name) is not type(layer):
            raise TypeError(
                f"model.layers[{i}] is a {name}, which is not a registered layer "
                "class; register it with fastcnn.serialization.register_layer"
            )
    return model


def _generator_states(layer: Layer) -> dict[str, Any]:
    """Return the bit-generator state of every numpy Generator the layer holds."""
    return {
        attr: value.bit_generator.state
        for attr, value in sorted(vars(layer).items())
        if isinstance(value, np.random.Generator)
    }


def _model_payload(model: Sequential) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    layers, arrays = [], {}
    for i, layer in enumerate(model.layers):
        config = layer.get_config()
        layers.append(
            {
                "class": type(layer).__name__,
                "config": config,
                "params": list(layer.params),
                "generators": _generator_states(layer),
            }
        )
        for name, param in layer.params.items():
            arrays[f"layer{i}.{name}"] = param
    return layers, arrays


def _header_array(header: dict[str, Any]) -> np.ndarray:
    try:
        text = json.dumps(header, allow_nan=False)
    except (TypeError, ValueError) as error:
        raise TypeError(
            f"the model's configuration is not JSON-serialisable: {error}"
        ) from error
    return np.array(text)


def _write_npz(file: BinaryIO, arrays: Mapping[str, np.ndarray]) -> None:
    """Write ``arrays`` as an uncompressed ``.npz`` archive to ``file``."""
    np.savez(file, allow_pickle=False, **arrays)


def _open_temporary(folder: str, base: str) -> tuple[int, str]:
    """Create a new, empty file in ``folder``; return its descriptor and path."""
    while True:
        path = os.path.join(folder, f".{base}.{secrets.token_hex(6)}.tmp")
        try:
            # The mode is filtered by the umask, as for any newly created file.
            return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), path
        except FileExistsError:
            continue


def _check_save_path(path: Any) -> str:
    """Return ``path`` as a str if a file can be saved there, or raise.

    Only what can be told without writing is checked: the type, that the path
    is not empty and names a file rather than a folder.

    Parameters
    ----------
    path : str or os.PathLike
        The destination given to :func:`save_model` or :func:`save_checkpoint`.

    Returns
    -------
    str
        ``os.fspath(path)``.

    Raises
    ------
    TypeError
        If ``path`` is not a str or an ``os.PathLike`` of a str.
    ValueError
        If ``path`` is empty or ends with a path separator.
    IsADirectoryError
        If ``path`` is an existing folder.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(
            f"path must be a str or an os.PathLike, got {type(path).__name__} "
            f"{path!r:.60}"
        )
    text = os.fspath(path)
    if not isinstance(text, str):
        raise TypeError(
            f"path must be a str or an os.PathLike of a str, got a path of "
            f"{type(text).__name__} {text!r:.60}"
        )
    if not text:
        raise ValueError("path must name a file, got an empty string")
    if not os.path.basename(text):
        raise ValueError(f"path must name a file, got the folder path {text!r}")
    if os.path.isdir(text):
        raise IsADirectoryError(
            errno.EISDIR, "Is a directory; path must name a file", text
        )
    return text


def _atomic_save(path: str | os.PathLike, arrays: Mapping[str, np.ndarray]) -> None:
    """Write ``arrays`` to ``path`` so that ``path`` never holds a partial file.

    An ``OSError`` names ``path``, never the temporary file.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    try:
        fd, temporary = _open_temporary(folder, os.path.basename(path))
    except OSError as error:
        raise _save_error(error, path) from error
    try:
        with os.fdopen(fd, "wb") as file:
            _write_npz(file, arrays)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException as error:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        if isinstance(error, OSError):
            raise _save_error(error, path) from error
        raise
    # Make the rename itself durable where directories can be opened (POSIX).
    with contextlib.suppress(OSError):
        dir_fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def _save_error(error: OSError, path: str) -> OSError:
    """Return ``error`` told about ``path``, the destination the caller gave."""
    if error.errno is None:
        return OSError(f"cannot save to {path!r}: {error}")
    reason = error.strerror or str(error)
    folder = os.path.dirname(path)
    if error.errno == errno.ENOENT and folder and not os.path.isdir(folder):
        reason += f" (the folder {folder!r} does not exist)"
    elif error.errno == errno.ENOTDIR and folder and os.path.exists(folder):
        reason += f" ({folder!r} is a file, not a folder)"
    # OSError(errno, ...) returns the matching subclass (FileNotFoundError, ...).
    return OSError(error.errno, reason, path)


def save_model(path: str | os.PathLike, model: Sequential) -> None:
    """Save a model's layers and parameters to one ``.npz`` file.

    Parameters
    ----------
    path : str or os.PathLike
        Destination, used as given (no ``.npz`` suffix is added). An existing
        file is replaced atomically.
    model : Sequential
        The model. Every layer's class must be a fastcnn layer or registered
        with :func:`register_layer`.

    Raises
    ------
    TypeError
        If ``path`` is not a str or an ``os.PathLike``, or a layer's class is
        not registered.
    ValueError
        If ``path`` is empty or ends with a path separator.
    OSError
        If the file cannot be written (``IsADirectoryError`` when ``path`` is a
        folder); the message names ``path``, not the temporary file.

    Notes
    -----
    :func:`load_model` returns a model whose parameters are bit-identical, so
    its predictions are too.
    """
    path = _check_save_path(path)
    model = _check_model(model)
    layers, arrays = _model_payload(model)
    header = {
        "format": _FORMAT_NAME,
        "version": FORMAT_VERSION,
        "kind": "model",
        "layers": layers,
    }
    _atomic_save(path, {_HEADER_KEY: _header_array(header), **arrays})


def save_checkpoint(
    path: str | os.PathLike,
    model: Sequential,
    optimizer: Optimizer | None = None,
    epoch: int = 0,
) -> None:
    """Save everything needed to resume training bit-identically.

    Parameters
    ----------
    path : str or os.PathLike
        Destination, used as given; an existing file is replaced atomically.
    model : Sequential
        The model: layers, parameters, and the states of the random generators
        its layers hold (so ``Dropout`` draws the same masks after resuming).
    optimizer : Optimizer, optional
        An optimiser built on exactly ``model``'s layers; its hyperparameters
        and state (momentum buffers, Adam moments and step counts) are saved.
    epoch : int, default 0
        The number of epochs completed: pass it back to ``fit`` as
        ``initial_epoch``.

    Raises
    ------
    TypeError, ValueError, OSError
        As :func:`save_model`, and for a bad ``optimizer`` or ``epoch``.

    Notes
    -----
    Training resumed with :func:`load_checkpoint`, the same data, the same
    ``seed`` and ``fit(..., initial_epoch=epoch)`` gives parameters
    bit-identical to training straight through.
    """
    path = _check_save_path(path)
    model = _check_model(model)
    if isinstance(epoch, bool) or not isinstance(epoch, (int, np.integer)):
        raise TypeError(f"epoch must be an int, got {type(epoch).__name__}")
    if epoch < 0:
        raise ValueError(f"epoch must be >= 0, got {epoch}")
    layers, arrays = _model_payload(model)
    header: dict[str, Any] = {
        "format": _FORMAT_NAME,
        "version": FORMAT_VERSION,
        "kind": "checkpoint",
        "layers": layers,
        "epoch": int(epoch),
        "optimizer": None,
    }
    if optimizer is not None:
        if not isinstance(optimizer, Optimizer):
            raise TypeError(
                f"optimizer must be a fastcnn optimiser, got {type(optimizer).__name__}"
            )
        if len(optimizer.layers) != len(model.layers) or any(
            a is not b for a, b in zip(optimizer.layers, model.layers, strict=True)
        ):
            raise ValueError(
                "optimizer must be built on exactly the model's layers, in order "
                "(e.g. SGD(model, lr=...)), to be saved with it"
            )
        state = optimizer.state_dict()
        int_state: dict[str, dict[str, int]] = {}
        for key, entry in state["state"].items():
            int_state[key] = {}
            for name, value in entry.items():
                if isinstance(value, np.ndarray):
                    arrays[f"{_OPTIMIZER_PREFIX}{key}.{name}"] = value
                else:
                    int_state[key][name] = value
        header["optimizer"] = {
            "class": state["class"],
            "hyperparameters": state["hyperparameters"],
            "state": int_state,
        }
    _atomic_save(path, {_HEADER_KEY: _header_array(header), **arrays})


# ----------------------------------------------------------------------
# Reading


def _read_archive(
    path: str | os.PathLike,
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Return the header and every array of a fastcnn file, or raise ValueError."""
    with open(path, "rb") as file:  # OSError when the file cannot be read
        data = file.read()
    where = os.fspath(path)
    if not data.startswith(_ZIP_MAGIC):
        # np.load would try anything else as a pickle, and its refusal advises
        # loading the file with allow_pickle=True: never relayed.
        raise ValueError(f"{where} is not a fastcnn model file (not an .npz archive)")
    try:
        archive = np.load(io.BytesIO(data), allow_pickle=False)
    except Exception as error:
        detail = "" if "pickle" in str(error) else f": {error}"
        raise ValueError(
            f"{where} is not a fastcnn model file (not a readable .npz archive{detail})"
        ) from error
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise ValueError(f"{where} is not a fastcnn model file (not an .npz archive)")
    with archive:
        if _HEADER_KEY not in archive.files:
            raise ValueError(
                f"{where} is not a fastcnn model file (it has no {_HEADER_KEY!r} entry)"
            )
        # fastcnn writes stored (uncompressed) members only; a compressed member
        # could inflate to far more memory than the file takes.
        for info in archive.zip.infolist():
            if info.compress_type != zipfile.ZIP_STORED:
                raise ValueError(
                    f"{where} is not a fastcnn model file (its member "
                    f"{info.filename!r} is compressed; fastcnn files are not)"
                )
        try:
            arrays = {key: archive[key] for key in archive.files}
        except Exception as error:
            raise ValueError(
                f"{where} is corrupted (an array cannot be read: {error})"
            ) from error
    raw = arrays.pop(_HEADER_KEY)
    if raw.dtype.kind != "U" or raw.ndim != 0:
        raise ValueError(f"{where} has a malformed header (not a 0-d unicode array)")
    try:
        header = json.loads(str(raw))
    except ValueError as error:
        raise ValueError(
            f"{where} has a malformed header (bad JSON: {error})"
        ) from error
    if not isinstance(header, dict) or header.get("format") != _FORMAT_NAME:
        raise ValueError(f"{where} is not a fastcnn model file (wrong format name)")
    version = header.get("version")
    if version != FORMAT_VERSION:
        raise ValueError(
            f"{where} has format version {version!r}; this fastcnn reads version "
            f"{FORMAT_VERSION}"
        )
    if header.get("kind") not in ("model", "checkpoint") or not isinstance(
        header.get("layers"), list
    ):
        raise ValueError(f"{where} has a malformed header (no kind or layer list)")
    return header, arrays


def _check_saved_shapes(
    i: int,
    name: str,
    saved: Any,
    shapes: dict[str, tuple[int, ...]],
    arrays: dict[str, np.ndarray],
    where: str,
) -> None:
    """Check layer ``i``'s stored parameters against the shapes its config gives."""
    if not isinstance(saved, list) or set(saved) != set(shapes):
        raise ValueError(
            f"{where}: layer {i} ({name}) has parameters {saved!r} in the file but "
            f"{sorted(shapes)} when built from its config"
        )
    for pname, shape in shapes.items():
        key = f"layer{i}.{pname}"
        if key not in arrays:
            raise ValueError(f"{where}: the array {key!r} is missing")
        value = arrays[key]
        if value.shape != tuple(shape):
            raise ValueError(
                f"{where}: {key} has shape {value.shape}, but the config of layer "
                f"{i} ({name}) needs shape {tuple(shape)}"
            )


def _short_repr(value: Any, limit: int = 200) -> str:
    """``repr(value)``, cut to ``limit`` characters for a one-line message."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 4] + " ..."


def _build_layer(
    i: int, entry: Any, arrays: dict[str, np.ndarray], where: str
) -> Layer:
    if not isinstance(entry, dict) or not {"class", "config", "params"} <= set(entry):
        raise ValueError(f"{where}: the description of layer {i} is malformed")
    name, config = entry["class"], entry["config"]
    cls = _LAYER_REGISTRY.get(name) if isinstance(name, str) else None
    if cls is None:
        known = ", ".join(sorted(_LAYER_REGISTRY))
        raise ValueError(
            f"{where}: layer {i} has unknown class {name!r} (known layer classes: "
            f"{known}; register others with fastcnn.serialization.register_layer)"
        )
    if not isinstance(config, dict):
        raise ValueError(f"{where}: the config of layer {i} ({name}) is not a dict")
    saved = entry["params"]
    try:
        arguments = inspect.signature(cls).bind(**config)
        arguments.apply_defaults()
        shapes = cls.parameter_shapes(dict(arguments.arguments))
    except (TypeError, ValueError, OverflowError) as error:
        raise ValueError(
            f"{where}: layer {i} ({name}) cannot be built from its config "
            f"{_short_repr(config)}: {error}"
        ) from error
    if shapes is not None:
        # Checked before building: the config alone must not decide what is
        # allocated (a doctored Dense(10**9, 10**9) would never fit in memory).
        _check_saved_shapes(i, name, saved, shapes, arrays, where)
    try:
        layer = cls(**config)
    except (TypeError, ValueError, OverflowError) as error:
        raise ValueError(
            f"{where}: layer {i} ({name}) cannot be built from its config "
            f"{_short_repr(config)}: {error}"
        ) from error

    if not isinstance(saved, list) or set(saved) != set(layer.params):
        raise ValueError(
            f"{where}: layer {i} ({name}) has parameters {saved!r} in the file but "
            f"{sorted(layer.params)} when built from its config"
        )
    for pname, param in layer.params.items():
        key = f"layer{i}.{pname}"
        if key not in arrays:
            raise ValueError(f"{where}: the array {key!r} is missing")
        value = arrays.pop(key)
        if value.shape != param.shape or value.dtype != param.dtype:
            raise ValueError(
                f"{where}: {key} has shape {value.shape} and dtype {value.dtype}, "
                f"but layer {i} ({name}) needs shape {param.shape} and dtype "
                f"{param.dtype}"
            )
        param[...] = value

    generators = entry.get("generators", {})
    if not isinstance(generators, dict):
        raise ValueError(f"{where}: the generator states of layer {i} are malformed")
    for attr, state in generators.items():
        generator = vars(layer).get(attr)
        if not isinstance(generator, np.random.Generator):
            raise ValueError(
                f"{where}: layer {i} ({name}) has no random generator {attr!r}"
            )
        try:
            generator.bit_generator.state = state
        except (TypeError, ValueError, KeyError) as error:
            raise ValueError(
                f"{where}: the state of generator {attr!r} of layer {i} ({name}) "
                f"is malformed: {error}"
            ) from error
    return layer


def _build_model(
    header: dict[str, Any], arrays: dict[str, np.ndarray], where: str
) -> Sequential:
    if not header["layers"]:
        raise ValueError(f"{where}: the model has no layers")
    layers = [
        _build_layer(i, entry, arrays, where)
        for i, entry in enumerate(header["layers"])
    ]
    return Sequential(layers)


def _check_leftovers(arrays: dict[str, np.ndarray], where: str) -> None:
    if arrays:
        raise ValueError(
            f"{where} holds arrays that belong to no layer: {sorted(arrays)}"
        )


@contextlib.contextmanager
def _nesting_checked(where: str) -> Iterator[None]:
    """Turn a RecursionError, from a header nested too deeply, into ValueError.

    JSON nested a few thousand levels deep makes ``json.loads`` (or, a little
    less deep, a ``repr`` of the config in a message) exceed Python's recursion
    limit.
    """
    try:
        yield
    except RecursionError:
        raise ValueError(
            f"{where} has a malformed header (nested too deeply)"
        ) from None


def load_model(path: str | os.PathLike) -> Sequential:
    """Load a model written by :func:`save_model` (or :func:`save_checkpoint`).

    Parameters
    ----------
    path : str or os.PathLike
        The file.

    Returns
    -------
    Sequential
        The model, in training mode, with bit-identical parameters.

    Raises
    ------
    OSError
        If the file cannot be read at all.
    ValueError
        If the file is not a fastcnn model: not an ``.npz`` archive, truncated or
        corrupted, of another format version, naming an unknown layer class, or
        with parameters missing, extra, or of the wrong shape or dtype.
    """
    where = os.fspath(path)
    with _nesting_checked(where):
        header, arrays = _read_archive(path)
        model = _build_model(header, arrays, where)
    if header["kind"] == "checkpoint":
        arrays = {
            k: v for k, v in arrays.items() if not k.startswith(_OPTIMIZER_PREFIX)
        }
    _check_leftovers(arrays, where)
    return model


def load_checkpoint(
    path: str | os.PathLike,
) -> tuple[Sequential, Optimizer | None, int]:
    """Load a checkpoint written by :func:`save_checkpoint`.

    Parameters
    ----------
    path : str or os.PathLike
        The file (a plain model file loads with no optimiser and epoch 0).

    Returns
    -------
    model : Sequential
        The model, with bit-identical parameters and generator states.
    optimizer : Optimizer or None
        An optimiser of the saved class built on ``model``, with the saved
        hyperparameters and state; None if none was saved.
    epoch : int
        The number of epochs completed (``initial_epoch`` for ``fit``).

    Raises
    ------
    OSError
        If the file cannot be read at all.
    ValueError
        As :func:`load_model`, and for a malformed optimiser state.
    """
    where = os.fspath(path)
    with _nesting_checked(where):
        return _load_checkpoint(path, where)


def _load_checkpoint(
    path: str | os.PathLike, where: str
) -> tuple[Sequential, Optimizer | None, int]:
    header, arrays = _read_archive(path)
    model = _build_model(header, arrays, where)
    if header["kind"] == "model":
        _check_leftovers(arrays, where)
        return model, None, 0

    epoch = header.get("epoch")
    if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
        raise ValueError(f"{where}: the epoch {epoch!r} is not an int >= 0")
    saved = header.get("optimizer")
    if saved is None:
        _check_leftovers(arrays, where)
        return model, None, epoch
    if not isinstance(saved, dict) or not {"class", "hyperparameters", "state"} <= set(
        saved
    ):
        raise ValueError(f"{where}: the optimiser description is malformed")
    cls = _OPTIMIZER_REGISTRY.get(saved["class"])
    if cls is None:
        raise ValueError(
            f"{where}: unknown optimiser class {saved['class']!r} (known: "
            f"{', '.join(sorted(_OPTIMIZER_REGISTRY))})"
        )
    if not isinstance(saved["state"], dict) or not isinstance(
        saved["hyperparameters"], dict
    ):
        raise ValueError(f"{where}: the optimiser description is malformed")

    # Gather each parameter's state: integers from the header, arrays by name.
    state: dict[str, dict[str, Any]] = {}
    for key, entry in saved["state"].items():
        if not isinstance(entry, dict):
            raise ValueError(f"{where}: the optimiser state of {key!r} is malformed")
        state[key] = dict(entry)
    for name in [k for k in arrays if k.startswith(_OPTIMIZER_PREFIX)]:
        key, _, entry_name = name[len(_OPTIMIZER_PREFIX) :].rpartition(".")
        if key not in state:
            state[key] = {}
        state[key][entry_name] = arrays.pop(name)
    _check_leftovers(arrays, where)

    try:
        optimizer = cls(model, **saved["hyperparameters"])
        optimizer.load_state_dict(
            {
                "class": saved["class"],
                "hyperparameters": saved["hyperparameters"],
                "state": state,
            }
        )
    except (TypeError, ValueError) as error:
        raise ValueError(f"{where}: the optimiser state is invalid: {error}") from error
    return model, optimizer, epoch
