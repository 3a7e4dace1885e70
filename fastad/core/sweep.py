"""The reverse sweep: one per output, run only as far as the gradients asked need, and
the public entry points `grad` and `backward` that drive it."""
import math
import threading

import numpy as np

from ..kernels.signals import check_signals
from .arrays import check_matches
from .clock import modified_at
from .modes import modes, replayed, special
from .tape import SKIP, Node, check_finite
from .tensor import Tensor


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
                if capture is None:
                    grads = apply_vjp(node.vjp, g, node.saved, out)
                else:
                    grads = capture.call(apply_vjp, (node.vjp, g, node.saved, out), {})
                for i in range(len(parents)):
                    parent = parents[i]
                    if parent is None:
                        continue
                    contribution = grads[i]
                    if contribution is out[i]:
                        continue  # accumulated in place
                    if type(contribution) is not np.ndarray:  # a NumPy scalar from 0-d math
                        contribution = (np.asarray(contribution) if capture is None else
                                        capture.call(np.asarray, (contribution,), {}))
                    if contribution is g:
                        owned, movable = movable, False  # g moves to one parent at most
                    else:
                        owned = contribution.base is None
                    existing = adjoints.get(parent)
                    if existing is None:
                        adjoints[parent] = contribution
                        if not owned:
                            unowned.add(parent)
                    else:
                        adjoints[parent] = (
                            _combine(existing, contribution, owned) if capture is None else
                            capture.call(_combine, (existing, contribution, owned), {}))
                        unowned.discard(parent)
                if not retain_graph:
                    node.saved = None
                    node.released = True
                if listener is not None:
                    finals = self.final_after.get(node.index)
                    if finals is not None:
                        for leaf in finals:
                            if capture is None:
                                listener.gradient_final(leaf, adjoints[leaf])
                            else:
                                capture.call(_tell_final, (listener, leaf, adjoints[leaf]), {})
                    if capture is None:
                        listener.progress()
                    else:
                        capture.call(_tell_progress, (listener,), {})
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
    nodes.sort(key=_index, reverse=True)
    return nodes, final_at, leaf_uses


def _index(node):
    return node.index


# --- the public entry points --------------------------------------------------------

def _root(t):
    if t._node is not None:
        return t._node
    return t if t.requires_grad else None


def _seed(output, seed):
    if seed is None:
        if output.size != 1:
            raise ValueError(
                f"grad: output has shape {output.shape}; gradients can be implied only for "
                "a one-element output: pass seed= (an array of the output's shape)")
        return np.array(1, output.dtype).reshape(output.shape)  # np.ones costs 1 us more
    seed = seed.value if isinstance(seed, Tensor) else np.asarray(seed)
    if seed.dtype.kind not in "fiub":
        raise TypeError(f"grad: seed must be real numbers, got {seed.dtype}")
    if seed.dtype.kind == "f" and seed.dtype.itemsize in (4, 8) and seed.dtype != output.dtype:
        raise TypeError(f"grad: seed dtype {seed.dtype} does not match output dtype "
                        f"{output.dtype}")
    if seed.shape != output.shape:
        raise ValueError(f"grad: seed has shape {seed.shape} but output has shape "
                         f"{output.shape}")
    return np.array(seed, dtype=output.dtype, order="C")


_sweep_creation = threading.Lock()  # threads asking about one output share one sweep


def _sweep_for(output, seed):
    if not isinstance(output, Tensor):
        raise TypeError(f"grad: output must be a fastad Tensor, got {type(output).__name__}")
    with _sweep_creation:
        return _current_sweep(output, seed)


def _current_sweep(output, seed):
    if getattr(output, "_consumed", False):
        raise RuntimeError("this output's graph was consumed by backward(); pass "
                           "retain_graph=True to backward() to differentiate it again")
    seed_array = _seed(output, seed)
    root = _root(output)
    if root is None:
        return None
    sweep = getattr(output, "_sweep", None)
    if (sweep is not None and not (seed is None and sweep.implied_seed)
            and not np.array_equal(sweep.seed, seed_array)):
        if sweep.released_any:
            raise RuntimeError("a different seed needs a new sweep, but the previous one "
                               "released the graph; pass retain_graph=True to keep it")
        sweep = None
    if sweep is None:
        sweep = output._sweep = Sweep(root, seed_array, seed is None)
    return sweep


def grad(output, wrt, seed=None, retain_graph=False, allow_unused=False):
    """Gradient of `output` with respect to a Tensor (an ndarray) or a sequence (a list).

    Every call on the same output shares one reverse sweep, which runs only until the
    asked-for gradients are final. `output` must have one element unless `seed` is
    given. A `wrt` entry that `output` does not depend on raises ValueError unless
    `allow_unused=True` (then it gets zeros). Never touches `.grad`.
    """
    single = isinstance(wrt, Tensor)
    targets = [wrt] if single else list(wrt)
    for i, t in enumerate(targets):
        if not isinstance(t, Tensor):
            raise TypeError(f"grad: wrt[{i}] must be a fastad Tensor, got {type(t).__name__}")
    sweep = _sweep_for(output, seed)
    keys = [_root(t) for t in targets]
    usable = []
    for i, (t, key) in enumerate(zip(targets, keys)):
        if key is None or sweep is None or key not in sweep.final_at:
            if not allow_unused:
                raise ValueError(f"grad: wrt[{i}] (shape {t.shape}) "
                                 f"{_unused_reason(key, sweep)}")
        else:
            usable.append(key)
    values = dict(zip(usable, sweep.gradients(usable, retain_graph))) if usable else {}
    grads = [_read_only(values[k]) if k in values else _zeros(t.shape, t.dtype)
             for t, k in zip(targets, keys)]
    return grads[0] if single else grads


