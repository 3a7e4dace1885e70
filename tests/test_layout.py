"""Guards that keep the compiled form safe to work on (the tape's modules are plain
Python that setup.py also compiles, with a .pxd beside each):

- every .pxd agrees with its .py: a cdef class's fields are the class's __slots__, a
  cpdef declaration has the parameters of the .py function, and a cimport names
  something the other .pxd declares;
- a vjp that breaks the return contract (a tuple, one entry per input) is named, in
  the interpreted and the compiled sweep alike;
- in a source checkout, `import fastad` refuses a compiled module older than its .py;
- the core imports no op, and the core's modules import each other without a circle.

Each checker is also run once on a deliberate mistake, to show it would notice.
"""
import ast
import os
import pathlib
import re
import time

import numpy as np
import pytest

import fastad as fa
from fastad._stale import refuse_stale_builds
from fastad.core.tape import record, vjp_of

SOURCE = pathlib.Path(__file__).resolve().parent.parent / "fastad"
PXD_FILES = sorted(SOURCE.rglob("*.pxd"))
pytestmark = pytest.mark.skipif(not PXD_FILES, reason="needs the source tree's .pxd files")


# --- .pxd against .py ---------------------------------------------------------------

def pxd_classes(text):
    """{class name: set of its cdef fields} in a .pxd's text."""
    classes, current = {}, None
    for line in text.splitlines():
        if match := re.match(r"cdef class (\w+)", line):
            current = classes.setdefault(match.group(1), set())
        elif current is not None and (match := re.match(r"    cdef (?:public )?(.*)", line)):
            names = match.group(1).split(" ", 1)[1] if " " in match.group(1) else ""
            current.update(n.strip() for n in names.split(","))
        elif line and not line.startswith(" "):
            current = None
    return classes


def py_slots(source):
    """{class name: set of its __slots__} in a .py's text."""
    slots = {}
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ClassDef):
            for item in node.body:
                if (isinstance(item, ast.Assign) and item.targets[0].id == "__slots__"):
                    slots[node.name] = set(ast.literal_eval(item.value))
    return slots


def pxd_cpdefs(text):
    """{function name: [(parameter, has default)]} for the module-level cpdefs."""
    found = {}
    for match in re.finditer(r"^cpdef (?:[\w.]+ )?(\w+)\(([^)]*)\)", text, re.M):
        params = [p.strip() for p in match.group(2).split(",") if p.strip()]
        found[match.group(1)] = [(p.split("=")[0].split()[-1], "=" in p) for p in params]
    return found


def py_functions(source):
    """{function name: [(parameter, has default)]} for the module-level defs."""
    found = {}
    for node in ast.parse(source).body:
        if isinstance(node, ast.FunctionDef):
            args = node.args.args
            first_default = len(args) - len(node.args.defaults)
            found[node.name] = [(a.arg, i >= first_default) for i, a in enumerate(args)]
    return found


def mismatches(pxd_text, py_text):
    """What a .pxd declares that its .py does not define the same way."""
    problems = []
    slots = py_slots(py_text)
    for name, fields in pxd_classes(pxd_text).items():
        if fields != slots.get(name):
            problems.append(f"class {name}: .pxd fields {sorted(fields)} != __slots__ "
                            f"{sorted(slots.get(name) or [])}")
    functions = py_functions(py_text)
    for name, params in pxd_cpdefs(pxd_text).items():
        if functions.get(name) != params:
            problems.append(f"cpdef {name}{params} != def {name}{functions.get(name)}")
    return problems


def cimport_problems(pxd_text):
    """cimports of names the other module's .pxd does not declare."""
    problems = []
    for match in re.finditer(r"^from fastad\.([\w.]+) cimport (.+)$", pxd_text, re.M):
        other = (SOURCE / match.group(1).replace(".", "/")).with_suffix(".pxd").read_text()
        declared = set(pxd_cpdefs(other)) | set(pxd_classes(other))
        for name in (n.split(" as ")[0].strip() for n in match.group(2).split(",")):
            if name not in declared:
                problems.append(f"cimports {name} from fastad.{match.group(1)}, which does "
                                "not declare it")
    return problems


