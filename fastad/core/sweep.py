"""The reverse sweep: one per output, run only as far as the gradients asked need
(core/gradients.py holds the entry points that drive it, fa.grad and backward)."""
import math
import threading
from operator import attrgetter

import numpy as np
from numpy import ndarray

from ..kernels.signals import check_signals
from .clock import modified_at
from .modes import modes, replayed, special
from .tape import SKIP, Node, check_finite


class Sweep:
    """The reverse sweep from one output, run only as far as the gradients asked need.

    Nodes are visited newest first. A node's adjoint is final once the sweep has passed
    the earliest node that consumes it (`final_at`), so a request stops there and the
    next request resumes where this one stopped: any sequence of requests costs one sweep
    and gets the values of one joint request.
    """

    __slots__ = ("seed", "order", "final_at", "leaf_uses", "adjoints", "unowned", "results",
                 "stopped_by", "lock", "position", "released_any", "implied_seed",
                 "listener", "final_after", "__weakref__")

    def __init__(self, root, seed, implied_seed):
        self.seed = seed
        self.implied_seed = implied_seed  # seed=None: ones, the same for every later call
        self.order, self.final_at, self.leaf_uses = _reachable(root)
        self.adjoints = {root: copy_of(seed)}
        self.unowned = set()   # nodes whose adjoint buffer is shared, so never written in place
        self.results = {}
        self.position = 0
        self.stopped_by = None   # (op name, error text) of an interrupted run, if any
        self.released_any = False
        self.lock = threading.Lock()
        # Set by backward() only while listeners are registered (see add_listener):
        # final_after maps a node's index to the watched leaves final once it is done.
        self.listener = None
        self.final_after = None

    def gradients(self, keys, retain_graph):
        """The final adjoints of `keys` (Nodes or leaf Tensors, all reachable)."""
        with self.lock:
            self._check_remaining()
            pending = {k for k in keys if k not in self.results}
            # Latest-final first, so an intermediate is collected before the sweep passes it.
            for key in sorted(pending, key=self.final_at.__getitem__, reverse=True):
                self._run(self.final_at[key], retain_graph)
                if key not in self.adjoints:
                    raise RuntimeError(
                        "the gradient of an intermediate tensor was asked for after the "
                        "sweep had released it; pass retain_graph=True to the earlier "
                        "fa.grad call to keep it")
                self.results[key] = self.adjoints[key]
                self.unowned.add(key)
            return [self.results[k] for k in keys]

    def _run(self, stop, retain_graph):
        """Process nodes until every node numbered >= stop is done."""
        order, adjoints, unowned = self.order, self.adjoints, self.unowned
        listener = self.listener
        # A running fa.capture records (or replays) each array the sweep computes.
        capture = modes.capture if special.count else None
        position = start = self.position
        node = None
        try:
            while position < len(order):
                node = order[position]
                if node.index < stop:
                    break
                position += 1
                if retain_graph:
                    g = adjoints[node]
                    movable = False
                else:
                    g = adjoints.pop(node)
                    movable = node not in unowned
                parents = node.parents
                out = tuple([SKIP if p is None else None if p in unowned else adjoints.get(p)
                             for p in parents])
                finals = None if listener is None else self.final_after.get(node.index)
                if finals is None:
                    self._apply(node, g, out, movable, capture)
                else:
                    # The leaves final here (a layer's weight and bias) go first, and the
                    # listener hears of them before the rest of the vjp (the layer's input
                    # gradient, a product as large as the weight's) is computed: a
                    # DataParallel starts their allreduce that much earlier.
                    final = set(finals)  # Tensors compare elementwise: never `in` a list
                    first = tuple([o if p in final else SKIP for p, o in zip(parents, out)])
                    rest = tuple([SKIP if p in final else o for p, o in zip(parents, out)])
                    movable = self._apply(node, g, first, movable, capture)
                    for leaf in finals:
                        _call(capture, _tell_final, (listener, leaf, adjoints[leaf]))
                    if any([o is not SKIP for o in rest]):
                        _call(capture, _tell_progress, (listener,))
                        self._apply(node, g, rest, movable, capture)
                if not retain_graph:
                    node.saved = None
                    node.released = True
                if listener is not None:
                    _call(capture, _tell_progress, (listener,))
                check_signals()  # Ctrl-C stops a compiled sweep here, between two nodes
        except BaseException as error:
            # The node may be half applied: its partial gradients can never be completed.
            # Only text is kept: the exception's traceback holds the caller's frames, and
            # through them this output (a reference cycle that would keep the tape alive).
            self.stopped_by = (node.vjp.op_name if node else "the sweep",
                               f"{type(error).__name__}: {error}")
            raise
        finally:
            self.position = position
            self.released_any |= not retain_graph and position > start

    def _apply(self, node, g, out, movable, capture):
        """Run node's vjp for the inputs `out` asks for and store their contributions;
        returns whether g may still be moved to a parent (it moves to one at most)."""
        adjoints, unowned = self.adjoints, self.unowned
        parents = node.parents
        # _call's work, spelled out: apply_vjp stays a C call (once per node per sweep)
        grads = (apply_vjp(node.vjp, g, node.saved, out) if capture is None else
                 capture.call(apply_vjp, (node.vjp, g, node.saved, out), {}))
        for i in range(len(parents)):
            if out[i] is SKIP:
                continue
            parent = parents[i]
            contribution = grads[i]
            if contribution is out[i]:
                continue  # accumulated in place
            if type(contribution) is not ndarray:  # a NumPy scalar from 0-d math
                contribution = _call(capture, np.asarray, (contribution,))
            if contribution is g:
                owned, movable = movable, False
            else:
                owned = contribution.base is None
            existing = adjoints.get(parent)
            if existing is None:
                adjoints[parent] = contribution
                if not owned:
                    unowned.add(parent)
            else:
                adjoints[parent] = _call(capture, _combine, (existing, contribution, owned))
                unowned.discard(parent)
        return movable

    def _check_remaining(self):
        """Refuse, before doing any work, a sweep through a released graph or through an
        op whose leaf inputs were updated in place after it was recorded."""
        if self.stopped_by is not None:
            op_name, error = self.stopped_by
            raise RuntimeError(
                f"an earlier sweep of this output stopped in the backward of '{op_name}' "
                f"({error}); its partial gradients cannot be completed: compute the output "
                "again")
        remaining = self.order[self.position:]
        for node in remaining:
            if node.released:
                raise RuntimeError(
                    f"the graph through '{node.vjp.op_name}' was already released by an "
                    "earlier sweep; pass retain_graph=True to the first fa.grad/backward "
                    "to sweep it again")
        # Every use, also of the part already swept: a gradient cached before the update
        # is stale too.
        for node, leaf in self.leaf_uses:
            if modified_at(leaf) > node.index:
                raise RuntimeError(
                    f"a leaf of shape {leaf.shape} used by '{node.vjp.op_name}' was modified "
                    "in place (e.g. by an optimizer step) after the op was recorded; its "
                    "gradient would be wrong. Compute gradients before updating parameters.")

    def finish(self, retain_graph):
        """Run to the end; return {leaf Tensor: gradient} for every leaf reached."""
        with self.lock:
            self._check_remaining()
            self._run(-1, retain_graph)
            return {k: self.results.get(k, self.adjoints.get(k)) for k in self.final_at
                    if type(k) is not Node}


