/* fc_ukr_impl.h -- the micro-kernels of fc_gemm_impl.h for one vector width.
 *
 * Included by fc_gemm_impl.h once per width, with
 *   FC_VB    bytes of a vector: 64 (the AVX-512 variants), 32 (AVX2), 16 (baseline SSE2)
 *   FC_W(n)  the name n for this width and type (n##_z / _y / _x, then _f32 / _f64)
 *   FC_NV    vectors per row of a register tile: the tile is MR rows x FC_NV vectors, and a
 *            panel row (FC_NR columns, 128 bytes) is FC_NR / (FC_NV * lanes) tiles side by side
 *   FC_U1    k-interleaved accumulator sets of the one-row kernel (FMA latency cover)
 * Why one width per ISA: GCC lowers generic vectors wider than the target's registers through
 * the stack. The 64-byte vectors of the AVX-512 kernels, compiled for AVX2, ran the packed GEMM
 * at ~1.5 GFLOP/s per core on an AVX2-only EPYC (2026-12-01: the LSTM small training step took
 * 50 ms against a 3.3 ms GEMM floor).
 */
typedef FC_REAL FC_W(fc_vec) __attribute__((vector_size(FC_VB)));
/* Loops over a tile's rows and vectors, unrolled: with 32-byte vectors GCC kept the MR x FC_NV
 * accumulators in memory otherwise (13 against 48-76 GFLOP/s, one EPYC core). Not for the
 * AVX-512 width, whose code was tuned and measured without it (and cannot be re-measured on
 * an AVX2 machine). */
#undef FC_UNROLL
#if FC_VB == 64
#define FC_UNROLL
#else
#define FC_UNROLL _Pragma("GCC unroll 16")
#endif

/* C (mr x FC_NV vectors, row stride ldc) (+)= A (mr x kc) @ B (kc x FC_NV vectors): A[r][k] at A[r*ars + k*acs]
 * (the packed GEMM: ars = lda, acs = 1; the weight gradient A^T B: ars = 1, acs = lda), B's row
 * k at bp + k*bs (a panel slice: bs = FC_NR; rows in place: their stride). The strides are
 * constants where it is inlined into the packed GEMM, so its loop is as if written for them.
 * Meanwhile it prefetches into L2 from pf (NULL: nothing): with pf_shift < 0 the whole kc x FC_NR
 * slice at pf (two 64-byte lines per k), else one line per 2^pf_shift k (ceil(kc / 2^pf_shift)
 * consecutive lines). Each variant is its own loop: a test inside the k loop cost 6-16% when the
 * panel is in L1/L2. */
static inline __attribute__((always_inline)) void
FC_W(fc_ukr)(const int MR, int mr, ptrdiff_t kc, const FC_REAL *A, ptrdiff_t ars,
             ptrdiff_t acs, const FC_REAL *bp, ptrdiff_t bs, FC_REAL *C, ptrdiff_t ldc,
             int accumulate, const FC_REAL *pf, int pf_shift)
{
    typedef FC_W(fc_vec) vec;
    const int V = (int)(sizeof(vec) / sizeof(FC_REAL));
    vec c[8][FC_NV];
    FC_UNROLL for (int r = 0; r < MR; r++)
        FC_UNROLL for (int q = 0; q < FC_NV; q++) {
            if (r < mr && accumulate)
                __builtin_memcpy(&c[r][q], C + r * ldc + q * V, sizeof(vec));
            else
                c[r][q] = (vec){0};
        }
#define FC_UKR_STEP(k)                                                                          \
    do {                                                                                        \
        vec b[FC_NV];                                                                           \
        FC_UNROLL for (int q = 0; q < FC_NV; q++)                                               \
            __builtin_memcpy(&b[q], bp + (k) * bs + q * V, sizeof(vec));                        \
        FC_UNROLL for (int r = 0; r < MR; r++) {                                                \
            if (r < mr) {                                                                       \
                FC_REAL a = A[r * ars + (k) * acs];                                             \
                FC_UNROLL for (int q = 0; q < FC_NV; q++)                                       \
                    c[r][q] += a * b[q];                                                        \
            }                                                                                   \
        }                                                                                       \
    } while (0)
    const char *pfc = (const char *)pf;     /* a panel row is 128 bytes: 2 lines of 64 */
    if (pf == NULL) {
        for (ptrdiff_t k = 0; k < kc; k++)
            FC_UKR_STEP(k);
    } else if (pf_shift < 0) {
        for (ptrdiff_t k = 0; k < kc; k++) {
            __builtin_prefetch(pfc + k * 128, 0, 2);
            __builtin_prefetch(pfc + k * 128 + 64, 0, 2);
            FC_UKR_STEP(k);
        }
    } else if (pf_shift == 0) {
        for (ptrdiff_t k = 0; k < kc; k++) {
            __builtin_prefetch(pfc + k * 64, 0, 2);
            FC_UKR_STEP(k);
        }
    } else {
        const ptrdiff_t s = (ptrdiff_t)1 << pf_shift;
        for (ptrdiff_t k0 = 0; k0 < kc; k0 += s) {
            ptrdiff_t k1 = k0 + s < kc ? k0 + s : kc;
            __builtin_prefetch(pfc + (k0 >> pf_shift) * 64, 0, 2);
            for (ptrdiff_t k = k0; k < k1; k++)
                FC_UKR_STEP(k);
        }
    }
#undef FC_UKR_STEP
    FC_UNROLL for (int r = 0; r < MR; r++)
        FC_UNROLL for (int q = 0; q < FC_NV; q++)
            if (r < mr)
                __builtin_memcpy(C + r * ldc + q * V, &c[r][q], sizeof(vec));
}

