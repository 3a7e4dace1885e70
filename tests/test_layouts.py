"""Memory layouts: every op gives the same values and gradients whatever the layout of
its inputs, and never writes into them.

Two ways a strange layout reaches an op:
- at the API boundary, as an ndarray (fa.tensor data, an operand of an op, labels):
  non-contiguous, negative-stride, Fortran-ordered, read-only, byte-swapped, misaligned
  (a bytes buffer at offset 1), broadcast (zero strides);
- inside a graph, as a Tensor whose value is a view made by an op (a transpose, a
  strided or reversed slice), which ops and their backward receive as it is.
Each is checked against the same computation on a C-contiguous copy, for both dtypes,
and for zero-size shapes too.
"""
import warnings

import numpy as np
import pytest

import fastad as fa
from _layouts import LAYOUTS

DTYPES = [np.float32, np.float64]
TOL = {np.float32: dict(rtol=2e-5, atol=1e-6), np.float64: dict(rtol=1e-12, atol=1e-14)}


# --- ndarray layouts (tests/_layouts.py) ----------------------------------------------

def test_layout_helpers_make_what_they_say():
    a = np.arange(12.0).reshape(3, 4)
    made = {name: make(a) for name, make in LAYOUTS.items()}
    for name, m in made.items():
        np.testing.assert_array_equal(m, a, err_msg=name)
    assert made["fortran"].flags.f_contiguous and not made["fortran"].flags.c_contiguous
    assert not made["strided"].flags.c_contiguous and not made["strided"].flags.f_contiguous
    assert all(s < 0 for s in made["negative-strides"].strides)
    assert not made["read-only"].flags.writeable
    assert not made["byte-swapped"].dtype.isnative
    assert not made["misaligned"].flags.aligned


def _data(shape, dtype, seed=0, positive=False):
    rng = np.random.default_rng(seed)
    if positive:
        return rng.uniform(0.5, 2.0, shape).astype(dtype)
    return rng.uniform(-2.0, 2.0, shape).astype(dtype)


# --- fa.tensor and fa.Parameter: share or copy ---------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_tensor_shares_only_proper_arrays_and_parameter_always_copies(layout, dtype):
    data = LAYOUTS[layout](_data((3, 4), dtype))
    before = data.copy()
    for t in (fa.tensor(data), fa.Parameter(data)):
        v = t.value
        assert v.dtype == dtype and v.flags.c_contiguous and v.flags.aligned
        assert v.flags.writeable and v.dtype.isnative
        np.testing.assert_array_equal(v, before)
    shared = layout == "C"
    assert np.shares_memory(fa.tensor(data).value, data) == shared
    assert not np.shares_memory(fa.Parameter(data).value, data)
    # an update to the parameter never reaches the caller's array
    p = fa.Parameter(data)
    p.value -= 1
    np.testing.assert_array_equal(data, before)


@pytest.mark.parametrize("data, dtype, expected", [
    (np.arange(6, dtype=np.int32).reshape(2, 3).T, None, np.float64),
    (np.arange(6, dtype=np.int64)[::-2], np.float32, np.float32),
    (np.array([True, False, True]), None, np.float64),
    (np.arange(4, dtype=np.float16)[::-1], None, np.float64),
    (np.arange(4, dtype=">i4"), None, np.float64),
    (np.arange(6, dtype=np.float64).reshape(2, 3), np.float32, np.float32),
    ([[1, 2], [3, 4]], None, np.float64),
], ids=["int32-transposed", "int64-reversed-to-f32", "bool", "float16-reversed",
        "big-endian-int", "f64-to-f32", "nested-list"])
def test_tensor_converts_other_real_data(data, dtype, expected):
    before = np.array(data, copy=True)
    t = fa.tensor(data, dtype=dtype)
    assert t.dtype == expected and t.value.flags.c_contiguous and t.value.flags.writeable
    np.testing.assert_array_equal(t.value, np.asarray(before, dtype=expected))
    np.testing.assert_array_equal(np.asarray(data), before)


# --- ndarray operands in every layout ------------------------------------------------------

