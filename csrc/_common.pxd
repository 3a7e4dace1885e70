"""Types and helpers shared by fastad's kernel modules (header only: no module of its own)."""
cimport numpy as cnp

ctypedef fused real:
    float
    double

ctypedef cnp.npy_intp index_t


cdef inline bint is_f32(cnp.ndarray a) noexcept:
    """True for float32 data, False for float64 (the only two kinds kernels get)."""
    return cnp.PyArray_TYPE(a) == cnp.NPY_FLOAT32


cdef inline void* ptr(cnp.ndarray a) noexcept:
    return cnp.PyArray_DATA(a)
