"""The bad-input campaign (issue 5, item 1): derandomized property-based tests that drive
every public op and fa.grad with random shapes (0- and 1-size axes included), both
dtypes and mixed dtypes, int/bool/float16/complex/object/string/datetime data, Python
and NumPy scalars, lists, every ndarray layout (non-contiguous, Fortran-ordered,
negative strides, read-only, byte-swapped, misaligned), Tensors that are transposed,
reversed or strided views inside the graph, good and bad labels and axes, and NaN, Inf
and huge values; plus fa.grad's own arguments (wrt lists with intermediates, duplicates,
data and unused tensors, seeds of the wrong shape or dtype) and tensors whose adjoint
collects contributions from several consumers (fan-out). The unary family's ops and the
fan-out family's consumers are rows of the op table (tests/_op_table.py): a new op's row
makes it a consumer, and a one-input elementwise row with a reference `vjp` joins the
unary family.

Five families hold the Python layer to what users can change behind an op's back: the
settable attributes (`.value` and `.grad` assigned any dtype, shape, layout, list or
scalar, then an op, backward and an SGD step), optimizer hyperparameters and state
buffers changed between steps, the caller's array objects changed after the forward
(data, labels and index arrays, an assigned `.grad`: shape, dtype, strides, flags,
contents), any sequence as an index (lists, tuples, array.array, range, deque, bool
lists, nested in tuples), and the in-place operators (under no_grad and not, on views,
with every kind of operand) together with the read-only arrays fa.grad returns.

Each case either matches a NumPy reference (value, dtype and the gradient of every
operand that requires one, for a random seed) or raises the exception type the SPEC
names, with a message naming the op; no case modifies its inputs.

The campaign runs in child processes (`python tests/test_reliability_campaign.py
FAMILY`), one per family of ops, so a crash in a kernel fails a test instead of killing
pytest. The child prints the number of cases it ran, and a falsifying example on failure.
"""
import array as stdarray
import collections
import contextlib
import functools
import operator
import re
import subprocess
import sys
import traceback
import warnings
from dataclasses import dataclass, field

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastad as fa
from _layouts import LAYOUTS, VIEWS
from _op_table import DOMAINS, FA, OPS, NumpyOps, computes, resized

# examples per property; the whole campaign is a few thousand cases
EXAMPLES = {
    "unary": 900,
    "binary": 1100,
    "matmul": 500,
    "reductions": 500,
    "softmax": 400,
    "losses": 1000,
    "shapes": 700,
    "grad": 300,
    "fan_out": 300,
    "attributes": 600,
    "optimizer_state": 400,
    "caller_arrays": 600,
    "index_sequences": 600,
    "inplace": 600,
}


@pytest.mark.parametrize("family", EXAMPLES)
def test_campaign(family):
    proc = subprocess.run([sys.executable, __file__, family], capture_output=True,
                          text=True, timeout=600)
    report = f"stdout:\n{proc.stdout[-6000:]}\nstderr:\n{proc.stderr[-4000:]}"
    assert proc.returncode == 0, f"campaign {family!r} exited {proc.returncode}\n{report}"
    ran = int(re.search(r"(\d+) cases", proc.stdout).group(1))
    assert ran >= EXAMPLES[family], report


# ====================================================================================
# Everything below runs in the child process.
# ====================================================================================

FLOATS = (np.dtype(np.float32), np.dtype(np.float64))
HUGE = {np.dtype(np.float32): 1e30, np.dtype(np.float64): 1e300}
TOL = {np.dtype(np.float32): dict(rtol=1e-4, atol=1e-5),
       np.dtype(np.float64): dict(rtol=1e-9, atol=1e-12)}
CASES = [0]  # a counter the child reports


def in_layout(name, a):
    """`a` laid out as LAYOUTS[name] says (NumPy scalars become 0-d arrays first)."""
    return LAYOUTS[name](np.asarray(a))


# --- strategies ------------------------------------------------------------------------

dtypes = st.sampled_from(FLOATS)
layouts = st.sampled_from(sorted(LAYOUTS))
specials = st.sampled_from(["none"] * 4 + ["nan", "inf", "huge", "zero"])
seeds = st.integers(0, 2**32 - 1)


def shapes(min_dims=0, max_dims=3, min_side=0, max_side=4):
    return st.lists(st.integers(min_side, max_side), min_size=min_dims,
                    max_size=max_dims).map(tuple)


def values(seed, shape, dtype, special="none", positive=False):
    """Random data of `dtype`, with a few special values mixed in."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(0.25, 2.5, shape) if positive else rng.uniform(-2.5, 2.5, shape)
    if special != "none" and x.size:
        flat = x.reshape(-1)
        picks = rng.choice(flat.size, size=1 + flat.size // 4, replace=False)
        sign = rng.choice([-1.0, 1.0], size=picks.size)
        flat[picks] = {"nan": np.nan, "inf": np.inf, "huge": HUGE[np.dtype(dtype)],
                       "zero": 0.0}[special] * (1 if special == "nan" else sign)
    return x.astype(dtype)


@dataclass
class Operand:
    """One argument of an op: what is passed, and what NumPy should compute with."""
    form: str                 # param, tensor, data, ndarray, list, scalar, ...
    passed: object            # the object handed to fastad
    plain: object = None      # its values as a float64/float32 ndarray (or a scalar)
    dtype: object = None      # its float dtype when it has one
    error: type = None        # TypeError when it is not real data
    watch: list = field(default_factory=list)   # arrays that must not be modified

    @property
    def is_tensor(self):
        return isinstance(self.passed, fa.Tensor)

    @property
    def needs_grad(self):
        return self.is_tensor and self.passed.requires_grad


# Views made inside the graph: a Tensor whose value is a transposed, reversed or strided
# view of a Parameter (ops and their backward get it as it is, not as a C copy).
# Each: (the view of a Tensor or ndarray, the base shape for a view of `shape`).
GRAPH_VIEWS = {"transposed": VIEWS["transposed"], "reversed": VIEWS["negative-strides"],
               "strided": VIEWS["strided"]}


def make_tensor_operand(form, array, view="transposed"):
    """A Tensor operand with the values of `array`: a Parameter, a leaf fa.tensor (which
    shares `array` when it already is a proper one), or a view of a Parameter."""
    if form == "view" and array.ndim:
        make_view, base_shape = GRAPH_VIEWS[view]
        base = np.full(base_shape(array.shape), 7.0, array.dtype.newbyteorder("="))
        make_view(base)[...] = array
        t = make_view(fa.Parameter(base))
    elif form in ("param", "view"):
        t = fa.Parameter(array)
    else:
        t = fa.tensor(array, requires_grad=(form == "tensor"))
    return Operand(form, t, np.array(array), t.dtype, watch=[array])


@st.composite
def tensor_operands(draw, shape, dtype=None, positive=False, special=None):
    dtype = draw(dtypes) if dtype is None else dtype
    special = draw(specials) if special is None else special
    form = draw(st.sampled_from(["param", "tensor", "data", "view", "view"]))
    array = in_layout(draw(layouts), values(draw(seeds), shape, dtype, special, positive))
    return make_tensor_operand(form, array, draw(st.sampled_from(sorted(GRAPH_VIEWS))))


NON_REAL = {
    "complex": lambda shape: np.ones(shape, np.complex128),
    "object": lambda shape: np.ones(shape, dtype=object),
    "string": lambda shape: np.full(shape, "1"),
    "datetime": lambda shape: np.zeros(shape, "M8[s]"),
}


@st.composite
def other_operands(draw, shape, dtype, positive=False):
    """A second operand next to a Tensor of `dtype`: any form the SPEC allows, or not."""
    kind = draw(st.sampled_from(
        ["same-tensor", "same-tensor", "other-tensor", "ndarray", "ndarray",
         "other-ndarray", "int-ndarray", "bool-ndarray", "float16-ndarray", "list",
         "python-scalar", "numpy-scalar", "zero-d", "non-real", "python-complex"]))
    special = draw(specials)
    seed = draw(seeds)
    if kind in ("same-tensor", "other-tensor"):
        d = dtype if kind == "same-tensor" else FLOATS[1 - FLOATS.index(dtype)]
        operand = draw(tensor_operands(shape, d, positive, special))
        if kind == "other-tensor":
            operand.error = TypeError
        return operand
    if kind in ("ndarray", "other-ndarray", "zero-d"):
        d = FLOATS[1 - FLOATS.index(dtype)] if kind == "other-ndarray" else draw(dtypes)
        s = () if kind == "zero-d" else shape
        array = in_layout(draw(layouts), values(seed, s, d, special, positive))
        return Operand(kind, array, array.astype(dtype), dtype,
                       error=TypeError if d != dtype else None, watch=[array])
    if kind in ("int-ndarray", "bool-ndarray", "float16-ndarray"):
        raw = values(seed, shape, np.float64, "none", positive) * 3
        array = {"int-ndarray": lambda: np.round(raw).astype(np.int32) + (2 if positive else 0),
                 "bool-ndarray": lambda: raw > 0 if not positive else raw > -1,
                 "float16-ndarray": lambda: raw.astype(np.float16)}[kind]()
        array = in_layout(draw(layouts), array)
        return Operand(kind, array, array.astype(dtype), dtype, watch=[array])
    if kind == "list":
        as_list = values(seed, shape, np.float64, "none", positive).tolist()
        # (an empty list has lost the shape: NumPy reads it as (0,))
        return Operand(kind, as_list, np.asarray(as_list, np.float64).astype(dtype), dtype)
    if kind == "python-scalar":
        value = draw(st.sampled_from([2, 0.5, 3.0, -1.5, True])) if not positive else 2.0
        return Operand(kind, value, np.asarray(value, dtype), dtype)
    if kind == "numpy-scalar":
        value = draw(st.sampled_from([np.float32(1.5), np.float64(0.5), np.int64(2),
                                      np.float16(2.0)]))
        return Operand(kind, value, np.asarray(value, dtype), dtype)
    if kind == "python-complex":
        return Operand(kind, 1 + 2j, error=TypeError)
    name = draw(st.sampled_from(sorted(NON_REAL)))
    array = NON_REAL[name](shape)
    return Operand(f"{name}-ndarray", array, error=TypeError, watch=[array])


# --- checking one case -------------------------------------------------------------------

def _snapshot(operands):
    return [(a, a.copy()) for op in operands for a in op.watch]


def _assert_unmodified(snapshot):
    for array, before in snapshot:
        assert array.dtype == before.dtype and np.array_equal(
            array, before, equal_nan=array.dtype.kind in "fc"), "an input array was modified"


def expect_error(op, errors, call, mention=()):
    """call() must raise one of `errors`, with a message naming `op` (and `mention`)."""
    try:
        call()
    except errors as e:
        message = str(e)
        assert op in message, f"{type(e).__name__} message does not name {op!r}: {message}"
        for word in mention:
            assert word in message, f"message does not mention {word!r}: {message}"
        return
    except Exception as e:  # noqa: BLE001
        raise AssertionError(f"{op}: expected {errors}, got {type(e).__name__}: {e}") from e
    raise AssertionError(f"{op}: expected {errors}, but the call succeeded")


def assert_matches(got, expected, dtype, what, scale=None):
    """got has `dtype`, and the values of `expected` (NaN and Inf where it has them),
    within the dtype's tolerance (relative to `scale` too, for a sum of terms)."""
    got = np.asarray(got)
    assert got.dtype == dtype, f"{what}: dtype {got.dtype}, expected {dtype}"
    assert got.shape == np.shape(expected), f"{what}: shape {got.shape} vs {np.shape(expected)}"
    expected = np.asarray(expected, dtype=np.float64)
    got64 = got.astype(np.float64)
    finite = np.isfinite(expected)
    assert np.array_equal(np.isfinite(got64), finite), \
        f"{what}: non-finite values differ:\n{got}\nvs\n{expected}"
    np.testing.assert_array_equal(np.isnan(got64), np.isnan(expected), err_msg=what)
    rtol, atol = TOL[np.dtype(dtype)]["rtol"], TOL[np.dtype(dtype)]["atol"]
    g, e = got64[finite], expected[finite]
    s = np.abs(e) if scale is None else np.abs(e) + np.asarray(scale, np.float64)[finite]
    bad = np.abs(g - e) > atol + rtol * s
    assert not bad.any(), f"{what}: {g[bad]} != {e[bad]} (of {got.size} values)"
    if not finite.all():  # infinities of the same sign
        np.testing.assert_array_equal(got64[~finite & ~np.isnan(got64)],
                                      expected[~finite & ~np.isnan(expected)], err_msg=what)


