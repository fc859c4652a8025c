/* fc_cells_impl.h -- the fused pointwise ("postgemm") pass of each cell, forward and backward,
 * for one floating type. Template header: included once per type by fc_cells.c with FC_REAL,
 * FC_SFX and FC_IS_DOUBLE defined. Prototypes and the contract of every function: fc_cells.h.
 *
 * Every function works on a block of `rows` batch rows x `n` hidden units, so that threads can
 * split the batch (n = H) or the hidden units (n < H) of a step between them:
 *   H    distance between the gate blocks of one row (the full hidden size; gates side by side
 *        in PyTorch order, e.g. i | f | g | o);
 *   ldg  row stride of the gate matrices (G*H for a full row of a (B, G*H) matrix);
 *   ldh  row stride of the state matrices (c, h, dh, dc, dy, ...: H or the projection size).
 * Every pointer points at the block's first element (row 0, hidden unit j0 of gate 0); bias
 * pointers at element j0 of gate 0. Equation numbers refer to README "The math".
 */

/* LSTM forward, eq. (L1-L3). gates: in = x W_ih^T + h W_hh^T (no bias); out = i, f, g, o
 * activated (saved for backward). c_prev may alias c (updated in place). h: out = o*tanh(c)
 * (the cell output; with a projection this is u, and h = u W_hr^T is a GEMM after). */
FC_CLONES void FC_SFX(fc_lstm_fwd)(ptrdiff_t rows, ptrdiff_t n, ptrdiff_t H, ptrdiff_t ldg,
    ptrdiff_t ldh, FC_REAL *gates, const FC_REAL *bias, const FC_REAL *c_prev, FC_REAL *c,
    FC_REAL *h)
{
    /* the activations gate by gate (fc_act_rows: AVX-512 intrinsics where available), then the
     * cell update, then h = o * tanh(c) */
    FC_REAL *gi = gates, *gf = gi + H, *gg = gf + H, *go = gg + H;
    if (n == H) {                                    /* i and f side by side: one pass */
        FC_SFX(fc_act_rows)(FC_SIGMOID, rows, 2 * H, gi, ldg, bias, gi, ldg);
    } else {
        FC_SFX(fc_act_rows)(FC_SIGMOID, rows, n, gi, ldg, bias, gi, ldg);
        FC_SFX(fc_act_rows)(FC_SIGMOID, rows, n, gf, ldg, bias + H, gf, ldg);
    }
    FC_SFX(fc_act_rows)(FC_TANH, rows, n, gg, ldg, bias + 2 * H, gg, ldg);
    FC_SFX(fc_act_rows)(FC_SIGMOID, rows, n, go, ldg, bias + 3 * H, go, ldg);
    for (ptrdiff_t r = 0; r < rows; r++) {
        const FC_REAL *ir = gi + r * ldg, *fr = gf + r * ldg, *gr = gg + r * ldg;
        const FC_REAL *cp = c_prev + r * ldh;
        FC_REAL *cr = c + r * ldh;
#pragma omp simd
        for (ptrdiff_t j = 0; j < n; j++)
            cr[j] = fr[j] * cp[j] + ir[j] * gr[j];
    }
    FC_SFX(fc_act_rows)(FC_TANH, rows, n, c, ldh, NULL, h, ldh);
    for (ptrdiff_t r = 0; r < rows; r++) {
        const FC_REAL *orow = go + r * ldg;
        FC_REAL *hr = h + r * ldh;
#pragma omp simd
        for (ptrdiff_t j = 0; j < n; j++)
            hr[j] = orow[j] * hr[j];
    }
}

/* LSTM backward of one step. gates: in = saved i, f, g, o; out = d(pre-activations), the rows
 * of dG_t. c, c_prev: saved c_t, c_{t-1}. dy: dL/dy_t or NULL. dh: in = recurrent dL/dh_t
 * (from step t+1); out = 0, ready for the step GEMM dh += dG_t W_hh.
 * dc: in = dL/dc_t from step t+1; out = dL/dc_{t-1}. */
