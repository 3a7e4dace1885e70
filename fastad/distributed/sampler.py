"""DistributedSampler: each rank's share of the data set."""
import math

import numpy as np

from .backend import _backend


class DistributedSampler:
    """This rank's share of the indices 0..n-1, as torch.utils.data.DistributedSampler.

    Each epoch's order is a permutation that depends only on (seed, epoch) (the
    identity with shuffle=False); it is padded by repeating its start (or, with
    drop_last=True, cut) to a multiple of the number of ranks, and rank r takes every
    size-th index starting at r: the shares are disjoint except for the padding, cover
    the data, and all have `len(sampler)` indices. Call `set_epoch(epoch)` before each
    epoch to reshuffle.
    """

    def __init__(self, n, shuffle=True, seed=0, drop_last=False, num_replicas=None,
                 rank=None, comm=None):
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
            raise ValueError(f"DistributedSampler: n must be a non-negative int, got {n!r}")
        if num_replicas is None or rank is None:
            backend = _backend(comm)
            num_replicas = backend.size if num_replicas is None else num_replicas
            rank = backend.rank if rank is None else rank
        if not 0 <= rank < num_replicas:
            raise ValueError(f"DistributedSampler: rank {rank} is not in [0, {num_replicas})")
        self.n, self.shuffle, self.seed, self.drop_last = int(n), shuffle, int(seed), drop_last
        self.num_replicas, self.rank, self.epoch = int(num_replicas), int(rank), 0
        if drop_last and self.n % self.num_replicas:
            self.num_samples = math.ceil((self.n - self.num_replicas) / self.num_replicas)
        else:
            self.num_samples = math.ceil(self.n / self.num_replicas)
        self.total_size = self.num_samples * self.num_replicas

    def set_epoch(self, epoch):
        self.epoch = int(epoch)

    def indices(self):
        if self.shuffle:
            order = np.random.default_rng([self.seed, self.epoch]).permutation(self.n)
        else:
            order = np.arange(self.n)
        if not self.drop_last:
            padding = self.total_size - self.n
            if padding and self.n:
                order = np.concatenate([order, np.resize(order, padding)])
        else:
            order = order[:self.total_size]
        return order[self.rank:self.total_size:self.num_replicas]

    def __iter__(self):
        return iter(self.indices().tolist())

    def __len__(self):
        return self.num_samples
