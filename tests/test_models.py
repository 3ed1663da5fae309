"""Tests for fastcnn.models.Sequential: forward/backward, fit, evaluate, predict."""

from __future__ import annotations

import math
import sys

import numpy as np
import pytest

from fastcnn.layers import (
    AvgPool2D,
    Conv2D,
    Dense,
    Dropout,
    Flatten,
    MaxPool2D,
    ReLU,
    SoftmaxCrossEntropy,
    Tanh,
)
from fastcnn.losses import CrossEntropyLoss, MSELoss
from fastcnn.models import History, NonFiniteLossError, Sequential
from fastcnn.optim import SGD, Adam

N_CLASSES = 3


def make_data(seed: int = 0, n: int = 96) -> tuple[np.ndarray, np.ndarray]:
    """Three well-separated Gaussian blobs in 4 dimensions."""
    rng = np.random.default_rng(seed)
    centers = 3.0 * np.eye(N_CLASSES, 4)
    y = rng.integers(0, N_CLASSES, size=n)
    x = centers[y] + 0.5 * rng.standard_normal((n, 4))
    return x.astype(np.float32), y


def make_model(dtype=np.float32, dropout: float | None = None) -> Sequential:
    layers = [Dense(4, 16, dtype=dtype, rng=0), ReLU()]
    if dropout is not None:
        layers.append(Dropout(dropout, rng=7))
    layers.append(Dense(16, N_CLASSES, dtype=dtype, rng=1))
    return Sequential(layers)


def params_of(model: Sequential) -> dict[str, np.ndarray]:
    return {k: v.copy() for k, v in model.params.items()}


def assert_same_params(a: Sequential, b: Sequential) -> None:
    pa, pb = a.params, b.params
    assert pa.keys() == pb.keys()
    for key in pa:
        np.testing.assert_array_equal(pa[key], pb[key], err_msg=key)


# ----------------------------------------------------------------------
# Container, forward and backward


def test_forward_and_backward_chain_the_layers(rng):
    model = make_model(np.float64)
    x = rng.standard_normal((5, 4))
    expected = x
    for layer in model.layers:
        expected = layer.forward(expected)
    out = model(x)
    np.testing.assert_array_equal(out, expected)

    grad = rng.standard_normal(out.shape)
    expected_grad = grad
    for layer in reversed(model.layers):
        expected_grad = layer.backward(expected_grad)
    layer_grads = {k: v.copy() for k, v in model.grads.items()}
    model.forward(x)
    np.testing.assert_array_equal(model.backward(grad), expected_grad)
    assert model.grads.keys() == layer_grads.keys() == model.params.keys()
    for key in layer_grads:
        np.testing.assert_array_equal(model.grads[key], layer_grads[key])


def test_forward_converts_input_to_the_model_dtype(rng):
    model64 = make_model(np.float64)
    assert model64.dtype == np.float64
    assert model64(rng.standard_normal((2, 4)).astype(np.float32)).dtype == np.float64
    model32 = make_model(np.float32)
    assert model32(rng.integers(0, 5, (2, 4))).dtype == np.float32
    with pytest.raises(TypeError, match=r"x must be a numpy\.ndarray"):
        model32([[1.0, 2.0, 3.0, 4.0]])


def test_backward_with_learning_rate_takes_a_plain_sgd_step(rng):
    model = make_model(np.float64)
    before = params_of(model)
    out = model(rng.standard_normal((3, 4)))
    model.backward(np.ones_like(out), learning_rate=0.1)
    for key, grad in model.grads.items():
        np.testing.assert_array_equal(model.params[key], before[key] - 0.1 * grad)


def test_container_helpers():
    model = make_model(dropout=0.5)
    assert len(model) == 4
    assert isinstance(model[2], Dropout)
    assert list(model) == model.layers
    assert list(model.params) == [
        "layer0.weight",
        "layer0.bias",
        "layer3.weight",
        "layer3.bias",
    ]
    assert model.num_parameters() == 4 * 16 + 16 + 16 * 3 + 3
    assert model.eval() is model and not any(layer.training for layer in model)
    assert all(layer.training for layer in model.train())
    assert "Dense(in_features=4" in repr(model)
    assert SGD(model, lr=0.1).parameter_keys() == list(model.params)


