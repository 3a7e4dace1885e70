"""fa.nn: layers and losses built from fastad's ops, on a small Module (as torch.nn).

`modules`: Module, Linear, Sequential, Identity and the activations; `layers`: Dropout
and LayerNorm; `losses`: the loss modules; `nn.utils`: clip_grad_norm_.
"""
from . import utils
from .layers import Dropout, LayerNorm
from .losses import BCEWithLogitsLoss, CrossEntropyLoss, MSELoss
from .modules import Identity, Linear, Module, ReLU, Sequential, Sigmoid, Tanh

__all__ = ["Module", "Linear", "Sequential", "Identity", "ReLU", "Sigmoid", "Tanh",
           "Dropout", "LayerNorm", "CrossEntropyLoss", "MSELoss", "BCEWithLogitsLoss",
           "utils"]
