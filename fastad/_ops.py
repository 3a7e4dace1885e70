"""Every differentiable op, each with its forward and its vjp side by side.

A forward validates its operands, computes the value (compiled kernels for the heavy
ones) and calls `record`. Its vjp gets the output adjoint `g`, what the forward saved,
and `out` (see `_autograd`): per input SKIP, None (return a new contribution) or a
buffer to accumulate into.
"""
import builtins

import numpy as np

from . import _kernels as K
from ._autograd import SKIP, record, vjp_of
from ._buffers import empty, pooled_like
from ._tensor import Tensor, to_array


# --- operands -----------------------------------------------------------------------

def _tensor_arg(op, x):
    """x as a Tensor (non-Tensors follow the fa.tensor rules)."""
    if isinstance(x, Tensor):
        return x
    return Tensor(to_array(x, what=op))


def _constant(op, x, dtype):
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
        raise TypeError(_mixed_dtypes(op, dtype, array.dtype.newbyteorder("="), "operands"))
    return to_array(x if array is x else array, dtype, what=op)


def _mixed_dtypes(op, first, second, what):
    return (f"{op}: cannot mix {first} and {second} {what}; use one precision throughout, "
            "e.g. fa.Parameter(data, dtype=np.float32) or nn.Linear(..., dtype=np.float64), "
            "or cast arrays with .astype()")


def _operands(op, a, b):
    """(a value, b value, a Tensor or None, b Tensor or None), with one shared dtype."""
    a_is, b_is = isinstance(a, Tensor), isinstance(b, Tensor)
    if a_is and b_is:
        if a.value.dtype != b.value.dtype:
            raise TypeError(_mixed_dtypes(op, a.value.dtype, b.value.dtype, "tensors"))
        return a.value, b.value, a, b
    if a_is:
        return a.value, _constant(op, b, a.value.dtype), a, None
    if b_is:
        return _constant(op, a, b.value.dtype), b.value, None, b
    a, b = _tensor_arg(op, a), _tensor_arg(op, b)
    return _operands(op, a, b)


def _shape_error(op, *values):
    shapes = " and ".join(str(np.shape(v)) for v in values)
    return ValueError(f"{op}: shapes {shapes} do not broadcast together")


def _contiguous(x):
    return x if x.flags.c_contiguous else np.ascontiguousarray(x)


def _order(x):
    """'F' for an array that is F- but not C-contiguous, else 'C'."""
    flags = x.flags
    return "F" if flags.f_contiguous and not flags.c_contiguous else "C"


def _dense(x):
    """x if it is C- or F-contiguous (elementwise kernels read flat memory), else a C copy."""
    flags = x.flags
    return x if flags.c_contiguous or flags.f_contiguous else np.ascontiguousarray(x)


def _in_order(x, order):
    return x.flags.c_contiguous if order == "C" else x.flags.f_contiguous


# --- accumulating contributions -------------------------------------------------------

def _accumulate(out, contribution):
    """The first contribution is kept as it is; later ones are added into `out`."""
    if out is None:
        return contribution
    out += contribution
    return out


def _sum_to(g, shape):
    """Sum a broadcast adjoint back down to an operand's shape (a fresh array)."""
    lead = g.ndim - len(shape)
    if lead:
        g = np.asarray(g.sum(axis=tuple(range(lead))))
    ones = tuple(i for i, n in enumerate(shape) if n == 1 and g.shape[i] != 1)
    if ones:
        g = g.sum(axis=ones, keepdims=True)
    return g


def _accumulate_reduced(out, g, shape):
    """Accumulate `g`, summed over the axes an operand of `shape` was broadcast along."""
    if g.shape == shape:
        return _accumulate(out, g)
    if g.ndim == 2 and len(shape) == 1 and g.shape[1] == shape[0] and g.flags.c_contiguous:
        return _column_sum(out, g)
    return _accumulate(out, _sum_to(g, shape))


def _accumulate_broadcast(out, g, shape):
    """Accumulate `g` broadcast up to `shape`."""
    if out is None:
        out = np.empty(shape, g.dtype)
        out[...] = g
        return out
    out += g
    return out


