"""Tests that start `python -c ...` children run them from the tests folder: `-c` puts the
working directory first on sys.path, and from the repository root the child would import
the uncompiled source tree instead of the installed fastad (CI runs from the root)."""
import ast
import pathlib

TESTS = pathlib.Path(__file__).resolve().parent


def children_without_cwd(source):
    """Line numbers of subprocess calls running `python -c` without a cwd= argument."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr in ("run", "Popen", "check_output", "call")
                and node.args and "'-c'" in ast.unparse(node.args[0])
                and not any(k.arg == "cwd" for k in node.keywords)):
            lines.append(node.lineno)
    return lines


def test_every_python_c_child_runs_from_the_tests_folder():
    found = {path.name: lines for path in TESTS.rglob("*.py")
             if (lines := children_without_cwd(path.read_text()))}
    assert not found, f"python -c children without cwd= (file: lines): {found}"


def test_the_check_notices_a_child_without_cwd():
    assert children_without_cwd("subprocess.run([sys.executable, '-c', code])") == [1]
    assert children_without_cwd("subprocess.run([sys.executable, '-c', code], cwd=H)") == []
