"""Losses: with integer labels, fused softmax cross-entropy and the negative
log-likelihood; elementwise against a target of the input's shape, mse_loss and
binary_cross_entropy_with_logits."""
import numpy as np

from ..core.tape import SKIP, record, vjp_of
from ..core.operands import as_tensor, operands
from ..core.tensor import Tensor
from ..kernels import pointwise, rows
from .protocol import contiguous, contribute, dense, kernel_out, own_labels, public


# integer type codes whose every value an intp holds (not uint64, nor int64 on 32 bits)
_FITS_INTP = frozenset(t for t in np.typecodes["AllInteger"] if np.can_cast(t, np.intp))


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
    if array.dtype.char in _FITS_INTP:  # the copy the kernels get holds every value
        own = own_labels(array)
        low, high = rows.label_bounds(own)
    else:  # uint64: an intp copy could wrap, so the range is checked on the array itself
        own, low, high = None, array.min(), array.max()
    if low < 0 or high >= c:
        bad = low if low < 0 else high
        raise IndexError(f"{op}: label {bad} is out of range [0, {c})")
    return own if own is not None else own_labels(array)


def _reduce_losses(op, losses, reduction):
    if reduction == "mean":  # losses.mean() to the bit, without its Python wrapper
        return np.asarray(losses.sum() / losses.size, dtype=losses.dtype)
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


# --- elementwise losses against a target of the input's shape ---------------------------

def _elementwise_loss(vjp, terms, input, target, reduction):
    """An elementwise loss: terms(x, t) per element, reduced as torch's `reduction`; both
    operands may need a gradient (vjp's partials get the weight of each term)."""
    op = vjp.op_name
    x, t, tx, tt = operands(op, input, target)
    if np.shape(x) != np.shape(t):
        raise ValueError(f"{op}: input of shape {np.shape(x)} and target of shape "
                         f"{np.shape(t)} differ (they must have the same shape)")
    if x.size == 0:
        raise ValueError(f"{op}: empty input (shape {x.shape})")
    value = _reduce_losses(op, np.asarray(terms(x, t)), reduction)  # checks `reduction`
    return record(vjp, value, (tx, tt), (x, t, reduction))


def _partials(out, saved, g, d_input, d_target):
    """The vjp of an elementwise loss, given its terms' partial derivatives."""
    x, t, reduction = saved
    weight = g / x.size if reduction == "mean" else g  # the adjoint of each term
    return (None if out[0] is SKIP else contribute(out[0], d_input(x, t) * weight),
            None if out[1] is SKIP else contribute(out[1], d_target(x, t) * weight))


@public
def mse_loss(pred, target, reduction="mean"):
    """(pred - target)**2, reduced; as torch.nn.functional.mse_loss (gradients to both)."""
    return _elementwise_loss(mse_loss_vjp, lambda x, t: np.square(x - t), pred, target,
                             reduction)


@vjp_of("mse_loss")
def mse_loss_vjp(g, saved, out):
    return _partials(out, saved, g, lambda x, t: 2 * (x - t), lambda x, t: 2 * (t - x))


def _bce_terms(x, t):
    """max(x, 0) - x t + log(1 + exp(-|x|)): finite for any finite logit."""
    return np.maximum(x, 0) - x * t + np.log1p(np.exp(-np.abs(x)))


@public
def binary_cross_entropy_with_logits(logits, targets, reduction="mean"):
    """Binary cross-entropy of sigmoid(logits) against targets, computed stably from the
    logits; as torch.nn.functional.binary_cross_entropy_with_logits (no weights)."""
    return _elementwise_loss(binary_cross_entropy_with_logits_vjp, _bce_terms, logits,
                             targets, reduction)


@vjp_of("binary_cross_entropy_with_logits")
def binary_cross_entropy_with_logits_vjp(g, saved, out):
    return _partials(out, saved, g, lambda x, t: pointwise.sigmoid(dense(x)) - t,
                     lambda x, t: -x)