/* fc_ukr over a whole panel row (FC_NR columns): its tiles side by side, the prefetch (same
 * arguments as fc_ukr) issued by the first. */
static inline __attribute__((always_inline)) void
FC_W(fc_ukrp)(const int MR, int mr, ptrdiff_t kc, const FC_REAL *A, ptrdiff_t ars,
              ptrdiff_t acs, const FC_REAL *bp, ptrdiff_t bs, FC_REAL *C, ptrdiff_t ldc,
              int accumulate, const FC_REAL *pf, int pf_shift)
{
    const int W = FC_NV * (int)(FC_VB / sizeof(FC_REAL));
    FC_W(fc_ukr)(MR, mr, kc, A, ars, acs, bp, bs, C, ldc, accumulate, pf, pf_shift);
    for (int q = W; q < FC_NR; q += W)
        FC_W(fc_ukr)(MR, mr, kc, A, ars, acs, bp + q, bs, C + q, ldc, accumulate, NULL, 0);
}

/* One row (M = 1, batch-1 inference and latency): a chain of FMAs into one accumulator set
 * would wait on FMA latency, so FC_U1 k-interleaved sets (a panel row each) are summed at the
 * end, pairwise. B's row k at bp + k*bs, as in fc_ukr. */
static inline __attribute__((always_inline)) void
FC_W(fc_ukr1)(ptrdiff_t kc, const FC_REAL *A, const FC_REAL *bp, ptrdiff_t bs, FC_REAL *C,
              int accumulate)
{
    typedef FC_W(fc_vec) vec;
    enum { V = (int)(FC_VB / sizeof(FC_REAL)), NQ = FC_NR / V };   /* vectors per panel row */
    vec c[FC_U1][NQ], b[NQ];
    FC_UNROLL for (int u = 0; u < FC_U1; u++)
        FC_UNROLL for (int q = 0; q < NQ; q++)
            c[u][q] = (vec){0};
    ptrdiff_t k = 0;
    for (; k + FC_U1 <= kc; k += FC_U1) {
        FC_UNROLL for (int u = 0; u < FC_U1; u++) {
            FC_UNROLL for (int q = 0; q < NQ; q++)
                __builtin_memcpy(&b[q], bp + (k + u) * bs + q * V, sizeof(vec));
            FC_UNROLL for (int q = 0; q < NQ; q++)
                c[u][q] += A[k + u] * b[q];
        }
    }
    for (; k < kc; k++) {
        FC_UNROLL for (int q = 0; q < NQ; q++)
            __builtin_memcpy(&b[q], bp + k * bs + q * V, sizeof(vec));
        FC_UNROLL for (int q = 0; q < NQ; q++)
            c[0][q] += A[k] * b[q];
    }
    FC_UNROLL for (int q = 0; q < NQ; q++) {
#if FC_U1 == 4
        c[0][q] = (c[0][q] + c[1][q]) + (c[2][q] + c[3][q]);
#elif FC_U1 == 2
        c[0][q] = c[0][q] + c[1][q];
#elif FC_U1 != 1
#error "FC_U1 must be 1, 2 or 4"
#endif
        if (accumulate) {
            __builtin_memcpy(&b[q], C + q * V, sizeof(vec));
            c[0][q] += b[q];
        }
        __builtin_memcpy(C + q * V, &c[0][q], sizeof(vec));
    }
}

