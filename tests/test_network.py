"""The network from the issue (small sizes): gradients against PyTorch, one sweep however
the gradients are asked for, the log(softmax) rewrite, and no work for the data."""
import types

import numpy as np
import pytest

import fastad as fa
import fastad.kernels.gemm

SIZES = (64, 32, 24, 16, 10)
BATCH = 16
NAMES = ("w", "b", "w2", "b2", "w3", "b3", "w4", "b4")   # forward (layer) order
ISSUE_ORDER = ("w", "w2", "w3", "w4", "b", "b2", "b3", "b4")


def make_data(dtype, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((BATCH, SIZES[0])).astype(dtype)
    y = rng.integers(0, SIZES[-1], BATCH)
    weights = {}
    for layer, (fan_in, fan_out) in enumerate(zip(SIZES, SIZES[1:])):
        suffix = str(layer + 1) if layer else ""
        scale = 1 / np.sqrt(fan_in)
        weights["w" + suffix] = (scale * rng.standard_normal((fan_in, fan_out))).astype(dtype)
        weights["b" + suffix] = (0.1 * rng.standard_normal(fan_out)).astype(dtype)
    return X, y, weights


def forward(F, x, p, y):
    """The issue's network, written once for fastad and for PyTorch."""
    L1 = F.sigmoid(F.dot(x, p["w"]) + p["b"])
    L2 = F.sigmoid(F.dot(L1, p["w2"]) + p["b2"])
    L3 = F.sigmoid(F.dot(L2, p["w3"]) + p["b3"])
    L4 = F.dot(L3, p["w4"]) + p["b4"]
    return -F.mean(F.log(F.softmax(L4))[np.arange(len(y)), y])


def torch_ops(torch):
    return types.SimpleNamespace(dot=torch.matmul, sigmoid=torch.sigmoid, log=torch.log,
                                 softmax=lambda x: torch.softmax(x, dim=-1), mean=torch.mean)


def fastad_forward(dtype, data=fa.tensor):
    """A fresh forward pass (same data and weights every time): (loss, params, x)."""
    X, y, weights = make_data(dtype)
    params = {name: fa.Parameter(value) for name, value in weights.items()}
    x = data(X)
    return forward(fa, x, params, y), params, x


def test_gradients_match_torch(dtype, torch, assert_close):
    X, y, weights = make_data(dtype)
    loss, params, _ = fastad_forward(dtype)
    grads = fa.grad(loss, [params[n] for n in ISSUE_ORDER])

    theirs = {n: torch.tensor(v, requires_grad=True) for n, v in weights.items()}
    expected_loss = forward(torch_ops(torch), torch.from_numpy(X), theirs, y)
    expected = torch.autograd.grad(expected_loss, [theirs[n] for n in ISSUE_ORDER])

    assert_close(loss.value, expected_loss.detach().numpy(), dtype)
    for name, g, e in zip(ISSUE_ORDER, grads, expected):
        assert g.dtype == dtype, name
        assert_close(g, e.numpy(), dtype)


GROUPINGS = {
    "joint": [NAMES],
    "one_by_one_forward": [[n] for n in NAMES],
    "one_by_one_reverse": [[n] for n in reversed(NAMES)],
    "issue_order_singles": [[n] for n in ISSUE_ORDER],
    "mixed": [["w4", "b"], ["w2"], ["b4", "w3", "w"], ["b2", "b3"]],
    "mixed_with_repeats": [["b3"], ["w", "w4", "b3"], ["b", "b2", "b4", "w2", "w3", "w"]],
    "first_layer_first": [["w", "b"], ["w4", "b4", "w3", "b3", "w2", "b2"]],
}


@pytest.mark.parametrize("grouping", GROUPINGS.values(), ids=GROUPINGS.keys())
def test_any_grouping_gives_identical_arrays_from_one_sweep(grouping, dtype, count_vjps):
    loss, params, _ = fastad_forward(dtype)
    joint = dict(zip(NAMES, fa.grad(loss, [params[n] for n in NAMES])))

    loss, params, _ = fastad_forward(dtype)   # fresh forward, same weights
    counter = count_vjps(loss)
    got = {}
    for group in grouping:
        got.update(zip(group, fa.grad(loss, [params[n] for n in group])))

    assert set(got) == set(NAMES)
    for name in NAMES:
        assert np.array_equal(got[name], joint[name]), name
    assert all(counter.visited(node) == 1 for node in counter.nodes), "not one sweep"


def test_backward_gives_the_joint_arrays(dtype):
    loss, params, _ = fastad_forward(dtype)
    joint = fa.grad(loss, [params[n] for n in NAMES])
    loss, params, _ = fastad_forward(dtype)
    loss.backward()
    for name, g in zip(NAMES, joint):
        assert np.array_equal(params[name].grad, g), name


@pytest.mark.parametrize("data", [fa.tensor, np.asarray], ids=["tensor", "ndarray"])
def test_no_gemm_for_the_data(data, dtype, monkeypatch):
    """The backward runs exactly 7 GEMMs: 4 dW and 3 dX, none for the data x."""
    loss, params, x = fastad_forward(dtype, data)
    calls = []
    gemm = fastad.kernels.gemm.gemm

    def counting_gemm(a, b, out, accumulate, column_major=False):
        calls.append(out.shape)
        return gemm(a, b, out, accumulate, column_major)

    monkeypatch.setattr(fastad.kernels.gemm, "gemm", counting_gemm)
    fa.grad(loss, [params[n] for n in NAMES])

    weight_shapes = [(i, o) for i, o in zip(SIZES, SIZES[1:])]
    hidden_shapes = [(BATCH, o) for o in SIZES[1:-1]]
    assert sorted(calls) == sorted(weight_shapes + hidden_shapes)
    assert (BATCH, SIZES[0]) not in calls


# --- log(softmax(x)) is computed as log_softmax(x) ----------------------------------------

EXTREME_LOGITS = np.array([[1000.0, 0.0, -1000.0],
                           [-1000.0, 1000.0, 0.0],
                           [0.5, -0.25, 3.0]])


def log_softmax_ref(x, axis=-1):
    shifted = x - x.max(axis=axis, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))


