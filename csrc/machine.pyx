# distutils: extra_compile_args = -fno-trapping-math
"""The loop a captured program replays in (fa.capture; fastad/replay/native.py builds it).

A program is a list of steps. A kernel step calls one of fastad's kernel workers (the
same inline code as the kernel modules: pointwise_kernels.pxd, gemm_kernels.pxd) on raw
pointers, and runs of kernel steps run without the GIL; a call step runs a Python
instruction of the plan (fastad/replay/plan.py). An operand is a buffer the plan owns
(its pointer fixed when the step is added) or a slot of the replay, whose pointer is
read from the slot's array before the run and after each call step that sets it; that
array must have the layout the plan was made for (checked: a mismatch raises, a kernel
never sees it).
"""
cimport numpy as cnp
from libc.stdlib cimport free, malloc, realloc
from libc.string cimport memcpy

from _common cimport index_t
from gemm_kernels cimport Operand, blas_operand, gemm_rowmajor
from pointwise_kernels cimport (RELU, SIGMOID, Activation, ArithmeticOp, activation_grad_kernel,
                                activation_kernel, add_row_kernel, arithmetic_kernel,
                                column_sum_kernel)

cnp.import_array()


cdef enum Code:
    ARITHMETIC
    ADD_ROW
    ACTIVATION
    ACTIVATION_GRAD
    GEMM
    COLUMN_SUM
    COPY
    CALL


cdef struct Step:
    Code code
    bint f32
    int kind              # ArithmeticOp or Activation
    Py_ssize_t slot[3]    # operands: the slot holding each, or -1 for a fixed pointer
    char* data[3]         # their pointers (fixed, or loaded from the slot)
    index_t size          # elements; or rows (size) and columns (cols)
    index_t cols
    bint accumulate
    bint scalar[2]        # operand 0 or 1 is the constant below
    double constant
    float constant32
    char ta, tb           # GEMM: transposes, sizes and leading dimensions (row-major)
    int m, n, k, lda, ldb, ldc
    Py_ssize_t call       # CALL: index into the Python instructions