#if FC_VB == 64
/* fc_ukr1 on two adjacent panels at once (bp and bp + FC_NR), with B read in place: each
 * panel's sums in the same order as fc_ukr1, so the same bits. One panel at a time, the two
 * loads per row k of a power-of-two row stride ran at 0.94x (H = 128), 0.86x (256) and 0.66x
 * (512) of the packed walk's speed (M = 1, B in L2, one thread); four loads per row, 1.04x,
 * 0.99x, 0.85x. */
static inline __attribute__((always_inline)) void
FC_W(fc_ukr1x2)(ptrdiff_t kc, const FC_REAL *A, const FC_REAL *bp, ptrdiff_t bs, FC_REAL *C,
                  int accumulate)
{
    typedef FC_W(fc_vec) vec;
    const int V = (int)(sizeof(vec) / sizeof(FC_REAL));
    vec c[4][4] = {{{0}}}, b[4];
    ptrdiff_t k = 0;
    for (; k + 4 <= kc; k += 4) {
        for (int u = 0; u < 4; u++) {
            for (int q = 0; q < 4; q++)
                __builtin_memcpy(&b[q], bp + (k + u) * bs + q * V, sizeof(vec));
            for (int q = 0; q < 4; q++)
                c[q][u] += A[k + u] * b[q];
        }
    }
    for (; k < kc; k++) {
        for (int q = 0; q < 4; q++)
            __builtin_memcpy(&b[q], bp + k * bs + q * V, sizeof(vec));
        for (int q = 0; q < 4; q++)
            c[q][0] += A[k] * b[q];
    }
    for (int q = 0; q < 4; q++) {
        c[q][0] = (c[q][0] + c[q][1]) + (c[q][2] + c[q][3]);
        if (accumulate) {
            __builtin_memcpy(&b[q], C + q * V, sizeof(vec));
            c[q][0] += b[q];
        }
        __builtin_memcpy(C + q * V, &c[q][0], sizeof(vec));
    }
}

/* fc_ukr1x2 for B rows that start s elements (0 < s < V) past a 64-byte boundary, all of them
 * (the row stride a multiple of 64 bytes): a 64-byte load there always splits two cache lines,
 * and the in-place walk ran 1.10-1.24x the packed walk's time (16-byte offset, H = 128, 256).
 * Instead, five aligned loads per row cover columns [-s, 5V - s) of the two panels, their
 * products are summed lane by lane exactly as fc_ukr1x2 sums them, and the lanes are shifted
 * back by s at the end: the same bits. The window of the matrix's first row would start before
 * the matrix and the last row's end after it: with `first` (`last`) set, local row 0 (kc - 1)
 * is that row, and its outer vector is assembled from the row's own elements instead (the
 * lanes outside the matrix are zero and do not reach C). */
