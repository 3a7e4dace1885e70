"""Resuming from a checkpoint of model, Adam, StepLR, the data order's generator and the
epoch, in a new process, continues training bit for bit."""
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

import fastad as fa

TESTS = str(pathlib.Path(__file__).resolve().parent)
sys.path.insert(0, TESTS)

import _kit_training  # noqa: E402

RESUME = """
import sys
sys.path.insert(0, sys.argv[1])
import _kit_training
_kit_training.resume(sys.argv[2], int(sys.argv[3]), sys.argv[4])
"""


def test_resume_in_a_new_process_is_bit_identical(tmp_path):
    first, total = 2, 4  # epochs (7 batches each, the last one short)
    uninterrupted = _kit_training.fresh_run(seed=0)
    _kit_training.train(uninterrupted, total)

    interrupted = _kit_training.fresh_run(seed=0)
    _kit_training.train(interrupted, first)
    _kit_training.checkpoint(tmp_path / "ckpt.npz", interrupted, epoch=first)
    proc = subprocess.run([sys.executable, "-c", RESUME, TESTS, str(tmp_path / "ckpt.npz"),
                           str(total), str(tmp_path / "resumed.npz")],
                          capture_output=True, text=True, timeout=300, env=dict(os.environ),
                          cwd=TESTS)  # `python -c` puts its working directory on sys.path
    assert proc.returncode == 0, proc.stderr[-3000:]

    resumed = fa.load(tmp_path / "resumed.npz")
    expected = uninterrupted[0].state_dict()
    assert list(resumed) == list(expected)
    for name, value in expected.items():
        np.testing.assert_array_equal(resumed[name], value, err_msg=name)
    # The run changed the weights, and the checkpoint alone is not the answer.
    assert not np.array_equal(interrupted[0].state_dict()["0.weight"], expected["0.weight"])
    assert uninterrupted[1].lr == pytest.approx(0.02 * 0.7 ** total)  # StepLR stepped
