"""Numba's on-disk cache: never stale, never in the way.

A cached kernel is found again by the hash of its own source file and its
argument types. So a value the compiled code takes from anywhere else (another
module, the environment, an array that can be mutated) could go stale without
the cache noticing. ``test_kernels_read_only_constants_of_their_own_file``
holds every kernel to globals its own file defines literally; the subprocess
tests check that such a constant, once edited, is recompiled, and that fastcnn
imports and runs from a read-only install with no writable cache location,
compiling in memory (or into ``NUMBA_CACHE_DIR`` when that is writable).

The subprocess tests compile kernels afresh, so they are marked slow. The
read-only tests run their child as the user ``nobody`` when the tests run
as root (root writes through any file mode); otherwise the copy is made
read-only with chmod. A second variant blocks every cache location with a
regular file where a folder would have to be, which stops root too.
"""

from __future__ import annotations

import ast
import builtins
import dis
import importlib
import inspect
import json
import math
import os
import pkgutil
import pwd
import shutil
import stat
import subprocess
import sys
import tempfile
import textwrap
import types
from pathlib import Path

import numba
import numpy as np
import pytest

import fastcnn
from fastcnn import _config

PACKAGE = Path(fastcnn.__file__).parent


def _kernel_modules() -> list[types.ModuleType]:
    names = [
        info.name
        for info in pkgutil.iter_modules([str(PACKAGE / "kernels")], "fastcnn.kernels.")
    ]
    return [
        importlib.import_module(name) for name in [*names, "fastcnn.tutorial._compiled"]
    ]


def _dispatcher(value) -> numba.core.dispatcher.Dispatcher | None:
    if isinstance(value, numba.core.dispatcher.Dispatcher):
        return value
    inner = getattr(value, "dispatcher", None)
    return inner if isinstance(inner, numba.core.dispatcher.Dispatcher) else None


def _global_names(code: types.CodeType) -> set[str]:
    names = {
        instruction.argval
        for instruction in dis.get_instructions(code)
        if instruction.opname in ("LOAD_GLOBAL", "LOAD_NAME")
    }
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _global_names(const)
    return names


def _literal_constants(module: types.ModuleType) -> dict[str, int]:
    """Module-level ``NAME = <number literal>`` assignments: name -> line."""
    tree = ast.parse(inspect.getsource(module))
    found = {}
    for node in tree.body:
        if (
            isinstance(node, ast.Assign)
            and len(node.targets) == 1
            and isinstance(node.targets[0], ast.Name)
        ):
            value = node.value
            if isinstance(value, ast.UnaryOp) and isinstance(value.op, ast.USub):
                value = value.operand
            if isinstance(value, ast.Constant) and type(value.value) in (
                int,
                float,
                bool,
            ):
                found[node.targets[0].id] = node.lineno
    return found


def _documented(lines: list[str], lineno: int) -> bool:
    """Whether a comment opens the block of constants holding line ``lineno``."""
    index = lineno - 2
    while index >= 0 and lines[index].split("=")[0].strip().isupper():
        index -= 1
    return index >= 0 and lines[index].lstrip().startswith("#")


def test_kernels_read_only_constants_of_their_own_file():
    # Guards against a kernel whose compiled code depends on something the
    # cache cannot see change: a constant imported from another module or
    # computed at import (os.cpu_count(), an environment variable), a mutable
    # global array, or a kernel from another file (edited, it would leave
    # this kernel's cache entry stale).
    problems = []
    checked = 0
    for module in _kernel_modules():
        source_file = inspect.getsourcefile(module)
        constants = _literal_constants(module)
        lines = inspect.getsource(module).splitlines()
        for name, value in vars(module).items():
            dispatcher = _dispatcher(value)
            if (
                dispatcher is None
                or inspect.getsourcefile(dispatcher.py_func) != source_file
            ):
                continue
            checked += 1
            where = f"{module.__name__}.{name}"
            py_func = dispatcher.py_func
            assert py_func.__closure__ is None, f"{where} has a closure"
            for used in sorted(_global_names(py_func.__code__)):
                if used not in py_func.__globals__:
                    if not hasattr(builtins, used):
                        problems.append(f"{where}: unknown global {used}")
                    continue
                target = py_func.__globals__[used]
                if target is np or target is math or target is numba.prange:
                    continue
                called = _dispatcher(target)
                if called is not None:
                    if inspect.getsourcefile(called.py_func) != source_file:
                        problems.append(f"{where} calls {used} from another file")
                    elif called is not target:
                        problems.append(f"{where} calls the Python wrapper of {used}")
                    continue
                if (
                    inspect.isfunction(target)
                    and inspect.getsourcefile(target) == source_file
                ):
                    # A function of the same file given a compiled overload
                    # there (fastcnn's vectorisable exp, say): edited, it
                    # changes the file, which invalidates the cache entry.
                    continue
                if used in constants and used.isupper():
                    if not _documented(lines, constants[used]):
                        problems.append(f"{where}: constant {used} has no comment")
                    continue
                problems.append(
                    f"{where} reads global {used} ({type(target).__name__}), which is "
                    "not a number literal of its own file"
                )
    assert checked >= 30, "found too few kernels: the audit looked in the wrong place"
    assert not problems, "\n".join(problems)


