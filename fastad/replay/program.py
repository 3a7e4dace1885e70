"""A recorded program, and its replay: the steps run again on the slots of this call,
without the tape (no Tensors for the caller to see, no Nodes, no sweep bookkeeping)."""
from ..core.modes import set_capture
from ..core.tensor import make_tensor
from .recorder import Recorder, module_state
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
    """The steps of one recorded call, and what its replays assume (see `applies`)."""

    def __init__(self, recorder, arguments, output):
        needed = reads(output, set())
        for step in recorder.steps:
            reads(step.args, needed)
            reads(step.kwargs, needed)
        # (function, args template, kwargs template, what to store of its result)
        self.steps = [(step.function, step.args, step.kwargs, stores(step.outputs, needed))
                      for step in recorder.steps]
        self.slot_count = len(recorder.objects)
        self.arguments = stores(arguments, needed)  # where a call's (args, kwargs) go
        self.output = output                        # template of the function's result
        self.leaves = list(recorder.leaves.values())
        self.modules = list(recorder.modules.values())

    def applies(self):
        """Whether the state this program was recorded in still holds: the tensors it
        reads from outside still require (or not) a gradient, and each module it called
        has the same training mode, parameters and submodules."""
        return (all(t.requires_grad == wanted for t, wanted in self.leaves)
                and all(module_state(m) == state for m, state in self.modules))

    def replay(self, args, kwargs):
        slots = [None] * self.slot_count
        store(self.arguments, (args, kwargs), slots)
        replayer = Replayer()
        previous = set_capture(replayer)
        try:
            for function, step_args, step_kwargs, plan in self.steps:
                made = {}
                replayer.saved = []
                result = function(*materialize(step_args, slots, made),
                                  **materialize(step_kwargs, slots, made))
                store(plan, (result, replayer.saved), slots)
        finally:
            set_capture(previous)
        return materialize(self.output, slots, {})


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
