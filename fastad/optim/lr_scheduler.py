"""Learning-rate schedules, as torch.optim.lr_scheduler: StepLR, CosineAnnealingLR, LambdaLR.

A scheduler sets its optimizer's `lr` attribute: at construction (epoch 0) and at every
`step()` (call it after `opt.step()`, once per epoch or per iteration as the schedule is
meant). StepLR and CosineAnnealingLR compute the next lr from the current `opt.lr`, as
PyTorch's recursive formulas do (so a change made to `opt.lr` by hand carries on);
LambdaLR from the lr the optimizer had when the scheduler was made (`base_lrs`).

`state_dict()` holds the same keys and values as PyTorch's (plain Python numbers and
lists), so it goes through `fa.save`; `load_state_dict` checks every key and value
before it changes anything. The optimizer's own state (its lr included) is saved by
`opt.state_dict()`: save and load both.
"""
import math
import types

from .._checks import count, flag, key_problems, nonnegative, positive, real
from ..core.modes import replayed
from .optimizer import Optimizer

__all__ = ["LRScheduler", "StepLR", "CosineAnnealingLR", "LambdaLR"]


def _one_lr(owner, name, value):
    if not isinstance(value, (list, tuple)) or len(value) != 1:
        raise ValueError(f"{owner}: {name} must be a list of one lr (fastad optimizers have "
                         f"one parameter group), got {value!r}")
    return [nonnegative(owner, f"{name}[0]", value[0])]


class LRScheduler:
    """Base class: the epoch count, step(), get_last_lr() and the state_dict.

    A subclass lists its hyperparameters (`hyperparameters`: attribute -> check, saved
    in the state_dict) and defines `_lr(lr)`: the lr for epoch `last_epoch` given the
    optimizer's current lr.
    """

    hyperparameters = {}

    # The state_dict's entries besides the hyperparameters, and their checks, in
    # PyTorch's order.
    progress = {"base_lrs": _one_lr, "last_epoch": count, "_step_count": positive,
                "_is_initial": flag, "_get_lr_called_within_step": flag,
                "_last_lr": _one_lr}

    def __init__(self, optimizer, **hyperparameters):
        name = type(self).__name__
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"{name}: {type(optimizer).__name__} is not a fastad Optimizer")
        for key, check in self.hyperparameters.items():
            setattr(self, key, check(name, key, hyperparameters[key]))
        self.optimizer = optimizer
        self.base_lrs = [self._optimizer_lr()]
        self.last_epoch = -1
        self._step_count = 0
        self._get_lr_called_within_step = False  # PyTorch's flag, kept for its state_dict
        self._is_initial = True
        self.step()  # epoch 0
        self._is_initial = False

    def _optimizer_lr(self):
        return nonnegative(type(self).__name__, "optimizer.lr", self.optimizer.lr)

    @replayed
    def step(self):
        """Move on one epoch and set the optimizer's lr to the schedule's value for it (an
        error, e.g. a negative lr from LambdaLR, leaves the epoch where it was)."""
        self.last_epoch += 1
        try:
            lr = self._lr(self._optimizer_lr())
            lr = nonnegative(type(self).__name__, f"lr for epoch {self.last_epoch}", lr)
        except BaseException:
            self.last_epoch -= 1
            raise
        self._step_count += 1
        self.optimizer.lr = lr
        self._last_lr = [lr]

    def get_last_lr(self):
        """[the lr set by the last step()] (a list: one entry per parameter group)."""
        return list(self._last_lr)

    def _lr(self, lr):
        raise NotImplementedError

    def state_dict(self):
        """{hyperparameter: value, "base_lrs": [lr], "last_epoch": int, ...}, the keys and
        values PyTorch's scheduler of the same name saves; a copy."""
        keys = [*self.hyperparameters, *self.progress]
        return {key: (list(v) if isinstance(v := getattr(self, key), list) else v)
                for key in keys}

    def load_state_dict(self, state_dict):
        """Restore what `state_dict()` saved (or PyTorch's, fa.load'ed lists included);
        everything is checked before anything changes."""
        owner = f"{type(self).__name__}.load_state_dict"
        if not isinstance(state_dict, dict):
            raise TypeError(f"{owner}: expected a dict, got {type(state_dict).__name__}")
        checks = {**self.hyperparameters, **self.progress}
        problems = key_problems(self.state_dict(), state_dict)
        if problems:
            raise ValueError(f"{owner}: {problems}")
        values = {key: check(owner, key, state_dict[key]) for key, check in checks.items()}
        values.update(self._loaded_extras(state_dict, owner))
        for key, value in values.items():
            setattr(self, key, value)

    def _loaded_extras(self, state_dict, owner):
        """{attribute: value} for a subclass's own state_dict entries, checked."""
        return {}

    def __repr__(self):
        settings = ", ".join(f"{k}={getattr(self, k)!r}" for k in self.hyperparameters)
        return f"{type(self).__name__}({settings}, last_epoch={self.last_epoch})"


