"""Bad input gets a clear error, raised in Python before any kernel runs.

Every entry point (the functional API, the layers, ``Sequential``, the losses and
the optimisers) answers a bad argument with TypeError (wrong kind of object or
dtype) or ValueError (wrong value or shape) whose message names the argument,
never with a Numba typing error, a crash or a silent wrong answer. The tables
below pair each bad input with the exception type and a fragment of the message;
``docs/errors.md`` lists the same cases for readers.
"""

from __future__ import annotations

import importlib
import pkgutil

import numpy as np
import pytest
from numba.core.dispatcher import Dispatcher

import fastcnn.kernels
from fastcnn import functional as F
from fastcnn.layers import (
    AvgPool2D,
    Conv2D,
    Dense,
    Dropout,
    Flatten,
    LeakyReLU,
    MaxPool2D,
    ReLU,
    Reshape,
    Sigmoid,
    Softmax,
    SoftmaxCrossEntropy,
    Tanh,
)
from fastcnn.losses import BCELoss, CrossEntropyLoss, MSELoss
from fastcnn.models import Sequential
from fastcnn.optim import SGD, Adam
from fastcnn.reference import pooling as R_pool

_RNG = np.random.default_rng(7)
X = _RNG.standard_normal((2, 3, 6, 6))  # NCHW input
W = _RNG.standard_normal((4, 3, 3, 3))  # conv weight
B = _RNG.standard_normal(4)  # conv bias
XD = _RNG.standard_normal((3, 5))  # dense input
WD = _RNG.standard_normal((4, 5))  # dense weight
LOGITS = _RNG.standard_normal((3, 4))
LABELS = np.array([0, 3, 1])
HUGE = 2**31  # one past the largest accepted window argument

NAN = float("nan")
INF = float("inf")


def _f32(a: np.ndarray) -> np.ndarray:
    return a.astype(np.float32)


def _masked(a: np.ndarray) -> np.ndarray:
    return np.ma.masked_array(a, mask=a > 0)


# ---------------------------------------------------------------------------
# Functional API: argument tables
# ---------------------------------------------------------------------------

