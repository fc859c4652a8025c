# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Compiled LSTM / GRU / Elman-RNN sequence kernels: forward and BPTT backward.

Every kernel is one ``nogil`` call over raw pointers, written once over the fused type
``floating`` (float32 and float64). The Python layer (_api.py) validates, allocates every output
and workspace, and passes C-contiguous arrays; nothing here allocates or touches Python objects.

Structure of every forward kernel (DESIGN.md practices 2, 3, 6, 7):
  1. input projection of a chunk of timesteps as ONE GEMM with threaded BLAS
     (training: the chunk is the whole sequence; inference: a bounded chunk, O(B*H) memory);
  2. the time loop inside an OpenMP parallel region where each thread owns a slice of the
     batch and runs all timesteps with single-threaded BLAS: per step one recurrent GEMM on its
     rows, then the fused pointwise pass of the cell (csrc/fc_cells_impl.h). No barrier per step.
Backward mirrors it: per step only the pointwise backward and dh_{t-1} = dG_t W_hh on the slice;
dx, dW_ih, dW_hh and the bias gradients are single GEMMs / reductions after the loop.

Weight orientation (measured, OpenBLAS SkylakeX kernel, per-step GEMM 16x256x64 float32):
the forward recurrent GEMM runs ~2x faster with W_hh^T (H, G*H) as a plain operand than with
W_hh transposed inside BLAS, so the caller passes w_hh_t = W_hh^T made once per call; backward
uses W_hh (G*H, H) untransposed, which is the fast orientation for dG @ W_hh.
"""
from cython cimport floating
from cython.parallel cimport parallel, threadid
from libc.string cimport memcpy, memset
from libc.stdint cimport uintptr_t

from fastcells._blas cimport gemm
cimport openmp

cdef extern from "fc_cells.h" nogil:
    void fc_lstm_fwd_f32(Py_ssize_t rows, Py_ssize_t H, float *gates, const float *bias, const float *c_prev, float *c, float *h, float *h_copy)
    void fc_lstm_bwd_f32(Py_ssize_t rows, Py_ssize_t H, float *gates, const float *c, const float *c_prev, const float *dy, const float *dh, float *dc)
    void fc_gru_fwd_f32(Py_ssize_t rows, Py_ssize_t H, float *gx, const float *gh, const float *b_ih, const float *b_hh, const float *h_prev, float *h, float *h_copy, float *hn_save)
    void fc_gru_bwd_f32(Py_ssize_t rows, Py_ssize_t H, float *gates, float *hn, float *dgh, const float *h_prev, const float *dy, float *dh)
    void fc_rnn_fwd_f32(Py_ssize_t rows, Py_ssize_t H, float *g, const float *bias, int relu, float *h_copy)
    void fc_rnn_bwd_f32(Py_ssize_t rows, Py_ssize_t H, const float *h, float *dg, const float *dy, const float *dh, int relu)
    void fc_colsum_f32(Py_ssize_t rows, Py_ssize_t n, Py_ssize_t ld, const float *a, float *out, int accumulate)
    void fc_vsigmoid_f32(Py_ssize_t n, const float *x, float *y)
    void fc_vtanh_f32(Py_ssize_t n, const float *x, float *y)
    void fc_lstm_fwd_f64(Py_ssize_t rows, Py_ssize_t H, double *gates, const double *bias, const double *c_prev, double *c, double *h, double *h_copy)
    void fc_lstm_bwd_f64(Py_ssize_t rows, Py_ssize_t H, double *gates, const double *c, const double *c_prev, const double *dy, const double *dh, double *dc)
    void fc_gru_fwd_f64(Py_ssize_t rows, Py_ssize_t H, double *gx, const double *gh, const double *b_ih, const double *b_hh, const double *h_prev, double *h, double *h_copy, double *hn_save)
    void fc_gru_bwd_f64(Py_ssize_t rows, Py_ssize_t H, double *gates, double *hn, double *dgh, const double *h_prev, const double *dy, double *dh)
    void fc_rnn_fwd_f64(Py_ssize_t rows, Py_ssize_t H, double *g, const double *bias, int relu, double *h_copy)
    void fc_rnn_bwd_f64(Py_ssize_t rows, Py_ssize_t H, const double *h, double *dg, const double *dy, const double *dh, int relu)
    void fc_colsum_f64(Py_ssize_t rows, Py_ssize_t n, Py_ssize_t ld, const double *a, double *out, int accumulate)
    void fc_vsigmoid_f64(Py_ssize_t n, const double *x, double *y)
    void fc_vtanh_f64(Py_ssize_t n, const double *x, double *y)

# Per-calling-thread BLAS thread count (OpenBLAS openblas_set_num_threads_local: sets, returns
# the previous value). NULL when the BLAS has none; the Python layer then limits BLAS globally.
ctypedef int (*set_threads_fn)(int) noexcept nogil


# ---------------------------------------------------------------- fused-type dispatch to csrc
cdef inline void pw_lstm_fwd(Py_ssize_t rows, Py_ssize_t H, floating *gates, const floating *bias,
                             const floating *c_prev, floating *c, floating *h,
                             floating *h_copy) noexcept nogil:
    if floating is float:
        fc_lstm_fwd_f32(rows, H, gates, bias, c_prev, c, h, h_copy)
    else:
        fc_lstm_fwd_f64(rows, H, gates, bias, c_prev, c, h, h_copy)

cdef inline void pw_lstm_bwd(Py_ssize_t rows, Py_ssize_t H, floating *gates, const floating *c,
                             const floating *c_prev, const floating *dy, const floating *dh,
                             floating *dc) noexcept nogil:
    if floating is float:
        fc_lstm_bwd_f32(rows, H, gates, c, c_prev, dy, dh, dc)
    else:
        fc_lstm_bwd_f64(rows, H, gates, c, c_prev, dy, dh, dc)

cdef inline void pw_gru_fwd(Py_ssize_t rows, Py_ssize_t H, floating *gx, const floating *gh,
                            const floating *b_ih, const floating *b_hh, const floating *h_prev,
                            floating *h, floating *h_copy, floating *hn_save) noexcept nogil:
    if floating is float:
        fc_gru_fwd_f32(rows, H, gx, gh, b_ih, b_hh, h_prev, h, h_copy, hn_save)
    else:
        fc_gru_fwd_f64(rows, H, gx, gh, b_ih, b_hh, h_prev, h, h_copy, hn_save)

cdef inline void pw_gru_bwd(Py_ssize_t rows, Py_ssize_t H, floating *gates, floating *hn,
                            floating *dgh, const floating *h_prev, const floating *dy,
                            floating *dh) noexcept nogil:
    if floating is float:
        fc_gru_bwd_f32(rows, H, gates, hn, dgh, h_prev, dy, dh)
    else:
        fc_gru_bwd_f64(rows, H, gates, hn, dgh, h_prev, dy, dh)

cdef inline void pw_rnn_fwd(Py_ssize_t rows, Py_ssize_t H, floating *g, const floating *bias,
                            int relu, floating *h_copy) noexcept nogil:
    if floating is float:
        fc_rnn_fwd_f32(rows, H, g, bias, relu, h_copy)
    else:
        fc_rnn_fwd_f64(rows, H, g, bias, relu, h_copy)

cdef inline void pw_rnn_bwd(Py_ssize_t rows, Py_ssize_t H, const floating *h, floating *dg,
                            const floating *dy, const floating *dh, int relu) noexcept nogil:
    if floating is float:
        fc_rnn_bwd_f32(rows, H, h, dg, dy, dh, relu)
    else:
        fc_rnn_bwd_f64(rows, H, h, dg, dy, dh, relu)

cdef inline void colsum(Py_ssize_t rows, Py_ssize_t n, Py_ssize_t ld, const floating *a,
                        floating *out, int accumulate) noexcept nogil:
    if floating is float:
        fc_colsum_f32(rows, n, ld, a, out, accumulate)
    else:
        fc_colsum_f64(rows, n, ld, a, out, accumulate)


# ---------------------------------------------------------------- small helpers
cdef inline int set_blas_threads(set_threads_fn fn, int n) noexcept nogil:
    """Set this thread's BLAS thread count; return the previous one (0 when not settable)."""
    if fn == NULL:
        return 0
    return fn(n)