def apply_vjp(vjp, g, saved, out):
    """vjp's contributions (a tuple, one per input), its return contract checked, and
    under detect_anomaly each checked for NaN and Inf."""
    result = vjp(g, saved, out)
    if type(result) is not tuple or len(result) != len(out):
        raise TypeError(f"the vjp of '{vjp.op_name}' returned {type(result).__name__} "
                        f"{result!r:.80}: a vjp returns a tuple with one entry per input "
                        f"({len(out)})")
    if special.count and modes.anomaly:
        for wanted, contribution in zip(out, result):
            if wanted is not SKIP:
                check_finite(contribution, f"the backward of '{vjp.op_name}'")
    return result


def _call(capture, function, args):
    """function(*args), through a running fa.capture if there is one."""
    return function(*args) if capture is None else capture.call(function, args, {})


@replayed
def copy_of(array):
    return array.copy()


def _combine(existing, contribution, owned):
    """A second contribution to an adjoint that could not be written in place."""
    if owned:
        contribution += existing
        return contribution
    return existing + contribution


def _reachable(root):
    """Nodes reachable from root, newest first; for each node or leaf the number of its
    earliest consumer (after which its adjoint is final); and the (node, leaf) pairs
    where a node reads a leaf."""
    final_at = {root: math.inf}
    nodes = [root] if type(root) is Node else []
    leaf_uses = []
    stack = list(nodes)
    while stack:
        node = stack.pop()
        for parent in node.parents:
            if parent is None:
                continue
            if type(parent) is not Node:
                leaf_uses.append((node, parent))
            if parent in final_at:
                if node.index < final_at[parent]:
                    final_at[parent] = node.index
            else:
                final_at[parent] = node.index
                if type(parent) is Node:
                    nodes.append(parent)
                    stack.append(parent)
    if not _newest_first(nodes):
        nodes.sort(key=attrgetter("index"), reverse=True)
    return nodes, final_at, leaf_uses


def _newest_first(nodes):
    """Whether `nodes` are already in the sweep's order: a chain of ops (an MLP, a loop)
    is found in that order, and checking costs a tenth of sorting."""
    for i in range(1, len(nodes)):
        newer, older = nodes[i - 1], nodes[i]
        if newer.index < older.index:
            return False
    return True


# The sweep tells a DataParallel (or any listener, see core/gradients.py) about each
# gradient through these, so that a captured step makes the calls again.

def _tell_final(listener, leaf, gradient):
    listener.gradient_final(leaf, gradient)


def _tell_progress(listener):
    listener.progress()
