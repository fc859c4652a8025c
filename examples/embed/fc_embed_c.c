/* fc_embed_c.c -- calling the fastcells C API from a plain C extension module.
 *
 * The module takes any buffer-protocol objects (NumPy arrays, array.array, memoryview, ...),
 * so it builds against Python.h and fastcells.h only: no NumPy headers. The caller allocates
 * every array, outputs included; the module checks each buffer's type and size against the
 * dimensions it is given and hands raw pointers to the kernels.
 *
 *   lstm_forward(x, h0, c0, w_ih, w_hh, b_ih, b_hh, y, h_n, c_n, T, B, I, H,
 *                lengths=None, n_threads=1)
 *       inference forward into y, h_n, c_n
 *   lstm_train(x, h0, c0, w_ih, w_hh, b_ih, b_hh, dy, dh_n, dc_n,
 *              y, h_n, c_n, dx, dh0, dc0, dw_ih, dw_hh, db_ih, db_hh, T, B, I, H,
 *              lengths=None, n_threads=1)
 *       training forward into y, h_n, c_n, then backward into dx ... db_hh
 *   time_calls(n, T, B, I, H, training, n_threads=1)
 *       mean microseconds per call of n float32 calls on buffers allocated here
 *
 * Arrays are C-contiguous float32 or float64 (all of one call alike, decided by x), lengths
 * int64. h0, c0, b_ih, b_hh, dy, dh_n, dc_n, lengths may be None (NULL: zeros / no bias / all T);
 * db_ih, db_hh may be None (gradient not wanted). A failing kernel call raises
 * fc_embed_c.FastcellsError with fc_strerror()'s message.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "fastcells.h"

static PyObject *FastcellsError;

/* Raise FastcellsError for a negative status from `what`. */
static void raise_status(const char *what, int64_t status)
{
    PyErr_Format(FastcellsError, "%s: %s (status %d)", what, fc_strerror((int)status),
                 (int)status);
}

/* ------------------------------------------------------------------------------------------
 * Borrowing buffers. Every buffer a call takes stays exported (so its memory cannot be freed
 * or resized) until the call has finished, also while the GIL is released.
 * ------------------------------------------------------------------------------------------ */
enum { MAX_VIEWS = 24 };

typedef struct {
    Py_buffer view[MAX_VIEWS];
    int n;
} views_t;

static void release_views(views_t *vs)
{
    while (vs->n > 0)
        PyBuffer_Release(&vs->view[--vs->n]);
}

/* Strip the struct-module byte-order prefixes that mean native order. */
static const char *native_format(const char *f)
{
    if (f == NULL)
        return "B";                 /* PEP 3118: no format means unsigned bytes */
    if (*f == '@' || *f == '=' || (*f == '<' && PY_LITTLE_ENDIAN) || (*f == '>' && PY_BIG_ENDIAN))
        return f + 1;
    return f;
}

/* 4 or 8 for a float32 / float64 buffer, 0 for anything else. */
static int float_itemsize(const Py_buffer *v)
{
    const char *f = native_format(v->format);
    if (strcmp(f, "f") == 0 && v->itemsize == 4)
        return 4;
    if (strcmp(f, "d") == 0 && v->itemsize == 8)
        return 8;
    return 0;
}