cdef inline void restore_blas_threads(set_threads_fn fn, int prev) noexcept nogil:
    if fn != NULL and prev > 0:
        fn(prev)

cdef inline Py_ssize_t slice_start(Py_ssize_t B, int n_par, int tid) noexcept nogil:
    # Thread tid owns batch rows [slice_start(tid), slice_start(tid + 1)).
    return (B * tid) // n_par

cdef inline void copy_or_zero(floating *dst, const floating *src, Py_ssize_t n) noexcept nogil:
    if src != NULL:
        memcpy(dst, src, n * sizeof(floating))
    else:
        memset(dst, 0, n * sizeof(floating))



cdef void par_gemm(int n_threads, set_threads_fn set_threads, bint trans_a, Py_ssize_t M,
                   Py_ssize_t N, Py_ssize_t K, const floating *A, Py_ssize_t lda,
                   const floating *Bm, Py_ssize_t ldb, floating beta, floating *C,
                   Py_ssize_t ldc) noexcept nogil:
    """C = op(A) @ Bm + beta C (Bm untransposed), the M rows of C split over OpenMP threads.

    Each thread calls BLAS single-threaded on its row block, so BLAS's own thread pool is never
    woken: no idle BLAS threads spinning against our OpenMP threads on the same cores.
    trans_a: A is stored (K, M) and the row block of op(A) is a column block of A.
    """
    cdef int tid, prev
    cdef Py_ssize_t r0, r1
    with parallel(num_threads=n_threads):
        tid = threadid()
        r0 = slice_start(M, n_threads, tid)
        r1 = slice_start(M, n_threads, tid + 1)
        prev = set_blas_threads(set_threads, 1)
        gemm(trans_a, False, <int>(r1 - r0), <int>N, <int>K, <floating>1,
             A + (r0 if trans_a else r0 * lda), <int>lda, Bm, <int>ldb, beta,
             C + r0 * ldc, <int>ldc)
        restore_blas_threads(set_threads, prev)


