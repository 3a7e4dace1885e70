"""Semantics of the reverse sweep (SPEC "Gradients"): seeds, allow_unused, intermediates,
retain_graph, backward() accumulation, resumption, release of saved values, no_grad,
detect_anomaly and in-place updates of recorded leaves."""
import gc
import threading
import weakref

import numpy as np
import pytest

import fastad as fa
from fastad.core.clock import mark_modified


def sigmoid(v):
    return 1 / (1 + np.exp(-v))


class Chain:
    """loss = sum(W * sigmoid(sigmoid(x @ w1) @ w2)), with NumPy references.

    Small, but with a first and a last parameter, an intermediate `h`, and data `x`.
    """

    def __init__(self, rng, dtype=np.float64):
        self.X = rng.standard_normal((4, 3)).astype(dtype)
        self.W1 = rng.standard_normal((3, 5)).astype(dtype)
        self.W2 = rng.standard_normal((5, 2)).astype(dtype)
        self.W = rng.standard_normal((4, 2)).astype(dtype)
        self.x = fa.tensor(self.X)
        self.w1 = fa.Parameter(self.W1)
        self.w2 = fa.Parameter(self.W2)
        self.h = fa.sigmoid(self.x @ self.w1)
        self.loss = fa.sum(fa.sigmoid(self.h @ self.w2) * self.W)

    def expected(self):
        """NumPy gradients: {"w1", "w2", "h"}."""
        h = sigmoid(self.X @ self.W1)
        out = sigmoid(h @ self.W2)
        d_pre2 = self.W * out * (1 - out)
        d_h = d_pre2 @ self.W2.T
        return {"w1": self.X.T @ (d_h * h * (1 - h)), "w2": h.T @ d_pre2, "h": d_h}


@pytest.fixture
def chain(rng):
    return Chain(rng)


def assert_grads(actual, expected):
    np.testing.assert_allclose(actual, expected, rtol=1e-10, atol=1e-12)


# --- seed -------------------------------------------------------------------------------

def test_non_scalar_output_needs_a_seed(rng):
    x = fa.Parameter(rng.standard_normal((2, 3)))
    y = x * 2.0
    with pytest.raises(ValueError):
        fa.grad(y, x)
    with pytest.raises(ValueError):
        y.backward()
    assert x.grad is None


def test_one_element_output_of_any_shape_needs_no_seed(rng):
    x = fa.Parameter(rng.standard_normal((1, 1)))
    np.testing.assert_array_equal(fa.grad(x * 3.0, x), [[3.0]])


@pytest.mark.parametrize("seed_shape", [(3, 2), (6,), (), (1, 2, 3)])
def test_seed_of_the_wrong_shape_is_a_value_error(seed_shape, rng):
    x = fa.Parameter(rng.standard_normal((2, 3)))
    with pytest.raises(ValueError):
        fa.grad(x * 2.0, x, seed=np.ones(seed_shape))
    with pytest.raises(ValueError):
        (x * 2.0).backward(seed=np.ones(seed_shape))


@pytest.mark.parametrize("how", ["grad", "backward"])
def test_seed_gives_a_vector_jacobian_product_and_is_not_modified(how, rng, dtype):
    values = rng.standard_normal((2, 3)).astype(dtype)
    seed = rng.standard_normal((2, 3)).astype(dtype)
    seed_before = seed.copy()
    x = fa.Parameter(values)
    y = x * x + x      # the add hands its adjoint on; a second contribution adds to it
    if how == "grad":
        g = fa.grad(y, x, seed=seed)
    else:
        y.backward(seed=seed)
        g = x.grad
    np.testing.assert_allclose(g, (2 * values + 1) * seed, rtol=1e-5)
    np.testing.assert_array_equal(seed, seed_before)


def test_a_new_seed_after_a_retained_sweep_gives_the_new_product(rng):
    values = rng.standard_normal(3)
    x = fa.Parameter(values)
    y = x * x
    first, second = rng.standard_normal(3), rng.standard_normal(3)
    assert_grads(fa.grad(y, x, seed=first, retain_graph=True), 2 * values * first)
    assert_grads(fa.grad(y, x, seed=second), 2 * values * second)


# --- wrt: unused, not requiring grad, repeated, intermediate -----------------------------

def test_unused_wrt_raises_naming_position_and_shape(chain):
    unused = fa.Parameter(np.ones((2, 7)))
    with pytest.raises(ValueError, match=r"wrt\[1\].*\(2, 7\)"):
        fa.grad(chain.loss, [chain.w1, unused])


def test_wrt_that_needs_no_grad_raises_naming_position_and_shape(chain):
    with pytest.raises(ValueError, match=r"wrt\[2\].*\(4, 3\)"):
        fa.grad(chain.loss, [chain.w1, chain.w2, chain.x])


