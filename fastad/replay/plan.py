"""From recorded steps to a replayable instruction list, with a memory plan.

Each recorded step is either lowered (lowering.py: the step's kernels called straight
on buffers the plan allocates once) or kept as a Python step (the recorded call made
again, on Tensors over the slots). native.py then turns the instructions into the
compiled loop's steps. Slots hold a replay's objects:

- fixed: a buffer the plan owns (a lowered step's result, reused by every replay) or a
  constant, set once;
- argument: the call's arguments; live: the value of a tensor made outside the function
  (a parameter), read at the start of each replay and after each Python step;
- dynamic: what an instruction or a Python step returns during the replay.

Buffers never escape into what a replay leaves behind: a lowered step whose result
becomes a `.grad`, one of fa.grad's results or the function's result writes into an
array allocated at the start of each replay (as eager calls allocate theirs); any plan
buffer that reaches those anyway is copied (lowering.py).
"""
import collections

import numpy as np

from ..core.gradients import _deliver, _read_only
from ..core.sweep import apply_vjp
from ..core.tensor import Tensor
from .recorder import memory, with_bases
from .slots import TensorRef, materialize, reads, store, stores


class Slot:
    """An instruction argument read from the slots when the instruction runs."""

    __slots__ = ("index",)

    def __init__(self, index):
        self.index = index


class Instruction:
    """`function(*args)`, its Slot arguments read at run time; its result stored in
    `outputs`, or with `unpack`, its i-th result in the slots `outputs[i]`."""

    __slots__ = ("function", "args", "patches", "outputs", "unpack")

    def __init__(self, function, args, outputs, unpack=False):
        self.function = function
        self.args = [None if type(a) is Slot else a for a in args]
        self.patches = tuple((i, a.index) for i, a in enumerate(args) if type(a) is Slot)
        self.outputs = tuple(map(tuple, outputs)) if unpack else tuple(outputs)
        self.unpack = unpack

    def run(self, objects, replayer):
        args = self.args  # patched in place: a program replays in one thread at a time
        for i, slot in self.patches:
            args[i] = objects[slot]
        result = self.function(*args)
        if self.unpack:
            for slots, part in zip(self.outputs, result):
                for slot in slots:
                    objects[slot] = part
        else:
            for slot in self.outputs:
                objects[slot] = result

    def reads(self):
        return {slot for _, slot in self.patches}


class PythonStep:
    """A recorded call made again, on Tensors over the slots."""

    __slots__ = ("function", "args", "kwargs", "plan", "refresh")

    def __init__(self, step, needed, refresh):
        self.function, self.args, self.kwargs = step.function, step.args, step.kwargs
        self.plan = stores(step.outputs, needed)
        self.refresh = refresh  # the live slots, read again after the call

    def run(self, objects, replayer):
        made = {}
        replayer.saved = []
        result = self.function(*materialize(self.args, objects, made),
                               **materialize(self.kwargs, objects, made))
        store(self.plan, (result, replayer.saved), objects)
        for slot, tensor in self.refresh:
            objects[slot] = tensor._value

    def reads(self):
        return reads(self.args, reads(self.kwargs, set()))


class Unsupported(Exception):
    """A lowering cannot express this recorded step: it stays a Python step."""


