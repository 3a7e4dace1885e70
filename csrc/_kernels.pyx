# distutils: extra_compile_args = -fno-trapping-math
"""fastad's compiled kernels.

Each public function takes ndarrays that the Python layer has already validated:
same dtype (float32 or float64), C-contiguous unless stated, shapes that agree.
Elementwise kernels (sigmoid, relu) read flat memory, so their arrays may instead all
be F-contiguous.
The typed workers below them are ``noexcept nogil`` and run without the GIL.
Backward kernels take an ``accumulate`` flag: False writes the contribution into
``out`` (its first one), True adds it to what ``out`` already holds. The activation
kernels also take ``out=None``: they then return a new array laid out like their input.

Compiler directives (boundscheck/wraparound off, language_level 3) come from setup.py,
which turns the checks on for a FASTAD_DEBUG=1 build.
"""
import numpy as np

cimport numpy as cnp
from libc.math cimport log
from libc.stdint cimport uint32_t, uint64_t
from scipy.linalg.cython_blas cimport sgemm, dgemm

cnp.import_array()

from _common cimport index_t, is_f32, new_like, ptr, real


# ----------------------------------------------------------------------------
# exp, inline and branch-free so that GCC vectorises the loops that call it (NumPy's
# vectorised exp has no C API). Cephes' method: exp(x) = 2**n * exp(r) with
# n = round(x / ln 2) and r = x - n ln 2, ln 2 split in two (ln2_hi has trailing zero
# bits, so n * ln2_hi is exact); exp(r) on |r| <= ln(2) / 2 from Cephes' polynomial
# (float32) or Pade form (float64); 2**n built from exponent bits in two halves, so a
# subnormal result is rounded once. Accuracy against np.exp: tests/test_kernels.py.
# GCC if-converts the clamps and selects (and so vectorises the loops) only under
# -fno-trapping-math (the first line): no kernel reads the FP exception flags, and the
# flag changes no value.
# ----------------------------------------------------------------------------

cdef union f32_bits:
    float value
    uint32_t bits


cdef union f64_bits:
    double value
    uint64_t bits


cdef inline real pow2i(real shifted) noexcept nogil:
    """2**k from shifted = k + SHIFTER (k integral, 2**k normal): k sits in the low bits of
    shifted's mantissa, which become the exponent field."""
    cdef f32_bits b32
    cdef f64_bits b64
    if real is float:
        b32.value = shifted
        b32.bits = (b32.bits + 127) << 23
        return b32.value
    else:
        b64.value = shifted
        b64.bits = (b64.bits + 1023) << 52
        return b64.value


cdef inline real exp_reduced(real r) noexcept nogil:
    """exp(r) for |r| <= ln(2) / 2 (a little beyond stays accurate)."""
    cdef real rr = r * r, p, q, one = 1, two = 2
    if real is float:
        p = <float>1.9875691500e-4
        p = p * r + <float>1.3981999507e-3
        p = p * r + <float>8.3334519073e-3
        p = p * r + <float>4.1665795894e-2
        p = p * r + <float>1.6666665459e-1
        p = p * r + <float>5.0000001201e-1
        return p * rr + r + one
    else:
        p = r * ((1.26177193074810590878e-4 * rr + 3.02994407707441961300e-2) * rr
                 + 9.99999999999999999910e-1)
        q = (((3.00198505138664455042e-6 * rr + 2.52448340349684104192e-3) * rr
              + 2.27265548208155028766e-1) * rr + 2.00000000000000000009e0)
        return one + two * (p / (q - p))


