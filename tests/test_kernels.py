"""Each compiled kernel in fastad.kernels against a plain-NumPy reference.

A row of the table names a kernel, makes its inputs, calls it with output arrays and
gives the float64 NumPy reference for every output. Outputs start as NaN when the kernel
must write them (so a kernel that reads or adds to them shows), and as random numbers
when it is asked to accumulate (so the expected value is that start plus the reference).
Rows cover both dtypes, extreme inputs, 1-row / 1-column shapes and N-d arrays.
"""
from dataclasses import dataclass
from collections.abc import Callable

import numpy as np
import pytest

from fastad.kernels import gemm, pointwise, rows


# --- NumPy references (float64) ----------------------------------------------------------

def sigmoid_ref(x):
    return np.exp(-np.logaddexp(0.0, -x))  # 1 / (1 + exp(-x)), without overflow


def kernel(name):
    """The compiled kernel `name`, from whichever module of fastad.kernels holds it."""
    (module,) = [m for m in (gemm, pointwise, rows) if hasattr(m, name)]
    return getattr(module, name)


def log_softmax_ref(x):
    shifted = x - x.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def softmax_ref(x):
    return np.exp(log_softmax_ref(x))


def onehot(labels, classes):
    return np.eye(classes)[labels]


# --- inputs ------------------------------------------------------------------------------

EXTREME_ROWS = np.array([[1000.0, 0.0, -1000.0, 3.0],
                         [-1e4, -1e4, -1e4 + 1, -1e4],
                         [80.0, 90.0, -90.0, -80.0],
                         [0.0, 0.0, 0.0, 0.0]])
EXTREME_VALUES = np.array([-1e4, -1000.0, -100.0, -30.0, -1.0, 0.0, 1.0, 30.0, 100.0, 1e4])
CLASSES = 4
LABELS = np.array([2, 0, 3, 3, 1], dtype=np.intp)   # in [0, CLASSES), one repeated


def normal(shape, scale=1.0):
    return lambda rng: scale * rng.standard_normal(shape)


def fixed(array):
    return lambda rng: np.array(array)


def sigmoid_output(shape, scale=1.0):
    return lambda rng: sigmoid_ref(scale * rng.standard_normal(shape))


def relu_output(shape, scale=1.0):
    return lambda rng: np.maximum(scale * rng.standard_normal(shape), 0)


def softmax_output(shape, scale=1.0):
    return lambda rng: softmax_ref(scale * rng.standard_normal(shape))


def log_softmax_output(shape, scale=1.0):
    return lambda rng: log_softmax_ref(scale * rng.standard_normal(shape))


# --- the table ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Kernel:
    name: str
    case: str
    inputs: dict           # input name -> maker(rng) of a float64 array (or int labels)
    outputs: Callable      # outputs(inputs) -> {output name: shape}
    call: Callable         # call(kernel, inputs, outputs, accumulate)
    reference: Callable    # reference(inputs in float64) -> {output name: expected}
    accumulates: bool = False
    # Results computed as x - logsumexp(x) carry an absolute error of about one ulp of
    # the largest |x| (the rounding of the input itself), which matters for float32
    # logits like 1e4.
    log_space: bool = False

    @property
    def id(self):
        return f"{self.name}-{self.case}"

    def make_inputs(self, rng, dtype):
        made = {name: make(rng) for name, make in self.inputs.items()}
        return {name: v if v.dtype.kind == "i" else np.ascontiguousarray(v, dtype=dtype)
                for name, v in made.items()}


def same_shape_as(name, output="out"):
    return lambda i: {output: i[name].shape}


ACTIVATIONS = {"sigmoid": sigmoid_ref, "relu": lambda x: np.maximum(x, 0)}
ACTIVATION_GRADS = {"sigmoid_grad": lambda g, y: g * y * (1 - y),
                    "relu_grad": lambda g, y: np.where(y > 0, g, 0)}
ACTIVATION_OUTPUTS = {"sigmoid_grad": sigmoid_output, "relu_grad": relu_output}


def activation_row(name, case, x):
    return Kernel(name, case, {"x": x}, same_shape_as("x"),
                  lambda k, i, o, acc: k(i["x"], o["out"]),
                  lambda i: {"out": ACTIVATIONS[name](i["x"])})


def activation_grad_row(name, case, y_shape):
    return Kernel(name, case,
                  {"g": normal(y_shape), "y": ACTIVATION_OUTPUTS[name](y_shape, scale=3.0)},
                  same_shape_as("y"),
                  lambda k, i, o, acc: k(i["g"], i["y"], o["out"], acc),
                  lambda i: {"out": ACTIVATION_GRADS[name](i["g"], i["y"])}, accumulates=True)