def check_op(op, call, operands, reference, dtype, errors=(), mention=()):
    """Run one case: `errors` (a tuple of exception types) if the inputs are invalid,
    else `reference(S)` -> (value, [grad of each operand]) for a random seed S."""
    CASES[0] += 1
    snapshot = _snapshot(operands)
    with np.errstate(all="ignore"):
        if errors:
            expect_error(op, errors, call, mention)
        else:
            out = call()
            assert isinstance(out, fa.Tensor), f"{op} returned {type(out).__name__}"
            seed = values(len(out.shape) + out.size, out.shape, out.dtype, positive=True)
            value, grads, *scales = reference(seed)
            assert_matches(out.value, value, dtype, f"{op} value")
            wrt = [o.passed for o in operands if o.needs_grad]
            if wrt:
                got = fa.grad(out, wrt, seed=seed)
                expected = [g for o, g in zip(operands, grads) if o.needs_grad]
                scales = scales[0] if scales else [None] * len(grads)
                scales = [sc for o, sc in zip(operands, scales) if o.needs_grad]
                for i, (g, e, sc) in enumerate(zip(got, expected, scales)):
                    assert_matches(g, e, dtype, f"{op} gradient of operand {i}", sc)
    _assert_unmodified(snapshot)


def sum_to(g, shape):
    """A broadcast gradient summed back to an operand's shape."""
    g = np.asarray(g)
    while g.ndim > len(shape):
        g = g.sum(axis=0)
    axes = tuple(i for i, n in enumerate(shape) if n == 1 and g.shape[i] != 1)
    return g.sum(axis=axes, keepdims=True) if axes else g


def operand_errors(*operands):
    """The exception types the operands' data calls for (TypeError for non-real data or
    mixed precision)."""
    return tuple({o.error for o in operands if o.error is not None})


def _numpy_outcome(call):
    """(result, None) or (None, exception type), for NumPy's view of the same call."""
    try:
        return call(), None
    except Exception as e:  # noqa: BLE001
        return None, type(e)


# --- families ------------------------------------------------------------------------------

def _sigmoid(x):
    return np.where(x >= 0, 1 / (1 + np.exp(-x)), np.exp(x) / (1 + np.exp(x)))


# The rows of the op table with a reference vjp: one-input elementwise rows, checked on
# any data (NaN, Inf, huge values and zeros included) against NumPy's value and the vjp.
UNARY = {row.id: row for row in OPS if row.vjp is not None}


@st.composite
def unary_cases(draw):
    row = draw(st.sampled_from(sorted(UNARY)))
    shape = draw(shapes())
    how = draw(st.sampled_from(["tensor", "tensor", "tensor", "ndarray", "non-real"]))
    if how == "tensor":
        return row, draw(tensor_operands(shape))
    if how == "ndarray":  # follows fa.tensor's rules: float32/64 kept, other reals float64
        raw_dtype = draw(st.sampled_from([np.float32, np.float64, np.int16, np.uint8, bool]))
        raw = in_layout(draw(layouts), values(draw(seeds), shape, np.float64).astype(raw_dtype))
        native = raw.dtype.newbyteorder("=")
        dtype = native if native in FLOATS else np.dtype(np.float64)
        return row, Operand("ndarray", raw, raw.astype(dtype), dtype, watch=[raw])
    array = NON_REAL[draw(st.sampled_from(sorted(NON_REAL)))](shape)
    return row, Operand("non-real", array, error=TypeError, watch=[array])


@given(unary_cases())
def prop_unary(case):
    name, x = case
    row = UNARY[name]

    def reference(s):
        y = row.build(NumpyOps, x.plain)
        return y, [row.vjp(x.plain, y, s)]

    check_op(row.op, lambda: row.build(FA, x.passed), [x], reference, x.dtype,
             errors=operand_errors(x))


def _winner_share(s, mine, other, loses):
    """torch.maximum's (loses=np.less) or torch.minimum's (np.greater) gradient of one
    operand: all of it if it wins, half at a tie, none if it loses; both get it at NaN."""
    return np.where(mine == other, s / 2, np.where(loses(mine, other), 0, s))


CLIP_BOUNDS = [None, None, -1.0, 0.0, 0.5, 2, np.float32(-0.25), np.float64(1.5), np.inf,
               -np.inf, np.nan, 1e300, True, 1j, "1", np.ones(2)]


@st.composite
def clip_cases(draw):
    x = draw(tensor_operands(draw(shapes())))
    lo, hi = draw(st.sampled_from(CLIP_BOUNDS)), draw(st.sampled_from(CLIP_BOUNDS))
    return x, lo, hi, draw(st.booleans())


def _bad_bound(bound):
    return bound is not None and (np.ndim(bound) != 0 or np.asarray(bound).dtype.kind
                                  not in "biuf")


@given(clip_cases())
def prop_clip(case):
    """clip as torch.clamp: bounds in x's dtype, lo applied before hi (so lo > hi gives hi),
    the gradient where lo <= x <= hi (boundaries included, NaN excluded)."""
    x, lo, hi, method = case
    errors = operand_errors(x)
    if _bad_bound(lo) or _bad_bound(hi):
        errors += (TypeError,)
    elif lo is None and hi is None:
        errors += (ValueError,)

    def reference(s):
        v = x.plain
        y, inside = v, np.ones(v.shape, bool)
        if lo is not None:
            bound = np.asarray(lo).astype(x.dtype)
            y, inside = np.maximum(y, bound), inside & (v >= bound)
        if hi is not None:
            bound = np.asarray(hi).astype(x.dtype)
            y, inside = np.minimum(y, bound), inside & (v <= bound)
        return y, [np.where(inside, s, 0)]

    call = (lambda: x.passed.clip(lo, hi)) if method else (lambda: fa.clip(x.passed, lo, hi))
    check_op("clip", call, [x], reference, x.dtype, errors=errors)


BINARY = {  # op: (forward, vjp(a, b, y, S) -> (da, db))
    "add": (np.add, lambda a, b, y, s: (s, s)),
    "sub": (np.subtract, lambda a, b, y, s: (s, -s)),
    "mul": (np.multiply, lambda a, b, y, s: (s * b, s * a)),
    "div": (np.divide, lambda a, b, y, s: (s / b, -s * a / (b * b))),
    "pow": (np.power, lambda a, b, y, s: (s * b * a ** (b - 1), s * y * np.log(a))),
    "maximum": (np.maximum, lambda a, b, y, s: (_winner_share(s, a, b, np.less),
                                               _winner_share(s, b, a, np.less))),
    "minimum": (np.minimum, lambda a, b, y, s: (_winner_share(s, a, b, np.greater),
                                               _winner_share(s, b, a, np.greater))),
}
OPERATORS = {"add": "__add__", "sub": "__sub__", "mul": "__mul__", "div": "__truediv__",
             "pow": "__pow__"}
REFLECTED = {"add": "__radd__", "sub": "__rsub__", "mul": "__rmul__",
             "div": "__rtruediv__", "pow": "__rpow__"}


def _broadcastable(*shapes_):
    try:
        np.broadcast_shapes(*shapes_)
        return True
    except ValueError:
        return False


@st.composite
def binary_cases(draw):
    op = draw(st.sampled_from(sorted(BINARY)))
    shape_a = draw(shapes())
    shape_b = draw(st.one_of(st.just(shape_a), shapes(max_dims=2, max_side=4),
                             st.just(shape_a[1:]), st.just(tuple(1 for _ in shape_a))))
    dtype = draw(dtypes)
    positive = op == "pow"
    a = draw(tensor_operands(shape_a, dtype, positive))
    b = a if draw(st.integers(0, 9)) == 0 else draw(other_operands(shape_b, dtype, positive))
    swap = draw(st.booleans())
    how = draw(st.sampled_from(["function", "operator"])) if op in OPERATORS else "function"
    return op, (b, a) if swap else (a, b), how


@given(binary_cases())
def prop_binary(case):
    op, (a, b), how = case
    forward, vjp = BINARY[op]
    if how == "function":
        call = lambda: getattr(fa, op)(a.passed, b.passed)  # noqa: E731
    elif a.is_tensor:
        call = lambda: getattr(a.passed, OPERATORS[op])(b.passed)  # noqa: E731
    else:
        call = lambda: getattr(b.passed, REFLECTED[op])(a.passed)  # noqa: E731
    tensor = a if a.is_tensor else b
    dtype = tensor.dtype
    errors = operand_errors(a, b)
    mention = ()
    if errors == (TypeError,) and {a.dtype, b.dtype} == set(FLOATS):
        mention = ("float32", "float64")
    if a.plain is not None and b.plain is not None and \
            not _broadcastable(np.shape(a.plain), np.shape(b.plain)):
        mention = (str(np.shape(a.plain)), str(np.shape(b.plain))) if not errors else ()
        errors += (ValueError,)

    def reference(s):
        y = forward(a.plain, b.plain)
        da, db = vjp(a.plain, b.plain, y, s)
        if a is b:  # x op x: the two terms may cancel, so compare relative to them
            return y, [da + db], [np.abs(da) + np.abs(db)]
        return y, [sum_to(da, np.shape(a.plain)), sum_to(db, np.shape(b.plain))]

    operands = [a] if a is b else [a, b]
    check_op(op, call, operands, reference, dtype, errors=errors, mention=mention)


@st.composite
def where_cases(draw):
    shape = draw(shapes())
    dtype = draw(dtypes)
    a = draw(tensor_operands(shape, dtype))
    b = draw(other_operands(draw(st.sampled_from([shape, shape[1:], ()])), dtype))
    cond_shape = draw(st.sampled_from([shape, shape[1:], (), (3,)]))
    cond = in_layout(draw(layouts), np.asarray(values(draw(seeds), cond_shape, np.float64) > 0))
    cond_form = draw(st.sampled_from(["bool", "float", "tensor"]))
    passed = {"bool": cond, "float": cond.astype(np.float32), "tensor": fa.tensor(cond)}
    return a, b, cond, passed[cond_form]


@given(where_cases())
def prop_where(case):
    a, b, cond, passed = case
    errors = operand_errors(a, b)
    if b.plain is not None and not _broadcastable(cond.shape, np.shape(a.plain),
                                                  np.shape(b.plain)):
        errors += (ValueError,)

    def reference(s):
        y = np.where(cond, a.plain, b.plain)
        da = sum_to(np.where(cond, s, 0), np.shape(a.plain))
        db = sum_to(np.where(cond, 0, s), np.shape(b.plain))
        return y, [da, db]

    operands = [a, b, Operand("cond", passed, watch=[cond])]
    check_op("where", lambda: fa.where(passed, a.passed, b.passed), operands, reference,
             a.dtype, errors=errors)


