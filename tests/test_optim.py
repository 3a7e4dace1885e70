"""fa.optim: SGD, Adam and AdamW against PyTorch, against the written formulas, and their
contract (skipped None grads, in-place updates without allocation, version bumps, bad
input, hyperparameters and state checked at every step, state_dict round trips).

Run as a script (`python tests/test_optim.py N`), this file is the child process of the
optimizer-state campaign at its end (N cases, case k seeded with k).
"""
import copy
import os
import re
import subprocess
import sys
import tracemalloc

import numpy as np
import pytest

import fastad as fa
from _layouts import LAYOUTS

SHAPES = [(7, 5), (5,)]
STEPS = 100
# The second parameter has no gradient on these steps (0-based): it must be skipped,
# and with Adam its own step count must not advance.
NO_GRAD_STEPS = {0, 3, 50}

SGD_CONFIGS = [
    dict(lr=0.1),
    dict(lr=0.1, momentum=0.9),
    dict(lr=0.05, momentum=0.9, nesterov=True),
    dict(lr=0.1, weight_decay=0.01),
    dict(lr=0.1, momentum=0.5, weight_decay=0.1),
    dict(lr=0.02, momentum=0.95, weight_decay=0.05, nesterov=True),
]
ADAM_CONFIGS = [
    dict(),
    dict(lr=0.01),
    dict(lr=0.01, betas=(0.5, 0.9)),      # 1 - beta1 = 0.5: the other branch of torch's lerp
    dict(lr=0.01, betas=(0.0, 0.0)),
    dict(lr=0.02, betas=(0.8, 0.99), eps=1e-3),
    dict(lr=0.01, weight_decay=0.1),
    dict(lr=0.03, betas=(0.7, 0.95), eps=1e-6, weight_decay=0.05),
]
ADAMW_CONFIGS = [
    dict(),
    dict(lr=0.01, weight_decay=0.0),
    dict(lr=0.01, betas=(0.5, 0.9), weight_decay=0.1),
    dict(lr=0.03, betas=(0.7, 0.95), eps=1e-6, weight_decay=0.05),
]
CASES = ([("SGD", c) for c in SGD_CONFIGS] + [("Adam", c) for c in ADAM_CONFIGS]
         + [("AdamW", c) for c in ADAMW_CONFIGS])
CASE_IDS = [f"{name}-{'-'.join(f'{k}={v}' for k, v in c.items()) or 'defaults'}"
            for name, c in CASES]


def problem(dtype, seed=0):
    """Initial values and a per-step list of gradients (None where skipped)."""
    rng = np.random.default_rng(seed)
    initial = [rng.standard_normal(s).astype(dtype) for s in SHAPES]
    grads = []
    for step in range(STEPS):
        grads.append([rng.standard_normal(s).astype(dtype)
                      if not (i == 1 and step in NO_GRAD_STEPS) else None
                      for i, s in enumerate(SHAPES)])
    return initial, grads


def run_fastad(name, config, initial, grads):
    params = [fa.Parameter(v) for v in initial]
    opt = getattr(fa.optim, name)(params, **config)
    for step_grads in grads:
        for p, g in zip(params, step_grads):
            p.grad = None if g is None else g.copy()
        opt.step()
    return params, opt


# --- agreement with PyTorch ---------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name, config", CASES, ids=CASE_IDS)
def test_matches_torch(name, config, dtype):
    torch = pytest.importorskip("torch")
    initial, grads = problem(dtype)
    params, opt = run_fastad(name, config, initial, grads)

    tparams = [torch.tensor(v.copy(), requires_grad=True) for v in initial]
    topt = getattr(torch.optim, name)(tparams, foreach=False, **config)
    for step_grads in grads:
        for p, g in zip(tparams, step_grads):
            p.grad = None if g is None else torch.tensor(g)
        topt.step()

    # Identical formulas; PyTorch's vectorised kernels fuse some multiply-adds (FMA), so
    # results agree to a few units of rounding of the values involved, not bit for bit.
    eps = np.finfo(dtype).eps

    def close(ours, theirs):
        theirs = theirs.detach().numpy()
        assert ours.dtype == theirs.dtype
        np.testing.assert_allclose(ours, theirs, rtol=0,
                                   atol=16 * eps * max(1.0, np.abs(theirs).max()))

    for p, tp in zip(params, tparams):
        close(p.value, tp)
    for i, tp in enumerate(tparams):
        state = topt.state[tp]
        if name == "SGD" and config.get("momentum"):
            close(opt.momentum_buffers[i], state["momentum_buffer"])
        if name in ("Adam", "AdamW"):
            close(opt.exp_avgs[i], state["exp_avg"])
            close(opt.exp_avg_sqs[i], state["exp_avg_sq"])
            assert opt.steps[i] == int(state["step"])


# --- agreement with the written formulas ---------------------------------------------

def sgd_reference(p, grads, lr, momentum=0.0, weight_decay=0.0, nesterov=False):
    """torch.optim.SGD's documented algorithm (dampening 0), in float64."""
    buf = None
    for g in grads:
        d = g + weight_decay * p
        if momentum:
            buf = d if buf is None else momentum * buf + d
            d = d + momentum * buf if nesterov else buf
        p = p - lr * d
    return p


