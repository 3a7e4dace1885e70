"""Every op from one table (tests/_op_table.py).

Each row gets, automatically:

- a float64 `fa.gradcheck` (of the output weighted by fixed random numbers, so that
  outputs whose plain sum is constant, like softmax, still check something);
- value and gradients (for a random seed) against PyTorch, in float32 and float64;
- the value against a plain-NumPy reference;
- result and gradient dtypes equal to the input dtype, values and gradients ndarrays;
- nothing recorded for inputs that need no gradient (or under no_grad), while the
  result still remembers its op;
- for a row with a reference `vjp`, that vjp checked against fastad's gradient.

A new op gets all of these by adding one row; test_op_coverage.py fails until every
public op has one.
"""
import numpy as np
import pytest

import fastad as fa
from _op_table import FA, OPS, NumpyOps, TorchOps

by_row = pytest.mark.parametrize("row", OPS, ids=[row.id for row in OPS])


def _seed(rng, shape, dtype):
    return np.asarray(rng.standard_normal(shape), dtype=dtype)


@by_row
def test_gradcheck_float64(row, rng):
    tensors = [fa.tensor(x, requires_grad=True) for x in row.inputs(rng, np.float64)]
    with fa.no_grad():
        weights = _seed(rng, row.build(FA, *tensors).shape, np.float64)
    assert fa.gradcheck(lambda *xs: row.build(FA, *xs) * weights, tensors)


@by_row
def test_matches_torch(row, dtype, rng, torch, assert_close):
    arrays = row.inputs(rng, dtype)
    ours = [fa.tensor(x, requires_grad=True) for x in arrays]
    theirs = [torch.tensor(x, requires_grad=True) for x in arrays]
    out = row.build(FA, *ours)
    expected = row.build(TorchOps(torch), *theirs)
    assert out.shape == tuple(expected.shape)
    assert_close(out.value, expected.detach().numpy(), dtype)

    seed = _seed(rng, out.shape, dtype)
    grads = fa.grad(out, ours, seed=seed)
    expected_grads = torch.autograd.grad(expected, theirs, grad_outputs=torch.from_numpy(seed))
    for i, (g, e) in enumerate(zip(grads, expected_grads)):
        assert g.shape == arrays[i].shape, f"input {i}"
        assert_close(g, e.numpy(), dtype)


@by_row
def test_value_matches_numpy(row, dtype, rng, assert_close):
    arrays = row.inputs(rng, dtype)
    out = row.build(FA, *[fa.tensor(x) for x in arrays])
    with np.errstate(divide="raise", invalid="raise", over="raise"):
        expected = row.build(NumpyOps, *[x.astype(np.float64) for x in arrays])
    assert out.shape == np.shape(expected)
    assert_close(out.value, expected, dtype)


@by_row
def test_dtype_is_kept(row, dtype, rng):
    tensors = [fa.tensor(x, requires_grad=True) for x in row.inputs(rng, dtype)]
    out = row.build(FA, *tensors)
    assert isinstance(out.value, np.ndarray), type(out.value)
    assert out.dtype == dtype
    grads = fa.grad(out, tensors, seed=np.ones(out.shape, dtype))
    for i, (g, t) in enumerate(zip(grads, tensors)):
        assert isinstance(g, np.ndarray), f"input {i}: {type(g)}"
        assert (g.dtype, g.shape) == (dtype, t.shape), f"input {i}"


@by_row
def test_records_nothing_without_grad(row, rng):
    arrays = row.inputs(rng, np.float64)
    recorded = row.build(FA, *[fa.tensor(x, requires_grad=True) for x in arrays])
    assert recorded._node is not None and recorded.requires_grad
    assert recorded._made_by.op_name == row.op

    untracked = row.build(FA, *[fa.tensor(x) for x in arrays])
    with fa.no_grad():
        under_no_grad = row.build(FA, *[fa.tensor(x, requires_grad=True) for x in arrays])
    for out in (untracked, under_no_grad):
        assert out._node is None and not out.requires_grad
        assert out._made_by.op_name == row.op
        np.testing.assert_array_equal(out.value, recorded.value)


# --- the special points the table stays away from ----------------------------------------

WITH_VJP = [row for row in OPS if row.vjp is not None]


