"""fastad's compiled kernels.

Each public function takes ndarrays that the Python layer has already validated:
same dtype (float32 or float64), C-contiguous unless stated, shapes that agree.
The typed workers below them are ``noexcept nogil`` and run without the GIL.
Backward kernels take an ``accumulate`` flag: False writes the contribution into
``out`` (its first one), True adds it to what ``out`` already holds.

Compiler directives (boundscheck/wraparound off, language_level 3) come from setup.py,
which turns the checks on for a FASTAD_DEBUG=1 build.
"""
cimport numpy as cnp
from libc.math cimport exp, expf, log, logf
from scipy.linalg.cython_blas cimport sgemm, dgemm

cnp.import_array()

ctypedef fused real:
    float
    double

ctypedef cnp.npy_intp index_t


cdef inline bint is_f32(cnp.ndarray a) noexcept:
    return cnp.PyArray_TYPE(a) == cnp.NPY_FLOAT32


cdef inline void* ptr(cnp.ndarray a) noexcept:
    return cnp.PyArray_DATA(a)


cdef inline real exp_(real v) noexcept nogil:
    if real is float:
        return expf(v)
    else:
        return exp(v)


cdef inline real log_(real v) noexcept nogil:
    if real is float:
        return logf(v)
    else:
        return log(v)


cdef inline real row_max(const real* x, index_t cols) noexcept nogil:
    cdef real m = x[0]
    cdef index_t j
    for j in range(1, cols):
        if x[j] > m:
            m = x[j]
    return m


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


# ----------------------------------------------------------------------------
# Sigmoid
# ----------------------------------------------------------------------------

cdef void sigmoid_kernel(const real* x, real* y, index_t size) noexcept nogil:
    cdef index_t i
    cdef real e
    for i in range(size):
        if x[i] >= 0:
            y[i] = 1 / (1 + exp_(-x[i]))
        else:
            e = exp_(x[i])
            y[i] = e / (1 + e)


cdef void sigmoid_grad_kernel(const real* g, const real* y, real* dx, index_t size,
                              bint accumulate) noexcept nogil:
    cdef index_t i
    if accumulate:
        for i in range(size):
            dx[i] += g[i] * y[i] * (1 - y[i])
    else:
        for i in range(size):
            dx[i] = g[i] * y[i] * (1 - y[i])


def sigmoid(cnp.ndarray x, cnp.ndarray out):
    """out = 1 / (1 + exp(-x)), stable for large |x|; out may be x."""
    cdef index_t size = cnp.PyArray_SIZE(x)
    cdef void* px = ptr(x)
    cdef void* po = ptr(out)
    cdef bint f32 = is_f32(x)
    with nogil:
        if f32:
            sigmoid_kernel[float](<float*>px, <float*>po, size)
        else:
            sigmoid_kernel[double](<double*>px, <double*>po, size)


def sigmoid_grad(cnp.ndarray g, cnp.ndarray y, cnp.ndarray out, bint accumulate):
    """out (+)= g * y * (1 - y), from the saved output y."""
    cdef index_t size = cnp.PyArray_SIZE(y)
    cdef void* pg = ptr(g)
    cdef void* py = ptr(y)
    cdef void* po = ptr(out)
    cdef bint f32 = is_f32(y)
    with nogil:
        if f32:
            sigmoid_grad_kernel[float](<float*>pg, <float*>py, <float*>po, size, accumulate)
        else:
            sigmoid_grad_kernel[double](<double*>pg, <double*>py, <double*>po, size, accumulate)


# ----------------------------------------------------------------------------
# Softmax and log-softmax over the last axis (rows of a C-contiguous array)
# ----------------------------------------------------------------------------

cdef void softmax_rows(const real* x, real* y, index_t rows, index_t cols) noexcept nogil:
    cdef index_t r, j
    cdef real m
    cdef double total
    for r in range(rows):
        m = row_max(x, cols)
        total = 0
        for j in range(cols):
            y[j] = exp_(x[j] - m)
            total += y[j]
        for j in range(cols):
            y[j] = <real>(y[j] / total)
        x += cols
        y += cols


