"""SPEC "Bad input": every wrong call gets the right exception, with a message naming the
op and the offending shapes or dtypes, and leaves its arguments exactly as they were.

Each case is a few lines of source: `setup` builds the arguments (helpers below), `call`
is the wrong call. Many reach a compiled kernel (matmul, the bias add, sigmoid, softmax,
log_softmax, cross_entropy, nll_loss, the label gather), which would get bad pointers if
a Python check were missing, so the cases run in a child process: a crash there fails
the case that was running (and the ones after it) instead of killing pytest.

A few rows are the right call next to a wrong one that used to reach a kernel or give a
wrong answer (a byte-swapped `.value`, a sequence index, an update under no_grad): they
expect no exception and a `check` (computed with NumPy) to hold afterwards.

The mistakes every op shares are derived from the rows of the op table
(tests/_op_table.py) that record one op: non-real data for any input, one input of the
other precision, an input whose shape does not fit (where NumPy refuses it too), NaN
inputs under detect_anomaly, and zero-size inputs for a row that refuses them. The
cases written out below are the ones particular to an op or to no op.
"""
import json
import os
import subprocess
import sys
from dataclasses import dataclass

import numpy as np
import pytest

import fastad as fa
from _op_table import OPS, NumpyOps, computes, is_single_op, resizings, takes_ndarray

# Children run from here: `python -c` puts its working directory first on sys.path, and
# from the repository root that would import the uncompiled source tree, not the install.
HERE = os.path.dirname(os.path.abspath(__file__))

# --- the harness (also run in the child process, see the bottom of this file) ------------

PRELUDE = """
import array
import collections
import numpy as np
import fastad as fa
from _op_table import BY_ID, FA
rng = np.random.default_rng(0)
def A(shape, dtype=np.float64):           # a plain ndarray
    return rng.standard_normal(shape).astype(dtype)
def T(shape, dtype=np.float64):           # a data tensor
    return fa.tensor(A(shape, dtype))
def P(shape, dtype=np.float64):           # a parameter
    return fa.Parameter(A(shape, dtype))
def inputs(row_id, kinds, shapes=None, fill=None):
    # A row's inputs, one of each kind: P32 or P64 a Parameter, T32 a data tensor, A32 or
    # A64 an ndarray, or the dtype of a non-real ndarray; at other shapes, or filled with
    # one value, if given.
    made = []
    for x, kind in zip(BY_ID[row_id].inputs(rng, np.float64, shapes), kinds):
        x = x if fill is None else np.full_like(x, float(fill))
        if kind[0] in "PTA":
            x = x.astype(np.float32 if kind[1:] == "32" else np.float64)
            made.append({"P": fa.Parameter, "T": fa.tensor, "A": np.asarray}[kind[0]](x))
        else:
            made.append(np.full(x.shape, "1", kind) if kind == "str" else np.ones(x.shape, kind))
    return made
"""


def _snapshot(namespace):
    """Deep copies of every array, Tensor value and list the setup made."""
    saved = {}
    for name, value in namespace.items():
        if isinstance(value, fa.Tensor):
            saved[name] = value.value.copy()
        elif isinstance(value, np.ndarray):
            saved[name] = value.copy()
        elif isinstance(value, list):
            saved[name] = list(value)
    return saved


def _changed(namespace, saved):
    """Names of the arguments whose contents differ from their snapshot."""
    changed = []
    for name, before in saved.items():
        now = namespace[name]
        now = now.value if isinstance(now, fa.Tensor) else now
        if isinstance(before, np.ndarray):
            same = (isinstance(now, np.ndarray) and now.dtype == before.dtype
                    and now.shape == before.shape
                    and np.array_equal(now, before, equal_nan=before.dtype.kind in "fc"))
        else:
            same = now == before
        if not same:
            changed.append(name)
    return changed


def run_case(setup, call, check=""):
    """Run `setup` then `call`; report the exception raised, any changed argument and,
    when the call succeeded, whether the expression `check` holds."""
    namespace = {}
    exec(PRELUDE + setup, namespace)
    saved = _snapshot(namespace)
    try:
        exec(call, namespace)
        raised, message = None, ""
    except Exception as e:  # noqa: BLE001  (the case says which one it expects)
        raised, message = type(e).__name__, str(e)
    holds = None
    if check and raised is None:
        try:
            holds = bool(eval(check, namespace))
        except Exception as e:  # noqa: BLE001  (a check that cannot be computed fails)
            holds = f"{type(e).__name__}: {e}"
    return {"raised": raised, "message": message, "changed": _changed(namespace, saved),
            "check": holds}


# --- the cases --------------------------------------------------------------------------

@dataclass(frozen=True)
class Case:
    id: str
    setup: str
    call: str
    error: type               # None: the call must work, and `check` hold after it
    mentions: tuple = ()      # substrings the message must contain (op, shapes, dtypes)
    check: str = ""           # an expression over the setup's names
    modifies: tuple = ()      # the names the call may change (an assignment, an update)


def _row_case(row, what, kinds, error, mentions, shapes=None, fill=None):
    """A case calling `row` on inputs x0, x1, ... of `kinds` (see PRELUDE's inputs)."""
    names = ", ".join(f"x{i}" for i in range(len(kinds)))
    extra = (f", shapes={shapes!r}" if shapes else "") + (f", fill={fill!r}" if fill else "")
    call = f"BY_ID[{row.id!r}].build(FA, {names})"
    if error is FloatingPointError:
        call = f"with fa.detect_anomaly():\n    {call}"
    return Case(f"{row.id}-{what}", f"{names}, = inputs({row.id!r}, {kinds!r}{extra})", call,
                error, mentions)


def _with(kinds, i, kind):
    return kinds[:i] + (kind,) + kinds[i + 1:]


