"""Signals: a compiled loop runs Python's signal handlers only when it returns to the
interpreter, so long compiled loops (the reverse sweep) call `check_signals` between
steps."""
from cpython.exc cimport PyErr_CheckSignals


def check_signals():
    """Run Python's signal handlers now (raising KeyboardInterrupt after Ctrl-C)."""
    PyErr_CheckSignals()
