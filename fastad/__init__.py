"""fastad: reverse-mode automatic differentiation for NumPy on the CPU.

Every gradient request on an output shares one reverse sweep; matrix products, sigmoid,
softmax and fused softmax-cross-entropy run in compiled kernels over SciPy's BLAS.

Layout: `core` (tensors, the tape, the sweep; imports no op), `ops` (one module per op
family; `ops.REGISTRY` is the list of public ops this namespace is built from),
`kernels` (the compiled kernels), and on top `nn`, `optim`, `data`, `io`, `gradcheck`
and `replay` (fa.capture).
"""
import sys

from ._stale import refuse_stale_builds

refuse_stale_builds()  # in a source checkout, never run a compiled module older than its .py

from .core import tensor as _tensor  # noqa: E402
from .core.modes import detect_anomaly, enable_grad, is_grad_enabled, no_grad  # noqa: E402
from .core.gradients import backward, grad  # noqa: E402
from .core.operands import Parameter, tensor  # noqa: E402
from .core.tensor import Tensor  # noqa: E402
from .ops import REGISTRY as _OPS  # noqa: E402

globals().update(_OPS)  # add, matmul, sigmoid, ...: every public op, by its name

from . import data, nn, optim  # noqa: E402  (they use the ops above)
from ._gradcheck import gradcheck  # noqa: E402
from .replay import CaptureError, capture  # noqa: E402
from .io import load, save  # noqa: E402

_tensor.api = sys.modules[__name__]  # Tensor's operators and methods call these functions

__version__ = "0.1.0"

__all__ = [
    "Tensor", "tensor", "Parameter", "grad", "backward", "no_grad", "enable_grad",
    "is_grad_enabled", "detect_anomaly", "gradcheck", "nn", "optim", "data", "save", "load",
    "capture", "CaptureError",
    *sorted(_OPS),
]
