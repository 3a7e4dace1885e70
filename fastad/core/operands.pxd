# Cython declarations for operands.py when it is compiled (see setup.py): the ops call
# these as C functions (cimport).
cpdef as_tensor(op, x)
cpdef tuple operands(op, a, b)