def test_allow_unused_gives_zeros_of_the_right_shape_and_dtype(rng, dtype):
    chain = Chain(rng, dtype)
    unused = fa.Parameter(np.ones((2, 7), dtype))
    g_w2, g_unused, g_x = fa.grad(chain.loss, [chain.w2, unused, chain.x], allow_unused=True)
    for g, t in ((g_unused, unused), (g_x, chain.x)):
        assert isinstance(g, np.ndarray)
        assert (g.shape, g.dtype) == (t.shape, t.dtype)
        assert not g.any()
    np.testing.assert_allclose(g_w2, chain.expected()["w2"], rtol=1e-4)


def test_allow_unused_for_an_output_that_needs_no_grad(rng):
    w = fa.Parameter(rng.standard_normal(3))
    with fa.no_grad():
        out = fa.sum(w * 2.0)
    with pytest.raises(ValueError, match=r"wrt\[0\]"):
        fa.grad(out, w)
    np.testing.assert_array_equal(fa.grad(out, [w], allow_unused=True)[0], np.zeros(3))


def test_wrt_listed_twice_gets_equal_values(chain):
    g1, g2, g3 = fa.grad(chain.loss, [chain.w1, chain.w2, chain.w1])
    np.testing.assert_array_equal(g1, g3)
    assert_grads(g1, chain.expected()["w1"])
    assert_grads(g2, chain.expected()["w2"])


@pytest.mark.parametrize("grouping", [
    [["w1", "h", "w2"]], [["h"], ["w1"], ["w2"]], [["w2"], ["h"], ["w1"]], [["w2", "h"], ["w1"]],
], ids=["joint", "h_first", "h_second", "h_with_w2"])
def test_gradients_wrt_intermediates(grouping, chain):
    """Joint, or in separate calls that ask for h before the sweep passes it."""
    tensors = {"h": chain.h, "w1": chain.w1, "w2": chain.w2}
    got = {}
    for group in grouping:
        got.update(zip(group, fa.grad(chain.loss, [tensors[n] for n in group])))
    for name, expected in chain.expected().items():
        assert_grads(got[name], expected)


def test_gradient_of_output_wrt_itself_is_one(chain):
    np.testing.assert_array_equal(fa.grad(chain.loss, chain.loss), 1.0)


# --- retain_graph ------------------------------------------------------------------------

def test_backward_consumes_the_output(chain):
    chain.loss.backward()
    with pytest.raises(RuntimeError, match=r"retain_graph=True"):
        chain.loss.backward()
    with pytest.raises(RuntimeError, match=r"retain_graph=True"):
        fa.grad(chain.loss, chain.w1)


def test_backward_with_retain_graph_twice_doubles_grad(chain):
    chain.loss.backward(retain_graph=True)
    chain.loss.backward(retain_graph=True)
    expected = chain.expected()
    assert_grads(chain.w1.grad, 2 * expected["w1"])
    assert_grads(chain.w2.grad, 2 * expected["w2"])
    chain.loss.backward()
    assert_grads(chain.w1.grad, 3 * expected["w1"])


@pytest.mark.parametrize("first", ["grad", "backward"])
def test_a_shared_graph_is_released_unless_retained(first, rng):
    """Two outputs over one intermediate: sweeping the first frees the shared part."""
    def setup():
        w = fa.Parameter(np.arange(1.0, 4.0))
        h = fa.exp(w)
        return w, fa.sum(h * 2.0), fa.sum(h * 5.0)

    def sweep_first(out, w, retain_graph):
        if first == "grad":
            fa.grad(out, w, retain_graph=retain_graph)
        else:
            out.backward(retain_graph=retain_graph)

    w, first_out, second_out = setup()
    sweep_first(first_out, w, retain_graph=False)
    with pytest.raises(RuntimeError, match=r"retain_graph=True"):
        fa.grad(second_out, w)

    w, first_out, second_out = setup()
    sweep_first(first_out, w, retain_graph=True)
    assert_grads(fa.grad(second_out, w), 5 * np.exp(np.arange(1.0, 4.0)))


def test_intermediate_asked_for_after_release(chain):
    fa.grad(chain.loss, chain.w1)      # the whole sweep runs, past h
    with pytest.raises(RuntimeError, match=r"retain_graph=True"):
        fa.grad(chain.loss, chain.h)


def test_intermediate_asked_for_after_a_retained_sweep(chain):
    fa.grad(chain.loss, chain.w1, retain_graph=True)
    assert_grads(fa.grad(chain.loss, chain.h), chain.expected()["h"])


# --- backward() and .grad ----------------------------------------------------------------

