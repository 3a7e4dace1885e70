# distutils: extra_compile_args = -fno-trapping-math
"""fastad's pointwise kernels: activations (sigmoid, relu) and their gradients,
arithmetic of two same-layout arrays or an array and a scalar, and the bias pattern
(row-broadcast add, column sum).

Each public function takes ndarrays that the Python layer has already validated:
same dtype (float32 or float64), C-contiguous unless stated, shapes that agree. The
typed workers under them (pointwise_kernels.pxd, inline: the replay loop of fa.capture calls
them too) are ``noexcept nogil`` and run without the GIL over more than 500 elements
(`_common.release_gil`). Backward kernels take an
``accumulate`` flag: False writes the contribution into ``out`` (its first one), True
adds it to what ``out`` already holds. Elementwise kernels read flat memory, so their
arrays may instead all be F-contiguous; the activation kernels also take out=None, and then return a new
array laid out like their input. -fno-trapping-math (the first line) lets GCC
if-convert exp's clamps and selects and so vectorise the loops that call it (see
exp.pxd); no kernel reads the FP exception flags, and the flag changes no value.
"""
import enum

import numpy as np

cimport numpy as cnp

cnp.import_array()

from _common cimport PyThreadState, index_t, is_f32, new_like, ptr, release_gil, take_gil
from pointwise_kernels cimport (ADD, DIV, MUL, SUB, RELU, SIGMOID, EXP, Activation,
                                ArithmeticOp, activation_grad_kernel, activation_kernel,
                                add_row_kernel, arithmetic_kernel, column_sum_kernel)


# ----------------------------------------------------------------------------
# Activations, and their gradients from the saved output y
# ----------------------------------------------------------------------------

cdef activation(Activation kind, cnp.ndarray x, cnp.ndarray out):
    if out is None:
        out = new_like(x)
    cdef index_t size = cnp.PyArray_SIZE(x)
    cdef void* px = ptr(x)
    cdef void* po = ptr(out)
    cdef bint f32 = is_f32(x)
    cdef PyThreadState* released = release_gil(size)
    if f32:
        activation_kernel[float](kind, <float*>px, <float*>po, size)
    else:
        activation_kernel[double](kind, <double*>px, <double*>po, size)
    take_gil(released)
    return out


def sigmoid(cnp.ndarray x, cnp.ndarray out=None):
    """out = 1 / (1 + exp(-x)), stable for large |x|; out must not overlap x."""
    return activation(SIGMOID, x, out)


def relu(cnp.ndarray x, cnp.ndarray out=None):
    """out = max(x, 0), NaN kept."""
    return activation(RELU, x, out)


def exp(cnp.ndarray x, cnp.ndarray out=None):
    """out = exp(x) by the kernels' own exp (exposed so its accuracy can be tested)."""
    return activation(EXP, x, out)


cdef activation_grad(Activation kind, cnp.ndarray g, cnp.ndarray y, cnp.ndarray out,
                     bint accumulate):
    if out is None:
        out = new_like(y)
    cdef index_t size = cnp.PyArray_SIZE(y)
    cdef void* pg = ptr(g)
    cdef void* py = ptr(y)
    cdef void* po = ptr(out)
    cdef bint f32 = is_f32(y)
    cdef PyThreadState* released = release_gil(size)
    if f32:
        activation_grad_kernel[float](kind, <float*>pg, <float*>py, <float*>po, size,
                                      accumulate)
    else:
        activation_grad_kernel[double](kind, <double*>pg, <double*>py, <double*>po, size,
                                       accumulate)
    take_gil(released)
    return out


def sigmoid_grad(cnp.ndarray g, cnp.ndarray y, cnp.ndarray out, bint accumulate):
    """out (+)= g * y * (1 - y)."""
    return activation_grad(SIGMOID, g, y, out, accumulate)


def relu_grad(cnp.ndarray g, cnp.ndarray y, cnp.ndarray out, bint accumulate):
    """out (+)= g where y > 0, else 0."""
    return activation_grad(RELU, g, y, out, accumulate)


