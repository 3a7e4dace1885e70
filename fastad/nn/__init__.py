"""fa.nn: layers and losses built from fastad's ops, on a small Module (as torch.nn).

`modules` holds Module, Linear, Sequential and the activations; `nn.utils` holds
`clip_grad_norm_`.
"""
from .modules import Linear, Module, ReLU, Sequential, Sigmoid, Tanh

__all__ = ["Module", "Linear", "Sequential", "ReLU", "Sigmoid", "Tanh"]
