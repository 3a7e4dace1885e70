"""The README's tour runs as written, and its claims about it hold."""
import pathlib
import re

import numpy as np

README = pathlib.Path(__file__).resolve().parent.parent / "README.md"


def test_the_tour_runs_and_backward_matches_grad():
    tour = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)[0]
    names = {}
    exec(compile(tour, "README.md tour", "exec"), names)
    for param, grad in [("w1", "gw1"), ("b1", "gb1"), ("w2", "gw2"), ("b2", "gb2")]:
        np.testing.assert_allclose(names[param].grad, names[grad], rtol=1e-6, atol=1e-7)
        assert names[grad].dtype == np.float32
