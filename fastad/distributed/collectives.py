"""Collectives on the user's own arrays (metrics, early stopping)."""
import numpy as np

from ..core.tensor import Tensor
from .backend import _backend


def _array(array):
    if isinstance(array, Tensor):
        array = array.value
    return np.asarray(array)


def all_reduce(array, op="sum", comm=None):
    """A new array: `array` combined over all ranks (op "sum", "mean" or "max")."""
    if op not in ("sum", "mean", "max"):
        raise ValueError(f"all_reduce: op must be 'sum', 'mean' or 'max', got {op!r}")
    backend = _backend(comm)
    send = np.ascontiguousarray(_array(array))
    if send.dtype.kind not in "biuf":
        raise TypeError(f"all_reduce: needs numbers, got dtype {send.dtype}")
    recv = np.empty_like(send)
    backend.allreduce(send, recv, "max" if op == "max" else "sum")
    if op == "mean":
        recv = recv / backend.size
    return recv


def broadcast(array, root=0, comm=None):
    """Root's `array` on every rank (same shape and dtype everywhere). A writable
    C-contiguous ndarray is overwritten in place and returned; otherwise a new array."""
    backend = _backend(comm)
    given = _array(array)
    target = given if (type(array) is np.ndarray and given.flags.c_contiguous
                       and given.flags.writeable) else np.array(given, order="C")
    backend.bcast(target, root)
    return target


def barrier(comm=None):
    _backend(comm).barrier()
