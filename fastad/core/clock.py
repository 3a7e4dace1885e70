"""One clock numbers recorded nodes as they are made and stamps in-place updates, so a
node is stale exactly when one of its leaves, or the memory a leaf's value lives in,
was stamped after it."""
import itertools
import weakref

import numpy as np

tick = itertools.count().__next__
_written = {}  # id(memory owner) -> the tick of the last in-place write into that memory


def memory_owner(array):
    """The array that owns `array`'s memory (the end of its chain of .base arrays)."""
    while isinstance(array.base, np.ndarray):
        array = array.base
    return array


def mark_modified(tensor):
    """Record that `tensor`'s value was changed in place (an optimizer step, a load,
    `+=` under no_grad): a sweep through an op recorded before this point raises instead
    of using the new value. The memory is stamped too, since views and detached copies
    of a Parameter share it: writing through them changes the Parameter."""
    tensor._modified_at = stamp = tick()
    owner = memory_owner(tensor._value)
    key = id(owner)
    if key not in _written:
        weakref.finalize(owner, _written.pop, key, None)
    _written[key] = stamp


def modified_at(tensor):
    """The tick of the last in-place change to `tensor` or to the memory it lives in."""
    return max(tensor._modified_at, _written.get(id(memory_owner(tensor._value)), -1))
