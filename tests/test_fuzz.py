"""Fuzzing: random shapes and random, sometimes invalid, arguments.

Every call either returns what :mod:`fastcnn.reference` returns, or raises the
documented exception: TypeError when an argument has the wrong type or dtype,
ValueError when it has a wrong value or shape. Anything else (another
exception, a crash, a wrong answer) fails.

Each argument is drawn valid most of the time and corrupted about one time in
twelve, so that examples both reach the kernels and probe the checks. The tests
do not trust the strategies: each works out from the documented rules alone
whether the arguments it got are valid and which kind of error they call for
(when an example holds defects of both kinds, either exception is accepted).
"""

from __future__ import annotations

from numbers import Integral, Real
from typing import Any

import numpy as np
from conftest import assert_close
from hypothesis import event, given, settings
from hypothesis import strategies as st

from fastcnn import functional as F
from fastcnn.layers import AvgPool2D, Conv2D, Dense, MaxPool2D
from fastcnn.reference import activations as R_act
from fastcnn.reference import conv as R_conv
from fastcnn.reference import dense as R_dense
from fastcnn.reference import pooling as R_pool
from fastcnn.reference import softmax as R_soft

MAX_ARGUMENT = 2**31 - 1
FLOATS = (np.dtype(np.float32), np.dtype(np.float64))
EXAMPLES = settings(max_examples=80)


# ---------------------------------------------------------------------------
# Drawing arguments
# ---------------------------------------------------------------------------


def maybe(data, valid: st.SearchStrategy, bad: st.SearchStrategy, label: str) -> Any:
    """Draw from ``valid``, or about one time in twelve from ``bad``."""
    if data.draw(st.integers(0, 11), label=f"corrupt {label}?") == 0:
        return data.draw(bad, label=label)
    return data.draw(valid, label=label)


def pairs(low: int, high: int) -> st.SearchStrategy:
    """An int in ``[low, high]``, or a tuple or list of two."""
    ints = st.integers(low, high)
    return st.one_of(
        ints, st.tuples(ints, ints), st.lists(ints, min_size=2, max_size=2)
    )


# Odd values for an int-or-pair argument; some are valid in unusual clothes.
ODD_VALUES = [
    None,
    True,
    1.0,
    2.5,
    "2",
    (1,),
    (1, 1, 1),
    (1, 2.0),
    (True, 1),
    np.int64(2),
    (np.int32(1), 2),
    np.array([1, 1]),
    MAX_ARGUMENT + 1,
    -(2**40),
    float("nan"),
]


def bad_pairs(minimum: int) -> st.SearchStrategy:
    below = st.integers(minimum - 3, minimum - 1)
    return st.one_of(
        below,
        st.tuples(below, st.integers(minimum, minimum + 2)),
        st.sampled_from(ODD_VALUES),
    )


BAD_FLAGS = st.sampled_from([0, 1, None, "yes", np.float64(1.0)])
BAD_REALS = st.sampled_from([float("nan"), float("inf"), "0.1", None, True])
BAD_DTYPES = st.sampled_from([np.int32, np.int64, np.uint8, np.float16, bool])
BAD_LAYER_DTYPES = st.sampled_from([np.complex64, np.complex128, object])
CONVERTED_DTYPES = st.sampled_from(
    [np.float32, np.float64, np.int16, np.uint8, bool, np.float16]
)


def array(seed: int, shape: tuple[int, ...], dtype) -> np.ndarray:
    values = np.random.default_rng(seed).standard_normal(shape) * 2
    if np.dtype(dtype).kind in "uO":
        values = np.abs(values)
    # np.array, not astype: a 0-d result must stay an array, not a NumPy scalar.
    return np.array(values, dtype=dtype)


# ---------------------------------------------------------------------------
# Judging arguments by the documented rules
# ---------------------------------------------------------------------------


class Outcome:
    """The defects found in one example's arguments, by exception type."""

    def __init__(self) -> None:
        self.kinds: set[type[Exception]] = set()

    def type_error(self, when: bool = True) -> None:
        if when:
            self.kinds.add(TypeError)

    def value_error(self, when: bool = True) -> None:
        if when:
            self.kinds.add(ValueError)

    @property
    def valid(self) -> bool:
        return not self.kinds


