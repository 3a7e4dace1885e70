"""Lowerings: how the common training steps replay without their Python.

A lowering gets a Lowering context (plan.py) and the recorded call's arguments, and
emits the kernel calls the op made, on buffers the plan allocates once -- the same
kernels, so the results are the same bits. It raises Unsupported for any case it does
not cover (another memory order, broadcasting, an operand of another kind): that step
stays a Python step, which is always right. Keyed by the op's function, or for a
backward step by ("vjp", op name). The steps that are not ops (the sweep's own,
optimizer updates, zero_grad) are lowered in lowering_steps.py.
"""
import numpy as np

from ..core.tape import SKIP
from ..core.tensor import Tensor, constant
from ..kernels import gemm, pointwise, rows
from ..ops import REGISTRY
from ..ops.linalg import _product_order, gemm_into
from ..ops.losses import _labels, _reduce_losses, _row_scale
from ..ops.protocol import order_of
from ..ops.reductions import averaged, summed
from .plan import Slot, Unsupported

LOWERINGS = {}


def lowers(*keys):
    def register(lowering):
        for key in keys:
            LOWERINGS[key.__wrapped__ if hasattr(key, "__wrapped__") else key] = lowering
        return lowering
    return register


def _order(array):
    """The memory order a kernel wrote `array` in; Unsupported if it is ambiguous or
    neither."""
    c, f = array.flags.c_contiguous, array.flags.f_contiguous
    if c == f:
        raise Unsupported("an array both or neither C- and F-contiguous")
    return "C" if c else "F"


def _flat(*arrays):
    """Whether elementwise kernels can pair up these arrays' flat memory: all C- or all
    F-contiguous (Unsupported otherwise)."""
    if all(a.flags.c_contiguous for a in arrays) or all(a.flags.f_contiguous for a in arrays):
        return True
    raise Unsupported("arrays in different memory orders")


def _value(operand, dtype):
    """A Tensor's value, a C-contiguous array of `dtype` (which the op takes as it is), or
    a Python number as the op takes it; Unsupported otherwise (the op would convert it,
    and the plan would freeze the conversion)."""
    if isinstance(operand, Tensor):
        return operand._value
    if isinstance(operand, np.ndarray) and operand.dtype == dtype and \
            operand.flags.c_contiguous:
        return operand
    if type(operand) in (int, float):
        return constant("", operand, dtype)
    raise Unsupported("an operand that is not a Tensor, an array or a Python number")


# --- forward ------------------------------------------------------------------------

ARITHMETIC = {"add": pointwise.Arithmetic.ADD, "sub": pointwise.Arithmetic.SUB,
              "mul": pointwise.Arithmetic.MUL, "div": pointwise.Arithmetic.DIV}


@lowers(*(REGISTRY[name] for name in ARITHMETIC))
def arithmetic(context, a, b):
    y = context.result._value
    dtype = y.dtype
    av, bv = _value(a, dtype), _value(b, dtype)
    name = context.result._made_by.op_name
    for operand in context.saved[0][2:4]:  # the saved operands a Python number became
        if isinstance(operand, np.generic):
            context.same(operand, operand)
    if isinstance(av, np.ndarray) and isinstance(bv, np.ndarray):
        if av.shape == bv.shape and _flat(av, bv, y):
            context.call(pointwise.arithmetic_into, ARITHMETIC[name], context.read(a),
                         context.read(b), context.buffer(y))
        elif (name == "add" and av.ndim == 2 and bv.ndim == 1 and y.flags.c_contiguous
              and av.flags.c_contiguous and bv.flags.c_contiguous):
            context.call(pointwise.add_row, context.read(a), context.read(b),
                         context.buffer(y))
        else:
            raise Unsupported("broadcasting")
    elif isinstance(av, np.ndarray) or isinstance(bv, np.ndarray):
        _flat(av if isinstance(av, np.ndarray) else bv, y)
        context.call(pointwise.arithmetic_into, ARITHMETIC[name],
                     context.read(a) if isinstance(av, np.ndarray) else av,
                     context.read(b) if isinstance(bv, np.ndarray) else bv, context.buffer(y))
    else:
        raise Unsupported("two scalars")