FUNCTIONAL_CASES = [
    # conv2d: the input
    ("conv-x-list", lambda: F.conv2d(X.tolist(), W), TypeError, "x must be a numpy"),
    ("conv-x-none", lambda: F.conv2d(None, W), TypeError, "x must be a numpy"),
    ("conv-x-float", lambda: F.conv2d(1.5, W), TypeError, "x must be a numpy"),
    ("conv-x-2d", lambda: F.conv2d(X[0, 0], W), ValueError, "x must be 3-d or 4-d"),
    ("conv-x-5d", lambda: F.conv2d(X[None], W), ValueError, "x must be 3-d or 4-d"),
    ("conv-x-0d", lambda: F.conv2d(np.array(1.0), W), ValueError, "x must be 3-d"),
    ("conv-x-masked", lambda: F.conv2d(_masked(X), W), TypeError, "x must be a plain"),
    (
        "conv-channels",
        lambda: F.conv2d(X[:, :2], W),
        ValueError,
        r"x has 2 channels, but weight.shape\[1\] \* groups",
    ),
    (
        "conv-kernel-larger-than-input",
        lambda: F.conv2d(X[:, :, :2], W),
        ValueError,
        "larger than the padded input of x",
    ),
    (
        "conv-dilated-kernel-larger",
        lambda: F.conv2d(X, W, dilation=3),
        ValueError,
        "larger than the padded input of x",
    ),
    (
        "conv-x-zero-height-with-padding",
        lambda: F.conv2d(X[:, :, :0], W[..., :1, :1], padding=1),
        ValueError,
        r"x must have non-zero H and W \(only N may be 0\), got shape \(2, 3, 0, 6\)",
    ),
    (
        "conv-x-zero-width-unbatched",
        lambda: F.conv2d(X[0, :, :, :0], W, padding="same"),
        ValueError,
        r"x must have non-zero H and W .* got shape \(3, 6, 0\)",
    ),
    # conv2d: weight and bias
    ("conv-weight-none", lambda: F.conv2d(X, None), TypeError, "weight must be a"),
    ("conv-weight-3d", lambda: F.conv2d(X, W[0]), ValueError, "weight must be 4-d"),
    (
        "conv-weight-empty",
        lambda: F.conv2d(X, W[:0]),
        ValueError,
        "weight must not have a zero-size dimension",
    ),
    (
        "conv-weight-dtype",
        lambda: F.conv2d(X, W.astype(np.float32)),
        TypeError,
        r"weight must have the same dtype as x \(float64\), got float32",
    ),
    ("conv-bias-list", lambda: F.conv2d(X, W, [0.0] * 4), TypeError, "bias must be"),
    (
        "conv-bias-shape",
        lambda: F.conv2d(X, W, B[:3]),
        ValueError,
        r"bias must have shape \(4,\), got \(3,\)",
    ),
    (
        "conv-bias-dtype",
        lambda: F.conv2d(X, W, B.astype(np.float32)),
        TypeError,
        "bias must have the same dtype as x",
    ),
    # conv2d: hyper-parameters
    (
        "conv-stride-0",
        lambda: F.conv2d(X, W, stride=0),
        ValueError,
        "stride must be >=",
    ),
    ("conv-stride-neg", lambda: F.conv2d(X, W, stride=-2), ValueError, "stride must"),
    ("conv-stride-bool", lambda: F.conv2d(X, W, stride=True), TypeError, "stride must"),
    ("conv-stride-float", lambda: F.conv2d(X, W, stride=1.0), TypeError, "stride must"),
    ("conv-stride-none", lambda: F.conv2d(X, W, stride=None), TypeError, "stride must"),
    (
        "conv-stride-triple",
        lambda: F.conv2d(X, W, stride=(1, 1, 1)),
        ValueError,
        "stride must be an int or a pair of ints",
    ),
    (
        "conv-stride-single",
        lambda: F.conv2d(X, W, stride=(1,)),
        ValueError,
        "stride must be an int or a pair of ints",
    ),
    (
        "conv-stride-array",
        lambda: F.conv2d(X, W, stride=np.array([1, 1])),
        TypeError,
        "stride must be an int or a pair of ints",
    ),
    (
        "conv-stride-huge",
        lambda: F.conv2d(X, W, stride=HUGE),
        ValueError,
        r"stride must be <= 2147483647",
    ),
    ("conv-padding-neg", lambda: F.conv2d(X, W, padding=-1), ValueError, "padding"),
    (
        "conv-padding-string",
        lambda: F.conv2d(X, W, padding="full"),
        ValueError,
        "padding must be one of 'valid', 'same', got 'full'",
    ),
    (
        "conv-padding-same-stride",
        lambda: F.conv2d(X, W, stride=2, padding="same"),
        ValueError,
        "padding='same' needs stride 1",
    ),
    (
        "conv-padding-float",
        lambda: F.conv2d(X, W, padding=0.5),
        TypeError,
        "padding must be an int or a pair",
    ),
    (
        "conv-padding-huge",
        lambda: F.conv2d(X, W, padding=(0, HUGE)),
        ValueError,
        "padding must be <=",
    ),
    ("conv-dilation-0", lambda: F.conv2d(X, W, dilation=0), ValueError, "dilation"),
    ("conv-groups-0", lambda: F.conv2d(X, W, groups=0), ValueError, "groups must be"),
    ("conv-groups-bool", lambda: F.conv2d(X, W, groups=True), TypeError, "groups"),
    ("conv-groups-float", lambda: F.conv2d(X, W, groups=1.0), TypeError, "groups"),
    (
        "conv-groups-not-dividing",
        lambda: F.conv2d(X, W[:, :1], groups=3),
        ValueError,
        "must be divisible by groups",
    ),
    # conv2d_backward
    (
        "conv-backward-ctx",
        lambda: F.conv2d_backward(np.zeros((2, 4, 4, 4)), None),
        TypeError,
        "ctx must be the Conv2dContext",
    ),
    (
        "conv-backward-shape",
        lambda: F.conv2d_backward(np.zeros((2, 4, 4, 5)), F.conv2d_forward(X, W)[1]),
        ValueError,
        "grad_output must have the forward output's shape",
    ),
    (
        "conv-backward-dtype",
        lambda: F.conv2d_backward(
            np.zeros((2, 4, 4, 4), np.float32), F.conv2d_forward(X, W)[1]
        ),
        TypeError,
        "grad_output must have dtype float64",
    ),
    # max_pool2d / avg_pool2d
    ("pool-x-list", lambda: F.max_pool2d(X.tolist(), 2), TypeError, "x must be a"),
    ("pool-x-2d", lambda: F.avg_pool2d(X[0, 0], 2), ValueError, "x must be 3-d"),
    (
        "pool-x-zero-channels",
        lambda: F.max_pool2d(X[:, :0], 2),
        ValueError,
        "x must have non-zero C, H and W",
    ),
    (
        "pool-x-zero-width",
        lambda: F.avg_pool2d(X[..., :0], 2),
        ValueError,
        "x must have non-zero C, H and W",
    ),
    ("pool-kernel-0", lambda: F.max_pool2d(X, 0), ValueError, "kernel_size must be"),
    ("pool-kernel-neg", lambda: F.avg_pool2d(X, -2), ValueError, "kernel_size must"),
    ("pool-kernel-none", lambda: F.max_pool2d(X, None), TypeError, "kernel_size"),
    ("pool-kernel-bool", lambda: F.max_pool2d(X, True), TypeError, "kernel_size"),
    ("pool-kernel-str", lambda: F.max_pool2d(X, "2"), TypeError, "kernel_size"),
    (
        "pool-kernel-triple",
        lambda: F.avg_pool2d(X, (2, 2, 2)),
        ValueError,
        "kernel_size must be an int or a pair",
    ),
    (
        "pool-kernel-huge",
        lambda: F.max_pool2d(X, HUGE),
        ValueError,
        "kernel_size must be <=",
    ),
    (
        "pool-window-larger-than-input",
        lambda: F.max_pool2d(X, 7),
        ValueError,
        r"kernel_size=\(7, 7\) .* does not fit x of spatial size \(6, 6\)",
    ),
    (
        "pool-window-larger-than-padded-input",
        lambda: F.avg_pool2d(X[..., :2, :], (5, 2), padding=(1, 0)),
        ValueError,
        "does not fit x",
    ),
    (
        "pool-window-huge",
        lambda: F.max_pool2d(X, 8193, 1, 4096),
        ValueError,
        r"kernel_size=\(8193, 8193\) with padding=\(4096, 4096\) is too large for x",
    ),
    (
        "avg-pool-window-huge",
        lambda: F.avg_pool2d(X, (3, 2**23), 1, (1, 2**22)),
        ValueError,
        "the padded plane would be 8x8388614, more than fastcnn's limit",
    ),
    ("pool-stride-0", lambda: F.max_pool2d(X, 2, 0), ValueError, "stride must be >="),
    (
        "pool-stride-huge",
        lambda: F.avg_pool2d(X, 2, 2**64),
        ValueError,
        "stride must be <=",
    ),
    ("pool-padding-neg", lambda: F.max_pool2d(X, 2, 2, -1), ValueError, "padding"),
    (
        "pool-padding-over-half",
        lambda: F.avg_pool2d(X, 2, 2, 2),
        ValueError,
        "padding must be at most half of kernel_size",
    ),
    (
        "pool-padding-string",
        lambda: F.max_pool2d(X, 2, 2, "same"),
        TypeError,
        "padding must be an int or a pair of ints, got str",
    ),
    (
        "pool-ceil-mode-int",
        lambda: F.max_pool2d(X, 2, ceil_mode=1),
        TypeError,
        "ceil_mode must be a bool",
    ),
    (
        "pool-count-include-pad-none",
        lambda: F.avg_pool2d(X, 2, count_include_pad=None),
        TypeError,
        "count_include_pad must be a bool",
    ),
    (
        "maxpool-backward-ctx",
        lambda: F.max_pool2d_backward(np.zeros((2, 3, 3, 3)), "ctx"),
        TypeError,
        "ctx must be the MaxPool2dContext",
    ),
    (
        "avgpool-backward-ctx",
        lambda: F.avg_pool2d_backward(
            np.zeros((2, 3, 3, 3)), F.max_pool2d_forward(X, 2)[1]
        ),
        TypeError,
        "ctx must be the AvgPool2dContext",
    ),
    (
        "maxpool-backward-shape",
        lambda: F.max_pool2d_backward(
            np.zeros((2, 3, 3)), F.max_pool2d_forward(X, 2)[1]
        ),
        ValueError,
        "grad_output must be 4-d",
    ),
    # linear
    ("linear-x-none", lambda: F.linear(None, WD), TypeError, "x must be a numpy"),
    ("linear-x-0d", lambda: F.linear(np.array(1.0), WD), ValueError, "x must be at"),
    (
        "linear-features",
        lambda: F.linear(XD[:, :4], WD),
        ValueError,
        "expects 5 input features, but x of shape",
    ),
    ("linear-weight-1d", lambda: F.linear(XD, WD[0]), ValueError, "weight must be 2-d"),
    (
        "linear-bias-shape",
        lambda: F.linear(XD, WD, np.zeros(3)),
        ValueError,
        r"bias must have shape \(4,\)",
    ),
    (
        "linear-backward-ctx",
        lambda: F.linear_backward(np.zeros((3, 4)), None),
        TypeError,
        "ctx must be the LinearContext",
    ),
    (
        "linear-backward-shape",
        lambda: F.linear_backward(np.zeros((3, 5)), F.linear_forward(XD, WD)[1]),
        ValueError,
        "grad_output must have the shape of the forward output",
    ),
    # activations
    ("relu-list", lambda: F.relu([1.0, -1.0]), TypeError, "x must be a numpy"),
    ("sigmoid-scalar", lambda: F.sigmoid(0.5), TypeError, "x must be a numpy"),
    ("tanh-none", lambda: F.tanh(None), TypeError, "x must be a numpy"),
    (
        "leaky-slope-nan",
        lambda: F.leaky_relu(XD, NAN),
        ValueError,
        "negative_slope must be finite, got nan",
    ),
    ("leaky-slope-inf", lambda: F.leaky_relu(XD, INF), ValueError, "negative_slope"),
    ("leaky-slope-str", lambda: F.leaky_relu(XD, "0.1"), TypeError, "negative_slope"),
    ("leaky-slope-bool", lambda: F.leaky_relu(XD, True), TypeError, "negative_slope"),
    (
        "relu-backward-shape",
        lambda: F.relu_backward(XD[:2], XD),
        ValueError,
        r"grad_output must have the shape of x \(3, 5\), got \(2, 5\)",
    ),
    (
        "sigmoid-backward-dtype",
        lambda: F.sigmoid_backward(XD.astype(np.float32), XD),
        TypeError,
        "grad_output must have the same dtype as y",
    ),
    # softmax
    ("softmax-0d", lambda: F.softmax(np.array(1.0)), ValueError, "x must be at least"),
    (
        "softmax-axis-range",
        lambda: F.softmax(XD, axis=2),
        ValueError,
        r"axis must be in \[-2, 2\) for a 2-d input, got 2",
    ),
    ("softmax-axis-float", lambda: F.log_softmax(XD, 1.0), TypeError, "axis must be"),
    ("softmax-axis-bool", lambda: F.softmax(XD, True), TypeError, "axis must be an"),
    ("softmax-axis-none", lambda: F.softmax(XD, None), TypeError, "axis must be an"),
    # cross_entropy
    (
        "ce-label-too-large",
        lambda: F.cross_entropy(LOGITS, np.array([0, 1, 4])),
        ValueError,
        r"target must hold class indices in \[0, 4\), got 4",
    ),
    (
        "ce-label-negative",
        lambda: F.cross_entropy(LOGITS, np.array([0, -1, 1])),
        ValueError,
        r"class indices in \[0, 4\), got -1",
    ),
    (
        "ce-label-uint64-huge",
        lambda: F.cross_entropy(LOGITS, np.array([0, 1, 2**63], np.uint64)),
        ValueError,
        "target must hold class indices",
    ),
    (
        "ce-labels-wrong-length",
        lambda: F.cross_entropy(LOGITS, np.array([0, 1])),
        ValueError,
        r"target of class indices must have shape \(3,\)",
    ),
    (
        "ce-one-hot-wrong-width",
        lambda: F.cross_entropy(LOGITS, np.eye(3)),
        ValueError,
        r"must have the shape of logits \(3, 4\), got \(3, 3\)",
    ),
    (
        "ce-one-hot-dtype",
        lambda: F.cross_entropy(LOGITS, np.eye(4, dtype=np.float32)[LABELS]),
        TypeError,
        "target of class probabilities must have the dtype of logits",
    ),
    (
        "ce-target-bool",
        lambda: F.cross_entropy(LOGITS, LABELS > 0),
        TypeError,
        "target must have an integer dtype",
    ),
    ("ce-target-list", lambda: F.cross_entropy(LOGITS, [0, 1, 2]), TypeError, "target"),
    ("ce-target-none", lambda: F.cross_entropy(LOGITS, None), TypeError, "target must"),
    (
        "ce-reduction",
        lambda: F.cross_entropy(LOGITS, LABELS, "avg"),
        ValueError,
        "reduction must be one of 'mean', 'sum', 'none', got 'avg'",
    ),
    (
        "ce-smoothing-nan",
        lambda: F.cross_entropy(LOGITS, LABELS, label_smoothing=NAN),
        ValueError,
        "label_smoothing must be finite",
    ),
    (
        "ce-smoothing-above-1",
        lambda: F.cross_entropy(LOGITS, LABELS, label_smoothing=1.5),
        ValueError,
        "label_smoothing must be <= 1.0",
    ),
    (
        "ce-logits-3d",
        lambda: F.cross_entropy(LOGITS[None], LABELS[None]),
        ValueError,
        "logits must be 1-d or 2-d",
    ),
    (
        "ce-no-classes",
        lambda: F.cross_entropy(LOGITS[:, :0], LABELS),
        ValueError,
        "logits must have at least one class",
    ),
    (
        "ce-grad-output-nan",
        lambda: F.cross_entropy_backward(LOGITS, LABELS, grad_output=NAN),
        ValueError,
        "grad_output must be finite",
    ),
    (
        "ce-grad-output-shape",
        lambda: F.cross_entropy_backward(LOGITS, LABELS, grad_output=np.ones(3)),
        ValueError,
        r"grad_output must have shape \(\) for reduction='mean'",
    ),
    (
        "ce-grad-output-overflows-float32",
        lambda: F.cross_entropy_backward(_f32(LOGITS), LABELS, grad_output=-1e300),
        ValueError,
        r"grad_output=-1e\+300 overflows float32",
    ),
    (
        "ce-grad-output-huge-int",
        lambda: F.cross_entropy_backward(LOGITS, LABELS, grad_output=10**400),
        ValueError,
        "grad_output must be finite, got an int of 1329 bits, too large for a float",
    ),
    (
        "ce-smoothing-huge-int",
        lambda: F.cross_entropy(LOGITS, LABELS, label_smoothing=10**400),
        ValueError,
        "label_smoothing must be finite, got an int of 1329 bits",
    ),
    (
        "ce-target-int-beyond-int64",
        lambda: F.cross_entropy(LOGITS[0], 2**70),
        ValueError,
        r"target must hold class indices in \[0, 4\), got an int beyond the int64",
    ),
    (
        "ce-float-labels",
        lambda: F.cross_entropy(LOGITS, LABELS.astype(np.float64)),
        TypeError,
        r"target of class indices must have an integer dtype, got float64; "
        r"convert it first, e.g. target.astype\(np.int64\)",
    ),
    (
        "ce-float32-labels-for-float64-logits",
        lambda: F.cross_entropy(LOGITS, LABELS.astype(np.float32)),
        TypeError,
        "target of class indices must have an integer dtype, got float32",
    ),
    (
        "ce-float-label-for-1d-logits",
        lambda: F.cross_entropy(LOGITS[0], np.array(2.0)),
        TypeError,
        "target of class indices must have an integer dtype",
    ),
    # leaky_relu: the slope is cast to the dtype of x
    (
        "leaky-slope-overflows-float32",
        lambda: F.leaky_relu(_f32(XD), 1e300),
        ValueError,
        r"negative_slope=1e\+300 overflows float32",
    ),
    (
        "leaky-backward-slope-overflows-float32",
        lambda: F.leaky_relu_backward(_f32(XD), _f32(XD), -1e39),
        ValueError,
        r"negative_slope=-1e\+39 overflows float32",
    ),
    (
        "leaky-slope-huge-int",
        lambda: F.leaky_relu(XD, -(10**400)),
        ValueError,
        "negative_slope must be finite, got an int of 1329 bits",
    ),
    # conv2d: planes beyond the kernels' 32-bit index
    (
        "conv-x-plane-too-large",
        lambda: F.conv2d(
            np.broadcast_to(np.float32(0), (1, 1, 2**31, 1)),
            np.ones((1, 1, 1, 1), np.float32),
        ),
        ValueError,
        r"^x has planes of 2147483648x1 = 2147483648 elements \(H x W\), more than "
        r"2\*\*31 - 1$",
    ),
]


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [pytest.param(*case[1:], id=case[0]) for case in FUNCTIONAL_CASES],
)
def test_functional_bad_argument_raises(call, error, match):
    with pytest.raises(error, match=match):
        call()


