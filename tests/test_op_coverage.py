"""Every public op (fastad.ops.REGISTRY, which fastad's namespace is built from) has a row
in the op table, tests/_op_table.py, which every table of op tests is built from:
test_ops.py checks each row against finite differences, PyTorch and NumPy, and
test_layouts.py, test_bad_input.py and the reliability campaign derive their op cases
from the rows. An op added to the registry fails here until it has a row, or an entry
in NO_ROW saying why it has none; with its row it is in every table.

A row drives the op whose name its result remembers (`row.op`) and every fastad function
it calls through `F` (`F.dot` drives dot, whose result remembers matmul).
"""
import dataclasses

import numpy as np
import pytest

import fastad as fa
from _op_table import NO_ROW, OPS, NumpyOps, missing_rows, ops_covered, record
from fastad.ops import REGISTRY


def test_every_public_op_has_a_row():
    missing = missing_rows(OPS, REGISTRY)
    assert not missing, f"tests/_op_table.py has no row for {sorted(missing)}"


def test_ops_without_a_row_are_public_ops_that_have_none():
    assert set(NO_ROW) <= set(REGISTRY), "NO_ROW names an op fastad does not have"
    assert not set(NO_ROW) & ops_covered(OPS), "NO_ROW names an op that has a row"
    assert all(NO_ROW.values()), "each op in NO_ROW needs a reason"


@pytest.mark.parametrize("op", sorted(set(REGISTRY) - set(NO_ROW)))
def test_the_check_reports_a_removed_row(op):
    """A copy of the table without the rows that drive `op` is reported as missing it."""
    remaining = [row for row in OPS if op not in ops_covered([row])]
    assert len(remaining) < len(OPS)
    assert op in missing_rows(remaining, REGISTRY)


def test_the_check_reports_a_new_op():
    assert missing_rows(OPS, {**REGISTRY, "an_op_with_no_row": np.sin}) == {"an_op_with_no_row"}


# --- the campaign's unary family: every elementwise op has a reference vjp ---------------------

def _alone_on_its_input(row):
    """Whether the row is F.<row.op>(x) and nothing else."""
    if len(row.shapes) != 1:
        return False
    x = fa.Parameter(row.inputs(np.random.default_rng(0), np.float64)[0])
    calls = record(row, [x])[0].calls
    return len(calls) == 1 and calls[0][0] == row.op and len(calls[0][1]) == 1 \
        and calls[0][1][0] is x and not calls[0][2]


def _elementwise(row):
    """Whether NumPy's value of the row is one function of each element alone: it has
    the input's shape, commutes with shuffling the elements, and changing one element
    changes that element's value only (softmax of a vector commutes, but spreads)."""
    rng = np.random.default_rng(0)
    (x,) = row.inputs(rng, np.float64)
    if x.size < 2:
        return False
    order = rng.permutation(x.size)
    moved = x.copy()
    moved.reshape(-1)[0] *= 1.25
    y, shuffled, changed = (np.asarray(row.build(NumpyOps, v)).reshape(-1) for v in
                            (x, x.reshape(-1)[order].reshape(x.shape), moved))
    return y.size == x.size and np.allclose(shuffled, y[order]) and \
        np.array_equal(changed[1:], y[1:])


def ops_lacking_a_vjp(rows):
    """The ops of rows that apply them alone, elementwise, to one input (unary
    elementwise ops) of which no row has a reference vjp for the campaign."""
    unary = {row.op for row in rows if _alone_on_its_input(row) and _elementwise(row)}
    return unary - {row.op for row in rows if row.vjp is not None}


def test_every_unary_elementwise_op_is_in_the_campaign():
    """A unary elementwise op joins the campaign's unary family (any data, NaN and Inf
    included) through a row with a reference vjp."""
    lacking = ops_lacking_a_vjp(OPS)
    assert not lacking, f"no row of {sorted(lacking)} has a reference vjp"


def test_the_vjp_check_reports_a_removed_vjp():
    stripped = [dataclasses.replace(row, vjp=None) if row.op == "tanh" else row for row in OPS]
    assert ops_lacking_a_vjp(stripped) == {"tanh"}
    assert "softmax" not in ops_lacking_a_vjp([r for r in OPS if r.op == "softmax"])
