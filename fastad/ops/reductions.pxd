from fastad.core.tensor cimport as_tensor
from fastad.ops.protocol cimport contribute, contribute_broadcast, normalize_axis
