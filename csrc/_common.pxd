"""Types and helpers shared by fastad's kernel modules (header only: no module of its own)."""
cimport numpy as cnp

ctypedef fused real:
    float
    double

ctypedef cnp.npy_intp index_t


cdef inline bint is_f32(cnp.ndarray a) noexcept:
    """True for float32 data, False for float64 (the only two kinds kernels get)."""
    return cnp.PyArray_TYPE(a) == cnp.NPY_FLOAT32


cdef extern from "Python.h":
    ctypedef struct PyThreadState:
        pass
    PyThreadState* PyEval_SaveThread() noexcept nogil
    void PyEval_RestoreThread(PyThreadState*) noexcept nogil


cdef inline PyThreadState* release_gil(index_t elements) noexcept:
    """Release the GIL for a kernel over `elements` elements, as NumPy does above 500:
    below that, taking it back costs more than another thread could gain. Returns what
    `take_gil` needs (NULL: not released). Between the two, only C may run."""
    return PyEval_SaveThread() if elements > 500 else NULL


cdef inline void take_gil(PyThreadState* released) noexcept:
    if released != NULL:
        PyEval_RestoreThread(released)


cdef inline void* ptr(cnp.ndarray a) noexcept:
    return cnp.PyArray_DATA(a)


cdef inline cnp.ndarray new_like(cnp.ndarray template):
    """An uninitialised array of template's shape and dtype, Fortran-ordered if it is
    (elementwise kernels pair up flat memory, so their arrays share one order)."""
    cdef bint fortran = cnp.PyArray_IS_F_CONTIGUOUS(template) and not \
        cnp.PyArray_IS_C_CONTIGUOUS(template)
    return cnp.PyArray_EMPTY(template.ndim, template.shape, cnp.PyArray_TYPE(template),
                             fortran)
