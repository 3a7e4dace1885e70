# Type stub of fastad.optim (see fastad/__init__.pyi).
from collections.abc import Iterable, Mapping
from typing import Any

from .. import Tensor
from . import lr_scheduler as lr_scheduler

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "lr_scheduler"]

class Optimizer:
    params: list[Tensor]
    def __init__(self, params: Iterable[Tensor], **hyperparameters: Any) -> None: ...
    def zero_grad(self) -> None: ...
    def step(self) -> None: ...
    def state_dict(self) -> dict[str, Any]: ...
    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None: ...

class SGD(Optimizer):
    lr: float
    momentum: float
    weight_decay: float
    nesterov: bool
    momentum_buffers: list[Any] | None
    def __init__(self, params: Iterable[Tensor], lr: float, momentum: float = 0.0,
                 weight_decay: float = 0.0, nesterov: bool = False) -> None: ...

class Adam(Optimizer):
    lr: float
    betas: tuple[float, float]
    eps: float
    weight_decay: float
    exp_avgs: list[Any]
    exp_avg_sqs: list[Any]
    steps: list[int]
    def __init__(self, params: Iterable[Tensor], lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0) -> None: ...

class AdamW(Adam):
    def __init__(self, params: Iterable[Tensor], lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 1e-2) -> None: ...