# (name, fn(p, a) with p a Parameter and a the ndarray operand, shape of p, shape of a,
#  positive data)
OPERAND_OPS = [
    ("add", lambda p, a: p + a, (3, 4), (3, 4), False),
    ("add-row", lambda p, a: p + a, (3, 4), (4,), False),
    ("add-reflected", lambda p, a: a + p, (4,), (3, 4), False),
    ("sub", lambda p, a: a - p, (3, 4), (3, 4), False),
    ("mul-broadcast", lambda p, a: p * a, (3, 1), (3, 4), False),
    ("div", lambda p, a: p / a, (3, 4), (3, 4), True),
    ("rdiv", lambda p, a: a / p, (3, 4), (3, 4), True),
    ("pow-exponent", lambda p, a: fa.pow(p, a), (3, 4), (3, 4), True),
    ("matmul-rhs", lambda p, a: p @ a, (3, 4), (4, 5), False),
    ("matmul-lhs", lambda p, a: a @ p, (4, 2), (3, 4), False),
    ("matmul-vec", lambda p, a: p @ a, (3, 4), (4,), False),
    ("matmul-batched", lambda p, a: fa.matmul(a, p), (4, 2), (2, 3, 4), False),
    ("where-cond", lambda p, a: fa.where(a > 0, p, -p), (3, 4), (3, 4), False),
    ("where-operand", lambda p, a: fa.where(np.eye(3, 4) > 0, p, a), (3, 4), (3, 4), False),
    ("concatenate", lambda p, a: fa.concatenate([p, a], axis=0), (3, 4), (2, 4), False),
    ("cross_entropy-labels-as-scores", lambda p, a: fa.cross_entropy(p @ a, [0, 2, 1]),
     (3, 4), (4, 3), False),
]


def _ids(table):
    return [row[0] for row in table]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", [name for name in LAYOUTS if name != "C"])
@pytest.mark.parametrize("name, fn, p_shape, a_shape, positive", OPERAND_OPS,
                         ids=_ids(OPERAND_OPS))
def test_ndarray_operand_layouts(name, fn, p_shape, a_shape, positive, layout, dtype):
    a_plain = _data(a_shape, dtype, seed=1, positive=positive)
    a = LAYOUTS[layout](a_plain)
    a_before, a_layout = a.copy(), (a.dtype, a.strides, a.flags.writeable)
    p0 = _data(p_shape, dtype, positive=positive)
    values, grads = [], []
    for operand in (a_plain, a):
        p = fa.Parameter(p0)
        out = fn(p, operand)
        values.append(out.value)
        grads.append(fa.grad(fa.sum(out), p))
        np.testing.assert_array_equal(p.value, p0)
    assert values[1].dtype == dtype and grads[1].dtype == dtype
    np.testing.assert_allclose(values[1], values[0], **TOL[dtype])
    np.testing.assert_allclose(grads[1], grads[0], **TOL[dtype])
    np.testing.assert_array_equal(a, a_before)
    assert (a.dtype, a.strides, a.flags.writeable) == a_layout


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name, fn, p_shape, a_shape, positive", OPERAND_OPS,
                         ids=_ids(OPERAND_OPS))
def test_broadcast_operands(name, fn, p_shape, a_shape, positive, dtype):
    """A broadcast ndarray (zero strides, read-only) works like its C-contiguous copy."""
    source = a_shape[-1:] if len(a_shape) > 1 else ()     # a row, or one value
    row = _data(source, dtype, seed=1, positive=positive)
    a = np.broadcast_to(row, a_shape)
    assert 0 in a.strides and not a.flags.writeable
    p0 = _data(p_shape, dtype, positive=positive)
    results = []
    for operand in (np.array(a), a):
        p = fa.Parameter(p0)
        out = fn(p, operand)
        results.append((out.value, fa.grad(fa.sum(out), p)))
    for got, expected in zip(results[1], results[0]):
        np.testing.assert_allclose(got, expected, **TOL[dtype])
    np.testing.assert_array_equal(row, _data(source, dtype, seed=1, positive=positive))
    t = fa.tensor(a)
    assert t.value.flags.c_contiguous and t.value.flags.writeable
    assert not np.shares_memory(t.value, row)


