"""Reductions over axes: sum, mean, max and min (ties share the gradient), argmax."""
import numpy as np

from ..core.tape import record, vjp_of
from ..core.operands import as_tensor
from ..core.tensor import Tensor
from .protocol import contribute, contribute_broadcast, normalize_axis, public


def _axes(op, axis, ndim):
    """axis (None, int or tuple) as a sorted tuple of non-negative axes."""
    if axis is None:
        return tuple(range(ndim))
    axes = (axis,) if isinstance(axis, (int, np.integer)) else tuple(axis)
    normalized = tuple(sorted(normalize_axis(op, a, ndim) for a in axes))
    if len(set(normalized)) != len(normalized):
        raise ValueError(f"{op}: repeated axis in {axis!r}")
    return normalized


def _kept_shape(shape, axes):
    """The shape of a reduction's result with keepdims=True, which its adjoint reshapes to."""
    return tuple(1 if i in axes else n for i, n in enumerate(shape))


@public
def sum(x, axis=None, keepdims=False):
    """Sum over `axis` (None: all; an int or a tuple)."""
    x = as_tensor("sum", x)
    axes = _axes("sum", axis, x.ndim)
    value = summed(x.value, axes, keepdims)
    return record(sum_vjp, value, (x,), (x.shape, _kept_shape(x.shape, axes)))


def summed(value, axes, keepdims):
    return np.asarray(value.sum(axis=axes, keepdims=keepdims))


def averaged(value, axes, keepdims):
    return np.asarray(value.mean(axis=axes, keepdims=keepdims))


@vjp_of("sum")
def sum_vjp(g, saved, out):
    shape, kept = saved
    return (contribute_broadcast(out[0], g.reshape(kept), shape),)


@public
def mean(x, axis=None, keepdims=False):
    """Mean over `axis` (None: all; an int or a tuple)."""
    x = as_tensor("mean", x)
    axes = _axes("mean", axis, x.ndim)
    value = averaged(x.value, axes, keepdims)
    count = int(np.prod([x.shape[a] for a in axes]))
    return record(mean_vjp, value, (x,), (x.shape, _kept_shape(x.shape, axes), count))


@vjp_of("mean")
def mean_vjp(g, saved, out):
    shape, kept, count = saved
    return (contribute_broadcast(out[0], g.reshape(kept) / count, shape),)


def _extremum(name, reduce):
    """max or min over `axis` (None: all; an int or a tuple); tied extrema share the
    gradient equally (as torch.amax / torch.amin); an empty axis is a ValueError."""

    @vjp_of(name)
    def vjp(g, saved, out):
        x, y, axes, kept = saved
        is_extremum = x == y.reshape(kept)
        ties = is_extremum.sum(axis=axes, keepdims=True, dtype=g.dtype)
        return (contribute(out[0], is_extremum * (g.reshape(kept) / ties)),)

    def op(x, axis=None, keepdims=False):
        x = as_tensor(name, x)
        axes = _axes(name, axis, x.ndim)
        if any(x.shape[a] == 0 for a in axes):
            raise ValueError(f"{name}: cannot reduce an empty axis (shape {x.shape}, "
                             f"axis {axis!r})")
        value = np.asarray(reduce(x.value, axis=axes, keepdims=keepdims))
        return record(vjp, value, (x,), (x.value, value, axes, _kept_shape(x.shape, axes)))

    op.__name__ = op.__qualname__ = name
    op.__doc__ = f"{name}(x, axis=None, keepdims=False); tied values share the gradient."
    return op


max = public(_extremum("max", np.max))
min = public(_extremum("min", np.min))


@public
def argmax(x, axis=None):
    """Indices of the maxima (an ndarray; not differentiable)."""
    return np.asarray(np.argmax(x.value if isinstance(x, Tensor) else np.asarray(x), axis=axis))
