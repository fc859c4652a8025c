# fastcells/capi.pxd -- cimport the fastcells C API from Cython.
#
#     from fastcells cimport capi as fc
#     fc.import_fastcells()              # once, at module level (raises ImportError on failure)
#     ...
#     with nogil:
#         status = fc.fc_lstm_forward_f32(y, h_n, c_n, ws, ws_bytes, x, NULL, NULL, w_ih, w_hh,
#                                         b_ih, b_hh, NULL, NULL, T, B, I, H, 0, 1, 1)
#
# Build: include_dirs=fastcells.get_include() (the header) and, for cythonize,
# include_path=fastcells.get_include() (this file). Everything here is declared from
# fastcells.h, which documents the arguments, shapes, status codes, workspace and thread rules;
# this file repeats its prototypes (a test checks that the two agree). All functions are
# nogil and noexcept: they report errors only through their int status (or, for the workspace
# size queries, a negative return value).
from libc.stdint cimport int64_t

cdef extern from "fastcells.h" nogil:
    enum:
        FASTCELLS_API_VERSION
        FC_OK
        FC_ERR_NULL
        FC_ERR_SIZE
        FC_ERR_ARG
        FC_ERR_WORKSPACE_SIZE
        FC_ERR_WORKSPACE_STATE

    # Function-pointer types (the header's fc_<name>_fn): the documented signatures.
    ctypedef int64_t (*fc_lstm_workspace_size_f32_fn)(int64_t T, int64_t B, int64_t I, int64_t H,
            int64_t P, int training) noexcept nogil
    ctypedef int64_t (*fc_lstm_workspace_size_f64_fn)(int64_t T, int64_t B, int64_t I, int64_t H,
            int64_t P, int training) noexcept nogil
    ctypedef int (*fc_lstm_forward_f32_fn)(float *y, float *h_n, float *c_n, void *ws,
            int64_t ws_bytes, const float *x, const float *h0, const float *c0, const float *w_ih,
            const float *w_hh, const float *b_ih, const float *b_hh, const float *w_hr,
            const int64_t *lengths, int64_t T, int64_t B, int64_t I, int64_t H, int64_t P,
            int training, int n_threads) noexcept nogil
    ctypedef int (*fc_lstm_forward_f64_fn)(double *y, double *h_n, double *c_n, void *ws,
            int64_t ws_bytes, const double *x, const double *h0, const double *c0,
            const double *w_ih, const double *w_hh, const double *b_ih, const double *b_hh,
            const double *w_hr, const int64_t *lengths, int64_t T, int64_t B, int64_t I,
            int64_t H, int64_t P, int training, int n_threads) noexcept nogil
    ctypedef int (*fc_lstm_backward_f32_fn)(float *dx, float *dh0, float *dc0, float *dw_ih,
            float *dw_hh, float *db_ih, float *db_hh, float *dw_hr, void *ws, int64_t ws_bytes,
            const float *dy, const float *dh_n, const float *dc_n, const float *x,
            const float *h0, const float *c0, const float *w_ih, const float *w_hh,
            const float *w_hr, const int64_t *lengths, int64_t T, int64_t B, int64_t I, int64_t H,
            int64_t P, int n_threads) noexcept nogil
    ctypedef int (*fc_lstm_backward_f64_fn)(double *dx, double *dh0, double *dc0, double *dw_ih,
            double *dw_hh, double *db_ih, double *db_hh, double *dw_hr, void *ws,
            int64_t ws_bytes, const double *dy, const double *dh_n, const double *dc_n,
            const double *x, const double *h0, const double *c0, const double *w_ih,
            const double *w_hh, const double *w_hr, const int64_t *lengths, int64_t T, int64_t B,
            int64_t I, int64_t H, int64_t P, int n_threads) noexcept nogil
    ctypedef int64_t (*fc_gru_workspace_size_f32_fn)(int64_t T, int64_t B, int64_t I, int64_t H,
            int reset_after, int training) noexcept nogil
    ctypedef int64_t (*fc_gru_workspace_size_f64_fn)(int64_t T, int64_t B, int64_t I, int64_t H,
            int reset_after, int training) noexcept nogil
    ctypedef int (*fc_gru_forward_f32_fn)(float *y, float *h_n, void *ws, int64_t ws_bytes,
            const float *x, const float *h0, const float *w_ih, const float *w_hh,
            const float *b_ih, const float *b_hh, const int64_t *lengths, int64_t T, int64_t B,
            int64_t I, int64_t H, int reset_after, int training, int n_threads) noexcept nogil
    ctypedef int (*fc_gru_forward_f64_fn)(double *y, double *h_n, void *ws, int64_t ws_bytes,
            const double *x, const double *h0, const double *w_ih, const double *w_hh,
            const double *b_ih, const double *b_hh, const int64_t *lengths, int64_t T, int64_t B,
            int64_t I, int64_t H, int reset_after, int training, int n_threads) noexcept nogil
    ctypedef int (*fc_gru_backward_f32_fn)(float *dx, float *dh0, float *dw_ih, float *dw_hh,
            float *db_ih, float *db_hh, void *ws, int64_t ws_bytes, const float *dy,
            const float *dh_n, const float *x, const float *h0, const float *w_ih,
            const float *w_hh, const int64_t *lengths, int64_t T, int64_t B, int64_t I, int64_t H,
            int reset_after, int n_threads) noexcept nogil
    ctypedef int (*fc_gru_backward_f64_fn)(double *dx, double *dh0, double *dw_ih, double *dw_hh,
            double *db_ih, double *db_hh, void *ws, int64_t ws_bytes, const double *dy,
            const double *dh_n, const double *x, const double *h0, const double *w_ih,
            const double *w_hh, const int64_t *lengths, int64_t T, int64_t B, int64_t I,
            int64_t H, int reset_after, int n_threads) noexcept nogil
    ctypedef int64_t (*fc_rnn_workspace_size_f32_fn)(int64_t T, int64_t B, int64_t I, int64_t H,
            int relu, int training) noexcept nogil
    ctypedef int64_t (*fc_rnn_workspace_size_f64_fn)(int64_t T, int64_t B, int64_t I, int64_t H,
            int relu, int training) noexcept nogil
    ctypedef int (*fc_rnn_forward_f32_fn)(float *y, float *h_n, void *ws, int64_t ws_bytes,
            const float *x, const float *h0, const float *w_ih, const float *w_hh,
            const float *b_ih, const float *b_hh, const int64_t *lengths, int64_t T, int64_t B,
            int64_t I, int64_t H, int relu, int training, int n_threads) noexcept nogil
    ctypedef int (*fc_rnn_forward_f64_fn)(double *y, double *h_n, void *ws, int64_t ws_bytes,
            const double *x, const double *h0, const double *w_ih, const double *w_hh,
            const double *b_ih, const double *b_hh, const int64_t *lengths, int64_t T, int64_t B,
            int64_t I, int64_t H, int relu, int training, int n_threads) noexcept nogil
    ctypedef int (*fc_rnn_backward_f32_fn)(float *dx, float *dh0, float *dw_ih, float *dw_hh,
            float *db_ih, float *db_hh, void *ws, int64_t ws_bytes, const float *dy,
            const float *dh_n, const float *x, const float *h0, const float *w_ih,
            const float *w_hh, const int64_t *lengths, int64_t T, int64_t B, int64_t I, int64_t H,
            int relu, int n_threads) noexcept nogil
    ctypedef int (*fc_rnn_backward_f64_fn)(double *dx, double *dh0, double *dw_ih, double *dw_hh,
            double *db_ih, double *db_hh, void *ws, int64_t ws_bytes, const double *dy,
            const double *dh_n, const double *x, const double *h0, const double *w_ih,
            const double *w_hh, const int64_t *lengths, int64_t T, int64_t B, int64_t I,
            int64_t H, int relu, int n_threads) noexcept nogil

    # The functions (after import_fastcells()).
    int fc_api_version()
    const char *fc_version()
    const char *fc_strerror(int status)
    fc_lstm_workspace_size_f32_fn fc_lstm_workspace_size_f32
    fc_lstm_workspace_size_f64_fn fc_lstm_workspace_size_f64
    fc_lstm_forward_f32_fn fc_lstm_forward_f32
    fc_lstm_forward_f64_fn fc_lstm_forward_f64
    fc_lstm_backward_f32_fn fc_lstm_backward_f32
    fc_lstm_backward_f64_fn fc_lstm_backward_f64
    fc_gru_workspace_size_f32_fn fc_gru_workspace_size_f32
    fc_gru_workspace_size_f64_fn fc_gru_workspace_size_f64
    fc_gru_forward_f32_fn fc_gru_forward_f32
    fc_gru_forward_f64_fn fc_gru_forward_f64
    fc_gru_backward_f32_fn fc_gru_backward_f32
    fc_gru_backward_f64_fn fc_gru_backward_f64
    fc_rnn_workspace_size_f32_fn fc_rnn_workspace_size_f32
    fc_rnn_workspace_size_f64_fn fc_rnn_workspace_size_f64
    fc_rnn_forward_f32_fn fc_rnn_forward_f32
    fc_rnn_forward_f64_fn fc_rnn_forward_f64
    fc_rnn_backward_f32_fn fc_rnn_backward_f32
    fc_rnn_backward_f64_fn fc_rnn_backward_f64

    # The capsule's function table (for code that wants to hold it).
    ctypedef struct fastcells_capi_t:
        int api_version
        int table_size
        const char *version
        const char *(*strerror)(int status) noexcept nogil
        fc_lstm_workspace_size_f32_fn lstm_workspace_size_f32
        fc_lstm_workspace_size_f64_fn lstm_workspace_size_f64
        fc_lstm_forward_f32_fn lstm_forward_f32
        fc_lstm_forward_f64_fn lstm_forward_f64
        fc_lstm_backward_f32_fn lstm_backward_f32
        fc_lstm_backward_f64_fn lstm_backward_f64
        fc_gru_workspace_size_f32_fn gru_workspace_size_f32
        fc_gru_workspace_size_f64_fn gru_workspace_size_f64
        fc_gru_forward_f32_fn gru_forward_f32
        fc_gru_forward_f64_fn gru_forward_f64
        fc_gru_backward_f32_fn gru_backward_f32
        fc_gru_backward_f64_fn gru_backward_f64
        fc_rnn_workspace_size_f32_fn rnn_workspace_size_f32
        fc_rnn_workspace_size_f64_fn rnn_workspace_size_f64
        fc_rnn_forward_f32_fn rnn_forward_f32
        fc_rnn_forward_f64_fn rnn_forward_f64
        fc_rnn_backward_f32_fn rnn_backward_f32
        fc_rnn_backward_f64_fn rnn_backward_f64

cdef extern from "fastcells.h":
    # Imports the fastcells package and fetches the table; -1 with ImportError set on failure.
    int import_fastcells() except -1
