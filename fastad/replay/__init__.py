"""fa.capture: record a function (a training step) once, replay it without the tape.

The first call with a given signature runs eagerly (optimizers create their state, the
BLAS warms up); the next records a program -- every op, the scheduled reverse sweep and
the optimizer's update, as steps over numbered slots (recorder.py, slots.py) -- and
later calls replay it (program.py). Guards decide when a program applies: the shapes,
dtypes and strides of array arguments, the values of the others, no_grad and
detect_anomaly (the signature, below), and whether the tensors and modules the
program read are as they were (Program.applies). A call that fails them records a new
program; each function keeps a few (least recently used first out).
"""
import collections
import functools
import threading
import warnings

import numpy as np

from ..core.modes import modes
from ..core.tensor import Tensor
from .program import record
from .recorder import CaptureError

__all__ = ["capture", "CaptureError"]


def capture(function=None, *, allow_host_reads=False, max_programs=8):
    """Record `function` on its second call with a signature and replay it after that.

    Use as `@fa.capture` or `@fa.capture(allow_host_reads=True, max_programs=8)`.
    Results equal eager calls bit for bit; a replay returns fresh Tensors that require
    no gradient. Reading a tensor's value inside the function (`float(t)`, `t.item()`,
    `bool(t)`, `np.asarray(t)` of a non-argument, `t.grad`) raises CaptureError while
    recording, unless `allow_host_reads=True`: then every call runs eagerly.
    """
    if function is None:
        return functools.partial(capture, allow_host_reads=allow_host_reads,
                                 max_programs=max_programs)
    return Captured(function, allow_host_reads, max_programs)


CacheInfo = collections.namedtuple("CacheInfo", "eager recordings replays programs")


class Captured:
    """A captured function (see `capture`)."""

    def __init__(self, function, allow_host_reads, max_programs):
        if not callable(function):
            raise TypeError(f"capture: expected a function, got {type(function).__name__}")
        if isinstance(max_programs, bool) or not isinstance(max_programs, int) or \
                max_programs < 1:
            raise ValueError(f"capture: max_programs must be a positive int, got "
                             f"{max_programs!r}")
        functools.update_wrapper(self, function)
        self.function = function
        self.allow_host_reads = allow_host_reads
        self.max_programs = max_programs
        self._programs = collections.OrderedDict()  # signature -> [Program], oldest first
        self._seen = collections.OrderedDict()      # signatures called eagerly once
        self._counts = collections.Counter()
        self._warned = False
        self._lock = threading.RLock()

    def __call__(self, *args, **kwargs):
        if self.allow_host_reads:
            if not self._warned:
                self._warned = True
                warnings.warn(f"fa.capture: '{self.__name__}' allows host reads, so it "
                              "runs eagerly on every call", stacklevel=2)
            return self._eager(args, kwargs)
        if modes.capture is not None:  # inside another capture: part of its program
            return self.function(*args, **kwargs)
        key = signature(args, kwargs)
        with self._lock:
            program = self._program_for(key)
            if program is not None:
                self._counts["replays"] += 1
                return program.replay(args, kwargs)
            if key not in self._seen:
                self._remember(self._seen, key, True)
                return self._eager(args, kwargs)
            result, program = record(self.function, self.__name__, args, kwargs)
            self._counts["recordings"] += 1
            self._add(key, program)
            return result

    def cache_info(self):
        """(eager calls, recordings, replays, programs kept)."""
        return CacheInfo(self._counts["eager"], self._counts["recordings"],
                         self._counts["replays"], sum(map(len, self._programs.values())))

    def _eager(self, args, kwargs):
        self._counts["eager"] += 1
        return self.function(*args, **kwargs)

    def _program_for(self, key):
        programs = self._programs.get(key)
        if programs is None:
            return None
        self._programs.move_to_end(key)
        for program in programs:
            if program.applies():
                return program
        return None

    def _add(self, key, program):
        programs = self._programs.setdefault(key, [])
        programs.insert(0, program)
        self._programs.move_to_end(key)
        while sum(map(len, self._programs.values())) > self.max_programs:
            oldest = next(iter(self._programs))
            self._programs[oldest].pop()
            if not self._programs[oldest]:
                del self._programs[oldest]

    def _remember(self, table, key, value):
        table[key] = value
        while len(table) > 4 * self.max_programs:
            table.popitem(last=False)


def signature(args, kwargs):
    """The guard on a call's arguments and modes: two calls with equal signatures can
    share a program."""
    for i, arg in enumerate(args):
        if isinstance(arg, Tensor) and arg._node is not None:
            raise TypeError(f"capture: argument {i} was computed by recorded ops; pass a "
                            "leaf tensor (e.g. t.detach()) or an array")
    return (_key(args), _key(kwargs), modes.grad_enabled, modes.anomaly)


def _key(obj):
    if isinstance(obj, np.ndarray):
        return ("array", obj.shape, obj.dtype.str, obj.strides)
    if isinstance(obj, Tensor):
        value = obj._value
        return ("tensor", value.shape, value.dtype.str, value.strides, obj.requires_grad)
    kind = type(obj)
    if kind in (tuple, list):
        return (kind, tuple(map(_key, obj)))
    if kind is dict:
        return (dict, tuple(sorted((k, _key(v)) for k, v in obj.items())))
    try:
        hash(obj)
    except TypeError:
        return ("object", id(obj))
    return ("value", kind, obj)
