"""fa.nn.utils: clip_grad_norm_, as torch.nn.utils."""
import collections
import math

import numpy as np

from .._checks import real
from ..core.modes import replayed
from ..core.tensor import Tensor

__all__ = ["clip_grad_norm_"]


def _norm(x, norm_type):
    """The norm_type-norm of array x's elements, in x's dtype (0 for an empty x)."""
    flat = x.reshape(-1)  # a view of a contiguous gradient
    if flat.size == 0:
        return x.dtype.type(0)
    if norm_type == 2:
        return np.sqrt(np.dot(flat, flat))  # BLAS, no temporary
    if norm_type == math.inf:
        return max(flat.max(), -flat.min())
    return x.dtype.type(np.linalg.norm(flat, ord=norm_type))


@replayed
def clip_grad_norm_(parameters, max_norm, norm_type=2.0, error_if_nonfinite=False):
    """Scale the parameters' gradients in place so that their total norm is at most
    max_norm, as torch.nn.utils.clip_grad_norm_; returns the total norm before clipping.

    total = the norm_type-norm of the per-gradient norm_type-norms (inf: the max abs;
    any float p); every `.grad` is multiplied by min(1, max_norm / (total + 1e-6)) (so,
    as PyTorch, also slightly when total is just below max_norm, never when the factor
    is 1). The total is a 0-d ndarray of the gradients' dtype (`.item()` gives a float),
    0.0 in float32 when no parameter has a gradient. `parameters` is a Tensor or an
    iterable of Tensors; those whose `.grad` is None are skipped. A non-finite total
    raises RuntimeError with error_if_nonfinite=True, else scales by NaN as PyTorch.
    """
    params = [parameters] if isinstance(parameters, Tensor) else list(parameters)
    for i, p in enumerate(params):
        if not isinstance(p, Tensor):
            raise TypeError(f"clip_grad_norm_: parameters[{i}] is a {type(p).__name__}, "
                            "not a fastad Tensor")
    max_norm = real("clip_grad_norm_", "max_norm", max_norm)
    norm_type = real("clip_grad_norm_", "norm_type", norm_type)
    owners = [p for p in params if p.grad is not None]
    if not owners:
        return np.asarray(0.0, np.float32)
    norms = [_norm(p.grad, norm_type) for p in owners]
    total = np.asarray(_norm(np.array(norms), norm_type))
    if error_if_nonfinite and not np.isfinite(total):
        raise RuntimeError(f"clip_grad_norm_: the total norm of order {norm_type} of the "
                           f"gradients is non-finite ({total.item()}), so it cannot be "
                           "clipped; to disable this error and scale the gradients by the "
                           "non-finite norm anyway, set error_if_nonfinite=False")
    factor = np.minimum(max_norm / (total + total.dtype.type(1e-6)), total.dtype.type(1))
    if factor < 1 or np.isnan(factor):
        with np.errstate(invalid="ignore"):  # inf * 0 is NaN, silently as in torch
            _scale_in_place(owners, factor)
    return total


def _scale_in_place(owners, factor):
    """p.grad *= factor for each p, once per gradient array. Arrays that are views of one
    buffer (or read-only) are replaced by scaled copies, made before anything is scaled."""
    arrays = {id(p.grad): p.grad for p in owners}  # an array shared by parameters: once
    roots = collections.Counter(id(_root(g)) for g in arrays.values())
    copies = {key: g * g.dtype.type(factor) for key, g in arrays.items()
              if roots[id(_root(g))] > 1 or not g.flags.writeable}
    for key, g in arrays.items():
        if key not in copies:
            np.multiply(g, g.dtype.type(factor), out=g)
    for p in owners:
        if id(p.grad) in copies:
            p.grad = copies[id(p.grad)]


def _root(array):
    """The array that owns `array`'s memory (itself if it owns it)."""
    return array if array.base is None else array.base
