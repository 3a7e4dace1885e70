"""The plan's instructions as the steps of the compiled replay loop (fastad.kernels.
machine): an instruction that calls a kernel on arrays of a known layout becomes a kernel
step on raw pointers, run without Python; any other stays a call step."""
import numpy as np

from ..kernels import machine, pointwise
from ..ops.linalg import gemm_into
from .lowering import _gemm_transposed_a, _gemm_transposed_b
from .plan import Instruction


def compile_steps(instructions, recorded):
    """(a Machine running `instructions`, [(kind, name)] of its steps: kind "kernel",
    "call" or "python"); recorded[slot] is the array a slot held when recorded (its
    layout is what every replay has), or None."""
    kernels = [_kernel_step(instruction, recorded) for instruction in instructions]
    read = set()
    for step in kernels:
        if step is not None:
            read |= step.slots
    program, summary = machine.Machine(len(recorded)), []
    for instruction, step in zip(instructions, kernels):
        name = getattr(instruction.function, "__name__", repr(instruction.function))
        if step is None:
            program.call(instruction, [s for s in _sets(instruction) if s in read])
            summary.append(("call" if isinstance(instruction, Instruction) else "python", name))
        else:
            step.add(program)
            summary.append(("kernel", name))
    return program, summary


def _sets(instruction):
    """The slots a Python instruction stores into."""
    if isinstance(instruction, Instruction):
        if instruction.unpack:
            return [slot for slots in instruction.outputs for slot in slots]
        return list(instruction.outputs)
    return [slot for slot, _, _ in instruction.plan] + [slot for slot, _ in instruction.refresh]


class _Step:
    """A kernel step to add, `builder(*args)` on the machine, and the slots its operands
    (_Operands) use."""

    def __init__(self, builder, *args, operands):
        self.builder, self.args = builder, args
        self.expected = {o.value: o.slot_array for o in operands if type(o.value) is int}
        self.slots = set(self.expected)

    def add(self, program):
        for slot, array in self.expected.items():
            program.expect(slot, array)
        getattr(program, self.builder)(*self.args)


def _kernel_step(instruction, recorded):
    if not isinstance(instruction, Instruction):
        return None
    translate = TRANSLATIONS.get(instruction.function)
    if translate is None:
        return None
    slots = dict(instruction.patches)  # argument position -> the slot it is read from
    operands = [_Operand(slots.get(i), recorded[slots[i]] if i in slots else arg)
                for i, arg in enumerate(instruction.args)]
    try:
        return translate(*operands)
    except _Unfit:
        return None


class _Unfit(Exception):
    """The instruction's operands are not what a kernel step takes."""


class _Operand:
    """An instruction argument: `value` for the machine (a slot number, a fixed array or
    a float constant) and `array`, the array it is (or was, when recorded)."""

    def __init__(self, slot, obj):
        self.array = obj if isinstance(obj, np.ndarray) else None
        self.value = slot if slot is not None else obj
        self.obj = obj
        self.slot_array = self.array  # the array the slot holds (array may be a view of it)

    def constant(self):
        """The float constant this argument is (not a slot: that would be frozen)."""
        if type(self.value) is int or not isinstance(self.obj, (float, np.floating)):
            raise _Unfit()
        return float(self.obj)

    def needs_array(self):
        if self.array is None or self.array.dtype not in (np.float32, np.float64):
            raise _Unfit()
        return self

    @property
    def T(self):
        transposed = _Operand(None, self.array.T)
        transposed.value = self.value if type(self.value) is int else self.array.T
        transposed.slot_array = self.slot_array
        return transposed


def _flat(*arrays):
    if not (all(a.flags.c_contiguous for a in arrays)
            or all(a.flags.f_contiguous for a in arrays)):
        raise _Unfit()


def _arithmetic(op, a, b, out):
    out.needs_array()
    arrays = [out.array]
    values = []
    for x in (a, b):
        if x.array is None:
            values.append(x.constant())
        else:
            arrays.append(x.needs_array().array)
            if x.array.shape != out.array.shape:
                raise _Unfit()
            values.append(x.value)
    _flat(*arrays)
    return _Step("arithmetic", int(op.obj), values[0], values[1], out.value, out.array,
                 a.array, b.array, operands=(a, b, out))


def _add(a, b, out):
    return _arithmetic(_Operand(None, pointwise.Arithmetic.ADD), a, b, out)


def _add_row(x, b, out):
    for o in (x, b, out):
        if not o.needs_array().array.flags.c_contiguous:
            raise _Unfit()
    return _Step("add_row", x.value, b.value, out.value, x.array, b.array, out.array,
                 operands=(x, b, out))


def _activation(kind):
    def translate(x, out):
        _flat(x.needs_array().array, out.needs_array().array)
        return _Step("activation", machine.ACTIVATIONS[kind], x.value, out.value, x.array,
                     out.array, operands=(x, out))
    return translate


def _activation_grad(kind):
    def translate(g, y, out, accumulate):
        _flat(g.needs_array().array, y.needs_array().array, out.needs_array().array)
        return _Step("activation_grad", machine.ACTIVATIONS[kind], g.value, y.value,
                     out.value, bool(accumulate.obj), g.array, y.array, out.array,
                     operands=(g, y, out))
    return translate


def _product(out, a, b, accumulate, order):
    """gemm_into(out, a, b, accumulate, order): a column-major out is out^T = b^T a^T."""
    for o in (out, a, b):
        o.needs_array()
    if a.array.shape[1] == 0 or out.array.size == 0:
        raise _Unfit()
    if order.obj == "F":
        a, b, out = b.T, a.T, out.T
    for o in (a, b):
        if not (o.array.flags.c_contiguous or o.array.flags.f_contiguous):
            raise _Unfit()
    if not out.array.flags.c_contiguous:
        raise _Unfit()
    return _Step("gemm", a.value, b.value, out.value, bool(accumulate.obj), a.array, b.array,
                 out.array, operands=(a, b, out))


def _product_transposed_b(out, g, b, accumulate, order):
    return _product(out, g, b.needs_array().T, accumulate, order)


def _product_transposed_a(out, a, g, accumulate, order):
    return _product(out, a.needs_array().T, g, accumulate, order)


def _column_sum(g, out, accumulate):
    if not (g.needs_array().array.flags.c_contiguous and out.needs_array().array.ndim == 1):
        raise _Unfit()
    return _Step("column_sum", g.value, out.value, bool(accumulate.obj), g.array, out.array,
                 operands=(g, out))


def _copy(out, source):
    out.needs_array(), source.needs_array()
    if source.array.shape != out.array.shape or source.array.dtype != out.array.dtype:
        raise _Unfit()
    _flat(source.array, out.array)
    return _Step("copy", source.value, out.value, source.array, out.array,
                 operands=(source, out))


TRANSLATIONS = {
    pointwise.arithmetic_into: _arithmetic,
    np.add: _add,
    pointwise.add_row: _add_row,
    pointwise.sigmoid: _activation("sigmoid"),
    pointwise.relu: _activation("relu"),
    pointwise.sigmoid_grad: _activation_grad("sigmoid"),
    pointwise.relu_grad: _activation_grad("relu"),
    gemm_into: _product,
    _gemm_transposed_b: _product_transposed_b,
    _gemm_transposed_a: _product_transposed_a,
    pointwise.column_sum: _column_sum,
    np.copyto: _copy,
}