def rowwise_row(name, case, x, reference, log_space=False):
    return Kernel(name, case, {"x": x}, same_shape_as("x"),
                  lambda k, i, o, acc: k(i["x"], o["out"]),
                  lambda i: {"out": reference(i["x"])}, log_space=log_space)


def softmax_row(case, x):
    return rowwise_row("softmax", case, x, softmax_ref)


def log_softmax_row(case, x):
    return rowwise_row("log_softmax", case, x, log_softmax_ref, log_space=True)


def softmax_grad_ref(i):
    g, y = i["g"], i["y"]
    return {"out": y * (g - (g * y).sum(axis=-1, keepdims=True))}


def log_softmax_grad_ref(i):
    g, y = i["g"], i["y"]
    return {"out": g - np.exp(y) * g.sum(axis=-1, keepdims=True)}


def rowwise_grad_row(name, case, shape, y, reference):
    return Kernel(name, case, {"g": normal(shape), "y": y},
                  same_shape_as("y"),
                  lambda k, i, o, acc: k(i["g"], i["y"], o["out"], acc),
                  reference, accumulates=True)


def xent_row(case, x):
    def reference(i):
        log_probs = log_softmax_ref(i["x"])
        return {"probs": np.exp(log_probs),
                "losses": -log_probs[np.arange(len(i["labels"])), i["labels"]]}
    return Kernel("softmax_cross_entropy", case, {"x": x, "labels": fixed(LABELS)},
                  lambda i: {"probs": i["x"].shape, "losses": i["x"].shape[:1]},
                  lambda k, i, o, acc: k(i["x"], i["labels"], o["probs"], o["losses"]),
                  reference, log_space=True)


def xent_grad_ref(i):
    classes = i["probs"].shape[1]
    return {"out": i["scale"][:, None] * (i["probs"] - onehot(i["labels"], classes))}


def pick_grad_ref(i):
    out = np.zeros((len(i["labels"]), CLASSES))
    out[np.arange(len(i["labels"])), i["labels"]] = i["g"]
    return {"out": out}