@pytest.mark.parametrize("row", WITH_VJP, ids=[row.id for row in WITH_VJP])
def test_reference_vjp_is_the_gradient(row, dtype, rng, assert_close):
    """A row's NumPy vjp (the campaign's reference at NaN, Inf and huge values) is its
    gradient, on the row's own inputs."""
    assert len(row.shapes) == 1, "a reference vjp is for one-input rows"
    (x,) = row.inputs(rng, dtype)
    t = fa.tensor(x, requires_grad=True)
    out = row.build(FA, t)
    seed = _seed(rng, out.shape, dtype)
    y = row.build(NumpyOps, x.astype(np.float64))
    assert_close(fa.grad(out, t, seed=seed), row.vjp(x.astype(np.float64), y, seed), dtype)

@pytest.mark.parametrize("op, expected_grad", [
    (fa.relu, [0.0, 0.0, 0.0, 1.0, 1.0]),
    (fa.abs, [-1.0, -1.0, 0.0, 1.0, 1.0]),
])
def test_kink_at_zero_has_zero_gradient(op, expected_grad, dtype):
    x = fa.tensor(np.array([-2.0, -0.5, 0.0, 0.5, 3.0], dtype), requires_grad=True)
    np.testing.assert_array_equal(fa.grad(fa.sum(op(x)), x), expected_grad)


MAX_TIES = [
    # (x, axis, keepdims, gradient of sum(max)): tied maxima share the gradient equally
    ([[1, 3, 3], [2, 2, 2]], 1, False, [[0, 1 / 2, 1 / 2], [1 / 3, 1 / 3, 1 / 3]]),
    ([[1, 3], [3, 0]], None, False, [[0, 1 / 2], [1 / 2, 0]]),
    ([[5, 1], [5, 5]], 0, True, [[1 / 2, 0], [1 / 2, 1]]),
    ([[[4, 4], [2, 1]], [[4, 0], [2, 2]]], (0, 2), False, [[[1 / 3, 1 / 3], [1 / 3, 0]],
                                                          [[1 / 3, 0], [1 / 3, 1 / 3]]]),
]


@pytest.mark.parametrize("op, sign", [("max", 1), ("min", -1)])
@pytest.mark.parametrize("x, axis, keepdims, expected", MAX_TIES,
                         ids=["axis1", "all", "axis0_keepdims", "tuple_axes"])
def test_max_ties_share_gradient(op, sign, x, axis, keepdims, expected, dtype, assert_close):
    """min's ties are max's on the negated data."""
    t = fa.tensor(sign * np.array(x, dtype), requires_grad=True)
    g = fa.grad(fa.sum(getattr(fa, op)(t, axis=axis, keepdims=keepdims)), t)
    assert g.dtype == dtype
    assert_close(g, expected, dtype)


# Points where a, b or x sit exactly on a tie or a boundary, and NaN: PyTorch decides.
TIE_A = np.array([[1.0, 2.0, 3.0, np.nan, 0.0], [-1.0, 5.0, 5.0, 2.0, np.nan]])
TIE_B = np.array([1.0, 3.0, 2.0, 1.0, np.nan])
AT_BOUNDS = np.array([-2.0, -1.0, -0.5, 0.0, 1.5, 2.0, 3.0, np.nan])


def _against_torch(torch, build, torch_build, arrays, dtype):
    ours = [fa.tensor(a.astype(dtype), requires_grad=True) for a in arrays]
    theirs = [torch.tensor(a.astype(dtype), requires_grad=True) for a in arrays]
    out, expected = build(*ours), torch_build(*theirs)
    seed = np.arange(1.0, out.size + 1, dtype=dtype).reshape(out.shape)
    np.testing.assert_array_equal(out.value, expected.detach().numpy())
    grads = fa.grad(out, ours, seed=seed)
    for g, e in zip(grads, torch.autograd.grad(expected, theirs, torch.from_numpy(seed))):
        np.testing.assert_array_equal(g, e.numpy())


@pytest.mark.parametrize("op", ["maximum", "minimum"])
def test_maximum_minimum_ties_and_nan_follow_torch(op, dtype, torch):
    """Ties split the gradient half/half (broadcast ties summed back), NaN passes it to both."""
    _against_torch(torch, getattr(fa, op), getattr(torch, op), [TIE_A, TIE_B], dtype)


@pytest.mark.parametrize("lo, hi", [(-1.0, 2.0), (-1.0, None), (None, 2.0), (2.0, -1.0),
                                    (0.0, 0.0), (-0.5, np.inf)])
