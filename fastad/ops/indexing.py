"""x[index]: basic slicing and advanced (integer and boolean array) indexing, with the
label pick x[arange(N), y] in a compiled kernel."""
import numpy as np

from ..core.tape import record, vjp_of
from ..core.operands import as_tensor
from ..core.tensor import Tensor
from ..kernels import rows
from .protocol import contiguous, kernel_out, own_labels, public


_BASIC_INDEX = (int, np.integer, bool, np.bool_, slice, type(None), type(Ellipsis))


def _index_key(index):
    """The index as NumPy reads it, with every advanced part an array of fastad's own."""
    if isinstance(index, tuple):
        return tuple([_index_part(part) for part in index])
    return _index_part(index)


def _index_part(part):
    """Tensors become their values; any other sequence (list, tuple inside the index,
    array.array, range, deque, ...) an array, as NumPy converts it; arrays are copied,
    since the backward scatters at these positions after the caller may have changed
    them."""
    if isinstance(part, Tensor):
        part = part.value
    if isinstance(part, np.ndarray):
        return part.copy()
    if isinstance(part, _BASIC_INDEX) or hasattr(part, "__index__"):
        return part
    array = np.array(part)
    # NumPy reads an empty sequence as an empty integer index (np.array makes it float)
    return array.astype(np.intp) if array.size == 0 else array


def _is_advanced(index):
    parts = index if isinstance(index, tuple) else (index,)
    return any(isinstance(p, np.ndarray) for p in parts)


def _row_labels(shape, index):
    """Labels y when index is (arange(N), y) on an (N, C) array, with y in [0, C)."""
    if len(shape) != 2 or not isinstance(index, tuple) or len(index) != 2:
        return None
    rows, cols = index
    n, c = shape
    if not (isinstance(rows, np.ndarray) and isinstance(cols, np.ndarray)
            and rows.shape == (n,) and cols.shape == (n,) and n > 0
            and rows.dtype.kind in "iu" and cols.dtype.kind in "iu"):
        return None
    if not np.array_equal(rows, np.arange(n)) or cols.min() < 0 or cols.max() >= c:
        return None
    return own_labels(cols)


@public
def getitem(x, index):
    """x[index]: basic slicing and integer/boolean array indexing, as NumPy does."""
    x = as_tensor("getitem", x)
    index = _index_key(index)
    labels = _row_labels(x.shape, index)
    if labels is not None:
        value = np.empty(x.shape[0], x.dtype)
        rows.pick(contiguous(x.value), labels, value)
        return record(pick_vjp, value, (x,), (labels, x.shape))
    try:
        value = x.value[index]
    except (IndexError, TypeError, ValueError) as e:
        raise type(e)(f"getitem: {e} (indexing a tensor of shape {x.shape})") from None
    if not isinstance(value, np.ndarray):
        value = np.asarray(value)
    return record(getitem_vjp, value, (x,), (index, x.shape))


@vjp_of("getitem")
def getitem_vjp(g, saved, out):
    index, shape = saved
    buffer = np.zeros(shape, g.dtype) if out[0] is None else out[0]
    if _is_advanced(index):
        np.add.at(buffer, index, g)
    else:
        buffer[index] += g
    return (buffer,)


@vjp_of("getitem")
def pick_vjp(g, saved, out):
    labels, shape = saved
    buffer, accumulate = kernel_out(out[0], shape, g.dtype)
    rows.pick_grad(contiguous(g), labels, buffer, accumulate)
    return (buffer,)
