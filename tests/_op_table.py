"""The op table: one row per way of calling each public op, and the namespaces a row is
built with. test_ops.py checks every row against finite differences, PyTorch and NumPy;
the layout tests, the bad-input cases and the reliability campaign derive their
op cases from the same rows.

A row says how to build the op from its input tensors (through a small namespace `F`
that is fastad itself, PyTorch or plain NumPy), the shapes of those inputs and the
domain they are drawn from. Constant arrays a row uses (labels, conditions, index
arrays, constant operands) go through `F.const`, so the layout tests can lay them out.
Optional fields say what is particular to a row: `vjp`, its gradient in NumPy for a
one-input elementwise row (the campaign's reference at NaN, Inf, huge values and
zeros), and `refuses_empty`, why zero-size inputs raise ValueError.

A public op with no gradient has no row; NO_ROW says which and where it is tested.
test_op_coverage.py checks that every public op has a row.
"""
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

import fastad as fa

N, C = 5, 4
LABELS = np.array([3, 0, 2, 2, 1])           # N labels in [0, C), one class repeated
ROWS = np.arange(N)
COND = np.array([[True, False, True, True],
                 [False, False, True, False],
                 [True, True, False, True]])
COLUMN_COND = np.array([[True], [False], [True]])
MASK = np.array([True, False, True, True, False])


# --- the three namespaces a row is built with -------------------------------------------

class FastadOps:
    """fastad itself; `const` passes a constant operand through unchanged."""

    def __getattr__(self, name):
        return getattr(fa, name)

    @staticmethod
    def const(array):
        return array


def _reduce_losses(losses, reduction):
    return {"mean": np.mean, "sum": np.sum, "none": np.asarray}[reduction](losses)


class _NumpyNames(type):
    def __getattr__(cls, name):  # an op NumPy spells as fastad does: np.<name>
        return getattr(np, name)


class NumpyOps(metaclass=_NumpyNames):
    """Plain-NumPy references (operators and indexing are NumPy's own): np.<name>
    (exp, sum, where, ...) unless NumPy spells or computes the op otherwise."""

    const = staticmethod(np.asarray)
    sub, mul, div = map(staticmethod, (np.subtract, np.multiply, np.divide))
    neg, pow, dot = map(staticmethod, (np.negative, np.power, np.matmul))

    @staticmethod
    def clip(x, lo=None, hi=None):
        return np.clip(x, lo, hi)

    @staticmethod
    def linear(x, w, b=None):
        return x @ w.T if b is None else x @ w.T + b

    @staticmethod
    def sigmoid(x):
        return 1 / (1 + np.exp(-x))

    @staticmethod
    def relu(x):
        return np.maximum(x, 0)

    @staticmethod
    def log_softmax(x, axis=-1):
        shifted = x - x.max(axis=axis, keepdims=True)
        return shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))

    @staticmethod
    def softmax(x, axis=-1):
        return np.exp(NumpyOps.log_softmax(x, axis))

    @staticmethod
    def cross_entropy(x, labels, reduction="mean"):
        return NumpyOps.nll_loss(NumpyOps.log_softmax(x), labels, reduction)

    @staticmethod
    def mse_loss(pred, target, reduction="mean"):
        return _reduce_losses((pred - target) ** 2, reduction)

    @staticmethod
    def binary_cross_entropy_with_logits(x, t, reduction="mean"):
        # -t log(sigmoid x) - (1 - t) log(1 - sigmoid x) = log(1 + e^x) - t x
        return _reduce_losses(np.logaddexp(0, x) - t * x, reduction)

    @staticmethod
    def nll_loss(log_probs, labels, reduction="mean"):
        return _reduce_losses(-log_probs[np.arange(len(labels)), labels], reduction)


