"""fastad's type stubs: `mypy --strict` passes on a user script written with the README's
API, and the stubs declare every public name (so they cannot drift silently).

The stubs (fastad/__init__.pyi, data.pyi, nn/__init__.pyi, nn/utils.pyi,
optim/__init__.pyi, optim/lr_scheduler.pyi) and the py.typed marker ship in the wheel.
mypy checks the script against copies of the stubs of the fastad under test in a
temporary folder, so it sees the stubs alone (never the untyped .py modules), and
reports errors in the stubs themselves too.
"""
import ast
import pathlib
import subprocess
import sys

import pytest

import fastad as fa

PACKAGE = pathlib.Path(fa.__file__).resolve().parent
STUBS = ["__init__.pyi", "data.pyi", "nn/__init__.pyi", "nn/utils.pyi", "optim/__init__.pyi",
         "optim/lr_scheduler.pyi"]

USER_SCRIPT = '''
import numpy as np
from numpy.typing import NDArray

import fastad as fa
from fastad import nn


def tour() -> float:
    rng = np.random.default_rng(0)
    X = rng.standard_normal((128, 64)).astype(np.float32)
    y = rng.integers(0, 10, 128)
    w1 = fa.Parameter(rng.normal(0, 0.1, (64, 32)), dtype=np.float32)
    b1 = fa.Parameter(np.zeros(32), dtype=np.float32)
    w2 = fa.Parameter(rng.normal(0, 0.1, (32, 10)), dtype=np.float32)
    b2 = fa.Parameter(np.zeros(10), dtype=np.float32)
    x = fa.tensor(X)
    h = fa.sigmoid(fa.dot(x, w1) + b1)
    logits = h @ w2 + b2
    loss = -fa.mean(fa.log(fa.softmax(logits))[np.arange(128), y])
    gw1, gb1 = fa.grad(loss, [w1, b1])
    gw2 = fa.grad(loss, w2)
    loss.backward()
    assert w1.grad is not None and gw2.shape == (32, 10)
    extra = fa.mse_loss(h, np.zeros((128, 32), np.float32)) + logits.clip(-5, 5).softmax(1).max()
    extra = extra + fa.stack([b1, fa.maximum(b1, 0.0)]).sum() + h.log1p().mean(axis=(0, 1))
    with fa.no_grad():
        w1 -= 0.1 * w1.grad
    return loss.item() + float(fa.cross_entropy(logits, y, reduction="sum")) + extra.item()


@fa.no_grad
def accuracy(model: nn.Module, x: NDArray[np.float32], y: NDArray[np.int64]) -> float:
    return float(np.mean(fa.argmax(model(x), axis=1) == y))


def train() -> float:
    rng = np.random.default_rng(0)
    model = nn.Sequential(nn.Linear(64, 32, rng=rng), nn.ReLU(), nn.Linear(32, 10, rng=rng))
    opt = fa.optim.Adam(model.parameters(), lr=1e-3)
    sched = fa.optim.lr_scheduler.StepLR(opt, step_size=10)
    x = rng.standard_normal((50, 64)).astype(np.float32)
    y = rng.integers(0, 10, 50)
    criterion = nn.CrossEntropyLoss()
    model.train()
    for xb, yb in fa.data.DataLoader(x, y, batch_size=10, shuffle=True, rng=rng):
        opt.zero_grad()
        loss = criterion(model(xb), yb)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), max_norm=1.0)
        opt.step()
        sched.step()
    model.eval()
    fa.save("model.npz", model.state_dict())
    model.load_state_dict(fa.load("model.npz"))
    return accuracy(model, x, y)
'''


def stub_names(tree):
    """Names a stub module defines at its top level (public or not)."""
    names = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.ImportFrom):
            names.update(alias.asname for alias in node.names if alias.asname == alias.name)
    return names


def class_members(tree, name):
    (cls,) = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == name]
    return ({n.name for n in cls.body if isinstance(n, ast.FunctionDef)}
            | {n.target.id for n in cls.body if isinstance(n, ast.AnnAssign)})


def parse(stub):
    return ast.parse((PACKAGE / stub).read_text())


def test_the_package_is_typed():
    for stub in STUBS + ["py.typed"]:
        assert (PACKAGE / stub).is_file(), f"fastad/{stub} is missing ({PACKAGE})"


@pytest.mark.parametrize("stub,module", [
    ("__init__.pyi", fa), ("data.pyi", fa.data), ("nn/__init__.pyi", fa.nn),
    ("nn/utils.pyi", fa.nn.utils), ("optim/__init__.pyi", fa.optim),
    ("optim/lr_scheduler.pyi", fa.optim.lr_scheduler)])
def test_stub_declares_every_public_name(stub, module):
    missing = set(module.__all__) - stub_names(parse(stub))
    assert not missing, f"fastad/{stub} lacks {sorted(missing)}: declare them"


# dunders every class has, or that are no part of the typed API
NOT_API = {"__init__", "__new__", "__repr__", "__str__", "__array_function__", "__reduce__",
           "__reduce_ex__", "__reduce_cython__", "__setstate__", "__setstate_cython__",
           "__getattribute__", "__setattr__", "__delattr__", "__init_subclass__",
           "__subclasshook__", "__dir__", "__format__", "__sizeof__", "__getstate__"}


def test_stub_declares_every_tensor_attribute():
    own = {n for n in vars(fa.Tensor) if n not in NOT_API and not n.startswith("_")
           or n.startswith("__") and n.endswith("__") and n not in NOT_API
           and callable(getattr(fa.Tensor, n))}
    missing = own - class_members(parse("__init__.pyi"), "Tensor")
    assert not missing, f"fastad/__init__.pyi: Tensor lacks {sorted(missing)}"


def test_stub_declares_nothing_that_does_not_exist():
    tree = parse("__init__.pyi")
    extra = {n for n in stub_names(tree) if not n.startswith("_")} - set(dir(fa))
    assert not extra, f"fastad/__init__.pyi declares {sorted(extra)}, which fastad lacks"
    methods = {n for n in class_members(tree, "Tensor") if not n.startswith("_")}
    extra = methods - set(dir(fa.Tensor))
    assert not extra, f"fastad/__init__.pyi: Tensor declares {sorted(extra)}, which it lacks"


def test_mypy_strict_passes_on_a_user_script(tmp_path):
    pytest.importorskip("mypy")
    stubs = tmp_path / "stubs" / "fastad"
    stubs.mkdir(parents=True)
    for stub in STUBS + ["py.typed"]:
        (stubs / stub).parent.mkdir(parents=True, exist_ok=True)
        (stubs / stub).write_bytes((PACKAGE / stub).read_bytes())
    script = tmp_path / "user.py"
    script.write_text(USER_SCRIPT)
    proc = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", "--cache-dir",
         str(tmp_path / "cache"), "--python-executable", sys.executable, str(script)],
        cwd=tmp_path, env={"MYPYPATH": str(tmp_path / "stubs"), "PATH": "/usr/bin:/bin"},
        capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
