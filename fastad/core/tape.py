"""The tape: each op an input needs a gradient for leaves a Node behind.

Recording: an op whose inputs need a gradient gets a `Node` holding its vector-Jacobian
product (`vjp`), the values it saved, and its parents. Nodes are numbered as they are
made, so creation order is a topological order and the sweep needs no graph sort
beyond ordering the nodes it reaches by that number.

The op protocol (the sweep knows nothing else about ops): a vjp is called as
`vjp(g, saved, out)`: `g` is the adjoint of the node's output and `out[i]` says what to
do for input i: `SKIP` (no gradient needed), `None` (first contribution: return a new
array, or `g` itself, or a view of `g`), or an array the vjp must add its contribution
into in place (and return). It returns a tuple with one entry per input. Each node's
adjoint buffer is therefore allocated once, by its first contribution, and later
contributions accumulate into it.

Capture (`fa.capture`, fastad/replay/): each public op is marked `replayed` (see
modes.py), and while a capture runs, `record` hands the values it is given to the
recorder or replayer instead of building a Node for them.
"""
import numpy as np
from numpy import ndarray

from .clock import tick
from .modes import modes, special
from .tensor import make_tensor

SKIP = "skip"


class Node:
    """One recorded op application: enough to send its output's adjoint to its inputs."""

    __slots__ = ("vjp", "parents", "saved", "index", "released")

    def __init__(self, vjp, parents, saved):
        self.vjp = vjp
        self.parents = parents
        self.saved = saved
        self.index = tick()
        self.released = False

    def __repr__(self):
        return f"<Node {self.vjp.op_name} #{self.index}>"


def vjp_of(op_name):
    """Marks a function as the vjp of `op_name` (the name shown in reprs and errors)."""
    def mark(vjp):
        vjp.op_name = op_name
        return vjp
    return mark


def record(vjp, value, inputs, saved=()):
    """The Tensor holding an op's `value`, with a Node if any input needs a gradient.

    `inputs` are the op's operands: Tensors, or None for constants.
    """
    if type(value) is not ndarray:
        value = np.asarray(value)  # NumPy returns scalars, not 0-d arrays, from 0-d math
    if special.count and not modes.plain:
        if modes.anomaly:
            check_finite(value, f"the forward value of '{vjp.op_name}'")
        if modes.capture is not None:
            return modes.capture.recorded(vjp, value, inputs, saved)
        if not modes.grad_enabled:
            return make_tensor(value, vjp, None)
    return on_tape(vjp, value, inputs, saved)


def on_tape(vjp, value, inputs, saved):
    """record's common case (grad enabled): the Tensor, with a Node if any input needs a
    gradient."""
    parents = tuple([parent_of(t) for t in inputs])
    for parent in parents:
        if parent is not None:
            return make_tensor(value, vjp, Node(vjp, parents, saved))
    return make_tensor(value, vjp, None)


def parent_of(t):
    """What a node keeps of an input: the node that made it, the leaf itself, or None
    (a constant, or a tensor that needs no gradient)."""
    if t is None or not t.requires_grad:
        return None
    return t._node or t


def check_finite(array, what):
    if not np.all(np.isfinite(array)):
        raise FloatingPointError(f"detect_anomaly: {what} contains NaN or Inf")