# Every functional forward with its input as the only array argument varied.
FORWARDS = {
    "conv2d": lambda x: F.conv2d(x, W.astype(x.dtype) if x.dtype.kind == "f" else W),
    "max_pool2d": lambda x: F.max_pool2d(x, 2),
    "avg_pool2d": lambda x: F.avg_pool2d(x, 2, 1, 1),
    "linear": lambda x: F.linear(x, np.ones((2, 6))),
    "relu": F.relu,
    "leaky_relu": F.leaky_relu,
    "sigmoid": F.sigmoid,
    "tanh": F.tanh,
    "softmax": F.softmax,
    "log_softmax": lambda x: F.log_softmax(x, axis=1),
}
REFUSED_DTYPES = [
    np.bool_,
    np.int8,
    np.uint8,
    np.int32,
    np.int64,
    np.float16,
    np.complex64,
    np.complex128,
    object,
    np.dtype(">f4"),
]


@pytest.mark.parametrize("dtype", REFUSED_DTYPES, ids=str)
@pytest.mark.parametrize("op", FORWARDS)
def test_functional_refuses_other_dtypes_with_an_astype_hint(op, dtype):
    x = X.astype(dtype)
    pattern = rf"x must have dtype float32 or float64, got {np.dtype(dtype)}; .*astype"
    with pytest.raises(TypeError, match=pattern):
        FORWARDS[op](x)


@pytest.mark.parametrize("op", FORWARDS)
def test_functional_refuses_masked_arrays(op):
    with pytest.raises(TypeError, match=r"x must be a plain numpy\.ndarray.*filled"):
        FORWARDS[op](_masked(X))


@pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")
@pytest.mark.parametrize("op", ["relu", "sigmoid", "tanh", "softmax", "linear"])
def test_functional_reads_a_matrix_subclass_as_a_plain_array(op):
    # np.matrix used to reach the kernels as a 2-d matrix and fail Numba typing.
    x = X[0, 0]
    y = FORWARDS[op](np.asmatrix(x))
    assert type(y) is np.ndarray
    np.testing.assert_array_equal(y, FORWARDS[op](x))


@pytest.mark.parametrize(
    ("call", "shape"),
    [
        (lambda: F.conv2d(X[:0], W, B), (0, 4, 4, 4)),
        (lambda: F.max_pool2d(X[:0], 2), (0, 3, 3, 3)),
        (lambda: F.avg_pool2d(X[:0], 3, 1, 1), (0, 3, 6, 6)),
        (lambda: F.linear(XD[:0], WD), (0, 4)),
        (lambda: F.relu(XD[:0]), (0, 5)),
        (lambda: F.softmax(XD[:0]), (0, 5)),
        (lambda: F.cross_entropy(LOGITS[:0], LABELS[:0], reduction="none"), (0,)),
    ],
    ids=["conv2d", "max_pool2d", "avg_pool2d", "linear", "relu", "softmax", "ce"],
)
def test_functional_empty_batch_gives_an_empty_output(call, shape):
    assert call().shape == shape


@pytest.mark.parametrize("op", ["max", "avg"])
def test_pool_window_far_larger_than_the_input_matches_the_reference(op):
    # Windows within the padded-plane limit must still be exact: the kernels used
    # to return uninitialised memory once their scratch planes could not be
    # allocated, now refused above.
    fast = {"max": F.max_pool2d, "avg": F.avg_pool2d}[op]
    reference = {"max": R_pool.max_pool2d, "avg": R_pool.avg_pool2d}[op]
    x = X[:, :1]
    args = (301, 7, 150, True)
    np.testing.assert_allclose(fast(x, *args), reference(x, *args), rtol=1e-12)


def test_functional_empty_batch_backward_gives_zero_parameter_gradients():
    y, ctx = F.conv2d_forward(X[:0], W, B)
    grad_input, grad_weight, grad_bias = F.conv2d_backward(np.zeros(y.shape), ctx)
    assert grad_input.shape == (0, 3, 6, 6)
    np.testing.assert_array_equal(grad_weight, np.zeros_like(W))
    np.testing.assert_array_equal(grad_bias, np.zeros(4))

    y, ctx = F.linear_forward(XD[:0], WD, B)
    grad_input, grad_weight, grad_bias = F.linear_backward(np.zeros(y.shape), ctx)
    assert grad_input.shape == (0, 5)
    np.testing.assert_array_equal(grad_weight, np.zeros_like(WD))
    np.testing.assert_array_equal(grad_bias, np.zeros(4))


def test_cross_entropy_of_an_empty_batch_follows_pytorch():
    empty = LOGITS[:0]
    assert np.isnan(F.cross_entropy(empty, LABELS[:0], reduction="mean"))
    assert F.cross_entropy(empty, LABELS[:0], reduction="sum") == 0.0


def test_linear_with_zero_features_gives_the_bias_like_pytorch():
    # reshape(-1, 0) used to raise NumPy's "cannot reshape array of size 0".
    bias = np.arange(4.0)
    y, ctx = F.linear_forward(np.zeros((3, 0)), np.zeros((4, 0)), bias)
    np.testing.assert_array_equal(y, np.tile(bias, (3, 1)))
    grad_input, grad_weight, grad_bias = F.linear_backward(np.ones((3, 4)), ctx)
    assert grad_input.shape == (3, 0)
    assert grad_weight.shape == (4, 0)
    np.testing.assert_array_equal(grad_bias, np.full(4, 3.0))

    y, ctx = F.linear_forward(XD, np.zeros((0, 5)))
    assert y.shape == (3, 0)
    grad_input = F.linear_backward(np.zeros((3, 0)), ctx)[0]
    np.testing.assert_array_equal(grad_input, np.zeros_like(XD))


# ---------------------------------------------------------------------------
# Functional API: strided, negative-stride and Fortran-ordered views
# ---------------------------------------------------------------------------

