"""fa.optim: SGD and Adam against PyTorch, against the written formulas, and their contract
(skipped None grads, in-place updates without allocation, version bumps, bad input)."""
import tracemalloc

import numpy as np
import pytest

import fastad as fa

SHAPES = [(7, 5), (5,)]
STEPS = 6
# The second parameter has no gradient on these steps (0-based): it must be skipped,
# and with Adam its own step count must not advance.
NO_GRAD_STEPS = {0, 3}

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
CASES = ([("SGD", c) for c in SGD_CONFIGS] + [("Adam", c) for c in ADAM_CONFIGS])
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
        if name == "Adam":
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


@pytest.mark.parametrize("name, config", CASES, ids=CASE_IDS)
def test_matches_documented_formula(name, config):
    initial, grads = problem(np.float64, seed=1)
    params, _ = run_fastad(name, config, initial, grads)
    reference = sgd_reference if name == "SGD" else adam_reference
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