def adam_reference(p, grads, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
    """torch.optim.Adam's documented algorithm (amsgrad off), in float64."""
    b1, b2 = betas
    m = v = 0.0
    for t, g in enumerate(grads, start=1):
        d = g + weight_decay * p
        m = b1 * m + (1 - b1) * d
        v = b2 * v + (1 - b2) * d * d
        m_hat, v_hat = m / (1 - b1 ** t), v / (1 - b2 ** t)
        p = p - lr * m_hat / (np.sqrt(v_hat) + eps)
    return p


def adamw_reference(p, grads, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2):
    """torch.optim.AdamW's documented algorithm (amsgrad off), in float64."""
    b1, b2 = betas
    m = v = 0.0
    for t, g in enumerate(grads, start=1):
        p = p * (1 - lr * weight_decay)
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        m_hat, v_hat = m / (1 - b1 ** t), v / (1 - b2 ** t)
        p = p - lr * m_hat / (np.sqrt(v_hat) + eps)
    return p


REFERENCES = {"SGD": sgd_reference, "Adam": adam_reference, "AdamW": adamw_reference}


@pytest.mark.parametrize("name, config", CASES, ids=CASE_IDS)
def test_matches_documented_formula(name, config):
    initial, grads = problem(np.float64, seed=1)
    params, _ = run_fastad(name, config, initial, grads)
    reference = REFERENCES[name]
    for i, p in enumerate(params):
        own = [step[i] for step in grads if step[i] is not None]
        np.testing.assert_allclose(p.value, reference(initial[i], own, **config),
                                   rtol=1e-12, atol=1e-14)


def steps(opt, param, grads):
    """Values of `param` after each step with the given gradients."""
    values = []
    for g in grads:
        param.grad = np.array(g, dtype=param.dtype)
        opt.step()
        values.append(param.value.copy())
    return values


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_sgd_by_hand(dtype):
    p = fa.Parameter(np.array([1.0, -2.0], dtype))
    after = steps(fa.optim.SGD([p], lr=0.1), p, [[0.5, 0.25]])
    np.testing.assert_allclose(after[0], [0.95, -2.025], rtol=1e-6)

    # momentum 0.9: buf = 0.5, p = 1 - 0.05; then buf = 0.9 * 0.5 + 0.5 = 0.95, p -= 0.095
    p = fa.Parameter(np.array([1.0], dtype))
    after = steps(fa.optim.SGD([p], lr=0.1, momentum=0.9), p, [[0.5], [0.5]])
    np.testing.assert_allclose(np.ravel(after), [0.95, 0.855], rtol=1e-6)

    # Nesterov: d = g + 0.9 * buf: 0.5 + 0.45 = 0.95, then 0.5 + 0.9 * 0.95 = 1.355
    p = fa.Parameter(np.array([1.0], dtype))
    after = steps(fa.optim.SGD([p], lr=0.1, momentum=0.9, nesterov=True), p, [[0.5], [0.5]])
    np.testing.assert_allclose(np.ravel(after), [0.905, 0.7695], rtol=1e-6)

    # weight decay 0.1 adds 0.1 * p = 0.1 to the gradient: p = 1 - 0.1 * 0.6
    p = fa.Parameter(np.array([1.0], dtype))
    after = steps(fa.optim.SGD([p], lr=0.1, weight_decay=0.1), p, [[0.5]])
    np.testing.assert_allclose(after[0], [0.94], rtol=1e-6)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_adam_by_hand(dtype):
    # With a constant gradient the bias-corrected moments are exactly g and g*g, so with
    # eps = 0 every step moves each entry by exactly lr against the sign of its gradient.
    p = fa.Parameter(np.array([1.0, 1.0, -1.0], dtype))
    after = steps(fa.optim.Adam([p], lr=0.1, eps=0.0), p, [[0.5, -3.0, 1e-3]] * 3)
    np.testing.assert_allclose(after, [[0.9, 1.1, -1.1], [0.8, 1.2, -1.2], [0.7, 1.3, -1.3]],
                               rtol=1e-6)

    # L2 weight decay enters the gradient: d = -0.05 + 0.1 * 1 = 0.05 > 0, so p goes down by
    # lr (decoupled AdamW decay would give 1 - 0.1 * 0.1 + 0.1 = 1.09 instead).
    p = fa.Parameter(np.array([1.0], dtype))
    after = steps(fa.optim.Adam([p], lr=0.1, eps=0.0, weight_decay=0.1), p, [[-0.05]])
    np.testing.assert_allclose(after[0], [0.9], rtol=1e-6)

    # eps is added to sqrt(v_hat) = |g|: the first step is lr * g / (|g| + eps).
    p = fa.Parameter(np.array([0.0], dtype))
    after = steps(fa.optim.Adam([p], lr=1.0, eps=1.0), p, [[3.0]])
    np.testing.assert_allclose(after[0], [-0.75], rtol=1e-6)


# --- the contract --------------------------------------------------------------------

@pytest.mark.parametrize("make", [lambda ps: fa.optim.SGD(ps, lr=0.1, momentum=0.9),
                                  lambda ps: fa.optim.Adam(ps, lr=0.1)], ids=["SGD", "Adam"])
def test_none_grad_is_skipped(make):
    a, b = fa.Parameter(np.ones(3)), fa.Parameter(np.ones(2))
    opt = make([a, b])
    a.grad = np.full(3, 0.5)
    opt.step()
    assert not np.array_equal(a.value, np.ones(3))
    np.testing.assert_array_equal(b.value, np.ones(2))
    assert a._modified_at >= 0 and b._modified_at == -1


def test_step_updates_in_place_without_allocating():
    value = np.random.default_rng(0).standard_normal((256, 256))   # 512 KiB
    for opt_class, config in [(fa.optim.SGD, dict(lr=0.1, momentum=0.9, weight_decay=0.1,
                                                  nesterov=True)),
                              (fa.optim.Adam, dict(lr=0.1, weight_decay=0.1))]:
        p = fa.Parameter(value)
        array = p.value
        opt = opt_class([p], **config)
        p.grad = np.ones_like(value)
        opt.step()
        tracemalloc.start()
        try:
            for _ in range(5):
                opt.step()
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert peak < 64 * 1024, f"{opt_class.__name__} allocated {peak} bytes per step"
        assert p.value is array
        assert not np.array_equal(array, value)
    np.testing.assert_array_equal(value, np.random.default_rng(0).standard_normal((256, 256)))


def test_every_step_stamps_the_parameter_as_modified():
    p = fa.Parameter(np.ones(4))
    opt = fa.optim.Adam([p])
    for _ in range(3):
        before = p._modified_at
        p.grad = np.ones(4)
        opt.step()
        assert p._modified_at > before


def make_model(rng=0):
    return fa.nn.Sequential(fa.nn.Linear(3, 5, dtype=np.float64, rng=rng), fa.nn.Tanh(),
                            fa.nn.Linear(5, 2, dtype=np.float64, rng=rng + 1))


def test_step_between_recording_and_sweeping_raises():
    x = np.random.default_rng(0).standard_normal((4, 3))
    y = np.array([0, 1, 1, 0])
    model = make_model()
    opt = fa.optim.SGD(model.parameters(), lr=0.1)
    fa.cross_entropy(model(x), y).backward()
    stale = fa.cross_entropy(model(x), y)      # recorded before the update
    opt.step()
    with pytest.raises(RuntimeError, match="modified in place"):
        stale.backward()
    stale = fa.cross_entropy(model(x), y)
    model[0].weight.grad = np.ones((5, 3))
    opt.step()
    with pytest.raises(RuntimeError, match="modified in place"):
        fa.grad(stale, model[0].weight)
    fresh = fa.cross_entropy(model(x), y)       # recorded after: fine
    assert fa.grad(fresh, model[0].weight).shape == (5, 3)


def test_zero_grad_sets_none():
    model = make_model()
    opt = fa.optim.Adam(model.parameters())
    fa.cross_entropy(model(np.ones((2, 3))), [0, 1]).backward()
    assert all(p.grad is not None for p in model.parameters())
    opt.zero_grad()
    assert all(p.grad is None for p in model.parameters())


def test_lr_can_change_between_steps():
    p = fa.Parameter(np.array([1.0]))
    opt = fa.optim.SGD([p], lr=0.1)
    opt.lr = 0.5
    steps(opt, p, [[1.0]])
    np.testing.assert_allclose(p.value, [0.5])


@pytest.mark.parametrize("make", [
    lambda ps: fa.optim.SGD(ps, lr=-0.1),
    lambda ps: fa.optim.SGD(ps, lr=float("nan")),
    lambda ps: fa.optim.SGD(ps, lr=0.1, momentum=-0.9),
    lambda ps: fa.optim.SGD(ps, lr=0.1, weight_decay=-1e-4),
    lambda ps: fa.optim.SGD(ps, lr=0.1, nesterov=True),
    lambda ps: fa.optim.Adam(ps, lr=-1e-3),
    lambda ps: fa.optim.Adam(ps, eps=-1e-8),
    lambda ps: fa.optim.Adam(ps, weight_decay=-0.1),
    lambda ps: fa.optim.Adam(ps, betas=(1.0, 0.999)),
    lambda ps: fa.optim.Adam(ps, betas=(0.9, 1.0)),
    lambda ps: fa.optim.Adam(ps, betas=(-0.1, 0.999)),
    lambda ps: fa.optim.Adam(ps, betas=(0.9, -0.5)),
])
def test_invalid_hyperparameters(make):
    with pytest.raises(ValueError, match="Invalid|Nesterov"):
        make([fa.Parameter(np.ones(2))])


def test_invalid_parameter_lists():
    p = fa.Parameter(np.ones(2))
    with pytest.raises(ValueError, match="empty"):
        fa.optim.SGD([], lr=0.1)
    with pytest.raises(ValueError, match="more than once"):
        fa.optim.Adam([p, p])
    with pytest.raises(TypeError, match="single Tensor"):
        fa.optim.Adam(p)
    with pytest.raises(TypeError, match="params\\[1\\]"):
        fa.optim.Adam([p, np.ones(2)])
    with pytest.raises(ValueError, match="requires grad"):
        fa.optim.Adam([fa.tensor(np.ones(2))])


def test_bad_gradients_are_rejected_before_any_update():
    good, p = fa.Parameter(np.ones(2)), fa.Parameter(np.ones(3))
    opt = fa.optim.Adam([good, p])
    good.grad = np.ones(2)
    with pytest.raises(TypeError, match=r"Tensor\.grad: cannot assign float32"):
        p.grad = np.ones(3, np.float32)
    with pytest.raises(ValueError, match=r"Tensor\.grad: cannot assign an array of shape \(4,\)"):
        p.grad = np.ones(4)
    p.grad = np.ones(3)
    p.grad.shape = (3, 1)  # reshaped in place, behind the setter's back
    with pytest.raises(ValueError, match=r"params\[1\]\.grad has shape \(3, 1\)"):
        opt.step()
    for param in (good, p):
        np.testing.assert_array_equal(param.value, np.ones(param.shape))
        assert param._modified_at == -1


def test_non_contiguous_gradient_is_read_correctly():
    p = fa.Parameter(np.zeros((3, 4)))
    g = np.arange(12.0).reshape(4, 3).T       # Fortran-ordered view
    p.grad = g
    fa.optim.SGD([p], lr=1.0).step()
    np.testing.assert_array_equal(p.value, -g)


def test_adamw_by_hand(dtype):
    # Decoupled decay first shrinks p to 1 - 0.1 * 0.1 = 0.99, then Adam's first step
    # moves it by lr against the gradient's sign: 0.99 + 0.1 (L2 Adam would give 0.9).
    p = fa.Parameter(np.array([1.0], dtype))
    after = steps(fa.optim.AdamW([p], lr=0.1, eps=0.0, weight_decay=0.1), p, [[-0.05]])
    np.testing.assert_allclose(after[0], [1.09], rtol=1e-6)
    q = fa.Parameter(np.array([1.0], dtype))
    opt = fa.optim.AdamW([q])
    assert (opt.lr, opt.betas, opt.eps, opt.weight_decay) == (1e-3, (0.9, 0.999), 1e-8, 1e-2)


def test_adamw_without_weight_decay_is_adam_even_with_an_infinite_lr():
    # PyTorch skips the decay when weight_decay == 0: no 1 - inf * 0 = NaN scale.
    values = []
    for make in (fa.optim.Adam, fa.optim.AdamW):
        p = fa.Parameter(np.array([1.0, -2.0]))
        opt = make([p], lr=float("inf"), weight_decay=0.0)
        p.grad = np.array([0.5, 0.0])
        with np.errstate(invalid="ignore"):
            opt.step()
        values.append(p.value)
    np.testing.assert_array_equal(values[0], values[1])
    assert values[1][0] == -np.inf


# --- hyperparameters changed between steps --------------------------------------------

def sgd_trajectory(momenta, dtype=np.float64, seed=2):
    """Values of one SGD parameter over len(momenta) steps, opt.momentum set before each."""
    rng = np.random.default_rng(seed)
    p = fa.Parameter(rng.standard_normal(6).astype(dtype))
    opt = fa.optim.SGD([p], lr=0.05, momentum=momenta[0])
    values = []
    for momentum in momenta:
        opt.momentum = momentum
        p.grad = rng.standard_normal(6).astype(dtype)
        opt.step()
        values.append(p.value.copy())
    return values


MOMENTA = [0.0] * 30 + [0.9] * 30 + [0.0] * 20 + [0.5] * 20   # 100 steps


def test_momentum_set_after_construction_takes_effect():
    # Written formula: the buffer starts as the first gradient seen with momentum != 0,
    # keeps its value while momentum is 0 and is used again when momentum returns.
    rng = np.random.default_rng(2)
    p = rng.standard_normal(6)
    buf = None
    expected = []
    for momentum in MOMENTA:
        d = rng.standard_normal(6)
        if momentum:
            buf = d if buf is None else momentum * buf + d
            d = buf
        p = p - 0.05 * d
        expected.append(p)
    np.testing.assert_allclose(sgd_trajectory(MOMENTA), expected, rtol=1e-12, atol=1e-14)


def test_momentum_set_after_construction_matches_torch(torch, dtype):
    rng = np.random.default_rng(2)
    tp = torch.tensor(rng.standard_normal(6).astype(dtype), requires_grad=True)
    topt = torch.optim.SGD([tp], lr=0.05, momentum=0.0, foreach=False)
    theirs = []
    for momentum in MOMENTA:
        topt.param_groups[0]["momentum"] = momentum
        tp.grad = torch.tensor(rng.standard_normal(6).astype(dtype))
        topt.step()
        theirs.append(tp.detach().numpy().copy())
    ours = sgd_trajectory(MOMENTA, dtype)
    eps = np.finfo(dtype).eps
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=64 * eps * np.abs(theirs).max())


