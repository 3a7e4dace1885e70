# Cython declarations for protocol.py when it is compiled (see setup.py): the helpers
# every op and vjp goes through are C calls, also from the op families that cimport them
# (a Python-level call between compiled functions costs ~60 ns).

cpdef normalize_axis(op, axis, ndim)
cpdef contiguous(x)
cpdef order_of(x)
cpdef dense(x)
cpdef bint in_order(x, order)
cpdef contribute(out, contribution)
cpdef contribute_reduced(out, g, shape)
cpdef column_sum(out, g)
cpdef contribute_broadcast(out, g, shape)
cpdef kernel_out(out, shape, dtype, order=*)
