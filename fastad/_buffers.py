"""Reusable storage for large adjoint buffers.

The first touch of a fresh multi-hundred-megabyte array costs page faults (tens of
milliseconds for a 328 MB weight gradient), a sizeable part of a training step. A
gradient the caller has dropped can be handed out again instead: the pool keeps the
large arrays it allocated and reuses one once nothing but the pool refers to it.
"""
import math
import sys
import threading

import numpy as np

# glibc's malloc keeps freed blocks below its 32 MiB mmap ceiling for reuse, so smaller
# buffers come back without page faults anyway; above it, every allocation is fresh
# pages from the kernel. Only those are worth keeping (and keeping memory for).
POOL_MIN_BYTES = 32 << 20
POOL_PER_SHAPE = 2

_pool = {}
_lock = threading.Lock()


def _refcount_when_only_pooled():
    """What sys.getrefcount reports, inside `empty`'s loop, for an array nobody else
    holds (3 on CPython 3.11: the list, the loop variable, the call's argument; measured
    rather than assumed, since newer interpreters may borrow the loop's reference)."""
    pool = [np.empty(0)]
    for array in pool:
        return sys.getrefcount(array)


_ONLY_THE_POOL = _refcount_when_only_pooled()


def empty(shape, dtype, order="C"):
    """An uninitialised array in `order`, reused from the pool when one is free."""
    dtype = np.dtype(dtype)
    if dtype.itemsize * math.prod(shape) < POOL_MIN_BYTES:
        return np.empty(shape, dtype, order)
    key = (tuple(shape), dtype, order)
    with _lock:
        arrays = _pool.setdefault(key, [])
        for array in arrays:
            if sys.getrefcount(array) == _ONLY_THE_POOL:
                return array
        array = np.empty(shape, dtype, order)
        if len(arrays) < POOL_PER_SHAPE:
            arrays.append(array)
        return array