def test_the_compile_options_are_the_documented_constants():
    # Guards against editing fastcnn's compile options without clearing the
    # caches: a cache entry is not keyed by them, so existing entries would
    # keep the old options. Whoever changes these must delete the cached
    # *.nbi/*.nbc files (the _config docstring says so) and update this test.
    assert frozenset({"reassoc", "contract", "nsz", "arcp"}) == _config.FASTMATH
    kernel = _dispatcher(fastcnn.kernels.activations.relu_flat)
    assert kernel.targetoptions["fastmath"] == set(_config.FASTMATH)
    assert kernel.targetoptions["error_model"] == "numpy"
    assert kernel.targetoptions.get("parallel") == (not numba.config.BOUNDSCHECK)


# ----------------------------------------------------------------------
# Subprocesses


def _child_env(**overrides: str | None) -> dict[str, str]:
    """The environment for a child: no inherited cache or bounds settings."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("NUMBA_", "PYTHON", "XDG_"))
    }
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    for key, value in overrides.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


def _run(script: str, cwd: Path, env: dict[str, str], user: int | None = None) -> dict:
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        user=user,
        group=None if user is None else pwd.getpwuid(user).pw_gid,
        extra_groups=None if user is None else [],
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


_CONSTANT_MODULE = """\
from fastcnn._config import serial_kernel

# How much scale multiplies.
FACTOR = {factor}


@serial_kernel
def scale(x):
    return x * FACTOR
"""

_CONSTANT_SCRIPT = """
import json

import scaled

value = scaled.scale(2.0)
print(json.dumps({"value": value, "hits": sum(scaled.scale.stats.cache_hits.values())}))
"""


@pytest.mark.slow
def test_an_edited_constant_is_recompiled_not_read_from_the_cache(tmp_path):
    # Guards against the premise of the audit above being false: a constant of
    # the kernel's own file, once edited, must not come back from the cache.
    module = tmp_path / "scaled.py"
    env = _child_env(NUMBA_CACHE_DIR=str(tmp_path / "cache"))
    module.write_text(_CONSTANT_MODULE.format(factor=3))
    assert _run(_CONSTANT_SCRIPT, tmp_path, env) == {"value": 6.0, "hits": 0}
    assert _run(_CONSTANT_SCRIPT, tmp_path, env) == {"value": 6.0, "hits": 1}

    module.write_text(_CONSTANT_MODULE.format(factor=5))
    assert _run(_CONSTANT_SCRIPT, tmp_path, env) == {"value": 10.0, "hits": 0}
    assert _run(_CONSTANT_SCRIPT, tmp_path, env) == {"value": 10.0, "hits": 1}


_INSTALLED_SCRIPT = """
import json
import os
import sys
import tempfile

import numpy as np

import fastcnn
from fastcnn.functional import linear, relu
from fastcnn.kernels.activations import relu_flat
from fastcnn.kernels.dense import add_bias_rows
from fastcnn.tutorial import _compiled

# What Numba tries before it caches beside a module.
pycache = os.path.join(os.path.dirname(fastcnn.__file__), "kernels", "__pycache__")
try:
    os.makedirs(pycache, exist_ok=True)
    tempfile.TemporaryFile(dir=pycache).close()
    pycache_writable = True
except OSError:
    pycache_writable = False