def _kernel_out(out, shape, dtype, order="C"):
    """(buffer, accumulate) for a kernel writing a contribution in `order` into `out`.

    An adjoint that ended up in another memory order gets a fresh contribution, which
    the sweep then adds to it.
    """
    if out is None or not _in_order(out, order):
        return empty(shape, dtype, order), False
    return out, True


# --- broadcasting arithmetic -------------------------------------------------------------

def _arithmetic(op, ufunc):
    """a op b: a compiled loop for operands of one shape and memory order or an array and
    a scalar (where NumPy's dispatch would cost more than the arithmetic on small arrays),
    NumPy's ufunc for everything else (broadcasting)."""

    def compute(a, b):
        y = K.arithmetic(op, a, b)
        return ufunc(a, b) if y is None else y

    return compute


def _add_broadcast(a, b):
    if (type(a) is np.ndarray and type(b) is np.ndarray and a.ndim == 2 and b.ndim == 1
            and a.shape[1] == b.shape[0] and a.flags.c_contiguous and b.flags.c_contiguous):
        y = np.empty(a.shape, a.dtype)
        K.add_row(a, b, y)  # the bias pattern: x @ w + b
        return y
    return np.add(a, b)


_add_values = _arithmetic(K.Arithmetic.ADD, _add_broadcast)
_sub_values = _arithmetic(K.Arithmetic.SUB, np.subtract)
_mul_values = _arithmetic(K.Arithmetic.MUL, np.multiply)
_div_values = _arithmetic(K.Arithmetic.DIV, np.true_divide)


def _broadcasting(name, compute, grad_a, grad_b, saves_operands=True, saves_output=False):
    """A binary op with NumPy broadcasting; grad_a/grad_b(g, a, b, y) are its partials.

    The vjp gets a, b and y only if the op saves them (saving keeps them alive until the
    sweep passes this node).
    """

    @vjp_of(name)
    def vjp(g, saved, out):
        a_shape, b_shape, a, b, y = saved
        return (None if out[0] is SKIP else
                _accumulate_reduced(out[0], grad_a(g, a, b, y), a_shape),
                None if out[1] is SKIP else
                _accumulate_reduced(out[1], grad_b(g, a, b, y), b_shape))

    def op(a, b):
        av, bv, ta, tb = _operands(name, a, b)
        try:
            y = compute(av, bv)
        except ValueError:
            raise _shape_error(name, av, bv) from None
        saved = (av.shape, bv.shape, av if saves_operands else None,  # scalars have shape ()
                 bv if saves_operands else None, y if saves_output else None)
        return record(vjp, y, (ta, tb), saved)

    op.__name__ = op.__qualname__ = name
    op.__doc__ = f"{name}(a, b) elementwise, with NumPy broadcasting."
    return op


add = _broadcasting("add", _add_values, lambda g, a, b, y: g, lambda g, a, b, y: g,
                    saves_operands=False)
sub = _broadcasting("sub", _sub_values, lambda g, a, b, y: g, lambda g, a, b, y: -g,
                    saves_operands=False)
mul = _broadcasting("mul", _mul_values, lambda g, a, b, y: _mul_values(g, b),
                    lambda g, a, b, y: _mul_values(g, a))
div = _broadcasting("div", _div_values, lambda g, a, b, y: _div_values(g, b),
                    lambda g, a, b, y: _div_values(_mul_values(g, y), -b),  # -g y / b
                    saves_output=True)
pow = _broadcasting("pow", np.power, lambda g, a, b, y: g * b * a ** (b - 1),
                    lambda g, a, b, y: g * y * np.log(a, dtype=g.dtype), saves_output=True)


def _column_sum(out, g):
    buffer, accumulate = _kernel_out(out, g.shape[1:], g.dtype)
    K.column_sum(g, buffer, accumulate)
    return buffer