/* Export `obj` (C-contiguous, with its format) into the next view of `vs`. */
static int borrow(views_t *vs, PyObject *obj, int flags, Py_buffer **v)
{
    *v = &vs->view[vs->n];
    if (PyObject_GetBuffer(obj, *v, flags | PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0)
        return -1;
    vs->n++;
    return 0;
}

/* Borrow `obj` as `count` elements of the call's float type (*itemsize: 0 until the first
 * array sets it). `writable` for outputs. None gives NULL if `optional`. */
static int get_floats(views_t *vs, PyObject *obj, const char *name, const char *shape,
                      Py_ssize_t count, int writable, int optional, int *itemsize, void **out)
{
    Py_buffer *v;
    int size;
    *out = NULL;
    if (obj == Py_None) {
        if (optional)
            return 0;
        PyErr_Format(PyExc_TypeError, "%s is required, got None", name);
        return -1;
    }
    if (borrow(vs, obj, writable ? PyBUF_WRITABLE : 0, &v) < 0)
        return -1;
    size = float_itemsize(v);
    if (size == 0) {
        PyErr_Format(PyExc_TypeError, "%s must hold float32 or float64, got buffer format '%s'",
                     name, v->format ? v->format : "B");
        return -1;
    }
    if (*itemsize != 0 && size != *itemsize) {
        PyErr_Format(PyExc_TypeError, "%s is float%d but x is float%d: one dtype per call",
                     name, 8 * size, 8 * *itemsize);
        return -1;
    }
    *itemsize = size;
    if (count < 0) {
        PyErr_Format(PyExc_ValueError, "%s %s: the dimensions ask for more elements than fit "
                     "in memory", name, shape);
        return -1;
    }
    if (v->len != count * size) {
        PyErr_Format(PyExc_ValueError, "%s must have %zd elements %s, got %zd", name, count,
                     shape, v->len / size);
        return -1;
    }
    *out = v->buf;
    return 0;
}

/* lengths: None, or B int64 values (the kernels check that they lie in [0, T]). */
static int get_lengths(views_t *vs, PyObject *obj, int64_t B, const int64_t **out)
{
    Py_buffer *v;
    const char *f;
    *out = NULL;
    if (obj == Py_None)
        return 0;
    if (borrow(vs, obj, 0, &v) < 0)
        return -1;
    f = native_format(v->format);
    if (v->itemsize != 8 || !(strcmp(f, "q") == 0 || strcmp(f, "l") == 0)) {
        PyErr_Format(PyExc_TypeError, "lengths must hold int64, got buffer format '%s'",
                     v->format ? v->format : "B");
        return -1;
    }
    if (v->len != B * 8) {
        PyErr_Format(PyExc_ValueError, "lengths must have B = %lld elements, got %zd",
                     (long long)B, v->len / 8);
        return -1;
    }
    *out = (const int64_t *)v->buf;
    return 0;
}

/* a*b*c, or -1 when that many float64 would not fit in a Py_ssize_t byte count. a, b, c >= 0. */
static Py_ssize_t elems(int64_t a, int64_t b, int64_t c)
{
    const int64_t limit = PY_SSIZE_T_MAX / 8;
    int64_t n = a;
    if (b != 0 && n > limit / b)
        return -1;
    n *= b;
    if (c != 0 && n > limit / c)
        return -1;
    return (Py_ssize_t)(n * c);
}

/* ------------------------------------------------------------------------------------------
 * One LSTM call: the pointers of every array, typeless until the kernel call casts them.
 * ------------------------------------------------------------------------------------------ */
typedef struct {
    int64_t T, B, I, H;
    const int64_t *lengths;
    const void *x, *h0, *c0, *w_ih, *w_hh, *b_ih, *b_hh;     /* forward inputs */
    void *y, *h_n, *c_n;                                     /* forward outputs */
    const void *dy, *dh_n, *dc_n;                            /* backward inputs */
    void *dx, *dh0, *dc0, *dw_ih, *dw_hh, *db_ih, *db_hh;    /* backward outputs */
} lstm_io;

/* Forward (inference, or training followed by backward) for one element type; written once
 * for float and double the way fastcells.h writes its prototypes. Backward gets exactly the
 * forward's x, h0, c0, weights and lengths (NULL where forward had NULL), as the workspace
 * rules require. No projection: P = 0, w_hr = dw_hr = NULL. On failure *failed names the
 * call that failed. */
#define DEFINE_LSTM_RUN(FC_T, FC_S)                                                            \
    static int lstm_run_##FC_S(const lstm_io *a, void *ws, int64_t ws_bytes, int training,     \
                               int n_threads, const char **failed)                             \
    {                                                                                          \
        int st = fc_lstm_forward_##FC_S(                                                       \
            (FC_T *)a->y, (FC_T *)a->h_n, (FC_T *)a->c_n, ws, ws_bytes, (const FC_T *)a->x,    \
            (const FC_T *)a->h0, (const FC_T *)a->c0, (const FC_T *)a->w_ih,                   \
            (const FC_T *)a->w_hh, (const FC_T *)a->b_ih, (const FC_T *)a->b_hh, NULL,         \
            a->lengths, a->T, a->B, a->I, a->H, 0, training, n_threads);                       \
        if (st != FC_OK) {                                                                     \
            *failed = "fc_lstm_forward_" #FC_S;                                                \
            return st;                                                                         \
        }                                                                                      \
        if (!training)                                                                         \
            return st;                                                                         \
        st = fc_lstm_backward_##FC_S(                                                          \
            (FC_T *)a->dx, (FC_T *)a->dh0, (FC_T *)a->dc0, (FC_T *)a->dw_ih,                   \
            (FC_T *)a->dw_hh, (FC_T *)a->db_ih, (FC_T *)a->db_hh, NULL, ws, ws_bytes,          \
            (const FC_T *)a->dy, (const FC_T *)a->dh_n, (const FC_T *)a->dc_n,                 \
            (const FC_T *)a->x, (const FC_T *)a->h0, (const FC_T *)a->c0,                      \
            (const FC_T *)a->w_ih, (const FC_T *)a->w_hh, NULL, a->lengths,                    \
            a->T, a->B, a->I, a->H, 0, n_threads);                                             \
        if (st != FC_OK)                                                                       \
            *failed = "fc_lstm_backward_" #FC_S;                                               \
        return st;                                                                             \
    }
