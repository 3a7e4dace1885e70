"""Read-only views: how fa.grad hands out the sweep's buffers.

NumPy lets `view.flags.writeable = True` unlock a read-only view whose base is a
writeable array (or exports a writeable buffer). The views made here rest on a `Lender`,
which keeps the array alive and exports nothing, so nothing unlocks them.
"""
cimport numpy as cnp
from cpython.object cimport PyObject, PyTypeObject
from cpython.ref cimport Py_INCREF

cnp.import_array()


cdef extern from "numpy/arrayobject.h":
    # Steals the reference to descr.
    object PyArray_NewFromDescr(PyTypeObject* subtype, cnp.PyArray_Descr* descr, int nd,
                                cnp.npy_intp* dims, cnp.npy_intp* strides, void* data,
                                int flags, PyObject* obj)


cdef class Lender:
    """The base of a read-only view: owns a reference to the viewed array, lends no
    buffer (so NumPy cannot find a writeable one under the view)."""
    cdef object array


def read_only(cnp.ndarray array not None):
    """A view of `array` that cannot be written through or made writeable."""
    cdef Lender lender = Lender.__new__(Lender)
    lender.array = array
    cdef cnp.PyArray_Descr* descr = cnp.PyArray_DESCR(array)
    Py_INCREF(<object>descr)
    view = PyArray_NewFromDescr(<PyTypeObject*>cnp.ndarray, descr,
                                cnp.PyArray_NDIM(array), cnp.PyArray_DIMS(array),
                                cnp.PyArray_STRIDES(array), cnp.PyArray_DATA(array),
                                0, NULL)  # flags 0: not writeable
    cnp.set_array_base(view, lender)
    return view
