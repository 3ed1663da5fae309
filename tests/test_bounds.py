"""No kernel reads or writes outside the arrays it is given.

Numba does not check indices (unless ``NUMBA_BOUNDSCHECK=1``, which CI also
runs), so an off-by-one in a kernel reads a neighbour's memory or overwrites it
silently. Here every array handed to a kernel sits inside a buffer of NaN (or,
for integer arrays, the most negative integer):

* the functional API gets its inputs as strided, offset views into NaN-filled
  buffers (it copies them to contiguous arrays before any kernel runs);
* every call the package makes to a kernel is intercepted and re-issued
  directly on copies of its arrays placed between NaN guards, with the output
  buffers the package allocates (``np.empty``) filled with NaN beforehand.

A read past an array's end then turns an output into NaN, a write past it
changes a guard, and an output element a kernel forgot to write stays NaN. All
results must be finite, bit-identical to an unguarded run, and every kernel the
package calls from Python must have been exercised.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import types

import numba
import numpy
import numpy as np
import pytest

import fastcnn
import fastcnn.functional as F
from fastcnn.layers import (
    AvgPool2D,
    Conv2D,
    Dense,
    Dropout,
    Flatten,
    LeakyReLU,
    MaxPool2D,
    ReLU,
    Sigmoid,
    SoftmaxCrossEntropy,
    Tanh,
)
from fastcnn.models import Sequential
from fastcnn.optim import SGD, Adam

GUARD = 64
DTYPES = [np.float32, np.float64]
KERNEL_MODULE_PREFIXES = ("fastcnn.kernels", "fastcnn.tutorial._compiled")


def _guard_value(dtype: np.dtype):
    if dtype.kind == "f":
        return np.nan
    if dtype.kind in "iu":
        return np.iinfo(dtype).min
    raise TypeError(f"no guard value for dtype {dtype}")


def _is_kernel(value) -> bool:
    if isinstance(value, numba.core.dispatcher.Dispatcher):
        return True
    return isinstance(
        getattr(value, "dispatcher", None), numba.core.dispatcher.Dispatcher
    )


# ----------------------------------------------------------------------
# Guarded kernel calls


class Switch:
    """Whether the spies and the NaN-filling numpy are active."""

    on = True


class KernelSpy:
    """Calls ``kernel`` on guarded copies of its array arguments (when on)."""

    def __init__(
        self, name: str, kernel, switch: type[Switch] = Switch, owner=None
    ) -> None:
        self.name = name
        self.kernel = kernel
        self.switch = switch
        self.calls = 0
        # A twin's calls also count as calls of the kernel it belongs to.
        self.owner = owner

    def __getattr__(self, attr: str):
        # A wrapper may pick the kernel's single-threaded twin itself.
        target = getattr(self.kernel, attr)
        if attr == "serial":
            return KernelSpy(f"{self.name}.serial", target, self.switch, owner=self)
        return target

    def __call__(self, *args):
        if not self.switch.on:
            return self.kernel(*args)
        self.calls += 1
        if self.owner is not None:
            self.owner.calls += 1
        copies: dict[tuple, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        guarded_args = []
        for arg in args:
            if not isinstance(arg, np.ndarray):
                guarded_args.append(arg)
                continue
            key = (
                arg.__array_interface__["data"][0],
                arg.shape,
                arg.strides,
                arg.dtype,
            )
            if key not in copies:
                buffer = np.full(
                    arg.size + 2 * GUARD, _guard_value(arg.dtype), arg.dtype
                )
                inner = buffer[GUARD : GUARD + arg.size].reshape(arg.shape)
                inner[...] = arg
                copies[key] = (arg, buffer, inner)
            guarded_args.append(copies[key][2])
        originals = [original for original, _, _ in copies.values()]
        for i, a in enumerate(originals):
            for b in originals[i + 1 :]:
                assert not np.shares_memory(a, b), (
                    f"{self.name}: two arguments overlap partially; "
                    "the guarded copies cannot mirror that"
                )

        result = self.kernel(*guarded_args)

        for original, buffer, inner in copies.values():
            for side in (buffer[:GUARD], buffer[-GUARD:]):
                guard = _guard_value(buffer.dtype)
                intact = np.isnan(side) if np.isnan(guard) else side == guard
                assert intact.all(), f"{self.name} wrote outside an argument"
            if not np.array_equal(
                inner, original, equal_nan=original.dtype.kind == "f"
            ):
                original[...] = inner
        return result


class _KernelModuleProxy(types.SimpleNamespace):
    """Stands in for a kernel module: its kernels replaced by spies."""


class _NaNEmptyNumpy:
    """numpy, except that ``empty`` and ``empty_like`` return guard-filled arrays."""

    def __getattr__(self, name):
        return getattr(numpy, name)

    @staticmethod
    def _fill(array):
        if Switch.on and array.dtype.kind in "fiu":
            array.fill(_guard_value(array.dtype))
        return array

    def empty(self, *args, **kwargs):
        return self._fill(numpy.empty(*args, **kwargs))

    def empty_like(self, *args, **kwargs):
        return self._fill(numpy.empty_like(*args, **kwargs))


def _package_modules() -> list[types.ModuleType]:
    names = [
        info.name
        for info in pkgutil.walk_packages(fastcnn.__path__, "fastcnn.")
        if not info.name.startswith(
            ("fastcnn.reference", "fastcnn.cli", "fastcnn.__main__")
        )
    ]
    return [importlib.import_module(name) for name in names]


@pytest.fixture
def guarded(monkeypatch):
    """Route every kernel call of the package through a KernelSpy.

    Kernel modules themselves are left alone (Numba resolves their globals when
    it compiles); the modules that call them get spies in place of the kernels
    they imported, a proxy in place of an imported kernel module, and a numpy
    whose ``empty``/``empty_like`` fill with NaN.
    """
    spies: dict[int, KernelSpy] = {}

    def spy_for(name, kernel):
        if id(kernel) not in spies:
            spies[id(kernel)] = KernelSpy(name, kernel)
        return spies[id(kernel)]

    for module in _package_modules():
        if module.__name__.startswith(KERNEL_MODULE_PREFIXES):
            continue
        for attr, value in list(vars(module).items()):
            if _is_kernel(value):
                monkeypatch.setattr(module, attr, spy_for(f"{attr}", value))
            elif isinstance(value, types.ModuleType) and value.__name__.startswith(
                KERNEL_MODULE_PREFIXES
            ):
                # Spy on the kernels this module calls as ``attr.name``; the
                # others are helpers that only compiled code calls.
                source = inspect.getsource(module)
                proxy = _KernelModuleProxy(**vars(value))
                for name, member in vars(value).items():
                    if _is_kernel(member) and f"{attr}.{name}(" in source:
                        setattr(
                            proxy, name, spy_for(f"{value.__name__}.{name}", member)
                        )
                monkeypatch.setattr(module, attr, proxy)
            elif value is numpy:
                monkeypatch.setattr(module, attr, _NaNEmptyNumpy())
    return spies


# ----------------------------------------------------------------------
# Inputs inside NaN


def nan_view(array: np.ndarray, reverse: bool = False) -> np.ndarray:
    """Return a strided, offset view holding ``array``'s values inside guards.

    Every other element of a guard-filled buffer, starting at offset 1; with
    ``reverse``, the same positions walked backwards (negative strides).
    """
    array = np.asarray(array)
    buffer = np.full(
        tuple(2 * s + 3 for s in array.shape), _guard_value(array.dtype), array.dtype
    )
    if reverse:
        view = buffer[tuple(slice(2 * s - 1, 0, -2) for s in array.shape)]
    else:
        view = buffer[tuple(slice(1, 2 * s, 2) for s in array.shape)]
    view[...] = array
    return view


def functional_cases(dtype):
    """(name, function of its inputs, inputs) for every functional op."""
    rng = np.random.default_rng(7)

    def normal(*shape, scale=1.0):
        return (scale * rng.standard_normal(shape)).astype(dtype)

    cases = []

    conv_configs = [
        (
            (3, 4, 9, 10),
            (6, 2, 3, 2),
            dict(stride=(2, 1), padding=(1, 2), dilation=(1, 2), groups=2),
        ),
        ((2, 3, 8, 8), (4, 3, 4, 4), dict(padding="same")),
        ((3, 7, 6), (5, 3, 2, 3), dict(stride=2, padding=1)),
        ((40, 8, 32, 32), (8, 8, 3, 3), dict(padding=1)),  # several chunks
        # 5-wide direct kernel: a full and a partial block of four filters.
        ((2, 3, 9, 8), (6, 3, 5, 5), dict(padding=2)),
        # Winograd: odd and even sizes, grad_input padded (0, 2) and (2, 0).
        ((3, 32, 7, 6), (64, 32, 3, 3), dict(padding=1)),
        ((2, 32, 9, 5), (64, 32, 3, 3), dict(padding=(2, 0))),
    ]
    for i, (x_shape, w_shape, options) in enumerate(conv_configs):
        x, weight, bias = normal(*x_shape), normal(*w_shape), normal(w_shape[0])
        grad_output = normal(*F.conv2d(x, weight, **options).shape)

        def conv(x, weight, bias, grad_output, options=options):
            y, ctx = F.conv2d_forward(x, weight, bias, **options)
            return [y, *F.conv2d_backward(grad_output, ctx)]

        cases.append((f"conv2d-{i}", conv, [x, weight, bias, grad_output]))

    pool_configs = [
        ((2, 3, 9, 8), dict(kernel_size=2)),
        ((2, 3, 8, 6), dict(kernel_size=2)),
        ((2, 3, 9, 8), dict(kernel_size=3, stride=2, padding=1, ceil_mode=True)),
        ((3, 10, 11), dict(kernel_size=(2, 3), stride=(1, 2))),
    ]
    for i, (x_shape, options) in enumerate(pool_configs):
        x = normal(*x_shape)
        grad_output = normal(*F.max_pool2d(x, **options).shape)

        def pool(x, grad_output, options=options):
            y_max, ctx = F.max_pool2d_forward(x, **options)
            y_avg, actx = F.avg_pool2d_forward(x, **options, count_include_pad=False)
            return [
                y_max,
                F.max_pool2d_backward(grad_output, ctx),
                y_avg,
                F.avg_pool2d_backward(grad_output, actx),
            ]

        cases.append((f"pool-{i}", pool, [x, grad_output]))

    def linear(x, weight, bias, grad_output):
        y, ctx = F.linear_forward(x, weight, bias)
        y_nobias, ctx_nobias = F.linear_forward(x, weight)
        grads = F.linear_backward(grad_output, ctx)
        return [y, *grads, y_nobias, *F.linear_backward(grad_output, ctx_nobias)[:2]]

    cases.append(
        ("linear", linear, [normal(7, 13), normal(5, 13), normal(5), normal(7, 5)])
    )

    def activations(x, g):
        y_sig, y_tanh = F.sigmoid(x), F.tanh(x)
        return [
            F.relu(x),
            F.relu_backward(g, x),
            F.leaky_relu(x, 0.1),
            F.leaky_relu_backward(g, x, 0.1),
            y_sig,
            F.sigmoid_backward(g, y_sig),
            y_tanh,
            F.tanh_backward(g, y_tanh),
        ]

    cases.append(
        ("activations", activations, [normal(3, 6001, scale=3), normal(3, 6001)])
    )

    def softmaxes(x, g):
        y0, y1 = F.softmax(x), F.log_softmax(x, axis=0)
        return [
            y0,
            F.softmax_backward(g, y0),
            y1,
            F.log_softmax_backward(g, y1, axis=0),
        ]

    cases.append(("softmax", softmaxes, [normal(9, 11, scale=4), normal(9, 11)]))

    def cross_entropies(logits, index, probs, grad_output):
        loss, grad = F.cross_entropy_with_grad(logits, index, label_smoothing=0.1)
        return [
            np.asarray(loss),
            grad,
            F.cross_entropy(logits, index, reduction="none"),
            F.cross_entropy(logits, probs, reduction="sum", label_smoothing=0.2),
            F.cross_entropy_backward(
                logits, probs, reduction="none", grad_output=grad_output
            ),
            F.cross_entropy_backward(logits, index),
        ]

    probs = rng.random((12, 6))
    cases.append(
        (
            "cross_entropy",
            cross_entropies,
            [
                normal(12, 6, scale=3),
                rng.integers(0, 6, 12),
                (probs / probs.sum(axis=1, keepdims=True)).astype(dtype),
                normal(12),
            ],
        )
    )
    return cases


def _assert_finite_and_equal(actual, expected, name):
    assert len(actual) == len(expected)
    for i, (a, b) in enumerate(zip(actual, expected, strict=True)):
        a, b = np.asarray(a), np.asarray(b)
        assert np.isfinite(a).all(), f"{name}: output {i} is not finite"
        assert a.dtype == b.dtype and a.shape == b.shape, f"{name}: output {i}"
        assert a.tobytes() == b.tobytes(), f"{name}: output {i} differs"


# ----------------------------------------------------------------------
# Workloads


def _functional_workload(guard: bool):
    results = {}
    for dtype in DTYPES:
        for name, function, inputs in functional_cases(dtype):
            if guard:
                inputs = [nan_view(a, reverse=i % 2 == 1) for i, a in enumerate(inputs)]
            results[f"{name}-{np.dtype(dtype).name}"] = function(*inputs)
    return results


def _model(dtype) -> Sequential:
    return Sequential(
        [
            Conv2D(2, 4, 3, padding=1, dtype=dtype, rng=0),
            LeakyReLU(0.1),
            MaxPool2D(2),
            Conv2D(4, 4, 3, padding=1, groups=2, dtype=dtype, rng=1),
            Tanh(),
            AvgPool2D(2, ceil_mode=True),
            Flatten(),
            Dropout(0.2, rng=2),
            Dense(36, 8, dtype=dtype, rng=3),
            Sigmoid(),
            Dense(8, 5, dtype=dtype, rng=4),
            ReLU(),
            SoftmaxCrossEntropy(),
        ]
    )


def _training_workload(guard: bool):
    rng = np.random.default_rng(8)
    results = {}
    for dtype, make_optimizer in ((np.float32, SGD), (np.float64, Adam)):
        x = rng.standard_normal((20, 2, 11, 11)).astype(dtype)
        y = rng.integers(0, 5, 20)
        if guard:
            x, y = nan_view(x), nan_view(y)
        model = _model(dtype)
        model.fit(
            x,
            y,
            epochs=2,
            batch_size=8,
            optimizer=make_optimizer(model, lr=0.05),
            seed=0,
            verbose=0,
        )
        results[np.dtype(dtype).name] = [*model.params.values(), model.predict(x)]
    return results


def _tutorial_workload(guard: bool):
    from fastcnn import tutorial as T

    state = np.random.get_state()  # noqa: NPY002
    try:
        # The tutorial layers draw from NumPy's global generator.
        np.random.seed(0)  # noqa: NPY002
        network = [
            T.Convolutional((2, 6, 5), 3, 3),
            T.Sigmoid(),
            T.Reshape((3, 4, 3), (36, 1)),
            T.Dense(36, 6),
            T.Tanh(),
            T.Dense(6, 3),
            T.Softmax(),
        ]
    finally:
        np.random.set_state(state)  # noqa: NPY002
    rng = np.random.default_rng(9)
    x = rng.standard_normal((5, 2, 6, 5))
    y = rng.random((5, 3, 1))
    if guard:
        x, y = nan_view(x), nan_view(y, reverse=True)
    T.train(
        network, T.mse, T.mse_prime, x, y, epochs=3, learning_rate=0.1, verbose=False
    )

    # The per-layer path: each layer's own forward and backward kernels.
    sample = np.array(x[0])
    output = T.predict(network, sample)
    grad = T.mse_prime(np.array(y[0]), output)
    for layer in reversed(network):
        grad = layer.backward(grad, 0.05)
    params = [
        network[0].kernels,
        network[0].biases,
        network[3].weights,
        network[5].bias,
    ]
    return {"tutorial": [output, grad, *params]}


WORKLOADS = [_functional_workload, _training_workload, _tutorial_workload]


def test_every_kernel_stays_inside_its_arrays(guarded):
    # Guards against out-of-bounds reads and writes and unwritten outputs in
    # any kernel, for the argument combinations the package really passes.
    spies = guarded
    for workload in WORKLOADS:
        Switch.on = False
        try:
            expected = workload(guard=False)
        finally:
            Switch.on = True
        actual = workload(guard=True)
        assert actual.keys() == expected.keys()
        for name in expected:
            _assert_finite_and_equal(actual[name], expected[name], name)

    never_called = sorted(spy.name for spy in spies.values() if spy.calls == 0)
    assert not never_called, f"kernels the workloads never reached: {never_called}"


def test_every_parallel_kernel_is_called_from_the_package(guarded):
    # Guards against a new parallel kernel that the test above would skip
    # silently because no module of the package calls it from Python.
    spied = {spy.kernel for spy in guarded.values()}
    kernels_package = importlib.import_module("fastcnn.kernels")
    for info in pkgutil.iter_modules(kernels_package.__path__, "fastcnn.kernels."):
        module = importlib.import_module(info.name)
        for name, value in vars(module).items():
            if hasattr(value, "dispatcher") and _is_kernel(value):
                assert value in spied, f"{info.name}.{name} is called by no module"


def test_guards_catch_an_out_of_bounds_read_and_write():
    # The control for the tests above: a kernel that reads one element past
    # its input and one that writes one past its output are both caught.
    if numba.config.BOUNDSCHECK:
        pytest.skip(
            "NUMBA_BOUNDSCHECK=1 stops such accesses before the guards see them"
        )

    @numba.njit
    def shifted_copy(x, out, shift):
        for i in range(out.size):
            out[i] = x[i + shift]

    x = np.arange(10, dtype=np.float64)
    out = np.empty(10)
    KernelSpy("reads-past", shifted_copy)(x, out, 1)
    assert np.isnan(out[-1]) and np.isfinite(out[:-1]).all()

    @numba.njit
    def write_past(out):
        for i in range(out.size + 1):
            out[i] = 1.0

    with pytest.raises(AssertionError, match="wrote outside"):
        KernelSpy("writes-past", write_past)(np.empty(10))