_BIG = _RNG.standard_normal((4, 6, 14, 14))
_BIG_W = _RNG.standard_normal((4, 3, 3, 3))
_WIDE_W = _RNG.standard_normal((6, 1, 5, 5))
VIEWS = {
    "strided": lambda a: a[::2, ::2, ::2, ::2],
    "negative-stride": lambda a: a[::-2, ::-2, ::-2, ::-2],
    "transposed": lambda a: np.ascontiguousarray(a.transpose(0, 1, 3, 2)).transpose(
        0, 1, 3, 2
    )[::2, ::2, ::2, ::2],
}
VIEW_OPS = {
    "conv2d": lambda x: F.conv2d(x, _BIG_W, padding=1, stride=(1, 2)),
    "conv2d-view-weight": lambda x: F.conv2d(x[:, :1], _WIDE_W[::-1, :, ::-1]),
    "max_pool2d": lambda x: F.max_pool2d(x, 3, 2, 1, True),
    "avg_pool2d": lambda x: F.avg_pool2d(x, 2, 1, 1, False, False),
    "linear": lambda x: F.linear(x, np.ones((2, 7))[:, ::-1]),
    "relu": F.relu,
    "leaky_relu": lambda x: F.leaky_relu(x, 0.2),
    "sigmoid": F.sigmoid,
    "tanh": F.tanh,
    "softmax": lambda x: F.softmax(x, axis=1),
    "log_softmax": lambda x: F.log_softmax(x, axis=-1),
}


@pytest.mark.parametrize("view", VIEWS)
@pytest.mark.parametrize("op", VIEW_OPS)
def test_views_give_the_contiguous_result(op, view):
    x = VIEWS[view](_BIG)
    assert not x.flags.c_contiguous
    expected = VIEW_OPS[op](np.ascontiguousarray(x))
    np.testing.assert_array_equal(VIEW_OPS[op](x), expected)


def _compiled_signatures() -> int:
    """How many versions of fastcnn's kernels Numba has compiled so far."""
    count = 0
    for info in pkgutil.iter_modules(fastcnn.kernels.__path__):
        module = importlib.import_module(f"fastcnn.kernels.{info.name}")
        for obj in vars(module).values():
            for dispatcher in (obj, getattr(obj, "serial", None)):
                if isinstance(dispatcher, Dispatcher):
                    count += len(dispatcher.signatures)
            if isinstance(getattr(obj, "parallel", None), Dispatcher):
                count += len(obj.parallel.signatures)
    return count


def _read_only(a: np.ndarray) -> np.ndarray:
    a = a.copy()
    a.setflags(write=False)
    return a


@pytest.mark.parametrize("op", VIEW_OPS)
def test_read_only_input_gives_the_same_result_and_compiles_nothing(op):
    # The shapes VIEW_OPS take.
    x = np.ascontiguousarray(VIEWS["strided"](_BIG))
    expected = VIEW_OPS[op](x)
    before = _compiled_signatures()

    got = VIEW_OPS[op](_read_only(x))

    # Numba would compile every kernel again for read-only arrays.
    assert _compiled_signatures() == before
    np.testing.assert_array_equal(got, expected)


def test_read_only_targets_and_buffers_compile_nothing():
    logits = _RNG.standard_normal((5, 4))
    labels = np.arange(5, dtype=np.int64) % 4
    probabilities = F.softmax(_RNG.standard_normal((5, 4)), axis=1)
    expected = [
        F.cross_entropy(logits, labels),
        F.cross_entropy(logits, labels),
        F.cross_entropy(logits, probabilities),
        MSELoss().forward(logits, probabilities),
    ]
    before = _compiled_signatures()

    got = [
        F.cross_entropy(np.frombuffer(logits.tobytes()).reshape(5, 4), labels),
        F.cross_entropy(logits, _read_only(labels)),
        F.cross_entropy(logits, _read_only(probabilities)),
        MSELoss().forward(logits, _read_only(probabilities)),
    ]

    assert _compiled_signatures() == before
    np.testing.assert_array_equal(got, expected)


def test_backward_views_give_the_contiguous_result():
    x = _BIG[::-2, ::2, ::-2, ::2]
    y, ctx = F.conv2d_forward(x, _BIG_W, padding=1)
    g = np.ones((2 * y.shape[0], *y.shape[1:]))[::2]
    got = F.conv2d_backward(g, ctx)
    want = F.conv2d_backward(np.ascontiguousarray(g), ctx)
    for a, b in zip(got, want, strict=True):
        np.testing.assert_array_equal(a, b)

    y, ctx = F.max_pool2d_forward(x, 2)
    g = _RNG.standard_normal((*y.shape[:-1], 2 * y.shape[-1]))[..., ::-2]
    np.testing.assert_array_equal(
        F.max_pool2d_backward(g, ctx),
        F.max_pool2d_backward(np.ascontiguousarray(g), ctx),
    )
    y, ctx = F.linear_forward(x[..., 0, :], np.ones((3, 7)))
    g = np.asfortranarray(_RNG.standard_normal(y.shape))
    got = F.linear_backward(g, ctx)
    want = F.linear_backward(np.ascontiguousarray(g), ctx)
    for a, b in zip(got, want, strict=True):
        np.testing.assert_array_equal(a, b)


# ---------------------------------------------------------------------------
# Layers
# ---------------------------------------------------------------------------

# (id, factory, a good input); the input is float64.
LAYERS = [
    ("Conv2D", lambda: Conv2D(3, 2, 3, padding=1, rng=0), X),
    ("Conv2D-f64", lambda: Conv2D(3, 2, 3, dtype=np.float64, rng=0), X),
    ("MaxPool2D", lambda: MaxPool2D(2), X),
    ("AvgPool2D", lambda: AvgPool2D(3, 2, 1), X),
    ("Dense", lambda: Dense(5, 2, rng=0), XD),
    ("ReLU", ReLU, XD),
    ("LeakyReLU", LeakyReLU, XD),
    ("Sigmoid", Sigmoid, XD),
    ("Tanh", Tanh, XD),
    ("Softmax", Softmax, XD),
    ("SoftmaxCrossEntropy", SoftmaxCrossEntropy, XD),
    ("Flatten", Flatten, X),
    ("Reshape", lambda: Reshape(-1), X),
    ("Dropout", lambda: Dropout(0.0), XD),
]
LAYER_IDS = [case[0] for case in LAYERS]


def _input_name(layer) -> str:
    return "logits" if isinstance(layer, SoftmaxCrossEntropy) else "input"


def _gradient_for(layer, y: np.ndarray) -> np.ndarray:
    """A valid backward argument: class indices for SoftmaxCrossEntropy."""
    if isinstance(layer, SoftmaxCrossEntropy):
        return np.zeros(len(y), np.int64)
    return np.ones(y.shape)


def _layer_dtype(layer, x: np.ndarray) -> np.dtype:
    """The dtype a layer computes in for input ``x`` (the documented policy)."""
    own = getattr(layer, "dtype", None)
    if own is not None:
        return np.dtype(own)
    return x.dtype if x.dtype in (np.float32, np.float64) else np.dtype(np.float32)


CONVERTED_DTYPES = [
    np.bool_,
    np.int8,
    np.uint8,
    np.int32,
    np.int64,
    np.float16,
    np.float32,
    np.float64,
]


@pytest.mark.parametrize("dtype", CONVERTED_DTYPES, ids=str)
@pytest.mark.parametrize(("factory", "x"), [c[1:] for c in LAYERS], ids=LAYER_IDS)
def test_layers_convert_real_dtypes_to_the_layer_dtype(factory, x, dtype):
    x = (x * 3).astype(dtype)
    layer = factory()
    want = _layer_dtype(layer, x)
    y = layer.forward(x)
    assert y.dtype == want
    np.testing.assert_array_equal(y, factory().forward(x.astype(want)))


REFUSED_LAYER_INPUTS = {
    "complex": lambda a: a.astype(np.complex128),
    "object": lambda a: a.astype(object),
    "str": lambda a: a.astype(str),
    "bytes": lambda a: a.astype(bytes),
    "datetime": lambda a: a.astype(np.int64).astype("datetime64[s]"),
    "timedelta": lambda a: a.astype(np.int64).astype("timedelta64[s]"),
}


@pytest.mark.parametrize("kind", REFUSED_LAYER_INPUTS)
@pytest.mark.parametrize(("factory", "x"), [c[1:] for c in LAYERS], ids=LAYER_IDS)
def test_layers_refuse_non_real_dtypes(factory, x, kind):
    layer = factory()
    name = _input_name(layer)
    with pytest.raises(TypeError, match=f"{name} must have a real numeric dtype"):
        layer.forward(REFUSED_LAYER_INPUTS[kind](x))


@pytest.mark.parametrize("value", [None, 1.5, "x", [[1.0, 2.0]]], ids=repr)
@pytest.mark.parametrize(("factory", "x"), [c[1:] for c in LAYERS], ids=LAYER_IDS)
def test_layers_refuse_non_arrays(factory, x, value):
    layer = factory()
    with pytest.raises(TypeError, match=f"{_input_name(layer)} must be a numpy"):
        layer.forward(value)


@pytest.mark.parametrize(("factory", "x"), [c[1:] for c in LAYERS], ids=LAYER_IDS)
def test_layers_refuse_masked_arrays(factory, x):
    layer = factory()
    with pytest.raises(TypeError, match=f"{_input_name(layer)} must be a plain"):
        layer.forward(_masked(x))


