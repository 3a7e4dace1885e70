"""Run under MPI by tests/test_mpi.py: `mpiexec -n N python -m mpi4py capture_equivalence.py`.

A captured data-parallel training step keeps its communication: every rank trains a
DataParallel model with a captured step and, beside it, an eager copy from the same
initial weights; after every step the two are bit-identical, and the captured model is
identical on every rank (so its gradients were averaged, not left local). Rank 0 prints
"OK" when all checks passed on every rank.
"""
import hashlib

import numpy as np
from mpi4py import MPI

import fastad as fa
import fastad.distributed as dist
from fastad import nn

comm = dist.init()
R, N = comm.Get_rank(), comm.Get_size()


def trainer():
    rng = np.random.default_rng(R)  # different on every rank: DataParallel broadcasts rank 0's
    model = dist.DataParallel(nn.Sequential(nn.Linear(6, 16, dtype=np.float64, rng=rng),
                                            nn.Tanh(), nn.Linear(16, 3, dtype=np.float64,
                                                                 rng=rng)), bucket_mb=1e-3)
    opt = fa.optim.Adam(model.parameters(), lr=1e-2)

    def step(x, y):
        opt.zero_grad()
        loss = fa.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        return loss
    return model, step


eager_model, eager_step = trainer()
model, step = trainer()
step = fa.capture(step)
for i in range(12):
    rng = np.random.default_rng(100 * i + R)  # each rank its own data
    x, y = rng.standard_normal((8, 6)), rng.integers(0, 3, 8)
    loss, expected = step(x, y), eager_step(x, y)
    assert loss.value.tobytes() == expected.value.tobytes(), f"loss differs at step {i}"
    for p, q in zip(model.parameters(), eager_model.parameters()):
        assert p.value.tobytes() == q.value.tobytes(), f"parameters differ at step {i}"
    digest = hashlib.sha256(b"".join(p.value.tobytes() for p in model.parameters()))
    assert len(set(comm.allgather(digest.hexdigest()))) == 1, "ranks differ"
assert step.cache_info().replays == 10
comm.Barrier()
if R == 0:
    print(f"OK {N} ranks", flush=True)
MPI.Finalize()