class StepLR(LRScheduler):
    """lr *= gamma every `step_size` epochs (lr = base_lr * gamma ** (epoch // step_size)
    when nothing else changes `opt.lr`)."""

    hyperparameters = {"step_size": positive, "gamma": real}

    def __init__(self, optimizer, step_size, gamma=0.1):
        super().__init__(optimizer, step_size=step_size, gamma=gamma)

    def _lr(self, lr):
        if self.last_epoch == 0 or self.last_epoch % self.step_size != 0:
            return lr
        return lr * self.gamma


class CosineAnnealingLR(LRScheduler):
    """Cosine annealing from the initial lr to `eta_min` over `T_max` epochs (and back up
    over the next T_max, as PyTorch), by PyTorch's recursive formula:
    lr_e = eta_min + (lr_{e-1} - eta_min) * (1 + cos(pi e / T_max)) / (1 + cos(pi (e-1) / T_max)),
    which follows eta_min + (base_lr - eta_min) * (1 + cos(pi e / T_max)) / 2 to rounding.
    """

    hyperparameters = {"T_max": positive, "eta_min": real}

    def __init__(self, optimizer, T_max, eta_min=0.0):
        super().__init__(optimizer, T_max=T_max, eta_min=eta_min)

    def _lr(self, lr):
        epoch, period, low = self.last_epoch, self.T_max, self.eta_min
        if self._is_initial:
            return lr
        if (epoch - 1 - period) % (2 * period) == 0:  # the cycle's lowest point, going up
            return lr + (self.base_lrs[0] - low) * (1 - math.cos(math.pi / period)) / 2
        return ((1 + math.cos(math.pi * epoch / period))
                / (1 + math.cos(math.pi * (epoch - 1) / period)) * (lr - low) + low)


class LambdaLR(LRScheduler):
    """lr = base_lr * lr_lambda(epoch), with base_lr the optimizer's lr at construction.

    As PyTorch, state_dict() cannot save a function: its "lr_lambdas" entry is [None] for
    a function or lambda (or a callable without attributes), and the attribute dict
    (`vars(obj)`) of a callable object, which load_state_dict() copies back into this
    scheduler's object.
    """

    def __init__(self, optimizer, lr_lambda):
        if isinstance(lr_lambda, (list, tuple)):
            if len(lr_lambda) != 1:
                raise ValueError(f"LambdaLR: expected 1 lr_lambda (fastad optimizers have "
                                 f"one parameter group), got {len(lr_lambda)}")
            lr_lambda = lr_lambda[0]
        if not callable(lr_lambda):
            raise TypeError(f"LambdaLR: lr_lambda must be callable, got {lr_lambda!r}")
        self.lr_lambdas = [lr_lambda]
        super().__init__(optimizer)

    def _lr(self, lr):
        factor = self.lr_lambdas[0](self.last_epoch)
        return self.base_lrs[0] * real("LambdaLR", f"lr_lambda({self.last_epoch})", factor)

    def state_dict(self):
        function = self.lr_lambdas[0]
        attributes = getattr(function, "__dict__", None)
        saved = (None if isinstance(function, types.FunctionType) or attributes is None
                 else dict(attributes))
        return {**super().state_dict(), "lr_lambdas": [saved]}

    def _loaded_extras(self, state_dict, owner):
        saved = state_dict["lr_lambdas"]
        if (not isinstance(saved, (list, tuple)) or len(saved) != 1
                or not (saved[0] is None or isinstance(saved[0], dict))):
            raise ValueError(f"{owner}: lr_lambdas must be [None] or [dict of the callable "
                             f"object's attributes], got {saved!r}")
        if saved[0] is not None:
            vars(self.lr_lambdas[0]).update(saved[0])
        return {}
