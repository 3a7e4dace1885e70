"""Checks shared by fastad.nn, fastad.optim and their state_dict loaders: numbers and
keys (`owner` and `name` say whose value it is in the error)."""
import numbers

import numpy as np


def real(owner, name, value):
    """value as a float: TypeError unless a real number (bool is not)."""
    if type(value) is float:  # the common case, without the slower checks below
        return value
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{owner}: {name} must be a real number, got {value!r}")
    try:
        return float(value)
    except OverflowError:
        raise ValueError(f"{owner}: Invalid {name}: {value!r} (too large for a float)") from None


def nonnegative(owner, name, value):
    """value as a float >= 0 (ValueError for a negative or NaN value)."""
    number = real(owner, name, value)
    if not number >= 0:  # also rejects NaN
        raise ValueError(f"{owner}: Invalid {name}: {value!r} (must be >= 0)")
    return number


# Step counts fit an int64, as in a saved checkpoint (and beta ** t in a float).
MAX_COUNT = 2 ** 63


def count(owner, name, value):
    """value as an int in [0, 2**63): TypeError unless an integer (bool is not)."""
    if type(value) is int and 0 <= value < MAX_COUNT:  # the common case
        return value
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{owner}: {name} must be an int, got {value!r}")
    if not 0 <= value < MAX_COUNT:
        raise ValueError(f"{owner}: Invalid {name}: {value!r} (must be in [0, 2**63))")
    return int(value)


def flag(owner, name, value):
    """value as True or False: TypeError for anything else (np.bool_ is accepted)."""
    if value is True or value is False:
        return value
    if not isinstance(value, np.bool_):
        raise TypeError(f"{owner}: {name} must be True or False, got {value!r}")
    return bool(value)


def positive(owner, name, value):
    """value as an int >= 1 (a count that must not be 0)."""
    number = count(owner, name, value)
    if number < 1:
        raise ValueError(f"{owner}: Invalid {name}: {value!r} (must be >= 1)")
    return number


def writable_in_place(array):
    """True when a kernel may write `array` as flat memory (C-contiguous, aligned)."""
    flags = array.flags
    return flags.c_contiguous and flags.writeable and flags.aligned


def key_problems(expected, given):
    """'missing key(s): ...; unexpected key(s): ...' comparing `given`'s keys with
    `expected` (any iterable of keys), or '' when they match."""
    expected = list(expected)
    missing = [k for k in expected if k not in given]
    unexpected = [k for k in given if k not in expected]
    problems = []
    if missing:
        problems.append(f"missing key(s): {', '.join(map(repr, missing))}")
    if unexpected:
        problems.append(f"unexpected key(s): {', '.join(map(repr, unexpected))}")
    return "; ".join(problems)