cdef inline real exp_real(real x) noexcept nogil:
    """exp(x): NaN stays NaN, inf past the overflow threshold, 0 past the underflow one."""
    cdef real lo, hi, log2e, ln2_hi, ln2_lo, shifter, n, half, r, point_five = 0.5
    # SHIFTER = 1.5 * 2**(mantissa bits): (y + SHIFTER) - SHIFTER rounds y to an integer
    if real is float:
        lo, hi = -104.0, 89.0   # exp(lo) rounds to 0, exp(hi) to inf
        log2e, ln2_hi, ln2_lo = 1.44269504088896341, 0.693359375, -2.12194440e-4
        shifter = 12582912.0
    else:
        lo, hi = -746.0, 710.0
        log2e, ln2_hi, ln2_lo = 1.4426950408889634074, 6.93145751953125e-1, \
            1.42860682030941723212e-6
        shifter = 6755399441055744.0
    x = lo if x < lo else x   # NaN compares false both times and passes through
    x = hi if x > hi else x
    n = (x * log2e + shifter) - shifter
    r = (x - n * ln2_hi) - n * ln2_lo
    half = (n * point_five + shifter) - shifter
    return exp_reduced(r) * pow2i(half + shifter) * pow2i((n - half) + shifter)


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
    """y = e / (1 + e) for x < 0, else 1 / (1 + e), with e = exp(-|x|): never overflows."""
    cdef index_t i
    cdef real zero = 0, one = 1, e  # typed, so float32 math stays float32 (and vectorises)
    for i in range(size):
        e = exp_real(x[i] if x[i] < zero else -x[i])
        y[i] = (e if x[i] < zero else one) / (one + e)


cdef void relu_kernel(const real* x, real* y, index_t size) noexcept nogil:
    cdef real zero = 0
    cdef index_t i
    for i in range(size):
        y[i] = zero if x[i] <= zero else x[i]  # as np.maximum(x, 0): NaN kept, -0 -> +0


cdef void exp_kernel(const real* x, real* y, index_t size) noexcept nogil:
    cdef index_t i
    for i in range(size):
        y[i] = exp_real(x[i])


# ----------------------------------------------------------------------------
# Activations, and their gradients from the saved output y
# ----------------------------------------------------------------------------

cdef enum Activation:
    SIGMOID
    RELU
    EXP  # forward only: the tests' way in to exp_real


cdef activation(Activation kind, cnp.ndarray x, cnp.ndarray out):
    if out is None:
        out = new_like(x)
    cdef index_t size = cnp.PyArray_SIZE(x)
    cdef void* px = ptr(x)
    cdef void* po = ptr(out)
    cdef bint f32 = is_f32(x)
    with nogil:
        if f32:
            activation_kernel[float](kind, <float*>px, <float*>po, size)
        else:
            activation_kernel[double](kind, <double*>px, <double*>po, size)
    return out


cdef void activation_kernel(Activation kind, const real* x, real* y,
                            index_t size) noexcept nogil:
    if kind == SIGMOID:
        sigmoid_kernel(x, y, size)
    elif kind == RELU:
        relu_kernel(x, y, size)
    else:
        exp_kernel(x, y, size)


def sigmoid(cnp.ndarray x, cnp.ndarray out=None):
    """out = 1 / (1 + exp(-x)), stable for large |x|; out must not overlap x."""
    return activation(SIGMOID, x, out)


def relu(cnp.ndarray x, cnp.ndarray out=None):
    """out = max(x, 0), NaN kept."""
    return activation(RELU, x, out)


def exp(cnp.ndarray x, cnp.ndarray out=None):
    """out = exp(x) by the kernels' own exp (exposed so its accuracy can be tested)."""
    return activation(EXP, x, out)


cdef inline real activation_grad1(Activation kind, real g, real y) noexcept nogil:
    cdef real zero = 0, one = 1
    if kind == SIGMOID:
        return g * y * (one - y)
    return g if y > zero else zero  # relu'(0) = 0


cdef void activation_grad_kernel(Activation kind, const real* g, const real* y, real* dx,
                                 index_t size, bint accumulate) noexcept nogil:
    # `kind` and `accumulate` are loop-invariant: the compiler unswitches and vectorises.
    cdef index_t i
    if accumulate:
        for i in range(size):
            dx[i] += activation_grad1(kind, g[i], y[i])
    else:
        for i in range(size):
            dx[i] = activation_grad1(kind, g[i], y[i])


