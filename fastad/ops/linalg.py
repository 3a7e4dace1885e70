"""Matrix products: 2-D products through BLAS (the orientation policy lives here),
NumPy's matmul for 1-D and batched operands."""
import builtins

import numpy as np

from ..core.tape import SKIP, record, vjp_of
from ..core.tensor import operands
from ..kernels import gemm
from .protocol import contribute, kernel_out, order_of, public, sum_to


_BLAS_MAX = 2 ** 31 - 1


def _blas_ready(m):
    """m as an operand BLAS reads without a copy: C- or F-contiguous."""
    if m.flags.c_contiguous or m.flags.f_contiguous:
        return m
    return np.ascontiguousarray(m)


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
    if a.shape[1] == 0:
        if not accumulate:
            buffer.fill(0)
    elif buffer.size and order == "F":  # out^T = b^T a^T, a C-contiguous product
        gemm.gemm(_blas_ready(b.T), _blas_ready(a.T), buffer.T, accumulate)
    elif buffer.size:
        gemm.gemm(_blas_ready(a), _blas_ready(b), buffer, accumulate)
    return buffer


def _product_order(rows, inner, cols):
    """Memory order for a new product. Against a large weight, OpenBLAS packs much less
    when the short side is its M dimension: a batch of 128 against a 16384 x 5000 weight
    runs up to 2x faster written column-major. For small weights (the 784 x 256 of a
    small MLP) it gains nothing, and the column-major gradients that follow made the
    backward's products slower (bench/small_mlp.py: 1.27 ms per step C, 1.67 ms F)."""
    return "F" if rows < cols and inner * cols >= 1 << 20 else "C"


def _check_matmul(a, b):
    if a.ndim == 0 or b.ndim == 0:
        raise ValueError(f"matmul: operands must be at least 1-d, got shapes {a.shape} "
                         f"and {b.shape}")
    inner_b = b.shape[0] if b.ndim == 1 else b.shape[-2]
    if a.shape[-1] != inner_b:
        raise ValueError(f"matmul: inner dimensions differ: shapes {a.shape} and {b.shape}")


def _fits_blas(a, b):
    return (a.ndim == 2 and b.ndim == 2
            and builtins.max(a.shape + b.shape) <= _BLAS_MAX)


@public
def matmul(a, b):
    """Matrix product with NumPy matmul semantics (1-D, 2-D and batched N-D)."""
    av, bv, ta, tb = operands("matmul", a, b)
    if type(av) is not np.ndarray or type(bv) is not np.ndarray:
        av, bv = np.asarray(av), np.asarray(bv)  # NumPy scalars, which _check_matmul refuses
    _check_matmul(av, bv)
    if _fits_blas(av, bv):
        av, bv = _blas_ready(av), _blas_ready(bv)
        value = _gemm(None, av, bv, _product_order(*av.shape, bv.shape[1]))
    else:
        try:
            value = np.matmul(av, bv)
        except ValueError:
            raise ValueError(f"matmul: batch shapes of {av.shape} and {bv.shape} do not "
                             "broadcast together") from None
    return record(matmul_vjp, value, (ta, tb), (av, bv))


dot = public(matmul, "dot")


@vjp_of("matmul")
def matmul_vjp(g, saved, out):
    a, b = saved
    if _fits_blas(a, b):
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
