"""Tensors: an ndarray, whether it needs a gradient, and the node that made it."""
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
    """data as a C-contiguous, aligned, writeable float32/float64 ndarray.

    Like np.asarray, shares `data` when it already is such an array of the target
    dtype, and copies otherwise (or always, with copy=True).
    """
    if isinstance(data, Tensor):
        data = data.value
    array = data if isinstance(data, np.ndarray) else np.asarray(data)
    if array.dtype.kind not in "fiub":
        raise TypeError(f"{what}: cannot make a float tensor from {array.dtype} data")
    target = default_dtype(array, what) if dtype is None else float_dtype(dtype, what)
    if copy:
        return np.array(array, dtype=target, order="C", copy=True)
    return np.require(array, dtype=target, requirements="CAW")


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


class Tensor:
    """An ndarray that remembers how it was computed, for reverse-mode gradients.

    Build one with `fa.tensor` or `fa.Parameter`; ops return new Tensors.
    """

    __slots__ = ("value", "requires_grad", "grad", "_node", "_made_by", "_modified_at",
                 "_origin", "_sweep", "_consumed", "__weakref__")
    # NumPy defers to Tensor: ndarray + Tensor and ndarray @ Tensor return Tensors.
    __array_ufunc__ = None

    def __init__(self, data, dtype=None, requires_grad=False):
        self.value = to_array(data, dtype)
        self.requires_grad = bool(requires_grad)
        self.grad = None
        self._node = None
        self._made_by = None  # the vjp of the op that made it (its name is the op's)
        self._modified_at = -1  # the tape clock's reading at its last in-place update

    # --- array facts -----------------------------------------------------------
    @property
    def shape(self):
        return self.value.shape

    @property
    def ndim(self):
        return self.value.ndim

    @property
    def size(self):
        return self.value.size

    @property
    def dtype(self):
        return self.value.dtype

    @property
    def T(self):
        return ops.transpose(self)

    @property
    def is_leaf(self):
        return self._node is None

    def numpy(self):
        """The value ndarray (shared, not copied)."""
        return self.value

    def __array__(self, dtype=None, copy=None):
        if copy:
            return np.array(self.value, dtype=dtype, copy=True)
        return self.value if dtype is None else self.value.astype(dtype, copy=False)

    def item(self):
        return self.value.item()

    def detach(self):
        """The same value, cut from the graph."""
        return Tensor(self.value)

    def __len__(self):
        return len(self.value)

    def __bool__(self):
        return bool(self.value)

    def __float__(self):
        return float(self.value)

    def __repr__(self):
        body = np.array2string(self.value, precision=4, threshold=20, separator=", ",
                               prefix="tensor(")
        parts = [f"shape={self.shape}", f"dtype={self.dtype}"]
        if self._made_by is not None:
            parts.append(f"op={self._made_by.op_name}")
        if self.requires_grad:
            parts.append("requires_grad=True")
        return f"tensor({body}, {', '.join(parts)})"

    # --- gradients -------------------------------------------------------------
    def backward(self, seed=None, retain_graph=False):
        """Add d(self)/d(leaf) into every leaf's .grad, in one reverse sweep."""
        autograd.backward(self, seed=seed, retain_graph=retain_graph)

    # --- methods that are ops --------------------------------------------------
    def sum(self, axis=None, keepdims=False):
        return ops.sum(self, axis=axis, keepdims=keepdims)

    def mean(self, axis=None, keepdims=False):
        return ops.mean(self, axis=axis, keepdims=keepdims)

    def max(self, axis=None, keepdims=False):
        return ops.max(self, axis=axis, keepdims=keepdims)

    def reshape(self, *shape):
        return ops.reshape(self, *shape)

    def transpose(self, *axes):
        return ops.transpose(self, *axes)

    def __getitem__(self, index):
        return ops.getitem(self, index)

    # --- operators -------------------------------------------------------------
    def __add__(self, other):
        return ops.add(self, other)

    def __radd__(self, other):
        return ops.add(other, self)

    def __sub__(self, other):
        return ops.sub(self, other)

    def __rsub__(self, other):
        return ops.sub(other, self)

    def __mul__(self, other):
        return ops.mul(self, other)

    def __rmul__(self, other):
        return ops.mul(other, self)

    def __truediv__(self, other):
        return ops.div(self, other)

    def __rtruediv__(self, other):
        return ops.div(other, self)

    def __pow__(self, other):
        return ops.pow(self, other)

    def __rpow__(self, other):
        return ops.pow(other, self)

    def __matmul__(self, other):
        return ops.matmul(self, other)

    def __rmatmul__(self, other):
        return ops.matmul(other, self)

    def __neg__(self):
        return ops.neg(self)

    def __pos__(self):
        return self

    def __abs__(self):
        return ops.abs(self)

    # Comparisons give plain boolean arrays; Tensors stay hashable by identity.
    def __hash__(self):
        return id(self) >> 4  # by identity (compiled, a C shift; leaves key the sweep's dicts)

    def __eq__(self, other):
        return self.value == _plain(other)

    def __ne__(self, other):
        return self.value != _plain(other)

    def __lt__(self, other):
        return self.value < _plain(other)

    def __le__(self, other):
        return self.value <= _plain(other)

    def __gt__(self, other):
        return self.value > _plain(other)

    def __ge__(self, other):
        return self.value >= _plain(other)


def _plain(x):
    return x.value if isinstance(x, Tensor) else x


def make_tensor(value, made_by, node):
    """A Tensor for an op's result (no validation: value is already a proper array)."""
    t = Tensor.__new__(Tensor)
    t.value = value
    t.requires_grad = node is not None
    t.grad = None
    t._node = node
    t._made_by = made_by
    t._modified_at = -1
    return t


def tensor(data, dtype=None, requires_grad=False):
    """A leaf Tensor. float32/float64 data keep their dtype, other real data become float64.

    Shares `data` when it is a C-contiguous, aligned, writeable array of the target
    dtype (as np.asarray does), copies otherwise. Complex, object and string data, and a
    dtype other than float32/float64, raise TypeError.
    """
    return Tensor(data, dtype=dtype, requires_grad=requires_grad)


class Parameter(Tensor):
    """A leaf Tensor with requires_grad=True that owns a copy of `data`.

    The copy means optimizer updates never write into the caller's array.
    """

    __slots__ = ()

    def __init__(self, data, dtype=None):
        super().__init__(to_array(data, dtype, copy=True, what="Parameter"), requires_grad=True)


from . import _autograd as autograd  # noqa: E402  (circular: ops build Tensors)
from . import _ops as ops  # noqa: E402