def test_hyperparameters_read_at_each_step_match_a_fresh_optimizer():
    # lr, betas, eps and weight_decay changed between steps act like an optimizer built
    # with them, holding the same state.
    rng = np.random.default_rng(3)
    value, grads = rng.standard_normal(5), rng.standard_normal((4, 5))
    p = fa.Parameter(value)
    opt = fa.optim.Adam([p], lr=0.01)
    q = fa.Parameter(value)
    for k, g in enumerate(grads):
        config = dict(lr=0.01 * (k + 1), betas=(0.8, 0.99 - 0.01 * k), eps=1e-6 * k,
                      weight_decay=0.1 * k)
        for name, setting in config.items():
            setattr(opt, name, setting)
        fresh = fa.optim.Adam([q], **config)
        fresh.exp_avgs, fresh.exp_avg_sqs, fresh.steps = (
            [opt.exp_avgs[0].copy()], [opt.exp_avg_sqs[0].copy()], list(opt.steps))
        p.grad, q.grad = g.copy(), g.copy()
        opt.step()
        fresh.step()
        np.testing.assert_array_equal(p.value, q.value)


def state_of(opt):
    """Copies of everything a step may change: values, their stamps, the state."""
    return copy.deepcopy(([p.value for p in opt.params], [p._modified_at for p in opt.params],
                          {k: getattr(opt, k) for k in opt._state_attributes()}))


def assert_same(a, b):
    """a == b, through lists, tuples and dicts; arrays of one dtype and shape with equal
    values (NaN equal to NaN)."""
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            assert_same(x, y)
    elif isinstance(a, dict):
        assert a.keys() == b.keys()
        for key in a:
            assert_same(a[key], b[key])
    elif isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        np.testing.assert_array_equal(a, b, strict=True)
    else:
        assert a == b or (a != a and b != b), (a, b)


def stepped_optimizer(name, **config):
    """An optimizer over two parameters, after one step (SGD: lr 0.1 by default)."""
    params = [fa.Parameter(np.ones(3)), fa.Parameter(np.ones((2, 2)))]
    if name == "SGD":
        config = {"lr": 0.1, **config}
    opt = getattr(fa.optim, name)(params, **config)
    for p in params:
        p.grad = np.full(p.shape, 0.5)
    opt.step()
    return opt


