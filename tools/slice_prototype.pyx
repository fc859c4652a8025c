# Slice-mode prototypes (issue 6, 2026-12-07): NOT built with the package. To run them, append
# this file to src/fastcells/_kernels.pyx (they use its cdef helpers), rebuild
# (python setup.py build_ext --inplace) and run tools/slice_prototype.py.
#
# One training step (forward + backward) of an Elman RNN, LSTM (no projection) or GRU
# (reset_after, as PyTorch's), no lengths, float32, exactly 2 threads, in "slice" mode: each thread runs its half of the batch as a
# problem of its own -- its own packed weights, its rows' input projection, its time loop and
# saved states in a private page-aligned block, its own hoisted products (dW, db, dx rows) --
# and the two threads' weight gradients are added once at the end. No barrier but that one.
# Measured against the current kernels (Xeon guest, 2026-12-07; see README, "The small shape
# and 1.10x the floor"): Elman RNN 16,64,32,64 0.54-0.63x the time, 16,64,32,128 0.62-0.65x,
# 8,100,64,128 0.65x, but 32,100,128,256 1.69-1.84x (its hoisted products on one thread each);
# LSTM 16,64,32,64 0.69-0.73x; GRU 16,64,32,64 0.61-0.65x, 16,64,32,128 0.81-0.83x (measured
# with the CI job running beside it). Results match the float64 reference to ~1e-6 (relative).
# What a real implementation still needs: memory within 1.1x the minimal workspace (these
# keep private copies of x, of dG and of all packed weights per thread; shared packs are as
# fast: a private copy of the packed W_hh changed nothing), the blocked layout in the
# Workspace (blocks back to back need no padding: the same array shapes), lengths, the classic
# GRU, float64, any thread count, and a rule for when it pays (small H, B >= 2 per thread).
# The three share their scratch, carving and reduction helpers; each keeps its own cell's steps.

from libc.stdlib cimport malloc, free
cdef char *XSM[2]
XSM[0] = NULL
XSM[1] = NULL

cdef inline float *slice_scratch(int tid) noexcept nogil:
    """This thread's private scratch (256 MB, kept across calls), from a 4 KB boundary."""
    if XSM[tid] == NULL:
        XSM[tid] = <char*>malloc(256 << 20)
    return <float*>(((<uintptr_t>XSM[tid]) + 4095) & ~(<uintptr_t>4095))


cdef inline float *after(float *p, idx n) noexcept nogil:
    """The next 4 KB-aligned block after n floats at p (p 4 KB-aligned)."""
    return p + (n + 1023) // 1024 * 1024


cdef inline void add_partials(float *dw_ih, idx n_ih, float *dw_hh, idx n_hh, float *db,
                              idx n_b, float **part) noexcept nogil:
    """The second thread's weight gradients (part[0..2]) into the outputs."""
    cdef idx j
    for j in range(n_ih):
        dw_ih[j] += part[0][j]
    for j in range(n_hh):
        dw_hh[j] += part[1][j]
    for j in range(n_b):
        db[j] += part[2][j]