DEFINE_LSTM_RUN(float, f32)
DEFINE_LSTM_RUN(double, f64)
#undef DEFINE_LSTM_RUN

/* Size the workspace, allocate it, run, free it. Raises and returns -1 on any failure. */
static int lstm_run(const lstm_io *a, int itemsize, int training, int n_threads)
{
    int64_t ws_bytes;
    void *ws;
    const char *failed = "";
    int st;

    ws_bytes = itemsize == 4 ? fc_lstm_workspace_size_f32(a->T, a->B, a->I, a->H, 0, training)
                             : fc_lstm_workspace_size_f64(a->T, a->B, a->I, a->H, 0, training);
    if (ws_bytes < 0) {
        raise_status("fc_lstm_workspace_size", ws_bytes);
        return -1;
    }
    if ((uint64_t)ws_bytes > (uint64_t)PY_SSIZE_T_MAX) {      /* beyond a 32-bit size_t */
        PyErr_NoMemory();
        return -1;
    }
    /* malloc's alignment (16 bytes on 64-bit platforms) covers the 8 bytes the kernels need */
    ws = malloc((size_t)ws_bytes);
    if (ws == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    Py_BEGIN_ALLOW_THREADS
    st = itemsize == 4 ? lstm_run_f32(a, ws, ws_bytes, training, n_threads, &failed)
                       : lstm_run_f64(a, ws, ws_bytes, training, n_threads, &failed);
    Py_END_ALLOW_THREADS
    free(ws);
    if (st != FC_OK) {
        raise_status(failed, st);
        return -1;
    }
    return 0;
}

static int check_dims(long long T, long long B, long long I, long long H)
{
    /* H = 0 is left to the library, which reports it as FC_ERR_SIZE */
    if (T < 0 || B < 0 || I < 0 || H < 0) {
        PyErr_SetString(PyExc_ValueError, "T, B, I, H must be >= 0");
        return -1;
    }
    return 0;
}

/* The forward pass's arrays; the first one (x) fixes the element type of the call. */
static int get_forward_arrays(views_t *vs, lstm_io *a, int *itemsize, PyObject *const *o)
{
    const int64_t T = a->T, B = a->B, I = a->I, H = a->H;
    void *p[10];
    if (get_floats(vs, o[0], "x", "(T, B, I)", elems(T, B, I), 0, 0, itemsize, &p[0]) < 0
        || get_floats(vs, o[1], "h0", "(B, H)", elems(B, H, 1), 0, 1, itemsize, &p[1]) < 0
        || get_floats(vs, o[2], "c0", "(B, H)", elems(B, H, 1), 0, 1, itemsize, &p[2]) < 0
        || get_floats(vs, o[3], "w_ih", "(4H, I)", elems(4, H, I), 0, 0, itemsize, &p[3]) < 0
        || get_floats(vs, o[4], "w_hh", "(4H, H)", elems(4, H, H), 0, 0, itemsize, &p[4]) < 0
        || get_floats(vs, o[5], "b_ih", "(4H,)", elems(4, H, 1), 0, 1, itemsize, &p[5]) < 0
        || get_floats(vs, o[6], "b_hh", "(4H,)", elems(4, H, 1), 0, 1, itemsize, &p[6]) < 0
        || get_floats(vs, o[7], "y", "(T, B, H)", elems(T, B, H), 1, 0, itemsize, &p[7]) < 0
        || get_floats(vs, o[8], "h_n", "(B, H)", elems(B, H, 1), 1, 0, itemsize, &p[8]) < 0
        || get_floats(vs, o[9], "c_n", "(B, H)", elems(B, H, 1), 1, 0, itemsize, &p[9]) < 0)
        return -1;
    a->x = p[0], a->h0 = p[1], a->c0 = p[2], a->w_ih = p[3], a->w_hh = p[4];
    a->b_ih = p[5], a->b_hh = p[6], a->y = p[7], a->h_n = p[8], a->c_n = p[9];
    return 0;
}

static int get_backward_arrays(views_t *vs, lstm_io *a, int *itemsize, PyObject *const *o)
{
    const int64_t T = a->T, B = a->B, I = a->I, H = a->H;
    void *p[10];
    if (get_floats(vs, o[0], "dy", "(T, B, H)", elems(T, B, H), 0, 1, itemsize, &p[0]) < 0
        || get_floats(vs, o[1], "dh_n", "(B, H)", elems(B, H, 1), 0, 1, itemsize, &p[1]) < 0
        || get_floats(vs, o[2], "dc_n", "(B, H)", elems(B, H, 1), 0, 1, itemsize, &p[2]) < 0
        || get_floats(vs, o[3], "dx", "(T, B, I)", elems(T, B, I), 1, 0, itemsize, &p[3]) < 0
        || get_floats(vs, o[4], "dh0", "(B, H)", elems(B, H, 1), 1, 0, itemsize, &p[4]) < 0
        || get_floats(vs, o[5], "dc0", "(B, H)", elems(B, H, 1), 1, 0, itemsize, &p[5]) < 0
        || get_floats(vs, o[6], "dw_ih", "(4H, I)", elems(4, H, I), 1, 0, itemsize, &p[6]) < 0
        || get_floats(vs, o[7], "dw_hh", "(4H, H)", elems(4, H, H), 1, 0, itemsize, &p[7]) < 0
        || get_floats(vs, o[8], "db_ih", "(4H,)", elems(4, H, 1), 1, 1, itemsize, &p[8]) < 0
        || get_floats(vs, o[9], "db_hh", "(4H,)", elems(4, H, 1), 1, 1, itemsize, &p[9]) < 0)
        return -1;
    a->dy = p[0], a->dh_n = p[1], a->dc_n = p[2], a->dx = p[3], a->dh0 = p[4];
    a->dc0 = p[5], a->dw_ih = p[6], a->dw_hh = p[7], a->db_ih = p[8], a->db_hh = p[9];
    return 0;
}

/* ------------------------------------------------------------------------------------------
 * Module functions
 * ------------------------------------------------------------------------------------------ */
static PyObject *py_lstm_forward(PyObject *self, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"x", "h0", "c0", "w_ih", "w_hh", "b_ih", "b_hh", "y", "h_n", "c_n",
                             "T", "B", "I", "H", "lengths", "n_threads", NULL};
    PyObject *o[10], *lengths = Py_None, *result = NULL;
    long long T, B, I, H;
    int n_threads = 1, itemsize = 0;
    views_t vs = {.n = 0};
    lstm_io a = {0};

    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOOOOOOOOOLLLL|Oi:lstm_forward", kwlist,
                                     &o[0], &o[1], &o[2], &o[3], &o[4], &o[5], &o[6], &o[7],
                                     &o[8], &o[9], &T, &B, &I, &H, &lengths, &n_threads))
        return NULL;
    if (check_dims(T, B, I, H) < 0)
        return NULL;
    a.T = T, a.B = B, a.I = I, a.H = H;
    if (get_forward_arrays(&vs, &a, &itemsize, o) == 0
        && get_lengths(&vs, lengths, B, &a.lengths) == 0
        && lstm_run(&a, itemsize, 0, n_threads) == 0)
        result = Py_NewRef(Py_None);
    release_views(&vs);
    return result;
}