cdef void par_gemm_bt(int n_threads, set_threads_fn set_threads, Py_ssize_t M, Py_ssize_t N,
                      Py_ssize_t K, const floating *A, Py_ssize_t lda, const floating *Bm,
                      Py_ssize_t ldb, floating *C, Py_ssize_t ldc) noexcept nogil:
    """C = A @ Bm^T (Bm stored (N, K)), rows of C split over OpenMP threads (see par_gemm)."""
    cdef int tid, prev
    cdef Py_ssize_t r0, r1
    with parallel(num_threads=n_threads):
        tid = threadid()
        r0 = slice_start(M, n_threads, tid)
        r1 = slice_start(M, n_threads, tid + 1)
        prev = set_blas_threads(set_threads, 1)
        gemm(False, True, <int>(r1 - r0), <int>N, <int>K, <floating>1, A + r0 * lda, <int>lda,
             Bm, <int>ldb, <floating>0, C + r0 * ldc, <int>ldc)
        restore_blas_threads(set_threads, prev)


cdef void par_colsum(int n_threads, Py_ssize_t rows, Py_ssize_t n, Py_ssize_t ld,
                     const floating *a, floating *out) noexcept nogil:
    """out[j] = sum_r a[r, j] for j < n, the columns split over OpenMP threads."""
    cdef int tid
    cdef Py_ssize_t c0, c1
    with parallel(num_threads=n_threads):
        tid = threadid()
        c0 = slice_start(n, n_threads, tid)
        c1 = slice_start(n, n_threads, tid + 1)
        if c1 > c0:
            colsum(rows, c1 - c0, ld, a + c0, out + c0, 0)


# ================================================================= LSTM
cdef int lstm_fwd(floating *y, floating *h_n, floating *c_n,
                  floating *gates, floating *cs, floating *hs,
                  const floating *x, const floating *h0, const floating *c0,
                  const floating *w_ih, const floating *w_hh_t, const floating *bias,
                  Py_ssize_t T, Py_ssize_t B, Py_ssize_t I, Py_ssize_t H, Py_ssize_t chunk,
                  int n_threads, int n_par, set_threads_fn set_threads) noexcept nogil:
    # y (T,B,H) out; h_n, c_n (B,H) out.
    # gates: training (T,B,4H) out = saved i,f,g,o; inference (chunk,B,4H) scratch.
    # cs, hs: training (T,B,H) out = saved c_t, h_t; inference NULL (state lives in c_n and y).
    # x (T,B,I); h0, c0 (B,H); w_ih (4H,I); w_hh_t (H,4H) = W_hh^T; bias (4H,) = b_ih + b_hh.
    cdef Py_ssize_t G = 4 * H, BH = B * H, t0, tc, t, b0, nb, gt
    cdef int tid, prev_local, prev_main
    cdef floating *g_t
    cdef const floating *h_prev
    cdef const floating *c_prev
    cdef floating *c_out
    cdef floating *h_out
    cdef floating *h_copy
    cdef bint training = hs != NULL
    if T == 0 or B == 0:
        copy_or_zero(h_n, h0, BH)
        copy_or_zero(c_n, c0, BH)
        return 0
    prev_main = set_blas_threads(set_threads, 1)
    t0 = 0
    while t0 < T:
        tc = chunk if chunk < T - t0 else T - t0
        # gates[chunk] = x[chunk] @ W_ih^T  (one GEMM for tc*B rows; eq. L1 input part)
        par_gemm_bt(n_threads, set_threads, tc * B, G, I, x + t0 * B * I, I, w_ih, I, gates, G)
        with parallel(num_threads=n_par):
            tid = threadid()
            b0 = slice_start(B, n_par, tid)
            nb = slice_start(B, n_par, tid + 1) - b0
            prev_local = set_blas_threads(set_threads, 1)
            for t in range(t0, t0 + tc):
                gt = t if training else t - t0
                g_t = gates + (gt * B + b0) * G
                if t == 0:
                    h_prev = h0 + b0 * H
                    c_prev = c0 + b0 * H
                elif training:
                    h_prev = hs + (t - 1) * BH + b0 * H
                    c_prev = cs + (t - 1) * BH + b0 * H
                else:
                    h_prev = y + (t - 1) * BH + b0 * H
                    c_prev = c_n + b0 * H
                # gates_t[rows] += h_{t-1}[rows] @ W_hh^T   (eq. L1 recurrent part)
                gemm(False, False, <int>nb, <int>G, <int>H, <floating>1, h_prev, <int>H,
                     w_hh_t, <int>G, <floating>1, g_t, <int>G)
                if training:
                    c_out = cs + t * BH + b0 * H
                    h_out = hs + t * BH + b0 * H
                    h_copy = y + t * BH + b0 * H
                else:
                    c_out = c_n + b0 * H
                    h_out = y + t * BH + b0 * H
                    h_copy = NULL
                pw_lstm_fwd(nb, H, g_t, bias, c_prev, c_out, h_out, h_copy)
            restore_blas_threads(set_threads, prev_local)
        t0 = t0 + tc
    memcpy(h_n, y + (T - 1) * BH, BH * sizeof(floating))
    if training:
        memcpy(c_n, cs + (T - 1) * BH, BH * sizeof(floating))
    restore_blas_threads(set_threads, prev_main)
    return 0


