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


cdef inline cnp.ndarray new_like(cnp.ndarray template):
    """An uninitialised array of template's shape and dtype, Fortran-ordered if it is
    (elementwise kernels pair up flat memory, so their arrays share one order)."""
    cdef bint fortran = cnp.PyArray_IS_F_CONTIGUOUS(template) and not \
        cnp.PyArray_IS_C_CONTIGUOUS(template)
    return cnp.PyArray_EMPTY(template.ndim, template.shape, cnp.PyArray_TYPE(template),
                             fortran)
