"""Run under MPI by tests/test_mpi.py: `mpiexec -n N python -m mpi4py train_equivalence.py`.

Every rank checks, and rank 0 prints "OK" when all checks passed on every rank:
- N ranks, each on its share of a batch, end 20 steps (SGD with momentum, and Adam) with
  the parameters one process gets on the whole batch (float64, to rounding), and with
  bit-identical parameters on every rank;
- no_sync accumulation over micro-batches equals one bigger batch;
- a parameter one rank's loss does not use does not hang, and contributes zeros.
"""
import hashlib

import numpy as np
from mpi4py import MPI

import fastad as fa
import fastad.distributed as dist
from fastad import nn

comm = dist.init()
R, N = comm.Get_rank(), comm.Get_size()
BATCH = 12 * N  # every rank gets 12 rows


def mlp(seed):
    rng = np.random.default_rng(seed)
    return nn.Sequential(nn.Linear(10, 32, dtype=np.float64, rng=rng), nn.Tanh(),
                         nn.Linear(32, 32, dtype=np.float64, rng=rng), nn.Tanh(),
                         nn.Linear(32, 4, dtype=np.float64, rng=rng))


def batch(step):
    rng = np.random.default_rng(1000 + step)
    return rng.standard_normal((BATCH, 10)), rng.integers(0, 4, BATCH)


def identical_everywhere(arrays):
    digest = hashlib.sha256(b"".join(np.ascontiguousarray(a).tobytes() for a in arrays))
    digests = comm.allgather(digest.hexdigest())
    assert len(set(digests)) == 1, f"parameters differ across ranks: {digests}"


def train(optimizer):
    make = {"sgd": lambda ps: fa.optim.SGD(ps, lr=0.05, momentum=0.9),
            "adam": lambda ps: fa.optim.Adam(ps, lr=1e-2)}[optimizer]
    model = dist.DataParallel(mlp(R), bucket_mb=0.01)   # rank 0's init is broadcast
    assert len(model.bucket_params) > 1
    opt = make(model.parameters())
    reference = mlp(0)
    ref_opt = make(reference.parameters())
    mine = slice(R * 12, (R + 1) * 12)
    for step in range(20):
        X, y = batch(step)
        opt.zero_grad()
        fa.cross_entropy(model(X[mine]), y[mine]).backward()
        opt.step()
        ref_opt.zero_grad()
        fa.cross_entropy(reference(X), y).backward()
        ref_opt.step()
        for p, q in zip(model.parameters(), reference.parameters()):
            np.testing.assert_allclose(p.value, q.value, rtol=1e-9, atol=1e-11,
                                       err_msg=f"{optimizer} step {step}")
        identical_everywhere([p.value for p in model.parameters()])


def no_sync_accumulation():
    model = dist.DataParallel(mlp(0))
    reference = mlp(0)
    X, y = batch(99)
    mine = np.arange(R * 12, (R + 1) * 12)
    micro = np.array_split(mine, 3)
    with model.no_sync():
        for part in micro[:2]:
            (fa.cross_entropy(model(X[part]), y[part]) * (len(part) / 12)).backward()
    (fa.cross_entropy(model(X[micro[2]]), y[micro[2]]) * (len(micro[2]) / 12)).backward()
    fa.cross_entropy(reference(X), y).backward()
    for p, q in zip(model.parameters(), reference.parameters()):
        np.testing.assert_allclose(p.grad, q.grad, rtol=1e-10, atol=1e-12)
    identical_everywhere([p.grad for p in model.parameters()])


class TwoHeads(nn.Module):
    def __init__(self):
        super().__init__()
        rng = np.random.default_rng(0)
        self.body = nn.Linear(10, 8, dtype=np.float64, rng=rng)
        self.a = nn.Linear(8, 4, dtype=np.float64, rng=rng)
        self.b = nn.Linear(8, 4, dtype=np.float64, rng=rng)

    def forward(self, x, head):
        return getattr(self, head)(fa.tanh(self.body(x)))


def unused_parameter():
    model = dist.DataParallel(TwoHeads(), bucket_mb=1e-4)
    X, y = batch(7)
    mine = slice(R * 12, (R + 1) * 12)
    head = "a" if R == 0 else "b"           # rank 0 never uses b, the others never use a
    fa.cross_entropy(model(X[mine], head), y[mine]).backward()
    single = TwoHeads()
    fa.cross_entropy(single(X[0:12], "a"), y[0:12]).backward()
    np.testing.assert_allclose(model.a.weight.grad, single.a.weight.grad / N, rtol=1e-12)
    identical_everywhere([p.grad for p in model.parameters()])


train("sgd")
train("adam")
no_sync_accumulation()
unused_parameter()
total = dist.all_reduce(np.array([1.0]), "sum")
assert total[0] == N
comm.Barrier()
if R == 0:
    print(f"OK {N} ranks", flush=True)
MPI.Finalize()