cdef int lstm_bwd(floating *dx, floating *dh0, floating *dc0,
                  floating *dw_ih, floating *dw_hh, floating *db,
                  floating *gates, const floating *cs, const floating *hs,
                  const floating *x, const floating *h0, const floating *c0,
                  const floating *w_ih, const floating *w_hh,
                  const floating *dy, const floating *dh_n, const floating *dc_n,
                  Py_ssize_t T, Py_ssize_t B, Py_ssize_t I, Py_ssize_t H,
                  int n_threads, int n_par, set_threads_fn set_threads) noexcept nogil:
    # dx (T,B,I), dh0, dc0 (B,H), dw_ih (4H,I), dw_hh (4H,H) out; db (4H,) out or NULL.
    # gates (T,B,4H): in = saved i,f,g,o; out = dG (destroyed: the workspace is consumed).
    # cs, hs (T,B,H) saved states; x, h0, c0, w_ih (4H,I), w_hh (4H,H) as in forward.
    # dy (T,B,H), dh_n, dc_n (B,H): incoming gradients, each may be NULL (= 0).
    cdef Py_ssize_t G = 4 * H, BH = B * H, t, b0, nb
    cdef int tid, prev_local, prev_main
    cdef floating *g_t
    cdef const floating *c_prev
    copy_or_zero(dh0, dh_n, BH)      # dh0 / dc0 double as the running dL/dh_t, dL/dc_t
    copy_or_zero(dc0, dc_n, BH)
    prev_main = set_blas_threads(set_threads, 1)
    if T > 0 and B > 0:
        with parallel(num_threads=n_par):
            tid = threadid()
            b0 = slice_start(B, n_par, tid)
            nb = slice_start(B, n_par, tid + 1) - b0
            prev_local = set_blas_threads(set_threads, 1)
            for t in range(T - 1, -1, -1):
                g_t = gates + (t * B + b0) * G
                c_prev = (cs + (t - 1) * BH if t > 0 else c0) + b0 * H
                pw_lstm_bwd(nb, H, g_t, cs + t * BH + b0 * H, c_prev,
                            dy + t * BH + b0 * H if dy != NULL else NULL,
                            dh0 + b0 * H, dc0 + b0 * H)
                # dh_{t-1}[rows] = dG_t[rows] @ W_hh
                gemm(False, False, <int>nb, <int>H, <int>G, <floating>1, g_t, <int>G,
                     w_hh, <int>H, <floating>0, dh0 + b0 * H, <int>H)
            restore_blas_threads(set_threads, prev_local)
    # dx = dG @ W_ih ; dW_ih = dG^T @ X ; dW_hh = dG_0^T h0 + dG_{1:}^T h_{:-1} ; db = sum dG
    par_gemm(n_threads, set_threads, False, T * B, I, G, gates, G, w_ih, I, 0, dx, I)
    par_gemm(n_threads, set_threads, True, G, I, T * B, gates, G, x, I, 0, dw_ih, I)
    par_gemm(n_threads, set_threads, True, G, H, B if T > 0 else 0, gates, G, h0, H, 0, dw_hh, H)
    if T > 1:
        par_gemm(n_threads, set_threads, True, G, H, (T - 1) * B, gates + B * G, G, hs, H, 1,
                 dw_hh, H)
    if db != NULL:
        par_colsum(n_threads, T * B, G, G, gates, db)
    restore_blas_threads(set_threads, prev_main)
    return 0


