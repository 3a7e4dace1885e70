"""Recording: one ordinary (eager) call of the captured function, during which every
`replayed` call made from the function's own code -- ops, the sweep's steps, optimizer
updates, dropout draws -- is logged as a step of the program, with its arguments and
results named by slots (see slots.py).

Only the outermost replayed call is a step: an op that calls other ops, or an
optimizer's step that reads `.value`, is made again as a whole.
"""
import os
import traceback

import numpy as np

from ..core.modes import modes
from ..core.tape import on_tape
from ..core.tensor import Tensor, make_tensor
from .slots import Nest, Out, Ref, TensorArgument, TensorRef, is_tracked_scalar, nest


class CaptureError(RuntimeError):
    """fa.capture cannot record the function as written (e.g. it reads a value on the host)."""


_PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Step:
    """One replayed call: `function(*args, **kwargs)`, its results stored in slots; and
    the objects of the recorded call, for lowering (plan.py)."""

    __slots__ = ("function", "args", "kwargs", "outputs", "recorded_args",
                 "recorded_kwargs", "result", "saved")

    def __init__(self, function, args, kwargs, outputs, recorded):
        self.function, self.args, self.kwargs, self.outputs = function, args, kwargs, outputs
        self.recorded_args, self.recorded_kwargs, self.result, self.saved = recorded


