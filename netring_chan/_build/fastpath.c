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
#include <stdint.h>
#include <stdlib.h>
/* tx_fill below; the header's other helpers serve the cffi module. */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function"
#include "c/txring.h"
#include "c/walk.h"
#include "c/copyout.h"
#pragma GCC diagnostic pop

typedef struct {
    PyObject_HEAD
    PyObject *owner;  /* the PacketAiter to take from; NULL once taken */
    PyObject *coro;   /* the slow path's coroutine, when the cursor was used up */
} Step;

static PyTypeObject *StepType;
static PyObject *str_it, *str_next_slow, *str_throw, *str_value;

static int aiter_take(PyObject *self, PyObject **p);
static PyObject *aiter_slow(PyObject *self);

static int step_traverse(PyObject *self, visitproc visit, void *arg)
{
    Py_VISIT(((Step *)self)->owner);
    Py_VISIT(((Step *)self)->coro);
    Py_VISIT(Py_TYPE(self));
    return 0;
}

static int step_clear(PyObject *self)
{
    Py_CLEAR(((Step *)self)->owner);
    Py_CLEAR(((Step *)self)->coro);
    return 0;
}

static void step_dealloc(PyObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    step_clear(self);
    PyObject_GC_Del(self);
    Py_DECREF(tp);
}

/* The delegate's result: a finished step drops its coroutine. */
static PySendResult step_delegate(Step *st, PyObject *arg, PyObject **result)
{
    PySendResult r = PyIter_Send(st->coro, arg, result);
    if (r != PYGEN_NEXT)
        Py_CLEAR(st->coro);
    return r;
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
        return step_delegate(st, arg, result);
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
    return step_delegate(st, arg, result);
}

/* 3.12+ resume an awaited iterator through tp_iternext: the value travels
 * in a StopIteration. Making one per packet (and its args tuple) cost more
 * than the coroutine this replaces, so one instance is reused, its `value`
 * replaced, whenever nobody else still holds it (so it keeps the last
 * value it carried, one packet, until it carries the next). */
static PyObject *stop_spare;

static int raise_stop(PyObject *value)
{
    PyObject *e = stop_spare;
    if (e != NULL && Py_REFCNT(e) == 1) {
        Py_INCREF(e);
    } else {
        e = PyObject_CallNoArgs(PyExc_StopIteration);
        if (e == NULL)
            return -1;
        Py_XDECREF(stop_spare);
        Py_INCREF(e);
        stop_spare = e;
    }
    if (PyObject_SetAttr(e, str_value, value) < 0) {
        Py_DECREF(e);
        return -1;
    }
    PyException_SetContext(e, NULL);
    PyException_SetCause(e, NULL);
    PyException_SetTraceback(e, Py_None);
    /* PyErr_Restore, not PyErr_SetObject: the latter makes the exception
     * being handled (if any) the instance's __context__, and the reused
     * instance would keep it (its traceback, frames) alive. Steals e. */
    Py_INCREF(PyExc_StopIteration);
    PyErr_Restore(PyExc_StopIteration, e, NULL);
    return 0;
}

static PyObject *step_resume(PyObject *self, PyObject *arg)
{
    PyObject *res;
    switch (step_send(self, arg, &res)) {
    case PYGEN_NEXT:
        return res;
    case PYGEN_RETURN:
        raise_stop(res);
        Py_DECREF(res);
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
        if (res == NULL)
            Py_CLEAR(st->coro);  /* it finished (returned or raised) */
        return res;
    }
    /* not started: nothing was taken; the exception goes straight back */
    if (!PyArg_UnpackTuple(args, "throw", 1, 3, &typ, &val, &tb))
        return NULL;
    if (!PyExceptionInstance_Check(typ) && !PyExceptionClass_Check(typ)) {
        PyErr_Format(PyExc_TypeError, "exceptions must be classes or instances deriving from "
                     "BaseException, not %R", typ);
        return NULL;
    }
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
    PyObject *coro = st->coro, *res;
    Py_CLEAR(st->owner);
    if (coro == NULL)
        Py_RETURN_NONE;
    st->coro = NULL;
    res = PyObject_CallMethod(coro, "close", NULL);
    Py_DECREF(coro);
    return res;
}

