# distutils: extra_compile_args = -fno-trapping-math
"""fastad's row kernels, over the last axis of a C-contiguous array: softmax and
log-softmax and their gradients, fused softmax + cross-entropy for integer labels, and
the label pick x[arange(n), labels] with its scatter-add; the labels' range.

Each public function takes ndarrays that the Python layer has already validated:
same dtype (float32 or float64), C-contiguous unless stated, shapes that agree. The
typed workers below them are ``noexcept nogil`` and run without the GIL over more than
500 elements (`_common.release_gil`). Backward
kernels take an ``accumulate`` flag: False writes the contribution into ``out`` (its
first one), True adds it to what ``out`` already holds. -fno-trapping-math: see pointwise.pyx.
"""
cimport numpy as cnp
from libc.math cimport log

cnp.import_array()

from _common cimport PyThreadState, index_t, is_f32, ptr, real, release_gil, take_gil
from exp cimport exp_real


cdef inline real row_max(const real* x, index_t cols) noexcept nogil:
    cdef real m = x[0]
    cdef index_t j
    for j in range(1, cols):
        if x[j] > m:
            m = x[j]
    return m


# ----------------------------------------------------------------------------
# Softmax and log-softmax over the last axis (rows of a C-contiguous array)
# ----------------------------------------------------------------------------

cdef inline double exp_shifted(const real* x, real* y, index_t cols, real shift) noexcept nogil:
    """y = exp(x - shift); returns sum(y)."""
    cdef index_t j
    cdef double total = 0
    for j in range(cols):
        y[j] = exp_real(x[j] - shift)
    for j in range(cols):
        total += y[j]
    return total


cdef void softmax_rows(const real* x, real* y, index_t rows, index_t cols) noexcept nogil:
    cdef index_t r, j
    cdef double total
    for r in range(rows):
        total = exp_shifted(x, y, cols, row_max(x, cols))
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
    cdef real m, log_total
    for r in range(rows):
        m = row_max(x, cols)
        log_total = <real>log(exp_shifted(x, y, cols, m))
        for j in range(cols):
            y[j] = (x[j] - m) - log_total  # x - m is exact; adding m back first is not
        x += cols
        y += cols


cdef void log_softmax_grad_rows(const real* g, const real* y, real* dx, index_t rows,
                                index_t cols, bint accumulate) noexcept nogil:
    """dx (+)= g - exp(y) * sum(g) per row."""
    cdef index_t r, j
    cdef real total
    cdef double sum_g
    for r in range(rows):
        sum_g = 0
        for j in range(cols):
            sum_g += g[j]
        total = <real>sum_g
        if accumulate:
            for j in range(cols):
                dx[j] += g[j] - exp_real(y[j]) * total
        else:
            for j in range(cols):
                dx[j] = g[j] - exp_real(y[j]) * total
        g += cols
        y += cols
        dx += cols


cdef enum Rowwise:
    SOFTMAX
    LOG_SOFTMAX


cdef void rows_forward(Rowwise kind, const real* x, real* y, index_t rows,
                       index_t cols) noexcept nogil:
    if kind == SOFTMAX:
        softmax_rows(x, y, rows, cols)
    else:
        log_softmax_rows(x, y, rows, cols)


cdef void rows_backward(Rowwise kind, const real* g, const real* y, real* dx, index_t rows,
                        index_t cols, bint accumulate) noexcept nogil:
    if kind == SOFTMAX:
        softmax_grad_rows(g, y, dx, rows, cols, accumulate)
    else:
        log_softmax_grad_rows(g, y, dx, rows, cols, accumulate)


cdef inline index_t last_dim(cnp.ndarray x) noexcept:
    return x.shape[x.ndim - 1] if x.ndim > 0 else 1


cdef rowwise(Rowwise kind, cnp.ndarray x, cnp.ndarray out):
    cdef index_t cols = last_dim(x)
    cdef index_t rows = cnp.PyArray_SIZE(x) // cols if cols else 0
    cdef void* px = ptr(x)
    cdef void* po = ptr(out)
    cdef bint f32 = is_f32(x)
    cdef PyThreadState* released = release_gil(rows * cols)
    if f32:
        rows_forward[float](kind, <float*>px, <float*>po, rows, cols)
    else:
        rows_forward[double](kind, <double*>px, <double*>po, rows, cols)
    take_gil(released)


cdef rowwise_grad(Rowwise kind, cnp.ndarray g, cnp.ndarray y, cnp.ndarray out,
                  bint accumulate):
    cdef index_t cols = last_dim(y)
    cdef index_t rows = cnp.PyArray_SIZE(y) // cols if cols else 0
    cdef void* pg = ptr(g)
    cdef void* py = ptr(y)
    cdef void* po = ptr(out)
    cdef bint f32 = is_f32(y)
    cdef PyThreadState* released = release_gil(rows * cols)
    if f32:
        rows_backward[float](kind, <float*>pg, <float*>py, <float*>po, rows, cols,
                             accumulate)
    else:
        rows_backward[double](kind, <double*>pg, <double*>py, <double*>po, rows, cols,
                              accumulate)
    take_gil(released)


