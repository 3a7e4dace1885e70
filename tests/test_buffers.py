"""The buffer pool hands an array out again only once nobody else holds it."""
import numpy as np
import pytest

import fastad as fa
from fastad import _buffers


@pytest.fixture
def pool_everything(monkeypatch):
    """Pool every buffer, however small, in a fresh pool."""
    monkeypatch.setattr(_buffers, "POOL_MIN_BYTES", 0)
    monkeypatch.setattr(_buffers, "_pool", {})


def test_a_held_buffer_is_never_handed_out_again(pool_everything):
    first = _buffers.empty((4, 3), np.float64)
    second = _buffers.empty((4, 3), np.float64)
    assert second is not first
    third = _buffers.empty((4, 3), np.float64)  # both held, and the pool keeps two
    assert third is not first and third is not second


def test_a_dropped_buffer_is_reused(pool_everything):
    first = _buffers.empty((4, 3), np.float32, "F")
    first_id = id(first)
    del first
    again = _buffers.empty((4, 3), np.float32, "F")
    assert id(again) == first_id
    assert again.flags.f_contiguous and again.dtype == np.float32


def test_a_view_keeps_its_buffer_busy(pool_everything):
    first = _buffers.empty((4, 3), np.float64)
    view = first[1:]
    first_id = id(first)
    del first
    assert id(_buffers.empty((4, 3), np.float64)) != first_id
    del view


def test_gradients_the_caller_holds_survive_later_sweeps(pool_everything):
    rng = np.random.default_rng(0)
    w = fa.Parameter(rng.standard_normal((5, 4)))
    x = [rng.standard_normal((3, 5)) for _ in range(3)]

    def gradient(data):
        return fa.grad(fa.sum(fa.sigmoid(fa.tensor(data) @ w)), w)

    held = [gradient(d) for d in x]
    for data, g in zip(x, held):
        y = 1 / (1 + np.exp(-(data @ w.value)))
        np.testing.assert_allclose(g, data.T @ (y * (1 - y)), rtol=1e-12)
