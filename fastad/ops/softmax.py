"""softmax and log_softmax along one axis, in compiled row kernels."""
import numpy as np

from ..core.tape import record, vjp_of
from ..core.operands import as_tensor
from ..kernels import rows
from .protocol import contribute, contiguous, kernel_out, normalize_axis, public


def _rowwise(kernel, x, axis):
    """Apply a last-axis kernel along `axis` of x."""
    if axis == x.ndim - 1:
        x = contiguous(x)
        y = np.empty(x.shape, x.dtype)
        kernel(x, y)
        return y
    moved = contiguous(np.moveaxis(x, axis, -1))
    y = np.empty(moved.shape, moved.dtype)
    kernel(moved, y)
    return np.moveaxis(y, -1, axis)


def _rowwise_grad(kernel, out, g, y, axis):
    """Accumulate a last-axis backward kernel's contribution along `axis`."""
    if axis == y.ndim - 1 and y.flags.c_contiguous:
        buffer, accumulate = kernel_out(out, y.shape, y.dtype)
        kernel(contiguous(g), y, buffer, accumulate)
        return buffer
    moved_y = contiguous(np.moveaxis(y, axis, -1))
    result = np.empty(moved_y.shape, y.dtype)
    kernel(contiguous(np.moveaxis(g, axis, -1)), moved_y, result, False)
    return contribute(out, np.moveaxis(result, -1, axis))


@public
def softmax(x, axis=-1):
    """exp(x) / sum(exp(x)) along `axis` (max subtracted first)."""
    x = as_tensor("softmax", x)
    axis = normalize_axis("softmax", axis, x.ndim)
    y = _rowwise(rows.softmax, x.value, axis)
    result = record(softmax_vjp, y, (x,), (y, axis))
    # For log(): the logits, cut from the graph if this softmax itself was not recorded.
    result._origin = (x if result._node is not None else x.detach(), axis)
    return result


@vjp_of("softmax")
def softmax_vjp(g, saved, out):
    y, axis = saved
    return (_rowwise_grad(rows.softmax_grad, out[0], g, y, axis),)


@public
def log_softmax(x, axis=-1):
    """x - logsumexp(x) along `axis`, stable for any logits."""
    x = as_tensor("log_softmax", x)
    axis = normalize_axis("log_softmax", axis, x.ndim)
    y = _rowwise(rows.log_softmax, x.value, axis)
    return record(log_softmax_vjp, y, (x,), (y, axis))


@vjp_of("log_softmax")
def log_softmax_vjp(g, saved, out):
    y, axis = saved
    return (_rowwise_grad(rows.log_softmax_grad, out[0], g, y, axis),)
