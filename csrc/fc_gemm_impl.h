/* fc_gemm_impl.h -- the recurrent GEMM on pre-packed weights, for one element type.
 *
 * Included by fc_cells.c with FC_REAL (float/double) and FC_SFX(name) (name_f32/name_f64).
 *
 * Why: every timestep multiplies the small state h_{t-1} (B x K) by the same weight matrix
 * (K x N, e.g. W_hh^T). A BLAS GEMM call re-packs that weight on every call -- for B = 64,
 * K = 512, N = 2048 the packing alone moved 8 MB per step and took ~16% of an LSTM training step
 * (perf, OpenBLAS sgemm_itcopy). Here the weight is packed ONCE per kernel call into column
 * panels, and each step runs a register-blocked micro-kernel straight on the panels: measured
 * single-threaded on this machine's AVX-512 (OpenBLAS 0.3.30 SkylakeX sgemm incl. its packing
 * vs this), 64x2048x512: 1707 vs 1247 us; 32x1024x256: 245 vs 157 us; 64x4096x1024: 7404 vs
 * 5858 us; 16x256x64 and 1x512x128: equal. BLAS keeps the large hoisted GEMMs.
 *
 * Packed layout: N is cut into panels of FC_NR columns (two 64-byte vectors); panel p holds
 * rows k = 0..K-1 of columns p*FC_NR .. p*FC_NR + FC_NR - 1, zero-padded past N:
 *     Bp[(p*K + k)*FC_NR + j] = B[k][p*FC_NR + j]
 * The micro-kernel keeps MR rows x FC_NR columns of C in registers (MR = 8 with AVX-512: 16 zmm
 * accumulators, enough to cover the FMA latency of two FMA ports, and the per-thread batch slices
 * 8, 16, 32 have no remainder tile; 3 with AVX2; 2 otherwise), broadcasting A and streaming
 * one panel row per k.
 */

#define FC_NR (128 / (int)sizeof(FC_REAL))    /* panel width: two 64-byte vectors */
#define FC_KC 512                             /* k-block: a 64 KB panel slice, L2-resident */

typedef FC_REAL FC_SFX(fc_vec) __attribute__((vector_size(64)));

/* panels [p0, p1) of B (K x N, B[k][n] = src[k*rs + n*cs]) into Bp (see above).
 * Rows of B contiguous in src (cs == 1, e.g. W_hh for the backward): row segments are copied.
 * Otherwise (e.g. W_hh^T for the forward, cs = row length of W_hh): blocks of FC_PACK_KB rows,
 * so that each source column segment is one or two cache lines and the destination block
 * (FC_PACK_KB x FC_NR) stays in L1. Column by column over all K rows, the backward's pack read
 * one element per cache line at a 4 KB stride (H = 1024): 3.7% of an LSTM large training step
 * in perf. */
#define FC_PACK_KB 16

#if defined(__x86_64__) && defined(__GNUC__) && !defined(FC_NO_CLONES)
/* A full FC_PACK_KB x FC_NR block from columns of B whose k run is contiguous (rs == 1): the
 * column segments s_j = src + j * cs (FC_PACK_KB elements each) become the rows of d (row
 * stride FC_NR), as V x V register transposes (V = lanes of a 64-byte vector). Each transpose
 * swaps the off-diagonal b x b blocks for b = V/2, ..., 1 (two 2-source shuffles per pair of
 * rows and stage). Element by element, the transposing copy was half of a batch-1 T = 1 LSTM
 * inference call (H = 128) and ~1.4 cycles per element. */