def where(cond, a, b):
    """Elementwise a where cond is true, else b (cond needs no gradient)."""
    cond = np.asarray(cond.value if isinstance(cond, Tensor) else cond).astype(bool)
    av, bv, ta, tb = _operands("where", a, b)
    try:
        value = np.where(cond, av, bv)
    except ValueError:
        raise _shape_error("where", cond, av, bv) from None
    return record(where_vjp, value, (ta, tb), (cond, av.shape, bv.shape))


@vjp_of("where")
def where_vjp(g, saved, out):
    cond, a_shape, b_shape = saved
    zero = g.dtype.type(0)
    return (None if out[0] is SKIP else
            _accumulate_reduced(out[0], np.where(cond, g, zero), a_shape),
            None if out[1] is SKIP else
            _accumulate_reduced(out[1], np.where(cond, zero, g), b_shape))


# --- elementwise functions -----------------------------------------------------------

def _elementwise(name, compute, grad, saves):
    """A unary elementwise op; grad(g, s) is its vjp, s the saved input ("x") or output ("y")."""

    @vjp_of(name)
    def vjp(g, saved, out):
        return (_accumulate(out[0], grad(g, saved)),)

    def op(x):
        x = _tensor_arg(name, x)
        y = compute(x.value)
        return record(vjp, y, (x,), x.value if saves == "x" else y if saves == "y" else None)

    op.__name__ = op.__qualname__ = name
    op.__doc__ = f"{name}(x), elementwise."
    return op


neg = _elementwise("neg", np.negative, lambda g, _: -g, saves=None)
exp = _elementwise("exp", np.exp, lambda g, y: g * y, saves="y")
sqrt = _elementwise("sqrt", np.sqrt, lambda g, y: g / (2 * y), saves="y")
abs = _elementwise("abs", np.abs, lambda g, x: g * np.sign(x), saves="x")  # abs'(0) = 0
tanh = _elementwise("tanh", np.tanh, lambda g, y: g * (1 - y * y), saves="y")
_log = _elementwise("log", np.log, lambda g, x: g / x, saves="x")


def log(x):
    """Natural log. log(softmax(z)) is computed as log_softmax(z), stably."""
    origin = getattr(x, "_origin", None)
    if origin is not None:
        return log_softmax(*origin)
    return _log(x)


def _activation(name, kernel, grad_kernel, doc):
    """A unary op computed by a compiled kernel and differentiated from its output.

    The kernels read and write flat memory, so x, y, g and the adjoint they accumulate
    into must share one memory order (y's, which is x's).
    """

    @vjp_of(name)
    def vjp(g, saved, out):
        (y,) = saved
        order = _order(y)
        if not _in_order(g, order):
            g = np.asarray(g, order=order)
        adjoint = out[0]
        if adjoint is not None and _in_order(adjoint, order):
            return (grad_kernel(g, y, adjoint, True),)
        # a new contribution (allocated by the kernel unless pooled), added by the sweep
        return (grad_kernel(g, y, pooled_like(y, order), False),)

    def op(x):
        x = _tensor_arg(name, x)
        y = kernel(_dense(x.value))
        return record(vjp, y, (x,), (y,))

    op.__name__ = op.__qualname__ = name
    op.__doc__ = doc
    return op


sigmoid = _activation("sigmoid", K.sigmoid, K.sigmoid_grad,
                      "1 / (1 + exp(-x)), computed stably by a compiled kernel.")
relu = _activation("relu", K.relu, K.relu_grad, "max(x, 0), with relu'(0) = 0.")


# --- softmax family (compiled, along one axis) ---------------------------------------

def _normalize_axis(op, axis, ndim):
    if not isinstance(axis, (int, np.integer)) or isinstance(axis, bool):
        raise TypeError(f"{op}: axis must be an int, got {axis!r}")
    if not -ndim <= axis < ndim:
        raise np.exceptions.AxisError(f"{op}: axis {axis} is out of bounds for {ndim}-d input")
    return int(axis) % ndim


