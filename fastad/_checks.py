"""Checks shared by the state_dict loaders of fastad.nn and fastad.optim."""


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
