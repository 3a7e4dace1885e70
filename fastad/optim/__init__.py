"""fa.optim: SGD, Adam and AdamW (`optimizers`, on the `optimizer.Optimizer` base), and
learning-rate schedules (`optim.lr_scheduler`), as torch.optim."""
from . import lr_scheduler
from .optimizer import Optimizer
from .optimizers import SGD, Adam, AdamW

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "lr_scheduler"]