@st.composite
def matmul_cases(draw):
    dtype = draw(dtypes)
    m, k, n = draw(st.integers(0, 4)), draw(st.integers(0, 4)), draw(st.integers(0, 4))
    k2 = k if draw(st.integers(0, 5)) else draw(st.integers(0, 4))
    batch_a = draw(shapes(0, 2, 1, 3))
    batch_b = draw(st.one_of(st.just(batch_a), shapes(0, 2, 1, 3)))
    kind_a = draw(st.sampled_from(["matrix", "matrix", "vector", "scalar"]))
    kind_b = draw(st.sampled_from(["matrix", "matrix", "vector", "scalar"]))
    shape_a = {"matrix": batch_a + (m, k), "vector": (k,), "scalar": ()}[kind_a]
    shape_b = {"matrix": batch_b + (k2, n), "vector": (k2,), "scalar": ()}[kind_b]
    a = draw(tensor_operands(shape_a, dtype))
    b = draw(st.one_of(tensor_operands(shape_b, dtype), other_operands(shape_b, dtype)))
    if draw(st.booleans()):
        a, b = b, a
    return a, b, draw(st.sampled_from(["matmul", "dot", "operator"]))


def matmul_reference(a, b, s):
    y = np.matmul(a, b)
    a2 = a[None, :] if a.ndim == 1 else a
    b2 = b[:, None] if b.ndim == 1 else b
    s2 = s[..., None] if b.ndim == 1 else s
    s2 = s2[..., None, :] if a.ndim == 1 else s2
    da = sum_to(s2 @ np.swapaxes(b2, -1, -2), a2.shape).reshape(a.shape)
    db = sum_to(np.swapaxes(a2, -1, -2) @ s2, b2.shape).reshape(b.shape)
    return y, [da, db]


@given(matmul_cases())
def prop_matmul(case):
    a, b, how = case
    tensor = a if a.is_tensor else b
    errors = operand_errors(a, b)
    sa, sb = np.shape(a.plain), np.shape(b.plain)
    if not sa or not sb or (sa[-1] != (sb[0] if len(sb) == 1 else sb[-2])) or \
            not _broadcastable(sa[:-2], sb[:-2]):
        errors += (ValueError,)
    if how == "operator":
        call = (lambda: a.passed @ b.passed) if a.is_tensor else \
            (lambda: b.passed.__rmatmul__(a.passed))
    else:
        call = lambda: getattr(fa, how)(a.passed, b.passed)  # noqa: E731
    check_op("matmul", call, [a, b], lambda s: matmul_reference(a.plain, b.plain, s),
             tensor.dtype, errors=errors)


@st.composite
def axes(draw, ndim):
    choice = draw(st.sampled_from(["none", "int", "int", "tuple", "bad", "repeated"]))
    if choice == "none" or (ndim == 0 and choice != "bad"):
        return None
    if choice == "int":
        return draw(st.integers(-ndim, ndim - 1))
    if choice == "tuple":
        return tuple(draw(st.lists(st.integers(-ndim, ndim - 1), min_size=1, max_size=ndim,
                                   unique_by=lambda a: a % ndim)))
    if choice == "bad":
        return draw(st.sampled_from([ndim, -ndim - 1, 7]))
    axis = draw(st.integers(0, ndim - 1))
    return (axis, axis - ndim)


def _axis_error(axis, ndim):
    items = () if axis is None else (axis if isinstance(axis, tuple) else (axis,))
    if any(not -ndim <= a < ndim for a in items):
        return np.exceptions.AxisError
    if len({a % ndim for a in items}) != len(items):
        return ValueError
    return None


@st.composite
def reduction_cases(draw):
    op = draw(st.sampled_from(["sum", "mean", "max", "min"]))
    x = draw(tensor_operands(draw(shapes())))
    return op, x, draw(axes(x.passed.ndim)), draw(st.booleans()), draw(st.booleans())


@given(reduction_cases())
def prop_reductions(case):
    op, x, axis, keepdims, method = case
    v = x.plain
    error = _axis_error(axis, v.ndim)
    norm = () if error else tuple(range(v.ndim)) if axis is None else tuple(
        sorted(a % v.ndim for a in (axis if isinstance(axis, tuple) else (axis,))))
    if error is None and op in ("max", "min") and any(v.shape[a] == 0 for a in norm):
        error = ValueError

    def reference(s):
        y = getattr(np, op)(v, axis=norm, keepdims=keepdims)
        s_full = s if keepdims else np.expand_dims(s, norm)
        if op == "sum":
            g = np.broadcast_to(s_full, v.shape)
        elif op == "mean":   # (a count of 0 means v has no elements to get a gradient)
            g = np.broadcast_to(s_full / np.prod([v.shape[a] for a in norm]), v.shape)
        else:  # tied extrema share the gradient
            is_max = v == getattr(np, op)(v, axis=norm, keepdims=True)
            g = is_max * s_full / is_max.sum(axis=norm, keepdims=True)
        return y, [g]

    target = x.passed
    call = (lambda: getattr(target, op)(axis=axis, keepdims=keepdims)) if method else \
        (lambda: getattr(fa, op)(target, axis=axis, keepdims=keepdims))
    check_op(op, call, [x], reference, x.dtype, errors=error)


def _softmax(x, axis):
    e = np.exp(x - np.max(x, axis=axis, keepdims=True, initial=-np.inf))
    return e / e.sum(axis=axis, keepdims=True)


def _log_softmax(x, axis):
    shifted = x - np.max(x, axis=axis, keepdims=True, initial=-np.inf)
    return shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))


@st.composite
def softmax_cases(draw):
    op = draw(st.sampled_from(["softmax", "log_softmax", "log-of-softmax"]))
    x = draw(tensor_operands(draw(shapes(min_dims=1))))
    ndim = x.passed.ndim
    axis = draw(st.one_of(st.integers(-ndim, ndim - 1), st.sampled_from([-1, ndim, -ndim - 1])))
    return op, x, axis


@given(softmax_cases())
def prop_softmax(case):
    op, x, axis = case
    v = x.plain
    error = None if -v.ndim <= axis < v.ndim else np.exceptions.AxisError

    def reference(s):
        if op == "softmax":
            y = _softmax(v, axis)
            return y, [y * (s - (s * y).sum(axis=axis, keepdims=True))]
        y = _log_softmax(v, axis)
        return y, [s - np.exp(y) * s.sum(axis=axis, keepdims=True)]

    if op == "log-of-softmax":
        call = lambda: fa.log(fa.softmax(x.passed, axis=axis))  # noqa: E731
    else:
        call = lambda: getattr(fa, op)(x.passed, axis=axis)  # noqa: E731
    check_op("softmax" if op == "log-of-softmax" else op, call, [x], reference, x.dtype,
             errors=error)


LABEL_DTYPES = [np.int8, np.uint8, np.int16, np.int32, np.int64, np.uint32, np.uint64]


@st.composite
def loss_cases(draw):
    op = draw(st.sampled_from(["cross_entropy", "nll_loss", "gather"]))
    scores_shape = draw(st.one_of(shapes(2, 2, 0, 5), shapes(2, 2, 0, 5), shapes(0, 3, 0, 3)))
    x = draw(tensor_operands(scores_shape))
    n = scores_shape[0] if scores_shape else 0
    c = scores_shape[1] if len(scores_shape) > 1 else 0
    rng = np.random.default_rng(draw(seeds))
    good = rng.integers(0, max(c, 1), n)
    kind = draw(st.sampled_from(
        ["good"] * 4 + ["list", "above", "negative", "float", "bool", "2-d", "short", "long"]))
    labels = {
        "good": good, "list": good, "above": good + c * (np.arange(n) == n - 1),
        "negative": good - (np.arange(n) == 0), "float": good.astype(np.float64),
        "bool": good > 0, "2-d": good[:, None], "short": good[:-1],
        "long": np.append(good, 0)}[kind]
    if kind in ("good", "above", "short", "long"):
        labels = labels.astype(draw(st.sampled_from(LABEL_DTYPES)))
    if kind == "negative":
        labels = labels.astype(draw(st.sampled_from([np.int8, np.int32, np.int64])))
    if kind == "list":
        labels = labels.tolist()
    else:
        labels = in_layout(draw(layouts), labels)
    reduction = draw(st.sampled_from(["mean", "mean", "sum", "none", "bad"]))
    return op, x, kind, labels, reduction


def _loss_errors(op, shape, kind, labels, reduction):
    """The exception types the SPEC allows for this loss call (any, when several apply)."""
    errors = set()
    if len(shape) != 2 or shape[0] == 0:
        errors.add(ValueError)
    if kind in ("float", "bool", "2-d", "short", "long"):
        errors.add(ValueError)
    if len(shape) == 2 and shape[0] and kind not in ("float", "bool"):
        y = np.asarray(labels)
        if y.size and (y.min() < 0 or y.max() >= shape[1]):
            errors.add(IndexError)
    if reduction == "bad":
        errors.add(ValueError)
    return tuple(errors)


@given(loss_cases())
def prop_losses(case):
    op, x, kind, labels, reduction = case
    v = x.plain
    rows = np.arange(v.shape[0] if v.ndim else 0)
    if op == "gather":  # x[arange(n), y] is NumPy indexing: NumPy says what is an error
        _, numpy_error = _numpy_outcome(lambda: v[rows, np.asarray(labels)])
        errors = (numpy_error,) if numpy_error else ()
    else:
        errors = _loss_errors(op, v.shape, kind, labels, reduction)
    y = np.asarray(labels)
    reduce_name = "mean" if reduction == "bad" else reduction

    def reference(s):
        n = v.shape[0]
        if op == "gather":
            out = v[rows, y]
            g = np.zeros_like(v)
            np.add.at(g, (rows, y), s)
            return out, [g]
        log_p = _log_softmax(v, -1) if op == "cross_entropy" else v
        losses = -log_p[rows, y]
        scale = {"mean": np.full(n, s / n), "sum": np.full(n, s), "none": s}[reduce_name]
        onehot = np.zeros_like(v)
        onehot[rows, y] = 1
        if op == "cross_entropy":
            g = (_softmax(v, -1) - onehot) * scale[:, None]
        else:
            g = -onehot * scale[:, None]
        value = {"mean": losses.mean(), "sum": losses.sum(), "none": losses}[reduce_name]
        return value, [g]

    if op == "gather":
        call = lambda: x.passed[rows, labels]  # noqa: E731
        name = "getitem"
    else:
        call = lambda: getattr(fa, op)(x.passed, labels, reduction=reduction)  # noqa: E731
        name = op
    watch = [labels] if isinstance(labels, np.ndarray) else []
    check_op(name, call, [x, Operand("labels", labels, watch=watch)], reference, x.dtype,
             errors=errors)


ELEMENTWISE_LOSSES = {  # op: (terms(x, t), d terms / dx, d terms / dt)
    "mse_loss": (lambda x, t: (x - t) ** 2, lambda x, t: 2 * (x - t), lambda x, t: 2 * (t - x)),
    "binary_cross_entropy_with_logits": (
        lambda x, t: np.logaddexp(0, x) - t * x, lambda x, t: _sigmoid(x) - t,
        lambda x, t: -x),
}


@st.composite
def elementwise_loss_cases(draw):
    op = draw(st.sampled_from(sorted(ELEMENTWISE_LOSSES)))
    shape = draw(shapes())
    dtype = draw(dtypes)
    x = draw(tensor_operands(shape, dtype))
    target_shape = draw(st.sampled_from([shape] * 4 + [shape[1:], (), shape + (1,)]))
    t = draw(other_operands(target_shape, dtype))
    if draw(st.booleans()):
        x, t = t, x
    reduction = draw(st.sampled_from(["mean", "mean", "sum", "none", "bad"]))
    return op, x, t, reduction


