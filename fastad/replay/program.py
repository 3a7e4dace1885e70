"""A recorded program, and its replay: the steps run again on the slots of this call,
without the tape (no Tensors for the caller to see, no Nodes, no sweep bookkeeping)."""
import numpy as np

from ..core.modes import set_capture
from ..core.tensor import make_tensor
from .recorder import Recorder, module_state
from . import lowering_steps  # noqa: F401  (importing it registers its lowerings)
from .lowering import LOWERINGS
from .native import compile_steps
from .plan import Plan, Everything
from .slots import detached, materialize, reads, store, stores


class Replayer:
    """What the tape talks to while a program replays (see fastad/core/modes.py):
    replayed calls inside a step run as they are, ops hand over what they save."""

    __slots__ = ("saved",)

    def __init__(self):
        self.saved = None

    def call(self, function, args, kwargs):
        return function(*args, **kwargs)

    def recorded(self, vjp, value, inputs, saved):
        self.saved.append(saved)
        return make_tensor(value, vjp, None)

    def host_read(self, t, what):
        pass

    def module_called(self, module):
        pass


class Program:
    """The instructions of one recorded call (plan.py), and what its replays assume
    (see `applies`)."""

    def __init__(self, recorder, arguments, output):
        plan = Plan(recorder, arguments, output, LOWERINGS)
        self.fixed = plan.objects   # the plan's buffers and constants; None: set by a replay
        recorded = list(recorder.objects) + [None] * (len(plan.objects) - len(recorder.objects))
        for slot, tensor in plan.live.values():
            recorded[slot] = tensor._value
        self.machine, self.steps = compile_steps(plan.instructions, recorded)
        self.live = tuple(plan.live.values())
        self.fresh = tuple(plan.fresh)
        self.arguments = stores(arguments, Everything())  # where a call's (args, kwargs) go
        self.output = output                               # template of the result
        # results the plan holds in its own buffers are copied: the next replay reuses them
        self.copied = [slot for slot in reads(output, set()) if self.fixed[slot] is not None]
        self.leaves = list(recorder.leaves.values())
        self.modules = list(recorder.modules.values())

    def applies(self):
        """Whether the state this program was recorded in still holds: the tensors it
        reads from outside still require (or not) a gradient, and no attribute of a
        module it called was assigned since."""
        return (all(t.requires_grad == wanted for t, wanted in self.leaves)
                and all(module_state(m) == state for m, state in self.modules))

    def replay(self, args, kwargs):
        objects = list(self.fixed)
        store(self.arguments, (args, kwargs), objects)
        for slot, tensor in self.live:
            objects[slot] = tensor._value
        for slots, shape, dtype, order in self.fresh:
            array = np.empty(shape, dtype, order)
            for slot in slots:
                objects[slot] = array
        replayer = Replayer()
        previous = set_capture(replayer)
        try:
            self.machine.run(objects, replayer)
        finally:
            set_capture(previous)
        for slot in self.copied:
            objects[slot] = objects[slot].copy()
        return materialize(self.output, objects, {})


def record(function, name, args, kwargs):
    """Call `function` eagerly while recording it: (its result, the Program)."""
    recorder = Recorder(name)
    arguments = recorder.argument((args, kwargs))
    previous = set_capture(recorder)
    try:
        result = function(*args, **kwargs)
    finally:
        set_capture(previous)
    return result, Program(recorder, arguments, detached(recorder.template(result)))