cdef void softmax_grad_rows(const real* g, const real* y, real* dx, index_t rows,
                            index_t cols, bint accumulate) noexcept nogil:
    """dx (+)= y * (g - sum(g * y)) per row."""
    cdef index_t r, j
    cdef double dot
    for r in range(rows):
        dot = 0
        for j in range(cols):
            dot += g[j] * y[j]
        if accumulate:
            for j in range(cols):
                dx[j] += y[j] * (g[j] - <real>dot)
        else:
            for j in range(cols):
                dx[j] = y[j] * (g[j] - <real>dot)
        g += cols
        y += cols
        dx += cols


cdef void log_softmax_rows(const real* x, real* y, index_t rows, index_t cols) noexcept nogil:
    cdef index_t r, j
    cdef real m, shift
    cdef double total
    for r in range(rows):
        m = row_max(x, cols)
        total = 0
        for j in range(cols):
            total += exp_(x[j] - m)
        shift = m + <real>log(total)
        for j in range(cols):
            y[j] = x[j] - shift
        x += cols
        y += cols


cdef void log_softmax_grad_rows(const real* g, const real* y, real* dx, index_t rows,
                                index_t cols, bint accumulate) noexcept nogil:
    """dx (+)= g - exp(y) * sum(g) per row."""
    cdef index_t r, j
    cdef double total
    for r in range(rows):
        total = 0
        for j in range(cols):
            total += g[j]
        if accumulate:
            for j in range(cols):
                dx[j] += g[j] - exp_(y[j]) * <real>total
        else:
            for j in range(cols):
                dx[j] = g[j] - exp_(y[j]) * <real>total
        g += cols
        y += cols
        dx += cols


cdef inline index_t last_dim(cnp.ndarray x) noexcept:
    return x.shape[x.ndim - 1] if x.ndim > 0 else 1


def softmax(cnp.ndarray x, cnp.ndarray out):
    """out = softmax(x) over the last axis (row max subtracted)."""
    cdef index_t cols = last_dim(x)
    cdef index_t rows = cnp.PyArray_SIZE(x) // cols if cols else 0
    cdef void* px = ptr(x)
    cdef void* po = ptr(out)
    cdef bint f32 = is_f32(x)
    with nogil:
        if f32:
            softmax_rows[float](<float*>px, <float*>po, rows, cols)
        else:
            softmax_rows[double](<double*>px, <double*>po, rows, cols)


def softmax_grad(cnp.ndarray g, cnp.ndarray y, cnp.ndarray out, bint accumulate):
    """out (+)= y * (g - sum(g * y, axis=-1)) from the saved output y."""
    cdef index_t cols = last_dim(y)
    cdef index_t rows = cnp.PyArray_SIZE(y) // cols if cols else 0
    cdef void* pg = ptr(g)
    cdef void* py = ptr(y)
    cdef void* po = ptr(out)
    cdef bint f32 = is_f32(y)
    with nogil:
        if f32:
            softmax_grad_rows[float](<float*>pg, <float*>py, <float*>po, rows, cols, accumulate)
        else:
            softmax_grad_rows[double](<double*>pg, <double*>py, <double*>po, rows, cols, accumulate)


def log_softmax(cnp.ndarray x, cnp.ndarray out):
    """out = x - max - log(sum(exp(x - max))) over the last axis."""
    cdef index_t cols = last_dim(x)
    cdef index_t rows = cnp.PyArray_SIZE(x) // cols if cols else 0
    cdef void* px = ptr(x)
    cdef void* po = ptr(out)
    cdef bint f32 = is_f32(x)
    with nogil:
        if f32:
            log_softmax_rows[float](<float*>px, <float*>po, rows, cols)
        else:
            log_softmax_rows[double](<double*>px, <double*>po, rows, cols)


