"""Matrix products: 2-D products through BLAS (the orientation policy lives here),
NumPy's matmul for 1-D and batched operands; linear, x @ weight.T + bias in one op."""
import builtins
import os
from time import perf_counter

import numpy as np

from ..core.tape import SKIP, record, vjp_of
from ..core.operands import operands
from ..kernels import gemm, pointwise
from .arithmetic import add
from .protocol import (contribute, contribute_reduced, kernel_out, order_of, public,
                       sum_to)


def _gemm(out, a, b, order):
    """out (+)= a @ b through BLAS; the first contribution allocates out in `order`."""
    if a.shape[1] != b.shape[0] or (out is not None and out.shape != (a.shape[0], b.shape[1])):
        # BLAS would read past a buffer: only an array reshaped in place since it was
        # recorded gets here (ops check their operands).
        raise RuntimeError(f"matmul: operand shapes {a.shape} and {b.shape} changed after "
                           "the op was recorded")
    if out is not None:
        order = order_of(out)
    buffer, accumulate = kernel_out(out, (a.shape[0], b.shape[1]), a.dtype, order)
    return gemm_into(buffer, a, b, accumulate, order)


def gemm_into(buffer, a, b, accumulate, order):
    """buffer (+)= a @ b, for a buffer in memory order `order` (fa.capture replays
    recorded products through this)."""
    if a.shape[1] == 0:
        if not accumulate:
            buffer.fill(0)
    elif buffer.size:
        gemm.gemm(a, b, buffer, accumulate, order == "F")
    return buffer


# --- which memory order a new product is written in ---------------------------------------
#
# A short batch against a large weight: how fast OpenBLAS runs it in each order depends on
# the CPU (128 x 16384 @ 16384 x 5000 ran up to 2x faster written column-major on a
# Sapphire Rapids host, 1.25x faster row-major on an AVX2 EPYC). So both orders are timed
# on the first real products of each shape (no extra work: each trial is a product the
# caller asked for) and the faster is kept for the process. Small weights (the 784 x 256
# of a small MLP) stay row-major: column-major gains nothing there, and the column-major
# gradients that follow made the backward's products slower.

ORDER_TRIALS = 2  # products timed in each order before one is chosen
_FORCED_ORDER = os.environ.get("FASTAD_GEMM_ORIENTATION")  # "C" or "F": no measuring
_plans = {}  # (dtype, rows, inner, cols) -> _OrderPlan


class _OrderPlan:
    """The memory order of one shape of product: trials in both, then the faster."""

    def __init__(self):
        self.seconds = {"C": [], "F": []}
        self.choice = None

    def next_trial(self):
        return "C" if len(self.seconds["C"]) <= len(self.seconds["F"]) else "F"

    def record(self, order, seconds):
        self.seconds[order].append(seconds)
        if builtins.min(len(s) for s in self.seconds.values()) >= ORDER_TRIALS:
            self.choice = builtins.min("CF", key=lambda o: builtins.min(self.seconds[o]))


def _product_order(dtype, rows, inner, cols):
    """(memory order for a new rows x cols product, the plan still timing it or None)."""
    if not (rows < cols and inner * cols >= 1 << 20):
        return "C", None
    if _FORCED_ORDER in ("C", "F"):
        return _FORCED_ORDER, None
    plan = _plans.get((dtype, rows, inner, cols))
    if plan is None:
        plan = _plans[(dtype, rows, inner, cols)] = _OrderPlan()
    if plan.choice is not None:
        return plan.choice, None
    return plan.next_trial(), plan


def product_orders():
    """{(dtype, rows, inner, cols): (chosen order or None, {order: trial seconds})} for
    the large products seen so far (bench/ --profile prints it)."""
    return {shape: (plan.choice, dict(plan.seconds)) for shape, plan in _plans.items()}


def _check_matmul(a, b):
    if a.ndim == 0 or b.ndim == 0:
        raise ValueError(f"matmul: operands must be at least 1-d, got shapes {a.shape} "
                         f"and {b.shape}")
    inner_b = b.shape[0] if b.ndim == 1 else b.shape[-2]
    if a.shape[-1] != inner_b:
        raise ValueError(f"matmul: inner dimensions differ: shapes {a.shape} and {b.shape}")


