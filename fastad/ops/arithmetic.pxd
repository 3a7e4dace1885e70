from fastad.core.tensor cimport operands
from fastad.ops.protocol cimport contribute_reduced
