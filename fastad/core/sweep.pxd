# Cython declarations for sweep.py when it is compiled (see setup.py); the module itself
# stays plain Python. Sweep becomes an extension type, and its loop reads nodes, lists,
# dicts and sets through C rather than attribute lookups. tests/test_layout.py checks
# these fields against Sweep's __slots__.
import cython

from fastad.core.tape cimport Node


cdef class Sweep:
    cdef public object seed, order, final_at, leaf_uses, adjoints, unowned, results
    cdef public object stopped_by, lock, listener, final_after
    cdef public Py_ssize_t position
    cdef public bint released_any, implied_seed
    cdef object __weakref__

    @cython.locals(order=list, adjoints=dict, unowned=set, node=Node, parents=tuple,
                   out=tuple, first=tuple, rest=tuple, position=Py_ssize_t,
                   start=Py_ssize_t, listener=object, movable=bint)
    cpdef _run(self, stop, retain_graph)

    @cython.locals(adjoints=dict, unowned=set, parents=tuple, grads=tuple, i=Py_ssize_t,
                   owned=bint)
    cpdef bint _apply(self, Node node, g, tuple out, bint movable, capture)

    @cython.locals(node=Node, remaining=list)
    cpdef _check_remaining(self)


cpdef tuple apply_vjp(vjp, g, saved, tuple out)


@cython.locals(node=Node, stack=list, nodes=list, leaf_uses=list, final_at=dict)
cpdef tuple _reachable(root)


@cython.locals(i=Py_ssize_t, newer=Node, older=Node)
cpdef bint _newest_first(list nodes)


cpdef _call(capture, function, tuple args)