static PyObject *py_lstm_train(PyObject *self, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"x", "h0", "c0", "w_ih", "w_hh", "b_ih", "b_hh",
                             "dy", "dh_n", "dc_n", "y", "h_n", "c_n",
                             "dx", "dh0", "dc0", "dw_ih", "dw_hh", "db_ih", "db_hh",
                             "T", "B", "I", "H", "lengths", "n_threads", NULL};
    PyObject *fwd[10], *bwd[10], *lengths = Py_None, *result = NULL;
    long long T, B, I, H;
    int n_threads = 1, itemsize = 0;
    views_t vs = {.n = 0};
    lstm_io a = {0};

    /* forward arrays in the order get_forward_arrays wants: inputs, then outputs */
    if (!PyArg_ParseTupleAndKeywords(
            args, kwargs, "OOOOOOOOOOOOOOOOOOOOLLLL|Oi:lstm_train", kwlist,
            &fwd[0], &fwd[1], &fwd[2], &fwd[3], &fwd[4], &fwd[5], &fwd[6],
            &bwd[0], &bwd[1], &bwd[2], &fwd[7], &fwd[8], &fwd[9],
            &bwd[3], &bwd[4], &bwd[5], &bwd[6], &bwd[7], &bwd[8], &bwd[9],
            &T, &B, &I, &H, &lengths, &n_threads))
        return NULL;
    if (check_dims(T, B, I, H) < 0)
        return NULL;
    a.T = T, a.B = B, a.I = I, a.H = H;
    if (get_forward_arrays(&vs, &a, &itemsize, fwd) == 0
        && get_backward_arrays(&vs, &a, &itemsize, bwd) == 0
        && get_lengths(&vs, lengths, B, &a.lengths) == 0
        && lstm_run(&a, itemsize, 1, n_threads) == 0)
        result = Py_NewRef(Py_None);
    release_views(&vs);
    return result;
}