@lowers(REGISTRY["sigmoid"], REGISTRY["relu"])
def activation(context, x):
    y = context.result._value
    if not isinstance(x, Tensor):
        raise Unsupported("a non-Tensor input")
    _flat(x._value, y)
    kernel = pointwise.sigmoid if context.result._made_by.op_name == "sigmoid" else \
        pointwise.relu
    context.call(kernel, context.read(x), context.buffer(y))


UNARY = ("neg", "exp", "sqrt", "abs", "tanh", "square", "log1p")


@lowers(*(REGISTRY[name] for name in UNARY))
def unary(context, x):
    """A NumPy ufunc of one Tensor, called as the op does (it allocates the result)."""
    if not isinstance(x, Tensor) or x.ndim == 0:
        raise Unsupported("a non-Tensor or 0-d input (the op saves NumPy's scalar)")
    context.call(_value_of, context.function.compute, context.read(x),
                 result=context.result._value)


def _value_of(compute, x):
    return np.asarray(compute(x))  # as record(): NumPy's 0-d math returns scalars


@lowers(REGISTRY["matmul"])
def matmul(context, a, b):
    y = context.result._value
    av, bv = _value(a, y.dtype), _value(b, y.dtype)
    if not (isinstance(av, np.ndarray) and isinstance(bv, np.ndarray)
            and gemm.fits_blas(av, bv)):
        raise Unsupported("a product NumPy computes")
    context.call(gemm_into, context.buffer(y), context.read(a), context.read(b), False,
                 _product_written(y, av, bv))


def _product_written(y, a, b):
    """The memory order the op wrote its product y = a @ b in (operands BLAS read as
    they are): y's own, or for a y both C- and F-contiguous, the order chosen for the
    shape (Unsupported while that choice is still being timed)."""
    _order(a), _order(b)
    if not (y.flags.c_contiguous and y.flags.f_contiguous):
        return _order(y)
    order, plan = _product_order(a.dtype, a.shape[0], a.shape[1], b.shape[1])
    if plan is not None:
        raise Unsupported("a product whose order was still being timed")
    return order


@lowers(REGISTRY["linear"])
def linear(context, x, weight, bias=None):
    """The fused op: its product x @ weight.T, then the bias added into the result."""
    y = context.result._value
    if context.result._made_by.op_name != "linear":
        raise Unsupported("a linear of another shape (matmul and add)")
    order = _product_written(y, _value(x, y.dtype), _value(weight, y.dtype).T)
    buffer = context.buffer(y)
    context.call(_gemm_transposed_b, buffer, context.read(x), context.read(weight), False,
                 order)
    if bias is not None:
        bv = _value(bias, y.dtype)
        if not (y.flags.c_contiguous and isinstance(bv, np.ndarray) and bv.flags.c_contiguous):
            raise Unsupported("a bias added by NumPy")
        context.call(pointwise.add_row, buffer, context.read(bias), buffer)


@lowers(REGISTRY["transpose"])
def transpose(context, x, *axes):
    if not isinstance(x, Tensor) or axes:
        raise Unsupported("a transpose with axes")
    (inverse,) = context.saved[0]
    context.same(inverse, inverse)  # np.argsort of the axes: a constant
    value = context.read(x)
    if type(value) is Slot:
        context.call(np.transpose, value, result=context.result._value)
    else:
        context.same(context.result._value, value.T)


@lowers(("vjp", "transpose"))
def transpose_vjp(context, vjp, g, saved, out):
    (inverse,) = saved
    (result,) = context.result
    if out[0] is not None:
        raise Unsupported("a transposed contribution added in place")
    value = context.read(g)
    if type(value) is Slot:
        context.call(np.transpose, value, inverse, result=result)
    else:
        context.same(result, value.transpose(inverse))


