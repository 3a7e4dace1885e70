"""Elementwise functions: NumPy's ufuncs (exp, log, log1p, sqrt, abs, tanh, neg, square),
clip, and the activations with compiled kernels (sigmoid, relu)."""
import numpy as np

from ..core.buffers import pooled_like
from ..core.tape import record, vjp_of
from ..core.operands import as_tensor
from ..core.tensor import Tensor
from ..kernels import pointwise
from .protocol import contribute, dense, in_order, order_of, public
from .softmax import log_softmax


def _elementwise(name, compute, grad, saves):
    """A unary elementwise op; grad(g, s) is its vjp, s the saved input ("x") or output ("y")."""

    @vjp_of(name)
    def vjp(g, saved, out):
        return (contribute(out[0], grad(g, saved)),)

    def op(x):
        x = as_tensor(name, x)
        y = compute(x.value)
        return record(vjp, y, (x,), x.value if saves == "x" else y if saves == "y" else None)

    op.__name__ = op.__qualname__ = name
    op.__doc__ = f"{name}(x), elementwise."
    op.compute = compute  # what fa.capture's replay calls
    return op


neg = public(_elementwise("neg", np.negative, lambda g, _: -g, saves=None))
exp = public(_elementwise("exp", np.exp, lambda g, y: g * y, saves="y"))
sqrt = public(_elementwise("sqrt", np.sqrt, lambda g, y: g / (2 * y), saves="y"))
abs = public(_elementwise("abs", np.abs, lambda g, x: g * np.sign(x), saves="x"))  # abs'(0) = 0
tanh = public(_elementwise("tanh", np.tanh, lambda g, y: g * (1 - y * y), saves="y"))
square = public(_elementwise("square", np.square, lambda g, x: 2 * x * g, saves="x"))
log1p = public(_elementwise("log1p", np.log1p, lambda g, x: g / (1 + x), saves="x"))
_log = _elementwise("log", np.log, lambda g, x: g / x, saves="x")


@public
def log(x):
    """Natural log. log(softmax(z)) is computed as log_softmax(z), stably."""
    origin = getattr(x, "_origin", None)
    if origin is not None:
        return log_softmax(*origin)
    return _log(x)


# --- clip ---------------------------------------------------------------------------

def _bound(name, bound, dtype):
    """A clip bound: None, or a real (or bool) scalar taken in x's dtype, as torch.clamp."""
    if bound is None:
        return None
    if isinstance(bound, Tensor) or np.ndim(bound) != 0 or \
            np.asarray(bound).dtype.kind not in "biuf":
        raise TypeError(f"clip: {name} must be a real scalar or None, got {bound!r}")
    with np.errstate(over="ignore"):  # 1e300 with a float32 x is inf, as in torch
        return dtype.type(bound)


@public
def clip(x, lo=None, hi=None):
    """x limited to [lo, hi] (scalars; either may be None), as torch.clamp: the gradient
    passes where lo <= x <= hi, both boundaries included; lo > hi gives hi everywhere."""
    x = as_tensor("clip", x)
    lo, hi = _bound("lo", lo, x.dtype), _bound("hi", hi, x.dtype)
    if lo is None and hi is None:
        raise ValueError("clip: at least one of lo and hi must be given (both are None)")
    y = x.value
    if lo is not None:
        y = np.maximum(y, lo)
    if hi is not None:
        y = np.minimum(y, hi)  # after lo: with lo > hi, hi wins
    return record(clip_vjp, y, (x,), (x.value, lo, hi))


@vjp_of("clip")
def clip_vjp(g, saved, out):
    x, lo, hi = saved
    inside = np.ones(x.shape, bool) if lo is None else x >= lo
    if hi is not None:
        inside &= x <= hi
    return (contribute(out[0], np.where(inside, g, g.dtype.type(0))),)


# --- activations (compiled) -------------------------------------------------------

def _activation(name, kernel, grad_kernel, doc):
    """A unary op computed by a compiled kernel and differentiated from its output.

    The kernels read and write flat memory, so x, y, g and the adjoint they accumulate
    into must share one memory order (y's, which is x's).
    """

    @vjp_of(name)
    def vjp(g, saved, out):
        (y,) = saved
        order = order_of(y)
        if not in_order(g, order):
            g = np.asarray(g, order=order)
        adjoint = out[0]
        if adjoint is not None and in_order(adjoint, order):
            return (grad_kernel(g, y, adjoint, True),)
        # a new contribution (allocated by the kernel unless pooled), added by the sweep
        return (grad_kernel(g, y, pooled_like(y, order), False),)

    def op(x):
        x = as_tensor(name, x)
        y = kernel(dense(x.value))
        return record(vjp, y, (x,), (y,))

    op.__name__ = op.__qualname__ = name
    op.__doc__ = doc
    return op


sigmoid = public(_activation("sigmoid", pointwise.sigmoid, pointwise.sigmoid_grad,
                             "1 / (1 + exp(-x)), computed stably by a compiled kernel."))
relu = public(_activation("relu", pointwise.relu, pointwise.relu_grad,
                          "max(x, 0), with relu'(0) = 0."))