# ================================================================= GRU
cdef int gru_fwd(floating *y, floating *h_n,
                 floating *gates, floating *hn_save, floating *hs, floating *gh,
                 const floating *x, const floating *h0,
                 const floating *w_ih, const floating *w_hh_t,
                 const floating *b_ih, const floating *b_hh,
                 Py_ssize_t T, Py_ssize_t B, Py_ssize_t I, Py_ssize_t H, Py_ssize_t chunk,
                 int n_threads, int n_par, set_threads_fn set_threads) noexcept nogil:
    # y (T,B,H), h_n (B,H) out.
    # gates: training (T,B,3H) out = saved r,z,n; inference (chunk,B,3H) scratch.
    # hn_save, hs: training (T,B,H) out = saved h W_hn^T + b_hn and h_t; inference NULL.
    # gh (B,3H) scratch for h W_hh^T. x (T,B,I); h0 (B,H); w_ih (3H,I); w_hh_t (H,3H) = W_hh^T;
    # b_ih, b_hh (3H,) (zeros when the layer has no bias).
    cdef Py_ssize_t G = 3 * H, BH = B * H, t0, tc, t, b0, nb, gt
    cdef int tid, prev_local, prev_main
    cdef floating *g_t
    cdef const floating *h_prev
    cdef floating *h_out
    cdef floating *h_copy
    cdef floating *hn_t
    cdef bint training = hs != NULL
    if T == 0 or B == 0:
        copy_or_zero(h_n, h0, BH)
        return 0
    prev_main = set_blas_threads(set_threads, 1)
    t0 = 0
    while t0 < T:
        tc = chunk if chunk < T - t0 else T - t0
        # gates[chunk] = x[chunk] @ W_ih^T  (eq. G1-G3 input parts)
        par_gemm_bt(n_threads, set_threads, tc * B, G, I, x + t0 * B * I, I, w_ih, I, gates, G)
        with parallel(num_threads=n_par):
            tid = threadid()
            b0 = slice_start(B, n_par, tid)
            nb = slice_start(B, n_par, tid + 1) - b0
            prev_local = set_blas_threads(set_threads, 1)
            for t in range(t0, t0 + tc):
                gt = t if training else t - t0
                g_t = gates + (gt * B + b0) * G
                if t == 0:
                    h_prev = h0 + b0 * H
                elif training:
                    h_prev = hs + (t - 1) * BH + b0 * H
                else:
                    h_prev = y + (t - 1) * BH + b0 * H
                # gh[rows] = h_{t-1}[rows] @ W_hh^T   (eq. G1-G3 recurrent parts)
                gemm(False, False, <int>nb, <int>G, <int>H, <floating>1, h_prev, <int>H,
                     w_hh_t, <int>G, <floating>0, gh + b0 * G, <int>G)
                if training:
                    h_out = hs + t * BH + b0 * H
                    h_copy = y + t * BH + b0 * H
                    hn_t = hn_save + t * BH + b0 * H
                else:
                    h_out = y + t * BH + b0 * H
                    h_copy = NULL
                    hn_t = NULL
                pw_gru_fwd(nb, H, g_t, gh + b0 * G, b_ih, b_hh, h_prev, h_out, h_copy, hn_t)
            restore_blas_threads(set_threads, prev_local)
        t0 = t0 + tc
    memcpy(h_n, y + (T - 1) * BH, BH * sizeof(floating))
    restore_blas_threads(set_threads, prev_main)
    return 0