def softmax(cnp.ndarray x, cnp.ndarray out):
    """out = softmax(x) over the last axis (row max subtracted)."""
    rowwise(SOFTMAX, x, out)


def softmax_grad(cnp.ndarray g, cnp.ndarray y, cnp.ndarray out, bint accumulate):
    """out (+)= y * (g - sum(g * y, axis=-1)) from the saved output y."""
    rowwise_grad(SOFTMAX, g, y, out, accumulate)


def log_softmax(cnp.ndarray x, cnp.ndarray out):
    """out = (x - max) - log(sum(exp(x - max))) over the last axis."""
    rowwise(LOG_SOFTMAX, x, out)


def log_softmax_grad(cnp.ndarray g, cnp.ndarray y, cnp.ndarray out, bint accumulate):
    """out (+)= g - exp(y) * sum(g, axis=-1) from the saved output y."""
    rowwise_grad(LOG_SOFTMAX, g, y, out, accumulate)


# ----------------------------------------------------------------------------
# Labels: their range, checked before a kernel indexes with them
# ----------------------------------------------------------------------------

cdef void bounds(const index_t* labels, index_t n, index_t* low, index_t* high) noexcept nogil:
    cdef index_t i, lo = labels[0], hi = labels[0]
    for i in range(1, n):
        lo = min(lo, labels[i])
        hi = max(hi, labels[i])
    low[0], high[0] = lo, hi


def label_bounds(cnp.ndarray labels):
    """(smallest, largest) of a non-empty C-contiguous intp array, in one pass."""
    cdef index_t low, high
    cdef const index_t* pl = <const index_t*>ptr(labels)
    cdef index_t n = cnp.PyArray_SIZE(labels)
    cdef PyThreadState* released = release_gil(n)
    bounds(pl, n, &low, &high)
    take_gil(released)
    return low, high


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
        total = exp_shifted(x, probs, cols, m)
        for j in range(cols):
            probs[j] = <real>(probs[j] / total)
        losses[r] = <real>log(total) - (x[labels[r]] - m)
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
    cdef PyThreadState* released = release_gil(rows * cols)
    if f32:
        softmax_xent_rows[float](<float*>px, pl, <float*>pp, <float*>ploss, rows, cols)
    else:
        softmax_xent_rows[double](<double*>px, pl, <double*>pp, <double*>ploss, rows, cols)
    take_gil(released)


def softmax_cross_entropy_grad(cnp.ndarray probs, cnp.ndarray labels, cnp.ndarray scale,
                               cnp.ndarray out, bint accumulate):
    """out (+)= scale[:, None] * (probs - onehot(labels))."""
    cdef index_t rows = probs.shape[0], cols = probs.shape[1]
    cdef void* pp = ptr(probs)
    cdef const index_t* pl = <const index_t*>ptr(labels)
    cdef void* ps = ptr(scale)
    cdef void* po = ptr(out)
    cdef bint f32 = is_f32(probs)
    cdef PyThreadState* released = release_gil(rows * cols)
    if f32:
        softmax_xent_grad_rows[float](<float*>pp, pl, <float*>ps, <float*>po, rows, cols,
                                      accumulate)
    else:
        softmax_xent_grad_rows[double](<double*>pp, pl, <double*>ps, <double*>po, rows,
                                       cols, accumulate)
    take_gil(released)


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
    cdef PyThreadState* released = release_gil(rows)
    if f32:
        pick_kernel[float](<float*>px, pl, <float*>po, rows, cols)
    else:
        pick_kernel[double](<double*>px, pl, <double*>po, rows, cols)
    take_gil(released)


def pick_grad(cnp.ndarray g, cnp.ndarray labels, cnp.ndarray out, bint accumulate):
    """out (+)= a (rows, cols) array that is g[r] at (r, labels[r]) and 0 elsewhere."""
    cdef index_t rows = out.shape[0], cols = out.shape[1]
    cdef void* pg = ptr(g)
    cdef const index_t* pl = <const index_t*>ptr(labels)
    cdef void* po = ptr(out)
    cdef bint f32 = is_f32(out)
    cdef PyThreadState* released = release_gil(rows * cols)
    if f32:
        pick_grad_kernel[float](<float*>pg, pl, <float*>po, rows, cols, accumulate)
    else:
        pick_grad_kernel[double](<double*>pg, pl, <double*>po, rows, cols, accumulate)
    take_gil(released)