def _nan_stays(row):
    """Whether NumPy's value of the row on NaN inputs has a NaN in it."""
    with np.errstate(all="ignore"):
        return np.isnan(row.build(NumpyOps, *[np.full(s, np.nan) for s in row.shapes])).any()


def row_cases():
    """The mistakes every op shares, for each row that records one op (so the error is
    row.op's): TypeError for non-real data and for mixed precision, ValueError for an
    input one longer in its last axis where NumPy refuses that too, FloatingPointError
    for NaN inputs under detect_anomaly (where NumPy's value keeps a NaN), and
    ValueError for zero-size inputs where the row says it refuses them."""
    cases = []
    for row in filter(is_single_op, OPS):
        n = len(row.shapes)
        p64 = ("P64",) * n
        ndarray_ok = [takes_ndarray(row, i) for i in range(n)]
        for i in range(n):
            if ndarray_ok[i]:
                cases += [_row_case(row, f"input{i}-{kind}", _with(p64, i, kind), TypeError,
                                    (row.op,)) for kind in ("complex64", "object", "str")]
            if n == 1:
                continue
            kinds = [(_with(p64, i, "T32"), "float32")]
            if ndarray_ok[i]:
                kinds += [(_with(p64, i, "A32"), "ndarray32"),
                          (_with(("P32",) * n, i, "A64"), "ndarray64")]
            cases += [_row_case(row, f"input{i}-{what}", k, TypeError,
                                (row.op, "float32", "float64")) for k, what in kinds]
            if row.shapes[i]:
                grown = [tuple(s) for s in row.shapes]
                grown[i] = grown[i][:-1] + (grown[i][-1] + 1,)
                if not computes(row, grown):
                    forms = [(p64, "shape")] + ([(_with(p64, i, "A64"), "shape-ndarray")]
                                                if ndarray_ok[i] else [])
                    cases += [_row_case(row, f"input{i}-{what}", k, ValueError,
                                        (row.op, str(grown[i])), shapes=grown)
                              for k, what in forms]
        if _nan_stays(row):
            cases.append(_row_case(row, "nan-under-detect_anomaly", p64, FloatingPointError,
                                   (f"'{row.op}'",), fill="nan"))
        if row.refuses_empty:
            cases += [_row_case(row, f"empty-{k}", p64, ValueError, (row.op, str(shapes[0])),
                                shapes=shapes)
                      for k, shapes in enumerate(resizings(row, 0))]
    return cases


def shape_cases():
    """Shape mismatches particular to an op: ValueError naming the op and both shapes."""
    cases = [
        Case("matmul-inner-2d", "a = P((3, 4)); b = T((5, 2))", "fa.matmul(a, b)",
             ValueError, ("matmul", "(3, 4)", "(5, 2)")),
        Case("matmul-inner-1d", "a = P((3,)); b = T((4,))", "fa.matmul(a, b)",
             ValueError, ("matmul", "(3,)", "(4,)")),
        Case("matmul-2d-1d", "a = P((3, 4)); b = A((5,))", "fa.matmul(a, b)",
             ValueError, ("matmul", "(3, 4)", "(5,)")),
        Case("matmul-1d-2d", "a = A((3,)); b = P((4, 2))", "fa.dot(a, b)",
             ValueError, ("matmul", "(3,)", "(4, 2)")),
        Case("matmul-batch", "a = P((2, 3, 4)); b = T((3, 4, 5))", "fa.matmul(a, b)",
             ValueError, ("matmul", "(2, 3, 4)", "(3, 4, 5)")),
        Case("matmul-0d", "a = P(()); b = T((3,))", "fa.matmul(a, b)",
             ValueError, ("matmul", "()", "(3,)")),
        Case("matmul-operator-ndarray-lhs", "a = A((3, 4)); b = P((5, 2))", "a @ b",
             ValueError, ("matmul", "(3, 4)", "(5, 2)")),
        Case("linear-in-features", "x = P((3, 4)); w = T((5, 3))", "fa.linear(x, w)",
             ValueError, ("linear", "(3, 4)", "(5, 3)", "in_features=3")),
        Case("linear-weight-1d", "x = P((3, 4)); w = T((4,))", "fa.linear(x, w)",
             ValueError, ("linear", "2-D", "(4,)")),
        Case("linear-weight-3d", "x = P((3, 4)); w = T((2, 5, 4))", "fa.linear(x, w)",
             ValueError, ("linear", "2-D", "(2, 5, 4)")),
        Case("linear-input-0d", "x = P(()); w = T((5, 4))", "fa.linear(x, w)",
             ValueError, ("linear", "()", "(5, 4)")),
        Case("linear-bias-shape", "x = P((3, 4)); w = T((5, 4)); b = P((4,))",
             "fa.linear(x, w, b)", ValueError, ("linear", "(4,)", "(5,)")),
        Case("linear-bias-2d", "x = P((3, 4)); w = T((5, 4)); b = A((1, 5))",
             "fa.linear(x, w, b)", ValueError, ("linear", "(1, 5)", "(5,)")),
        Case("where-shapes", "c = A((2, 2)) > 0; a = P((3, 4)); b = T((3, 4))",
             "fa.where(c, a, b)", ValueError, ("where", "(2, 2)", "(3, 4)")),
        Case("reshape-size", "a = P((3, 4))", "fa.reshape(a, (5, 5))",
             ValueError, ("reshape", "(3, 4)", "(5, 5)")),
        Case("stack-ndim", "a = P((3,)); b = T((1, 3))", "fa.stack([a, b], axis=1)",
             ValueError, ("stack", "(3,)", "(1, 3)")),
    ]
    # elementwise losses want a target of the input's shape, even where it would broadcast
    for op in ("mse_loss", "binary_cross_entropy_with_logits"):
        cases += [
            Case(f"{op}-broadcastable", "x = P((4, 3)); t = A((3,))", f"fa.{op}(x, t)",
                 ValueError, (op, "(4, 3)", "(3,)")),
            Case(f"{op}-scalar-target", "x = P((2,))", f"fa.{op}(x, 1.0)",
                 ValueError, (op, "(2,)", "()")),
        ]
    return cases