FC_CLONES void FC_SFX(fc_lstm_bwd)(ptrdiff_t rows, ptrdiff_t n, ptrdiff_t H, ptrdiff_t ldg,
    ptrdiff_t ldh, FC_REAL *gates, const FC_REAL *c, const FC_REAL *c_prev, const FC_REAL *dy,
    FC_REAL *dh, FC_REAL *dc)
{
    for (ptrdiff_t r = 0; r < rows; r++) {
        FC_REAL *gi = gates + r * ldg, *gf = gi + H, *gg = gf + H, *go = gg + H;
        const FC_REAL *cr = c + r * ldh, *cp = c_prev + r * ldh;
        FC_REAL *dhr = dh + r * ldh;
        const FC_REAL *dyr = dy ? dy + r * ldh : dh + r * ldh;
        const int has_dy = dy != NULL;                       /* dyr is then a dummy, never used */
        FC_REAL *dcr = dc + r * ldh;
        /* tanh(c) stays in this loop: a separate pass on fc_act_rows (a stack block of 256)
         * took 1.007-1.024x the training step's time (LSTM small, latency; paired) */
#pragma omp simd
        for (ptrdiff_t j = 0; j < n; j++) {
            FC_REAL i = gi[j], f = gf[j], g = gg[j], o = go[j];
            FC_REAL tc = FC_SFX(fc_tanh)(cr[j]);
            FC_REAL dht = dhr[j] + (has_dy ? dyr[j] : FC_C(0.0));
            FC_REAL dct = dcr[j] + dht * o * (FC_C1 - tc * tc);
            dhr[j] = 0;
            dcr[j] = dct * f;
            gi[j] = dct * g * i * (FC_C1 - i);
            gf[j] = dct * cp[j] * f * (FC_C1 - f);
            gg[j] = dct * i * (FC_C1 - g * g);
            go[j] = dht * tc * o * (FC_C1 - o);
        }
    }
}

/* GRU gates r and z (both GRU forms), eq. (G1, G2): gx columns r, z: in = x W_ih^T (no bias),
 * out = r, z activated; gh columns r, z = h W_h{r,z}^T (no bias). */
static inline __attribute__((always_inline)) void
FC_SFX(fc_gru_rz)(ptrdiff_t rows, ptrdiff_t n, ptrdiff_t H, ptrdiff_t ldg, FC_REAL *gx,
                  const FC_REAL *gh, const FC_REAL *b_ih, const FC_REAL *b_hh)
{
    for (ptrdiff_t r = 0; r < rows; r++) {
        FC_REAL *xr = gx + r * ldg, *xz = xr + H;
        const FC_REAL *hr_ = gh + r * ldg, *hz = hr_ + H;
#pragma omp simd
        for (ptrdiff_t j = 0; j < n; j++) {
            xr[j] = xr[j] + b_ih[j] + hr_[j] + b_hh[j];
            xz[j] = xz[j] + b_ih[H + j] + hz[j] + b_hh[H + j];
        }
    }
    if (n == H) {                                    /* r and z side by side: one pass */
        FC_SFX(fc_act_rows)(FC_SIGMOID, rows, 2 * H, gx, ldg, NULL, gx, ldg);
    } else {
        FC_SFX(fc_act_rows)(FC_SIGMOID, rows, n, gx, ldg, NULL, gx, ldg);
        FC_SFX(fc_act_rows)(FC_SIGMOID, rows, n, gx + H, ldg, NULL, gx + H, ldg);
    }
}

/* GRU forward (PyTorch, linear before reset), eq. (G1-G4). gx: in = x W_ih^T (no bias);
 * out = r, z, n activated (saved). gh: h W_hh^T (no bias). b_ih, b_hh: (3H,) each.
 * hn_save (rows, H) = h W_hn^T + b_hn, saved for backward, or NULL. h_prev may alias h. */
