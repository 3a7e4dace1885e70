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
    result = np.require(array, dtype=target, requirements="CAW")
    # The caller's array object stays the caller's: what they later do to it
    # (`X.shape = ...`) must not reach a tensor or a tape, so share memory through a view.
    return result.view() if result is data else result


def _checked_assignment(data, template, what, share_object=False):
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


class Tensor:
    """An ndarray that remembers how it was computed, for reverse-mode gradients.

    Build one with `fa.tensor` or `fa.Parameter`; ops return new Tensors.
    """

    __slots__ = ("_value", "requires_grad", "_grad", "_node", "_made_by", "_modified_at",
                 "_origin", "_sweep", "_consumed", "__weakref__")

    def __init__(self, data, dtype=None, requires_grad=False):
        self._value = to_array(data, dtype)
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
        return self._value

    @value.setter
    def value(self, data):
        if data is not self._value:  # `t.value += 1` assigns the same array back
            self._value = _checked_assignment(data, self._value, "Tensor.value")
        autograd.mark_modified(self)

    @property
    def grad(self):
        """The gradient filled by `backward()` (an ndarray of the tensor's shape and
        dtype), or None. Assigned values are checked as for `.value`."""
        return self._grad

    @grad.setter
    def grad(self, data):
        if data is not None and data is not self._grad:
            if not isinstance(data, np.ndarray):
                raise TypeError(f"Tensor.grad: must be None or an ndarray, got "
                                f"{type(data).__name__}")
            data = _checked_assignment(data, self._value, "Tensor.grad", share_object=True)
        self._grad = data

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

    # --- in-place operators: updates under no_grad, errors on the tape ------------
    def __iadd__(self, other):
        return self._update_in_place("+=", np.add, other)

    def __isub__(self, other):
        return self._update_in_place("-=", np.subtract, other)

    def __imul__(self, other):
        return self._update_in_place("*=", np.multiply, other)

    def __itruediv__(self, other):
        return self._update_in_place("/=", np.true_divide, other)

    def _update_in_place(self, symbol, ufunc, other):
        """PyTorch's `with no_grad(): p -= lr * p.grad`: write into `.value` and mark the
        tensor modified. On a tensor the tape tracks, refuse rather than rebind."""
        if autograd.modes.grad_enabled and (self.requires_grad or self._node is not None):
            raise RuntimeError(
                f"'{symbol}' on a tensor that requires grad (or was computed by a recorded "
                f"op) would bypass the tape: write `x = x {symbol[0]} y`, or update it "
                "inside `with fa.no_grad():`")
        _, operand, _, _ = ops._operands(symbol, self, other)
        shape = self._value.shape
        try:
            fits = np.broadcast_shapes(shape, np.shape(operand)) == shape
        except ValueError:
            fits = False
        if not fits:
            raise ValueError(f"{symbol}: an operand of shape {np.shape(operand)} cannot "
                             f"update a tensor of shape {shape} in place")
        ufunc(self._value, operand, out=self._value)
        autograd.mark_modified(self)
        return self

    # --- NumPy: operators keep the graph, other NumPy functions name fastad's -------
    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        operator = _NUMPY_OPERATORS.get(ufunc) if method == "__call__" and not kwargs \
            else None
        if operator is None:
            raise TypeError(_numpy_message(ufunc.__name__))
        return operator(*inputs)

    def __array_function__(self, func, types, args, kwargs):
        if func.__name__ in _FASTAD_NAMES:
            raise TypeError(_numpy_message(func.__name__))
        return func(*_plain_all(args), **_plain_all(kwargs))  # no gradient: plain values

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


def _plain_all(args):
    """args (a tuple, list or dict, nested) with every Tensor replaced by its value."""
    if isinstance(args, (tuple, list)):
        return type(args)(_plain_all(a) for a in args)
    if isinstance(args, dict):
        return {k: _plain_all(v) for k, v in args.items()}
    return _plain(args)


def _compare(ufunc):
    return lambda a, b: ufunc(_plain(a), _plain(b))


# NumPy names of fastad functions, for errors that say which one to call instead.
_FASTAD_NAMES = {"exp": "exp", "log": "log", "sqrt": "sqrt", "absolute": "abs", "abs": "abs",
                 "tanh": "tanh", "negative": "neg", "add": "add", "subtract": "sub",
                 "multiply": "mul", "true_divide": "div", "divide": "div", "power": "pow",
                 "matmul": "matmul", "dot": "dot", "sum": "sum", "mean": "mean", "max": "max",
                 "amax": "max", "min": "min", "amin": "min", "argmax": "argmax",
                 "maximum": "maximum", "minimum": "minimum", "clip": "clip",
                 "log1p": "log1p", "square": "square", "concatenate": "concatenate",
                 "stack": "stack", "where": "where", "reshape": "reshape",
                 "transpose": "transpose"}


def _numpy_message(name):
    fastad_name = _FASTAD_NAMES.get(name)
    plain = f"apply np.{name} to t.value for a plain ndarray (no gradient)"
    if fastad_name is None:
        return f"np.{name} does not record on fastad's tape; {plain}"
    return f"np.{name} does not record on fastad's tape: use fa.{fastad_name}, or {plain}"


def _wire_numpy_operators():
    """The ufuncs NumPy's operators call for `ndarray OP Tensor`: fastad's ops (so the
    result is a Tensor on the tape), and comparisons on the values (plain bool arrays)."""
    operators = {np.add: ops.add, np.subtract: ops.sub, np.multiply: ops.mul,
                 np.true_divide: ops.div, np.power: ops.pow, np.matmul: ops.matmul}
    for ufunc in (np.equal, np.not_equal, np.less, np.less_equal, np.greater,
                  np.greater_equal):
        operators[ufunc] = _compare(ufunc)
    return operators


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

_NUMPY_OPERATORS = _wire_numpy_operators()