cdef int gru_bwd(floating *dx, floating *dh0, floating *dw_ih, floating *dw_hh,
                 floating *db_ih, floating *db_hh,
                 floating *gates, floating *hn, floating *dgh, const floating *hs,
                 const floating *x, const floating *h0,
                 const floating *w_ih, const floating *w_hh,
                 const floating *dy, const floating *dh_n,
                 Py_ssize_t T, Py_ssize_t B, Py_ssize_t I, Py_ssize_t H,
                 int n_threads, int n_par, set_threads_fn set_threads) noexcept nogil:
    # dx (T,B,I), dh0 (B,H), dw_ih (3H,I), dw_hh (3H,H) out; db_ih, db_hh (3H,) out or NULL.
    # gates (T,B,3H): in = saved r,z,n; out = dG_x = d(x-side pre-activations) (consumed).
    # hn (T,B,H): in = saved h W_hn^T + b_hn; out = d(h W_hn^T + b_hn) (consumed).
    # dgh (B,3H) scratch: d(h W_hh^T) of the current step. hs (T,B,H) saved h_t.
    cdef Py_ssize_t G = 3 * H, BH = B * H, t, b0, nb
    cdef int tid, prev_local, prev_main
    cdef floating *g_t
    cdef const floating *h_prev
    copy_or_zero(dh0, dh_n, BH)
    prev_main = set_blas_threads(set_threads, 1)
    if T > 0 and B > 0:
        with parallel(num_threads=n_par):
            tid = threadid()
            b0 = slice_start(B, n_par, tid)
            nb = slice_start(B, n_par, tid + 1) - b0
            prev_local = set_blas_threads(set_threads, 1)
            for t in range(T - 1, -1, -1):
                g_t = gates + (t * B + b0) * G
                h_prev = (hs + (t - 1) * BH if t > 0 else h0) + b0 * H
                pw_gru_bwd(nb, H, g_t, hn + t * BH + b0 * H, dgh + b0 * G, h_prev,
                           dy + t * BH + b0 * H if dy != NULL else NULL, dh0 + b0 * H)
                # dh_{t-1}[rows] = z * dh_t (written above) + dgh[rows] @ W_hh
                gemm(False, False, <int>nb, <int>H, <int>G, <floating>1, dgh + b0 * G, <int>G,
                     w_hh, <int>H, <floating>1, dh0 + b0 * H, <int>H)
            restore_blas_threads(set_threads, prev_local)
    # dx = dG_x @ W_ih ; dW_ih = dG_x^T X
    par_gemm(n_threads, set_threads, False, T * B, I, G, gates, G, w_ih, I, 0, dx, I)
    par_gemm(n_threads, set_threads, True, G, I, T * B, gates, G, x, I, 0, dw_ih, I)
    # dW_hh rows r,z: the same dG as the x side (columns 0..2H of gates); rows n: hn = dn * r.
    par_gemm(n_threads, set_threads, True, 2 * H, H, B if T > 0 else 0, gates, G, h0, H, 0,
             dw_hh, H)
    par_gemm(n_threads, set_threads, True, H, H, B if T > 0 else 0, hn, H, h0, H, 0,
             dw_hh + 2 * H * H, H)
    if T > 1:
        par_gemm(n_threads, set_threads, True, 2 * H, H, (T - 1) * B, gates + B * G, G, hs, H,
                 1, dw_hh, H)
        par_gemm(n_threads, set_threads, True, H, H, (T - 1) * B, hn + BH, H, hs, H, 1,
                 dw_hh + 2 * H * H, H)
    if db_ih != NULL:
        par_colsum(n_threads, T * B, G, G, gates, db_ih)
    if db_hh != NULL:
        par_colsum(n_threads, T * B, 2 * H, G, gates, db_hh)
        par_colsum(n_threads, T * B, H, H, hn, db_hh + 2 * H)
    restore_blas_threads(set_threads, prev_main)
    return 0


# ================================================================= Elman RNN
cdef int rnn_fwd(floating *y, floating *h_n, floating *hs,
                 const floating *x, const floating *h0,
                 const floating *w_ih, const floating *w_hh_t, const floating *bias,
                 Py_ssize_t T, Py_ssize_t B, Py_ssize_t I, Py_ssize_t H, int relu,
                 int n_threads, int n_par, set_threads_fn set_threads) noexcept nogil:
    # y (T,B,H), h_n (B,H) out; hs (T,B,H) out = saved h_t (training) or NULL (inference: the
    # pre-activations are accumulated in y itself, so inference needs no extra memory at all).
    # x (T,B,I); h0 (B,H); w_ih (H,I); w_hh_t (H,H) = W_hh^T; bias (H,) = b_ih + b_hh.
    cdef Py_ssize_t BH = B * H, t, b0, nb
    cdef int tid, prev_local, prev_main
    cdef floating *buf = hs if hs != NULL else y
    cdef const floating *h_prev
    if T == 0 or B == 0:
        copy_or_zero(h_n, h0, BH)
        return 0
    prev_main = set_blas_threads(set_threads, 1)
    par_gemm_bt(n_threads, set_threads, T * B, H, I, x, I, w_ih, I, buf, H)
    with parallel(num_threads=n_par):
        tid = threadid()
        b0 = slice_start(B, n_par, tid)
        nb = slice_start(B, n_par, tid + 1) - b0
        prev_local = set_blas_threads(set_threads, 1)
        for t in range(T):
            h_prev = (buf + (t - 1) * BH if t > 0 else h0) + b0 * H
            gemm(False, False, <int>nb, <int>H, <int>H, <floating>1, h_prev, <int>H,
                 w_hh_t, <int>H, <floating>1, buf + t * BH + b0 * H, <int>H)
            pw_rnn_fwd(nb, H, buf + t * BH + b0 * H, bias, relu,
                       y + t * BH + b0 * H if hs != NULL else NULL)
        restore_blas_threads(set_threads, prev_local)
    memcpy(h_n, y + (T - 1) * BH, BH * sizeof(floating))
    restore_blas_threads(set_threads, prev_main)
    return 0