class Recorder:
    """Logs the steps of one call of `name` (see the module docstring)."""

    def __init__(self, name):
        self.name = name
        self.steps = []
        self.objects = []     # slot -> the object it held while recording (keeps ids unique)
        self.kept = []        # the Tensors in `tensors`, kept alive for the same reason
        self.slot_of = {}     # id(object) -> slot, for every object a step made or an argument
        self.computed = {}    # id(array) -> slot, for arrays a step returned or arguments
        self.tensors = {}     # id(Tensor) -> slot of its array, for Tensors a step returned
        self.arguments = set()  # ids of the argument Tensors (reading them is no host read)
        self.leaves = {}      # id -> (Tensor, requires_grad): live tensors the steps read
        self.modules = {}     # id -> (Module, state): modules the function called
        self.saved = None     # the values saved by the ops of the step being recorded
        self.depth = 0

    # --- the calls the tape makes (see fastad/core/modes.py and tape.py) ------------
    def call(self, function, args, kwargs):
        if self.depth:
            return function(*args, **kwargs)
        step_args, step_kwargs = self.template(args), self.template(kwargs)
        self.saved, self.depth = [], 1
        try:
            result = function(*args, **kwargs)
        finally:
            self.depth = 0
        saved, self.saved = tuple(self.saved), None
        outputs = Nest(tuple, None, (self.made(result, computed=True), self.made(saved)))
        self.steps.append(Step(function, step_args, step_kwargs, outputs,
                               (args, kwargs, result, saved)))
        return result

    def recorded(self, vjp, value, inputs, saved):
        if not self.depth:
            raise CaptureError(f"fa.capture: the op '{vjp.op_name}' recorded outside a "
                               "replayed call; mark its function @public or @replayed")
        self.saved.append(saved)
        if not modes.grad_enabled:
            return make_tensor(value, vjp, None)
        return on_tape(vjp, value, inputs, saved)

    def host_read(self, t, what):
        if self.depth or id(t) in self.arguments:
            return
        raise CaptureError(
            f"fa.capture: {what} at {_caller()} reads a tensor's value on the host while "
            f"'{self.name}' is recorded; a replay would not read it again, so a branch or "
            "number computed from it would be frozen. Read it outside the captured "
            "function (return the tensor), or mark the function "
            "fa.capture(allow_host_reads=True) to run it eagerly")

    def module_called(self, module):
        if id(module) not in self.modules:
            self.modules[id(module)] = (module, module_state(module))

    # --- arguments, and the templates of a step's arguments and results -------------
    def argument(self, obj):
        """The template by which a replay puts this call's argument into its slots."""
        kind = type(obj)
        if kind in (tuple, list):
            return nest(obj, [self.argument(item) for item in obj])
        if kind is dict:
            return nest(obj, [self.argument(item) for item in obj.values()])
        if isinstance(obj, Tensor):
            self.arguments.add(id(obj))
            return TensorArgument(self._slot(obj, computed=False),
                                  self._slot(obj._value, computed=True))
        if isinstance(obj, np.ndarray):
            return Out(self._slot(obj, computed=True), False)
        return obj

    def template(self, obj):
        """What a step reads, in terms of slots: objects a step made or the caller passed
        become markers; anything else is kept as it is."""
        slot = self.slot_of.get(id(obj))
        if slot is not None:
            return Ref(slot)
        kind = type(obj)
        if kind in (tuple, list):
            return nest(obj, [self.template(item) for item in obj])
        if kind is dict:
            return nest(obj, [self.template(item) for item in obj.values()])
        if isinstance(obj, Tensor):
            return self._tensor_template(obj)
        if isinstance(obj, np.ndarray):
            _refuse_host_view(obj, self)
        return obj

    def _tensor_template(self, t):
        slot = self.tensors.get(id(t))
        if slot is None:
            slot = self.computed.get(id(t._value))
        if slot is None:  # t.detach() of a computed tensor: a full view of its array
            base = t._value.base
            if (isinstance(base, np.ndarray) and id(base) in self.computed
                    and memory(base) == memory(t._value)):
                slot = self.computed[id(base)]
        if slot is None:  # a parameter, or another tensor made outside the function
            self.leaves[id(t)] = (t, t.requires_grad)
            return t
        origin = getattr(t, "_origin", None)
        return TensorRef(slot, t.requires_grad,
                         None if origin is None else self.template(origin))

    def made(self, result, computed=False):
        """The template that stores a step's result in new slots. `computed`: results
        (not saved values) whose arrays a new Tensor may be made over."""
        kind = type(result)
        if kind in (tuple, list):
            items = tuple(self.made(item, computed) for item in result)
            # a vjp reads its saved tuple back as a whole
            whole = self._slot(result, computed=False) \
                if kind is tuple and result and not computed else None  # () is shared
            return Nest(kind, None, items, whole)
        if kind is dict:
            return Nest(dict, tuple(result), tuple(self.made(v, computed)
                                                  for v in result.values()))
        if isinstance(result, Tensor):
            if result.requires_grad and result._node is None:
                return None  # a parameter (no op makes one): it stays live
            slot = self._slot(result._value, computed)
            self.tensors[id(result)] = slot
            self.kept.append(result)
            return Out(slot, True)
        if isinstance(result, np.ndarray) or is_tracked_scalar(result):
            return Out(self._slot(result, computed), False)
        return None

    def _slot(self, obj, computed):
        slot = len(self.objects)
        self.objects.append(obj)
        self.slot_of[id(obj)] = slot
        if computed:
            self.computed[id(obj)] = slot
        return slot


def module_state(module):
    """What a recorded program assumes of a module it called: its training mode, and that
    none of its other attributes (parameters, submodules, settings) was assigned since."""
    return module.training, module._changes


def memory(array):
    """An array's memory and layout: two arrays with equal ones are views of each other."""
    return array.__array_interface__["data"][0], array.shape, array.strides, array.dtype


def with_bases(array):
    """`array`, then each object it is a view of (its .base, that one's, ...)."""
    while array is not None:
        yield array
        array = getattr(array, "base", None)


def _refuse_host_view(array, recorder):
    if any(id(base) in recorder.computed for base in with_bases(array.base)):
        raise CaptureError(
            f"fa.capture: at {_caller()}, a NumPy view of an array computed inside "
            f"'{recorder.name}' reaches an op; NumPy work is not recorded, so a replay "
            "would reuse this call's values. Index the tensor with fastad instead")


def _caller():
    """file:line of the innermost frame outside fastad (the user's line)."""
    for frame in reversed(traceback.extract_stack()):
        if not os.path.abspath(frame.filename).startswith(_PACKAGE + os.sep):
            return f"{frame.filename}:{frame.lineno}"
    return "an unknown line"
