"""fastad.distributed without MPI: N ranks as N threads of this process, joined by an
in-process communicator that has the backend's methods (tests/mpi/ runs the same
machinery under real MPI). Checks the sweep's "gradient final" hook, bucket layout,
launch order, no_sync, unused parameters and DistributedSampler's shares."""
import os
import sys
import threading

import numpy as np
import pytest

import fastad as fa
from fastad import distributed as dist
from fastad import nn
from fastad.core.gradients import add_listener
from fastad.core.tape import SKIP


def test_importing_fastad_does_not_import_mpi4py():
    import subprocess
    code = ("import sys, fastad, fastad.distributed; "
            "assert 'mpi4py' not in sys.modules, 'mpi4py imported'")
    # from the tests folder: `python -c` puts its working directory first on sys.path
    subprocess.run([sys.executable, "-c", code], check=True,
                   cwd=os.path.dirname(os.path.abspath(__file__)))


# --- an in-process communicator -----------------------------------------------------

class World:
    """Shared state of `size` fake ranks: collective number k of every rank meets here.
    When the last rank posts collective k its result is computed from every rank's
    input (which MPI also requires to stay unchanged until completion), and each rank
    copies it out when it completes its request."""

    def __init__(self, size):
        self.size = size
        self.cond = threading.Condition()
        self.posts = {}     # k -> {rank: (kind, input)}
        self.results = {}   # k -> result
        self.log = []       # (rank, k, nbytes) per Iallreduce, in call order

    def comms(self):
        return [FakeComm(self, r) for r in range(self.size)]


class FakeRequest:
    def __init__(self, comm, k, buffer):
        self.comm, self.k, self.buffer, self.finished = comm, k, buffer, False

    def finish(self):
        if not self.finished:
            self.buffer[...] = self.comm._result(self.k)
            self.finished = True


class FakeComm:
    def __init__(self, world, rank):
        self.world, self.rank, self.size = world, rank, world.size
        self.count = 0

    def _post(self, kind, data, combine):
        w, k = self.world, self.count
        self.count += 1
        with w.cond:
            posts = w.posts.setdefault(k, {})
            posts[self.rank] = (kind, data)
            if len(posts) == w.size:
                kinds = {kd for kd, _ in posts.values()}
                assert len(kinds) == 1, f"ranks disagree on collective {k}: {kinds}"
                inputs = [posts[r][1] for r in range(w.size)]
                if kind != "allgather":
                    shapes = {(a.shape, a.dtype.str) for a in inputs}
                    assert len(shapes) == 1, f"ranks disagree on collective {k}: {shapes}"
                w.results[k] = combine(inputs)
                w.cond.notify_all()
        return k

    def _result(self, k):
        w = self.world
        with w.cond:
            while k not in w.results:
                assert w.cond.wait(timeout=20), f"collective {k} never completed (hang)"
            return w.results[k]

    def iallreduce(self, buffer):
        self.world.log.append((self.rank, self.count, buffer.nbytes))
        k = self._post("iallreduce", buffer, lambda inputs: sum(a.copy() for a in inputs))
        return FakeRequest(self, k, buffer)

    def testall(self, requests):
        with self.world.cond:
            if not all(r.k in self.world.results for r in requests):
                return False
        for r in requests:
            r.finish()
        return True

    def waitall(self, requests):
        for r in requests:
            r.finish()

    def bcast(self, array, root):
        k = self._post("bcast", array, lambda inputs: inputs[root].copy())
        array[...] = self._result(k)

    def allgather(self, obj):
        return self._result(self._post("allgather", obj, list))

    def allreduce(self, send, recv, op):
        k = self._post("allreduce", send.copy(),
                       lambda inputs: np.max(inputs, axis=0) if op == "max" else sum(inputs))
        recv[...] = self._result(k)

    def barrier(self):
        self._result(self._post("barrier", np.zeros(0), lambda inputs: None))


def run_ranks(size, body):
    """body(rank, comm) in `size` threads; returns the results in rank order."""
    world = World(size)
    comms = world.comms()
    results, errors = [None] * size, []

    def run(r):
        try:
            results[r] = body(r, comms[r])
        except BaseException as error:  # noqa: B036 - reported below
            errors.append(error)

    threads = [threading.Thread(target=run, args=(r,)) for r in range(size)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads), "a rank hung"
    if errors:
        raise errors[0]
    return results, world


# --- the sweep's hook -----------------------------------------------------------------

