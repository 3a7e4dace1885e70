"""fa.optim: SGD, Adam and AdamW (`optimizers`), and learning-rate schedules
(`optim.lr_scheduler`), as torch.optim."""
from . import lr_scheduler
from .optimizers import SGD, Adam, AdamW, Optimizer

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "lr_scheduler"]
