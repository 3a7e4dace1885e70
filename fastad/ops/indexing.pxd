from fastad.core.tape cimport record
from fastad.core.operands cimport as_tensor
from fastad.ops.protocol cimport contiguous, kernel_out
