/* fastcells.h -- the C API of fastcells: LSTM, GRU and Elman-RNN sequence kernels (forward and
 * backpropagation-through-time backward) over raw pointers, float (_f32) and double (_f64).
 *
 * Installed with the package: fastcells.get_include() returns its directory.
 *
 * HOW TO REACH IT
 *   C extensions (and Cython through fastcells/capi.pxd): include this header, call
 *   import_fastcells() once (module init), then call the fc_* names below. import_fastcells()
 *   imports the Python package `fastcells` (which loads SciPy's BLAS, the only BLAS the kernels
 *   use), fetches the function table from the capsule `fastcells._C_API` and checks its API
 *   version; it returns 0, or -1 with a Python ImportError set.
 *   ctypes / cffi / numba: fastcells.capi.addresses() maps every fc_* name to its function
 *   address; the signatures are the prototypes below (fastcells.capi.function(name) returns a
 *   ready ctypes function). Define FASTCELLS_NO_PYTHON to use this header for the types and
 *   prototypes without Python.h (then there is no import_fastcells()).
 *
 * CONVENTIONS (all functions)
 *   - Math and weight layout are PyTorch's (nn.LSTM / nn.GRU / nn.RNN, one layer, one
 *     direction): gate order i,f,g,o (LSTM) and r,z,n (GRU); w_ih (G*H, I), w_hh (G*H, P).
 *   - Every array is C-contiguous (row-major) in the shape given in the comments, time-major:
 *     x (T, B, I), y (T, B, P). Arrays of one call share the element type of the suffix.
 *   - Outputs come first, then the workspace, then inputs, then sizes and flags.
 *   - Optional inputs are NULL: h0/c0 = zeros, b_ih/b_hh = no bias, lengths = all T (else
 *     PyTorch packed-sequence semantics: state frozen and y = 0 for t >= lengths[b]).
 *   - Status: FC_OK (0) or a negative FC_ERR_*; fc_strerror() names it. Nothing ever aborts,
 *     prints, or raises, and nothing an argument points to is written on failure, except
 *     that a failing call may leave its outputs and the workspace partially written.
 *   - Errors are found before any work: NULL where an array is required, negative or too
 *     large sizes (BLAS uses 32-bit integers), lengths outside [0, T], n_threads outside
 *     [0, 4096], a workspace that is too small, misaligned or in the wrong state.
 *   - n_threads: the number of threads a call may use (0 = OpenMP's default,
 *     omp_get_max_threads()). Small problems use fewer (an extra thread costs ~10-100 us to wake).
 *     BLAS runs single-threaded inside the kernels' own threads, set per thread through
 *     OpenBLAS's openblas_set_num_threads_local; no global state is changed. If SciPy's BLAS has
 *     no such function (not OpenBLAS, or OpenBLAS < 0.3.27) the C API runs single-threaded
 *     (the Python API then limits BLAS globally instead, so at n_threads > 1 its bits may
 *     differ from the C API's).
 *   - Results are bitwise reproducible for the same inputs, shapes and n_threads, and equal to
 *     the Python API's (fastcells.lstm_forward etc.) at the same n_threads.
 *   - Aliasing: no output may overlap an input or another output, except that LSTM and RNN
 *     accept db_ih == db_hh (the one array then receives the bias gradient).
 *   - Thread safety: calls may run concurrently from any number of threads, without the Python
 *     GIL, as long as no two concurrent calls write the same memory (outputs, workspace).
 *
 * WORKSPACE (the caller owns all memory)
 *   fc_<cell>_workspace_size_<t>(..., training) returns the bytes a forward call of that shape
 *   needs (or a negative FC_ERR_*). The workspace must be aligned to 8 bytes (malloc's is);
 *   64 bytes is faster (the saved states then start on cache lines; the packed weights are
 *   aligned inside the workspace wherever it starts).
 *   Query it for each shape. A workspace sized for training also serves inference.
 *   Inference (training = 0): scratch, reusable at once: packed copies of w_ih and w_hh and
 *   O(B*G*H) states and gate values; independent of T.
 *   Training (training = 1): the forward pass saves the gate activations and states in it; the
 *   matching backward pass reads them and CONSUMES the workspace (it overwrites the saved
 *   activations with gate gradients): a second backward returns FC_ERR_WORKSPACE_STATE until the
 *   next training forward. Backward must get the same sizes and flags, and the same inputs
 *   x, h0, c0, weights and lengths (NULL where forward had NULL), unmodified. A backward of
 *   the other element type gets FC_ERR_WORKSPACE_SIZE (when the workspace is too small for
 *   it) or FC_ERR_WORKSPACE_STATE.
 *
 * SEVERAL SOURCE FILES: by default each translation unit has its own table pointer and must
 * call import_fastcells(). Alternatively (NumPy's PY_ARRAY_UNIQUE_SYMBOL pattern) define
 * FASTCELLS_UNIQUE_SYMBOL in every file, call import_fastcells() in one, and also define
 * FASTCELLS_NO_IMPORT in the others: they share one table pointer.
 */