def label_cases():
    """Labels vs (N, C) scores: ValueError for wrong kind/shape, IndexError for range."""
    cases = [
        Case("empty-batch", "x = P((0, 4)); y = np.zeros(0, np.int64)", "{op}(x, y)",
             ValueError, ("{op}", "(0, 4)")),
        Case("scores-1d", "x = P((4,)); y = np.zeros(4, np.int64)", "{op}(x, y)",
             ValueError, ("{op}", "(4,)")),
        Case("scores-3d", "x = P((2, 3, 4)); y = np.zeros(2, np.int64)", "{op}(x, y)",
             ValueError, ("{op}", "(2, 3, 4)")),
        Case("no-classes", "x = P((3, 0)); y = np.zeros(3, np.int64)", "{op}(x, y)",
             IndexError, ("{op}",)),
    ]
    bad_kind = {
        "float-integral": "np.array([0.0, 1.0, 2.0])",
        "float32": "np.array([0, 1, 2], np.float32)",
        "float-list": "[0.0, 1.0, 2.0]",
        "bool": "np.array([True, False, True])",
        "string": "np.array(['0', '1', '2'])",
        "object": "np.array([0, 1, 2], dtype=object)",
        "none": "None",
    }
    cases += [Case(f"labels-{name}", f"x = P((3, 4)); y = {labels}", "{op}(x, y)",
                   ValueError, ("{op}",)) for name, labels in bad_kind.items()]
    bad_shape = {
        "too-short": ("np.array([0, 1])", "(2,)"),
        "too-long": ("[0, 1, 2, 3]", "(4,)"),
        "2d": ("np.zeros((3, 1), np.int64)", "(3, 1)"),
        "row-of-3": ("np.zeros((1, 3), np.int64)", "(1, 3)"),
        "0d": ("np.int64(1)", "()"),
    }
    cases += [Case(f"labels-{name}", f"x = P((3, 4)); y = {labels}", "{op}(x, y)",
                   ValueError, ("{op}", shown, "(3, 4)"))
              for name, (labels, shown) in bad_shape.items()]
    out_of_range = {  # the labels, and the one the message names
        "equal-to-C": ("np.array([0, 1, 4])", "label 4 "),
        "far-above": ("np.array([0, 10**6, 1])", "label 1000000 "),
        "negative": ("np.array([0, -1, 1])", "label -1 "),
        "very-negative": ("np.array([0, 1, -(2**62)])", f"label {-(2**62)} "),
        "uint64-huge": ("np.array([0, 1, 2**64 - 1], np.uint64)", f"label {2**64 - 1} "),
        "list": ("[0, 4, 1]", "label 4 "),
        "int8-negative": ("np.array([0, -1, 1], np.int8)", "label -1 "),
        "uint32-above": ("np.array([0, 2**32 - 1, 1], np.uint32)", f"label {2**32 - 1} "),
    }
    cases += [Case(f"labels-{name}", f"x = P((3, 4)); y = {labels}", "{op}(x, y)",
                   IndexError, ("{op}", shown))
              for name, (labels, shown) in out_of_range.items()]
    cases += [Case(f"reduction-{bad}", "x = P((3, 4)); y = [0, 1, 2]",
                   f"{{op}}(x, y, reduction={bad!r})", ValueError, ("{op}", bad))
              for bad in ("avg", "MEAN")]
    # every label case for both losses
    return [Case(f"{op}-{c.id}", c.setup, c.call.format(op=f"fa.{op}"), c.error,
                 tuple(m.format(op=op) for m in c.mentions))
            for op in ("cross_entropy", "nll_loss") for c in cases]


def gather_cases():
    """p[np.arange(n), y] (the kernel gather) with y out of range: IndexError."""
    return [
        Case(f"gather-{name}", f"p = P((3, 4)); y = {labels}", "p[np.arange(3), y]",
             IndexError, ("getitem",))
        for name, labels in [("above", "np.array([0, 1, 4])"),
                             ("far-above", "np.array([0, 1, 10**6])"),
                             ("far-below", "np.array([0, 1, -5])")]
    ]


def dtype_cases():
    """Mixed precision and non-real data particular to an op or to no op (see row_cases),
    and dtype=: TypeError."""
    cases = [
        Case("add-0d-ndarray64", "a = P((3,), np.float32); b = np.array(2.0)",
             "a + b", TypeError, ("add", "float32", "float64")),
        Case("clip-complex-bound", "x = P((3,))", "fa.clip(x, 1j, 2.0)", TypeError,
             ("clip", "lo", "1j")),
        Case("clip-string-bound", "x = P((3,))", "fa.clip(x, 0.0, '1')", TypeError,
             ("clip", "hi", "'1'")),
        Case("clip-array-bound", "x = P((3,)); lo = A((3,))", "fa.clip(x, lo)", TypeError,
             ("clip", "lo")),
        Case("seed-dtype", "x = P((3,), np.float32); y = x * 2; s = np.ones(3)",
             "fa.grad(y, x, seed=s)", TypeError, ("float32", "float64")),
    ]
    not_real = {"complex": "np.ones(3, np.complex128)", "object": "np.ones(3, dtype=object)",
                "string-array": "np.array(['1', '2'])", "string": "'abc'",
                "bytes-array": "np.array([b'1'])", "datetime": "np.array(['2020-01-01'], 'M8[D]')"}
    for name, data in not_real.items():
        cases += [
            Case(f"tensor-{name}", f"d = {data}", "fa.tensor(d)", TypeError, ("tensor",)),
            Case(f"parameter-{name}", f"d = {data}", "fa.Parameter(d)", TypeError,
                 ("Parameter",)),
        ]
    for name, operand in [("complex-scalar", "1j"), ("string", "'a'")]:
        cases += [Case(f"operand-{name}-{op}", f"a = P((3,)); b = {operand}",
                       f"a {symbol} b", TypeError, (op,))
                  for op, symbol in [("add", "+"), ("mul", "*"), ("matmul", "@")]]
    for bad in ("np.int32", "np.float16", "np.complex64", "'bogus'", "object", "bool"):
        cases += [Case(f"dtype-{bad}-{maker}", "d = [1.0, 2.0]", f"fa.{maker}(d, dtype={bad})",
                       TypeError, (maker, "dtype")) for maker in ("tensor", "Parameter")]
    return cases


