"""Dropout and LayerNorm, as torch.nn, built from fastad's ops so the tape differentiates them."""
import numpy as np

from .._checks import nonnegative, real
from ..core.arrays import float_dtype
from ..core.modes import replayed
from ..core.operands import Parameter, as_tensor
from ..core.tensor import Tensor
from ..ops.arithmetic import add, div, mul, sub
from ..ops.elementwise import sqrt
from ..ops.reductions import mean
from .modules import Module

__all__ = ["Dropout", "LayerNorm"]


class Dropout(Module):
    """Inverted dropout: in training, each element is zeroed with probability p and the
    kept ones are scaled by 1/(1-p); in eval mode (or with p=0) the input passes through.

    The mask comes from `rng` (a np.random.Generator, used and advanced as it is; an int
    seed; or None for fresh entropy): each training call with 0 < p < 1 draws
    `rng.random(x.shape, dtype=x.dtype)` once and keeps the elements whose draw is >= p.
    p=1 gives zeros and p=0 the input, without drawing. The output is `x * mask`, so the
    gradient is the tape's (`g * mask`).
    """

    def __init__(self, p=0.5, rng=None):
        super().__init__()
        p = real("Dropout", "p", p)
        if not 0 <= p <= 1:
            raise ValueError(f"Dropout: dropout probability has to be between 0 and 1, "
                             f"but got {p}")
        self.p = p
        self.rng = np.random.default_rng(rng)

    def forward(self, x):
        if not self.training or self.p == 0:
            return x
        x = as_tensor("Dropout", x)
        return mul(x, _dropout_mask(self.rng, self.p, x.shape, x.dtype))

    def extra_repr(self):
        return f"p={self.p}"


@replayed  # a captured step draws a new mask on every replay, as eager calls do
def _dropout_mask(rng, p, shape, dtype):
    if p == 1:
        return np.zeros(shape, dtype)
    scale = dtype.type(1) / dtype.type(1 - p)  # as torch: in x's precision
    return (rng.random(shape, dtype=dtype) >= p) * scale


class LayerNorm(Module):
    """Normalizes over the trailing `normalized_shape` dimensions, as torch.nn.LayerNorm:

    y = (x - mean) / sqrt(var + eps) * weight + bias, with the biased variance (mean of
    squared deviations); weight starts at ones, bias at zeros (elementwise_affine=False:
    neither; bias=False: no bias). Built from mean, sub, mul, sqrt and div, so its
    gradients are the tape's.
    """

    def __init__(self, normalized_shape, eps=1e-5, elementwise_affine=True, bias=True,
                 dtype=np.float32):
        super().__init__()
        self.normalized_shape = _shape(normalized_shape)
        self.eps = nonnegative("LayerNorm", "eps", eps)
        self.elementwise_affine = bool(elementwise_affine)
        dtype = float_dtype(dtype, "LayerNorm")
        shape = self.normalized_shape
        self.weight = Parameter(np.ones(shape), dtype=dtype) if elementwise_affine else None
        self.bias = (Parameter(np.zeros(shape), dtype=dtype)
                     if elementwise_affine and bias else None)

    def forward(self, x):
        shape, k = self.normalized_shape, len(self.normalized_shape)
        actual = x.shape if isinstance(x, Tensor) else np.shape(x)
        if len(actual) < k or tuple(actual[len(actual) - k:]) != shape:
            raise ValueError(f"LayerNorm: normalized_shape={shape} expects an input of shape "
                             f"(*, {', '.join(map(str, shape))}), got {tuple(actual)}")
        axes = tuple(range(len(actual) - k, len(actual)))
        centered = sub(x, mean(x, axis=axes, keepdims=True))
        variance = mean(mul(centered, centered), axis=axes, keepdims=True)
        y = div(centered, sqrt(add(variance, self.eps)))
        if self.weight is not None:
            y = mul(y, self.weight)
        if self.bias is not None:
            y = add(y, self.bias)
        return y

    def extra_repr(self):
        return (f"{self.normalized_shape}, eps={self.eps}, "
                f"elementwise_affine={self.elementwise_affine}, bias={self.bias is not None}")


def _shape(normalized_shape):
    """normalized_shape (an int or a sequence of ints >= 1) as a non-empty tuple."""
    dims = ((normalized_shape,) if isinstance(normalized_shape, (int, np.integer))
            else normalized_shape)
    try:
        dims = tuple(dims)
    except TypeError:
        raise TypeError(f"LayerNorm: normalized_shape must be an int or a sequence of "
                        f"ints, got {normalized_shape!r}") from None
    if not dims or any(isinstance(n, (bool, np.bool_)) or not isinstance(n, (int, np.integer))
                       or n < 1 for n in dims):
        raise ValueError(f"LayerNorm: normalized_shape must be an int or a non-empty "
                         f"sequence of ints >= 1, got {normalized_shape!r}")
    return tuple(int(n) for n in dims)