cdef int rnn_bwd(floating *dx, floating *dh0, floating *dw_ih, floating *dw_hh, floating *db,
                 floating *dg, const floating *hs,
                 const floating *x, const floating *h0,
                 const floating *w_ih, const floating *w_hh,
                 const floating *dy, const floating *dh_n,
                 Py_ssize_t T, Py_ssize_t B, Py_ssize_t I, Py_ssize_t H, int relu,
                 int n_threads, int n_par, set_threads_fn set_threads) noexcept nogil:
    # dx (T,B,I), dh0 (B,H), dw_ih (H,I), dw_hh (H,H) out; db (H,) out or NULL.
    # dg (T,B,H) scratch = dG; hs (T,B,H) saved h_t (kept: dW_hh needs it after the loop).
    cdef Py_ssize_t BH = B * H, t, b0, nb
    cdef int tid, prev_local, prev_main
    copy_or_zero(dh0, dh_n, BH)
    prev_main = set_blas_threads(set_threads, 1)
    if T > 0 and B > 0:
        with parallel(num_threads=n_par):
            tid = threadid()
            b0 = slice_start(B, n_par, tid)
            nb = slice_start(B, n_par, tid + 1) - b0
            prev_local = set_blas_threads(set_threads, 1)
            for t in range(T - 1, -1, -1):
                pw_rnn_bwd(nb, H, hs + t * BH + b0 * H, dg + t * BH + b0 * H,
                           dy + t * BH + b0 * H if dy != NULL else NULL, dh0 + b0 * H, relu)
                gemm(False, False, <int>nb, <int>H, <int>H, <floating>1, dg + t * BH + b0 * H,
                     <int>H, w_hh, <int>H, <floating>0, dh0 + b0 * H, <int>H)
            restore_blas_threads(set_threads, prev_local)
    par_gemm(n_threads, set_threads, False, T * B, I, H, dg, H, w_ih, I, 0, dx, I)
    par_gemm(n_threads, set_threads, True, H, I, T * B, dg, H, x, I, 0, dw_ih, I)
    par_gemm(n_threads, set_threads, True, H, H, B if T > 0 else 0, dg, H, h0, H, 0, dw_hh, H)
    if T > 1:
        par_gemm(n_threads, set_threads, True, H, H, (T - 1) * B, dg + BH, H, hs, H, 1,
                 dw_hh, H)
    if db != NULL:
        par_colsum(n_threads, T * B, H, H, dg, db)
    restore_blas_threads(set_threads, prev_main)
    return 0


# ================================================================= Python entry points
# Thin def wrappers: typed memoryviews (C-contiguous, checked by _api.py) -> raw pointers, then
# the whole kernel runs with the GIL released. Optional arrays are passed as None.

cdef inline floating *ptr(floating[::1] a) noexcept nogil:
    return &a[0] if a is not None and a.shape[0] > 0 else NULL

cdef inline const floating *cptr(const floating[::1] a) noexcept nogil:
    return &a[0] if a is not None and a.shape[0] > 0 else NULL

cdef inline set_threads_fn as_fn(uintptr_t addr) noexcept nogil:
    return <set_threads_fn>addr


def lstm_forward(floating[::1] y, floating[::1] h_n, floating[::1] c_n,
                 floating[::1] gates, floating[::1] cs, floating[::1] hs,
                 const floating[::1] x, const floating[::1] h0, const floating[::1] c0,
                 const floating[::1] w_ih, const floating[::1] w_hh_t, const floating[::1] bias,
                 Py_ssize_t T, Py_ssize_t B, Py_ssize_t I, Py_ssize_t H, Py_ssize_t chunk,
                 int n_threads, int n_par, uintptr_t set_threads):
    """Arrays are flattened (ravel of C-contiguous arrays); shapes as in lstm_fwd above."""
    cdef int status
    with nogil:
        status = lstm_fwd(ptr(y), ptr(h_n), ptr(c_n), ptr(gates), cptr(cs), cptr(hs), cptr(x),
                        cptr(h0), cptr(c0), cptr(w_ih), cptr(w_hh_t), cptr(bias),
                        T, B, I, H, chunk, n_threads, n_par, as_fn(set_threads))
    return status


def lstm_backward(floating[::1] dx, floating[::1] dh0, floating[::1] dc0,
                  floating[::1] dw_ih, floating[::1] dw_hh, floating[::1] db,
                  floating[::1] gates, const floating[::1] cs, const floating[::1] hs,
                  const floating[::1] x, const floating[::1] h0, const floating[::1] c0,
                  const floating[::1] w_ih, const floating[::1] w_hh,
                  const floating[::1] dy, const floating[::1] dh_n, const floating[::1] dc_n,
                  Py_ssize_t T, Py_ssize_t B, Py_ssize_t I, Py_ssize_t H,
                  int n_threads, int n_par, uintptr_t set_threads):
    cdef int status
    with nogil:
        status = lstm_bwd(ptr(dx), ptr(dh0), ptr(dc0), ptr(dw_ih), ptr(dw_hh), ptr(db),
                        ptr(gates), cptr(cs), cptr(hs), cptr(x), cptr(h0), cptr(c0), cptr(w_ih),
                        cptr(w_hh), cptr(dy), cptr(dh_n), cptr(dc_n), T, B, I, H,
                        n_threads, n_par, as_fn(set_threads))
    return status