def misc_cases():
    """Empty max, non-scalar outputs without a seed, bad seeds and axes."""
    return [
        Case("max-empty-axis0", "x = P((0, 3))", "fa.max(x, axis=0)", ValueError,
             ("max", "(0, 3)")),
        Case("max-empty-all", "x = P((0, 3))", "fa.max(x)", ValueError, ("max", "(0, 3)")),
        Case("max-empty-tuple", "x = P((2, 0, 3))", "fa.max(x, axis=(0, 1))", ValueError,
             ("max", "(2, 0, 3)")),
        Case("max-empty-method", "x = P((4, 0))", "x.max(axis=-1)", ValueError, ("max",)),
        Case("min-empty-axis0", "x = P((0, 3))", "fa.min(x, axis=0)", ValueError,
             ("min", "(0, 3)")),
        Case("min-empty-all", "x = P((0, 3))", "fa.min(x)", ValueError, ("min", "(0, 3)")),
        Case("min-empty-method", "x = P((4, 0))", "x.min(axis=(0, 1))", ValueError,
             ("min", "(4, 0)")),
        Case("min-axis", "x = P((3, 4))", "fa.min(x, axis=-3)", ValueError, ("min", "axis")),
        Case("min-repeated-axis", "x = P((3, 4))", "x.min(axis=(0, 0))", ValueError,
             ("min", "repeated")),
        Case("stack-nothing", "", "fa.stack([])", ValueError, ("stack", "at least one")),
        Case("stack-axis", "a = P((2, 3)); b = T((2, 3))", "fa.stack([a, b], axis=3)",
             ValueError, ("stack", "axis 3")),
        Case("stack-axis-negative", "a = P((2, 3))", "fa.stack([a], axis=-4)",
             ValueError, ("stack", "axis -4")),
        Case("clip-no-bounds", "x = P((3,))", "fa.clip(x)", ValueError, ("clip", "None")),
        Case("clip-method-no-bounds", "x = P((3,))", "x.clip(None, None)", ValueError,
             ("clip",)),
        *[Case(f"{op}-reduction-{bad}", "x = P((3, 4)); t = A((3, 4))",
               f"fa.{op}(x, t, reduction={bad!r})", ValueError, (op, bad))
          for op in ("mse_loss", "binary_cross_entropy_with_logits")
          for bad in ("avg", "MEAN", "batchmean")],
        Case("grad-nonscalar", "x = P((3,)); y = fa.sigmoid(x)", "fa.grad(y, x)", ValueError,
             ("seed", "(3,)")),
        Case("grad-nonscalar-2d", "x = P((2, 2)); y = x @ x", "fa.grad(y, [x])", ValueError,
             ("seed", "(2, 2)")),
        Case("backward-nonscalar", "x = P((3,)); y = fa.softmax(x)", "y.backward()",
             ValueError, ("seed", "(3,)")),
        Case("seed-shape", "x = P((3,)); y = fa.sigmoid(x); s = np.ones(4)",
             "fa.grad(y, x, seed=s)", ValueError, ("seed", "(4,)", "(3,)")),
        Case("softmax-axis", "x = P((3, 4))", "fa.softmax(x, axis=2)", ValueError,
             ("softmax", "axis")),
        Case("log_softmax-axis", "x = P((3, 4))", "fa.log_softmax(x, axis=-3)", ValueError,
             ("log_softmax", "axis")),
        Case("softmax-0d", "x = P(())", "fa.softmax(x)", ValueError, ("softmax",)),
        Case("sum-axis", "x = P((3, 4))", "fa.sum(x, axis=2)", ValueError, ("sum", "axis")),
        Case("mean-repeated-axis", "x = P((3, 4))", "fa.mean(x, axis=(1, -1))", ValueError,
             ("mean",)),
    ]


