# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""The GEMM floor: the matrix products an RNN step needs, and nothing else, through the same
BLAS and orientation as the kernels, called from C with no Python between calls.

For a training step of a cell with G gates (x (T,B,I), hidden H) the products are
  forward  : X (TB,I) @ W_ih^T -> (TB,GH);  T x  h (B,H) @ W_hh^T -> (B,GH)
  backward : T x  dG (B,GH) @ W_hh -> (B,H);  dX = dG (TB,GH) @ W_ih;
             dW_ih = dG^T (GH,TB) @ X;  dW_hh = dG^T (GH,TB) @ H_prev (TB,H)
Inference is the forward half. Two schedules are timed and the faster one is the floor:
  whole-batch: every GEMM over the full batch with BLAS using n_threads;
  split (the kernels' schedule): hoisted GEMMs with their rows split over n_threads OpenMP
  threads and per-step GEMMs on batch slices, BLAS single-threaded in every thread.
Operands hold small random values; results are discarded (BLAS speed is data-independent).
"""
from cython cimport floating
from cython.parallel cimport parallel, threadid
from libc.stdint cimport uintptr_t
from fastcells._blas cimport gemm, par_gemm, set_threads_fn


cdef inline int _set(set_threads_fn fn, int n) noexcept nogil:
    return fn(n) if fn != NULL else 0


cdef void _hoisted(bint split, int n_threads, set_threads_fn set_threads, bint trans_a,
                   bint trans_b, Py_ssize_t M, Py_ssize_t N, Py_ssize_t K,
                   const floating *A, Py_ssize_t lda, const floating *Bm, Py_ssize_t ldb,
                   floating *C, Py_ssize_t ldc) noexcept nogil:
    if not split:
        _set(set_threads, n_threads)
        gemm(trans_a, trans_b, <int>M, <int>N, <int>K, <floating>1, A, <int>lda, Bm, <int>ldb,
             <floating>0, C, <int>ldc)
    else:
        par_gemm(n_threads, set_threads, trans_a, trans_b, M, N, K, A, lda, Bm, ldb,
                 <floating>0, C, ldc)


cdef void _sequence(floating *X, floating *W_ih, floating *W_hh, floating *W_hh_t,
                    floating *G_buf, floating *Hs, floating *dX, floating *dW_ih,
                    floating *dW_hh, floating *dH,
                    Py_ssize_t T, Py_ssize_t B, Py_ssize_t I, Py_ssize_t H, Py_ssize_t G,
                    bint training, int n_threads, int n_par,
                    set_threads_fn set_threads) noexcept nogil:
    # X (T,B,I), W_ih (GH,I), W_hh (GH,H), W_hh_t (H,GH), G_buf (T,B,GH), Hs (T,B,H),
    # dX (T,B,I), dW_ih (GH,I), dW_hh (GH,H), dH (B,H)
    cdef Py_ssize_t GH = G * H, t, b0, nb
    cdef int tid, prev, main_prev
    cdef bint split = n_par > 1
    main_prev = _set(set_threads, n_threads)
    _hoisted(split, n_threads, set_threads, False, True, T * B, GH, I, X, I, W_ih, I, G_buf, GH)
    with parallel(num_threads=n_par):
        tid = threadid()
        b0 = (B * tid) // n_par
        nb = (B * (tid + 1)) // n_par - b0
        prev = _set(set_threads, 1 if split else n_threads)
        for t in range(T):
            gemm(False, False, <int>nb, <int>GH, <int>H, <floating>1,
                 Hs + ((t - 1 if t > 0 else 0) * B + b0) * H, <int>H, W_hh_t, <int>GH,
                 <floating>1, G_buf + (t * B + b0) * GH, <int>GH)
        if training:
            for t in range(T - 1, -1, -1):
                gemm(False, False, <int>nb, <int>H, <int>GH, <floating>1,
                     G_buf + (t * B + b0) * GH, <int>GH, W_hh, <int>H, <floating>0,
                     dH + b0 * H, <int>H)
        if prev > 0:
            _set(set_threads, prev)
    if training:
        _hoisted(split, n_threads, set_threads, False, False, T * B, I, GH, G_buf, GH, W_ih, I,
                 dX, I)
        _hoisted(split, n_threads, set_threads, True, False, GH, I, T * B, G_buf, GH, X, I,
                 dW_ih, I)
        _hoisted(split, n_threads, set_threads, True, False, GH, H, T * B, G_buf, GH, Hs, H,
                 dW_hh, H)
    if main_prev > 0:
        _set(set_threads, main_prev)


def run_sequence(floating[::1] X, floating[::1] W_ih, floating[::1] W_hh, floating[::1] W_hh_t,
                 floating[::1] G_buf, floating[::1] Hs, floating[::1] dX, floating[::1] dW_ih,
                 floating[::1] dW_hh, floating[::1] dH,
                 Py_ssize_t T, Py_ssize_t B, Py_ssize_t I, Py_ssize_t H, Py_ssize_t G,
                 bint training, int n_threads, int n_par, uintptr_t set_threads):
    """Run the GEMM sequence once (GIL released). n_par = 1: whole-batch schedule, with
    threaded BLAS; n_par > 1: the split schedule (n_par batch slices, BLAS single-threaded)."""
    with nogil:
        _sequence(&X[0], &W_ih[0], &W_hh[0], &W_hh_t[0], &G_buf[0], &Hs[0], &dX[0], &dW_ih[0],
                  &dW_hh[0], &dH[0], T, B, I, H, G, training, n_threads, n_par,
                  <set_threads_fn>set_threads)


def run_gemm(floating[::1] A, floating[::1] Bm, floating[::1] C, int n, int reps,
             int n_threads, uintptr_t set_threads):
    """reps square n x n GEMMs (the practical FLOP peak), GIL released."""
    cdef int r, prev
    with nogil:
        prev = _set(<set_threads_fn>set_threads, n_threads)
        for r in range(reps):
            gemm(False, False, n, n, n, <floating>1, &A[0], n, &Bm[0], n, <floating>0, &C[0], n)
        if prev > 0:
            _set(<set_threads_fn>set_threads, prev)