cdef class Machine:
    """A captured program's steps (see the module docstring)."""

    cdef Step* steps
    cdef Py_ssize_t count, capacity, slot_count
    cdef char** pointers      # per slot: its array's data, for the slots kernels use
    cdef list calls           # the Python instructions of the call steps
    cdef list loads_after     # per call: the slots it sets that kernel steps read
    cdef dict expected        # slot -> the layout kernels assume (see `layout`)
    cdef list kept            # the fixed arrays whose pointers the steps hold

    def __cinit__(self, Py_ssize_t slot_count):
        self.slot_count = slot_count
        self.pointers = <char**>malloc(max(slot_count, 1) * sizeof(char*))
        if self.pointers == NULL:
            raise MemoryError()
        self.steps = NULL
        self.count = self.capacity = 0
        self.calls, self.loads_after, self.kept = [], [], []
        self.expected = {}

    def __dealloc__(self):
        free(self.steps)
        free(self.pointers)

    # --- building --------------------------------------------------------------------
    cdef Step* _new(self, Code code) except NULL:
        cdef Step* grown
        if self.count == self.capacity:
            self.capacity = max(16, 2 * self.capacity)
            grown = <Step*>realloc(self.steps, self.capacity * sizeof(Step))
            if grown == NULL:
                raise MemoryError()
            self.steps = grown
        cdef Step* step = &self.steps[self.count]
        self.count += 1
        step.code = code
        step.slot[0] = step.slot[1] = step.slot[2] = -1
        step.data[0] = step.data[1] = step.data[2] = NULL
        step.scalar[0] = step.scalar[1] = False
        step.accumulate = False
        return step

    def expect(self, Py_ssize_t slot, cnp.ndarray recorded not None):
        """Kernel steps use `slot`, which holds an array laid out as `recorded` (only its
        layout is kept, not the array)."""
        if not 0 <= slot < self.slot_count:
            raise IndexError(f"machine: slot {slot} out of range")
        self.expected[slot] = layout(recorded)

    cdef _operand(self, Step* step, int i, operand, cnp.ndarray recorded):
        """Operand i: a slot number (expected before) or a fixed array; `recorded` gives
        the layout the step assumes."""
        if isinstance(operand, int):
            if operand not in self.expected:
                raise ValueError(f"machine: slot {operand} was not expected")
            step.slot[i] = operand
        else:
            self.kept.append(operand)
            step.data[i] = <char*>cnp.PyArray_DATA(<cnp.ndarray>operand)

    def arithmetic(self, int op, a, b, out, cnp.ndarray recorded_out, ra=None, rb=None):
        """out = a op b (elementwise, one flat order); a or b may be a float constant."""
        cdef Step* step = self._new(ARITHMETIC)
        step.kind, step.f32 = op, cnp.PyArray_TYPE(recorded_out) == cnp.NPY_FLOAT32
        step.size = cnp.PyArray_SIZE(recorded_out)
        for i, operand, recorded in ((0, a, ra), (1, b, rb)):
            if isinstance(operand, float):
                step.scalar[i] = True
                step.constant, step.constant32 = operand, <float>operand
            else:
                self._operand(step, i, operand, recorded)
        self._operand(step, 2, out, recorded_out)

    def add_row(self, x, b, out, cnp.ndarray rx, cnp.ndarray rb, cnp.ndarray rout):
        """out = x + b for x (rows, cols) and b (cols,), all C-contiguous."""
        cdef Step* step = self._new(ADD_ROW)
        step.f32 = cnp.PyArray_TYPE(rout) == cnp.NPY_FLOAT32
        step.size, step.cols = rx.shape[0], rx.shape[1]
        self._operand(step, 0, x, rx)
        self._operand(step, 1, b, rb)
        self._operand(step, 2, out, rout)

    def activation(self, int kind, x, out, cnp.ndarray rx, cnp.ndarray rout):
        cdef Step* step = self._new(ACTIVATION)
        step.kind, step.f32 = kind, cnp.PyArray_TYPE(rout) == cnp.NPY_FLOAT32
        step.size = cnp.PyArray_SIZE(rout)
        self._operand(step, 0, x, rx)
        self._operand(step, 2, out, rout)

    def activation_grad(self, int kind, g, y, out, bint accumulate, cnp.ndarray rg,
                        cnp.ndarray ry, cnp.ndarray rout):
        cdef Step* step = self._new(ACTIVATION_GRAD)
        step.kind, step.f32 = kind, cnp.PyArray_TYPE(rout) == cnp.NPY_FLOAT32
        step.size, step.accumulate = cnp.PyArray_SIZE(rout), accumulate
        self._operand(step, 0, g, rg)
        self._operand(step, 1, y, ry)
        self._operand(step, 2, out, rout)

    def gemm(self, a, b, out, bint accumulate, cnp.ndarray ra, cnp.ndarray rb,
             cnp.ndarray rout):
        """out (+)= a @ b, as gemm.gemm: a, b C- or F-contiguous, out C-contiguous (the
        recorded arrays give the layouts; pass transposed ones for a column-major out)."""
        cdef Step* step = self._new(GEMM)
        step.f32 = cnp.PyArray_TYPE(rout) == cnp.NPY_FLOAT32
        step.m, step.k, step.n = <int>ra.shape[0], <int>ra.shape[1], <int>rb.shape[1]
        cdef Operand oa = blas_operand(ra, False), ob = blas_operand(rb, False)
        step.ta, step.tb, step.lda, step.ldb = oa.trans, ob.trans, oa.ld, ob.ld
        step.ldc = step.n if step.n > 1 else 1
        step.accumulate = accumulate
        self._operand(step, 0, a, ra)
        self._operand(step, 1, b, rb)
        self._operand(step, 2, out, rout)

    def column_sum(self, g, out, bint accumulate, cnp.ndarray rg, cnp.ndarray rout):
        cdef Step* step = self._new(COLUMN_SUM)
        step.f32 = cnp.PyArray_TYPE(rout) == cnp.NPY_FLOAT32
        step.size, step.cols, step.accumulate = rg.shape[0], rg.shape[1], accumulate
        self._operand(step, 0, g, rg)
        self._operand(step, 2, out, rout)

    def copy(self, source, out, cnp.ndarray rsource, cnp.ndarray rout):
        """out = source, byte for byte (same shape, dtype and flat order)."""
        cdef Step* step = self._new(COPY)
        step.size = cnp.PyArray_NBYTES(rout)
        self._operand(step, 0, source, rsource)
        self._operand(step, 2, out, rout)

    def call(self, instruction, loads):
        """A call step: instruction.run(objects, replayer); then the pointers of the
        slots in `loads` (those it sets that kernel steps read) are read again."""
        cdef Step* step = self._new(CALL)
        step.call = len(self.calls)
        self.calls.append(instruction)
        self.loads_after.append(list(loads))

    def kernel_slots(self):
        """The slots kernel steps read or write."""
        return set(self.expected)

    # --- running ---------------------------------------------------------------------
    def run(self, list objects, replayer):
        """Run every step on this replay's `objects` (one per slot)."""
        cdef Py_ssize_t i = 0, end
        for slot in self.expected:
            if objects[slot] is not None:
                self._load(objects, slot)
        while i < self.count:
            if self.steps[i].code == CALL:
                self.calls[self.steps[i].call].run(objects, replayer)
                for slot in self.loads_after[self.steps[i].call]:
                    self._load(objects, slot)
                i += 1
                continue
            end = i
            while end < self.count and self.steps[end].code != CALL:
                end += 1
            with nogil:
                run_kernels(self.steps, i, end, self.pointers)
            i = end

    cdef _load(self, list objects, Py_ssize_t slot):
        value = objects[slot]
        expected = self.expected[slot]
        if not (isinstance(value, cnp.ndarray) and layout(<cnp.ndarray>value) == expected):
            raise RuntimeError(
                f"fa.capture: a replay found {type(value).__name__} "
                f"{getattr(value, 'shape', '')} where the program was made for an array "
                f"of shape {expected[0]} and dtype {expected[1]} in its layout")
        self.pointers[slot] = <char*>cnp.PyArray_DATA(<cnp.ndarray>value)