@lowers(REGISTRY["cross_entropy"])
def cross_entropy(context, logits, labels, reduction="mean"):
    probs, own_labels, _ = context.saved[0]
    if not isinstance(logits, Tensor) or not logits._value.flags.c_contiguous:
        raise Unsupported("strided logits")
    losses = context.scratch((logits.shape[0],), logits.dtype)
    context.call(_labels, "cross_entropy", context.read(labels), logits.shape,
                 result=own_labels)
    context.call(rows.softmax_cross_entropy, context.read(logits), context.read(own_labels),
                 context.buffer(probs), losses)
    context.call(_reduce_losses, "cross_entropy", losses, reduction,
                 result=context.result._value)


@lowers(REGISTRY["sum"], REGISTRY["mean"])
def reduction(context, x, axis=None, keepdims=False):
    """A sum or mean over all axes, by the NumPy call the op makes."""
    if not isinstance(x, Tensor) or axis is not None:
        raise Unsupported("a reduction of a non-Tensor, or over some axes")
    reduce = summed if context.function is REGISTRY["sum"].__wrapped__ else averaged
    context.call(reduce, context.read(x), tuple(range(x.ndim)), keepdims,
                 result=context.result._value)


@lowers(REGISTRY["softmax"], REGISTRY["log_softmax"])
def rowwise(context, x, axis=-1):
    """softmax or log_softmax along the last axis of a C-contiguous Tensor."""
    y = context.result._value
    if not isinstance(x, Tensor) or axis not in (-1, x.ndim - 1) or \
            not x._value.flags.c_contiguous:
        raise Unsupported("another axis or layout")
    kernel = rows.softmax if context.result._made_by.op_name == "softmax" else rows.log_softmax
    context.call(kernel, context.read(x), context.buffer(y))


@lowers(("vjp", "softmax"), ("vjp", "log_softmax"))
def rowwise_vjp(context, vjp, g, saved, out):
    y, axis = saved
    if axis != y.ndim - 1 or not (y.flags.c_contiguous and g.flags.c_contiguous):
        raise Unsupported("another axis or layout")
    kernel = rows.softmax_grad if vjp.op_name == "softmax" else rows.log_softmax_grad
    (result,) = context.result
    adjoint = out[0] if out[0] is not None and out[0].flags.c_contiguous else None
    context.call(kernel, context.read(g), context.read(y), *context.target(result, adjoint))


# --- backward -----------------------------------------------------------------------

@lowers(("vjp", "sigmoid"), ("vjp", "relu"))
def activation_vjp(context, vjp, g, saved, out):
    (y,) = saved
    _flat(g, y)
    kernel = pointwise.sigmoid_grad if vjp.op_name == "sigmoid" else pointwise.relu_grad
    (result,) = context.result
    context.call(kernel, context.read(g), context.read(y), *context.target(result, out[0]))


@lowers(("vjp", "matmul"))
def matmul_vjp(context, vjp, g, saved, out):
    a, b = saved
    if not gemm.fits_blas(a, b):
        raise Unsupported("a product NumPy computed")
    da, db = context.result
    if out[0] is not SKIP:
        _product_contribution(context, da, out[0], a, _gemm_transposed_b, g, b)
    if out[1] is not SKIP:
        _product_contribution(context, db, out[1], b, _gemm_transposed_a, a, g)


@lowers(("vjp", "linear"))
def linear_vjp(context, vjp, g, saved, out):
    x, w = saved
    results = context.result
    if out[0] is not SKIP:
        _product_contribution(context, results[0], out[0], x, gemm_into, g, w)
    if out[1] is not SKIP:
        _product_contribution(context, results[1], out[1], w, _gemm_transposed_a, g, x)
    if len(out) == 3 and out[2] is not SKIP:
        if not g.flags.c_contiguous:
            raise Unsupported("a bias gradient NumPy sums")
        _column_sum(context, results[2], out[2], g)


def _product_contribution(context, result, adjoint, operand, product, a, b):
    """A vjp's product into the adjoint it adds to, else into a new buffer laid out like
    `operand` (as protocol.kernel_out)."""
    buffer, accumulate = context.target(result, adjoint)
    order = order_of(adjoint) if adjoint is not None else order_of(operand)
    context.call(product, buffer, context.read(a), context.read(b), accumulate, order)