@pytest.mark.parametrize(("factory", "x"), [c[1:] for c in LAYERS], ids=LAYER_IDS)
def test_layers_accept_an_empty_batch(factory, x):
    layer = factory()
    y = layer.forward(x[:0])
    assert y.shape[0] == 0
    grad = layer.backward(_gradient_for(layer, y))
    assert grad.shape == x[:0].shape
    for key, value in layer.grads.items():
        np.testing.assert_array_equal(value, np.zeros_like(layer.params[key]))


@pytest.mark.parametrize(("factory", "x"), [c[1:] for c in LAYERS], ids=LAYER_IDS)
def test_layers_give_views_the_contiguous_result(factory, x):
    view = np.concatenate([x, x])[::-2]
    expected = factory().forward(np.ascontiguousarray(view))
    np.testing.assert_array_equal(factory().forward(view), expected)


LAYER_CASES = [
    # wrong ndim and shapes
    (Conv2D(3, 4, 3), np.zeros((3, 8)), ValueError, "input must be 3-d or 4-d"),
    (Conv2D(3, 4, 3), np.zeros((1, 2, 3, 8, 8)), ValueError, "input must be 3-d"),
    (Conv2D(3, 4, 3), np.zeros((2, 4, 8, 8)), ValueError, "input must have 3 channels"),
    (Conv2D(3, 4, 3), np.zeros((4, 8, 8)), ValueError, "input must have 3 channels"),
    (
        Conv2D(3, 4, 5, padding=1),
        np.zeros((1, 3, 2, 9)),
        ValueError,
        r"input of spatial size \(2, 9\) is too small for kernel_size=\(5, 5\)",
    ),
    (
        Conv2D(3, 4, 3, dilation=4),
        np.zeros((1, 3, 8, 8)),
        ValueError,
        "is too small for kernel_size",
    ),
    (MaxPool2D(3), np.zeros((1, 1, 2, 5)), ValueError, "input of spatial size"),
    (AvgPool2D(4, padding=2), np.zeros((1, 1, 0, 5)), ValueError, "non-zero C, H"),
    (MaxPool2D(2), np.zeros((4, 4)), ValueError, "input must be 3-d or 4-d"),
    (MaxPool2D(1), np.zeros((2, 0, 3, 3)), ValueError, "non-zero C, H and W"),
    (Dense(5, 2), np.zeros((2, 4)), ValueError, "input must have 5 features.*got 4"),
    (Dense(5, 2), np.zeros((2, 2, 5)), ValueError, "input must be 1-d or 2-d"),
    (Dense(5, 2), np.array(1.0), ValueError, "input must be 1-d or 2-d"),
    (Softmax(axis=2), np.zeros((2, 3)), ValueError, "axis=2 is out of range"),
    (Softmax(), np.array(1.0), ValueError, "input must be at least 1-d"),
    (SoftmaxCrossEntropy(), np.zeros((2, 3, 4)), ValueError, "logits must be 2-d"),
    (SoftmaxCrossEntropy(), np.zeros((2, 0)), ValueError, "at least one class"),
    (Reshape(4, 4), np.zeros((2, 3, 5)), ValueError, "cannot be reshaped"),
    (Flatten(), np.array(1.0), ValueError, "input must have a batch axis"),
]


@pytest.mark.parametrize(
    ("layer", "x", "error", "match"),
    LAYER_CASES,
    ids=[f"{type(c[0]).__name__}-{i}" for i, c in enumerate(LAYER_CASES)],
)
def test_layer_bad_input_raises(layer, x, error, match):
    with pytest.raises(error, match=match):
        layer.forward(x)


CONSTRUCTOR_CASES = [
    (lambda: Conv2D(0, 4, 3), ValueError, "in_channels must be >= 1, got 0"),
    (lambda: Conv2D(3, -4, 3), ValueError, "out_channels must be >= 1"),
    (lambda: Conv2D(True, 4, 3), TypeError, "in_channels must be an int, got bool"),
    (lambda: Conv2D(3.0, 4, 3), TypeError, "in_channels must be an int"),
    (lambda: Conv2D(3, 4, 0), ValueError, "kernel_size must be >= 1"),
    (lambda: Conv2D(3, 4, (3, 3, 3)), ValueError, "kernel_size must be an int or"),
    (lambda: Conv2D(3, 4, (3,)), ValueError, "kernel_size must be an int or a pair"),
    (lambda: Conv2D(3, 4, (3, True)), TypeError, "kernel_size must be an int or"),
    (lambda: Conv2D(3, 4, HUGE), ValueError, "kernel_size must be <= 2147483647"),
    (lambda: Conv2D(3, 4, 3, stride=0), ValueError, "stride must be >= 1"),
    (lambda: Conv2D(3, 4, 3, stride=(1, -1)), ValueError, "stride must be >= 1"),
    (lambda: Conv2D(3, 4, 3, padding=-1), ValueError, "padding must be >= 0"),
    (lambda: Conv2D(3, 4, 3, padding="full"), ValueError, "padding must be an int, a"),
    (lambda: Conv2D(3, 4, 3, padding=None), TypeError, "padding must be an int or"),
    (lambda: Conv2D(3, 4, 3, 2, "same"), ValueError, "padding='same' needs stride 1"),
    (lambda: Conv2D(3, 4, 3, dilation=0), ValueError, "dilation must be >= 1"),
    (lambda: Conv2D(3, 4, 3, groups=0), ValueError, "groups must be >= 1"),
    (lambda: Conv2D(3, 4, 3, groups=2), ValueError, "in_channels must be divisible"),
    (lambda: Conv2D(4, 3, 3, groups=2), ValueError, "out_channels must be divisible"),
    (lambda: Conv2D(3, 4, 3, bias=1), TypeError, "bias must be a bool"),
    (lambda: Conv2D(3, 4, 3, dtype=np.float16), TypeError, "dtype must be float32"),
    (lambda: Conv2D(3, 4, 3, rng=-1), ValueError, "rng must be a non-negative seed"),
    (lambda: Dense(0, 4), ValueError, "in_features must be >= 1"),
    (lambda: Dense(4, 0), ValueError, "out_features must be >= 1"),
    (lambda: Dense(4.0, 4), TypeError, "in_features must be an int"),
    (lambda: Dense(4, 4, bias=None), TypeError, "bias must be a bool"),
    (lambda: Dense(4, 4, dtype="int32"), TypeError, "dtype must be float32"),
    (lambda: MaxPool2D(0), ValueError, "kernel_size must be >= 1"),
    (lambda: MaxPool2D(2, stride=0), ValueError, "stride must be >= 1"),
    (lambda: MaxPool2D(2, padding=2), ValueError, "padding must be at most half"),
    (lambda: MaxPool2D(2, padding=-1), ValueError, "padding must be >= 0"),
    (lambda: MaxPool2D(2, padding="same"), TypeError, "padding must be an int or"),
    (lambda: MaxPool2D(2, ceil_mode=1), TypeError, "ceil_mode must be a bool"),
    (lambda: AvgPool2D(True), TypeError, "kernel_size must be an int or a pair"),
    (lambda: AvgPool2D(2, stride=HUGE), ValueError, "stride must be <="),
    (lambda: AvgPool2D(2, count_include_pad=0), TypeError, "count_include_pad"),
    (lambda: LeakyReLU(NAN), ValueError, "negative_slope must be finite"),
    (lambda: LeakyReLU(None), TypeError, "negative_slope must be a real number"),
    (lambda: Softmax(axis=1.0), TypeError, "axis must be an int"),
    (lambda: Softmax(axis=True), TypeError, "axis must be an int"),
    (lambda: Dropout(1.0), ValueError, "p must be < 1.0"),
    (lambda: Dropout(NAN), ValueError, "p must be finite"),
    (lambda: Dropout(-0.5), ValueError, "p must be >= 0.0"),
    (lambda: Dropout(True), TypeError, "p must be a real number"),
    (lambda: Reshape(), ValueError, "shape must be a non-empty tuple"),
    (lambda: Reshape(2, 0), ValueError, "shape must hold sizes >= 1"),
    (lambda: Reshape(-1, -1), ValueError, "shape may hold at most one -1"),
    (lambda: Reshape(2.0), TypeError, "shape must hold ints"),
    (lambda: Reshape(True), TypeError, "shape must hold ints"),
]


@pytest.mark.parametrize(
    ("call", "error", "match"),
    CONSTRUCTOR_CASES,
    ids=[f"ctor-{i}" for i in range(len(CONSTRUCTOR_CASES))],
)
def test_layer_constructor_bad_argument_raises(call, error, match):
    with pytest.raises(error, match=match):
        call()