#ifndef FASTCELLS_H
#define FASTCELLS_H

#ifndef FASTCELLS_NO_PYTHON
#include <Python.h>
#endif
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The API this header describes. A library with a larger number also serves this header (the
 * function table only grows, appending at the end); import_fastcells() refuses a smaller one. */
#define FASTCELLS_API_VERSION 1

#define FC_OK 0
#define FC_ERR_NULL (-1)            /* a required pointer is NULL */
#define FC_ERR_SIZE (-2)            /* a size is negative/zero where it must be positive, or too large */
#define FC_ERR_ARG (-3)             /* bad n_threads or flag, or lengths outside [0, T] */
#define FC_ERR_WORKSPACE_SIZE (-4)  /* ws NULL, misaligned, or ws_bytes below the size query */
#define FC_ERR_WORKSPACE_STATE (-5) /* ws holds no unconsumed training forward of this cell,
                                       dtype, shape and flags */

/* ---------------------------------------------------------------------------------------------
 * Prototypes, written once for both element types (FC_T = float / double, FC_S = f32 / f64).
 * G = 4 (LSTM), 3 (GRU), 1 (RNN). LSTM: P = proj_size (w_hr (P, H), h has P units) or 0 for
 * no projection (then P = H below and w_hr / dw_hr are NULL).
 * ------------------------------------------------------------------------------------------- */
