"""fa.data.DataLoader: batches, views, seeded shuffling, samplers, len() and errors."""
import numpy as np
import pytest

import fastad as fa
from fastad.data import DataLoader


def dataset(n=10):
    x = np.arange(n * 3, dtype=np.float32).reshape(n, 3)
    y = np.arange(n) * 10
    return x, y


def rows(batches):
    """The sample indices of each batch (read back from the y array)."""
    return [list(y // 10) for _, y in batches]


def test_batches_in_order_are_views():
    x, y = dataset(10)
    loader = DataLoader(x, y, batch_size=4)
    batches = list(loader)
    assert len(loader) == len(batches) == 3
    assert rows(batches) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    for bx, by in batches:
        assert isinstance(bx, np.ndarray) and np.shares_memory(bx, x) and np.shares_memory(by, y)
    np.testing.assert_array_equal(batches[1][0], x[4:8])


def test_drop_last():
    x, y = dataset(10)
    loader = DataLoader(x, y, batch_size=4, drop_last=True)
    assert len(loader) == 2 and rows(loader) == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert len(DataLoader(x, batch_size=5, drop_last=True)) == 2


def test_one_array_gives_one_tuples():
    x, _ = dataset(4)
    (batch,) = next(iter(DataLoader(x, batch_size=4)))
    np.testing.assert_array_equal(batch, x)


def test_shuffle_is_a_permutation_per_epoch_drawn_from_rng():
    x, y = dataset(11)
    loader = DataLoader(x, y, batch_size=3, shuffle=True, rng=5)
    first, second = rows(loader), rows(loader)
    assert len(first) == len(loader) == 4
    assert sorted(sum(first, [])) == list(range(11)) and first != second
    replay = np.random.default_rng(5)  # the documented order: one permutation per epoch
    for epoch in (first, second):
        assert sum(epoch, []) == list(replay.permutation(11))
    for bx, by in DataLoader(x, y, batch_size=3, shuffle=True, rng=0):
        np.testing.assert_array_equal(bx, x[by // 10])


def test_same_seed_same_batches_and_generator_state_resumes():
    x, y = dataset(20)
    assert rows(DataLoader(x, y, batch_size=6, shuffle=True, rng=3)) == \
        rows(DataLoader(x, y, batch_size=6, shuffle=True, rng=3))
    rng = np.random.default_rng(1)
    loader = DataLoader(x, y, batch_size=6, shuffle=True, rng=rng)
    assert loader.rng is rng
    rows(loader)
    state = rng.bit_generator.state
    expected = rows(loader)
    fresh = np.random.default_rng(99)
    fresh.bit_generator.state = state
    assert rows(DataLoader(x, y, batch_size=6, shuffle=True, rng=fresh)) == expected


def test_order_is_drawn_when_iteration_starts():
    x, y = dataset(8)
    rng = np.random.default_rng(0)
    batches = iter(DataLoader(x, y, batch_size=4, shuffle=True, rng=rng))
    rng.random(5)  # drawn by someone else (e.g. Dropout) after iter(): does not matter
    assert sum(rows(batches), []) == list(np.random.default_rng(0).permutation(8))


class EveryOther:
    """A sampler: indices start, start + 2, ... with a len(), like DistributedSampler."""

    def __init__(self, n, start):
        self.n, self.start = n, start

    def __iter__(self):
        return iter(range(self.start, self.n, 2))

    def __len__(self):
        return len(range(self.start, self.n, 2))


def test_sampler_replaces_shuffling():
    x, y = dataset(10)
    sampler = EveryOther(10, 1)
    loader = DataLoader(x, y, batch_size=2, sampler=sampler)
    assert loader.sampler is sampler and len(loader) == 3
    assert rows(loader) == [[1, 3], [5, 7], [9]]
    assert rows(DataLoader(x, y, batch_size=2, sampler=[4, 4, 0])) == [[4, 4], [0]]
    assert DataLoader(x, batch_size=2).sampler is None


def test_a_sampler_is_iterated_anew_every_epoch():
    x, y = dataset(6)

    class Reversing(EveryOther):
        def __iter__(self):
            order = list(range(self.n))[::-1] if getattr(self, "flip", False) else range(self.n)
            self.flip = not getattr(self, "flip", False)
            return iter(order)

    loader = DataLoader(x, y, batch_size=6, sampler=Reversing(6, 0))
    assert rows(loader) == [[0, 1, 2, 3, 4, 5]] and rows(loader) == [[5, 4, 3, 2, 1, 0]]


@pytest.mark.parametrize("sampler, pattern", [([0, 10], "index 10"), ([-1], "index -1"),
                                              ([0.5], "integer indices")])
def test_bad_sampler_indices(sampler, pattern):
    x, y = dataset(10)
    with pytest.raises(ValueError, match=f"DataLoader: sampler.*{pattern}"):
        list(DataLoader(x, y, batch_size=2, sampler=sampler))


@pytest.mark.parametrize("arrays, kwargs, error, pattern", [
    ((np.ones(3), np.ones(4)), {"batch_size": 2}, ValueError, r"different lengths \[3, 4\]"),
    ((), {"batch_size": 2}, ValueError, "arrays"),
    ((np.float32(1),), {"batch_size": 2}, ValueError, r"arrays\[0\] is 0-d"),
    ((np.ones(3),), {"batch_size": 0}, ValueError, "batch_size: 0"),
    ((np.ones(3),), {"batch_size": 2.0}, TypeError, "batch_size"),
    ((np.ones(3),), {"batch_size": 2, "shuffle": True, "sampler": [0]}, ValueError,
     "sampler.*shuffle"),
    ((np.ones(3),), {"batch_size": 2, "shuffle": 1}, TypeError, "shuffle"),
])
def test_bad_arguments_name_the_argument(arrays, kwargs, error, pattern):
    with pytest.raises(error, match=f"DataLoader: .*{pattern}"):
        DataLoader(*arrays, **kwargs)


def test_len_without_a_sized_sampler_is_a_type_error():
    loader = DataLoader(np.ones(4), batch_size=2, sampler=iter([0, 1, 2]))
    with pytest.raises(TypeError):
        len(loader)


def test_exposed_as_fa_data():
    import fastad.data
    assert fa.data is fastad.data and fa.data.DataLoader is DataLoader