/* Deterministic values in [-scale, scale): the timing only needs finite, unsaturated data. */
static void fill(float *p, int64_t n, float scale, uint32_t *state)
{
    for (int64_t i = 0; i < n; i++) {
        *state = *state * 1664525u + 1013904223u;
        p[i] = scale * ((float)(*state >> 8) / 8388608.0f - 1.0f);
    }
}

static double seconds_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* n float32 LSTM calls (inference forwards, or training forward + backward pairs) on buffers
 * allocated once, timed inside C: the per-call cost of the C API with nothing from Python in
 * the loop. Returns the mean microseconds per call (per pair when training). */
static PyObject *py_time_calls(PyObject *self, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"n", "T", "B", "I", "H", "training", "n_threads", NULL};
    enum { X, H0, C0, W_IH, W_HH, B_IH, B_HH, DY, DH_N, DC_N,    /* inputs */
           Y, H_N, C_N, DX, DH0, DC0, DW_IH, DW_HH, DB_IH, DB_HH, N_ARRAYS };
    long long n, T, B, I, H;
    int training, n_threads = 1, st = FC_OK;
    int64_t count[N_ARRAYS], total = 0, ws_bytes;
    float *arr[N_ARRAYS], *arena;
    void *ws;
    uint32_t seed = 12345u;
    double t0 = 0, t1 = 0;
    const char *failed = "";
    lstm_io a = {0};

    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "LLLLLp|i:time_calls", kwlist,
                                     &n, &T, &B, &I, &H, &training, &n_threads))
        return NULL;
    /* small enough that no element count below can overflow */
    if (n < 1 || T < 1 || B < 1 || I < 1 || H < 1 || T > 1024 || B > 1024 || I > 1024
        || H > 1024) {
        PyErr_SetString(PyExc_ValueError, "time_calls wants n >= 1 and T, B, I, H in [1, 1024]");
        return NULL;
    }
    count[X] = count[DX] = T * B * I;
    count[Y] = count[DY] = T * B * H;
    count[H0] = count[C0] = count[H_N] = count[C_N] = B * H;
    count[DH0] = count[DC0] = count[DH_N] = count[DC_N] = B * H;
    count[W_IH] = count[DW_IH] = 4 * H * I;
    count[W_HH] = count[DW_HH] = 4 * H * H;
    count[B_IH] = count[B_HH] = count[DB_IH] = count[DB_HH] = 4 * H;
    for (int k = 0; k < N_ARRAYS; k++)
        total += count[k];
    ws_bytes = fc_lstm_workspace_size_f32(T, B, I, H, 0, training);
    if (ws_bytes < 0) {
        raise_status("fc_lstm_workspace_size_f32", ws_bytes);
        return NULL;
    }
    /* every array in one allocation, in the order of the enum */
    arena = malloc((size_t)total * sizeof(float));
    ws = malloc((size_t)ws_bytes);
    if (arena == NULL || ws == NULL) {
        free(arena);
        free(ws);
        return PyErr_NoMemory();
    }
    arr[0] = arena;
    for (int k = 1; k < N_ARRAYS; k++)
        arr[k] = arr[k - 1] + count[k - 1];
    /* outputs too (the first call overwrites them); weights and biases in [-1/H, 1/H] keep
     * the gates unsaturated */
    fill(arena, total, 0.5f, &seed);
    fill(arr[W_IH], count[W_IH] + count[W_HH] + count[B_IH] + count[B_HH], 1.0f / (float)H,
         &seed);
    a.T = T, a.B = B, a.I = I, a.H = H;
    a.x = arr[X], a.h0 = arr[H0], a.c0 = arr[C0], a.w_ih = arr[W_IH], a.w_hh = arr[W_HH];
    a.b_ih = arr[B_IH], a.b_hh = arr[B_HH], a.dy = arr[DY], a.dh_n = arr[DH_N];
    a.dc_n = arr[DC_N], a.y = arr[Y], a.h_n = arr[H_N], a.c_n = arr[C_N], a.dx = arr[DX];
    a.dh0 = arr[DH0], a.dc0 = arr[DC0], a.dw_ih = arr[DW_IH], a.dw_hh = arr[DW_HH];
    a.db_ih = arr[DB_IH], a.db_hh = arr[DB_HH];

    Py_BEGIN_ALLOW_THREADS
    /* one untimed call: first-touch page faults, OpenMP and BLAS start-up */
    st = lstm_run_f32(&a, ws, ws_bytes, training, n_threads, &failed);
    if (st == FC_OK) {
        t0 = seconds_now();
        for (long long k = 0; k < n && st == FC_OK; k++)
            st = lstm_run_f32(&a, ws, ws_bytes, training, n_threads, &failed);
        t1 = seconds_now();
    }
    Py_END_ALLOW_THREADS
    free(ws);
    free(arena);
    if (st != FC_OK) {
        raise_status(failed, st);
        return NULL;
    }
    return PyFloat_FromDouble((t1 - t0) / (double)n * 1e6);
}