def log_softmax_grad(cnp.ndarray g, cnp.ndarray y, cnp.ndarray out, bint accumulate):
    """out (+)= g - exp(y) * sum(g, axis=-1) from the saved output y."""
    cdef index_t cols = last_dim(y)
    cdef index_t rows = cnp.PyArray_SIZE(y) // cols if cols else 0
    cdef void* pg = ptr(g)
    cdef void* py = ptr(y)
    cdef void* po = ptr(out)
    cdef bint f32 = is_f32(y)
    with nogil:
        if f32:
            log_softmax_grad_rows[float](<float*>pg, <float*>py, <float*>po, rows, cols, accumulate)
        else:
            log_softmax_grad_rows[double](<double*>pg, <double*>py, <double*>po, rows, cols, accumulate)


# ----------------------------------------------------------------------------
# Fused softmax + cross-entropy for integer labels
# ----------------------------------------------------------------------------

cdef void softmax_xent_rows(const real* x, const index_t* labels, real* probs, real* losses,
                            index_t rows, index_t cols) noexcept nogil:
    cdef index_t r, j
    cdef real m
    cdef double total
    for r in range(rows):
        m = row_max(x, cols)
        total = 0
        for j in range(cols):
            probs[j] = exp_(x[j] - m)
            total += probs[j]
        for j in range(cols):
            probs[j] = <real>(probs[j] / total)
        losses[r] = m + <real>log(total) - x[labels[r]]
        x += cols
        probs += cols


cdef void softmax_xent_grad_rows(const real* probs, const index_t* labels, const real* scale,
                                 real* dx, index_t rows, index_t cols,
                                 bint accumulate) noexcept nogil:
    """dx (+)= scale[r] * (probs - onehot(labels))."""
    cdef index_t r, j
    for r in range(rows):
        if accumulate:
            for j in range(cols):
                dx[j] += scale[r] * probs[j]
        else:
            for j in range(cols):
                dx[j] = scale[r] * probs[j]
        dx[labels[r]] -= scale[r]
        probs += cols
        dx += cols


def softmax_cross_entropy(cnp.ndarray x, cnp.ndarray labels, cnp.ndarray probs,
                          cnp.ndarray losses):
    """probs = softmax(x); losses[r] = logsumexp(x[r]) - x[r, labels[r]]."""
    cdef index_t rows = x.shape[0], cols = x.shape[1]
    cdef void* px = ptr(x)
    cdef const index_t* pl = <const index_t*>ptr(labels)
    cdef void* pp = ptr(probs)
    cdef void* ploss = ptr(losses)
    cdef bint f32 = is_f32(x)
    with nogil:
        if f32:
            softmax_xent_rows[float](<float*>px, pl, <float*>pp, <float*>ploss, rows, cols)
        else:
            softmax_xent_rows[double](<double*>px, pl, <double*>pp, <double*>ploss, rows, cols)


def softmax_cross_entropy_grad(cnp.ndarray probs, cnp.ndarray labels, cnp.ndarray scale,
                               cnp.ndarray out, bint accumulate):
    """out (+)= scale[:, None] * (probs - onehot(labels))."""
    cdef index_t rows = probs.shape[0], cols = probs.shape[1]
    cdef void* pp = ptr(probs)
    cdef const index_t* pl = <const index_t*>ptr(labels)
    cdef void* ps = ptr(scale)
    cdef void* po = ptr(out)
    cdef bint f32 = is_f32(probs)
    with nogil:
        if f32:
            softmax_xent_grad_rows[float](<float*>pp, pl, <float*>ps, <float*>po, rows, cols,
                                          accumulate)
        else:
            softmax_xent_grad_rows[double](<double*>pp, pl, <double*>ps, <double*>po, rows,
                                           cols, accumulate)


# ----------------------------------------------------------------------------
# The bias pattern: row-broadcast add and its column sum
# ----------------------------------------------------------------------------