class TorchOps:
    """The same names in PyTorch (operators and indexing are PyTorch's own)."""

    def __init__(self, torch):
        self.torch = torch

    def __getattr__(self, name):  # add, sub, mul, div, neg, pow, exp, log, sqrt, ...
        return getattr(self.torch, name)

    def const(self, array):
        return self.torch.as_tensor(array)

    def dot(self, a, b):
        return self.torch.matmul(a, b)

    def linear(self, x, w, b=None):
        return self.torch.nn.functional.linear(x, w, b)

    def relu(self, x):
        return self.torch.relu(x)

    def softmax(self, x, axis=-1):
        return self.torch.softmax(x, dim=axis)

    def log_softmax(self, x, axis=-1):
        return self.torch.log_softmax(x, dim=axis)

    def _reduce(self, fn, x, axis, keepdims):
        if axis is None:
            axis = tuple(range(x.ndim))
        return fn(x, dim=axis, keepdim=keepdims)

    def sum(self, x, axis=None, keepdims=False):
        return self._reduce(self.torch.sum, x, axis, keepdims)

    def mean(self, x, axis=None, keepdims=False):
        return self._reduce(self.torch.mean, x, axis, keepdims)

    def max(self, x, axis=None, keepdims=False):
        return self._reduce(self.torch.amax, x, axis, keepdims)  # amax splits ties evenly

    def min(self, x, axis=None, keepdims=False):
        return self._reduce(self.torch.amin, x, axis, keepdims)

    def clip(self, x, lo=None, hi=None):
        return self.torch.clamp(x, lo, hi)

    def stack(self, xs, axis=0):
        return self.torch.stack(xs, dim=axis)

    def transpose(self, x, axes=None):
        return x.permute(tuple(reversed(range(x.ndim))) if axes is None else axes)

    def reshape(self, x, shape):
        return x.reshape(shape)

    def concatenate(self, xs, axis=0):
        return self.torch.cat(xs, dim=axis)

    def where(self, cond, a, b):
        return self.torch.where(self.torch.as_tensor(cond), a, b)

    def cross_entropy(self, x, labels, reduction="mean"):
        return self.torch.nn.functional.cross_entropy(x, self.torch.as_tensor(labels),
                                                      reduction=reduction)

    def nll_loss(self, x, labels, reduction="mean"):
        return self.torch.nn.functional.nll_loss(x, self.torch.as_tensor(labels),
                                                 reduction=reduction)

    # (an integer target takes the input's dtype, as fastad's operand rules say)
    def mse_loss(self, pred, target, reduction="mean"):
        return self.torch.nn.functional.mse_loss(pred, target.to(pred.dtype),
                                                 reduction=reduction)

    def binary_cross_entropy_with_logits(self, x, t, reduction="mean"):
        return self.torch.nn.functional.binary_cross_entropy_with_logits(
            x, t.to(x.dtype), reduction=reduction)


FA = FastadOps()


# --- composite graphs (rows for how adjoints meet, not for one op) ---------------------

def shared_scalar(F, a):
    """A 0-d intermediate with two consumers: its adjoint is accumulated."""
    s = a * a
    return s * 3.0 + F.exp(s)


def transposed_fan_out_into_matmul(F, a, b):
    """h's adjoint gets two transposed (Fortran-ordered) contributions first, then the
    matmul that was recorded before them accumulates into the same buffer."""
    h = a * 1.0
    product = h @ b
    return F.sum(product) + F.sum(F.transpose(h) * 2.0) + F.sum(F.transpose(h) * 3.0)


def transposed_fan_out_into_sigmoid(F, a):
    """As above, with the compiled sigmoid backward accumulating into the buffer."""
    h = a * 1.0
    s = F.sigmoid(h) * F.const(np.arange(12).reshape(3, 4))
    return F.sum(s) + F.sum(F.transpose(h) * 2.0) + F.sum(F.transpose(h) * 3.0)


# --- the table -------------------------------------------------------------------------

EMPTY_LOSS = "a loss over no elements is refused (PyTorch's would be NaN)"


