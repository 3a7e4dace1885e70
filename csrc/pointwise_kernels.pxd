# The pointwise workers (header only: no module of its own), shared by pointwise.pyx and
# fastad.capture's replay loop (machine.pyx), so a replay computes the same bits. Each
# reads and writes flat memory and trusts its arguments.
from _common cimport index_t, real
from exp cimport exp_real


# ----------------------------------------------------------------------------
# Activations, and their gradients from the saved output y
# ----------------------------------------------------------------------------

cdef inline void sigmoid_kernel(const real* x, real* y, index_t size) noexcept nogil:
    """y = e / (1 + e) for x < 0, else 1 / (1 + e), with e = exp(-|x|): never overflows."""
    cdef index_t i
    cdef real zero = 0, one = 1, e  # typed, so float32 math stays float32 (and vectorises)
    for i in range(size):
        e = exp_real(x[i] if x[i] < zero else -x[i])
        y[i] = (e if x[i] < zero else one) / (one + e)


cdef inline void relu_kernel(const real* x, real* y, index_t size) noexcept nogil:
    cdef real zero = 0
    cdef index_t i
    for i in range(size):
        y[i] = zero if x[i] <= zero else x[i]  # as np.maximum(x, 0): NaN kept, -0 -> +0


cdef inline void exp_kernel(const real* x, real* y, index_t size) noexcept nogil:
    cdef index_t i
    for i in range(size):
        y[i] = exp_real(x[i])


cdef enum Activation:
    SIGMOID
    RELU
    EXP  # forward only: the tests' way in to exp_real


cdef inline void activation_kernel(Activation kind, const real* x, real* y,
                                   index_t size) noexcept nogil:
    if kind == SIGMOID:
        sigmoid_kernel(x, y, size)
    elif kind == RELU:
        relu_kernel(x, y, size)
    else:
        exp_kernel(x, y, size)


cdef inline real activation_grad1(Activation kind, real g, real y) noexcept nogil:
    cdef real zero = 0, one = 1
    if kind == SIGMOID:
        return g * y * (one - y)
    return g if y > zero else zero  # relu'(0) = 0


cdef inline void activation_grad_kernel(Activation kind, const real* g, const real* y,
                                        real* dx, index_t size,
                                        bint accumulate) noexcept nogil:
    # `kind` and `accumulate` are loop-invariant: the compiler unswitches and vectorises.
    cdef index_t i
    if accumulate:
        for i in range(size):
            dx[i] += activation_grad1(kind, g[i], y[i])
    else:
        for i in range(size):
            dx[i] = activation_grad1(kind, g[i], y[i])


# ----------------------------------------------------------------------------
# Arithmetic on two arrays of one shape and memory order, or an array and a scalar
# ----------------------------------------------------------------------------

cdef enum ArithmeticOp:  # pointwise.Arithmetic names them for Python
    ADD
    SUB
    MUL
    DIV


cdef inline real arithmetic1(ArithmeticOp op, real x, real z) noexcept nogil:
    if op == ADD:
        return x + z
    if op == SUB:
        return x - z
    if op == MUL:
        return x * z
    return x / z


cdef inline void arithmetic_loop(ArithmeticOp op, const real* a, const real* b, real* y,
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


cdef inline void arithmetic_kernel(ArithmeticOp op, const real* a, const real* b, real* y,
                                   index_t size, bint a_scalar,
                                   bint b_scalar) noexcept nogil:
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


# ----------------------------------------------------------------------------
# The bias pattern: row-broadcast add and its column sum
# ----------------------------------------------------------------------------

cdef inline void add_row_kernel(const real* x, const real* b, real* out, index_t rows,
                                index_t cols) noexcept nogil:
    cdef index_t r, j
    for r in range(rows):
        for j in range(cols):
            out[j] = x[j] + b[j]
        x += cols
        out += cols


cdef inline void column_sum_kernel(const real* g, real* out, index_t rows, index_t cols,
                                   bint accumulate) noexcept nogil:
    cdef index_t r, j
    if not accumulate:
        for j in range(cols):
            out[j] = 0
    for r in range(rows):
        for j in range(cols):
            out[j] += g[j]
        g += cols