static PyMethodDef step_methods[] = {
    {"send", step_resume, METH_O, NULL},
    {"throw", step_throw, METH_VARARGS, NULL},
    {"close", step_close, METH_NOARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot step_slots[] = {
    {Py_tp_dealloc, step_dealloc},
    {Py_tp_traverse, step_traverse},
    {Py_tp_clear, step_clear},
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
    "netring_chan._fastpath.Step", sizeof(Step), 0, Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC, step_slots,
};

/* ------------------------------------------------------------------------ */

typedef struct {
    PyObject_HEAD
    PyObject *cursor;  /* has an attribute `it`: an iterator of packets, or None */
    PyObject *slow;    /* () -> awaitable: the next packet once the cursor is used up;
                        * NULL: the method _next_slow (a subclass's, no cycle) */
    PyObject *spare;   /* the last Step handed out, reused once nobody else holds it */
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
    Py_VISIT(a->spare);
    Py_VISIT(Py_TYPE(self));
    return 0;
}

static int aiter_clear(PyObject *self)
{
    PacketAiter *a = (PacketAiter *)self;
    Py_CLEAR(a->cursor);
    Py_CLEAR(a->slow);
    Py_CLEAR(a->spare);
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
    if (!PyIter_Check(it)) {
        PyErr_Format(PyExc_TypeError, "cursor.it must be an iterator or None, got %R", it);
        Py_DECREF(it);
        return -1;
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

/* Always a Step, which looks at the cursor only when resumed: one attribute
 * read per packet. The Step of the previous packet is reused when nothing
 * but this iterator holds it any more (the usual `async for`), so the
 * common case allocates nothing. */
static PyObject *aiter_anext(PyObject *self)
{
    PacketAiter *a = (PacketAiter *)self;
    Step *st = (Step *)a->spare;
    PyObject *old;
    if (a->cursor == NULL) {
        PyErr_SetString(PyExc_ValueError, "PacketAiter was not initialised");
        return NULL;
    }
    if (st != NULL && Py_REFCNT(st) == 1 && st->owner == NULL && st->coro == NULL) {
        Py_INCREF(st);
    } else {
        st = PyObject_GC_New(Step, StepType);
        if (st == NULL)
            return NULL;
        st->owner = NULL;
        st->coro = NULL;
        PyObject_GC_Track((PyObject *)st);
        /* the old spare's release may run Python code (its coroutine's
         * finally) that re-enters here: a->spare must be valid by then */
        Py_INCREF(st);
        old = a->spare;
        a->spare = (PyObject *)st;
        Py_XDECREF(old);
    }
    Py_INCREF(self);
    st->owner = self;
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

/* ------------------------------------------------------------------------ */

/* The storage of an OwnedPacket (the Python subclass in packet.py adds the
 * properties): the packet's bytes and timestamp, its batch's columns and
 * its row in them; one allocation, its fields read by member descriptors.
 * The row is a C integer, not a Python int per packet. It refers only to a
 * bytes object, an int and the columns object, none of which can refer
 * back to a packet, so the base itself needs no GC support. */
typedef struct {
    PyObject_HEAD
    PyObject *data;
    PyObject *ts;
    PyObject *cols;
    Py_ssize_t index;
} PacketBase;

static PyObject *base_new(PyTypeObject *tp, PyObject *args, PyObject *kwds)
{
    PyObject *data, *ts, *cols, *idx;
    PacketBase *p;
    Py_ssize_t i;
    if (kwds != NULL && PyDict_Size(kwds)) {
        PyErr_SetString(PyExc_TypeError, "takes no keyword arguments");
        return NULL;
    }
    if (!PyArg_UnpackTuple(args, "PacketBase", 4, 4, &data, &ts, &cols, &idx))
        return NULL;
    i = PyLong_AsSsize_t(idx);
    if (i == -1 && PyErr_Occurred())
        return NULL;
    p = (PacketBase *)((allocfunc)PyType_GetSlot(tp, Py_tp_alloc))(tp, 0);
    if (p == NULL)
        return NULL;
    Py_INCREF(data); Py_INCREF(ts); Py_INCREF(cols);
    p->data = data; p->ts = ts; p->cols = cols; p->index = i;
    return (PyObject *)p;
}

static void base_dealloc(PyObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    PacketBase *p = (PacketBase *)self;
    Py_XDECREF(p->data);
    Py_XDECREF(p->ts);
    Py_XDECREF(p->cols);
    ((freefunc)PyType_GetSlot(tp, Py_tp_free))(self);
    Py_DECREF(tp);
}

#include <structmember.h>
static PyMemberDef base_members[] = {
    {"data", T_OBJECT_EX, offsetof(PacketBase, data), READONLY, "The captured bytes (at most ``snaplen`` long)."},
    {"timestamp_ns", T_OBJECT_EX, offsetof(PacketBase, ts), READONLY, "Capture time in nanoseconds since the epoch."},
    {"_cols", T_OBJECT_EX, offsetof(PacketBase, cols), READONLY, NULL},
    {"_index", T_PYSSIZET, offsetof(PacketBase, index), READONLY, NULL},
    {NULL, 0, 0, 0, NULL},
};

static PyType_Slot base_slots[] = {
    {Py_tp_new, base_new},
    {Py_tp_dealloc, base_dealloc},
    {Py_tp_members, base_members},
    {Py_tp_doc, "PacketBase(data, timestamp_ns, columns, index): an owned packet's storage."},
    {0, NULL},
};

static PyType_Spec base_spec = {
    "netring_chan._fastpath.PacketBase", sizeof(PacketBase), 0,
    Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE, base_slots,
};

/* Blob: an owned batch's packet bytes, one after the other, behind their
 * bounds as n + 1 uint32 offsets (the layout of an Arrow binary column),
 * in one buffer. own() fills it from a ring block without the GIL, so a
 * capture thread's copy-out runs beside the consumer; each packet's `bytes`
 * is then made from it by whoever takes the packet (Packets, split).
 *
 * Why not a `bytes` per packet made in the capture thread, as before: bytes
 * over 512 come from malloc, and a chunk freed by another thread goes back
 * to the arena of the thread that made it; freed a block at a time, they
 * merged into that arena's top, which glibc trimmed off (MADV_DONTNEED) and
 * faulted in again for the next block: about one page fault per 7 packets
 * of 1500 bytes. Made and freed by the consumer, a packet's chunk is reused
 * by the next packet. The blob buffers themselves are kept for reuse (a few
 * spares), so they neither fault nor trim. */
typedef struct {
    PyObject_HEAD
    char *buf;             /* offsets, then data */
    size_t cap;
    Py_ssize_t n;
} Blob;

static PyTypeObject *BlobType;

/* Spare buffers: at most BLOB_SPARES, each of BLOB_KEEP bytes or more
 * (a ring block's worth; smaller ones are cheap for malloc), reused for a
 * batch that needs between half of one and all of it, so a queued batch
 * holds at most twice its bytes. None above BLOB_KEEP_MAX: blocks may be
 * up to 1 GiB, and a process must not keep four of those idle for good
 * after one burst (or one such capture); buffers that large cost more to
 * fill than to fault in. */
#define BLOB_SPARES 4
#define BLOB_KEEP ((size_t)256 * 1024)
#define BLOB_KEEP_MAX ((size_t)16 * 1024 * 1024)
#define BLOB_ROUND ((size_t)64 * 1024)
static struct { char *buf; size_t cap; } blob_spare[BLOB_SPARES];
static int blob_nspare;

/* A buffer of at least `want` bytes (GIL held: the spares are shared). */
static char *blob_buf_take(size_t want, size_t *cap)
{
    int i;
    char *b;
    for (i = 0; i < blob_nspare; i++) {
        if (blob_spare[i].cap >= want && blob_spare[i].cap / 2 <= want) {
            b = blob_spare[i].buf;
            *cap = blob_spare[i].cap;
            blob_spare[i] = blob_spare[--blob_nspare];
            return b;
        }
    }
    /* Large ones rounded up, so blocks of about one size share spares. */
    *cap = want < BLOB_KEEP ? want : (want + BLOB_ROUND - 1) / BLOB_ROUND * BLOB_ROUND;
    return (char *)malloc(*cap ? *cap : 1);
}

/* Keep a large buffer as a spare (the smallest goes when all are taken), or free it. */
static void blob_buf_give(char *buf, size_t cap)
{
    int i, small = 0;
    if (cap < BLOB_KEEP || cap > BLOB_KEEP_MAX) {
        free(buf);
        return;
    }
    if (blob_nspare < BLOB_SPARES) {
        blob_spare[blob_nspare].buf = buf;
        blob_spare[blob_nspare++].cap = cap;
        return;
    }
    for (i = 1; i < BLOB_SPARES; i++)
        if (blob_spare[i].cap < blob_spare[small].cap)
            small = i;
    if (blob_spare[small].cap < cap) {
        char *old = blob_spare[small].buf;
        blob_spare[small].buf = buf;
        blob_spare[small].cap = cap;
        buf = old;
    }
    free(buf);
}

static const uint32_t *blob_off(const Blob *b) { return (const uint32_t *)b->buf; }
static const char *blob_data(const Blob *b) { return b->buf + 4 * ((size_t)b->n + 1); }

/* Packet i's bytes (0 <= i < n): a new `bytes`, made by whoever takes it. */
static PyObject *blob_packet(const Blob *b, Py_ssize_t i)
{
    const uint32_t *o = blob_off(b);
    return PyBytes_FromStringAndSize(blob_data(b) + o[i], (Py_ssize_t)(o[i + 1] - o[i]));
}

/* A new blob for n packets and `bytes` of data (offsets not yet written). */
static Blob *blob_new(Py_ssize_t n, uint64_t bytes)
{
    Blob *b;
    size_t want;
    if (bytes > INT32_MAX || n > INT32_MAX / 4) {
        PyErr_SetString(PyExc_OverflowError, "a batch of more than 2 GiB");
        return NULL;
    }
    want = 4 * ((size_t)n + 1) + (size_t)bytes;
    b = (Blob *)((allocfunc)PyType_GetSlot(BlobType, Py_tp_alloc))(BlobType, 0);
    if (b == NULL)
        return NULL;
    b->n = n;
    b->buf = blob_buf_take(want, &b->cap);
    if (b->buf == NULL) {
        Py_DECREF(b);
        return (Blob *)PyErr_NoMemory();
    }
    return b;
}

static void blob_dealloc(PyObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    Blob *b = (Blob *)self;
    if (b->buf != NULL)
        blob_buf_give(b->buf, b->cap);
    ((freefunc)PyType_GetSlot(tp, Py_tp_free))(self);
    Py_DECREF(tp);
}

/* Only own() and blob() make blobs: one made by Blob() would have no
 * buffer (its data() read address 0). */
static PyObject *blob_tp_new(PyTypeObject *tp, PyObject *args, PyObject *kwds)
{
    (void)tp; (void)args; (void)kwds;
    PyErr_SetString(PyExc_TypeError, "Blob cannot be made directly: use blob(data, offsets)");
    return NULL;
}

static Py_ssize_t blob_len(PyObject *self)
{
    return ((Blob *)self)->n;
}

/* blob[i]: packet i's bytes (i in range; sequence indexing adds len to a negative one). */
static PyObject *blob_item(PyObject *self, Py_ssize_t i)
{
    const Blob *b = (const Blob *)self;
    if (i < 0 || i >= b->n) {
        PyErr_SetString(PyExc_IndexError, "packet index out of range");
        return NULL;
    }
    return blob_packet(b, i);
}

static PyObject *blob_data_bytes(PyObject *self, PyObject *unused)
{
    const Blob *b = (const Blob *)self;
    (void)unused;
    return PyBytes_FromStringAndSize(blob_data(b), (Py_ssize_t)blob_off(b)[b->n]);
}

static PyObject *blob_offsets(PyObject *self, PyObject *unused)
{
    const Blob *b = (const Blob *)self;
    (void)unused;
    return PyBytes_FromStringAndSize(b->buf, (Py_ssize_t)(4 * ((size_t)b->n + 1)));
}

static PyMethodDef blob_methods[] = {
    {"data", blob_data_bytes, METH_NOARGS, "The packets' bytes, one after the other, as one bytes."},
    {"offsets", blob_offsets, METH_NOARGS, "The n + 1 packet bounds in data(), as bytes of native uint32."},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot blob_slots[] = {
    {Py_tp_new, blob_tp_new},
    {Py_tp_dealloc, blob_dealloc},
    {Py_tp_methods, blob_methods},
    {Py_sq_length, blob_len},
    {Py_sq_item, blob_item},
    {Py_tp_doc, "An owned batch's packet bytes and their bounds in one buffer (see own, blob)."},
    {0, NULL},
};

static PyType_Spec blob_spec = {
    "netring_chan._fastpath.Blob", sizeof(Blob), 0, Py_TPFLAGS_DEFAULT, blob_slots,
};

/* The block calls of a capture thread, made here rather than through cffi,
 * which lets the GIL go around every call: each time a capture thread takes
 * the GIL back while the consumer runs, it waits until the consumer lets go
 * (its queue runs dry, or the switch interval), so every such call of a
 * thread made it wait for a whole batch of the consumer's. With these three
 * holding the GIL, own() is the one call per block that lets it go, and
 * the copy-out runs beside the consumer. Addresses come as ints; the
 * callers hold the mapping (rx.py, blocks.py). */
static PyObject *block_status(PyObject *mod, PyObject *arg)
{
    unsigned long long a = PyLong_AsUnsignedLongLong(arg);
    (void)mod;
    if (a == (unsigned long long)-1 && PyErr_Occurred())
        return NULL;
    if (a == 0) {
        PyErr_SetString(PyExc_ValueError, "block_status: null address");
        return NULL;
    }
    return PyLong_FromUnsignedLong(nc_block_status((const void *)(uintptr_t)a));
}

static PyObject *block_release(PyObject *mod, PyObject *arg)
{
    unsigned long long a = PyLong_AsUnsignedLongLong(arg);
    (void)mod;
    if (a == (unsigned long long)-1 && PyErr_Occurred())
        return NULL;
    if (a == 0) {
        PyErr_SetString(PyExc_ValueError, "block_release: null address");
        return NULL;
    }
    nc_block_release((void *)(uintptr_t)a);
    Py_RETURN_NONE;
}

/* walk(blk, size, meta, cap, info): nc_walk_block, with the GIL held. */
static PyObject *walk(PyObject *mod, PyObject *args)
{
    unsigned long long blk, size, meta, info;
    unsigned int cap;
    (void)mod;
    if (!PyArg_ParseTuple(args, "KKKIK:walk", &blk, &size, &meta, &cap, &info))
        return NULL;
    if (blk == 0 || meta == 0 || info == 0) {
        PyErr_SetString(PyExc_ValueError, "walk: null address");
        return NULL;
    }
    return PyLong_FromLong(nc_walk_block((const uint8_t *)(uintptr_t)blk, size, (struct nc_pkt *)(uintptr_t)meta,
                                         cap, (struct nc_block_info *)(uintptr_t)info));
}

/* Fill a blob made for n rows and total bytes, and the columns laid out
 * at offs, from the walked records pk (without the GIL: see own). */
static void own_fill(const struct nc_pkt *pk, uint32_t n, unsigned int snap_limit, const char *base,
                     uint64_t extent, uint64_t total, uint8_t *c, const uint64_t *offs, Blob *b)
{
    uint32_t *o = (uint32_t *)b->buf;
    char *dst = b->buf + 4 * ((size_t)n + 1);
    uint64_t pos = 0;
    uint32_t i;
    for (i = 0; i < n; i++) {
        struct nc_pkt r;
        uint64_t len;
        memcpy(&r, &pk[i], sizeof(r));  /* read once: see own */
        len = r.snaplen < snap_limit ? r.snaplen : snap_limit;
        if (r.data_off > extent)
            len = 0;
        else if (len > extent - r.data_off)
            len = extent - r.data_off;
        if (len > total - pos)
            len = total - pos;
        nc_put_row(&r, i, (uint32_t)len, c, offs);
        o[i] = (uint32_t)pos;
        memcpy(dst + pos, base + r.data_off, (size_t)len);
        pos += len;
    }
    o[n] = (uint32_t)pos;
}

/* own(meta, n, snap_limit, base, extent): an owned copy of a walked block,
 * as (columns, Blob): meta is the address of its n struct nc_pkt (the
 * walk's), snap_limit the largest captured length kept, base..base+extent
 * the memory the records may point into (the batch's data end). Both
 * objects are made first, then filled in one stretch without the GIL: each
 * time a capture thread needs the GIL back while the consumer runs, it
 * waits for the consumer to let go (up to the switch interval), so it lets
 * it go once per block (a capture service's thread uses walk_own, below,
 * which also walks the block in that stretch).
 *
 * Every record is checked against extent here, not only by the walk: the
 * caller keeps the block and the records' memory alive, but a batch
 * released by another thread meanwhile hands its records to the next walk,
 * which may rewrite them during the copy. The copy therefore reads each
 * record once and clamps it again to extent and to the blob's size: such a
 * race can give wrong bytes, never a read or write out of bounds. */
static PyObject *own(PyObject *mod, PyObject *args)
{
    unsigned long long meta_addr, base_addr, extent;
    Py_ssize_t n, i;
    unsigned int snap_limit;
    const struct nc_pkt *pk;
    const char *base;
    uint64_t offs[NC_NCOLS + 1], total = 0;
    PyObject *cols;
    Blob *b;
    uint8_t *c;
    (void)mod;
    if (!PyArg_ParseTuple(args, "KnIKK:own", &meta_addr, &n, &snap_limit, &base_addr, &extent))
        return NULL;
    if (n < 0 || n > UINT32_MAX / 64 || (n > 0 && (meta_addr == 0 || base_addr == 0))) {
        PyErr_SetString(PyExc_ValueError, "own: null address or bad count");
        return NULL;
    }
    pk = (const struct nc_pkt *)(uintptr_t)meta_addr;
    base = (const char *)(uintptr_t)base_addr;
    nc_cols_layout((uint32_t)n, offs);
    for (i = 0; i < n; i++) {
        uint32_t len = pk[i].snaplen < snap_limit ? pk[i].snaplen : snap_limit;
        if ((uint64_t)pk[i].data_off + len > extent) {
            PyErr_Format(PyExc_ValueError, "own: packet %zd (data at %u, %u bytes) ends past the extent %llu",
                         i, (unsigned)pk[i].data_off, (unsigned)len, extent);
            return NULL;
        }
        total += len;
    }
    cols = PyByteArray_FromStringAndSize(NULL, (Py_ssize_t)offs[NC_NCOLS]);
    if (cols == NULL)
        return NULL;
    b = blob_new(n, total);
    if (b == NULL) {
        Py_DECREF(cols);
        return NULL;
    }
    c = (uint8_t *)PyByteArray_AsString(cols);
    Py_BEGIN_ALLOW_THREADS
    own_fill(pk, (uint32_t)n, snap_limit, base, extent, total, c, offs, b);
    Py_END_ALLOW_THREADS
    return Py_BuildValue("(NN)", cols, (PyObject *)b);
}

/* walk_own(blk, size, meta, cap, info, snap_limit): walk a block and copy
 * it out in one stretch without the GIL, for a capture thread (see own:
 * each time it takes the GIL back it may wait for the consumer; the walk,
 * which reads every record header of the block, cold, no longer holds it).
 *
 * The columns and the blob are made first, sized from the block
 * descriptor's claims (num_pkts, blk_len, offset_to_first_pkt), each capped
 * by what the block could hold. Returns (n, columns, Blob); (n, None, None) with n < 0 if the
 * walk refused the block (info says why, as walk); and (n, None, None) with
 * n >= 0 if the walked packets do not fit what the claims allowed (records
 * that overlap): the caller then copies them with own(). */
static PyObject *walk_own(PyObject *mod, PyObject *args)
{
    unsigned long long blk, size, meta, info_addr;
    unsigned int cap, snap_limit;
    struct tpacket_block_desc bd;
    struct nc_block_info *info;
    const struct nc_pkt *pk;
    uint64_t rows, bytes, offs[NC_NCOLS + 1], total = 0;
    PyObject *cols;
    Blob *b;
    uint8_t *c;
    int n, fits = 0;
    uint32_t i;
    (void)mod;
    if (!PyArg_ParseTuple(args, "KKKIKI:walk_own", &blk, &size, &meta, &cap, &info_addr, &snap_limit))
        return NULL;
    if (blk == 0 || meta == 0 || info_addr == 0) {
        PyErr_SetString(PyExc_ValueError, "walk_own: null address");
        return NULL;
    }
    if (size > INT32_MAX) {
        PyErr_SetString(PyExc_ValueError, "walk_own: block size over 2 GiB");
        return NULL;
    }
    rows = bytes = 0;  /* a block too short for its descriptor: the walk refuses it */
    if (size >= sizeof(bd)) {
        /* Records that do not overlap hold at most blk_len - offset_to_first_pkt
         * bytes, each at least its header and address (the walk's tp_mac check)
         * before its data: the data fit in what is left. */
        memcpy(&bd, (const void *)(uintptr_t)blk, sizeof(bd));
        rows = bd.hdr.bh1.num_pkts < cap ? bd.hdr.bh1.num_pkts : cap;
        bytes = bd.hdr.bh1.blk_len < size ? bd.hdr.bh1.blk_len : size;
        bytes = bytes > bd.hdr.bh1.offset_to_first_pkt ? bytes - bd.hdr.bh1.offset_to_first_pkt : 0;
        bytes = bytes > rows * NC_MIN_RECORD ? bytes - rows * NC_MIN_RECORD : 0;
    }
    nc_cols_layout((uint32_t)rows, offs);
    cols = PyByteArray_FromStringAndSize(NULL, (Py_ssize_t)offs[NC_NCOLS]);
    if (cols == NULL)
        return NULL;
    b = blob_new((Py_ssize_t)rows, bytes);
    if (b == NULL) {
        Py_DECREF(cols);
        return NULL;
    }
    c = (uint8_t *)PyByteArray_AsString(cols);
    info = (struct nc_block_info *)(uintptr_t)info_addr;
    pk = (const struct nc_pkt *)(uintptr_t)meta;
    Py_BEGIN_ALLOW_THREADS
    n = nc_walk_block((const uint8_t *)(uintptr_t)blk, size, (struct nc_pkt *)(uintptr_t)meta, cap, info);
    if (n >= 0 && (uint64_t)n <= rows) {
        for (i = 0; i < (uint32_t)n; i++)
            total += pk[i].snaplen < snap_limit ? pk[i].snaplen : snap_limit;
        if (4 * ((uint64_t)n + 1) + total <= 4 * (rows + 1) + bytes) {
            fits = 1;
            nc_cols_layout((uint32_t)n, offs);
            own_fill(pk, (uint32_t)n, snap_limit, (const char *)(uintptr_t)blk, info->data_end, total, c,
                     offs, b);
            b->n = n;
        }
    }
    Py_END_ALLOW_THREADS
    if (!fits) {
        Py_DECREF(cols);
        Py_DECREF(b);
        return Py_BuildValue("(iOO)", n, Py_None, Py_None);
    }
    if (PyByteArray_Resize(cols, (Py_ssize_t)offs[NC_NCOLS]) < 0) {
        Py_DECREF(cols);
        Py_DECREF(b);
        return NULL;
    }
    return Py_BuildValue("(iNN)", n, cols, (PyObject *)b);
}

/* blob(data, offsets): a Blob from what its data() and offsets() gave
 * (unpickling), checked. */
static PyObject *blob_from(PyObject *mod, PyObject *args)
{
    PyObject *data, *offs;
    Py_ssize_t size, nb, n, i;
    const uint32_t *o;
    Blob *b;
    (void)mod;
    if (!PyArg_ParseTuple(args, "SS:blob", &data, &offs))
        return NULL;
    size = PyBytes_Size(offs);
    nb = PyBytes_Size(data);
    if (size < 4 || size % 4) {
        PyErr_SetString(PyExc_ValueError, "blob: offsets must be a whole number of uint32, at least one");
        return NULL;
    }
    o = (const uint32_t *)PyBytes_AsString(offs);
    n = size / 4 - 1;
    for (i = 0; i < n; i++) {
        if (o[i] > o[i + 1]) {
            PyErr_SetString(PyExc_ValueError, "blob: offsets must not decrease");
            return NULL;
        }
    }
    if (o[0] != 0 || (Py_ssize_t)o[n] != nb) {
        PyErr_SetString(PyExc_ValueError, "blob: offsets must run from 0 to len(data)");
        return NULL;
    }
    b = blob_new(n, (uint64_t)nb);
    if (b == NULL)
        return NULL;
    memcpy(b->buf, o, (size_t)size);
    memcpy(b->buf + size, PyBytes_AsString(data), (size_t)nb);
    return (PyObject *)b;
}

/* split(blob): the list of each packet's bytes (an owned batch's datas()). */
static PyObject *split(PyObject *mod, PyObject *arg)
{
    const Blob *b;
    PyObject *list;
    Py_ssize_t i;
    (void)mod;
    if (Py_TYPE(arg) != BlobType) {
        PyErr_Format(PyExc_TypeError, "split: a Blob, got %R", (PyObject *)Py_TYPE(arg));
        return NULL;
    }
    b = (const Blob *)arg;
    list = PyList_New(b->n);
    if (list == NULL)
        return NULL;
    for (i = 0; i < b->n; i++) {
        PyObject *x = blob_packet(b, i);
        if (x == NULL) {
            Py_DECREF(list);
            return NULL;
        }
        PyList_SetItem(list, i, x);
    }
    return list;
}

/* Packets(cls, datas, timestamps, cols): iterator making cls instances
 * (cls a subclass of PacketBase; its __init__ is not called) for rows 0..len(datas)-1,
 * datas a list of bytes or a Blob, timestamps an iterator of ints. */
typedef struct {
    PyObject_HEAD
    PyTypeObject *cls;
    allocfunc alloc;
    PyObject *datas;
    PyObject *ts;
    PyObject *cols;
    int is_blob;               /* datas is a Blob, else a list of bytes */
    Py_ssize_t i, n;
} Packets;

static PyTypeObject *BaseType;

static PyObject *packets_new(PyTypeObject *tp, PyObject *args, PyObject *kwds)
{
    PyObject *cls, *datas, *ts, *cols;
    Packets *it;
    Py_ssize_t n;
    if (kwds != NULL && PyDict_Size(kwds)) {
        PyErr_SetString(PyExc_TypeError, "Packets takes no keyword arguments");
        return NULL;
    }
    if (!PyArg_UnpackTuple(args, "Packets", 4, 4, &cls, &datas, &ts, &cols))
        return NULL;
    /* Made by cls's own tp_alloc (zero-filled): a subclass's extra slots
     * start unset and its __dict__ empty, as with tuple.__new__ before. */
    if (!PyType_Check(cls) || !PyType_IsSubtype((PyTypeObject *)cls, BaseType)) {
        PyErr_Format(PyExc_TypeError, "cls must be a subclass of PacketBase, got %R", cls);
        return NULL;
    }
    if (Py_TYPE(datas) == BlobType) {
        n = ((Blob *)datas)->n;
    } else if (!PyList_Check(datas)) {
        PyErr_Format(PyExc_TypeError, "datas must be a list or a Blob, got %R", (PyObject *)Py_TYPE(datas));
        return NULL;
    } else {
        n = PyList_Size(datas);
    }
    ts = PyObject_GetIter(ts);
    if (ts == NULL)
        return NULL;
    it = (Packets *)((allocfunc)PyType_GetSlot(tp, Py_tp_alloc))(tp, 0);
    if (it == NULL) {
        Py_DECREF(ts);
        return NULL;
    }
    Py_INCREF(cls); Py_INCREF(datas); Py_INCREF(cols);
    it->cls = (PyTypeObject *)cls;
    it->alloc = (allocfunc)PyType_GetSlot((PyTypeObject *)cls, Py_tp_alloc);
    it->datas = datas; it->ts = ts; it->cols = cols;
    it->is_blob = Py_TYPE(datas) == BlobType;
    it->i = 0;
    it->n = n;
    return (PyObject *)it;
}

static int packets_traverse(PyObject *self, visitproc visit, void *arg)
{
    Packets *it = (Packets *)self;
    Py_VISIT(it->cls); Py_VISIT(it->datas); Py_VISIT(it->ts); Py_VISIT(it->cols);
    Py_VISIT(Py_TYPE(self));
    return 0;
}

static int packets_clear(PyObject *self)
{
    Packets *it = (Packets *)self;
    Py_CLEAR(it->cls); Py_CLEAR(it->datas); Py_CLEAR(it->ts); Py_CLEAR(it->cols);
    return 0;
}

static void packets_dealloc(PyObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    packets_clear(self);
    ((freefunc)PyType_GetSlot(tp, Py_tp_free))(self);
    Py_DECREF(tp);
}

static PyObject *packets_next(PyObject *self)
{
    Packets *it = (Packets *)self;
    PyObject *data, *ts;
    PacketBase *p;
    if (it->datas == NULL || it->i >= it->n)
        return NULL;
    if (it->is_blob) {
        data = blob_packet((const Blob *)it->datas, it->i);  /* made now, by the consumer: see Blob */
        if (data == NULL)
            return NULL;
    } else {
        if (it->i >= PyList_Size(it->datas))
            return NULL;
        data = PyList_GetItem(it->datas, it->i);
        if (data == NULL)
            return NULL;
        /* owned before the timestamp iterator (maybe Python code) can drop it */
        Py_INCREF(data);
    }
    ts = PyIter_Next(it->ts);
    if (ts == NULL) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_ValueError, "fewer timestamps than packets");
        Py_DECREF(data);
        return NULL;
    }
    p = (PacketBase *)it->alloc(it->cls, 0);
    if (p == NULL) {
        Py_DECREF(data);
        Py_DECREF(ts);
        return NULL;
    }
    Py_INCREF(it->cols);
    p->data = data; p->ts = ts; p->cols = it->cols; p->index = it->i++;
    return (PyObject *)p;
}

static PyObject *packets_iter(PyObject *self)
{
    Py_INCREF(self);
    return self;
}

static PyType_Slot packets_slots[] = {
    {Py_tp_new, packets_new},
    {Py_tp_dealloc, packets_dealloc},
    {Py_tp_traverse, packets_traverse},
    {Py_tp_clear, packets_clear},
    {Py_tp_iter, packets_iter},
    {Py_tp_iternext, packets_next},
    {Py_tp_doc, "Packets(cls, datas, timestamps, columns): an iterator making one cls per row."},
    {0, NULL},
};

static PyType_Spec packets_spec = {
    "netring_chan._fastpath.Packets", sizeof(Packets), 0,
    Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC, packets_slots,
};

/* tx_fill(ring, slot, frames, first, k, min_len, max_len): copy frames[first],
 * frames[first + 1], ... into the TX ring slots slot, slot + 1, ... and
 * publish them (TP_STATUS_SEND_REQUEST), at most k; stop before the first
 * frame that is not exactly `bytes` or whose length is outside
 * [min_len, max_len] (the caller's full checks take it). Returns how many.
 * `frames` is a list or a tuple (anything else: 0). Private to
 * Injector.publish, which holds its lock, has reserved k free slots from
 * `slot` and keeps the mapping alive: `ring` is the address of its
 * struct nc_txring.
 *
 * Frames are taken in chunks: under the GIL each frame is checked and a
 * reference taken (the caller's list may change once the GIL is let go);
 * the copy then runs without the GIL when the chunk is large enough for a
 * hand-over of the GIL to be worth it, and the references are dropped. */
#define TX_CHUNK 256
#define TX_NOGIL_BYTES (64 * 1024)
static PyObject *tx_fill(PyObject *mod, PyObject *args)
{
    unsigned long long ring_addr;
    unsigned int slot;
    PyObject *frames;
    Py_ssize_t first, k, min_len, max_len, size, done = 0;
    const struct nc_txring *ring;
    PyObject *objs[TX_CHUNK];
    const char *src[TX_CHUNK];
    uint32_t lens[TX_CHUNK];
    int is_list;
    (void)mod;
    if (!PyArg_ParseTuple(args, "KIOnnnn:tx_fill", &ring_addr, &slot, &frames, &first, &k, &min_len, &max_len))
        return NULL;
    if (ring_addr == 0 || first < 0 || k < 0 || min_len < 1 || max_len > UINT32_MAX) {
        PyErr_SetString(PyExc_ValueError, "tx_fill: null ring or bad bounds");
        return NULL;
    }
    ring = (const struct nc_txring *)(uintptr_t)ring_addr;
    if (k > (Py_ssize_t)ring->count)
        k = (Py_ssize_t)ring->count;
    is_list = PyList_Check(frames);
    if (!is_list && !PyTuple_Check(frames))
        return PyLong_FromLong(0);
    size = is_list ? PyList_Size(frames) : PyTuple_Size(frames);
    if (first > size)
        first = size;
    if (k > size - first)
        k = size - first;
    while (done < k) {
        Py_ssize_t n = 0, want = k - done, j;
        size_t bytes = 0;
        int stop = 0;
        if (want > TX_CHUNK)
            want = TX_CHUNK;
        for (; n < want; n++) {
            Py_ssize_t i = first + done + n, len;
            PyObject *f;
            /* A list may have shrunk while an earlier chunk was copied. */
            if (is_list && i >= PyList_Size(frames)) {
                stop = 1;
                break;
            }
            f = is_list ? PyList_GetItem(frames, i) : PyTuple_GetItem(frames, i);
            if (f == NULL || !PyBytes_CheckExact(f)) {
                stop = 1;
                break;
            }
            len = PyBytes_Size(f);
            if (len < min_len || len > max_len) {
                stop = 1;
                break;
            }
            Py_INCREF(f);
            objs[n] = f;
            src[n] = PyBytes_AsString(f);
            lens[n] = (uint32_t)len;
            bytes += (size_t)len;
        }
        if (bytes >= TX_NOGIL_BYTES) {
            Py_BEGIN_ALLOW_THREADS
            for (j = 0; j < n; j++)
                nc_tx_publish(nc_tx_frame(ring, slot + (uint32_t)(done + j)), (const uint8_t *)src[j], lens[j]);
            Py_END_ALLOW_THREADS
        } else {
            for (j = 0; j < n; j++)
                nc_tx_publish(nc_tx_frame(ring, slot + (uint32_t)(done + j)), (const uint8_t *)src[j], lens[j]);
        }
        for (j = 0; j < n; j++)
            Py_DECREF(objs[j]);
        done += n;
        if (stop)
            break;
    }
    return PyLong_FromSsize_t(done);
}

/* plain_run(frames, min_len, max_len): how many leading items of a list or
 * tuple are exactly `bytes` with a length in [min_len, max_len] (anything
 * else: 0). The bulk check of a run of frames, without a Python call each. */
static PyObject *plain_run(PyObject *mod, PyObject *args)
{
    PyObject *frames;
    Py_ssize_t min_len, max_len, size, i;
    int is_list;
    (void)mod;
    if (!PyArg_ParseTuple(args, "Onn:plain_run", &frames, &min_len, &max_len))
        return NULL;
    is_list = PyList_Check(frames);
    if (!is_list && !PyTuple_Check(frames))
        return PyLong_FromLong(0);
    size = is_list ? PyList_Size(frames) : PyTuple_Size(frames);
    for (i = 0; i < size; i++) {
        PyObject *f = is_list ? PyList_GetItem(frames, i) : PyTuple_GetItem(frames, i);
        Py_ssize_t len;
        if (f == NULL || !PyBytes_CheckExact(f))
            break;
        len = PyBytes_Size(f);
        if (len < min_len || len > max_len)
            break;
    }
    return PyLong_FromSsize_t(i);
}

static PyMethodDef module_methods[] = {
    {"plain_run", plain_run, METH_VARARGS, "plain_run(frames, min_len, max_len): leading plain bytes frames."},
    {"block_status", block_status, METH_O, "block_status(addr): a ring block's status word (acquire load)."},
    {"block_release", block_release, METH_O, "block_release(addr): hand a ring block back (release store)."},
    {"walk", walk, METH_VARARGS, "walk(blk, size, meta, cap, info): nc_walk_block without letting the GIL go."},
    {"own", own, METH_VARARGS, "own(meta, n, snap_limit, base, extent): (columns, Blob) of a walked block."},
    {"walk_own", walk_own, METH_VARARGS, "walk_own(blk, size, meta, cap, info, snap_limit): walk and own a block."},
    {"split", split, METH_O, "split(blob): each packet's bytes, as a list."},
    {"blob", blob_from, METH_VARARGS, "blob(data, offsets): a Blob from its data() and offsets() (checked)."},
    {"tx_fill", tx_fill, METH_VARARGS, "tx_fill(ring, slot, frames, first, k, min_len, max_len): publish plain frames."},
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
    str_value = PyUnicode_InternFromString("value");
    if (str_it == NULL || str_next_slow == NULL || str_throw == NULL || str_value == NULL)
        return NULL;
    StepType = (PyTypeObject *)PyType_FromSpec(&step_spec);
    if (StepType == NULL)
        return NULL;
    aiter = PyType_FromSpec(&aiter_spec);
    if (aiter == NULL)
        return NULL;
    BaseType = (PyTypeObject *)PyType_FromSpec(&base_spec);
    if (BaseType == NULL)
        return NULL;
    BlobType = (PyTypeObject *)PyType_FromSpec(&blob_spec);
    if (BlobType == NULL)
        return NULL;
    {
        PyObject *pk = PyType_FromSpec(&packets_spec);
        if (pk == NULL)
            return NULL;
        m = PyModule_Create(&module);
        if (m == NULL)
            return NULL;
        Py_INCREF(BaseType);
        if (PyModule_AddObject(m, "PacketBase", (PyObject *)BaseType) < 0
                || PyModule_AddObject(m, "Packets", pk) < 0) {
            Py_DECREF(m);
            return NULL;
        }
        Py_INCREF(BlobType);
        if (PyModule_AddObject(m, "Blob", (PyObject *)BlobType) < 0) {
            Py_DECREF(m);
            return NULL;
        }
    }
    Py_INCREF(StepType);
    if (PyModule_AddObject(m, "Step", (PyObject *)StepType) < 0
            || PyModule_AddObject(m, "PacketAiter", aiter) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