#define FASTCELLS_PROTOTYPES(FC_T, FC_S, FC_DECL)                                                  \
    /* bytes of workspace for a forward (and its backward) of this shape */                        \
    FC_DECL(int64_t, lstm_workspace_size_##FC_S, (int64_t T, int64_t B, int64_t I, int64_t H,      \
                                                  int64_t P, int training))                        \
    FC_DECL(int, lstm_forward_##FC_S, (                                                            \
        FC_T *y,                 /* (T, B, P) out: h_t at every step */                            \
        FC_T *h_n,               /* (B, P) out: last h (per sequence, with lengths) */             \
        FC_T *c_n,               /* (B, H) out: last c */                                          \
        void *ws, int64_t ws_bytes,                                                                \
        const FC_T *x,           /* (T, B, I) */                                                   \
        const FC_T *h0,          /* (B, P) or NULL */                                              \
        const FC_T *c0,          /* (B, H) or NULL */                                              \
        const FC_T *w_ih,        /* (4H, I) */                                                     \
        const FC_T *w_hh,        /* (4H, P) */                                                     \
        const FC_T *b_ih,        /* (4H,) or NULL */                                               \
        const FC_T *b_hh,        /* (4H,) or NULL */                                               \
        const FC_T *w_hr,        /* (P, H) when P > 0, else NULL */                                \
        const int64_t *lengths,  /* (B,) in [0, T], or NULL */                                     \
        int64_t T, int64_t B, int64_t I, int64_t H, int64_t P,                                     \
        int training, int n_threads))                                                              \
    FC_DECL(int, lstm_backward_##FC_S, (                                                           \
        FC_T *dx,                /* (T, B, I) out */                                               \
        FC_T *dh0, FC_T *dc0,    /* (B, P), (B, H) out */                                          \
        FC_T *dw_ih, FC_T *dw_hh, /* (4H, I), (4H, P) out */                                       \
        FC_T *db_ih, FC_T *db_hh, /* (4H,) out, each NULL = not wanted */                          \
        FC_T *dw_hr,             /* (P, H) out when P > 0, else NULL */                            \
        void *ws, int64_t ws_bytes,                                                                \
        const FC_T *dy,          /* (T, B, P) or NULL = 0 */                                       \
        const FC_T *dh_n,        /* (B, P) or NULL = 0 */                                          \
        const FC_T *dc_n,        /* (B, H) or NULL = 0 */                                          \
        const FC_T *x, const FC_T *h0, const FC_T *c0,                                             \
        const FC_T *w_ih, const FC_T *w_hh, const FC_T *w_hr, const int64_t *lengths,              \
        int64_t T, int64_t B, int64_t I, int64_t H, int64_t P, int n_threads))                     \
    /* GRU: reset_after = 1 is PyTorch's nn.GRU, 0 the classic GRU (Keras reset_after=False) */    \
    FC_DECL(int64_t, gru_workspace_size_##FC_S, (int64_t T, int64_t B, int64_t I, int64_t H,       \
                                                 int reset_after, int training))                   \
    FC_DECL(int, gru_forward_##FC_S, (                                                             \
        FC_T *y,                 /* (T, B, H) out */                                               \
        FC_T *h_n,               /* (B, H) out */                                                  \
        void *ws, int64_t ws_bytes,                                                                \
        const FC_T *x,           /* (T, B, I) */                                                   \
        const FC_T *h0,          /* (B, H) or NULL */                                              \
        const FC_T *w_ih,        /* (3H, I) */                                                     \
        const FC_T *w_hh,        /* (3H, H) */                                                     \
        const FC_T *b_ih, const FC_T *b_hh, /* (3H,) or NULL */                                    \
        const int64_t *lengths,  /* (B,) or NULL */                                                \
        int64_t T, int64_t B, int64_t I, int64_t H,                                                \
        int reset_after, int training, int n_threads))                                             \
    FC_DECL(int, gru_backward_##FC_S, (                                                            \
        FC_T *dx, FC_T *dh0,     /* (T, B, I), (B, H) out */                                       \
        FC_T *dw_ih, FC_T *dw_hh, /* (3H, I), (3H, H) out */                                       \
        FC_T *db_ih, FC_T *db_hh, /* (3H,) out, each NULL = not wanted */                          \
        void *ws, int64_t ws_bytes,                                                                \
        const FC_T *dy,          /* (T, B, H) or NULL */                                           \
        const FC_T *dh_n,        /* (B, H) or NULL */                                              \
        const FC_T *x, const FC_T *h0, const FC_T *w_ih, const FC_T *w_hh,                         \
        const int64_t *lengths,                                                                    \
        int64_t T, int64_t B, int64_t I, int64_t H, int reset_after, int n_threads))               \
    /* Elman RNN: relu = 0 for tanh, 1 for relu */                                                 \
    FC_DECL(int64_t, rnn_workspace_size_##FC_S, (int64_t T, int64_t B, int64_t I, int64_t H,       \
                                                 int relu, int training))                          \
    FC_DECL(int, rnn_forward_##FC_S, (                                                             \
        FC_T *y, FC_T *h_n,      /* (T, B, H), (B, H) out */                                       \
        void *ws, int64_t ws_bytes,                                                                \
        const FC_T *x, const FC_T *h0,       /* (T, B, I), (B, H) or NULL */                       \
        const FC_T *w_ih, const FC_T *w_hh,  /* (H, I), (H, H) */                                  \
        const FC_T *b_ih, const FC_T *b_hh,  /* (H,) or NULL */                                    \
        const int64_t *lengths,                                                                    \
        int64_t T, int64_t B, int64_t I, int64_t H,                                                \
        int relu, int training, int n_threads))                                                    \
    FC_DECL(int, rnn_backward_##FC_S, (                                                            \
        FC_T *dx, FC_T *dh0,     /* (T, B, I), (B, H) out */                                       \
        FC_T *dw_ih, FC_T *dw_hh, /* (H, I), (H, H) out */                                         \
        FC_T *db_ih, FC_T *db_hh, /* (H,) out, each NULL = not wanted */                           \
        void *ws, int64_t ws_bytes,                                                                \
        const FC_T *dy, const FC_T *dh_n,    /* (T, B, H), (B, H); each NULL = 0 */                \
        const FC_T *x, const FC_T *h0, const FC_T *w_ih, const FC_T *w_hh,                         \
        const int64_t *lengths,                                                                    \
        int64_t T, int64_t B, int64_t I, int64_t H, int relu, int n_threads))

/* Function-pointer types, fc_<name>_fn (e.g. fc_lstm_forward_f32_fn), for cffi/numba/ctypes users
 * and for holding the functions in variables. */
#define FC_TYPEDEF(ret, name, args) typedef ret (*fc_##name##_fn) args;
FASTCELLS_PROTOTYPES(float, f32, FC_TYPEDEF)
FASTCELLS_PROTOTYPES(double, f64, FC_TYPEDEF)
#undef FC_TYPEDEF

