"""SPEC "Bad input": every wrong call gets the right exception, with a message naming the
op and the offending shapes or dtypes, and leaves its arguments exactly as they were.

Each case is a few lines of source: `setup` builds the arguments (helpers below), `call`
is the wrong call. Many reach a compiled kernel (matmul, the bias add, sigmoid, softmax,
log_softmax, cross_entropy, nll_loss, the label gather), which would get bad pointers if
a Python check were missing, so the cases run in a child process: a crash there fails
the case that was running (and the ones after it) instead of killing pytest.
"""
import json
import os
import subprocess
import sys
from dataclasses import dataclass

import numpy as np
import pytest

import fastad as fa

# Children run from here: `python -c` puts its working directory first on sys.path, and
# from the repository root that would import the uncompiled source tree, not the install.
HERE = os.path.dirname(os.path.abspath(__file__))

# --- the harness (also run in the child process, see the bottom of this file) ------------

PRELUDE = """
import numpy as np
import fastad as fa
rng = np.random.default_rng(0)
def A(shape, dtype=np.float64):           # a plain ndarray
    return rng.standard_normal(shape).astype(dtype)
def T(shape, dtype=np.float64):           # a data tensor
    return fa.tensor(A(shape, dtype))
def P(shape, dtype=np.float64):           # a parameter
    return fa.Parameter(A(shape, dtype))
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
            same = (now.dtype == before.dtype and now.shape == before.shape
                    and np.array_equal(now, before, equal_nan=before.dtype.kind in "fc"))
        else:
            same = now == before
        if not same:
            changed.append(name)
    return changed


def run_case(setup, call):
    """Run `setup` then `call`; report the exception raised and any changed argument."""
    namespace = {}
    exec(PRELUDE + setup, namespace)
    saved = _snapshot(namespace)
    try:
        exec(call, namespace)
        raised, message = None, ""
    except Exception as e:  # noqa: BLE001  (the case says which one it expects)
        raised, message = type(e).__name__, str(e)
    return {"raised": raised, "message": message, "changed": _changed(namespace, saved)}


# --- the cases --------------------------------------------------------------------------

@dataclass(frozen=True)
class Case:
    id: str
    setup: str
    call: str
    error: type
    mentions: tuple = ()      # substrings the message must contain (op, shapes, dtypes)


def shape_cases():
    """Shape mismatches: ValueError naming the op and both shapes."""
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
        # the bias pattern's kernel (x (N, C) + b (C,)) sits right next to these
        Case("add-row-wrong-length", "x = P((3, 4)); b = P((3,))", "fa.add(x, b)",
             ValueError, ("add", "(3, 4)", "(3,)")),
        Case("add-row-operator", "x = P((3, 4)); b = A((5,))", "x + b",
             ValueError, ("add", "(3, 4)", "(5,)")),
        Case("add-reflected", "x = P((3, 4)); b = A((5,))", "b + x",
             ValueError, ("add", "(3, 4)", "(5,)")),
        Case("where-shapes", "c = A((2, 2)) > 0; a = P((3, 4)); b = T((3, 4))",
             "fa.where(c, a, b)", ValueError, ("where", "(2, 2)", "(3, 4)")),
        Case("concatenate-shapes", "a = P((2, 3)); b = T((2, 4))",
             "fa.concatenate([a, b], axis=0)", ValueError, ("concatenate", "(2, 3)", "(2, 4)")),
        Case("reshape-size", "a = P((3, 4))", "fa.reshape(a, (5, 5))",
             ValueError, ("reshape", "(3, 4)", "(5, 5)")),
        Case("stack-shapes", "a = P((2, 3)); b = T((3, 2))", "fa.stack([a, b])",
             ValueError, ("stack", "(2, 3)", "(3, 2)")),
        Case("stack-ndim", "a = P((3,)); b = T((1, 3))", "fa.stack([a, b], axis=1)",
             ValueError, ("stack", "(3,)", "(1, 3)")),
    ]
    for op in ("maximum", "minimum"):
        cases += [
            Case(f"{op}-shapes", "a = P((2, 3)); b = T((3, 2))", f"fa.{op}(a, b)",
                 ValueError, (op, "(2, 3)", "(3, 2)")),
            Case(f"{op}-ndarray-first", "a = A((4,)); b = P((3, 5))", f"fa.{op}(a, b)",
                 ValueError, (op, "(4,)", "(3, 5)")),
        ]
    # elementwise losses want a target of the input's shape, even where it would broadcast
    for op in ("mse_loss", "binary_cross_entropy_with_logits"):
        cases += [
            Case(f"{op}-shapes", "x = P((4, 3)); t = T((3, 4))", f"fa.{op}(x, t)",
                 ValueError, (op, "(4, 3)", "(3, 4)")),
            Case(f"{op}-broadcastable", "x = P((4, 3)); t = A((3,))", f"fa.{op}(x, t)",
                 ValueError, (op, "(4, 3)", "(3,)")),
            Case(f"{op}-scalar-target", "x = P((2,))", f"fa.{op}(x, 1.0)",
                 ValueError, (op, "(2,)", "()")),
        ]
    for op, symbol in [("sub", "-"), ("mul", "*"), ("div", "/"), ("pow", "**")]:
        cases += [
            Case(f"{op}-shapes", "a = P((2, 3)); b = T((3, 2))", f"fa.{op}(a, b)",
                 ValueError, (op, "(2, 3)", "(3, 2)")),
            Case(f"{op}-operator-ndarray", "a = P((3, 4)); b = np.abs(A((2, 4)))",
                 f"a {symbol} b", ValueError, (op, "(3, 4)", "(2, 4)")),
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
    out_of_range = {
        "equal-to-C": "np.array([0, 1, 4])",
        "far-above": "np.array([0, 10**6, 1])",
        "negative": "np.array([0, -1, 1])",
        "very-negative": "np.array([0, 1, -(2**62)])",
        "uint64-huge": "np.array([0, 1, 2**64 - 1], np.uint64)",
        "list": "[0, 4, 1]",
        "int8-negative": "np.array([0, -1, 1], np.int8)",
    }
    cases += [Case(f"labels-{name}", f"x = P((3, 4)); y = {labels}", "{op}(x, y)",
                   IndexError, ("{op}",)) for name, labels in out_of_range.items()]
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
    """Mixed precision: TypeError naming both dtypes; non-real data and dtype=: TypeError."""
    cases = []
    binary = [("add", "+"), ("sub", "-"), ("mul", "*"), ("div", "/"), ("pow", "**"),
              ("matmul", "@")]
    for op, symbol in binary:
        cases += [
            Case(f"{op}-tensor32-tensor64", "a = P((3, 3), np.float32); b = T((3, 3))",
                 f"fa.{op}(a, b)", TypeError, (op, "float32", "float64")),
            Case(f"{op}-tensor64-tensor32", "a = P((3, 3)); b = T((3, 3), np.float32)",
                 f"a {symbol} b", TypeError, (op, "float32", "float64")),
            Case(f"{op}-tensor32-ndarray64", "a = P((3, 3), np.float32); b = A((3, 3))",
                 f"a {symbol} b", TypeError, (op, "float32", "float64")),
            Case(f"{op}-ndarray64-tensor32", "a = A((3, 3)); b = P((3, 3), np.float32)",
                 f"a {symbol} b", TypeError, (op, "float32", "float64")),
            Case(f"{op}-tensor64-ndarray32", "a = P((3, 3)); b = A((3, 3), np.float32)",
                 f"fa.{op}(a, b)", TypeError, (op, "float32", "float64")),
        ]
    cases += [
        Case("add-row-pattern-mixed", "x = P((4, 3), np.float32); b = P((3,))",
             "x + b", TypeError, ("add", "float32", "float64")),
        Case("add-0d-ndarray64", "a = P((3,), np.float32); b = np.array(2.0)",
             "a + b", TypeError, ("add", "float32", "float64")),
        Case("where-mixed", "c = A((3,)) > 0; a = P((3,), np.float32); b = T((3,))",
             "fa.where(c, a, b)", TypeError, ("where", "float32", "float64")),
        Case("concatenate-mixed", "a = P((2, 3), np.float32); b = T((2, 3))",
             "fa.concatenate([a, b])", TypeError, ("concatenate", "float32", "float64")),
        Case("stack-mixed", "a = P((2, 3), np.float32); b = T((2, 3))",
             "fa.stack([a, b])", TypeError, ("stack", "float32", "float64")),
        Case("clip-complex-bound", "x = P((3,))", "fa.clip(x, 1j, 2.0)", TypeError,
             ("clip", "lo", "1j")),
        Case("clip-string-bound", "x = P((3,))", "fa.clip(x, 0.0, '1')", TypeError,
             ("clip", "hi", "'1'")),
        Case("clip-array-bound", "x = P((3,)); lo = A((3,))", "fa.clip(x, lo)", TypeError,
             ("clip", "lo")),
        Case("seed-dtype", "x = P((3,), np.float32); y = x * 2; s = np.ones(3)",
             "fa.grad(y, x, seed=s)", TypeError, ("float32", "float64")),
    ]
    for op in ("maximum", "minimum", "mse_loss", "binary_cross_entropy_with_logits"):
        cases += [
            Case(f"{op}-tensor32-tensor64", "a = P((3, 3), np.float32); b = T((3, 3))",
                 f"fa.{op}(a, b)", TypeError, (op, "float32", "float64")),
            Case(f"{op}-tensor64-ndarray32", "a = P((3, 3)); b = A((3, 3), np.float32)",
                 f"fa.{op}(a, b)", TypeError, (op, "float32", "float64")),
            Case(f"{op}-ndarray64-tensor32", "a = A((3, 3)); b = P((3, 3), np.float32)",
                 f"fa.{op}(a, b)", TypeError, (op, "float32", "float64")),
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
    for name, operand in [("complex-array", "np.ones((3,), np.complex64)"),
                          ("complex-scalar", "1j"), ("object-array", "np.ones(3, dtype=object)"),
                          ("string", "'a'")]:
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
        Case("mse_loss-empty", "x = P((0, 3)); t = A((0, 3))", "fa.mse_loss(x, t)",
             ValueError, ("mse_loss", "(0, 3)")),
        Case("binary_cross_entropy_with_logits-empty", "x = P((0,)); t = A((0,))",
             "fa.binary_cross_entropy_with_logits(x, t, reduction='none')", ValueError,
             ("binary_cross_entropy_with_logits", "(0,)")),
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


CASES = shape_cases() + label_cases() + gather_cases() + dtype_cases() + misc_cases()
assert len({c.id for c in CASES}) == len(CASES), "duplicate case ids"


# --- running them -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def child_results():
    """Runs every case in a child process: {id: result, or the crash it died in}.

    The child prints a line before and after each case, so a crash is pinned to the
    case that was running; a new child then runs the cases after it.
    """
    pending = [{"id": c.id, "setup": c.setup, "call": c.call} for c in CASES]
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
    assert not result["changed"], f"{case.call} modified {result['changed']}"


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
        result = run_case(case["setup"], case["call"])
        print(json.dumps({"id": case["id"], **result}), flush=True)


if __name__ == "__main__":
    _child_main()