def attribute_cases():
    """`t.value = a` and `t.grad = g` are checked like an op's input: a wrong dtype is a
    TypeError and a wrong shape a ValueError naming both, before any kernel reads it."""
    refused_values = {  # name: (the tensor, the array assigned, error, mentions)
        "float16-huge": ("P((1 << 20,))", "np.ones(1 << 20, np.float16)", TypeError,
                         ("float16", "float64")),
        "shape-huge": ("P((3,))", "np.ones(1 << 20)", ValueError, ("(3,)", "(1048576,)")),
        "int64": ("P((3,))", "np.arange(3)", TypeError, ("int64", "float64")),
        "int32-2d": ("P((3, 4))", "np.ones((3, 4), np.int32)", TypeError, ("int32", "float64")),
        "bool": ("P((3,))", "np.ones(3, bool)", TypeError, ("bool", "float64")),
        "complex": ("P((3,))", "np.ones(3, np.complex128)", TypeError, ("complex128", "float64")),
        "float32-into-float64": ("P((3,))", "np.ones(3, np.float32)", TypeError,
                                 ("float32", "float64")),
        "float64-into-float32": ("P((3,), np.float32)", "np.ones(3)", TypeError,
                                 ("float32", "float64")),
        "int-list": ("P((3,))", "[0, 1, 2]", TypeError, ("int64", "float64")),
        "scalar": ("P((3,))", "1.0", ValueError, ("()", "(3,)")),
        "data-tensor": ("T((2, 2))", "np.ones((2, 2), np.float32)", TypeError,
                        ("float32", "float64")),
        "transposed-shape": ("P((2, 3))", "A((3, 2))", ValueError, ("(2, 3)", "(3, 2)")),
    }
    cases = [Case(f"value-{name}", f"x = {tensor}", f"x.value = {array}\nfa.sigmoid(x)",
                  error, mentions)
             for name, (tensor, array, error, mentions) in refused_values.items()]
    refused_grads = {  # name: (the parameter, the gradient assigned, error, mentions)
        "list": ("P((3,))", "[1.0, 2.0, 3.0]", TypeError, ()),
        "scalar": ("P((3,))", "1.0", TypeError, ()),
        "tensor": ("P((3,))", "fa.tensor(np.ones(3))", TypeError, ()),
        "float16-huge": ("P((1 << 20,))", "np.ones(1 << 20, np.float16)", TypeError,
                         ("float16", "float64")),
        "float32": ("P((3,))", "np.ones(3, np.float32)", TypeError, ("float32", "float64")),
        "int64": ("P((3,))", "np.ones(3, np.int64)", TypeError, ("int64", "float64")),
        "shape": ("P((3,))", "np.ones(4)", ValueError, ("(3,)", "(4,)")),
        "shape-2d": ("P((3,))", "np.ones((3, 1))", ValueError, ("(3,)", "(3, 1)")),
    }
    cases += [Case(f"grad-{name}", f"p = {tensor}",
                   f"p.grad = {g}", error, mentions)
              for name, (tensor, g, error, mentions) in refused_grads.items()]
    sigmoid = "1 / (1 + np.exp(-np.arange(3.0)))"
    return cases + [
        Case("value-int32-matmul", "a = P((300, 200)); b = P((200, 100))",
             "a.value = np.ones((300, 200), np.int32)\n"
             "b.value = np.ones((200, 100), np.int32)\na @ b", TypeError, ("int32", "float64")),
        Case("value-stamps-the-tensor", "p = P((3,)); y = fa.sum(p * p)",
             "p.value = A((3,))\ny.backward()", RuntimeError, modifies=("p",)),
        # accepted: copied to native order / a C-contiguous array, or held as a view
        Case("value-big-endian", "x = P((3,))",
             "x.value = np.array([0.0, 1.0, 2.0], '>f8')\ny = fa.sigmoid(x)", None,
             check=f"x.dtype == np.float64 and np.allclose(y.value, {sigmoid})",
             modifies=("x",)),
        Case("value-fortran", "a = P((3, 4)); b = P((4, 2)); F = np.asfortranarray(A((3, 4)))",
             "a.value = F\ny = a @ b", None,
             check="a.value.flags.c_contiguous and np.allclose(y.value, F @ b.value)",
             modifies=("a",)),
        Case("value-is-its-own-array-object", "p = P((2, 3)); X = A((2, 3)); X0 = X.copy()",
             "p.value = X\nX.shape = (3, 2)\ny = fa.sigmoid(p)", None,
             check="p.shape == (2, 3) and np.allclose(y.value, 1 / (1 + np.exp(-X0)))",
             modifies=("p", "X")),
        Case("grad-big-endian", "p = P((3,))",
             "p.grad = np.ones(3, '>f8')\nfa.sum(p * 2.0).backward()", None,
             check="p.grad.dtype == np.float64 and np.array_equal(p.grad, [3.0, 3.0, 3.0])"),
        # a read-only .grad is copied; a strided one may be kept (`p.grad is g`, README)
        *[Case(f"grad-{name}", f"p = P((3,)); p0 = p.value.copy(); g = {g}",
               "p.grad = g\nfa.sum(p * 2.0).backward()\nfa.optim.SGD([p], lr=0.5).step()",
               None, check="np.array_equal(p.grad, [3.0, 3.0, 3.0]) and "
                           "np.allclose(p.value, p0 - 1.5)", modifies=modifies)
          for name, g, modifies in [("read-only", "np.ones(3); g.flags.writeable = False",
                                     ("p",)),
                                    ("strided", "np.ones(6)[::2]", ("p", "g"))]],
    ]


def optimizer_cases():
    """Hyperparameters and state buffers changed between steps are checked at the next
    step (SPEC "Training"): a clear error before any parameter changes, never a kernel
    reading a buffer of another size or dtype."""
    sgd = ("p = P((300, 200)); p.grad = A((300, 200)); "
           "opt = fa.optim.SGD([p], lr=0.1, momentum={momentum}); opt.step()")
    adam = "p = P((300, 200)); p.grad = A((300, 200)); opt = fa.optim.Adam([p]); opt.step()"
    changes = {  # name: (setup, the change, error)
        "momentum-buffer-short": (sgd, "opt.momentum_buffers[0] = np.ones(3)", ValueError),
        "momentum-buffer-float16": (sgd, "opt.momentum_buffers[0] = np.ones((300, 200), "
                                         "np.float16)", TypeError),
        "momentum-buffer-list": (sgd, "opt.momentum_buffers[0] = [0.0] * 3", TypeError),
        "exp-avg-int": (adam, "opt.exp_avgs[0] = np.ones((300, 200), np.int64)", TypeError),
        "exp-avg-sq-short": (adam, "opt.exp_avg_sqs[0] = np.ones(3)", ValueError),
        "lr-negative": (sgd, "opt.lr = -1.0", ValueError),
        "lr-nan": (sgd, "opt.lr = float('nan')", ValueError),
        "momentum-negative": (sgd, "opt.momentum = -0.5", ValueError),
        "nesterov-without-momentum": (sgd.replace("{momentum}", "0.0"), "opt.nesterov = True",
                                      ValueError),
        "betas-out-of-range": (adam, "opt.betas = (1.0, 0.999)", ValueError),
    }
    return [Case(f"optimizer-{name}", setup.replace("{momentum}", "0.9"),
                 f"{change}\nopt.step()", error)
            for name, (setup, change, error) in changes.items()]