def _rowwise(kernel, x, axis):
    """Apply a last-axis kernel along `axis` of x."""
    if axis == x.ndim - 1:
        x = _contiguous(x)
        y = np.empty(x.shape, x.dtype)
        kernel(x, y)
        return y
    moved = _contiguous(np.moveaxis(x, axis, -1))
    y = np.empty(moved.shape, moved.dtype)
    kernel(moved, y)
    return np.moveaxis(y, -1, axis)


def _rowwise_grad(kernel, out, g, y, axis):
    """Accumulate a last-axis backward kernel's contribution along `axis`."""
    if axis == y.ndim - 1 and y.flags.c_contiguous:
        buffer, accumulate = _kernel_out(out, y.shape, y.dtype)
        kernel(_contiguous(g), y, buffer, accumulate)
        return buffer
    moved_y = _contiguous(np.moveaxis(y, axis, -1))
    result = np.empty(moved_y.shape, y.dtype)
    kernel(_contiguous(np.moveaxis(g, axis, -1)), moved_y, result, False)
    return _accumulate(out, np.moveaxis(result, -1, axis))


def softmax(x, axis=-1):
    """exp(x) / sum(exp(x)) along `axis` (max subtracted first)."""
    x = _tensor_arg("softmax", x)
    axis = _normalize_axis("softmax", axis, x.ndim)
    y = _rowwise(K.softmax, x.value, axis)
    result = record(softmax_vjp, y, (x,), (y, axis))
    # For log(): the logits, cut from the graph if this softmax itself was not recorded.
    result._origin = (x if result._node is not None else x.detach(), axis)
    return result


@vjp_of("softmax")
def softmax_vjp(g, saved, out):
    y, axis = saved
    return (_rowwise_grad(K.softmax_grad, out[0], g, y, axis),)


def log_softmax(x, axis=-1):
    """x - logsumexp(x) along `axis`, stable for any logits."""
    x = _tensor_arg("log_softmax", x)
    axis = _normalize_axis("log_softmax", axis, x.ndim)
    y = _rowwise(K.log_softmax, x.value, axis)
    return record(log_softmax_vjp, y, (x,), (y, axis))


@vjp_of("log_softmax")
def log_softmax_vjp(g, saved, out):
    y, axis = saved
    return (_rowwise_grad(K.log_softmax_grad, out[0], g, y, axis),)


# --- losses with integer labels ---------------------------------------------------------

def _labels(op, labels, shape):
    """Validated labels for (N, C) scores: a C-contiguous intp array of length N."""
    if len(shape) != 2:
        raise ValueError(f"{op}: expects (N, C) scores, got shape {shape}")
    n, c = shape
    if n == 0:
        raise ValueError(f"{op}: empty batch (shape {shape})")
    hint = ""
    if isinstance(labels, Tensor):
        labels = labels.value
        hint = " (a fastad tensor always holds floats: pass the integer array itself)"
    array = np.asarray(labels)
    if array.dtype.kind not in "iu":
        raise ValueError(f"{op}: labels must be integers, got dtype {array.dtype}{hint}")
    if array.shape != (n,):
        raise ValueError(f"{op}: labels have shape {array.shape}, expected ({n},) for "
                         f"scores of shape {shape}")
    low, high = array.min(), array.max()
    if low < 0 or high >= c:
        bad = low if low < 0 else high
        raise IndexError(f"{op}: label {bad} is out of range [0, {c})")
    return _own_labels(array)


def _own_labels(array):
    """A C-contiguous intp copy of checked labels: the caller's array could change
    before the backward, whose kernel writes at the positions the labels give."""
    return np.array(array, dtype=np.intp, order="C", copy=True)


