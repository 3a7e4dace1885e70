"""Losses with integer labels: fused softmax cross-entropy and the negative
log-likelihood."""
import numpy as np

from ..core.tape import record, vjp_of
from ..core.tensor import Tensor, as_tensor
from ..kernels import rows
from .protocol import contiguous, kernel_out, own_labels, public


def _labels(op, labels, shape):
    """Validated labels for (N, C) scores: a C-contiguous intp array of length N."""
    if len(shape) != 2:
        raise ValueError(f"{op}: expects (N, C) scores, got shape {shape}")
    n, c = shape
    if n == 0:
        raise ValueError(f"{op}: empty batch (shape {shape})")
    hint = ""
    if isinstance(labels, Tensor):
        labels = labels.value
        hint = " (a fastad tensor always holds floats: pass the integer array itself)"
    array = np.asarray(labels)
    if array.dtype.kind not in "iu":
        raise ValueError(f"{op}: labels must be integers, got dtype {array.dtype}{hint}")
    if array.shape != (n,):
        raise ValueError(f"{op}: labels have shape {array.shape}, expected ({n},) for "
                         f"scores of shape {shape}")
    low, high = array.min(), array.max()
    if low < 0 or high >= c:
        bad = low if low < 0 else high
        raise IndexError(f"{op}: label {bad} is out of range [0, {c})")
    return own_labels(array)


def _reduce_losses(op, losses, reduction):
    if reduction == "mean":  # losses.mean() to the bit, without its Python wrapper
        return np.asarray(losses.sum() / losses.shape[0], dtype=losses.dtype)
    if reduction == "sum":
        return np.asarray(losses.sum(), dtype=losses.dtype)
    if reduction == "none":
        return losses
    raise ValueError(f"{op}: reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


def _row_scale(g, reduction, n):
    """Per-row weight of each loss term in the reduced loss, times the adjoint."""
    if reduction == "none":
        return contiguous(g)
    scale = np.empty(n, g.dtype)
    scale.fill(g / n if reduction == "mean" else g)
    return scale


@public
def cross_entropy(logits, labels, reduction="mean"):
    """Softmax cross-entropy of (N, C) logits against integer labels, fused and stable."""
    x = as_tensor("cross_entropy", logits)
    labels = _labels("cross_entropy", labels, x.shape)
    xv = contiguous(x.value)
    probs = np.empty(xv.shape, xv.dtype)
    losses = np.empty(xv.shape[0], xv.dtype)
    rows.softmax_cross_entropy(xv, labels, probs, losses)
    value = _reduce_losses("cross_entropy", losses, reduction)
    return record(cross_entropy_vjp, value, (x,), (probs, labels, reduction))


@vjp_of("cross_entropy")
def cross_entropy_vjp(g, saved, out):
    probs, labels, reduction = saved
    buffer, accumulate = kernel_out(out[0], probs.shape, probs.dtype)
    scale = _row_scale(g, reduction, len(labels))
    rows.softmax_cross_entropy_grad(probs, labels, scale, buffer, accumulate)
    return (buffer,)


@public
def nll_loss(log_probs, labels, reduction="mean"):
    """Negative log-likelihood of (N, C) log-probabilities at integer labels."""
    x = as_tensor("nll_loss", log_probs)
    labels = _labels("nll_loss", labels, x.shape)
    picked = np.empty(x.shape[0], x.dtype)
    rows.pick(contiguous(x.value), labels, picked)
    value = _reduce_losses("nll_loss", -picked, reduction)
    return record(nll_loss_vjp, value, (x,), (labels, x.shape, reduction))


@vjp_of("nll_loss")
def nll_loss_vjp(g, saved, out):
    labels, shape, reduction = saved
    buffer, accumulate = kernel_out(out[0], shape, g.dtype)
    rows.pick_grad(-_row_scale(g, reduction, shape[0]), labels, buffer, accumulate)
    return (buffer,)
