"""Crash consistency of fa.save, in child processes: a save that fails for lack of space
or is killed (SIGKILL) at a random moment leaves `path` loading as a complete checkpoint,
the old one or the new one, never a mix or a torn file."""
import os
import pathlib
import random
import re
import signal
import subprocess
import sys
import time

import pytest

import fastad as fa
from _io_files import assert_same, numbered_checkpoint

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals and rlimits")

TESTS = str(pathlib.Path(__file__).resolve().parent)
TEMPORARY = re.compile(r"\.ckpt\.npz\.[0-9a-f]{8}\.tmp")    # where save's temporary files go
N = 2_500_000                                               # 25 MB checkpoints

SAVE_UNDER_A_FILE_SIZE_LIMIT = """
import resource, signal, sys
sys.path.insert(0, sys.argv[1])
import fastad as fa
from _io_files import numbered_checkpoint
path, limit = sys.argv[2], int(sys.argv[3])
new = numbered_checkpoint(1, 10_000)
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)     # a write past the limit fails with EFBIG
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
try:
    fa.save(path, new)
except OSError as e:
    print("failed", e.errno)
"""

SAVE_FOREVER = """
import sys
sys.path.insert(0, sys.argv[1])
import fastad as fa
from _io_files import numbered_checkpoint
path, n = sys.argv[2], int(sys.argv[3])
print("ready", flush=True)
for k in range(1, 10**6):
    fa.save(path, numbered_checkpoint(k, n))
"""


def child(source, *args, **kwargs):
    # cwd: `python -c` puts its working directory first on sys.path, and from the
    # repository root that would import the uncompiled source tree, not the install
    return subprocess.Popen([sys.executable, "-c", source, TESTS, *map(str, args)],
                            stdout=subprocess.PIPE, text=True, cwd=TESTS, **kwargs)


def assert_complete(path, n):
    """`path` loads as numbered_checkpoint(k, n) exactly, for some k; returns k."""
    loaded = fa.load(path)
    k = loaded["epoch"]
    assert_same(loaded, numbered_checkpoint(k, n))
    return k


def test_full_disk_leaves_the_old_checkpoint(tmp_path):
    path, probe = tmp_path / "ckpt.npz", tmp_path / "probe.npz"
    fa.save(probe, numbered_checkpoint(1, 10_000))
    size = probe.stat().st_size
    probe.unlink()
    fa.save(path, numbered_checkpoint(0, 10_000))
    old = path.read_bytes()
    # the limit hits: at once, in the structure, in an array, in the central directory
    for limit in (0, 100, 2000, size // 2, size - 100, size - 1):
        proc = child(SAVE_UNDER_A_FILE_SIZE_LIMIT, path, limit)
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0 and out.split() == ["failed", "27"], (limit, out)  # EFBIG
        assert path.read_bytes() == old
        assert assert_complete(path, 10_000) == 0
        assert os.listdir(tmp_path) == ["ckpt.npz"]       # the temporary file was removed


def test_kill_9_at_random_moments_leaves_a_complete_checkpoint(tmp_path):
    path = tmp_path / "ckpt.npz"
    fa.save(path, numbered_checkpoint(0, N))
    delays = random.Random(20261201)
    kills, torn_writes, seen = 15, 0, set()
    for _ in range(kills):
        proc = child(SAVE_FOREVER, path, N)
        assert proc.stdout.readline() == "ready\n"
        time.sleep(delays.uniform(0.0, 0.5))
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
        assert proc.returncode == -signal.SIGKILL
        seen.add(assert_complete(path, N))
        leftovers = [name for name in os.listdir(tmp_path) if name != "ckpt.npz"]
        assert all(TEMPORARY.fullmatch(name) for name in leftovers), leftovers
        torn_writes += bool(leftovers)
        for name in leftovers:
            os.unlink(tmp_path / name)
    print(f"{kills} kills, {torn_writes} in the middle of a write, epochs seen {sorted(seen)}")
    assert torn_writes >= kills // 3      # the kills did land inside saves