__attribute__((target("arch=x86-64-v4"))) static void
FC_SFX(fc_pack_block_v4)(const FC_REAL *src, ptrdiff_t cs, FC_REAL *d)
{
    typedef FC_SFX(fc_vec) vec;
    enum { V = (int)(sizeof(vec) / sizeof(FC_REAL)) };
    vec r[V], lo, hi;
    for (int nb = 0; nb < FC_NR; nb += V) {
        for (int kb = 0; kb < FC_PACK_KB; kb += V) {
            for (int j = 0; j < V; j++)
                __builtin_memcpy(&r[j], src + (nb + j) * cs + kb, sizeof(vec));
#define FC_L(...) __VA_ARGS__
#define FC_TSTAGE(b, L, H_)                                                                     \
            for (int i = 0; i < V; i++)                                                         \
                if (!(i & (b))) {                                                               \
                    lo = __builtin_shufflevector(r[i], r[i + (b)], L);                          \
                    hi = __builtin_shufflevector(r[i], r[i + (b)], H_);                         \
                    r[i] = lo;                                                                  \
                    r[i + (b)] = hi;                                                            \
                }
#if FC_IS_DOUBLE
            FC_TSTAGE(4, FC_L(0, 1, 2, 3, 8, 9, 10, 11), FC_L(4, 5, 6, 7, 12, 13, 14, 15))
            FC_TSTAGE(2, FC_L(0, 1, 8, 9, 4, 5, 12, 13), FC_L(2, 3, 10, 11, 6, 7, 14, 15))
            FC_TSTAGE(1, FC_L(0, 8, 2, 10, 4, 12, 6, 14), FC_L(1, 9, 3, 11, 5, 13, 7, 15))
#else
            FC_TSTAGE(8, FC_L(0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23),
                      FC_L(8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31))
            FC_TSTAGE(4, FC_L(0, 1, 2, 3, 16, 17, 18, 19, 8, 9, 10, 11, 24, 25, 26, 27),
                      FC_L(4, 5, 6, 7, 20, 21, 22, 23, 12, 13, 14, 15, 28, 29, 30, 31))
            FC_TSTAGE(2, FC_L(0, 1, 16, 17, 4, 5, 20, 21, 8, 9, 24, 25, 12, 13, 28, 29),
                      FC_L(2, 3, 18, 19, 6, 7, 22, 23, 10, 11, 26, 27, 14, 15, 30, 31))
            FC_TSTAGE(1, FC_L(0, 16, 2, 18, 4, 20, 6, 22, 8, 24, 10, 26, 12, 28, 14, 30),
                      FC_L(1, 17, 3, 19, 5, 21, 7, 23, 9, 25, 11, 27, 13, 29, 15, 31))
#endif
#undef FC_TSTAGE
#undef FC_L
            for (int i = 0; i < V; i++)
                __builtin_memcpy(d + (kb + i) * FC_NR + nb, &r[i], sizeof(vec));
        }
    }
}
#endif

void FC_SFX(fc_pack_b)(ptrdiff_t K, ptrdiff_t N, const FC_REAL *src, ptrdiff_t rs, ptrdiff_t cs,
                       FC_REAL *Bp, ptrdiff_t p0, ptrdiff_t p1)
{
    for (ptrdiff_t p = p0; p < p1; p++) {
        FC_REAL *panel = Bp + p * K * FC_NR;
        ptrdiff_t n0 = p * FC_NR;
        int nw = N - n0 < FC_NR ? (int)(N - n0) : FC_NR;      /* real columns; the rest 0 */
        if (cs == 1) {
            for (ptrdiff_t k = 0; k < K; k++) {
                const FC_REAL *s = src + k * rs + n0;
                FC_REAL *d = panel + k * FC_NR;
                for (int j = 0; j < nw; j++)
                    d[j] = s[j];
                for (int j = nw; j < FC_NR; j++)
                    d[j] = 0;
            }
            continue;
        }
        for (ptrdiff_t k0 = 0; k0 < K; k0 += FC_PACK_KB) {
            int kn = K - k0 < FC_PACK_KB ? (int)(K - k0) : FC_PACK_KB;
            FC_REAL *d = panel + k0 * FC_NR;
#if defined(__x86_64__) && defined(__GNUC__) && !defined(FC_NO_CLONES)
            if (rs == 1 && kn == FC_PACK_KB && nw == FC_NR && fc_cpu_level() >= 4) {
                FC_SFX(fc_pack_block_v4)(src + n0 * cs + k0, cs, d);
                continue;
            }
#endif
            for (int j = 0; j < nw; j++) {
                const FC_REAL *s = src + (n0 + j) * cs + k0 * rs;
                for (int kk = 0; kk < kn; kk++)
                    d[kk * FC_NR + j] = s[kk * rs];
            }
            for (int kk = 0; kk < kn; kk++)
                for (int j = nw; j < FC_NR; j++)
                    d[kk * FC_NR + j] = 0;
        }
    }
}
#undef FC_PACK_KB

