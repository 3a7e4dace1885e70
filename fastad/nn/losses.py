"""Loss modules over fastad's loss functions, as torch.nn's (the `reduction` option only)."""
from ..ops.protocol import REGISTRY
from .modules import Module

__all__ = ["CrossEntropyLoss", "MSELoss", "BCEWithLogitsLoss"]

_REDUCTIONS = ("mean", "sum", "none")


class _Loss(Module):
    """loss(input, target) = fa.<function_name>(input, target, reduction=self.reduction)."""

    function_name = None

    def __init__(self, reduction="mean"):
        super().__init__()
        if not isinstance(reduction, str) or reduction not in _REDUCTIONS:
            raise ValueError(f"{type(self).__name__}: reduction must be 'mean', 'sum' or "
                             f"'none', got {reduction!r}")
        self.reduction = reduction

    def forward(self, input, target):
        return REGISTRY[self.function_name](input, target, reduction=self.reduction)


class CrossEntropyLoss(_Loss):
    """fa.cross_entropy: softmax cross-entropy of (N, C) logits against integer labels."""

    function_name = "cross_entropy"


class MSELoss(_Loss):
    """fa.mse_loss: the squared difference of input and target."""

    function_name = "mse_loss"


class BCEWithLogitsLoss(_Loss):
    """fa.binary_cross_entropy_with_logits: sigmoid and binary cross-entropy, fused."""

    function_name = "binary_cross_entropy_with_logits"
