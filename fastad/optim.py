"""Optimizers: SGD and Adam, with PyTorch's update formulas, fused and in place.

An optimizer holds a list of parameters (leaf Tensors that require grad). `step()`
reads each parameter's `.grad` (None: the parameter is skipped) and updates its
`.value` in place through a compiled kernel that makes one pass over the parameter,
its gradient and its state. State arrays are allocated when the optimizer is made, so
`step()` allocates no arrays. Every update bumps the parameter's version counter, so a
sweep over a tape recorded before the update raises RuntimeError instead of using the
new values.

Hyperparameters live in attributes (`opt.lr = 0.01` takes effect at the next step).
"""
import numpy as np

from . import _optim as K
from ._autograd import mark_modified
from ._tensor import Tensor, check_matches

__all__ = ["Optimizer", "SGD", "Adam"]


def _check_nonnegative(name, value):
    value = float(value)
    if not value >= 0:  # also rejects NaN
        raise ValueError(f"Invalid {name}: {value} (must be >= 0)")
    return value


class Optimizer:
    """Base class: holds the parameters, validates gradients, zeroes them."""

    def __init__(self, params):
        if isinstance(params, Tensor):
            raise TypeError(f"{type(self).__name__}: params must be an iterable of Tensors "
                            "(e.g. model.parameters()), got a single Tensor")
        self.params = list(params)
        if not self.params:
            raise ValueError(f"{type(self).__name__}: got an empty parameter list")
        seen = set()
        for i, p in enumerate(self.params):
            if not isinstance(p, Tensor):
                raise TypeError(f"{type(self).__name__}: params[{i}] is a "
                                f"{type(p).__name__}, not a fastad Tensor")
            if not p.requires_grad or not p.is_leaf:
                raise ValueError(f"{type(self).__name__}: params[{i}] (shape {p.shape}) must "
                                 "be a leaf that requires grad, e.g. a fa.Parameter")
            if id(p) in seen:
                raise ValueError(f"{type(self).__name__}: params[{i}] (shape {p.shape}) "
                                 "appears more than once")
            seen.add(id(p))
        self._shapes = [p.value.shape for p in self.params]
        self._dtypes = [p.value.dtype for p in self.params]

    def zero_grad(self):
        """Set every parameter's `.grad` to None."""
        for p in self.params:
            p.grad = None

    def step(self):
        """Update every parameter that has a `.grad`, in place (all checked first)."""
        ready = [(i, p, self._grad(i, p)) for i, p in enumerate(self.params)
                 if p.grad is not None]
        for i, p, grad in ready:
            self._update(i, p.value, grad)
            mark_modified(p)

    def _grad(self, i, p):
        """p.grad as an array the kernels can read (C-contiguous, p's dtype and shape)."""
        value, grad = p.value, p.grad
        if not (isinstance(value, np.ndarray) and value.flags.c_contiguous
                and value.flags.writeable and value.shape == self._shapes[i]
                and value.dtype == self._dtypes[i]):
            raise ValueError(f"{type(self).__name__}: params[{i}].value was replaced by an "
                             "array of another shape, dtype or layout; update it in place")
        check_matches(grad, value, f"{type(self).__name__}: params[{i}].grad")
        return grad if grad.flags.c_contiguous else np.ascontiguousarray(grad)

    def _update(self, i, value, grad):
        """Update params[i]'s value in place from its checked gradient."""
        raise NotImplementedError

    def _options(self):
        return {}

    def __repr__(self):
        options = ", ".join(f"{k}={v}" for k, v in self._options().items())
        return f"{type(self).__name__}({len(self.params)} parameters, {options})"


class SGD(Optimizer):
    """Stochastic gradient descent, as torch.optim.SGD with dampening 0.

    d = grad + weight_decay * p; with momentum, buf = d on the first step and
    buf = momentum * buf + d after, then d = buf (or d + momentum * buf with
    nesterov=True); p -= lr * d.
    """

    def __init__(self, params, lr, momentum=0.0, weight_decay=0.0, nesterov=False):
        self.lr = _check_nonnegative("learning rate", lr)
        self.momentum = _check_nonnegative("momentum", momentum)
        self.weight_decay = _check_nonnegative("weight_decay", weight_decay)
        self.nesterov = bool(nesterov)
        if self.nesterov and self.momentum == 0:
            raise ValueError("Nesterov momentum requires a momentum > 0")
        super().__init__(params)
        # Zero-filled, so the first step's buf = momentum * 0 + d = d, as in PyTorch.
        self.momentum_buffers = ([np.zeros_like(p.value) for p in self.params]
                                 if self.momentum != 0 else None)

    def _update(self, i, value, grad):
        buffers = self.momentum_buffers
        K.sgd_step(value, grad, None if buffers is None else buffers[i], self.lr,
                   self.momentum, self.weight_decay, self.nesterov)

    def _options(self):
        return {"lr": self.lr, "momentum": self.momentum,
                "weight_decay": self.weight_decay, "nesterov": self.nesterov}


class Adam(Optimizer):
    """Adam, as torch.optim.Adam with amsgrad off (weight_decay is L2: added to grad).

    d = grad + weight_decay * p; m = beta1 * m + (1 - beta1) * d;
    v = beta2 * v + (1 - beta2) * d * d; with t the parameter's own step count,
    p -= lr / (1 - beta1**t) * m / (sqrt(v) / sqrt(1 - beta2**t) + eps).
    """

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        self.lr = _check_nonnegative("learning rate", lr)
        self.eps = _check_nonnegative("epsilon value", eps)
        self.weight_decay = _check_nonnegative("weight_decay", weight_decay)
        beta1, beta2 = betas
        for index, beta in enumerate((beta1, beta2)):
            if not 0 <= beta < 1:
                raise ValueError(f"Invalid beta parameter at index {index}: {beta} "
                                 "(must be in [0, 1))")
        self.betas = (float(beta1), float(beta2))
        super().__init__(params)
        self.exp_avgs = [np.zeros_like(p.value) for p in self.params]
        self.exp_avg_sqs = [np.zeros_like(p.value) for p in self.params]
        self.steps = [0] * len(self.params)

    def _update(self, i, value, grad):
        beta1, beta2 = self.betas
        self.steps[i] = t = self.steps[i] + 1
        step_size = self.lr / (1 - beta1 ** t)
        bias_correction2_sqrt = (1 - beta2 ** t) ** 0.5
        K.adam_step(value, grad, self.exp_avgs[i], self.exp_avg_sqs[i], beta1, beta2,
                    step_size, bias_correction2_sqrt, self.eps, self.weight_decay)

    def _options(self):
        return {"lr": self.lr, "betas": self.betas, "eps": self.eps,
                "weight_decay": self.weight_decay}
