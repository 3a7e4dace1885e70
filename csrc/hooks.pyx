"""The hook fa.capture puts on each public op and on whatever else it replays
(fastad/core/modes.py `replayed`): a callable that passes each call straight on to the
function it wraps, through vectorcall (no argument tuple, no keyword dict, no frame of
its own), while no thread is capturing; while one is, it calls `divert(function, *args,
**kwargs)` instead, which hands the call to that thread's recorder or replayer.

Written in C because this is the cost of every op call: a Python or Cython wrapper
takes ~700 instructions to unpack and repack the arguments (8% of a tiny op, measured
with callgrind), this one ~60. It behaves like the function it wraps: `__name__`,
`__qualname__`, `__doc__`, `__module__` and `__wrapped__` (so `inspect.signature`
follows it), binding as a method when it is a class attribute, pickling by name,
weak references.
"""

from cpython.object cimport PyTypeObject


cdef extern from *:
    """
    /* How many threads are capturing (fastad/replay): while zero, hooked calls go
       straight through. Written only under the GIL. */
    static Py_ssize_t fastad_capturing_threads = 0;

    typedef struct {
        PyObject_HEAD
        PyObject *function;
        PyObject *divert;
        PyObject *dict;
        PyObject *weakrefs;
        vectorcallfunc vectorcall;
    } Hooked;

    /* divert(function, *args, **kwargs), from a vectorcall's arguments */
    static PyObject *hooked_divert(Hooked *self, PyObject *const *args, size_t nargsf,
                                   PyObject *kwnames) {
        Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
        Py_ssize_t total = nargs + (kwnames ? PyTuple_GET_SIZE(kwnames) : 0);
        PyObject *small[8];
        PyObject **stack = total + 1 <= 8 ? small : PyMem_Malloc((total + 1) * sizeof(PyObject *));
        if (stack == NULL) return PyErr_NoMemory();
        stack[0] = self->function;
        memcpy(stack + 1, args, total * sizeof(PyObject *));
        PyObject *result = PyObject_Vectorcall(self->divert, stack, nargs + 1, kwnames);
        if (stack != small) PyMem_Free(stack);
        return result;
    }

    static PyObject *hooked_vectorcall(PyObject *op, PyObject *const *args, size_t nargsf,
                                       PyObject *kwnames) {
        Hooked *self = (Hooked *)op;
        if (fastad_capturing_threads)
            return hooked_divert(self, args, nargsf, kwnames);
        return PyObject_Vectorcall(self->function, args, nargsf, kwnames);
    }

    static PyObject *hooked_get(PyObject *self, PyObject *obj, PyObject *type) {
        if (obj == NULL || obj == Py_None) {
            Py_INCREF(self);
            return self;
        }
        return PyMethod_New(self, obj);
    }

    static PyObject *hooked_repr(PyObject *op) {
        return PyObject_Repr(((Hooked *)op)->function);
    }

    static int hooked_traverse(PyObject *op, visitproc visit, void *arg) {
        Hooked *self = (Hooked *)op;
        Py_VISIT(self->function);
        Py_VISIT(self->divert);
        Py_VISIT(self->dict);
        return 0;
    }

    static int hooked_clear(PyObject *op) {
        Hooked *self = (Hooked *)op;
        Py_CLEAR(self->function);
        Py_CLEAR(self->divert);
        Py_CLEAR(self->dict);
        return 0;
    }

    static void hooked_dealloc(PyObject *op) {
        PyObject_GC_UnTrack(op);
        if (((Hooked *)op)->weakrefs != NULL) PyObject_ClearWeakRefs(op);
        hooked_clear(op);
        Py_TYPE(op)->tp_free(op);
    }

    static PyObject *hooked_reduce(PyObject *op, PyObject *unused) {
        /* pickled by name, as functions are */
        return PyObject_GetAttrString(op, "__qualname__");
    }

    static PyMethodDef hooked_methods[] = {
        {"__reduce__", hooked_reduce, METH_NOARGS, NULL},
        {NULL, NULL, 0, NULL}
    };

    static PyGetSetDef hooked_getset[] = {
        {"__dict__", PyObject_GenericGetDict, PyObject_GenericSetDict, NULL, NULL},
        {NULL, NULL, NULL, NULL, NULL}
    };

    static PyTypeObject HookedType = {
        PyVarObject_HEAD_INIT(NULL, 0)
        .tp_name = "fastad.kernels.hooks.Hooked",
        .tp_basicsize = sizeof(Hooked),
        .tp_dealloc = hooked_dealloc,
        .tp_vectorcall_offset = offsetof(Hooked, vectorcall),
        .tp_repr = hooked_repr,
        .tp_call = PyVectorcall_Call,
        .tp_getattro = PyObject_GenericGetAttr,
        .tp_setattro = PyObject_GenericSetAttr,
        .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL
                    | Py_TPFLAGS_METHOD_DESCRIPTOR,
        .tp_traverse = hooked_traverse,
        .tp_clear = hooked_clear,
        .tp_methods = hooked_methods,
        .tp_getset = hooked_getset,
        .tp_descr_get = hooked_get,
        .tp_dictoffset = offsetof(Hooked, dict),
        .tp_weaklistoffset = offsetof(Hooked, weakrefs),
    };

    static PyObject *hooked_new(PyObject *function, PyObject *divert) {
        Hooked *self = PyObject_GC_New(Hooked, &HookedType);
        if (self == NULL) return NULL;
        Py_INCREF(function);
        Py_INCREF(divert);
        self->function = function;
        self->divert = divert;
        self->dict = NULL;
        self->weakrefs = NULL;
        self->vectorcall = hooked_vectorcall;
        PyObject_GC_Track((PyObject *)self);
        return (PyObject *)self;
    }
    """
    Py_ssize_t fastad_capturing_threads
    object hooked_new(object function, object divert)
    PyTypeObject HookedType
    int PyType_Ready(PyTypeObject *) except -1


PyType_Ready(&HookedType)


def hook(function, divert):
    """`function`, with its calls diverted to `divert(function, *args, **kwargs)` while
    any thread captures."""
    hooked = hooked_new(function, divert)
    for name in ("__module__", "__name__", "__qualname__", "__doc__"):
        setattr(hooked, name, getattr(function, name))
    hooked.__wrapped__ = function
    return hooked


def capturing(Py_ssize_t change):
    """Count a thread starting (+1) or ending (-1) a capture; returns the new count."""
    global fastad_capturing_threads
    fastad_capturing_threads += change
    return fastad_capturing_threads