@given(elementwise_loss_cases())
def prop_elementwise_losses(case):
    """mse_loss and binary_cross_entropy_with_logits (torch's formulas) against a target of
    the input's shape in any form; both get a gradient when they are Tensors that need one."""
    op, x, t, reduction = case
    terms, d_input, d_target = ELEMENTWISE_LOSSES[op]
    errors = operand_errors(x, t)
    tensor = x if x.is_tensor else t
    if not errors:
        if np.shape(x.plain) != np.shape(t.plain) or np.size(x.plain) == 0:
            errors += (ValueError,)
        if reduction == "bad":
            errors += (ValueError,)

    def reference(s):
        v, w = np.asarray(x.plain), np.asarray(t.plain)  # in the op's dtype: same overflows
        losses = terms(v, w)
        value = {"mean": np.mean, "sum": np.sum, "none": np.asarray}[reduction](losses)
        weight = s / v.size if reduction == "mean" else s
        return value, [d_input(v, w) * weight, d_target(v, w) * weight]

    check_op(op, lambda: getattr(fa, op)(x.passed, t.passed, reduction=reduction), [x, t],
             reference, tensor.dtype, errors=errors)


SLICES = st.one_of(st.integers(-5, 5), st.slices(5), st.just(Ellipsis), st.none())


@st.composite
def shape_cases(draw):
    op = draw(st.sampled_from(["reshape", "transpose", "concatenate", "stack", "getitem"]))
    x = draw(tensor_operands(draw(shapes())))
    shape = np.shape(x.plain)
    if op == "reshape":
        size = int(np.prod(shape))
        new = draw(st.sampled_from([(size,), (-1,), (1, size), (size, 1, 1), (-1, 1),
                                    (size + 1,), (2, -1), (-1, -1), ()]))
        return op, x, new
    if op == "transpose":
        perm = draw(st.one_of(st.permutations(range(len(shape))).map(tuple),
                              st.just(None), st.lists(st.integers(-3, 3), max_size=3).map(tuple)))
        return op, x, perm or None   # () means "reversed", as for ndarray.transpose()
    if op == "concatenate":
        axis = draw(st.integers(-3, 3))
        others = []
        for _ in range(draw(st.integers(0, 2))):
            other_shape = list(shape)
            if shape and draw(st.booleans()):
                other_shape[axis % len(shape) if -len(shape) <= axis < len(shape) else 0] = \
                    draw(st.integers(0, 3))
            others.append(draw(tensor_operands(tuple(other_shape))))
        return op, x, (others, axis)
    if op == "stack":  # mostly the same shape; sometimes another one, or no tensor at all
        axis = draw(st.integers(-len(shape) - 2, len(shape) + 1))
        others = [draw(tensor_operands(draw(st.sampled_from([shape, shape, shape, shape[1:]])),
                                       draw(st.sampled_from([x.dtype] * 4 + list(FLOATS)))))
                  for _ in range(draw(st.integers(0, 2)))]
        return op, x, (others, axis, draw(st.integers(0, 9)) == 0)
    index = draw(st.one_of(
        st.lists(SLICES, max_size=3).map(tuple), SLICES,
        st.lists(st.integers(-6, 6), max_size=4).map(np.array),
        st.just(np.array([], dtype=np.int64)),
    ))
    return op, x, index


@given(shape_cases())
def prop_shapes(case):
    op, x, arg = case
    v = x.plain
    operands = [x]
    if op == "reshape":
        result, err = _numpy_outcome(lambda: v.reshape(arg))
        call = lambda: fa.reshape(x.passed, arg)  # noqa: E731
        grads = lambda s: [s.reshape(v.shape)]  # noqa: E731
        errors = (ValueError,) if err else ()
    elif op == "transpose":
        result, err = _numpy_outcome(lambda: v.transpose(arg))
        call = lambda: fa.transpose(x.passed, arg)  # noqa: E731
        inverse = np.argsort(arg) if arg is not None and not err else None
        grads = lambda s: [s.transpose(inverse)]  # noqa: E731
        errors = (ValueError,) if err else ()
    elif op == "concatenate":
        others, axis = arg
        operands = [x, *others]
        dtypes_ = {o.dtype for o in operands}
        result, err = _numpy_outcome(lambda: np.concatenate([o.plain for o in operands], axis))
        call = lambda: fa.concatenate([o.passed for o in operands], axis=axis)  # noqa: E731
        if len(dtypes_) > 1:
            errors = (TypeError,)
        elif err:
            errors = (ValueError,)   # AxisError is a ValueError too
        else:
            errors = ()
        splits = np.cumsum([np.shape(o.plain)[axis] for o in operands])[:-1] if not err else 0
        grads = lambda s: np.split(s, splits, axis=axis)  # noqa: E731
    elif op == "stack":
        others, axis, empty = arg
        operands = [] if empty else [x, *others]
        result, err = _numpy_outcome(lambda: np.stack([o.plain for o in operands], axis))
        call = lambda: fa.stack([o.passed for o in operands], axis=axis)  # noqa: E731
        errors = (TypeError,) if len({o.dtype for o in operands}) > 1 else \
            (ValueError,) if err else ()   # nothing to stack, shapes, axis
        grads = lambda s: [np.take(s, i, axis=axis) for i in range(len(operands))]  # noqa: E731
    else:
        result, err = _numpy_outcome(lambda: v[arg])
        call = lambda: x.passed[arg]  # noqa: E731

        def grads(s):
            g = np.zeros_like(v)
            np.add.at(g, arg, s)
            return [g]
        errors = (err,) if err else ()
        op = "getitem"

    def reference(s):
        return result, grads(s)

    check_op(op, call, operands or [x], reference, x.dtype, errors=errors)


# --- fa.grad -----------------------------------------------------------------------------

WRT_NAMES = ["w1", "b1", "w2", "h", "logits", "x", "unused", "ndarray"]


@st.composite
def grad_cases(draw):
    dtype = draw(dtypes)
    n, d, h, c = (draw(st.integers(1, 4)) for _ in range(4))
    wrt_names = draw(st.lists(st.sampled_from(WRT_NAMES), min_size=1, max_size=5))
    return dict(dtype=dtype, seed_values=draw(seeds), sizes=(n, d, h, c), wrt=wrt_names,
                single=draw(st.booleans()) and len(wrt_names) == 1,
                allow_unused=draw(st.booleans()),
                output=draw(st.sampled_from(["loss", "loss", "logits", "logits-seeded"])),
                seed=draw(st.sampled_from(["right", "right", "wrong-shape", "wrong-dtype",
                                           "int"])),
                split=draw(st.booleans()), retain=draw(st.booleans()))


def _grad_graph(case):
    n, d, h, c = case["sizes"]
    dtype, rng = case["dtype"], np.random.default_rng(0)
    t = {"x": fa.tensor(rng.standard_normal((n, d)).astype(dtype)),
         "w1": fa.Parameter(rng.standard_normal((d, h)).astype(dtype)),
         "b1": fa.Parameter(rng.standard_normal(h).astype(dtype)),
         "w2": fa.Parameter(rng.standard_normal((h, c)).astype(dtype)),
         "unused": fa.Parameter(np.ones(2, dtype)),
         "ndarray": np.ones(2, dtype)}
    t["h"] = fa.sigmoid(t["x"] @ t["w1"] + t["b1"])
    t["logits"] = t["h"] @ t["w2"]
    t["loss"] = fa.cross_entropy(t["logits"], np.arange(n) % c)
    return t


def _grad_mistakes(case, out, seed):
    """[(exception type, words its message must contain)] for each mistake in the call."""
    mistakes = []
    names = case["wrt"]
    if "ndarray" in names:
        mistakes.append((TypeError, (f"wrt[{names.index('ndarray')}]",)))
    if seed is None and out.size != 1:
        mistakes.append((ValueError, ("seed",)))
    elif seed is not None and seed.shape != out.shape:
        mistakes.append((ValueError, ("seed",)))
    elif seed is not None and seed.dtype in FLOATS and seed.dtype != out.dtype:
        mistakes.append((TypeError, ("seed",)))
    bad = [i for i, name in enumerate(names) if name in ("x", "unused")]
    if bad and not case["allow_unused"]:
        mistakes.append((ValueError, (f"wrt[{bad[0]}]",)))
    return mistakes


@given(grad_cases())
def prop_grad(case):
    """fa.grad's own arguments: wrt lists of leaves, intermediates, duplicates, data,
    unused tensors and non-tensors; seeds of the right or wrong shape and dtype; one
    joint call or one call per tensor. Values equal a joint call on a fresh graph."""
    CASES[0] += 1
    t = _grad_graph(case)
    out = t["logits"] if case["output"].startswith("logits") else t["loss"]
    seed = None
    if case["output"] == "logits-seeded" or case["seed"] != "right":
        rng = np.random.default_rng(case["seed_values"])
        shape = out.shape if case["seed"] != "wrong-shape" else out.shape + (2,)
        seed = rng.standard_normal(shape).astype(case["dtype"])
        if case["seed"] == "wrong-dtype":
            seed = seed.astype(FLOATS[1 - FLOATS.index(case["dtype"])])
        elif case["seed"] == "int":
            seed = np.round(seed * 3).astype(np.int32)
    wrt = [t[name] for name in case["wrt"]]
    mistakes = _grad_mistakes(case, out, seed)
    call = lambda: fa.grad(out, wrt[0] if case["single"] else wrt, seed=seed,  # noqa: E731
                           allow_unused=case["allow_unused"])
    if mistakes:
        # several mistakes: any of their errors will do; one: its message is checked too
        mention = mistakes[0][1] if len(mistakes) == 1 else ()
        with np.errstate(all="ignore"):
            expect_error("grad", tuple({error for error, _ in mistakes}), call, mention)
        return
    # the reference: one joint call on a fresh copy of the graph, for every tensor at once
    fresh = _grad_graph(case)
    fresh_out = fresh["logits"] if case["output"].startswith("logits") else fresh["loss"]
    names = ["w1", "b1", "w2", "h", "logits"]
    joint = dict(zip(names, fa.grad(fresh_out, [fresh[k] for k in names], seed=seed)))
    joint["x"] = np.zeros(t["x"].shape, case["dtype"])
    joint["unused"] = np.zeros(2, case["dtype"])
    if case["split"]:   # one call per tensor, in the drawn order, sharing one sweep
        # (an intermediate asked for after the sweep passed it needs retain_graph=True)
        retain = case["retain"] or {"h", "logits"} & set(case["wrt"])
        got = [fa.grad(out, w, seed=seed, allow_unused=case["allow_unused"],
                       retain_graph=bool(retain)) for w in wrt]
    else:
        got = call()
        got = [got] if case["single"] else got
    for name, g in zip(case["wrt"], got):
        assert g.dtype == case["dtype"] and g.shape == t[name].shape, name
        np.testing.assert_array_equal(g, joint[name], err_msg=f"gradient of {name}")


# --- fan-out: several consumers accumulate into one adjoint buffer ----------------------------

# A consumer is a row of the op table and one of its inputs, which x fills (the row's
# other inputs are constants); the consumers of one x share the shape of that input.
CONSUMERS = collections.defaultdict(list)   # shape: [(row, input index)]
for _row in OPS:
    for _i, _shape in enumerate(_row.shapes):
        CONSUMERS[tuple(_shape)].append((_row, _i))