static PyMethodDef methods[] = {
    {"lstm_forward", (PyCFunction)(void (*)(void))py_lstm_forward, METH_VARARGS | METH_KEYWORDS,
     "lstm_forward(x, h0, c0, w_ih, w_hh, b_ih, b_hh, y, h_n, c_n, T, B, I, H, lengths=None, "
     "n_threads=1)\n--\n\nInference LSTM forward into the caller's buffers y, h_n, c_n."},
    {"lstm_train", (PyCFunction)(void (*)(void))py_lstm_train, METH_VARARGS | METH_KEYWORDS,
     "lstm_train(x, h0, c0, w_ih, w_hh, b_ih, b_hh, dy, dh_n, dc_n, y, h_n, c_n, dx, dh0, dc0, "
     "dw_ih, dw_hh, db_ih, db_hh, T, B, I, H, lengths=None, n_threads=1)\n--\n\n"
     "Training LSTM forward into y, h_n, c_n, then backward into dx ... db_hh."},
    {"time_calls", (PyCFunction)(void (*)(void))py_time_calls, METH_VARARGS | METH_KEYWORDS,
     "time_calls(n, T, B, I, H, training, n_threads=1)\n--\n\n"
     "Mean microseconds per float32 LSTM call (forward, or forward + backward when training),\n"
     "n calls timed in C."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "fc_embed_c",
    "Example: the fastcells C API from a C extension (buffer protocol, no NumPy headers).",
    -1, methods,
};

PyMODINIT_FUNC PyInit_fc_embed_c(void)
{
    PyObject *m;
    /* fetches the function table from the capsule fastcells._C_API (importing fastcells);
     * every fc_* call below goes through it */
    if (import_fastcells() < 0)
        return NULL;
    m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    FastcellsError = PyErr_NewExceptionWithDoc(
        "fc_embed_c.FastcellsError", "A fastcells C API call returned an error status.",
        PyExc_RuntimeError, NULL);
    if (FastcellsError == NULL || PyModule_AddObjectRef(m, "FastcellsError", FastcellsError) < 0
        || PyModule_AddIntConstant(m, "API_VERSION", fc_api_version()) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