@pytest.mark.parametrize("axis", [-1, 0])
def test_log_of_softmax_is_log_softmax_for_extreme_logits(axis, dtype, rng, assert_close):
    logits = EXTREME_LOGITS.astype(dtype)
    weights = rng.standard_normal(logits.shape).astype(dtype)
    expected_value = log_softmax_ref(logits.astype(np.float64), axis)
    # d/dx sum(W * log_softmax(x)) = W - softmax(x) * sum(W) along the axis
    expected_grad = weights - np.exp(expected_value) * weights.sum(axis=axis, keepdims=True)

    results = {}
    for name, op in {"log_of_softmax": lambda t: fa.log(fa.softmax(t, axis=axis)),
                     "log_softmax": lambda t: fa.log_softmax(t, axis=axis)}.items():
        x = fa.tensor(logits, requires_grad=True)
        out = op(x)
        g = fa.grad(fa.sum(out * weights), x)
        assert np.all(np.isfinite(out.value)) and np.all(np.isfinite(g)), name
        assert_close(out.value, expected_value, dtype)
        assert_close(g, expected_grad, dtype)
        results[name] = (out.value, g)
    np.testing.assert_array_equal(results["log_of_softmax"][0], results["log_softmax"][0])
    np.testing.assert_array_equal(results["log_of_softmax"][1], results["log_softmax"][1])


def test_seed_loss_is_finite_where_softmax_underflows(dtype, assert_close):
    logits = fa.tensor(EXTREME_LOGITS.astype(dtype), requires_grad=True)
    labels = np.array([2, 0, 1])   # the classes whose softmax underflows to 0 in rows 0, 1
    loss = -fa.mean(fa.log(fa.softmax(logits))[np.arange(3), labels])
    expected = -log_softmax_ref(EXTREME_LOGITS)[np.arange(3), labels].mean()
    assert_close(loss.value, expected, dtype)
    g = fa.grad(loss, logits)
    onehot = np.eye(3)[labels]
    assert_close(g, (np.exp(log_softmax_ref(EXTREME_LOGITS)) - onehot) / 3, dtype)


def test_log_of_softmax_made_under_no_grad_records_nothing(rng):
    """The rewrite must not reach back through a softmax that was not recorded."""
    x = fa.tensor(rng.standard_normal((2, 3)), requires_grad=True)
    with fa.no_grad():
        probs = fa.softmax(x)
    out = fa.log(probs)
    assert out._node is None and not out.requires_grad
    np.testing.assert_allclose(out.value, log_softmax_ref(x.value), rtol=1e-12)