x = np.linspace(-2.0, 2.0, 20_001).reshape(3, -1)
weight = np.arange(12.0).reshape(4, 3) / 10
bias = np.array([0.5, -1.0, 2.0, 0.25])
out = np.empty(2)
_compiled.dense_forward(
    np.ones(4), 0, np.array([1.0, -1.0]), 0, np.array([2.0, 3.0]), 0, out, 0, 2, 2
)
ok = (
    np.array_equal(relu(x), np.maximum(x, 0))
    and np.allclose(linear(x.T[:7], weight, bias), x.T[:7] @ weight.T + bias)
    and np.array_equal(out, [6.0, 4.0])
)
# Small calls run the single-threaded twin of a parallel kernel: count both.
kernels = [
    relu_flat.dispatcher,
    relu_flat.serial,
    add_bias_rows.dispatcher,
    add_bias_rows.serial,
    _compiled.dense_forward,
]
print(json.dumps({
    "file": fastcnn.__file__,
    "pycache_writable": pycache_writable,
    "ok": bool(ok),
    "caches": sorted({type(k._cache).__name__ for k in kernels}),
    "hits": sum(sum(k.stats.cache_hits.values()) for k in kernels),
}))
"""


def _cache_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.suffix in (".nbi", ".nbc")]


def _unprivileged_user() -> int | None:
    """A uid that can run this Python but not write our files, or None."""
    try:
        uid = pwd.getpwnam("nobody").pw_uid
    except KeyError:
        return None
    try:
        probe = subprocess.run(
            [sys.executable, "-c", "pass"],
            user=uid,
            group=pwd.getpwuid(uid).pw_gid,
            extra_groups=[],
            capture_output=True,
            timeout=60,
            check=False,
        )
    except OSError:  # the interpreter lives where that user cannot go
        return None
    return uid if probe.returncode == 0 else None


def _block_pycache_folders(package: Path) -> None:
    """Put a regular file wherever Python or Numba would create __pycache__."""
    for folder in [package, *(p for p in package.rglob("*") if p.is_dir())]:
        (folder / "__pycache__").write_text("not a folder")


@pytest.fixture
def installed():
    """A copy of the package that the child cannot write into.

    Yields ``(root, package, user, home)``: the world-readable folder to run
    from, the copied package, the uid to run the child as (None: the current
    user) and a HOME under which nothing can be created. As root, the child
    runs as ``nobody`` when that user can run this Python; otherwise (root
    writes through any file mode) the folders Numba would need are blocked by
    regular files.
    """
    root = Path(tempfile.mkdtemp(prefix="fastcnn-readonly-"))
    package = root / "fastcnn"
    shutil.copytree(PACKAGE, package, ignore=shutil.ignore_patterns("__pycache__"))
    user = _unprivileged_user() if os.geteuid() == 0 else None
    if os.geteuid() == 0 and user is None:
        _block_pycache_folders(package)
        home = root / "home-is-a-file"
        home.write_text("not a folder")
    else:
        home = root / "home"  # cannot be created: root/ is read-only
    for path in [root, *root.rglob("*")]:
        mode = 0o555 if path.is_dir() else 0o444
        os.chmod(path, mode if user is None else mode | stat.S_IWUSR)
    try:
        yield root, package, user, home
    finally:
        for path in [root, *root.rglob("*")]:
            os.chmod(path, stat.S_IRWXU)
        shutil.rmtree(root)


@pytest.mark.slow
def test_a_read_only_install_with_no_writable_cache_compiles_in_memory(installed):
    # Guards against Numba's "no locator available" error at import when
    # neither the package folder nor the home folder can hold a cache.
    root, package, user, home = installed
    report = _run(_INSTALLED_SCRIPT, root, _child_env(HOME=str(home)), user=user)
    assert report["file"] == str(package / "__init__.py")
    assert not report["pycache_writable"]
    assert report["ok"]
    assert report["caches"] == ["NullCache"]
    assert not _cache_files(root)
    assert not (home / ".cache").exists()


@pytest.mark.slow
def test_blocked_cache_locations_compile_in_memory(tmp_path):
    # Guards against the same failure where permissions do not help (root):
    # every place a cache could go is a regular file where a folder must be,
    # NUMBA_CACHE_DIR included.
    package = tmp_path / "fastcnn"
    shutil.copytree(PACKAGE, package, ignore=shutil.ignore_patterns("__pycache__"))
    _block_pycache_folders(package)
    blocker = tmp_path / "blocker"
    blocker.write_text("not a folder")
    env = _child_env(HOME=str(blocker), NUMBA_CACHE_DIR=str(blocker / "cache"))
    report = _run(_INSTALLED_SCRIPT, tmp_path, env)
    assert report["file"] == str(package / "__init__.py")
    assert not report["pycache_writable"]
    assert report["ok"]
    assert report["caches"] == ["NullCache"]
    assert not _cache_files(tmp_path)


@pytest.mark.slow
def test_a_read_only_install_caches_into_numba_cache_dir(installed):
    # Guards against NUMBA_CACHE_DIR being ignored for a read-only install:
    # the second run must load every kernel from there, and nothing may be
    # written beside the package.
    root, package, user, home = installed
    cache = Path(tempfile.mkdtemp(prefix="fastcnn-cache-"))
    try:
        if user is not None:
            os.chown(cache, user, -1)
        env = _child_env(HOME=str(home), NUMBA_CACHE_DIR=str(cache))
        first = _run(_INSTALLED_SCRIPT, root, env, user=user)
        second = _run(_INSTALLED_SCRIPT, root, env, user=user)
        assert first["ok"] and second["ok"]
        assert first["caches"] == second["caches"] == ["FunctionCache"]
        assert first["hits"] == 0 and second["hits"] == 3
        assert _cache_files(cache)
        assert not _cache_files(package)
    finally:
        shutil.rmtree(cache)
