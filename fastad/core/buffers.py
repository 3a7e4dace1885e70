"""Reusable storage for large adjoint buffers.

The first touch of a fresh multi-hundred-megabyte array costs page faults (tens of
milliseconds for a 328 MB weight gradient), a sizeable part of a training step. A
gradient the caller has dropped can be handed out again instead: the pool keeps the
large arrays it allocated and reuses one once nothing but the pool refers to it.
"""
import ctypes
import math
import os
import sys
import threading

import numpy as np

# Below 32 MiB, glibc's malloc serves buffers from its heap (see `_tune_malloc`), so
# they come back without page faults; above it, every allocation is fresh pages from
# the kernel. Only those are worth keeping (and keeping memory for).
POOL_MIN_BYTES = 32 << 20
POOL_PER_SHAPE = 2


def _tune_malloc():
    """Have glibc keep freed blocks below POOL_MIN_BYTES in its heap.

    By default glibc maps every block over 128 KiB fresh from the kernel and hands
    freed heap memory back to it, so each training step faults the same pages in
    again: 330 page faults and +0.5 ms in a 0.9 ms small-MLP step, mostly inside
    OpenBLAS's threaded GEMM (its work space and its first write to the output). glibc
    raises these thresholds by itself, up to 32 MiB and 64 MiB, but only after some
    patterns of frees; fastad sets those ceilings at import. FASTAD_MALLOC_TUNING=0
    leaves malloc as it is.
    """
    if os.environ.get("FASTAD_MALLOC_TUNING", "1") == "0":
        return
    try:
        mallopt = ctypes.CDLL(None).mallopt  # glibc only; elsewhere there is nothing to tune
    except (AttributeError, OSError):
        return
    m_trim_threshold, m_mmap_threshold = -1, -3  # from <malloc.h>
    mallopt(m_mmap_threshold, POOL_MIN_BYTES)
    mallopt(m_trim_threshold, 2 * POOL_MIN_BYTES)


_tune_malloc()

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
    """An uninitialised array in `order` (dtype: a np.dtype), reused from the pool when
    one is free."""
    if dtype.itemsize * math.prod(shape) < POOL_MIN_BYTES:
        return np.empty(shape, dtype, order)
    return _from_pool(tuple(shape), dtype, order)


def pooled_like(template, order):
    """A pooled array of template's shape and dtype in `order` if it is large enough to
    pool, else None (the caller allocates: compiled kernels do it faster)."""
    if template.nbytes < POOL_MIN_BYTES:
        return None
    return _from_pool(template.shape, template.dtype, order)


def _from_pool(shape, dtype, order):
    key = (shape, dtype, order)
    with _lock:
        arrays = _pool.setdefault(key, [])
        for array in arrays:
            if sys.getrefcount(array) == _ONLY_THE_POOL:
                return array
        array = np.empty(shape, dtype, order)
        if len(arrays) < POOL_PER_SHAPE:
            arrays.append(array)
        return array
