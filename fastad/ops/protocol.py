"""What every op shares: the registry of public ops, memory-order helpers, and the
accumulation protocol of vjps (see fastad/core/tape.py): the first contribution to an
adjoint is returned as it is, later ones are added into the buffer the sweep passes.

An op is one `@public` function (its forward: it validates its operands, computes the
value and calls `record`) beside its `@vjp_of` function; fastad's namespace and the
test tables are built from `REGISTRY`.
"""
import numpy as np

from ..core.buffers import empty
from ..core.modes import replayed
from ..kernels import pointwise

REGISTRY = {}


def public(op, name=None):
    """Register `op` as fastad's public op `name` (default: its own name), marked
    `replayed` so that fa.capture can record and replay its calls."""
    if not hasattr(op, "__wrapped__"):
        op = replayed(op)
    REGISTRY[name or op.__name__] = op
    return op


def shape_error(op, *values):
    shapes = " and ".join(str(np.shape(v)) for v in values)
    return ValueError(f"{op}: shapes {shapes} do not broadcast together")


def own_labels(array):
    """A C-contiguous intp copy of checked labels: the caller's array could change
    before the backward, whose kernel writes at the positions the labels give."""
    return np.array(array, dtype=np.intp, order="C", copy=True)


def normalize_axis(op, axis, ndim):
    if not isinstance(axis, (int, np.integer)) or isinstance(axis, bool):
        raise TypeError(f"{op}: axis must be an int, got {axis!r}")
    if not -ndim <= axis < ndim:
        raise np.exceptions.AxisError(f"{op}: axis {axis} is out of bounds for {ndim}-d input")
    return int(axis) % ndim


# --- memory order -----------------------------------------------------------------

def contiguous(x):
    return x if x.flags.c_contiguous else np.ascontiguousarray(x)


def order_of(x):
    """'F' for an array that is F- but not C-contiguous, else 'C'."""
    flags = x.flags
    return "F" if flags.f_contiguous and not flags.c_contiguous else "C"


def dense(x):
    """x if it is C- or F-contiguous (elementwise kernels read flat memory), else a C copy."""
    flags = x.flags
    return x if flags.c_contiguous or flags.f_contiguous else np.ascontiguousarray(x)


def in_order(x, order):
    return x.flags.c_contiguous if order == "C" else x.flags.f_contiguous


# --- accumulating contributions ---------------------------------------------------

def contribute(out, contribution):
    """The first contribution is kept as it is; later ones are added into `out`."""
    if out is None:
        return contribution
    out += contribution
    return out


def sum_to(g, shape):
    """Sum a broadcast adjoint back down to an operand's shape (a fresh array)."""
    lead = g.ndim - len(shape)
    if lead:
        g = np.asarray(g.sum(axis=tuple(range(lead))))
    ones = tuple(i for i, n in enumerate(shape) if n == 1 and g.shape[i] != 1)
    if ones:
        g = g.sum(axis=ones, keepdims=True)
    return g


def contribute_reduced(out, g, shape):
    """Accumulate `g`, summed over the axes an operand of `shape` was broadcast along."""
    if g.shape == shape:
        return contribute(out, g)
    if g.ndim == 2 and len(shape) == 1 and g.shape[1] == shape[0] and g.flags.c_contiguous:
        return column_sum(out, g)
    return contribute(out, sum_to(g, shape))


def column_sum(out, g):
    buffer, accumulate = kernel_out(out, g.shape[1:], g.dtype)
    pointwise.column_sum(g, buffer, accumulate)
    return buffer


def contribute_broadcast(out, g, shape):
    """Accumulate `g` broadcast up to `shape`."""
    if out is None:
        out = np.empty(shape, g.dtype)
        out[...] = g
        return out
    out += g
    return out


def kernel_out(out, shape, dtype, order="C"):
    """(buffer, accumulate) for a kernel writing a contribution in `order` into `out`.

    An adjoint that ended up in another memory order gets a fresh contribution, which
    the sweep then adds to it.
    """
    if out is None or not in_order(out, order):
        return empty(shape, dtype, order), False
    return out, True