cdef activation_grad(Activation kind, cnp.ndarray g, cnp.ndarray y, cnp.ndarray out,
                     bint accumulate):
    if out is None:
        out = new_like(y)
    cdef index_t size = cnp.PyArray_SIZE(y)
    cdef void* pg = ptr(g)
    cdef void* py = ptr(y)
    cdef void* po = ptr(out)
    cdef bint f32 = is_f32(y)
    with nogil:
        if f32:
            activation_grad_kernel[float](kind, <float*>pg, <float*>py, <float*>po, size,
                                          accumulate)
        else:
            activation_grad_kernel[double](kind, <double*>pg, <double*>py, <double*>po, size,
                                           accumulate)
    return out


def sigmoid_grad(cnp.ndarray g, cnp.ndarray y, cnp.ndarray out, bint accumulate):
    """out (+)= g * y * (1 - y)."""
    return activation_grad(SIGMOID, g, y, out, accumulate)


def relu_grad(cnp.ndarray g, cnp.ndarray y, cnp.ndarray out, bint accumulate):
    """out (+)= g where y > 0, else 0."""
    return activation_grad(RELU, g, y, out, accumulate)


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
    with nogil:
        if f32:
            rows_forward[float](kind, <float*>px, <float*>po, rows, cols)
        else:
            rows_forward[double](kind, <double*>px, <double*>po, rows, cols)


cdef rowwise_grad(Rowwise kind, cnp.ndarray g, cnp.ndarray y, cnp.ndarray out,
                  bint accumulate):
    cdef index_t cols = last_dim(y)
    cdef index_t rows = cnp.PyArray_SIZE(y) // cols if cols else 0
    cdef void* pg = ptr(g)
    cdef void* py = ptr(y)
    cdef void* po = ptr(out)
    cdef bint f32 = is_f32(y)
    with nogil:
        if f32:
            rows_backward[float](kind, <float*>pg, <float*>py, <float*>po, rows, cols,
                                 accumulate)
        else:
            rows_backward[double](kind, <double*>pg, <double*>py, <double*>po, rows, cols,
                                  accumulate)


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
# Arithmetic on two arrays of one shape and memory order, or an array and a scalar:
# NumPy's results (one IEEE operation per element) without the ufunc machinery, which
# is most of the cost on small arrays (600 ns against 150 for 16 elements).
# ----------------------------------------------------------------------------

cpdef enum Arithmetic:
    ADD
    SUB
    MUL
    DIV


cdef inline real arithmetic1(Arithmetic op, real x, real z) noexcept nogil:
    if op == ADD:
        return x + z
    if op == SUB:
        return x - z
    if op == MUL:
        return x * z
    return x / z


cdef void arithmetic_kernel(Arithmetic op, const real* a, const real* b, real* y,
                            index_t size, bint a_scalar, bint b_scalar) noexcept nogil:
    # One call per op with a constant `op`, so each inlined copy computes only its own
    # operation (a loop choosing per element would pay for the division everywhere).
    if op == ADD:
        arithmetic_loop(ADD, a, b, y, size, a_scalar, b_scalar)
    elif op == SUB:
        arithmetic_loop(SUB, a, b, y, size, a_scalar, b_scalar)
    elif op == MUL:
        arithmetic_loop(MUL, a, b, y, size, a_scalar, b_scalar)
    else:
        arithmetic_loop(DIV, a, b, y, size, a_scalar, b_scalar)