cdef tuple layout(cnp.ndarray a):
    """What a kernel step assumes of an array: shape, dtype, C- and F-contiguity."""
    cdef object array = a  # its Python-level shape (a tuple)
    return (array.shape, a.dtype, cnp.PyArray_IS_C_CONTIGUOUS(a),
            cnp.PyArray_IS_F_CONTIGUOUS(a))


cdef inline char* operand(Step* step, int i, char** pointers) noexcept nogil:
    return step.data[i] if step.slot[i] < 0 else pointers[step.slot[i]]


cdef void run_kernels(Step* steps, Py_ssize_t start, Py_ssize_t end,
                      char** pointers) noexcept nogil:
    cdef Step* step
    cdef char* a
    cdef char* b
    cdef char* out
    cdef Py_ssize_t i
    for i in range(start, end):
        step = &steps[i]
        a, b, out = operand(step, 0, pointers), operand(step, 1, pointers), \
            operand(step, 2, pointers)
        if step.code == ARITHMETIC:
            if step.f32:
                if step.scalar[0]:
                    a = <char*>&step.constant32
                if step.scalar[1]:
                    b = <char*>&step.constant32
                arithmetic_kernel[float](<ArithmeticOp>step.kind, <float*>a, <float*>b,
                                         <float*>out, step.size, step.scalar[0],
                                         step.scalar[1])
            else:
                if step.scalar[0]:
                    a = <char*>&step.constant
                if step.scalar[1]:
                    b = <char*>&step.constant
                arithmetic_kernel[double](<ArithmeticOp>step.kind, <double*>a, <double*>b,
                                          <double*>out, step.size, step.scalar[0],
                                          step.scalar[1])
        elif step.code == ADD_ROW:
            if step.f32:
                add_row_kernel[float](<float*>a, <float*>b, <float*>out, step.size, step.cols)
            else:
                add_row_kernel[double](<double*>a, <double*>b, <double*>out, step.size,
                                       step.cols)
        elif step.code == ACTIVATION:
            if step.f32:
                activation_kernel[float](<Activation>step.kind, <float*>a, <float*>out,
                                         step.size)
            else:
                activation_kernel[double](<Activation>step.kind, <double*>a, <double*>out,
                                          step.size)
        elif step.code == ACTIVATION_GRAD:
            if step.f32:
                activation_grad_kernel[float](<Activation>step.kind, <float*>a, <float*>b,
                                              <float*>out, step.size, step.accumulate)
            else:
                activation_grad_kernel[double](<Activation>step.kind, <double*>a,
                                               <double*>b, <double*>out, step.size,
                                               step.accumulate)
        elif step.code == GEMM:
            if step.f32:
                gemm_rowmajor[float](step.ta, step.tb, step.m, step.n, step.k, <float*>a,
                                     step.lda, <float*>b, step.ldb, step.accumulate,
                                     <float*>out, step.ldc)
            else:
                gemm_rowmajor[double](step.ta, step.tb, step.m, step.n, step.k, <double*>a,
                                      step.lda, <double*>b, step.ldb, step.accumulate,
                                      <double*>out, step.ldc)
        elif step.code == COLUMN_SUM:
            if step.f32:
                column_sum_kernel[float](<float*>a, <float*>out, step.size, step.cols,
                                         step.accumulate)
            else:
                column_sum_kernel[double](<double*>a, <double*>out, step.size, step.cols,
                                          step.accumulate)
        elif step.code == COPY:
            memcpy(out, a, step.size)


# The activation kernels by name, for the builders' callers.
ACTIVATIONS = {"sigmoid": SIGMOID, "relu": RELU}