class Plan:
    """Builds the instruction list of a recording (see the module docstring)."""

    def __init__(self, recorder, arguments, output, lowerings):
        self.recorder = recorder
        self.slots_of = collections.defaultdict(list)  # id(recorded object) -> its slots
        for slot, obj in enumerate(recorder.objects):
            self.slots_of[id(obj)].append(slot)
        self.live = {}  # id(tensor) -> (slot, tensor)
        self.escaping = _escaping(recorder.steps, output, recorder.objects)
        self.fresh = []  # (slots, shape, dtype, order): arrays each replay allocates
        self.owned = set()  # ids of the buffers the plan allocated (a replay reuses them)
        self.arguments = arguments
        self.output = output
        self.lowerings = lowerings
        python = set()  # steps kept in Python (grows until every needed slot is produced)
        while True:
            self.live.clear()
            self.fresh.clear()
            self.objects = [None] * len(recorder.objects)
            program, unproduced = self._build(python)
            if not unproduced:
                break
            python |= unproduced
        self.instructions = program

    def _build(self, python):
        self.bound = {slot for slot, _, _ in stores(self.arguments, Everything())}
        lowered = []  # (step number, step, its instructions or None for a Python step)
        for number, step in enumerate(self.recorder.steps):
            instructions = None if number in python else self._lower(step)
            if instructions is None:
                self.bound.update(_output_slots(step))
            lowered.append((number, step, instructions))
        refresh = tuple(self.live.values())
        needed = reads(self.output, set())
        for _, step, instructions in lowered:
            if instructions is None:
                needed |= reads(step.args, reads(step.kwargs, set()))
            else:
                for instruction in instructions:
                    needed |= instruction.reads()
        program, unproduced = [], set()
        for number, step, instructions in lowered:
            if instructions is None:
                program.append(PythonStep(step, needed, refresh))
                continue
            if any(slot in needed and slot not in self.bound for slot in _output_slots(step)):
                unproduced.add(number)
            program.extend(instructions)
        return program, unproduced

    def _lower(self, step):
        lowering = self.lowerings.get(_key(step))
        if lowering is None:
            return None
        bound, objects = set(self.bound), list(self.objects)
        context = Lowering(self, step)
        try:
            lowering(context, *step.recorded_args, **step.recorded_kwargs)
            context.alias_outputs(step)
        except Unsupported:
            self.bound, self.objects[:len(objects)] = bound, objects
            return None
        return context.instructions

    def allocates(self, slot):
        """Whether each replay allocates the array `slot` holds (see Lowering.buffer)."""
        return any(slot in slots for slots, _, _, _ in self.fresh)

    def live_slot(self, tensor):
        entry = self.live.get(id(tensor))
        if entry is None:
            entry = self.live[id(tensor)] = (len(self.objects), tensor)
            self.objects.append(None)
        return entry[0]


def _escaping(steps, output, objects):
    """ids of the recorded arrays a replay hands out (gradients put in `.grad`, those
    fa.grad returns, the function's result) and of the arrays they are views of."""
    handed_out = [objects[slot] for slot in reads(output, set())]
    for step in steps:
        if step.function is _deliver.__wrapped__:
            handed_out += [g for _, g, _ in step.recorded_args[0]]
        elif step.function is _read_only.__wrapped__:
            handed_out.append(step.recorded_args[0])
    return {id(base) for array in handed_out for base in with_bases(array)}


def _key(step):
    """What selects a step's lowering: the function, or for a vjp the op it belongs to."""
    if step.function is apply_vjp:
        return ("vjp", step.recorded_args[0].op_name)
    return step.function


def _output_slots(step):
    return [slot for slot, _, _ in stores(step.outputs, Everything())]


class Everything:
    """A set that contains every slot."""

    def __contains__(self, item):
        return True