FC_CLONES void FC_SFX(fc_gru_fwd)(ptrdiff_t rows, ptrdiff_t n, ptrdiff_t H, ptrdiff_t ldg,
    ptrdiff_t ldh, FC_REAL *gx, const FC_REAL *gh, const FC_REAL *b_ih, const FC_REAL *b_hh,
    const FC_REAL *h_prev, FC_REAL *h, FC_REAL *hn_save)
{
    /* pre-activations of r and z, their sigmoids (fc_act_rows), n's pre-activation and tanh,
     * then h: pass by pass over the block (it is in L1) */
    FC_SFX(fc_gru_rz)(rows, n, H, ldg, gx, gh, b_ih, b_hh);
    for (ptrdiff_t r = 0; r < rows; r++) {
        const FC_REAL *xr = gx + r * ldg;
        FC_REAL *xn = gx + r * ldg + 2 * H;
        const FC_REAL *hn = gh + r * ldg + 2 * H;
        FC_REAL *hs = hn_save ? hn_save + r * ldh : NULL;
#pragma omp simd
        for (ptrdiff_t j = 0; j < n; j++) {
            FC_REAL hnb = hn[j] + b_hh[2 * H + j];
            xn[j] = xn[j] + b_ih[2 * H + j] + xr[j] * hnb;
            if (hs) hs[j] = hnb;
        }
    }
    FC_SFX(fc_act_rows)(FC_TANH, rows, n, gx + 2 * H, ldg, NULL, gx + 2 * H, ldg);
    for (ptrdiff_t r = 0; r < rows; r++) {
        const FC_REAL *xz = gx + r * ldg + H, *xn = xz + H;
        const FC_REAL *hp = h_prev + r * ldh;
        FC_REAL *ho = h + r * ldh;
#pragma omp simd
        for (ptrdiff_t j = 0; j < n; j++)
            ho[j] = (FC_C1 - xz[j]) * xn[j] + xz[j] * hp[j];
    }
}

/* GRU backward of one step. gates: in = saved r, z, n; out = d(x pre-activations) [dr, dz, dn].
 * hn: in = saved h W_hn^T + b_hn; out = d(h W_hn^T + b_hn) = dn * r. d(h W_hh^T) is then
 * [dr, dz] (in gates) | dn * r (in hn): the per-step GEMM reads it there. dh: in = recurrent
 * dL/dh_t; out = the direct part of dL/dh_{t-1}, z * dh_t (the GEMM adds to it). */
FC_CLONES void FC_SFX(fc_gru_bwd)(ptrdiff_t rows, ptrdiff_t n, ptrdiff_t H, ptrdiff_t ldg,
    ptrdiff_t ldh, FC_REAL *gates, FC_REAL *hn, const FC_REAL *h_prev, const FC_REAL *dy,
    FC_REAL *dh)
{
    for (ptrdiff_t r = 0; r < rows; r++) {
        FC_REAL *gr = gates + r * ldg, *gz = gr + H, *gn = gz + H;
        FC_REAL *hnr = hn + r * ldh, *dhr = dh + r * ldh;
        const FC_REAL *hp = h_prev + r * ldh;
        const FC_REAL *dyr = dy ? dy + r * ldh : dh + r * ldh;
        const int has_dy = dy != NULL;
#pragma omp simd
        for (ptrdiff_t j = 0; j < n; j++) {
            FC_REAL rg = gr[j], zg = gz[j], ng = gn[j];
            FC_REAL dht = dhr[j] + (has_dy ? dyr[j] : FC_C(0.0));
            FC_REAL dan = dht * (FC_C1 - zg) * (FC_C1 - ng * ng);
            FC_REAL dar = dan * hnr[j] * rg * (FC_C1 - rg);
            FC_REAL daz = dht * (hp[j] - ng) * zg * (FC_C1 - zg);
            FC_REAL dhn = dan * rg;
            gr[j] = dar; gz[j] = daz; gn[j] = dan;
            hnr[j] = dhn;
            dhr[j] = dht * zg;
        }
    }
}

/* Classic GRU (reset before the recurrent product; Keras reset_after=False, Cho et al. 2014),
 * eq. (G1, G2, G3', G4): n = tanh(x W_in^T + b_in + (r*h) W_hn^T + b_hn). Two GEMMs per step:
 * part a needs h W_h{r,z}^T, part b needs (r*h) W_hn^T.
 * Part a. gx: in = x W_ih^T (no bias) in columns r, z; out = r, z activated. gh: (rows, 3H), its
 * first 2H columns = h W_h{r,z}^T. rh: out = r * h_prev (the operand of the second GEMM). */