@public
def matmul(a, b):
    """Matrix product with NumPy matmul semantics (1-D, 2-D and batched N-D)."""
    av, bv, ta, tb = operands("matmul", a, b)
    if type(av) is not np.ndarray or type(bv) is not np.ndarray:
        av, bv = np.asarray(av), np.asarray(bv)  # NumPy scalars, which _check_matmul refuses
    _check_matmul(av, bv)
    if gemm.fits_blas(av, bv):
        av, bv = gemm.blas_ready(av), gemm.blas_ready(bv)  # saved for the vjp as BLAS reads them
        value = _product(av, bv)
    else:
        try:
            value = np.matmul(av, bv)
        except ValueError:
            raise ValueError(f"matmul: batch shapes of {av.shape} and {bv.shape} do not "
                             "broadcast together") from None
    return record(matmul_vjp, value, (ta, tb), (av, bv))


dot = public(matmul, "dot")


def _product(a, b):
    """a @ b for two matrices BLAS reads as they are, in the memory order chosen for
    the product's shape (a trial of that choice is timed)."""
    order, plan = _product_order(a.dtype, a.shape[0], a.shape[1], b.shape[1])
    start = perf_counter() if plan is not None else 0.0
    value = _gemm(None, a, b, order)
    if plan is not None:
        plan.record(order, perf_counter() - start)
    return value


@vjp_of("matmul")
def matmul_vjp(g, saved, out):
    a, b = saved
    if gemm.fits_blas(a, b):
        # dA = g @ B^T and dB = A^T @ g: the transposes are BLAS flags, not copies.
        # Each gradient is laid out like its operand, so elementwise kernels downstream
        # see matching memory orders.
        return (_gemm(out[0], g, b.T, order_of(a)) if out[0] is not SKIP else None,
                _gemm(out[1], a.T, g, order_of(b)) if out[1] is not SKIP else None)
    a2 = a[None, :] if a.ndim == 1 else a  # NumPy's promotion of 1-D operands
    b2 = b[:, None] if b.ndim == 1 else b
    g2 = g[..., None] if b.ndim == 1 else g
    g2 = g2[..., None, :] if a.ndim == 1 else g2
    return (contribute(out[0], sum_to(g2 @ np.swapaxes(b2, -1, -2), a2.shape).reshape(a.shape))
            if out[0] is not SKIP else None,
            contribute(out[1], sum_to(np.swapaxes(a2, -1, -2) @ g2, b2.shape).reshape(b.shape))
            if out[1] is not SKIP else None)


# --- linear: x @ weight.T + bias as one op ------------------------------------------------

@public
def linear(x, weight, bias=None):
    """x @ weight.T + bias, as torch.nn.functional.linear: weight is (out_features,
    in_features), bias (out_features,) or None. For a 2-D x it is one recorded op (the
    product, with the bias added into its result); other shapes compose matmul and add."""
    xv, wv, tx, tw = operands("linear", x, weight)
    if wv.ndim != 2:
        raise ValueError(f"linear: weight must be 2-D (out_features, in_features), got "
                         f"shape {wv.shape}")
    if xv.ndim == 0 or xv.shape[-1] != wv.shape[1]:
        raise ValueError(f"linear: input of shape {xv.shape} does not end in "
                         f"in_features={wv.shape[1]} (weight of shape {wv.shape})")
    bv = tb = None
    if bias is not None:
        _, bv, _, tb = operands("linear", tw if tw is not None else wv, bias)
        if bv.shape != (wv.shape[0],):
            raise ValueError(f"linear: bias of shape {bv.shape}, expected "
                             f"({wv.shape[0]},) for weight of shape {wv.shape}")
    if xv.ndim != 2 or not gemm.fits_blas(xv, wv):
        y = matmul(xv if tx is None else tx, (wv if tw is None else tw).T)
        return y if bias is None else add(y, bv if tb is None else tb)
    xv, wv = gemm.blas_ready(xv), gemm.blas_ready(wv)
    value = _product(xv, wv.T)
    if bv is None:
        return record(linear_vjp, value, (tx, tw), (xv, wv))
    if value.flags.c_contiguous and bv.flags.c_contiguous:
        pointwise.add_row(value, bv, value)  # into the product's own buffer
    else:
        np.add(value, bv, out=value)
    return record(linear_vjp, value, (tx, tw, tb), (xv, wv))


@vjp_of("linear")
def linear_vjp(g, saved, out):
    x, w = saved
    # dx = g @ W and dW = g^T @ x (the transposes are BLAS flags), each laid out like its
    # operand; db = the column sums of g
    dx = _gemm(out[0], g, w, order_of(x)) if out[0] is not SKIP else None
    dw = _gemm(out[1], g.T, x, order_of(w)) if out[1] is not SKIP else None
    if len(out) == 2:  # no bias
        return dx, dw
    return dx, dw, contribute_reduced(out[2], g, w.shape[:1]) if out[2] is not SKIP else None
