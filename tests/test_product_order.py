"""A large product's memory order is chosen by timing both orders on its first real calls
(OpenBLAS's faster one depends on the CPU), unless FASTAD_GEMM_ORIENTATION forces it."""
import itertools

import numpy as np
import pytest

import fastad as fa
from fastad.ops import linalg

# short batch, large weight: inner * cols >= 1M, the products whose order is measured
SHAPES = ((4, 1024), (1024, 1024))


@pytest.fixture
def fresh_plans(monkeypatch):
    monkeypatch.setattr(linalg, "_plans", {})
    monkeypatch.setattr(linalg, "_FORCED_ORDER", None)


def product(rng):
    a, b = (rng.standard_normal(s).astype(np.float32) for s in SHAPES)
    y = fa.matmul(fa.tensor(a), fa.Parameter(b))
    np.testing.assert_allclose(y.value, a @ b, rtol=1e-4, atol=1e-3)
    return "F" if y.value.flags.f_contiguous and not y.value.flags.c_contiguous else "C"


def fake_clock(durations):
    """perf_counter for products that take `durations` seconds, one after the other."""
    ticks = itertools.chain.from_iterable((10.0 * i, 10.0 * i + d) for i, d in
                                          enumerate(durations))
    return lambda: next(ticks)


@pytest.mark.parametrize("faster", ["C", "F"])
def test_both_orders_are_tried_then_the_faster_kept(faster, fresh_plans, monkeypatch, rng):
    trials = ["C", "F"] * linalg.ORDER_TRIALS
    durations = [1.0 if order == faster else 2.0 for order in trials]
    monkeypatch.setattr(linalg, "perf_counter", fake_clock(durations))
    assert [product(rng) for _ in trials] == trials
    assert [product(rng) for _ in range(3)] == [faster] * 3
    ((choice, seconds),) = linalg.product_orders().values()
    assert choice == faster and len(seconds["C"]) == len(seconds["F"]) == linalg.ORDER_TRIALS


@pytest.mark.parametrize("forced", ["C", "F"])
def test_the_environment_can_force_an_order(forced, fresh_plans, monkeypatch, rng):
    monkeypatch.setattr(linalg, "_FORCED_ORDER", forced)
    assert [product(rng) for _ in range(3)] == [forced] * 3
    assert linalg.product_orders() == {}


def test_small_products_are_row_major_and_not_timed(fresh_plans, rng):
    y = fa.tensor(rng.standard_normal((64, 784))) @ fa.Parameter(rng.standard_normal((784, 256)))
    assert y.value.flags.c_contiguous and linalg.product_orders() == {}