def _column_sum(context, result, adjoint, g):
    """The column sums of a C-contiguous g (a bias's gradient), added into the adjoint
    when it is C-contiguous, as protocol.column_sum."""
    adjoint = adjoint if adjoint is not None and adjoint.flags.c_contiguous else None
    context.call(pointwise.column_sum, context.read(g), *context.target(result, adjoint))


def _gemm_transposed_b(buffer, g, b, accumulate, order):
    return gemm_into(buffer, g, b.T, accumulate, order)


def _gemm_transposed_a(buffer, a, g, accumulate, order):
    return gemm_into(buffer, a.T, g, accumulate, order)


@lowers(("vjp", "cross_entropy"))
def cross_entropy_vjp(context, vjp, g, saved, out):
    probs, labels, reduction = saved
    if out[0] is not None and not out[0].flags.c_contiguous:
        raise Unsupported("an adjoint in another order")
    scale = context.temporary()
    context.call(_row_scale, context.read(g), reduction, len(labels), into=scale)
    (result,) = context.result
    buffer, accumulate = context.target(result, out[0])
    context.call(rows.softmax_cross_entropy_grad, context.read(probs), context.read(labels),
                 scale, buffer, accumulate)


@lowers(("vjp", "add"), ("vjp", "sub"), ("vjp", "mul"))
def arithmetic_vjp(context, vjp, g, saved, out):
    """add's, sub's and mul's backward without broadcasting (the bias pattern's column
    sum aside): g itself, or g times the other operand, stored or added in place."""
    _, _, a, b, _ = saved
    name = vjp.op_name
    for i, (result, adjoint, shape) in enumerate(zip(context.result, out, saved[:2])):
        if adjoint is SKIP:
            continue
        if name == "mul":
            partial = (pointwise.Arithmetic.MUL, g, b if i == 0 else a)
        elif name == "sub" and i == 1:
            raise Unsupported("-g")  # np.negative flips a NaN's sign, a product may not
        else:
            partial = None  # g itself
        if g.shape == shape:
            _contribute(context, result, adjoint, g, partial)
        elif (partial is None and g.ndim == 2 and len(shape) == 1 and g.shape[1] == shape[0]
              and g.flags.c_contiguous):
            _column_sum(context, result, adjoint, g)
        else:
            raise Unsupported("broadcasting")


def _contribute(context, result, adjoint, g, partial):
    """protocol.contribute(adjoint, partial): the first contribution kept as it is, later
    ones added into the adjoint in place. partial is None for g itself, else
    (op, g, operand) for a pointwise.arithmetic of g with an operand of its layout or a
    scalar."""
    if partial is not None:
        op, _, operand = partial
        if isinstance(operand, np.ndarray):
            if operand.shape != g.shape:
                raise Unsupported("a broadcast operand")
            _flat(g, operand)
        elif not isinstance(operand, np.floating):
            raise Unsupported("an operand of another kind")
    if adjoint is None:
        if partial is None:
            context.same(result, context.read(g))
        else:
            context.call(pointwise.arithmetic_into, op, context.read(g), context.read(operand),
                         context.buffer(result))
        return
    _flat(adjoint, g)
    if partial is None:
        term = context.read(g)
    else:
        term = context.scratch(g.shape, g.dtype)
        context.call(pointwise.arithmetic_into, op, context.read(g), context.read(operand),
                     term)
    target = context.read(adjoint)
    context.call(np.add, target, term, target)


def _vjp_call(vjp, g, saved, *out):
    return vjp(g, saved, out)


@lowers(*(("vjp", name) for name in ("div", "sum", "mean", "reshape", "log", *UNARY)))
def vjp_as_called(context, vjp, g, saved, out):
    """The vjp itself, called on the slots (its Python, without a Tensor or the sweep)."""
    context.call(_vjp_call, vjp, context.read(g), context.read(saved),
                 *(o if o is None or o is SKIP else context.read(o) for o in out),
                 results=context.result)