LABEL_LAYOUTS = {
    **{name: LAYOUTS[name] for name in ("strided", "negative-strides", "read-only",
                                        "byte-swapped", "misaligned")},
    "int8": lambda y: y.astype(np.int8),
    "uint16-byte-swapped": lambda y: y.astype(">u2"),
}
LABEL_OPS = {
    "cross_entropy": lambda p, y: fa.cross_entropy(p, y),
    "cross_entropy-none": lambda p, y: fa.cross_entropy(p, y, reduction="none"),
    "nll_loss": lambda p, y: fa.nll_loss(fa.log_softmax(p), y, reduction="sum"),
    "gather": lambda p, y: p[np.arange(len(y)), y],
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", LABEL_LAYOUTS)
@pytest.mark.parametrize("op", LABEL_OPS)
def test_label_layouts(op, layout, dtype):
    y_plain = np.array([3, 0, 4, 4, 1, 2], dtype=np.int64)
    y = LABEL_LAYOUTS[layout](y_plain)
    y_before = y.copy()
    p0 = _data((6, 5), dtype)
    results = []
    for labels in (y_plain, y):
        p = fa.Parameter(p0)
        out = LABEL_OPS[op](p, labels)
        results.append((out.value, fa.grad(fa.sum(out), p)))
    for got, expected in zip(results[1], results[0]):
        np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(y, y_before)


# --- views made inside the graph -----------------------------------------------------------

# Each view is an indexing expression that works on ndarrays and Tensors alike; the
# Parameter holds a `base` array of which view(base) has the test's values, with other
# values in the gaps.
VIEWS = {
    "transposed": lambda t: t.T,                       # Fortran-ordered
    "strided": lambda t: t[:, ::2],
    "row-strided": lambda t: t[::3],
    "negative-strides": lambda t: t[::-1, ::-1],
    "offset-slice": lambda t: t[1:, 2:],
}
BASE_SHAPES = {
    "transposed": lambda m, n: (n, m),
    "strided": lambda m, n: (m, 2 * n),
    "row-strided": lambda m, n: (3 * m, n),
    "negative-strides": lambda m, n: (m, n),
    "offset-slice": lambda m, n: (m + 1, n + 2),
}


def _base_for(view, values, rng):
    base = rng.uniform(-2, 2, BASE_SHAPES[view](*values.shape)).astype(values.dtype)
    VIEWS[view](base)[...] = values
    return base


def _constants(dtype):
    """A factory of Parameters by name and shape, the same values for the same key."""
    def const(name, shape):
        seed = [ord(ch) for ch in name] + list(shape)
        return fa.Parameter(np.random.default_rng(seed).uniform(0.5, 1.5, shape).astype(dtype))
    return const


LABELS = np.array([1, 0, 3, 2, 0, 3, 1, 2])

# (name, fn(x, const), positive inputs only, works on zero-size inputs)
VIEW_OPS = [
    ("matmul-lhs", lambda x, c: x @ c("w", (x.shape[1], 3)), False, True),
    ("matmul-rhs", lambda x, c: c("w", (3, x.shape[0])) @ x, False, True),
    ("matmul-vec", lambda x, c: x @ c("v", (x.shape[1],)), False, True),
    ("matmul-self", lambda x, c: x.T @ x, False, True),
    ("add-bias", lambda x, c: x + c("b", (x.shape[1],)), False, True),
    ("add-as-bias", lambda x, c: c("m", (2,) + x.shape[1:]) + x[0], False, False),
    ("add", lambda x, c: x + c("a", x.shape), False, True),
    ("sub", lambda x, c: c("a", x.shape) - x, False, True),
    ("mul", lambda x, c: x * c("a", x.shape), False, True),
    ("div", lambda x, c: c("a", x.shape) / x, True, True),
    ("pow", lambda x, c: x ** 1.5, True, True),
    ("neg", lambda x, c: -x, False, True),
    ("exp", lambda x, c: fa.exp(x), False, True),
    ("log", lambda x, c: fa.log(x), True, True),
    ("sqrt", lambda x, c: fa.sqrt(x), True, True),
    ("abs", lambda x, c: fa.abs(x), False, True),
    ("sigmoid", lambda x, c: fa.sigmoid(x), False, True),
    ("tanh", lambda x, c: fa.tanh(x), False, True),
    ("relu", lambda x, c: fa.relu(x), False, True),
    ("softmax", lambda x, c: fa.softmax(x), False, True),
    ("softmax-axis0", lambda x, c: fa.softmax(x, axis=0), False, True),
    ("log_softmax", lambda x, c: fa.log_softmax(x), False, True),
    ("log_softmax-axis0", lambda x, c: fa.log_softmax(x, axis=0), False, True),
    ("log-of-softmax", lambda x, c: fa.log(fa.softmax(x)), False, True),
    ("sum", lambda x, c: fa.sum(x), False, True),
    ("sum-axis0", lambda x, c: fa.sum(x, axis=0), False, True),
    ("mean-keepdims", lambda x, c: fa.mean(x, axis=1, keepdims=True), False, True),
    ("max", lambda x, c: fa.max(x), False, False),
    ("max-axis0", lambda x, c: fa.max(x, axis=0), False, False),
    ("reshape", lambda x, c: x.reshape(-1), False, True),
    ("transpose", lambda x, c: x.T, False, True),
    ("concatenate", lambda x, c: fa.concatenate([x, c("a", x.shape)], axis=1), False, True),
    ("where", lambda x, c: fa.where(np.indices(x.shape).sum(0) % 2 == 0, x, -2 * x), False,
     True),
    ("getitem-slice", lambda x, c: x[1:, ::-2], False, True),
    ("getitem-int-array", lambda x, c: x[np.array([0, 2, 0])], False, False),
    ("gather", lambda x, c: x[np.arange(x.shape[0]), LABELS[:x.shape[0]]], False, False),
    ("cross_entropy", lambda x, c: fa.cross_entropy(x, LABELS[:x.shape[0]]), False, False),
    ("cross_entropy-none",
     lambda x, c: fa.cross_entropy(x, LABELS[:x.shape[0]], reduction="none"), False, False),
    ("nll_loss", lambda x, c: fa.nll_loss(x, LABELS[:x.shape[0]], reduction="sum"), False,
     False),
    ("dot", lambda x, c: fa.dot(x, c("w", (x.shape[1], 3))), False, True),
    ("square", lambda x, c: fa.square(x), False, True),
    ("log1p", lambda x, c: fa.log1p(x), True, True),
    ("clip", lambda x, c: fa.clip(x, -0.5, 0.5), False, True),
    ("maximum", lambda x, c: fa.maximum(x, c("a", x.shape)), False, True),
    ("minimum-row", lambda x, c: fa.minimum(c("b", (x.shape[1],)), x), False, True),
    ("min-axis0", lambda x, c: fa.min(x, axis=0), False, False),
    ("stack", lambda x, c: fa.stack([x, c("a", x.shape)], axis=1), False, True),
    ("mse_loss", lambda x, c: fa.mse_loss(x, c("a", x.shape), reduction="none"), False,
     False),
    ("binary_cross_entropy_with_logits",
     lambda x, c: fa.binary_cross_entropy_with_logits(x, c("a", x.shape), reduction="sum"),
     False, False),
]
SHAPES = {"4x5": (4, 5), "0x5": (0, 5), "4x0": (4, 0)}


def _run_view_op(fn, x_values, view, dtype, fan_out):
    """(value, gradient with respect to the Parameter under the view) of
    sum(fn(x) * seed) [+ sum(exp(x).T)], with x = view(Parameter) or a plain Parameter."""
    const = _constants(dtype)
    rng = np.random.default_rng(7)
    if view is None:
        p = fa.Parameter(x_values)
        x = p
    else:
        p = fa.Parameter(_base_for(view, x_values, rng))
        x = VIEWS[view](p)
    p_before = p.value.copy()
    out = fn(x, const)
    seed = np.random.default_rng(3).uniform(0.5, 1.5, out.shape).astype(dtype)
    loss = fa.sum(out * seed)
    if fan_out:
        # A second consumer of x, recorded later, so its contribution (laid out like x,
        # for a transposed x Fortran-ordered) reaches x's adjoint first and fn's backward
        # accumulates into it.
        loss = loss + fa.sum(fa.transpose(fa.exp(x)))
    g = fa.grad(loss, p)
    np.testing.assert_array_equal(p.value, p_before)   # nothing wrote into the input
    return out.value, g, p_before


def _view_cases():
    """Every op x view x shape x dtype, and the fan-out variant where it matters: a
    transposed view (the other consumer's contribution is then Fortran-ordered) or a
    reversed one, on the non-empty shape."""
    for name, fn, positive, zero_size_ok in VIEW_OPS:
        for view in VIEWS:
            for shape_id, shape in SHAPES.items():
                if 0 in shape and not zero_size_ok:
                    continue   # these raise on zero-size input (see test_bad_input)
                for dtype in DTYPES:
                    fan_outs = [False]
                    if 0 not in shape and view in ("transposed", "negative-strides"):
                        fan_outs.append(True)
                    for fan_out in fan_outs:
                        case_id = f"{name}-{view}-{shape_id}-{np.dtype(dtype).name}"
                        yield pytest.param(fn, positive, view, shape, dtype, fan_out,
                                           id=case_id + ("-fan-out" if fan_out else ""))


@pytest.mark.parametrize("fn, positive, view, shape, dtype, fan_out", list(_view_cases()))
def test_view_inputs(fn, positive, view, shape, dtype, fan_out):
    """op(view of a Parameter) has the value of op(C-contiguous copy), and the gradient
    reaching the Parameter is the copy's gradient in the view's positions (zeros
    elsewhere); with fan_out, another consumer's contribution is added first."""
    x_values = _data(shape, dtype, seed=11, positive=positive)
    with warnings.catch_warnings():                # the mean of an empty axis is NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        value, g, base = _run_view_op(fn, x_values, view, dtype, fan_out)
        ref_value, ref_g, _ = _run_view_op(fn, x_values, None, dtype, fan_out=False)
    if fan_out:
        ref_g = ref_g + np.exp(x_values)
    expected_g = np.zeros_like(base)
    VIEWS[view](expected_g)[...] = ref_g
    assert value.dtype == dtype and g.dtype == dtype
    np.testing.assert_allclose(value, ref_value, **TOL[dtype])
    np.testing.assert_allclose(g, expected_g, **TOL[dtype], err_msg="gradients differ")
