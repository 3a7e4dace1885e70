"""Shared fixtures for fastad's tests.

With `--import-mode=importlib` test modules cannot import this file, so every shared
helper is a fixture (plain helpers that are not fixtures live in tests/_*.py): `rng`,
`dtype` (both float dtypes), `torch` (skips when PyTorch is missing), `assert_close`
(tolerances by dtype) and `count_vjps` (a test-only counter of the backward calls each
recorded node receives).
"""
import collections
import pathlib
import sys

import numpy as np
import pytest

import fastad as fa

# Plain helper modules beside the tests (tests/_layouts.py) import by name, as they do
# in the campaign's child processes, which run from this folder.
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

# Tolerances against an independent reference (PyTorch, NumPy in float64, or exact
# values): float32 results carry float32 rounding, float64 results only a few ulps.
TOLERANCES = {
    np.dtype(np.float32): dict(rtol=1e-4, atol=1e-5),
    np.dtype(np.float64): dict(rtol=1e-9, atol=1e-12),
}


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.fixture(params=[np.float32, np.float64], ids=["float32", "float64"])
def dtype(request):
    return np.dtype(request.param)


@pytest.fixture(scope="session")
def torch():
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)  # the machine is shared: keep PyTorch off the other cores
    return torch


def _assert_close(actual, expected, dtype, **override):
    tolerance = {**TOLERANCES[np.dtype(dtype)], **override}
    np.testing.assert_allclose(np.asarray(actual, dtype=np.float64),
                               np.asarray(expected, dtype=np.float64), **tolerance)


@pytest.fixture(scope="session")
def assert_close():
    """assert_close(actual, expected, dtype): allclose with the dtype's tolerances."""
    return _assert_close


def graph_nodes(output):
    """Every recorded node `output` depends on (walking the parents of its node)."""
    seen, stack = {}, [output._node] if output._node is not None else []
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen[id(node)] = node
        stack.extend(p for p in node.parents if p is not None and not isinstance(p, fa.Tensor))
    return list(seen.values())


class VjpCounter:
    """Wraps the backward function of every node an output depends on and counts calls."""

    def __init__(self, output):
        self.nodes = graph_nodes(output)
        self.calls = collections.Counter()
        for node in self.nodes:
            node.vjp = self._wrap(node, node.vjp)

    def _wrap(self, node, vjp):
        def counted(*args):
            self.calls[id(node)] += 1
            return vjp(*args)
        counted.op_name = vjp.op_name
        return counted

    @property
    def total(self):
        return sum(self.calls.values())

    def visited(self, node):
        return self.calls[id(node)]


@pytest.fixture(scope="session")
def count_vjps():
    """count_vjps(output) -> VjpCounter over every node output depends on."""
    return VjpCounter


@pytest.fixture(scope="session")
def nodes_of():
    """nodes_of(output) -> the recorded nodes output depends on."""
    return graph_nodes
