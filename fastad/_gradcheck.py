"""Finite-difference checking of fastad's gradients."""
import numpy as np

from .core.modes import no_grad
from .core.gradients import grad
from .core.tensor import Tensor


def gradcheck(fn, inputs, eps=1e-6, atol=1e-5, rtol=1e-3):
    """Compare fa.grad of fn(*inputs) (summed if not scalar) with central differences.

    Checks every input Tensor that requires grad, on float64 copies. Passes where
    |analytic - numeric| <= atol + rtol * |numeric| everywhere; returns True, or raises
    AssertionError naming the input, the index and both values.
    """
    inputs = list(inputs)
    copies = [Tensor(np.array(x.value, dtype=np.float64), requires_grad=x.requires_grad)
              if isinstance(x, Tensor) else x for x in inputs]
    checked = [i for i, x in enumerate(copies) if isinstance(x, Tensor) and x.requires_grad]
    if not checked:
        raise ValueError("gradcheck: no input is a Tensor that requires grad")

    def total(out):
        value = out.value if isinstance(out, Tensor) else np.asarray(out)
        return float(np.sum(value))

    out = fn(*copies)
    if not isinstance(out, Tensor):
        raise TypeError(f"gradcheck: fn must return a Tensor, got {type(out).__name__}")
    scalar = out if out.size == 1 else out.sum()
    analytic = grad(scalar, [copies[i] for i in checked], allow_unused=True)

    for i, a in zip(checked, analytic):
        value = copies[i].value
        for index in np.ndindex(value.shape):
            original = value[index]
            with no_grad():
                value[index] = original + eps
                plus = total(fn(*copies))
                value[index] = original - eps
                minus = total(fn(*copies))
            value[index] = original
            numeric = (plus - minus) / (2 * eps)
            if not abs(a[index] - numeric) <= atol + rtol * abs(numeric):
                raise AssertionError(
                    f"gradcheck: input {i}, index {index}: analytic {a[index]!r} vs "
                    f"numeric {numeric!r}")
    return True
