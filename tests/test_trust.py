"""Regressions for the attributes, indices and operators that reached the kernels
unchecked (SPEC "Tensors", "Gradients", "Bad input"): each test is one bug found on
main, stated as the contract's behaviour. The classes are covered by the campaign
families `attributes`, `caller_arrays`, `index_sequences` and `inplace`, and by rows of
the bad-input table; these pin the exact instances.

The ones that crashed the interpreter run in a child process.
"""
import array
import collections
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import fastad as fa

HERE = os.path.dirname(os.path.abspath(__file__))


def run_child(code):
    """Run `code` (which asserts what it needs) in a fresh interpreter."""
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=os.environ,
                          cwd=HERE, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"exit code {proc.returncode}\n{proc.stderr[-3000:]}"


def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


# --- 1. settable attributes ------------------------------------------------------------

def test_float16_value_is_refused_before_sigmoid_reads_it():
    run_child("""
        import numpy as np, pytest, fastad as fa
        x = fa.Parameter(np.zeros(1 << 20))
        with pytest.raises(TypeError, match="float16") as e:
            x.value = np.ones(1 << 20, np.float16)
            fa.sigmoid(x)
        assert "float64" in str(e.value)
        assert x.value.dtype == np.float64
        np.testing.assert_array_equal(fa.sigmoid(x).value, np.full(1 << 20, 0.5))
    """)


def test_int32_values_are_refused_before_matmul_reads_them():
    run_child("""
        import numpy as np, pytest, fastad as fa
        a0, b0 = np.ones((300, 200)), np.ones((200, 100))
        a, b = fa.Parameter(a0), fa.Parameter(b0)
        with pytest.raises(TypeError, match="int32") as e:
            a.value = np.ones((300, 200), np.int32)
            b.value = np.ones((200, 100), np.int32)
            a @ b
        assert "float64" in str(e.value)
        np.testing.assert_array_equal((a @ b).value, a0 @ b0)
    """)


@pytest.mark.parametrize("order", [">", "<"])
def test_a_value_of_either_byte_order_is_read_as_numbers(order):
    x = fa.Parameter(np.zeros(3))
    x.value = np.array([0.0, 1.0, 2.0], f"{order}f8")
    assert x.value.dtype == np.float64  # native
    np.testing.assert_allclose(fa.sigmoid(x).value, _sigmoid(np.arange(3.0)), rtol=1e-15)


def test_int64_value_is_refused():
    x = fa.Parameter(np.zeros(3))
    with pytest.raises(TypeError, match="int64"):
        x.value = np.arange(3)
    np.testing.assert_array_equal(fa.sigmoid(x).value, [0.5, 0.5, 0.5])


@pytest.mark.parametrize("how", ["tensor", "ndarray-operand"])
def test_reshaping_the_callers_array_after_the_forward_does_not_reach_the_backward(how):
    run_child(f"""
        import numpy as np, fastad as fa
        rng = np.random.default_rng(0)
        X = rng.standard_normal((300, 200))
        X0 = X.copy()
        w = fa.Parameter(rng.standard_normal((200, 100)))
        loss = fa.sum((fa.tensor(X) if {how!r} == "tensor" else X) @ w)
        X.shape = (200, 300)
        loss.backward()
        np.testing.assert_allclose(w.grad, X0.T @ np.ones((300, 100)), rtol=1e-12)
    """)


@pytest.mark.parametrize("bad, error", [
    (np.ones(1 << 20, np.float16), (TypeError, ValueError)),
    (np.ones(3, np.float32), TypeError),
    (np.ones(3, np.int64), TypeError),
    (np.ones(4), ValueError),
    (np.ones((3, 1)), ValueError),
    ([1.0, 2.0, 3.0], TypeError),
    (1.0, TypeError),
], ids=["float16-huge", "float32", "int64", "shape-4", "shape-3x1", "list", "scalar"])
def test_a_wrong_grad_is_refused_before_backward_or_a_step_reads_it(bad, error):
    p = fa.Parameter(np.ones(3))
    with pytest.raises(error):
        p.grad = bad
    assert p.grad is None
    fa.sum(p * 2.0).backward()
    fa.optim.SGD([p], lr=0.5).step()
    np.testing.assert_array_equal(p.value, [0.0, 0.0, 0.0])


# --- 2. index sequences --------------------------------------------------------------------

@pytest.mark.parametrize("index", [array.array("l", [0, 0, 1]), collections.deque([0, 0, 1])],
                         ids=["array.array", "deque"])
def test_repeated_indices_in_any_sequence_accumulate(index):
    x = fa.Parameter(np.array([1.0, 2.0, 3.0]))
    picked = x[index]
    np.testing.assert_array_equal(picked.value, [1.0, 1.0, 2.0])
    np.testing.assert_array_equal(fa.grad(fa.sum(picked), x), [2.0, 1.0, 0.0])


# --- 3. in-place operators -----------------------------------------------------------------

def test_manual_sgd_update_under_no_grad_trains_the_parameter():
    p = fa.Parameter(np.array([1.0, 2.0]))
    fa.sum(p * p).backward()
    same, value = p, p.value
    with fa.no_grad():
        p -= 0.25 * p.grad
    assert p is same and p.value is value
    np.testing.assert_array_equal(p.value, [0.5, 1.0])


def test_in_place_update_of_a_parameter_outside_no_grad_is_refused():
    p = fa.Parameter(np.array([1.0, 2.0]))
    with pytest.raises(RuntimeError, match="x = x"):
        p -= 1.0
    np.testing.assert_array_equal(p.value, [1.0, 2.0])


# --- 4. fa.grad's results ---------------------------------------------------------------------

def test_writing_into_a_returned_gradient_cannot_change_a_later_one():
    rng = np.random.default_rng(0)
    x0, w0 = rng.standard_normal((4, 3)), rng.standard_normal((3, 2))
    w = fa.Parameter(w0)
    h = fa.sigmoid(fa.tensor(x0) @ w)
    loss = fa.sum(h * h)
    gh = fa.grad(loss, h)
    with pytest.raises(ValueError):
        gh *= 0
    s = _sigmoid(x0 @ w0)
    np.testing.assert_allclose(gh, 2 * s, rtol=1e-12)
    np.testing.assert_allclose(fa.grad(loss, w), x0.T @ (2 * s * s * (1 - s)), rtol=1e-12)
