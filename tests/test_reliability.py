"""Reliability (issue 5, items 3-5): no leaks, safe across threads, anomalies named.

- Memory: thousands of training steps in a child process with resident memory and the
  number of live Python objects flat after warm-up; a dropped loss frees its whole tape
  at once (no reference cycles); the peak of one training step (tracemalloc, which sees
  NumPy's allocations) is within 10% of parameters + gradients + saved activations.
- Threads: two threads training their own models at the same time end with exactly the
  weights of training them one after the other; no_grad, enable_grad and
  detect_anomaly are thread-local.
- Anomalies: detect_anomaly names the first op whose forward value or backward
  contribution is NaN/Inf, for the kernel-backed ops and the NumPy-backed ones; without
  it NaN and Inf propagate silently, as IEEE arithmetic says.

The training loops are plain fastad: Parameters, fa.grad, and an SGD update in place.
Anything that could crash (threads, long loops) runs in a child process.
"""
import gc
import os
import subprocess
import sys
import textwrap
import threading
import weakref

import numpy as np
import pytest

import fastad as fa


# Children run from here: `python -c` puts its working directory first on sys.path, and
# from the repository root that would import the uncompiled source tree, not the install.
HERE = os.path.dirname(os.path.abspath(__file__))


def run_child(code, prelude="", timeout=300):
    """Run prelude + `code` in a fresh interpreter; its stdout, or a failure with its
    stderr."""
    proc = subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(code)],
                          capture_output=True, text=True, timeout=timeout, cwd=HERE)
    assert proc.returncode == 0, f"child exited {proc.returncode}:\n{proc.stderr[-4000:]}"
    return proc.stdout


# A small MLP in plain fastad, shared by the child processes below.
MLP = """
import numpy as np
import fastad as fa
from fastad.core.clock import mark_modified

def make_model(sizes, dtype, seed):
    rng = np.random.default_rng(seed)
    params = []
    for fan_in, fan_out in zip(sizes, sizes[1:]):
        params.append(fa.Parameter(rng.uniform(-1, 1, (fan_in, fan_out)) / np.sqrt(fan_in),
                                   dtype=dtype))
        params.append(fa.Parameter(np.zeros(fan_out), dtype=dtype))
    return params

def make_data(n, sizes, dtype, seed):
    rng = np.random.default_rng(seed + 1000)
    return rng.standard_normal((n, sizes[0])).astype(dtype), rng.integers(0, sizes[-1], n)

def forward(params, x, y, act=fa.sigmoid):
    h = fa.tensor(x)
    for i in range(0, len(params) - 2, 2):
        h = act(h @ params[i] + params[i + 1])
    return fa.cross_entropy(h @ params[-2] + params[-1], y)

def sgd(params, grads, lr):
    for p, g in zip(params, grads):
        p.value -= lr * g
        mark_modified(p)   # the recorded-tape check: this leaf changed in place

def train(params, x, y, steps, batch=32, lr=0.1):
    for step in range(steps):
        rows = slice((step * batch) % len(x), (step * batch) % len(x) + batch)
        sgd(params, fa.grad(forward(params, x[rows], y[rows]), params), lr)
"""


# --- memory ---------------------------------------------------------------------------

def test_training_for_thousands_of_steps_does_not_grow():
    """Over 5000 steps, resident memory and live objects stay flat after warm-up, whichever way the
    gradients are asked for (joint, one by one, partial sweeps dropped unfinished,
    backward() into .grad, retain_graph, no_grad evaluation, detect_anomaly)."""
    out = run_child(prelude=MLP, code="""
    import gc, os
    PAGE = os.sysconf("SC_PAGE_SIZE")
    def rss():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * PAGE

    sizes, dtype = (64, 128, 64, 10), np.float32
    params = make_model(sizes, dtype, 0)
    x, y = make_data(512, sizes, dtype, 0)
    def step(i):
        rows = slice((i * 32) % 512, (i * 32) % 512 + 32)
        loss = forward(params, x[rows], y[rows], act=(fa.sigmoid, fa.relu, fa.tanh)[i % 3])
        kind = i % 6
        if kind == 0:
            grads = fa.grad(loss, params)
        elif kind == 1:
            grads = [fa.grad(loss, p) for p in reversed(params)][::-1]
        elif kind == 2:
            fa.grad(loss, params[-1])            # a partial sweep, dropped unfinished
            return
        elif kind == 3:
            loss.backward()
            grads = [p.grad for p in params]
            for p in params:
                p.grad = None
        elif kind == 4:
            grads = fa.grad(loss, params, retain_graph=True)
            with fa.no_grad():
                forward(params, x[:8], y[:8])
        else:
            with fa.detect_anomaly():
                grads = fa.grad(loss, params)
        sgd(params, grads, 0.05)

    samples = []
    for i in range(5000):
        step(i)
        if i % 250 == 249:
            gc.collect()
            samples.append((i + 1, rss(), len(gc.get_objects())))
    with open("/proc/self/maps") as f:
        print(int("libasan" in f.read()))   # the debug build's sanitizer is loaded
    for s in samples:
        print(*s)
    """)
    sanitized, *lines = out.strip().splitlines()
    samples = [tuple(map(int, line.split())) for line in lines]
    warm = [s for s in samples if s[0] >= 1000]
    _, rss0, objects0 = warm[0]
    rss_growth = max(s[1] for s in warm) - rss0
    object_growth = max(s[2] for s in warm) - objects0
    assert object_growth < 20, f"live objects grew by {object_growth}: {samples}"
    # AddressSanitizer keeps freed blocks in quarantine and grows its own metadata, so
    # resident memory says nothing about fastad in the debug build
    if sanitized == "0":
        assert rss_growth < 2**20, f"resident memory grew by {rss_growth} bytes: {samples}"