/* The function table behind the capsule. Append only; bump FASTCELLS_API_VERSION when adding. */
#define FC_TABLE_ENTRY(ret, name, args) fc_##name##_fn name;
typedef struct fastcells_capi {
    int api_version;                    /* FASTCELLS_API_VERSION of the library */
    int table_size;                     /* sizeof(fastcells_capi_t) of the library */
    const char *version;                /* the package version, e.g. "0.1.0" */
    const char *(*strerror)(int status);
    FASTCELLS_PROTOTYPES(float, f32, FC_TABLE_ENTRY)
    FASTCELLS_PROTOTYPES(double, f64, FC_TABLE_ENTRY)
} fastcells_capi_t;
#undef FC_TABLE_ENTRY

#define FASTCELLS_CAPSULE_NAME "fastcells._C_API"

#if !defined(FASTCELLS_BUILDING_LIBRARY) && !defined(FASTCELLS_NO_PYTHON)
#if defined(__GNUC__)
#define FC_MAYBE_UNUSED __attribute__((unused))
#else
#define FC_MAYBE_UNUSED
#endif

#if defined(FASTCELLS_UNIQUE_SYMBOL) && defined(FASTCELLS_NO_IMPORT)
extern const fastcells_capi_t *fastcells_capi_ptr;        /* defined in the importing file */
#elif defined(FASTCELLS_UNIQUE_SYMBOL)
const fastcells_capi_t *fastcells_capi_ptr = NULL;        /* shared by the extension's files */
#else
/* One table pointer per translation unit: call import_fastcells() in each that uses the API. */
static const fastcells_capi_t *fastcells_capi_ptr = NULL;
#endif

#if !defined(FASTCELLS_NO_IMPORT)
static FC_MAYBE_UNUSED int import_fastcells(void)
{
    const fastcells_capi_t *api;
    if (fastcells_capi_ptr != NULL)
        return 0;
    api = (const fastcells_capi_t *)PyCapsule_Import(FASTCELLS_CAPSULE_NAME, 0);
    if (api == NULL)
        return -1;
    if (api->api_version < FASTCELLS_API_VERSION
        || api->table_size < (int)sizeof(fastcells_capi_t)) {
        PyErr_Format(PyExc_ImportError,
                     "fastcells C API version %d (fastcells %s) is older than the version %d this "
                     "module was compiled against; upgrade fastcells",
                     api->api_version, api->version, FASTCELLS_API_VERSION);
        return -1;
    }
    fastcells_capi_ptr = api;
    return 0;
}
#endif

/* the runtime version of the library (after import_fastcells()) */
#define fc_api_version() (fastcells_capi_ptr->api_version)
#define fc_version() (fastcells_capi_ptr->version)
#define fc_strerror (*fastcells_capi_ptr->strerror)
#define FC_CALL_(name) (*fastcells_capi_ptr->name)
#define fc_lstm_workspace_size_f32 FC_CALL_(lstm_workspace_size_f32)
#define fc_lstm_forward_f32 FC_CALL_(lstm_forward_f32)
#define fc_lstm_backward_f32 FC_CALL_(lstm_backward_f32)
#define fc_gru_workspace_size_f32 FC_CALL_(gru_workspace_size_f32)
#define fc_gru_forward_f32 FC_CALL_(gru_forward_f32)
#define fc_gru_backward_f32 FC_CALL_(gru_backward_f32)
#define fc_rnn_workspace_size_f32 FC_CALL_(rnn_workspace_size_f32)
#define fc_rnn_forward_f32 FC_CALL_(rnn_forward_f32)
#define fc_rnn_backward_f32 FC_CALL_(rnn_backward_f32)
#define fc_lstm_workspace_size_f64 FC_CALL_(lstm_workspace_size_f64)
#define fc_lstm_forward_f64 FC_CALL_(lstm_forward_f64)
#define fc_lstm_backward_f64 FC_CALL_(lstm_backward_f64)
#define fc_gru_workspace_size_f64 FC_CALL_(gru_workspace_size_f64)
#define fc_gru_forward_f64 FC_CALL_(gru_forward_f64)
#define fc_gru_backward_f64 FC_CALL_(gru_backward_f64)
#define fc_rnn_workspace_size_f64 FC_CALL_(rnn_workspace_size_f64)
#define fc_rnn_forward_f64 FC_CALL_(rnn_forward_f64)
#define fc_rnn_backward_f64 FC_CALL_(rnn_backward_f64)
#endif

#ifdef __cplusplus
}
#endif
#endif /* FASTCELLS_H */