# (an input shape as often as rows have it, so every consumer is about as likely)
FAN_OUT_SHAPES = [shape for shape, consumers in sorted(CONSUMERS.items()) for _ in consumers]
FAN_OUT_VIEWS = {"none": (lambda p: p, lambda shape: shape), **VIEWS}
DOMAIN_ORDER = ["pos", "away0", "prob", "real"]   # values of the first fit the later ones


@st.composite
def fan_out_cases(draw):
    shape = draw(st.sampled_from(FAN_OUT_SHAPES))
    n = len(CONSUMERS[shape])
    return dict(
        dtype=draw(dtypes),
        view=draw(st.sampled_from(["transposed", "transposed", "strided", "negative-strides",
                                   "row-strided", "offset-slice", "none"])) if shape else "none",
        shape=shape,
        # each axis of one length given another (so x and every consumer's other inputs
        # change with it), where NumPy still computes the consumer
        resize=draw(st.one_of(st.none(), st.tuples(st.sampled_from(shape),
                                                    st.integers(1, 4)))) if shape else None,
        consumers=draw(st.lists(st.integers(0, n - 1), min_size=2, max_size=4)),
        # (a transposed result makes the adjoint reaching x Fortran-ordered)
        after=draw(st.lists(st.sampled_from(["none", "transpose", "transpose", "exp"]),
                            min_size=4, max_size=4)),
        seed=draw(seeds))


def _fan_out_consumers(case):
    """[(row, input index, the row's shapes)], resized if NumPy and fastad compute every
    consumer at the new shapes (fastad's elementwise losses do not broadcast)."""
    chosen = [CONSUMERS[case["shape"]][k] for k in case["consumers"]]
    if case["resize"] is not None:
        resized_ = [(row, i, resized(row.shapes, *case["resize"])) for row, i in chosen]
        if all(computes(row, shapes) and computes(row, shapes, FA)
               for row, _, shapes in resized_):
            return resized_
    return [(row, i, row.shapes) for row, i in chosen]


def _fan_out_loss(case, consumers, p, which):
    x = FAN_OUT_VIEWS[case["view"]][0](p)
    loss = None
    for k in which:
        row, i, shapes = consumers[k]
        inputs = [fa.tensor(a) for a in
                  row.inputs(np.random.default_rng(case["seed"] + k), case["dtype"], shapes)]
        inputs[i] = x
        y = row.build(FA, *inputs)
        after = case["after"][k]
        y = fa.transpose(y) if after == "transpose" else fa.exp(y) if after == "exp" else y
        term = fa.sum(y)
        loss = term if loss is None else loss + term
    return loss


@given(fan_out_cases())
def prop_fan_out(case):
    check_fan_out(case)


def each_consumer_fans_out():
    """Every consumer at least once (hypothesis, drawing from a few hundred, would leave
    some out): twice itself and once the next consumer of its shape, through a view, a
    dtype and results transposed or not that change from one consumer to the next."""
    views = [name for name in FAN_OUT_VIEWS if name != "none"] + ["none"]
    afters = ["transpose", "none", "exp"]
    for k, (shape, index) in enumerate((shape, j) for shape, consumers in
                                       sorted(CONSUMERS.items()) for j in range(len(consumers))):
        case = dict(dtype=FLOATS[k % 2], view=views[k % len(views)] if shape else "none",
                    shape=shape, resize=None,
                    consumers=[index, index, (index + 1) % len(CONSUMERS[shape])],
                    after=[afters[(k + j) % len(afters)] for j in range(4)], seed=k)
        try:
            check_fan_out(case)
        except Exception:
            print(f"Falsifying consumer: {case}", flush=True)
            raise


def check_fan_out(case):
    """The gradient through k consumers of one tensor is the sum of the k gradients,
    whatever layout the tensor and the consumers' contributions have."""
    CASES[0] += 1
    dtype = case["dtype"]
    consumers = _fan_out_consumers(case)
    row, i, shapes = consumers[0]
    domain = min((r.input_domains()[j] for r, j, _ in consumers), key=DOMAIN_ORDER.index)
    base_shape = FAN_OUT_VIEWS[case["view"]][1](shapes[i])
    base = DOMAINS[domain](np.random.default_rng(case["seed"]), base_shape).astype(dtype)
    p = fa.Parameter(base)
    which = range(len(consumers))
    with np.errstate(all="ignore"):
        joint = fa.grad(_fan_out_loss(case, consumers, p, which), p)
        separate = sum(_single_grad(case, consumers, base, k) for k in which)
    assert joint.dtype == dtype, f"gradient dtype {joint.dtype}, expected {dtype}"
    np.testing.assert_allclose(joint, separate, **TOL[np.dtype(dtype)])
    np.testing.assert_array_equal(p.value, base)


def _single_grad(case, consumers, base, k):
    p = fa.Parameter(base)
    return fa.grad(_fan_out_loss(case, consumers, p, [k]), p).astype(np.float64)


# --- settable attributes: t.value = a, t.grad = g ----------------------------------------------

def _onehot(n, k):
    return np.eye(k)[np.arange(n) % k]


def _cross_entropy_ref(x, p, s):
    n, k = x.shape
    y = -(_log_softmax(x, -1) * _onehot(n, k)).sum() / n
    return y, (_softmax(x, -1) - _onehot(n, k)) * s / n, None


def _softmax_ref(x, p, s):
    y = _softmax(x, -1)
    return y, y * (s - (s * y).sum(-1, keepdims=True)), None


def _sigmoid_ref(x, p, s):
    y = _sigmoid(x)
    return y, s * y * (1 - y), None


# op: (the partner Parameter's shape for x of shape (n, k), or None; the fastad call;
#      the NumPy reference (x, partner, seed) -> (value, dx, dpartner))
ATTR_OPS = {
    "matmul": (lambda n, k: (k, 3), lambda x, p: x @ p,
               lambda x, p, s: (x @ p, s @ p.T, x.T @ s)),
    "rmatmul": (lambda n, k: (3, n), lambda x, p: p @ x,
                lambda x, p, s: (p @ x, p.T @ s, s @ x.T)),
    "add": (lambda n, k: (k,), lambda x, p: x + p, lambda x, p, s: (x + p, s, s.sum(0))),
    "mul": (lambda n, k: (n, k), lambda x, p: x * p, lambda x, p, s: (x * p, s * p, s * x)),
    "sigmoid": (None, lambda x, p: fa.sigmoid(x), _sigmoid_ref),
    "relu": (None, lambda x, p: fa.relu(x),
             lambda x, p, s: (np.maximum(x, 0), s * (x > 0), None)),
    "softmax": (None, lambda x, p: fa.softmax(x), _softmax_ref),
    "sum": (None, lambda x, p: fa.sum(x), lambda x, p, s: (x.sum(), s * np.ones_like(x), None)),
    "cross_entropy": (None, lambda x, p: fa.cross_entropy(x, np.arange(x.shape[0]) % x.shape[1]),
                      _cross_entropy_ref),
}
ASSIGNED_DTYPES = ["float16", "float32", "float64", ">f4", ">f8", "int32", "int64", "bool",
                   "complex128"]


def proper(a, dtype):
    """a is an array fastad holds as it is (a view): C-contiguous, aligned, writeable,
    native and of `dtype`."""
    return (isinstance(a, np.ndarray) and a.dtype == dtype and a.flags.c_contiguous
            and a.flags.aligned and a.flags.writeable)


def held_as_is(a, dtype, attribute):
    """Whether `t.<attribute> = a` may keep a's memory (else it must copy): a proper array
    for .value; for .grad any aligned, writeable array of the dtype."""
    if attribute == "value":
        return proper(a, dtype)
    return a.dtype == dtype and a.flags.aligned and a.flags.writeable


@st.composite
def assignments(draw, shape, dtype):
    """Something to assign to a `.value` or `.grad` of `shape` and `dtype`: arrays of any
    dtype, shape and layout, lists, Python and NumPy scalars."""
    kind = draw(st.sampled_from(["array"] * 6 + ["list", "python-scalar", "numpy-scalar"]))
    raw = values(draw(seeds), draw(st.sampled_from(
        [shape] * 8 + [shape[::-1], (int(np.prod(shape)),), (1,) + shape, (0,) + shape[1:], ()])),
        np.float64)
    if kind == "list":
        return raw.tolist() if draw(st.booleans()) else np.round(raw).astype(int).tolist()
    if kind == "python-scalar":
        return draw(st.sampled_from([1.5, 2, True]))
    if kind == "numpy-scalar":
        return draw(st.sampled_from([np.float32(1.5), np.float64(0.5), np.int64(2)]))
    target = draw(st.sampled_from([dtype.name] * 6 + [dtype.newbyteorder().str] * 2
                                  + ASSIGNED_DTYPES))
    converted = (raw > 0) if target == "bool" else \
        np.round(raw * 3).astype(target) if target.startswith("int") else raw.astype(target)
    return in_layout(draw(layouts), converted)


@st.composite
def attribute_cases(draw):
    """An op on x (a Parameter or a data tensor) and maybe a partner Parameter p, after
    up to three assignments to their `.value` and `.grad`."""
    dtype = draw(dtypes)
    shape = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    op = draw(st.sampled_from(sorted(ATTR_OPS)))
    partner_shape = ATTR_OPS[op][0]
    shapes_ = {"x": shape, **({"p": partner_shape(*shape)} if partner_shape else {})}
    form = draw(st.sampled_from(["param", "param", "data"]))
    targets = [(name, attribute) for name in shapes_ for attribute in ("value", "grad")
               if (name, attribute) != ("x", "grad") or form == "param"]
    assigned = [(name, attribute, draw(assignments(shapes_[name], dtype)))
                for name, attribute in draw(st.lists(st.sampled_from(targets), max_size=3))]
    return dict(dtype=dtype, shape=shape, form=form, op=op, assigned=assigned,
                stale=draw(st.booleans()), seed=draw(seeds))


def _dtype_names(d):
    return (str(d), d.name)   # '>f4' or float32: either names it


def assignment_mistakes(obj, shape, dtype, attribute):
    """{exception type: words its message must hold} for `t.<attribute> = obj` on a
    tensor of `shape` and `dtype`; empty when the contract accepts it."""
    if attribute == "grad" and not isinstance(obj, np.ndarray):
        return {TypeError: ()}
    a = np.asarray(obj)
    mistakes = {}
    if a.shape != shape:
        mistakes[ValueError] = (str(a.shape), str(shape))
    if a.dtype.newbyteorder("=") != dtype:
        mistakes[TypeError] = (_dtype_names(a.dtype), dtype.name)
    return mistakes


def expect_one_of(call, mistakes):
    """call() raises one of `mistakes` ({type: words}), with that type's words (a word is a
    string or a tuple of alternatives) in its message."""
    try:
        call()
    except tuple(mistakes) as e:
        words = next(w for kind, w in mistakes.items() if isinstance(e, kind))
        for word in words:
            options = word if isinstance(word, tuple) else (word,)
            assert any(o in str(e) for o in options), \
                f"{type(e).__name__} message does not name {options}: {e}"
        return
    except Exception as e:  # noqa: BLE001
        raise AssertionError(f"expected {[m.__name__ for m in mistakes]}, got "
                             f"{type(e).__name__}: {e}") from e
    raise AssertionError(f"expected {[m.__name__ for m in mistakes]}, but it succeeded")