@pytest.mark.parametrize(
    ("layers", "error", "match"),
    [
        ([], ValueError, "at least one Layer"),
        ([ReLU(), "tanh"], TypeError, r"layers\[1\] must be a Layer"),
        (ReLU(), TypeError, "layers must be a list"),
    ],
)
def test_constructor_errors(layers, error, match):
    with pytest.raises(error, match=match):
        Sequential(layers)


def test_the_same_layer_twice_is_refused():
    relu = ReLU()
    with pytest.raises(ValueError, match="twice"):
        Sequential([relu, relu])


# ----------------------------------------------------------------------
# Training


def test_fit_learns_a_separable_problem():
    x, y = make_data()
    model = make_model()
    loss_before, accuracy_before = model.evaluate(x, y)
    optimizer = SGD(model, lr=0.1, momentum=0.9)
    history = model.fit(
        x, y, epochs=8, batch_size=16, optimizer=optimizer, seed=0, verbose=0
    )
    loss_after, accuracy_after = model.evaluate(x, y)

    assert isinstance(history, History)
    assert history.epoch == list(range(8))
    assert set(history) == {"loss", "accuracy"}
    assert len(history["loss"]) == len(history["accuracy"]) == 8
    assert history["loss"][-1] < history["loss"][0]
    assert accuracy_before < 0.7
    assert accuracy_after >= 0.95
    assert loss_after < 0.5 * loss_before
    for param in model.params.values():
        assert param.dtype == np.float32


def test_fit_default_optimizer_is_sgd_with_lr_0_01():
    x, y = make_data(n=20)
    a, b = make_model(np.float64), make_model(np.float64)
    a.fit(x, y, epochs=2, batch_size=8, seed=1, verbose=0)
    b.fit(x, y, epochs=2, batch_size=8, seed=1, verbose=0, optimizer=SGD(b, lr=0.01))
    assert_same_params(a, b)
    assert not np.array_equal(
        a.params["layer0.weight"], make_model().params["layer0.weight"]
    )


def test_same_seed_gives_bit_identical_parameters():
    x, y = make_data()
    runs = []
    for seed in (3, 3, 4):
        model = make_model(dropout=0.2)
        model.fit(
            x,
            y,
            epochs=3,
            batch_size=10,
            optimizer=Adam(model, lr=0.01),
            seed=seed,
            verbose=0,
        )
        runs.append(model)
    assert_same_params(runs[0], runs[1])
    assert not np.array_equal(
        runs[0].params["layer0.weight"], runs[2].params["layer0.weight"]
    )


def test_fit_without_shuffle_is_the_plain_minibatch_loop():
    x, y = make_data(n=20)
    model, manual = make_model(np.float64), make_model(np.float64)
    model.fit(
        x,
        y,
        epochs=2,
        batch_size=8,
        shuffle=False,
        optimizer=SGD(model, lr=0.05, momentum=0.5),
        verbose=0,
    )
    optimizer, loss = SGD(manual, lr=0.05, momentum=0.5), CrossEntropyLoss()
    for _ in range(2):
        for start in range(0, 20, 8):
            out = manual.forward(x[start : start + 8])
            loss.forward(out, y[start : start + 8])
            manual.backward(loss.backward())
            optimizer.step()
    assert_same_params(model, manual)


def test_resuming_at_initial_epoch_equals_training_straight_through():
    x, y = make_data()
    straight = make_model(dropout=0.3)
    straight.fit(
        x,
        y,
        epochs=4,
        batch_size=16,
        optimizer=SGD(straight, lr=0.05, momentum=0.9),
        seed=11,
        verbose=0,
    )
    resumed = make_model(dropout=0.3)
    optimizer = SGD(resumed, lr=0.05, momentum=0.9)
    first = resumed.fit(
        x, y, epochs=2, batch_size=16, optimizer=optimizer, seed=11, verbose=0
    )
    second = resumed.fit(
        x,
        y,
        epochs=4,
        batch_size=16,
        optimizer=optimizer,
        seed=11,
        verbose=0,
        initial_epoch=2,
    )
    assert first.epoch == [0, 1] and second.epoch == [2, 3]
    assert_same_params(straight, resumed)


