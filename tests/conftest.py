"""Shared fixtures for fastad's tests.

With `--import-mode=importlib` test modules cannot import this file, so every shared
helper is a fixture (plain helpers that are not fixtures live in tests/_*.py): `rng`,
`dtype` (both float dtypes), `torch` (skips when PyTorch is missing), `assert_close`
(tolerances by dtype) and `count_vjps` (a test-only counter of the backward calls each
recorded node receives). At the end of a run, `pytest_terminal_summary` says in one line
per reason why tests were skipped and how to run them.
"""
import collections
import pathlib
import re
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


# --- why tests were skipped, and how to run them -------------------------------------------

TORCH_PIN = "torch==2.13.0"  # the PyTorch that .ci/run installs and README.md measured
# (pattern in the skip reason, what the skipped tests are, the fix)
SKIP_FIXES = [
    (r"could not import 'torch'", "PyTorch-parity tests",
     f"install {TORCH_PIN} (CPU build) to run them"),
    (r"could not import 'mypy'", "type-checking tests",
     "install mypy (pip install mypy) to run them"),
    (r"could not import 'mpi4py'", "MPI tests",
     'install the [mpi] extra (pip install ".[mpi]") to run them'),
    (r"could not import '(\w+)'", "tests needing {0}", "install {0} to run them"),
    (r"source tree's \.pxd files", "source-layout tests",
     "run pytest on a source checkout to run them"),
]


def _skip_reason(report):
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    return reason.removeprefix("Skipped: ")


def skip_summary(reports):
    """One line per group of skipped tests: how many, what they are, and the fix."""
    groups = collections.Counter()
    for report in reports:
        reason = _skip_reason(report)
        for pattern, what, fix in SKIP_FIXES:
            match = re.search(pattern, reason)
            if match:
                groups[what.format(*match.groups()), fix.format(*match.groups())] += 1
                break
        else:
            groups["tests", reason] += 1
    return [f"{n} {what if n > 1 else what.replace('tests', 'test', 1)} skipped: {fix}"
            for (what, fix), n in groups.most_common()]


def pytest_terminal_summary(terminalreporter):
    for line in skip_summary(terminalreporter.stats.get("skipped", [])):
        terminalreporter.write_line(line)
