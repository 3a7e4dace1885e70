# Cython declarations for tape.py when it is compiled (see setup.py); the module itself
# stays plain Python. tests/test_layout.py checks these fields against Node's __slots__.
from fastad.core.tensor cimport Tensor


cdef class Node:
    cdef public object vjp, parents, saved
    cdef public Py_ssize_t index
    cdef public bint released


cpdef parent_of(Tensor t)
cpdef record(vjp, value, inputs, saved=*)
cpdef on_tape(vjp, value, inputs, saved)