def test_fit_with_validation_data():
    x, y = make_data(n=60)
    x_val, y_val = make_data(seed=1, n=30)
    model = make_model()
    history = model.fit(
        x,
        y,
        epochs=2,
        optimizer=SGD(model, lr=0.1),
        seed=0,
        verbose=0,
        validation_data=(x_val, y_val),
    )
    assert set(history) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert history["val_loss"][-1] == pytest.approx(model.evaluate(x_val, y_val)[0])
    assert history["val_accuracy"][-1] == model.evaluate(x_val, y_val)[1]
    assert all(layer.training for layer in model)


def test_fit_with_softmax_cross_entropy_output_layer():
    x, y = make_data()
    model = Sequential([*make_model().layers, SoftmaxCrossEntropy()])
    model.fit(
        x,
        y,
        epochs=8,
        batch_size=16,
        optimizer=SGD(model, lr=0.1, momentum=0.9),
        seed=0,
        verbose=0,
    )
    probabilities = model.predict(x)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    loss, accuracy = model.evaluate(x, y)
    assert accuracy >= 0.95
    logits = Sequential(model.layers[:-1]).predict(x)
    assert loss == pytest.approx(CrossEntropyLoss()(logits, y), rel=1e-5)


def test_fit_with_mse_and_one_hot_targets():
    x, y = make_data()
    one_hot = np.eye(N_CLASSES)[y]
    model = Sequential([Dense(4, 16, rng=0), Tanh(), Dense(16, N_CLASSES, rng=1)])
    history = model.fit(
        x,
        one_hot,
        epochs=10,
        batch_size=16,
        loss=MSELoss(),
        optimizer=SGD(model, lr=0.1, momentum=0.9),
        seed=0,
        verbose=0,
    )
    assert history["loss"][-1] < history["loss"][0]
    assert model.evaluate(x, one_hot, loss=MSELoss())[1] >= 0.9


def test_one_hot_and_index_targets_give_the_same_accuracy():
    x, y = make_data(n=40)
    model = make_model()
    _, by_index = model.evaluate(x, y)
    _, by_one_hot = model.evaluate(x, np.eye(N_CLASSES, dtype=np.float32)[y])
    assert by_index == by_one_hot


class _LossThatFailsAtCall(CrossEntropyLoss):
    def __init__(self, call: int, value: float) -> None:
        super().__init__()
        self.calls, self.fail_at, self.value = 0, call, value

    def forward(self, prediction, target):
        self.calls += 1
        loss = super().forward(prediction, target)
        return self.value if self.calls == self.fail_at else loss


def test_non_finite_loss_names_epoch_and_step():
    x, y = make_data(n=12)
    model = make_model()
    with pytest.raises(FloatingPointError, match=r"inf at epoch 2, step 2"):
        model.fit(
            x,
            y,
            epochs=3,
            batch_size=4,
            loss=_LossThatFailsAtCall(5, math.inf),
            verbose=0,
            seed=0,
        )


def test_nan_in_the_data_stops_training():
    x, y = make_data(n=12)
    x[9, 0] = np.nan
    model = make_model()
    before = params_of(model)
    with pytest.raises(NonFiniteLossError, match="nan at epoch 1, step 3") as info:
        model.fit(x, y, epochs=2, batch_size=4, shuffle=False, verbose=0)
    assert (info.value.epoch, info.value.step) == (1, 3)
    # The failing step did not update the parameters with NaN gradients.
    for key, value in model.params.items():
        assert np.all(np.isfinite(value)), key
    assert not np.array_equal(model.params["layer0.weight"], before["layer0.weight"])


# ----------------------------------------------------------------------
# Inference


def test_predict_batches_in_eval_mode_and_restores_modes():
    x, _ = make_data(n=50)
    model = make_model(dropout=0.5)
    model.layers[0].eval()  # a mixed state, restored afterwards
    outputs = model.predict(x, batch_size=16)
    assert outputs.shape == (50, N_CLASSES)
    assert [layer.training for layer in model] == [False, True, True, True]
    without_dropout = Sequential([model[0], model[1], model[3]])
    np.testing.assert_array_equal(outputs, without_dropout.predict(x, batch_size=50))


def test_evaluate_matches_the_whole_set_loss_and_accuracy():
    x, y = make_data(n=50)
    model = make_model(np.float64)
    loss, accuracy = model.evaluate(x, y, batch_size=7)
    logits = model.predict(x)
    assert loss == pytest.approx(CrossEntropyLoss()(logits, y), rel=1e-12)
    assert accuracy == np.mean(np.argmax(logits, axis=1) == y)


