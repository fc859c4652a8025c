# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Compiled LSTM / GRU / Elman-RNN sequence kernels: forward and BPTT backward.

Every kernel is one ``nogil`` call over raw pointers, written once over the fused type
``floating`` (float32 and float64). The Python layer (_api.py) validates, allocates every output
and workspace, and passes C-contiguous arrays; nothing here allocates or touches Python objects.

Structure of every forward kernel (DESIGN.md practices 2, 3, 6, 7):
  1. training: the input projection of all timesteps as ONE GEMM, its rows split over the
     threads (its result is saved anyway); inference: per step on packed W_ih inside the loop,
     on each thread's own block (O(B*H) memory, no gate buffer for the sequence);
  2. the time loop inside one OpenMP parallel region. The threads form an n_rows x n_cols grid:
     each owns a slice of the batch rows and a slice of the hidden units and runs all timesteps:
     per step the recurrent GEMM of its block, then the fused pointwise pass of the cell on the
     block (csrc/fc_cells_impl.h). With n_cols = 1 (batch split) no thread waits for another;
     with n_cols > 1 (hidden split: each thread reads only its columns of W_hh, which then stay
     in its cache, and batch-1 problems parallelise) one barrier per step makes h_{t-1} whole.
Backward mirrors it: per step only the pointwise backward and dh_{t-1} += dG_t W_hh on the
block; dx, dW_ih, dW_hh and the bias gradients are hoisted GEMMs / reductions after the loop.
Small training problems run in "slice mode" instead (see below): each thread takes its batch
slice as a problem of its own, on its own block of the saved arrays, for the whole forward and
backward.
Every BLAS call runs single-threaded inside one of our OpenMP threads (see _blas.gemm_part), so
BLAS's own thread pool never competes with ours for the cores.

Variable lengths (PyTorch packed-sequence semantics): ``lengths`` (B,) int64 or NULL. At step t
a row b is active iff t < lengths[b]; the rows of a thread's slice are processed in runs of equal
activity. Inactive rows keep their state (training: the saved state is copied forward), output
zeros, and in backward get dG = 0 while dh, dc pass through unchanged.

