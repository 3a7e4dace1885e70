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
from gemm_kernels cimport blas_ld, blas_trans, gemm_rowmajor


def gemm(cnp.ndarray a, cnp.ndarray b, cnp.ndarray out, bint accumulate):
    """out (+)= a @ b. a (m, k) and b (k, n) are C- or F-contiguous; out (m, n) is C."""
    cdef int m = <int>a.shape[0], k = <int>a.shape[1], n = <int>b.shape[1]
    cdef char ta = blas_trans(a), tb = blas_trans(b)
    cdef int lda = blas_ld(a), ldb = blas_ld(b), ldc = n if n > 1 else 1
    cdef void* pa = ptr(a)
    cdef void* pb = ptr(b)
    cdef void* pc = ptr(out)
    cdef bint f32 = is_f32(out)
    with nogil:
        if f32:
            gemm_rowmajor[float](ta, tb, m, n, k, <float*>pa, lda, <float*>pb, ldb,
                                 accumulate, <float*>pc, ldc)
        else:
            gemm_rowmajor[double](ta, tb, m, n, k, <double*>pa, lda, <double*>pb, ldb,
                                  accumulate, <double*>pc, ldc)