KERNELS = [
    *(activation_row(name, case, x) for name in ACTIVATIONS for case, x in [
        ("random", normal((5, 7), scale=4.0)),
        ("extreme", fixed(EXTREME_VALUES)),
        ("3d", normal((2, 3, 4))),
        ("long", normal((3, 700), scale=10.0))]),
    *(activation_grad_row(name, case, shape) for name in ACTIVATION_GRADS for case, shape in [
        ("matrix", (5, 7)), ("vector", (6,)), ("long", (2, 1100))]),
    softmax_row("random", normal((5, 7), scale=3.0)),
    softmax_row("extreme", fixed(EXTREME_ROWS)),
    softmax_row("3d", normal((2, 3, 4))),
    softmax_row("one_column", normal((4, 1))),
    softmax_row("long_rows", normal((2, 1100), scale=10.0)),
    log_softmax_row("random", normal((5, 7), scale=3.0)),
    log_softmax_row("extreme", fixed(EXTREME_ROWS)),
    log_softmax_row("3d", normal((2, 3, 4))),
    log_softmax_row("long_rows", normal((2, 1100), scale=10.0)),
    rowwise_grad_row("softmax_grad", "random", (5, 7), softmax_output((5, 7), 3.0),
                     softmax_grad_ref),
    rowwise_grad_row("softmax_grad", "extreme", EXTREME_ROWS.shape,
                     fixed(softmax_ref(EXTREME_ROWS)), softmax_grad_ref),
    rowwise_grad_row("softmax_grad", "3d", (2, 3, 4), softmax_output((2, 3, 4)), softmax_grad_ref),
    rowwise_grad_row("log_softmax_grad", "random", (5, 7), log_softmax_output((5, 7), 3.0),
                     log_softmax_grad_ref),
    rowwise_grad_row("log_softmax_grad", "extreme", EXTREME_ROWS.shape,
                     fixed(log_softmax_ref(EXTREME_ROWS)),
                     log_softmax_grad_ref),
    rowwise_grad_row("log_softmax_grad", "3d", (2, 3, 4), log_softmax_output((2, 3, 4)),
                     log_softmax_grad_ref),
    rowwise_grad_row("log_softmax_grad", "long_rows", (2, 1100),
                     log_softmax_output((2, 1100), 3.0), log_softmax_grad_ref),
    rowwise_grad_row("softmax_grad", "long_rows", (2, 1100), softmax_output((2, 1100), 3.0),
                     softmax_grad_ref),
    xent_row("random", normal((5, CLASSES), scale=3.0)),
    xent_row("extreme", fixed(np.vstack([EXTREME_ROWS, [[-1000.0, 5.0, 1000.0, 0.0]]]))),
    Kernel("softmax_cross_entropy_grad", "random",
           {"probs": softmax_output((5, CLASSES), 3.0), "labels": fixed(LABELS),
            "scale": normal((5,))},
           same_shape_as("probs"),
           lambda k, i, o, acc: k(i["probs"], i["labels"], i["scale"], o["out"], acc),
           xent_grad_ref, accumulates=True),
    Kernel("add_row", "random", {"x": normal((5, 7)), "b": normal((7,))}, same_shape_as("x"),
           lambda k, i, o, acc: k(i["x"], i["b"], o["out"]),
           lambda i: {"out": i["x"] + i["b"]}),
    Kernel("add_row", "one_row", {"x": normal((1, 3)), "b": normal((3,))}, same_shape_as("x"),
           lambda k, i, o, acc: k(i["x"], i["b"], o["out"]),
           lambda i: {"out": i["x"] + i["b"]}),
    Kernel("column_sum", "random", {"g": normal((6, 5))}, lambda i: {"out": (5,)},
           lambda k, i, o, acc: k(i["g"], o["out"], acc),
           lambda i: {"out": i["g"].sum(axis=0)}, accumulates=True),
    Kernel("column_sum", "one_row", {"g": normal((1, 5))}, lambda i: {"out": (5,)},
           lambda k, i, o, acc: k(i["g"], o["out"], acc),
           lambda i: {"out": i["g"].sum(axis=0)}, accumulates=True),
    Kernel("pick", "random", {"x": normal((5, CLASSES)), "labels": fixed(LABELS)},
           lambda i: {"out": (5,)},
           lambda k, i, o, acc: k(i["x"], i["labels"], o["out"]),
           lambda i: {"out": i["x"][np.arange(5), i["labels"]]}),
    Kernel("pick_grad", "random", {"g": normal((5,)), "labels": fixed(LABELS)},
           lambda i: {"out": (5, CLASSES)},
           lambda k, i, o, acc: k(i["g"], i["labels"], o["out"], acc),
           pick_grad_ref, accumulates=True),
]

CASES = [(row, accumulate) for row in KERNELS
         for accumulate in ((False, True) if row.accumulates else (False,))]


@pytest.mark.parametrize(
    "row, accumulate", CASES,
    ids=[f"{row.id}{'-accumulate' if acc else ''}" for row, acc in CASES])
def test_kernel_matches_numpy(row, accumulate, dtype, rng, assert_close):
    inputs = row.make_inputs(rng, dtype)
    snapshot = {name: v.copy() for name, v in inputs.items()}
    start = {name: (rng.standard_normal(shape) if accumulate else np.full(shape, np.nan))
             for name, shape in row.outputs(inputs).items()}
    outputs = {name: v.astype(dtype) for name, v in start.items()}

    row.call(kernel(row.name), inputs, outputs, accumulate)

    reference = row.reference({name: v if v.dtype.kind == "i" else v.astype(np.float64)
                               for name, v in inputs.items()})
    tolerance = {}
    if row.log_space:
        largest = max(np.abs(v).max() for v in inputs.values() if v.dtype.kind == "f")
        tolerance["atol"] = max(1e-5 if dtype == np.float32 else 1e-12,
                                np.finfo(dtype).eps * largest)
    for name, expected in reference.items():
        if accumulate:
            expected = start[name].astype(dtype) + expected
        assert outputs[name].dtype == dtype
        assert np.all(np.isfinite(outputs[name])), name
        assert_close(outputs[name], expected, dtype, **tolerance)
    for name, v in inputs.items():
        np.testing.assert_array_equal(v, snapshot[name], err_msg=f"input {name} was modified")


def test_add_row_in_place(dtype, rng, assert_close):
    """add_row documents that `out` may be `x` itself."""
    x = rng.standard_normal((4, 5)).astype(dtype)
    b = rng.standard_normal(5).astype(dtype)
    expected = x.astype(np.float64) + b
    pointwise.add_row(x, b, x)
    assert_close(x, expected, dtype)


# --- gemm: layouts, shapes and the accumulate flag -------------------------------------------

