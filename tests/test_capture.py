"""fa.capture: a captured function gives, call after call, bit for bit what the same
function gives eagerly -- for every row of the op table (value and gradients), and for
training loops with each optimizer, dropout, train/eval switches and changing batch
sizes -- and refuses what it cannot replay (reading values on the host).

Each comparison runs two copies of the same state side by side, one eager and one
captured, on fresh random inputs every call: a value frozen at recording would differ.
"""
import warnings

import numpy as np
import pytest
from _op_table import FA, OPS

import fastad as fa
from fastad import nn, optim

CALLS = 5  # eager, recording, then replays


def same_bits(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def value_and_grads(row, weights):
    def step(*inputs):
        out = row.build(FA, *inputs)
        loss = fa.sum(out * weights)
        return out, fa.grad(loss, list(inputs))
    return step


@pytest.mark.parametrize("row", OPS, ids=[row.id for row in OPS])
def test_each_op_captured_equals_eager(row):
    rng = np.random.default_rng(7)
    probe = row.build(FA, *[fa.tensor(x) for x in row.inputs(rng, np.float64)])
    weights = rng.standard_normal(probe.shape)
    step = value_and_grads(row, weights)
    captured = fa.capture(step)
    for call in range(CALLS):
        arrays = row.inputs(rng, np.float64)
        eager_out, eager_grads = step(*[fa.tensor(x, requires_grad=True) for x in arrays])
        out, grads = captured(*[fa.tensor(x, requires_grad=True) for x in arrays])
        assert same_bits(out.value, eager_out.value), f"value differs at call {call}"
        for i, (g, expected) in enumerate(zip(grads, eager_grads)):
            assert same_bits(g, expected), f"gradient {i} differs at call {call}"
    assert captured.cache_info()[:3] == (1, 1, CALLS - 2)


# --- training ------------------------------------------------------------------------

def mlp(dropout=0.0, dtype=np.float64):
    layers = [nn.Linear(6, 16, rng=1, dtype=dtype), nn.Tanh(),
              nn.Linear(16, 16, rng=2, dtype=dtype), nn.ReLU()]
    if dropout:
        layers.append(nn.Dropout(dropout, rng=3))
    layers.append(nn.Linear(16, 3, rng=4, dtype=dtype))
    return nn.Sequential(*layers)


OPTIMIZERS = {
    "sgd": lambda params: optim.SGD(params, lr=0.1),
    "sgd_momentum": lambda params: optim.SGD(params, lr=0.05, momentum=0.9, nesterov=True,
                                             weight_decay=1e-3),
    "adam": lambda params: optim.Adam(params, lr=1e-2),
    "adamw": lambda params: optim.AdamW(params, lr=1e-2, weight_decay=0.1),
}


class Trainer:
    """A model, its optimizer and a training step: one eager and one captured copy."""

    def __init__(self, make_optimizer, dropout=0.0, capture=False):
        self.model = mlp(dropout)
        self.opt = make_optimizer(self.model.parameters())

        def step(x, y):
            self.opt.zero_grad()
            loss = fa.cross_entropy(self.model(x), y)
            loss.backward()
            self.opt.step()
            return loss
        self.step = fa.capture(step) if capture else step

    def weights(self):
        return [p.value for p in self.model.parameters()]


def pair(make_optimizer, **kwargs):
    return Trainer(make_optimizer, **kwargs), Trainer(make_optimizer, capture=True, **kwargs)


def batch(rng, n):
    return rng.standard_normal((n, 6)), rng.integers(0, 3, n)


def assert_same_state(eager, captured, where):
    for i, (a, b) in enumerate(zip(eager.weights(), captured.weights())):
        assert same_bits(a, b), f"parameter {i} differs {where}"
    for i, (p, q) in enumerate(zip(eager.model.parameters(), captured.model.parameters())):
        assert (p.grad is None) == (q.grad is None) and \
            (p.grad is None or same_bits(p.grad, q.grad)), f"gradient {i} differs {where}"


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_training_steps_are_bit_identical(name):
    eager, captured = pair(OPTIMIZERS[name])
    rng = np.random.default_rng(0)
    for step in range(50):
        x, y = batch(rng, 8)
        assert same_bits(captured.step(x, y).value, eager.step(x, y).value)
        assert_same_state(eager, captured, f"after step {step}")
    assert captured.step.cache_info().replays == 48


def test_dropout_draws_a_new_mask_every_replay():
    eager, captured = pair(OPTIMIZERS["adam"], dropout=0.5)
    rng = np.random.default_rng(1)
    x, y = batch(rng, 8)  # the same batch: only the masks make the losses differ
    losses = []
    for _ in range(6):
        loss = captured.step(x, y)
        assert same_bits(loss.value, eager.step(x, y).value)
        losses.append(loss.value.item())
    assert len(set(losses)) == len(losses)
    assert_same_state(eager, captured, "after the dropout steps")


def test_eval_and_train_switch_programs():
    eager, captured = pair(OPTIMIZERS["sgd"], dropout=0.5)
    rng = np.random.default_rng(2)
    for mode in ["train", "eval", "train", "eval", "train"]:
        for trainer in (eager, captured):
            getattr(trainer.model, mode)()
        for _ in range(3):
            x, y = batch(rng, 8)
            assert same_bits(captured.step(x, y).value, eager.step(x, y).value)
    assert_same_state(eager, captured, "after switching modes")
    info = captured.step.cache_info()
    assert info.recordings == 2 and info.programs == 2


def test_a_new_batch_size_records_a_new_program():
    eager, captured = pair(OPTIMIZERS["adam"])
    rng = np.random.default_rng(3)
    for n in [8, 8, 8, 5, 5, 5, 8, 5]:
        x, y = batch(rng, n)
        assert same_bits(captured.step(x, y).value, eager.step(x, y).value)
    assert_same_state(eager, captured, "after changing batch sizes")
    info = captured.step.cache_info()
    assert (info.eager, info.recordings, info.programs) == (2, 2, 2)


def test_programs_are_bounded_least_recently_used_first():
    model = mlp()

    @fa.capture(max_programs=2)
    def forward(x):
        return fa.sum(model(x))
    rng = np.random.default_rng(4)
    for n in [1, 1, 2, 2, 3, 3]:
        forward(rng.standard_normal((n, 6)))
    info = forward.cache_info()
    assert info.programs == 2 and info.recordings == 3
    forward(rng.standard_normal((3, 6)))
    assert forward.cache_info().replays == 1
    forward(rng.standard_normal((1, 6)))  # n=1 was evicted: it is recorded again
    assert forward.cache_info().recordings == 4


def test_replayed_results_are_not_overwritten_by_the_next_replay():
    trainer = Trainer(OPTIMIZERS["sgd"], capture=True)
    rng = np.random.default_rng(5)
    results = []
    for _ in range(5):
        loss = trainer.step(*batch(rng, 8))
        results.append((loss, loss.value.copy()))
    for loss, copy in results:
        assert same_bits(loss.value, copy)
    assert not results[-1][0].requires_grad


def test_gradients_a_replay_leaves_are_not_overwritten_by_the_next():
    """.grad arrays and fa.grad's results are fresh per replay, as eagerly."""
    model = mlp()
    params = model.parameters()

    @fa.capture
    def grads(x, y):
        loss = fa.cross_entropy(model(x), y)
        return fa.grad(loss, params)

    @fa.capture
    def backward(x, y):
        model.zero_grad()
        fa.cross_entropy(model(x), y).backward()

    rng = np.random.default_rng(10)
    kept, kept_grad = [], []
    for _ in range(5):
        x, y = batch(rng, 8)
        kept.append([(g, g.copy()) for g in grads(x, y)])
        backward(x, y)
        kept_grad.append([(p.grad, p.grad.copy()) for p in params])
    for pairs in kept + kept_grad:
        for array, copy in pairs:
            assert same_bits(array, copy)
    for pairs in kept:  # fa.grad's results stay read-only, as eagerly
        for array, _ in pairs:
            with pytest.raises(ValueError):
                array.flags.writeable = True


def test_toggling_requires_grad_records_again():
    eager, captured = pair(OPTIMIZERS["sgd"])
    rng = np.random.default_rng(6)
    for step in range(8):
        if step == 4:  # freeze the first layer in both
            for trainer in (eager, captured):
                for p in trainer.model[0].parameters():
                    p.requires_grad = False
        x, y = batch(rng, 8)
        assert same_bits(captured.step(x, y).value, eager.step(x, y).value)
    assert_same_state(eager, captured, "after freezing a layer")
    assert captured.step.cache_info().recordings == 2


def test_replacing_a_layer_records_again():
    eager, captured = pair(OPTIMIZERS["sgd"])
    rng = np.random.default_rng(7)
    for step in range(6):
        if step == 3:
            for trainer in (eager, captured):
                setattr(trainer.model, "4", nn.Linear(16, 3, rng=9, dtype=np.float64))
        x, y = batch(rng, 8)
        assert same_bits(captured.step(x, y).value, eager.step(x, y).value)
    assert captured.step.cache_info().recordings == 2


def test_an_error_in_a_replay_leaves_parameters_as_eager_does():
    eager, captured = pair(OPTIMIZERS["adam"])
    rng = np.random.default_rng(8)
    for _ in range(4):
        x, y = batch(rng, 8)
        captured.step(x, y)
        eager.step(x, y)
    x, y = batch(rng, 8)
    y[3] = 7  # a label out of range: cross_entropy raises before any update
    for trainer in (eager, captured):
        with pytest.raises(IndexError, match="label 7"):
            trainer.step(x, y)
    assert_same_state(eager, captured, "after the failed step")
    x, y = batch(rng, 8)
    assert same_bits(captured.step(x, y).value, eager.step(x, y).value)


def test_modes_are_part_of_the_signature():
    model = mlp()

    @fa.capture
    def forward(x):
        return model(x)
    x = np.random.default_rng(9).standard_normal((4, 6))
    assert [forward(x).requires_grad for _ in range(4)] == [True, True, False, False]
    with fa.no_grad():
        for _ in range(3):  # eager, recording, replay
            expected = model(x)
            assert same_bits(forward(x).value, expected.value)
    assert forward.cache_info().recordings == 2


def test_log_of_a_softmax_under_no_grad_follows_the_new_input():
    """log(softmax(x)) reads softmax's logits through a detached view: a replay must give
    it the new call's logits, not the recorded ones."""
    @fa.capture
    def log_probs(x):
        with fa.no_grad():
            return fa.log(fa.softmax(x))
    rng = np.random.default_rng(11)
    for _ in range(4):
        x = rng.standard_normal((3, 4))
        with fa.no_grad():
            expected = fa.log_softmax(fa.tensor(x)).value
        assert same_bits(log_probs(x).value, expected)


@pytest.mark.filterwarnings("ignore:invalid value encountered in log")
def test_anomaly_mode_replays_its_checks():
    w = fa.Parameter(np.ones(3))

    @fa.capture
    def step(x):
        return fa.grad(fa.sum(fa.log(x * w)), w)
    with fa.detect_anomaly():
        for _ in range(3):
            step(np.ones(3))
        with pytest.raises(FloatingPointError):
            step(np.array([1.0, -1.0, 1.0]))  # log of a negative number in a replay
    assert step.cache_info().replays >= 1


# --- what capture refuses ---------------------------------------------------------------

@pytest.mark.parametrize("read", [
    lambda t: float(t), lambda t: t.item(), lambda t: bool(t > 0), lambda t: np.asarray(t),
    lambda t: t.value, lambda t: t.numpy(), lambda t: repr(t),
], ids=["float", "item", "compare", "asarray", "value", "numpy", "repr"])
def test_host_reads_are_refused_with_the_line(read):
    w = fa.Parameter(np.ones(3))

    @fa.capture
    def step(x):
        loss = fa.sum(x * w)
        read(loss)
        return loss
    step(np.ones(3))  # eager
    with pytest.raises(fa.CaptureError, match=r"test_capture\.py:\d+"):
        step(np.ones(3))


def test_a_data_dependent_branch_is_refused():
    w = fa.Parameter(np.ones(3))

    @fa.capture
    def step(x):
        loss = fa.sum(x * w)
        if loss.item() > 2:  # the branch a replay would freeze
            loss = loss * 2.0
        return loss
    step(np.ones(3))
    with pytest.raises(fa.CaptureError, match="host"):
        step(np.ones(3))


def test_reading_an_argument_is_allowed():
    @fa.capture
    def step(x):
        return fa.sum(x * float(np.asarray(x).shape[0]))
    t = fa.tensor(np.arange(3.0))
    for _ in range(3):
        assert same_bits(step(t).value, np.float64(9.0))


def test_allow_host_reads_runs_eagerly_with_one_warning():
    w = fa.Parameter(np.ones(3))

    @fa.capture(allow_host_reads=True)
    def step(x):
        loss = fa.sum(x * w)
        return loss * 2.0 if loss.item() > 2 else loss
    with pytest.warns(UserWarning, match="eagerly"):
        assert step(np.ones(3)).value == 6.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert step(np.zeros(3)).value == 0.0
    assert step.cache_info().eager == 2


def test_an_argument_computed_by_ops_is_refused():
    step = fa.capture(lambda t: t * 2.0)
    w = fa.Parameter(np.ones(3))
    with pytest.raises(TypeError, match="argument 0"):
        step(w * 3.0)


def test_numpy_views_of_computed_arrays_are_refused():
    @fa.capture
    def step(x):
        g = fa.grad(fa.sum(x * x), x)
        return fa.sum(x[:1] * g[:1])  # NumPy slicing of a gradient: not recorded
    t = fa.tensor(np.ones(2), requires_grad=True)
    step(t)
    with pytest.raises(fa.CaptureError, match="view"):
        step(t)


def test_capture_checks_its_options():
    with pytest.raises(TypeError, match="function"):
        fa.capture(3)
    with pytest.raises(ValueError, match="max_programs"):
        fa.capture(max_programs=0)(lambda: None)


def test_the_replay_loop_refuses_an_array_of_another_layout():
    """A kernel step trusts its pointers; the loop checks each array a slot brings first."""
    from fastad.kernels import machine, pointwise
    recorded = np.zeros((3, 4))
    loop = machine.Machine(2)
    loop.expect(0, recorded)
    loop.arithmetic(int(pointwise.Arithmetic.ADD), 0, 2.0, np.empty((3, 4)), recorded,
                    recorded, None)
    loop.run([np.ones((3, 4)), None], None)  # the layout it was made for
    for wrong in [np.ones((4, 3)), np.ones((3, 4), np.float32), np.ones((3, 8))[:, ::2],
                  np.asfortranarray(np.ones((3, 4))), [1.0] * 12]:
        with pytest.raises(RuntimeError, match="layout"):
            loop.run([wrong, None], None)


def test_common_training_steps_replay_without_python():
    """What the plan lowers (a test that fails when a lowering silently stops applying):
    an MLP training step with SGD or Adam runs as kernel steps, with Python only for
    the loss's label check and reduction, the optimizer's update and the .grad hand-off
    (and no transposes: nn.Linear's product reads the weight transposed)."""
    trainer = Trainer(OPTIMIZERS["adam"], capture=True)
    rng = np.random.default_rng(9)
    for _ in range(3):
        trainer.step(*batch(rng, 8))
    (program,) = trainer.step._programs[next(iter(trainer.step._programs))]
    kinds = dict.fromkeys(kind for kind, _ in program.steps)
    assert "python" not in kinds, program.steps
    kernels = [name for kind, name in program.steps if kind == "kernel"]
    assert {"gemm_into", "_gemm_transposed_a", "_gemm_transposed_b", "add_row",
            "relu_grad", "column_sum"} <= set(kernels), kernels
    # nn.Linear is one fa.linear op: its weight's transpose is a BLAS flag, not a step
    assert "transpose" not in {name for _, name in program.steps}, program.steps


@pytest.mark.parametrize("layout", ["c", "fortran", "strided", "int", "float32"])
def test_array_arguments_in_any_layout_follow_each_call(layout):
    """An ndarray operand the ops convert (copy, cast) or take as it is: each replay
    reads the new call's array either way."""
    rng = np.random.default_rng(12)
    w = fa.Parameter(rng.standard_normal((4, 3)))

    def step(x):
        loss = fa.sum(fa.matmul(x, w)) + fa.sum(fa.mul(x, 0.5))
        return loss, fa.grad(loss, w)
    captured = fa.capture(step)
    make = {"c": lambda a: a, "fortran": np.asfortranarray, "strided": lambda a: np.repeat(
        a, 2, axis=1)[:, ::2], "int": lambda a: (a * 10).astype(np.int64),
        "float32": lambda a: a.astype(np.float32)}[layout]
    for _ in range(4):
        x = make(rng.standard_normal((5, 4)))
        try:
            expected = step(x)
        except TypeError as error:  # float32 data beside a float64 parameter
            with pytest.raises(TypeError, match=str(error)[:20]):
                captured(x)
            continue
        loss, grad = captured(x)
        assert same_bits(loss.value, expected[0].value) and same_bits(grad, expected[1])


# --- the hook on replayed functions (csrc/hooks.pyx) ----------------------------------

def test_public_ops_look_like_the_functions_they_wrap():
    import inspect
    import pickle
    import weakref
    for name in ("sigmoid", "matmul", "sum", "cross_entropy"):
        op = getattr(fa, name)
        raw = op.__wrapped__
        assert (op.__name__, op.__qualname__, op.__doc__, op.__module__) == \
            (raw.__name__, raw.__qualname__, raw.__doc__, raw.__module__)
        assert inspect.signature(op) == inspect.signature(raw)
        assert pickle.loads(pickle.dumps(op)) is op
        assert name in repr(op)
        assert weakref.ref(op)() is op


def test_the_hook_passes_arguments_on_unchanged_and_binds_as_a_method():
    from fastad.core.modes import replayed

    class Counter:
        def __init__(self):
            self.calls = []

        @replayed
        def add(self, *args, **kwargs):
            self.calls.append((args, kwargs))
            return len(self.calls)

    counter = Counter()
    assert counter.add(1, 2, key=3) == 1
    assert Counter.add(counter, *range(12), a=1, b=2) == 2  # more than the hook's stack
    assert counter.calls == [((1, 2), {"key": 3}), (tuple(range(12)), {"a": 1, "b": 2})]
    assert Counter.__dict__["add"].__wrapped__.__name__ == "add"


@pytest.mark.parametrize("count", [2, 12])
def test_while_a_thread_captures_hooked_calls_are_diverted_with_their_arguments(count):
    from fastad.kernels import hooks

    def divert(function, *args, **kwargs):
        return ("diverted", function(*args, **kwargs))

    hooked = hooks.hook(lambda *args, **kwargs: (args, kwargs), divert)
    args = tuple(range(count))
    assert hooked(*args, k=1) == (args, {"k": 1})
    hooks.capturing(+1)
    try:
        assert hooked(*args, k=1) == ("diverted", (args, {"k": 1}))
    finally:
        hooks.capturing(-1)
    assert hooked(*args) == (args, {})


def test_only_captures_divert_calls_and_the_count_returns_to_zero():
    from fastad.kernels import hooks

    with fa.no_grad(), fa.detect_anomaly():
        assert hooks.capturing(0) == 0  # no_grad and anomaly calls go straight through

    @fa.capture
    def failing(x):
        y = fa.sigmoid(x)
        if float(fa.sum(y)) > 0:  # a host read: refused while recording
            return y
        return -y

    x = fa.tensor(np.ones(3))
    failing(x)
    with pytest.raises(fa.CaptureError):
        failing(x)
    assert hooks.capturing(0) == 0


def test_eager_calls_in_other_threads_stay_eager_while_one_thread_captures():
    import threading

    started, release = threading.Event(), threading.Event()
    x = fa.tensor(np.linspace(-1, 1, 5), requires_grad=True)
    expected = fa.grad(fa.sum(fa.sigmoid(x * 2.0)), x)

    @fa.capture
    def step(x):
        started.set()
        release.wait(5)
        return fa.grad(fa.sum(fa.sigmoid(x * 2.0)), x)

    release.set()
    step(x)  # the eager first call
    started.clear()
    release.clear()
    recording = threading.Thread(target=step, args=(x,))
    recording.start()
    try:
        assert started.wait(5)
        for _ in range(3):  # diverted, and run eagerly: this thread does not capture
            assert same_bits(fa.grad(fa.sum(fa.sigmoid(x * 2.0)), x), expected)
    finally:
        release.set()
        recording.join()
    assert same_bits(step(x), expected)
