"""Arithmetic with NumPy broadcasting: add, sub, mul, div, pow, maximum, minimum, and where."""
import numpy as np

from ..core.tape import SKIP, record, vjp_of
from ..core.operands import operands
from ..core.tensor import Tensor
from ..kernels import pointwise
from .protocol import contribute_reduced, public, shape_error


def _arithmetic(op, ufunc):
    """a op b: a compiled loop for operands of one shape and memory order or an array and
    a scalar (where NumPy's dispatch would cost more than the arithmetic on small arrays),
    NumPy's ufunc for everything else (broadcasting)."""

    def compute(a, b):
        y = pointwise.arithmetic(op, a, b)
        return ufunc(a, b) if y is None else y

    return compute


def _add_broadcast(a, b):
    if (type(a) is np.ndarray and type(b) is np.ndarray and a.ndim == 2 and b.ndim == 1
            and a.shape[1] == b.shape[0] and a.flags.c_contiguous and b.flags.c_contiguous):
        y = np.empty(a.shape, a.dtype)
        pointwise.add_row(a, b, y)  # the bias pattern: x @ w + b
        return y
    return np.add(a, b)


_add_values = _arithmetic(pointwise.Arithmetic.ADD, _add_broadcast)
_sub_values = _arithmetic(pointwise.Arithmetic.SUB, np.subtract)
_mul_values = _arithmetic(pointwise.Arithmetic.MUL, np.multiply)
_div_values = _arithmetic(pointwise.Arithmetic.DIV, np.true_divide)


def _broadcasting(name, compute, grad_a, grad_b, saves_operands=True, saves_output=False):
    """A binary op with NumPy broadcasting; grad_a/grad_b(g, a, b, y) are its partials.

    The vjp gets a, b and y only if the op saves them (saving keeps them alive until the
    sweep passes this node).
    """

    @vjp_of(name)
    def vjp(g, saved, out):
        a_shape, b_shape, a, b, y = saved
        return (None if out[0] is SKIP else
                contribute_reduced(out[0], grad_a(g, a, b, y), a_shape),
                None if out[1] is SKIP else
                contribute_reduced(out[1], grad_b(g, a, b, y), b_shape))

    def op(a, b):
        av, bv, ta, tb = operands(name, a, b)
        try:
            y = compute(av, bv)
        except ValueError:
            raise shape_error(name, av, bv) from None
        saved = (av.shape, bv.shape, av if saves_operands else None,  # scalars have shape ()
                 bv if saves_operands else None, y if saves_output else None)
        return record(vjp, y, (ta, tb), saved)

    op.__name__ = op.__qualname__ = name
    op.__doc__ = f"{name}(a, b) elementwise, with NumPy broadcasting."
    return op


add = public(_broadcasting("add", _add_values, lambda g, a, b, y: g, lambda g, a, b, y: g,
                          saves_operands=False))
sub = public(_broadcasting("sub", _sub_values, lambda g, a, b, y: g, lambda g, a, b, y: -g,
                          saves_operands=False))
mul = public(_broadcasting("mul", _mul_values, lambda g, a, b, y: _mul_values(g, b),
                          lambda g, a, b, y: _mul_values(g, a)))
div = public(_broadcasting("div", _div_values, lambda g, a, b, y: _div_values(g, b),
                          lambda g, a, b, y: _div_values(_mul_values(g, y), -b),  # -g y / b
                          saves_output=True))
pow = public(_broadcasting("pow", np.power, lambda g, a, b, y: g * b * a ** (b - 1),
                          lambda g, a, b, y: g * y * np.log(a, dtype=g.dtype),
                          saves_output=True))


def _extremum(name, compute, loses):
    """maximum or minimum: the gradient goes to the operand that wins, as in
    torch.maximum: ties split it half/half, and a NaN (which both return) passes it to both."""

    def share(g, mine, other):
        return np.where(mine == other, g / 2, np.where(loses(mine, other), g.dtype.type(0), g))

    return _broadcasting(name, compute, lambda g, a, b, y: share(g, a, b),
                         lambda g, a, b, y: share(g, b, a))


maximum = public(_extremum("maximum", np.maximum, np.less))
minimum = public(_extremum("minimum", np.minimum, np.greater))


# --- where ------------------------------------------------------------------------

@public
def where(cond, a, b):
    """Elementwise a where cond is true, else b (cond needs no gradient)."""
    cond = np.asarray(cond.value if isinstance(cond, Tensor) else cond).astype(bool)
    av, bv, ta, tb = operands("where", a, b)
    try:
        value = np.where(cond, av, bv)
    except ValueError:
        raise shape_error("where", cond, av, bv) from None
    return record(where_vjp, value, (ta, tb), (cond, av.shape, bv.shape))


@vjp_of("where")
def where_vjp(g, saved, out):
    cond, a_shape, b_shape = saved
    zero = g.dtype.type(0)
    return (None if out[0] is SKIP else
            contribute_reduced(out[0], np.where(cond, g, zero), a_shape),
            None if out[1] is SKIP else
            contribute_reduced(out[1], np.where(cond, zero, g), b_shape))