def test_backward_accumulates_into_grad(chain):
    expected = chain.expected()
    before = np.full(chain.w1.shape, 0.5)
    chain.w1.grad = before
    chain.loss.backward()
    assert_grads(chain.w1.grad, 0.5 + expected["w1"])
    assert chain.w1.grad is before, "PyTorch accumulates into an existing .grad in place"
    assert_grads(chain.w2.grad, expected["w2"])
    assert chain.x.grad is None


def test_backward_of_two_losses_adds_up(rng):
    w = fa.Parameter(rng.standard_normal(3))
    fa.sum(w * 2.0).backward()
    fa.sum(w * w).backward()
    assert_grads(w.grad, 2.0 + 2 * w.value)


def test_grad_never_touches_dot_grad(chain):
    sentinel = np.full(chain.w1.shape, 7.0)
    chain.w1.grad = sentinel
    fa.grad(chain.loss, [chain.w1, chain.w2])
    assert chain.w1.grad is sentinel and np.all(sentinel == 7.0)
    assert chain.w2.grad is None


def test_arrays_returned_by_grad_survive_later_backward_calls(chain):
    g = fa.grad(chain.loss, chain.w1, retain_graph=True)
    snapshot = g.copy()
    chain.loss.backward(retain_graph=True)
    chain.loss.backward()
    np.testing.assert_array_equal(g, snapshot)
    assert_grads(chain.w1.grad, 2 * snapshot)


# --- one sweep, resumed ---------------------------------------------------------------------

def test_late_parameter_stops_the_sweep_early_and_a_later_call_resumes(chain, count_vjps):
    counter = count_vjps(chain.loss)
    total = len(counter.nodes)

    g2 = fa.grad(chain.loss, chain.w2)
    after_first = counter.total
    assert 0 < after_first < total, "the sweep for the last layer must stop early"

    fa.grad(chain.loss, chain.w2)
    assert counter.total == after_first, "a final gradient is cached"

    g1 = fa.grad(chain.loss, chain.w1)
    assert counter.total == total
    assert all(counter.visited(node) == 1 for node in counter.nodes)
    expected = chain.expected()
    assert_grads(g1, expected["w1"])
    assert_grads(g2, expected["w2"])


def test_backward_after_grad_finishes_the_same_sweep(chain, count_vjps):
    counter = count_vjps(chain.loss)
    g2 = fa.grad(chain.loss, chain.w2)
    chain.loss.backward()
    assert all(counter.visited(node) == 1 for node in counter.nodes)
    assert_grads(chain.w1.grad, chain.expected()["w1"])
    np.testing.assert_array_equal(chain.w2.grad, g2)


# --- release of saved values ------------------------------------------------------------------

def make_exp_chain(rng):
    """loss = sum(exp(sigmoid(x * w1) * w2)); returns loss, w1, w2 and a weakref to the
    exp output, which only exp's node keeps (as its saved value)."""
    x = fa.tensor(rng.standard_normal(4))
    w1, w2 = fa.Parameter(rng.standard_normal(4)), fa.Parameter(rng.standard_normal(4))
    e = fa.exp(fa.sigmoid(x * w1) * w2)
    saved = weakref.ref(e.value)
    loss = fa.sum(e)
    del e
    return loss, w1, w2, saved


@pytest.mark.parametrize("retain_graph", [False, True])
def test_saved_values_are_released_as_the_sweep_passes(retain_graph, rng, nodes_of):
    loss, w1, _, saved = make_exp_chain(rng)
    nodes = nodes_of(loss)
    fa.grad(loss, w1, retain_graph=retain_graph)
    gc.collect()
    if retain_graph:
        assert saved() is not None
        assert all(node.saved is not None for node in nodes)
    else:
        assert saved() is None
        assert all(node.saved is None for node in nodes)


def test_a_partial_sweep_releases_only_what_it_passed(rng, count_vjps):
    loss, w1, w2, saved = make_exp_chain(rng)
    counter = count_vjps(loss)
    fa.grad(loss, w2)   # final after the mul by w2: sigmoid and the mul by w1 remain
    for node in counter.nodes:
        assert (node.saved is None) == (counter.visited(node) == 1), node
    assert any(node.saved is not None for node in counter.nodes)
    assert saved() is None     # exp was passed


def test_an_unfinished_sweep_is_freed_with_its_output(rng):
    x = fa.tensor(rng.standard_normal(4))
    w1, w2 = fa.Parameter(rng.standard_normal(4)), fa.Parameter(rng.standard_normal(4))
    s = fa.sigmoid(x * w1)   # saved by sigmoid's node, which the sweep will not reach
    saved = weakref.ref(s.value)
    loss = fa.sum(fa.exp(s * w2))
    del s
    fa.grad(loss, w2)
    sweep = weakref.ref(loss._sweep)
    gc.collect()
    assert saved() is not None
    del loss
    gc.collect()
    assert saved() is None and sweep() is None


# --- no_grad ---------------------------------------------------------------------------------