The per-step GEMM (forward h_{t-1} @ W_hh^T, backward dG_t @ W_hh) does not call BLAS: each
kernel packs the weight once per call into the caller's w_pack buffer (all threads pack their
share of panels before the first barrier) and every step runs csrc/fc_gemm_impl.h's
micro-kernel on the packed panels. BLAS re-packed the whole weight on every step (measured:
~16% of an LSTM training step at B=64, H=512); the packed kernel runs that GEMM 1.2-1.9x faster
than OpenBLAS's sgemm on this machine. The large hoisted GEMMs stay with BLAS.
"""
from cython cimport floating
from cython.parallel cimport parallel, threadid
from libc.string cimport memcpy, memset
from libc.stdint cimport uintptr_t, int64_t
from cpython.pyport cimport PY_SSIZE_T_MAX

from fastcells._blas cimport (gemm, gemm_part, set_threads_fn, set_blas_threads,
                             restore_blas_threads, slice_start)
from openmp cimport omp_get_num_threads
cimport openmp
cimport numpy as cnp
cdef extern from *:
    """
    /* NumPy's headers pull in <complex.h>, whose macro I would rename struct fields */
    #ifdef I
    #undef I
    #endif
    """

cnp.import_array()

cdef extern from "fc_sync.h" nogil:
    ctypedef struct fc_barrier_t:
        pass
    void fc_barrier_init(fc_barrier_t *b, int n)
    void fc_barrier_set_n(fc_barrier_t *b, int n)
    void fc_barrier_wait(fc_barrier_t *b)
    ctypedef struct fc_tasks_t:
        pass
    void fc_tasks_init(fc_tasks_t *q)
    long fc_task_take(fc_tasks_t *q)
    void fc_prefetch_rows(const void *p, Py_ssize_t rows, Py_ssize_t row_bytes,
                          Py_ssize_t ld_bytes)

cdef extern from "fc_cells.h" nogil:
    void fc_lstm_fwd_f32(Py_ssize_t rows, Py_ssize_t n, Py_ssize_t H, Py_ssize_t ldg, Py_ssize_t ldh, float *gates, const float *bias, const float *c_prev, float *c, float *h)
    void fc_lstm_bwd_f32(Py_ssize_t rows, Py_ssize_t n, Py_ssize_t H, Py_ssize_t ldg, Py_ssize_t ldh, float *gates, const float *c, const float *c_prev, const float *dy, float *dh, float *dc)
    void fc_gru_fwd_f32(Py_ssize_t rows, Py_ssize_t n, Py_ssize_t H, Py_ssize_t ldg, Py_ssize_t ldh, float *gx, const float *gh, const float *b_ih, const float *b_hh, const float *h_prev, float *h, float *hn_save)
    void fc_gru_bwd_f32(Py_ssize_t rows, Py_ssize_t n, Py_ssize_t H, Py_ssize_t ldg, Py_ssize_t ldh, float *gates, float *hn, const float *h_prev, const float *dy, float *dh)
    void fc_gru1_fwd_a_f32(Py_ssize_t rows, Py_ssize_t n, Py_ssize_t H, Py_ssize_t ldg, Py_ssize_t ldh, float *gx, const float *gh, const float *b_ih, const float *b_hh, const float *h_prev, float *rh)
    void fc_gru1_fwd_b_f32(Py_ssize_t rows, Py_ssize_t n, Py_ssize_t H, Py_ssize_t ldg, Py_ssize_t ldh, float *gx, const float *gh, const float *b_ih, const float *b_hh, const float *h_prev, float *h)
    void fc_gru1_bwd_a_f32(Py_ssize_t rows, Py_ssize_t n, Py_ssize_t H, Py_ssize_t ldg, Py_ssize_t ldh, float *gates, const float *h_prev, const float *dy, float *dh)
    void fc_gru1_bwd_b_f32(Py_ssize_t rows, Py_ssize_t n, Py_ssize_t H, Py_ssize_t ldg, Py_ssize_t ldh, float *gates, const float *drh, const float *h_prev, float *dh)
    void fc_rnn_fwd_f32(Py_ssize_t rows, Py_ssize_t n, Py_ssize_t H, Py_ssize_t ldg, Py_ssize_t ldh, float *g, const float *bias, int relu)
    void fc_rnn_bwd_f32(Py_ssize_t rows, Py_ssize_t n, Py_ssize_t H, Py_ssize_t ldg, Py_ssize_t ldh, const float *h, float *dg, const float *dy, float *dh, int relu)
    void fc_colsum_f32(Py_ssize_t rows, Py_ssize_t n, Py_ssize_t ld, const float *a, float *out, int accumulate)
    void fc_vsigmoid_f32(Py_ssize_t n, const float *x, float *y)
    void fc_vtanh_f32(Py_ssize_t n, const float *x, float *y)
    void fc_lstm_fwd_f64(Py_ssize_t rows, Py_ssize_t n, Py_ssize_t H, Py_ssize_t ldg, Py_ssize_t ldh, double *gates, const double *bias, const double *c_prev, double *c, double *h)
    void fc_lstm_bwd_f64(Py_ssize_t rows, Py_ssize_t n, Py_ssize_t H, Py_ssize_t ldg, Py_ssize_t ldh, double *gates, const double *c, const double *c_prev, const double *dy, double *dh, double *dc)
    void fc_gru_fwd_f64(Py_ssize_t rows, Py_ssize_t n, Py_ssize_t H, Py_ssize_t ldg, Py_ssize_t ldh, double *gx, const double *gh, const double *b_ih, const double *b_hh, const double *h_prev, double *h, double *hn_save)
    void fc_gru_bwd_f64(Py_ssize_t rows, Py_ssize_t n, Py_ssize_t H, Py_ssize_t ldg, Py_ssize_t ldh, double *gates, double *hn, const double *h_prev, const double *dy, double *dh)
    void fc_gru1_fwd_a_f64(Py_ssize_t rows, Py_ssize_t n, Py_ssize_t H, Py_ssize_t ldg, Py_ssize_t ldh, double *gx, const double *gh, const double *b_ih, const double *b_hh, const double *h_prev, double *rh)
    void fc_gru1_fwd_b_f64(Py_ssize_t rows, Py_ssize_t n, Py_ssize_t H, Py_ssize_t ldg, Py_ssize_t ldh, double *gx, const double *gh, const double *b_ih, const double *b_hh, const double *h_prev, double *h)
    void fc_gru1_bwd_a_f64(Py_ssize_t rows, Py_ssize_t n, Py_ssize_t H, Py_ssize_t ldg, Py_ssize_t ldh, double *gates, const double *h_prev, const double *dy, double *dh)
    void fc_gru1_bwd_b_f64(Py_ssize_t rows, Py_ssize_t n, Py_ssize_t H, Py_ssize_t ldg, Py_ssize_t ldh, double *gates, const double *drh, const double *h_prev, double *dh)
    void fc_rnn_fwd_f64(Py_ssize_t rows, Py_ssize_t n, Py_ssize_t H, Py_ssize_t ldg, Py_ssize_t ldh, double *g, const double *bias, int relu)
    void fc_rnn_bwd_f64(Py_ssize_t rows, Py_ssize_t n, Py_ssize_t H, Py_ssize_t ldg, Py_ssize_t ldh, const double *h, double *dg, const double *dy, double *dh, int relu)
    void fc_colsum_f64(Py_ssize_t rows, Py_ssize_t n, Py_ssize_t ld, const double *a, double *out, int accumulate)
    void fc_vsigmoid_f64(Py_ssize_t n, const double *x, double *y)
    void fc_vtanh_f64(Py_ssize_t n, const double *x, double *y)
    void fc_pack_b_f32(Py_ssize_t K, Py_ssize_t N, const float *src, Py_ssize_t rs, Py_ssize_t cs, float *Bp, Py_ssize_t p0, Py_ssize_t p1)
    void fc_gemm_packed_f32(Py_ssize_t M, Py_ssize_t n0, Py_ssize_t n1, Py_ssize_t K, const float *A, Py_ssize_t lda, const float *Bp, Py_ssize_t kp, float *C, Py_ssize_t ldc, int accumulate)
    Py_ssize_t fc_packed_size_f32(Py_ssize_t K, Py_ssize_t N)
    Py_ssize_t fc_packed_panel_width_f32()
    void fc_gemm_rows_f32(Py_ssize_t M, Py_ssize_t n0, Py_ssize_t n1, Py_ssize_t K, const float *A, Py_ssize_t lda, const float *B, Py_ssize_t ldb, float *C, Py_ssize_t ldc, int accumulate)
    void fc_gemm_tn_f32(Py_ssize_t m0, Py_ssize_t m1, Py_ssize_t N, Py_ssize_t K, const float *A, Py_ssize_t lda, const float *B, Py_ssize_t ldb, float *C, Py_ssize_t ldc, int accumulate)
    void fc_pack_b_f64(Py_ssize_t K, Py_ssize_t N, const double *src, Py_ssize_t rs, Py_ssize_t cs, double *Bp, Py_ssize_t p0, Py_ssize_t p1)
    void fc_gemm_packed_f64(Py_ssize_t M, Py_ssize_t n0, Py_ssize_t n1, Py_ssize_t K, const double *A, Py_ssize_t lda, const double *Bp, Py_ssize_t kp, double *C, Py_ssize_t ldc, int accumulate)
    Py_ssize_t fc_packed_size_f64(Py_ssize_t K, Py_ssize_t N)
    Py_ssize_t fc_packed_panel_width_f64()
    void fc_gemm_rows_f64(Py_ssize_t M, Py_ssize_t n0, Py_ssize_t n1, Py_ssize_t K, const double *A, Py_ssize_t lda, const double *B, Py_ssize_t ldb, double *C, Py_ssize_t ldc, int accumulate)
    void fc_gemm_tn_f64(Py_ssize_t m0, Py_ssize_t m1, Py_ssize_t N, Py_ssize_t K, const double *A, Py_ssize_t lda, const double *B, Py_ssize_t ldb, double *C, Py_ssize_t ldc, int accumulate)

# ---------------------------------------------------------------- fused-type dispatch to csrc
# Every pointwise kernel works on a block: rows x n hidden units; H = distance between gate
# blocks, ldg / ldh = row strides of gate / state matrices (see csrc/fc_cells_impl.h).
ctypedef Py_ssize_t idx

cdef inline void pw_lstm_fwd(idx rows, idx n, idx H, idx ldg, idx ldh, floating *gates,
                             const floating *bias, const floating *c_prev, floating *c,
                             floating *h) noexcept nogil:
    if floating is float:
        fc_lstm_fwd_f32(rows, n, H, ldg, ldh, gates, bias, c_prev, c, h)
    else:
        fc_lstm_fwd_f64(rows, n, H, ldg, ldh, gates, bias, c_prev, c, h)

cdef inline void pw_lstm_bwd(idx rows, idx n, idx H, idx ldg, idx ldh, floating *gates,
                             const floating *c, const floating *c_prev, const floating *dy,
                             floating *dh, floating *dc) noexcept nogil:
    if floating is float:
        fc_lstm_bwd_f32(rows, n, H, ldg, ldh, gates, c, c_prev, dy, dh, dc)
    else:
        fc_lstm_bwd_f64(rows, n, H, ldg, ldh, gates, c, c_prev, dy, dh, dc)

cdef inline void pw_gru_fwd(idx rows, idx n, idx H, idx ldg, idx ldh, floating *gx,
                            const floating *gh, const floating *b_ih, const floating *b_hh,
                            const floating *h_prev, floating *h, floating *hn_save) noexcept nogil:
    if floating is float:
        fc_gru_fwd_f32(rows, n, H, ldg, ldh, gx, gh, b_ih, b_hh, h_prev, h, hn_save)
    else:
        fc_gru_fwd_f64(rows, n, H, ldg, ldh, gx, gh, b_ih, b_hh, h_prev, h, hn_save)

cdef inline void pw_gru_bwd(idx rows, idx n, idx H, idx ldg, idx ldh, floating *gates,
                            floating *hn, const floating *h_prev,
                            const floating *dy, floating *dh) noexcept nogil:
    if floating is float:
        fc_gru_bwd_f32(rows, n, H, ldg, ldh, gates, hn, h_prev, dy, dh)
    else:
        fc_gru_bwd_f64(rows, n, H, ldg, ldh, gates, hn, h_prev, dy, dh)

cdef inline void pw_gru1_fwd_a(idx rows, idx n, idx H, idx ldg, idx ldh, floating *gx,
                               const floating *gh, const floating *b_ih, const floating *b_hh,
                               const floating *h_prev, floating *rh) noexcept nogil:
    if floating is float:
        fc_gru1_fwd_a_f32(rows, n, H, ldg, ldh, gx, gh, b_ih, b_hh, h_prev, rh)
    else:
        fc_gru1_fwd_a_f64(rows, n, H, ldg, ldh, gx, gh, b_ih, b_hh, h_prev, rh)

cdef inline void pw_gru1_fwd_b(idx rows, idx n, idx H, idx ldg, idx ldh, floating *gx,
                               const floating *gh, const floating *b_ih, const floating *b_hh,
                               const floating *h_prev, floating *h) noexcept nogil:
    if floating is float:
        fc_gru1_fwd_b_f32(rows, n, H, ldg, ldh, gx, gh, b_ih, b_hh, h_prev, h)
    else:
        fc_gru1_fwd_b_f64(rows, n, H, ldg, ldh, gx, gh, b_ih, b_hh, h_prev, h)

cdef inline void pw_gru1_bwd_a(idx rows, idx n, idx H, idx ldg, idx ldh, floating *gates,
                               const floating *h_prev, const floating *dy,
                               floating *dh) noexcept nogil:
    if floating is float:
        fc_gru1_bwd_a_f32(rows, n, H, ldg, ldh, gates, h_prev, dy, dh)
    else:
        fc_gru1_bwd_a_f64(rows, n, H, ldg, ldh, gates, h_prev, dy, dh)

cdef inline void pw_gru1_bwd_b(idx rows, idx n, idx H, idx ldg, idx ldh, floating *gates,
                               const floating *drh, const floating *h_prev,
                               floating *dh) noexcept nogil:
    if floating is float:
        fc_gru1_bwd_b_f32(rows, n, H, ldg, ldh, gates, drh, h_prev, dh)
    else:
        fc_gru1_bwd_b_f64(rows, n, H, ldg, ldh, gates, drh, h_prev, dh)

cdef inline void pw_rnn_fwd(idx rows, idx n, idx ldh, floating *g, const floating *bias,
                            int relu) noexcept nogil:
    if floating is float:
        fc_rnn_fwd_f32(rows, n, n, ldh, ldh, g, bias, relu)
    else:
        fc_rnn_fwd_f64(rows, n, n, ldh, ldh, g, bias, relu)

cdef inline void pw_rnn_bwd(idx rows, idx n, idx ldh, const floating *h, floating *dg,
                            const floating *dy, floating *dh, int relu) noexcept nogil:
    if floating is float:
        fc_rnn_bwd_f32(rows, n, n, ldh, ldh, h, dg, dy, dh, relu)
    else:
        fc_rnn_bwd_f64(rows, n, n, ldh, ldh, h, dg, dy, dh, relu)

cdef inline void colsum(idx rows, idx n, idx ld, const floating *a, floating *out,
                        int accumulate) noexcept nogil:
    if floating is float:
        fc_colsum_f32(rows, n, ld, a, out, accumulate)
    else:
        fc_colsum_f64(rows, n, ld, a, out, accumulate)


# ---------------------------------------------------------------- small helpers
cdef inline void copy_or_zero(floating *dst, const floating *src, idx n) noexcept nogil:
    if n <= 0:
        return                      # empty arrays come as NULL: no memcpy(NULL, ..., 0)
    if src != NULL:
        memcpy(dst, src, n * sizeof(floating))
    else:
        memset(dst, 0, n * sizeof(floating))


cdef inline void copy_block(floating *dst, const floating *src, idx rows, idx n,
                            idx ld) noexcept nogil:
    """dst[r, :n] = src[r, :n] for r < rows, both with row stride ld; no-op if dst == src."""
    cdef idx r
    if dst == src or rows <= 0 or n <= 0:
        return
    if n == ld:
        memcpy(dst, src, rows * n * sizeof(floating))
    else:
        for r in range(rows):
            memcpy(dst + r * ld, src + r * ld, n * sizeof(floating))


cdef inline void zero_block(floating *dst, idx rows, idx n, idx ld) noexcept nogil:
    cdef idx r
    if rows <= 0 or n <= 0:
        return
    if n == ld:
        memset(dst, 0, rows * n * sizeof(floating))
    else:
        for r in range(rows):
            memset(dst + r * ld, 0, n * sizeof(floating))


cdef inline void zero_gate_block(floating *g, idx rows, idx n, idx H, int n_gates,
                                 idx ldg) noexcept nogil:
    """Zero columns [k*H, k*H + n) of rows x ldg gate rows, for every gate k."""
    cdef int k
    for k in range(n_gates):
        zero_block(g + k * H, rows, n, ldg)


cdef inline void prefetch_gates(const floating *g, idx rows, idx j0, idx nj, idx H,
                                int n_gates, idx ldg) noexcept nogil:
    """Prefetch into L2 the columns [j0, j0 + nj) of each of the n_gates blocks (H apart) of
    rows [0, rows) of g (row stride ldg): the next step's input projection of this thread's
    block. The hoisted GEMM before the time loop splits T*B rows over the threads, so the other
    core wrote half of the steps' rows; read cold, they stall the per-step GEMM's accumulator
    loads (perf of the Elman RNN's small forward on the Xeon, 2026-12-07: 18% of the packed
    kernel's samples there). Paired against no prefetch (Xeon, 2 threads, 400-600 rounds):
    small-shape training LSTM 0.976-0.988x the time, Elman RNN 0.965-0.985x, GRU 0.995-1.003x;
    charrnn and medium training 0.990-1.003x."""
    cdef int k
    for k in range(n_gates):
        fc_prefetch_rows(g + k * H + j0, rows, nj * sizeof(floating), ldg * sizeof(floating))


cdef inline idx run_end(const int64_t *lengths, idx t, idx r, idx r_end,
                        bint *active) noexcept nogil:
    """Rows [r, result) all share activity at step t (active: t < lengths[row])."""
    cdef bint a
    cdef idx e
    if lengths == NULL:
        active[0] = True
        return r_end
    a = t < lengths[r]
    e = r + 1
    while e < r_end and (t < lengths[e]) == a:
        e += 1
    active[0] = a
    return e


cdef inline idx col_start(idx H, int parts, int k) noexcept nogil:
    # Hidden-unit split points, rounded down to 16 so SIMD loops start aligned.
    if k >= parts:
        return H
    return ((H * k) // parts) // 16 * 16


# ---------------------------------------------------------------- recurrent GEMM, packed weights
# The per-step GEMM h_{t-1} @ W runs on W packed once per call (csrc/fc_gemm_impl.h): BLAS would
# re-pack W on every step. B[k][n] = src[k*rs + n*cs]; see fc_pack_b for the layout.
cdef inline idx pack_width(const floating *like) noexcept nogil:
    """Panel width (columns) of the packed layout."""
    if floating is float:
        return fc_packed_panel_width_f32()
    else:
        return fc_packed_panel_width_f64()

cdef inline idx pack_elems(idx K, idx N, const floating *like) noexcept nogil:
    """Elements of the packed K x N matrix."""
    if floating is float:
        return fc_packed_size_f32(K, N)
    else:
        return fc_packed_size_f64(K, N)

cdef inline void pack_part(int part, int parts, idx K, idx N, const floating *src, idx rs,
                           idx cs, floating *Bp) noexcept nogil:
    """This thread's share of the panels of the packed K x N matrix."""
    cdef idx width = pack_width(src), n_panels = (N + width - 1) // width
    if floating is float:
        fc_pack_b_f32(K, N, src, rs, cs, Bp, slice_start(n_panels, parts, part),
                      slice_start(n_panels, parts, part + 1))
    else:
        fc_pack_b_f64(K, N, src, rs, cs, Bp, slice_start(n_panels, parts, part),
                      slice_start(n_panels, parts, part + 1))

cdef inline void pgemm(idx M, idx n0, idx n1, idx K, const floating *A, idx lda,
                       const floating *Bp, idx kp, floating *C, idx ldc,
                       bint accumulate) noexcept nogil:
    """C[:, n0:n1] (+)= A (M,K) @ B[:, n0:n1]; B packed with kp rows; C at column 0."""
    if floating is float:
        fc_gemm_packed_f32(M, n0, n1, K, A, lda, Bp, kp, C, ldc, accumulate)
    else:
        fc_gemm_packed_f64(M, n0, n1, K, A, lda, Bp, kp, C, ldc, accumulate)

cdef inline void rgemm(idx M, idx n0, idx n1, idx K, const floating *A, idx lda,
                       const floating *Bm, idx ldb, floating *C, idx ldc,
                       bint accumulate) noexcept nogil:
    """C[:, n0:n1] (+)= A (M,K) @ Bm[:, n0:n1]; Bm (K rows, stride ldb) read in place, every row
    with the columns up to n1 rounded up to the panel width; C at column 0. pgemm's bits."""
    if floating is float:
        fc_gemm_rows_f32(M, n0, n1, K, A, lda, Bm, ldb, C, ldc, accumulate)
    else:
        fc_gemm_rows_f64(M, n0, n1, K, A, lda, Bm, ldb, C, ldc, accumulate)

cdef inline void gates_pgemm(idx nb, idx j0, idx j1, idx H, int n_gates, idx K,
                             const floating *A, const floating *Wp, floating *C,
                             bint accumulate) noexcept nogil:
    """C[:, gate k cols j0..j1) (+)= A (nb,K) @ W[:, same cols] for each gate k; W (K,
    n_gates*H) packed in Wp; C (row stride n_gates*H) at column 0. The full hidden range is one
    call over all gates."""
    cdef int k
    cdef idx G = n_gates * H
    if j0 == 0 and j1 == H:
        pgemm(nb, 0, G, K, A, K, Wp, K, C, G, accumulate)
    else:
        for k in range(n_gates):
            pgemm(nb, k * H + j0, k * H + j1, K, A, K, Wp, K, C, G, accumulate)


# The weight gradients dW = dG^T Y (Y = x, h_{t-1}, ...; summed over the sequence's rows) of
# small problems run on csrc/fc_gemm_impl.h's A^T B kernel, which reads both operands in place:
# OpenBLAS spent as long on its transposing copies as on the products there (perf of a small
# LSTM training step: sgemm with transposed A 23% of the samples, its copy routines 15%).
# Single-threaded, K = 1024 rows: M x N = 256 x 32 0.75x OpenBLAS's time, 192 x 64 0.77x,
# 256 x 64 0.82x; K = 100, 512 x 64 0.82x. Larger problems (both operands beyond ~1.5 MB:
# 448 x 512 x 512 took 1.19x, 3200 x 1024 x 256 1.66x) and N not a multiple of the panel width
# stay with BLAS.
cdef double TN_MAX_BYTES = 1.5 * 1024 * 1024

cdef inline void tn_part(int part, int parts, idx M, idx N, idx K, const floating *A, idx lda,
                         const floating *Bm, idx ldb, floating beta, floating *C,
                         idx ldc) noexcept nogil:
    """Rows [M*part/parts, M*(part+1)/parts) of C = A^T @ Bm + beta C, A (K, M) with row stride
    lda, Bm (K, N) with row stride ldb; beta 0 or 1."""
    cdef idx r0, r1
    if N % pack_width(C) != 0 or <double>K * (M + N) * sizeof(floating) > TN_MAX_BYTES:
        gemm_part(part, parts, True, False, M, N, K, A, lda, Bm, ldb, beta, C, ldc)
        return
    r0 = slice_start(M, parts, part)
    r1 = slice_start(M, parts, part + 1)
    if floating is float:
        fc_gemm_tn_f32(r0, r1, N, K, A, lda, Bm, ldb, C, ldc, beta != 0)
    else:
        fc_gemm_tn_f64(r0, r1, N, K, A, lda, Bm, ldb, C, ldc, beta != 0)


cdef inline void input_phase(int tid, int nthr, bint whole, idx T, idx B, idx G, idx I,
                             const floating *x, const floating *w_ih, floating *w_ih_pack,
                             floating *gates, fc_barrier_t *bar) noexcept nogil:
    """Before a forward time loop. whole (training, and the Elman RNN's inference where it
    pays, see rnn_fwd): gates (T,B,G) = x @ W_ih^T as one GEMM over all T*B rows, split over
    the threads: BLAS, or with w_ih_pack (inference; training with narrow inputs, see
    _api._x_pack) the packed kernel on W_ih^T packed here. Otherwise: pack W_ih^T (I, G) into
    w_ih_pack for the per-step projection inside the loop.
    Ends at a barrier, which also completes the packing of W_hh the threads did before."""
    cdef idx r0, r1
    if whole and w_ih_pack == NULL:
        gemm_part(tid, nthr, False, True, T * B, G, I, x, I, w_ih, I, 0, gates, G)
    elif I > 0:
        pack_part(tid, nthr, I, G, w_ih, 1, I, w_ih_pack)
    fc_barrier_wait(bar)
    if whole and w_ih_pack != NULL:
        r0 = slice_start(T * B, nthr, tid)
        r1 = slice_start(T * B, nthr, tid + 1)
        if r1 > r0:
            pgemm(r1 - r0, 0, G, I, x + r0 * I, I, w_ih_pack, I, gates + r0 * G, G, False)
        fc_barrier_wait(bar)


cdef inline void tn_states(int part, int parts, idx M, idx N, idx T, idx B, const floating *A,
                           idx lda, const floating *h0, const floating *hs,
                           floating *C) noexcept nogil:
    """Rows [M*part/parts, M*(part+1)/parts) of C (M,N) = sum_t A_t^T h_{t-1}, a weight
    gradient against the previous states: A (T*B, M), row stride lda, step t's rows at
    A + t*B*lda; h_{-1} = h0 (B,N), h_{t-1} = hs[t-1] of hs (T,B,N)."""
    tn_part(part, parts, M, N, B if T > 0 else 0, A, lda, h0, N, 0, C, N)
    if T > 1:
        tn_part(part, parts, M, N, (T - 1) * B, A + B * lda, lda, hs, N, 1, C, N)



# The hoisted products of a backward are tasks (fc_tasks_t): each product in n_threads parts (as
# the static split by thread had them, so the same bits), products in order of size, each task
# taken by whichever thread is free. A thread that lags (its vCPU slowed by the host, or a
# longer time loop) takes fewer. Paired against the static split: training charrnn LSTM 0.964,
# GRU 0.977; medium LSTM 0.976, GRU 0.950; large GRU 0.975, LSTM 0.991; small shapes 1.004,
# 1.007 (neutral). With 4 parts per thread instead, the small shapes took 1.03-1.10x (likely
# because every part of an A^T B product streams all of B again; not measured separately).
cdef inline bint next_task(fc_tasks_t *q, const int *parts, int n_ops, long base, int *op,
                           int *part) noexcept nogil:
    """Take the next task of a phase of n_ops products of parts[k] parts each: its product (op)
    and part; False when none is left. The counter of q runs on across phases: a phase's tasks
    are numbered from base (see task_base)."""
    cdef long task = fc_task_take(q) - base
    cdef int k
    for k in range(n_ops):
        if task < parts[k]:
            op[0] = k
            part[0] = <int>task
            return True
        task -= parts[k]
    return False


cdef inline long task_base(long base, const int *parts, int n_ops, int nthr) noexcept nogil:
    """The first task number of the next phase on the same counter: after a phase's tasks,
    every one of the nthr threads took one number more (the one that ended its loop)."""
    cdef int k
    for k in range(n_ops):
        base += parts[k]
    return base + nthr


cdef inline void dx_part(int part, int parts, idx M, idx N, idx K, const floating *A,
                         const floating *Bm, floating *C) noexcept nogil:
    """Rows [M*part/parts, M*(part+1)/parts) of C (M,N) = A (M,K) @ Bm (K,N), all row-major
    (the backward's dx = dG @ W_ih). When N is a multiple of the panel width the per-step
    kernel reads Bm in place (rgemm; it streams A once per panel of N, so only up to two
    panels); otherwise BLAS, which copies A and Bm first."""
    cdef idx r0, r1, w = pack_width(C)
    if 0 < N <= 2 * w and N % w == 0:
        r0 = slice_start(M, parts, part)
        r1 = slice_start(M, parts, part + 1)
        if r1 > r0:
            rgemm(r1 - r0, 0, N, K, A + r0 * K, K, Bm, N, C + r0 * N, N, False)
    else:
        gemm_part(part, parts, False, False, M, N, K, A, K, Bm, N, 0, C, N)


cdef inline void colsum_part(int part, int parts, idx rows, idx n, idx ld, const floating *a,
                             floating *out, bint accumulate=False) noexcept nogil:
    """Columns [n*part/parts, n*(part+1)/parts) of out (+)= column sums of a (rows, n)."""
    cdef idx c0 = slice_start(n, parts, part), c1 = slice_start(n, parts, part + 1)
    if c1 > c0:
        colsum(rows, c1 - c0, ld, a + c0, out + c0, accumulate)


cdef inline void copy_part(int part, int parts, idx n, const floating *src, floating *dst,
                           idx limit) noexcept nogil:
    """The columns [0, limit) of colsum_part(part, parts, ., n, ...)'s slice: src -> dst."""
    cdef idx c0 = slice_start(n, parts, part), c1 = slice_start(n, parts, part + 1)
    if c1 > limit:
        c1 = limit
    if c1 > c0:
        memcpy(dst + c0, src + c0, (c1 - c0) * sizeof(floating))


cdef inline int thread_block(int tid, int nthr, int n_rows, int n_cols, idx B, idx H,
                             idx *b0, idx *b1, idx *j0, idx *j1) noexcept nogil:
    """This thread's block of the time loop: batch rows [b0, b1) x hidden units [j0, j1).

    The planned grid is n_rows x n_cols; threads beyond it get an empty block. If OpenMP gave
    the region fewer threads than the grid needs (thread limits, nested parallelism), fall back
    to splitting the batch over the threads there are. Returns the number of column parts."""
    cdef int nr = n_rows, nc = n_cols
    if nthr < n_rows * n_cols:
        nr = nthr
        nc = 1
    if tid >= nr * nc:
        b0[0] = b1[0] = 0
        j0[0] = j1[0] = 0
        return nc
    b0[0] = slice_start(B, nr, tid // nc)
    b1[0] = slice_start(B, nr, tid // nc + 1)
    j0[0] = col_start(H, nc, tid % nc)
    j1[0] = col_start(H, nc, tid % nc + 1)
    return nc


# ---------------------------------------------------------------- slice mode (issue 6)
# Small training problems on several threads run in "slice mode": each thread takes its slice
# of the batch (slice_start(B, slices, s)) as a problem of its own for the whole forward and
# backward -- its rows' input projection, its time loop, its weight-gradient partials -- and
# the threads meet only to pack the shared weights, after the backward's time loops, and to add
# the partials. The saved arrays ((T, B, X): gates, cs, hs, hn) then hold slice s as one
# (T, nb_s, X) block at element T * b0_s * X ("[slice][T][rows][X]", the blocks back to back:
# the same arrays, the same size). Why: with the grid layout both threads' rows of a step share
# the 4 KB pages of every saved array, and at small H two threads each on B/2 rows ran their
# time loop 1.5-2x slower than one thread on B/2 rows alone (tools/thread_pair.py, Xeon guest,
# 2026-12-07; with each thread's rows in its own page-aligned buffer the gap closed); the
# hoisted products split by output rows then also read the other core's dG. The rule (which
# problems, see _capi.pxi's train_slices) and its measurements are in _capi.pxi.
# x, y, dy and dx keep the caller's (T, B, X) layout: a slice reads and writes its rows step by
# step, in chunks of whole steps gathered into a stack buffer of SLICE_BUF_BYTES for the GEMMs
# over x (the input projection, dW_ih = dG^T X, dx = dG W_ih). The backward's partials of
# slices 1.. (dW_ih, dW_hh) and every slice's bias sums live in dx until they are added (dx is
# written last), so slice mode needs no memory beyond the grid layout's (the rule requires that
# they fit: slice_scratch_elems <= T*B*I).
cdef enum:
    SLICE_BUF_BYTES = 32768
    SLICE_BUF_DOUBLES = 4096     # SLICE_BUF_BYTES / 8


cdef inline idx rnd16(idx n) noexcept nogil:
    return (n + 15) // 16 * 16


cdef inline idx slice_w_elems(idx G, idx I, idx P) noexcept nogil:
    """Elements of one slice's weight-gradient partials in dx: dW_ih (G,I), then dW_hh (G,P)."""
    return rnd16(G * I) + rnd16(G * P)


cdef inline idx slice_b_elems(idx G, idx H) noexcept nogil:
    """Elements of one slice's bias sums in dx: colsum of dG (G), then a GRU's n part (H)."""
    return rnd16(G) + rnd16(H)


cdef inline idx slice_scratch_elems(int S, idx G, idx I, idx P, idx H) noexcept nogil:
    """Elements of dx the partials of an S-slice backward take (slice_partials lays them out)."""
    return (S - 1) * slice_w_elems(G, I, P) + S * slice_b_elems(G, H)


cdef inline void slice_partials(floating *scratch, int S, int s, idx G, idx I, idx P, idx H,
                                floating *dw_ih, floating *dw_hh, floating **w_ih_part,
                                floating **w_hh_part, floating **b_part) noexcept nogil:
    """Where slice s puts its partials: slice 0 straight into dw_ih, dw_hh; slices 1.. into
    the scratch; the bias sums of every slice into the scratch."""
    cdef idx w = slice_w_elems(G, I, P)
    if s == 0:
        w_ih_part[0] = dw_ih
        w_hh_part[0] = dw_hh
    else:
        w_ih_part[0] = scratch + (s - 1) * w
        w_hh_part[0] = scratch + (s - 1) * w + rnd16(G * I)
    b_part[0] = scratch + (S - 1) * w + s * slice_b_elems(G, H)


cdef inline idx slice_chunk_steps(idx nb, idx I, const floating *like) noexcept nogil:
    """Steps of a slice's x rows (nb rows of I per step) the stack buffer holds (>= 1: the
    rule keeps nb * I within it)."""
    cdef idx c = SLICE_BUF_BYTES // <idx>sizeof(floating) // (nb * I if nb * I > 0 else 1)
    return c if c >= 1 else 1


cdef void slice_project(idx T, idx nb, idx xs, idx I, idx G, const floating *x,
                        const floating *w_ih, const floating *w_ih_pack,
                        floating *gates) noexcept nogil:
    """A slice's input projection: gates (T*nb, G) = X @ W_ih^T, X the slice's rows of x (step
    t's nb rows at x + t*xs, row stride I), gathered a chunk of steps at a time; the packed
    kernel on w_ih_pack (packed W_ih^T) if given, else BLAS."""
    cdef double raw[SLICE_BUF_DOUBLES]
    cdef floating *buf = <floating *>raw
    cdef idx c = slice_chunk_steps(nb, I, buf), t0, n, t
    t0 = 0
    while t0 < T:
        n = c if t0 + c <= T else T - t0
        for t in range(n):
            memcpy(buf + t * nb * I, x + (t0 + t) * xs, nb * I * sizeof(floating))
        if w_ih_pack != NULL:
            pgemm(n * nb, 0, G, I, buf, I, w_ih_pack, I, gates + t0 * nb * G, G, False)
        else:
            gemm(False, True, <int>(n * nb), <int>G, <int>I, <floating>1, buf, <int>I, w_ih,
                 <int>I, <floating>0, gates + t0 * nb * G, <int>G)
        t0 += n


cdef void slice_tn_x(idx M, idx T, idx nb, idx xs, idx I, const floating *A, idx lda,
                     const floating *x, floating *C, bint accumulate) noexcept nogil:
    """C (M, I) (+)= A^T X for a slice: A (T*nb, M) with row stride lda (the slice's dG), X
    the slice's rows of x as in slice_project."""
    cdef double raw[SLICE_BUF_DOUBLES]
    cdef floating *buf = <floating *>raw
    cdef idx c = slice_chunk_steps(nb, I, buf), t0, n, t
    t0 = 0
    while t0 < T:
        n = c if t0 + c <= T else T - t0
        for t in range(n):
            memcpy(buf + t * nb * I, x + (t0 + t) * xs, nb * I * sizeof(floating))
        tn_part(0, 1, M, I, n * nb, A + t0 * nb * lda, lda, buf, I,
                0 if t0 == 0 and not accumulate else 1, C, I)
        t0 += n


cdef void slice_dx(idx T, idx nb, idx dxs, idx I, idx G, const floating *A,
                   const floating *w_ih, floating *dx) noexcept nogil:
    """A slice's rows of dx = dG @ W_ih: A (T*nb, G) the slice's dG, W_ih (G, I); step t's nb
    rows go to dx + t*dxs (row stride I), through the stack buffer a chunk of steps at a time."""
    cdef double raw[SLICE_BUF_DOUBLES]
    cdef floating *buf = <floating *>raw
    cdef idx c = slice_chunk_steps(nb, I, buf), t0, n, t
    t0 = 0
    while t0 < T:
        n = c if t0 + c <= T else T - t0
        dx_part(0, 1, n * nb, I, G, A + t0 * nb * G, w_ih, buf)
        for t in range(n):
            memcpy(dx + (t0 + t) * dxs, buf + t * nb * I, nb * I * sizeof(floating))
        t0 += n


cdef void slice_outputs(idx T, idx nb, idx P, const floating *hs, floating *y, idx ys,
                        const int64_t *lengths) noexcept nogil:
    """A slice's rows of y after its time loop: step t's at y + t*ys (row stride P) = h_t from
    the slice's block hs (T, nb, P) where active, else zeros. (Step by step, both slices'
    rows of y_t share pages; at the end: 0.99x the small-shape LSTM and GRU training step's
    time, paired; kept because the time loop then writes only its own blocks.)"""
    cdef idx t, r, e
    cdef bint act = False
    for t in range(T):
        r = 0
        while r < nb:
            e = run_end(lengths, t, r, nb, &act)
            if act:
                copy_block(y + t * ys + r * P, hs + (t * nb + r) * P, e - r, P, P)
            else:
                zero_block(y + t * ys + r * P, e - r, P, P)
            r = e


cdef void add_slices(int part, int parts, idx n, floating *out, const floating *p, idx stride,
                     int count, bint overwrite) noexcept nogil:
    """Elements [n*part/parts, n*(part+1)/parts) of out (+)= p[j] + p[stride + j] + ... over
    count partials, added in slice order (the same bits on every run)."""
    cdef idx j0 = slice_start(n, parts, part), j1 = slice_start(n, parts, part + 1), j
    cdef int k
    cdef floating acc
    for j in range(j0, j1):
        acc = 0 if overwrite else out[j]
        for k in range(count):
            acc = acc + p[k * stride + j]
        out[j] = acc



cdef inline idx slice_rows(int s, int slices, idx B, idx *b0) noexcept nogil:
    """Slice s's batch rows: the first in b0, their number returned."""
    b0[0] = slice_start(B, slices, s)
    return slice_start(B, slices, s + 1) - b0[0]


cdef inline idx slice_block(int s, int slices, idx B, idx H, idx *sb0, idx *b0, idx *b1,
                            idx *j0, idx *j1) noexcept nogil:
    """A time loop's block for slice s: all its rows [0, Bw) of arrays pointing at its first
    row (sb0), all hidden units; returns Bw."""
    cdef idx Bw = slice_rows(s, slices, B, sb0)
    b0[0] = 0
    b1[0] = Bw
    j0[0] = 0
    j1[0] = H
    return Bw


cdef inline int backward_setup(int tid, int nthr, int slices, int n_rows, int n_cols, idx B,
                               idx H, idx *b0, idx *b1, idx *j0, idx *j1,
                               int *s_end) noexcept nogil:
    """A backward's passes after packing W_hh: slice mode, this thread's slices tid, tid +
    nthr, ... below s_end = slices; grid, one pass (s_end = 1) on the thread's block. Returns
    the number of column parts (1 in slice mode)."""
    if slices > 1:
        s_end[0] = slices
        return 1
    s_end[0] = 1
    return thread_block(tid, nthr, n_rows, n_cols, B, H, b0, b1, j0, j1)


cdef inline void add_weight_partials(int tid, int nthr, int slices, idx G, idx I, idx P,
                                     floating *dx, floating *dw_ih,
                                     floating *dw_hh) noexcept nogil:
    """dW_ih, dW_hh += the partials of slices 1.. in dx (slice_partials), this thread's part
    of the elements."""
    cdef idx w = slice_w_elems(G, I, P)
    add_slices(tid, nthr, G * I, dw_ih, dx, w, slices - 1, False)
    add_slices(tid, nthr, G * P, dw_hh, dx + rnd16(G * I), w, slices - 1, False)


cdef inline void slices_dx(int tid, int nthr, int slices, idx T, idx B, idx I, idx G,
                           const floating *dG, const floating *w_ih,
                           floating *dx) noexcept nogil:
    """dx = dG @ W_ih for this thread's slices, dG in the slices' blocks (T, rows, G)."""
    cdef int s = tid
    cdef idx sb0 = 0, Bw
    while s < slices:
        Bw = slice_rows(s, slices, B, &sb0)
        slice_dx(T, Bw, B * I, I, G, dG + T * sb0 * G, w_ih, dx + sb0 * I)
        s += nthr


cdef inline int forward_setup(int tid, int nthr, int slices, int n_rows, int n_cols, idx T,
                              idx B, idx I, idx H, idx G, bint whole, const floating *x,
                              const floating *w_ih, floating *w_ih_pack, floating *gates,
                              fc_barrier_t *bar, idx *b0, idx *b1, idx *j0, idx *j1,
                              int *s_end) noexcept nogil:
    """A forward's phase between packing W_hh (the caller's share, before this) and its time
    loop(s). Slice mode: this thread's share of the packed W_ih^T (if w_ih_pack), the barrier
    that completes both packings; the thread then runs slices tid, tid + nthr, ... below
    s_end = slices (the caller sets each one's rows). Grid: the thread's block (b0..j1) and
    input_phase (gates of all steps into `gates` when whole); s_end = 1 (one pass, s = 0).
    Returns the number of column parts of the grid (1 in slice mode)."""
    if slices > 1:
        if w_ih_pack != NULL:
            pack_part(tid, nthr, I, G, w_ih, 1, I, w_ih_pack)
        fc_barrier_wait(bar)
        s_end[0] = slices
        return 1
    s_end[0] = 1
    input_phase(tid, nthr, whole, T, B, G, I, x, w_ih, w_ih_pack, gates, bar)
    return thread_block(tid, nthr, n_rows, n_cols, B, H, b0, b1, j0, j1)

# Threads: every kernel is ONE OpenMP region of n_threads threads (BLAS single-threaded in
# each): the hoisted GEMMs are split by rows over all of them; the time loop runs on an
# n_rows x n_cols grid (see thread_block), where n_cols > 1 splits the hidden units of every
# step and costs one barrier per step, n_cols = 1 needs none. Phases are separated by the spin
# barrier of csrc/fc_sync.h.


# ================================================================= LSTM
cdef int lstm_fwd(floating *y, floating *h_n, floating *c_n,
                  floating *gates, floating *cs, floating *hs, floating *us, floating *hbuf,
                  const floating *x, const floating *h0, const floating *c0,
                  const floating *w_ih, const floating *w_hh, floating *w_pack,
                  floating *w_ih_pack, const floating *bias, const floating *w_hr_t,
                  const int64_t *lengths, idx T, idx B, idx I, idx H, idx P,
                  int n_threads, int n_rows, int n_cols, int slices,
                  set_threads_fn set_threads) noexcept nogil:
    # y (T,B,P), h_n (B,P), c_n (B,H) out. P = H without projection (w_hr_t NULL).
    # gates: training (T,B,4H) out = saved i,f,g,o; inference (B,4H) scratch.
    # w_ih_pack: (packed_size(I, 4H)) scratch: inference always; training optional. Training
    #   projects all inputs with one GEMM before the loop (the gates are saved anyway): BLAS,
    #   or the packed kernel given w_ih_pack; inference runs the input projection per step on
    #   the packed W_ih^T, on each thread's own block, so it needs no sequence-long gate
    #   buffer and no barrier for it.
    # cs (T,B,H), hs (T,B,P): training out = saved c_t, h_t; inference NULL (the cell state
    #   lives in c_n, updated in place; h_t is written to y_t and read there by the next step,
    #   or with lengths alternates between hbuf and h_n).
    # us: projection only: training (T,B,H) out = saved u_t = o*tanh(c_t); inference (B,H).
    # hbuf: inference with lengths only, (B,P) scratch (h double buffer). Otherwise NULL.
    # x (T,B,I); h0 (B,P), c0 (B,H); w_ih (4H,I); w_hh (4H,P); w_pack (packed_size(P, 4H))
    #   scratch = W_hh^T packed; bias (4H,) = b_ih + b_hh; w_hr_t (H,P) = W_hr^T or NULL (then
    #   n_cols must be 1); lengths (B,) or NULL.
    # slices > 1: slice mode (training without projection; see "slice mode" above): gates,
    #   cs, hs in the [slice][T][rows][X] layout, n_rows, n_cols ignored.
    cdef idx G = 4 * H, BH = B * H, BP = B * P, t, b0, b1, j0, j1, nj, oj0, onj, gt, r, e
    cdef idx Bw, sb0
    cdef int tid, nthr, nc, prev_local, prev_main, s, s_end
    cdef fc_barrier_t bar
    cdef bint training = hs != NULL, proj = w_hr_t != NULL, act, pref
    cdef floating *g_t
    cdef const floating *h_prev
    cdef const floating *c_prev
    cdef floating *c_out
    cdef floating *h_dest
    cdef floating *u_t
    # this pass's arrays: the whole ones, or in slice mode the slice's block / rows
    cdef floating *yb
    cdef floating *gb
    cdef floating *csb
    cdef floating *hsb
    cdef floating *usb
    cdef const floating *h0b
    cdef const floating *c0b
    cdef const int64_t *lenb
    if B == 0:
        return 0
    copy_or_zero(h_n, h0, BP)          # T == 0: the result
    copy_or_zero(c_n, c0, BH)          # inference: the running cell state
    if T == 0:
        return 0
    prev_main = set_blas_threads(set_threads, 1)
    fc_barrier_init(&bar, n_threads)
    with parallel(num_threads=n_threads):
        tid = threadid()
        nthr = omp_get_num_threads()
        # assigned here so that Cython makes them private to each thread (they are written
        # through pointers below, which Cython's privacy inference does not see)
        b0 = b1 = j0 = j1 = sb0 = 0
        act = False
        fc_barrier_set_n(&bar, nthr)
        prev_local = set_blas_threads(set_threads, 1)
        pack_part(tid, nthr, P, G, w_hh, 1, P, w_pack)    # W_hh^T (P, 4H), ready at the barrier
        # slice mode: this thread's slices s = tid, tid + nthr, ...; grid: one pass (eq. L1's
        # input part for all steps if training)
        s_end = 0
        nc = forward_setup(tid, nthr, slices, n_rows, n_cols, T, B, I, H, G, training, x, w_ih,
                           w_ih_pack, gates, &bar, &b0, &b1, &j0, &j1, &s_end)
        s = tid if slices > 1 else 0
        pref = training and nthr > 1 and slices <= 1
        while s < s_end:
            if slices > 1:
                Bw = slice_block(s, slices, B, H, &sb0, &b0, &b1, &j0, &j1)
                yb = y + sb0 * P
                gb = gates + T * sb0 * G
                csb = cs + T * sb0 * H
                hsb = hs + T * sb0 * P
                usb = NULL
                h0b = h0 + sb0 * P
                c0b = c0 + sb0 * H
                lenb = lengths + sb0 if lengths != NULL else NULL
                slice_project(T, Bw, B * I, I, G, x + sb0 * I, w_ih, w_ih_pack, gb)  # eq. L1
            else:
                Bw = B
                yb = y
                gb = gates
                csb = cs
                hsb = hs
                usb = us
                h0b = h0
                c0b = c0
                lenb = lengths
            nj = j1 - j0
            oj0 = 0 if proj else j0
            onj = P if proj else nj
            for t in range(T):
                gt = t if training else 0
                g_t = gb + gt * Bw * G
                if training:
                    h_prev = hsb + (t - 1) * Bw * P if t > 0 else h0b
                    c_prev = csb + (t - 1) * Bw * H if t > 0 else c0b
                    c_out = csb + t * Bw * H
                    h_dest = hsb + t * Bw * P
                    u_t = usb + t * Bw * H if proj else h_dest
                else:
                    if lengths == NULL:
                        # h_t goes straight to y_t, where the next step reads it
                        h_dest = y + t * BP
                        h_prev = h0 if t == 0 else h_dest - BP
                    else:
                        # h ping-pongs between hbuf and h_n, ending in h_n at t = T - 1 (rows
                        # past their length keep their state, while y_t gets zeros)
                        h_dest = h_n if (T - 1 - t) % 2 == 0 else hbuf
                        h_prev = h0 if t == 0 else (hbuf if h_dest == h_n else h_n)
                    c_prev = c_n
                    c_out = c_n
                    u_t = us if proj else h_dest
                # gates_t[block] += h_{t-1}[rows] @ W_hh^T[:, block]   (eq. L1 recurrent part)
                if nj > 0 and b1 > b0:
                    if pref and t + 1 < T:
                        prefetch_gates(g_t + B * G + b0 * G, b1 - b0, j0, nj, H, 4, G)
                    if not training:
                        # gates_t[block] = x_t[rows] @ W_ih^T[:, block]   (eq. L1 input part)
                        gates_pgemm(b1 - b0, j0, j1, H, 4, I,
                                    x + (t * B + b0) * I if x != NULL else NULL, w_ih_pack,
                                    g_t + b0 * G, False)
                    gates_pgemm(b1 - b0, j0, j1, H, 4, P, h_prev + b0 * P, w_pack,
                                g_t + b0 * G, True)
                # pointwise (eq. L2, L3) on runs of active rows; u_t is h, or u with projection
                r = b0
                while r < b1 and nj > 0:
                    e = run_end(lenb, t, r, b1, &act)
                    if act:
                        pw_lstm_fwd(e - r, nj, H, G, H, g_t + r * G + j0, bias + j0,
                                    c_prev + r * H + j0, c_out + r * H + j0, u_t + r * H + j0)
                    elif proj:
                        zero_block(u_t + r * H, e - r, H, H)   # keeps dW_hr = dH^T U exact
                    r = e
                if proj and b1 > b0:
                    # h_t[rows] = u_t[rows] @ W_hr^T   (n_cols == 1 here)
                    gemm(False, False, <int>(b1 - b0), <int>P, <int>H, <floating>1,
                         u_t + b0 * H, <int>H, w_hr_t, <int>P, <floating>0, h_dest + b0 * P,
                         <int>P)
                # outputs, and rows past their length keep their state; h columns [oj0,
                # oj0 + onj) are this thread's (all P of them with a projection)
                # (slice mode fills y after the loop: slice_outputs)
                r = b0
                while r < b1 and onj > 0:
                    e = run_end(lenb, t, r, b1, &act)
                    if act:
                        if h_dest != y + t * BP and slices <= 1:
                            copy_block(yb + t * BP + r * P + oj0, h_dest + r * P + oj0, e - r,
                                       onj, P)
                    else:
                        copy_block(h_dest + r * P + oj0, h_prev + r * P + oj0, e - r, onj, P)
                        if training:
                            copy_block(c_out + r * H + j0, c_prev + r * H + j0, e - r, nj, H)
                        if slices <= 1:
                            zero_block(yb + t * BP + r * P + oj0, e - r, onj, P)
                    r = e
                if nc > 1:
                    fc_barrier_wait(&bar)        # h_t complete before any thread's next GEMM
            if slices > 1:
                slice_outputs(T, Bw, P, hsb, yb, BP, lenb)
                memcpy(h_n + sb0 * P, hsb + (T - 1) * Bw * P, Bw * P * sizeof(floating))
                memcpy(c_n + sb0 * H, csb + (T - 1) * Bw * H, Bw * H * sizeof(floating))
            s = s + nthr
        restore_blas_threads(set_threads, prev_local)
    if training and slices <= 1:
        memcpy(h_n, hs + (T - 1) * BP, BP * sizeof(floating))
        memcpy(c_n, cs + (T - 1) * BH, BH * sizeof(floating))
    elif not training and lengths == NULL:
        memcpy(h_n, y + (T - 1) * BP, BP * sizeof(floating))
    restore_blas_threads(set_threads, prev_main)
    return 0


cdef int lstm_bwd(floating *dx, floating *dh0, floating *dc0,
                  floating *dw_ih, floating *dw_hh, floating *db, floating *dw_hr,
                  floating *gates, const floating *cs, const floating *hs, const floating *us,
                  floating *dhs, floating *du, floating *w_pack,
                  const floating *x, const floating *h0, const floating *c0,
                  const floating *w_ih, const floating *w_hh, const floating *w_hr,
                  const floating *dy, const floating *dh_n, const floating *dc_n,
                  const int64_t *lengths,
                  idx T, idx B, idx I, idx H, idx P,
                  int n_threads, int n_rows, int n_cols, int slices,
                  set_threads_fn set_threads) noexcept nogil:
    # dx (T,B,I), dh0 (B,P), dc0 (B,H), dw_ih (4H,I), dw_hh (4H,P) out; db (4H,) out or NULL;
    # dw_hr (P,H) out (projection) or NULL.
    # gates (T,B,4H): in = saved i,f,g,o; out = dG (destroyed: the workspace is consumed).
    # cs (T,B,H), hs (T,B,P) saved states; us (T,B,H) saved u (projection) or NULL.
    # dhs (T,B,P) scratch = dL/dh_t in total (projection) or NULL; du (B,H) scratch (projection).
    # w_pack (packed_size(4H, P)) scratch = W_hh packed.
    # x, h0, c0, w_ih (4H,I), w_hh (4H,P), w_hr (P,H) or NULL (then n_cols must be 1).
    # dy (T,B,P), dh_n (B,P), dc_n (B,H): incoming gradients, each may be NULL (= 0).
    # slices > 1: the forward ran in slice mode with that many slices (its layout; no
    #   projection); n_rows, n_cols ignored.
    cdef idx G = 4 * H, BH = B * H, BP = B * P, t, b0, b1, j0, j1, nj, r, e, j
    cdef idx Bw, sb0
    cdef int tid, nthr, nc, prev_local, prev_main, s, s_end
    cdef fc_barrier_t bar
    cdef bint proj = w_hr != NULL, act
    cdef fc_tasks_t tasks
    cdef int parts[5]
    cdef int op, part
    cdef floating *g_t
    cdef floating *dh_t
    cdef const floating *c_prev
    cdef const floating *dy_t
    # this pass's arrays: the whole ones, or in slice mode the slice's block / rows
    cdef floating *gb
    cdef const floating *csb
    cdef const floating *hsb
    cdef const floating *dyb
    cdef const floating *c0b
    cdef floating *dh
    cdef floating *dc
    cdef const int64_t *lenb
    cdef floating *pw_ih
    cdef floating *pw_hh
    cdef floating *pb
    copy_or_zero(dh0, dh_n, BP)      # dh0 / dc0 double as the running dL/dh_t, dL/dc_t
    copy_or_zero(dc0, dc_n, BH)
    # the hoisted products after the time loop, as tasks (see next_task), biggest first
    parts[0] = n_threads
    parts[1] = n_threads
    parts[2] = n_threads
    parts[3] = n_threads if proj else 0
    parts[4] = n_threads if db != NULL else 0
    fc_tasks_init(&tasks)
    prev_main = set_blas_threads(set_threads, 1)
    fc_barrier_init(&bar, n_threads)
    with parallel(num_threads=n_threads):
        tid = threadid()
        nthr = omp_get_num_threads()
        # assigned here so that Cython makes them private to each thread (they are written
        # through pointers below, which Cython's privacy inference does not see)
        b0 = b1 = j0 = j1 = sb0 = 0
        act = False
        op = part = 0
        pw_ih = pw_hh = pb = NULL
        fc_barrier_set_n(&bar, nthr)
        prev_local = set_blas_threads(set_threads, 1)
        pack_part(tid, nthr, G, P, w_hh, P, 1, w_pack)    # W_hh (4H, P)
        fc_barrier_wait(&bar)
        s_end = 0
        nc = backward_setup(tid, nthr, slices, n_rows, n_cols, B, H, &b0, &b1, &j0, &j1, &s_end)
        s = tid if slices > 1 else 0
        while s < s_end:
            if slices > 1:
                Bw = slice_block(s, slices, B, H, &sb0, &b0, &b1, &j0, &j1)
                gb = gates + T * sb0 * G
                csb = cs + T * sb0 * H
                hsb = hs + T * sb0 * P
                dyb = dy + sb0 * P if dy != NULL else NULL
                c0b = c0 + sb0 * H
                dh = dh0 + sb0 * P
                dc = dc0 + sb0 * H
                lenb = lengths + sb0 if lengths != NULL else NULL
            else:
                Bw = B
                gb = gates
                csb = cs
                hsb = hs
                dyb = dy
                c0b = c0
                dh = dh0
                dc = dc0
                lenb = lengths
            nj = j1 - j0
            for t in range(T - 1, -1, -1):
                g_t = gb + t * Bw * G
                c_prev = csb + (t - 1) * Bw * H if t > 0 else c0b
                dy_t = dyb + t * BP if dyb != NULL else NULL
                if proj and b1 > b0:
                    # total dL/dh_t on active rows (dh_t = dh + dy_t), then du = dh_t @ W_hr
                    dh_t = dhs + t * BP
                    r = b0
                    while r < b1:
                        e = run_end(lenb, t, r, b1, &act)
                        if act:
                            for j in range(r * P, e * P):
                                dh_t[j] = dh[j] + (dy_t[j] if dy_t != NULL else 0)
                                dh[j] = 0
                        else:
                            zero_block(dh_t + r * P, e - r, P, P)
                        r = e
                    gemm(False, False, <int>(b1 - b0), <int>H, <int>P, <floating>1,
                         dh_t + b0 * P, <int>P, w_hr, <int>H, <floating>0, du + b0 * H, <int>H)
                r = b0
                while r < b1 and nj > 0:
                    e = run_end(lenb, t, r, b1, &act)
                    if act:
                        if proj:
                            pw_lstm_bwd(e - r, nj, H, G, H, g_t + r * G + j0,
                                        csb + t * Bw * H + r * H + j0, c_prev + r * H + j0,
                                        NULL, du + r * H + j0, dc + r * H + j0)
                        else:
                            pw_lstm_bwd(e - r, nj, H, G, H, g_t + r * G + j0,
                                        csb + t * Bw * H + r * H + j0, c_prev + r * H + j0,
                                        dy_t + r * H + j0 if dy_t != NULL else NULL,
                                        dh + r * H + j0, dc + r * H + j0)
                    else:
                        zero_gate_block(g_t + r * G + j0, e - r, nj, H, 4, G)  # dG = 0
                    r = e
                if nc > 1:
                    fc_barrier_wait(&bar)        # dG_t complete before the GEMM reads its rows
                # dh_{t-1}[rows, cols] += dG_t[rows] @ W_hh[:, cols]
                if nj > 0 and b1 > b0:
                    pgemm(b1 - b0, 0 if proj else j0, P if proj else j1, G, g_t + b0 * G, G,
                          w_pack, G, dh + b0 * P, P, True)
            s = s + nthr
        fc_barrier_wait(&bar)              # all of dG is written: the hoisted products
        if slices > 1:
            # each slice's dW_hh = dG_0^T h0 + dG_{1:}^T h_{:-1}, dW_ih = dG^T X, sum dG on its
            # own block (slice 0's weight gradients straight into dw_ih, dw_hh: their packed
            # W_hh is dead now); then the partials are added, then dx = dG @ W_ih, which
            # overwrites them
            s = tid
            while s < slices:
                Bw = slice_rows(s, slices, B, &sb0)
                slice_partials(dx, slices, s, G, I, P, H, dw_ih, dw_hh, &pw_ih, &pw_hh, &pb)
                tn_states(0, 1, G, P, T, Bw, gates + T * sb0 * G, G, h0 + sb0 * P,
                          hs + T * sb0 * P, pw_hh)
                slice_tn_x(G, T, Bw, B * I, I, gates + T * sb0 * G, G, x + sb0 * I, pw_ih,
                           False)
                if db != NULL:
                    colsum(T * Bw, G, G, gates + T * sb0 * G, pb, False)
                s = s + nthr
            fc_barrier_wait(&bar)
            add_weight_partials(tid, nthr, slices, G, I, P, dx, dw_ih, dw_hh)
            if db != NULL:
                add_slices(tid, nthr, G, db, dx + (slices - 1) * slice_w_elems(G, I, P),
                           slice_b_elems(G, H), slices, True)
            fc_barrier_wait(&bar)
            slices_dx(tid, nthr, slices, T, B, I, G, gates, w_ih, dx)
        else:
            # dW_hh = dG_0^T h0 + dG_{1:}^T h_{:-1} ; dW_ih = dG^T @ X ; dx = dG @ W_ih ;
            # dW_hr = sum_t dh_t^T u_t (projection) ; db = sum dG: in parts, taken by free
            # threads
            while next_task(&tasks, parts, 5, 0, &op, &part):
                if op == 0:
                    tn_states(part, parts[0], G, P, T, B, gates, G, h0, hs, dw_hh)
                elif op == 1:
                    tn_part(part, parts[1], G, I, T * B, gates, G, x, I, 0, dw_ih, I)
                elif op == 2:
                    dx_part(part, parts[2], T * B, I, G, gates, w_ih, dx)
                elif op == 3:
                    tn_part(part, parts[3], P, H, T * B, dhs, P, us, H, 0, dw_hr, H)
                else:
                    colsum_part(part, parts[4], T * B, G, G, gates, db)
        restore_blas_threads(set_threads, prev_local)
    restore_blas_threads(set_threads, prev_main)
    return 0


# ================================================================= GRU
cdef inline void gru_fwd_steps(floating *y, floating *gates, floating *hn_save, floating *hs,
                               floating *gh, const floating *h0, const int64_t *lengths,
                               floating *h_n, floating *hbuf, const floating *x,
                               const floating *w_pack, const floating *w_ih_pack,
                               const floating *b_ih, const floating *b_hh, bint reset_after,
                               bint training, bint pref, bint defer_y, idx T, idx B, idx Bw,
                               idx I, idx H, idx b0, idx b1, idx j0, idx j1, int nc,
                               fc_barrier_t *bar) noexcept nogil:
    """gru_fwd's time loop on one thread's block: rows [b0, b1) x hidden units [j0, j1) of
    arrays whose steps hold Bw rows (gates, hn_save, hs: B, or a slice's rows in slice mode;
    y, x: always B). Arguments as in gru_fwd, each pointing at the pass's first row; pref:
    prefetch the next step's gate rows (the grid layout with several threads); defer_y: leave
    y to the caller (slice mode: slice_outputs)."""
    cdef idx G = 3 * H, BH = B * H, t, gt, r, e, nj = j1 - j0, nb = b1 - b0
    cdef bint act = False
    cdef floating *g_t
    cdef const floating *h_prev
    cdef floating *h_dest
    cdef floating *hn_t
    for t in range(T):
        gt = t if training else 0
        g_t = gates + gt * Bw * G
        if training:
            h_prev = hs + (t - 1) * Bw * H if t > 0 else h0
            h_dest = hs + t * Bw * H
            hn_t = hn_save + t * Bw * H
        else:
            if lengths == NULL:          # h_t straight to y_t, read there next step
                h_dest = y + t * BH
                h_prev = h0 if t == 0 else h_dest - BH
            else:                        # ping-pong, as in lstm_fwd
                h_dest = h_n if (T - 1 - t) % 2 == 0 else hbuf
                h_prev = h0 if t == 0 else (hbuf if h_dest == h_n else h_n)
            hn_t = hn_save     # classic: scratch; reset_after: NULL
        if not training and nb > 0 and nj > 0:
            # gates_t[block] = x_t[rows] @ W_ih^T[:, block]   (eq. G1-G3 input parts)
            gates_pgemm(nb, j0, j1, H, 3, I, x + (t * B + b0) * I if x != NULL else NULL,
                        w_ih_pack, g_t + b0 * G, False)
        if nb > 0 and nj > 0:
            if pref and t + 1 < T:
                prefetch_gates(g_t + B * G + b0 * G, nb, j0, nj, H, 3, G)
            if reset_after:
                # gh[block] = h_{t-1}[rows] @ W_hh^T[:, block]   (eq. G1-G3)
                gates_pgemm(nb, j0, j1, H, 3, H, h_prev + b0 * H, w_pack, gh + b0 * G,
                            False)
                r = b0
                while r < b1:
                    e = run_end(lengths, t, r, b1, &act)
                    if act:
                        pw_gru_fwd(e - r, nj, H, G, H, g_t + r * G + j0, gh + r * G + j0,
                                   b_ih + j0, b_hh + j0, h_prev + r * H + j0,
                                   h_dest + r * H + j0,
                                   hn_t + r * H + j0 if hn_t != NULL else NULL)
                    r = e
            else:
                # classic: gh[:, :2H] = h W_h{r,z}^T; rh = r*h; gh[:, 2H:] = rh W_hn^T
                pgemm(nb, 0, 2 * H, H, h_prev + b0 * H, H, w_pack, H, gh + b0 * G, G,
                      False)
                r = b0
                while r < b1:
                    e = run_end(lengths, t, r, b1, &act)
                    if act:
                        pw_gru1_fwd_a(e - r, H, H, G, H, g_t + r * G, gh + r * G, b_ih,
                                      b_hh, h_prev + r * H, hn_t + r * H)
                    else:
                        zero_block(hn_t + r * H, e - r, H, H)
                    r = e
                pgemm(nb, 2 * H, G, H, hn_t + b0 * H, H, w_pack, H, gh + b0 * G, G,
                      False)
                r = b0
                while r < b1:
                    e = run_end(lengths, t, r, b1, &act)
                    if act:
                        pw_gru1_fwd_b(e - r, H, H, G, H, g_t + r * G, gh + r * G, b_ih,
                                      b_hh, h_prev + r * H, h_dest + r * H)
                    r = e
        # outputs, and rows past their length keep their state
        r = b0
        while r < b1 and nj > 0:
            e = run_end(lengths, t, r, b1, &act)
            if act:
                if h_dest != y + t * BH and not defer_y:
                    copy_block(y + t * BH + r * H + j0, h_dest + r * H + j0, e - r, nj, H)
            else:
                copy_block(h_dest + r * H + j0, h_prev + r * H + j0, e - r, nj, H)
                if not defer_y:
                    zero_block(y + t * BH + r * H + j0, e - r, nj, H)
            r = e
        if nc > 1:
            fc_barrier_wait(bar)


cdef int gru_fwd(floating *y, floating *h_n,
                 floating *gates, floating *hn_save, floating *hs, floating *gh, floating *hbuf,
                 const floating *x, const floating *h0,
                 const floating *w_ih, const floating *w_hh, floating *w_pack,
                 floating *w_ih_pack, const floating *b_ih, const floating *b_hh,
                 bint reset_after, const int64_t *lengths, idx T, idx B, idx I, idx H,
                 int n_threads, int n_rows, int n_cols, int slices,
                 set_threads_fn set_threads) noexcept nogil:
    # y (T,B,H), h_n (B,H) out.
    # gates: training (T,B,3H) out = saved r,z,n; inference (B,3H) scratch.
    # w_ih_pack: packed W_ih^T (I, 3H) scratch, inference always, training optional: as in
    # lstm_fwd.
    # hn_save: reset_after: h W_hn^T + b_hn, classic: r*h_{t-1}. Training (T,B,H) out (saved);
    #   inference: classic (B,H) scratch, reset_after NULL.
    # hs: training (T,B,H) out = saved h_t; inference NULL (h_t goes to y_t, read there next
    # step; with lengths h alternates between hbuf and h_n).
    # gh (B,3H) scratch for h W_hh^T; hbuf (B,H) scratch (inference with lengths) or NULL.
    # x (T,B,I); h0 (B,H); w_ih (3H,I); w_hh (3H,H); w_pack (packed_size(H, 3H)) scratch =
    # W_hh^T packed; b_ih, b_hh (3H,) (zeros when
    # the layer has no bias); lengths (B,) or NULL. Classic GRU: n_cols must be 1.
    # slices > 1: slice mode (training; see "slice mode" above): gates, hn_save, hs in the
    #   [slice][T][rows][X] layout, n_rows, n_cols ignored.
    cdef idx G = 3 * H, BH = B * H, b0, b1, j0, j1, Bw, sb0
    cdef int tid, nthr, nc, prev_local, prev_main, s, s_end
    cdef fc_barrier_t bar
    cdef bint training = hs != NULL, pref
    # this pass's arrays: the whole ones, or in slice mode the slice's block / rows
    cdef floating *yb
    cdef floating *gb
    cdef floating *hnb
    cdef floating *hsb
    cdef floating *ghb
    cdef const floating *h0b
    cdef const int64_t *lenb
    if B == 0:
        return 0
    copy_or_zero(h_n, h0, BH)
    if T == 0:
        return 0
    prev_main = set_blas_threads(set_threads, 1)
    fc_barrier_init(&bar, n_threads)
    with parallel(num_threads=n_threads):
        tid = threadid()
        nthr = omp_get_num_threads()
        # assigned here so that Cython makes them private to each thread (they are written
        # through pointers below, which Cython's privacy inference does not see)
        b0 = b1 = j0 = j1 = sb0 = 0
        fc_barrier_set_n(&bar, nthr)
        prev_local = set_blas_threads(set_threads, 1)
        pack_part(tid, nthr, H, G, w_hh, 1, H, w_pack)    # W_hh^T (H, 3H), ready at the barrier
        # slice mode: this thread's slices s = tid, tid + nthr, ...; grid: one pass (eq. G1-G3's
        # input parts for all steps if training)
        s_end = 0
        nc = forward_setup(tid, nthr, slices, n_rows, n_cols, T, B, I, H, G, training, x, w_ih,
                           w_ih_pack, gates, &bar, &b0, &b1, &j0, &j1, &s_end)
        s = tid if slices > 1 else 0
        pref = training and nthr > 1 and slices <= 1
        while s < s_end:
            if slices > 1:
                Bw = slice_block(s, slices, B, H, &sb0, &b0, &b1, &j0, &j1)
                yb = y + sb0 * H
                gb = gates + T * sb0 * G
                hnb = hn_save + T * sb0 * H
                hsb = hs + T * sb0 * H
                ghb = gh + sb0 * G
                h0b = h0 + sb0 * H
                lenb = lengths + sb0 if lengths != NULL else NULL
                slice_project(T, Bw, B * I, I, G, x + sb0 * I, w_ih, w_ih_pack, gb)  # G1-G3
            else:
                Bw = B
                yb = y
                gb = gates
                hnb = hn_save
                hsb = hs
                ghb = gh
                h0b = h0
                lenb = lengths
            # the time loop (eq. G1-G3) on this pass's block
            gru_fwd_steps(yb, gb, hnb, hsb, ghb, h0b, lenb, h_n, hbuf, x, w_pack, w_ih_pack,
                          b_ih, b_hh, reset_after, training, pref, slices > 1, T, B, Bw, I, H,
                          b0, b1, j0, j1, nc, &bar)
            if slices > 1:
                slice_outputs(T, Bw, H, hsb, yb, BH, lenb)
                memcpy(h_n + sb0 * H, hsb + (T - 1) * Bw * H, Bw * H * sizeof(floating))
            s = s + nthr
        restore_blas_threads(set_threads, prev_local)
    if training and slices <= 1:
        memcpy(h_n, hs + (T - 1) * BH, BH * sizeof(floating))
    elif not training and lengths == NULL:
        memcpy(h_n, y + (T - 1) * BH, BH * sizeof(floating))
    restore_blas_threads(set_threads, prev_main)
    return 0


cdef inline void gru_bwd_steps(floating *gates, floating *hn, const floating *hs,
                               const floating *dy, const floating *h0, floating *dh0,
                               floating *dgh, const int64_t *lengths, const floating *w_pack,
                               bint reset_after, idx T, idx B, idx Bw, idx H, idx b0, idx b1,
                               idx j0, idx j1, int nc, fc_barrier_t *bar) noexcept nogil:
    """gru_bwd's time loop on one thread's block: rows [b0, b1) x hidden units [j0, j1) of
    arrays whose steps hold Bw rows (gates, hn, hs: B, or a slice's rows in slice mode; dy:
    always B). Arguments as in gru_bwd, each pointing at the pass's first row."""
    cdef idx G = 3 * H, BH = B * H, t, r, e, nj = j1 - j0, nb = b1 - b0
    cdef bint act = False
    cdef floating *g_t
    cdef const floating *h_prev
    cdef const floating *dy_t
    for t in range(T - 1, -1, -1):
        g_t = gates + t * Bw * G
        h_prev = hs + (t - 1) * Bw * H if t > 0 else h0
        dy_t = dy + t * BH if dy != NULL else NULL
        if reset_after:
            r = b0
            while r < b1 and nj > 0:
                e = run_end(lengths, t, r, b1, &act)
                if act:
                    pw_gru_bwd(e - r, nj, H, G, H, g_t + r * G + j0,
                               hn + t * Bw * H + r * H + j0, h_prev + r * H + j0,
                               dy_t + r * H + j0 if dy_t != NULL else NULL,
                               dh0 + r * H + j0)
                else:
                    zero_gate_block(g_t + r * G + j0, e - r, nj, H, 3, G)
                    zero_block(hn + t * Bw * H + r * H + j0, e - r, nj, H)
                r = e
            if nc > 1:
                fc_barrier_wait(bar)
            # dh_{t-1}[block] = z * dh_t (written above) + d(h W_hh^T)[rows] @ W_hh[:, cols],
            # d(h W_hh^T) = [dr, dz] (gates' first 2H columns) | dn * r (in hn): two
            # products on rows 0..2H and 2H..3H of the packed W_hh
            if nb > 0 and nj > 0:
                pgemm(nb, j0, j1, 2 * H, g_t + b0 * G, G, w_pack, G, dh0 + b0 * H, H, True)
                pgemm(nb, j0, j1, H, hn + t * Bw * H + b0 * H, H,
                      w_pack + 2 * H * pack_width(w_pack), G, dh0 + b0 * H, H, True)
        elif nb > 0:
            r = b0
            while r < b1:
                e = run_end(lengths, t, r, b1, &act)
                if act:
                    pw_gru1_bwd_a(e - r, H, H, G, H, g_t + r * G, h_prev + r * H,
                                  dy_t + r * H if dy_t != NULL else NULL, dh0 + r * H)
                else:
                    zero_block(g_t + r * G, e - r, G, G)
                r = e
            # d(r*h)[rows] = dn[rows] @ W_hn   (dgh used as a (B,H) scratch)
            pgemm(nb, 0, H, H, g_t + b0 * G + 2 * H, G, w_pack + 2 * H * pack_width(w_pack),
                  G, dgh + b0 * H, H, False)
            r = b0
            while r < b1:
                e = run_end(lengths, t, r, b1, &act)
                if act:
                    pw_gru1_bwd_b(e - r, H, H, G, H, g_t + r * G, dgh + r * H,
                                  h_prev + r * H, dh0 + r * H)
                r = e
            # dh_{t-1}[rows] += [dr, dz][rows] @ W_h{r,z}
            pgemm(nb, 0, H, 2 * H, g_t + b0 * G, G, w_pack, G, dh0 + b0 * H, H, True)


cdef inline void gru_bwd_tasks(fc_tasks_t *tasks, const int *parts, floating *dx,
                               floating *dw_ih, floating *dw_hh, floating *db_ih,
                               floating *db_hh, const floating *gates, const floating *hn,
                               const floating *hs, const floating *x, const floating *h0,
                               const floating *w_ih, bint reset_after, idx T, idx B, idx I,
                               idx H) noexcept nogil:
    """gru_bwd's hoisted products (the grid layout) as tasks, until none is left."""
    cdef idx G = 3 * H
    cdef int op = 0, part = 0
    while next_task(tasks, parts, 6, 0, &op, &part):
        if op == 0:
            # dW_hh rows r,z: the same dG as the x side (columns 0..2H of gates), x h_{t-1}
            tn_states(part, parts[0], 2 * H, H, T, B, gates, G, h0, hs, dw_hh)
        elif op == 1 and reset_after:
            # rows n: d(h W_hn^T) = dn * r (in hn), times h_{t-1}
            tn_states(part, parts[1], H, H, T, B, hn, H, h0, hs, dw_hh + 2 * H * H)
        elif op == 1:
            # rows n: dn times (r*h)_{t}, saved in hn for every step (h0 included)
            tn_part(part, parts[1], H, H, T * B, gates + 2 * H, G, hn, H, 0,
                    dw_hh + 2 * H * H, H)
        elif op == 2:
            tn_part(part, parts[2], G, I, T * B, gates, G, x, I, 0, dw_ih, I)   # dG_x^T X
        elif op == 3:
            dx_part(part, parts[3], T * B, I, G, gates, w_ih, dx)   # dx = dG_x @ W_ih
        elif op == 4 and db_ih != NULL:
            # db_ih = colsum dG_x. db_hh's r and z parts are the same sums (and, classic,
            # its n part too): copied from the columns this task summed, not summed again
            colsum_part(part, parts[4], T * B, G, G, gates, db_ih)
            if db_hh != NULL:
                copy_part(part, parts[4], G, db_ih, db_hh, 2 * H if reset_after else G)
        elif op == 4:
            colsum_part(part, parts[4], T * B, 2 * H if reset_after else G, G, gates,
                        db_hh)
        else:
            colsum_part(part, parts[5], T * B, H, H, hn, db_hh + 2 * H)   # db_hh's n part


cdef int gru_bwd(floating *dx, floating *dh0, floating *dw_ih, floating *dw_hh,
                 floating *db_ih, floating *db_hh,
                 floating *gates, floating *hn, floating *dgh, floating *w_pack,
                 const floating *hs, const floating *x, const floating *h0,
                 const floating *w_ih, const floating *w_hh, bint reset_after,
                 const floating *dy, const floating *dh_n, const int64_t *lengths,
                 idx T, idx B, idx I, idx H, int n_threads, int n_rows, int n_cols,
                 int slices, set_threads_fn set_threads) noexcept nogil:
    # dx (T,B,I), dh0 (B,H), dw_ih (3H,I), dw_hh (3H,H) out; db_ih, db_hh (3H,) out or NULL.
    # gates (T,B,3H): in = saved r,z,n; out = dG_x = d(x-side pre-activations) (consumed).
    # hn (T,B,H): reset_after: in = saved h W_hn^T + b_hn, out = its gradient dn*r (consumed);
    #   classic: saved r*h_{t-1} (read only).
    # dgh: classic (B,H) scratch = d(r*h); reset_after NULL (the step GEMM reads d(h W_hh^T) =
    #   [dr, dz] | dn*r where the pointwise pass leaves it, in gates and hn).
    # w_pack (packed_size(3H, H)) scratch = W_hh packed.
    # hs (T,B,H) saved h_t. dy, dh_n may be NULL.
    # slices > 1: the forward ran in slice mode with that many slices (its layout);
    #   n_rows, n_cols ignored.
    cdef idx G = 3 * H, BH = B * H, b0, b1, j0, j1, Bw, sb0
    cdef int tid, nthr, nc, prev_local, prev_main, s, s_end
    cdef fc_barrier_t bar
    cdef fc_tasks_t tasks
    cdef int parts[6]
    # this pass's arrays: the whole ones, or in slice mode the slice's block / rows
    cdef floating *gb
    cdef floating *hnb
    cdef const floating *hsb
    cdef const floating *dyb
    cdef const floating *h0b
    cdef floating *dh
    cdef floating *dghb
    cdef const int64_t *lenb
    cdef floating *pw_ih
    cdef floating *pw_hh
    cdef floating *pb
    cdef idx sw, sbe
    copy_or_zero(dh0, dh_n, BH)
    # the hoisted products after the time loop, as tasks (see next_task), biggest first
    parts[0] = n_threads
    parts[1] = n_threads
    parts[2] = n_threads
    parts[3] = n_threads
    parts[4] = n_threads if db_ih != NULL or db_hh != NULL else 0
    parts[5] = n_threads if reset_after and db_hh != NULL else 0
    fc_tasks_init(&tasks)
    prev_main = set_blas_threads(set_threads, 1)
    fc_barrier_init(&bar, n_threads)
    with parallel(num_threads=n_threads):
        tid = threadid()
        nthr = omp_get_num_threads()
        # assigned here so that Cython makes them private to each thread (they are written
        # through pointers below, which Cython's privacy inference does not see)
        b0 = b1 = j0 = j1 = sb0 = 0
        pw_ih = pw_hh = pb = NULL
        fc_barrier_set_n(&bar, nthr)
        prev_local = set_blas_threads(set_threads, 1)
        pack_part(tid, nthr, G, H, w_hh, H, 1, w_pack)    # W_hh (3H, H)
        fc_barrier_wait(&bar)
        s_end = 0
        nc = backward_setup(tid, nthr, slices, n_rows, n_cols, B, H, &b0, &b1, &j0, &j1, &s_end)
        s = tid if slices > 1 else 0
        while s < s_end:
            if slices > 1:
                Bw = slice_block(s, slices, B, H, &sb0, &b0, &b1, &j0, &j1)
                gb = gates + T * sb0 * G
                hnb = hn + T * sb0 * H
                hsb = hs + T * sb0 * H
                dyb = dy + sb0 * H if dy != NULL else NULL
                h0b = h0 + sb0 * H
                dh = dh0 + sb0 * H
                dghb = dgh + sb0 * H if dgh != NULL else NULL
                lenb = lengths + sb0 if lengths != NULL else NULL
            else:
                Bw = B
                gb = gates
                hnb = hn
                hsb = hs
                dyb = dy
                h0b = h0
                dh = dh0
                dghb = dgh
                lenb = lengths
            gru_bwd_steps(gb, hnb, hsb, dyb, h0b, dh, dghb, lenb, w_pack, reset_after, T, B, Bw,
                          H, b0, b1, j0, j1, nc, &bar)
            s = s + nthr
        fc_barrier_wait(&bar)              # all of dG is written: the hoisted products
        if slices > 1:
            # each slice's products on its own block (as in lstm_bwd): dW_hh rows r,z and n,
            # dW_ih, the bias sums; then the partials are added, then dx
            s = tid
            while s < slices:
                Bw = slice_rows(s, slices, B, &sb0)
                slice_partials(dx, slices, s, G, I, H, H, dw_ih, dw_hh, &pw_ih, &pw_hh, &pb)
                gb = gates + T * sb0 * G
                hnb = hn + T * sb0 * H
                tn_states(0, 1, 2 * H, H, T, Bw, gb, G, h0 + sb0 * H, hs + T * sb0 * H, pw_hh)
                if reset_after:
                    tn_states(0, 1, H, H, T, Bw, hnb, H, h0 + sb0 * H, hs + T * sb0 * H,
                              pw_hh + 2 * H * H)
                else:
                    tn_part(0, 1, H, H, T * Bw, gb + 2 * H, G, hnb, H, 0, pw_hh + 2 * H * H, H)
                slice_tn_x(G, T, Bw, B * I, I, gb, G, x + sb0 * I, pw_ih, False)
                if db_ih != NULL or db_hh != NULL:
                    colsum(T * Bw, G, G, gb, pb, False)
                    if reset_after:
                        colsum(T * Bw, H, H, hnb, pb + rnd16(G), False)
                s = s + nthr
            fc_barrier_wait(&bar)
            sw = slice_w_elems(G, I, H)
            sbe = slice_b_elems(G, H)
            add_weight_partials(tid, nthr, slices, G, I, H, dx, dw_ih, dw_hh)
            # db_ih = sum dG_x; db_hh's r, z parts (classic: all of it) the same sums,
            # reset_after its n part the sums of d(h W_hn^T)
            if db_ih != NULL:
                add_slices(tid, nthr, G, db_ih, dx + (slices - 1) * sw, sbe, slices, True)
            if db_hh != NULL:
                add_slices(tid, nthr, 2 * H if reset_after else G, db_hh,
                           dx + (slices - 1) * sw, sbe, slices, True)
                if reset_after:
                    add_slices(tid, nthr, H, db_hh + 2 * H, dx + (slices - 1) * sw + rnd16(G),
                               sbe, slices, True)
            fc_barrier_wait(&bar)
            slices_dx(tid, nthr, slices, T, B, I, G, gates, w_ih, dx)
        else:
            # the hoisted products, in parts taken by free threads (see next_task)
            gru_bwd_tasks(&tasks, parts, dx, dw_ih, dw_hh, db_ih, db_hh, gates, hn, hs, x, h0,
                          w_ih, reset_after, T, B, I, H)
        restore_blas_threads(set_threads, prev_local)
    restore_blas_threads(set_threads, prev_main)
    return 0


# ================================================================= Elman RNN
cdef int rnn_fwd(floating *y, floating *h_n, floating *hs, floating *hbuf,
                 const floating *x, const floating *h0,
                 const floating *w_ih, const floating *w_hh, floating *w_pack,
                 floating *w_ih_pack, const floating *bias,
                 const int64_t *lengths, idx T, idx B, idx I, idx H, int relu,
                 int n_threads, int n_rows, int n_cols, int slices,
                 set_threads_fn set_threads) noexcept nogil:
    # y (T,B,H), h_n (B,H) out; hs (T,B,H) out = saved h_t (training) or NULL (inference: the
    # pre-activations accumulate in y itself, where h_t is computed in place; with lengths h
    # alternates between hbuf (B,H) and h_n, hbuf NULL otherwise).
    # Inference without lengths projects the input of all steps into y before the loop, as
    # training does into hs (y has the gates' shape when G = 1: no memory for it), when the
    # per-step projection would run on few rows per thread (at most 8) or y is small (at most
    # 512 KB); with lengths y must stay zero past a sequence's end, so it runs per step.
    # Paired against the per-step projection (2 threads allowed, Xeon, 2026-12-02):
    # B,T,I,H = 1,100,64,128: 0.84x the time; 1,1000,256,512: 0.90x; 4,200,128,512: 0.95x;
    # 8,100,64,256: 0.95x; 16,64,32,64 (one thread): 0.97x. Where neither holds it lost:
    # 32,50,128,128 1.02x, 32,100,128,256 1.03x, 64,100,256,512 1.08x (y, streamed twice, then
    # outgrows the caches, and the fused per-step projection keeps its tile hot).
    # x (T,B,I); h0 (B,H); w_ih (H,I); w_hh (H,H); w_pack (packed_size(H, H)) scratch = W_hh^T
    # packed; w_ih_pack: packed W_ih^T (I, H) scratch, inference always, training optional (as
    # in lstm_fwd: inference projects the input per step on each thread's block instead of one
    # GEMM before the loop); bias (H,) = b_ih + b_hh.
    # slices > 1: slice mode (training; see "slice mode" above): hs in the [slice][T][rows][H]
    #   layout, n_rows, n_cols ignored.
    cdef idx BH = B * H, t, b0, b1, j0, j1, nj, nb, r, e, Bw, sb0
    cdef int tid, nthr, nc, prev_local, prev_main, s, s_end
    cdef fc_barrier_t bar
    cdef bint training = hs != NULL, act, pref
    cdef floating *yb
    cdef floating *bufb
    cdef const floating *h0b
    cdef const int64_t *lenb
    cdef bint hoisted = training or (lengths == NULL and (
        (B + n_rows - 1) // n_rows <= 8 or T * BH * <idx>sizeof(floating) <= 512 * 1024))
    cdef floating *buf = hs if hs != NULL else y
    cdef floating *g_t
    cdef floating *h_dest
    cdef const floating *h_prev
    if B == 0:
        return 0
    copy_or_zero(h_n, h0, BH)
    if T == 0:
        return 0
    prev_main = set_blas_threads(set_threads, 1)
    fc_barrier_init(&bar, n_threads)
    with parallel(num_threads=n_threads):
        tid = threadid()
        nthr = omp_get_num_threads()
        # assigned here so that Cython makes them private to each thread (they are written
        # through pointers below, which Cython's privacy inference does not see)
        b0 = b1 = j0 = j1 = sb0 = 0
        act = False
        fc_barrier_set_n(&bar, nthr)
        prev_local = set_blas_threads(set_threads, 1)
        pack_part(tid, nthr, H, H, w_hh, 1, H, w_pack)    # W_hh^T (H, H)
        # slice mode: this thread's slices s = tid, tid + nthr, ...; grid: one pass
        s_end = 0
        nc = forward_setup(tid, nthr, slices, n_rows, n_cols, T, B, I, H, H, hoisted, x, w_ih,
                           w_ih_pack, buf, &bar, &b0, &b1, &j0, &j1, &s_end)
        s = tid if slices > 1 else 0
        pref = hoisted and nthr > 1 and slices <= 1
        while s < s_end:
            if slices > 1:
                Bw = slice_block(s, slices, B, H, &sb0, &b0, &b1, &j0, &j1)
                yb = y + sb0 * H
                bufb = hs + T * sb0 * H
                h0b = h0 + sb0 * H
                lenb = lengths + sb0 if lengths != NULL else NULL
                slice_project(T, Bw, B * I, I, H, x + sb0 * I, w_ih, w_ih_pack, bufb)
            else:
                Bw = B
                yb = y
                bufb = buf
                h0b = h0
                lenb = lengths
            nj = j1 - j0
            nb = b1 - b0
            for t in range(T):
                g_t = bufb + t * Bw * H
                if training or lengths == NULL:
                    # h_t in place of its pre-activation: hs_t (training) or y_t (inference)
                    h_prev = g_t - Bw * H if t > 0 else h0b
                    h_dest = g_t
                else:
                    h_dest = h_n if (T - 1 - t) % 2 == 0 else hbuf
                    h_prev = h0 if t == 0 else (hbuf if h_dest == h_n else h_n)
                if nb > 0 and nj > 0:
                    if pref and t + 1 < T:
                        prefetch_gates(g_t + BH + b0 * H, nb, j0, nj, H, 1, H)
                    if not hoisted:
                        pgemm(nb, j0, j1, I, x + (t * B + b0) * I if x != NULL else NULL, I,
                              w_ih_pack, I, g_t + b0 * H, H, False)
                    pgemm(nb, j0, j1, H, h_prev + b0 * H, H, w_pack, H, g_t + b0 * H, H, True)
                # (slice mode fills y after the loop: slice_outputs)
                r = b0
                while r < b1 and nj > 0:
                    e = run_end(lenb, t, r, b1, &act)
                    if act:
                        pw_rnn_fwd(e - r, nj, H, g_t + r * H + j0, bias + j0, relu)
                        if training and slices <= 1:
                            copy_block(yb + t * BH + r * H + j0, g_t + r * H + j0, e - r, nj,
                                       H)
                        elif h_dest != g_t:
                            copy_block(h_dest + r * H + j0, g_t + r * H + j0, e - r, nj, H)
                    else:
                        copy_block(h_dest + r * H + j0, h_prev + r * H + j0, e - r, nj, H)
                        if slices <= 1:
                            zero_block(yb + t * BH + r * H + j0, e - r, nj, H)
                    r = e
                if nc > 1:
                    fc_barrier_wait(&bar)
            if slices > 1:
                slice_outputs(T, Bw, H, bufb, yb, BH, lenb)
                memcpy(h_n + sb0 * H, bufb + (T - 1) * Bw * H, Bw * H * sizeof(floating))
            s = s + nthr
        restore_blas_threads(set_threads, prev_local)
    if (training and slices <= 1) or (not training and lengths == NULL):
        memcpy(h_n, buf + (T - 1) * BH, BH * sizeof(floating))
    restore_blas_threads(set_threads, prev_main)
    return 0


cdef double RNN_FINE_TASK_FLOPS = 8e6


cdef int rnn_bwd(floating *dx, floating *dh0, floating *dw_ih, floating *dw_hh, floating *db,
                 floating *dg, floating *w_pack, floating *hs,
                 const floating *x, const floating *h0,
                 const floating *w_ih, const floating *w_hh,
                 const floating *dy, const floating *dh_n, const int64_t *lengths,
                 idx T, idx B, idx I, idx H, int relu, idx chunk, int n_threads, int n_rows,
                 int n_cols, int slices, set_threads_fn set_threads) noexcept nogil:
    # dx (T,B,I), dh0 (B,H), dw_ih (H,I), dw_hh (H,H) out; db (H,) out or NULL.
    # dg (min(chunk, T),B,H) scratch: its own buffer, or elements of dx that lie below the top
    # chunk's rows of dx and past those that t_defer defers (the top chunk's dG is dead before
    # any lower chunk writes its dx): dx's first elements when w_pack is NULL (nothing is
    # deferred then), or after the packing (rnn_dg_offset in _capi.pxi).
    # w_pack (packed_size(H, H)) scratch = W_hh packed: its own buffer, or the first
    # packed_size(H, H) elements of dx if T*B*I is at least that; or NULL: the step GEMM reads
    # W_hh in place (rgemm; H must be a multiple of the panel width), for when dx cannot hold
    # the packing (batch 1: issue 6's memory target).
    # hs (T,B,H) in = saved h_t, destroyed (the workspace is consumed).
    # The time loop runs backwards in chunks of `chunk` steps. dW_hh = sum_t dG_t^T h_{t-1}
    # needs the saved states, so it is accumulated after each chunk (with dW_ih and db, while
    # the chunk's dG is in cache: as one product after the loop they missed OpenBLAS's
    # small-matrix kernels and took 1.10x the time of the small-shape training step). The
    # chunk's own h_t are then dead, and the next chunk down writes its dG there: dG_t goes to
    # hs[t + chunk], except for the top chunk [T - chunk, T), whose dG goes to dg. After the
    # loop dG of every step is still stored, so the rows of dx that hold the packed W_hh (the
    # caller may put it there) get their dx = dG W_ih after the loop. The scratch is one chunk
    # (~1/16 of the saved states) rather than a second copy of them (issue 6's memory target).
    # slices > 1: the forward ran in slice mode with that many slices (see "slice mode" above;
    # hs in its layout); n_rows, n_cols ignored. Each slice runs the chunks above on its own
    # block (its top chunk's dG in its rows of dg, which must lie in dx below the top chunk's
    # rows of dx and past the partials: rnn_slice_dg_offset; or anywhere else) and
    # accumulates its weight-gradient partials chunk by chunk (in dx, see slice_partials);
    # then the partials are added and dx is written: the top chunk's rows first.
    cdef idx BH = B * H, t, b0, b1, j0, j1, nj, nb, r, e, t_lo, t_hi, rows, top, rest
    cdef idx t_defer, t_dx, Bw, sb0
    cdef int s
    cdef floating *hsb
    cdef floating *dgb
    cdef floating *dh
    cdef const floating *dyb
    cdef const floating *h0b
    cdef const int64_t *lenb
    cdef floating *pw_ih
    cdef floating *pw_hh
    cdef floating *pb
    cdef floating *dg_c
    cdef floating *dg_t
    cdef int tid, nthr, nc, prev_local, prev_main
    cdef fc_barrier_t bar
    cdef bint act
    cdef fc_tasks_t tasks
    cdef int parts[4]
    cdef int op, part
    cdef long base
    cdef const floating *dy_t
    copy_or_zero(dh0, dh_n, BH)
    if T == 0:
        if I > 0:
            memset(dw_ih, 0, H * I * sizeof(floating))
        memset(dw_hh, 0, H * H * sizeof(floating))
        if db != NULL:
            memset(db, 0, H * sizeof(floating))
        return 0
    top = chunk if chunk < T else T          # steps of the top chunk, whose dG stays in dg
    rest = T - top                           # steps whose dG ends up in hs[chunk:]
    # w_pack may be dx's first elements (when dx is that large): the chunks whose rows of dx
    # overlap them (those below t_defer) leave their dx to after the loop. Decided by the
    # shape alone, wherever w_pack is, so that the bits do not depend on the caller's choice.
    t_defer = 0
    if I > 0 and B > 0 and pack_elems(H, H, dx) <= T * B * I:
        t_defer = (pack_elems(H, H, dx) + B * I - 1) // (B * I)
    # each chunk's reductions, as tasks (see next_task): dW_hh, dW_ih, dx, db
    # Two parts per thread where a chunk's dW_hh is under RNN_FINE_TASK_FLOPS: the threads'
    # time loops end at different moments (the vCPUs' speeds differ) and finer tasks even out
    # the wait at the chunk's second barrier (paired blocks, Zen 5 VM, 2026-12-02: small shape
    # training 0.95-0.97x the time, on one thread 0.97x; B,T,I,H = 32,64,32,32 0.975-0.98x;
    # charrnn, 34 MFLOP per chunk, took 1.01-1.03x with two parts, so it keeps one)
    parts[0] = n_threads * (2 if 2.0 * chunk * B * H * H < RNN_FINE_TASK_FLOPS else 1)
    parts[1] = parts[0] if I > 0 else 0
    parts[2] = parts[0] if I > 0 else 0
    parts[3] = n_threads if db != NULL else 0
    fc_tasks_init(&tasks)
    prev_main = set_blas_threads(set_threads, 1)
    fc_barrier_init(&bar, n_threads)
    with parallel(num_threads=n_threads):
        tid = threadid()
        nthr = omp_get_num_threads()
        # assigned here so that Cython makes them private to each thread (they are written
        # through pointers below, which Cython's privacy inference does not see)
        b0 = b1 = j0 = j1 = sb0 = 0
        act = False
        op = part = 0
        base = 0
        fc_barrier_set_n(&bar, nthr)
        nc = thread_block(tid, nthr, n_rows, n_cols, B, H, &b0, &b1, &j0, &j1)
        nj = j1 - j0
        nb = b1 - b0
        prev_local = set_blas_threads(set_threads, 1)
        if w_pack != NULL:
            pack_part(tid, nthr, H, H, w_hh, H, 1, w_pack)    # W_hh (H, H)
            fc_barrier_wait(&bar)
        if slices > 1:
            pw_ih = pw_hh = pb = NULL
            s = tid
            while s < slices:
                Bw = slice_rows(s, slices, B, &sb0)
                hsb = hs + T * sb0 * H
                dgb = dg + top * sb0 * H
                dyb = dy + sb0 * H if dy != NULL else NULL
                h0b = h0 + sb0 * H
                dh = dh0 + sb0 * H
                lenb = lengths + sb0 if lengths != NULL else NULL
                slice_partials(dx, slices, s, H, I, H, H, dw_ih, dw_hh, &pw_ih, &pw_hh, &pb)
                t_hi = T
                while t_hi > 0:
                    t_lo = t_hi - chunk if t_hi > chunk else 0
                    # dG_t of this chunk at dg_c + (t - t_lo) * Bw * H
                    dg_c = dgb if t_hi == T else hsb + (t_lo + chunk) * Bw * H
                    for t in range(t_hi - 1, t_lo - 1, -1):
                        dy_t = dyb + t * BH if dyb != NULL else NULL
                        dg_t = dg_c + (t - t_lo) * Bw * H
                        r = 0
                        while r < Bw:
                            e = run_end(lenb, t, r, Bw, &act)
                            if act:
                                pw_rnn_bwd(e - r, H, H, hsb + (t * Bw + r) * H, dg_t + r * H,
                                           dy_t + r * H if dy_t != NULL else NULL, dh + r * H,
                                           relu)
                            else:
                                zero_block(dg_t + r * H, e - r, H, H)
                            r = e
                        if w_pack != NULL:
                            pgemm(Bw, 0, H, H, dg_t, H, w_pack, H, dh, H, True)
                        else:
                            rgemm(Bw, 0, H, H, dg_t, H, w_hh, H, dh, H, True)
                    # the chunk's partials: dW_hh (+)= dG^T h_{t-1}, dW_ih (+)= dG^T X,
                    # db (+)= colsum dG
                    rows = (t_hi - t_lo) * Bw
                    if t_lo > 0:
                        tn_part(0, 1, H, H, rows, dg_c, H, hsb + (t_lo - 1) * Bw * H, H,
                                0 if t_hi == T else 1, pw_hh, H)
                    else:
                        tn_part(0, 1, H, H, Bw, dg_c, H, h0b, H, 0 if t_hi == T else 1,
                                pw_hh, H)
                        if t_hi > 1:
                            tn_part(0, 1, H, H, rows - Bw, dg_c + Bw * H, H, hsb, H, 1, pw_hh,
                                    H)
                    slice_tn_x(H, t_hi - t_lo, Bw, B * I, I, dg_c, H, x + t_lo * B * I + sb0 * I,
                               pw_ih, t_hi != T)
                    if db != NULL:
                        colsum(rows, H, H, dg_c, pb, t_hi != T)
                    t_hi = t_lo
                s = s + nthr
            fc_barrier_wait(&bar)          # every slice's partials are complete: add them
            add_weight_partials(tid, nthr, slices, H, I, H, dx, dw_ih, dw_hh)
            if db != NULL:
                add_slices(tid, nthr, H, db, dx + (slices - 1) * slice_w_elems(H, I, H),
                           slice_b_elems(H, H), slices, True)
            fc_barrier_wait(&bar)          # the partials are dead: dx, the top chunk's rows
            s = tid                        # first (dg lies below them)
            while s < slices:
                Bw = slice_rows(s, slices, B, &sb0)
                slice_dx(top, Bw, B * I, I, H, dg + top * sb0 * H, w_ih,
                         dx + rest * B * I + sb0 * I)
                s = s + nthr
            fc_barrier_wait(&bar)          # dg is dead: the other rows, from dG in hs[chunk:]
            s = tid
            while s < slices and rest > 0:
                Bw = slice_rows(s, slices, B, &sb0)
                slice_dx(rest, Bw, B * I, I, H, hs + T * sb0 * H + chunk * Bw * H, w_ih,
                         dx + sb0 * I)
                s = s + nthr
            t_hi = 0                       # the grid's loop below does nothing
        else:
            t_hi = T
        t_dx = T                             # dx[t_dx:] is written
        while t_hi > 0:
            t_lo = t_hi - chunk if t_hi > chunk else 0
            # dG_t of this chunk at dg_c + (t - t_lo) * BH
            dg_c = dg if t_hi == T else hs + (t_lo + chunk) * BH
            for t in range(t_hi - 1, t_lo - 1, -1):
                dy_t = dy + t * BH if dy != NULL else NULL
                dg_t = dg_c + (t - t_lo) * BH
                r = b0
                while r < b1 and nj > 0:
                    e = run_end(lengths, t, r, b1, &act)
                    if act:
                        pw_rnn_bwd(e - r, nj, H, hs + t * BH + r * H + j0, dg_t + r * H + j0,
                                   dy_t + r * H + j0 if dy_t != NULL else NULL,
                                   dh0 + r * H + j0, relu)
                    else:
                        zero_block(dg_t + r * H + j0, e - r, nj, H)
                    r = e
                if nc > 1:
                    fc_barrier_wait(&bar)
                if nb > 0 and nj > 0:
                    if w_pack != NULL:
                        pgemm(nb, j0, j1, H, dg_t + b0 * H, H, w_pack, H, dh0 + b0 * H, H, True)
                    else:
                        rgemm(nb, j0, j1, H, dg_t + b0 * H, H, w_hh, H, dh0 + b0 * H, H, True)
            fc_barrier_wait(&bar)          # the chunk's dG is written: its reductions, as tasks
            rows = (t_hi - t_lo) * B
            while next_task(&tasks, parts, 4, base, &op, &part):
                if op == 0:
                    # dW_hh (+)= dG_t^T h_{t-1}: h_{t-1} is hs[t_lo-1 .. t_hi-2], h0 for t = 0
                    if t_lo > 0:
                        tn_part(part, parts[0], H, H, rows, dg_c, H, hs + (t_lo - 1) * BH, H,
                                0 if t_hi == T else 1, dw_hh, H)
                    else:
                        tn_part(part, parts[0], H, H, B, dg_c, H, h0, H,
                                0 if t_hi == T else 1, dw_hh, H)
                        if t_hi > 1:
                            tn_part(part, parts[0], H, H, rows - B, dg_c + BH, H, hs, H, 1,
                                    dw_hh, H)
                # dW_ih (+)= dG^T x[chunk] ; dx[chunk] = dG W_ih unless the packed W_hh is
                # still in those rows of dx ; db (+)= colsum dG: while the chunk's dG is in cache
                elif op == 1:
                    tn_part(part, parts[1], H, I, rows, dg_c, H, x + t_lo * B * I, I,
                            0 if t_hi == T else 1, dw_ih, I)
                elif op == 2 and t_lo >= t_defer:
                    dx_part(part, parts[2], rows, I, H, dg_c, w_ih, dx + t_lo * B * I)
                elif op == 3:
                    colsum_part(part, parts[3], rows, H, H, dg_c, db, t_hi != T)
            base = task_base(base, parts, 4, nthr)
            if I > 0 and t_lo >= t_defer:
                t_dx = t_lo
            fc_barrier_wait(&bar)          # the chunk's h_t are dead: the next chunk's dG
            t_hi = t_lo
        # the deferred dx[0 : t_dx] = dG @ W_ih, from the two places dG is in: steps [0, rest)
        # in hs[chunk:], steps [rest, T) in dg
        if I > 0 and t_dx > 0 and slices <= 1:
            if rest > 0:
                dx_part(tid, nthr, (t_dx if t_dx < rest else rest) * B, I, H, hs + chunk * BH,
                        w_ih, dx)
            if t_dx > rest:
                dx_part(tid, nthr, (t_dx - rest) * B, I, H, dg, w_ih, dx + rest * B * I)
        restore_blas_threads(set_threads, prev_local)
    restore_blas_threads(set_threads, prev_main)
    return 0


# ================================================================= Python entry points
# Thin def wrappers: typed memoryviews (flattened C-contiguous arrays, validated by _api.py) ->
# raw pointers, then the whole kernel runs with the GIL released. Optional arrays are None.

# ------------------------------------------------------------------ entry points (for _api.py)
# The Python layer hands over ndarrays of any shape: each is checked here for its dtype and
# layout and passed on as a raw pointer. (Typed memoryviews of a fused type cost ~0.25 us per
# argument, 3.6-3.9 us for a backward's 14 arrays at B = 0, and every array had to be
# flattened with reshape(-1) first: ~10 us of a ~44 us training step at T = B = I = H = 1.)
# Sizes are the caller's contract, as for the C kernels.
cdef inline int kind_of(object a, str name) except -1:
    """cnp.NPY_FLOAT or cnp.NPY_DOUBLE: the element type of a call, from its first output."""
    cdef int k
    if cnp.PyArray_Check(a):
        k = cnp.PyArray_TYPE(<cnp.ndarray>a)
        if k == cnp.NPY_FLOAT or k == cnp.NPY_DOUBLE:
            return k
    raise TypeError(f"{name} must be a float32 or float64 ndarray")


cdef inline void *data(object a, int kind, bint write, str name) except? NULL:
    """The data of ``a``: None -> NULL; else a C-contiguous, aligned, native-byte-order ndarray
    of element type ``kind`` (and writeable if ``write``), NULL if it is empty."""
    cdef cnp.ndarray arr
    cdef int flags = cnp.NPY_ARRAY_C_CONTIGUOUS | cnp.NPY_ARRAY_ALIGNED
    if a is None:
        return NULL
    if write:
        flags |= cnp.NPY_ARRAY_WRITEABLE
    if not cnp.PyArray_Check(a):
        raise TypeError(f"{name} must be an ndarray or None, got {type(a).__name__}")
    arr = <cnp.ndarray>a
    if (cnp.PyArray_TYPE(arr) != kind or not cnp.PyArray_ISNOTSWAPPED(arr)
            or not cnp.PyArray_CHKFLAGS(arr, flags)):
        raise ValueError(f"{name} must be a C-contiguous, aligned{', writeable' if write else ''}"
                         f" {'float32' if kind == cnp.NPY_FLOAT else 'float64'} array in "
                         f"native byte order")
    return cnp.PyArray_DATA(arr) if cnp.PyArray_SIZE(arr) > 0 else NULL


cdef inline set_threads_fn as_fn(uintptr_t addr) noexcept nogil:
    return <set_threads_fn>addr


cdef tuple _spec(str names):
    """An entry point's arrays in order: ("y! h_n! x") -> (("y", "h_n", "x"), (1, 1, 0)), "!"
    marking those the kernel writes (they must be writeable); "lengths" is the int64 one."""
    cdef list n = names.split()
    return tuple(a.rstrip("!") for a in n), tuple(int(a.endswith("!")) for a in n)


cdef enum:
    MAX_ARRAYS = 32            # the most arrays an entry point passes (p[] of the entry points)


cdef int gather(void **p, tuple arrays, tuple spec, int kind) except -1:
    """p[i] = the data of arrays[i], checked by data() against the entry's spec."""
    cdef tuple names = spec[0], writes = spec[1]
    cdef Py_ssize_t i
    if len(arrays) != len(names) or len(names) > MAX_ARRAYS:
        raise AssertionError("entry point: arrays do not match their spec")
    for i in range(len(arrays)):
        p[i] = data(arrays[i], cnp.NPY_INT64 if names[i] == "lengths" else kind, writes[i],
                    names[i])
    return 0


cdef tuple _LSTM_FORWARD = _spec("y! h_n! c_n! gates! cs! hs! us! hbuf! x h0 c0 w_ih w_hh w_pack! "
                                 "w_ih_pack! bias w_hr_t lengths")
cdef tuple _LSTM_BACKWARD = _spec("dx! dh0! dc0! dw_ih! dw_hh! db! dw_hr! gates! cs hs us dhs! "
                                  "du! w_pack! x h0 c0 w_ih w_hh w_hr dy dh_n dc_n lengths")
cdef tuple _GRU_FORWARD = _spec("y! h_n! gates! hn_save! hs! gh! hbuf! x h0 w_ih w_hh w_pack! "
                                "w_ih_pack! b_ih b_hh lengths")
cdef tuple _GRU_BACKWARD = _spec("dx! dh0! dw_ih! dw_hh! db_ih! db_hh! gates! hn! dgh! w_pack! hs "
                                 "x h0 w_ih w_hh dy dh_n lengths")
cdef tuple _RNN_FORWARD = _spec("y! h_n! hs! hbuf! x h0 w_ih w_hh w_pack! w_ih_pack! bias lengths")
cdef tuple _RNN_BACKWARD = _spec("dx! dh0! dw_ih! dw_hh! db! dg! w_pack! hs! x h0 w_ih w_hh dy "
                                 "dh_n lengths")


# Each entry point gathers its arrays' pointers into p[] (in the order of the kernel's array
# parameters, as its spec above lists them) and calls one of these with a dummy of the element
# type, which picks the kernel.
cdef inline int lstm_fwd_p(floating kind, void **p, idx T, idx B, idx I, idx H, idx P,
                           int n_threads, int n_rows, int n_cols, int slices,
                           set_threads_fn set_threads) noexcept nogil:
    return lstm_fwd(<floating *>p[0], <floating *>p[1], <floating *>p[2], <floating *>p[3],
                    <floating *>p[4], <floating *>p[5], <floating *>p[6], <floating *>p[7],
                    <const floating *>p[8], <const floating *>p[9], <const floating *>p[10],
                    <const floating *>p[11], <const floating *>p[12], <floating *>p[13],
                    <floating *>p[14], <const floating *>p[15], <const floating *>p[16],
                    <const int64_t *>p[17], T, B, I, H, P, n_threads, n_rows, n_cols, slices,
                    set_threads)


cdef inline int lstm_bwd_p(floating kind, void **p, idx T, idx B, idx I, idx H, idx P,
                           int n_threads, int n_rows, int n_cols, int slices,
                           set_threads_fn set_threads) noexcept nogil:
    return lstm_bwd(<floating *>p[0], <floating *>p[1], <floating *>p[2], <floating *>p[3],
                    <floating *>p[4], <floating *>p[5], <floating *>p[6], <floating *>p[7],
                    <const floating *>p[8], <const floating *>p[9], <const floating *>p[10],
                    <floating *>p[11], <floating *>p[12], <floating *>p[13],
                    <const floating *>p[14], <const floating *>p[15], <const floating *>p[16],
                    <const floating *>p[17], <const floating *>p[18], <const floating *>p[19],
                    <const floating *>p[20], <const floating *>p[21], <const floating *>p[22],
                    <const int64_t *>p[23], T, B, I, H, P, n_threads, n_rows, n_cols, slices,
                    set_threads)


cdef inline int gru_fwd_p(floating kind, void **p, bint reset_after, idx T, idx B, idx I,
                          idx H, int n_threads, int n_rows, int n_cols, int slices,
                          set_threads_fn set_threads) noexcept nogil:
    return gru_fwd(<floating *>p[0], <floating *>p[1], <floating *>p[2], <floating *>p[3],
                   <floating *>p[4], <floating *>p[5], <floating *>p[6], <const floating *>p[7],
                   <const floating *>p[8], <const floating *>p[9], <const floating *>p[10],
                   <floating *>p[11], <floating *>p[12], <const floating *>p[13],
                   <const floating *>p[14], reset_after, <const int64_t *>p[15], T, B, I, H,
                   n_threads, n_rows, n_cols, slices, set_threads)


cdef inline int gru_bwd_p(floating kind, void **p, bint reset_after, idx T, idx B, idx I,
                          idx H, int n_threads, int n_rows, int n_cols, int slices,
                          set_threads_fn set_threads) noexcept nogil:
    return gru_bwd(<floating *>p[0], <floating *>p[1], <floating *>p[2], <floating *>p[3],
                   <floating *>p[4], <floating *>p[5], <floating *>p[6], <floating *>p[7],
                   <floating *>p[8], <floating *>p[9], <const floating *>p[10],
                   <const floating *>p[11], <const floating *>p[12], <const floating *>p[13],
                   <const floating *>p[14], reset_after, <const floating *>p[15],
                   <const floating *>p[16], <const int64_t *>p[17], T, B, I, H, n_threads,
                   n_rows, n_cols, slices, set_threads)


cdef inline int rnn_fwd_p(floating kind, void **p, bint relu, idx T, idx B, idx I, idx H,
                          int n_threads, int n_rows, int n_cols, int slices,
                          set_threads_fn set_threads) noexcept nogil:
    return rnn_fwd(<floating *>p[0], <floating *>p[1], <floating *>p[2], <floating *>p[3],
                   <const floating *>p[4], <const floating *>p[5], <const floating *>p[6],
                   <const floating *>p[7], <floating *>p[8], <floating *>p[9],
                   <const floating *>p[10], <const int64_t *>p[11], T, B, I, H, relu,
                   n_threads, n_rows, n_cols, slices, set_threads)


cdef inline int rnn_bwd_p(floating kind, void **p, bint relu, idx chunk, idx T, idx B, idx I,
                          idx H, int n_threads, int n_rows, int n_cols, int slices,
                          set_threads_fn set_threads) noexcept nogil:
    return rnn_bwd(<floating *>p[0], <floating *>p[1], <floating *>p[2], <floating *>p[3],
                   <floating *>p[4], <floating *>p[5], <floating *>p[6], <floating *>p[7],
                   <const floating *>p[8], <const floating *>p[9], <const floating *>p[10],
                   <const floating *>p[11], <const floating *>p[12], <const floating *>p[13],
                   <const int64_t *>p[14], T, B, I, H, relu, chunk, n_threads, n_rows, n_cols,
                   slices, set_threads)


def lstm_forward(y, h_n, c_n, gates, cs, hs, us, hbuf, x, h0, c0, w_ih, w_hh, w_pack,
                 w_ih_pack, bias, w_hr_t, lengths,
                 Py_ssize_t T, Py_ssize_t B, Py_ssize_t I, Py_ssize_t H, Py_ssize_t P,
                 int n_threads, int n_rows, int n_cols, int slices,
                 uintptr_t set_threads):
    """Shapes as in lstm_fwd above (C-contiguous arrays of any shape)."""
    cdef int status, k = kind_of(y, "y")
    cdef void *p[MAX_ARRAYS]
    if hs is None and w_ih_pack is None:
        raise ValueError("lstm_forward: w_ih_pack is required for inference")
    gather(p, (y, h_n, c_n, gates, cs, hs, us, hbuf, x, h0, c0, w_ih, w_hh, w_pack, w_ih_pack,
           bias, w_hr_t, lengths), _LSTM_FORWARD, k)
    with nogil:
        if k == cnp.NPY_FLOAT:
            status = lstm_fwd_p(<float>0, p, T, B, I, H, P, n_threads, n_rows, n_cols, slices,
                                as_fn(set_threads))
        else:
            status = lstm_fwd_p(<double>0, p, T, B, I, H, P, n_threads, n_rows, n_cols, slices,
                                as_fn(set_threads))
    return status


def lstm_backward(dx, dh0, dc0, dw_ih, dw_hh, db, dw_hr, gates, cs, hs, us, dhs, du, w_pack,
                  x, h0, c0, w_ih, w_hh, w_hr, dy, dh_n, dc_n, lengths,
                  Py_ssize_t T, Py_ssize_t B, Py_ssize_t I, Py_ssize_t H, Py_ssize_t P,
                  int n_threads, int n_rows, int n_cols, int slices,
                 uintptr_t set_threads):
    """Shapes as in lstm_bwd above (C-contiguous arrays of any shape)."""
    cdef int status, k = kind_of(dx, "dx")
    cdef void *p[MAX_ARRAYS]
    gather(p, (dx, dh0, dc0, dw_ih, dw_hh, db, dw_hr, gates, cs, hs, us, dhs, du, w_pack, x, h0,
           c0, w_ih, w_hh, w_hr, dy, dh_n, dc_n, lengths), _LSTM_BACKWARD, k)
    with nogil:
        if k == cnp.NPY_FLOAT:
            status = lstm_bwd_p(<float>0, p, T, B, I, H, P, n_threads, n_rows, n_cols, slices,
                                as_fn(set_threads))
        else:
            status = lstm_bwd_p(<double>0, p, T, B, I, H, P, n_threads, n_rows, n_cols, slices,
                                as_fn(set_threads))
    return status


def gru_forward(y, h_n, gates, hn_save, hs, gh, hbuf, x, h0, w_ih, w_hh, w_pack, w_ih_pack,
                b_ih, b_hh, bint reset_after, lengths,
                Py_ssize_t T, Py_ssize_t B, Py_ssize_t I, Py_ssize_t H,
                int n_threads, int n_rows, int n_cols, int slices,
                 uintptr_t set_threads):
    """Shapes as in gru_fwd above (C-contiguous arrays of any shape)."""
    cdef int status, k = kind_of(y, "y")
    cdef void *p[MAX_ARRAYS]
    if hs is None and w_ih_pack is None:
        raise ValueError("gru_forward: w_ih_pack is required for inference")
    gather(p, (y, h_n, gates, hn_save, hs, gh, hbuf, x, h0, w_ih, w_hh, w_pack, w_ih_pack, b_ih,
           b_hh, lengths), _GRU_FORWARD, k)
    with nogil:
        if k == cnp.NPY_FLOAT:
            status = gru_fwd_p(<float>0, p, reset_after, T, B, I, H, n_threads, n_rows,
                               n_cols, slices, as_fn(set_threads))
        else:
            status = gru_fwd_p(<double>0, p, reset_after, T, B, I, H, n_threads, n_rows,
                               n_cols, slices, as_fn(set_threads))
    return status


def gru_backward(dx, dh0, dw_ih, dw_hh, db_ih, db_hh, gates, hn, dgh, w_pack, hs, x, h0, w_ih,
                 w_hh, bint reset_after, dy, dh_n, lengths,
                 Py_ssize_t T, Py_ssize_t B, Py_ssize_t I, Py_ssize_t H,
                 int n_threads, int n_rows, int n_cols, int slices,
                 uintptr_t set_threads):
    """Shapes as in gru_bwd above (C-contiguous arrays of any shape)."""
    cdef int status, k = kind_of(dx, "dx")
    cdef void *p[MAX_ARRAYS]
    gather(p, (dx, dh0, dw_ih, dw_hh, db_ih, db_hh, gates, hn, dgh, w_pack, hs, x, h0, w_ih,
           w_hh, dy, dh_n, lengths), _GRU_BACKWARD, k)
    with nogil:
        if k == cnp.NPY_FLOAT:
            status = gru_bwd_p(<float>0, p, reset_after, T, B, I, H, n_threads, n_rows,
                               n_cols, slices, as_fn(set_threads))
        else:
            status = gru_bwd_p(<double>0, p, reset_after, T, B, I, H, n_threads, n_rows,
                               n_cols, slices, as_fn(set_threads))
    return status


def rnn_forward(y, h_n, hs, hbuf, x, h0, w_ih, w_hh, w_pack, w_ih_pack, bias, lengths,
                Py_ssize_t T, Py_ssize_t B, Py_ssize_t I, Py_ssize_t H, bint relu,
                int n_threads, int n_rows, int n_cols, int slices, uintptr_t set_threads):
    """Shapes as in rnn_fwd above (C-contiguous arrays of any shape)."""
    cdef int status, k = kind_of(y, "y")
    cdef void *p[MAX_ARRAYS]
    if hs is None and w_ih_pack is None:
        raise ValueError("rnn_forward: w_ih_pack is required for inference")
    gather(p, (y, h_n, hs, hbuf, x, h0, w_ih, w_hh, w_pack, w_ih_pack, bias, lengths),
           _RNN_FORWARD, k)
    with nogil:
        if k == cnp.NPY_FLOAT:
            status = rnn_fwd_p(<float>0, p, relu, T, B, I, H, n_threads, n_rows, n_cols,
                               slices, as_fn(set_threads))
        else:
            status = rnn_fwd_p(<double>0, p, relu, T, B, I, H, n_threads, n_rows, n_cols,
                               slices, as_fn(set_threads))
    return status


def rnn_backward(dx, dh0, dw_ih, dw_hh, db, dg, w_pack, hs, x, h0, w_ih, w_hh, dy, dh_n,
                 lengths, Py_ssize_t T, Py_ssize_t B, Py_ssize_t I, Py_ssize_t H, bint relu,
                 Py_ssize_t chunk, int n_threads, int n_rows, int n_cols, int slices,
                 uintptr_t set_threads):
    """Shapes as in rnn_bwd above (C-contiguous arrays of any shape)."""
    cdef int status, k = kind_of(dx, "dx")
    cdef void *p[MAX_ARRAYS]
    gather(p, (dx, dh0, dw_ih, dw_hh, db, dg, w_pack, hs, x, h0, w_ih, w_hh, dy, dh_n,
           lengths), _RNN_BACKWARD, k)
    if w_pack is None and H % (fc_packed_panel_width_f32() if k == cnp.NPY_FLOAT
                               else fc_packed_panel_width_f64()) != 0:
        raise ValueError("rnn_backward: without w_pack, H must be a multiple of the panel width")
    with nogil:
        if k == cnp.NPY_FLOAT:
            status = rnn_bwd_p(<float>0, p, relu, chunk, T, B, I, H, n_threads, n_rows, n_cols,
                               slices, as_fn(set_threads))
        else:
            status = rnn_bwd_p(<double>0, p, relu, chunk, T, B, I, H, n_threads, n_rows, n_cols,
                               slices, as_fn(set_threads))
    return status


# ------------------------------------------------------------------ helpers for the tests
cdef inline floating *ptr(floating[::1] a) noexcept nogil:
    return &a[0] if a is not None and a.shape[0] > 0 else NULL

cdef inline const floating *cptr(const floating[::1] a) noexcept nogil:
    return &a[0] if a is not None and a.shape[0] > 0 else NULL


def vsigmoid(const floating[::1] x, floating[::1] out):
    """out = sigmoid(x) elementwise with the kernels' own activation (for tests)."""
    if out.shape[0] != x.shape[0]:
        raise ValueError(f"out must have the length of x ({x.shape[0]}), got {out.shape[0]}")
    with nogil:
        if floating is float:
            fc_vsigmoid_f32(x.shape[0], cptr(x), ptr(out))
        else:
            fc_vsigmoid_f64(x.shape[0], cptr(x), ptr(out))


def vtanh(const floating[::1] x, floating[::1] out):
    """out = tanh(x) elementwise with the kernels' own activation (for tests)."""
    if out.shape[0] != x.shape[0]:
        raise ValueError(f"out must have the length of x ({x.shape[0]}), got {out.shape[0]}")
    with nogil:
        if floating is float:
            fc_vtanh_f32(x.shape[0], cptr(x), ptr(out))
        else:
            fc_vtanh_f64(x.shape[0], cptr(x), ptr(out))


def gemm_packed(const floating[:, ::1] A, const floating[:, ::1] Bm, floating[::1] Bp,
                floating[:, ::1] C, Py_ssize_t n0, Py_ssize_t n1, bint accumulate,
                Py_ssize_t k_off=0, bint transposed=False):
    """For tests: pack B = Bm (Kp, N) -- or, with ``transposed``, B = Bm.T for Bm (N, Kp), the
    forward's orientation -- into Bp (packed_size(Kp, N) elements), then
    C[:, n0:n1] (+)= A (M, K) @ B[k_off:k_off + K, n0:n1] with the per-step GEMM kernel."""
    cdef Py_ssize_t M = A.shape[0], K = A.shape[1], w
    cdef Py_ssize_t Kp = Bm.shape[1] if transposed else Bm.shape[0]
    cdef Py_ssize_t N = Bm.shape[0] if transposed else Bm.shape[1]
    if not (M > 0 and K > 0 and N > 0 and 0 <= n0 <= n1 <= N and C.shape[0] == M
            and C.shape[1] == N and 0 <= k_off and k_off + K <= Kp and Bp.shape[0] > 0):
        raise ValueError("gemm_packed: inconsistent shapes or ranges")
    w = pack_width(&Bp[0])
    if Bp.shape[0] != Kp * ((N + w - 1) // w) * w:
        raise ValueError("gemm_packed: Bp must have packed_size(Kp, N) elements")
    with nogil:
        if transposed:
            pack_part(0, 1, Kp, N, &Bm[0, 0], 1, Kp, &Bp[0])
        else:
            pack_part(0, 1, Kp, N, &Bm[0, 0], N, 1, &Bp[0])
        pgemm(M, n0, n1, K, &A[0, 0], K, &Bp[0] + k_off * pack_width(&Bp[0]), Kp, &C[0, 0], N,
              accumulate)


def gemm_rows(const floating[:, ::1] A, const floating[:, ::1] Bm, floating[:, ::1] C,
              Py_ssize_t n0, Py_ssize_t n1, bint accumulate):
    """C[:, n0:n1] (+)= A @ Bm[:, n0:n1] with Bm read in place (csrc/fc_gemm_impl.h
    fc_gemm_rows); A (M, K), Bm (K, N) with N a multiple of the panel width (for tests)."""
    cdef Py_ssize_t M = A.shape[0], K = A.shape[1], N = Bm.shape[1]
    if Bm.shape[0] != K or C.shape[0] != M or C.shape[1] != N or not 0 <= n0 <= n1 <= N:
        raise ValueError("gemm_rows: inconsistent shapes or ranges")
    if N % pack_width(&C[0, 0] if C.shape[0] > 0 and N > 0 else NULL) != 0:
        raise ValueError("gemm_rows: N must be a multiple of the panel width")
    if M == 0 or N == 0:
        return
    with nogil:
        if floating is float:
            fc_gemm_rows_f32(M, n0, n1, K, &A[0, 0] if K > 0 else NULL, K,
                             &Bm[0, 0] if K > 0 else NULL, N, &C[0, 0], N, accumulate)
        else:
            fc_gemm_rows_f64(M, n0, n1, K, &A[0, 0] if K > 0 else NULL, K,
                             &Bm[0, 0] if K > 0 else NULL, N, &C[0, 0], N, accumulate)


def gemm_tn(const floating[:, ::1] A, const floating[:, ::1] Bm, floating[:, ::1] C,
            bint accumulate, Py_ssize_t m0=0, Py_ssize_t m1=-1):
    """For tests and timing: C[m0:m1] (+)= A[:, m0:m1]^T @ Bm with the weight-gradient kernel
    (csrc/fc_gemm_impl.h fc_gemm_tn); A (K, M), Bm (K, N) with N a multiple of the panel
    width, C (M, N)."""
    cdef Py_ssize_t K = A.shape[0], M = A.shape[1], N = Bm.shape[1]
    if m1 < 0:
        m1 = M
    if not (Bm.shape[0] == K and C.shape[0] == M and C.shape[1] == N and 0 <= m0 <= m1 <= M
            and N % pack_width(&C[0, 0]) == 0 and K > 0 and M > 0 and N > 0):
        raise ValueError("gemm_tn: inconsistent shapes")
    with nogil:
        if floating is float:
            fc_gemm_tn_f32(m0, m1, N, K, &A[0, 0], M, &Bm[0, 0], N, &C[0, 0], N, accumulate)
        else:
            fc_gemm_tn_f64(m0, m1, N, K, &A[0, 0], M, &Bm[0, 0], N, &C[0, 0], N, accumulate)


def empty_aligned(shape, dtype, Py_ssize_t alignment):
    """np.empty(shape, dtype) whose data starts on an ``alignment``-byte boundary: a view of a
    slightly longer allocation (its base). For _api._empty64; in Python (np.empty, the address,
    a slice and a reshape) that cost ~1 us per array, ~4 per training step."""
    cdef cnp.npy_intp dims[32]
    cdef cnp.npy_intp n = 1, pad, off
    cdef int nd, i
    cdef cnp.dtype dt = <cnp.dtype?>dtype
    cdef cnp.ndarray raw, out
    cdef char *base
    if isinstance(shape, (tuple, list)):
        shape = tuple(shape)
        nd = len(<tuple>shape)
        if nd > 32:
            raise ValueError("too many dimensions")
        for i in range(nd):
            dims[i] = (<tuple>shape)[i]
    else:
        nd = 1
        dims[0] = shape
    for i in range(nd):
        if dims[i] < 0:
            raise ValueError(f"negative dimension in shape {shape}")
        if dims[i] > 0 and n > PY_SSIZE_T_MAX // dims[i]:
            raise MemoryError(f"array of shape {shape} is too big")
        n *= dims[i]
    pad = alignment // dt.itemsize
    if n > PY_SSIZE_T_MAX // dt.itemsize - pad:
        raise MemoryError(f"array of shape {shape} is too big")
    if not dt.isnative:
        raise ValueError(f"dtype {dt} is not in native byte order")
    n += pad
    raw = cnp.PyArray_EMPTY(1, &n, dt.type_num, 0)
    base = cnp.PyArray_BYTES(raw)
    off = (alignment - <uintptr_t>base % alignment) % alignment
    out = cnp.PyArray_SimpleNewFromData(nd, dims, dt.type_num, base + off)
    cnp.set_array_base(out, raw)
    return out


def misfit_array(dict arrays, tuple spec, dtype):
    """For _api's workspace check: the first key of ``spec`` ((key, shape), ...) whose entry in
    ``arrays`` is not a C-contiguous, aligned ndarray of ``dtype`` (native byte order) and that
    shape, or None if all are (~0.1 us per array; the same checks in Python took ~0.7)."""
    cdef cnp.ndarray arr
    cdef tuple item, shape
    cdef int d, nd
    cdef cnp.dtype dt = <cnp.dtype?>dtype
    for item in spec:
        a = arrays.get(item[0])
        shape = <tuple?>item[1]
        if not cnp.PyArray_Check(a):
            return item[0]
        arr = <cnp.ndarray>a
        nd = cnp.PyArray_NDIM(arr)
        if (nd != len(shape) or cnp.PyArray_TYPE(arr) != dt.type_num
                or not cnp.PyArray_ISNOTSWAPPED(arr)
                or not cnp.PyArray_CHKFLAGS(arr, cnp.NPY_ARRAY_C_CONTIGUOUS
                                            | cnp.NPY_ARRAY_ALIGNED)):
            return item[0]
        for d in range(nd):
            if cnp.PyArray_DIMS(arr)[d] != <cnp.npy_intp?>shape[d]:
                return item[0]
    return None


def packed_size(Py_ssize_t K, Py_ssize_t N, int itemsize):
    """Elements of the packed K x N weight buffer the kernels take (w_pack)."""
    return fc_packed_size_f32(K, N) if itemsize == 4 else fc_packed_size_f64(K, N)


def omp_max_threads():
    """omp_get_max_threads(): respects OMP_NUM_THREADS; 1 when built without OpenMP."""
    return openmp.omp_get_max_threads()


# ================================================================= C API (csrc/fastcells.h)
include "_capi.pxi"
