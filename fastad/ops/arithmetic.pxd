from fastad.core.operands cimport operands
from fastad.ops.protocol cimport contribute_reduced
