"""Tests for fastcnn.optim: PyTorch's SGD and Adam update rules, state, checks."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import assert_close

from fastcnn.layers.base import Layer
from fastcnn.optim import SGD, Adam
from fastcnn.reference.optim import sgd_step


class ParamLayer(Layer):
    """A layer that only holds parameters; tests set its gradients directly."""

    def __init__(self, shapes: dict[str, tuple[int, ...]], rng, dtype=np.float64):
        super().__init__()
        for name, shape in shapes.items():
            self.params[name] = rng.standard_normal(shape).astype(dtype)


def make_layers(rng, dtype=np.float64) -> list[ParamLayer]:
    return [
        ParamLayer({"weight": (3, 4), "bias": (3,)}, rng, dtype),
        Layer(),  # no parameters
        ParamLayer({"weight": (2, 3)}, rng, dtype),
    ]


def gradient_sequence(rng, layers, steps: int) -> list[list[dict]]:
    return [
        [
            {name: rng.standard_normal(p.shape) for name, p in layer.params.items()}
            for layer in layers
        ]
        for _ in range(steps)
    ]


def run_fastcnn(layers, optimizer, grads_per_step) -> None:
    for grads in grads_per_step:
        for layer, grad in zip(layers, grads, strict=True):
            layer.grads = {k: v.astype(layer.params[k].dtype) for k, v in grad.items()}
        optimizer.step()


def run_torch(torch, initial, torch_cls, kwargs, grads_per_step, dtype):
    tensors = [
        [torch.tensor(p, dtype=dtype, requires_grad=True) for p in layer.values()]
        for layer in initial
    ]
    flat = [t for layer in tensors for t in layer]
    opt = torch_cls(flat, **kwargs)
    for grads in grads_per_step:
        for layer_tensors, grad in zip(tensors, grads, strict=True):
            for t, g in zip(layer_tensors, grad.values(), strict=True):
                t.grad = torch.tensor(g, dtype=dtype)
        opt.step()
    return [[t.detach().numpy() for t in layer] for layer in tensors]


SGD_CASES = [
    {"lr": 0.1},
    {"lr": 0.05, "momentum": 0.9},
    {"lr": 0.05, "momentum": 0.9, "dampening": 0.3},
    {"lr": 0.05, "momentum": 0.8, "nesterov": True},
    {"lr": 0.02, "momentum": 0.9, "weight_decay": 0.01},
    {"lr": 0.02, "weight_decay": 0.1, "nesterov": True, "momentum": 0.5},
]

ADAM_CASES = [
    {},
    {"lr": 0.01, "weight_decay": 0.05},
    {"lr": 0.003, "betas": (0.5, 0.9), "eps": 1e-6},  # 1 - beta1 >= 0.5 branch
    {"lr": 0.01, "betas": (0.0, 0.0)},
]


@pytest.mark.parametrize(
    ("cls", "kwargs"),
    [(SGD, k) for k in SGD_CASES] + [(Adam, k) for k in ADAM_CASES],
)
def test_matches_torch_float64(torch, rng, cls, kwargs):
    layers = make_layers(rng)
    initial = [{k: v.copy() for k, v in layer.params.items()} for layer in layers]
    steps = gradient_sequence(rng, layers, steps=6)
    run_fastcnn(layers, cls(layers, **kwargs), steps)

    torch_cls = getattr(torch.optim, cls.__name__)
    expected = run_torch(torch, initial, torch_cls, kwargs, steps, torch.float64)
    for layer, want in zip(layers, expected, strict=True):
        for got, ref in zip(layer.params.values(), want, strict=True):
            np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize(
    ("cls", "kwargs"),
    [
        (SGD, {"lr": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 0.01}),
        (Adam, {"lr": 0.01, "weight_decay": 0.01}),
    ],
)
def test_float32_stays_float32(torch, rng, cls, kwargs):
    layers = make_layers(rng, np.float32)
    initial = [{k: v.copy() for k, v in layer.params.items()} for layer in layers]
    params_before = [p for layer in layers for p in layer.params.values()]
    steps = gradient_sequence(rng, layers, steps=4)
    optimizer = cls(layers, **kwargs)
    run_fastcnn(layers, optimizer, steps)

    for layer in layers:
        for param in layer.params.values():
            assert param.dtype == np.float32
    for entry in optimizer.state.values():
        for value in entry.values():
            if isinstance(value, np.ndarray):
                assert value.dtype == np.float32
    # Updated in place: the layers still hold the same arrays.
    assert all(
        a is b
        for a, b in zip(
            params_before,
            [p for layer in layers for p in layer.params.values()],
            strict=True,
        )
    )
    torch_cls = getattr(torch.optim, cls.__name__)
    expected = run_torch(torch, initial, torch_cls, kwargs, steps, torch.float32)
    for layer, want in zip(layers, expected, strict=True):
        for got, ref in zip(layer.params.values(), want, strict=True):
            np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)


def test_sgd_first_momentum_step_is_plain_gradient(rng):
    layer = ParamLayer({"w": (5,)}, rng)
    start = layer.params["w"].copy()
    grad = rng.standard_normal(5)
    layer.grads = {"w": grad}
    opt = SGD([layer], lr=0.5, momentum=0.9, dampening=0.5)
    opt.step()
    # The buffer starts as the gradient itself, undamped.
    np.testing.assert_array_equal(opt.state["layer0.w"]["momentum_buffer"], grad)
    np.testing.assert_array_equal(layer.params["w"], start - 0.5 * grad)


def test_adam_counts_one_step_per_call(rng):
    layers = make_layers(rng)
    opt = Adam(layers)
    for _ in range(3):
        for layer in layers:
            layer.grads = {k: np.ones_like(v) for k, v in layer.params.items()}
        opt.step()
    assert {entry["step"] for entry in opt.state.values()} == {3}
    assert sorted(opt.state) == ["layer0.bias", "layer0.weight", "layer2.weight"]


def test_parameters_without_gradient_are_skipped(rng):
    layers = make_layers(rng)
    before = layers[2].params["weight"].copy()
    layers[0].grads = {k: np.ones_like(v) for k, v in layers[0].params.items()}
    opt = Adam(layers, lr=0.1)
    opt.step()
    np.testing.assert_array_equal(layers[2].params["weight"], before)
    assert "layer2.weight" not in opt.state
    assert not np.array_equal(layers[0].params["bias"], 0)


def test_zero_grad_clears_every_layer(rng):
    layers = make_layers(rng)
    for layer in layers:
        layer.grads = {k: np.ones_like(v) for k, v in layer.params.items()}
    opt = SGD(layers, lr=1.0)
    opt.zero_grad()
    before = [p.copy() for layer in layers for p in layer.params.values()]
    opt.step()
    after = [p for layer in layers for p in layer.params.values()]
    assert all(layer.grads == {} for layer in layers)
    assert all(np.array_equal(a, b) for a, b in zip(before, after, strict=True))


def test_replaced_parameter_array_is_updated(rng):
    layer = ParamLayer({"w": (3,)}, rng)
    opt = SGD([layer], lr=1.0)
    layer.params["w"] = np.zeros(3)
    layer.grads = {"w": np.ones(3)}
    opt.step()
    np.testing.assert_array_equal(layer.params["w"], -np.ones(3))


@pytest.mark.parametrize(
    ("cls", "kwargs"),
    [(SGD, {"lr": 0.1, "momentum": 0.9}), (Adam, {"lr": 0.01, "betas": (0.8, 0.99)})],
)
def test_state_dict_round_trip_resumes_bit_identically(cls, kwargs):
    steps = gradient_sequence(
        np.random.default_rng(5), make_layers(np.random.default_rng(1)), steps=5
    )
    straight = make_layers(np.random.default_rng(1))
    opt = cls(straight, **kwargs)
    run_fastcnn(straight, opt, steps[:3])
    checkpoint = opt.state_dict()
    at_checkpoint = [{k: v.copy() for k, v in la.params.items()} for la in straight]
    run_fastcnn(straight, opt, steps[3:])

    resumed_layers = make_layers(np.random.default_rng(2))
    for layer, params in zip(resumed_layers, at_checkpoint, strict=True):
        layer.params = params
    resumed = cls(resumed_layers, lr=0.5)  # hyperparameters come from the state
    resumed.load_state_dict(checkpoint)
    assert resumed.hyperparameters() == opt.hyperparameters()
    run_fastcnn(resumed_layers, resumed, steps[3:])
    for a, b in zip(straight, resumed_layers, strict=True):
        for k in a.params:
            np.testing.assert_array_equal(a.params[k], b.params[k])


def test_state_dict_is_a_copy(rng):
    layers = make_layers(rng)
    opt = SGD(layers, lr=0.1, momentum=0.9)
    for layer in layers:
        layer.grads = {k: np.ones_like(v) for k, v in layer.params.items()}
    opt.step()
    saved = opt.state_dict()
    buf = saved["state"]["layer0.weight"]["momentum_buffer"].copy()
    opt.step()
    np.testing.assert_array_equal(
        saved["state"]["layer0.weight"]["momentum_buffer"], buf
    )


def test_load_state_dict_casts_to_parameter_dtype(rng):
    layers = make_layers(rng, np.float32)
    opt = Adam(layers)
    state = {
        "class": "Adam",
        "hyperparameters": {
            "lr": 0.1,
            "betas": [0.9, 0.99],
            "eps": 1e-7,
            "weight_decay": 0.0,
        },
        "state": {
            "layer2.weight": {
                "step": 4,
                "exp_avg": np.ones((2, 3)),
                "exp_avg_sq": np.ones((2, 3)),
            }
        },
    }
    opt.load_state_dict(state)
    assert opt.betas == (0.9, 0.99)
    assert opt.state["layer2.weight"]["exp_avg"].dtype == np.float32
    assert opt.state["layer2.weight"]["step"] == 4


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda s: s.update({"class": "SGD"}), "for a SGD optimiser"),
        (lambda s: s["state"].update({"layer9.weight": {}}), "layer9.weight"),
        (
            lambda s: s["state"]["layer0.bias"].update({"exp_avg": np.ones(7)}),
            r"shape \(3,\)",
        ),
        (lambda s: s["state"]["layer0.bias"].pop("step"), "entries"),
        (lambda s: s["state"]["layer0.bias"].update({"step": 1.5}), "must be an int"),
        (lambda s: s["hyperparameters"].update({"eps": 0.0}), "eps"),
        (lambda s: s["hyperparameters"].update({"momentum": 0.9}), "hyperparameters"),
        (lambda s: s.pop("state"), "'state'"),
    ],
)
def test_load_state_dict_rejects_bad_state(rng, mutate, match):
    layers = make_layers(rng)
    opt = Adam(layers)
    for layer in layers:
        layer.grads = {k: np.ones_like(v) for k, v in layer.params.items()}
    opt.step()
    state = opt.state_dict()
    mutate(state)
    before = opt.state_dict()
    with pytest.raises(ValueError, match=match):
        opt.load_state_dict(state)
    # Nothing changed.
    assert opt.hyperparameters() == before["hyperparameters"]
    np.testing.assert_array_equal(
        opt.state["layer0.bias"]["exp_avg"], before["state"]["layer0.bias"]["exp_avg"]
    )


@pytest.mark.parametrize(
    ("cls", "kwargs", "error", "match"),
    [
        (SGD, {"lr": -0.1}, ValueError, "lr must be >= 0"),
        (SGD, {"lr": "0.1"}, TypeError, "lr"),
        (SGD, {"lr": 0.1, "momentum": -0.5}, ValueError, "momentum"),
        (SGD, {"lr": 0.1, "weight_decay": -1.0}, ValueError, "weight_decay"),
        (SGD, {"lr": 0.1, "nesterov": True}, ValueError, "nesterov=True requires"),
        (
            SGD,
            {"lr": 0.1, "momentum": 0.9, "dampening": 0.1, "nesterov": True},
            ValueError,
            "dampening == 0",
        ),
        (SGD, {"lr": 0.1, "nesterov": 1}, TypeError, "nesterov"),
        (Adam, {"lr": float("nan")}, ValueError, "lr must be finite"),
        (Adam, {"betas": (1.0, 0.9)}, ValueError, r"betas\[0\] must be < 1"),
        (Adam, {"betas": (0.9, -0.1)}, ValueError, r"betas\[1\] must be >= 0"),
        (Adam, {"betas": 0.9}, TypeError, "betas"),
        (Adam, {"eps": 0.0}, ValueError, "eps must be > 0"),
        (Adam, {"weight_decay": -1e-3}, ValueError, "weight_decay"),
    ],
)
def test_invalid_hyperparameters(rng, cls, kwargs, error, match):
    with pytest.raises(error, match=match):
        cls(make_layers(rng), **kwargs)


def test_lr_can_be_changed_and_is_checked(rng):
    layer = ParamLayer({"w": (2,)}, rng)
    opt = SGD([layer], lr=0.1)
    opt.lr = 0.5
    layer.params["w"][...] = 0.0
    layer.grads = {"w": np.ones(2)}
    opt.step()
    np.testing.assert_array_equal(layer.params["w"], [-0.5, -0.5])
    with pytest.raises(ValueError, match="lr"):
        opt.lr = -1.0


def test_invalid_model(rng):
    layer = ParamLayer({"w": (2,)}, rng)
    with pytest.raises(TypeError, match=r"model\[1\] must be a Layer"):
        SGD([layer, "relu"], lr=0.1)
    with pytest.raises(TypeError, match="model must be"):
        SGD(42, lr=0.1)
    with pytest.raises(ValueError, match="more than once"):
        SGD([layer, layer], lr=0.1)
    # A single layer is accepted.
    assert SGD(layer, lr=0.1).parameter_keys() == ["layer0.w"]


def test_an_empty_parameter_list_is_refused(rng):
    # As torch.optim: an optimiser with nothing to update is a mistake.
    for model in ([], [Layer(), Layer()]):
        for make in (lambda m: SGD(m, lr=0.1), Adam):
            with pytest.raises(ValueError, match="empty parameter list"):
                make(model)
    # One parameter anywhere is enough.
    SGD([Layer(), ParamLayer({"w": (1,)}, rng)], lr=0.1)


# The hyper-parameters each optimiser casts to the parameters' dtype.
CAST_HYPERPARAMETERS = [
    (SGD, "lr", {}),
    (SGD, "momentum", {"lr": 0.1}),
    (SGD, "dampening", {"lr": 0.1}),
    (SGD, "weight_decay", {"lr": 0.1}),
    (Adam, "lr", {}),
    (Adam, "eps", {}),
    (Adam, "weight_decay", {}),
]


@pytest.mark.parametrize(("cls", "name", "kwargs"), CAST_HYPERPARAMETERS)
def test_hyperparameters_that_overflow_float32_parameters_are_refused(
    rng, cls, name, kwargs
):
    float32 = make_layers(rng, np.float32)
    largest = float(np.finfo(np.float32).max)
    too_large = 2.0**128 - 2.0**103  # the smallest value float32 rounds to inf
    with pytest.raises(ValueError, match=rf"{name}=.* overflows float32"):
        cls(float32, **kwargs, **{name: too_large})
    # The largest float32 fits; float64 parameters keep the float64 range.
    cls(float32, **kwargs, **{name: largest})
    cls(make_layers(rng, np.float64), **kwargs, **{name: 1e300})


def test_one_float32_parameter_limits_the_hyperparameters(rng):
    layers = [*make_layers(rng, np.float64), ParamLayer({"w": (2,)}, rng, np.float32)]
    with pytest.raises(ValueError, match="overflows float32"):
        SGD(layers, lr=1e300)


def test_load_state_dict_refuses_a_learning_rate_that_overflows(rng):
    layers = make_layers(rng, np.float32)
    optimizer = SGD(layers, lr=0.1)
    saved = optimizer.state_dict()
    saved["hyperparameters"]["lr"] = 1e300
    with pytest.raises(ValueError, match=r"lr=1e\+300 overflows float32"):
        optimizer.load_state_dict(saved)
    assert optimizer.lr == 0.1


def test_gradient_of_wrong_shape(rng):
    layer = ParamLayer({"w": (2, 3)}, rng)
    layer.grads = {"w": np.ones((3, 2))}
    with pytest.raises(
        ValueError, match=r"layer0.w must be an array of shape \(2, 3\)"
    ):
        SGD([layer], lr=0.1).step()


# ------------------------------------------------------------ the SGD kernel


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kwargs", SGD_CASES)
def test_sgd_kernel_matches_the_reference_over_steps(rng, dtype, kwargs):
    layers = make_layers(rng, dtype)
    steps = gradient_sequence(rng, layers, steps=4)
    expected = [
        {k: v.astype(np.float64) for k, v in ly.params.items()} for ly in layers
    ]
    buffers: list[dict] = [{} for _ in layers]
    hyper = {"momentum": 0.0, **kwargs}
    for grads in steps:
        for i, layer_grads in enumerate(grads):
            for name, grad in layer_grads.items():
                expected[i][name], buffers[i][name] = sgd_step(
                    expected[i][name], grad, buffers[i].get(name), **hyper
                )
    run_fastcnn(layers, SGD(layers, **kwargs), steps)

    for layer, want in zip(layers, expected, strict=True):
        for name, param in layer.params.items():
            assert param.dtype == dtype
            assert_close(param, want[name].astype(dtype), dtype=dtype)


def test_sgd_updates_a_parameter_that_is_not_contiguous(rng):
    layers = make_layers(rng)
    layer = layers[0]
    name = next(iter(layer.params))
    strided = np.asfortranarray(layer.params[name])
    if strided.ndim < 2:
        pytest.skip("needs a parameter of at least two dimensions")
    layer.params[name] = strided
    before = strided.copy()
    grad = rng.standard_normal(strided.shape)
    layer.grads = {name: grad}
    SGD(layers, lr=0.5).step()
    np.testing.assert_allclose(layer.params[name], before - 0.5 * grad, rtol=1e-15)
