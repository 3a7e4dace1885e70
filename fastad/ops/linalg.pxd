from fastad.core.tape cimport record
from fastad.core.operands cimport operands
from fastad.ops.protocol cimport contribute, kernel_out, order_of

cpdef _gemm(out, a, b, order)
cpdef _product(a, b)
cpdef gemm_into(buffer, a, b, bint accumulate, order)
cpdef tuple _product_order(dtype, rows, inner, cols)
cpdef _check_matmul(a, b)