def run(outcome: Outcome, call) -> Any:
    """Call ``call``; return its result, or None once its error is checked."""
    event("valid" if outcome.valid else "invalid")
    try:
        result = call()
    except (TypeError, ValueError) as error:
        assert outcome.kinds, f"valid arguments raised {error!r}"
        assert isinstance(error, tuple(outcome.kinds)), (
            f"expected {sorted(k.__name__ for k in outcome.kinds)}, got {error!r}"
        )
        return None
    assert outcome.valid, f"invalid arguments ({outcome.kinds}) were accepted"
    return result


def judge_pair(value: Any, minimum: int, outcome: Outcome) -> tuple[int, int] | None:
    """An int or a pair of ints, each in ``[minimum, 2**31 - 1]``."""
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            outcome.value_error()
            return None
        items = tuple(value)
    else:
        items = (value, value)
    ok = True
    for item in items:
        if isinstance(item, bool) or not isinstance(item, Integral):
            outcome.type_error()
            ok = False
        elif not minimum <= item <= MAX_ARGUMENT:
            outcome.value_error()
            ok = False
    return (int(items[0]), int(items[1])) if ok else None


def judge_int(value: Any, minimum: int | None, outcome: Outcome) -> int | None:
    if isinstance(value, bool) or not isinstance(value, Integral):
        outcome.type_error()
        return None
    if minimum is not None and value < minimum:
        outcome.value_error()
        return None
    return int(value)


def judge_flag(value: Any, outcome: Outcome) -> bool | None:
    if not isinstance(value, (bool, np.bool_)):
        outcome.type_error()
        return None
    return bool(value)


def judge_real(value: Any, outcome: Outcome, low=None, high=None) -> float | None:
    """A finite real number (not a bool) in ``[low, high]``."""
    if isinstance(value, bool) or not isinstance(value, Real):
        outcome.type_error()
        return None
    value = float(value)
    bad = not np.isfinite(value)
    bad = (
        bad or (low is not None and value < low) or (high is not None and value > high)
    )
    outcome.value_error(bad)
    return None if bad else value


def judge_float_array(x: np.ndarray, outcome: Outcome) -> None:
    """The functional tier's dtype rule: float32 or float64 only."""
    outcome.type_error(x.dtype not in FLOATS)


def judge_layer_input(x: np.ndarray, outcome: Outcome) -> None:
    """The layers' dtype rule: real numeric dtypes are converted, others refused."""
    outcome.type_error(x.dtype.kind not in "biuf")


