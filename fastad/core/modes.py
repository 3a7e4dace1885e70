"""Thread-local modes: whether ops record (`no_grad`, `enable_grad`) and whether NaN and
Inf raise (`detect_anomaly`). One thread's mode never affects another thread."""
import functools
import threading


class _Modes(threading.local):
    grad_enabled = True
    anomaly = False
    plain = True  # grad_enabled and not anomaly: record's common case, in one lookup

    def set(self, attribute, value):
        setattr(self, attribute, value)
        self.plain = self.grad_enabled and not self.anomaly


modes = _Modes()


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
