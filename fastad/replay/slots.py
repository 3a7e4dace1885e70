"""How a captured program names its arrays: every object a step reads or makes lives in
a numbered slot, and a step's arguments and results are templates over those slots.

A template is the object itself (a constant, or a live object such as a Parameter or
an optimizer, passed as it is), or one of the markers below. Recording builds them
(fastad/replay/recorder.py); a replay fills them in (`materialize`) and stores the parts
of what a step returns that later steps read in their slots (`stores`, `store`).
"""
import numpy as np

from ..core.tensor import make_tensor


class Ref:
    """The object in a slot."""

    __slots__ = ("slot",)

    def __init__(self, slot):
        self.slot = slot


class TensorRef:
    """A Tensor over the array in a slot, as the recorded one was (requires_grad, and the
    softmax a log(softmax(z)) reads as log_softmax(z))."""

    __slots__ = ("slot", "requires_grad", "origin")

    def __init__(self, slot, requires_grad, origin):
        self.slot, self.requires_grad, self.origin = slot, requires_grad, origin


class Nest:
    """A tuple, list or dict holding markers; as a result template, `slot` (if not None)
    also receives the container itself."""

    __slots__ = ("kind", "keys", "items", "slot")

    def __init__(self, kind, keys, items, slot=None):
        self.kind, self.keys, self.items, self.slot = kind, keys, items, slot


class Out:
    """Where a step's result goes: the object into a slot, or for a Tensor its array."""

    __slots__ = ("slot", "tensor")

    def __init__(self, slot, tensor):
        self.slot, self.tensor = slot, tensor


class TensorArgument:
    """Where a replay puts a Tensor argument: itself, and its array, each into a slot."""

    __slots__ = ("slot", "value_slot")

    def __init__(self, slot, value_slot):
        self.slot, self.value_slot = slot, value_slot


def nest(container, items):
    """`container` rebuilt from `items` (templates of its entries) if any is a marker,
    else the container itself (a constant)."""
    if not any(type(item) in MARKERS for item in items):
        return container
    if type(container) is dict:
        return Nest(dict, tuple(container), tuple(items))
    return Nest(type(container), None, tuple(items))


def detached(template):
    """`template` with each Tensor made as one that requires no gradient (what a replay
    returns to the caller: there is no tape behind it)."""
    kind = type(template)
    if kind is TensorRef:
        return TensorRef(template.slot, False, template.origin)
    if kind is Nest:
        return Nest(template.kind, template.keys, tuple(map(detached, template.items)))
    return template


def materialize(template, slots, made):
    """The object `template` stands for in this replay; `made` keeps one Tensor per slot
    within a step, so an op sees `x * x` as the same operand twice."""
    kind = type(template)
    if kind is Ref:
        return slots[template.slot]
    if kind is TensorRef:
        t = made.get(template.slot)
        if t is None:
            t = made[template.slot] = make_tensor(slots[template.slot], None, None)
            t.requires_grad = template.requires_grad
            if template.origin is not None:
                t._origin = materialize(template.origin, slots, made)
        return t
    if kind is Nest:
        items = [materialize(item, slots, made) for item in template.items]
        if template.kind is dict:
            return dict(zip(template.keys, items))
        return template.kind(items)
    return template


def reads(template, into):
    """Add the slots `template` reads to the set `into`."""
    kind = type(template)
    if kind is Ref or kind is TensorRef:
        into.add(template.slot)
        if kind is TensorRef and template.origin is not None:
            reads(template.origin, into)
    elif kind is Nest:
        for item in template.items:
            reads(item, into)
    return into


def stores(template, needed, path=()):
    """The (slot, path, tensor) triples of a result template whose slot is `needed`:
    `path` indexes into the result (keys, for a dict) to the object to store, `tensor`
    says to store a Tensor's array. A replay stores only what a later step reads."""
    kind = type(template)
    if kind is Out or kind is TensorArgument:
        found = []
        if template.slot in needed:
            found.append((template.slot, path, kind is Out and template.tensor))
        if kind is TensorArgument and template.value_slot in needed:
            found.append((template.value_slot, path, True))
        return found
    if kind is not Nest:
        return []
    found = [(template.slot, path, False)] \
        if template.slot is not None and template.slot in needed else []
    keys = template.keys if template.kind is dict else range(len(template.items))
    for key, item in zip(keys, template.items):
        found += stores(item, needed, path + (key,))
    return found


def store(plan, result, slots):
    """Store the parts of a step's `result` that `plan` (from `stores`) names."""
    for slot, path, tensor in plan:
        part = result
        for key in path:
            part = part[key]
        slots[slot] = part._value if tensor else part


MARKERS = (Ref, TensorRef, Nest, Out, TensorArgument)


def is_tracked_scalar(obj):
    """Results kept in slots besides arrays and Tensors: scalars made by a step (never
    Python's shared small ints, bools or None, whose identity means nothing)."""
    return type(obj) is float or isinstance(obj, np.generic)
