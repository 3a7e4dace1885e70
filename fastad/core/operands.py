"""How data becomes a Tensor: fa.tensor and Parameter, and the operands of an op (the
rules of fa.tensor for non-Tensors, one shared dtype for a binary op's two operands)."""
import numpy as np

from .arrays import to_array
from .tensor import Tensor, beside


def tensor(data, dtype=None, requires_grad=False):
    """A leaf Tensor. float32/float64 data keep their dtype, other real data become float64.

    Shares `data`'s memory when it is a C-contiguous, aligned, writeable array of the
    target dtype (as np.asarray does), copies otherwise. Complex, object and string
    data, and a dtype other than float32/float64, raise TypeError.
    """
    return Tensor(data, dtype=dtype, requires_grad=requires_grad)


class Parameter(Tensor):
    """A leaf Tensor with requires_grad=True that owns a copy of `data`.

    The copy means optimizer updates never write into the caller's array.
    """

    __slots__ = ()

    def __init__(self, data, dtype=None):
        data = data.value if isinstance(data, Tensor) else data
        super().__init__(to_array(data, dtype, copy=True, what="Parameter"), requires_grad=True)


def as_tensor(op, x):
    """x as a Tensor (non-Tensors follow the fa.tensor rules)."""
    if isinstance(x, Tensor):
        return x
    return Tensor(to_array(x, what=op))


def operands(op, a, b):
    """(a value, b value, a Tensor or None, b Tensor or None), with one shared dtype."""
    if isinstance(a, Tensor):
        return a._value, beside(op, a, b), a, b if isinstance(b, Tensor) else None
    if isinstance(b, Tensor):
        return beside(op, b, a), b._value, None, b
    # Neither is a Tensor: the array-like one becomes one, and a Python or NumPy scalar
    # beside it takes its dtype (fa.pow(float32_array, 3) is float32, as in NumPy).
    if _is_scalar(a) and not _is_scalar(b):
        return operands(op, a, as_tensor(op, b))
    if _is_scalar(b) and not _is_scalar(a):
        return operands(op, as_tensor(op, a), b)
    return operands(op, as_tensor(op, a), as_tensor(op, b))


def _is_scalar(x):
    return isinstance(x, (int, float, np.number, np.bool_))
