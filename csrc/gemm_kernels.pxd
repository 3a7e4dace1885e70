# The matrix-product workers (header only: no module of its own), shared by gemm.pyx and
# fastad.capture's replay loop (machine.pyx), so a replay orients and calls each product
# with the same code.
cimport numpy as cnp
from scipy.linalg.cython_blas cimport dgemm, sgemm

from _common cimport index_t, real


# ----------------------------------------------------------------------------
# Matrix products: the row-major / column-major trick, written once.
# ----------------------------------------------------------------------------

cdef inline void gemm_rowmajor(char transa, char transb, int m, int n, int k,
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