class Recorder:
    def __init__(self, watch):
        self.watch, self.events = watch, []

    def begin(self, final_at):
        self.events.append("begin")
        return [p for p in self.watch if p in final_at]

    def gradient_final(self, leaf, gradient):
        self.events.append(("final", leaf, gradient.copy(), leaf.grad is None))

    def progress(self):
        self.events.append("progress")

    def end(self, gradients):
        self.events.append("end")

    def abort(self, error):
        self.events.append(("abort", error))


def chain(rng):
    w1 = fa.Parameter(rng.standard_normal((4, 3)))
    w2 = fa.Parameter(rng.standard_normal((3, 2)))
    x = rng.standard_normal((5, 4))
    return w1, w2, x


def test_hook_fires_when_each_gradient_is_final_in_sweep_order():
    rng = np.random.default_rng(0)
    w1, w2, x = chain(rng)
    recorder = Recorder([w1, w2])
    remove = add_listener(recorder)
    try:
        def f():
            return fa.sum(fa.sigmoid(fa.matmul(fa.sigmoid(fa.matmul(x, w1)), w2)))
        g1, g2 = fa.grad(f(), [w1, w2])
        assert recorder.events == []          # fa.grad never calls listeners
        f().backward()
    finally:
        remove()
    finals = [e for e in recorder.events if type(e) is tuple]
    # w2 is final first (its consumer is the later node)
    assert [e[1] is w for e, w in zip(finals, [w2, w1])] == [True, True]
    np.testing.assert_array_equal(finals[0][2], g2)
    np.testing.assert_array_equal(finals[1][2], g1)
    assert all(e[3] for e in finals)             # .grad untouched while the sweep runs
    # w1 final only after the node that consumes it, with progress calls in between
    assert recorder.events[0] == "begin" and recorder.events[-1] == "end"
    positions = [i for i, e in enumerate(recorder.events) if type(e) is tuple]
    assert "progress" in recorder.events[positions[0]:positions[1]]
    np.testing.assert_array_equal(w1.grad, g1)


def test_a_layers_weight_is_reported_before_its_input_gradient_is_computed():
    # The matmul node's vjp is asked first for the watched weight alone, the listener
    # hears of it, then the vjp is asked for the input: a DataParallel's allreduce of a
    # weight runs beside the product that the layer below needs.
    rng = np.random.default_rng(3)
    w1, w2, x = chain(rng)

    def f():
        return fa.sum(fa.matmul(fa.sigmoid(fa.matmul(x, w1)), w2))
    expected = fa.grad(f(), [w1, w2])
    loss = f()
    product = loss._node.parents[0]
    recorder = Recorder([w1, w2])

    def vjp(g, saved, out, vjp=product.vjp):
        recorder.events.append(("vjp for", tuple(o is not SKIP for o in out)))
        return vjp(g, saved, out)
    vjp.op_name = product.vjp.op_name
    product.vjp = vjp
    remove = add_listener(recorder)
    try:
        loss.backward()
    finally:
        remove()
    names = [("final", "w2" if e[1] is w2 else "w1") if e[0] == "final" else e
             for e in recorder.events]
    at = names.index(("vjp for", (False, True)))
    assert names[at:at + 4] == [("vjp for", (False, True)), ("final", "w2"), "progress",
                                ("vjp for", (True, False))]
    np.testing.assert_array_equal(w1.grad, expected[0])
    np.testing.assert_array_equal(w2.grad, expected[1])


def test_interrupted_sweep_aborts_listener_and_leaves_grad_alone():
    rng = np.random.default_rng(1)
    w1, w2, x = chain(rng)
    w1.grad = np.ones((4, 3))
    recorder = Recorder([w1, w2])

    class Boom(Exception):
        pass

    calls = {"n": 0}

    def progress():
        calls["n"] += 1
        if calls["n"] == 2:
            raise Boom("stop")
    recorder.progress = progress
    remove = add_listener(recorder)
    try:
        loss = fa.sum(fa.matmul(fa.sigmoid(fa.matmul(x, w1)), w2))
        with pytest.raises(Boom):
            loss.backward()
    finally:
        remove()
    assert isinstance(recorder.events[-1], tuple) and recorder.events[-1][0] == "abort"
    np.testing.assert_array_equal(w1.grad, np.ones((4, 3)))
    assert w2.grad is None