DOMAINS = {
    "real": lambda rng, shape: rng.standard_normal(shape),
    "pos": lambda rng, shape: rng.uniform(0.5, 2.0, shape),
    # relu and abs are checked away from their kink at 0
    "away0": lambda rng, shape: rng.choice([-1.0, 1.0], shape) * rng.uniform(0.2, 2.0, shape),
    "prob": lambda rng, shape: rng.uniform(0.0, 1.0, shape),
}


@dataclass(frozen=True)
class Op:
    op: str                      # the name the result's `_op` must show
    case: str
    build: Callable              # build(F, *inputs) -> output
    shapes: tuple                # one shape per input tensor
    domains: tuple = ("real",)   # one per input, or one for all
    vjp: Callable = None         # one-input elementwise rows: vjp(x, y, seed) in NumPy
    refuses_empty: str = ""      # why zero-size inputs raise ValueError, if they do

    @property
    def id(self):
        return f"{self.op}-{self.case}"

    def input_domains(self):
        return self.domains * len(self.shapes) if len(self.domains) == 1 else self.domains

    def inputs(self, rng, dtype, shapes=None):
        """Random inputs from the row's domains (at other `shapes` if given)."""
        return [np.asarray(DOMAINS[d](rng, s), dtype=dtype)
                for d, s in zip(self.input_domains(), shapes or self.shapes)]


