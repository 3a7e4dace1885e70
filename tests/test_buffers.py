"""The buffer pool hands an array out again only once nobody else holds it, and malloc
keeps smaller freed buffers for reuse."""
import os
import subprocess
import sys

import numpy as np
import pytest

import fastad as fa
from fastad.core import buffers


@pytest.fixture
def pool_everything(monkeypatch):
    """Pool every buffer, however small, in a fresh pool."""
    monkeypatch.setattr(buffers, "POOL_MIN_BYTES", 0)
    monkeypatch.setattr(buffers, "_pool", {})


def test_a_held_buffer_is_never_handed_out_again(pool_everything):
    first = buffers.empty((4, 3), np.dtype(np.float64))
    second = buffers.empty((4, 3), np.dtype(np.float64))
    assert second is not first
    third = buffers.empty((4, 3), np.dtype(np.float64))  # both held, and the pool keeps two
    assert third is not first and third is not second


def test_a_dropped_buffer_is_reused(pool_everything):
    first = buffers.empty((4, 3), np.dtype(np.float32), "F")
    first_id = id(first)
    del first
    again = buffers.empty((4, 3), np.dtype(np.float32), "F")
    assert id(again) == first_id
    assert again.flags.f_contiguous and again.dtype == np.float32


def test_a_view_keeps_its_buffer_busy(pool_everything):
    first = buffers.empty((4, 3), np.dtype(np.float64))
    view = first[1:]
    first_id = id(first)
    del first
    assert id(buffers.empty((4, 3), np.dtype(np.float64))) != first_id
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


STEADY_STATE_FAULTS = """
import resource
import numpy as np
import fastad as fa

rng = np.random.default_rng(0)
sizes = [784, 256, 256, 10]
params = []
for fan_in, fan_out in zip(sizes, sizes[1:]):
    params += [fa.Parameter(rng.standard_normal((fan_in, fan_out), np.float32) * 0.01),
               fa.Parameter(np.zeros(fan_out, np.float32))]
x = fa.tensor(rng.standard_normal((64, 784), np.float32))
labels = rng.integers(0, 10, 64)

def step():
    h = x
    for i in range(0, len(params), 2):
        h = h @ params[i] + params[i + 1]
        if i + 2 < len(params):
            h = fa.relu(h)
    fa.grad(fa.cross_entropy(h, labels), params)

for _ in range(20):
    step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(200):
    step()
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 200)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc tuning")
@pytest.mark.skipif("libasan" in os.environ.get("LD_PRELOAD", ""),
                    reason="AddressSanitizer's allocator replaces glibc's malloc")
def test_steady_state_training_steps_fault_no_pages_in():
    # Untuned glibc returns the step's freed blocks to the kernel and OpenBLAS's
    # threaded GEMM faults them back in: about 330 faults per step on this network.
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "2"}
    env.pop("FASTAD_MALLOC_TUNING", None)
    proc = subprocess.run([sys.executable, "-c", STEADY_STATE_FAULTS], capture_output=True,
                          text=True, timeout=300, cwd=os.path.dirname(__file__), env=env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert float(proc.stdout) < 5