# ----------------------------------------------------------------------------
# Arithmetic on two arrays of one shape and memory order, or an array and a scalar:
# NumPy's results (one IEEE operation per element) without the ufunc machinery, which
# is most of the cost on small arrays (600 ns against 150 for 16 elements).
# ----------------------------------------------------------------------------

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


Arithmetic = enum.IntEnum("Arithmetic", {"ADD": ADD, "SUB": SUB, "MUL": MUL, "DIV": DIV})


def arithmetic(ArithmeticOp op, a, b):
    """a op b (ADD, SUB, MUL or DIV) as a new array, when a and b are float arrays of one
    dtype, shape and memory order, or one is such an array and the other a NumPy scalar of
    its dtype (the array C- or F-contiguous in either case). Any other operands give
    None: the caller broadcasts with NumPy."""
    if type(a) is cnp.ndarray and type(b) is cnp.ndarray and same_layout(a, b):
        return arithmetic_to(op, a, b, new_like(a))
    if type(a) is cnp.ndarray and is_scalar_for(b, a):
        return arithmetic_to(op, a, b, new_like(a))
    if type(b) is cnp.ndarray and is_scalar_for(a, b):
        return arithmetic_to(op, a, b, new_like(b))
    return None


def arithmetic_into(ArithmeticOp op, a, b, cnp.ndarray out):
    """out = a op b for operands `arithmetic` accepts (the caller has checked them); out
    is laid out like the array operand, and may be it."""
    return arithmetic_to(op, a, b, out)


cdef cnp.ndarray arithmetic_to(ArithmeticOp op, a, b, cnp.ndarray out):
    cdef bint a_scalar = type(a) is not cnp.ndarray, b_scalar = type(b) is not cnp.ndarray
    cdef double scalar = a if a_scalar else b if b_scalar else 0
    cdef index_t size = cnp.PyArray_SIZE(out)
    cdef bint f32 = is_f32(out)
    cdef float scalar32 = <float>scalar  # exact: a float32 scalar went through double
    cdef void* ps = <void*>&scalar32 if f32 else <void*>&scalar
    cdef void* pa = ps if a_scalar else ptr(a)
    cdef void* pb = ps if b_scalar else ptr(b)
    cdef void* po = ptr(out)
    cdef PyThreadState* released = release_gil(size)
    if f32:
        arithmetic_kernel[float](op, <float*>pa, <float*>pb, <float*>po, size, a_scalar,
                                 b_scalar)
    else:
        arithmetic_kernel[double](op, <double*>pa, <double*>pb, <double*>po, size,
                                  a_scalar, b_scalar)
    take_gil(released)
    return out


# ----------------------------------------------------------------------------
# The bias pattern: row-broadcast add and its column sum
# ----------------------------------------------------------------------------

def add_row(cnp.ndarray x, cnp.ndarray b, cnp.ndarray out):
    """out = x + b for x (rows, cols) and b (cols,); out may be x."""
    cdef index_t rows = x.shape[0], cols = x.shape[1]
    cdef void* px = ptr(x)
    cdef void* pb = ptr(b)
    cdef void* po = ptr(out)
    cdef bint f32 = is_f32(x)
    cdef PyThreadState* released = release_gil(rows * cols)
    if f32:
        add_row_kernel[float](<float*>px, <float*>pb, <float*>po, rows, cols)
    else:
        add_row_kernel[double](<double*>px, <double*>pb, <double*>po, rows, cols)
    take_gil(released)


def column_sum(cnp.ndarray g, cnp.ndarray out, bint accumulate):
    """out (+)= g.sum(axis=0) for g (rows, cols)."""
    cdef index_t rows = g.shape[0], cols = g.shape[1]
    cdef void* pg = ptr(g)
    cdef void* po = ptr(out)
    cdef bint f32 = is_f32(g)
    cdef PyThreadState* released = release_gil(rows * cols)
    if f32:
        column_sum_kernel[float](<float*>pg, <float*>po, rows, cols, accumulate)
    else:
        column_sum_kernel[double](<double*>pg, <double*>po, rows, cols, accumulate)
    take_gil(released)

