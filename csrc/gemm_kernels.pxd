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


cdef struct Operand:
    void* data
    char trans  # 'n' or 't': how BLAS reads it as a row-major matrix
    int ld      # its row-major leading dimension


cdef inline Operand blas_operand(cnp.ndarray x, bint transposed) noexcept:
    """x, or x^T, as BLAS reads it as a row-major matrix: 'n' if it is C-contiguous, 't'
    if F-contiguous (its transpose is C). x^T is C-contiguous exactly when x is
    F-contiguous, so the transpose needs no view."""
    cdef bint c_order = cnp.PyArray_IS_F_CONTIGUOUS(x) if transposed else \
        cnp.PyArray_IS_C_CONTIGUOUS(x)
    cdef index_t ld = x.shape[0] if c_order == transposed else x.shape[1]
    return Operand(cnp.PyArray_DATA(x), b'n' if c_order else b't', <int>(ld if ld > 1 else 1))
