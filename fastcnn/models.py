"""The Sequential model: a stack of layers with a training loop.

``Sequential`` chains layers (``forward``/``backward``), trains them with
:meth:`Sequential.fit` (mini-batches, a loss from :mod:`fastcnn.losses`, an
optimiser from :mod:`fastcnn.optim`), evaluates and predicts in batches, prints
nothing (progress goes through tqdm when it is installed) and saves to one
``.npz`` file through :mod:`fastcnn.serialization`.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np

from fastcnn._validation import check_int
from fastcnn.functional._workspace import Workspace
from fastcnn.functional.activations import relu_backward
from fastcnn.layers._common import ParametrisedLayer, PerSampleRankError, check_flag
from fastcnn.layers.activations import ReLU
from fastcnn.layers.base import Layer, as_layer_input
from fastcnn.layers.conv import Conv2D
from fastcnn.layers.pooling import MaxPool2D
from fastcnn.layers.softmax import SoftmaxCrossEntropy
from fastcnn.losses import CrossEntropyLoss
from fastcnn.optim import SGD, Optimizer

__all__ = ["History", "NonFiniteLossError", "Sequential"]


class NonFiniteLossError(FloatingPointError):
    """Training stopped because a batch loss was NaN or infinite.

    Attributes
    ----------
    epoch : int
        The epoch, counted from 1 as the progress bar shows it (the 0-based
        index, as ``initial_epoch`` counts, is ``epoch - 1``).
    step : int
        The batch within the epoch, counted from 1.
    loss : float
        The non-finite loss.
    """

    def __init__(self, epoch: int, step: int, loss: float) -> None:
        super().__init__(
            f"the training loss became {loss} at epoch {epoch}, step {step}; "
            "lower the learning rate or check the data for NaN/inf"
        )
        self.epoch = epoch
        self.step = step
        self.loss = loss


class History(dict):
    """Per-epoch metrics returned by :meth:`Sequential.fit`.

    A dict of lists, one value per epoch trained: ``"loss"`` and ``"accuracy"``,
    plus ``"val_loss"`` and ``"val_accuracy"`` when validation data was given.
    ``epoch`` lists the 0-based epoch indices the values belong to.
    """

    def __init__(self, validation: bool = False) -> None:
        keys = ["loss", "accuracy"]
        if validation:
            keys += ["val_loss", "val_accuracy"]
        super().__init__({key: [] for key in keys})
        self.epoch: list[int] = []


class _OutputLayerLoss:
    """The loss of a final :class:`SoftmaxCrossEntropy` layer, as a loss object.

    Its ``backward`` returns the targets: that layer's ``backward`` takes them in
    place of an output gradient.
    """

    reduction = "mean"

    def __init__(self, layer: SoftmaxCrossEntropy) -> None:
        self.layer = layer
        self._target: np.ndarray | None = None

    def forward(self, prediction: np.ndarray, target: np.ndarray) -> float:
        self._target = target
        return self.layer.cross_entropy(target)

    def backward(self) -> np.ndarray:
        return self._target


def _count_correct(output: np.ndarray, y: np.ndarray) -> int | None:
    """Return how many argmax predictions match ``y``, or None if undefined.

    A row holding NaN predicts no class: it is never counted as correct.
    """
    if output.ndim != 2 or output.shape[1] < 2:
        return None
    if y.ndim == 1 and y.dtype.kind in "iu":
        target = y
    elif y.shape == output.shape:
        target = np.argmax(y, axis=1)
    else:
        return None
    hits = np.argmax(output, axis=1) == target
    hits &= ~np.isnan(output).any(axis=1)
    return int(np.count_nonzero(hits))


def _can_skip_input_gradient(layer: Layer) -> bool:
    """Whether ``layer.backward`` is one that takes ``input_gradient=False``."""
    return type(layer).backward is ParametrisedLayer.backward


def _check_batch_size(batch_size: Any) -> int:
    return check_int(batch_size, "batch_size", minimum=1)


def _loss_value(value: Any) -> float:
    """Return what a loss's ``forward`` gave as a float, or raise naming ``loss``.

    A real number is accepted: a Python or NumPy int or float, or a 0-d array of
    such a dtype. NaN and inf are returned as they are (training checks them).
    """
    if type(value) is float:
        return value
    if isinstance(value, np.ndarray) and value.ndim == 0:
        kind = value.dtype.kind
    elif isinstance(value, (np.integer, np.floating)):
        kind = np.dtype(type(value)).kind
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        kind = "f"
    else:
        kind = ""
    if kind not in ("f", "i", "u"):
        if isinstance(value, np.ndarray):
            given = f"an array of shape {value.shape} and dtype {value.dtype}"
        else:
            given = f"{type(value).__name__} {value!r:.60}"
        raise TypeError(
            "loss.forward must return the batch loss as a real number (a float), "
            f"got {given}"
        )
    return float(value)


def _rephrase_shape_error(
    error: Exception,
    index: int,
    layer: Layer,
    shape: tuple[int, ...],
    name: str,
    ndim: int,
) -> str:
    """Say why a layer refused the per-sample shape of the batch ``name``.

    ``Layer.output_shape`` speaks of its argument, ``input_shape``, which the
    caller of ``predict``, ``fit`` or ``evaluate`` never passed: a refusal of the
    number of dimensions is said again in terms of ``name`` and the layer.
    """
    where = f"layer {index} ({type(layer).__name__})"
    if not isinstance(error, PerSampleRankError):
        if index == 0:
            return f"{where}: {error}"
        return (
            f"{where} refuses the samples of shape {shape} that the layers before "
            f"it give: {error}"
        )
    layout = error.layout
    if index == 0:
        inner = layout.strip("()").rstrip(",")
        text = (
            f"{where} takes samples of shape {layout}, so {name} must be "
            f"({'N, ' + inner if inner else 'N'}), got {ndim}-d"
        )
        if ndim == error.ndim:
            text += (
                f"; if {name} is one sample, add the batch axis first, "
                f"e.g. {name}[None]"
            )
        return text
    return (
        f"{where} takes samples of shape {layout}, but the layers before it give "
        f"samples of shape {shape}"
    )


class Sequential:
    """Layers applied one after another.

    Parameters
    ----------
    layers : iterable of Layer
        The layers, first to last; at least one.

    Attributes
    ----------
    layers : list of Layer
        The layers, in order.

    Notes
    -----
    Inputs are batched: the first axis counts the samples. The model's
    parameters are named ``"layer{i}.{name}"``, ``i`` the layer's position.
    When the last layer is :class:`~fastcnn.layers.SoftmaxCrossEntropy`, the
    model outputs probabilities, :meth:`backward` takes the targets (that
    layer's convention) and :meth:`fit`/:meth:`evaluate` use its loss by default.

    Each layer without a :attr:`~fastcnn.layers.base.Layer.workspace` is given
    one, so that a layer reuses its outputs, gradients and scratch arrays from
    batch to batch instead of allocating them anew. What the model itself
    returns (:meth:`forward`'s output, :meth:`backward`'s input gradient) is a
    copy, never overwritten later; the outputs of the layers inside it are.
    """

    def __init__(self, layers: Iterable[Layer]) -> None:
        if isinstance(layers, Layer) or not isinstance(layers, Iterable):
            raise TypeError(
                f"layers must be a list of Layer objects, got {type(layers).__name__}"
            )
        layers = list(layers)
        if not layers:
            raise ValueError("layers must hold at least one Layer, got an empty list")
        for i, layer in enumerate(layers):
            if not isinstance(layer, Layer):
                raise TypeError(
                    f"layers[{i}] must be a Layer, got {type(layer).__name__}"
                )
        if len({id(layer) for layer in layers}) != len(layers):
            raise ValueError("layers must not hold the same Layer object twice")
        for layer in layers:
            if getattr(layer, "workspace", None) is None:
                layer.workspace = Workspace()
        self.layers: list[Layer] = layers
        self._input_shape: tuple[int, ...] | None = None
        # Outputs of max-pool layers that follow a ReLU, by position, from the
        # last forward pass (see backward).
        self._relu_pool_outputs: dict[int, np.ndarray] = {}

    # ------------------------------------------------------------------
    # Container helpers

    def __len__(self) -> int:
        return len(self.layers)

    def __iter__(self) -> Iterator[Layer]:
        return iter(self.layers)

    def __getitem__(self, index: int) -> Layer:
        return self.layers[index]

    def __repr__(self) -> str:
        inner = "".join(f"\n    {layer!r}," for layer in self.layers)
        return f"Sequential([{inner}\n])"

    @property
    def dtype(self) -> np.dtype | None:
        """The dtype of the first layer with parameters (None if there is none)."""
        for layer in self.layers:
            for param in layer.params.values():
                return param.dtype
        return None

    @property
    def params(self) -> dict[str, np.ndarray]:
        """Every parameter, keyed ``"layer{i}.{name}"`` (the arrays themselves)."""
        return {
            f"layer{i}.{name}": param
            for i, layer in enumerate(self.layers)
            for name, param in layer.params.items()
        }

    @property
    def grads(self) -> dict[str, np.ndarray]:
        """The gradients of the last backward, keyed like :attr:`params`."""
        return {
            f"layer{i}.{name}": grad
            for i, layer in enumerate(self.layers)
            for name, grad in layer.grads.items()
        }

    def num_parameters(self) -> int:
        """Return the number of trainable scalars."""
        return sum(layer.num_parameters() for layer in self.layers)

    def train(self, mode: bool = True) -> Sequential:
        """Put every layer in training mode (``True``) or evaluation mode."""
        for layer in self.layers:
            layer.train(mode)
        return self

    def eval(self) -> Sequential:
        """Put every layer in evaluation mode."""
        return self.train(False)

    def zero_grad(self) -> None:
        """Forget every layer's gradients."""
        for layer in self.layers:
            layer.zero_grad()

    # ------------------------------------------------------------------
    # Forward and backward

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Return the output of the last layer for a batch ``x``.

        Parameters
        ----------
        x : numpy.ndarray of shape (N, ...)
            The batch. It is converted to the dtype of the first layer with
            parameters (see :func:`~fastcnn.layers.base.as_layer_input`).

        Returns
        -------
        numpy.ndarray of shape (N, ...)
        """
        x = as_layer_input(x, "x", self.dtype)
        input_shape = x.shape[1:]
        layers = self.layers
        self._relu_pool_outputs = {}
        fused_relu = None
        for i, layer in enumerate(layers):
            if layer is fused_relu:
                # The convolution before it already applied it.
                layer._adopt_output(x)
                continue
            if type(layer) is Conv2D and i + 1 < len(layers):
                if type(layers[i + 1]) is ReLU:
                    fused_relu = layers[i + 1]
                    x = layer._forward(x, relu=True)
                    continue
            x = layer.forward(x)
            if type(layer) is MaxPool2D and i > 0 and type(layers[i - 1]) is ReLU:
                self._relu_pool_outputs[i] = x
        # Remembered for summary() only once every layer has accepted the input.
        self._input_shape = input_shape
        return x.copy()

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.forward(x)

    def backward(
        self,
        grad: np.ndarray,
        learning_rate: float | None = None,
        *,
        input_gradient: bool = True,
    ) -> np.ndarray | None:
        """Back-propagate ``grad`` through every layer, last to first.

        Parameters
        ----------
        grad : numpy.ndarray
            Gradient of the loss with respect to the last output (the targets
            when the last layer is a SoftmaxCrossEntropy).
        learning_rate : float, optional
            When given, every layer also takes a plain SGD step.
        input_gradient : bool, default True
            Whether to compute the gradient with respect to the model's input.
            Training does not need it: with False, the layers before the first
            layer with parameters are skipped, that layer computes only its
            parameter gradients, and None is returned.

        Returns
        -------
        numpy.ndarray or None
            Gradient with respect to the last forward's input (a copy), or None
            when ``input_gradient`` is False.
        """
        input_gradient = check_flag(input_gradient, "input_gradient")
        first = 0
        if not input_gradient:
            first = next(
                (i for i, layer in enumerate(self.layers) if layer.params),
                len(self.layers),
            )
        pooled = self._relu_pool_outputs
        i = len(self.layers) - 1
        while i >= first:
            layer = self.layers[i]
            if i == first and not input_gradient and _can_skip_input_gradient(layer):
                layer.backward(grad, learning_rate, input_gradient=False)
                return None
            if i in pooled and i - 1 >= first:
                # ReLU then max-pool: the pool routes each gradient to its
                # window's maximum, which is the pool's output, so the ReLU's
                # gradient applies to the pooled gradient, four times smaller.
                relu = self.layers[i - 1]
                grad = relu_backward(grad, pooled[i], workspace=relu.workspace)
                grad = layer.backward(grad, learning_rate)
                i -= 2
                continue
            grad = layer.backward(grad, learning_rate)
            i -= 1
        return grad.copy() if input_gradient else None

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        """Return the per-sample output shape for a per-sample ``input_shape``."""
        shape = tuple(input_shape)
        for layer in self.layers:
            shape = tuple(layer.output_shape(shape))
        return shape

    # ------------------------------------------------------------------
    # Batched inference

    def predict(self, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """Return the outputs for every sample of ``x``, in evaluation mode.

        Parameters
        ----------
        x : numpy.ndarray of shape (N, ...)
            The samples, ``N >= 1``, of a real numeric dtype; each sample must
            have a shape the model accepts (see :meth:`output_shape`).
        batch_size : int, default 256
            Samples per forward pass.

        Returns
        -------
        numpy.ndarray of shape (N, ...)
            The outputs of all batches, stacked. The layers' training/evaluation
            modes are restored afterwards.
        """
        x = self._check_x(x, "x")
        batch_size = _check_batch_size(batch_size)
        with _evaluation_mode(self):
            outputs = [
                self.forward(x[start : start + batch_size])
                for start in range(0, len(x), batch_size)
            ]
        return np.concatenate(outputs, axis=0)

    def evaluate(
        self,
        x: np.ndarray,
        y: np.ndarray,
        batch_size: int = 256,
        loss: Any = None,
    ) -> tuple[float, float]:
        """Return the loss and the accuracy on ``(x, y)``, in evaluation mode.

        Parameters
        ----------
        x : numpy.ndarray of shape (N, ...)
            The samples.
        y : numpy.ndarray of shape (N,) or (N, K)
            Class indices or one-hot/probability rows (or, with another loss,
            whatever that loss takes).
        batch_size : int, default 256
            Samples per forward pass.
        loss : Loss, optional
            Default: cross-entropy on the outputs as logits (the layer's own loss
            when the last layer is a SoftmaxCrossEntropy).

        Returns
        -------
        loss : float
            The batch losses averaged with the batch sizes as weights (for a
            ``"mean"`` loss, the mean over all samples).
        accuracy : float
            Fraction of samples whose output argmax matches the class (the argmax
            of ``y`` for 2-d targets); NaN when the outputs are not ``(N, K)``
            with ``K >= 2``.
        """
        x, y = self._check_xy(x, y, "x", "y", loss)
        batch_size = _check_batch_size(batch_size)
        criterion = self._criterion(loss)
        total_loss = 0.0
        correct: int | None = 0
        with _evaluation_mode(self):
            for start in range(0, len(x), batch_size):
                xb = x[start : start + batch_size]
                yb = y[start : start + batch_size]
                output = self.forward(xb)
                total_loss += _loss_value(criterion.forward(output, yb)) * len(xb)
                hits = _count_correct(output, yb)
                correct = None if correct is None or hits is None else correct + hits
        accuracy = math.nan if correct is None else correct / len(x)
        return total_loss / len(x), accuracy

    # ------------------------------------------------------------------
    # Training

    def fit(
        self,
        x: np.ndarray,
        y: np.ndarray,
        epochs: int = 1,
        batch_size: int = 32,
        loss: Any = None,
        optimizer: Optimizer | None = None,
        validation_data: tuple[np.ndarray, np.ndarray] | None = None,
        shuffle: bool = True,
        seed: int | None = None,
        verbose: int = 1,
        initial_epoch: int = 0,
    ) -> History:
        """Train on ``(x, y)`` with mini-batches.

        Parameters
        ----------
        x : numpy.ndarray of shape (N, ...)
            Training samples.
        y : numpy.ndarray of shape (N,) or (N, K)
            Class indices or one-hot/probability rows (or, with another loss,
            whatever that loss takes).
        epochs : int, default 1
            Index of the epoch to stop before: epochs ``initial_epoch`` to
            ``epochs - 1`` are trained.
        batch_size : int, default 32
            Samples per step; the last batch of an epoch may be smaller.
        loss : Loss, optional
            Default: :class:`~fastcnn.losses.CrossEntropyLoss` on the outputs as
            logits (the layer's own loss when the last layer is a
            SoftmaxCrossEntropy). Its reduction must be ``"mean"`` or ``"sum"``.
        optimizer : Optimizer, optional
            Built on this model's layers (or some of them). Default:
            ``SGD(model, lr=0.01)``.
        validation_data : tuple of numpy.ndarray, optional
            ``(x_val, y_val)``, evaluated after each epoch.
        shuffle : bool, default True
            Visit the samples in a new random order each epoch.
        seed : int, optional
            Seed of the shuffling: epoch ``e`` uses
            ``np.random.default_rng([seed, e])``, so a run resumed at
            ``initial_epoch`` (from a checkpoint) repeats the run trained
            straight through bit for bit. Without a seed the order is not
            reproducible.
        verbose : {0, 1}, default 1
            1 shows a progress bar per epoch (loss, accuracy, images/s) when
            tqdm is installed; 0 trains silently.
        initial_epoch : int, default 0
            Index of the first epoch to train (to resume a run).

        Returns
        -------
        History
            Per-epoch ``"loss"`` and ``"accuracy"`` (running values over the
            epoch's batches, in training mode) and, with validation data,
            ``"val_loss"`` and ``"val_accuracy"``.

        Raises
        ------
        NonFiniteLossError
            A FloatingPointError, when a batch loss is NaN or infinite; its
            message names the epoch and the step.
        """
        x, y = self._check_xy(x, y, "x", "y", loss)
        epochs = check_int(epochs, "epochs", minimum=1)
        initial_epoch = check_int(initial_epoch, "initial_epoch", minimum=0)
        if initial_epoch > epochs:
            raise ValueError(
                f"initial_epoch must be <= epochs ({epochs}), got {initial_epoch}"
            )
        batch_size = _check_batch_size(batch_size)
        if validation_data is not None:
            if not isinstance(validation_data, (tuple, list)) or (
                len(validation_data) != 2
            ):
                raise TypeError(
                    "validation_data must be a pair (x_val, y_val), got "
                    f"{type(validation_data).__name__}"
                )
            validation_data = self._check_xy(
                *validation_data, "validation_data[0]", "validation_data[1]", loss
            )
        if not isinstance(shuffle, (bool, np.bool_)):
            raise TypeError(f"shuffle must be a bool, got {type(shuffle).__name__}")
        if seed is None:
            seed = int(np.random.SeedSequence().entropy)
        else:
            seed = check_int(seed, "seed", minimum=0)
        if isinstance(verbose, (bool, np.bool_)):
            verbose = int(verbose)
        verbose = check_int(verbose, "verbose", minimum=0)
        if verbose > 1:
            raise ValueError(f"verbose must be 0 or 1, got {verbose}")
        criterion = self._criterion(loss)
        optimizer = self._check_optimizer(optimizer)

        history = History(validation=validation_data is not None)
        for epoch in range(initial_epoch, epochs):
            order = None
            if shuffle:
                order = np.random.default_rng([seed, epoch]).permutation(len(x))
            bar = _progress_bar(verbose, len(x), f"Epoch {epoch + 1}/{epochs}")
            try:
                epoch_loss, accuracy = self._train_epoch(
                    x, y, order, batch_size, criterion, optimizer, epoch, bar
                )
                history.epoch.append(epoch)
                history["loss"].append(epoch_loss)
                history["accuracy"].append(accuracy)
                if validation_data is not None:
                    val_loss, val_accuracy = self.evaluate(
                        *validation_data, batch_size=max(batch_size, 256), loss=loss
                    )
                    history["val_loss"].append(val_loss)
                    history["val_accuracy"].append(val_accuracy)
                    if bar is not None:
                        bar.set_postfix_str(
                            f"{bar.postfix}, val_loss={val_loss:.4f}, "
                            f"val_accuracy={val_accuracy:.4f}"
                        )
            finally:
                if bar is not None:
                    bar.close()
        return history

    def _train_epoch(
        self,
        x: np.ndarray,
        y: np.ndarray,
        order: np.ndarray | None,
        batch_size: int,
        criterion: Any,
        optimizer: Optimizer,
        epoch: int,
        bar: Any,
    ) -> tuple[float, float]:
        """Run one epoch; return its sample-weighted loss and accuracy."""
        self.train()
        total_loss = 0.0
        correct: int | None = 0
        seen = 0
        start_time = time.perf_counter()
        for step, start in enumerate(range(0, len(x), batch_size)):
            if order is None:
                xb = x[start : start + batch_size]
                yb = y[start : start + batch_size]
            else:
                index = order[start : start + batch_size]
                xb, yb = x[index], y[index]

            optimizer.zero_grad()
            output = self.forward(xb)
            batch_loss = _loss_value(criterion.forward(output, yb))
            if not math.isfinite(batch_loss):
                raise NonFiniteLossError(epoch + 1, step + 1, batch_loss)
            self.backward(criterion.backward(), input_gradient=False)
            optimizer.step()

            seen += len(xb)
            total_loss += batch_loss * len(xb)
            hits = _count_correct(output, yb)
            correct = None if correct is None or hits is None else correct + hits
            if bar is not None:
                rate = seen / max(time.perf_counter() - start_time, 1e-9)
                accuracy = math.nan if correct is None else correct / seen
                bar.set_postfix_str(
                    f"loss={total_loss / seen:.4f}, accuracy={accuracy:.4f}, "
                    f"images/s={rate:.0f}",
                    refresh=False,
                )
                bar.update(len(xb))
        accuracy = math.nan if correct is None else correct / seen
        return total_loss / seen, accuracy

    # ------------------------------------------------------------------
    # Checks

    def _criterion(self, loss: Any) -> Any:
        if loss is None:
            last = self.layers[-1]
            if isinstance(last, SoftmaxCrossEntropy):
                return _OutputLayerLoss(last)
            return CrossEntropyLoss()
        if isinstance(loss, type):
            # A class has forward and backward too, as unbound functions.
            raise TypeError(
                "loss must be a loss object with forward and backward methods "
                f"(e.g. fastcnn.losses.MSELoss()), got the class {loss.__name__}; "
                f"create one first: loss={loss.__name__}()"
            )
        if not (
            callable(getattr(loss, "forward", None))
            and callable(getattr(loss, "backward", None))
        ):
            raise TypeError(
                "loss must be a loss object with forward and backward methods "
                f"(e.g. fastcnn.losses.MSELoss()), got {type(loss).__name__}"
            )
        if getattr(loss, "reduction", "mean") not in ("mean", "sum"):
            raise ValueError(
                f"loss must reduce to a scalar (reduction 'mean' or 'sum'), got "
                f"reduction={loss.reduction!r}"
            )
        return loss

    def _check_optimizer(self, optimizer: Any) -> Optimizer:
        if optimizer is None:
            return SGD(self, lr=0.01)
        if not isinstance(optimizer, Optimizer):
            raise TypeError(
                "optimizer must be a fastcnn.optim optimiser (e.g. SGD(model, "
                f"lr=0.01)), got {type(optimizer).__name__}"
            )
        mine = {id(layer) for layer in self.layers}
        if any(id(layer) not in mine for layer in optimizer.layers):
            raise ValueError(
                "optimizer was built on layers that are not this model's; build it "
                "on this model (e.g. SGD(model, lr=...))"
            )
        return optimizer

    def _check_x(self, x: Any, name: str) -> np.ndarray:
        if not isinstance(x, np.ndarray):
            raise TypeError(f"{name} must be a numpy.ndarray, got {type(x).__name__}")
        if x.dtype.kind not in "biuf":
            raise TypeError(
                f"{name} must have a real numeric dtype, got {x.dtype}; convert it "
                f"first, e.g. {name}.astype(np.float32)"
            )
        if x.ndim < 2:
            raise ValueError(
                f"{name} must be a batch with the samples along the first axis "
                f"(at least 2-d), got shape {x.shape}"
            )
        if len(x) == 0:
            raise ValueError(
                f"{name} must hold at least one sample, got shape {x.shape}"
            )
        # A sample of the wrong shape could otherwise pass as an unbatched input
        # of some layer and give outputs that do not match the samples.
        shape = tuple(x.shape[1:])
        for i, layer in enumerate(self.layers):
            try:
                shape = tuple(layer.output_shape(shape))
            except (TypeError, ValueError) as error:
                reason = _rephrase_shape_error(error, i, layer, shape, name, x.ndim)
                raise ValueError(
                    f"{name} has per-sample shape {x.shape[1:]}, which the model "
                    f"does not accept: {reason}"
                ) from error
        return x

    def _check_xy(
        self, x: Any, y: Any, x_name: str, y_name: str, loss: Any
    ) -> tuple[np.ndarray, np.ndarray]:
        x = self._check_x(x, x_name)
        if not isinstance(y, np.ndarray):
            raise TypeError(f"{y_name} must be a numpy.ndarray, got {type(y).__name__}")
        if y.ndim == 0 or len(y) != len(x):
            raise ValueError(
                f"{y_name} must have one entry per sample of {x_name} ({len(x)}), "
                f"got shape {y.shape}"
            )
        classify = loss is None or isinstance(loss, CrossEntropyLoss)
        if classify:
            self._check_classes(x, y, x_name, y_name)
        return x, y

    def _check_classes(
        self, x: np.ndarray, y: np.ndarray, x_name: str, y_name: str
    ) -> None:
        """Check class targets against the model's output width."""
        # _check_x has made sure that the model accepts the samples.
        out_shape = self.output_shape(x.shape[1:])
        if len(out_shape) != 1:
            raise ValueError(
                f"cross-entropy needs per-sample outputs of shape (K,), the model "
                f"gives {out_shape} for {x_name} of per-sample shape {x.shape[1:]}"
            )
        n_classes = out_shape[0]
        if y.dtype.kind in "iu":
            if y.ndim != 1:
                raise ValueError(
                    f"{y_name} of class indices must be 1-d, got shape {y.shape}"
                )
            low, high = int(y.min()), int(y.max())
            if low < 0 or high >= n_classes:
                raise ValueError(
                    f"{y_name} holds class index {low if low < 0 else high}, outside "
                    f"[0, {n_classes}) for a model with {n_classes} outputs"
                )
        elif y.dtype.kind == "f":
            if y.shape != (len(x), n_classes):
                hint = ""
                if y.ndim == 1:
                    hint = (
                        f"; if {y_name} holds class indices, convert them to "
                        f"integers first, e.g. {y_name}.astype(np.int64)"
                    )
                raise ValueError(
                    f"{y_name} of one-hot or probability rows must have shape "
                    f"({len(x)}, {n_classes}) for a model with {n_classes} outputs, "
                    f"got {y.shape}{hint}"
                )
        else:
            raise TypeError(
                f"{y_name} must hold integer class indices or float one-hot rows, "
                f"got dtype {y.dtype}"
            )

    # ------------------------------------------------------------------
    # Description and persistence

    def summary(self, input_shape: tuple[int, ...] | None = None) -> str:
        """Return a table of each layer's output shape and parameter count.

        Parameters
        ----------
        input_shape : tuple of int, optional
            The per-sample input shape, e.g. ``(1, 28, 28)``. Default: that of
            the last forward pass.

        Returns
        -------
        str
            One row per layer (index, class, per-sample output shape, number of
            parameters), then the total number of parameters.
        """
        if input_shape is None:
            if self._input_shape is None:
                raise ValueError(
                    "summary needs input_shape (the per-sample input shape, e.g. "
                    "(1, 28, 28)) until the model has run a forward pass"
                )
            input_shape = self._input_shape
        if not isinstance(input_shape, (tuple, list)):
            raise TypeError(
                f"input_shape must be a tuple of ints, got {type(input_shape).__name__}"
            )
        rows = [("#", "Layer", "Output shape", "Parameters")]
        shape = tuple(input_shape)
        rows.append(("", "Input", str(shape), ""))
        for i, layer in enumerate(self.layers):
            try:
                shape = tuple(layer.output_shape(shape))
            except (TypeError, ValueError) as error:
                raise type(error)(
                    f"layer {i} ({type(layer).__name__}) refuses per-sample shape "
                    f"{shape}: {error}"
                ) from error
            rows.append(
                (
                    str(i),
                    type(layer).__name__,
                    str(shape),
                    f"{layer.num_parameters():,}",
                )
            )
        widths = [max(len(row[col]) for row in rows) for col in range(4)]
        lines = []
        for row in rows:
            cells = [
                row[0].rjust(widths[0]),
                row[1].ljust(widths[1]),
                row[2].ljust(widths[2]),
                row[3].rjust(widths[3]),
            ]
            lines.append("  ".join(cells).rstrip())
        rule = "-" * len(max(lines, key=len))
        lines.insert(1, rule)
        lines.append(rule)
        lines.append(f"Total parameters: {self.num_parameters():,}")
        return "\n".join(lines)

    def save(self, path: str | os.PathLike) -> None:
        """Save the layers and parameters to one ``.npz`` file (atomically).

        Parameters
        ----------
        path : str or os.PathLike
            The destination, used as given. Errors (a bad type, an empty path, a
            folder, a folder that does not exist) are those of
            :func:`fastcnn.serialization.save_model` and name ``path``.
        """
        from fastcnn.serialization import save_model

        save_model(path, self)

    @classmethod
    def load(cls, path: str | os.PathLike) -> Sequential:
        """Load a model written by :meth:`save`."""
        from fastcnn.serialization import load_model

        return load_model(path)


class _evaluation_mode:
    """Context manager: evaluation mode inside, each layer's own mode restored."""

    def __init__(self, model: Sequential) -> None:
        self.model = model
        self.modes: list[bool] = []

    def __enter__(self) -> None:
        self.modes = [layer.training for layer in self.model.layers]
        self.model.eval()

    def __exit__(self, *exc_info: Any) -> None:
        for layer, mode in zip(self.model.layers, self.modes, strict=True):
            layer.train(mode)


def _progress_bar(verbose: int, total: int, description: str) -> Any:
    """Return a tqdm bar, or None when silent or tqdm is not installed."""
    if not verbose:
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(
        total=total,
        desc=description,
        unit="img",
        leave=True,
        bar_format="{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} "
        "[{elapsed}<{remaining}{postfix}]",
    )
