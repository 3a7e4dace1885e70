"""Data-parallel training over MPI (mpi4py): `DataParallel`, `DistributedSampler` and a
few collectives on NumPy arrays.

Importing this module does not import mpi4py; `init()` (or the first call that needs a
communicator) does. Run scripts as `mpiexec -n N python -m mpi4py script.py`, so that an
exception on one rank aborts the whole job instead of leaving the others waiting.

Gradients travel through mpi4py's buffer API (upper-case calls on the arrays
themselves, never pickled). `DataParallel` listens to the reverse sweep
(`fastad.core.gradients.add_listener`): the moment a parameter's gradient is final it is
copied, already divided by the number of ranks, into its bucket's flat buffer; a bucket
whose gradients are all there starts its nonblocking in-place allreduce (buckets are
launched in one fixed order on every rank), the sweep drives MPI's progress between
nodes, and `backward()` returns once every bucket is reduced, with each parameter's
`.grad` a view into its bucket.
"""
from .backend import init, rank, size
from .collectives import all_reduce, barrier, broadcast
from .data_parallel import DataParallel
from .sampler import DistributedSampler

__all__ = ["init", "DataParallel", "DistributedSampler", "all_reduce", "broadcast",
           "barrier", "rank", "size"]