cdef void add_row_kernel(const real* x, const real* b, real* out, index_t rows,
                         index_t cols) noexcept nogil:
    cdef index_t r, j
    for r in range(rows):
        for j in range(cols):
            out[j] = x[j] + b[j]
        x += cols
        out += cols


cdef void column_sum_kernel(const real* g, real* out, index_t rows, index_t cols,
                            bint accumulate) noexcept nogil:
    cdef index_t r, j
    if not accumulate:
        for j in range(cols):
            out[j] = 0
    for r in range(rows):
        for j in range(cols):
            out[j] += g[j]
        g += cols


def add_row(cnp.ndarray x, cnp.ndarray b, cnp.ndarray out):
    """out = x + b for x (rows, cols) and b (cols,); out may be x."""
    cdef index_t rows = x.shape[0], cols = x.shape[1]
    cdef void* px = ptr(x)
    cdef void* pb = ptr(b)
    cdef void* po = ptr(out)
    cdef bint f32 = is_f32(x)
    with nogil:
        if f32:
            add_row_kernel[float](<float*>px, <float*>pb, <float*>po, rows, cols)
        else:
            add_row_kernel[double](<double*>px, <double*>pb, <double*>po, rows, cols)


def column_sum(cnp.ndarray g, cnp.ndarray out, bint accumulate):
    """out (+)= g.sum(axis=0) for g (rows, cols)."""
    cdef index_t rows = g.shape[0], cols = g.shape[1]
    cdef void* pg = ptr(g)
    cdef void* po = ptr(out)
    cdef bint f32 = is_f32(g)
    with nogil:
        if f32:
            column_sum_kernel[float](<float*>pg, <float*>po, rows, cols, accumulate)
        else:
            column_sum_kernel[double](<double*>pg, <double*>po, rows, cols, accumulate)


# ----------------------------------------------------------------------------
# x[arange(n), labels]: one element per row, and its scatter-add
# ----------------------------------------------------------------------------

cdef void pick_kernel(const real* x, const index_t* labels, real* out, index_t rows,
                      index_t cols) noexcept nogil:
    cdef index_t r
    for r in range(rows):
        out[r] = x[r * cols + labels[r]]


cdef void pick_grad_kernel(const real* g, const index_t* labels, real* dx, index_t rows,
                           index_t cols, bint accumulate) noexcept nogil:
    cdef index_t r, j
    if not accumulate:
        for j in range(rows * cols):
            dx[j] = 0
    for r in range(rows):
        dx[r * cols + labels[r]] += g[r]


def pick(cnp.ndarray x, cnp.ndarray labels, cnp.ndarray out):
    """out[r] = x[r, labels[r]] for x (rows, cols)."""
    cdef index_t rows = x.shape[0], cols = x.shape[1]
    cdef void* px = ptr(x)
    cdef const index_t* pl = <const index_t*>ptr(labels)
    cdef void* po = ptr(out)
    cdef bint f32 = is_f32(x)
    with nogil:
        if f32:
            pick_kernel[float](<float*>px, pl, <float*>po, rows, cols)
        else:
            pick_kernel[double](<double*>px, pl, <double*>po, rows, cols)


def pick_grad(cnp.ndarray g, cnp.ndarray labels, cnp.ndarray out, bint accumulate):
    """out (+)= a (rows, cols) array that is g[r] at (r, labels[r]) and 0 elsewhere."""
    cdef index_t rows = out.shape[0], cols = out.shape[1]
    cdef void* pg = ptr(g)
    cdef const index_t* pl = <const index_t*>ptr(labels)
    cdef void* po = ptr(out)
    cdef bint f32 = is_f32(out)
    with nogil:
        if f32:
            pick_grad_kernel[float](<float*>pg, pl, <float*>po, rows, cols, accumulate)
        else:
            pick_grad_kernel[double](<double*>pg, pl, <double*>po, rows, cols, accumulate)
