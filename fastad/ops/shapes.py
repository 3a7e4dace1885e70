"""Ops that move elements without changing them: reshape, transpose, concatenate, stack."""
import numpy as np

from ..core.tape import SKIP, record, vjp_of
from ..core.operands import as_tensor
from .protocol import contribute, normalize_axis, public


@public
def reshape(x, *shape):
    """x with a new shape (same elements, C order)."""
    x = as_tensor("reshape", x)
    if len(shape) == 1 and not isinstance(shape[0], (int, np.integer)):
        shape = tuple(shape[0])
    try:
        value = x.value.reshape(shape)
    except (ValueError, TypeError) as e:
        raise ValueError(f"reshape: cannot reshape {x.shape} into {shape}: {e}") from None
    return record(reshape_vjp, value, (x,), (x.shape,))


@vjp_of("reshape")
def reshape_vjp(g, saved, out):
    (shape,) = saved
    return (contribute(out[0], g.reshape(shape)),)


@public
def transpose(x, *axes):
    """x with its axes permuted (reversed when none are given)."""
    x = as_tensor("transpose", x)
    if len(axes) == 1 and not isinstance(axes[0], (int, np.integer)):
        axes = axes[0]
    axes = tuple(range(x.ndim))[::-1] if axes is None or len(axes) == 0 else tuple(axes)
    try:
        value = x.value.transpose(axes)
    except (ValueError, TypeError) as e:
        raise ValueError(f"transpose: bad axes {axes} for shape {x.shape}: {e}") from None
    return record(transpose_vjp, value, (x,), (np.argsort(axes),))


@vjp_of("transpose")
def transpose_vjp(g, saved, out):
    (inverse,) = saved
    return (contribute(out[0], g.transpose(inverse)),)


def _joined(op, tensors):
    """The operands of concatenate or stack: at least one, all of one dtype."""
    tensors = [as_tensor(op, t) for t in tensors]
    if not tensors:
        raise ValueError(f"{op}: needs at least one tensor")
    dtypes = {t.dtype for t in tensors}
    if len(dtypes) > 1:
        raise TypeError(f"{op}: cannot mix dtypes {sorted(map(str, dtypes))}")
    return tensors


def _join(op, join, tensors, axis):
    try:
        return join([t.value for t in tensors], axis=axis)
    except ValueError as e:  # AxisError included
        shapes = [t.shape for t in tensors]
        raise ValueError(f"{op}: shapes {shapes} along axis {axis}: {e}") from None


@public
def concatenate(tensors, axis=0):
    """Join tensors along an existing axis."""
    tensors = _joined("concatenate", tensors)
    value = _join("concatenate", np.concatenate, tensors, axis)
    axis = normalize_axis("concatenate", axis, value.ndim)
    splits = np.cumsum([t.shape[axis] for t in tensors])[:-1]
    return record(concatenate_vjp, value, tuple(tensors), (splits, axis))


@vjp_of("concatenate")
def concatenate_vjp(g, saved, out):
    splits, axis = saved
    pieces = np.split(g, splits, axis=axis)
    return tuple(None if o is SKIP else contribute(o, p) for o, p in zip(out, pieces))


@public
def stack(tensors, axis=0):
    """Join tensors of one shape along a new axis."""
    tensors = _joined("stack", tensors)
    value = _join("stack", np.stack, tensors, axis)
    return record(stack_vjp, value, tuple(tensors), (normalize_axis("stack", axis, value.ndim),))


@vjp_of("stack")
def stack_vjp(g, saved, out):
    (axis,) = saved
    pieces = np.moveaxis(g, axis, 0)
    return tuple(None if o is SKIP else contribute(o, p) for o, p in zip(out, pieces))
