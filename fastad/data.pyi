# Type stub of fastad.data (see fastad/__init__.pyi).
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = ["DataLoader"]

class DataLoader:
    arrays: tuple[NDArray[Any], ...]
    batch_size: int
    shuffle: bool
    drop_last: bool
    sampler: Iterable[int] | None
    rng: np.random.Generator
    def __init__(self, *arrays: ArrayLike, batch_size: int, shuffle: bool = False,
                 drop_last: bool = False, rng: np.random.Generator | int | None = None,
                 sampler: Iterable[int] | None = None) -> None: ...
    @property
    def num_samples(self) -> int: ...
    def __len__(self) -> int: ...
    def __iter__(self) -> Iterator[tuple[NDArray[Any], ...]]: ...
