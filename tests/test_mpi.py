"""fastad.distributed under real MPI: the scripts in tests/mpi/ run as
`mpiexec -n N python -m mpi4py script.py` (skipped without mpi4py or mpiexec; a timeout
turns a hang into a failure)."""
import os
import pathlib
import shutil
import subprocess
import sys
import sysconfig
import time

import pytest

SCRIPTS = pathlib.Path(__file__).resolve().parent / "mpi"


def _mpiexec():
    for where in (sysconfig.get_path("scripts"), os.path.dirname(sys.executable)):
        found = shutil.which("mpiexec", path=where)
        if found:
            return found
    return shutil.which("mpiexec")


try:
    import mpi4py  # noqa: F401
    MPIEXEC = _mpiexec()
except ImportError:
    MPIEXEC = None

if MPIEXEC is None and os.environ.get("FASTAD_REQUIRE_MPI") == "1":  # CI: never skip
    raise RuntimeError("FASTAD_REQUIRE_MPI=1 but mpi4py or mpiexec is missing")
pytestmark = pytest.mark.skipif(MPIEXEC is None,
                                reason="needs mpi4py and mpiexec (pip install '.[mpi]')")


def run(n, script, timeout):
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    start = time.monotonic()
    try:
        done = subprocess.run([MPIEXEC, "-n", str(n), sys.executable, "-m", "mpi4py",
                               str(SCRIPTS / script)], capture_output=True, text=True,
                              timeout=timeout, env=env, cwd=SCRIPTS)
    except subprocess.TimeoutExpired as error:
        pytest.fail(f"{script} on {n} ranks did not end within {timeout} s (a hang?):\n"
                    f"{error.stdout}\n{error.stderr}")
    return done, time.monotonic() - start


@pytest.mark.parametrize("n", [2, 3])
def test_ranks_train_like_one_process(n):
    done, _ = run(n, "train_equivalence.py", timeout=240)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"OK {n} ranks" in done.stdout


def test_one_rank_raising_ends_the_job():
    done, seconds = run(2, "one_rank_raises.py", timeout=60)
    assert done.returncode != 0
    assert "rank 1 fails in its forward" in done.stderr
    assert seconds < 30, f"the job took {seconds:.0f} s to end"


def test_a_captured_step_keeps_its_communication():
    done, _ = run(2, "capture_equivalence.py", timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "OK 2 ranks" in done.stdout
