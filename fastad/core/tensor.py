"""Tensors: an ndarray, whether it needs a gradient, and the node that made it; the
checked updates of their values; and how a constant joins a Tensor in an op (the rest
of the operand rules: operands.py)."""
import numpy as np

from .arrays import checked_assignment, to_array
from .clock import mark_modified
from .modes import modes, replayed, special
from .numpy_names import COMPARISONS, NUMPY_OPERATORS, fastad_name, numpy_message

# The one reference upward: fastad's public namespace, whose functions Tensor's
# operators and methods call (`t + u` is `fa.add(t, u)`). fastad/__init__.py sets it
# once the ops are defined; the core itself imports no op.
api = None


class Tensor:
    """An ndarray that remembers how it was computed, for reverse-mode gradients.

    Build one with `fa.tensor` or `fa.Parameter`; ops return new Tensors.
    """

    __slots__ = ("_value", "requires_grad", "_grad", "_node", "_made_by", "_modified_at",
                 "_origin", "_sweep", "_consumed", "__weakref__")

    def __init__(self, data, dtype=None, requires_grad=False):
        self._value = to_array(data.value if isinstance(data, Tensor) else data, dtype)
        self.requires_grad = bool(requires_grad)
        self._grad = None
        self._node = None
        self._made_by = None  # the vjp of the op that made it (its name is the op's)
        self._modified_at = -1  # the tape clock's reading at its last in-place update

    # --- the two attributes a user may assign, checked like an op's input ----------
    @property
    def value(self):
        """The ndarray (float32 or float64, C-contiguous). Assigning an array of the same
        shape and precision replaces it (a view of it, or a copy in a layout the kernels
        accept) and marks the tensor as modified, like an optimizer step."""
        if special.count and modes.capture is not None:  # inline: ops read .value a lot
            modes.capture.host_read(self, "t.value")
        return self._value

    @value.setter
    def value(self, data):
        assign_value(self, data)

    @property
    def grad(self):
        """The gradient filled by `backward()` (an ndarray of the tensor's shape and
        dtype), or None. Assigned values are checked as for `.value`."""
        if special.count and modes.capture is not None:
            modes.capture.host_read(self, "t.grad")
        return self._grad

    @grad.setter
    def grad(self, data):
        assign_grad(self, data)

    def _host_read(self, what):
        """Tell a running fa.capture that Python reads this tensor's value (`what`)."""
        if special.count and modes.capture is not None:
            modes.capture.host_read(self, what)

    # --- array facts -----------------------------------------------------------
    @property
    def shape(self):
        return self._value.shape

    @property
    def ndim(self):
        return self._value.ndim

    @property
    def size(self):
        return self._value.size

    @property
    def dtype(self):
        return self._value.dtype

    @property
    def T(self):
        return api.transpose(self)

    @property
    def is_leaf(self):
        return self._node is None

    def numpy(self):
        """The value ndarray (shared, not copied)."""
        self._host_read("t.numpy()")
        return self._value

    def __array__(self, dtype=None, copy=None):
        self._host_read("np.asarray(t)")
        if copy:
            return np.array(self._value, dtype=dtype, copy=True)
        return self._value if dtype is None else self._value.astype(dtype, copy=False)

    def item(self):
        self._host_read("t.item()")
        return self._value.item()

    def detach(self):
        """The same value, cut from the graph."""
        return detached(self)

    def __len__(self):
        return len(self._value)

    def __bool__(self):
        self._host_read("bool(t)")
        return bool(self._value)

    def __float__(self):
        self._host_read("float(t)")
        return float(self._value)

    def __repr__(self):
        self._host_read("repr(t)")
        body = np.array2string(self._value, precision=4, threshold=20, separator=", ",
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
        api.backward(self, seed=seed, retain_graph=retain_graph)

    # --- methods that are ops --------------------------------------------------
    def sum(self, axis=None, keepdims=False):
        return api.sum(self, axis=axis, keepdims=keepdims)

    def mean(self, axis=None, keepdims=False):
        return api.mean(self, axis=axis, keepdims=keepdims)

    def max(self, axis=None, keepdims=False):
        return api.max(self, axis=axis, keepdims=keepdims)

    def min(self, axis=None, keepdims=False):
        return api.min(self, axis=axis, keepdims=keepdims)

    def argmax(self, axis=None):
        return api.argmax(self, axis=axis)

    def exp(self):
        return api.exp(self)

    def log(self):
        return api.log(self)

    def log1p(self):
        return api.log1p(self)

    def sqrt(self):
        return api.sqrt(self)

    def square(self):
        return api.square(self)

    def abs(self):
        return api.abs(self)

    def sigmoid(self):
        return api.sigmoid(self)

    def tanh(self):
        return api.tanh(self)

    def relu(self):
        return api.relu(self)

    def softmax(self, axis=-1):
        return api.softmax(self, axis=axis)

    def log_softmax(self, axis=-1):
        return api.log_softmax(self, axis=axis)

    def clip(self, lo=None, hi=None):
        return api.clip(self, lo, hi)

    def reshape(self, *shape):
        return api.reshape(self, *shape)

    def transpose(self, *axes):
        return api.transpose(self, *axes)

    def __getitem__(self, index):
        return api.getitem(self, index)

    # --- operators -------------------------------------------------------------
    def __add__(self, other):
        return api.add(self, other)

    def __radd__(self, other):
        return api.add(other, self)

    def __sub__(self, other):
        return api.sub(self, other)

    def __rsub__(self, other):
        return api.sub(other, self)

    def __mul__(self, other):
        return api.mul(self, other)

    def __rmul__(self, other):
        return api.mul(other, self)

    def __truediv__(self, other):
        return api.div(self, other)

    def __rtruediv__(self, other):
        return api.div(other, self)

    def __pow__(self, other):
        return api.pow(self, other)

    def __rpow__(self, other):
        return api.pow(other, self)

    def __matmul__(self, other):
        return api.matmul(self, other)

    def __rmatmul__(self, other):
        return api.matmul(other, self)

    def __neg__(self):
        return api.neg(self)

    def __pos__(self):
        return self

    def __abs__(self):
        return api.abs(self)

    # --- in-place operators: updates under no_grad, errors on the tape ------------
    def __iadd__(self, other):
        return update_in_place(self, "+=", np.add, other)

    def __isub__(self, other):
        return update_in_place(self, "-=", np.subtract, other)

    def __imul__(self, other):
        return update_in_place(self, "*=", np.multiply, other)

    def __itruediv__(self, other):
        return update_in_place(self, "/=", np.true_divide, other)

    def __ipow__(self, other):
        return update_in_place(self, "**=", np.power, other)

    def __imatmul__(self, other):
        # Without this, Python would fall back to `x = x @ y`: a silent rebind.
        raise TypeError("'@=': an in-place matrix product is not supported; write x = x @ y")

    # --- NumPy: operators keep the graph, other NumPy functions name fastad's -------
    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        name = NUMPY_OPERATORS.get(ufunc) if method == "__call__" and not kwargs else None
        if name is None:
            raise TypeError(numpy_message(ufunc.__name__, api))
        if name in COMPARISONS:
            self._host_read(f"np.{ufunc.__name__}(t)")
            return ufunc(*_plain_all(inputs))
        return getattr(api, name)(*inputs)

    def __array_function__(self, func, types, args, kwargs):
        if fastad_name(func.__name__, api) is not None:
            raise TypeError(numpy_message(func.__name__, api))
        self._host_read(f"np.{func.__name__}(t)")
        return func(*_plain_all(args), **_plain_all(kwargs))  # no gradient: plain values

    # Comparisons give plain boolean arrays; Tensors stay hashable by identity.
    def __hash__(self):
        return identity_hash(self)  # leaves key the sweep's dicts

    def __eq__(self, other):
        self._host_read("t == u")
        return self._value == _plain(other)

    def __ne__(self, other):
        self._host_read("t != u")
        return self._value != _plain(other)

    def __lt__(self, other):
        self._host_read("t < u")
        return self._value < _plain(other)

    def __le__(self, other):
        self._host_read("t <= u")
        return self._value <= _plain(other)

    def __gt__(self, other):
        self._host_read("t > u")
        return self._value > _plain(other)

    def __ge__(self, other):
        self._host_read("t >= u")
        return self._value >= _plain(other)


@replayed
def detached(t):
    return Tensor(t._value)


@replayed
def assign_value(t, data):
    if data is not t._value:  # `t.value += 1` assigns the same array back
        t._value = checked_assignment(data, t._value, "Tensor.value")
    mark_modified(t)


@replayed
def assign_grad(t, data):
    if data is not None and data is not t._grad:
        if not isinstance(data, np.ndarray):
            raise TypeError(f"Tensor.grad: must be None or an ndarray, got "
                            f"{type(data).__name__}")
        data = checked_assignment(data, t._value, "Tensor.grad", share_object=True)
    t._grad = data


@replayed
def update_in_place(t, symbol, ufunc, other):
    """PyTorch's `with no_grad(): p -= lr * p.grad`: write into `.value` and mark the
    tensor modified. On a tensor the tape tracks, refuse rather than rebind."""
    if modes.grad_enabled and (t.requires_grad or t._node is not None):
        raise RuntimeError(
            f"'{symbol}' on a tensor that requires grad (or was computed by a recorded "
            f"op) would bypass the tape: write `x = x {symbol[:-1]} y`, or update it "
            "inside `with fa.no_grad():`")
    operand = beside(symbol, t, other)
    shape = t._value.shape
    try:
        fits = np.broadcast_shapes(shape, np.shape(operand)) == shape
    except ValueError:
        fits = False
    if not fits:
        raise ValueError(f"{symbol}: an operand of shape {np.shape(operand)} cannot "
                         f"update a tensor of shape {shape} in place")
    ufunc(t._value, operand, out=t._value)
    mark_modified(t)
    return t


def identity_hash(t):
    """A Tensor's hash: its address, as object's (compiled, C arithmetic on it)."""
    address = id(t)
    return address >> 4


def make_tensor(value, made_by, node):
    """A Tensor for an op's result (no validation: value is already a proper array)."""
    t = Tensor.__new__(Tensor)
    t._value = value
    t.requires_grad = node is not None
    t._grad = None
    t._node = node
    t._made_by = made_by
    t._modified_at = -1
    return t


# --- how an array, a list or a scalar joins a Tensor in an op (see also operands.py) ----

def constant(op, x, dtype):
    """A non-Tensor operand next to a Tensor of `dtype`.

    Python and NumPy scalars and int/bool arrays take `dtype`; a float array of the
    other precision is a mixed-dtype TypeError (as in fa.tensor's rules).
    """
    if type(x) is int or type(x) is float:
        # The tensor's own scalar type: NumPy computes with it twice as fast as with a
        # Python scalar on small arrays (0.6 vs 1.2 us), with the same result dtype.
        return dtype.type(x)
    array = np.asarray(x)
    if array.dtype.kind not in "fiub":
        raise TypeError(f"{op}: cannot use {array.dtype} data as an operand")
    other_precision = array.dtype.kind == "f" and array.dtype.itemsize in (4, 8) \
        and array.dtype.itemsize != dtype.itemsize  # byte order aside
    if isinstance(x, np.ndarray) and other_precision:
        raise TypeError(mixed_dtypes(op, dtype, array.dtype.newbyteorder("="), "operands"))
    return to_array(x if array is x else array, dtype, what=op)


def mixed_dtypes(op, first, second, what):
    return (f"{op}: cannot mix {first} and {second} {what}; use one precision throughout, "
            "e.g. fa.Parameter(data, dtype=np.float32) or nn.Linear(..., dtype=np.float64), "
            "or cast arrays with .astype()")


def beside(op, t, other):
    """`other` as an operand of `op` beside the Tensor t: another Tensor's value (of t's
    dtype: a mixed-dtype TypeError otherwise) or a constant (see `constant`)."""
    if isinstance(other, Tensor):
        if other._value.dtype != t._value.dtype:
            raise TypeError(mixed_dtypes(op, t._value.dtype, other._value.dtype, "tensors"))
        return other._value
    return constant(op, other, t._value.dtype)


# --- NumPy functions and ufuncs applied to Tensors -------------------------------------

def _plain(x):
    return x._value if isinstance(x, Tensor) else x


def _plain_all(args):
    """args (a tuple, list or dict, nested) with every Tensor replaced by its value."""
    if isinstance(args, (tuple, list)):
        return type(args)(_plain_all(a) for a in args)
    if isinstance(args, dict):
        return {k: _plain_all(v) for k, v in args.items()}
    return _plain(args)