@pytest.mark.parametrize(
    ("value", "error", "match"),
    [
        (NAN, ValueError, "learning_rate must be finite, got nan"),
        (INF, ValueError, "learning_rate must be finite"),
        (-0.1, ValueError, "learning_rate must be >= 0.0"),
        ("0.1", TypeError, "learning_rate must be a real number"),
        (True, TypeError, "learning_rate must be a real number"),
        (10**400, ValueError, "learning_rate must be finite, got an int of 1329 bits"),
    ],
    ids=["nan", "inf", "negative", "str", "bool", "huge-int"],
)
@pytest.mark.parametrize(("factory", "x"), [c[1:] for c in LAYERS], ids=LAYER_IDS)
def test_layer_backward_bad_learning_rate_raises_and_keeps_parameters(
    factory, x, value, error, match
):
    layer = factory()
    y = layer.forward(x)
    before = {k: v.copy() for k, v in layer.params.items()}
    with pytest.raises(error, match=match):
        layer.backward(_gradient_for(layer, y), value)
    for key, param in layer.params.items():
        np.testing.assert_array_equal(param, before[key])


@pytest.mark.parametrize(
    ("factory", "x"),
    [c[1:] for c in LAYERS if c[0] in ("Conv2D", "Dense")],
    ids=["Conv2D", "Dense"],
)
def test_learning_rate_overflowing_float32_parameters_is_refused(factory, x):
    layer = factory()
    y = layer.forward(x)
    before = {k: v.copy() for k, v in layer.params.items()}
    with pytest.raises(ValueError, match=r"learning_rate=1e\+300 overflows float32"):
        layer.backward(np.ones(y.shape), 1e300)
    for key, param in layer.params.items():
        np.testing.assert_array_equal(param, before[key])
    # The largest float32 still fits.
    largest = float(np.finfo(np.float32).max)
    layer.backward(np.zeros(y.shape), largest)


def test_learning_rate_beyond_float32_is_accepted_by_float64_parameters():
    layer = Conv2D(3, 2, 3, dtype=np.float64, rng=0)
    y = layer.forward(X)
    before = layer.weight.copy()
    layer.backward(np.full(y.shape, 1e-300), 1e300)
    assert np.isfinite(layer.weight).all()
    assert not np.array_equal(layer.weight, before)


@pytest.mark.parametrize(
    ("gradient", "error", "match"),
    [
        (lambda y: y.tolist(), TypeError, "output_gradient must be a numpy.ndarray"),
        (lambda y: None, TypeError, "output_gradient must be a numpy.ndarray"),
        (lambda y: y[..., :-1], ValueError, "output_gradient must have the shape"),
        (lambda y: y[None], ValueError, "output_gradient must have the shape"),
        (lambda y: y.astype(complex), TypeError, "output_gradient must have a real"),
    ],
    ids=["list", "none", "short", "extra-axis", "complex"],
)
@pytest.mark.parametrize(
    ("factory", "x"),
    [c[1:] for c in LAYERS if c[0] != "SoftmaxCrossEntropy"],
    ids=[i for i in LAYER_IDS if i != "SoftmaxCrossEntropy"],
)
def test_layer_backward_bad_gradient_raises(factory, x, gradient, error, match):
    layer = factory()
    y = layer.forward(x)
    with pytest.raises(error, match=match):
        layer.backward(gradient(y))


@pytest.mark.parametrize(
    ("target", "error", "match"),
    [
        ([0, 1, 2], TypeError, "y_true must be a numpy.ndarray"),
        (
            np.array([0, 1, 5]),
            ValueError,
            r"y_true must hold class indices in \[0, 5\)",
        ),
        (np.array([0, -1, 2]), ValueError, "y_true must hold class indices"),
        (np.eye(4)[[0, 1, 2]], ValueError, r"y_true must have shape \(3,\)"),
        (np.array([0.0, 1.0, 2.0]), TypeError, "y_true of class indices must have an"),
        (np.array([True, False, True]), TypeError, "y_true of class indices"),
        (np.eye(5, dtype=complex)[:3], TypeError, "y_true must have a real numeric"),
    ],
    ids=["list", "too-large", "negative", "one-hot-width", "float-idx", "bool", "cplx"],
)
def test_softmax_cross_entropy_bad_target_raises(target, error, match):
    layer = SoftmaxCrossEntropy()
    layer.forward(XD)
    with pytest.raises(error, match=match):
        layer.cross_entropy(target)
    with pytest.raises(error, match=match):
        layer.backward(target)


def test_layer_backward_before_forward_is_a_runtime_error():
    # Calling order is not an argument: RuntimeError, as documented.
    with pytest.raises(
        RuntimeError, match=r"Dense\.backward was called before forward"
    ):
        Dense(2, 2).backward(np.zeros((1, 2)))


# ---------------------------------------------------------------------------
# Sequential
# ---------------------------------------------------------------------------


def _model(dtype=np.float32) -> Sequential:
    return Sequential(
        [
            Conv2D(1, 2, 3, dtype=dtype, rng=0),
            ReLU(),
            MaxPool2D(2),
            Flatten(),
            Dense(8, 3, dtype=dtype, rng=0),
        ]
    )


XS = np.random.default_rng(3).random((6, 1, 6, 6)).astype(np.float32)
YS = np.array([0, 1, 2, 0, 1, 2])


def _fit(x=XS, y=YS, **kwargs):
    return _model().fit(x, y, verbose=0, seed=0, **kwargs)


def _evaluate(x=XS, y=YS, **kwargs):
    return _model().evaluate(x, y, **kwargs)


def _predict(x=XS, **kwargs):
    return _model().predict(x, **kwargs)