/* The micro-kernels (fc_ukr_impl.h), once per vector width. FC_XSFX: FC_SFX after expanding
 * its argument. AVX-512: 8-row tiles of a whole panel row (2 vectors, 16 accumulators).
 * AVX2: FC_Y_MR rows x FC_Y_NV vectors (see FC_ISA_VARIANTS). */
#define FC_XSFX(n) FC_SFX(n)
#ifndef FC_Y_MR
#define FC_Y_MR 3
#endif
#ifndef FC_Y_NV
#define FC_Y_NV 4
#endif
#define FC_VB 64
#define FC_NV 2
#define FC_U1 4
#define FC_W(n) FC_XSFX(n##_z)
#include "fc_ukr_impl.h"
#undef FC_VB
#undef FC_NV
#undef FC_U1
#undef FC_W
#define FC_VB 32
#define FC_NV FC_Y_NV
#define FC_U1 2
#define FC_W(n) FC_XSFX(n##_y)
#include "fc_ukr_impl.h"
#undef FC_VB
#undef FC_NV
#undef FC_U1
#undef FC_W
#define FC_VB 16
#define FC_NV 4
#define FC_U1 1
#define FC_W(n) FC_XSFX(n##_x)
#include "fc_ukr_impl.h"
#undef FC_VB
#undef FC_NV
#undef FC_U1
#undef FC_W

/* A product over K = 0: C[m0:m1, n0:n1] = 0, or unchanged when accumulating. */
static void FC_SFX(fc_zero_unless)(int accumulate, ptrdiff_t m0, ptrdiff_t m1, ptrdiff_t n0,
                                   ptrdiff_t n1, FC_REAL *C, ptrdiff_t ldc)
{
    for (ptrdiff_t m = m0; m < m1 && !accumulate; m++)
        for (ptrdiff_t n = n0; n < n1; n++)
            C[m * ldc + n] = 0;
}

/* A (M x kc, row stride lda) into ap, row tile by row tile: rows t*MR .. t*MR + MR - 1 at
 * ap + t*MR*kc, k-major (ap[t*MR*kc + k*MR + r]). The micro-kernel then finds a tile's MR values
 * of one k side by side, at constant offsets from one pointer. With A in place, its MR row
 * pointers took MR registers, and GCC spilled 3-4 of them and reloaded them in the k loop (8
 * rows with AVX-512: 36 instructions per 16 FMAs, 31 with A packed). Measured on the Xeon
 * (AVX-512), paired against A in place, 2 threads: LSTM inference at charrnn, medium and large
 * 0.955-0.964x the time. The copy costs one load and store per element of A, against 2 FMAs
 * per element and panel: below 16 panels of columns it did not pay (GRU, LSTM small training
 * 1.06-1.07x the time, Elman RNN small inference 1.10x), so A stays in place there. The packed
 * block (FC_APACK elements on the stack: 32 KB in float32, 64 KB in float64) holds all rows of
 * A up to FC_APACK / 64 of them and k-blocks as deep as it holds (at most FC_KC): B is
 * streamed once per block of rows. Its size, paired (2 threads): float32 32 KB against 64 KB
 * 0.963-0.988x the time (LSTM charrnn, medium, large inference, GRU large inference, LSTM
 * medium training; 256-deep k-blocks at 32 rows instead of 512), 16 KB against 32 KB
 * 1.004-1.069x; float64 32 KB against 64 KB 0.999-1.037x (LSTM medium inference 1.037).
 * The k-blocking does not change a bit of C: each element's sum runs over k in order either
 * way, through C in memory between k-blocks. */
#define FC_APACK 8192                         /* elements of the packed A block (on the stack) */
#define FC_APACK_MIN_N (16 * FC_NR)           /* packing A pays from this many columns of C */
static inline __attribute__((always_inline)) void
FC_SFX(fc_pack_a)(const int MR, ptrdiff_t M, ptrdiff_t kc, const FC_REAL *A, ptrdiff_t lda,
                  FC_REAL *ap)
{
    for (ptrdiff_t m = 0; m < M; m += MR) {
        int mr = M - m < MR ? (int)(M - m) : MR;
        FC_REAL *d = ap + m * kc;
        for (int r = 0; r < mr; r++) {
            const FC_REAL *src = A + (m + r) * lda;
            for (ptrdiff_t k = 0; k < kc; k++)
                d[k * MR + r] = src[k];
        }
    }
}