def test_outputs_holding_nan_count_as_wrong_predictions():
    # argmax would pick the first NaN's class; a NaN row predicts nothing.
    x, y = make_data(n=40)
    model = make_model(np.float64)
    _, accuracy = model.evaluate(x, y)
    assert accuracy > 0
    x_nan = x.copy()
    x_nan[::2] = np.nan
    loss, accuracy_nan = model.evaluate(x_nan, y)
    logits = model.predict(x[1::2])
    assert math.isnan(loss)
    assert accuracy_nan == np.sum(np.argmax(logits, axis=1) == y[1::2]) / len(x)


def test_accuracy_is_nan_for_single_output_models():
    x, _ = make_data(n=10)
    model = Sequential([Dense(4, 1, rng=0)])
    loss, accuracy = model.evaluate(x, np.zeros((10, 1)), loss=MSELoss())
    assert math.isfinite(loss) and math.isnan(accuracy)


# ----------------------------------------------------------------------
# Argument checks


@pytest.mark.parametrize(
    ("change", "error", "match"),
    [
        (
            {"y": np.zeros(5, dtype=int)},
            ValueError,
            r"one entry per sample of x \(96\)",
        ),
        (
            {"x": np.zeros((0, 4)), "y": np.zeros(0, dtype=int)},
            ValueError,
            "at least one sample",
        ),
        ({"x": np.zeros(96)}, ValueError, "at least 2-d"),
        ({"x": np.zeros((96, 5))}, ValueError, "per-sample shape"),
        ({"x": np.zeros((96, 4), dtype=complex)}, TypeError, "real numeric"),
        ({"y": list(range(96))}, TypeError, "y must be a numpy.ndarray"),
        ({"y": np.full(96, 3)}, ValueError, r"class index 3, outside \[0, 3\)"),
        ({"y": np.full(96, -1)}, ValueError, "class index -1"),
        ({"y": np.zeros((96, 4))}, ValueError, r"shape \(96, 3\)"),
        ({"y": np.zeros(96, dtype=bool)}, TypeError, "integer class indices"),
        ({"epochs": 0}, ValueError, "epochs must be >= 1"),
        ({"epochs": 2, "initial_epoch": 3}, ValueError, "initial_epoch must be <="),
        ({"batch_size": 0}, ValueError, "batch_size"),
        ({"batch_size": 2.0}, TypeError, "batch_size"),
        ({"seed": -1}, ValueError, "seed"),
        ({"verbose": 2}, ValueError, "verbose"),
        ({"shuffle": "yes"}, TypeError, "shuffle"),
        ({"loss": "mse"}, TypeError, "loss must be a loss object"),
        (
            {"loss": CrossEntropyLoss(reduction="none")},
            ValueError,
            "reduce to a scalar",
        ),
        ({"optimizer": "sgd"}, TypeError, "optimizer must be"),
        ({"validation_data": np.zeros((3, 4))}, TypeError, "validation_data must be"),
        (
            {"validation_data": (np.zeros((3, 4)), np.array([0, 1, 5]))},
            ValueError,
            r"validation_data\[1\] holds class index 5",
        ),
    ],
)
def test_fit_argument_errors(change, error, match):
    x, y = make_data()
    model = make_model()
    before = params_of(model)
    arguments = {"x": x, "y": y, "verbose": 0, **change}
    with pytest.raises(error, match=match):
        model.fit(**arguments)
    for key, value in model.params.items():
        np.testing.assert_array_equal(value, before[key])


@pytest.mark.parametrize("loss_class", [CrossEntropyLoss, MSELoss])
@pytest.mark.parametrize("method", ["fit", "evaluate"])
def test_a_loss_class_instead_of_an_instance_is_refused_up_front(method, loss_class):
    # Guards against the class passing the forward/backward check (its methods
    # are plain functions) and failing inside the loop with a missing argument.
    x, y = make_data(n=8)
    model = make_model()
    before = params_of(model)
    arguments = {"verbose": 0} if method == "fit" else {}
    with pytest.raises(
        TypeError,
        match=rf"loss must be a loss object .* got the class {loss_class.__name__}; "
        rf"create one first: loss={loss_class.__name__}\(\)",
    ):
        getattr(model, method)(x, y, loss=loss_class, **arguments)
    for key, value in model.params.items():
        np.testing.assert_array_equal(value, before[key])