def _assign(t, attribute, obj):
    """t.<attribute> = obj as the contract says: the accepted values (as t's dtype), or
    None after checking the exception and that t did not change."""
    before_value, before = t.value, (t.value.copy(), None if t.grad is None else t.grad.copy())
    mistakes = assignment_mistakes(obj, t.shape, t.dtype, attribute)
    if mistakes:
        expect_one_of(lambda: setattr(t, attribute, obj), mistakes)
        assert t.value is before_value and np.array_equal(t.value, before[0])
        assert (t.grad is None) if before[1] is None else np.array_equal(t.grad, before[1])
        return None
    setattr(t, attribute, obj)
    accepted = np.asarray(obj).astype(t.dtype)
    held = getattr(t, attribute)
    assert isinstance(held, np.ndarray), f".{attribute} holds a {type(held).__name__}"
    assert attribute == "grad" or held is not obj, ".value is the caller's array object"
    assert (held.dtype, held.shape) == (t.dtype, t.shape), f"{held.dtype} {held.shape}"
    # (a non-contiguous .grad may be kept as the caller's object, as the README says)
    assert (held.flags.c_contiguous or attribute == "grad") and held.flags.aligned \
        and held.flags.writeable, f".{attribute} is not a proper array:\n{held.flags}"
    np.testing.assert_array_equal(held, accepted, err_msg=f".{attribute} values")
    if attribute == "value" and isinstance(obj, np.ndarray) and obj.size:
        assert np.shares_memory(held, obj) == proper(obj, t.dtype), \
            f".value shares memory: {np.shares_memory(held, obj)}, for an array with\n{obj.flags}"
    return accepted


@given(attribute_cases())
def prop_attributes(case):
    """Assign `.value` and `.grad` (anything), then an op, backward and an SGD step: the
    contract's exception at the assignment, or NumPy's values and gradients for the
    accepted arrays; a tape recorded before an accepted `.value` refuses to sweep; arrays
    fastad had to copy are never written, and a `.value` holding a view writes through."""
    CASES[0] += 1
    dtype, shape, seed = case["dtype"], case["shape"], case["seed"]
    partner_shape, forward, reference = ATTR_OPS[case["op"]]
    x_values = values(seed, shape, dtype)
    tensors = {"x": fa.Parameter(x_values) if case["form"] == "param" else
               fa.tensor(x_values.copy())}
    if partner_shape:
        tensors["p"] = fa.Parameter(values(seed + 1, partner_shape(*shape), dtype))
    # per tensor: the values NumPy computes with, the .grad backward adds to, a viewed array
    state = {name: dict(value=t.value.copy(), grad=np.zeros(t.shape), viewed=None)
             for name, t in tensors.items()}
    params = [t for t in tensors.values() if t.requires_grad]
    stale = sum((fa.sum(t * t) for t in params[1:]), fa.sum(params[0] * params[0])) \
        if case["stale"] and params else None
    copied = []  # assigned arrays fastad must have copied: never written
    for name, attribute, obj in case["assigned"]:
        t = tensors[name]
        accepted = _assign(t, attribute, obj)
        if isinstance(obj, np.ndarray) and (accepted is None or not held_as_is(obj, dtype,
                                                                                 attribute)):
            copied.append((obj, obj.copy()))
        if accepted is not None:
            state[name][attribute] = accepted
            if attribute == "value":
                state[name]["viewed"] = obj if proper(obj, dtype) else None
                if t.requires_grad and stale is not None:   # recorded before: refused
                    expect_one_of(stale.backward, {RuntimeError: ()})
    x, p = tensors["x"], tensors.get("p")
    with np.errstate(all="ignore"):
        out = forward(x, p)
        s = values(seed + 2, out.shape, dtype, positive=True)
        value, dx, dp = reference(state["x"]["value"].astype(np.float64),
                                  None if p is None else state["p"]["value"].astype(np.float64),
                                  s)
        assert_matches(out.value, value, dtype, f"{case['op']} value")
        if not params:
            return
        out.backward(seed=s)
        for name, g in (("x", dx), ("p", dp)):
            if name in tensors and tensors[name].requires_grad:
                state[name]["grad"] = state[name]["grad"] + g
                assert_matches(tensors[name].grad, state[name]["grad"], dtype, f"{name}.grad")
        fa.optim.SGD(params, lr=0.5).step()
        for name, t in tensors.items():
            if t.requires_grad:
                expected = state[name]["value"] - 0.5 * state[name]["grad"].astype(dtype)
                assert_matches(t.value, expected, dtype, f"{name} after the step")
    for assigned, before in copied:
        np.testing.assert_array_equal(assigned, before, err_msg="a copied array was written")
    for name, t in tensors.items():
        if state[name]["viewed"] is not None:
            np.testing.assert_array_equal(state[name]["viewed"], t.value,
                                          err_msg=f"{name}.value's view was not updated")


# --- optimizer hyperparameters and state buffers, changed between steps ----------------------

OPTIMIZERS = {  # name: (class, hyperparameters, state buffer lists)
    "sgd": (fa.optim.SGD, dict(lr=0.1, momentum=0.0, weight_decay=0.01, nesterov=False), ()),
    "sgd-momentum": (fa.optim.SGD, dict(lr=0.1, momentum=0.9, weight_decay=0.01,
                                        nesterov=False), ("momentum_buffers",)),
    "sgd-nesterov": (fa.optim.SGD, dict(lr=0.1, momentum=0.9, weight_decay=0.0,
                                        nesterov=True), ("momentum_buffers",)),
    "adam": (fa.optim.Adam, dict(lr=0.01, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01),
             ("exp_avgs", "exp_avg_sqs")),
}
HYPER_VALUES = {  # hyperparameter: values to set (the constructor says which are valid)
    "lr": [0.0, 0.5, 2, np.float32(0.05), True, -0.1, np.nan, np.inf, "fast", None, [0.1]],
    "momentum": [0.0, 0.5, 0.99, -0.5, np.nan, "fast", None],
    "weight_decay": [0.0, 0.1, -1.0, np.nan, None],
    "nesterov": [True, False, 0, 1],
    "eps": [1e-6, 0.0, -1e-8, np.nan, None],
    "betas": [(0.5, 0.9), (0.0, 0.0), (1.0, 0.9), (0.9, -0.1), (0.9,), None],
}


@st.composite
def optimizer_cases(draw):
    name = draw(st.sampled_from(sorted(OPTIMIZERS)))
    cls, hyper, buffers = OPTIMIZERS[name]
    dtype = draw(dtypes)
    shapes_ = [draw(shapes(1, 2, 1, 4)) for _ in range(2)]
    changeable = sorted(h for h in hyper if h != "momentum" or hyper["momentum"])
    if buffers and draw(st.booleans()):
        which, i = draw(st.sampled_from(buffers)), draw(st.integers(0, 1))
        change_ = ("buffer", which, i, draw(assignments(shapes_[i], dtype)))
    else:
        hyper_name = draw(st.sampled_from(changeable))
        change_ = ("hyper", hyper_name, None, draw(st.sampled_from(HYPER_VALUES[hyper_name])))
    return dict(name=name, dtype=dtype, shapes=shapes_, change=change_, seed=draw(seeds))


def reference_step(name, hyper, state, values_, grads):
    """NumPy's version of one optimizer step (the formulas in fastad.optim's docstrings),
    updating `values_` and `state` in place."""
    for i, (v, g) in enumerate(zip(values_, grads)):
        d = g + hyper["weight_decay"] * v
        if name == "adam":
            beta1, beta2 = hyper["betas"]
            state["steps"][i] += 1
            t = state["steps"][i]
            m = state["exp_avgs"][i] = beta1 * state["exp_avgs"][i] + (1 - beta1) * d
            sq = state["exp_avg_sqs"][i] = beta2 * state["exp_avg_sqs"][i] + (1 - beta2) * d * d
            v -= hyper["lr"] / (1 - beta1 ** t) * m / (np.sqrt(sq) / np.sqrt(1 - beta2 ** t)
                                                      + hyper["eps"])
            continue
        if "momentum_buffers" in state:
            buffers = state["momentum_buffers"]
            buf = buffers[i] = hyper["momentum"] * buffers[i] + d
            d = d + hyper["momentum"] * buf if hyper["nesterov"] else buf
        v -= hyper["lr"] * d


def _constructor_error(cls, params, hyper):
    """The exception type the optimizer's constructor raises for `hyper`, or None."""
    try:
        cls(params, **hyper)
    except (ValueError, TypeError) as e:
        return type(e)
    return None


@given(optimizer_cases())
def prop_optimizer_state(case):
    """Change one hyperparameter or state buffer between two steps: a value the
    constructor would refuse, or a buffer of another dtype, shape or kind, is a clear
    error before any parameter changes; anything else takes effect, as NumPy's formulas
    with the new value say. No kernel ever reads a buffer it was not checked against."""
    CASES[0] += 1
    name, dtype, seed = case["name"], case["dtype"], case["seed"]
    cls, hyper, buffers = OPTIMIZERS[name]
    kind, attribute, i, new = case["change"]
    params = [fa.Parameter(values(seed + k, shape, dtype)) for k, shape in
              enumerate(case["shapes"])]
    grads = [values(seed + 2 + k, shape, dtype) for k, shape in enumerate(case["shapes"])]
    opt = cls(params, **hyper)
    ref_values = [p.value.astype(np.float64) for p in params]
    ref_state = {b: [np.zeros(shape) for shape in case["shapes"]] for b in buffers}
    ref_state["steps"] = [0, 0]
    ref_hyper = dict(hyper)
    with np.errstate(all="ignore"):
        for p, g in zip(params, grads):
            p.grad = g
        opt.step()
        reference_step(name, ref_hyper, ref_state, ref_values, grads)
        before = [p.value.copy() for p in params]
        if kind == "hyper":
            setattr(opt, attribute, new)
            error = _constructor_error(cls, [fa.Parameter(np.ones(1, dtype))],
                                       {**hyper, attribute: new})
            errors = {error: ()} if error else {}
            if not error:
                ref_hyper[attribute] = bool(new) if attribute == "nesterov" else \
                    tuple(map(float, new)) if attribute == "betas" else float(new)
            ambiguous = False
        else:
            getattr(opt, attribute)[i] = new
            errors = assignment_mistakes(new, case["shapes"][i], dtype, "grad")
            ambiguous = not errors and not proper(new, dtype)   # a copy, or an error
            if not errors:
                ref_state[attribute][i] = np.array(new, np.float64)  # (a copy: step updates it)
        if errors:
            expect_one_of(opt.step, {ValueError: (), TypeError: ()})
        else:
            try:
                opt.step()
            except (ValueError, TypeError):
                if not ambiguous:
                    raise
                errors = True
        if errors:
            for k, p in enumerate(params):
                np.testing.assert_array_equal(p.value, before[k], err_msg=f"params[{k}] "
                                              "changed by a step that raised")
            return
        reference_step(name, ref_hyper, ref_state, ref_values, grads)
    for k, p in enumerate(params):
        assert_matches(p.value, ref_values[k], dtype, f"params[{k}] after the second step")


# --- the caller's array object, changed after the forward ------------------------------------

def _held_by_value(X):
    t = fa.Parameter(np.zeros(X.shape, X.dtype.newbyteorder("=")))
    t.value = X
    return t


CALLER_FORMS = {  # how the caller's array X enters the graph, and whether it may be shared
    "tensor": (fa.tensor, True),
    "tensor-requiring-grad": (lambda X: fa.tensor(X, requires_grad=True), True),
    "parameter": (fa.Parameter, False),
    "operand": (lambda X: X, True),
    "value": (_held_by_value, True),
}
CALLER_CHANGES = {
    "shape-reversed": lambda X: setattr(X, "shape", X.shape[::-1]),
    "shape-flat": lambda X: setattr(X, "shape", (X.size,)),
    "dtype-int": lambda X: setattr(X, "dtype", np.dtype(f"i{X.dtype.itemsize}")),
    "dtype-bytes": lambda X: setattr(X, "dtype", np.uint8),
    "strides-zero": lambda X: setattr(X, "strides", (0,) * X.ndim),
    "read-only": lambda X: setattr(X.flags, "writeable", False),
    "write": lambda X: X.__setitem__(Ellipsis, -1.5 * X + 0.25),
}


