"""Ops that move elements without changing them: reshape, transpose, concatenate."""
import numpy as np

from ..core.tape import SKIP, record, vjp_of
from ..core.tensor import as_tensor
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


@public
def concatenate(tensors, axis=0):
    """Join tensors along an existing axis."""
    tensors = list(tensors)
    if not tensors:
        raise ValueError("concatenate: needs at least one tensor")
    tensors = [as_tensor("concatenate", t) for t in tensors]
    dtypes = {t.dtype for t in tensors}
    if len(dtypes) > 1:
        raise TypeError(f"concatenate: cannot mix dtypes {sorted(map(str, dtypes))}")
    try:
        value = np.concatenate([t.value for t in tensors], axis=axis)
    except ValueError as e:
        shapes = [t.shape for t in tensors]
        raise ValueError(f"concatenate: shapes {shapes} along axis {axis}: {e}") from None
    axis = normalize_axis("concatenate", axis, value.ndim)
    splits = np.cumsum([t.shape[axis] for t in tensors])[:-1]
    return record(concatenate_vjp, value, tuple(tensors), (splits, axis))


@vjp_of("concatenate")
def concatenate_vjp(g, saved, out):
    splits, axis = saved
    pieces = np.split(g, splits, axis=axis)
    return tuple(None if o is SKIP else contribute(o, p) for o, p in zip(out, pieces))