/* Calls name_v4 / name_v3 / name_base (AVX-512, AVX2, baseline) for the CPU, then returns. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(FC_NO_CLONES)
#define FC_ISA_DISPATCH(name, ...)                                                              \
    do {                                                                                        \
        if (fc_cpu_level() >= 4)                                                                \
            FC_SFX(name##_v4)(__VA_ARGS__);                                                     \
        else if (fc_cpu_level() == 3)                                                           \
            FC_SFX(name##_v3)(__VA_ARGS__);                                                     \
        else                                                                                    \
            FC_SFX(name##_base)(__VA_ARGS__);                                                   \
    } while (0)
#else
#define FC_ISA_DISPATCH(name, ...) FC_SFX(name##_base)(__VA_ARGS__)
#endif

/* name_v4, name_v3, name_base: BODY(MR) compiled for AVX-512 (MR = 8 rows per tile, 16 of the
 * 32 vector registers for C), AVX2 (3) and the baseline (2), with the parameters PARAMS. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(FC_NO_CLONES)
#define FC_ISA_VARIANTS(name, PARAMS, BODY)                                                     \
    __attribute__((target("arch=x86-64-v4"))) static void FC_SFX(name##_v4)(PARAMS)            \
    {                                                                                           \
        BODY(8, _z)                                                                             \
    }                                                                                           \
    __attribute__((target("arch=x86-64-v3"))) static void FC_SFX(name##_v3)(PARAMS)            \
    {                                                                                           \
        BODY(FC_Y_MR, _y)                                                                       \
    }                                                                                           \
    static void FC_SFX(name##_base)(PARAMS)                                                     \
    {                                                                                           \
        BODY(2, _x)                                                                             \
    }
#else
#define FC_ISA_VARIANTS(name, PARAMS, BODY)                                                     \
    static void FC_SFX(name##_base)(PARAMS)                                                     \
    {                                                                                           \
        BODY(2, _x)                                                                             \
    }
#endif

/* C[:, n0:n1] = (accumulate ? C[:, n0:n1] : 0) + A (M x K) @ B[:, n0:n1], B packed in Bp with
 * kp >= K rows per panel (Bp + k_off * FC_NR with kp = the packed row count selects rows
 * k_off .. k_off + K - 1 of a taller packed matrix). C points at column 0 of its rows (row
 * stride ldc); A has row stride lda. */
