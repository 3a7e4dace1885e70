"""The communicator: an mpi4py communicator behind the few calls fastad makes, `init()`
(which also splits the BLAS threads between the ranks on a host), `rank()` and `size()`.
mpi4py is imported only when a communicator is first needed."""
import os

_state = {"comm": None, "backend": None, "threads": None}


class _MpiBackend:
    """The few MPI calls fastad makes, on an mpi4py communicator."""

    def __init__(self, comm):
        from mpi4py import MPI
        self.MPI, self.comm = MPI, comm
        self.rank, self.size = comm.Get_rank(), comm.Get_size()
        self._ops = {"sum": MPI.SUM, "max": MPI.MAX}

    def bcast(self, array, root):
        self.comm.Bcast(array, root=root)

    def allgather(self, obj):  # small metadata only (names, shapes, dtypes)
        return self.comm.allgather(obj)

    def iallreduce(self, buffer):
        return self.comm.Iallreduce(self.MPI.IN_PLACE, buffer, op=self.MPI.SUM)

    def testall(self, requests):
        return self.MPI.Request.Testall(requests)

    def waitall(self, requests):
        self.MPI.Request.Waitall(requests)

    def allreduce(self, send, recv, op):
        self.comm.Allreduce(send, recv, op=self._ops[op])

    def barrier(self):
        self.comm.Barrier()

    def ranks_on_this_host(self):
        local = self.comm.Split_type(self.MPI.COMM_TYPE_SHARED)
        try:
            return local.Get_size()
        finally:
            local.Free()


def _backend(comm):
    """A backend for `comm`: an mpi4py communicator, or an object that already has the
    backend's methods (the tests' in-process communicator); None: the one from init()."""
    if comm is None:
        if _state["backend"] is None:
            init()
        return _state["backend"]
    if comm is _state["comm"]:
        return _state["backend"]
    if hasattr(comm, "iallreduce"):
        return comm
    return _MpiBackend(comm)


def init(comm=None, blas_threads="auto"):
    """Start MPI (if needed) and return the communicator: `comm`, or MPI.COMM_WORLD.

    With `blas_threads="auto"` each rank limits BLAS to `cores // ranks on this host`
    threads (through threadpoolctl, if installed); pass an int to choose, None to leave
    BLAS alone.
    """
    if comm is None:
        from mpi4py import MPI
        comm = MPI.COMM_WORLD
    backend = comm if hasattr(comm, "iallreduce") else _MpiBackend(comm)
    _state["comm"], _state["backend"] = comm, backend
    if blas_threads is not None:
        if blas_threads == "auto":
            local = backend.ranks_on_this_host() if hasattr(backend, "ranks_on_this_host") \
                else 1
            blas_threads = max(1, _cores() // max(1, local))
        _limit_blas(blas_threads)
    return comm


def _cores():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _limit_blas(threads):
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return
    _state["threads"] = threadpool_limits(limits=int(threads), user_api="blas")  # kept alive


def rank(comm=None):
    return _backend(comm).rank


def size(comm=None):
    return _backend(comm).size