def slice_rnn_step(float[::1] y, float[::1] h_n, float[::1] dx, float[::1] dh0, float[::1] dw_ih,
                   float[::1] dw_hh, float[::1] db, const float[::1] x, const float[::1] h0,
                   const float[::1] w_ih, const float[::1] w_hh, const float[::1] bias,
                   const float[::1] dy, Py_ssize_t T, Py_ssize_t B, Py_ssize_t I, Py_ssize_t H):
    cdef int tid
    cdef idx b0, b1, nb, t, BH = B * H, npk_hh, npk_ih, npk_wi
    cdef float *base
    cdef float *wv
    cdef float *wiv
    cdef float *wb
    cdef float *wib
    cdef float *hk
    cdef float *dgk
    cdef float *xk
    cdef float *dh
    cdef float *pw_ih
    cdef float *pw_hh
    cdef float *pdb
    cdef float *P1[3]
    cdef fc_barrier_t bar
    npk_hh = pack_elems(H, H, &y[0])
    npk_ih = pack_elems(I, H, &y[0])
    npk_wi = pack_elems(H, I, &y[0])
    fc_barrier_init(&bar, 2)
    with nogil, parallel(num_threads=2):
        tid = threadid()
        b0 = slice_start(B, 2, tid)
        b1 = slice_start(B, 2, tid + 1)
        nb = b1 - b0
        base = slice_scratch(tid)
        wv = base
        wiv = after(wv, npk_hh)
        wb = after(wiv, npk_ih)
        wib = after(wb, npk_hh)
        hk = after(wib, npk_wi)
        dgk = after(hk, T * nb * H)
        xk = after(dgk, T * nb * H)
        dh = after(xk, T * nb * I)
        pw_ih = after(dh, nb * H)
        pw_hh = after(pw_ih, H * I)
        pdb = after(pw_hh, H * H)
        if tid == 0:
            pw_ih = &dw_ih[0]
            pw_hh = &dw_hh[0]
            pdb = &db[0]
        else:
            P1[0] = pw_ih
            P1[1] = pw_hh
            P1[2] = pdb
        # ---- forward
        pack_part(0, 1, H, H, &w_hh[0], 1, H, wv)
        pack_part(0, 1, I, H, &w_ih[0], 1, I, wiv)
        for t in range(T):
            memcpy(xk + t * nb * I, &x[0] + (t * B + b0) * I, nb * I * sizeof(float))
        pgemm(T * nb, 0, H, I, xk, I, wiv, I, hk, H, False)
        for t in range(T):
            pgemm(nb, 0, H, H, (hk + (t - 1) * nb * H) if t > 0 else &h0[0] + b0 * H, H, wv, H, hk + t * nb * H, H, True)
            pw_rnn_fwd(nb, H, H, hk + t * nb * H, &bias[0], 0)
        for t in range(T):
            memcpy(&y[0] + t * BH + b0 * H, hk + t * nb * H, nb * H * sizeof(float))
        memcpy(&h_n[0] + b0 * H, hk + (T - 1) * nb * H, nb * H * sizeof(float))
        # ---- backward
        pack_part(0, 1, H, H, &w_hh[0], H, 1, wb)
        pack_part(0, 1, H, I, &w_ih[0], I, 1, wib)
        memset(dh, 0, nb * H * sizeof(float))
        for t in range(T - 1, -1, -1):
            pw_rnn_bwd(nb, H, H, hk + t * nb * H, dgk + t * nb * H, &dy[0] + (t * B + b0) * H, dh, 0)
            pgemm(nb, 0, H, H, dgk + t * nb * H, H, wb, H, dh, H, True)
        memcpy(&dh0[0] + b0 * H, dh, nb * H * sizeof(float))
        tn_part(0, 1, H, H, nb, dgk, H, &h0[0] + b0 * H, H, 0, pw_hh, H)
        tn_part(0, 1, H, H, (T - 1) * nb, dgk + nb * H, H, hk, H, 1, pw_hh, H)
        tn_part(0, 1, H, I, T * nb, dgk, H, xk, I, 0, pw_ih, I)
        colsum(T * nb, H, H, dgk, pdb, 0)
        for t in range(T):
            pgemm(nb, 0, I, H, dgk + t * nb * H, H, wib, H, &dx[0] + (t * B + b0) * I, I, False)
        fc_barrier_wait(&bar)
        if tid == 0:
            add_partials(&dw_ih[0], H * I, &dw_hh[0], H * H, &db[0], H, P1)