cdef inline void arithmetic_loop(Arithmetic op, const real* a, const real* b, real* y,
                                 index_t size, bint a_scalar, bint b_scalar) noexcept nogil:
    cdef index_t i
    cdef real s
    if a_scalar:
        s = a[0]
        for i in range(size):
            y[i] = arithmetic1(op, s, b[i])
    elif b_scalar:
        s = b[0]
        for i in range(size):
            y[i] = arithmetic1(op, a[i], s)
    else:
        for i in range(size):
            y[i] = arithmetic1(op, a[i], b[i])


cdef object FLOAT32, FLOAT64
FLOAT32, FLOAT64 = np.float32, np.float64


cdef bint same_layout(cnp.ndarray a, cnp.ndarray b) noexcept:
    """One float dtype, one shape, both C- or both F-contiguous."""
    cdef int d
    if cnp.PyArray_TYPE(a) != cnp.PyArray_TYPE(b) or a.ndim != b.ndim:
        return False
    if cnp.PyArray_TYPE(a) != cnp.NPY_FLOAT32 and cnp.PyArray_TYPE(a) != cnp.NPY_FLOAT64:
        return False
    for d in range(a.ndim):
        if a.shape[d] != b.shape[d]:
            return False
    return ((cnp.PyArray_IS_C_CONTIGUOUS(a) and cnp.PyArray_IS_C_CONTIGUOUS(b))
            or (cnp.PyArray_IS_F_CONTIGUOUS(a) and cnp.PyArray_IS_F_CONTIGUOUS(b)))


cdef bint is_scalar_for(object s, cnp.ndarray a) noexcept:
    """s is a NumPy scalar of a's float dtype, and a is C- or F-contiguous."""
    if not (cnp.PyArray_IS_C_CONTIGUOUS(a) or cnp.PyArray_IS_F_CONTIGUOUS(a)):
        return False
    if cnp.PyArray_TYPE(a) == cnp.NPY_FLOAT32:
        return type(s) is FLOAT32
    return cnp.PyArray_TYPE(a) == cnp.NPY_FLOAT64 and type(s) is FLOAT64


def arithmetic(Arithmetic op, a, b):
    """a op b (ADD, SUB, MUL or DIV) as a new array, when a and b are float arrays of one
    dtype, shape and memory order, or one is such an array and the other a NumPy scalar of
    its dtype (the array C- or F-contiguous in either case). Any other operands give
    None: the caller broadcasts with NumPy."""
    cdef cnp.ndarray array
    cdef bint a_scalar = False, b_scalar = False
    cdef double scalar = 0
    if type(a) is cnp.ndarray and type(b) is cnp.ndarray and same_layout(a, b):
        array = a
    elif type(a) is cnp.ndarray and is_scalar_for(b, a):
        array, scalar, b_scalar = a, b, True
    elif type(b) is cnp.ndarray and is_scalar_for(a, b):
        array, scalar, a_scalar = b, a, True
    else:
        return None
    cdef cnp.ndarray out = new_like(array)
    cdef index_t size = cnp.PyArray_SIZE(array)
    cdef bint f32 = is_f32(array)
    cdef float scalar32 = <float>scalar  # exact: a float32 scalar went through double
    cdef void* ps = <void*>&scalar32 if f32 else <void*>&scalar
    cdef void* pa = ps if a_scalar else ptr(a)
    cdef void* pb = ps if b_scalar else ptr(b)
    cdef void* po = ptr(out)
    with nogil:
        if f32:
            arithmetic_kernel[float](op, <float*>pa, <float*>pb, <float*>po, size, a_scalar,
                                     b_scalar)
        else:
            arithmetic_kernel[double](op, <double*>pa, <double*>pb, <double*>po, size,
                                      a_scalar, b_scalar)
    return out


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


# ----------------------------------------------------------------------------
# Signals
# ----------------------------------------------------------------------------

from cpython.exc cimport PyErr_CheckSignals


def check_signals():
    """Run Python's signal handlers now (raising KeyboardInterrupt after Ctrl-C): compiled
    loops otherwise run them only when they return to the interpreter."""
    PyErr_CheckSignals()