@pytest.mark.parametrize("name, config, attribute, value, error, pattern", [
    ("SGD", {}, "lr", float("nan"), ValueError, r"SGD: Invalid lr: nan \(must be >= 0\)"),
    ("SGD", {}, "lr", -0.1, ValueError, r"SGD: Invalid lr: -0.1"),
    ("SGD", {}, "lr", None, TypeError, r"SGD: lr must be a real number, got None"),
    ("SGD", {}, "lr", "0.1", TypeError, r"SGD: lr must be a real number, got '0.1'"),
    ("SGD", {}, "lr", True, TypeError, r"SGD: lr must be a real number"),
    ("SGD", {}, "lr", 10 ** 400, ValueError, r"SGD: Invalid lr: 1000.*too large"),
    ("SGD", {}, "momentum", -0.9, ValueError, r"SGD: Invalid momentum: -0.9"),
    ("SGD", {}, "weight_decay", float("-inf"), ValueError, r"SGD: Invalid weight_decay"),
    ("SGD", {}, "nesterov", True, ValueError, r"SGD: Nesterov momentum requires"),
    ("SGD", dict(momentum=0.9), "nesterov", "yes", TypeError,
     r"SGD: nesterov must be True or False"),
    ("Adam", {}, "lr", None, TypeError, r"Adam: lr must be a real number, got None"),
    ("Adam", {}, "betas", (1.0, 0.9), ValueError,
     r"Adam: Invalid beta parameter at index 0: 1.0 \(must be in \[0, 1\)\)"),
    ("Adam", {}, "betas", (0.9, float("nan")), ValueError, r"index 1: nan"),
    ("Adam", {}, "betas", 0.9, TypeError, r"Adam: betas must be a pair"),
    ("Adam", {}, "betas", (0.9, None), TypeError, r"Adam: betas\[1\] must be a real"),
    ("Adam", {}, "eps", -1e-8, ValueError, r"Adam: Invalid eps: -1e-08"),
    ("Adam", {}, "weight_decay", float("nan"), ValueError, r"Adam: Invalid weight_decay"),
    ("AdamW", {}, "weight_decay", float("nan"), ValueError, r"AdamW: Invalid weight_decay"),
])
def test_bad_hyperparameter_raises_at_step_before_anything_changes(
        name, config, attribute, value, error, pattern):
    opt = stepped_optimizer(name, **config)
    setattr(opt, attribute, value)
    for p in opt.params:
        p.grad = np.full(p.shape, 0.25)
    before = state_of(opt)
    with pytest.raises(error, match=pattern):
        opt.step()
    assert_same(state_of(opt), before)


def test_infinite_hyperparameters_are_accepted_as_in_torch():
    # PyTorch's constructors accept lr = inf (and so on): IEEE arithmetic follows.
    p = fa.Parameter(np.ones(2))
    opt = fa.optim.SGD([p], lr=float("inf"))
    p.grad = np.array([1.0, 0.0])
    with np.errstate(invalid="ignore"):
        opt.step()
    assert p.value[0] == -np.inf and np.isnan(p.value[1])


def test_repr_shows_the_attributes():
    opt = fa.optim.SGD([fa.Parameter(np.ones(2))], lr=0.1)
    opt.momentum = 0.9
    assert repr(opt) == "SGD(1 parameters, lr=0.1, momentum=0.9, weight_decay=0.0, nesterov=False)"


# --- state buffers replaced by hand: checked in a child, since a kernel writing past a
# --- buffer would crash the interpreter ---------------------------------------------

HERE = os.path.dirname(os.path.abspath(__file__))


def run_child(code):
    """Run `code` in a fresh interpreter (a crash fails the test); its stdout."""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300, cwd=HERE, env=os.environ)
    assert proc.returncode == 0, f"child exited {proc.returncode}:\n{proc.stderr[-4000:]}"
    return proc.stdout


STATE_CHILD = """
import numpy as np, fastad as fa

def made(name):
    p = fa.Parameter(np.linspace(-1, 1, 4096).reshape(64, 64))
    opt = getattr(fa.optim, name)([p], lr=0.1, **({{"momentum": 0.9}} if name == "SGD" else {{}}))
    for _ in range(2):
        p.grad = np.cos(p.value)
        opt.step()
    p.grad = np.sin(p.value)
    return opt, p

opt, p = made({name!r})
clean, q = made({name!r})
state = getattr(opt, {attribute!r})
{change}
before, stamp, steps = p.value.copy(), p._modified_at, list(getattr(opt, "steps", []))
try:
    opt.step()
except (TypeError, ValueError) as e:
    assert np.array_equal(p.value, before) and p._modified_at == stamp
    assert list(getattr(opt, "steps", [])) == steps
    print(type(e).__name__, e)
else:
    clean.step()
    assert np.array_equal(p.value, q.value), "differs from a clean optimizer"
    print("stepped")
"""

BUFFER_CHANGES = [
    ("state[0] = np.zeros((64, 64), np.float32)",
     r"TypeError .*{attribute}\[0\] has dtype float32, params\[0\] has dtype float64"),
    ("state[0] = np.zeros(8)",
     r"ValueError .*{attribute}\[0\] has shape \(8,\), params\[0\] has shape \(64, 64\)"),
    ("state[0] = np.zeros(1 << 16)", r"ValueError .*has shape \(65536,\)"),
    ("state[0] = state[0].tolist()", r"TypeError .*{attribute}\[0\] must be an ndarray, got list"),
    ("state[0] = None", r"TypeError .*{attribute}\[0\] must be an ndarray, got NoneType"),
    ("setattr(opt, {attribute!r}, state[0])", r"TypeError .*{attribute} must be a list"),
    ("setattr(opt, {attribute!r}, [])", r"ValueError .*{attribute} has 0 entries"),
    ("state[0] = np.asfortranarray(state[0])", "stepped"),
    ("state[0] = np.ascontiguousarray(state[0][:, ::-1])[:, ::-1]", "stepped"),
    ("state[0].flags.writeable = False", "stepped"),
    ("state[0] = np.repeat(state[0], 2, axis=1)[:, ::2]", "stepped"),
]
STATE_CASES = ([("SGD", "momentum_buffers", c, r) for c, r in BUFFER_CHANGES]
               + [("Adam", a, c, r) for a in ("exp_avgs", "exp_avg_sqs")
                  for c, r in BUFFER_CHANGES]
               + [("Adam", "steps", "state[0] = -1", r"ValueError .*steps\[0\]: -1"),
                  ("Adam", "steps", "state[0] = 2.0", r"TypeError .*steps\[0\] must be an int"),
                  ("Adam", "steps", "state[0] = None", r"TypeError .*steps\[0\] must be an int"),
                  ("Adam", "steps", "state[0] = 10 ** 400",
                   r"ValueError .*steps\[0\]: 1000.* \(must be in \[0, 2\*\*63\)\)"),
                  ("Adam", "steps", "setattr(opt, 'steps', (2,))", "stepped")])


@pytest.mark.parametrize("name, attribute, change, expected", STATE_CASES)
def test_replaced_state_is_checked_at_step(name, attribute, change, expected):
    change = change.format(attribute=attribute)
    code = STATE_CHILD.format(name=name, attribute=attribute, change=change)
    out = run_child(code)
    assert re.search(expected.format(attribute=attribute), out), out
    assert name in out or out.strip() == "stepped", out


