"""Every differentiable op, one module per family, each op's forward beside its vjp.

`REGISTRY` maps the name of every public op to its function: fastad's namespace and
the test tables are built from it (see protocol.py for what an op is).
"""
from . import arithmetic, elementwise, indexing, linalg, losses, reductions, shapes  # noqa: F401
from . import softmax  # noqa: F401  (importing a family registers its ops)
from .protocol import REGISTRY

__all__ = ["REGISTRY"]