OPS = [
    # broadcasting arithmetic, operands: tensors, Python/NumPy scalars, int arrays
    Op("add", "same_shape", lambda F, a, b: a + b, [(3, 4), (3, 4)]),
    Op("add", "row_vector", lambda F, a, b: a + b, [(3, 4), (4,)]),
    Op("add", "outer", lambda F, a, b: F.add(a, b), [(3, 1), (1, 4)]),
    Op("add", "batched", lambda F, a, b: a + b, [(2, 3, 4), (3, 1)]),
    Op("add", "vector_plus_matrix", lambda F, a, b: a + b, [(4,), (3, 4)]),
    Op("add", "python_scalar", lambda F, a: 2.5 + a, [(3, 4)]),
    Op("add", "int_array", lambda F, a: a + F.const(np.arange(4)), [(3, 4)]),
    Op("sub", "row_vector", lambda F, a, b: a - b, [(3, 4), (4,)]),
    Op("sub", "outer", lambda F, a, b: F.sub(a, b), [(3, 1), (1, 4)]),
    Op("sub", "scalar_minus_tensor", lambda F, a: 1.5 - a, [(3, 4)]),
    Op("sub", "numpy_float32_scalar", lambda F, a: F.sub(F.const(np.float32(2)), a), [(3, 4)]),
    Op("mul", "outer", lambda F, a, b: a * b, [(3, 1), (1, 4)]),
    Op("mul", "row_vector", lambda F, a, b: F.mul(a, b), [(3, 4), (4,)]),
    Op("mul", "python_scalar", lambda F, a: a * 3, [(3, 4)]),
    Op("mul", "numpy_float64_scalar", lambda F, a: a * np.float64(0.5), [(3, 4)]),
    Op("mul", "zero_d", lambda F, a, b: a * b, [(), ()]),
    Op("mul", "self", lambda F, a: a * a, [(3, 4)]),
    Op("div", "row_vector", lambda F, a, b: a / b, [(3, 4), (4,)], ("real", "pos")),
    Op("div", "outer", lambda F, a, b: F.div(a, b), [(3, 1), (1, 4)], ("real", "pos")),
    Op("div", "scalar_over_tensor", lambda F, a: 2.0 / a, [(3, 4)], ("pos",)),
    Op("div", "tensor_over_scalar", lambda F, a: a / 4, [(3, 4)]),
    Op("neg", "operator", lambda F, a: -a, [(3, 4)]),
    Op("neg", "function", lambda F, a: F.neg(a), [(2, 3, 4)], vjp=lambda x, y, s: -s),
    Op("pow", "square", lambda F, a: a ** 2, [(3, 4)]),
    Op("pow", "cube", lambda F, a: F.pow(a, 3), [(3, 4)]),
    Op("pow", "sqrt_exponent", lambda F, a: a ** 0.5, [(3, 4)], ("pos",)),
    Op("pow", "negative_exponent", lambda F, a: a ** -1.5, [(3, 4)], ("pos",)),
    Op("pow", "tensor_exponent", lambda F, a, b: F.pow(a, b), [(3, 4), (4,)], ("pos", "real")),
    Op("pow", "operator_tensor_exponent", lambda F, a, b: a ** b, [(3, 4), (3, 4)],
       ("pos", "real")),
    Op("pow", "scalar_base", lambda F, a: 2.0 ** a, [(3, 4)]),
    # elementwise functions
    Op("exp", "matrix", lambda F, a: F.exp(a), [(3, 4)], vjp=lambda x, y, s: s * y),
    Op("exp", "zero_d", lambda F, a: F.exp(a), [()]),
    Op("log", "matrix", lambda F, a: F.log(a), [(3, 4)], ("pos",), vjp=lambda x, y, s: s / x),
    Op("sqrt", "matrix", lambda F, a: F.sqrt(a), [(3, 4)], ("pos",),
       vjp=lambda x, y, s: s / (2 * y)),
    Op("abs", "function", lambda F, a: F.abs(a), [(3, 4)], ("away0",),
       vjp=lambda x, y, s: s * np.sign(x)),
    Op("abs", "builtin", lambda F, a: abs(a), [(3, 4)], ("away0",)),
    Op("sigmoid", "matrix", lambda F, a: F.sigmoid(a * 4.0), [(3, 4)]),
    Op("sigmoid", "batched", lambda F, a: F.sigmoid(a), [(2, 3, 4)],
       vjp=lambda x, y, s: s * y * (1 - y)),
    Op("tanh", "matrix", lambda F, a: F.tanh(a), [(3, 4)], vjp=lambda x, y, s: s * (1 - y * y)),
    Op("square", "matrix", lambda F, a: F.square(a), [(3, 4)], vjp=lambda x, y, s: 2 * x * s),
    Op("relu", "matrix", lambda F, a: F.relu(a), [(3, 4)], ("away0",),
       vjp=lambda x, y, s: np.where(x > 0, s, 0)),
    Op("log1p", "matrix", lambda F, a: F.log1p(a), [(3, 4)], ("pos",),
       vjp=lambda x, y, s: s / (1 + x)),
    Op("log1p", "near_minus_one", lambda F, a: F.log1p(a - 1.4), [(3, 4)], ("pos",)),
    # clip: the table's random values stay off the boundaries (see test_clip_* below)
    Op("clip", "both", lambda F, a: F.clip(a, -0.5, 0.7), [(3, 4)],
       vjp=lambda x, y, s: np.where((x >= -0.5) & (x <= 0.7), s, 0)),
    Op("clip", "lo_only", lambda F, a: F.clip(a, 0.1), [(3, 4)]),
    Op("clip", "hi_only", lambda F, a: F.clip(a, None, -0.2), [(2, 3, 4)]),
    Op("clip", "lo_above_hi", lambda F, a: F.clip(a, 0.5, -0.5), [(3, 4)]),
    # maximum / minimum: broadcasting, and a scalar operand
    Op("maximum", "same_shape", lambda F, a, b: F.maximum(a, b), [(3, 4), (3, 4)]),
    Op("maximum", "row_vector", lambda F, a, b: F.maximum(a, b), [(3, 4), (4,)]),
    Op("maximum", "scalar", lambda F, a: F.maximum(a, F.const(0.25)), [(3, 4)]),
    Op("minimum", "outer", lambda F, a, b: F.minimum(a, b), [(3, 1), (1, 4)]),
    Op("minimum", "scalar_first", lambda F, a: F.minimum(F.const(np.float64(-0.3)), a),
       [(3, 4)]),
    # softmax family along any axis
    Op("softmax", "last_axis", lambda F, a: F.softmax(a), [(2, 3, 4)]),
    Op("softmax", "axis0", lambda F, a: F.softmax(a, axis=0), [(2, 3, 4)]),
    Op("softmax", "axis1", lambda F, a: F.softmax(a, axis=1), [(2, 3, 4)]),
    Op("softmax", "vector", lambda F, a: F.softmax(a), [(5,)]),
    Op("log_softmax", "last_axis", lambda F, a: F.log_softmax(a), [(2, 3, 4)]),
    Op("log_softmax", "axis0", lambda F, a: F.log_softmax(a, axis=0), [(3, 4)]),
    Op("log_softmax", "axis_minus2", lambda F, a: F.log_softmax(a, axis=-2), [(2, 3, 4)]),
    # log(softmax(x)) is rewritten to log_softmax(x), so that is the op it remembers
    Op("log_softmax", "log_of_softmax", lambda F, a: F.log(F.softmax(a)), [(3, 4)]),
    Op("log_softmax", "log_of_softmax_axis0", lambda F, a: F.log(F.softmax(a, axis=0)),
       [(3, 4)]),
    # reductions: all, one axis, negative axis, tuples, keepdims
    Op("sum", "all", lambda F, a: F.sum(a), [(2, 3, 4)]),
    Op("sum", "axis0", lambda F, a: F.sum(a, axis=0), [(2, 3, 4)]),
    Op("sum", "axis_minus1", lambda F, a: F.sum(a, axis=-1), [(2, 3, 4)]),
    Op("sum", "tuple", lambda F, a: F.sum(a, axis=(0, 2)), [(2, 3, 4)]),
    Op("sum", "tuple_keepdims", lambda F, a: F.sum(a, axis=(0, 2), keepdims=True), [(2, 3, 4)]),
    Op("sum", "method_keepdims", lambda F, a: a.sum(1, keepdims=True), [(3, 4)]),
    Op("sum", "all_keepdims", lambda F, a: F.sum(a, keepdims=True), [(3, 4)]),
    Op("mean", "all", lambda F, a: F.mean(a), [(2, 3, 4)]),
    Op("mean", "axis1", lambda F, a: F.mean(a, axis=1), [(2, 3, 4)]),
    Op("mean", "tuple_keepdims", lambda F, a: F.mean(a, axis=(-1, 0), keepdims=True),
       [(2, 3, 4)]),
    Op("mean", "method", lambda F, a: a.mean(0), [(3, 4)]),
    Op("max", "all", lambda F, a: F.max(a), [(2, 3, 4)]),
    Op("max", "axis1", lambda F, a: F.max(a, axis=1), [(2, 3, 4)]),
    Op("max", "axis_minus1", lambda F, a: F.max(a, axis=-1), [(3, 4)]),
    Op("max", "tuple_keepdims", lambda F, a: F.max(a, axis=(0, 2), keepdims=True),
       [(2, 3, 4)]),
    Op("min", "all", lambda F, a: F.min(a), [(2, 3, 4)]),
    Op("min", "axis1", lambda F, a: F.min(a, axis=1), [(2, 3, 4)]),
    Op("min", "tuple_keepdims", lambda F, a: F.min(a, axis=(-1, 0), keepdims=True),
       [(2, 3, 4)]),
    # matrix products: 2-D (BLAS, C- and F-ordered operands), 1-D, batched, broadcast
    Op("matmul", "matrix", lambda F, a, b: a @ b, [(3, 4), (4, 5)]),
    Op("matmul", "dot", lambda F, a, b: F.dot(a, b), [(3, 4), (4, 5)]),
    Op("matmul", "fortran_left", lambda F, a, b: F.transpose(a) @ b, [(4, 3), (4, 5)]),
    Op("matmul", "fortran_right", lambda F, a, b: F.matmul(a, F.transpose(b)),
       [(3, 4), (5, 4)]),
    Op("matmul", "fortran_both", lambda F, a, b: F.transpose(a) @ F.transpose(b),
       [(4, 3), (5, 4)]),
    Op("matmul", "outer_dims_one", lambda F, a, b: a @ b, [(1, 4), (4, 1)]),
    Op("matmul", "vector_matrix", lambda F, a, b: a @ b, [(4,), (4, 5)]),
    Op("matmul", "matrix_vector", lambda F, a, b: a @ b, [(3, 4), (4,)]),
    Op("matmul", "vector_vector", lambda F, a, b: F.matmul(a, b), [(4,), (4,)]),
    Op("matmul", "batched_matrix", lambda F, a, b: a @ b, [(2, 3, 4), (4, 5)]),
    Op("matmul", "batched_batched", lambda F, a, b: a @ b, [(2, 3, 4), (2, 4, 5)]),
    Op("matmul", "broadcast_batch", lambda F, a, b: a @ b, [(2, 1, 3, 4), (3, 4, 2)]),
    Op("matmul", "vector_batched", lambda F, a, b: a @ b, [(4,), (2, 4, 5)]),
    Op("matmul", "batched_vector", lambda F, a, b: a @ b, [(2, 3, 4), (4,)]),
    Op("matmul", "self", lambda F, a: F.transpose(a) @ a, [(3, 4)]),
    # linear: one op for a 2-D input (bias or not, the weight's transpose as a BLAS flag);
    # matmul and add for other shapes
    Op("linear", "bias", lambda F, x, w, b: F.linear(x, w, b), [(3, 4), (5, 4), (5,)]),
    Op("linear", "no_bias", lambda F, x, w: F.linear(x, w), [(3, 4), (5, 4)]),
    Op("linear", "one_row", lambda F, x, w, b: F.linear(x, w, b), [(1, 4), (5, 4), (5,)]),
    Op("linear", "fortran_input", lambda F, x, w, b: F.linear(F.transpose(x), w, b),
       [(4, 3), (5, 4), (5,)]),
    Op("add", "linear_batched", lambda F, x, w, b: F.linear(x, w, b),
       [(2, 3, 4), (5, 4), (5,)]),
    Op("matmul", "linear_vector", lambda F, x, w: F.linear(x, w), [(4,), (5, 4)]),
    # shapes
    Op("reshape", "method_args", lambda F, a: a.reshape(2, 6), [(3, 4)]),
    Op("reshape", "function_tuple", lambda F, a: F.reshape(a, (4, -1)), [(2, 3, 2)]),
    Op("reshape", "flatten", lambda F, a: a.reshape(-1), [(2, 3, 4)]),
    Op("transpose", "matrix", lambda F, a: F.transpose(a), [(3, 4)]),
    Op("transpose", "property", lambda F, a: a.T, [(3, 4)]),
    Op("transpose", "axes", lambda F, a: F.transpose(a, (1, 2, 0)), [(2, 3, 4)]),
    Op("concatenate", "axis0", lambda F, a, b, c: F.concatenate([a, b, c]),
       [(2, 3), (1, 3), (3, 3)]),
    Op("concatenate", "axis1", lambda F, a, b: F.concatenate([a, b], axis=1), [(2, 1), (2, 3)]),
    Op("concatenate", "axis_minus1", lambda F, a, b: F.concatenate([a, b], axis=-1),
       [(2, 3, 1), (2, 3, 2)]),
    Op("stack", "axis0", lambda F, a, b, c: F.stack([a, b, c]), [(2, 3)] * 3),
    Op("stack", "axis1", lambda F, a, b: F.stack([a, b], axis=1), [(2, 3), (2, 3)]),
    Op("stack", "axis_minus1", lambda F, a, b: F.stack((a, b), axis=-1), [(2, 3), (2, 3)]),
    Op("stack", "vectors_last", lambda F, a, b: F.stack([a, b], axis=1), [(4,), (4,)]),
    Op("stack", "zero_d", lambda F, a, b: F.stack([a, b]), [(), ()]),
    Op("where", "broadcast_b", lambda F, a, b: F.where(F.const(COND), a, b), [(3, 4), (4,)]),
    Op("where", "column_cond", lambda F, a, b: F.where(F.const(COLUMN_COND), a, b),
       [(3, 4), (3, 4)]),
    # indexing: basic slices, integer arrays (gather / scatter-add), repeats, masks
    Op("getitem", "int", lambda F, a: a[1], [(3, 4)]),
    Op("getitem", "slice", lambda F, a: a[1:3], [(3, 4)]),
    Op("getitem", "step_slice", lambda F, a: a[:, ::2], [(3, 4)]),
    Op("getitem", "ellipsis", lambda F, a: a[..., 1], [(2, 3, 4)]),
    Op("getitem", "negative_int_slice", lambda F, a: a[-1, 1:], [(3, 4)]),
    Op("getitem", "rows_labels", lambda F, a: a[F.const(ROWS), F.const(LABELS)], [(N, C)]),
    Op("getitem", "rows_negative_labels", lambda F, a: a[F.const(ROWS), F.const(LABELS - C)],
       [(N, C)]),
    Op("getitem", "repeated_rows", lambda F, a: a[F.const(np.array([0, 2, 0, 0]))], [(3, 4)]),
    Op("getitem", "repeated_pairs",
       lambda F, a: a[F.const(np.array([1, 1, 4])), F.const(np.array([2, 2, 0]))], [(N, C)]),
    Op("getitem", "vector_repeats", lambda F, a: a[F.const(LABELS)], [(C,)]),
    Op("getitem", "mask", lambda F, a: a[F.const(MASK)], [(N, C)]),
    # losses
    *[Op("cross_entropy", reduction,
         lambda F, a, r=reduction: F.cross_entropy(a, F.const(LABELS), reduction=r), [(N, C)])
      for reduction in ("mean", "sum", "none")],
    *[Op("nll_loss", reduction,
         lambda F, a, r=reduction: F.nll_loss(F.log_softmax(a), F.const(LABELS), reduction=r),
         [(N, C)])
      for reduction in ("mean", "sum", "none")],
    Op("nll_loss", "raw_scores",
       lambda F, a: F.nll_loss(a, F.const(LABELS), reduction="sum"), [(N, C)]),
    *[Op("mse_loss", reduction,
         lambda F, a, b, r=reduction: F.mse_loss(a, b, reduction=r), [(N, C), (N, C)],
         refuses_empty=EMPTY_LOSS)
      for reduction in ("mean", "sum", "none")],
    Op("mse_loss", "constant_target",
       lambda F, a: F.mse_loss(a, F.const(np.arange(12).reshape(3, 4) % 3)), [(3, 4)]),
    Op("mse_loss", "zero_d", lambda F, a, b: F.mse_loss(a, b), [(), ()]),
    *[Op("binary_cross_entropy_with_logits", reduction,
         lambda F, a, b, r=reduction: F.binary_cross_entropy_with_logits(a, b, reduction=r),
         [(N, C), (N, C)], ("real", "prob"), refuses_empty=EMPTY_LOSS)
      for reduction in ("mean", "sum", "none")],
    Op("binary_cross_entropy_with_logits", "constant_targets",
       lambda F, a: F.binary_cross_entropy_with_logits(a * 4.0, F.const(LABELS % 2)), [(N,)]),
    Op("neg", "seed_loss",
       lambda F, a: -F.mean(F.log(F.softmax(a))[F.const(ROWS), F.const(LABELS)]), [(N, C)]),
    # composites: how adjoints from several consumers meet
    Op("sigmoid", "dense_layer", lambda F, x, w, b: F.sigmoid(x @ w + b), [(5, 3), (3, 4), (4,)]),
    Op("add", "shared_zero_d", shared_scalar, [()]),
    Op("add", "transposed_fan_out_matmul", transposed_fan_out_into_matmul, [(3, 4), (4, 5)]),
    Op("add", "transposed_fan_out_sigmoid", transposed_fan_out_into_sigmoid, [(3, 4)]),
]
BY_ID = {row.id: row for row in OPS}
assert len(BY_ID) == len(OPS), "duplicate row ids"