def _saved_arrays(output):
    """Every ndarray saved on the tape behind `output`."""
    seen, stack, arrays = set(), [output._node], []
    while stack:
        node = stack.pop()
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        saved = node.saved if isinstance(node.saved, tuple) else (node.saved,)
        arrays += [item for item in saved if isinstance(item, np.ndarray)]
        stack.extend(p for p in node.parents if p is not None and not isinstance(p, fa.Tensor))
    return arrays


def _drop_after(how):
    """What the caller does with a loss before dropping it."""
    def never_swept(loss, params):
        pass

    def partial_sweep(loss, params):
        fa.grad(loss, params[-1])                 # stops early: the sweep is unfinished

    def per_parameter(loss, params):
        for p in params[:2]:
            fa.grad(loss, p)

    def retained(loss, params):
        fa.grad(loss, params, retain_graph=True)

    def backward(loss, params):
        loss.backward(retain_graph=True)

    return {"never-swept": never_swept, "partial-sweep": partial_sweep,
            "per-parameter": per_parameter, "retain_graph": retained,
            "backward-retained": backward}[how]


@pytest.mark.parametrize("how", ["never-swept", "partial-sweep", "per-parameter",
                                 "retain_graph", "backward-retained"])
def test_a_dropped_loss_frees_its_whole_tape(how):
    """Saved values, intermediate tensors and adjoint buffers die with the loss, at once
    (reference counting alone: no cycle waits for the garbage collector)."""
    rng = np.random.default_rng(0)
    params = [fa.Parameter(rng.standard_normal(s)) for s in [(8, 16), (16,), (16, 4), (4,)]]
    x = fa.tensor(rng.standard_normal((5, 8)))
    labels = np.array([0, 1, 2, 3, 0])
    held = {id(x.value), id(labels), *(id(p.value) for p in params)}

    def forward():
        h = fa.sigmoid(x @ params[0] + params[1])
        probs = fa.softmax(h @ params[2] + params[3])
        loss = -fa.mean(fa.log(probs)[np.arange(5), labels]) + fa.cross_entropy(
            fa.tanh(h @ params[2]), labels, reduction="sum")
        intermediates = [weakref.ref(h), weakref.ref(probs)]
        return loss, intermediates

    gc.collect()
    gc.disable()
    try:
        loss, intermediates = forward()
        saved = [weakref.ref(a) for a in _saved_arrays(loss) if id(a) not in held]
        assert len(saved) >= 6
        _drop_after(how)(loss, params)
        sweep_state = weakref.ref(loss._sweep) if getattr(loss, "_sweep", None) else None
        del loss
        alive = [r() for r in saved + intermediates if r() is not None]
        assert not alive, f"{len(alive)} arrays/tensors of the tape outlived the loss: " \
                          f"{[getattr(a, 'shape', a) for a in alive]}"
        assert sweep_state is None or sweep_state() is None, "the sweep outlived its output"
    finally:
        gc.enable()


