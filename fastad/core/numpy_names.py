"""NumPy's names for what fastad does (Tensor's NumPy protocol, core/tensor.py): the
operators NumPy hands a Tensor record on the tape; other NumPy functions are refused
with the name of fastad's."""
import numpy as np

# The ufuncs NumPy's operators call for `ndarray OP Tensor`, and the fastad function
# each stands for: the result is a Tensor on the tape; comparisons give plain bool arrays.
COMPARISONS = ("equal", "not_equal", "less", "less_equal", "greater", "greater_equal")
NUMPY_OPERATORS = {np.add: "add", np.subtract: "sub", np.multiply: "mul",
                    np.true_divide: "div", np.power: "pow", np.matmul: "matmul",
                    **{getattr(np, name): name for name in COMPARISONS}}

# NumPy's names for the fastad functions that fastad names otherwise.
NUMPY_ALIASES = {"absolute": "abs", "negative": "neg", "subtract": "sub", "multiply": "mul",
                  "true_divide": "div", "divide": "div", "power": "pow", "amax": "max",
                  "amin": "min"}


def fastad_name(numpy_name, namespace):
    """The public function of `namespace` (fastad's) a NumPy function or ufunc stands for,
    or None."""
    name = NUMPY_ALIASES.get(numpy_name, numpy_name)
    return name if name in namespace.__all__ else None


def numpy_message(name, namespace):
    ours = fastad_name(name, namespace)
    plain = f"apply np.{name} to t.value for a plain ndarray (no gradient)"
    if ours is None:
        return f"np.{name} does not record on fastad's tape; {plain}"
    return f"np.{name} does not record on fastad's tape: use fa.{ours}, or {plain}"