def caller_array_cases():
    """What the caller does to its array object after the forward (a new shape or dtype)
    never reaches the tape: the backward still calls BLAS with the forward's dims."""
    forms = {"tensor": "fa.tensor(X)", "operand": "X",
             "tensor-requiring-grad": "fa.tensor(X, requires_grad=True)"}
    mutations = {"shape": "X.shape = (200, 300)", "dtype": "X.dtype = np.float32"}
    setup = "X = A((300, 200)); X0 = X.copy(); w = P((200, 100))"
    check = "np.allclose(w.grad, X0.T @ np.ones((300, 100)))"
    cases = [Case(f"caller-array-{form}-{mutation}", setup,
                  f"loss = fa.sum({made} @ w)\n{change}\nloss.backward()", None,
                  check=check, modifies=("X",))
             for form, made in forms.items() for mutation, change in mutations.items()]
    return cases + [
        Case("caller-array-value", setup + "; p = P((300, 200))",
             "p.value = X\nloss = fa.sum(p @ w)\nX.shape = (200, 300)\nloss.backward()", None,
             check=check + " and np.allclose(p.grad, np.ones((300, 100)) @ w.value.T)",
             modifies=("X", "p")),
    ]


def index_sequence_cases():
    """Any sequence used as an index gives NumPy's value, and repeated indices accumulate
    their gradients (np.add.at), as a list does."""
    works = {  # name: (shape, index, the rows it picks, the gradient of their sum)
        "array.array-l": ((3,), "array.array('l', [0, 0, 1])", [0, 0, 1], [2, 1, 0]),
        "array.array-b-negative": ((3,), "array.array('b', [0, -3, -1])", [0, 0, 2], [2, 0, 1]),
        "array.array-q": ((3,), "array.array('q', [2, 2, 2])", [2, 2, 2], [0, 0, 3]),
        "deque": ((3,), "collections.deque([0, 0, 1])", [0, 0, 1], [2, 1, 0]),
        "tuple-in-tuple": ((3,), "((1, 1, 0),)", [1, 1, 0], [1, 2, 0]),
        "range": ((3,), "range(-3, 0)", [0, 1, 2], [1, 1, 1]),
        "bool-deque": ((3,), "collections.deque([True, False, True])", [0, 2], [1, 0, 1]),
        "empty-list": ((3,), "[]", [], [0, 0, 0]),   # NumPy reads an empty sequence as intp
        "empty-deque": ((3,), "collections.deque()", [], [0, 0, 0]),
        "array.array-i-and-slice": ((3, 2), "(array.array('i', [2, 2]), slice(None))", [2, 2],
                                    [[0, 0], [0, 0], [2, 2]]),
    }
    cases = [Case(f"index-{name}", f"x = P({shape})",
                  f"y = x[{index}]\ng = fa.grad(fa.sum(y), x)", None,
                  check=f"np.array_equal(y.value, x.value[{rows}]) and "
                        f"np.array_equal(g, {grad})")
             for name, (shape, index, rows, grad) in works.items()]
    refused = {
        "array.array-out-of-range": "array.array('l', [0, 3])",
        "deque-out-of-range": "collections.deque([-4])",
        "array.array-float": "array.array('d', [0.0, 1.0])",
        "bool-deque-length": "collections.deque([True, False])",
    }
    return cases + [Case(f"index-{name}", "x = P((3,))", f"fa.sum(x[{index}]).backward()",
                         IndexError, ("getitem",)) for name, index in refused.items()]


def inplace_cases():
    """`+= -= *= /=` update `.value` in place under no_grad (and on data tensors), and
    refuse (RuntimeError) on what the tape tracks, instead of rebinding silently."""
    cases = [Case(f"inplace-parameter-{name}", "p = P((3,))", f"p {symbol} 2.0", RuntimeError,
                  ("x = x",))
             for name, symbol in [("add", "+="), ("sub", "-="), ("mul", "*="), ("div", "/=")]]
    return cases + [
        Case("inplace-op-result", "p = P((3,)); y = p * 2", "y += 1", RuntimeError, ("x = x",)),
        Case("inplace-mixed-ndarray", "p = P((3,), np.float32); d = A((3,))",
             "with fa.no_grad():\n    p += d", TypeError, ("float32", "float64")),
        Case("inplace-mixed-tensor", "p = P((3,)); q = T((3,), np.float32)",
             "with fa.no_grad():\n    p *= q", TypeError, ("float32", "float64")),
        Case("inplace-result-grows", "p = P((3,)); d = A((2, 3))",
             "with fa.no_grad():\n    p -= d", ValueError, ("(3,)", "(2, 3)")),
        Case("inplace-data-tensor-shapes", "t = T((3,)); d = A((4,))", "t += d", ValueError,
             ("(3,)", "(4,)")),
        Case("inplace-stamps-the-parameter", "p = P((3,)); y = fa.sum(p * p)",
             "with fa.no_grad():\n    p += 1\ny.backward()", RuntimeError, modifies=("p",)),
        # a view or detached copy shares the Parameter's memory: updating it must stamp
        # the Parameter (or be refused), or y's gradient silently uses the new values
        *[Case(f"inplace-{name}-of-parameter",
               f"p = P((3,)); y = fa.sum(p * p)\nwith fa.no_grad():\n    v = {make}",
               "v += 1\ny.backward()", RuntimeError, modifies=("p", "v"))
          for name, make in [("view", "p[...]"), ("detached", "p.detach()")]],
        # Python falls back to `p = p ** 2` without __ipow__: update in place or raise
        *[Case(f"inplace-{name}-keeps-the-parameter",
               "p = P((3, 3)); p0 = p.value.copy(); e = A((3, 3)); q = p",
               f"try:\n    with fa.no_grad():\n        p {symbol} e\n"
               "except (TypeError, RuntimeError):\n    pass", None,
               check=f"p is q and (np.allclose(p.value, {numpy}, equal_nan=True) or "
                     "np.array_equal(p.value, p0))", modifies=("p", "q"))
          for name, symbol, numpy in [("pow", "**=", "p0 ** e"), ("matmul", "@=", "p0 @ e")]],
        Case("inplace-sgd-under-no-grad",
             "p = P((3,)); p.grad = A((3,)); p0 = p.value.copy(); q = p",
             "with fa.no_grad():\n    p -= 0.1 * p.grad", None,
             check="p is q and np.allclose(p.value, p0 - 0.1 * p.grad)", modifies=("p", "q")),
        Case("inplace-data-tensor", "t = T((3,)); t0 = t.value.copy(); u = t",
             "t += 1\nt *= np.array([1, 2, 3])", None,
             check="t is u and np.allclose(t.value, (t0 + 1) * [1, 2, 3])", modifies=("t", "u")),
    ]