PEAK = MLP + """
import sys, tracemalloc
import fastad as fa
N, D, H, C = 256, 512, 512, 10     # float64: a 2 MiB weight, 1 MiB activations
dtype = np.float64
x, y = make_data(N, (D, H, H, C), dtype, 0)
tracemalloc.start()
params = make_model((D, H, H, C), dtype, 0)
P = sum(p.value.nbytes for p in params)
A = 2 * N * H * 8 + N * C * 8     # saved for the backward: two hidden layers, probabilities
retain = sys.argv[1] == "retain"
warm_steps = int(sys.argv[2])

def step():
    # the caller holds only the loss, as in a training loop, and updates in place
    grads = fa.grad(forward(params, x, y), params, retain_graph=retain)
    for p, g in zip(params, grads):  # read-only: the update makes no temporary
        p.value -= g  # (a step of lr 1: the values do not matter here); marks p modified

for _ in range(warm_steps):
    step()
tracemalloc.reset_peak()
step()
print(tracemalloc.get_traced_memory()[1], P, A)
"""


@pytest.mark.parametrize("warm_steps", [0, 2], ids=["first-step", "steady-state"])
def test_peak_memory_of_a_training_step(warm_steps):
    """Peak of one step (forward, gradients of all parameters, update) <= 1.1 x
    (parameters + gradients + the activations the backward needs): saved values and
    intermediate adjoints are released as the sweep passes them, and no buffer is kept
    beyond that. The same step with retain_graph=True (nothing released) must exceed
    the bound, so the bound is tight enough to notice."""
    def measure(mode):
        proc = subprocess.run([sys.executable, "-c", PEAK, mode, str(warm_steps)],
                              capture_output=True, text=True, timeout=300, cwd=HERE)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return map(int, proc.stdout.split())

    peak, params, activations = measure("release")
    budget = 2 * params + activations
    assert peak <= 1.10 * budget, (
        f"peak {peak / 2**20:.2f} MiB > 1.1 x (params + grads + activations) = "
        f"{1.1 * budget / 2**20:.2f} MiB")
    retained_peak, _, _ = measure("retain")
    assert retained_peak > 1.10 * budget, "the bound would not notice unreleased buffers"


# --- threads --------------------------------------------------------------------------------

THREADS = MLP + """
import threading
sizes, dtype = (256, 512, 512, 10), np.float32   # 512x512 float32: pooled 1 MiB buffers
data = [make_data(512, sizes, dtype, seed) for seed in (1, 2)]

def run(seed):
    params = make_model(sizes, dtype, seed)
    train(params, *data[seed - 1], steps=40, batch=64)
    return params

sequential = [run(1), run(2)]
results = [None, None]
threads = [threading.Thread(target=lambda i=i: results.__setitem__(i, run(i + 1)))
           for i in range(2)]
for t in threads:
    t.start()
for t in threads:
    t.join()
for seq, conc in zip(sequential, results):
    for a, b in zip(seq, conc):
        assert a.value.dtype == b.value.dtype
        print(int(np.array_equal(a.value, b.value)), float(np.abs(a.value - b.value).max()))
"""


def test_two_threads_training_concurrently_match_sequential_training():
    out = run_child(THREADS)
    rows = [line.split() for line in out.strip().splitlines()]
    assert len(rows) == 12
    assert all(same == "1" for same, _ in rows), f"weights differ (max |diff| per array): {rows}"