def test_buffer_listed_twice_or_aliasing_a_parameter_is_copied():
    p, q = fa.Parameter(np.ones(3)), fa.Parameter(np.full(3, 2.0))
    opt = fa.optim.Adam([p, q], lr=0.1)
    ref = fa.optim.Adam([fa.Parameter(np.ones(3)), fa.Parameter(np.full(3, 2.0))], lr=0.1)
    shared = np.zeros(3)
    opt.exp_avgs = [shared, shared]
    opt.exp_avg_sqs = [p.value.copy() * 0, q.value]   # q's own array as q's buffer
    ref.exp_avg_sqs[1][...] = q.value
    for o in (opt, ref):
        for param in o.params:
            param.grad = np.array([1.0, -2.0, 3.0])
        o.step()
    for mine, theirs in zip(opt.params, ref.params):
        np.testing.assert_array_equal(mine.value, theirs.value)
    # The first listing stays the optimizer's state (updated in place), the second is a copy.
    assert opt.exp_avgs[0] is shared and opt.exp_avgs[1] is not shared
    assert opt.exp_avg_sqs[1] is not q.value


def test_sgd_buffers_created_when_momentum_is_set():
    p = fa.Parameter(np.ones(3))
    opt = fa.optim.SGD([p], lr=0.1)
    assert opt.momentum_buffers is None
    p.grad = np.ones(3)
    opt.step()
    assert opt.momentum_buffers is None
    opt.momentum = 0.9
    opt.step()
    np.testing.assert_array_equal(opt.momentum_buffers[0], np.ones(3))


def test_step_allocates_nothing_after_momentum_is_switched_on():
    p = fa.Parameter(np.ones((256, 256)))
    opt = fa.optim.SGD([p], lr=0.1)
    p.grad = np.ones((256, 256))
    opt.momentum = 0.9
    opt.step()
    tracemalloc.start()
    try:
        for _ in range(3):
            opt.step()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 64 * 1024


# --- state_dict ----------------------------------------------------------------------

def test_state_dict_layout_is_torch_s():
    opt = stepped_optimizer("SGD", lr=0.1, momentum=0.9, nesterov=True)
    state = opt.state_dict()
    assert state["param_groups"] == [dict(lr=0.1, momentum=0.9, weight_decay=0.0,
                                          nesterov=True, params=[0, 1])]
    assert list(state["state"]) == [0, 1]
    assert list(state["state"][1]) == ["momentum_buffer"]
    np.testing.assert_array_equal(state["state"][1]["momentum_buffer"], np.full((2, 2), 0.5))

    opt = stepped_optimizer("AdamW", betas=(0.8, 0.9))
    state = opt.state_dict()
    assert state["param_groups"] == [dict(lr=1e-3, betas=(0.8, 0.9), eps=1e-8,
                                          weight_decay=1e-2, params=[0, 1])]
    entry = state["state"][0]
    assert list(entry) == ["step", "exp_avg", "exp_avg_sq"] and entry["step"] == 1
    assert type(entry["step"]) is int and entry["exp_avg"].shape == (3,)

    assert fa.optim.SGD([fa.Parameter(np.ones(2))], lr=1).state_dict()["state"] == {}


def test_state_dict_matches_torch(torch):
    initial, grads = problem(np.float64)
    params, opt = run_fastad("Adam", dict(lr=0.01), initial, grads[:3])
    tparams = [torch.tensor(v.copy(), requires_grad=True) for v in initial]
    topt = torch.optim.Adam(tparams, lr=0.01, foreach=False)
    for step_grads in grads[:3]:
        for p, g in zip(tparams, step_grads):
            p.grad = None if g is None else torch.tensor(g)
        topt.step()
    ours, theirs = opt.state_dict(), topt.state_dict()
    assert ours["state"].keys() == theirs["state"].keys()
    for i, entry in ours["state"].items():
        assert entry.keys() == theirs["state"][i].keys()
        assert entry["step"] == int(theirs["state"][i]["step"])
    assert set(ours["param_groups"][0]) <= set(theirs["param_groups"][0])
    for key, value in ours["param_groups"][0].items():
        assert value == theirs["param_groups"][0][key]


@pytest.mark.parametrize("name", ["SGD", "Adam"])
def test_state_dict_is_not_changed_by_later_steps(name):
    opt = stepped_optimizer(name, lr=0.1, **({"momentum": 0.9} if name == "SGD" else {}))
    state = opt.state_dict()
    saved = copy.deepcopy(state)
    opt.lr = 0.5
    for _ in range(2):
        opt.step()
    for i, entry in saved["state"].items():
        for key, value in entry.items():
            np.testing.assert_array_equal(state["state"][i][key], value)
    assert state["param_groups"] == saved["param_groups"]


RESUME = [("SGD", dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01)),
          ("Adam", dict(lr=0.01, weight_decay=0.01)),
          ("AdamW", dict(lr=0.01, betas=(0.8, 0.99)))]


def train(model, opt, batches):
    for x, y in batches:
        opt.zero_grad()
        fa.cross_entropy(model(x), y).backward()
        opt.step()


def make_model_of(dtype, rng):
    return fa.nn.Sequential(fa.nn.Linear(4, 8, dtype=dtype, rng=rng), fa.nn.Tanh(),
                            fa.nn.Linear(8, 3, dtype=dtype, rng=rng + 1))


@pytest.mark.parametrize("name, config", RESUME, ids=[n for n, _ in RESUME])
def test_resuming_from_state_dicts_is_bit_for_bit(name, config, dtype):
    rng = np.random.default_rng(5)
    batches = [(rng.standard_normal((6, 4)).astype(dtype), rng.integers(0, 3, 6))
               for _ in range(12)]
    make = getattr(fa.optim, name)

    model = make_model_of(dtype, 0)
    opt = make(model.parameters(), **config)
    train(model, opt, batches)                               # 12 steps straight

    first = make_model_of(dtype, 0)
    first_opt = make(first.parameters(), **config)
    train(first, first_opt, batches[:7])
    checkpoint = copy.deepcopy({"model": first.state_dict(), "optim": first_opt.state_dict()})
    train(first, first_opt, batches[7:9])                     # diverges from the checkpoint

    resumed = make_model_of(dtype, 99)                        # other weights, fresh state
    resumed_opt = make(resumed.parameters(), lr=0.5)
    resumed.load_state_dict(checkpoint["model"])
    resumed_opt.load_state_dict(checkpoint["optim"])
    train(resumed, resumed_opt, batches[7:])                  # 5 more steps
    for mine, theirs in zip(resumed.parameters(), model.parameters()):
        np.testing.assert_array_equal(mine.value, theirs.value)
    assert_same(resumed_opt.state_dict(), opt.state_dict())


def test_resuming_through_fa_save_is_bit_for_bit(tmp_path):
    rng = np.random.default_rng(6)
    batches = [(rng.standard_normal((6, 4)), rng.integers(0, 3, 6)) for _ in range(6)]
    model = make_model_of(np.float64, 0)
    opt = fa.optim.Adam(model.parameters(), lr=0.01)
    train(model, opt, batches[:3])
    try:
        fa.save(tmp_path / "run.npz", {"model": model.state_dict(), "optim": opt.state_dict()})
    except TypeError as error:      # fa.save learns nested dicts with int keys elsewhere
        pytest.skip(f"fa.save cannot store an optimizer state_dict yet: {error}")
    train(model, opt, batches[3:])
    checkpoint = fa.load(tmp_path / "run.npz")
    resumed = make_model_of(np.float64, 1)
    resumed_opt = fa.optim.Adam(resumed.parameters())
    resumed.load_state_dict(checkpoint["model"])
    resumed_opt.load_state_dict(checkpoint["optim"])
    train(resumed, resumed_opt, batches[3:])
    for mine, theirs in zip(resumed.parameters(), model.parameters()):
        np.testing.assert_array_equal(mine.value, theirs.value)
    assert_same(resumed_opt.state_dict(), opt.state_dict())