FC_CLONES void FC_SFX(fc_gru1_fwd_a)(ptrdiff_t rows, ptrdiff_t n, ptrdiff_t H, ptrdiff_t ldg,
    ptrdiff_t ldh, FC_REAL *gx, const FC_REAL *gh, const FC_REAL *b_ih, const FC_REAL *b_hh,
    const FC_REAL *h_prev, FC_REAL *rh)
{
    FC_SFX(fc_gru_rz)(rows, n, H, ldg, gx, gh, b_ih, b_hh);
    for (ptrdiff_t r = 0; r < rows; r++) {
        const FC_REAL *xr = gx + r * ldg, *hp = h_prev + r * ldh;
        FC_REAL *rhr = rh + r * ldh;
#pragma omp simd
        for (ptrdiff_t j = 0; j < n; j++)
            rhr[j] = xr[j] * hp[j];
    }
}

/* Part b. gx: column n in = x W_in^T; out = n activated. gh: column n (offset 2H) =
 * (r*h) W_hn^T. h: out = h_t (may alias h_prev). */
FC_CLONES void FC_SFX(fc_gru1_fwd_b)(ptrdiff_t rows, ptrdiff_t n, ptrdiff_t H, ptrdiff_t ldg,
    ptrdiff_t ldh, FC_REAL *gx, const FC_REAL *gh, const FC_REAL *b_ih, const FC_REAL *b_hh,
    const FC_REAL *h_prev, FC_REAL *h)
{
    for (ptrdiff_t r = 0; r < rows; r++) {
        FC_REAL *xn = gx + r * ldg + 2 * H;
        const FC_REAL *hn = gh + r * ldg + 2 * H;
#pragma omp simd
        for (ptrdiff_t j = 0; j < n; j++)
            xn[j] = xn[j] + b_ih[2 * H + j] + hn[j] + b_hh[2 * H + j];
    }
    FC_SFX(fc_act_rows)(FC_TANH, rows, n, gx + 2 * H, ldg, NULL, gx + 2 * H, ldg);
    for (ptrdiff_t r = 0; r < rows; r++) {
        const FC_REAL *xz = gx + r * ldg + H, *xn = xz + H, *hp = h_prev + r * ldh;
        FC_REAL *ho = h + r * ldh;
#pragma omp simd
        for (ptrdiff_t j = 0; j < n; j++)
            ho[j] = (FC_C1 - xz[j]) * xn[j] + xz[j] * hp[j];
    }
}

/* Classic GRU backward, part a (before the GEMM d(rh) = dn W_hn). gates: in = saved r, z, n;
 * out: columns z, n = dz, dn (pre-activation gradients). dh: in = recurrent dL/dh_t; out = the
 * direct part z * dh_t of dL/dh_{t-1}. */
FC_CLONES void FC_SFX(fc_gru1_bwd_a)(ptrdiff_t rows, ptrdiff_t n, ptrdiff_t H, ptrdiff_t ldg,
    ptrdiff_t ldh, FC_REAL *gates, const FC_REAL *h_prev, const FC_REAL *dy, FC_REAL *dh)
{
    for (ptrdiff_t r = 0; r < rows; r++) {
        FC_REAL *gz = gates + r * ldg + H, *gn = gz + H, *dhr = dh + r * ldh;
        const FC_REAL *hp = h_prev + r * ldh;
        const FC_REAL *dyr = dy ? dy + r * ldh : dh + r * ldh;
        const int has_dy = dy != NULL;
#pragma omp simd
        for (ptrdiff_t j = 0; j < n; j++) {
            FC_REAL zg = gz[j], ng = gn[j];
            FC_REAL dht = dhr[j] + (has_dy ? dyr[j] : FC_C(0.0));
            gn[j] = dht * (FC_C1 - zg) * (FC_C1 - ng * ng);
            gz[j] = dht * (hp[j] - ng) * zg * (FC_C1 - zg);
            dhr[j] = dht * zg;
        }
    }
}

/* Classic GRU backward, part b (after d(rh) = dn W_hn). gates: in column r = saved r; out = dr.
 * drh: d(r*h) (rows, H). dh: += r * d(rh) (the reset path into h_{t-1}). */