def test_listener_removed_and_uninterested_listener_costs_nothing():
    rng = np.random.default_rng(2)
    w1, w2, x = chain(rng)
    recorder = Recorder([])
    remove = add_listener(recorder)
    remove()
    fa.sum(fa.matmul(x, w1)).backward()
    assert recorder.events == []


# --- DataParallel with fake ranks ---------------------------------------------------

def mlp(seed, dtype=np.float64, sizes=(6, 8, 8, 3)):
    rng = np.random.default_rng(seed)
    layers = []
    for i in range(len(sizes) - 1):
        layers += [nn.Linear(sizes[i], sizes[i + 1], dtype=dtype, rng=rng), nn.Tanh()]
    return nn.Sequential(*layers[:-1])


def data(seed=0, n=12):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, 6)), rng.integers(0, 3, n)


@pytest.mark.parametrize("size", [1, 2, 3])
def test_ranks_on_split_batches_equal_one_process_on_the_whole_batch(size):
    X, y = data(n=12)
    reference = mlp(0)
    opt = fa.optim.SGD(reference.parameters(), lr=0.1, momentum=0.9)
    for _ in range(3):
        opt.zero_grad()
        fa.cross_entropy(reference(X), y).backward()
        opt.step()

    def rank_body(r, comm):
        model = dist.DataParallel(mlp(r), comm=comm, bucket_mb=1e-4)  # rank 0's values win
        opt = fa.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        share = slice(r * 12 // size, (r + 1) * 12 // size)
        for _ in range(3):
            opt.zero_grad()
            fa.cross_entropy(model(X[share]), y[share]).backward()
            opt.step()
        return [p.value.copy() for p in model.parameters()], model

    results, world = run_ranks(size, rank_body)
    for values, _ in results:
        for got, want in zip(values, reference.parameters()):
            np.testing.assert_allclose(got, want.value, rtol=1e-12, atol=1e-12)
        for got, other in zip(values, results[0][0]):
            np.testing.assert_array_equal(got, other)   # bit-identical across ranks


def test_buckets_reverse_order_small_first_and_grad_views():
    def rank_body(r, comm):
        model = dist.DataParallel(mlp(0, sizes=(6, 300, 300, 3)), comm=comm, bucket_mb=0.5)
        X, y = data(r)
        fa.cross_entropy(model(X), y).backward()
        return model

    (model, _), world = run_ranks(2, rank_body)
    params = model.parameters()
    order = [i for bucket in model.bucket_params for i in bucket]
    assert order == list(reversed(range(len(params))))
    sizes = [sum(params[i].value.nbytes for i in b) for b in model.bucket_params]
    assert len(model.bucket_params) >= 2 and sizes[0] <= 2**20
    for b, bucket in zip(model._buckets, model.bucket_params):
        for i in bucket:
            p = params[i]
            assert np.shares_memory(p.grad, b.buffer) and p.grad.flags.c_contiguous
            assert p.grad.ctypes.data % 64 == 0
    # every rank launched its buckets in the same order, one Iallreduce per bucket
    for rank in range(2):
        launches = [(k, n) for r, k, n in world.log if r == rank]
        assert len(launches) == len(model.bucket_params)
    assert model.launches == list(range(len(model.bucket_params)))


def test_first_bucket_launches_before_the_sweep_ends():
    seen = {}

    def rank_body(r, comm):
        model = dist.DataParallel(mlp(0, sizes=(6, 64, 64, 64, 3)), comm=comm, bucket_mb=1e-3)
        X, y = data(r)
        loss = fa.cross_entropy(model(X), y)
        original = model._launch_ready
        first_param = model.parameters()[0]

        def spy():
            if r == 0 and "first" not in seen:
                seen["first"] = first_param not in model._where[first_param].filled
            original()
        object.__setattr__(model, "_launch_ready", spy)
        loss.backward()
        return model

    run_ranks(2, rank_body)
    assert seen["first"]   # the first bucket started while the sweep was still running


class TwoHeads(nn.Module):
    """Uses head a or head b: a parameter the loss did not use."""

    def __init__(self):
        super().__init__()
        rng = np.random.default_rng(0)
        self.a = nn.Linear(6, 3, dtype=np.float64, rng=rng)
        self.b = nn.Linear(6, 3, dtype=np.float64, rng=rng)

    def forward(self, x, use_b):
        return self.b(x) if use_b else self.a(x)


class HeadFirst(nn.Module):
    """Registers its last layer first: the reverse of parameters() is not the order in
    which the sweep makes the gradients final."""

    def __init__(self):
        super().__init__()
        rng = np.random.default_rng(0)
        self.head = nn.Linear(16, 3, dtype=np.float64, rng=rng)
        self.body = nn.Linear(6, 16, dtype=np.float64, rng=rng)

    def forward(self, x):
        return self.head(fa.tanh(self.body(x)))


def test_buckets_follow_the_order_in_which_gradients_become_final():
    X, y = data(n=12)
    reference = HeadFirst()
    fa.cross_entropy(reference(X), y).backward()

    def rank_body(r, comm):
        model = dist.DataParallel(HeadFirst(), comm=comm, bucket_mb=1e-4)  # a bucket each
        before = model.bucket_params
        for _ in range(2):
            model.zero_grad()
            fa.cross_entropy(model(X[r * 6:(r + 1) * 6]), y[r * 6:(r + 1) * 6]).backward()
        return before, model.bucket_params, [p.grad.copy() for p in model.parameters()]

    results, world = run_ranks(2, rank_body)
    # parameters(): head.weight, head.bias, body.weight, body.bias
    assert results[0][0] == [[3], [2], [1], [0]]
    assert results[0][1] == results[1][1] == [[1], [0], [3], [2]]   # head first
    assert [n for r, _, n in world.log if r == 0][:4] == [24, 384, 128, 768]
    for got, want in zip(results[0][2], reference.parameters()):
        np.testing.assert_allclose(got, want.grad, rtol=1e-12, atol=1e-15)


def test_no_sync_accumulation_equals_a_bigger_batch():
    X, y = data(n=16)
    reference = mlp(0)
    for half in (slice(0, 8), slice(8, 16)):
        # cross_entropy is a mean: two halves' sum of grads = 2x the whole batch's grad
        fa.cross_entropy(reference(X[half]), y[half]).backward()

    def rank_body(r, comm):
        model = dist.DataParallel(mlp(0), comm=comm)
        mine = X[r * 8:(r + 1) * 8], y[r * 8:(r + 1) * 8]
        with model.no_sync():
            fa.cross_entropy(model(mine[0][:4]), mine[1][:4]).backward()
        assert not [e for e in comm.world.log if e[0] == r]   # no gradient traffic yet
        fa.cross_entropy(model(mine[0][4:]), mine[1][4:]).backward()
        return [p.grad.copy() for p in model.parameters()]

    results, world = run_ranks(2, rank_body)
    for grads in results:
        for got, p in zip(grads, reference.parameters()):
            # rank r: two quarter-batch means = 2x its half's mean; the mean over the
            # 2 ranks of that = the sum of the two halves' means
            np.testing.assert_allclose(got, p.grad, rtol=1e-12, atol=1e-14)


def test_unused_parameter_contributes_zeros_and_does_not_hang():
    def rank_body(r, comm):
        model = dist.DataParallel(TwoHeads(), comm=comm, bucket_mb=1e-4)
        X, y = data(r, n=4)
        fa.cross_entropy(model(X, use_b=(r == 1)), y).backward()
        return {name: p.grad.copy() for name, p in model.named_parameters()}, model

    results, _ = run_ranks(2, rank_body)
    (g0, model0), (g1, model1) = results
    for name in g0:
        np.testing.assert_array_equal(g0[name], g1[name])
    # the ranks' sweeps differ; all take rank 0's bucket order (a first, unused b last)
    assert model0.bucket_params == model1.bucket_params == [[1], [0], [3], [2]]
    # a: only rank 0 used it; the mean is half its local gradient
    single = TwoHeads()
    X, y = data(0, n=4)
    fa.cross_entropy(single(X, use_b=False), y).backward()
    np.testing.assert_allclose(g0["a.weight"], single.a.weight.grad / 2, rtol=1e-12)


def test_grad_buffer_not_written_while_it_backs_an_existing_grad():
    def rank_body(r, comm):
        model = dist.DataParallel(mlp(0), comm=comm)
        X, y = data(r)
        fa.cross_entropy(model(X), y).backward()
        first = [p.grad for p in model.parameters()]
        kept = [g.copy() for g in first]
        fa.cross_entropy(model(X), y).backward()   # no zero_grad: accumulates
        for g, k in zip(first, kept):
            np.testing.assert_array_equal(g, k)     # the old .grad arrays are untouched
        return [p.grad.copy() for p in model.parameters()], kept

    results, _ = run_ranks(2, rank_body)
    for grads, kept in results:
        for g, k in zip(grads, kept):
            np.testing.assert_allclose(g, 2 * k, rtol=1e-12)


def test_different_models_refused_on_every_rank():
    def rank_body(r, comm):
        with pytest.raises(ValueError, match="rank 1's model differs"):
            dist.DataParallel(mlp(0, sizes=(6, 8 + r, 3)), comm=comm)
        return True

    results, _ = run_ranks(2, rank_body)
    assert results == [True, True]


def test_wrapper_delegates_to_the_model():
    [model], _ = run_ranks(1, lambda r, comm: dist.DataParallel(mlp(0), comm=comm))
    inner = model.module
    assert model.parameters() == inner.parameters()
    assert list(model.state_dict()) == list(inner.state_dict())
    assert model.named_parameters() == inner.named_parameters()


def test_collectives():
    def rank_body(r, comm):
        a = np.array([r + 1.0, -r])
        return (dist.all_reduce(a, "sum", comm=comm), dist.all_reduce(a, "mean", comm=comm),
                dist.all_reduce(a, "max", comm=comm),
                dist.broadcast(np.array([r, r]), root=1, comm=comm))

    results, _ = run_ranks(3, rank_body)
    for s, m, mx, b in results:
        np.testing.assert_array_equal(s, [6, -3])
        np.testing.assert_array_equal(m, [2, -1])
        np.testing.assert_array_equal(mx, [3, 0])
        np.testing.assert_array_equal(b, [1, 1])
    with pytest.raises(ValueError, match="op must be"):
        dist.all_reduce(np.zeros(2), "min", comm=World(1).comms()[0])


# --- DistributedSampler -----------------------------------------------------------------

@pytest.mark.parametrize("n", [0, 1, 7, 10, 12, 13])
@pytest.mark.parametrize("ranks", [1, 2, 3, 4])
@pytest.mark.parametrize("drop_last", [False, True])
def test_sampler_shares(n, ranks, drop_last):
    samplers = [dist.DistributedSampler(n, seed=3, drop_last=drop_last, num_replicas=ranks,
                                        rank=r) for r in range(ranks)]
    for epoch in (0, 1):
        for s in samplers:
            s.set_epoch(epoch)
        shares = [list(s) for s in samplers]
        assert len({len(share) for share in shares}) == 1        # equal counts
        assert all(len(share) == len(s) for share, s in zip(shares, samplers))
        flat = [i for share in shares for i in share]
        if drop_last:
            assert len(set(flat)) == len(flat) == (n // ranks) * ranks   # disjoint
        else:
            assert set(flat) == set(range(n))                            # cover the data
            assert len(flat) - len(set(flat)) == (-n) % ranks if n else True
        assert all(0 <= i < n for i in flat)
    s0 = dist.DistributedSampler(n, seed=3, num_replicas=ranks, rank=0)
    assert list(s0) == list(dist.DistributedSampler(n, seed=3, num_replicas=ranks, rank=0))


def test_sampler_epochs_reshuffle_and_match_pytorch_layout():
    a = dist.DistributedSampler(10, seed=0, num_replicas=3, rank=0)
    e0 = list(a)
    a.set_epoch(1)
    assert list(a) != e0
    plain = [list(dist.DistributedSampler(10, shuffle=False, num_replicas=3, rank=r))
             for r in range(3)]
    assert plain == [[0, 3, 6, 9], [1, 4, 7, 0], [2, 5, 8, 1]]   # torch's padding/stride
    dropped = [list(dist.DistributedSampler(10, shuffle=False, drop_last=True,
                                            num_replicas=3, rank=r)) for r in range(3)]
    assert dropped == [[0, 3, 6], [1, 4, 7], [2, 5, 8]]
    with pytest.raises(ValueError):
        dist.DistributedSampler(10, num_replicas=2, rank=2)


def test_default_communicator_is_initialized_once(monkeypatch):
    # A second implicit init() would reset the BLAS threads the user chose.
    from fastad.distributed import backend
    comm = World(1).comms()[0]
    monkeypatch.setattr(backend, "_state", {"comm": None, "backend": None, "threads": None})
    calls = []
    real_init = dist.init

    def counting_init(*args, **kwargs):
        calls.append(1)
        return real_init(comm, blas_threads=None)
    monkeypatch.setattr(backend, "init", counting_init)
    dist.DataParallel(mlp(0))
    np.testing.assert_array_equal(dist.all_reduce(np.ones(2)), [1, 1])
    assert len(dist.DistributedSampler(10)) == 10
    assert calls == [1]
