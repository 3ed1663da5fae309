"""Kernels called from several Python threads, and from forked processes.

Numba's ``workqueue`` threading layer aborts the whole process when two parallel
regions run at once, so fastcnn serialises parallel kernel calls with
``fastcnn._config.KERNEL_LOCK``. The thread test runs in a subprocess: were the
lock missing, the abort would be reported as a failure instead of killing the
test run. Forked children are given timeouts, so a hang fails the test.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import multiprocessing
import os
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest

import fastcnn
import fastcnn.functional as F
from fastcnn import _config
from fastcnn.losses import CrossEntropyLoss
from fastcnn.nets import lenet
from fastcnn.optim import SGD

_THREADS_SCRIPT = textwrap.dedent(
    """
    import json
    import threading

    import numpy as np

    import fastcnn
    import fastcnn.functional as F
    from fastcnn.losses import CrossEntropyLoss
    from fastcnn.nets import lenet
    from fastcnn.optim import SGD

    THREADS, CALLS, STEPS = 4, 20, 20
    rng = np.random.default_rng(0)
    x = rng.standard_normal((6, 3, 20, 20)).astype(np.float32)
    weight = rng.standard_normal((8, 3, 3, 3)).astype(np.float32)
    logits = rng.standard_normal((300, 10)).astype(np.float32)
    target = rng.integers(0, 10, 300)
    images = rng.standard_normal((16, 1, 12, 12)).astype(np.float32)
    labels = rng.integers(0, 10, 16)


    def ops(i):
        # Inputs differ from call to call, so results mixed up between threads
        # would not match.
        y = F.conv2d(x + np.float32(i), weight, padding=1)
        pooled = F.max_pool2d(y, 2, stride=2)
        loss, grad = F.cross_entropy_with_grad(logits * np.float32(1 + i), target)
        return [y, pooled, np.asarray(loss), grad]


    def train():
        model = lenet(image_size=12, rng=0)
        optimizer = SGD(model, lr=0.05, momentum=0.9)
        criterion = CrossEntropyLoss()
        for _ in range(STEPS):
            optimizer.zero_grad()
            criterion.forward(model.forward(images), labels)
            model.backward(criterion.backward())
            optimizer.step()
        return list(model.params.values())


    expected = {
        t * 100 + c: ops(t * 100 + c) for t in range(THREADS) for c in range(CALLS)
    }
    expected_params = train()
    mismatches, errors = [], []
    barrier = threading.Barrier(THREADS)


    def worker(t):
        try:
            # Thread counts are per Python thread: mix them as well.
            fastcnn.set_num_threads(1 + t % 2)
            barrier.wait()
            for c in range(CALLS):
                i = t * 100 + c
                for a, b in zip(ops(i), expected[i]):
                    if a.tobytes() != b.tobytes():
                        mismatches.append(f"call {i}")
            params = train()
            for a, b in zip(params, expected_params):
                if a.tobytes() != b.tobytes():
                    mismatches.append(f"training in thread {t}")
        except BaseException as error:
            errors.append(f"thread {t}: {error!r}")


    threads = [threading.Thread(target=worker, args=(t,)) for t in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    print(json.dumps({"mismatches": mismatches, "errors": errors}))
    """
)


def test_kernels_called_from_four_threads_at_once_match_serial_results():
    # Guards against two parallel regions at once (workqueue aborts the
    # process), against scratch state shared between calls, and against
    # training steps of separate models interfering.
    result = subprocess.run(
        [sys.executable, "-c", _THREADS_SCRIPT],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary == {"mismatches": [], "errors": []}


# ----------------------------------------------------------------------
# Forked processes


def _inputs():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((4, 3, 16, 16)).astype(np.float32)
    weight = rng.standard_normal((5, 3, 3, 3)).astype(np.float32)
    logits = rng.standard_normal((50, 7)).astype(np.float32)
    target = rng.integers(0, 7, 50)
    return x, weight, logits, target


def _workload(shift: int = 0) -> list[np.ndarray]:
    """conv2d, max_pool2d, relu, cross-entropy and a training step."""
    x, weight, logits, target = _inputs()
    y, ctx = F.conv2d_forward(x + np.float32(shift), weight, padding=1)
    grads = F.conv2d_backward(np.ones_like(y), ctx)
    pooled = F.max_pool2d(F.relu(y), 2)
    loss, grad = F.cross_entropy_with_grad(logits, target)

    model = lenet(image_size=8, rng=0)
    optimizer = SGD(model, lr=0.1, momentum=0.9)
    criterion = CrossEntropyLoss()
    images = np.tile(x[:, :1, :8, :8], (2, 1, 1, 1))
    optimizer.zero_grad()
    criterion.forward(model.forward(images), np.arange(8) % 10)
    model.backward(criterion.backward())
    optimizer.step()
    return [y, *grads[:2], pooled, np.asarray(loss), grad, *model.params.values()]


def _send_workload(connection, shift: int) -> None:
    try:
        connection.send(_workload(shift))
    finally:
        connection.close()


def _run_in_fork(shift: int, timeout: float = 120.0) -> list[np.ndarray]:
    """Fork now, run the workload in the child, return its results."""
    context = multiprocessing.get_context("fork")
    receiver, sender = context.Pipe(duplex=False)
    child = context.Process(target=_send_workload, args=(sender, shift))
    child.start()
    sender.close()
    try:
        if not receiver.poll(timeout):
            pytest.fail(f"the forked process gave no result within {timeout} s")
        return receiver.recv()
    finally:
        child.join(timeout=30)
        if child.is_alive():
            child.kill()
            child.join()


def _assert_same(actual: list[np.ndarray], expected: list[np.ndarray]) -> None:
    assert len(actual) == len(expected)
    for a, b in zip(actual, expected, strict=True):
        assert a.dtype == b.dtype and a.tobytes() == b.tobytes()


def test_a_process_forked_after_kernels_ran_can_use_them():
    # Guards against a threading layer that hangs or crashes in a child forked
    # after its thread pool started (GNU OpenMP does).
    expected = _workload(0)  # the parent's thread pool is running now
    for shift in (0, 3):
        _assert_same(_run_in_fork(shift), _workload(shift))
    _assert_same(_workload(0), expected)  # and the parent still works


def test_a_pool_of_forked_workers_gives_the_parent_results():
    expected = [_workload(shift) for shift in range(4)]
    context = multiprocessing.get_context("fork")
    with context.Pool(2) as pool:
        results = pool.map_async(_workload, range(4)).get(timeout=180)
    for actual, wanted in zip(results, expected, strict=True):
        _assert_same(actual, wanted)


def test_a_fork_while_another_thread_holds_the_kernel_lock_does_not_hang():
    # Guards against the child inheriting a KERNEL_LOCK held by a thread that
    # does not exist there: its first parallel kernel call would wait for ever.
    expected = _workload(1)
    held, release = threading.Event(), threading.Event()

    def hold_the_lock():
        with _config.KERNEL_LOCK:
            held.set()
            release.wait(timeout=60)

    holder = threading.Thread(target=hold_the_lock)
    holder.start()
    try:
        assert held.wait(timeout=30)
        results = _run_in_fork(1, timeout=60)
    finally:
        release.set()
        holder.join(timeout=30)
    _assert_same(results, expected)


def test_forks_while_another_thread_keeps_calling_kernels():
    # Guards against a fork landing at any point of another thread's kernel
    # call (entering or leaving the lock, inside BLAS) breaking the child.
    expected = _workload(2)
    stop = threading.Event()
    errors: list[BaseException] = []

    def keep_calling():
        try:
            while not stop.is_set():
                _workload(0)
        except BaseException as error:
            errors.append(error)

    busy = threading.Thread(target=keep_calling)
    busy.start()
    try:
        for _ in range(4):
            time.sleep(0.05)
            _assert_same(_run_in_fork(2, timeout=60), expected)
    finally:
        stop.set()
        busy.join(timeout=60)
    assert not errors


# ----------------------------------------------------------------------
# Threading layers

_LAYER_SCRIPT = textwrap.dedent(
    """
    import hashlib
    import json

    import numba
    import numpy as np

    import fastcnn.functional as F
    from fastcnn.losses import CrossEntropyLoss
    from fastcnn.nets import lenet
    from fastcnn.optim import SGD

    rng = np.random.default_rng(3)
    # Large enough for every kernel to take its parallel compile.
    images = rng.standard_normal((64, 1, 28, 28)).astype(np.float32)
    labels = rng.integers(0, 10, 64)
    model = lenet(rng=0)
    optimizer = SGD(model, lr=0.05, momentum=0.9)
    criterion = CrossEntropyLoss()
    for _ in range(3):
        optimizer.zero_grad()
        criterion.forward(model.forward(images), labels)
        model.backward(criterion.backward())
        optimizer.step()
    x = rng.standard_normal((16, 8, 32, 32)).astype(np.float32)
    weight = rng.standard_normal((16, 8, 3, 3)).astype(np.float32)
    y, ctx = F.conv2d_forward(x, weight, stride=2, padding=1)
    arrays = [*model.params.values(), y, *F.conv2d_backward(y, ctx)[:2]]
    digest = hashlib.sha256(b"".join(a.tobytes() for a in arrays)).hexdigest()
    print(json.dumps({"layer": numba.threading_layer(), "digest": digest}))
    """
)


def _run_layer_script(layer: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_THREADING_LAYER"}
    if layer is not None:
        env["NUMBA_THREADING_LAYER"] = layer
    result = subprocess.run(
        [sys.executable, "-c", _LAYER_SCRIPT],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_fastcnn_chooses_its_preferred_layer_and_never_gnu_openmp():
    # Guards against Numba's own choice, which takes GNU OpenMP (not usable in
    # a forked child) before workqueue when TBB is missing.
    assert _config.PREFERRED_LAYER in ("tbb", "workqueue")
    assert _run_layer_script(None)["layer"] == _config.PREFERRED_LAYER


def test_tbb_is_preferred_when_the_tbb_package_is_installed():
    if importlib.util.find_spec("numba.np.ufunc.tbbpool") is None:
        pytest.skip("this Numba has no TBB layer")
    try:
        importlib.metadata.version("tbb")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("the tbb package is not installed")
    assert _config.PREFERRED_LAYER == "tbb"


def test_tbb_and_workqueue_give_the_same_bits():
    # Results must not depend on the threading layer: every prange iteration
    # owns what it writes, whichever layer schedules it.
    if _config.PREFERRED_LAYER != "tbb":
        pytest.skip("TBB cannot be loaded here")
    on_tbb = _run_layer_script("tbb")
    on_workqueue = _run_layer_script("workqueue")
    assert (on_tbb["layer"], on_workqueue["layer"]) == ("tbb", "workqueue")
    assert on_tbb["digest"] == on_workqueue["digest"]


def test_a_training_step_gives_the_same_bits_freshly_compiled_and_from_the_cache(
    tmp_path,
):
    # The first run after installing compiles the kernels, later runs load them
    # from Numba's cache: `fastcnn train` must give the same model either way.
    # Bounds checking switches the cache off, so the children run without it.
    unset = ("NUMBA_THREADING_LAYER", "NUMBA_BOUNDSCHECK")
    env = {k: v for k, v in os.environ.items() if k not in unset}
    env["NUMBA_CACHE_DIR"] = str(tmp_path)
    digests = []
    for _ in range(2):
        result = subprocess.run(
            [sys.executable, "-c", _LAYER_SCRIPT],
            capture_output=True,
            text=True,
            timeout=600,
            env=env,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        digests.append(json.loads(result.stdout.strip().splitlines()[-1])["digest"])
    assert any(tmp_path.rglob("*.nbc"))  # the second run did have a cache
    assert digests[0] == digests[1]


def _send_serial_only(connection) -> None:
    try:
        _workload(1)
        connection.send(_config.SERIAL_ONLY)
    finally:
        connection.close()


def _fork_and_ask_serial_only() -> bool:
    context = multiprocessing.get_context("fork")
    receiver, sender = context.Pipe(duplex=False)
    child = context.Process(target=_send_serial_only, args=(sender,))
    child.start()
    sender.close()
    try:
        assert receiver.poll(120), "the forked process gave no answer"
        return receiver.recv()
    finally:
        child.join(timeout=30)


def test_a_child_forked_beside_another_kernel_thread_runs_serial_kernels():
    # TBB cannot shut down for a fork while another thread it knows is alive,
    # and the child's parallel regions may then hang: such a child runs the
    # serial twins. A fork with no such thread keeps the parallel kernels.
    import numba

    _workload(0)
    if numba.threading_layer() != "tbb":
        pytest.skip("only TBB needs this")
    assert _fork_and_ask_serial_only() is False

    ran, finish = threading.Event(), threading.Event()

    def use_kernels_then_wait():
        _workload(0)
        ran.set()
        finish.wait(timeout=120)

    other = threading.Thread(target=use_kernels_then_wait)
    other.start()
    try:
        assert ran.wait(timeout=60)
        assert _fork_and_ask_serial_only() is True
    finally:
        finish.set()
        other.join(timeout=60)
    assert _config.SERIAL_ONLY is False  # the parent keeps its parallel kernels


@pytest.mark.parametrize("n", [np.int64(1), np.int32(1), np.uint8(1)])
def test_set_num_threads_takes_numpy_integers(n):
    # Guards against refusing NumPy ints, which every other int argument takes.
    before = fastcnn.get_num_threads()
    try:
        fastcnn.set_num_threads(n)
        assert fastcnn.get_num_threads() == 1
    finally:
        fastcnn.set_num_threads(before)


@pytest.mark.parametrize(
    ("n", "error", "match"),
    [
        (True, TypeError, "n must be an int, got bool True"),
        (np.bool_(True), TypeError, "n must be an int, got bool"),
        (1.0, TypeError, "n must be an int, got float 1.0"),
        ("2", TypeError, "n must be an int, got str"),
        (np.int64(0), ValueError, "n must be between 1 and"),
        (np.int64(10**6), ValueError, "n must be between 1 and"),
    ],
)
def test_set_num_threads_refuses_bools_and_non_integers(n, error, match):
    before = fastcnn.get_num_threads()
    with pytest.raises(error, match=match):
        fastcnn.set_num_threads(n)
    assert fastcnn.get_num_threads() == before
