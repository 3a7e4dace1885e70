"""The hostile-files campaign for fa.load: a few hundred derandomized bad files (bit
flips and truncations of valid checkpoints, random forged .npy headers, every file of
_io_files.hostile_files, a directory, a FIFO, /dev/zero) must each give a ValueError or
a correct load; never another exception, a crash, a hang or a big allocation.

It runs in a child process (`python tests/test_io_campaign.py`) with a timeout and a
memory limit, so that a hang or a crash fails the test instead of killing pytest. The
child prints the first failures as they happen, then the number of cases it ran.
"""
import collections
import io
import os
import random
import re
import resource
import subprocess
import sys
import tempfile
import traceback
import warnings

import numpy as np
import pytest

import fastad as fa
from _io_files import assert_same, hostile_files, npy, zip_of

SEED = 20261201
FLIPS, TRUNCATIONS, FORGED = 100, 20, 150        # per valid file, per valid file, in all
MEMORY_HEADROOM = 1 << 30                       # bytes the child may allocate after imports


@pytest.mark.skipif(sys.platform == "win32", reason="FIFOs and rlimits are POSIX")
def test_hostile_files_campaign():
    try:
        proc = subprocess.run([sys.executable, __file__], capture_output=True, text=True,
                              timeout=300)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"the campaign hung; its output so far:\n{e.stdout}")
    report = f"stdout:\n{proc.stdout[-6000:]}\nstderr:\n{proc.stderr[-4000:]}"
    assert proc.returncode == 0, f"the campaign exited {proc.returncode}\n{report}"
    ran = int(re.search(r"(\d+) cases", proc.stdout).group(1))
    assert ran >= 5 * (FLIPS + TRUNCATIONS) + FORGED + 50, report
    print(proc.stdout)


# ====================================================================================
# Everything below runs in the child process.
# ====================================================================================

def valid_files():
    """{description: (bytes, what load returns)} of small valid checkpoints."""
    rng = np.random.default_rng(SEED)
    flat = {"0.weight": rng.standard_normal((8, 5)).astype(np.float32), "0.bias": np.zeros(8),
            "fortran": np.asfortranarray(rng.standard_normal((4, 3)))}
    nested = {"model": flat, "optim": {"state": {0: {"step": 3, "buf": np.ones(8, ">f4")}},
                                       "param_groups": [{"lr": 0.1, "betas": [0.9, 0.999]}]},
              "epoch": 3, "rng": rng.bit_generator.state, "nan": float("nan"), "none": None}
    files = {}
    for name, obj in {"nested": nested, "flat": flat, "list": [np.arange(5), 1.5, "x"]}.items():
        buffer = io.BytesIO()
        fa.save(buffer, obj)
        files[f"fa.save {name}"] = buffer.getvalue(), obj
    for savez in (np.savez, np.savez_compressed):
        buffer = io.BytesIO()
        savez(buffer, **flat)
        files[f"np.{savez.__name__}"] = buffer.getvalue(), Members(flat)
    return files


def flipped(data, rng):
    """`data` with 1 to 4 bits flipped, half the time in the zip's headers at the end."""
    data = bytearray(data)
    start = 0 if rng.random() < 0.5 else len(data) * 3 // 4
    for _ in range(rng.randint(1, 4)):
        data[rng.randrange(start, len(data))] ^= 1 << rng.randrange(8)
    return bytes(data)


def forged_npy(rng):
    """A .npy member with a random header and random data: (bytes, whether it is valid)."""
    descr = rng.choice(["<f8", ">f4", "|u1", "<i2", "|b1", "<c16", "<U3", "|S0", "|O",
                        "<M8[s]", [("a", "<f8")], "|V4", "float64", "<f99"])
    ndim = rng.randint(0, 3)
    shape = tuple(rng.choice([0, 1, 3, 7, -1, -3, 2**31, 2**40, 2**63]) for _ in range(ndim))
    fortran_order = rng.random() < 0.3
    try:
        size = int(np.prod(shape, dtype=object)) * np.dtype(descr).itemsize
    except TypeError:
        size = 8
    length = size if rng.random() < 0.5 and 0 <= size < 10000 else rng.randrange(0, 200)
    data = bytes(rng.randrange(256) for _ in range(length))
    return npy(descr, shape, fortran_order, data)


class Members(dict):
    """What an np.savez file holds: a bit flip in its central directory can hide a
    member without any check noticing (there is no structure to cross-check), so a
    load may give a part of it, exact."""


def load_outcome(path, expected):
    """'ValueError', 'loaded intact', 'loaded a part', or an exception to report."""
    try:
        loaded = fa.load(path)
    except ValueError:
        return "ValueError"
    if isinstance(expected, Members) and loaded.keys() < expected.keys():
        assert_same(loaded, {key: expected[key] for key in loaded})
        return "loaded a part"
    assert_same(loaded, expected)
    return "loaded intact"


def limit_memory():
    """Cap the address space a little above what the imports took: a big allocation
    for a lie becomes a MemoryError (a failure) instead of swapping the machine."""
    with open("/proc/self/status") as status:
        kb = int(re.search(r"VmSize:\s+(\d+) kB", status.read()).group(1))
    limit = kb * 1024 + MEMORY_HEADROOM
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def main():
    warnings.simplefilter("ignore")       # np.load's, for the forged headers
    rng = random.Random(SEED)
    cases = []                                   # (description, bytes or path, expected)
    for name, (data, expected) in valid_files().items():
        cases.append((name, data, expected))
        cases += [(f"{name}, flipped #{i}", flipped(data, rng), expected) for i in range(FLIPS)]
        cases += [(f"{name}, cut at {n}", data[:n], expected)
                  for n in sorted(rng.sample(range(len(data)), TRUNCATIONS))]
    for i in range(FORGED):
        member = forged_npy(rng)
        cases.append((f"forged .npy #{i}", zip_of({"w.npy": member}), "np.load"))
    cases += [(name, data, None) for name, data in hostile_files().items()]
    if os.path.exists("/proc/self/status"):
        limit_memory()

    outcomes, failures = collections.Counter(), []
    with tempfile.TemporaryDirectory() as tmp:
        os.mkfifo(os.path.join(tmp, "fifo"))
        os.mkdir(os.path.join(tmp, "dir"))
        cases += [("a FIFO", os.path.join(tmp, "fifo"), None),
                  ("a directory", os.path.join(tmp, "dir"), None),
                  ("/dev/zero", "/dev/zero", None)]
        for description, data, expected in cases:
            path = data
            if isinstance(data, bytes):
                path = os.path.join(tmp, "case.npz")
                with open(path, "wb") as file:
                    file.write(data)
            if expected == "np.load":    # a forged file fa.load may load if np.load does
                try:
                    expected = dict(np.load(path, allow_pickle=False))
                except Exception:
                    expected = None
            try:
                outcome = load_outcome(path, expected)
                if expected is None and outcome != "ValueError":
                    raise AssertionError("a hostile file loaded")
                outcomes[outcome] += 1
            except BaseException:
                failures.append(description)
                if len(failures) <= 10:     # as they happen: a hang later keeps them
                    print(f"--- {description}\n{traceback.format_exc()}", flush=True)
    print(f"{len(cases)} cases: {dict(outcomes)}; {len(failures)} failures: {failures}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
