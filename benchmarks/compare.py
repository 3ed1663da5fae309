"""Time fastcnn against PyTorch on every target workload and report the ratios.

Usage::

    python benchmarks/compare.py [--quick] [--out benchmarks/results]
                                 [--write-results] [--no-reference]

Every workload is timed for fastcnn and, when it imports, PyTorch (2.13, limited to
Numba's thread count) in the same process on the same float32 inputs. After a
warm-up (which also compiles the kernels), the implementations take turns in
three blocks of repetitions each, so that both share the noise of a busy machine,
and the median of each is reported. The naive references are timed where a call
takes seconds, not minutes. Start-up is measured in fresh subprocesses,
allocation with tracemalloc, scaling with 1 and 2 threads (Numba and the BLAS
pool both limited).

The script prints a table and, given ``--out``, writes ``results.json``,
``results.md`` and a bar chart ``ratios.png`` (when matplotlib imports) there. With
``--write-results`` it also replaces the generated part of
``benchmarks/RESULTS.md`` (between the ``BEGIN GENERATED`` and ``END GENERATED``
markers), leaving the hand-written sections alone.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numba
import numpy as np

import fastcnn
import fastcnn.functional as F
from fastcnn.functional import Workspace
from fastcnn.functional import conv as conv_f
from fastcnn.functional import pooling as pool_f
from fastcnn.reference import conv as conv_r
from fastcnn.reference import pooling as pool_r
from fastcnn.reference import softmax as softmax_r

HERE = Path(__file__).resolve().parent
RESULTS_MD = HERE / "RESULTS.md"
BEGIN = "<!-- BEGIN GENERATED (benchmarks/compare.py --write-results) -->"
END = "<!-- END GENERATED -->"

#: Same shapes as benchmarks/bench_conv.py: input (N, C, H, W), C_out, k, s, p.
CONV_WORKLOADS = {
    "conv_first": ((64, 1, 28, 28), 16, 3, 1, 1),
    "conv_mid": ((64, 16, 14, 14), 32, 3, 1, 1),
    "conv_cifar": ((32, 64, 32, 32), 64, 3, 1, 1),
    "conv_stride2": ((32, 32, 32, 32), 64, 3, 2, 1),
    "conv_5x5": ((64, 6, 14, 14), 16, 5, 1, 0),
}
#: As in benchmarks/bench_pooling.py.
POOL_SHAPE = (64, 32, 28, 28)
#: As in benchmarks/bench_softmax.py: (rows, classes).
SOFTMAX_WORKLOADS = {"4096x10": (4096, 10), "256x1000": (256, 1000)}

TRAIN_BATCHES = (1, 16, 64, 256)
INFER_BATCHES = (64, 256)


def import_torch() -> Any:
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(numba.get_num_threads())
    return torch


# --------------------------------------------------------------------- timing


def interleaved(
    funcs: dict[str, Callable[[], Any]],
    repeats: int,
    warmup: int = 2,
    rounds: int = 3,
    setup: dict[str, Callable[[], Any]] | None = None,
) -> dict[str, float]:
    """Median seconds per call of each function, in interleaved blocks.

    The implementations take turns, ``rounds`` times, each timing a block of
    ``ceil(repeats / rounds)`` calls, so that slow minutes of a shared machine
    fall on both. Before its block, an implementation runs untimed for at least
    :data:`SETTLE` seconds: the thread pools of the other one (PyTorch's OpenMP
    threads, OpenBLAS's) keep spinning for a while after their last task and
    would otherwise slow the first calls of the block down. Before anything, the
    workload waits :data:`QUIET` seconds, so that the pools of the previous
    workload are asleep (OpenBLAS's threads spin for up to a tenth of a second
    after a product, and halved the speed of the next workload's kernels).
    ``setup[name]``, when given, runs untimed before each of ``name``'s warm-up
    calls and blocks (to set a thread count, for instance).
    """
    setup = setup or {}

    def prepare(name: str) -> None:
        if name in setup:
            setup[name]()

    time.sleep(QUIET)
    for _ in range(warmup):
        for name, f in funcs.items():
            prepare(name)
            f()
    block = -(-repeats // rounds)
    times: dict[str, list[float]] = {name: [] for name in funcs}
    for _ in range(rounds):
        for name, f in funcs.items():
            prepare(name)
            if len(funcs) > 1:
                settle_until = time.perf_counter() + SETTLE
                f()
                while time.perf_counter() < settle_until:
                    f()
            for _ in range(block):
                start = time.perf_counter()
                f()
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


#: Seconds an implementation runs untimed before each of its timed blocks.
SETTLE = 0.02

#: Seconds every workload waits before its warm-up, for idle thread pools.
QUIET = 0.3


def time_reference(f: Callable[[], Any], budget: float = 20.0) -> float | None:
    """Median of up to 3 calls of a slow reference; None if one call is too slow."""
    times = []
    for _ in range(3):
        start = time.perf_counter()
        f()
        times.append(time.perf_counter() - start)
        if sum(times) > budget:
            break
    return statistics.median(times)


# ------------------------------------------------------------ training model


def make_models(batch: int, torch: Any, seed: int = 0) -> dict[str, Any]:
    """fastcnn's LeNet with SGD, its PyTorch twin with the same weights, data."""
    model = fastcnn.lenet(rng=seed)
    optimizer = fastcnn.SGD(model, lr=0.01, momentum=0.9)
    criterion = fastcnn.CrossEntropyLoss()
    rng = np.random.default_rng(seed + batch)
    x = rng.standard_normal((batch, 1, 28, 28), dtype=np.float32)
    y = rng.integers(0, 10, size=batch)

    def fast_step() -> float:
        optimizer.zero_grad()
        out = model.forward(x)
        loss = criterion.forward(out, y)
        # As in fit, and as PyTorch does for an input that does not require grad.
        model.backward(criterion.backward(), input_gradient=False)
        optimizer.step()
        return float(loss)

    def fast_infer() -> np.ndarray:
        return model.forward(x)

    models = {"fast_step": fast_step, "fast_infer": fast_infer, "model": model}
    if torch is None:
        return models

    nn = torch.nn
    twin = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(784, 64),
        nn.ReLU(),
        nn.Linear(64, 10),
    ).float()
    with torch.no_grad():
        for mine, theirs in zip(
            [layer for layer in model.layers if layer.params],
            [m for m in twin if isinstance(m, (nn.Conv2d, nn.Linear))],
            strict=True,
        ):
            theirs.weight.copy_(torch.from_numpy(mine.weight))
            theirs.bias.copy_(torch.from_numpy(mine.bias))
    torch_optimizer = torch.optim.SGD(twin.parameters(), lr=0.01, momentum=0.9)
    tx = torch.from_numpy(x.copy())
    ty = torch.from_numpy(y.astype(np.int64))
    cross_entropy = torch.nn.functional.cross_entropy

    def torch_step() -> float:
        torch_optimizer.zero_grad()
        loss = cross_entropy(twin(tx), ty)
        loss.backward()
        torch_optimizer.step()
        return float(loss.detach())

    def torch_infer() -> Any:
        with torch.no_grad():
            return twin(tx)

    models.update(torch_step=torch_step, torch_infer=torch_infer)
    return models


# ------------------------------------------------------------------ workloads


class Table:
    """Rows of (workload, fastcnn, torch, reference, ratio, target, met)."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []
        self.extra: dict[str, Any] = {}

    def add(
        self,
        workload: str,
        fast: float,
        torch_time: float | None,
        target: float | None,
        reference: float | None = None,
    ) -> None:
        ratio = None if torch_time is None else fast / torch_time
        met = None if ratio is None or target is None else ratio <= target
        self.rows.append(
            {
                "workload": workload,
                "fastcnn_s": fast,
                "torch_s": torch_time,
                "reference_s": reference,
                "ratio": ratio,
                "target": target,
                "met": met,
            }
        )
        print(format_row(self.rows[-1]), flush=True)


def format_row(row: dict[str, Any]) -> str:
    def ms(v: float | None) -> str:
        return "-" if v is None else f"{v * 1e3:.3f}"

    ratio = "-" if row["ratio"] is None else f"{row['ratio']:.2f}x"
    if row.get("ratio_low") is not None and row["ratio_low"] != row["ratio_high"]:
        ratio += f" ({row['ratio_low']:.2f}-{row['ratio_high']:.2f})"
    target = "-" if row["target"] is None else f"<= {row['target']:.1f}x"
    met = {None: "-", True: "yes", False: "NO"}[row["met"]]
    return (
        f"| {row['workload']} | {ms(row['fastcnn_s'])} | {ms(row['torch_s'])} | "
        f"{ms(row['reference_s'])} | {ratio} | {target} | {met} |"
    )


def run_training(table: Table, torch: Any, repeats: int) -> None:
    for batch in TRAIN_BATCHES:
        m = make_models(batch, torch)
        funcs = {"fast": m["fast_step"]}
        if torch is not None:
            funcs["torch"] = m["torch_step"]
        t = interleaved(funcs, repeats, warmup=3)
        target = 0.5 if batch == 64 else 0.7
        table.add(f"train_step b{batch}", t["fast"], t.get("torch"), target)
    for batch in INFER_BATCHES:
        m = make_models(batch, torch)
        funcs = {"fast": m["fast_infer"]}
        if torch is not None:
            funcs["torch"] = m["torch_infer"]
        t = interleaved(funcs, repeats, warmup=3)
        table.add(f"inference b{batch}", t["fast"], t.get("torch"), 0.5)


def conv_data(name: str) -> dict[str, Any]:
    shape, c_out, k, stride, padding = CONV_WORKLOADS[name]
    rng = np.random.default_rng(2024)
    x = rng.standard_normal(shape, dtype=np.float32)
    weight = rng.standard_normal((c_out, shape[1], k, k), dtype=np.float32)
    weight /= np.float32(np.sqrt(shape[1] * k * k))
    bias = rng.standard_normal(c_out, dtype=np.float32)
    y = conv_f.conv2d(x, weight, bias, stride, padding)
    grad = rng.standard_normal(y.shape, dtype=np.float32)
    flops = 2.0 * y.size * shape[1] * k * k
    return {
        "x": x,
        "weight": weight,
        "bias": bias,
        "stride": stride,
        "padding": padding,
        "grad": grad,
        "flops": flops,
    }


def conv_funcs(d: dict[str, Any], torch: Any) -> dict[str, dict[str, Callable]]:
    args = (d["stride"], d["padding"])
    # fastcnn reuses its arrays from call to call, as its layers do.
    ws_fwd, ws_both = Workspace(), Workspace()

    def fast_fwd() -> Any:
        return conv_f.conv2d(d["x"], d["weight"], d["bias"], *args, workspace=ws_fwd)

    def fast_both() -> Any:
        _, ctx = conv_f.conv2d_forward(
            d["x"], d["weight"], d["bias"], *args, workspace=ws_both
        )
        return conv_f.conv2d_backward(d["grad"], ctx)

    forward = {"fast": fast_fwd}
    both = {"fast": fast_both}
    if torch is not None:
        tx = torch.from_numpy(d["x"]).requires_grad_(True)
        tw = torch.from_numpy(d["weight"]).requires_grad_(True)
        tb = torch.from_numpy(d["bias"]).requires_grad_(True)
        tg = torch.from_numpy(d["grad"])
        conv = torch.nn.functional.conv2d

        def torch_fwd() -> Any:
            with torch.no_grad():
                return conv(tx, tw, tb, *args)

        def torch_both() -> Any:
            return torch.autograd.grad(conv(tx, tw, tb, *args), (tx, tw, tb), tg)

        forward["torch"] = torch_fwd
        both["torch"] = torch_both
    return {"forward": forward, "both": both}


def matmul_rate(repeats: int) -> float:
    """NumPy float32 matrix product rate in FLOP/s (2048^3, median)."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((2048, 2048), dtype=np.float32)
    b = rng.standard_normal((2048, 2048), dtype=np.float32)
    c = np.empty_like(a)
    t = interleaved({"mm": lambda: np.matmul(a, b, out=c)}, max(5, repeats // 3), 1)
    return 2.0 * 2048**3 / t["mm"]


def run_conv(table: Table, torch: Any, repeats: int, reference: bool) -> None:
    for name in CONV_WORKLOADS:
        d = conv_data(name)
        f = conv_funcs(d, torch)
        ref = None
        if reference and name in ("conv_first", "conv_5x5"):
            ref = time_reference(
                lambda d=d: conv_r.conv2d(
                    d["x"], d["weight"], d["bias"], d["stride"], d["padding"]
                )
            )
        t = interleaved(f["forward"], repeats)
        table.add(f"{name} forward", t["fast"], t.get("torch"), 1.0, ref)
        if name == "conv_cifar":
            table.extra["conv_cifar_forward_flops"] = d["flops"] / t["fast"]
        t = interleaved(f["both"], repeats)
        table.add(f"{name} forward+backward", t["fast"], t.get("torch"), 1.2)


def run_pooling(table: Table, torch: Any, repeats: int, reference: bool) -> None:
    rng = np.random.default_rng(11)
    x = rng.standard_normal(POOL_SHAPE, dtype=np.float32)
    copy_dst = np.empty_like(x)
    t_copy = interleaved({"copy": lambda: np.copyto(copy_dst, x)}, repeats)["copy"]
    copy_bandwidth = 2 * x.nbytes / t_copy
    table.extra["copy_bandwidth_bytes_per_s"] = copy_bandwidth
    for op in ("max_pool2d", "avg_pool2d"):
        forward = getattr(pool_f, f"{op}_forward")
        backward = getattr(pool_f, f"{op}_backward")
        y, _ = forward(x, 2, 2)
        grad = np.random.default_rng(12).standard_normal(y.shape, dtype=np.float32)
        ws_fwd, ws_both = Workspace(), Workspace()

        def fast_fwd(forward=forward, ws=ws_fwd) -> Any:
            return forward(x, 2, 2, workspace=ws)

        def fast_both(forward=forward, backward=backward, grad=grad, ws=ws_both) -> Any:
            return backward(grad, forward(x, 2, 2, workspace=ws)[1])

        fwd = {"fast": fast_fwd}
        both = {"fast": fast_both}
        if torch is not None:
            tx = torch.from_numpy(x).requires_grad_(True)
            tg = torch.from_numpy(grad)
            top = getattr(torch.nn.functional, op)

            def torch_fwd(top=top, tx=tx) -> Any:
                with torch.no_grad():
                    return top(tx, 2, 2)

            def torch_both(top=top, tx=tx, tg=tg) -> Any:
                return torch.autograd.grad(top(tx, 2, 2), tx, tg)

            fwd["torch"] = torch_fwd
            both["torch"] = torch_both
        ref = None
        if reference:
            ref = time_reference(lambda op=op: getattr(pool_r, op)(x, 2, 2))
        t = interleaved(fwd, repeats)
        table.add(f"{op} forward", t["fast"], t.get("torch"), None, ref)
        bandwidth = (x.nbytes + y.nbytes) / t["fast"]
        table.extra[f"{op}_forward_bandwidth_share"] = bandwidth / copy_bandwidth
        t = interleaved(both, repeats)
        table.add(f"{op} forward+backward", t["fast"], t.get("torch"), 0.5)


def run_softmax(table: Table, torch: Any, repeats: int, reference: bool) -> None:
    for name, (n, k) in SOFTMAX_WORKLOADS.items():
        rng = np.random.default_rng(7)
        logits = (rng.standard_normal((n, k)) * 3).astype(np.float32)
        target = rng.integers(0, k, size=n)
        ws = Workspace()
        funcs = {
            "fast": lambda logits=logits, target=target, ws=ws: (
                F.cross_entropy_with_grad(logits, target, workspace=ws)
            )
        }
        if torch is not None:
            tl = torch.from_numpy(logits).requires_grad_(True)
            tt = torch.from_numpy(target.astype(np.int64))

            def torch_both(tl=tl, tt=tt) -> Any:
                loss = torch.nn.functional.cross_entropy(tl, tt)
                return torch.autograd.grad(loss, tl)

            funcs["torch"] = torch_both
        ref = None
        if reference:
            ref = time_reference(
                lambda logits=logits, target=target: (
                    softmax_r.cross_entropy(logits, target),
                    softmax_r.cross_entropy_backward(logits, target),
                )
            )
        t = interleaved(funcs, repeats)
        table.add(
            f"cross_entropy {name} forward+backward",
            t["fast"],
            t.get("torch"),
            1.0,
            ref,
        )


# ---------------------------------------------------- start-up, memory, scaling


def run_subprocess(code: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run ``code`` in a fresh interpreter; it prints one JSON line, returned."""
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        check=True,
    )
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["wall_s"] = time.perf_counter() - start
    return result


IMPORT_CODE = """
import time, json
start = time.perf_counter()
import numpy, numba
base = time.perf_counter()
if {with_fastcnn}:
    import fastcnn, fastcnn.kernels, sys
    from numba.core.registry import CPUDispatcher
    compiled = 0
    for mod in list(sys.modules.values()):
        if getattr(mod, "__name__", "").startswith("fastcnn"):
            for obj in vars(mod).values():
                obj = getattr(obj, "dispatcher", obj)
                if isinstance(obj, CPUDispatcher):
                    compiled += len(obj.overloads)
else:
    compiled = 0
end = time.perf_counter()
print(json.dumps({{"numpy_numba_s": base - start, "fastcnn_s": end - base,
                   "compiled": compiled}}))
"""

FIRST_STEP_CODE = """
import time, json
start = time.perf_counter()
import numpy as np
import fastcnn
model = fastcnn.lenet(rng=0)
optimizer = fastcnn.SGD(model, lr=0.01, momentum=0.9)
criterion = fastcnn.CrossEntropyLoss()
rng = np.random.default_rng(0)
x = rng.standard_normal((64, 1, 28, 28), dtype=np.float32)
y = rng.integers(0, 10, size=64)
optimizer.zero_grad()
loss = criterion.forward(model.forward(x), y)
model.backward(criterion.backward(), input_gradient=False)
optimizer.step()
first_step = time.perf_counter() - start
model.fit(x, y, epochs=1, batch_size=32, optimizer=optimizer, verbose=0)
model.evaluate(x, y)
model.predict(x)
everything = time.perf_counter() - start
print(json.dumps({"first_step_s": first_step, "train_evaluate_s": everything}))
"""


def run_startup(repeats: int) -> dict[str, Any]:
    base = [run_subprocess(IMPORT_CODE.format(with_fastcnn=False)) for _ in range(3)]
    with_f = [run_subprocess(IMPORT_CODE.format(with_fastcnn=True)) for _ in range(3)]
    numpy_numba = statistics.median(r["numpy_numba_s"] for r in with_f)
    added = statistics.median(r["fastcnn_s"] for r in with_f)
    result = {
        "import_numpy_numba_s": numpy_numba,
        "import_numpy_numba_alone_s": statistics.median(
            r["numpy_numba_s"] for r in base
        ),
        "import_fastcnn_added_s": added,
        "kernels_compiled_at_import": max(r["compiled"] for r in with_f),
    }
    with tempfile.TemporaryDirectory() as cache:
        env = {"NUMBA_CACHE_DIR": cache}
        cold = run_subprocess(FIRST_STEP_CODE, env)
        warm = [run_subprocess(FIRST_STEP_CODE, env) for _ in range(3)]
    result["cold_first_step_s"] = cold["first_step_s"]
    result["cold_train_evaluate_s"] = cold["train_evaluate_s"]
    result["cold_process_wall_s"] = cold["wall_s"]
    result["warm_first_step_s"] = statistics.median(r["first_step_s"] for r in warm)
    result["warm_process_wall_s"] = statistics.median(r["wall_s"] for r in warm)
    return result


def run_allocation() -> dict[str, Any]:
    """Bytes allocated (tracemalloc peak above the start) by training steps.

    The first step is a new model's first, its kernels compiled beforehand by
    another model of the same shapes.
    """
    result: dict[str, Any] = {}
    for batch in (64, 256):
        make_models(batch, None)["fast_step"]()
        step = make_models(batch, None)["fast_step"]
        peaks = []
        tracemalloc.start()
        try:
            for _ in range(6):
                tracemalloc.reset_peak()
                before = tracemalloc.get_traced_memory()[0]
                step()
                peaks.append(tracemalloc.get_traced_memory()[1] - before)
        finally:
            tracemalloc.stop()
        result[f"b{batch}_first_step_bytes"] = peaks[0]
        result[f"b{batch}_steady_step_bytes"] = statistics.median(peaks[2:])
        result[f"b{batch}_steady_share"] = statistics.median(peaks[2:]) / peaks[0]
    return result


def run_scaling(repeats: int) -> dict[str, Any]:
    """Speed-up from 1 to all threads and time per image from batch 16 to 256.

    The thread counts take turns in interleaved blocks, as implementations do in
    the other workloads, so that both share the machine's slow moments; one
    thread means one Numba thread and one BLAS thread.
    """
    from threadpoolctl import ThreadpoolController

    blas = ThreadpoolController().select(user_api="blas")
    threads = numba.get_num_threads()

    def use(n: int) -> Callable[[], None]:
        def set_threads() -> None:
            numba.set_num_threads(n)
            blas.limit(limits=n)

        return set_threads

    counts = sorted({1, threads})
    setup = {str(n): use(n) for n in counts}
    result: dict[str, Any] = {}
    d = conv_data("conv_cifar")
    forward = conv_funcs(d, None)["forward"]["fast"]
    step = make_models(64, None)["fast_step"]
    try:
        for name, f in (("conv_cifar_forward", forward), ("train_step_b64", step)):
            times = interleaved({str(n): f for n in counts}, repeats, setup=setup)
            result[f"{name}_1_thread_s"] = times["1"]
            result[f"{name}_{threads}_threads_s"] = times[str(threads)]
            result[f"{name}_speedup"] = times["1"] / times[str(threads)]
    finally:
        use(threads)()
    per_image = {}
    for batch in (16, 256):
        step = make_models(batch, None)["fast_step"]
        per_image[batch] = interleaved({"f": step}, repeats)["f"] / batch
    result["train_step_per_image_b16_s"] = per_image[16]
    result["train_step_per_image_b256_s"] = per_image[256]
    result["train_step_per_image_change"] = per_image[256] / per_image[16] - 1.0
    return result


def merge_scaling(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians over the runs, and each speed-up's and change's range."""
    merged = {key: statistics.median(r[key] for r in runs) for key in runs[0]}
    for key in runs[0]:
        if key.endswith(("_speedup", "_change")):
            merged[f"{key}_low"] = min(r[key] for r in runs)
            merged[f"{key}_high"] = max(r[key] for r in runs)
    return merged


# ------------------------------------------------------------------- reports


def environment(torch: Any) -> dict[str, Any]:
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    from threadpoolctl import threadpool_info

    return {
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "numba": numba.__version__,
        "torch": None if torch is None else torch.__version__,
        "numba_threads": numba.get_num_threads(),
        "numba_threading_layer": numba.config.THREADING_LAYER,
        "torch_threads": None if torch is None else torch.get_num_threads(),
        "blas": [
            {k: info.get(k) for k in ("internal_api", "version", "num_threads")}
            for info in threadpool_info()
            if info.get("user_api") == "blas"
        ],
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }


def markdown(results: dict[str, Any]) -> str:
    env = results["environment"]
    lines = [
        f"Produced by `python benchmarks/compare.py {results['arguments']}` on "
        f"{env['date']}: {env['cpu']} ({env['cpu_count']} CPUs), Python "
        f"{env['python']}, NumPy {env['numpy']}, Numba {env['numba']} "
        f"({env['numba_threads']} threads, {env['numba_threading_layer']} layer), "
        f"PyTorch {env['torch']} ({env['torch_threads']} threads), BLAS "
        + ", ".join(
            f"{b['internal_api']} {b['version']} ({b['num_threads']} threads)"
            for b in env["blas"]
        )
        + f". Medians of {results['repeats']} repetitions (3 interleaved blocks "
        "per implementation, each after 20 ms of untimed calls) after warm-up; "
        "times in ms; ratio = fastcnn / PyTorch"
        + (
            f"; {results['runs']} runs of the whole table: times and ratios are "
            "the medians over the runs, the ratio's range across them in "
            "brackets."
            if results.get("runs", 1) > 1
            else "."
        ),
        "",
        "| workload | fastcnn ms | PyTorch ms | reference ms | ratio | target | met |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += [format_row(row) for row in results["table"]]
    extra = results["extra"]
    lines += ["", "| measurement | value | target | met |", "|---|---|---|---|"]

    def add(name: str, value: str, target: str, met: bool | None) -> None:
        lines.append(
            f"| {name} | {value} | {target} | "
            f"{ {None: '-', True: 'yes', False: 'NO'}[met] } |"
        )

    if "conv_cifar_forward_flops" in extra:
        share = extra["conv_cifar_forward_flops"] / extra["matmul_flops"]
        add(
            "conv_cifar forward rate / NumPy 2048^3 float32 matmul rate",
            f"{extra['conv_cifar_forward_flops'] / 1e9:.1f} / "
            f"{extra['matmul_flops'] / 1e9:.1f} GFLOP/s = {share:.0%}",
            ">= 70%",
            share >= 0.7,
        )
    for op in ("max_pool2d", "avg_pool2d"):
        key = f"{op}_forward_bandwidth_share"
        if key in extra:
            add(
                f"{op} forward bandwidth / copy bandwidth "
                f"({extra['copy_bandwidth_bytes_per_s'] / 1e9:.1f} GB/s)",
                f"{extra[key]:.0%}",
                ">= 40%",
                extra[key] >= 0.4,
            )
    s = results.get("startup")
    if s:
        add(
            f"import fastcnn, added to numpy+numba ({s['import_numpy_numba_s']:.2f} s)",
            f"{s['import_fastcnn_added_s']:.2f} s",
            "<= 0.5 s",
            s["import_fastcnn_added_s"] <= 0.5,
        )
        add(
            "kernels compiled by import fastcnn",
            str(s["kernels_compiled_at_import"]),
            "0",
            s["kernels_compiled_at_import"] == 0,
        )
        add(
            "warm cache: process start to first training step (b64)",
            f"{s['warm_first_step_s']:.2f} s",
            "<= 2 s",
            s["warm_first_step_s"] <= 2.0,
        )
        add(
            "cold cache: first training step / fit+evaluate+predict",
            f"{s['cold_first_step_s']:.1f} s / {s['cold_train_evaluate_s']:.1f} s",
            "report",
            None,
        )
    a = results.get("allocation")
    if a:
        for batch in (64, 256):
            share = a[f"b{batch}_steady_share"]
            add(
                f"allocation per step b{batch}: steady / first",
                f"{a[f'b{batch}_steady_step_bytes'] / 1e6:.2f} MB / "
                f"{a[f'b{batch}_first_step_bytes'] / 1e6:.2f} MB = {share:.0%}",
                "<= 5%",
                share <= 0.05,
            )
    sc = results.get("scaling")
    if sc:

        def spread(key: str, fmt: str) -> str:
            if f"{key}_low" not in sc:
                return ""
            return f" ({sc[f'{key}_low']:{fmt}} to {sc[f'{key}_high']:{fmt}})"

        for name in ("conv_cifar_forward", "train_step_b64"):
            key = f"{name}_speedup"
            add(
                f"{name}: 1 -> {env['numba_threads']} threads speed-up",
                f"{sc[key]:.2f}x{spread(key, '.2f')}",
                ">= 1.7x",
                sc[key] >= 1.7,
            )
        change = sc["train_step_per_image_change"]
        add(
            "train step time per image, batch 16 -> 256",
            f"{sc['train_step_per_image_b16_s'] * 1e6:.0f} -> "
            f"{sc['train_step_per_image_b256_s'] * 1e6:.0f} us ({change:+.0%})"
            f"{spread('train_step_per_image_change', '+.0%')}",
            "within 10%",
            abs(change) <= 0.10,
        )
    return "\n".join(lines) + "\n"


def chart(results: dict[str, Any], path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no chart (pip install fastcnn[plot])")
        return
    rows = [r for r in results["table"] if r["ratio"] is not None]
    fig, ax = plt.subplots(figsize=(8, 0.32 * len(rows) + 1.2))
    names = [r["workload"] for r in rows]
    ratios = [r["ratio"] for r in rows]
    colors = [
        "tab:gray" if r["met"] is None else ("tab:green" if r["met"] else "tab:red")
        for r in rows
    ]
    ax.barh(names, ratios, color=colors)
    for i, r in enumerate(rows):
        if r["target"] is not None:
            ax.plot([r["target"]] * 2, [i - 0.4, i + 0.4], color="black", lw=1.5)
    ax.axvline(1.0, color="gray", ls=":", lw=1)
    ax.invert_yaxis()
    ax.set_xlabel("fastcnn time / PyTorch time (black tick: target)")
    ax.set_title("fastcnn vs PyTorch, float32, same threads")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def merge_runs(tables: list[Table]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Each row's median times over the runs, and the range of its ratio.

    The ratio reported is the median of the runs' ratios; ``ratio_low`` and
    ``ratio_high`` are the smallest and largest. The extra measurements are
    medians too.
    """
    rows = []
    for i, first in enumerate(tables[0].rows):
        runs = [table.rows[i] for table in tables]
        row = dict(first)
        for key in ("fastcnn_s", "torch_s", "reference_s"):
            values = [r[key] for r in runs if r[key] is not None]
            row[key] = statistics.median(values) if values else None
        ratios = [r["ratio"] for r in runs if r["ratio"] is not None]
        if ratios:
            row["ratio"] = statistics.median(ratios)
            row["ratio_low"], row["ratio_high"] = min(ratios), max(ratios)
            if row["target"] is not None:
                row["met"] = row["ratio"] <= row["target"]
        rows.append(row)
    extra = {
        key: statistics.median(table.extra[key] for table in tables)
        for key in tables[0].extra
    }
    return rows, extra


def write_results_md(text: str) -> None:
    old = RESULTS_MD.read_text() if RESULTS_MD.exists() else f"{BEGIN}\n{END}\n"
    head, _, rest = old.partition(BEGIN)
    _, _, tail = rest.partition(END)
    RESULTS_MD.write_text(f"{head}{BEGIN}\n{text}{END}{tail}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="5 repetitions")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="folder for results.json, results.md and ratios.png",
    )
    parser.add_argument(
        "--write-results",
        action="store_true",
        help="replace the generated table in benchmarks/RESULTS.md",
    )
    parser.add_argument(
        "--no-reference",
        action="store_true",
        help="skip timing the naive NumPy references",
    )
    parser.add_argument(
        "--only",
        default="train,conv,pool,softmax,startup,alloc,scaling",
        help="comma-separated parts to run (default: all of them)",
    )
    parser.add_argument(
        "--runs",
        type=int,
        default=1,
        help="time the workloads this many times and report the medians",
    )
    args = parser.parse_args(argv)
    repeats = 5 if args.quick else 15
    reference = not (args.quick or args.no_reference)
    parts = set(args.only.split(","))
    torch = import_torch()

    tables = []
    scaling = []
    for run in range(max(1, args.runs)):
        table = Table()
        print(f"run {run + 1} of {max(1, args.runs)}")
        print(
            "| workload | fastcnn ms | PyTorch ms | reference ms | ratio | target "
            "| met |"
        )
        print("|---|---|---|---|---|---|---|")
        if "train" in parts:
            run_training(table, torch, repeats)
        if "conv" in parts:
            table.extra["matmul_flops"] = matmul_rate(repeats)
            run_conv(table, torch, repeats, reference and run == 0)
        if "pool" in parts:
            run_pooling(table, torch, repeats, reference and run == 0)
        if "softmax" in parts:
            run_softmax(table, torch, repeats, reference and run == 0)
        if "scaling" in parts:
            scaling.append(run_scaling(repeats))
        tables.append(table)
    rows, extra = merge_runs(tables)
    results: dict[str, Any] = {
        "arguments": " ".join(sys.argv[1:] if argv is None else argv),
        "repeats": repeats,
        "runs": len(tables),
        "environment": environment(torch),
        "table": rows,
        "extra": extra,
    }
    if "startup" in parts:
        results["startup"] = run_startup(repeats)
    if "alloc" in parts:
        results["allocation"] = run_allocation()
    if scaling:
        results["scaling"] = merge_scaling(scaling)

    text = markdown(results)
    print()
    print(text)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
        (args.out / "results.md").write_text(text)
        chart(results, args.out / "ratios.png")
    if args.write_results:
        write_results_md(text)


if __name__ == "__main__":
    main()
