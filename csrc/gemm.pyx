"""fastad's matrix product: C (+)= A @ B for row-major operands through SciPy's BLAS.

Each public function takes ndarrays that the Python layer has already validated:
same dtype (float32 or float64), C-contiguous unless stated, shapes that agree. The
typed workers under them (gemm_kernels.pxd, inline: the replay loop of fa.capture calls them
too) are ``noexcept nogil`` and run without the GIL. Backward kernels take an
``accumulate`` flag: False writes the contribution into ``out`` (its first one), True
adds it to what ``out`` already holds.
"""
cimport numpy as cnp

cnp.import_array()

from _common cimport index_t, is_f32, ptr
from gemm_kernels cimport Operand, blas_operand, gemm_rowmajor
from libc.limits cimport INT_MAX


def gemm(a, b, cnp.ndarray out, bint accumulate, bint column_major=False):
    """out (+)= a @ b for a (m, k) and b (k, n), each C- or F-contiguous (one that is
    neither is copied first). out (m, n) is C-contiguous; with column_major it is
    F-contiguous, and BLAS computes out^T = b^T a^T (the other orientation of the
    same product, faster for some shapes on some CPUs)."""
    cdef cnp.ndarray x = blas_ready(a), y = blas_ready(b)
    cdef int m = <int>x.shape[0], k = <int>x.shape[1], n = <int>y.shape[1]
    cdef Operand first, second
    if column_major:
        first, second = blas_operand(y, True), blas_operand(x, True)
        m, n = n, m
    else:
        first, second = blas_operand(x, False), blas_operand(y, False)
    cdef int ldc = n if n > 1 else 1
    cdef void* pc = ptr(out)
    cdef bint f32 = is_f32(out)
    with nogil:
        if f32:
            gemm_rowmajor[float](first.trans, second.trans, m, n, k, <float*>first.data,
                                 first.ld, <float*>second.data, second.ld, accumulate,
                                 <float*>pc, ldc)
        else:
            gemm_rowmajor[double](first.trans, second.trans, m, n, k, <double*>first.data,
                                  first.ld, <double*>second.data, second.ld, accumulate,
                                  <double*>pc, ldc)


cpdef cnp.ndarray blas_ready(cnp.ndarray m):
    """m as an operand BLAS reads without a copy: itself if C- or F-contiguous, else a
    C-contiguous copy."""
    if cnp.PyArray_IS_C_CONTIGUOUS(m) or cnp.PyArray_IS_F_CONTIGUOUS(m):
        return m
    return cnp.PyArray_GETCONTIGUOUS(m)


def fits_blas(cnp.ndarray a, cnp.ndarray b):
    """Whether a @ b is a product of two matrices whose every dimension BLAS's int takes."""
    return (cnp.PyArray_NDIM(a) == 2 and cnp.PyArray_NDIM(b) == 2
            and max(a.shape[0], a.shape[1], b.shape[0], b.shape[1]) <= INT_MAX)