# Public ops with no row, and why (nothing of the table applies without a gradient).
NO_ROW = {"argmax": "returns indices, not a Tensor: tests of its own in test_ops.py"}


# --- what a row does, as the tables built from it need to know -------------------------

class Recording(FastadOps):
    """fastad itself, noting every function a row calls (its name, and each call with
    its arguments) and the constant arrays it passes through `const`."""

    def __init__(self):
        self.names, self.calls, self.consts = set(), [], []

    def __getattr__(self, name):
        self.names.add(name)
        function = super().__getattr__(name)

        def call(*args, **kwargs):
            self.calls.append((name, args, kwargs))
            return function(*args, **kwargs)
        return call

    def const(self, array):
        if isinstance(array, np.ndarray):
            self.consts.append(array)
        return array


def record(row, inputs=None):
    """(the Recording, the output) of `row` built once on float64 Parameters."""
    F = Recording()
    if inputs is None:
        inputs = [fa.Parameter(x) for x in row.inputs(np.random.default_rng(0), np.float64)]
    return F, row.build(F, *inputs)


def ops_covered(rows):
    """The public ops that `rows` drive: each row's own op and every function it calls."""
    covered = set()
    for row in rows:
        covered |= {row.op} | record(row)[0].names
    return covered


def missing_rows(rows, registry):
    """The public ops in `registry` that no row drives and NO_ROW does not excuse."""
    return set(registry) - ops_covered(rows) - set(NO_ROW)