def test_load_state_dict_copies_and_leaves_its_argument_alone():
    source = stepped_optimizer("Adam")
    state = source.state_dict()
    saved = copy.deepcopy(state)
    target = stepped_optimizer("Adam", lr=0.5)
    target.load_state_dict(state)
    assert target.lr == 1e-3
    for p in target.params:
        p.grad = np.ones(p.shape)
    target.step()
    assert target.steps == [2, 2]
    assert_same(state, saved)
    assert all(target.exp_avgs[i] is not state["state"][i]["exp_avg"] for i in range(2))


def test_load_state_dict_accepts_lists_and_missing_entries():
    # fa.save turns tuples into lists; a parameter left out of "state" starts fresh.
    opt = stepped_optimizer("Adam")
    state = opt.state_dict()
    state["param_groups"][0]["betas"] = [0.5, 0.6]
    del state["state"][1]
    opt.load_state_dict(state)
    assert opt.betas == (0.5, 0.6) and opt.steps == [1, 0]
    np.testing.assert_array_equal(opt.exp_avgs[1], np.zeros((2, 2)))
    sgd = stepped_optimizer("SGD", lr=0.1, momentum=0.9)
    sgd.load_state_dict({"state": {}, "param_groups": [dict(lr=0.1, momentum=0.0,
                                                            weight_decay=0.0, nesterov=False,
                                                            params=[0, 1])]})
    assert sgd.momentum_buffers is None and sgd.momentum == 0.0


def broken(name, change):
    state = stepped_optimizer(name, lr=0.1).state_dict()
    change(state)
    return state


def group(state):
    return state["param_groups"][0]


@pytest.mark.parametrize("name, change, error, pattern", [
    ("Adam", lambda s: s.pop("state"), ValueError, r"missing key\(s\): 'state'"),
    ("Adam", lambda s: s.update(extra=1), ValueError, r"unexpected key\(s\): 'extra'"),
    ("Adam", lambda s: s["param_groups"].append({}), ValueError, r"a list of one group"),
    ("Adam", lambda s: group(s).update(params=[0, 1, 2]), ValueError,
     r"\['params'\] is \[0, 1, 2\], this optimizer has 2 parameters"),
    ("Adam", lambda s: group(s).update(params=[0]), ValueError, r"has 2 parameters"),
    ("Adam", lambda s: group(s).pop("eps"), ValueError, r"missing key\(s\): 'eps'"),
    ("Adam", lambda s: group(s).update(amsgrad=True), ValueError, r"unexpected.*'amsgrad'"),
    ("Adam", lambda s: group(s).update(lr=float("nan")), ValueError,
     r"Adam.load_state_dict: param_groups\[0\]: Invalid lr: nan"),
    ("Adam", lambda s: group(s).update(betas=(0.9,)), TypeError, r"betas must be a pair"),
    ("SGD", lambda s: group(s).update(nesterov=True), ValueError, r"Nesterov"),
    ("Adam", lambda s: s["state"].update({2: s["state"][0]}), ValueError,
     r"state has key\(s\) 2; expected parameter indices 0..1"),
    ("Adam", lambda s: s["state"].update({"0": s["state"].pop(0)}), ValueError,
     r"state has key\(s\) '0'"),
    ("Adam", lambda s: s["state"][1].pop("step"), ValueError,
     r"state\[1\]: missing key\(s\): 'step'"),
    ("Adam", lambda s: s["state"][1].update(step=-2), ValueError, r"Invalid 'step': -2"),
    ("Adam", lambda s: s["state"][1].update(exp_avg=np.zeros((2, 2), np.float32)), TypeError,
     r"state\[1\]\['exp_avg'\] has dtype float32, params\[1\] has dtype float64"),
    ("Adam", lambda s: s["state"][1].update(exp_avg_sq=np.zeros(4)), ValueError,
     r"state\[1\]\['exp_avg_sq'\] has shape \(4,\), params\[1\] has shape \(2, 2\)"),
    ("Adam", lambda s: s["state"][1].update(exp_avg=None), TypeError, r"must be an ndarray"),
])
def test_load_state_dict_checks_everything_before_changing_anything(
        name, change, error, pattern):
    opt = stepped_optimizer(name, lr=0.3, **({"momentum": 0.9} if name == "SGD" else {}))
    before = copy.deepcopy(opt.state_dict())
    with pytest.raises(error, match=pattern):
        opt.load_state_dict(broken(name, change))
    assert_same(opt.state_dict(), before)


# --- the optimizer-state campaign ------------------------------------------------------

CAMPAIGN_CASES = 1000


def test_optimizer_state_campaign():
    """Random corruptions of hyperparameters, state, values and gradients (in a child):
    each either raises ValueError/TypeError changing nothing, or steps exactly as a clean
    optimizer holding the same valid state. Every fourth case changes a state_dict
    instead: load_state_dict refuses it changing nothing, or loads exactly its values."""
    proc = subprocess.run([sys.executable, __file__, str(CAMPAIGN_CASES)], capture_output=True,
                          text=True, timeout=600, cwd=HERE, env=os.environ)
    report = f"stdout:\n{proc.stdout[-6000:]}\nstderr:\n{proc.stderr[-4000:]}"
    assert proc.returncode == 0, report
    counts = dict(re.findall(r"(\w+): (\d+)", proc.stdout))
    assert int(counts["cases"]) == CAMPAIGN_CASES, report
    assert min(int(counts[k]) for k in ("raised", "stepped", "refused", "loaded")) > 30, report


# ====================================================================================
# The campaign's child process: `python tests/test_optim.py N` runs N cases.
# ====================================================================================

NAN, INF = float("nan"), float("inf")
# Values for hyperparameters and step counts, with whether they are valid (PyTorch
# accepts inf; fastad also refuses NaN, non-numbers and bools).
NUMBERS = [(0.0, True), (0.3, True), (np.float32(0.01), True), (2, True), (INF, True),
           (NAN, False), (-1e-3, False), (-INF, False), (None, False), ("0.1", False),
           (True, False), (10 ** 400, False), (np.array(0.1), False), (1j, False)]
BETAS = [((0.0, 0.5), True), ([0.5, 0.9], True), ((np.float32(0.9), 0.999), True),
         ((0, 0), True), ((1.0, 0.5), False), ((0.5, 1.0), False), ((-0.1, 0.5), False),
         ((NAN, 0.9), False), ((0.9,), False), (0.9, False), (None, False), ("ab", False),
         ((0.9, None), False), ((0.9, 0.99, 0.1), False)]
FLAGS = [(True, True), (False, True), (np.bool_(True), True), (1, False), ("yes", False),
         (None, False)]
HYPER_VALUES = {"lr": NUMBERS, "momentum": NUMBERS, "weight_decay": NUMBERS, "eps": NUMBERS,
                "betas": BETAS, "nesterov": FLAGS}
COUNTS = [(-1, False), (2.0, False), (None, False), (True, False), ("3", False),  # steps
          (np.int64(5), True), (7, True), (2 ** 63 - 2, True), (2 ** 63, False),
          (10 ** 400, False)]


