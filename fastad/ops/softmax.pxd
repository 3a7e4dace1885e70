from fastad.core.tape cimport record
from fastad.core.operands cimport as_tensor
from fastad.ops.protocol cimport contiguous, kernel_out, normalize_axis

cpdef _rowwise(kernel, x, axis)
cpdef _rowwise_grad(kernel, out, g, y, axis)