static inline __attribute__((always_inline)) void
FC_W(fc_ukr1x2s)(ptrdiff_t kc, const FC_REAL *A, const FC_REAL *bp, ptrdiff_t bs, int s,
                   FC_REAL *C, int accumulate, int first, int last)
{
    typedef FC_W(fc_vec) vec;
    const int V = (int)(sizeof(vec) / sizeof(FC_REAL));
    FC_REAL out[5 * (64 / sizeof(FC_REAL))] __attribute__((aligned(64)));
    vec c[5][4] = {{{0}}}, b[5];
    const FC_REAL *w = bp - s;               /* the aligned window of local row 0 */
    /* the outer vectors of the first and last rows, assembled (lanes outside the matrix 0):
     * row 0's lanes s..V-1 are its first V - s elements, row kc-1's lanes 0..s-1 its last s */
    FC_REAL t0[64 / sizeof(FC_REAL)] __attribute__((aligned(64))) = {0};
    FC_REAL t4[64 / sizeof(FC_REAL)] __attribute__((aligned(64))) = {0};
    if (first)
        __builtin_memcpy(t0 + s, bp, (size_t)(V - s) * sizeof(FC_REAL));
    if (last)
        __builtin_memcpy(t4, bp + (kc - 1) * bs + 4 * V - s, (size_t)s * sizeof(FC_REAL));
#define FC_UKR1X2S_ROW(k, u, edge)                                                              \
    do {                                                                                        \
        const FC_REAL *r0 = w + (k) * bs, *r4 = w + (k) * bs + 4 * V;                           \
        if (edge) {                                                                             \
            r0 = (k) == 0 && first ? t0 : r0;                                                   \
            r4 = (k) == kc - 1 && last ? t4 : r4;                                               \
        }                                                                                       \
        __builtin_memcpy(&b[0], r0, sizeof(vec));                                               \
        for (int q = 1; q < 4; q++)                                                             \
            __builtin_memcpy(&b[q], w + (k) * bs + q * V, sizeof(vec));                         \
        __builtin_memcpy(&b[4], r4, sizeof(vec));                                               \
        for (int q = 0; q < 5; q++)                                                             \
            c[q][u] += A[k] * b[q];                                                             \
    } while (0)
    ptrdiff_t k = 0;
    for (; k + 4 <= kc; k += 4) {
        if ((first && k == 0) || (last && k + 4 == kc)) {
            for (int u = 0; u < 4; u++)
                FC_UKR1X2S_ROW(k + u, u, 1);
        } else {
            for (int u = 0; u < 4; u++)
                FC_UKR1X2S_ROW(k + u, u, 0);
        }
    }
    for (; k < kc; k++)
        FC_UKR1X2S_ROW(k, 0, 1);
#undef FC_UKR1X2S_ROW
    for (int q = 0; q < 5; q++) {
        c[q][0] = (c[q][0] + c[q][1]) + (c[q][2] + c[q][3]);
        __builtin_memcpy(out + q * V, &c[q][0], sizeof(vec));
    }
    for (int j = 0; j < 4 * V; j++)
        C[j] = accumulate ? out[s + j] + C[j] : out[s + j];
}


#else
/* Narrower vectors: a row of two panels would need more registers than there are, so the two
 * panels run one after the other (fc_ukr1's order, so the same bits as the packed walk), on
 * unaligned loads whatever B's alignment (s is unused). */
static inline __attribute__((always_inline)) void
FC_W(fc_ukr1x2)(ptrdiff_t kc, const FC_REAL *A, const FC_REAL *bp, ptrdiff_t bs, FC_REAL *C,
                int accumulate)
{
    FC_W(fc_ukr1)(kc, A, bp, bs, C, accumulate);
    FC_W(fc_ukr1)(kc, A, bp + FC_NR, bs, C + FC_NR, accumulate);
}

static inline __attribute__((always_inline)) void
FC_W(fc_ukr1x2s)(ptrdiff_t kc, const FC_REAL *A, const FC_REAL *bp, ptrdiff_t bs, int s,
                 FC_REAL *C, int accumulate, int first, int last)
{
    (void)s, (void)first, (void)last;
    FC_W(fc_ukr1x2)(kc, A, bp, bs, C, accumulate);
}
#endif

/* Rows [0, M) x one panel's columns [c0, c1) (c0, c1 relative to the panel; a partial panel
 * goes through a tile so that nothing outside [c0, c1) of C is read or written). The panel's
 * row k is at bp + k*bs: bs = FC_NR in the packed layout, the matrix's row stride when B is
 * read in place (fc_gemm_rows). A's rows are at stride lda, or with lda = 0 (M > 1 only) A is
 * packed by fc_pack_a: row tile t at A + t*MR*kc, its MR values of one k side by side.
 *
 * While the row tiles run on this panel slice, they prefetch the next one (`next`, or NULL) into
 * L2, so that slice is not waited for when the weights live in L3 (large H: 88% of LSTM
 * inference in this kernel, its hottest instructions the panel loads). The prefetches are spread
 * over the first n row tiles (n = nt for nt = 2, 3 tiles, else nt / 2): 2s of them (s = the
 * largest power of two with 2s <= n) each fetch 1/(2s) of the slice's 2 kc lines, one line per
 * s k-steps. Issuing the whole slice from the first tile (two lines per k, as before) ran out of
 * line-fill buffers; spreading it over all tiles left the last lines too little lead time when
 * L3 was contended. Measured on the 2-core Xeon, single thread (W in L3): 32 x 4096 x 1024
 * 134 -> 153 GFLOP/s, 32 x 2048 x 512 145 -> 166; cache-resident shapes unchanged. Two threads,
 * LSTM-inference-like steps (paired, 4 x 30 calls): batch 64 medium 0.92-0.98x the time, large
 * 0.86-0.97x, batch 32 at H = 512 0.90x. */