def test_no_grad_context_records_nothing_and_restores(rng):
    w = fa.Parameter(rng.standard_normal(3))
    with fa.no_grad():
        inside = w * 2.0
        assert not fa.is_grad_enabled()
    after = w * 2.0
    assert inside._node is None and not inside.requires_grad
    assert after._node is not None
    with pytest.raises(KeyError):
        with fa.no_grad():
            raise KeyError
    assert (w * 2.0)._node is not None


def _decorated_function():
    @fa.no_grad
    def plain(w):
        return w * 2.0
    return plain


def _decorated_with_call():
    @fa.no_grad()
    def called(w):
        return w * 2.0
    return called


def _decorated_method():
    class Model:
        @fa.no_grad
        def predict(self, w):
            return w * 2.0
    return Model().predict


@pytest.mark.parametrize("make", [_decorated_function, _decorated_with_call, _decorated_method],
                         ids=["@no_grad", "@no_grad()", "@no_grad_on_method"])
def test_no_grad_as_decorator(make, rng):
    fn = make()
    w = fa.Parameter(rng.standard_normal(3))
    out = fn(w)
    np.testing.assert_array_equal(out.value, 2 * w.value)
    assert out._node is None
    assert (w * 2.0)._node is not None, "recording resumes after the call"
    assert fn(w)._node is None, "the decorator works more than once"


def _in_other_thread(mode, work):
    """Run work() here while another thread sits inside `mode`, then in another thread
    while this one sits inside it; returns both results, by situation."""
    entered, done = threading.Event(), threading.Event()
    results = {}

    def inside_mode():
        with mode():
            entered.set()
            done.wait(10)

    thread = threading.Thread(target=inside_mode)
    thread.start()
    entered.wait(10)
    try:
        results["here_while_other_in_mode"] = work()
    finally:
        done.set()
        thread.join()

    def other():
        results["other_while_here_in_mode"] = work()

    with mode():
        thread = threading.Thread(target=other)
        thread.start()
        thread.join()
    return results


def test_no_grad_is_thread_local(rng):
    w = fa.Parameter(rng.standard_normal(3))
    results = _in_other_thread(fa.no_grad, lambda: (w * 2.0)._node is not None)
    assert results == {"here_while_other_in_mode": True, "other_while_here_in_mode": True}


# --- detect_anomaly ----------------------------------------------------------------------------

def test_detect_anomaly_in_forward_names_the_op():
    x = fa.Parameter(np.array([1.0, -1.0]))
    with fa.detect_anomaly(), np.errstate(invalid="ignore"):
        with pytest.raises(FloatingPointError, match=r"\blog\b"):
            fa.log(x)
    with np.errstate(invalid="ignore"):
        assert np.isnan(fa.log(x).value[1])   # outside: IEEE NaN, no error


def test_detect_anomaly_in_backward_names_the_op():
    x = fa.Parameter(np.array([0.0, 4.0]))
    loss = fa.sum(fa.sqrt(x) * 3.0)          # forward is finite: sqrt(0) = 0
    with fa.detect_anomaly(), np.errstate(divide="ignore"):
        with pytest.raises(FloatingPointError, match=r"\bsqrt\b"):
            fa.grad(loss, x, retain_graph=True)
    with np.errstate(divide="ignore"):
        g = fa.grad(fa.sum(fa.sqrt(x) * 3.0), x)
    assert np.isinf(g[0]) and g[1] == 0.75


def test_detect_anomaly_is_thread_local():
    def log_of_negative():
        with np.errstate(invalid="ignore"):
            try:
                return bool(np.isnan(fa.log(fa.tensor([-1.0])).value[0]))
            except FloatingPointError:
                return "raised"
    results = _in_other_thread(fa.detect_anomaly, log_of_negative)
    assert results == {"here_while_other_in_mode": True, "other_while_here_in_mode": True}


# --- in-place updates of recorded leaves ---------------------------------------------------

def optimizer_step(p, g, lr=0.1):
    """What fa.optim does to a parameter: update in place and stamp it as modified."""
    p.value -= lr * g
    mark_modified(p)


@pytest.mark.parametrize("how", ["grad", "backward"])
def test_sweep_after_an_in_place_update_raises(how, chain):
    # a second graph over w1, recorded before the update and sharing no node with loss
    other = fa.sum(fa.sigmoid(chain.x @ chain.w1))
    optimizer_step(chain.w1, fa.grad(chain.loss, chain.w1))
    with pytest.raises(RuntimeError):
        fa.grad(other, chain.w1) if how == "grad" else other.backward()


def test_a_fresh_forward_after_an_update_is_fine(rng):
    w = fa.Parameter(rng.standard_normal(3))
    optimizer_step(w, fa.grad(fa.sum(w * w), w))
    assert_grads(fa.grad(fa.sum(w * w), w), 2 * w.value)
