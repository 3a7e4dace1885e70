# Cython declarations for _autograd.py when it is compiled (see setup.py); the module
# itself stays plain Python. Node and Sweep become extension types, and the sweep's
# loop reads nodes, lists, dicts and sets through C rather than attribute lookups.
import cython

from fastad._tensor cimport Tensor as TensorType


cdef class Node:
    cdef public object vjp, parents, saved
    cdef public Py_ssize_t index
    cdef public bint released


cdef class Sweep:
    cdef public object seed, order, final_at, leaf_uses, adjoints, unowned, results
    cdef public object stopped_by, lock
    cdef public Py_ssize_t position
    cdef public bint released_any, implied_seed
    cdef object __weakref__

    @cython.locals(order=list, adjoints=dict, unowned=set, node=Node, parents=tuple,
                   out=tuple, grads=tuple, i=Py_ssize_t, position=Py_ssize_t,
                   start=Py_ssize_t, anomaly=bint, movable=bint, owned=bint)
    cpdef _run(self, stop, retain_graph)

    @cython.locals(node=Node, remaining=list)
    cpdef _check_remaining(self)


@cython.locals(node=Node, stack=list, nodes=list, leaf_uses=list, final_at=dict)
cpdef tuple _reachable(root)


cpdef _parent(TensorType t)
