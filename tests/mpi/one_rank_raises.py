"""Run under MPI by tests/test_mpi.py: rank 1's forward raises at step 3 while the other
ranks wait in their backward's allreduce; `python -m mpi4py` turns the uncaught
exception into MPI_Abort, so the job must end (nonzero) within seconds."""
import numpy as np

import fastad as fa
import fastad.distributed as dist
from fastad import nn

comm = dist.init()
rng = np.random.default_rng(0)
model = dist.DataParallel(nn.Sequential(nn.Linear(8, 16, rng=rng), nn.ReLU(),
                                        nn.Linear(16, 2, rng=rng)))
X = np.ones((4, 8), np.float32)
y = np.zeros(4, np.int64)
for step in range(10):
    if step == 3 and comm.Get_rank() == 1:
        raise RuntimeError("rank 1 fails in its forward")
    model.zero_grad()
    fa.cross_entropy(model(X), y).backward()