class _LossReturning(CrossEntropyLoss):
    """A cross-entropy whose forward returns ``value`` instead of the loss."""

    def __init__(self, value) -> None:
        super().__init__()
        self.value = value

    def forward(self, prediction, target):
        super().forward(prediction, target)
        return self.value


@pytest.mark.parametrize(
    ("value", "given"),
    [
        ("abc", "str 'abc'"),
        (np.zeros(3), r"an array of shape \(3,\)"),
        (None, "NoneType None"),
        (1 + 2j, r"complex \(1\+2j\)"),
        (np.array(1 + 0j), "dtype complex128"),
        (True, "bool True"),
    ],
)
@pytest.mark.parametrize("method", ["fit", "evaluate"])
def test_a_loss_returning_no_real_number_is_named(method, value, given):
    x, y = make_data(n=8)
    arguments = {"verbose": 0} if method == "fit" else {}
    with pytest.raises(
        TypeError, match=f"loss.forward must return the batch loss as a real .*{given}"
    ):
        getattr(make_model(), method)(x, y, loss=_LossReturning(value), **arguments)


@pytest.mark.parametrize(
    "value", [0.5, 1, np.float32(0.5), np.int64(2), np.array(0.25), np.array(3)]
)
def test_a_loss_may_return_any_real_scalar(value):
    x, y = make_data(n=8)
    loss, _ = make_model().evaluate(x, y, loss=_LossReturning(value))
    assert loss == float(value)
    history = make_model().fit(x, y, loss=_LossReturning(value), verbose=0, seed=0)
    assert history["loss"] == [float(value)]


def test_float_class_indices_get_a_hint_to_convert_them():
    # The message must still say what float targets are taken as.
    x, y = make_data(n=8)
    with pytest.raises(
        ValueError,
        match=r"y of one-hot or probability rows must have shape \(8, 3\) .* got "
        r"\(8,\); if y holds class indices, convert them to integers first, e\.g\. "
        r"y\.astype\(np\.int64\)",
    ):
        make_model().fit(x, y.astype(np.float32), verbose=0)
    with pytest.raises(ValueError, match=r"validation_data\[1\]\.astype"):
        make_model().fit(x, y, validation_data=(x, y.astype(np.float64)), verbose=0)
    # A 2-d float target of the wrong width gets no such hint.
    with pytest.raises(ValueError, match=r"got \(8, 4\)$"):
        make_model().evaluate(x, np.eye(4)[y])


def _cnn() -> Sequential:
    return Sequential([Conv2D(1, 2, 3, rng=0), Flatten(), Dense(8, 3, rng=0)])


def test_an_unbatched_sample_is_described_in_terms_of_x():
    # Guards against the message speaking of an input_shape the caller never
    # passed (Layer.output_shape's argument).
    x = np.zeros((2, 1, 4, 4), np.float32)
    model = _cnn()
    with pytest.raises(ValueError) as info:
        model.predict(x[0])
    message = str(info.value)
    assert "input_shape" not in message
    assert message == (
        "x has per-sample shape (4, 4), which the model does not accept: layer 0 "
        "(Conv2D) takes samples of shape (C, H, W), so x must be (N, C, H, W), got "
        "3-d; if x is one sample, add the batch axis first, e.g. x[None]"
    )
    with pytest.raises(ValueError, match=r"x must be \(N, C, H, W\), got 2-d$"):
        model.predict(np.zeros((2, 16), np.float32))
    with pytest.raises(ValueError) as info:
        model.evaluate(x[0], np.array([0]))
    assert "input_shape" not in str(info.value)


def test_a_later_layer_refusing_the_rank_names_the_layer():
    model = Sequential([Dense(4, 4, rng=0), MaxPool2D(2)])
    with pytest.raises(ValueError) as info:
        model.predict(np.zeros((2, 4), np.float32))
    assert str(info.value) == (
        "x has per-sample shape (4,), which the model does not accept: layer 1 "
        "(MaxPool2D) takes samples of shape (C, H, W), but the layers before it give "
        "samples of shape (4,)"
    )


