"""fastad's matrix product: C (+)= A @ B for row-major operands through SciPy's BLAS.

Each public function takes ndarrays that the Python layer has already validated:
same dtype (float32 or float64), C-contiguous unless stated, shapes that agree. The
typed workers below them are ``noexcept nogil`` and run without the GIL. Backward
kernels take an ``accumulate`` flag: False writes the contribution into ``out`` (its
first one), True adds it to what ``out`` already holds.
"""
cimport numpy as cnp
from scipy.linalg.cython_blas cimport sgemm, dgemm

cnp.import_array()

from _common cimport index_t, is_f32, ptr, real


# ----------------------------------------------------------------------------
# Matrix products: the row-major / column-major trick, written once.
# ----------------------------------------------------------------------------

cdef void gemm_rowmajor(char transa, char transb, int m, int n, int k,
                        real* a, int lda, real* b, int ldb,
                        real beta, real* c, int ldc) noexcept nogil:
    """C (m x n, row-major) = op(A) @ op(B) + beta * C.

    BLAS is column-major, and a row-major matrix is the column-major storage of its
    transpose, so we ask BLAS for C^T = op(B)^T @ op(A)^T: B first, m and n swapped.
    """
    cdef real one = 1
    if real is float:
        sgemm(&transb, &transa, &n, &m, &k, &one, b, &ldb, a, &lda, &beta, c, &ldc)
    else:
        dgemm(&transb, &transa, &n, &m, &k, &one, b, &ldb, a, &lda, &beta, c, &ldc)


cdef inline char blas_trans(cnp.ndarray x) noexcept:
    """'n' for a C-contiguous matrix, 't' for an F-contiguous one (its transpose is C)."""
    return b'n' if cnp.PyArray_IS_C_CONTIGUOUS(x) else b't'


cdef inline int blas_ld(cnp.ndarray x) noexcept:
    """Row-major leading dimension of x's storage."""
    cdef index_t ld = x.shape[1] if cnp.PyArray_IS_C_CONTIGUOUS(x) else x.shape[0]
    return <int>(ld if ld > 1 else 1)


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

