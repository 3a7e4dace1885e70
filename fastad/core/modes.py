"""Thread-local modes: whether ops record (`no_grad`, `enable_grad`), whether NaN and
Inf raise (`detect_anomaly`), and the `fa.capture` recorder or replayer at work.
One thread's mode never affects another thread."""
import functools
import threading

from ..kernels import hooks


class _Modes(threading.local):
    grad_enabled = True
    anomaly = False
    capture = None  # fastad.capture's recorder or replayer, while one runs in this thread
    plain = True  # grad enabled, no anomaly, no capture: record's common case, in one lookup

    def set(self, attribute, value):
        was_plain = self.plain
        setattr(self, attribute, value)
        self.plain = self.grad_enabled and not self.anomaly and self.capture is None
        if self.plain != was_plain:
            with _count_lock:
                special.count += -1 if self.plain else 1


class _Count:
    __slots__ = ("count",)

    def __init__(self):
        self.count = 0


# How many threads are in a mode other than the defaults (no_grad, detect_anomaly, a
# capture). Reading a thread-local costs ~150 ns, so the hot paths (record, each op call,
# each `.value`) read `modes` only while this is nonzero.
special = _Count()
_count_lock = threading.Lock()
modes = _Modes()


def set_capture(handler):
    """Make `handler` (a recorder or replayer, or None) this thread's capture; returns
    the one it replaces."""
    previous = modes.capture
    modes.set("capture", handler)
    if (previous is None) != (handler is None):
        with _count_lock:
            hooks.capturing(1 if previous is None else -1)
    return previous


class _ThreadMode:
    """A thread-local switch: a context manager, and a decorator as `@mode` or `@mode()`."""

    attribute = None
    value = None

    def __new__(cls, func=None):
        if func is not None:  # used as @mode
            return cls._decorate(func)
        return super().__new__(cls)

    def __init__(self, func=None):
        self._saved = threading.local()

    def __enter__(self):
        stack = self._saved.__dict__.setdefault("stack", [])
        stack.append(getattr(modes, self.attribute))
        modes.set(self.attribute, self.value)
        return self

    def __exit__(self, *exc):
        modes.set(self.attribute, self._saved.stack.pop())
        return False

    def __call__(self, func):  # used as @mode()
        return self._decorate(func)

    @classmethod
    def _decorate(cls, func):
        @functools.wraps(func)
        def run_in_mode(*args, **kwargs):
            with cls():
                return func(*args, **kwargs)
        return run_in_mode


class no_grad(_ThreadMode):
    """Record nothing (in this thread) inside the block or the decorated function."""

    attribute = "grad_enabled"
    value = False


class enable_grad(_ThreadMode):
    """Record again inside a no_grad block (in this thread)."""

    attribute = "grad_enabled"
    value = True


class detect_anomaly(_ThreadMode):
    """Raise FloatingPointError at the first op whose forward value or backward
    contribution holds NaN or Inf (in this thread)."""

    attribute = "anomaly"
    value = True


def is_grad_enabled():
    return modes.grad_enabled


def replayed(function):
    """Marks a function whose every call a captured program makes again when it replays:
    each public op, and whatever else computes arrays or changes state for the tape (the
    sweep's steps, optimizer updates, dropout's draws). See fastad/replay/. While no
    thread captures, a call goes straight to `function` (csrc/hooks.pyx)."""
    return hooks.hook(function, _diverted)


def _diverted(function, *args, **kwargs):
    """A `replayed` function's call while some thread captures: to this thread's
    recorder or replayer, if it has one."""
    capture = modes.capture
    if capture is not None:
        return capture.call(function, args, kwargs)
    return function(*args, **kwargs)