LAYOUTS = {"C": np.ascontiguousarray, "F": np.asfortranarray,
           "strided": lambda x: np.repeat(x, 2, axis=1)[:, ::2]}  # neither: gemm copies it
GEMM_SHAPES = [(5, 7, 3), (1, 4, 6), (6, 4, 1), (3, 1, 5), (1, 1, 1), (8, 16, 8)]


@pytest.mark.parametrize("m, k, n", GEMM_SHAPES, ids=[f"{m}x{k}x{n}" for m, k, n in GEMM_SHAPES])
@pytest.mark.parametrize("layout_a, layout_b", [("C", "C"), ("F", "C"), ("C", "F"), ("F", "F"),
                                                ("strided", "C"), ("F", "strided")])
@pytest.mark.parametrize("accumulate", [False, True], ids=["write", "accumulate"])
@pytest.mark.parametrize("out_order", ["C", "F"])
def test_gemm(m, k, n, layout_a, layout_b, accumulate, out_order, dtype, rng, assert_close):
    """out (+)= a @ b in either orientation: a C out directly, an F out as out^T = b^T a^T."""
    a = LAYOUTS[layout_a](rng.standard_normal((m, k)).astype(dtype))
    b = LAYOUTS[layout_b](rng.standard_normal((k, n)).astype(dtype))
    start = rng.standard_normal((m, n)) if accumulate else np.full((m, n), np.nan)
    out = np.array(start.astype(dtype), order=out_order)
    a_before, b_before = a.copy(), b.copy()

    gemm.gemm(a, b, out, accumulate, out_order == "F")

    expected = a.astype(np.float64) @ b.astype(np.float64)
    if accumulate:
        expected += start.astype(dtype)
    assert_close(out, expected, dtype)
    np.testing.assert_array_equal(a, a_before)
    np.testing.assert_array_equal(b, b_before)


def test_gemm_transposed_views(dtype, rng, assert_close):
    """`a.T` of a C array is F-contiguous: the backward's dA = g @ B^T and dB = A^T @ g."""
    a = rng.standard_normal((6, 4)).astype(dtype)
    g = rng.standard_normal((6, 3)).astype(dtype)
    b = rng.standard_normal((4, 3)).astype(dtype)
    d_a = np.full((6, 4), np.nan, dtype)
    d_b = np.full((4, 3), np.nan, dtype)
    gemm.gemm(g, b.T, d_a, False)
    gemm.gemm(a.T, g, d_b, False)
    as64 = lambda v: v.astype(np.float64)  # noqa: E731
    assert_close(d_a, as64(g) @ as64(b).T, dtype)
    assert_close(d_b, as64(a).T @ as64(g), dtype)


@pytest.mark.parametrize("order", ["C", "F"])
@pytest.mark.parametrize("name", [*ACTIVATIONS, *ACTIVATION_GRADS])
def test_activation_kernels_allocate_like_their_input(name, order, dtype, rng):
    """out=None: a new array of the input's shape, dtype and memory order, holding what
    the kernel writes into a given out."""
    arrays = [np.asarray(rng.standard_normal((5, 3)), dtype=dtype, order=order)
              for _ in range(2 if name in ACTIVATIONS else 3)]
    function = kernel(name)
    args = arrays[:1] if name in ACTIVATIONS else arrays[:2]
    expected = arrays[-1]
    function(*args, expected, *(() if name in ACTIVATIONS else (False,)))
    got = function(*args) if name in ACTIVATIONS else function(*args, None, False)
    assert got.dtype == dtype and got.shape == expected.shape
    assert got.flags.f_contiguous if order == "F" else got.flags.c_contiguous
    np.testing.assert_array_equal(got, expected)


def test_relu_keeps_nan_and_clears_negative_zero_as_numpy_does(dtype):
    x = np.array([np.nan, -0.0, 0.0, -np.inf, np.inf, -2.0, 3.0], dtype=dtype)
    got = pointwise.relu(x)
    expected = np.maximum(x, 0)
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(np.signbit(got), np.signbit(expected))


# --- exp: the kernels' own (sigmoid, softmax, log-softmax, cross-entropy) ----------------

# Where exp(x) is normal, subnormal, and where it overflows / rounds to 0.
EXP_RANGES = {np.dtype(np.float32): (-104.0, 89.0), np.dtype(np.float64): (-750.0, 710.0)}