def gru_forward(floating[::1] y, floating[::1] h_n,
                floating[::1] gates, floating[::1] hn_save, floating[::1] hs, floating[::1] gh,
                const floating[::1] x, const floating[::1] h0, const floating[::1] w_ih, const floating[::1] w_hh_t,
                const floating[::1] b_ih, const floating[::1] b_hh,
                Py_ssize_t T, Py_ssize_t B, Py_ssize_t I, Py_ssize_t H, Py_ssize_t chunk,
                int n_threads, int n_par, uintptr_t set_threads):
    cdef int status
    with nogil:
        status = gru_fwd(ptr(y), ptr(h_n), ptr(gates), ptr(hn_save), ptr(hs), ptr(gh), cptr(x),
                       cptr(h0), cptr(w_ih), cptr(w_hh_t), cptr(b_ih), cptr(b_hh),
                       T, B, I, H, chunk, n_threads, n_par, as_fn(set_threads))
    return status


def gru_backward(floating[::1] dx, floating[::1] dh0, floating[::1] dw_ih, floating[::1] dw_hh,
                 floating[::1] db_ih, floating[::1] db_hh,
                 floating[::1] gates, floating[::1] hn, floating[::1] dgh, const floating[::1] hs,
                 const floating[::1] x, const floating[::1] h0, const floating[::1] w_ih, const floating[::1] w_hh,
                 const floating[::1] dy, const floating[::1] dh_n,
                 Py_ssize_t T, Py_ssize_t B, Py_ssize_t I, Py_ssize_t H,
                 int n_threads, int n_par, uintptr_t set_threads):
    cdef int status
    with nogil:
        status = gru_bwd(ptr(dx), ptr(dh0), ptr(dw_ih), ptr(dw_hh), ptr(db_ih), ptr(db_hh),
                       ptr(gates), ptr(hn), ptr(dgh), cptr(hs), cptr(x), cptr(h0), cptr(w_ih),
                       cptr(w_hh), cptr(dy), cptr(dh_n), T, B, I, H,
                       n_threads, n_par, as_fn(set_threads))
    return status


def rnn_forward(floating[::1] y, floating[::1] h_n, floating[::1] hs,
                const floating[::1] x, const floating[::1] h0, const floating[::1] w_ih, const floating[::1] w_hh_t,
                const floating[::1] bias,
                Py_ssize_t T, Py_ssize_t B, Py_ssize_t I, Py_ssize_t H, bint relu,
                int n_threads, int n_par, uintptr_t set_threads):
    cdef int status
    with nogil:
        status = rnn_fwd(ptr(y), ptr(h_n), ptr(hs), cptr(x), cptr(h0), cptr(w_ih), cptr(w_hh_t),
                       cptr(bias), T, B, I, H, relu, n_threads, n_par, as_fn(set_threads))
    return status


def rnn_backward(floating[::1] dx, floating[::1] dh0, floating[::1] dw_ih, floating[::1] dw_hh,
                 floating[::1] db, floating[::1] dg, const floating[::1] hs,
                 const floating[::1] x, const floating[::1] h0, const floating[::1] w_ih, const floating[::1] w_hh,
                 const floating[::1] dy, const floating[::1] dh_n,
                 Py_ssize_t T, Py_ssize_t B, Py_ssize_t I, Py_ssize_t H, bint relu,
                 int n_threads, int n_par, uintptr_t set_threads):
    cdef int status
    with nogil:
        status = rnn_bwd(ptr(dx), ptr(dh0), ptr(dw_ih), ptr(dw_hh), ptr(db), ptr(dg), cptr(hs),
                       cptr(x), cptr(h0), cptr(w_ih), cptr(w_hh), cptr(dy), cptr(dh_n),
                       T, B, I, H, relu, n_threads, n_par, as_fn(set_threads))
    return status


def vsigmoid(const floating[::1] x, floating[::1] out):
    """out = sigmoid(x) elementwise with the kernels' own activation (for tests)."""
    with nogil:
        if floating is float:
            fc_vsigmoid_f32(x.shape[0], cptr(x), ptr(out))
        else:
            fc_vsigmoid_f64(x.shape[0], cptr(x), ptr(out))


def vtanh(const floating[::1] x, floating[::1] out):
    """out = tanh(x) elementwise with the kernels' own activation (for tests)."""
    with nogil:
        if floating is float:
            fc_vtanh_f32(x.shape[0], cptr(x), ptr(out))
        else:
            fc_vtanh_f64(x.shape[0], cptr(x), ptr(out))


def omp_max_threads():
    """omp_get_max_threads(): respects OMP_NUM_THREADS; 1 when built without OpenMP."""
    return openmp.omp_get_max_threads()