def recorded_nodes(out):
    """How many nodes the graph of `out` has."""
    seen, stack = set(), [out._node]
    while stack:
        node = stack.pop()
        if node is None or isinstance(node, fa.Tensor) or id(node) in seen:
            continue
        seen.add(id(node))
        stack.extend(node.parents)
    return len(seen)


def is_single_op(row):
    """Whether the row calls one op and records one node, so that any error it raises
    comes from row.op (log(softmax(x)) records only log_softmax, but softmax runs)."""
    F, out = record(row)
    return len(F.names) <= 1 and recorded_nodes(out) == 1


def takes_ndarray(row, i):
    """Whether fastad runs the row with input i a plain ndarray, the others Parameters,
    in both dtypes: not if NumPy does (`-a`, `a.T`, `a[1]`), nor if the ndarray is the
    only array operand (fastad then makes a Python or NumPy scalar beside it a float64
    tensor: `fa.pow(a, 3)` raises TypeError for a float32 ndarray `a`)."""
    for dtype in (np.float32, np.float64):
        inputs = [fa.Parameter(x) for x in row.inputs(np.random.default_rng(0), dtype)]
        inputs[i] = inputs[i].value.copy()
        try:
            if not isinstance(record(row, inputs)[1], fa.Tensor):
                return False
        except TypeError:
            return False
    return True


def computes(row, shapes, F=NumpyOps):
    """Whether `F` (NumPy, unless said) computes the row on inputs of `shapes` (a
    zero-size axis, or shapes that do not fit together, may make it raise)."""
    inputs = row.inputs(np.random.default_rng(0), np.float64, shapes)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # e.g. the mean of nothing
        try:
            row.build(F, *inputs)
        except (ValueError, IndexError):
            return False
    return True


def resized(shapes, old, new):
    """`shapes` with every axis of length `old` made `new` long."""
    return [tuple(new if n == old else n for n in shape) for shape in shapes]


def resizings(row, new):
    """The row's shapes with one of its axis lengths changed to `new` everywhere it
    occurs, for each length for which NumPy still computes the row."""
    lengths = sorted({n for shape in row.shapes for n in shape} - {new})
    candidates = [resized(row.shapes, old, new) for old in lengths]
    return [shapes for shapes in candidates if computes(row, shapes)]
