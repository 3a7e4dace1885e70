"""SGD, Adam and AdamW, with PyTorch's update formulas, each one fused kernel over a
parameter, its gradient and its state (fastad/kernels/updates); the checks, state and
state_dict they share are the Optimizer base class's (optimizer.py)."""
import math

from .._checks import flag as _flag
from .._checks import nonnegative as _nonnegative
from .._checks import real as _real
from ..kernels import updates
from .optimizer import Optimizer

__all__ = ["SGD", "Adam", "AdamW"]


def _betas(owner, name, value):
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise TypeError(f"{owner}: {name} must be a pair (beta1, beta2), got {value!r}")
    betas = tuple(_real(owner, f"{name}[{k}]", beta) for k, beta in enumerate(value))
    for k, beta in enumerate(betas):
        if not 0 <= beta < 1:
            raise ValueError(f"{owner}: Invalid beta parameter at index {k}: {value[k]!r} "
                             "(must be in [0, 1))")
    return betas


class SGD(Optimizer):
    """Stochastic gradient descent, as torch.optim.SGD with dampening 0.

    d = grad + weight_decay * p; with momentum, buf = d on the first step and
    buf = momentum * buf + d after, then d = buf (or d + momentum * buf with
    nesterov=True); p -= lr * d. `momentum_buffers` is None until a step has momentum.
    """

    hyperparameters = {"lr": _nonnegative, "momentum": _nonnegative,
                       "weight_decay": _nonnegative, "nesterov": _flag}
    buffers = {"momentum_buffer": "momentum_buffers"}

    def __init__(self, params, lr, momentum=0.0, weight_decay=0.0, nesterov=False):
        super().__init__(params, lr=lr, momentum=momentum, weight_decay=weight_decay,
                         nesterov=nesterov)

    def _check_combination(self, options, owner):
        if options["nesterov"] and options["momentum"] == 0:
            raise ValueError(f"{owner}: Nesterov momentum requires a momentum > 0")

    def _needs_state(self, options):
        return options["momentum"] != 0

    def _update(self, i, value, grad, options):
        # Buffers start at zero, so the first step's buf = momentum * 0 + d = d, as PyTorch.
        momentum = options["momentum"]
        buffer = self.momentum_buffers[i] if momentum != 0 else None
        updates.sgd_step(value, grad, buffer, options["lr"], momentum, options["weight_decay"],
                   options["nesterov"])


class Adam(Optimizer):
    """Adam, as torch.optim.Adam with amsgrad off (weight_decay is L2: added to grad).

    d = grad + weight_decay * p; m = beta1 * m + (1 - beta1) * d;
    v = beta2 * v + (1 - beta2) * d * d; with t the parameter's own step count,
    p -= lr / (1 - beta1**t) * m / (sqrt(v) / sqrt(1 - beta2**t) + eps).
    State, one entry per parameter: `exp_avgs` (m), `exp_avg_sqs` (v), `steps` (t).
    """

    hyperparameters = {"lr": _nonnegative, "betas": _betas, "eps": _nonnegative,
                       "weight_decay": _nonnegative}
    buffers = {"exp_avg": "exp_avgs", "exp_avg_sq": "exp_avg_sqs"}
    counts = {"step": "steps"}
    decoupled_weight_decay = False

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)

    def _update(self, i, value, grad, options):
        lr, weight_decay = options["lr"], options["weight_decay"]
        beta1, beta2 = options["betas"]
        self.steps[i] = t = self.steps[i] + 1
        step_size = lr / (1 - beta1 ** t)
        bias_correction2_sqrt = math.sqrt(1 - beta2 ** t)
        l2, param_scale = weight_decay, 1.0
        if self.decoupled_weight_decay:  # as PyTorch, p *= 1 - lr * wd only when wd != 0
            l2, param_scale = 0.0, (1 - lr * weight_decay if weight_decay != 0 else 1.0)
        updates.adam_step(value, grad, self.exp_avgs[i], self.exp_avg_sqs[i], beta1, beta2,
                    step_size, bias_correction2_sqrt, options["eps"], l2, param_scale)


class AdamW(Adam):
    """Adam with decoupled weight decay, as torch.optim.AdamW (amsgrad off).

    p *= 1 - lr * weight_decay, then Adam's update with d = grad (no L2 term).
    """

    decoupled_weight_decay = True

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)
