"""Every public op (fastad.ops.REGISTRY, which fastad's namespace is built from) is driven
by each table of tests: the op table (gradients against finite differences and PyTorch),
the layout tests, the bad-input table and the reliability campaign. An op added to the
registry fails here until each table has a row for it, or an entry below saying why it
needs none. (test_layouts.py derives its op cases from every row of the op table,
test_bad_input.py its generic cases from every row that records one op, and every row
is a consumer in the campaign's fan-out family.)

A table "drives" an op when its source calls `fa.<op>` or `F.<op>`, names it in a case's
code string, or spells the operator that stands for it (`a + b` for add, `x[i]` for
getitem, ...).
"""
import ast
import pathlib
import re

import pytest

from fastad.ops import REGISTRY

TESTS = pathlib.Path(__file__).resolve().parent
OPERATORS = {ast.Add: "add", ast.Sub: "sub", ast.Mult: "mul", ast.Div: "div", ast.Pow: "pow",
             ast.MatMult: "matmul", ast.USub: "neg"}
NOT_NEEDED = {
    "_op_table.py": {"argmax": "no gradient: tests of its own in test_ops.py"},
}


def ops_driven_by(source):
    """The public ops a test module's source drives (see the module docstring)."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute) and getattr(node.value, "id", None) in ("fa", "F"):
            found.add(node.attr)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            found |= set(re.findall(r"\bfa\.(\w+)", node.value))
            found.add(node.value)  # a key of an op table, e.g. UNARY = {"exp": ...}
        elif isinstance(node, (ast.BinOp, ast.UnaryOp)) and type(node.op) in OPERATORS:
            found.add(OPERATORS[type(node.op)])
        elif isinstance(node, ast.Subscript):
            found.add("getitem")
    return found & set(REGISTRY)


@pytest.mark.parametrize("table", sorted(NOT_NEEDED))
def test_every_public_op_has_a_row_in_each_table(table):
    driven = ops_driven_by((TESTS / table).read_text())
    missing = set(REGISTRY) - driven - set(NOT_NEEDED[table])
    assert not missing, f"{table} has no row for {sorted(missing)}"


def test_the_coverage_check_notices_a_missing_op():
    assert ops_driven_by("fa.exp(x); a + b; F.softmax(x); Case('c', 'fa.stack([a])')") == \
        {"exp", "add", "softmax", "stack"}
    assert "maximum" not in ops_driven_by("fa.exp(x)")