def pool_output_size(size: int, k: int, s: int, p: int, ceil_mode: bool) -> int:
    """PyTorch's pooling output length (below 1 when the window does not fit)."""
    span = size + 2 * p - k
    out = (-(-span // s) if ceil_mode else span // s) + 1
    if ceil_mode and (out - 1) * s >= size + p:
        out -= 1
    return out


def judge_pool_window(
    data, kernel_size, stride, padding, ceil_mode, outcome: Outcome
) -> tuple | None:
    """Judge the window arguments; return ``(kernel, stride, padding, ceil)``."""
    kernel = judge_pair(kernel_size, 1, outcome)
    step = kernel if stride is None else judge_pair(stride, 1, outcome)
    pad = judge_pair(padding, 0, outcome)
    ceil = judge_flag(ceil_mode, outcome)
    if kernel is not None and pad is not None:
        outcome.value_error(any(2 * p > k for p, k in zip(pad, kernel, strict=True)))
    if None in (kernel, step, pad, ceil):
        return None
    return kernel, step, pad, ceil


def judge_pool_input(x: np.ndarray, window: tuple | None, outcome: Outcome) -> None:
    outcome.value_error(x.ndim not in (3, 4))
    if x.ndim not in (3, 4):
        return
    outcome.value_error(0 in x.shape[-3:])
    if window is not None:
        kernel, step, pad, ceil = window
        sizes = [
            pool_output_size(size, k, s, p, ceil)
            for size, k, s, p in zip(x.shape[-2:], kernel, step, pad, strict=True)
        ]
        outcome.value_error(min(sizes) < 1)


def draw_pool_arguments(data) -> tuple:
    kernel_size = maybe(data, pairs(1, 3), bad_pairs(1), "kernel_size")
    stride = maybe(data, st.none() | pairs(1, 3), bad_pairs(1), "stride")
    half = 1
    if isinstance(kernel_size, int) and not isinstance(kernel_size, bool):
        half = max(kernel_size // 2, 0)
    padding = maybe(data, pairs(0, half), bad_pairs(0) | st.integers(2, 3), "padding")
    ceil_mode = maybe(data, st.booleans(), BAD_FLAGS, "ceil_mode")
    return kernel_size, stride, padding, ceil_mode


def draw_pool_shape(data) -> tuple[int, ...]:
    good = st.tuples(
        st.integers(0, 2), st.integers(1, 3), st.integers(2, 7), st.integers(1, 7)
    ).map(lambda s: s if s[0] else s[1:])
    odd = st.lists(st.integers(0, 4), min_size=1, max_size=5).map(tuple)
    return maybe(data, good, odd, "shape")


# ---------------------------------------------------------------------------
# Functional API
# ---------------------------------------------------------------------------


@EXAMPLES
@given(data=st.data(), seed=st.integers(0, 2**32 - 1), dtype=st.sampled_from(FLOATS))
def test_conv2d(data, seed, dtype):
    groups = maybe(data, st.integers(1, 2), st.sampled_from([0, -1, 3, True, 1.0]), "g")
    g = groups if isinstance(groups, int) and not isinstance(groups, bool) else 1
    g = max(g, 1)
    c_in_group, c_out_group = data.draw(st.integers(1, 3)), data.draw(st.integers(1, 2))
    c_in = maybe(data, st.just(c_in_group * g), st.integers(1, 6), "channels of x")
    c_out = maybe(data, st.just(c_out_group * g), st.integers(1, 5), "channels out")
    kernel = data.draw(st.tuples(st.integers(1, 3), st.integers(1, 3)))
    hw = data.draw(st.tuples(st.integers(1, 8), st.integers(2, 8)))
    n = data.draw(st.integers(0, 2))
    stride = maybe(data, pairs(1, 2), bad_pairs(1), "stride")
    dilation = maybe(data, pairs(1, 2), bad_pairs(1), "dilation")
    padding = maybe(
        data,
        pairs(0, 2) | st.sampled_from(["valid", "same"]),
        bad_pairs(0) | st.just("full"),
        "padding",
    )
    x_dtype = maybe(data, st.just(dtype), BAD_DTYPES, "dtype of x")
    w_dtype = maybe(data, st.just(dtype), st.sampled_from(FLOATS), "dtype of weight")
    bias = maybe(data, st.sampled_from(["none", "good"]), st.just("short"), "bias")

    x = array(seed, (n, c_in, *hw), x_dtype)
    if n and data.draw(st.booleans(), label="unbatched"):
        x = x[0]
    weight = array(seed + 1, (c_out, c_in_group, *kernel), w_dtype)
    b = (
        None
        if bias == "none"
        else array(seed + 2, (c_out - (bias == "short"),), w_dtype)
    )

    outcome = Outcome()
    judge_float_array(x, outcome)
    outcome.type_error(weight.dtype != x.dtype)
    step = judge_pair(stride, 1, outcome)
    dil = judge_pair(dilation, 1, outcome)
    groups_ok = judge_int(groups, 1, outcome)
    pads = None
    if isinstance(padding, str):
        if padding not in ("same", "valid"):
            outcome.value_error()
        elif padding == "valid":
            pads = (0, 0, 0, 0)
        elif step is not None and step != (1, 1):
            outcome.value_error()
        elif dil is not None:
            th, tw = (d * (k - 1) for d, k in zip(dil, kernel, strict=True))
            pads = (th // 2, th - th // 2, tw // 2, tw - tw // 2)
    else:
        pair = judge_pair(padding, 0, outcome)
        if pair is not None:
            pads = (pair[0], pair[0], pair[1], pair[1])
    if groups_ok is not None:
        outcome.value_error(c_in != c_in_group * groups_ok)
        outcome.value_error(c_out % groups_ok != 0)
    outcome.value_error(bias == "short")
    if pads is not None and dil is not None:
        padded = (hw[0] + pads[0] + pads[1], hw[1] + pads[2] + pads[3])
        extent = [d * (k - 1) + 1 for d, k in zip(dil, kernel, strict=True)]
        outcome.value_error(extent[0] > padded[0] or extent[1] > padded[1])

    args = (stride, padding, dilation, groups)
    result = run(outcome, lambda: F.conv2d_forward(x, weight, b, *args))
    if result is None:
        return
    y, ctx = result
    assert_close(y, R_conv.conv2d(x, weight, b, *args), dtype, scale=10.0)

    grad = array(seed + 3, y.shape, dtype)
    got = F.conv2d_backward(grad, ctx)
    want = R_conv.conv2d_backward(grad, x, weight, b, *args)
    for actual, expected in zip(got, want, strict=True):
        if expected is None:
            assert actual is None
        else:
            assert_close(actual, expected, dtype, scale=10.0)


@EXAMPLES
@given(
    data=st.data(),
    seed=st.integers(0, 2**32 - 1),
    dtype=st.sampled_from(FLOATS),
    op=st.sampled_from(["max", "avg"]),
)
def test_pool2d(data, seed, dtype, op):
    kernel_size, stride, padding, ceil_mode = draw_pool_arguments(data)
    count_include_pad = maybe(data, st.booleans(), BAD_FLAGS, "count_include_pad")
    x = array(seed, draw_pool_shape(data), maybe(data, st.just(dtype), BAD_DTYPES, "x"))

    outcome = Outcome()
    judge_float_array(x, outcome)
    window = judge_pool_window(data, kernel_size, stride, padding, ceil_mode, outcome)
    if op == "avg":
        judge_flag(count_include_pad, outcome)
    judge_pool_input(x, window, outcome)

    args = (kernel_size, stride, padding, ceil_mode)
    if op == "max":
        result = run(outcome, lambda: F.max_pool2d_forward(x, *args))
    else:
        args = (*args, count_include_pad)
        result = run(outcome, lambda: F.avg_pool2d_forward(x, *args))
    if result is None:
        return
    y, ctx = result
    grad = array(seed + 1, y.shape, dtype)
    if op == "max":
        assert_close(y, R_pool.max_pool2d(x, *args), dtype)
        got = F.max_pool2d_backward(grad, ctx)
        want = R_pool.max_pool2d_backward(grad, x, *args)
    else:
        assert_close(y, R_pool.avg_pool2d(x, *args), dtype, scale=10.0)
        got = F.avg_pool2d_backward(grad, ctx)
        want = R_pool.avg_pool2d_backward(grad, x, *args)
    assert_close(got, want, dtype, scale=10.0)


@EXAMPLES
@given(
    data=st.data(),
    seed=st.integers(0, 2**32 - 1),
    dtype=st.sampled_from(FLOATS),
    lead=st.lists(st.integers(0, 3), max_size=3),
    in_features=st.integers(1, 5),
    out_features=st.integers(1, 4),
)
def test_linear(data, seed, dtype, lead, in_features, out_features):
    weight_in = maybe(data, st.just(in_features), st.integers(1, 6), "weight_in")
    bias = maybe(
        data, st.sampled_from(["none", "good"]), st.sampled_from(["long", "2d"]), "b"
    )
    x_dtype = maybe(data, st.just(dtype), BAD_DTYPES, "x")
    x = array(seed, (*lead, in_features), x_dtype)
    weight = array(seed + 1, (out_features, weight_in), dtype)
    b = {
        "none": None,
        "good": array(seed + 2, (out_features,), dtype),
        "long": array(seed + 2, (out_features + 1,), dtype),
        "2d": array(seed + 2, (1, out_features), dtype),
    }[bias]

    outcome = Outcome()
    judge_float_array(x, outcome)
    outcome.type_error(x.dtype in FLOATS and x.dtype != dtype)
    outcome.value_error(weight_in != in_features)
    outcome.value_error(bias in ("long", "2d"))
    result = run(outcome, lambda: F.linear_forward(x, weight, b))
    if result is None:
        return
    y, ctx = result
    assert_close(y, R_dense.linear(x, weight, b), dtype, scale=10.0)

    grad = array(seed + 3, y.shape, dtype)
    got = F.linear_backward(grad, ctx)
    want = R_dense.linear_backward(grad, x, weight, b)
    for actual, expected in zip(got, want, strict=True):
        if expected is None:
            assert actual is None
        else:
            assert_close(actual, expected, dtype, scale=10.0)


@EXAMPLES
@given(
    data=st.data(),
    seed=st.integers(0, 2**32 - 1),
    dtype=st.sampled_from(FLOATS),
    shape=st.lists(st.integers(0, 4), max_size=4).map(tuple),
    name=st.sampled_from(["relu", "leaky_relu", "sigmoid", "tanh"]),
    reverse=st.booleans(),
)
def test_activations(data, seed, dtype, shape, name, reverse):
    x = array(seed, shape, maybe(data, st.just(dtype), BAD_DTYPES, "x"))
    if reverse and x.ndim:
        x = x[..., ::-1]
    outcome = Outcome()
    judge_float_array(x, outcome)
    args = ()
    if name == "leaky_relu":
        slope = maybe(data, st.floats(-2, 2), BAD_REALS, "negative_slope")
        args = (slope,)
        judge_real(slope, outcome)

    y = run(outcome, lambda: getattr(F, name)(x, *args))
    if y is None:
        return
    assert_close(y, getattr(R_act, name)(x, *args), dtype)

    grad = array(seed + 1, shape, dtype)
    saved = y if name in ("sigmoid", "tanh") else x
    got = getattr(F, f"{name}_backward")(grad, saved, *args)
    assert_close(got, getattr(R_act, f"{name}_backward")(grad, saved, *args), dtype)


@EXAMPLES
@given(
    data=st.data(),
    seed=st.integers(0, 2**32 - 1),
    dtype=st.sampled_from(FLOATS),
    shape=st.lists(st.integers(1, 4), max_size=4).map(tuple),
    function=st.sampled_from(["softmax", "log_softmax"]),
)
def test_softmax(data, seed, dtype, shape, function):
    x = array(seed, shape, maybe(data, st.just(dtype), BAD_DTYPES, "x"))
    ndim = len(shape)
    axis = maybe(
        data,
        st.integers(-ndim, ndim - 1) if ndim else st.just(0),
        st.integers(ndim, ndim + 2) | st.integers(-ndim - 2, -ndim - 1) | BAD_REALS,
        "axis",
    )
    outcome = Outcome()
    judge_float_array(x, outcome)
    outcome.value_error(ndim == 0)
    a = judge_int(axis, None, outcome)
    outcome.value_error(a is not None and ndim > 0 and not -ndim <= a < ndim)

    y = run(outcome, lambda: getattr(F, function)(x, axis))
    if y is None:
        return
    assert_close(y, getattr(R_soft, function)(x, axis), dtype)
    grad = array(seed + 1, shape, dtype)
    backward = getattr(F, f"{function}_backward")
    reference = getattr(R_soft, f"{function}_backward")
    assert_close(backward(grad, y, axis), reference(grad, y, axis), dtype)


@EXAMPLES
@given(
    data=st.data(),
    seed=st.integers(0, 2**32 - 1),
    dtype=st.sampled_from(FLOATS),
    n=st.integers(0, 4),
    unbatched=st.booleans(),
)
def test_cross_entropy(data, seed, dtype, n, unbatched):
    rng = np.random.default_rng(seed)
    k = maybe(data, st.integers(1, 5), st.just(0), "classes")
    logits = array(seed, (n, k), maybe(data, st.just(dtype), BAD_DTYPES, "logits"))
    labels = rng.integers(0, max(k, 1), n)
    if n and maybe(data, st.just(False), st.just(True), "label out of range"):
        labels[rng.integers(n)] = data.draw(st.sampled_from([-1, k, k + 3]))
    unbatched = unbatched and n > 0
    if unbatched:
        logits, labels = logits[0], labels[0]
    kind = maybe(
        data,
        st.sampled_from(["index", "probability"]),
        st.sampled_from(["wide", "list", "bool", "int-rows"]),
        "target",
    )
    rows = logits.shape[:-1]
    target = {
        "index": labels,
        "probability": rng.dirichlet(np.ones(max(k, 1)), rows).astype(dtype),
        "wide": np.zeros((*rows, k + 1), dtype),
        "list": np.atleast_1d(labels).tolist(),
        "bool": np.asarray(labels) > 0,
        "int-rows": np.zeros((*rows, k), np.int64),
    }[kind]
    reduction = maybe(
        data,
        st.sampled_from(["mean", "sum", "none"]),
        st.sampled_from(["avg", None]),
        "r",
    )
    smoothing = maybe(
        data, st.floats(0, 1), BAD_REALS | st.floats(1.01, 3), "smoothing"
    )

    outcome = Outcome()
    judge_float_array(logits, outcome)
    outcome.value_error(k == 0)
    outcome.type_error(kind in ("list", "bool"))
    if kind == "index":
        outcome.value_error(
            np.size(labels) > 0 and (labels.min() < 0 or labels.max() >= k)
        )
    if kind == "probability":
        outcome.type_error(logits.dtype in FLOATS and logits.dtype != dtype)
        outcome.value_error(k == 0)
    outcome.value_error(kind in ("wide", "int-rows"))
    outcome.value_error(reduction not in ("mean", "sum", "none"))
    judge_real(smoothing, outcome, 0.0, 1.0)

    args = (target, reduction, smoothing)
    result = run(outcome, lambda: F.cross_entropy_with_grad(logits, *args))
    if result is None:
        return
    loss, grad = result
    assert_close(loss, R_soft.cross_entropy(logits, *args), dtype, scale=10.0)
    assert_close(grad, R_soft.cross_entropy_backward(logits, *args), dtype, scale=10.0)


# ---------------------------------------------------------------------------
# Layers
# ---------------------------------------------------------------------------


@EXAMPLES
@given(data=st.data(), seed=st.integers(0, 2**32 - 1), dtype=st.sampled_from(FLOATS))
def test_conv2d_layer(data, seed, dtype):
    groups = maybe(data, st.integers(1, 2), st.sampled_from([0, 3, True]), "groups")
    g = groups if isinstance(groups, int) and not isinstance(groups, bool) else 1
    g = max(g, 1)
    in_channels = maybe(
        data,
        st.integers(1, 2).map(lambda m: m * g),
        st.sampled_from([0, 2.0, True]),
        "in",
    )
    out_channels = maybe(
        data, st.integers(1, 2).map(lambda m: m * g), st.just(-1), "out"
    )
    kernel_size = maybe(data, pairs(1, 3), bad_pairs(1), "kernel_size")
    stride = maybe(data, pairs(1, 2), bad_pairs(1), "stride")
    dilation = maybe(data, pairs(1, 2), bad_pairs(1), "dilation")
    padding = maybe(
        data,
        pairs(0, 2) | st.sampled_from(["valid", "same"]),
        bad_pairs(0) | st.just("full"),
        "padding",
    )

    built = Outcome()
    c_in = judge_int(in_channels, 1, built)
    c_out = judge_int(out_channels, 1, built)
    judge_pair(kernel_size, 1, built)
    step = judge_pair(stride, 1, built)
    judge_pair(dilation, 1, built)
    groups_ok = judge_int(groups, 1, built)
    if isinstance(padding, str):
        built.value_error(padding not in ("same", "valid"))
        built.value_error(padding == "same" and step is not None and step != (1, 1))
    else:
        judge_pair(padding, 0, built)
    if groups_ok is not None:
        built.value_error(c_in is not None and c_in % groups_ok != 0)
        built.value_error(c_out is not None and c_out % groups_ok != 0)
    args = (in_channels, out_channels, kernel_size, stride, padding, dilation, groups)
    layer = run(built, lambda: Conv2D(*args, dtype=dtype, rng=seed))
    if layer is None:
        return

    x_channels = maybe(data, st.just(c_in), st.integers(1, 5), "channels of x")
    n = data.draw(st.integers(0, 2))
    hw = data.draw(st.tuples(st.integers(1, 8), st.integers(2, 8)))
    x_dtype = maybe(data, CONVERTED_DTYPES, BAD_LAYER_DTYPES, "dtype of x")
    x = array(seed + 1, (n, x_channels, *hw), x_dtype)
    if n and data.draw(st.booleans(), label="unbatched"):
        x = x[0]
    fed = Outcome()
    judge_layer_input(x, fed)
    fed.value_error(x_channels != c_in)
    if layer.padding != "same":  # "same" keeps the size, so the window fits
        pads = (0, 0) if layer.padding == "valid" else layer.padding
        fits = all(
            size + 2 * p >= d * (k - 1) + 1
            for size, p, d, k in zip(
                hw, pads, layer.dilation, layer.kernel_size, strict=True
            )
        )
        fed.value_error(not fits)
    y = run(fed, lambda: layer.forward(x))
    if y is None:
        return

    x_cast = x.astype(dtype)
    params = (layer.weight, layer.bias, stride, padding, dilation, groups)
    assert y.dtype == dtype
    assert_close(y, R_conv.conv2d(x_cast, *params), dtype, scale=10.0)
    grad = array(seed + 2, y.shape, dtype)
    grad_input = layer.backward(grad)
    want = R_conv.conv2d_backward(grad, x_cast, *params)
    assert_close(grad_input, want[0], dtype, scale=10.0)
    assert_close(layer.grads["weight"], want[1], dtype, scale=10.0)
    assert_close(layer.grads["bias"], want[2], dtype, scale=10.0)


@EXAMPLES
@given(
    data=st.data(),
    seed=st.integers(0, 2**32 - 1),
    kind=st.sampled_from([MaxPool2D, AvgPool2D]),
)
def test_pool2d_layers(data, seed, kind):
    kernel_size, stride, padding, ceil_mode = draw_pool_arguments(data)
    built = Outcome()
    window = judge_pool_window(data, kernel_size, stride, padding, ceil_mode, built)
    layer = run(built, lambda: kind(kernel_size, stride, padding, ceil_mode))
    if layer is None:
        return

    x_dtype = maybe(data, CONVERTED_DTYPES, BAD_LAYER_DTYPES, "dtype of x")
    x = array(seed, draw_pool_shape(data), x_dtype)
    fed = Outcome()
    judge_layer_input(x, fed)
    judge_pool_input(x, window, fed)
    y = run(fed, lambda: layer.forward(x))
    if y is None:
        return

    dtype = x.dtype if x.dtype in FLOATS else np.dtype(np.float32)
    x_cast = x.astype(dtype)
    assert y.dtype == dtype
    grad = array(seed + 1, y.shape, dtype)
    if kind is MaxPool2D:
        assert_close(y, R_pool.max_pool2d(x_cast, *window), dtype)
        want = R_pool.max_pool2d_backward(grad, x_cast, *window)
    else:
        assert_close(y, R_pool.avg_pool2d(x_cast, *window), dtype, scale=10.0)
        want = R_pool.avg_pool2d_backward(grad, x_cast, *window)
    assert_close(layer.backward(grad), want, dtype, scale=10.0)


@EXAMPLES
@given(
    data=st.data(),
    seed=st.integers(0, 2**32 - 1),
    in_features=st.integers(1, 4),
    out_features=st.integers(1, 4),
)
def test_dense_layer(data, seed, in_features, out_features):
    f_in = maybe(data, st.just(in_features), st.sampled_from([0, -1, 2.0, None]), "in")
    f_out = maybe(data, st.just(out_features), st.sampled_from([0, True]), "out")
    bias = maybe(data, st.booleans(), BAD_FLAGS, "bias")
    dtype = maybe(data, st.sampled_from(FLOATS), st.sampled_from(["float16", int]), "d")
    built = Outcome()
    judge_int(f_in, 1, built)
    judge_int(f_out, 1, built)
    judge_flag(bias, built)
    built.type_error(not (isinstance(dtype, np.dtype) and dtype in FLOATS))
    layer = run(built, lambda: Dense(f_in, f_out, bias, dtype=dtype, rng=seed))
    if layer is None:
        return

    lead = maybe(data, st.sampled_from([(), (0,), (1,), (3,)]), st.just((2, 2)), "lead")
    features = maybe(data, st.just(in_features), st.integers(1, 5), "features")
    x_dtype = maybe(data, CONVERTED_DTYPES, BAD_LAYER_DTYPES, "dtype of x")
    x = array(seed + 1, (*lead, features), x_dtype)
    fed = Outcome()
    judge_layer_input(x, fed)
    fed.value_error(x.ndim not in (1, 2))
    fed.value_error(features != in_features)
    y = run(fed, lambda: layer.forward(x))
    if y is None:
        return
    x_cast = x.astype(dtype)
    assert y.dtype == dtype
    assert_close(y, R_dense.linear(x_cast, layer.weight, layer.bias), dtype)

    grad = array(seed + 2, y.shape, dtype)
    weight_before = layer.weight.copy()
    learning_rate = maybe(
        data, st.none() | st.floats(0, 1), BAD_REALS | st.floats(-1, -0.01), "lr"
    )
    stepped = Outcome()
    if learning_rate is not None:
        judge_real(learning_rate, stepped, low=0.0)
    grad_input = run(stepped, lambda: layer.backward(grad, learning_rate))
    if grad_input is None:
        np.testing.assert_array_equal(layer.weight, weight_before)
        return
    want = R_dense.linear_backward(
        grad.reshape(-1, out_features), x_cast.reshape(-1, in_features), weight_before
    )
    assert_close(grad_input, want[0].reshape(x.shape), dtype)
    assert_close(layer.grads["weight"], want[1], dtype)
    if learning_rate:
        step = (np.dtype(dtype).type(learning_rate) * want[1]).astype(dtype)
        assert_close(layer.weight, weight_before - step, dtype)
