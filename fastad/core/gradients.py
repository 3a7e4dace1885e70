"""The public entry points that drive a sweep: fa.grad and backward(), and the
listeners backward() tells about each gradient the moment it is final (data-parallel
training hooks in here; the sweep itself stays op- and listener-agnostic)."""
import math
import threading

import numpy as np

from ..kernels import views
from .arrays import check_matches
from .modes import replayed
from .sweep import Sweep
from .tensor import Tensor


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
    later result of the same sweep can be changed by changing this one; not even
    `view.flags.writeable = True` unlocks it (fastad/kernels/views)."""
    return views.read_only(np.asarray(buffer))


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
    - `gradient_final(leaf, gradient)`: a watched leaf's gradient is final: its earliest
      consumer's vjp has given its part, and the rest of that vjp (e.g. a layer's input
      gradient, beside its weight's) runs after this call. `gradient` is the sweep's
      buffer: read or copy it, never write it or keep it.
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
