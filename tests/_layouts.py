"""Ways to lay an ndarray out in memory, and views of it, shared by the layout tests
and the campaign.

Each function returns a new array equal to `a` (0-d arrays included) with the layout
its name says.
"""
import numpy as np


def misaligned(a):
    """Data that starts one byte into a buffer, so it is not aligned for its dtype."""
    buffer = bytearray(a.nbytes + 1)
    out = np.frombuffer(buffer, a.dtype, count=a.size, offset=1).reshape(a.shape)
    out[...] = a
    return out


def read_only(a):
    out = a.copy()
    out.flags.writeable = False
    return out


def strided(a):
    """Every other element of a wider array along the last axis."""
    if a.ndim == 0:
        return a.copy()
    out = np.zeros(a.shape[:-1] + (2 * a.shape[-1],), a.dtype)[..., ::2]
    out[...] = a
    return out


def negative_strides(a):
    if a.ndim == 0:
        return a.copy()  # a[()] would be a NumPy scalar, not an array
    flip = (slice(None, None, -1),) * a.ndim
    return a[flip].copy()[flip]


LAYOUTS = {
    "C": lambda a: a.copy(),
    "fortran": lambda a: np.asfortranarray(a) if a.ndim else a.copy(),  # (it makes 0-d 1-d)
    "strided": strided,
    "negative-strides": negative_strides,
    "read-only": read_only,
    "byte-swapped": lambda a: a.astype(a.dtype.newbyteorder()),
    "misaligned": misaligned,
}


# Views made inside a graph: `view(t)` works on Tensors and ndarrays of any ndim >= 1;
# `base_shape(shape)` is the shape of an array whose view has `shape`.
VIEWS = {  # name: (view, base_shape)
    "transposed": (lambda t: t.T, lambda shape: shape[::-1]),        # Fortran-ordered
    "strided": (lambda t: t[..., ::2], lambda shape: shape[:-1] + (2 * shape[-1],)),
    "row-strided": (lambda t: t[::3], lambda shape: (3 * shape[0],) + shape[1:]),
    "negative-strides": (lambda t: t[(slice(None, None, -1),) * t.ndim], lambda shape: shape),
    "offset-slice": (lambda t: t[(slice(1, None),) * t.ndim],
                     lambda shape: tuple(n + 1 for n in shape)),
}