def test_layers_that_do_not_fit_together_are_named():
    model = Sequential([Conv2D(1, 4, 3, rng=0), Conv2D(3, 8, 3, rng=0)])
    with pytest.raises(ValueError) as info:
        model.predict(np.zeros((2, 1, 8, 8), np.float32))
    assert str(info.value) == (
        "x has per-sample shape (1, 8, 8), which the model does not accept: layer 1 "
        "(Conv2D) refuses the samples of shape (4, 6, 6) that the layers before it "
        "give: input must have 3 channels (axis -3), got 4"
    )
    with pytest.raises(ValueError, match=r"^layer 1 \(Conv2D\) refuses per-sample"):
        model.summary((1, 8, 8))
    with pytest.raises(ValueError, match=r"accept: layer 0 \(Conv2D\): input must"):
        model.predict(np.zeros((2, 2, 8, 8), np.float32))


def test_fit_refuses_an_optimizer_of_another_model():
    x, y = make_data(n=10)
    model, other = make_model(), make_model()
    with pytest.raises(ValueError, match="not this model's"):
        model.fit(x, y, optimizer=SGD(other, lr=0.1), verbose=0)
    # An optimiser on some of the model's layers is fine (the rest stays frozen).
    frozen = model.params["layer0.weight"].copy()
    model.fit(x, y, optimizer=SGD(model.layers[2:], lr=0.1), verbose=0, seed=0)
    np.testing.assert_array_equal(model.params["layer0.weight"], frozen)


def test_predict_and_evaluate_argument_errors():
    model = make_model()
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        model.predict(np.zeros((2, 4)), batch_size=0)
    with pytest.raises(TypeError, match=r"x must be a numpy\.ndarray"):
        model.predict([[0.0] * 4])
    with pytest.raises(ValueError, match="class index 7"):
        model.evaluate(np.zeros((2, 4)), np.array([0, 7]))


# ----------------------------------------------------------------------
# Progress and summary


def test_progress_bar_shows_loss_accuracy_and_throughput(capsys):
    pytest.importorskip("tqdm")
    x, y = make_data(n=32)
    make_model().fit(x, y, epochs=2, batch_size=8, seed=0, verbose=1)
    captured = capsys.readouterr()
    assert captured.out == ""
    for text in ("Epoch 1/2", "Epoch 2/2", "loss=", "accuracy=", "images/s="):
        assert text in captured.err


def test_verbose_0_is_silent(capsys):
    x, y = make_data(n=16)
    make_model().fit(x, y, epochs=1, seed=0, verbose=0)
    assert capsys.readouterr() == ("", "")


def test_training_without_tqdm_is_silent(capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "tqdm", None)  # import tqdm -> ImportError
    x, y = make_data(n=16)
    model = make_model()
    before = params_of(model)
    model.fit(x, y, epochs=1, seed=0, verbose=1)
    assert capsys.readouterr() == ("", "")
    assert not np.array_equal(model.params["layer0.weight"], before["layer0.weight"])


def test_summary_lists_shapes_and_parameter_counts():
    model = make_model(dropout=0.1)
    text = model.summary((4,))
    lines = text.splitlines()
    assert "Output shape" in lines[0] and "Parameters" in lines[0]
    assert any("Dense" in line and "(16,)" in line and "80" in line for line in lines)
    assert any("Dropout" in line and "(16,)" in line for line in lines)
    assert any("Dense" in line and "(3,)" in line and "51" in line for line in lines)
    assert lines[-1] == "Total parameters: 131"


def test_summary_remembers_the_last_input_shape():
    model = make_model()
    with pytest.raises(ValueError, match="summary needs input_shape"):
        model.summary()
    model.forward(np.zeros((2, 4), dtype=np.float32))
    assert model.summary() == model.summary((4,))


def test_summary_keeps_the_shape_of_the_last_accepted_forward():
    # Guards against a forward that a layer refused replacing the input shape
    # summary() reports, which then made summary() itself fail.
    model = make_model()
    model.forward(np.zeros((2, 4), dtype=np.float32))
    expected = model.summary()
    with pytest.raises(ValueError):
        model.forward(np.zeros((2, 5), dtype=np.float32))
    assert model.summary() == expected


def test_summary_needs_input_shape_after_a_refused_first_forward():
    model = make_model()
    with pytest.raises(ValueError):
        model.forward(np.zeros((2, 5), dtype=np.float32))
    with pytest.raises(ValueError, match="summary needs input_shape"):
        model.summary()