def slice_lstm_step(float[::1] y, float[::1] h_n, float[::1] c_n, float[::1] dx, float[::1] dh0,
                    float[::1] dc0, float[::1] dw_ih, float[::1] dw_hh, float[::1] db,
                    const float[::1] x, const float[::1] h0, const float[::1] c0,
                    const float[::1] w_ih, const float[::1] w_hh, const float[::1] bias,
                    const float[::1] dy, Py_ssize_t T, Py_ssize_t B, Py_ssize_t I, Py_ssize_t H):
    cdef int tid
    cdef idx b0, b1, nb, t, BH = B * H, G = 4 * H, n1, n2, n3
    cdef float *base
    cdef float *wv
    cdef float *wiv
    cdef float *wb
    cdef float *wib
    cdef float *hk
    cdef float *ck
    cdef float *gk
    cdef float *xk
    cdef float *dh
    cdef float *dc
    cdef float *pw_ih
    cdef float *pw_hh
    cdef float *pdb
    cdef float *P1[3]
    cdef fc_barrier_t bar
    n1 = pack_elems(H, G, &y[0])
    n2 = pack_elems(I, G, &y[0])
    n3 = pack_elems(G, I, &y[0])
    fc_barrier_init(&bar, 2)
    with nogil, parallel(num_threads=2):
        tid = threadid()
        b0 = slice_start(B, 2, tid)
        b1 = slice_start(B, 2, tid + 1)
        nb = b1 - b0
        base = slice_scratch(tid)
        wv = base
        wiv = after(wv, n1)
        wb = after(wiv, n2)
        wib = after(wb, n1)
        hk = after(wib, n3)
        ck = after(hk, T * nb * H)
        gk = after(ck, T * nb * H)
        xk = after(gk, T * nb * G)
        dh = after(xk, T * nb * I)
        dc = after(dh, nb * H)
        pw_ih = after(dc, nb * H)
        pw_hh = after(pw_ih, G * I)
        pdb = after(pw_hh, G * H)
        if tid == 0:
            pw_ih = &dw_ih[0]
            pw_hh = &dw_hh[0]
            pdb = &db[0]
        else:
            P1[0] = pw_ih
            P1[1] = pw_hh
            P1[2] = pdb
        # ---- forward
        pack_part(0, 1, H, G, &w_hh[0], 1, H, wv)
        pack_part(0, 1, I, G, &w_ih[0], 1, I, wiv)
        for t in range(T):
            memcpy(xk + t * nb * I, &x[0] + (t * B + b0) * I, nb * I * sizeof(float))
        pgemm(T * nb, 0, G, I, xk, I, wiv, I, gk, G, False)
        for t in range(T):
            pgemm(nb, 0, G, H, (hk + (t - 1) * nb * H) if t > 0 else &h0[0] + b0 * H, H, wv, H,
                  gk + t * nb * G, G, True)
            pw_lstm_fwd(nb, H, H, G, H, gk + t * nb * G, &bias[0],
                        (ck + (t - 1) * nb * H) if t > 0 else &c0[0] + b0 * H,
                        ck + t * nb * H, hk + t * nb * H)
        for t in range(T):
            memcpy(&y[0] + t * BH + b0 * H, hk + t * nb * H, nb * H * sizeof(float))
        memcpy(&h_n[0] + b0 * H, hk + (T - 1) * nb * H, nb * H * sizeof(float))
        memcpy(&c_n[0] + b0 * H, ck + (T - 1) * nb * H, nb * H * sizeof(float))
        # ---- backward
        pack_part(0, 1, G, H, &w_hh[0], H, 1, wb)
        pack_part(0, 1, G, I, &w_ih[0], I, 1, wib)
        memset(dh, 0, nb * H * sizeof(float))
        memset(dc, 0, nb * H * sizeof(float))
        for t in range(T - 1, -1, -1):
            pw_lstm_bwd(nb, H, H, G, H, gk + t * nb * G, ck + t * nb * H,
                        (ck + (t - 1) * nb * H) if t > 0 else &c0[0] + b0 * H,
                        &dy[0] + (t * B + b0) * H, dh, dc)
            pgemm(nb, 0, H, G, gk + t * nb * G, G, wb, G, dh, H, True)
        memcpy(&dh0[0] + b0 * H, dh, nb * H * sizeof(float))
        memcpy(&dc0[0] + b0 * H, dc, nb * H * sizeof(float))
        tn_part(0, 1, G, H, nb, gk, G, &h0[0] + b0 * H, H, 0, pw_hh, H)
        tn_part(0, 1, G, H, (T - 1) * nb, gk + nb * G, G, hk, H, 1, pw_hh, H)
        tn_part(0, 1, G, I, T * nb, gk, G, xk, I, 0, pw_ih, I)
        colsum(T * nb, G, G, gk, pdb, 0)
        for t in range(T):
            pgemm(nb, 0, I, G, gk + t * nb * G, G, wib, G, &dx[0] + (t * B + b0) * I, I, False)
        fc_barrier_wait(&bar)
        if tid == 0:
            add_partials(&dw_ih[0], G * I, &dw_hh[0], G * H, &db[0], G, P1)


