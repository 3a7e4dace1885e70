"""fastad: reverse-mode automatic differentiation for NumPy on the CPU.

Every gradient request on an output shares one reverse sweep; matrix products, sigmoid,
softmax and fused softmax-cross-entropy run in compiled kernels over SciPy's BLAS.
"""
from ._tensor import Parameter, Tensor, tensor  # first: it wires up _autograd and _ops
from ._autograd import backward, detect_anomaly, enable_grad, grad, is_grad_enabled, no_grad
from ._gradcheck import gradcheck
from . import nn, optim
from ._io import load, save
from ._ops import (abs, add, argmax, concatenate, cross_entropy, div, dot, exp, getitem, log,
                   log_softmax, matmul, max, mean, mul, neg, nll_loss, pow, relu, reshape,
                   sigmoid, softmax, sqrt, sub, sum, tanh, transpose, where)

__version__ = "0.1.0"

__all__ = [
    "Tensor", "tensor", "Parameter", "grad", "backward", "no_grad", "enable_grad",
    "is_grad_enabled", "detect_anomaly", "gradcheck", "nn", "optim", "save", "load",
    "abs", "add", "argmax", "concatenate", "cross_entropy", "div", "dot", "exp", "getitem",
    "log", "log_softmax", "matmul", "max", "mean", "mul", "neg", "nll_loss", "pow", "relu",
    "reshape", "sigmoid", "softmax", "sqrt", "sub", "sum", "tanh", "transpose", "where",
]