class Lowering:
    """What a lowering (lowering.py) uses to turn one recorded step into instructions."""

    def __init__(self, plan, step):
        self.plan = plan
        self.function = step.function
        self.result, self.saved = step.result, step.saved  # as recorded
        self.instructions = []
        self.read_objects = {}  # id(object read) -> the argument it was read as
        self.read_arrays = []   # (array read, the argument it was read as)

    def read(self, obj):
        """The instruction argument for an object the step read (for a Tensor, its
        array): a Slot, or the object itself for a constant or a buffer the plan owns."""
        value = self._read(obj)
        array = obj._value if isinstance(obj, Tensor) else obj
        self.read_objects[id(array)] = value
        if isinstance(array, np.ndarray):
            self.read_arrays.append((array, value))
        return value

    def _read(self, obj):
        plan = self.plan
        if isinstance(obj, Tensor):
            value = self._bound_slot(obj._value)
            if value is not None:
                return value
            if type(plan.recorder.template(obj)) is TensorRef:
                raise Unsupported("a tensor whose array no slot holds yet")
            return Slot(plan.live_slot(obj))  # a tensor made outside the function
        value = self._bound_slot(obj)
        if value is not None:
            return value
        if type(obj) is tuple:
            items = [self.read(item) for item in obj]
            if not any(type(item) is Slot for item in items):
                return tuple(items)
            slot = self.temporary()
            self.call(_tuple, *items, into=slot)
            return slot
        if id(obj) in plan.slots_of:
            raise Unsupported("a value the recording computed that no slot holds yet")
        if isinstance(obj, np.ndarray) and any(id(base) in plan.slots_of
                                               for base in with_bases(obj.base)):
            raise Unsupported("a view of an array the recording computed")
        return obj  # a constant

    def tensor(self, t):
        """The instruction argument for a Tensor object itself (a leaf whose .grad a
        step sets): the argument's slot, or the tensor made outside the function."""
        slot = self._bound_slot(t)
        return t if slot is None else slot

    def _bound_slot(self, obj):
        for slot in self.plan.slots_of.get(id(obj), ()):
            if slot in self.plan.bound:
                return self._bound(slot)
        return None

    def alias_outputs(self, step):
        """Bind the step's outputs that are objects it read (an adjoint passed through,
        an operand kept for the backward) to what was read."""
        by_memory = {memory(obj): value for obj, value in self.read_arrays}
        for slot in _output_slots(step):
            if slot in self.plan.bound:
                continue
            obj = self.plan.recorder.objects[slot]
            if id(obj) in self.read_objects:
                self.same(obj, self.read_objects[id(obj)])
            elif isinstance(obj, np.ndarray) and memory(obj) in by_memory:
                self.same(obj, by_memory[memory(obj)])  # a view the op took of an input

    def _bound(self, slot):
        fixed = self.plan.objects[slot]
        return fixed if fixed is not None else Slot(slot)

    def buffer(self, recorded):
        """A buffer of the plan, laid out like the recorded array, for every slot that
        held it: the argument a kernel writes the step's result into."""
        if not (recorded.flags.c_contiguous or recorded.flags.f_contiguous):
            raise Unsupported("a strided result")
        order = "F" if recorded.flags.f_contiguous and not recorded.flags.c_contiguous else "C"
        if id(recorded) in self.plan.escaping:
            slots = self.plan.slots_of[id(recorded)]
            self.plan.fresh.append((slots, recorded.shape, recorded.dtype, order))
            self.plan.bound.update(slots)
            return Slot(slots[0])
        buffer = np.empty(recorded.shape, recorded.dtype, order)
        self.plan.owned.add(id(buffer))
        self.same(recorded, buffer)
        return buffer

    def target(self, recorded, out):
        """(where a kernel writes the recorded contribution, whether it adds into it): into
        the adjoint the sweep passed if the recorded call did so, else a new buffer."""
        if out is not None and recorded is out:
            return self.read(out), True
        return self.buffer(recorded), False

    def scratch(self, shape, dtype):
        """A buffer of the plan that no recorded object names (a kernel's side output)."""
        buffer = np.empty(shape, dtype)
        self.plan.owned.add(id(buffer))
        return buffer

    def temporary(self):
        """A slot for a value one instruction makes and a later one reads."""
        self.plan.objects.append(None)
        return Slot(len(self.plan.objects) - 1)

    def same(self, recorded, value):
        """Every slot that held `recorded` holds `value` (a fixed object, or a Slot)."""
        slots = self.plan.slots_of.get(id(recorded), ())
        if type(value) is Slot:
            self.call(_identity, value, result=recorded)
            return
        for slot in slots:
            self.plan.objects[slot] = value
            self.plan.bound.add(slot)

    def call(self, function, *args, result=None, into=None, results=None):
        """Emit function(*args). Its return value becomes the slots of the recorded
        object `result`, or the temporary slot `into`; or each part of it the slots of
        the matching recorded object in `results`."""
        slots_of = self.plan.slots_of
        if results is not None:
            outputs = [slots_of.get(id(r), ()) if r is not None else () for r in results]
            self.plan.bound.update(slot for slots in outputs for slot in slots)
            self.instructions.append(Instruction(function, args, outputs, unpack=True))
            return
        outputs = [into.index] if into is not None else \
            slots_of.get(id(result), ()) if result is not None else ()
        self.instructions.append(Instruction(function, args, outputs))
        self.plan.bound.update(outputs)


def _identity(x):
    return x


def _tuple(*items):
    return items