def _reduce_losses(op, losses, reduction):
    if reduction == "mean":  # losses.mean() to the bit, without its Python wrapper
        return np.asarray(losses.sum() / losses.shape[0], dtype=losses.dtype)
    if reduction == "sum":
        return np.asarray(losses.sum(), dtype=losses.dtype)
    if reduction == "none":
        return losses
    raise ValueError(f"{op}: reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


def _row_scale(g, reduction, n):
    """Per-row weight of each loss term in the reduced loss, times the adjoint."""
    if reduction == "none":
        return _contiguous(g)
    scale = np.empty(n, g.dtype)
    scale.fill(g / n if reduction == "mean" else g)
    return scale


def cross_entropy(logits, labels, reduction="mean"):
    """Softmax cross-entropy of (N, C) logits against integer labels, fused and stable."""
    x = _tensor_arg("cross_entropy", logits)
    labels = _labels("cross_entropy", labels, x.shape)
    xv = _contiguous(x.value)
    probs = np.empty(xv.shape, xv.dtype)
    losses = np.empty(xv.shape[0], xv.dtype)
    K.softmax_cross_entropy(xv, labels, probs, losses)
    value = _reduce_losses("cross_entropy", losses, reduction)
    return record(cross_entropy_vjp, value, (x,), (probs, labels, reduction))


@vjp_of("cross_entropy")
def cross_entropy_vjp(g, saved, out):
    probs, labels, reduction = saved
    buffer, accumulate = _kernel_out(out[0], probs.shape, probs.dtype)
    scale = _row_scale(g, reduction, len(labels))
    K.softmax_cross_entropy_grad(probs, labels, scale, buffer, accumulate)
    return (buffer,)


def nll_loss(log_probs, labels, reduction="mean"):
    """Negative log-likelihood of (N, C) log-probabilities at integer labels."""
    x = _tensor_arg("nll_loss", log_probs)
    labels = _labels("nll_loss", labels, x.shape)
    picked = np.empty(x.shape[0], x.dtype)
    K.pick(_contiguous(x.value), labels, picked)
    value = _reduce_losses("nll_loss", -picked, reduction)
    return record(nll_loss_vjp, value, (x,), (labels, x.shape, reduction))


@vjp_of("nll_loss")
def nll_loss_vjp(g, saved, out):
    labels, shape, reduction = saved
    buffer, accumulate = _kernel_out(out[0], shape, g.dtype)
    K.pick_grad(-_row_scale(g, reduction, shape[0]), labels, buffer, accumulate)
    return (buffer,)


def argmax(x, axis=None):
    """Indices of the maxima (an ndarray; not differentiable)."""
    return np.asarray(np.argmax(x.value if isinstance(x, Tensor) else np.asarray(x), axis=axis))


# --- matrix products -------------------------------------------------------------------

_BLAS_MAX = 2 ** 31 - 1


def _blas_ready(m):
    """m as an operand BLAS reads without a copy: C- or F-contiguous."""
    if m.flags.c_contiguous or m.flags.f_contiguous:
        return m
    return np.ascontiguousarray(m)


def _gemm(out, a, b, order):
    """out (+)= a @ b through BLAS; the first contribution allocates out in `order`."""
    if a.shape[1] != b.shape[0] or (out is not None and out.shape != (a.shape[0], b.shape[1])):
        # BLAS would read past a buffer: only an array reshaped in place since it was
        # recorded gets here (ops check their operands).
        raise RuntimeError(f"matmul: operand shapes {a.shape} and {b.shape} changed after "
                           "the op was recorded")
    if out is not None:
        order = _order(out)
    buffer, accumulate = _kernel_out(out, (a.shape[0], b.shape[1]), a.dtype, order)
    if a.shape[1] == 0:
        if not accumulate:
            buffer.fill(0)
    elif buffer.size and order == "F":  # out^T = b^T a^T, a C-contiguous product
        K.gemm(_blas_ready(b.T), _blas_ready(a.T), buffer.T, accumulate)
    elif buffer.size:
        K.gemm(_blas_ready(a), _blas_ready(b), buffer, accumulate)
    return buffer


def _product_order(rows, inner, cols):
    """Memory order for a new product. Against a large weight, OpenBLAS packs much less
    when the short side is its M dimension: a batch of 128 against a 16384 x 5000 weight
    runs up to 2x faster written column-major. For small weights (the 784 x 256 of a
    small MLP) it gains nothing, and the column-major gradients that follow made the
    backward's products slower (bench/small_mlp.py: 1.27 ms per step C, 1.67 ms F)."""
    return "F" if rows < cols and inner * cols >= 1 << 20 else "C"


def _check_matmul(a, b):
    if a.ndim == 0 or b.ndim == 0:
        raise ValueError(f"matmul: operands must be at least 1-d, got shapes {a.shape} "
                         f"and {b.shape}")
    inner_b = b.shape[0] if b.ndim == 1 else b.shape[-2]
    if a.shape[-1] != inner_b:
        raise ValueError(f"matmul: inner dimensions differ: shapes {a.shape} and {b.shape}")


def _fits_blas(a, b):
    return (a.ndim == 2 and b.ndim == 2
            and builtins.max(a.shape + b.shape) <= _BLAS_MAX)


def matmul(a, b):
    """Matrix product with NumPy matmul semantics (1-D, 2-D and batched N-D)."""
    av, bv, ta, tb = _operands("matmul", a, b)
    if type(av) is not np.ndarray or type(bv) is not np.ndarray:
        av, bv = np.asarray(av), np.asarray(bv)  # NumPy scalars, which _check_matmul refuses
    _check_matmul(av, bv)
    if _fits_blas(av, bv):
        av, bv = _blas_ready(av), _blas_ready(bv)
        value = _gemm(None, av, bv, _product_order(*av.shape, bv.shape[1]))
    else:
        try:
            value = np.matmul(av, bv)
        except ValueError:
            raise ValueError(f"matmul: batch shapes of {av.shape} and {bv.shape} do not "
                             "broadcast together") from None
    return record(matmul_vjp, value, (ta, tb), (av, bv))


dot = matmul


@vjp_of("matmul")
def matmul_vjp(g, saved, out):
    a, b = saved
    if _fits_blas(a, b):
        # dA = g @ B^T and dB = A^T @ g: the transposes are BLAS flags, not copies.
        # Each gradient is laid out like its operand, so elementwise kernels downstream
        # see matching memory orders.
        return (_gemm(out[0], g, b.T, _order(a)) if out[0] is not SKIP else None,
                _gemm(out[1], a.T, g, _order(b)) if out[1] is not SKIP else None)
    a2 = a[None, :] if a.ndim == 1 else a  # NumPy's promotion of 1-D operands
    b2 = b[:, None] if b.ndim == 1 else b
    g2 = g[..., None] if b.ndim == 1 else g
    g2 = g2[..., None, :] if a.ndim == 1 else g2
    return (_accumulate(out[0], _sum_to(g2 @ np.swapaxes(b2, -1, -2), a2.shape).reshape(a.shape))
            if out[0] is not SKIP else None,
            _accumulate(out[1], _sum_to(np.swapaxes(a2, -1, -2) @ g2, b2.shape).reshape(b.shape))
            if out[1] is not SKIP else None)


# --- reductions -----------------------------------------------------------------------

def _axes(op, axis, ndim):
    """axis (None, int or tuple) as a sorted tuple of non-negative axes."""
    if axis is None:
        return tuple(range(ndim))
    axes = (axis,) if isinstance(axis, (int, np.integer)) else tuple(axis)
    normalized = tuple(sorted(_normalize_axis(op, a, ndim) for a in axes))
    if len(set(normalized)) != len(normalized):
        raise ValueError(f"{op}: repeated axis in {axis!r}")
    return normalized


def _kept_shape(shape, axes):
    """The shape of a reduction's result with keepdims=True, which its adjoint reshapes to."""
    return tuple(1 if i in axes else n for i, n in enumerate(shape))


def sum(x, axis=None, keepdims=False):
    """Sum over `axis` (None: all; an int or a tuple)."""
    x = _tensor_arg("sum", x)
    axes = _axes("sum", axis, x.ndim)
    value = np.asarray(x.value.sum(axis=axes, keepdims=keepdims))
    return record(sum_vjp, value, (x,), (x.shape, _kept_shape(x.shape, axes)))


@vjp_of("sum")
def sum_vjp(g, saved, out):
    shape, kept = saved
    return (_accumulate_broadcast(out[0], g.reshape(kept), shape),)


def mean(x, axis=None, keepdims=False):
    """Mean over `axis` (None: all; an int or a tuple)."""
    x = _tensor_arg("mean", x)
    axes = _axes("mean", axis, x.ndim)
    value = np.asarray(x.value.mean(axis=axes, keepdims=keepdims))
    count = int(np.prod([x.shape[a] for a in axes]))
    return record(mean_vjp, value, (x,), (x.shape, _kept_shape(x.shape, axes), count))


@vjp_of("mean")
def mean_vjp(g, saved, out):
    shape, kept, count = saved
    return (_accumulate_broadcast(out[0], g.reshape(kept) / count, shape),)


def max(x, axis=None, keepdims=False):
    """Maximum over `axis`; tied maxima share the gradient equally."""
    x = _tensor_arg("max", x)
    axes = _axes("max", axis, x.ndim)
    if any(x.shape[a] == 0 for a in axes):
        raise ValueError(f"max: cannot reduce an empty axis (shape {x.shape}, axis {axis!r})")
    value = np.asarray(x.value.max(axis=axes, keepdims=keepdims))
    return record(max_vjp, value, (x,), (x.value, value, axes, _kept_shape(x.shape, axes)))


@vjp_of("max")
def max_vjp(g, saved, out):
    x, y, axes, kept = saved
    is_max = x == y.reshape(kept)
    ties = is_max.sum(axis=axes, keepdims=True, dtype=g.dtype)
    return (_accumulate(out[0], is_max * (g.reshape(kept) / ties)),)


# --- shapes and indexing ------------------------------------------------------------------

def reshape(x, *shape):
    """x with a new shape (same elements, C order)."""
    x = _tensor_arg("reshape", x)
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
    return (_accumulate(out[0], g.reshape(shape)),)


def transpose(x, *axes):
    """x with its axes permuted (reversed when none are given)."""
    x = _tensor_arg("transpose", x)
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
    return (_accumulate(out[0], g.transpose(inverse)),)


def concatenate(tensors, axis=0):
    """Join tensors along an existing axis."""
    tensors = list(tensors)
    if not tensors:
        raise ValueError("concatenate: needs at least one tensor")
    tensors = [_tensor_arg("concatenate", t) for t in tensors]
    dtypes = {t.dtype for t in tensors}
    if len(dtypes) > 1:
        raise TypeError(f"concatenate: cannot mix dtypes {sorted(map(str, dtypes))}")
    try:
        value = np.concatenate([t.value for t in tensors], axis=axis)
    except ValueError as e:
        shapes = [t.shape for t in tensors]
        raise ValueError(f"concatenate: shapes {shapes} along axis {axis}: {e}") from None
    axis = _normalize_axis("concatenate", axis, value.ndim)
    splits = np.cumsum([t.shape[axis] for t in tensors])[:-1]
    return record(concatenate_vjp, value, tuple(tensors), (splits, axis))


@vjp_of("concatenate")
def concatenate_vjp(g, saved, out):
    splits, axis = saved
    pieces = np.split(g, splits, axis=axis)
    return tuple(None if o is SKIP else _accumulate(o, p) for o, p in zip(out, pieces))


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
    if isinstance(part, np.ndarray) or not (isinstance(part, _BASIC_INDEX)
                                            or hasattr(part, "__index__")):
        return np.array(part)
    return part


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
    return _own_labels(cols)


def getitem(x, index):
    """x[index]: basic slicing and integer/boolean array indexing, as NumPy does."""
    x = _tensor_arg("getitem", x)
    index = _index_key(index)
    labels = _row_labels(x.shape, index)
    if labels is not None:
        value = np.empty(x.shape[0], x.dtype)
        K.pick(_contiguous(x.value), labels, value)
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
    buffer, accumulate = _kernel_out(out[0], shape, g.dtype)
    K.pick_grad(_contiguous(g), labels, buffer, accumulate)
    return (buffer,)
