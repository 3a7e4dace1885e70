# Cython declarations for tensor.py when it is compiled (see setup.py); the module
# itself stays plain Python. As an extension type, a Tensor is made and filled in C.
# tests/test_layout.py checks that these fields are the class's __slots__.
import cython

cdef class Tensor:
    cdef public object _value, _grad, _node, _made_by, _origin, _sweep, _consumed
    cdef public bint requires_grad
    cdef public Py_ssize_t _modified_at
    cdef object __weakref__


@cython.locals(t=Tensor)
cpdef make_tensor(value, made_by, node)
cpdef constant(op, x, dtype)
cpdef beside(op, Tensor t, other)
@cython.locals(address=size_t)
cpdef Py_hash_t identity_hash(t)