GRAD_GRAPH = ("w = P((3, 2)); x = T((4, 3)); h = fa.sigmoid(x @ w); loss = fa.sum(h * h); "
              "s = 1 / (1 + np.exp(-(x.value @ w.value))); "
              "gh = fa.grad(loss, h, retain_graph=True)")


def grad_result_cases():
    """fa.grad's results are read-only views of the sweep's buffers: writing raises, so a
    later result cannot change; `.grad` arrays filled by backward are the caller's."""
    cases = [Case(f"grad-result-{name}", GRAD_GRAPH, write, ValueError)
             for name, write in [("imul", "gh *= 0"), ("setitem", "gh[...] = 1"),
                                 ("copyto", "np.copyto(gh, 0)")]]
    return cases + [
        Case("grad-result-later-call", GRAD_GRAPH,
             "try:\n    gh *= 0\nexcept ValueError:\n    pass\ngw = fa.grad(loss, w)", None,
             check="np.allclose(gh, 2 * s) and "
                   "np.allclose(gw, x.value.T @ (2 * s * s * (1 - s)))"),
        Case("grad-result-made-writeable", GRAD_GRAPH,
             "try:\n    gh.flags.writeable = True\n    gh *= 0\nexcept ValueError:\n    pass\n"
             "again = fa.grad(loss, h, retain_graph=True)", None,
             check="np.allclose(again, 2 * s)", modifies=("gh",)),
        Case("grad-attribute-is-writeable", "w = P((3, 2)); x = T((4, 3)); loss = fa.sum(x @ w)",
             "loss.backward()\nw.grad *= 2", None,
             check="np.allclose(w.grad, 2 * x.value.T @ np.ones((4, 2)))"),
    ]


def numpy_function_cases():
    """NumPy functions on a Tensor name the fastad function to use; operators with an
    ndarray on the left return Tensors that keep the graph."""
    cases = [Case(f"numpy-{name}", "t = P((3,))", call, TypeError, (f"fa.{name}",))
             for name, call in [("exp", "np.exp(t)"), ("tanh", "np.tanh(t)"),
                                ("sum", "np.sum(t)"), ("mean", "np.mean(t)"),
                                ("concatenate", "np.concatenate([t, t])")]]
    return cases + [
        Case("numpy-matmul-lhs", "a = A((2, 3)); t = P((3,))", "y = a @ t", None,
             check="isinstance(y, fa.Tensor) and np.allclose(fa.grad(fa.sum(y), t), a.sum(0))"),
        Case("numpy-add-lhs", "a = A((2, 3)); t = P((3,))", "y = a + t", None,
             check="isinstance(y, fa.Tensor) and np.allclose(fa.grad(fa.sum(y), t), [2, 2, 2])"),
        Case("numpy-comparison", "t = P((3,))", "r = t < 0", None,
             check="type(r) is np.ndarray and r.dtype == bool and "
                   "np.array_equal(r, t.value < 0)"),
    ]


CASES = (row_cases() + shape_cases() + label_cases() + gather_cases() + dtype_cases() + misc_cases()
         + attribute_cases() + optimizer_cases() + caller_array_cases()
         + index_sequence_cases() + inplace_cases() + grad_result_cases()
         + numpy_function_cases())
assert len({c.id for c in CASES}) == len(CASES), "duplicate case ids"


# --- running them -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def child_results():
    """Runs every case in a child process: {id: result, or the crash it died in}.

    The child prints a line before and after each case, so a crash is pinned to the
    case that was running; a new child then runs the cases after it.
    """
    pending = [{"id": c.id, "setup": c.setup, "call": c.call, "check": c.check}
               for c in CASES]
    results = {}
    while pending:
        proc = subprocess.run([sys.executable, __file__], input=json.dumps(pending),
                              capture_output=True, text=True, timeout=300, cwd=HERE)
        running = None
        for line in proc.stdout.splitlines():
            record = json.loads(line)
            running = record.get("start")
            if running is None:
                results[record["id"]] = record
        crash = {"crash": f"exit code {proc.returncode}:\n{proc.stderr[-3000:]}"}
        if running is None:      # finished, or died before its first case
            results.update({c["id"]: crash for c in pending if c["id"] not in results})
            break
        results[running] = crash
        pending = [c for c in pending if c["id"] not in results]
    return results


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_bad_call_raises_clearly_and_changes_nothing(case, child_results):
    result = child_results[case.id]
    if "crash" in result:
        pytest.fail(f"the child process died while running this case, {result['crash']}")
    unexpected = set(result["changed"]) - set(case.modifies)
    assert not unexpected, f"{case.call} modified {sorted(unexpected)}"
    if case.error is None:
        assert result["raised"] is None, f"{case.call} raised {result['raised']}: " \
            f"{result['message']}"
        assert result["check"] is True, \
            f"after {case.call}: {case.check} does not hold ({result['check']})"
        return
    assert result["raised"] is not None, f"{case.call} raised nothing"
    expected = case.error.__name__
    raised = result["raised"]
    # AxisError is both a ValueError and an IndexError, as in NumPy
    assert raised == expected or (raised == "AxisError" and expected in ("ValueError",
                                                                         "IndexError")), \
        f"{case.call} raised {raised}: {result['message']}; expected {expected}"
    for word in case.mentions:
        assert word in result["message"], (
            f"{case.call}: message {result['message']!r} does not mention {word!r}")


