# Type stub of fastad.nn.utils (see fastad/__init__.pyi).
from collections.abc import Iterable

from .. import Tensor

__all__ = ["clip_grad_norm_"]

def clip_grad_norm_(parameters: Tensor | Iterable[Tensor], max_norm: float,
                    norm_type: float = 2.0, error_if_nonfinite: bool = False) -> float: ...
