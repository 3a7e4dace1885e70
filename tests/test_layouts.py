"""Memory layouts: every op gives the same values and gradients whatever the layout of
its inputs, and never writes into them.

Two ways a strange layout reaches an op:
- at the API boundary, as an ndarray (fa.tensor data, an operand of an op, labels):
  non-contiguous, negative-stride, Fortran-ordered, read-only, byte-swapped, misaligned
  (a bytes buffer at offset 1), broadcast (zero strides);
- inside a graph, as a Tensor whose value is a view made by an op (a transpose, a
  strided or reversed slice), which ops and their backward receive as it is.
Each is checked against the same computation on a C-contiguous copy, for both dtypes,
and for zero-size shapes too. The op cases are derived from every row of the op table
(tests/_op_table.py): every input fastad takes as an ndarray, every constant array a
row passes (labels, conditions, index arrays), and every input as a view of a
Parameter, at the row's shapes and with each of their axis lengths made zero.
"""
import warnings

import numpy as np
import pytest

import fastad as fa
from _layouts import LAYOUTS, VIEWS
from _op_table import FA, OPS, FastadOps, record, resizings, takes_ndarray

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

def broadcast(a):
    """a's first row along its last axis (a's first value, for a vector) repeated over
    a's shape: zero strides, read-only."""
    source = a[(0,) * (a.ndim - 1)] if a.ndim > 1 else a.reshape(-1)[0]
    return np.broadcast_to(source, a.shape)


OPERAND_LAYOUTS = {**{name: make for name, make in LAYOUTS.items() if name != "C"},
                   "broadcast": broadcast}


def _operand_cases():
    for row in OPS:
        for i, shape in enumerate(row.shapes):
            if not takes_ndarray(row, i):
                continue
            for layout in OPERAND_LAYOUTS:
                if layout == "broadcast" and shape == ():
                    continue  # nothing to broadcast
                for dtype in DTYPES:
                    yield pytest.param(row, i, layout, dtype,
                                       id=f"{row.id}-input{i}-{layout}-{np.dtype(dtype).name}")


def _native(a):
    """A C-contiguous, native-order copy of `a` (0-d stays 0-d)."""
    return np.array(a, dtype=a.dtype.newbyteorder("="), order="C")


def _seed_for(out, dtype):
    return np.random.default_rng(3).uniform(0.5, 1.5, out.shape).astype(dtype)


@pytest.mark.parametrize("row, i, layout, dtype", list(_operand_cases()))
def test_ndarray_operand_layouts(row, i, layout, dtype):
    """Input i of the row as an ndarray in `layout` (the other inputs Parameters) gives
    the value and gradients of its C-contiguous copy, and stays as it was."""
    arrays = row.inputs(np.random.default_rng(1), dtype)
    operand = OPERAND_LAYOUTS[layout](arrays[i])
    before, layout_before = operand.copy(), (operand.dtype, operand.strides,
                                             operand.flags.writeable)
    if layout == "broadcast":
        assert 0 in operand.strides and not operand.flags.writeable
    results = []
    for x in (_native(operand), operand):
        params = [fa.Parameter(a) for a in arrays]
        out = row.build(FA, *params[:i], x, *params[i + 1:])
        assert isinstance(out, fa.Tensor), type(out)
        wrt = params[:i] + params[i + 1:]
        grads = fa.grad(out, wrt, seed=_seed_for(out, dtype)) if wrt else []
        results.append((out.value, grads))
        for p, a in zip(params, arrays):
            np.testing.assert_array_equal(p.value, a)
    (value, grads), (ref_value, ref_grads) = results[1], results[0]
    assert value.dtype == dtype and all(g.dtype == dtype for g in grads)
    np.testing.assert_allclose(value, ref_value, **TOL[dtype])
    for g, ref in zip(grads, ref_grads):
        np.testing.assert_allclose(g, ref, **TOL[dtype])
    np.testing.assert_array_equal(operand, before)
    assert (operand.dtype, operand.strides, operand.flags.writeable) == layout_before


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(4,), (3, 4), (2, 3, 4)])
def test_tensor_copies_a_broadcast_array(shape, dtype):
    row = _data(shape[-1:], dtype)
    t = fa.tensor(np.broadcast_to(row, shape))
    assert t.value.flags.c_contiguous and t.value.flags.writeable
    assert not np.shares_memory(t.value, row)
    np.testing.assert_array_equal(t.value, np.broadcast_to(row, shape))


# --- constant arrays (labels, conditions, index arrays) in every layout -----------------------

def _int_layout(convert):
    """A layout for integer arrays (labels, indices); others stay as they are."""
    return lambda a: convert(a) if a.dtype.kind in "iu" else a


CONST_LAYOUTS = {
    **{name: make for name, make in LAYOUTS.items() if name != "C"},
    "int8": _int_layout(lambda y: y.astype(np.int8)),
    "uint16-byte-swapped": _int_layout(lambda y: y.astype(">u2" if y.min() >= 0 else ">i2")),
}


class LaidOut(FastadOps):
    """fastad, with every constant array a row passes laid out as `layout` says; each
    is kept with a copy, to check that nothing wrote into it."""

    def __init__(self, layout):
        self.layout, self.made = layout, []

    def const(self, array):
        if not isinstance(array, np.ndarray):
            return array  # Python and NumPy scalars keep their own typing rules
        laid_out = CONST_LAYOUTS[self.layout](array)
        self.made.append((laid_out, laid_out.copy()))
        return laid_out