# --- calls next to the bad ones that must work --------------------------------------------

@pytest.mark.parametrize("labels", [
    np.array([0, 1, 3]), np.array([0, 1, 3], np.uint8), np.array([0, 1, 3], np.int32),
    np.array([0, 1, 3], np.uint64), [0, 1, 3], (0, 1, 3),
], ids=["int64", "uint8", "int32", "uint64", "list", "tuple"])
@pytest.mark.parametrize("op", ["cross_entropy", "nll_loss"])
def test_any_integer_labels_work(op, labels):
    scores = np.random.default_rng(1).standard_normal((3, 4))
    before = np.array(labels, copy=True)
    loss = getattr(fa, op)(fa.tensor(scores), labels)
    log_p = scores - np.log(np.exp(scores).sum(1, keepdims=True))
    picked = (log_p if op == "cross_entropy" else scores)[np.arange(3), np.asarray(labels)]
    np.testing.assert_allclose(loss.item(), -picked.mean(), rtol=1e-12)
    np.testing.assert_array_equal(np.asarray(labels), before)


def test_negative_gather_indices_follow_numpy():
    """p[arange(n), y] with y < 0 is valid NumPy indexing (from the end), not a label."""
    p0 = np.random.default_rng(2).standard_normal((3, 4))
    p = fa.Parameter(p0)
    y = np.array([0, -1, -4])
    picked = p[np.arange(3), y]
    np.testing.assert_array_equal(picked.value, p0[np.arange(3), y])
    expected = np.zeros_like(p0)
    np.add.at(expected, (np.arange(3), y), 1.0)
    np.testing.assert_array_equal(fa.grad(fa.sum(picked), p), expected)


def test_max_over_a_non_empty_axis_of_an_empty_array_works():
    x = fa.Parameter(np.zeros((0, 3)))
    y = fa.max(x, axis=1)
    assert y.shape == (0,)
    assert fa.grad(fa.sum(y), x).shape == (0, 3)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("other", [
    2, 2.5, True, np.int64(2), np.float32(2.5), np.float64(2.5), np.array(2),
    np.array([1, 2, 3], np.int32), np.array([True, True, True]),
    np.array([1, 2, 3], np.float16), [1.0, 2.0, 3.0],
], ids=["int", "float", "bool", "np.int64", "np.float32", "np.float64", "0d-int-array",
        "int32-array", "bool-array", "float16-array", "list"])
def test_weakly_typed_operands_take_the_tensors_dtype(dtype, other):
    """Python and NumPy scalars, int/bool/float16 arrays and lists: the tensor's dtype."""
    x = fa.Parameter(np.array([1.0, 2.0, 3.0], dtype))
    for result in (x + other, other * x, x - other, x / other):
        assert result.dtype == dtype, f"operand {other!r} gave {result.dtype}"
        assert fa.grad(fa.sum(result), x).dtype == dtype


# Graphs where a float64 array could slip into a float32 graph. A kernel trusts the
# dtypes it is given: a GEMM that accumulates float32 operands into a float64 buffer
# reads them as float64, past their end. So these run in a child process.
SMUGGLERS = {
    # np.float64 subclasses Python float, but NumPy does not treat it as weakly typed
    "numpy-float64-scalar": """
h = (x @ w) * np.float64(1.0)
loss = fa.sum(h) + fa.sum(w * np.float64(2.0))
expected = x0.T.astype(np.float64) @ np.ones((50, 30)) + 2
""",
    # max's backward divides by the (integer) count of ties
    "max-backward": """
loss = fa.sum(x @ w) + fa.max(w)
expected = x0.T.astype(np.float64) @ np.ones((50, 30)) + (w0 == w0.max())
""",
    "max-axis-backward": """
loss = fa.sum(x @ w) + fa.sum(fa.max(w, axis=0))
expected = x0.T.astype(np.float64) @ np.ones((50, 30)) + (w0 == w0.max(axis=0))
""",
}
SMUGGLER_PRELUDE = """
import numpy as np, fastad as fa
rng = np.random.default_rng(0)
w0 = rng.standard_normal((40, 30)).astype(np.float32)
x0 = rng.standard_normal((50, 40)).astype(np.float32)
w, x = fa.Parameter(w0), fa.tensor(x0)
"""
SMUGGLER_REPORT = """
g = fa.grad(loss, w)
print(loss.dtype, g.dtype, float(np.abs(g - expected).max()))
"""


@pytest.mark.parametrize("graph", SMUGGLERS)
def test_no_float64_reaches_a_float32_kernel(graph):
    """Every value and gradient of a float32 graph stays float32."""
    code = SMUGGLER_PRELUDE + SMUGGLERS[graph] + SMUGGLER_REPORT
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, cwd=HERE)
    assert proc.returncode == 0, proc.stderr[-3000:]
    loss_dtype, grad_dtype, error = proc.stdout.split()
    assert (loss_dtype, grad_dtype) == ("float32", "float32")
    assert float(error) < 1e-3


# --- the child process ----------------------------------------------------------------------

def _child_main():
    for case in json.loads(sys.stdin.read()):
        print(json.dumps({"start": case["id"]}), flush=True)
        result = run_case(case["setup"], case["call"], case["check"])
        print(json.dumps({"id": case["id"], **result}), flush=True)


if __name__ == "__main__":
    _child_main()
