from fastad.core.tape cimport record
from fastad.core.operands cimport as_tensor
from fastad.ops.protocol cimport contiguous, kernel_out

cpdef _labels(op, labels, shape)
cpdef _reduce_losses(op, losses, reduction)
cpdef _row_scale(g, reduction, n)