def ulps(actual, exact, dtype):
    """|actual - exact| in units of the last place of exact rounded to dtype (subnormals:
    the subnormal spacing)."""
    spacing = np.spacing(np.abs(exact.astype(dtype))).astype(np.longdouble)
    return np.abs(actual.astype(np.longdouble) - exact) / spacing


def test_exp_is_within_two_ulps_over_the_whole_range(dtype, rng):
    lo, hi = EXP_RANGES[dtype]
    x = np.concatenate([np.linspace(lo, hi, 1_000_001), rng.uniform(-1, 1, 100_000),
                        rng.uniform(lo, hi, 100_000)]).astype(dtype)
    if dtype == np.float64 and np.finfo(np.longdouble).nmant <= 52:
        pytest.skip("long double is double here: no wider type to hold the reference")
    exact = np.exp(x.astype(np.longdouble))   # x87 extended precision on x86-64
    with np.errstate(over="ignore"):
        expected = exact.astype(dtype)
    got = pointwise.exp(x)
    finite = np.isfinite(expected)
    assert np.array_equal(np.isinf(got), ~finite), "overflows where exp does not"
    error = ulps(got[finite], exact[finite], dtype)
    normal = expected[finite] >= np.finfo(dtype).tiny
    assert error[normal].max() <= 2.0, x[finite][normal][np.argmax(error[normal])]
    assert error[~normal].max() <= 1.0    # subnormal results round once, not flushed
    assert np.array_equal(got == 0, expected == 0)


def test_exp_special_values(dtype):
    big = np.finfo(dtype).max
    x = np.array([np.nan, -np.inf, np.inf, 0.0, -0.0, -big, big, 1.0], dtype=dtype)
    got = pointwise.exp(x)
    assert np.isnan(got[0])
    np.testing.assert_array_equal(got[1:7], np.array([0.0, np.inf, 1.0, 1.0, 0.0, np.inf]))
    assert abs(got[7] - np.e) <= np.spacing(dtype.type(np.e))


UFUNCS = {pointwise.Arithmetic.ADD: np.add, pointwise.Arithmetic.SUB: np.subtract,
          pointwise.Arithmetic.MUL: np.multiply, pointwise.Arithmetic.DIV: np.true_divide}
ARITHMETIC_OPERANDS = {
    "arrays": lambda x, y, s: (x, y),
    "fortran-arrays": lambda x, y, s: (np.asfortranarray(x), np.asfortranarray(y)),
    "array-scalar": lambda x, y, s: (x, s),
    "scalar-array": lambda x, y, s: (s, y),
    "fortran-array-scalar": lambda x, y, s: (np.asfortranarray(x), s),
}


@pytest.mark.parametrize("operands", ARITHMETIC_OPERANDS)
@pytest.mark.parametrize("op", UFUNCS, ids=lambda op: op.name)
def test_arithmetic_is_numpy_bit_for_bit(op, operands, dtype, rng):
    x = rng.standard_normal((5, 7)).astype(dtype)
    y = rng.standard_normal((5, 7)).astype(dtype)
    y[0, :3] = [0.0, -0.0, np.inf]   # IEEE specials: division by zero, inf arithmetic
    a, b = ARITHMETIC_OPERANDS[operands](x, y, np.dtype(dtype).type(-1.7))
    with np.errstate(divide="ignore", invalid="ignore"):
        expected = UFUNCS[op](a, b)
    got = pointwise.arithmetic(op, a, b)
    assert got.dtype == expected.dtype and got.flags.f_contiguous == expected.flags.f_contiguous
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(np.signbit(got), np.signbit(expected))


NOT_FOR_THE_KERNEL = {
    "broadcast": lambda x: (x, x[0]),
    "strided": lambda x: (x[:, ::2], x[:, ::2].copy()),
    "strided-with-scalar": lambda x: (x[:, ::2], x.dtype.type(2)),
    "mixed-layouts": lambda x: (x, np.asfortranarray(x)),
    "mixed-dtypes": lambda x: (x, x.astype(np.float16)),
    "python-scalar": lambda x: (x, 2.0),
    "scalar-of-other-dtype": lambda x: (x, np.float16(2)),
    "int-arrays": lambda x: (x.astype(np.int64), x.astype(np.int64)),
}


@pytest.mark.parametrize("case", NOT_FOR_THE_KERNEL)
def test_arithmetic_declines_what_numpy_must_broadcast_or_convert(case, dtype, rng):
    a, b = NOT_FOR_THE_KERNEL[case](rng.standard_normal((4, 6)).astype(dtype))
    assert pointwise.arithmetic(pointwise.Arithmetic.ADD, a, b) is None