FC_CLONES void FC_SFX(fc_gru1_bwd_b)(ptrdiff_t rows, ptrdiff_t n, ptrdiff_t H, ptrdiff_t ldg,
    ptrdiff_t ldh, FC_REAL *gates, const FC_REAL *drh, const FC_REAL *h_prev, FC_REAL *dh)
{
    for (ptrdiff_t r = 0; r < rows; r++) {
        FC_REAL *gr = gates + r * ldg, *dhr = dh + r * ldh;
        const FC_REAL *d = drh + r * ldh, *hp = h_prev + r * ldh;
#pragma omp simd
        for (ptrdiff_t j = 0; j < n; j++) {
            FC_REAL rg = gr[j];
            gr[j] = d[j] * hp[j] * rg * (FC_C1 - rg);
            dhr[j] += d[j] * rg;
        }
    }
}

/* Elman RNN forward, eq. (R1). g: in = x W_ih^T + h W_hh^T; out = h_t (activated, in place).
 * relu != 0 selects relu, else tanh. */
FC_CLONES void FC_SFX(fc_rnn_fwd)(ptrdiff_t rows, ptrdiff_t n, ptrdiff_t H, ptrdiff_t ldg,
    ptrdiff_t ldh, FC_REAL *g, const FC_REAL *bias, int relu)
{
    for (ptrdiff_t r = 0; r < rows; r++) {
        FC_REAL *gr = g + r * ldh;
        if (relu) {
#pragma omp simd
            for (ptrdiff_t j = 0; j < n; j++) {
                FC_REAL v = gr[j] + bias[j];
                gr[j] = v > 0 ? v : (v != v ? v : FC_C(0.0));  /* NaN propagates, like torch */
            }
        } else {
            FC_SFX(fc_act_rows)(FC_TANH, 1, n, gr, 0, bias, gr, 0);
        }
    }
}

/* Elman RNN backward of one step. h: saved h_t. dg: out = d(pre-activation), rows of dG_t.
 * dy: dL/dy_t or NULL. dh: in = recurrent dL/dh_t; out = 0 (the step GEMM accumulates). */
FC_CLONES void FC_SFX(fc_rnn_bwd)(ptrdiff_t rows, ptrdiff_t n, ptrdiff_t H, ptrdiff_t ldg,
    ptrdiff_t ldh, const FC_REAL *h, FC_REAL *dg, const FC_REAL *dy, FC_REAL *dh, int relu)
{
    for (ptrdiff_t r = 0; r < rows; r++) {
        const FC_REAL *hr = h + r * ldh;
        FC_REAL *dhr = dh + r * ldh;
        const FC_REAL *dyr = dy ? dy + r * ldh : dh + r * ldh;
        const int has_dy = dy != NULL;
        FC_REAL *dgr = dg + r * ldh;
        if (relu) {
#pragma omp simd
            for (ptrdiff_t j = 0; j < n; j++)
                dgr[j] = hr[j] > 0 ? dhr[j] + (has_dy ? dyr[j] : FC_C(0.0)) : FC_C(0.0);
        } else {
#pragma omp simd
            for (ptrdiff_t j = 0; j < n; j++)
                dgr[j] = (dhr[j] + (has_dy ? dyr[j] : FC_C(0.0))) * (FC_C1 - hr[j] * hr[j]);
        }
        memset(dhr, 0, (size_t)n * sizeof(FC_REAL));
    }
}

/* Sum of the rows of a (rows, n) matrix into out (n,), added to out when accumulate != 0.
 * Used for the bias gradients (sum of dG over time and batch). */
FC_CLONES void FC_SFX(fc_colsum)(ptrdiff_t rows, ptrdiff_t n, ptrdiff_t ld, const FC_REAL *a,
    FC_REAL *out, int accumulate)
{
    if (!accumulate) memset(out, 0, (size_t)n * sizeof(FC_REAL));
    for (ptrdiff_t r = 0; r < rows; r++) {
        const FC_REAL *ar = a + r * ld;
#pragma omp simd
        for (ptrdiff_t j = 0; j < n; j++) out[j] += ar[j];
    }
}

/* Elementwise activations over a contiguous array, for tests and users of the C API. */
void FC_SFX(fc_vsigmoid)(ptrdiff_t n, const FC_REAL *x, FC_REAL *y)
{
    FC_SFX(fc_act_rows)(FC_SIGMOID, 1, n, x, 0, NULL, y, 0);
}

void FC_SFX(fc_vtanh)(ptrdiff_t n, const FC_REAL *x, FC_REAL *y)
{
    FC_SFX(fc_act_rows)(FC_TANH, 1, n, x, 0, NULL, y, 0);
}
