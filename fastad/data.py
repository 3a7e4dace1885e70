"""fa.data.DataLoader: mini-batches of NumPy arrays, as torch.utils.data.DataLoader over a
TensorDataset (in the calling thread, no workers)."""
import numpy as np

from ._checks import flag, positive

__all__ = ["DataLoader"]


class DataLoader:
    """Iterates over tuples `(a[batch], b[batch], ...)` of `arrays`, which are indexed
    together along their first axis (one row per sample, the same number in each).

    - Without `shuffle` or `sampler` the batches are consecutive slices: views of the
      arrays, not copies.
    - `shuffle=True`: every `iter(loader)` (each epoch) draws one
      `rng.permutation(n)` at once, then batches that order (copies). `rng` is a
      np.random.Generator (used and advanced as it is), an int seed or None (fresh
      entropy); the same seed gives the same batches, and saving
      `rng.bit_generator.state` between epochs resumes the sequence.
    - `sampler`: any iterable of sample indices in [0, n), iterated anew every epoch
      (e.g. a DistributedSampler), replacing shuffling; `loader.sampler` is it (None
      without one).
    - `drop_last=True` drops a last batch smaller than `batch_size`.

    `len(loader)` is the number of batches per epoch (with a sampler: from
    `len(sampler)`). Bad arguments raise ValueError (TypeError for a wrong type) naming
    the argument.
    """

    def __init__(self, *arrays, batch_size, shuffle=False, drop_last=False, rng=None,
                 sampler=None):
        self.arrays = _arrays(arrays)
        self.batch_size = positive("DataLoader", "batch_size", batch_size)
        self.shuffle = flag("DataLoader", "shuffle", shuffle)
        self.drop_last = flag("DataLoader", "drop_last", drop_last)
        if sampler is not None and shuffle:
            raise ValueError("DataLoader: sampler option is mutually exclusive with "
                             "shuffle=True (the sampler decides the order)")
        self.sampler = sampler
        self.rng = np.random.default_rng(rng)

    @property
    def num_samples(self):
        """The number of samples (rows) in each array."""
        return len(self.arrays[0])

    def __len__(self):
        n = self.num_samples if self.sampler is None else len(self.sampler)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self):
        return self._batches(self._order())  # the order is drawn here, not at first next()

    def _order(self):
        """This epoch's sample indices, or None for 0, 1, ..., n-1 (slices)."""
        if self.sampler is not None:
            return _indices(self.sampler, self.num_samples)
        if self.shuffle:
            return self.rng.permutation(self.num_samples)
        return None

    def _batches(self, order):
        n = self.num_samples if order is None else len(order)
        end = n - n % self.batch_size if self.drop_last else n
        for start in range(0, end, self.batch_size):
            stop = start + self.batch_size
            rows = slice(start, stop) if order is None else order[start:stop]
            yield tuple(a[rows] for a in self.arrays)

    def __repr__(self):
        shapes = ", ".join(str(a.shape) for a in self.arrays)
        return (f"DataLoader({shapes}, batch_size={self.batch_size}, shuffle={self.shuffle}, "
                f"drop_last={self.drop_last}, sampler={self.sampler!r})")


def _arrays(arrays):
    if not arrays:
        raise ValueError("DataLoader: arrays: expected at least one array")
    arrays = tuple(np.asarray(a) for a in arrays)  # ndarrays as they are, no copy
    for i, a in enumerate(arrays):
        if a.ndim == 0:
            raise ValueError(f"DataLoader: arrays[{i}] is 0-d; each array needs one row "
                             "per sample")
    lengths = [len(a) for a in arrays]
    if len(set(lengths)) > 1:
        raise ValueError(f"DataLoader: arrays have different lengths {lengths}; each array "
                         "needs one row per sample")
    return arrays


def _indices(sampler, n):
    """The sampler's indices for one epoch, as an intp array checked against n."""
    indices = np.asarray(list(sampler))
    if indices.size == 0:
        return np.empty(0, np.intp)
    if indices.ndim != 1 or indices.dtype.kind not in "iu":
        raise ValueError(f"DataLoader: sampler must yield integer indices, got "
                         f"{indices.dtype} values of shape {indices.shape}")
    low, high = indices.min(), indices.max()
    if low < 0 or high >= n:
        raise ValueError(f"DataLoader: sampler gave index {low if low < 0 else high}, "
                         f"out of range for {n} samples")
    return indices.astype(np.intp, copy=False)