#define FC_GEMM_NN_BODY(MR, W, PACKED)                                                          \
    int s = !(PACKED) && (ldb * sizeof(FC_REAL)) % 64 == 0                                      \
        ? (int)(((uintptr_t)B % 64) / sizeof(FC_REAL)) : 0;                                     \
    FC_REAL ap[FC_APACK] __attribute__((aligned(64)));                                          \
    const ptrdiff_t na = FC_APACK;                                                              \
    int pack_a = M > 1 && n1 - n0 >= FC_APACK_MIN_N;                                            \
    /* rows per block and k-block: with A packed, all M rows (up to na / 64) in one block,     \
     * the k-block as deep as ap holds (at most FC_KC): B is streamed once per block of rows */ \
    ptrdiff_t mb = pack_a && M > na / 64 / (MR) * (MR) ? na / 64 / (MR) * (MR) : M;             \
    ptrdiff_t kb = pack_a ? na / (((mb + (MR) - 1) / (MR)) * (MR)) / 8 * 8 : FC_KC;             \
    kb = kb < FC_KC ? kb : FC_KC;                                                               \
    for (ptrdiff_t m0 = 0; m0 < M; m0 += mb) {                                                  \
        ptrdiff_t mm = M - m0 < mb ? M - m0 : mb;                                               \
        for (ptrdiff_t k0 = 0; k0 < K; k0 += kb) {                                              \
            ptrdiff_t kc = K - k0 < kb ? K - k0 : kb;                                           \
            int acc = accumulate || k0 > 0;                                                     \
            const FC_REAL *a = A + m0 * lda + k0;                                               \
            ptrdiff_t ars = lda;                                                                \
            if (pack_a) {                                                                       \
                FC_SFX(fc_pack_a)(MR, mm, kc, a, lda, ap);                                      \
                a = ap;                                                                         \
                ars = 0;                                                                        \
            }                                                                                   \
            FC_REAL *cm = C + m0 * ldc;                                                         \
            for (ptrdiff_t p = n0 / FC_NR; p * FC_NR < n1; p++) {                               \
                ptrdiff_t lo = p * FC_NR > n0 ? p * FC_NR : n0;                                 \
                ptrdiff_t hi = (p + 1) * FC_NR < n1 ? (p + 1) * FC_NR : n1;                     \
                /* packed: panel p's rows k0.. at stride FC_NR; in place: B's rows, stride ldb */ \
                const FC_REAL *bp = (PACKED) ? B + (p * ldb + k0) * FC_NR                       \
                                             : B + k0 * ldb + p * FC_NR;                        \
                if (!(PACKED) && M == 1 && lo == p * FC_NR && (p + 2) * FC_NR <= n1) {          \
                    if (s == 0)                                                                 \
                        FC_XSFX(fc_ukr1x2##W)(kc, a, bp, ldb, cm + lo, acc);                    \
                    else                                                                        \
                        FC_XSFX(fc_ukr1x2s##W)(kc, a, bp, ldb, s, cm + lo, acc,                 \
                                               k0 == 0 && p == 0,                               \
                                               k0 + kc == K && (p + 2) * FC_NR == ldb);         \
                    p++;                                                                        \
                    continue;                                                                   \
                }                                                                               \
                FC_XSFX(fc_panel##W)(MR, mm, kc, a, ars, bp, (PACKED) ? FC_NR : ldb, cm + lo, ldc,   \
                                     acc, (int)(lo - p * FC_NR), (int)(hi - p * FC_NR),         \
                                     (PACKED) && hi < n1 ? B + ((p + 1) * ldb + k0) * FC_NR     \
                                                         : NULL);                               \
            }                                                                                   \
        }                                                                                       \
    }
#define FC_GEMM_PACKED_BODY(MR, W) FC_GEMM_NN_BODY(MR, W, 1)     /* B = Bp, ldb = kp */

/* The per-step GEMMs C[:, n0:n1] (+)= A (M x K) @ B[:, n0:n1] (fc_gemm_packed, fc_gemm_rows):
 * the ISA variants of the body and the public function, which handles the empty cases and
 * dispatches on the CPU. */
#define FC_GEMM_NN_PARAMS                                                                       \
    ptrdiff_t M, ptrdiff_t n0, ptrdiff_t n1, ptrdiff_t K, const FC_REAL *A, ptrdiff_t lda,      \
    const FC_REAL *B, ptrdiff_t ldb, FC_REAL *C, ptrdiff_t ldc, int accumulate
#define FC_GEMM_NN_FUNCS(name, BODY)                                                            \
    FC_ISA_VARIANTS(name, FC_GEMM_NN_PARAMS, BODY)                                              \
    void FC_SFX(name)(FC_GEMM_NN_PARAMS)                                                        \
    {                                                                                           \
        if (M <= 0 || n1 <= n0)                                                                 \
            return;                                                                             \
        if (K <= 0) {                                                                           \
            FC_SFX(fc_zero_unless)(accumulate, 0, M, n0, n1, C, ldc);                           \
            return;                                                                             \
        }                                                                                       \
        FC_ISA_DISPATCH(name, M, n0, n1, K, A, lda, B, ldb, C, ldc, accumulate);                \
    }

FC_GEMM_NN_FUNCS(fc_gemm_packed, FC_GEMM_PACKED_BODY)      /* B = Bp, ldb = kp (see above) */

/* The same product with B (K x ldb, row-major, all of it readable) read in place instead of
 * packed: the panels are column blocks of B's rows, one row k of a block at stride ldb. For a
 * backward whose packed copy would be the step's largest scratch (Elman RNN at batch 1: W_hh
 * 64 KB against 50 KB of saved states). Same micro-kernels and summation order as
 * fc_gemm_packed, so the same bits. No prefetch of the next panel (B in L2 there). n1 rounded
 * up to a multiple of FC_NR must not exceed ldb (the loads read whole panel rows). One row
 * (M = 1) runs two panels at a time (fc_ukr1x2), on aligned loads when B is not 64-byte
 * aligned but its row stride is a multiple of 64 bytes (fc_ukr1x2s). */
#define FC_GEMM_ROWS_BODY(MR, W) FC_GEMM_NN_BODY(MR, W, 0)

FC_GEMM_NN_FUNCS(fc_gemm_rows, FC_GEMM_ROWS_BODY)
#undef FC_GEMM_ROWS_BODY
#undef FC_GEMM_NN_BODY
#undef FC_GEMM_NN_FUNCS
#undef FC_GEMM_NN_PARAMS

/* ------------------------------------------------------------------ weight gradients, A^T B
 * C[m0:m1, :] (+)= A^T B for A (K x M, row stride lda) and B (K x N, row stride ldb), N a
 * multiple of FC_NR: the backward's dW = dG^T X, summed over the T*B rows of the sequence. The
 * same micro-kernel as the packed GEMM, with a tile's MR values of A at one k side by side in
 * one row of A (dG) and B's rows read in place (no packing: B's rows are contiguous). A slice of
 * FC_KC_TN rows of a B panel (16 KB) stays in L1 with a tile's rows of A while the row tiles run
 * on it (256 rows: 0.96-1.04x OpenBLAS's time at N = 64, 128 rows: 0.77-0.82x). Used for small
 * problems (see _kernels.pyx), where OpenBLAS spent as long packing both operands (its
 * transposing copies) as multiplying. */
#define FC_KC_TN 128

#define FC_GEMM_TN_BODY(MR, W)                                                                     \
    for (ptrdiff_t k0 = 0; k0 < K; k0 += FC_KC_TN) {                                            \
        ptrdiff_t kc = K - k0 < FC_KC_TN ? K - k0 : FC_KC_TN;                                   \
        int acc = accumulate || k0 > 0;                                                         \
        for (ptrdiff_t n = 0; n < N; n += FC_NR)                                                \
            for (ptrdiff_t m = m0; m < m1; m += MR) {                                           \
                const FC_REAL *a = A + k0 * lda + m;                                            \
                FC_REAL *c = C + m * ldc + n;                                                   \
                if (m1 - m >= MR)                                                               \
                    FC_XSFX(fc_ukrp##W)(MR, MR, kc, a, 1, lda, B + k0 * ldb + n, ldb, c, ldc, acc,   \
                                   NULL, 0);                                                    \
                else                                                                            \
                    FC_XSFX(fc_ukrp##W)(MR, (int)(m1 - m), kc, a, 1, lda, B + k0 * ldb + n, ldb, c,  \
                                   ldc, acc, NULL, 0);                                          \
            }                                                                                   \
    }

#define FC_GEMM_TN_PARAMS                                                                       \
    ptrdiff_t m0, ptrdiff_t m1, ptrdiff_t N, ptrdiff_t K, const FC_REAL *A, ptrdiff_t lda,      \
    const FC_REAL *B, ptrdiff_t ldb, FC_REAL *C, ptrdiff_t ldc, int accumulate
FC_ISA_VARIANTS(fc_gemm_tn, FC_GEMM_TN_PARAMS, FC_GEMM_TN_BODY)

/* C[m0:m1, 0:N] (+)= A[:, m0:m1]^T B; A (K x M, row stride lda), B (K x N, row stride ldb),
 * C row stride ldc, pointing at row 0. N must be a multiple of fc_packed_panel_width. */
void FC_SFX(fc_gemm_tn)(FC_GEMM_TN_PARAMS)
{
    if (m1 <= m0 || N <= 0)
        return;
    if (K <= 0) {
        FC_SFX(fc_zero_unless)(accumulate, m0, m1, 0, N, C, ldc);
        return;
    }
    FC_ISA_DISPATCH(fc_gemm_tn, m0, m1, N, K, A, lda, B, ldb, C, ldc, accumulate);
}
#undef FC_GEMM_TN_BODY
#undef FC_GEMM_TN_PARAMS
#undef FC_ISA_VARIANTS
#undef FC_KC_TN
#undef FC_ISA_DISPATCH

/* elements of a packed K x N matrix */
ptrdiff_t FC_SFX(fc_packed_size)(ptrdiff_t K, ptrdiff_t N)
{
    return K * ((N + FC_NR - 1) / FC_NR) * FC_NR;
}

ptrdiff_t FC_SFX(fc_packed_panel_width)(void)
{
    return FC_NR;
}

#undef FC_GEMM_PACKED_BODY
#undef FC_NR
#undef FC_KC
#undef FC_APACK
#undef FC_APACK_MIN_N
#undef FC_XSFX
