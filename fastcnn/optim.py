"""Optimisers: update a model's parameters from the gradients of its last backward.

An optimiser is built on a :class:`~fastcnn.models.Sequential` or on an iterable of
layers. It remembers every layer's parameters by name (``"layer{i}.{name}"``, ``i``
the layer's position) and, at each :meth:`Optimizer.step`, pairs each parameter
with the gradient the layer holds in ``layer.grads``. Parameters are updated in
place, so references held by layers and users stay valid.

The update rules are PyTorch's (``torch.optim.SGD`` and ``torch.optim.Adam`` with
their default single-tensor CPU implementation); every scalar is cast to the
parameter's dtype first, so float32 parameters and their state stay float32. A
hyper-parameter that this cast would turn into inf (``lr=1e300`` for float32
parameters) is refused with a ValueError. An update that overflows gives inf or
NaN parameters without a NumPy ``RuntimeWarning``, as the kernels do.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from numbers import Integral
from typing import Any

import numpy as np

from fastcnn._validation import check_fits_dtype, check_real
from fastcnn.kernels.optim import sgd_step
from fastcnn.layers.base import Layer

# The momentum buffer the SGD kernel is given when there is no momentum.
_NO_BUFFER = {np.dtype(t): np.empty(0, dtype=t) for t in (np.float32, np.float64)}

__all__ = ["SGD", "Adam", "Optimizer"]


def _collect_layers(model: Any) -> list[Layer]:
    """Return the layers of a Sequential, a single layer or an iterable of layers."""
    if isinstance(model, Layer):
        return [model]
    layers = getattr(model, "layers", model)
    if isinstance(layers, (str, bytes)) or not isinstance(layers, Iterable):
        raise TypeError(
            "model must be a Sequential or an iterable of Layer objects, "
            f"got {type(model).__name__}"
        )
    layers = list(layers)
    seen: set[int] = set()
    for i, layer in enumerate(layers):
        if not isinstance(layer, Layer):
            raise TypeError(
                f"model[{i}] must be a Layer, got {type(layer).__name__}; "
                "optimisers take a Sequential or an iterable of layers"
            )
        if id(layer) in seen:
            raise ValueError(
                f"model[{i}] ({type(layer).__name__}) appears more than once; "
                "each layer must be listed once or its parameters would be "
                "updated twice per step"
            )
        seen.add(id(layer))
    return layers


class Optimizer:
    """Base class of the optimisers.

    Parameters
    ----------
    model : Sequential or iterable of Layer
        The layers whose parameters are updated; at least one of them must have
        parameters (an empty parameter list is refused, as in ``torch.optim``).

    Attributes
    ----------
    state : dict of str to dict
        Per-parameter state (momentum buffers, moment estimates), keyed like
        ``"layer0.weight"``. Filled lazily at the first step that sees the
        parameter's gradient.
    """

    #: Names of the per-parameter state entries that are arrays.
    _array_state: tuple[str, ...] = ()
    #: Names of the per-parameter state entries that are ints.
    _int_state: tuple[str, ...] = ()

    def __init__(self, model: Any) -> None:
        self._layers = _collect_layers(model)
        if not any(layer.params for layer in self._layers):
            # As torch.optim refuses an empty parameter list.
            names = [type(layer).__name__ for layer in self._layers]
            raise ValueError(
                "model must hold at least one parameter, got an empty parameter "
                f"list: no layer has params (layers: {names})"
            )
        self.state: dict[str, dict[str, Any]] = {}

    @property
    def layers(self) -> tuple[Layer, ...]:
        """The layers whose parameters this optimiser updates, in order."""
        return tuple(self._layers)

    @property
    def lr(self) -> float:
        """The learning rate (may be changed between steps, e.g. by a schedule)."""
        return self._lr

    @lr.setter
    def lr(self, value: float) -> None:
        self._lr = self._check_cast(check_real(value, "lr", low=0.0), "lr")

    def _check_cast(self, value: float, name: str) -> float:
        """Return ``value``, or raise if it overflows a parameter's dtype."""
        dtypes = {p.dtype for layer in self._layers for p in layer.params.values()}
        for dtype in dtypes:
            check_fits_dtype(value, name, dtype)
        return value

    def _slots(self) -> Iterator[tuple[str, np.ndarray, np.ndarray | None]]:
        # The parameters are looked up at step time, so a layer whose arrays were
        # replaced (e.g. ``layer.weight = new_array``) is still updated correctly.
        for i, layer in enumerate(self._layers):
            for name, param in layer.params.items():
                yield f"layer{i}.{name}", param, layer.grads.get(name)

    def parameter_keys(self) -> list[str]:
        """Return the keys of every parameter, in update order."""
        return [key for key, _, _ in self._slots()]

    def step(self) -> None:
        """Update every parameter that has a gradient from the last backward pass.

        Parameters whose layer holds no gradient for them are skipped (their state
        is left untouched), as PyTorch skips parameters whose ``grad`` is None.
        Every gradient is checked before any parameter changes.
        """
        updates = []
        for key, param, grad in self._slots():
            if grad is None:
                continue
            if not isinstance(grad, np.ndarray) or grad.shape != param.shape:
                got = getattr(grad, "shape", type(grad).__name__)
                raise ValueError(
                    f"the gradient of {key} must be an array of shape "
                    f"{param.shape}, got {got}"
                )
            if grad.dtype.kind not in "biuf":
                raise TypeError(
                    f"the gradient of {key} must have a real numeric dtype, "
                    f"got {grad.dtype}"
                )
            updates.append((key, param, grad))
        # Casts (float64 gradients beyond float32) and updates that overflow
        # give inf or NaN without a warning, as in the kernels.
        with np.errstate(all="ignore"):
            for key, param, grad in updates:
                self._update(key, param, np.asarray(grad, dtype=param.dtype))

    def zero_grad(self) -> None:
        """Forget the gradients of every layer (``layer.zero_grad()``)."""
        for layer in self._layers:
            layer.zero_grad()

    def _update(self, key: str, param: np.ndarray, grad: np.ndarray) -> None:
        raise NotImplementedError

    def hyperparameters(self) -> dict[str, Any]:
        """Return the constructor arguments other than ``model``."""
        raise NotImplementedError

    def _set_hyperparameters(self, **hyper: Any) -> None:
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        """Return a copy of the optimiser's hyperparameters and state.

        Returns
        -------
        dict
            ``{"class": name, "hyperparameters": {...}, "state": {key: {...}}}``
            where ``key`` is a parameter key such as ``"layer0.weight"`` and each
            entry maps state names to arrays (copies) or ints. Together with the
            parameters it is everything needed to continue training
            bit-identically.
        """
        state = {
            key: {
                name: value.copy() if isinstance(value, np.ndarray) else value
                for name, value in entry.items()
            }
            for key, entry in self.state.items()
        }
        return {
            "class": type(self).__name__,
            "hyperparameters": self.hyperparameters(),
            "state": state,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore hyperparameters and state saved by :meth:`state_dict`.

        Arrays are copied and cast to their parameter's dtype.

        Raises
        ------
        ValueError
            When the state is for another optimiser class, names a parameter the
            model does not have, or holds entries of the wrong name or shape.
        """
        if not isinstance(state_dict, dict):
            raise TypeError(
                f"state_dict must be a dict, got {type(state_dict).__name__}"
            )
        for field in ("class", "hyperparameters", "state"):
            if field not in state_dict:
                raise ValueError(f"state_dict has no {field!r} entry")
        if state_dict["class"] != type(self).__name__:
            raise ValueError(
                f"state_dict is for a {state_dict['class']} optimiser, "
                f"not {type(self).__name__}"
            )
        hyper = state_dict["hyperparameters"]
        if not isinstance(hyper, dict):
            raise ValueError("state_dict['hyperparameters'] must be a dict")
        params = {key: param for key, param, _ in self._slots()}
        state = self._checked_state(state_dict["state"], params)

        # _set_hyperparameters checks every value before it assigns any.
        try:
            self._set_hyperparameters(**hyper)
        except TypeError as error:
            raise ValueError(f"state_dict['hyperparameters']: {error}") from error
        self.state = state

    def _checked_state(
        self, saved: Any, params: dict[str, np.ndarray]
    ) -> dict[str, dict[str, Any]]:
        if not isinstance(saved, dict):
            raise ValueError("state_dict['state'] must be a dict")
        expected = set(self._array_state) | set(self._int_state)
        state: dict[str, dict[str, Any]] = {}
        for key, entry in saved.items():
            if key not in params:
                raise ValueError(
                    f"state_dict['state'] has an entry for {key!r}, which is not a "
                    f"parameter of the model (parameters: {sorted(params)})"
                )
            if not isinstance(entry, dict) or set(entry) != expected:
                got = sorted(entry) if isinstance(entry, dict) else type(entry).__name__
                raise ValueError(
                    f"state_dict['state'][{key!r}] must have the entries "
                    f"{sorted(expected)}, got {got}"
                )
            param = params[key]
            checked: dict[str, Any] = {}
            for name in self._array_state:
                value = entry[name]
                if not isinstance(value, np.ndarray) or value.shape != param.shape:
                    got = getattr(value, "shape", type(value).__name__)
                    raise ValueError(
                        f"state_dict['state'][{key!r}][{name!r}] must be an array "
                        f"of shape {param.shape}, got {got}"
                    )
                checked[name] = np.array(value, dtype=param.dtype, order="C")
            for name in self._int_state:
                value = entry[name]
                if isinstance(value, np.ndarray) and value.ndim == 0:
                    value = value.item()
                if isinstance(value, bool) or not isinstance(value, Integral):
                    raise ValueError(
                        f"state_dict['state'][{key!r}][{name!r}] must be an int, "
                        f"got {type(value).__name__}"
                    )
                checked[name] = int(value)
            state[key] = checked
        return state

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.hyperparameters().items())
        return f"{type(self).__name__}({args})"


class SGD(Optimizer):
    """Stochastic gradient descent with optional momentum and weight decay.

    Parameters
    ----------
    model : Sequential or iterable of Layer
        The layers whose parameters are updated.
    lr : float
        Learning rate, ``>= 0``.
    momentum : float, default 0.0
        Momentum factor, ``>= 0``.
    dampening : float, default 0.0
        Dampening of the momentum.
    nesterov : bool, default False
        Use Nesterov momentum (needs ``momentum > 0`` and ``dampening == 0``).
    weight_decay : float, default 0.0
        L2 penalty added to the gradient, ``>= 0``.

    Raises
    ------
    ValueError
        If ``model`` holds no parameters, a hyper-parameter is out of range or
        not finite, or one overflows the parameters' dtype when cast to it
        (``lr=1e300`` with float32 parameters).

    Notes
    -----
    For each parameter ``p`` with gradient ``g`` (PyTorch's rule):

    - ``g = g + weight_decay * p`` when ``weight_decay != 0``;
    - with momentum, the buffer ``b`` is ``g`` at the first step and
      ``momentum * b + (1 - dampening) * g`` afterwards; then
      ``g = g + momentum * b`` (Nesterov) or ``g = b``;
    - ``p = p - lr * g``.
    """

    _array_state = ("momentum_buffer",)

    def __init__(
        self,
        model: Any,
        lr: float,
        momentum: float = 0.0,
        dampening: float = 0.0,
        nesterov: bool = False,
        weight_decay: float = 0.0,
    ) -> None:
        super().__init__(model)
        self._set_hyperparameters(
            lr=lr,
            momentum=momentum,
            dampening=dampening,
            nesterov=nesterov,
            weight_decay=weight_decay,
        )

    def _set_hyperparameters(
        self,
        lr: float,
        momentum: float = 0.0,
        dampening: float = 0.0,
        nesterov: bool = False,
        weight_decay: float = 0.0,
    ) -> None:
        self._check_cast(check_real(lr, "lr", low=0.0), "lr")
        momentum = check_real(momentum, "momentum", low=0.0)
        dampening = check_real(dampening, "dampening")
        weight_decay = check_real(weight_decay, "weight_decay", low=0.0)
        for name, value in (
            ("momentum", momentum),
            ("dampening", dampening),
            ("weight_decay", weight_decay),
        ):
            self._check_cast(value, name)
        if not isinstance(nesterov, (bool, np.bool_)):
            raise TypeError(f"nesterov must be a bool, got {type(nesterov).__name__}")
        if nesterov and (momentum <= 0.0 or dampening != 0.0):
            raise ValueError(
                "nesterov=True requires momentum > 0 and dampening == 0, got "
                f"momentum={momentum} and dampening={dampening}"
            )
        self.lr = lr
        self.momentum = momentum
        self.dampening = dampening
        self.nesterov = bool(nesterov)
        self.weight_decay = weight_decay

    def hyperparameters(self) -> dict[str, Any]:
        return {
            "lr": self.lr,
            "momentum": self.momentum,
            "dampening": self.dampening,
            "nesterov": self.nesterov,
            "weight_decay": self.weight_decay,
        }

    def _update(self, key: str, param: np.ndarray, grad: np.ndarray) -> None:
        scalar = param.dtype.type
        first = False
        buf = _NO_BUFFER.get(param.dtype)
        if self.momentum != 0.0:
            entry = self.state.get(key)
            first = entry is None
            if first:
                entry = {"momentum_buffer": np.empty_like(param)}
                self.state[key] = entry
            buf = entry["momentum_buffer"]

        # The kernel works on flat views; a parameter that is not C-contiguous
        # (never one of fastcnn's layers) is updated through a copy.
        contiguous = param.flags.c_contiguous
        flat = param.reshape(-1) if contiguous else param.flatten()
        sgd_step(
            flat,
            np.ascontiguousarray(grad).reshape(-1),
            buf.reshape(-1),
            scalar(self.lr),
            scalar(self.momentum),
            scalar(self.dampening),
            scalar(self.weight_decay),
            self.nesterov,
            first,
        )
        if not contiguous:
            param[...] = flat.reshape(param.shape)


class Adam(Optimizer):
    """Adam, with the bias-corrected moment estimates of Kingma and Ba.

    Parameters
    ----------
    model : Sequential or iterable of Layer
        The layers whose parameters are updated.
    lr : float, default 1e-3
        Learning rate, ``>= 0``.
    betas : tuple of float, default (0.9, 0.999)
        Decay rates of the first and second moment estimates, each in ``[0, 1)``.
    eps : float, default 1e-8
        Added to the denominator, ``> 0``.
    weight_decay : float, default 0.0
        L2 penalty added to the gradient (not decoupled as in AdamW), ``>= 0``.

    Raises
    ------
    ValueError
        If ``model`` holds no parameters, a hyper-parameter is out of range or
        not finite, or ``lr``, ``eps`` or ``weight_decay`` overflows the
        parameters' dtype when cast to it (``lr=1e300`` with float32
        parameters).

    Notes
    -----
    For each parameter ``p`` with gradient ``g``, at its ``t``-th step
    (PyTorch's rule; ``t`` counts the steps that saw a gradient for ``p``):

    - ``g = g + weight_decay * p`` when ``weight_decay != 0``;
    - ``m = m + (1 - beta1) * (g - m)`` and ``v = beta2 * v + (1 - beta2) * g * g``;
    - ``p = p - lr / (1 - beta1**t) * m / (sqrt(v) / sqrt(1 - beta2**t) + eps)``.
    """

    _array_state = ("exp_avg", "exp_avg_sq")
    _int_state = ("step",)

    def __init__(
        self,
        model: Any,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
    ) -> None:
        super().__init__(model)
        self._set_hyperparameters(
            lr=lr, betas=betas, eps=eps, weight_decay=weight_decay
        )

    def _set_hyperparameters(
        self,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
    ) -> None:
        self._check_cast(check_real(lr, "lr", low=0.0), "lr")
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise TypeError(f"betas must be a pair of floats, got {betas!r}")
        beta1 = check_real(
            betas[0], "betas[0]", low=0.0, high=1.0, high_inclusive=False
        )
        beta2 = check_real(
            betas[1], "betas[1]", low=0.0, high=1.0, high_inclusive=False
        )
        eps = self._check_cast(
            check_real(eps, "eps", low=0.0, low_inclusive=False), "eps"
        )
        weight_decay = check_real(weight_decay, "weight_decay", low=0.0)
        self._check_cast(weight_decay, "weight_decay")
        self.lr = lr
        self.betas = (beta1, beta2)
        self.eps = eps
        self.weight_decay = weight_decay

    def hyperparameters(self) -> dict[str, Any]:
        return {
            "lr": self.lr,
            "betas": self.betas,
            "eps": self.eps,
            "weight_decay": self.weight_decay,
        }

    def _update(self, key: str, param: np.ndarray, grad: np.ndarray) -> None:
        scalar = param.dtype.type
        beta1, beta2 = self.betas
        entry = self.state.get(key)
        if entry is None:
            entry = {
                "step": 0,
                "exp_avg": np.zeros_like(param),
                "exp_avg_sq": np.zeros_like(param),
            }
            self.state[key] = entry
        entry["step"] += 1
        step = entry["step"]
        exp_avg = entry["exp_avg"]
        exp_avg_sq = entry["exp_avg_sq"]

        if self.weight_decay != 0.0:
            grad = grad + scalar(self.weight_decay) * param

        # m <- lerp(m, g, 1 - beta1), with the two-sided formula PyTorch uses.
        weight = scalar(1.0 - beta1)
        if abs(weight) < 0.5:
            exp_avg += weight * (grad - exp_avg)
        else:
            exp_avg[...] = grad - (grad - exp_avg) * (scalar(1.0) - weight)
        exp_avg_sq *= scalar(beta2)
        exp_avg_sq += (scalar(1.0 - beta2) * grad) * grad

        bias_correction1 = 1.0 - beta1**step
        bias_correction2 = 1.0 - beta2**step
        step_size = self.lr / bias_correction1
        denom = np.sqrt(exp_avg_sq) / scalar(bias_correction2**0.5)
        denom += scalar(self.eps)
        param += (scalar(-step_size) * exp_avg) / denom