def campaign_optimizer(rng, dtype):
    """A random valid optimizer over 1-3 parameters of random shapes, after 0-2 steps."""
    name = str(rng.choice(["SGD", "Adam", "AdamW"]))
    shapes = [tuple(int(n) for n in rng.integers(0, 5, rng.integers(0, 3)))
              for _ in range(rng.integers(1, 4))]
    params = [fa.Parameter(rng.standard_normal(s).astype(dtype)) for s in shapes]
    if name == "SGD":
        momentum = float(rng.choice([0.0, 0.9]))
        config = dict(lr=0.1, momentum=momentum, weight_decay=float(rng.choice([0.0, 0.01])),
                      nesterov=bool(momentum and rng.random() < 0.5))
    else:
        config = dict(lr=0.01, betas=(0.8, 0.99), weight_decay=float(rng.choice([0.0, 0.1])))
    opt = getattr(fa.optim, name)(params, **config)
    for _ in range(rng.integers(0, 3)):
        give_grads(rng, opt)
        opt.step()
    return opt


def give_grads(rng, opt):
    for p in opt.params:
        p.grad = rng.standard_normal(p.shape).astype(p.dtype) if rng.random() < 0.8 else None


def twin_of(opt):
    """A clean optimizer with copies of `opt`'s parameters, gradients and state."""
    params = [fa.Parameter(p.value) for p in opt.params]
    for mine, theirs in zip(params, opt.params):
        mine.grad = None if theirs.grad is None else theirs.grad.copy()
    twin = type(opt)(params, **{k: getattr(opt, k) for k in opt.hyperparameters})
    twin.load_state_dict(opt.state_dict())
    return twin


class Case:
    """One campaign case: the optimizer under test, its clean twin, and what was changed.

    `verdicts` maps what a change touched to whether the result is valid (a later change
    of the same thing replaces the verdict).
    """

    def __init__(self, rng):
        self.rng = rng
        self.opt = campaign_optimizer(rng, np.dtype(rng.choice([np.float32, np.float64])))
        give_grads(rng, self.opt)
        self.twin = twin_of(self.opt)
        self.verdicts, self.frozen = {}, set()

    def bad_values(self):
        """Parameters whose `.value` no step may use: fine only while `.grad` is None."""
        return {i for i, (p, q) in enumerate(zip(self.opt.params, self.twin.params))
                if not (isinstance(p.value, np.ndarray) and p.value.dtype == q.dtype
                        and p.value.shape == q.shape and p.value.flags.c_contiguous
                        and p.value.flags.writeable and p.value.flags.aligned)}

    def valid(self):
        opt = self.opt
        if (self.verdicts.get("nesterov", True) and self.verdicts.get("momentum", True)
                and getattr(opt, "nesterov", False) and float(opt.momentum) == 0):
            return False
        return (all(self.verdicts.values())
                and all(opt.params[i].grad is None for i in self.bad_values()))

    def pick(self, options):
        return options[self.rng.integers(len(options))]

    def change_hyperparameter(self):
        name = str(self.rng.choice(list(self.opt.hyperparameters)))
        value, valid = self.pick(HYPER_VALUES[name])
        setattr(self.opt, name, value)
        if valid:
            setattr(self.twin, name, value)
        self.verdicts[name] = valid

    def change_buffer(self):
        opt, twin, rng = self.opt, self.twin, self.rng
        attributes = [a for a in opt.buffers.values() if a not in self.frozen]
        if not attributes or getattr(opt, attributes[0]) is None:
            return self.change_hyperparameter()
        attribute = str(rng.choice(attributes))
        buffers = list(getattr(opt, attribute))
        i, kind = int(rng.integers(len(buffers))), rng.integers(8)
        element = (attribute, i)
        if kind in (2, 3):  # the list itself replaced: no later change edits it
            self.frozen.add(attribute)
            if kind == 2:
                value = self.pick([None, 3, buffers[i], tuple(buffers) * 2])
            else:
                value = buffers[:-1] if rng.random() < 0.5 else buffers + buffers[:1]
            setattr(opt, attribute, value)
            self.verdicts = {k: v for k, v in self.verdicts.items() if k[:1] != (attribute,)}
            # SGD without buffers makes fresh ones, like a new optimizer.
            self.verdicts[attribute] = value is None and isinstance(opt, fa.optim.SGD)
            if self.verdicts[attribute]:
                setattr(twin, attribute, None)
            return
        if kind == 0:
            buffers[i] = bad_array(rng, getattr(twin, attribute)[i])
            self.verdicts[element] = False
        elif kind == 1:
            buffers[i] = self.pick([None, 0.0, "x", np.asarray(buffers[i]).tolist()])
            self.verdicts[element] = False
        elif kind == 4:  # keeps the element's verdict
            buffers[i] = relaid(rng, buffers[i])
        elif kind == 5:
            buffers = tuple(buffers)
        elif kind == 6:  # another parameter's buffer listed again, if it fits
            j, clean = int(rng.integers(len(buffers))), getattr(twin, attribute)
            if (isinstance(buffers[j], np.ndarray)
                    and (buffers[j].shape, buffers[j].dtype) == (clean[i].shape, clean[i].dtype)):
                clean[i][...] = buffers[j]
                buffers[i] = buffers[j]
                self.verdicts[element] = True
        elif isinstance(buffers[i], np.ndarray):  # a read-only copy keeps the verdict
            buffers[i] = buffers[i].copy()
            buffers[i].flags.writeable = False
        setattr(opt, attribute, buffers)

    def change_steps(self):
        if not hasattr(self.opt, "steps"):
            return self.change_buffer()
        i = int(self.rng.integers(len(self.opt.steps)))
        value, valid = self.pick(COUNTS)
        self.opt.steps[i] = value
        if valid:
            self.twin.steps[i] = int(value)
        self.verdicts[f"steps[{i}]"] = valid

    def change_parameter(self):
        rng = self.rng
        i = int(rng.integers(len(self.opt.params)))
        p, q = self.opt.params[i], self.twin.params[i]
        kind = rng.integers(6)
        # Bad arrays go in behind Tensor's checked setters (which refuse or copy them):
        # an array reshaped or replaced in place reaches the optimizer the same way.
        if kind == 0:
            p._value = bad_array(rng, q.value)
        elif kind == 1:
            p._value = LAYOUTS[str(rng.choice(["fortran", "strided", "read-only"]))](p.value)
        elif kind == 2:
            p._grad = bad_array(rng, q.value)
            self.verdicts[f"grad[{i}]"] = False
        elif kind == 3:
            p._grad = self.pick([0.5, "g", p.value.tolist()])
            self.verdicts[f"grad[{i}]"] = False
        elif kind == 4:
            g = rng.standard_normal(q.shape).astype(q.dtype)
            p._grad, q.grad = relaid(rng, g), g
            self.verdicts[f"grad[{i}]"] = True
        else:
            p.grad = q.grad = None
            self.verdicts[f"grad[{i}]"] = True


def bad_array(rng, a):
    """An ndarray that is not of `a`'s dtype or shape."""
    kind = rng.integers(4)
    if kind == 0:
        return a.astype(np.float32 if a.dtype == np.float64 else np.float64)
    if kind == 1:
        return np.zeros(a.size + 1, a.dtype)
    if kind == 2:
        return a.astype(a.dtype.newbyteorder())
    return np.zeros(a.shape + (2,), a.dtype)


def relaid(rng, a):
    """`a` in a random layout the optimizer must accept (all but byte-swapped)."""
    if not isinstance(a, np.ndarray):
        return a
    layout = rng.choice(["C", "fortran", "strided", "negative-strides", "read-only",
                         "misaligned"])
    return LAYOUTS[str(layout)](a).reshape(a.shape)  # asfortranarray makes 0-d arrays 1-d