static inline __attribute__((always_inline)) void
FC_W(fc_panel)(const int MR, ptrdiff_t M, ptrdiff_t kc, const FC_REAL *A, ptrdiff_t lda,
                 const FC_REAL *bp, ptrdiff_t bs, FC_REAL *C, ptrdiff_t ldc, int accumulate,
                 int c0, int c1, const FC_REAL *next)
{
    FC_REAL tile[8 * (128 / sizeof(FC_REAL))] __attribute__((aligned(64)));
    if (M == 1) {
        FC_REAL *dst = C;
        if (c0 != 0 || c1 != FC_NR) {
            for (int j = c0; j < c1; j++)
                tile[j] = accumulate ? C[j - c0] : 0;
            dst = tile;
        }
        FC_W(fc_ukr1)(kc, A, bp, bs, dst, accumulate);
        if (dst == tile)
            for (int j = c0; j < c1; j++)
                C[j - c0] = tile[j];
        return;
    }
    ptrdiff_t n = (M + MR - 1) / MR, pf_tiles = 1, pf_lines = 0;  /* n: row tiles, then */
    int pf_shift = -1;                       /* those that prefetch; one: the whole slice */
    if (n >= 4)
        n /= 2;                              /* prefetch during the first half of the tiles */
    if (n >= 2) {
        pf_shift = 0;
        while ((ptrdiff_t)4 << pf_shift <= n)
            pf_shift++;
        pf_tiles = (ptrdiff_t)2 << pf_shift;
        pf_lines = (kc + ((ptrdiff_t)1 << pf_shift) - 1) >> pf_shift;   /* per tile */
    }
    for (ptrdiff_t m = 0; m < M; m += MR) {
        int mr = M - m < MR ? (int)(M - m) : MR;
        const FC_REAL *a = lda == 0 ? A + m * kc : A + m * lda;   /* packed: fc_pack_a's tile */
        FC_REAL *c = C + m * ldc;
        ptrdiff_t ti = m / MR;
        const FC_REAL *pf = next != NULL && ti < pf_tiles
            ? (const FC_REAL *)((const char *)next + ti * pf_lines * 64) : NULL;
        if (c0 == 0 && c1 == FC_NR) {        /* each with constant strides of A */
            if (mr == MR && lda == 0)
                FC_W(fc_ukrp)(MR, MR, kc, a, 1, MR, bp, bs, c, ldc, accumulate, pf, pf_shift);
            else if (mr == MR)
                FC_W(fc_ukrp)(MR, MR, kc, a, lda, 1, bp, bs, c, ldc, accumulate, pf, pf_shift);
            else if (lda == 0)
                FC_W(fc_ukrp)(MR, mr, kc, a, 1, MR, bp, bs, c, ldc, accumulate, pf, pf_shift);
            else
                FC_W(fc_ukrp)(MR, mr, kc, a, lda, 1, bp, bs, c, ldc, accumulate, pf, pf_shift);
        } else {
            for (int r = 0; r < mr; r++)
                for (int j = c0; j < c1; j++)
                    tile[r * FC_NR + j] = accumulate ? c[r * ldc + j - c0] : 0;
            FC_W(fc_ukrp)(MR, mr, kc, a, lda == 0 ? 1 : lda, lda == 0 ? MR : 1, bp, bs, tile,
                          FC_NR, accumulate, pf, pf_shift);
            for (int r = 0; r < mr; r++)
                for (int j = c0; j < c1; j++)
                    c[r * ldc + j - c0] = tile[r * FC_NR + j];
        }
    }
}