def _unused_reason(key, sweep):
    if key is None:
        return ("does not require grad: make it with requires_grad=True (or as a "
                "fa.Parameter) before computing output")
    if sweep is None:
        return ("is not reached: output does not require grad (it was computed under "
                "fa.no_grad(), or from tensors that do not require grad)")
    return "is not used to compute output; pass allow_unused=True to get zeros for it"


@replayed
def _zeros(shape, dtype):
    return np.zeros(shape, dtype)


@replayed
def _read_only(buffer):
    """A view of one of the sweep's buffers that the caller cannot write through, so no
    later result of the same sweep can be changed by changing this one. It is made from
    a read-only buffer export, so not even `view.flags.writeable = True` unlocks it."""
    return np.asarray(memoryview(np.asarray(buffer)).toreadonly())


def backward(output, seed=None, retain_graph=False):
    """Finish `output`'s sweep and add each leaf's gradient into its `.grad`."""
    sweep = _sweep_for(output, seed)
    if sweep is None:
        raise RuntimeError("backward: output does not require grad (it was computed under "
                           "fa.no_grad(), or no input of the ops that made it requires grad)")
    # The whole sweep runs, and every existing .grad is checked, before any .grad
    # changes: an exception or Ctrl-C in the middle leaves them all as they were.
    if _listeners:
        gradients, replaced = _finish_listened(sweep, retain_graph)
    else:
        gradients, replaced = sweep.finish(retain_graph), {}
    _deliver([(leaf, g, retain_graph or leaf in sweep.unowned)
              for leaf, g in gradients.items() if leaf not in replaced], replaced)
    if not retain_graph:
        output._consumed = True
        output._sweep = None


@replayed
def _deliver(gradients, replaced):
    """Add each (leaf, gradient, shared) into leaf.grad, after checking every existing
    .grad (a shared gradient is copied); then set the {leaf: gradient} a listener replaced."""
    for leaf, _, _ in gradients:
        if leaf._grad is not None:
            check_matches(leaf._grad, leaf._value, "backward: an existing .grad")
    for leaf, g, shared in gradients:
        if leaf._grad is None:
            leaf._grad = g.copy() if shared else g
        else:
            np.add(leaf._grad, g, out=leaf._grad)
    for leaf, g in replaced.items():
        leaf._grad = g


# --- gradient listeners: told the moment each leaf's gradient is final ---------------

_listeners = []


def add_listener(listener):
    """Register `listener` for every later `backward()`; returns a function that removes it.

    A listener (e.g. `fastad.distributed.DataParallel`) has these methods:
    - `begin(final_at)`: called before the sweep with the sweep's {leaf or node: number of
      its earliest consumer}; returns the leaves to watch, or None to sit this sweep out.
    - `gradient_final(leaf, gradient)`: a watched leaf's gradient is final (the sweep has
      passed its earliest consumer). `gradient` is the sweep's buffer: read or copy it,
      never write it or keep it.
    - `progress()`: called between nodes while the listener is active (keep it cheap).
    - `end(gradients)`: the sweep is done ({leaf: gradient} for every leaf reached); may
      return {leaf: array} to become those leaves' `.grad` instead of adding the
      gradient (leaves not reached may be included). Nothing has touched `.grad` yet.
    - `abort(error)`: the sweep stopped with an exception; `end` will not be called.
    `fa.grad` never calls listeners (it never touches `.grad`).
    """
    _listeners.append(listener)

    def remove():
        if listener in _listeners:
            _listeners.remove(listener)
    return remove


class _Fanout:
    __slots__ = ("listeners",)

    def __init__(self, listeners):
        self.listeners = listeners

    def gradient_final(self, leaf, gradient):
        for listener in self.listeners:
            listener.gradient_final(leaf, gradient)

    def progress(self):
        for listener in self.listeners:
            listener.progress()


# A captured step makes these calls again in every replay (the sweep calls the two
# others through the capture it runs under).

@replayed
def _tell_begin(listener, final_at):
    return listener.begin(final_at)


@replayed
def _tell_end(listener, gradients):
    return listener.end(gradients)


def _tell_final(listener, leaf, gradient):
    listener.gradient_final(leaf, gradient)


def _tell_progress(listener):
    listener.progress()


def _finish_listened(sweep, retain_graph):
    active, final_after, final_at = [], {}, sweep.final_at
    for listener in list(_listeners):
        leaves = _tell_begin(listener, final_at)
        if leaves is None:
            continue
        active.append(listener)
        for leaf in leaves:
            at = final_at.get(leaf)
            if at is not None and at != math.inf:
                final_after.setdefault(at, []).append(leaf)
    if not active:
        return sweep.finish(retain_graph), {}
    sweep.final_after = final_after
    sweep.listener = active[0] if len(active) == 1 else _Fanout(active)
    try:
        gradients = sweep.finish(retain_graph)
    except BaseException as error:
        for listener in active:
            listener.abort(error)
        raise
    finally:
        sweep.listener = sweep.final_after = None
    replaced = {}
    for listener in active:
        replaced.update(_tell_end(listener, gradients) or {})
    return gradients, replaced
