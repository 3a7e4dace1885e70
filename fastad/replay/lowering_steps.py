"""Lowerings of the recorded steps that are not ops: the sweep's own (its seed, the
accumulation of contributions, `.grad`, fa.grad's results, the calls to listeners) and
effects (optimizer updates, zero_grad). See lowering.py for what a lowering is.

What leaves a replay (.grad, fa.grad's results) must not be a buffer the next replay
rewrites: those steps get copies of the plan's buffers (the values eager gives).
"""
import numpy as np

from ..core.gradients import _deliver, _read_only
from ..core.sweep import _combine, _tell_final, _tell_progress, copy_of
from ..kernels import views
from ..nn.modules import Module
from ..optim.optimizer import Optimizer
from .lowering import lowers
from .plan import Slot, Unsupported
from .recorder import with_bases


# --- the sweep's own steps ----------------------------------------------------------

@lowers(copy_of)
def seed_copy(context, seed):
    context.call(np.copyto, context.buffer(context.result), context.read(seed))


@lowers(_combine)
def combine(context, existing, contribution, owned):
    if owned:  # contribution += existing, in place
        target = context.read(contribution)
        context.call(np.add, target, context.read(existing), target)
        context.same(context.result, target)
    elif existing.shape == contribution.shape:
        context.call(np.add, context.read(existing), context.read(contribution),
                     context.buffer(context.result))
    else:
        raise Unsupported("broadcast contributions")


@lowers(_deliver)
def deliver(context, gradients, replaced):
    if replaced:
        raise Unsupported("gradients a listener replaced")
    flat = []
    for leaf, g, shared in gradients:
        value = context.read(g)
        # an array each replay allocates is the replay's to hand out; others are checked
        flat += [context.tensor(leaf), value, shared, not _allocated(context, value)]
    context.call(_deliver_all, context.plan.owned, *flat)


def _allocated(context, value):
    """Whether an instruction argument is a slot whose array each replay allocates."""
    return type(value) is Slot and context.plan.allocates(value.index)


def _owned(array, owned):
    """Whether `array` is, or is a view of, a buffer the plan owns (a later replay
    rewrites it)."""
    return any(id(base) in owned for base in with_bases(array))


def _deliver_all(owned, *flat):
    gradients = [(leaf, g, shared or (may_be_owned and _owned(g, owned)))
                 for leaf, g, shared, may_be_owned
                 in zip(flat[0::4], flat[1::4], flat[2::4], flat[3::4])]
    _deliver.__wrapped__(gradients, {})


@lowers(_tell_final)
def tell_final(context, listener, leaf, gradient):
    context.call(_tell_final, listener, context.tensor(leaf), context.read(gradient))


@lowers(_tell_progress)
def tell_progress(context, listener):
    context.call(_tell_progress, listener)


@lowers(_read_only)
def read_only(context, buffer):
    value = context.read(buffer)
    if _allocated(context, value):
        # an array this replay allocated for the result: a view of it, no copy
        context.call(views.read_only, value, result=context.result)
    else:
        context.call(_read_only_of, context.plan.owned, value, result=context.result)


def _read_only_of(owned, buffer):
    return _read_only.__wrapped__(buffer.copy() if _owned(buffer, owned) else buffer)


# --- effects: optimizer updates and zeroed gradients -----------------------------------

@lowers(Optimizer.step)
def optimizer_step(context, optimizer):
    context.call(optimizer.replayed_step())


@lowers(Optimizer.zero_grad, Module.zero_grad)
def effect(context, *args):
    """A step that only changes state (its arguments are live objects): called as is."""
    context.call(context.function, *(context.read(a) for a in args))
