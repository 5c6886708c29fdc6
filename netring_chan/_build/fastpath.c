/* netring_chan._fastpath: the per-packet async iteration step in C.
 *
 * `async for pkt in rx` calls rx.__aiter__().__anext__() once per packet
 * and awaits what it returns. An `async def __anext__` makes a coroutine
 * (a frame) per packet even when the packet is already in hand; that cost
 * about as much as the packet itself. PacketAiter.__anext__ instead returns
 * a Step: an awaitable which, when first resumed, takes the next packet
 * from the cursor's C iterator and completes at once with it, without
 * suspending (so it is the same to asyncio, trio and anyio). Like a
 * coroutine it does nothing until resumed: a step cancelled or dropped
 * before it ran takes nothing. Only when the cursor is used up is the
 * face's `slow` coroutine function called (it takes the next batch, and may
 * suspend, be cancelled or end the iteration); the step then delegates to
 * that coroutine as `await` would.
 *
 * Limited API (3.10), so one build serves every interpreter.
 */
#ifndef Py_LIMITED_API
#define Py_LIMITED_API 0x030A0000
#endif
#define PY_SSIZE_T_CLEAN
#include <Python.h>

typedef struct {
    PyObject_HEAD
    PyObject *owner;  /* the PacketAiter to take from; NULL once taken */
    PyObject *coro;   /* the slow path's coroutine, when the cursor was used up */
} Step;

static PyTypeObject *StepType;
static PyObject *str_it, *str_next_slow, *str_throw;

static int aiter_take(PyObject *self, PyObject **p);
static PyObject *aiter_slow(PyObject *self);

static void step_dealloc(PyObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    Py_XDECREF(((Step *)self)->owner);
    Py_XDECREF(((Step *)self)->coro);
    PyObject_Free(self);
    Py_DECREF(tp);
}

static PyObject *step_await(PyObject *self)
{
    Py_INCREF(self);
    return self;
}

/* The packet is taken when the step is first resumed, not when __anext__
 * made it: like a coroutine, a step cancelled or dropped before it ran
 * takes nothing. 3.10 and 3.11 resume it through am_send. */
static PySendResult step_send(PyObject *self, PyObject *arg, PyObject **result)
{
    Step *st = (Step *)self;
    PyObject *owner, *p;
    int r;
    if (st->coro != NULL)
        return PyIter_Send(st->coro, arg, result);
    owner = st->owner;
    if (owner == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "cannot reuse an already awaited __anext__() result");
        *result = NULL;
        return PYGEN_ERROR;
    }
    st->owner = NULL;
    r = aiter_take(owner, &p);
    if (r > 0) {
        Py_DECREF(owner);
        *result = p;
        return PYGEN_RETURN;
    }
    if (r == 0)  /* used up meanwhile (another task on the same face) */
        st->coro = aiter_slow(owner);
    Py_DECREF(owner);
    if (st->coro == NULL) {
        *result = NULL;
        return PYGEN_ERROR;
    }
    return PyIter_Send(st->coro, arg, result);
}

static PyObject *step_resume(PyObject *self, PyObject *arg)
{
    PyObject *res, *e;
    switch (step_send(self, arg, &res)) {
    case PYGEN_NEXT:
        return res;
    case PYGEN_RETURN:
        /* 3.12+ resume through tp_iternext: the value travels in
         * StopIteration, made explicitly (a tuple would be taken as args). */
        e = PyObject_CallFunctionObjArgs(PyExc_StopIteration, res, NULL);
        Py_DECREF(res);
        if (e != NULL) {
            PyErr_SetObject(PyExc_StopIteration, e);
            Py_DECREF(e);
        }
        return NULL;
    default:
        return NULL;
    }
}

static PyObject *step_next(PyObject *self)
{
    return step_resume(self, Py_None);
}

static PyObject *step_throw(PyObject *self, PyObject *args)
{
    Step *st = (Step *)self;
    PyObject *typ, *val = NULL, *tb = NULL, *meth, *res;
    if (st->coro != NULL) {
        meth = PyObject_GetAttr(st->coro, str_throw);
        if (meth == NULL)
            return NULL;
        res = PyObject_Call(meth, args, NULL);
        Py_DECREF(meth);
        return res;
    }
    /* not started: nothing was taken; the exception goes straight back */
    if (!PyArg_UnpackTuple(args, "throw", 1, 3, &typ, &val, &tb))
        return NULL;
    Py_CLEAR(st->owner);
    if (PyExceptionInstance_Check(typ)) {
        PyErr_SetObject((PyObject *)Py_TYPE(typ), typ);
    } else {
        PyErr_SetObject(typ, val);
    }
    return NULL;
}

static PyObject *step_close(PyObject *self, PyObject *unused)
{
    Step *st = (Step *)self;
    (void)unused;
    Py_CLEAR(st->owner);
    if (st->coro != NULL)
        return PyObject_CallMethod(st->coro, "close", NULL);
    Py_RETURN_NONE;
}