def _in_two_threads(first, second):
    """Run first(step) and second(step) in two threads, interleaved in lock step:
    step(k) waits until both threads reached k. Returns the exceptions raised."""
    barrier = threading.Barrier(2, timeout=30)
    errors = []

    def wrap(fn):
        def target():
            try:
                fn(barrier.wait)
            except Exception as e:  # noqa: BLE001  (reported to the test)
                errors.append(e)
                barrier.abort()
        return target

    threads = [threading.Thread(target=wrap(fn)) for fn in (first, second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return errors


@pytest.mark.parametrize("mode", ["context", "decorator"])
def test_no_grad_is_thread_local(mode):
    w = fa.Parameter(np.ones(3))
    seen = {}

    def quiet(sync):
        def body():
            sync()                       # 1: the other thread is recording now
            seen["quiet"] = (w * 2)._node
            sync()                       # 2
            with fa.enable_grad():
                seen["quiet-enabled"] = (w * 2)._node
            sync()                       # 3
        if mode == "context":
            with fa.no_grad():
                body()
        else:
            fa.no_grad(body)()

    def recording(sync):
        sync()
        seen["recording"] = (w * 2)._node
        assert fa.is_grad_enabled()
        sync()
        sync()

    assert not _in_two_threads(quiet, recording)
    assert seen["quiet"] is None
    assert seen["quiet-enabled"] is not None
    assert seen["recording"] is not None
    assert fa.is_grad_enabled()


def test_detect_anomaly_is_thread_local():
    x = fa.Parameter(np.zeros(3))
    raised = {}

    def strict(sync):
        with fa.detect_anomaly():
            sync()                       # the other thread computes log(0) now
            try:
                with np.errstate(divide="ignore"):
                    fa.log(x)
            except FloatingPointError as e:
                raised["strict"] = e
            sync()

    def lenient(sync):
        sync()
        with np.errstate(divide="ignore"):
            y = fa.log(x)                # -inf, silently: this thread is not in the mode
        raised["lenient-value"] = y.value
        sync()

    assert not _in_two_threads(strict, lenient)
    assert "log" in str(raised["strict"])
    assert np.all(np.isneginf(raised["lenient-value"]))


# --- anomalies ------------------------------------------------------------------------------

F32, F64 = np.float32, np.float64


def _p(*values, dtype=F64):
    return fa.Parameter(np.array(values, dtype=dtype))


# name -> (op named, phase, computation returning (output, wrt, seed)).
# Each computation's first non-finite value comes from the named op, in the named phase.
ANOMALIES = {
    # kernel-backed ops
    "sigmoid-forward": ("sigmoid", "forward", lambda: (fa.sigmoid(_p(1.0, np.nan)),)),
    "softmax-forward": ("softmax", "forward", lambda: (fa.softmax(_p(np.inf, 0.0)),)),
    "softmax-backward": ("softmax", "backward", lambda: (
        fa.softmax(_p(7.0, 0.0, dtype=F32)), None, np.array([3.4e38, -3.4e38], F32))),
    "log_softmax-forward": ("log_softmax", "forward",
                            lambda: (fa.log_softmax(_p(-np.inf, -np.inf)),)),
    "log_softmax-backward": ("log_softmax", "backward", lambda: (
        fa.log_softmax(_p(1.0, 2.0, dtype=F32)), None, np.array([3e38, 3e38], F32))),
    "log-of-softmax-backward": ("log_softmax", "backward", lambda: (
        fa.log(fa.softmax(_p(1.0, 2.0, dtype=F32))), None, np.array([3e38, 3e38], F32))),
    "cross_entropy-forward": ("cross_entropy", "forward", lambda: (
        fa.cross_entropy(fa.Parameter(np.array([[np.inf, 0.0]])), [0]),)),
    "nll_loss-forward": ("nll_loss", "forward", lambda: (
        fa.nll_loss(fa.Parameter(np.array([[-np.inf, 0.0]])), [0]),)),
    "matmul-forward": ("matmul", "forward", lambda: (
        fa.Parameter(np.full((2, 2), 1e30, F32)) @ fa.tensor(np.full((2, 2), 1e30, F32)),)),
    "matmul-backward": ("matmul", "backward", lambda: (
        fa.sum((fa.Parameter(np.full((2, 2), 1e-20, F32)) @ fa.tensor(
            np.full((2, 2), 1e20, F32))) * np.float32(1e30)),)),
    "bias-add-forward": ("add", "forward", lambda: (
        fa.Parameter(np.full((2, 3), 3e38, F32)) + fa.Parameter(np.full(3, 3e38, F32)),)),
    "bias-add-backward": ("add", "backward", lambda: (
        fa.tensor(np.ones((2, 3), F32)) + fa.Parameter(np.zeros(3, F32)), None,
        np.full((2, 3), 3e38, F32))),       # the column sum of the seed overflows
    "gather-forward": ("getitem", "forward", lambda: (
        fa.Parameter(np.array([[np.nan, 1.0], [2.0, 3.0]]))[np.arange(2), np.array([0, 1])],)),
    # NumPy-backed ops
    "log-forward": ("log", "forward", lambda: (fa.log(_p(1.0, 0.0)),)),
    "log-backward": ("log", "backward", lambda: (fa.sum(fa.log(_p(1.0, 1e-320))),)),
    "exp-forward": ("exp", "forward", lambda: (fa.exp(_p(1.0, 1000.0)),)),
    "exp-backward": ("exp", "backward", lambda: (
        fa.exp(_p(88.0, dtype=F32)), None, np.array([3.0], F32))),
    "sqrt-forward": ("sqrt", "forward", lambda: (fa.sqrt(_p(-1.0)),)),
    "sqrt-backward": ("sqrt", "backward", lambda: (fa.sum(fa.sqrt(_p(4.0, 0.0))),)),
    "pow-backward": ("pow", "backward", lambda: (fa.sum(_p(0.0, 1.0) ** 0.5),)),
    "div-forward": ("div", "forward", lambda: (_p(1.0) / _p(0.0),)),
    "div-backward": ("div", "backward", lambda: (fa.sum(_p(1e-10) / _p(1e-160)),)),
    "mul-forward": ("mul", "forward", lambda: (_p(1e200) * _p(1e200),)),
    "mul-backward": ("mul", "backward", lambda: (
        fa.sum(_p(1e-20, dtype=F32) * np.float32(1e30)), None, np.float32(1e10))),
    "sub-forward": ("sub", "forward", lambda: (_p(1e308) - _p(-1e308),)),
    "sum-forward": ("sum", "forward", lambda: (fa.sum(_p(1e308, 1e308)),)),
    "mean-forward": ("mean", "forward", lambda: (fa.mean(_p(1e308, 1e308)),)),
    "max-forward": ("max", "forward", lambda: (fa.max(_p(1.0, np.nan)),)),
    "tanh-forward": ("tanh", "forward", lambda: (fa.tanh(_p(np.nan)),)),
    "relu-forward": ("relu", "forward", lambda: (fa.relu(_p(np.nan)),)),
    "where-forward": ("where", "forward", lambda: (
        fa.where(np.array([True]), _p(np.inf), _p(0.0)),)),
    # the first op in a chain that goes on producing NaN
    "first-of-a-chain-forward": ("log", "forward", lambda: (
        fa.sum(fa.exp(fa.log(_p(-1.0)) * 2.0)),)),
    "first-of-a-chain-backward": ("sqrt", "backward", lambda: (
        fa.sum(fa.sigmoid(fa.sqrt(_p(0.0, 1.0))) * 3.0),)),
}


def _run_anomaly(computation):
    """Forward, then the gradients of every leaf (seed: given, or ones)."""
    out, *rest = computation()
    seed = rest[1] if len(rest) > 1 else np.ones(out.shape, out.dtype)
    return fa.grad(out, _leaves(out), seed=seed)


def _leaves(t):
    stack, seen, leaves = [t._node], set(), []
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        for p in node.parents:
            if isinstance(p, fa.Tensor):
                leaves.append(p)
            elif p is not None:
                stack.append(p)
    return leaves


@pytest.mark.parametrize("case", ANOMALIES)
def test_detect_anomaly_names_the_first_op(case):
    op, phase, computation = ANOMALIES[case]
    with np.errstate(all="ignore"):
        # without the mode: IEEE arithmetic, silently
        _run_anomaly(computation)
        with fa.detect_anomaly():
            with pytest.raises(FloatingPointError) as info:
                _run_anomaly(computation)
    message = str(info.value)
    assert f"'{op}'" in message, message
    assert phase in message, message


@pytest.mark.parametrize("failing_consumer", ["newer", "older"])
def test_a_sweep_stopped_by_an_anomaly_cannot_be_resumed_into_a_wrong_gradient(
        failing_consumer):
    """detect_anomaly raises in the middle of a node's backward (one input's contribution
    added, the other's not). Asking again for the same output must not resume that sweep
    as if the node were done: raise, or give the true gradient."""
    with np.errstate(all="ignore"):
        a = fa.Parameter(np.array([3e38], F32))
        b = fa.Parameter(np.array([1e-38], F32))
        if failing_consumer == "newer":
            other = fa.sum(b * np.float32(3.0))
            loss = fa.sum(a * b) + other       # a * b, whose backward overflows for b,
        else:                                  # is swept before b * 3, or after it
            loss = fa.sum(a * b) + fa.sum(b * np.float32(3.0))
        seed = np.float32(10.0)                # d/db = 10 * (a + 3) = inf in float32
        with fa.detect_anomaly(), pytest.raises(FloatingPointError, match="mul"):
            fa.grad(loss, [a, b], seed=seed)
        try:
            g = fa.grad(loss, b, seed=seed)
        except RuntimeError:
            return
    assert np.isinf(g).all(), f"resumed sweep returned {g} (the true gradient is inf)"


def test_nan_and_inf_propagate_without_the_mode():
    x = fa.Parameter(np.array([[0.0, np.inf, -np.inf, np.nan]]))
    with np.errstate(all="ignore"):
        y = fa.sigmoid(x)
        np.testing.assert_array_equal(y.value, [[0.5, 1.0, 0.0, np.nan]])
        loss = fa.sum(fa.log_softmax(x))
        assert np.isnan(loss.value)
        g = fa.grad(loss, x)
    assert g.shape == x.shape and np.isnan(g).all()