SEQUENTIAL_CASES = [
    # x: not an array, wrong dtype, wrong shape, empty
    ("fit-x-list", lambda: _fit(x=XS.tolist()), TypeError, "x must be a numpy"),
    ("predict-x-none", lambda: _predict(x=None), TypeError, "x must be a numpy"),
    ("evaluate-x-scalar", lambda: _evaluate(x=1.0), TypeError, "x must be a numpy"),
    ("forward-x-list", lambda: _model().forward([1.0]), TypeError, "x must be a"),
    (
        "fit-x-complex",
        lambda: _fit(x=XS.astype(complex)),
        TypeError,
        "x must have a real numeric dtype, got complex128; .*astype",
    ),
    ("predict-x-object", lambda: _predict(x=XS.astype(object)), TypeError, "real"),
    ("evaluate-x-str", lambda: _evaluate(x=XS.astype(str)), TypeError, "real"),
    (
        "predict-x-datetime",
        lambda: _predict(x=XS.astype(np.int64).astype("datetime64[s]")),
        TypeError,
        "x must have a real numeric dtype",
    ),
    (
        "forward-x-complex",
        lambda: _model().forward(XS.astype(complex)),
        TypeError,
        "x must have a real numeric dtype",
    ),
    ("forward-x-masked", lambda: _model().forward(_masked(XS)), TypeError, "x must be"),
    ("predict-x-1d", lambda: _predict(x=XS[0, 0, 0]), ValueError, "at least 2-d"),
    (
        "fit-x-empty",
        lambda: _fit(x=XS[:0], y=YS[:0]),
        ValueError,
        "x must hold at least one sample",
    ),
    ("predict-x-empty", lambda: _predict(x=XS[:0]), ValueError, "at least one sample"),
    (
        "evaluate-x-empty",
        lambda: _evaluate(x=XS[:0], y=YS[:0]),
        ValueError,
        "at least one sample",
    ),
    (
        "fit-x-channels",
        lambda: _fit(x=np.repeat(XS, 2, axis=1)),
        ValueError,
        r"x has per-sample shape .* not accept: layer 0 \(Conv2D\): input must have 1 "
        "channels",
    ),
    (
        "predict-x-channels",
        lambda: _predict(x=np.repeat(XS, 2, axis=1)),
        ValueError,
        "x has per-sample shape",
    ),
    (
        "predict-x-too-small",
        lambda: _predict(x=XS[..., :3, :3]),
        ValueError,
        "x has per-sample shape .* too small",
    ),
    (
        "predict-x-missing-channel-axis",
        lambda: _predict(x=XS[:, 0]),
        ValueError,
        r"x has per-sample shape \(6, 6\)",
    ),
    # y: labels out of range, one-hot of the wrong width, wrong kinds
    ("fit-y-list", lambda: _fit(y=YS.tolist()), TypeError, "y must be a numpy"),
    (
        "fit-y-too-large",
        lambda: _fit(y=np.array([0, 1, 3, 0, 1, 2])),
        ValueError,
        r"y holds class index 3, outside \[0, 3\) for a model with 3 outputs",
    ),
    ("evaluate-y-negative", lambda: _evaluate(y=YS - 1), ValueError, "class index -1"),
    (
        "fit-y-one-hot-width",
        lambda: _fit(y=np.eye(4)[YS]),
        ValueError,
        r"y of one-hot or probability rows must have shape \(6, 3\)",
    ),
    (
        "evaluate-y-one-hot-width",
        lambda: _evaluate(y=np.eye(2)[YS % 2]),
        ValueError,
        r"must have shape \(6, 3\)",
    ),
    ("fit-y-float-indices", lambda: _fit(y=YS * 1.0), ValueError, "one-hot or prob"),
    ("fit-y-bool", lambda: _fit(y=YS > 0), TypeError, "y must hold integer class"),
    ("fit-y-complex", lambda: _fit(y=YS + 0j), TypeError, "y must hold integer"),
    ("fit-y-length", lambda: _fit(y=YS[:5]), ValueError, "one entry per sample of x"),
    ("fit-y-0d", lambda: _fit(y=np.array(1)), ValueError, "one entry per sample"),
    ("fit-y-2d-indices", lambda: _fit(y=YS[:, None]), ValueError, "must be 1-d"),
    # hyper-parameters
    ("fit-epochs-0", lambda: _fit(epochs=0), ValueError, "epochs must be >= 1"),
    ("fit-epochs-bool", lambda: _fit(epochs=True), TypeError, "epochs must be an int"),
    ("fit-epochs-float", lambda: _fit(epochs=2.0), TypeError, "epochs must be an int"),
    ("fit-batch-0", lambda: _fit(batch_size=0), ValueError, "batch_size must be >="),
    ("fit-batch-none", lambda: _fit(batch_size=None), TypeError, "batch_size must"),
    ("predict-batch-bool", lambda: _predict(batch_size=True), TypeError, "batch_size"),
    ("evaluate-batch-neg", lambda: _evaluate(batch_size=-1), ValueError, "batch_size"),
    ("fit-shuffle-int", lambda: _fit(shuffle=1), TypeError, "shuffle must be a bool"),
    ("fit-initial-epoch", lambda: _fit(initial_epoch=-1), ValueError, "initial_epoch"),
    ("fit-loss-str", lambda: _fit(loss="mse"), TypeError, "loss must be a loss object"),
    (
        "fit-loss-none-reduction",
        lambda: _fit(loss=MSELoss(reduction="none")),
        ValueError,
        "loss must reduce to a scalar",
    ),
    ("fit-optimizer-str", lambda: _fit(optimizer="sgd"), TypeError, "optimizer must"),
    (
        "fit-optimizer-other-model",
        lambda: _fit(optimizer=SGD(_model(), lr=0.1)),
        ValueError,
        "optimizer was built on layers that are not this model's",
    ),
    (
        "fit-validation-single",
        lambda: _fit(validation_data=(XS,)),
        TypeError,
        r"validation_data must be a pair \(x_val, y_val\)",
    ),
    (
        "fit-validation-labels",
        lambda: _fit(validation_data=(XS, YS + 1)),
        ValueError,
        r"validation_data\[1\] holds class index 3",
    ),
]


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [pytest.param(*case[1:], id=case[0]) for case in SEQUENTIAL_CASES],
)
def test_sequential_bad_argument_raises(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_fit_bad_argument_leaves_the_parameters_alone():
    model = _model()
    before = {k: v.copy() for k, v in model.params.items()}
    with pytest.raises(ValueError, match="class index"):
        model.fit(XS, YS + 1, verbose=0)
    for key, value in model.params.items():
        np.testing.assert_array_equal(value, before[key])


def test_predict_refuses_a_batch_a_layer_would_read_as_one_unbatched_sample():
    # A (C, H, W) array used to pass as one unbatched sample of the convolution
    # and come back with as many rows as the layer has output channels.
    model = Sequential([Conv2D(2, 3, 1, rng=0), ReLU()])
    with pytest.raises(ValueError, match=r"x has per-sample shape \(4, 4\)"):
        model.predict(np.ones((2, 4, 4)))
    assert model.predict(np.ones((2, 2, 4, 4))).shape == (2, 3, 4, 4)


@pytest.mark.parametrize("dtype", CONVERTED_DTYPES, ids=str)
def test_sequential_converts_real_dtypes_to_the_model_dtype(dtype):
    x = (XS * 3).astype(dtype)
    model = _model()
    want = model.predict(x.astype(np.float32))
    for got in (model.forward(x), model.predict(x)):
        assert got.dtype == np.float32
        np.testing.assert_array_equal(got, want)
    loss, _ = model.evaluate(x, YS)
    assert loss == model.evaluate(x.astype(np.float32), YS)[0]


def test_float64_data_trains_a_float32_model_like_float32_data():
    x64 = XS.astype(np.float64)
    first, second = _model(), _model()
    first.fit(x64, YS, epochs=2, batch_size=2, verbose=0, seed=1)
    second.fit(XS, YS, epochs=2, batch_size=2, verbose=0, seed=1)
    for key, value in first.params.items():
        assert value.dtype == np.float32
        np.testing.assert_array_equal(value, second.params[key])


def test_forward_of_an_empty_batch_is_empty():
    assert _model().forward(XS[:0]).shape == (0, 3)


def test_fit_accepts_one_hot_rows_of_any_float_dtype():
    history = _fit(y=np.eye(3, dtype=np.float16)[YS])
    assert np.isfinite(history["loss"][0])


# ---------------------------------------------------------------------------
# Losses
# ---------------------------------------------------------------------------

P = _RNG.random((3, 4))

LOSS_CASES = [
    ("ce-reduction", lambda: CrossEntropyLoss("avg"), ValueError, "reduction must be"),
    ("mse-reduction-none", lambda: MSELoss(None), ValueError, "reduction must be one"),
    (
        "ce-smoothing-nan",
        lambda: CrossEntropyLoss(label_smoothing=NAN),
        ValueError,
        "label_smoothing must be finite",
    ),
    (
        "ce-smoothing-negative",
        lambda: CrossEntropyLoss(label_smoothing=-0.1),
        ValueError,
        "label_smoothing must be >= 0.0",
    ),
    (
        "ce-smoothing-str",
        lambda: CrossEntropyLoss(label_smoothing="0.1"),
        TypeError,
        "label_smoothing must be a real number",
    ),
    (
        "ce-prediction-list",
        lambda: CrossEntropyLoss()(LOGITS.tolist(), LABELS),
        TypeError,
        "prediction must be a numpy.ndarray",
    ),
    (
        "ce-prediction-int",
        lambda: CrossEntropyLoss()(LOGITS.astype(int), LABELS),
        TypeError,
        "prediction must have dtype float32 or float64, got int64; .*astype",
    ),
    (
        "ce-prediction-3d",
        lambda: CrossEntropyLoss()(LOGITS[None], LABELS[None]),
        ValueError,
        "prediction must be 1-d or 2-d",
    ),
    (
        "ce-prediction-empty",
        lambda: CrossEntropyLoss()(LOGITS[:0], LABELS[:0]),
        ValueError,
        "prediction must not be empty",
    ),
    (
        "ce-label-out-of-range",
        lambda: CrossEntropyLoss()(LOGITS, np.array([0, 1, 4])),
        ValueError,
        r"target holds class index 4, outside \[0, 4\)",
    ),
    (
        "ce-one-hot-width",
        lambda: CrossEntropyLoss()(LOGITS, np.eye(5)[LABELS]),
        ValueError,
        r"target of class probabilities must have the shape of prediction \(3, 4\)",
    ),
    (
        "ce-target-bool",
        lambda: CrossEntropyLoss()(LOGITS, LABELS > 0),
        TypeError,
        "target must hold integer class indices or float class probabilities",
    ),
    (
        "ce-target-none",
        lambda: CrossEntropyLoss()(LOGITS, None),
        TypeError,
        "target must be a numpy.ndarray",
    ),
    (
        "mse-prediction-f16",
        lambda: MSELoss()(P.astype(np.float16), P),
        TypeError,
        "prediction must have dtype float32 or float64",
    ),
    (
        "mse-target-shape",
        lambda: MSELoss()(P, P[:1]),
        ValueError,
        r"target must have the shape of prediction \(3, 4\), got \(1, 4\)",
    ),
    (
        "mse-target-complex",
        lambda: MSELoss()(P, P + 0j),
        TypeError,
        "target must have a real numeric dtype",
    ),
    (
        "bce-prediction-above-1",
        lambda: BCELoss()(P + 1.0, P),
        ValueError,
        r"prediction must hold values in \[0, 1\]",
    ),
    (
        "bce-target-negative",
        lambda: BCELoss()(P, -P),
        ValueError,
        r"target must hold values in \[0, 1\]",
    ),
    (
        # The sigmoid hint is for predictions; the target message ends here.
        "bce-target-above-1",
        lambda: BCELoss()(P, P + 1.5),
        ValueError,
        r"^target must hold values in \[0, 1\], got [0-9.]+$",
    ),
    (
        "ce-float-labels",
        lambda: CrossEntropyLoss()(LOGITS, LABELS.astype(np.float64)),
        TypeError,
        r"target of class indices must have an integer dtype, got float64; "
        r"convert it first, e.g. target.astype\(np.int64\)",
    ),
    (
        "ce-target-int-beyond-int64",
        lambda: CrossEntropyLoss()(LOGITS[0], 2**70),
        ValueError,
        r"target holds an int beyond the int64 range, outside \[0, 4\)",
    ),
    (
        "ce-smoothing-huge-int",
        lambda: CrossEntropyLoss(label_smoothing=10**400),
        ValueError,
        "label_smoothing must be finite, got an int",
    ),
    (
        "mse-grad-output-overflows-float32",
        lambda: _after_forward(MSELoss(), np.float32).backward(1e300),
        ValueError,
        r"grad_output=1e\+300 overflows float32",
    ),
    (
        "mse-grad-output-huge-int",
        lambda: _after_forward(MSELoss()).backward(10**400),
        ValueError,
        "grad_output must be finite, got an int",
    ),
    ("bce-empty", lambda: BCELoss()(P[:0], P[:0]), ValueError, "must not be empty"),
    (
        "mse-grad-output-nan",
        lambda: _after_forward(MSELoss()).backward(NAN),
        ValueError,
        "grad_output must be finite",
    ),
    (
        "mse-grad-output-shape",
        lambda: _after_forward(MSELoss()).backward(np.ones(3)),
        ValueError,
        "grad_output must be a scalar",
    ),
]


def _after_forward(loss, dtype=np.float64):
    loss(P.astype(dtype), P * 0.5)
    return loss


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [pytest.param(*case[1:], id=case[0]) for case in LOSS_CASES],
)
def test_loss_bad_argument_raises(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_loss_backward_before_forward_is_a_runtime_error():
    with pytest.raises(RuntimeError, match=r"MSELoss\.backward was called before"):
        MSELoss().backward()


# ---------------------------------------------------------------------------
# Optimisers
# ---------------------------------------------------------------------------


def _layers():
    return [Dense(3, 2, rng=0), ReLU(), Dense(2, 2, rng=1)]


OPTIMIZER_CASES = [
    ("sgd-lr-nan", lambda: SGD(_layers(), lr=NAN), ValueError, "lr must be finite"),
    ("sgd-lr-inf", lambda: SGD(_layers(), lr=INF), ValueError, "lr must be finite"),
    ("sgd-lr-negative", lambda: SGD(_layers(), lr=-1), ValueError, "lr must be >= 0"),
    ("sgd-lr-str", lambda: SGD(_layers(), lr="0.1"), TypeError, "lr must be a real"),
    ("sgd-lr-bool", lambda: SGD(_layers(), lr=True), TypeError, "lr must be a real"),
    ("sgd-lr-array", lambda: SGD(_layers(), lr=np.ones(1)), TypeError, "lr must be"),
    (
        "sgd-momentum-nan",
        lambda: SGD(_layers(), lr=0.1, momentum=NAN),
        ValueError,
        "momentum must be finite",
    ),
    (
        "sgd-nesterov-without-momentum",
        lambda: SGD(_layers(), lr=0.1, nesterov=True),
        ValueError,
        "nesterov=True requires momentum > 0",
    ),
    (
        "sgd-nesterov-int",
        lambda: SGD(_layers(), lr=0.1, nesterov=1),
        TypeError,
        "nesterov must be a bool",
    ),
    (
        "sgd-weight-decay-negative",
        lambda: SGD(_layers(), lr=0.1, weight_decay=-1e-4),
        ValueError,
        "weight_decay must be >= 0",
    ),
    ("adam-lr-nan", lambda: Adam(_layers(), lr=NAN), ValueError, "lr must be finite"),
    (
        "adam-betas-one",
        lambda: Adam(_layers(), betas=(0.9,)),
        TypeError,
        "betas must be a pair of floats",
    ),
    (
        "adam-betas-three",
        lambda: Adam(_layers(), betas=(0.9, 0.99, 0.999)),
        TypeError,
        "betas must be a pair",
    ),
    (
        "adam-beta-one",
        lambda: Adam(_layers(), betas=(1.0, 0.999)),
        ValueError,
        r"betas\[0\] must be < 1.0",
    ),
    (
        "adam-beta-nan",
        lambda: Adam(_layers(), betas=(0.9, NAN)),
        ValueError,
        r"betas\[1\] must be finite",
    ),
    ("adam-eps-zero", lambda: Adam(_layers(), eps=0.0), ValueError, "eps must be > 0"),
    ("model-none", lambda: SGD(None, lr=0.1), TypeError, "model must be a Sequential"),
    ("model-str", lambda: SGD("abc", lr=0.1), TypeError, "model must be a Sequential"),
    ("model-ints", lambda: SGD([1, 2], lr=0.1), TypeError, r"model\[0\] must be a"),
    (
        "sgd-empty",
        lambda: SGD([], lr=0.1),
        ValueError,
        "model must hold at least one parameter, got an empty parameter list: no "
        "layer has params",
    ),
    ("adam-empty", lambda: Adam([]), ValueError, "empty parameter list"),
    (
        "sgd-no-parameters",
        lambda: SGD(Sequential([Flatten(), ReLU()]), lr=0.1),
        ValueError,
        r"empty parameter list: no layer has params \(layers: \['Flatten', 'ReLU'\]",
    ),
    (
        "sgd-lr-huge-int",
        lambda: SGD(_layers(), lr=10**400),
        ValueError,
        "lr must be finite, got an int of 1329 bits",
    ),
    # Hyper-parameters are cast to the dtype of the (float32) parameters.
    (
        "sgd-lr-overflows-float32",
        lambda: SGD(_layers(), lr=1e300),
        ValueError,
        r"lr=1e\+300 overflows float32 \(it would become inf",
    ),
    (
        "sgd-momentum-overflows-float32",
        lambda: SGD(_layers(), lr=0.1, momentum=1e39),
        ValueError,
        r"momentum=1e\+39 overflows float32",
    ),
    (
        "sgd-dampening-overflows-float32",
        lambda: SGD(_layers(), lr=0.1, dampening=-1e39),
        ValueError,
        r"dampening=-1e\+39 overflows float32",
    ),
    (
        "sgd-weight-decay-overflows-float32",
        lambda: SGD(_layers(), lr=0.1, weight_decay=1e39),
        ValueError,
        r"weight_decay=1e\+39 overflows float32",
    ),
    (
        "adam-lr-overflows-float32",
        lambda: Adam(_layers(), lr=1e300),
        ValueError,
        r"lr=1e\+300 overflows float32",
    ),
    (
        "adam-eps-overflows-float32",
        lambda: Adam(_layers(), eps=1e39),
        ValueError,
        r"eps=1e\+39 overflows float32",
    ),
    (
        "adam-weight-decay-overflows-float32",
        lambda: Adam(_layers(), weight_decay=1e39),
        ValueError,
        r"weight_decay=1e\+39 overflows float32",
    ),
]


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [pytest.param(*case[1:], id=case[0]) for case in OPTIMIZER_CASES],
)
def test_optimizer_bad_argument_raises(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_setting_a_nan_learning_rate_raises_and_keeps_the_old_one():
    optimizer = SGD(_layers(), lr=0.1)
    with pytest.raises(ValueError, match="lr must be finite, got nan"):
        optimizer.lr = NAN
    assert optimizer.lr == 0.1


@pytest.mark.parametrize("make", [SGD, Adam])
def test_setting_a_learning_rate_that_overflows_float32_raises(make):
    optimizer = make(_layers(), lr=0.1)
    with pytest.raises(ValueError, match=r"lr=1e\+39 overflows float32"):
        optimizer.lr = 1e39
    assert optimizer.lr == 0.1


@pytest.mark.parametrize(
    ("gradient", "error", "match"),
    [
        (np.zeros(3), ValueError, r"the gradient of layer2.weight must be an array of"),
        ("grad", ValueError, "the gradient of layer2.weight must be an array"),
        (
            np.zeros((2, 2), complex),
            TypeError,
            "layer2.weight must have a real numeric",
        ),
        (np.zeros((2, 2), object), TypeError, "must have a real numeric dtype"),
    ],
    ids=["shape", "str", "complex", "object"],
)
def test_optimizer_step_checks_every_gradient_before_updating(gradient, error, match):
    layers = _layers()
    layers[0].forward(np.ones((4, 3)))
    layers[0].backward(np.ones((4, 2)))
    layers[2].grads = {"weight": gradient}
    before = layers[0].weight.copy()
    with pytest.raises(error, match=match):
        SGD(layers, lr=1.0).step()
    np.testing.assert_array_equal(layers[0].weight, before)


def test_a_list_passed_as_an_array_is_not_echoed_whole():
    # A whole batch given as nested lists must give a short message.
    import fastcnn.functional as functional

    batch = np.zeros((64, 1, 28, 28)).tolist()
    with pytest.raises(TypeError, match=r"x must be a numpy\.ndarray") as info:
        functional.conv2d(batch, np.zeros((4, 1, 3, 3), np.float32))
    assert len(str(info.value)) < 200


LENET_BAD = [
    ({"image_size": "28"}, TypeError, "image_size must be an int or a pair of ints"),
    ({"image_size": (28,)}, ValueError, "image_size must be an int or a pair"),
    ({"image_size": 30}, ValueError, r"image_size must be multiples of 4, got \(30"),
    ({"in_channels": True}, TypeError, "in_channels must be an int, got bool"),
    ({"num_classes": 0}, ValueError, "num_classes must be >= 1, got 0"),
    ({"channels": (8, 0)}, ValueError, r"channels must be >= 1, got \(8, 0\)"),
    ({"hidden": -1}, ValueError, "hidden must be >= 1, got -1"),
    ({"normalize": 5}, TypeError, "normalize must be a pair"),
    ({"normalize": (1, 2, 3)}, ValueError, "normalize must be a pair .* 3 values"),
    ({"rng": 1.5}, TypeError, "rng must be an int seed"),
    ({"rng": -1}, ValueError, "rng must be a non-negative seed, got -1"),
]


@pytest.mark.parametrize(("kwargs", "error", "match"), LENET_BAD)
def test_lenet_names_the_bad_argument(kwargs, error, match):
    import fastcnn

    with pytest.raises(error, match=match):
        fastcnn.lenet(**kwargs)