@pytest.mark.parametrize("pxd", PXD_FILES, ids=lambda p: str(p.relative_to(SOURCE)))
def test_every_pxd_agrees_with_its_py(pxd):
    text = pxd.read_text()
    assert not mismatches(text, pxd.with_suffix(".py").read_text())
    assert not cimport_problems(text)


def test_the_pxd_checks_notice_a_mistake():
    py = "class Node:\n    __slots__ = ('vjp', 'index')\n\ndef helper(a, b=1):\n    pass\n"
    good = ("cdef class Node:\n    cdef public object vjp\n    cdef public Py_ssize_t index\n"
            "\n\ncpdef helper(a, b=*)\n")
    assert mismatches(good, py) == []
    assert mismatches(good.replace("object vjp", "object vjp, extra"), py)
    assert mismatches(good.replace("helper(a, b=*)", "helper(a, c=*)"), py)
    assert mismatches(good.replace("helper(a, b=*)", "helper(a, b)"), py)
    assert cimport_problems("from fastad.ops.protocol cimport contribute, no_such_helper\n")


# --- the vjp return contract -----------------------------------------------------------

@vjp_of("listy")
def _listy_vjp(g, saved, out):
    return [g]  # a list: the contract says a tuple


def test_a_vjp_breaking_the_return_contract_is_named():
    x = fa.tensor(np.ones(3), requires_grad=True)
    y = record(_listy_vjp, x.value * 2, (x,))
    with pytest.raises(TypeError, match="vjp of 'listy' returned list"):
        fa.grad(fa.sum(y), x)


# --- stale compiled modules ---------------------------------------------------------------

def test_a_compiled_module_older_than_its_py_is_refused(tmp_path):
    package = tmp_path / "fastad"
    (package / "ops").mkdir(parents=True)
    (tmp_path / "setup.py").write_text("")
    compiled = package / "ops" / "arithmetic.so"
    source = package / "ops" / "arithmetic.py"
    source.write_text("")
    compiled.write_text("")
    refuse_stale_builds(package, (".so",))  # built after the edit: fine
    later = time.time() + 10
    os.utime(source, (later, later))
    with pytest.raises(ImportError, match=r"fastad/ops/arithmetic\.py changed after"):
        refuse_stale_builds(package, (".so",))
    (tmp_path / "setup.py").unlink()  # an installed package is never checked
    refuse_stale_builds(package, (".so",))


# --- imports -----------------------------------------------------------------------------

def imports_of(path):
    """The fastad modules `path` imports, as dotted names relative to the package."""
    package = path.parent.relative_to(SOURCE.parent).as_posix().replace("/", ".")
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
            found.add(f"{base}.{node.module}" if node.module else base)
    return found


def test_the_core_imports_no_op_and_has_no_import_circle():
    modules = {p: imports_of(p) for p in (SOURCE / "core").glob("*.py")}
    for path, imported in modules.items():
        assert not {m for m in imported if not m.startswith(("fastad.core", "fastad.kernels"))}, \
            f"{path.name} imports from above the core: {imported}"
    graph = {f"fastad.core.{p.stem}": {m for m in imported if m.startswith("fastad.core.")}
             for p, imported in modules.items()}
    done = set()

    def visit(module, path):
        assert module not in path, f"import circle: {' -> '.join([*path, module])}"
        if module not in done:
            for other in graph.get(module, ()):
                visit(other, [*path, module])
            done.add(module)

    for module in graph:
        visit(module, [])


def test_no_generated_c_beside_the_sources():
    assert not [p for p in SOURCE.rglob("*.c")], "Cython's C belongs under build/"


def test_every_package_is_installed():
    """pyproject.toml lists every package under fastad/: a non-editable install (pip
    install ., a wheel) copies only those, so a missing one fails `import fastad` there
    while the source checkout hides it."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    listed = set(tomllib.loads((SOURCE.parent / "pyproject.toml").read_text())
                 ["tool"]["setuptools"]["packages"])
    found = {".".join(("fastad", *init.parent.relative_to(SOURCE).parts))
             for init in SOURCE.rglob("__init__.py")}
    assert found == listed
