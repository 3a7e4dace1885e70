"""Every ```python block in README.md runs as written, so the README cannot rot.

The blocks run section by section (a section is the text under one `#`-heading, at any
level), in the README's order: the blocks of one section share one fresh namespace, as
a reader would type them into one session, and nothing carries over from one section to
the next. They run in a temporary directory (the training example writes checkpoint.npz).
Shell (```bash) blocks and untagged blocks (directory trees) are not run. Some sections
also get checks of what their text claims about the code. Sections whose code changes
process-wide state (MPI's initialization, BLAS threads) run in a child interpreter
instead, which imports the same fastad (cwd is the temporary directory, so never the
source tree).
"""
import os
import pathlib
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import fastad as fa

README = pathlib.Path(__file__).resolve().parent.parent / "README.md"
FENCE = re.compile(r"^(\s*)```(\S*)\s*$")


def python_sections(text):
    """[(heading, [block, ...])] for every section holding a ```python block, in order."""
    sections, heading, block, indent, language = {}, "(top)", None, "", ""
    for number, line in enumerate(text.splitlines(), 1):
        fence = FENCE.match(line)
        if block is None:
            if fence:
                block, indent, language = [], fence.group(1), fence.group(2)
                start = number
            elif line.startswith("#"):
                heading = line.lstrip("#").strip()
        elif fence and not fence.group(2) and fence.group(1) == indent:
            if language == "python":
                # blank lines before the code keep tracebacks on the README's line numbers
                code = "\n" * start + textwrap.dedent("\n".join(block))
                sections.setdefault(heading, []).append(code)
            block = None
        else:
            block.append(line)
    assert block is None, "README.md: a code block is not closed"
    return list(sections.items())


SECTIONS = python_sections(README.read_text())


def test_every_python_block_is_found():
    """The parser sees every ```python fence, indented ones (inside lists) included."""
    found = sum(len(blocks) for _, blocks in SECTIONS)
    assert found == len(re.findall(r"^\s*```python\s*$", README.read_text(), re.M))
    assert found >= 3


def run_section(heading):
    names = {"__name__": "__readme__"}
    for code in dict(SECTIONS)[heading]:
        exec(compile(code, f"README.md ({heading})", "exec"), names)
    return names


# Checks of a section's claims, run after its blocks; sections without one just run.
def check_tour(names):
    for param, grad in [("w1", "gw1"), ("b1", "gb1"), ("w2", "gw2"), ("b2", "gb2")]:
        np.testing.assert_allclose(names[param].grad, names[grad], rtol=1e-6, atol=1e-7)
        assert names[grad].dtype == np.float32


def check_training(names):
    """The checkpoint holds what the README says, and the resumed run ends with the
    weights of five uninterrupted epochs, bit for bit."""
    assert 0 <= names["accuracy"] <= 1
    saved = fa.load("checkpoint.npz")
    assert sorted(saved) == ["epoch", "model", "optim", "rng", "sched"]
    assert sorted(saved["model"]) == ["0.bias", "0.weight", "3.bias", "3.weight"]
    rng = np.random.default_rng(0)
    rng.standard_normal((600, 64))  # the section's data draws, in its order
    rng.integers(0, 10, 600)
    model, opt, sched, loader = names["make"](rng)
    for _ in range(5):
        names["train_epoch"](model, opt, sched, loader)
    resumed = names["model"].state_dict()
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(resumed[key], value)


def check_adding_an_op(names):
    x = fa.Parameter(np.array([1.0, -2.0, 3.0]))
    y = names["square"](x)
    np.testing.assert_array_equal(y.value, fa.square(x).value)
    np.testing.assert_array_equal(fa.grad(fa.sum(y), x), [2.0, -4.0, 6.0])


CHECKS = {"A tour": check_tour, "Training": check_training, "Adding an op": check_adding_an_op}
# heading -> modules the section needs beyond fastad's own dependencies; run in a child
IN_A_CHILD = {"Distributed training": ["mpi4py"]}


@pytest.mark.parametrize("heading", [heading for heading, _ in SECTIONS])
def test_readme_section_runs(heading, tmp_path, monkeypatch):
    from fastad.ops import REGISTRY

    monkeypatch.chdir(tmp_path)
    if heading in IN_A_CHILD:
        for module in IN_A_CHILD[heading]:
            pytest.importorskip(module)
        code = "\n".join(code.lstrip("\n") for code in dict(SECTIONS)[heading])
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        path = os.pathsep.join(p for p in sys.path if p)  # the fastad this test imports
        proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, timeout=600,
                              env={**env, "PYTHONPATH": path}, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return
    registered = dict(REGISTRY)  # "Adding an op" registers its example op again
    try:
        names = run_section(heading)
        CHECKS.get(heading, lambda names: None)(names)
    finally:
        REGISTRY.clear()
        REGISTRY.update(registered)


def test_every_check_has_its_section():
    assert set(CHECKS) <= {heading for heading, _ in SECTIONS}