def slice_gru_step(float[::1] y, float[::1] h_n, float[::1] dx, float[::1] dh0,
                   float[::1] dw_ih, float[::1] dw_hh, float[::1] db_ih, float[::1] db_hh,
                   const float[::1] x, const float[::1] h0, const float[::1] w_ih,
                   const float[::1] w_hh, const float[::1] b_ih, const float[::1] b_hh,
                   const float[::1] dy, Py_ssize_t T, Py_ssize_t B, Py_ssize_t I, Py_ssize_t H):
    cdef int tid
    cdef idx b0, b1, nb, t, BH = B * H, G = 3 * H, n1, n2, n3
    cdef float *base
    cdef float *wv
    cdef float *wiv
    cdef float *wb
    cdef float *wib
    cdef float *hk
    cdef float *hnk
    cdef float *gk
    cdef float *ghk
    cdef float *xk
    cdef float *dh
    cdef float *pw_ih
    cdef float *pw_hh
    cdef float *pdb
    cdef float *P1[3]
    cdef fc_barrier_t bar
    n1 = pack_elems(H, G, &y[0])
    n2 = pack_elems(I, G, &y[0])
    n3 = pack_elems(G, I, &y[0])
    fc_barrier_init(&bar, 2)
    with nogil, parallel(num_threads=2):
        tid = threadid()
        b0 = slice_start(B, 2, tid)
        b1 = slice_start(B, 2, tid + 1)
        nb = b1 - b0
        base = slice_scratch(tid)
        wv = base
        wiv = after(wv, n1)
        wb = after(wiv, n2)
        wib = after(wb, n1)
        hk = after(wib, n3)
        hnk = after(hk, T * nb * H)
        gk = after(hnk, T * nb * H)
        ghk = after(gk, T * nb * G)
        xk = after(ghk, nb * G)
        dh = after(xk, T * nb * I)
        pw_ih = after(dh, nb * H)
        pw_hh = after(pw_ih, G * I)
        pdb = after(pw_hh, G * H)
        if tid == 0:
            pw_ih = &dw_ih[0]
            pw_hh = &dw_hh[0]
            pdb = &db_ih[0]
        else:
            P1[0] = pw_ih
            P1[1] = pw_hh
            P1[2] = pdb
        # ---- forward (reset_after, PyTorch's GRU)
        pack_part(0, 1, H, G, &w_hh[0], 1, H, wv)
        pack_part(0, 1, I, G, &w_ih[0], 1, I, wiv)
        for t in range(T):
            memcpy(xk + t * nb * I, &x[0] + (t * B + b0) * I, nb * I * sizeof(float))
        pgemm(T * nb, 0, G, I, xk, I, wiv, I, gk, G, False)
        for t in range(T):
            pgemm(nb, 0, G, H, (hk + (t - 1) * nb * H) if t > 0 else &h0[0] + b0 * H, H, wv, H,
                  ghk, G, False)
            pw_gru_fwd(nb, H, H, G, H, gk + t * nb * G, ghk, &b_ih[0], &b_hh[0],
                       (hk + (t - 1) * nb * H) if t > 0 else &h0[0] + b0 * H,
                       hk + t * nb * H, hnk + t * nb * H)
        for t in range(T):
            memcpy(&y[0] + t * BH + b0 * H, hk + t * nb * H, nb * H * sizeof(float))
        memcpy(&h_n[0] + b0 * H, hk + (T - 1) * nb * H, nb * H * sizeof(float))
        # ---- backward
        pack_part(0, 1, G, H, &w_hh[0], H, 1, wb)
        pack_part(0, 1, G, I, &w_ih[0], I, 1, wib)
        memset(dh, 0, nb * H * sizeof(float))
        for t in range(T - 1, -1, -1):
            pw_gru_bwd(nb, H, H, G, H, gk + t * nb * G, hnk + t * nb * H,
                       (hk + (t - 1) * nb * H) if t > 0 else &h0[0] + b0 * H,
                       &dy[0] + (t * B + b0) * H, dh)
            pgemm(nb, 0, H, 2 * H, gk + t * nb * G, G, wb, G, dh, H, True)
            pgemm(nb, 0, H, H, hnk + t * nb * H, H, wb + 2 * H * pack_width(wb), G, dh, H, True)
        memcpy(&dh0[0] + b0 * H, dh, nb * H * sizeof(float))
        tn_states(0, 1, 2 * H, H, T, nb, gk, G, &h0[0] + b0 * H, hk, pw_hh)
        tn_states(0, 1, H, H, T, nb, hnk, H, &h0[0] + b0 * H, hk, pw_hh + 2 * H * H)
        tn_part(0, 1, G, I, T * nb, gk, G, xk, I, 0, pw_ih, I)
        colsum(T * nb, G, G, gk, pdb, 0)
        colsum(T * nb, H, H, hnk, pdb + G, 0)
        for t in range(T):
            pgemm(nb, 0, I, G, gk + t * nb * G, G, wib, G, &dx[0] + (t * B + b0) * I, I, False)
        fc_barrier_wait(&bar)
        if tid == 0:
            add_partials(&dw_ih[0], G * I, &dw_hh[0], G * H, &db_ih[0], G + H, P1)
