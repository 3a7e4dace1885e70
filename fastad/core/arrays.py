"""The arrays fastad computes with: float32 or float64, C-contiguous, aligned, writeable
and never the caller's array object. Every value that enters the tape passes here."""
import numpy as np

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def float_dtype(dtype, what="tensor"):
    """np.dtype(dtype) if it is float32 or float64, else TypeError."""
    try:
        resolved = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"{what}: dtype must be float32 or float64, got {dtype!r}") from None
    if resolved not in FLOAT_DTYPES:
        raise TypeError(f"{what}: dtype must be float32 or float64, got {resolved}")
    return resolved


def default_dtype(array, what="tensor"):
    """The dtype fa.tensor gives this data: float32/float64 kept, other reals float64."""
    kind = array.dtype.kind
    if kind == "f" and array.dtype.itemsize in (4, 8):
        return np.dtype(f"f{array.dtype.itemsize}")
    if kind in "fiub":
        return FLOAT_DTYPES[1]
    raise TypeError(f"{what}: cannot make a float tensor from {array.dtype} data")


def to_array(data, dtype=None, copy=False, what="tensor"):
    """data (an ndarray or array-like) as a C-contiguous, aligned, writeable
    float32/float64 ndarray.

    Like np.asarray, shares `data`'s memory when it already is such an array of the
    target dtype, and copies otherwise (or always, with copy=True).
    """
    array = data if isinstance(data, np.ndarray) else np.asarray(data)
    if array.dtype.kind not in "fiub":
        raise TypeError(f"{what}: cannot make a float tensor from {array.dtype} data")
    target = default_dtype(array, what) if dtype is None else float_dtype(dtype, what)
    if copy:
        return np.array(array, dtype=target, order="C", copy=True)
    result = np.require(array, dtype=target, requirements="CAW")
    # The caller's array object stays the caller's: what they later do to it
    # (`X.shape = ...`) must not reach a tensor or a tape, so share memory through a view.
    return result.view() if result is data else result


def checked_assignment(data, template, what, share_object=False):
    """`data` as an array fit to replace `template` (a tensor's value or gradient): the
    same shape (ValueError) and precision (TypeError), in either byte order; a view of
    it, or a copy where the kernels need another layout. A gradient may keep the
    caller's object itself (`p.grad is g`, as in PyTorch) and its memory order: what
    reads it checks its shape first."""
    array = data if isinstance(data, np.ndarray) else np.asarray(data)
    if array.dtype.kind != "f" or array.dtype.itemsize != template.dtype.itemsize:
        raise TypeError(f"{what}: cannot assign {array.dtype} data to a tensor of dtype "
                        f"{template.dtype}; cast it first (array.astype(np.{template.dtype}))")
    if array.shape != template.shape:
        raise ValueError(f"{what}: cannot assign an array of shape {array.shape} to a "
                         f"tensor of shape {template.shape}")
    if share_object:
        return np.require(array, dtype=template.dtype, requirements="AW")
    return to_array(array, template.dtype, what=what)


def check_matches(array, template, what):
    """Raise unless `array` is an ndarray of `template`'s dtype (TypeError) and shape
    (ValueError); messages start with `what`."""
    if not isinstance(array, np.ndarray):
        raise TypeError(f"{what} must be an ndarray, got {type(array).__name__}")
    if array.dtype != template.dtype:
        raise TypeError(f"{what} has dtype {array.dtype}, "
                        f"the parameter has dtype {template.dtype}")
    if array.shape != template.shape:
        raise ValueError(f"{what} has shape {array.shape}, "
                         f"the parameter has shape {template.shape}")