CHANGES = [Case.change_hyperparameter, Case.change_buffer, Case.change_steps,
           Case.change_parameter]


def run_case(rng):
    """One case; returns 'raised' or 'stepped'."""
    case = Case(rng)
    opt, twin = case.opt, case.twin
    for k in rng.integers(len(CHANGES), size=rng.integers(1, 3)):
        CHANGES[k](case)
    valid = case.valid()
    before = state_of(opt)
    try:
        with np.errstate(all="ignore"):
            opt.step()
    except (TypeError, ValueError) as error:
        assert not valid, f"a valid change raised {error!r}"
        assert type(opt).__name__ in str(error), error
        values, stamps, state = before
        assert_same([p.value for p in opt.params], values)
        assert [p._modified_at for p in opt.params] == stamps
        assert_same({k: getattr(opt, k) for k in opt._state_attributes()}, state)
        return "raised"
    assert valid, f"an invalid change stepped: {case.verdicts}, {case.bad_values()}"
    with np.errstate(all="ignore"):
        twin.step()
    # A replaced .value with no .grad is left alone; the others step as the twin's.
    bad_values = case.bad_values()
    assert_same([p.value for p in opt.params],
                [before[0][i] if i in bad_values else q.value
                 for i, q in enumerate(twin.params)])
    assert_same({k: getattr(opt, k) for k in opt._state_attributes()},
                {k: getattr(twin, k) for k in twin._state_attributes()})
    return "stepped"


class LoadCase:
    """A campaign case for load_state_dict: one optimizer's state_dict, randomly changed,
    loaded into another of the same kind and shapes that holds state of its own."""

    def __init__(self, rng):
        self.rng = rng
        source = campaign_optimizer(rng, np.dtype(rng.choice([np.float32, np.float64])))
        self.saved = source.state_dict()
        self.target = type(source)([fa.Parameter(p.value) for p in source.params],
                                   **{k: getattr(source, k) for k in source.hyperparameters})
        give_grads(rng, self.target)
        self.target.step()
        self.verdicts = {}

    def pick(self, options):
        return options[self.rng.integers(len(options))]

    def group(self):
        return self.saved["param_groups"][0]

    def valid(self):
        group = self.group()
        if (self.verdicts.get("nesterov", True) and self.verdicts.get("momentum", True)
                and group.get("nesterov") and float(group["momentum"]) == 0):
            return False
        return all(self.verdicts.values())

    def change_hyperparameter(self):
        name = str(self.rng.choice(list(self.target.hyperparameters)))
        self.group()[name], self.verdicts[name] = self.pick(HYPER_VALUES[name])

    def change_entry(self):
        state, rng = self.saved["state"], self.rng
        good = [i for i, entry in state.items() if isinstance(i, int) and entry]
        if not good:
            return self.change_hyperparameter()
        i = self.pick(good)
        key = self.pick(list(state[i]))
        if key == "step":
            value, valid = self.pick(COUNTS)
        else:
            array = state[i][key]
            like = self.target.params[i].value
            value, valid = self.pick([(bad_array(rng, like), False),
                                      (relaid(rng, array), self.verdicts.get((i, key), True)),
                                      (self.pick([None, "x", [0.0]]), False)])
        state[i][key] = value
        self.verdicts[(i, key)] = valid

    def drop_entry(self):
        state = self.saved["state"]
        if not state:
            return self.change_hyperparameter()
        i = self.pick(list(state))
        del state[i]   # a parameter without an entry starts fresh
        self.verdicts = {k: v for k, v in self.verdicts.items()
                         if not (isinstance(k, tuple) and k[0] == i)}

    def add_bad_entry(self):
        n = len(self.target.params)
        key = self.pick([n, -1, "0", n + 5])
        self.saved["state"][key] = {}
        self.verdicts[(key, None)] = False

    def change_structure(self):
        # Changes no other change undoes.
        group, n = self.group(), len(self.target.params)
        self.pick([lambda: group.update(params=list(range(n + 1))),
                   lambda: group.update(params=list(range(n))[::-1] if n > 1 else [5]),
                   lambda: group.update(amsgrad=False),
                   lambda: group.pop("params", None),
                   lambda: self.saved["param_groups"].append(dict(group)),
                   lambda: self.saved.update(extra=1)])()
        self.verdicts["structure"] = False

    def expected(self):
        """The hyperparameters and state a load of the (valid) changed dict must give."""
        target, group = self.target, self.group()
        options = {name: (tuple(float(b) for b in group[name]) if name == "betas" else
                          bool(group[name]) if name == "nesterov" else float(group[name]))
                   for name in target.hyperparameters}
        entries = self.saved["state"]
        if not entries and isinstance(target, fa.optim.SGD) and options["momentum"] == 0:
            return options, {attr: None for attr in target._state_attributes()}
        n = len(target.params)
        state = {attr: [0] * n for attr in target.counts.values()}
        state.update((attr, [np.zeros(p.shape, p.dtype) for p in target.params])
                     for attr in target.buffers.values())
        for i, entry in entries.items():
            for key, attr in {**target.counts, **target.buffers}.items():
                state[attr][i] = entry[key] if key != "step" else int(entry[key])
        return options, state

    def run(self):
        """Load; returns 'refused' or 'loaded'."""
        target = self.target
        valid = self.valid()
        saved = copy.deepcopy(self.saved)
        before = (state_of(target), {k: getattr(target, k) for k in target.hyperparameters})
        try:
            target.load_state_dict(self.saved)
        except (TypeError, ValueError) as error:
            assert not valid, f"a valid change raised {error!r}"
            assert "load_state_dict" in str(error), error
            assert_same((state_of(target), {k: getattr(target, k)
                                            for k in target.hyperparameters}), before)
            assert_same(self.saved, saved)
            return "refused"
        assert valid, f"an invalid change loaded: {self.verdicts}"
        assert_same(self.saved, saved)
        options, state = self.expected()
        assert_same({k: getattr(target, k) for k in target.hyperparameters}, options)
        assert all(type(getattr(target, k)) is type(v) for k, v in options.items())
        assert_same({k: getattr(target, k) for k in target._state_attributes()}, state)
        ours = [a for attr in target.buffers.values() for a in getattr(target, attr) or []]
        theirs = {id(a) for entry in self.saved["state"].values() for a in entry.values()}
        assert all(a.flags.c_contiguous and a.flags.owndata and id(a) not in theirs
                   for a in ours)
        return "loaded"


LOAD_CHANGES = [LoadCase.change_hyperparameter, LoadCase.change_entry, LoadCase.drop_entry,
                LoadCase.add_bad_entry, LoadCase.change_structure]


def run_load_case(rng):
    case = LoadCase(rng)
    for k in rng.choice(len(LOAD_CHANGES), size=rng.integers(1, 3),
                        p=[0.3, 0.35, 0.15, 0.1, 0.1]):
        LOAD_CHANGES[k](case)
    return case.run()


def campaign(n):
    """n cases: every fourth one loads a changed state_dict, the others step."""
    counts = {"raised": 0, "stepped": 0, "refused": 0, "loaded": 0}
    for case in range(n):
        rng = np.random.default_rng(case)
        try:
            counts[run_load_case(rng) if case % 4 == 3 else run_case(rng)] += 1
        except Exception:
            print(f"case {case} (np.random.default_rng({case})) failed:")
            raise
    print(f"cases: {n}, " + ", ".join(f"{k}: {v}" for k, v in counts.items()))


if __name__ == "__main__":
    campaign(int(sys.argv[1]))