def test_clip_boundaries_follow_torch_clamp(lo, hi, dtype, torch):
    """At x == lo or x == hi the gradient passes (torch.clamp); lo > hi gives hi, gradient 0."""
    _against_torch(torch, lambda x: fa.clip(x, lo, hi), lambda x: torch.clamp(x, lo, hi),
                   [AT_BOUNDS], dtype)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_bce_with_logits_is_stable_for_huge_logits(reduction, dtype, torch, assert_close):
    logits = np.array([1e4, -1e4, 1e4, -1e4, 50.0, -50.0, 0.0])
    targets = np.array([0.0, 1.0, 1.0, 0.0, 0.3, 0.7, 0.5])
    x = fa.tensor(logits.astype(dtype), requires_grad=True)
    t = fa.tensor(targets.astype(dtype), requires_grad=True)
    tx = torch.tensor(logits.astype(dtype), requires_grad=True)
    tt = torch.tensor(targets.astype(dtype), requires_grad=True)
    out = fa.binary_cross_entropy_with_logits(x, t, reduction=reduction)
    expected = torch.nn.functional.binary_cross_entropy_with_logits(tx, tt, reduction=reduction)
    assert np.isfinite(out.value).all()
    assert_close(out.value, expected.detach().numpy(), dtype)
    seed = np.ones(out.shape, dtype)
    for g, e in zip(fa.grad(out, [x, t], seed=seed),
                    torch.autograd.grad(expected, [tx, tt], torch.from_numpy(seed))):
        assert np.isfinite(g).all()
        assert_close(g, e.numpy(), dtype)


# Each Tensor method is its op (same value, same op remembered, same gradient), with its
# arguments passed on: the arguments differ from the defaults where there are any.
METHODS = [("exp", (), {}), ("log", (), {}), ("log1p", (), {}), ("sqrt", (), {}),
           ("square", (), {}), ("abs", (), {}), ("sigmoid", (), {}), ("tanh", (), {}),
           ("relu", (), {}), ("softmax", (0,), {"axis": 0}),
           ("log_softmax", (0,), {"axis": 0}), ("max", (0,), {"axis": 0}),
           ("min", (1,), {"axis": 1}), ("min", (0,), {"axis": 0, "keepdims": True}),
           ("clip", (0.8, 1.5), {"lo": 0.8, "hi": 1.5}), ("clip", (None, 1.2), {"hi": 1.2})]


@pytest.mark.parametrize("name, args, kwargs", METHODS, ids=[f"{m[0]}{m[1]}" for m in METHODS])
def test_tensor_methods_are_the_ops(name, args, kwargs, rng):
    data = rng.uniform(0.5, 2.0, (3, 4))
    x = fa.tensor(data, requires_grad=True)
    method = getattr(x, name)(*args, **{k: v for k, v in kwargs.items() if k == "keepdims"})
    function = getattr(fa, name)(x, **kwargs)
    assert method._made_by.op_name == function._made_by.op_name
    np.testing.assert_array_equal(method.value, function.value)
    seed = rng.standard_normal(method.shape)
    np.testing.assert_array_equal(fa.grad(method, x, seed=seed), fa.grad(function, x, seed=seed))


def test_argmax_method(rng):
    data = rng.standard_normal((4, 6))
    np.testing.assert_array_equal(fa.tensor(data).argmax(1), np.argmax(data, axis=1))
    np.testing.assert_array_equal(fa.tensor(data).argmax(), np.argmax(data))


@pytest.mark.parametrize("axis", [None, 0, 1, -1])
def test_argmax_returns_ndarray(axis, rng):
    data = rng.standard_normal((4, 6))
    x = fa.tensor(data, requires_grad=True)
    result = fa.argmax(x, axis=axis)
    assert isinstance(result, np.ndarray), type(result)
    np.testing.assert_array_equal(result, np.argmax(data, axis=axis))


@pytest.mark.parametrize("call", [
    lambda x: fa.pow(x, 3), lambda x: fa.add(2.5, x), lambda x: fa.mul(x, np.float64(2)),
    lambda x: fa.sub(np.float32(1), x)], ids=["pow", "scalar_first", "numpy_scalar",
                                             "numpy_scalar_first"])
def test_a_scalar_beside_an_array_takes_its_dtype(call, dtype):
    """With no Tensor operand, a scalar follows the array, as it follows a Tensor."""
    x = np.linspace(0.5, 2, 4).astype(dtype)
    assert call(x).dtype == dtype
    assert call(x).value.tobytes() == call(fa.tensor(x)).value.tobytes()
