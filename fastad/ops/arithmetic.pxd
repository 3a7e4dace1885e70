from fastad.core.tape cimport record
from fastad.core.operands cimport operands
from fastad.ops.protocol cimport contribute_reduced