def change(X, how, changes=CALLER_CHANGES):
    """Apply changes[how] to X; False when NumPy refuses it for X's layout."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # setting strides (NumPy 2.4)
            changes[how](X)
        return True
    except (AttributeError, ValueError, TypeError):
        return False


@st.composite
def caller_cases(draw):
    return dict(dtype=draw(dtypes), shape=(draw(st.integers(1, 4)), draw(st.integers(1, 4))),
                form=draw(st.sampled_from(sorted(CALLER_FORMS))), layout=draw(layouts),
                op=draw(st.sampled_from(sorted(ATTR_OPS))),
                change=draw(st.sampled_from(sorted(CALLER_CHANGES))),
                use_backward=draw(st.booleans()), seed=draw(seeds))


@given(caller_cases())
def prop_caller_arrays(case):
    """What the caller does to its array object after the forward (a new shape, dtype or
    strides, read-only) never reaches the tape: the gradients are those of the forward's
    values. Writes into its memory reach the tape only where fastad shares it."""
    CASES[0] += 1
    dtype, shape, seed = case["dtype"], case["shape"], case["seed"]
    partner_shape, forward, reference = ATTR_OPS[case["op"]]
    X = in_layout(case["layout"], values(seed, shape, dtype))
    X0 = X.astype(dtype)
    make, may_share = CALLER_FORMS[case["form"]]
    operand = make(X)
    leaf = operand if isinstance(operand, fa.Tensor) else None
    shared = may_share and proper(X, dtype)
    if leaf is not None:
        assert leaf.value is not X, "the tensor holds the caller's array object"
        assert np.shares_memory(leaf.value, X) == shared, f"shares memory with\n{X.flags}"
    p = fa.Parameter(values(seed + 1, partner_shape(*shape), dtype)) if partner_shape else None
    with np.errstate(all="ignore"):
        out = forward(operand, p)
        changed = change(X, case["change"])
        if leaf is not None:
            assert (leaf.shape, leaf.dtype) == (shape, dtype), "the change reached the tensor"
        wrt = [t for t in (leaf, p) if t is not None and t.requires_grad]
        s = values(seed + 2, out.shape, dtype, positive=True)
        if changed and case["change"] == "write" and shared:
            # documented sharing: the tensor sees the write; the backward may use it or
            # refuse, but must not crash
            if leaf is not None:
                np.testing.assert_array_equal(leaf.value, X)
            try:
                fa.grad(out, wrt, seed=s) if wrt else None
            except (RuntimeError, ValueError):
                pass
            return
        value, dx, dp = reference(X0.astype(np.float64),
                                  None if p is None else p.value.astype(np.float64), s)
        assert_matches(out.value, value, dtype, f"{case['op']} value")
        if case["use_backward"] and wrt:
            out.backward(seed=s)
            got = [t.grad for t in wrt]
        else:
            got = fa.grad(out, wrt, seed=s) if wrt else []
        expected = {id(leaf): dx, id(p): dp}
        for i, (t, g) in enumerate(zip(wrt, got)):
            assert_matches(g, expected[id(t)], dtype, f"{case['op']}: gradient of operand {i}")
        if leaf is not None:
            np.testing.assert_array_equal(leaf.value, X0, err_msg="the change reached the tensor")


@st.composite
def caller_grad_cases(draw):
    # (not strides-zero: adding into a self-overlapping .grad is undefined in NumPy too)
    changes = sorted(set(CALLER_CHANGES) - {"strides-zero"})
    return dict(dtype=draw(dtypes), shape=(draw(st.integers(1, 4)), draw(st.integers(1, 4))),
                layout=draw(layouts), change=draw(st.sampled_from(changes)),
                before=draw(st.sampled_from(["backward", "step"])), seed=draw(seeds))


@given(caller_grad_cases())
def prop_caller_grads(case):
    """`p.grad = g` may keep g itself, so the caller can still change g's shape, dtype,
    strides or memory: backward then adds into what p.grad reads, and the SGD step uses
    what p.grad reads, or either raises a clear error; neither reads past a buffer, and
    the step never leaves p with another shape or dtype."""
    CASES[0] += 1
    dtype, shape, seed = case["dtype"], case["shape"], case["seed"]
    p = fa.Parameter(values(seed, shape, dtype))
    p.grad = in_layout(case["layout"], values(seed + 1, shape, dtype))
    loss = fa.sum(fa.sigmoid(p))
    y = _sigmoid(p.value.astype(np.float64))
    errors = (ValueError, TypeError, RuntimeError)
    with np.errstate(all="ignore"):
        try:
            if case["before"] == "backward":
                change(p.grad, case["change"])
            read = np.array(p.grad, dtype=np.float64)
            loss.backward()
            assert (p.grad.shape, p.grad.dtype) == (shape, dtype), \
                f"backward left a .grad of {p.grad.dtype} {p.grad.shape}"
            assert_matches(p.grad, read + y * (1 - y), dtype, "p.grad after backward")
            if case["before"] == "step":
                change(p.grad, case["change"])
            read, before = np.array(p.grad, dtype=np.float64), p.value.copy()
            fa.optim.SGD([p], lr=0.5).step()
        except errors:
            return
    assert (p.shape, p.dtype) == (shape, dtype), f"the step made p {p.dtype} {p.shape}"
    assert_matches(p.value, before - 0.5 * read, dtype, "p after the step")


def _label_reference(op, x, y, s):
    """(value, dx) of the label-reading ops for scores x (n, c) and labels y."""
    n, c = x.shape
    rows = np.arange(n)
    if op in ("gather", "getitem"):
        index = (rows, y) if op == "gather" else y
        g = np.zeros_like(x)
        np.add.at(g, index, s)
        return x[index], g
    log_p = _log_softmax(x, -1) if op == "cross_entropy" else x
    picked = np.zeros_like(x)
    picked[rows, y] = 1
    dx = (_softmax(x, -1) - picked) * s / n if op == "cross_entropy" else -picked * s / n
    return -log_p[rows, y].mean(), dx


LABEL_OPS = {  # op: the call with scores x and the caller's label/index array y
    "cross_entropy": lambda x, y: fa.cross_entropy(x, y),
    "nll_loss": lambda x, y: fa.nll_loss(x, y),
    "gather": lambda x, y: x[np.arange(x.shape[0]), y],   # the kernel gather
    "getitem": lambda x, y: x[y],                          # rows, repeated
}
LABEL_CHANGES = {**CALLER_CHANGES,
                 "write": lambda y: y.__setitem__(Ellipsis, np.iinfo(y.dtype).max),
                 "write-negative": lambda y: y.__setitem__(Ellipsis, np.iinfo(y.dtype).min)}


@st.composite
def caller_label_cases(draw):
    n, c = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    op = draw(st.sampled_from(sorted(LABEL_OPS)))
    labels = np.random.default_rng(draw(seeds)).integers(0, n if op == "getitem" else c, n)
    return dict(dtype=draw(dtypes), n=n, c=c, op=op,
                labels=in_layout(draw(layouts), labels.astype(draw(st.sampled_from(
                    [np.int64, np.int32, np.intp, np.uint8])))),
                change=draw(st.sampled_from(sorted(LABEL_CHANGES))), seed=draw(seeds))


@given(caller_label_cases())
def prop_caller_labels(case):
    """Labels and index arrays changed by the caller after the forward (written out of
    range, reshaped, retyped) never reach the backward, whose kernels write at the
    positions they give: the gradients are those of the forward's labels."""
    CASES[0] += 1
    dtype, op, y = case["dtype"], case["op"], case["labels"]
    y0 = y.astype(np.intp)
    x = fa.Parameter(values(case["seed"], (case["n"], case["c"]), dtype))
    x0 = x.value.astype(np.float64)
    out = LABEL_OPS[op](x, y)
    change(y, case["change"], LABEL_CHANGES)
    s = values(case["seed"] + 1, out.shape, dtype, positive=True)
    value, dx = _label_reference(op, x0, y0, s)
    assert_matches(out.value, value, dtype, f"{op} value")
    assert_matches(fa.grad(out, x, seed=s), dx, dtype, f"{op} gradient")


# --- any sequence as an index ----------------------------------------------------------

SEQUENCE_TYPES = (list, tuple, stdarray.array, range, collections.deque)
SEQUENCE_KINDS = {
    "list": list, "tuple": tuple, "deque": collections.deque,
    **{f"array-{code}": functools.partial(stdarray.array, code) for code in "liqb"},
    "nested-list": lambda items: [items, items[::-1]],
}


@st.composite
def index_sequences(draw, n, in_tuple):
    """A sequence of indices into an axis of length n (sometimes out of range or of the
    wrong length), repeats included."""
    kind = draw(st.sampled_from(sorted(set(SEQUENCE_KINDS) - ({"tuple"} if not in_tuple else set()))
                                + ["range", "bools"]))
    if kind == "bools":
        length = draw(st.sampled_from([n, n, n, n + 1, max(n - 1, 0)]))
        items = draw(st.lists(st.booleans(), min_size=length, max_size=length))
        return draw(st.sampled_from([list, collections.deque]))(items)
    wide = draw(st.integers(0, 5)) == 0
    ints = st.integers(-n - 1, n) if wide else st.integers(-n, n - 1) if n else st.just(0)
    if kind == "range":
        return range(draw(ints), draw(ints), draw(st.sampled_from([1, 1, 2, -1, -2])))
    return SEQUENCE_KINDS[kind](draw(st.lists(ints, max_size=5)))


@st.composite
def index_cases(draw):
    x = draw(tensor_operands(draw(shapes(min_dims=1))))
    shape = np.shape(x.plain)
    how = draw(st.sampled_from(["alone", "tuple", "tuple", "rows-and-labels"]))
    if how == "alone":
        return x, draw(index_sequences(shape[0], in_tuple=False))
    if how == "rows-and-labels" and len(shape) == 2:  # the kernel gather, p[arange(n), y]
        rows = draw(st.sampled_from([list, tuple, collections.deque, lambda r: r,
                                     functools.partial(stdarray.array, "l")]))(range(shape[0]))
        return x, (rows, draw(index_sequences(shape[1], in_tuple=True)))
    parts = []
    for axis in range(draw(st.integers(1, len(shape) + 1))):
        n = shape[axis] if axis < len(shape) else 1
        parts.append(draw(st.one_of(
            index_sequences(n, in_tuple=True), index_sequences(n, in_tuple=True),
            st.integers(-n, max(n - 1, 0)), st.slices(max(n, 1)), st.none(),
            st.just(Ellipsis))))
    return x, tuple(parts)


def numpy_index(index):
    """The index with every sequence made an ndarray (an empty one of intp, as NumPy
    reads `[]`): what NumPy itself indexes with."""
    def convert(part):
        if not isinstance(part, SEQUENCE_TYPES):
            return part
        a = np.asarray(part if isinstance(part, (list, tuple, stdarray.array)) else list(part))
        return a.astype(np.intp) if a.size == 0 and a.dtype.kind == "f" else a
    return tuple(map(convert, index)) if isinstance(index, tuple) else convert(index)