def _const_cases():
    for row in OPS:
        consts = record(row)[0].consts
        integer = any(c.dtype.kind in "iu" for c in consts)
        for layout in CONST_LAYOUTS:
            if consts and (integer or layout in LAYOUTS):
                for dtype in DTYPES:
                    yield pytest.param(row, layout, dtype,
                                       id=f"{row.id}-{layout}-{np.dtype(dtype).name}")


@pytest.mark.parametrize("row, layout, dtype", list(_const_cases()))
def test_constant_layouts(row, layout, dtype):
    """The row with its constant arrays laid out gives exactly the value and gradients
    of the row with C-contiguous ones, and leaves them as they were."""
    arrays = row.inputs(np.random.default_rng(1), dtype)
    laid_out = LaidOut(layout)
    results = []
    for F in (FA, laid_out):
        params = [fa.Parameter(a) for a in arrays]
        out = row.build(F, *params)
        results.append([out.value, *fa.grad(out, params, seed=_seed_for(out, dtype))])
    assert laid_out.made
    for got, expected in zip(results[1], results[0]):
        assert got.dtype == dtype
        np.testing.assert_array_equal(got, expected)
    for array, before in laid_out.made:
        np.testing.assert_array_equal(array, before)


# --- every input a view made inside the graph --------------------------------------------------

def _viewed(a, view, rng):
    """(a Parameter, the Tensor the row gets): view(Parameter) has `a`'s values, with
    other values in the gaps; a 0-d input, and view None, is the Parameter itself."""
    if view is None or a.ndim == 0:
        p = fa.Parameter(a)
        return p, p
    make, base_shape = VIEWS[view]
    base = rng.uniform(-2, 2, base_shape(a.shape)).astype(a.dtype)
    make(base)[...] = a
    p = fa.Parameter(base)
    return p, make(p)


def _run_view_row(row, arrays, view, fan_out):
    """(value, the gradient of every Parameter) of sum(row(x...) * seed) [+ the sum of
    exp(x).T for each input x], with each x a view of a Parameter (or the Parameter)."""
    rng = np.random.default_rng(7)
    params, xs = zip(*[_viewed(a, view, rng) for a in arrays])
    before = [p.value.copy() for p in params]
    out = row.build(FA, *xs)
    loss = fa.sum(out * _seed_for(out, out.dtype))
    if fan_out:
        # A second consumer of each x, recorded later, so its contribution (laid out like
        # x, for a transposed x Fortran-ordered) reaches x's adjoint first and the row's
        # backward accumulates into it.
        for x in xs:
            loss = loss + fa.sum(fa.transpose(fa.exp(x)))
    grads = fa.grad(loss, list(params))
    for p, b in zip(params, before):
        np.testing.assert_array_equal(p.value, b)   # nothing wrote into an input
    return out.value, grads, [p.value for p in params]


def _shape_id(shapes):
    return "_".join("x".join(map(str, shape)) or "0d" for shape in shapes)


def _view_cases():
    """Every row x view x dtype, at the row's shapes and at each zero-size resizing
    NumPy computes (unless the row refuses empty inputs: see test_bad_input); and the
    fan-out variant where it matters: a transposed view (the other consumer's
    contribution is then Fortran-ordered) or a reversed one, on the row's shapes."""
    for row in OPS:
        shapes_list = [row.shapes] + ([] if row.refuses_empty else resizings(row, 0))
        for shapes in shapes_list:
            for view in VIEWS:
                for dtype in DTYPES:
                    fan_outs = [False]
                    if shapes is row.shapes and view in ("transposed", "negative-strides"):
                        fan_outs.append(True)
                    for fan_out in fan_outs:
                        case_id = f"{row.id}-{view}-{_shape_id(shapes)}-{np.dtype(dtype).name}"
                        yield pytest.param(row, shapes, view, dtype, fan_out,
                                           id=case_id + ("-fan-out" if fan_out else ""))


@pytest.mark.parametrize("row, shapes, view, dtype, fan_out", list(_view_cases()))
def test_view_inputs(row, shapes, view, dtype, fan_out):
    """row(views of Parameters) has the value of row(C-contiguous Parameters), and the
    gradient reaching each Parameter is the copy's gradient in the view's positions
    (zeros elsewhere); with fan_out, another consumer's contribution is added first."""
    arrays = row.inputs(np.random.default_rng(11), dtype, shapes)
    with warnings.catch_warnings():                # the mean of an empty axis is NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        value, grads, bases = _run_view_row(row, arrays, view, fan_out)
        ref_value, ref_grads, _ = _run_view_row(row, arrays, None, fan_out=False)
    assert value.dtype == dtype
    np.testing.assert_allclose(value, ref_value, **TOL[dtype])
    for i, (a, g, ref_g, base) in enumerate(zip(arrays, grads, ref_grads, bases)):
        if fan_out:
            ref_g = ref_g + np.exp(a)
        expected = ref_g
        if a.ndim:
            expected = np.zeros_like(base)
            VIEWS[view][0](expected)[...] = ref_g
        assert g.dtype == dtype
        np.testing.assert_allclose(g, expected, **TOL[dtype],
                                   err_msg=f"gradients of input {i} differ")