static PyMethodDef step_methods[] = {
    {"send", step_resume, METH_O, NULL},
    {"throw", step_throw, METH_VARARGS, NULL},
    {"close", step_close, METH_NOARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot step_slots[] = {
    {Py_tp_dealloc, step_dealloc},
    {Py_am_await, step_await},
    {Py_am_send, step_send},
    {Py_tp_iter, step_await},
    {Py_tp_iternext, step_next},
    {Py_tp_methods, step_methods},
    {Py_tp_doc, "What PacketAiter.__anext__ returns: an awaitable taking the next packet "
                "when first resumed, without suspending while the cursor has one."},
    {0, NULL},
};

static PyType_Spec step_spec = {
    "netring_chan._fastpath.Step", sizeof(Step), 0, Py_TPFLAGS_DEFAULT, step_slots,
};

/* ------------------------------------------------------------------------ */

typedef struct {
    PyObject_HEAD
    PyObject *cursor;  /* has an attribute `it`: an iterator of packets, or None */
    PyObject *slow;    /* () -> awaitable: the next packet once the cursor is used up;
                        * NULL: the method _next_slow (a subclass's, no cycle) */
} PacketAiter;

static int aiter_clear(PyObject *self);

static int aiter_init(PyObject *self, PyObject *args, PyObject *kwds)
{
    PacketAiter *a = (PacketAiter *)self;
    PyObject *cursor, *slow;
    if (kwds != NULL && PyDict_Size(kwds)) {
        PyErr_SetString(PyExc_TypeError, "PacketAiter takes no keyword arguments");
        return -1;
    }
    slow = Py_None;
    if (!PyArg_UnpackTuple(args, "PacketAiter", 1, 2, &cursor, &slow))
        return -1;
    if (slow == Py_None) {
        slow = NULL;
    } else if (!PyCallable_Check(slow)) {
        PyErr_Format(PyExc_TypeError, "slow must be callable or None, got %R", slow);
        return -1;
    }
    Py_INCREF(cursor);
    Py_XINCREF(slow);
    aiter_clear(self);
    a->cursor = cursor;
    a->slow = slow;
    return 0;
}

static int aiter_traverse(PyObject *self, visitproc visit, void *arg)
{
    PacketAiter *a = (PacketAiter *)self;
    Py_VISIT(a->cursor);
    Py_VISIT(a->slow);
    Py_VISIT(Py_TYPE(self));
    return 0;
}

static int aiter_clear(PyObject *self)
{
    PacketAiter *a = (PacketAiter *)self;
    Py_CLEAR(a->cursor);
    Py_CLEAR(a->slow);
    return 0;
}

static void aiter_dealloc(PyObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    aiter_clear(self);
    ((freefunc)PyType_GetSlot(tp, Py_tp_free))(self);
    Py_DECREF(tp);
}

static PyObject *aiter_aiter(PyObject *self)
{
    Py_INCREF(self);
    return self;
}

/* 1: *p is the cursor's next packet; 0: the cursor is used up (now None); -1: error */
static int aiter_take(PyObject *self, PyObject **p)
{
    PacketAiter *a = (PacketAiter *)self;
    PyObject *it = PyObject_GetAttr(a->cursor, str_it);
    if (it == NULL)
        return -1;
    if (it == Py_None) {
        Py_DECREF(it);
        return 0;
    }
    *p = PyIter_Next(it);
    Py_DECREF(it);
    if (*p != NULL)
        return 1;
    if (PyErr_Occurred())
        return -1;
    return PyObject_SetAttr(a->cursor, str_it, Py_None) < 0 ? -1 : 0;
}

static PyObject *aiter_slow(PyObject *self)
{
    PacketAiter *a = (PacketAiter *)self;
    if (a->slow == NULL)
        return PyObject_CallMethodObjArgs(self, str_next_slow, NULL);
    return PyObject_CallObject(a->slow, NULL);
}

static PyObject *aiter_anext(PyObject *self)
{
    PacketAiter *a = (PacketAiter *)self;
    PyObject *it;
    Step *st;
    if (a->cursor == NULL) {
        PyErr_SetString(PyExc_ValueError, "PacketAiter was not initialised");
        return NULL;
    }
    it = PyObject_GetAttr(a->cursor, str_it);
    if (it == NULL)
        return NULL;
    Py_DECREF(it);
    if (it == Py_None)
        return aiter_slow(self);
    st = PyObject_New(Step, StepType);
    if (st == NULL)
        return NULL;
    Py_INCREF(self);
    st->owner = self;
    st->coro = NULL;
    return (PyObject *)st;
}

static PyType_Slot aiter_slots[] = {
    {Py_tp_init, aiter_init},
    {Py_tp_new, PyType_GenericNew},
    {Py_tp_dealloc, aiter_dealloc},
    {Py_tp_traverse, aiter_traverse},
    {Py_tp_clear, aiter_clear},
    {Py_am_aiter, aiter_aiter},
    {Py_am_anext, aiter_anext},
    {Py_tp_doc, "PacketAiter(cursor, slow=None): async iterator handing out cursor.it's packets "
                "without suspending; once the cursor is used up, slow() (None: "
                "self._next_slow()), a coroutine."},
    {0, NULL},
};

static PyType_Spec aiter_spec = {
    "netring_chan._fastpath.PacketAiter", sizeof(PacketAiter), 0,
    Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_BASETYPE, aiter_slots,
};

static PyMethodDef module_methods[] = {
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "netring_chan._fastpath",
    "Per-packet async iteration without a coroutine per packet.", -1, module_methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__fastpath(void)
{
    PyObject *m, *aiter;
    str_it = PyUnicode_InternFromString("it");
    str_next_slow = PyUnicode_InternFromString("_next_slow");
    str_throw = PyUnicode_InternFromString("throw");
    if (str_it == NULL || str_next_slow == NULL || str_throw == NULL)
        return NULL;
    StepType = (PyTypeObject *)PyType_FromSpec(&step_spec);
    if (StepType == NULL)
        return NULL;
    aiter = PyType_FromSpec(&aiter_spec);
    if (aiter == NULL)
        return NULL;
    m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    Py_INCREF(StepType);
    if (PyModule_AddObject(m, "Step", (PyObject *)StepType) < 0
            || PyModule_AddObject(m, "PacketAiter", aiter) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
