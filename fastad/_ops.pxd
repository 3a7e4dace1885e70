# Cython declarations for _ops.py when it is compiled (see setup.py); the module itself
# stays plain Python. The helpers every op and vjp goes through become C-level calls
# inside the module (a Python-level call between compiled functions costs ~60 ns).

cpdef _tensor_arg(op, x)
cpdef _constant(op, x, dtype)
cpdef _operands(op, a, b)
cpdef _contiguous(x)
cpdef _order(x)
cpdef _dense(x)
cpdef bint _in_order(x, order)
cpdef _accumulate(out, contribution)
cpdef _accumulate_reduced(out, g, shape)
cpdef _accumulate_broadcast(out, g, shape)
cpdef _kernel_out(out, shape, dtype, order=*)
cpdef _blas_ready(m)
cpdef _gemm(out, a, b, order)