@given(index_cases())
def prop_index_sequences(case):
    """x[index] for an index made of lists, tuples, array.arrays, ranges, deques and bool
    lists (nested in tuples with ints, slices, None and ...): NumPy's value, and the
    np.add.at gradient (repeated indices accumulate); NumPy's errors, naming getitem."""
    x, index = case
    shown = repr(index)
    converted = numpy_index(index)
    result, error = _numpy_outcome(lambda: x.plain[converted])

    def reference(s):
        g = np.zeros_like(x.plain)
        np.add.at(g, converted, s)
        return result, [g]

    check_op("getitem", lambda: x.passed[index], [x], reference, x.dtype,
             errors=(error,) if error else ())
    assert repr(index) == shown, f"the index changed: {shown} -> {index!r}"


# --- in-place operators and fa.grad's results --------------------------------------------

INPLACE = {"+=": (operator.iadd, np.add), "-=": (operator.isub, np.subtract),
           "*=": (operator.imul, np.multiply), "/=": (operator.itruediv, np.divide)}
# Augmented assignments outside the contract's four: Python falls back to `t = t ** y`,
# a silent rebind that leaves the parameter unchanged; either update in place or raise.
OTHER_INPLACE = {"**=": (operator.ipow, np.power), "@=": (operator.imatmul, np.matmul)}


# Tensors that share a Parameter's memory without being on its tape: updating one in
# place changes the Parameter, so the tapes that saved the Parameter must refuse to sweep
# (as PyTorch's shared version counter does), unless the update itself is refused.
SHARING_KINDS = {"view": lambda p: p[...], "detached": lambda p: p.detach()}


def _inplace_target(kind, array):
    """(the tensor to update, the Parameter whose tapes it affects or None): a data
    tensor, a Parameter, a result recorded on the tape, an unrecorded one, or a view or
    detached copy of a Parameter made under no_grad."""
    if kind == "data":
        return fa.tensor(array), None
    p = fa.Parameter(array)
    if kind == "param":
        return p, p
    if kind == "result":
        return p * 1.0, None
    with fa.no_grad():
        return (SHARING_KINDS[kind](p), p) if kind in SHARING_KINDS else (p * 1.0, None)


@st.composite
def inplace_cases(draw):
    dtype = draw(dtypes)
    shape = draw(shapes(max_dims=2))
    other_shape = draw(st.sampled_from([shape, shape, shape[1:], (), (2,) + shape, (3,)]))
    other = None if draw(st.integers(0, 9)) == 0 else draw(other_operands(other_shape, dtype))
    kinds = ["data", "param", "param", "result", "unrecorded", *SHARING_KINDS]
    symbols = sorted(INPLACE) * 4 + sorted(OTHER_INPLACE)
    return dict(dtype=dtype, shape=shape, symbol=draw(st.sampled_from(symbols)),
                kind=draw(st.sampled_from(kinds)), no_grad=draw(st.booleans()), other=other,
                stale=draw(st.booleans()),
                array=in_layout(draw(layouts), values(draw(seeds), shape, dtype)))


def inplace_mistakes(case, shape):
    """{exception type: words of its message} the contract calls for (empty: it works)."""
    other, mistakes = case["other"], {}
    if not case["no_grad"] and case["kind"] in ("param", "result"):
        mistakes[RuntimeError] = ("x = x",)
    if other is not None and other.error:
        mixed = {other.dtype, case["dtype"]} == set(FLOATS)
        mistakes[TypeError] = ("float32", "float64") if mixed else ()
    if other is not None and other.plain is not None:
        other_shape = np.shape(other.plain)
        if not _broadcastable(shape, other_shape) or \
                np.broadcast_shapes(shape, other_shape) != shape:
            mistakes[ValueError] = (str(shape), str(other_shape))
    return mistakes


@given(inplace_cases())
def prop_inplace(case):
    """`t op= y` on data tensors, Parameters, results and views of Parameters, under
    no_grad or not, with every kind of operand: .value updated in place and the same
    Tensor returned, or the contract's exception with nothing changed; an updated
    Parameter (directly or through a view) is stamped, so older tapes refuse to sweep."""
    CASES[0] += 1
    dtype, other, kind = case["dtype"], case["other"], case["kind"]
    t, base = _inplace_target(kind, case["array"])
    value, before = t.value, t.value.copy()
    stale = fa.sum(base * base) if base is not None and (case["stale"] or base is not t) \
        else None
    operand = t if other is None else other.passed
    in_place, ufunc = {**INPLACE, **OTHER_INPLACE}[case["symbol"]]
    snapshot = _snapshot([other] if other is not None else [])

    def call():
        with fa.no_grad() if case["no_grad"] else contextlib.nullcontext():
            return in_place(t, operand)

    if case["symbol"] in OTHER_INPLACE:
        _update_or_refuse(call, t, ufunc, other)
        _assert_unmodified(snapshot)
        return
    mistakes = inplace_mistakes(case, t.shape)
    if kind in SHARING_KINDS:  # refusing to update a Parameter's memory is fine too
        mistakes = {**mistakes, RuntimeError: ()} if mistakes else mistakes
    with np.errstate(all="ignore"):
        if mistakes:
            expect_one_of(call, mistakes)
            result = None
        else:
            expected = ufunc(before, before if other is None else other.plain).astype(dtype)
            try:
                result = call()
            except RuntimeError:
                if kind not in SHARING_KINDS:
                    raise
                result = None
        if result is None:
            assert t.value is value
            np.testing.assert_array_equal(t.value, before, err_msg="changed by a refused op")
        else:
            assert result is t, f"{case['symbol']} returned another object: {result!r}"
            assert t.value is value, f"{case['symbol']} replaced .value instead of updating it"
            assert_matches(t.value, expected, dtype, f"{case['symbol']} value")
            if stale is not None:
                expect_one_of(stale.backward, {RuntimeError: ()})
            if kind == "param":  # a new tape sees the new value
                assert_matches(fa.grad(fa.sum(t * t), t), 2 * t.value.astype(np.float64),
                               dtype, "the gradient after the update")
    _assert_unmodified(snapshot)


def _update_or_refuse(call, t, ufunc, other):
    """`t op= y` for an op outside the contract: t itself, updated as NumPy would (the
    result must keep t's shape), or an exception with t unchanged; never another object."""
    value, before = t.value, t.value.copy()
    with np.errstate(all="ignore"):
        try:
            result = call()
        except (TypeError, ValueError, RuntimeError):
            assert t.value is value
            np.testing.assert_array_equal(t.value, before, err_msg="changed by a refused op")
            return
        assert result is t, f"rebound to another object (t was left unchanged): {result!r}"
        expected = ufunc(before, before if other is None else other.plain)
        assert_matches(t.value, expected.astype(t.dtype), t.dtype, "in-place value")


LEAVES = ["w1", "b1", "w2"]
GRAD_NAMES = LEAVES + ["h", "logits"]
ATTACKS = {
    "imul": lambda g: g.__imul__(0),
    "setitem": lambda g: g.__setitem__(Ellipsis, 1),
    "copyto": lambda g: np.copyto(g, 0),
    "ufunc-out": lambda g: np.add(g, 1, out=g),
}


# Ways around the read-only flag: they may raise, or work on an array that is then the
# caller's own; either way a later result must not change.
ESCAPES = {
    "writeable-flag": lambda g: (setattr(g.flags, "writeable", True), g.fill(0)),
    "base": lambda g: g.base.fill(0) if isinstance(g.base, np.ndarray) else None,
}


@st.composite
def grad_result_cases(draw):
    asks = st.tuples(st.just("grad"), st.lists(st.sampled_from(GRAD_NAMES), min_size=1,
                                                max_size=3),
                     st.sampled_from(sorted(ATTACKS) + sorted(ESCAPES)))
    return dict(dtype=draw(dtypes), sizes=tuple(draw(st.integers(1, 4)) for _ in range(4)),
                steps=draw(st.lists(st.one_of(asks, asks, st.just(("backward",))),
                                    min_size=1, max_size=4)))


def _mlp_gradients(t):
    """NumPy's gradients of _grad_graph's loss (cross-entropy of sigmoid(x w1 + b1) w2)."""
    x, w1, b1, w2 = (t[k].value.astype(np.float64) for k in ("x", "w1", "b1", "w2"))
    h = _sigmoid(x @ w1 + b1)
    logits = h @ w2
    n, c = logits.shape
    d_logits = (_softmax(logits, -1) - _onehot(n, c)) / n
    d_h = d_logits @ w2.T
    dz = d_h * h * (1 - h)
    return {"w1": x.T @ dz, "b1": dz.sum(0), "w2": h.T @ d_logits, "h": d_h, "logits": d_logits}


@given(grad_result_cases())
def prop_grad_results(case):
    """Arrays fa.grad returns cannot be written (ValueError), so no later fa.grad or
    backward result changes; .grad arrays filled by backward are the caller's to change."""
    CASES[0] += 1
    dtype = case["dtype"]
    t = _grad_graph(case)
    loss = t["loss"]
    expected = _mlp_gradients(t)
    returned = []  # (name, array) the caller got and could not change
    for step in case["steps"]:
        if step[0] == "backward":   # adds into .grad (a second one on top of the first)
            before = {k: 0 if t[k].grad is None else t[k].grad.copy() for k in LEAVES}
            loss.backward(retain_graph=True)
            for name in LEAVES:
                g = t[name].grad
                assert_matches(g, before[name] + expected[name], dtype, f"{name}.grad")
                g += 1   # the caller's own array (raises if read-only)
            continue
        _, names, attack = step
        got = fa.grad(loss, [t[k] for k in names], retain_graph=True)
        for name, g in zip(names, got):
            assert_matches(g, expected[name], dtype, f"fa.grad of {name}")
            if attack in ESCAPES:
                try:
                    ESCAPES[attack](g)
                except ValueError:
                    returned.append((name, g))
            else:
                expect_one_of(functools.partial(ATTACKS[attack], g), {ValueError: ()})
                returned.append((name, g))
    for name, g in returned:
        assert_matches(g, expected[name], dtype, f"fa.grad of {name}, after the attacks")
    for name in GRAD_NAMES:
        assert_matches(fa.grad(loss, t[name], retain_graph=True), expected[name], dtype,
                       f"a last fa.grad of {name}")

# --- the child's main -----------------------------------------------------------------------

FAMILIES = {
    "unary": [prop_unary, prop_clip],
    "binary": [prop_binary, prop_where],
    "matmul": [prop_matmul],
    "reductions": [prop_reductions],
    "softmax": [prop_softmax],
    "losses": [prop_losses, prop_elementwise_losses],
    "shapes": [prop_shapes],
    "grad": [prop_grad],
    "fan_out": [prop_fan_out, each_consumer_fans_out],
    "attributes": [prop_attributes],
    "optimizer_state": [prop_optimizer_state],
    "caller_arrays": [prop_caller_arrays, prop_caller_labels, prop_caller_grads],
    "index_sequences": [prop_index_sequences],
    "inplace": [prop_inplace, prop_grad_results],
}


def _child_main(family):
    np.seterr(all="ignore")  # NaN, Inf and overflow are what the campaign feeds in
    warnings.simplefilter("ignore", RuntimeWarning)   # e.g. the mean of an empty axis
    failed = False
    for prop in FAMILIES[family]:
        configured = prop if not hasattr(prop, "hypothesis") else settings(
            derandomize=True, database=None, deadline=None,
            max_examples=EXAMPLES[family] // len(FAMILIES[family]) + 1,
            suppress_health_check=list(HealthCheck), print_blob=False)(prop)
        try:
            configured()
        except Exception:  # noqa: BLE001  (report, then run the other properties)
            failed = True
            print(f"FAILED {prop.__name__}:", flush=True)
            traceback.print_exc(file=sys.stdout)
    print(f"{CASES[0]} cases", flush=True)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    _child_main(sys.argv[1])