def test_summary_of_a_small_cnn():
    model = Sequential(
        [
            Conv2D(1, 4, 3, rng=0),
            ReLU(),
            MaxPool2D(2),
            Flatten(),
            Dense(36, N_CLASSES, rng=1),
        ]
    )
    rows = model.summary((1, 8, 8)).splitlines()
    assert "(1, 8, 8)" in rows[2]
    assert rows[3].split() == ["0", "Conv2D", "(4,", "6,", "6)", "40"]
    assert rows[5].split() == ["2", "MaxPool2D", "(4,", "3,", "3)", "0"]
    assert rows[6].split() == ["3", "Flatten", "(36,)", "0"]
    assert rows[7].split() == ["4", "Dense", "(3,)", "111"]
    assert rows[-1] == "Total parameters: 151"


# ----------------------------------------------------------------------
# Fused layers: a Conv2D followed by a ReLU is computed in one pass, and the
# ReLU's gradient before a max-pool is applied to the pooled gradient. Both must
# give exactly what the layers give one at a time.


def _layer_by_layer(model, x, grad):
    out = x
    for layer in model.layers:
        out = layer.forward(out).copy()
    for layer in reversed(model.layers):
        grad = layer.backward(grad).copy()
    grads = {k: v.copy() for k, v in model.grads.items()}
    return out, grad, grads


def _fusion_models(dtype):
    conv_pool = [
        Conv2D(2, 4, 3, padding=1, dtype=dtype, rng=1),
        ReLU(),
        MaxPool2D(2),
        Conv2D(4, 6, 5, padding=2, dtype=dtype, rng=2),  # matrix-product path
        ReLU(),
        MaxPool2D(2, stride=1),  # overlapping windows
        Flatten(),
        Dense(6 * 3 * 3, 5, dtype=dtype, rng=3),
    ]
    no_pool = [
        Conv2D(2, 3, 3, stride=2, dtype=dtype, rng=4),
        ReLU(),
        Flatten(),
        Dense(3 * 4 * 4, 4, dtype=dtype, rng=5),
        ReLU(),
    ]
    not_fused = [ReLU(), AvgPool2D(2), Conv2D(2, 2, 3, dtype=dtype, rng=6), ReLU()]
    return [conv_pool, no_pool, not_fused]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    ("which", "relu_forwards", "relu_backwards"), [(0, 0, 0), (1, 1, 2), (2, 1, 2)]
)
def test_fused_layers_give_the_bits_of_the_layers_one_at_a_time(
    rng, monkeypatch, dtype, which, relu_forwards, relu_backwards
):
    model = Sequential(_fusion_models(dtype)[which])
    x = rng.standard_normal((3, 2, 9, 9)).astype(dtype)
    x[0, 0, :3, :3] = 0.0  # zero windows: ties and exact zeros
    x[1, 1, 4, 4] = np.nan  # NaN through the ReLU and the pool
    out_shape = (3, *model.output_shape((2, 9, 9)))
    grad = rng.standard_normal(out_shape).astype(dtype)

    want_out, want_grad, want_params = _layer_by_layer(model, x, grad)
    calls = {"forward": 0, "backward": 0}
    for method in calls:
        original = getattr(ReLU, method)

        def counted(self, *args, _original=original, _method=method, **kwargs):
            calls[_method] += 1
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(ReLU, method, counted)
    out = model.forward(x)
    got_grad = model.backward(grad)
    # The fused paths were taken: ReLUs after a Conv2D ran no forward of their
    # own, ReLUs before a MaxPool2D no backward.
    assert (calls["forward"], calls["backward"]) == (relu_forwards, relu_backwards)

    np.testing.assert_array_equal(out, want_out)
    np.testing.assert_array_equal(got_grad, want_grad)
    assert model.grads.keys() == want_params.keys()
    for name, value in model.grads.items():
        np.testing.assert_array_equal(value, want_params[name], err_msg=name)
    assert np.isnan(out).any() or which == 2  # the NaN did reach the output


def test_fused_relu_layer_can_still_run_its_own_backward(rng):
    # After a fused forward the ReLU holds the convolution's output, so calling
    # its backward by hand gives its usual gradient.
    conv, relu = Conv2D(1, 2, 3, padding=1, rng=0), ReLU()
    model = Sequential([conv, relu])
    x = rng.standard_normal((2, 1, 5, 5)).astype(np.float32)
    y = model.forward(x)
    g = rng.standard_normal(y.shape).astype(np.float32)
    np.testing.assert_array_equal(relu.backward(g), np.where(y > 0, g, 0))
    assert (y >= 0).all()
