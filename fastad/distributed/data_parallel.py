"""DataParallel: buckets of gradients reduced by nonblocking allreduces that start while
the reverse sweep is still running."""
import contextlib
import math
import weakref

import numpy as np

from ..core.arrays import check_matches
from ..core.clock import mark_modified
from ..core.modes import is_grad_enabled
from ..core.gradients import add_listener
from ..nn import Module
from .backend import _backend

_ALIGN = 64  # bytes: every .grad view starts on a cache line


class _Bucket:
    __slots__ = ("params", "offsets", "dtype", "count", "buffer", "views", "remaining",
                 "filled")

    def __init__(self, dtype):
        self.params, self.offsets, self.dtype, self.count = [], [], dtype, 0
        self.buffer, self.views, self.remaining, self.filled = None, {}, 0, set()

    def add(self, p):
        align = max(1, _ALIGN // self.dtype.itemsize)
        start = -(-self.count // align) * align
        self.params.append(p)
        self.offsets.append(start)
        self.count = start + p.value.size

    def allocate(self):
        item = self.dtype.itemsize
        raw = np.zeros(self.count + _ALIGN // item, self.dtype)
        skip = (-raw.ctypes.data % _ALIGN) // item
        self.buffer = raw[skip:skip + self.count]   # starts on a cache line
        self.views = {p: self.buffer[o:o + p.value.size].reshape(p.value.shape)
                      for p, o in zip(self.params, self.offsets)}


class _Listener:
    """Registered with the sweep; holds its DataParallel weakly, so a DataParallel that
    is no longer used can be collected (the listener then removes itself)."""

    def __init__(self, dp):
        self.dp = weakref.ref(dp)
        self.active = None
        self.remove = add_listener(self)

    def begin(self, final_at):
        dp = self.dp()
        if dp is None:
            self.remove()
            return None
        watched = dp._begin(final_at)
        if watched is not None:
            self.active = dp  # held for the length of the sweep
        return watched

    def gradient_final(self, leaf, gradient):
        self.active._gradient_final(leaf, gradient)

    def progress(self):
        dp = self.active
        if dp._requests:
            dp._progress()

    def end(self, gradients):
        dp, self.active = self.active, None
        return dp._end(gradients)

    def abort(self, error):
        dp, self.active = self.active, None
        if dp is not None:
            dp._abort()


class DataParallel(Module):
    """`model` trained data-parallel: every rank runs it on its share of each batch and
    `backward()` leaves in each parameter's `.grad` the mean over ranks of the ranks'
    gradients.

    Construction broadcasts rank 0's parameter values to every rank and checks that
    every rank's model has the same parameters (names, shapes, dtypes). Calling the
    DataParallel calls `model`; `parameters()`, `named_parameters()`, `state_dict()`,
    `load_state_dict()` and every other attribute are the model's (same Parameter
    objects, same names).

    Gradients are reduced in buckets of about `bucket_mb` MB (the first at most 1 MB, so
    communication starts early), filled in the order in which the first synchronized
    backward's sweep makes the gradients final (rank 0's sweep), so that each bucket
    can start while the sweep goes on. A parameter the loss did not use contributes
    zeros. Within `no_sync()`, backward accumulates local gradients only; the next
    synchronized backward reduces the accumulated sum.
    """

    def __init__(self, model, comm=None, bucket_mb=25):
        super().__init__()
        if not isinstance(model, Module):
            raise TypeError(f"DataParallel: model must be a fastad Module, got "
                            f"{type(model).__name__}")
        if not (isinstance(bucket_mb, (int, float)) and bucket_mb > 0
                and math.isfinite(bucket_mb)):
            raise ValueError(f"DataParallel: bucket_mb must be a positive number, got "
                             f"{bucket_mb!r}")
        object.__setattr__(self, "module", model)
        backend = _backend(comm)
        object.__setattr__(self, "_comm", backend)
        named = model.named_parameters()
        mine = [(name, p.value.shape, p.value.dtype.str) for name, p in named]
        everyone = backend.allgather(mine)
        for r, theirs in enumerate(everyone):
            if theirs != everyone[0]:
                raise ValueError(
                    f"DataParallel: rank {r}'s model differs from rank 0's "
                    f"({_first_difference(everyone[0], theirs)}); every rank must build "
                    "the same model")
        for _, p in named:
            backend.bcast(p.value, 0)
            mark_modified(p)
        params = [p for _, p in named]
        for name, value in (("_params", params), ("_bucket_mb", bucket_mb),
                            ("_ordered", False), ("_requests", []), ("_next", 0),
                            ("_no_sync", 0), ("_forward_mode", None), ("_active", False),
                            ("launches", [])):
            object.__setattr__(self, name, value)
        self._fill_buckets(list(reversed(params)))
        object.__setattr__(self, "_listener", _Listener(self))

    def _fill_buckets(self, order):
        """Buckets of about bucket_mb MB (the first at most 1 MB, so that communication
        starts early; one dtype each), filled with the parameters in `order`."""
        buckets = []
        limit = min(1.0, self._bucket_mb) * 2**20
        for p in order:
            dtype = p.value.dtype
            if (not buckets or buckets[-1].dtype != dtype
                    or (buckets[-1].count and
                        (buckets[-1].count + p.value.size) * dtype.itemsize > limit)):
                if buckets:
                    limit = self._bucket_mb * 2**20
                buckets.append(_Bucket(dtype))
            buckets[-1].add(p)
        object.__setattr__(self, "_buckets", buckets)
        object.__setattr__(self, "_where", {p: b for b in buckets for p in b.params})

    def _order_as_the_sweep(self, final_at):
        """Rebucket the parameters in the order in which this sweep makes their gradients
        final (it visits nodes newest first; unused parameters last; ties in reverse
        `parameters()` order), as rank 0 sees it, so that every rank has the same buckets."""
        index = {p: i for i, p in enumerate(self._params)}
        ready = sorted(self._params, key=lambda p: (-final_at.get(p, -math.inf), -index[p]))
        agreed = np.array([index[p] for p in ready], np.int64)
        self._comm.bcast(agreed, 0)
        if agreed.tolist() != [index[p] for b in self._buckets for p in b.params]:
            self._fill_buckets([self._params[i] for i in agreed])

    # --- the wrapped model ----------------------------------------------------------
    def forward(self, *args, **kwargs):
        if is_grad_enabled():
            object.__setattr__(self, "_forward_mode", "local" if self._no_sync else "sync")
        return self.module(*args, **kwargs)

    def named_parameters(self):
        return self.module.named_parameters()

    def parameters(self):
        return self.module.parameters()

    def state_dict(self):
        return self.module.state_dict()

    def load_state_dict(self, state_dict):
        return self.module.load_state_dict(state_dict)

    def zero_grad(self):
        self.module.zero_grad()

    def __getattr__(self, name):  # train(), eval(), layers, ...: the model's
        if name == "module":
            raise AttributeError(name)
        return getattr(self.module, name)

    def extra_repr(self):
        return f"buckets={[len(b.params) for b in self._buckets]}"

    def __repr__(self):
        return f"DataParallel({self.module!r})"

    @contextlib.contextmanager
    def no_sync(self):
        """Backward passes inside (of outputs computed inside) add local gradients to
        `.grad` without communicating; the next synchronized backward reduces the sum."""
        object.__setattr__(self, "_no_sync", self._no_sync + 1)
        try:
            yield
        finally:
            object.__setattr__(self, "_no_sync", self._no_sync - 1)

    @property
    def bucket_params(self):
        """[[parameter index in parameters(), ...] per bucket], in launch order."""
        index = {id(p): i for i, p in enumerate(self._params)}
        return [[index[id(p)] for p in b.params] for b in self._buckets]

    # --- the sweep listener ---------------------------------------------------------
    def _begin(self, final_at):
        watched = [p for p in self._params if p in final_at]
        if not watched:  # another model's backward
            return None
        mode = self._forward_mode
        object.__setattr__(self, "_forward_mode", None)
        if mode == "local" or (mode is None and self._no_sync):
            return None
        for p in self._params:  # before anything is written (see backward)
            if p._grad is not None:
                check_matches(p._grad, p._value, "backward: an existing .grad")
        if not self._ordered:   # once, like PyTorch's DDP, which learns it in step 1
            self._order_as_the_sweep(final_at)
            object.__setattr__(self, "_ordered", True)
        for b in self._buckets:
            if b.buffer is None or any(p._grad is b.views[p] for p in b.params):
                b.allocate()  # the previous buffer still backs someone's .grad
            b.remaining = len(b.params)
            b.filled = set()
        self._requests.clear()
        object.__setattr__(self, "_next", 0)
        object.__setattr__(self, "_active", True)
        return watched

    def _gradient_final(self, p, gradient):
        b = self._where.get(p)
        if b is None or p in b.filled:
            return
        view = b.views[p]
        existing = p._grad
        if gradient is None:
            if existing is None:
                view.fill(0)
            else:
                np.copyto(view, existing)
        elif existing is None:
            np.copyto(view, gradient)
        else:
            np.add(existing, gradient, out=view)
        if self._comm.size != 1:
            view *= 1.0 / self._comm.size
        b.filled.add(p)
        b.remaining -= 1
        if b.remaining == 0:
            self._launch_ready()

    def _launch_ready(self):
        buckets = self._buckets
        while self._next < len(buckets) and buckets[self._next].remaining == 0:
            b = buckets[self._next]
            self._requests.append(self._comm.iallreduce(b.buffer))
            self.launches.append(self._next)
            object.__setattr__(self, "_next", self._next + 1)

    def _progress(self):
        if self._comm.testall(self._requests):
            self._requests.clear()

    def _end(self, gradients):
        try:
            for b in self._buckets:  # leaves the sweep had passed before, and unused ones
                for p in b.params:
                    if p not in b.filled:
                        self._gradient_final(p, gradients.get(p))
            self._comm.waitall(self._requests)
            self._requests.clear()
        except BaseException:
            self._abort()
            raise
        object.__setattr__(self, "_active", False)
        return {p: b.views[p] for b in self._buckets for p in b.params}

    def _abort(self):
        # Requests in flight cannot be cancelled: MPI may still write their buffers, so
        # they are never reused. (Under `python -m mpi4py` the job is aborted anyway.)
        for b in self._buckets:
            b.buffer, b.views = None, {}
        self._requests.clear()
        object.__setattr__(self, "_active", False)


def _first_difference(ours, theirs):
    for a, b in zip(ours, theirs):
        if a != b:
            return f"{a[0]} {a[1]} {a[2]} vs {b[0]} {b[1]} {b[2]}"
    return f"{len(ours)} vs {len(theirs)} parameters"
