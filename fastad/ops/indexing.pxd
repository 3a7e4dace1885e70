from fastad.core.tensor cimport as_tensor
from fastad.ops.protocol cimport contiguous, kernel_out
