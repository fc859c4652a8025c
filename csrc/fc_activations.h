/* fc_activations.h -- vectorizable, accurate exp / sigmoid / tanh for one floating type.
 *
 * Template header: include it after defining
 *   FC_REAL   float or double
 *   FC_SFX(n) token-pasting macro giving the suffixed name (n##_f32 / n##_f64)
 * It is included once per type by fc_cells.c; there is exactly one source for both types.
 *
 * Everything is branch-free (selects, no early returns) so that loops calling these functions
 * under `#pragma omp simd` vectorize, and free of float->int conversions (no UB on NaN/inf).
 *
 * Method
 *   exp(x):  n = round(x/ln2) by the magic-number trick, r = x - n*ln2 (Cody-Waite, two parts),
 *            exp(r) by its Taylor polynomial (degree 7 float / 13 double, |r| <= ln2/2: truncation
 *            error < 0.1 ulp), scaled by 2^(n-1)*2 built from the exponent bits.
 *   sigmoid(x) = 1 / (1 + exp(-x))     -- accurate everywhere: no cancellation for either sign.
 *   tanh(x):  |x| < 0.625: x * P(x^2), P a Chebyshev fit of tanh(s)/s (tools/gen_tanh_coeffs.py,
 *                          interpolation error 4e-9 float / 4e-19 double, relative);
 *             otherwise    sign(x) * (1 - 2 / (exp(2|x|) + 1)), where tanh >= 0.55 so the
 *                          subtraction loses less than one bit.
 *
 * Error bounds (max over all finite inputs, measured by tests/test_activations.py against
 * correctly rounded references): see FC_*_ULP_BOUND in the tests and README; about 2-3 ulp.
 *
 * Edge cases (tested):
 *   sigmoid: +inf -> 1, -inf -> +0, NaN -> NaN, +-0 -> 0.5; for x < -88.72 (float) / -709.78
 *            (double) it returns +0 (the true value is a denormal there).
 *   tanh:    +-0 -> +-0 (sign kept), +-inf -> +-1, NaN -> NaN, |x| > 9.1 (float) / 19.1 (double)
 *            -> +-1 exactly (as correctly rounded).
 *   exp:     x > ln(MAX) -> +inf, x < -86.9 (float) / -708.0 (double) -> +0 (flush: the true
 *            value is within a factor 2 of the smallest normal or below it), NaN -> NaN.
 */
#include <string.h>
#include <stdint.h>

#ifndef FC_REAL
#error "define FC_REAL and FC_SFX before including fc_activations.h"
#endif

#if FC_IS_DOUBLE
typedef uint64_t FC_SFX(fc_bits);
#define FC_MANT_BITS 52
#define FC_EXP_BIAS 1023
#define FC_MAGIC 6755399441055744.0            /* 1.5 * 2^52: adding it rounds to an integer */
#define FC_EXP_HI 709.782712893383973096       /* ln(DBL_MAX) */
#define FC_EXP_LO (-708.0)                      /* keeps n-1 >= -1022 (normal scale) */
#define FC_LN2_HI 6.93147180369123816490e-01    /* fdlibm split of ln 2: n*LN2_HI is exact */
#define FC_LN2_LO 1.90821492927058770002e-10
#else
typedef uint32_t FC_SFX(fc_bits);
#define FC_MANT_BITS 23
#define FC_EXP_BIAS 127
#define FC_MAGIC 12582912.0f                    /* 1.5 * 2^23 */
#define FC_EXP_HI 88.7228393554687500f          /* largest float x with exp(x) finite */
#define FC_EXP_LO (-86.9f)                      /* keeps n-1 >= -126 */
#define FC_LN2_HI 0.693359375f                  /* 8 significant bits: n*LN2_HI exact */
#define FC_LN2_LO (-2.12194440e-4f)
#endif

#ifndef FC_C
#define FC_C(x) ((FC_REAL)(x))
#endif

/* The polynomials' coefficients, highest degree first, shared by the scalar functions below
 * and the AVX-512 ones: exp(r) on |r| <= ln2/2 by its Taylor polynomial (1/13! .. 1/1!, 1 in
 * double; 1/7! .. 1 in float); tanh(s)/s in u = s^2 on |s| < 0.625 (tools/gen_tanh_coeffs.py). */
#if FC_IS_DOUBLE
static const double FC_SFX(fc_exp_c)[] = {1.0 / 6227020800.0, 1.0 / 479001600.0,
    1.0 / 39916800.0, 1.0 / 3628800.0, 1.0 / 362880.0, 1.0 / 40320.0, 1.0 / 5040.0,
    1.0 / 720.0, 1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0, 0.5, 1.0, 1.0};
static const double FC_SFX(fc_tanh_c)[] = {0.000006017575850878183721579545,
    -0.00003012677445940982640066603, 0.00009149387098420200198296755,
    -0.0002369718950727862306975788, 0.0005894360841645430680302974,
    -0.001455721811612691746189562, 0.003592113263696813630013511,
    -0.008863234224713069842963819, 0.02186948846188592635446399,
    -0.05396825396573233166786638, 0.1333333333332887550185742,
    -0.3333333333333330231114617, 0.9999999999999999996416459};
#else
static const float FC_SFX(fc_exp_c)[] = {1.0f / 5040.0f, 1.0f / 720.0f, 1.0f / 120.0f,
    1.0f / 24.0f, 1.0f / 6.0f, 0.5f, 1.0f, 1.0f};
static const float FC_SFX(fc_tanh_c)[] = {-0.00565713518438f, 0.0205881914546f,
    -0.0537201076566f, 0.133311140557f, -0.333332598629f, 0.999999996023f};
#endif
#define FC_NC(a) ((int)(sizeof(a) / sizeof((a)[0])))

static inline FC_REAL FC_SFX(fc_exp)(FC_REAL x)
{
    /* Clamp with comparisons (not fmin/fmax) so NaN passes through unchanged. */
    FC_REAL xc = x > FC_C(FC_EXP_HI) ? FC_C(FC_EXP_HI) : x;
    xc = xc < FC_C(FC_EXP_LO) ? FC_C(FC_EXP_LO) : xc;
    FC_REAL kf = xc * FC_C(1.44269504088896340736) + FC_C(FC_MAGIC);
    FC_SFX(fc_bits) kbits, magic_bits, scale_bits;
    FC_REAL magic = FC_C(FC_MAGIC), scale;
    memcpy(&kbits, &kf, sizeof kf);
    memcpy(&magic_bits, &magic, sizeof magic);
    kf -= FC_C(FC_MAGIC);                                   /* n as a floating value */
    FC_REAL r = xc - kf * FC_C(FC_LN2_HI);
    r = r - kf * FC_C(FC_LN2_LO);
    /* Unsigned arithmetic: the bits of n + (bias - 1), shifted into the exponent field.
       Wraps harmlessly (no UB) for NaN input, whose result is NaN anyway through r. */
    scale_bits = (FC_SFX(fc_bits))(kbits - magic_bits + (FC_SFX(fc_bits))(FC_EXP_BIAS - 1))
                 << FC_MANT_BITS;
    memcpy(&scale, &scale_bits, sizeof scale);
    FC_REAL p = FC_SFX(fc_exp_c)[0];
#pragma GCC unroll 16
    for (int i = 1; i < FC_NC(FC_SFX(fc_exp_c)); i++)
        p = p * r + FC_SFX(fc_exp_c)[i];
    FC_REAL res = (p * scale) * FC_C(2.0);
    res = x > FC_C(FC_EXP_HI) ? (FC_REAL)HUGE_VAL : res;
    res = x < FC_C(FC_EXP_LO) ? FC_C(0.0) : res;
    return res;
}

static inline FC_REAL FC_SFX(fc_sigmoid)(FC_REAL x)
{
    return FC_C(1.0) / (FC_C(1.0) + FC_SFX(fc_exp)(-x));
}

static inline FC_REAL FC_SFX(fc_tanh)(FC_REAL x)
{
    FC_REAL a = x < FC_C(0.0) ? -x : x;                     /* |x|, NaN stays NaN */
    FC_REAL u = x * x;
    FC_REAL p = FC_SFX(fc_tanh_c)[0];
#pragma GCC unroll 16
    for (int i = 1; i < FC_NC(FC_SFX(fc_tanh_c)); i++)
        p = p * u + FC_SFX(fc_tanh_c)[i];
    FC_REAL small = x * p;                                  /* keeps the sign of +-0 */
    FC_REAL big = FC_C(1.0) - FC_C(2.0) / (FC_SFX(fc_exp)(FC_C(2.0) * a) + FC_C(1.0));
    big = x < FC_C(0.0) ? -big : big;                        /* NaN: big is NaN already */
    return a < FC_C(0.625) ? small : big;
}

/* Rows of activations, the cells' pointwise passes run them gate by gate:
 *     out[r*ldo + j] = act(a[r*lda + j] + b[j])   (b NULL: + 0 omitted), j < n, r < rows,
 * act = sigmoid (kind FC_SIGMOID) or tanh (FC_TANH); out may be a. With AVX-512 the
 * activations run on the intrinsics below instead of the compiler's vectorization of the scalar
 * functions above: the same reduction and polynomials, with the scaling by 2^n in one vscalefps
 * (it also gives +inf and 0 beyond the range, so no clamping selects), |x| and the sign by bit
 * masks. Measured on the bench machine, one thread, 1024 values in L1: tanh 1.49x and sigmoid
 * 1.33-1.39x the throughput of the vectorized scalar code (rcp14 + a Newton step instead of
 * the division: no faster). */
#ifndef FC_SIGMOID
#define FC_SIGMOID 0
#define FC_TANH 1
#endif

#if defined(FC_V4_INTRINSICS)
/* One source for both types: FC_V(op) is the _ps / _pd intrinsic, FC_L the lanes of a vector. */
#if FC_IS_DOUBLE
typedef __m512d FC_SFX(fc_v4);
typedef __mmask8 FC_SFX(fc_v4mask);
#define FC_V(op) _mm512_##op##_pd
#define FC_VLT(a, b) _mm512_cmp_pd_mask(a, b, _CMP_LT_OQ)
#define FC_L 8
#define FC_EXP_ARG_HI 710.0      /* exp = +inf from here (ln(DBL_MAX) = 709.78) */
#define FC_EXP_ARG_LO (-745.0)   /* exp = 0 (below the smallest denormal) */
#define FC_TANH_ARG_HI 40.0      /* 2|x| from which tanh rounds to +-1 (19.1 would do) */
#else
typedef __m512 FC_SFX(fc_v4);
typedef __mmask16 FC_SFX(fc_v4mask);
#define FC_V(op) _mm512_##op##_ps
#define FC_VLT(a, b) _mm512_cmp_ps_mask(a, b, _CMP_LT_OQ)
#define FC_L 16
#define FC_EXP_ARG_HI 89.0f
#define FC_EXP_ARG_LO (-104.0f)
#define FC_TANH_ARG_HI 20.0f
#endif

/* exp(x) for x in [FC_EXP_ARG_LO, FC_EXP_ARG_HI] or NaN (callers clamp): x = n ln2 + r,
 * |r| <= ln2/2 (Cody-Waite, two parts), exp(r) by fc_exp's Taylor polynomial, times 2^n by
 * vscalef (exact; +inf past the largest finite value, denormal or 0 below the normal range). */
__attribute__((target("arch=x86-64-v4"))) static inline FC_SFX(fc_v4)
FC_SFX(fc_exp_v4)(FC_SFX(fc_v4) x)
{
    FC_SFX(fc_v4) n = FC_V(roundscale)(FC_V(mul)(x, FC_V(set1)(FC_C(1.44269504088896340736))),
                                       _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    FC_SFX(fc_v4) r = FC_V(fnmadd)(n, FC_V(set1)(FC_LN2_HI), x);
    r = FC_V(fnmadd)(n, FC_V(set1)(FC_LN2_LO), r);
    FC_SFX(fc_v4) p = FC_V(set1)(FC_SFX(fc_exp_c)[0]);
    for (int i = 1; i < FC_NC(FC_SFX(fc_exp_c)); i++)
        p = FC_V(fmadd)(p, r, FC_V(set1)(FC_SFX(fc_exp_c)[i]));
    return FC_V(scalef)(p, n);
}

/* sigmoid = 1 / (1 + exp(-x)). vmax/vmin return their second operand when either is NaN, so
 * NaN passes the clamp; below -ln(MAX) exp = +inf and sigmoid is +0, as fc_sigmoid. */
__attribute__((target("arch=x86-64-v4"))) static inline FC_SFX(fc_v4)
FC_SFX(fc_sigmoid_v4)(FC_SFX(fc_v4) x)
{
    FC_SFX(fc_v4) z = FC_V(sub)(FC_V(setzero)(), x);
    z = FC_V(max)(FC_V(set1)(FC_EXP_ARG_LO), FC_V(min)(FC_V(set1)(FC_EXP_ARG_HI), z));
    FC_SFX(fc_v4) e = FC_SFX(fc_exp_v4)(z);
    return FC_V(div)(FC_V(set1)(FC_C(1.0)), FC_V(add)(FC_V(set1)(FC_C(1.0)), e));
}

/* tanh as fc_tanh: x P(x^2) for |x| < 0.625, else sign(x) (1 - 2 / (exp(2|x|) + 1)), 2|x|
 * clamped where tanh rounds to 1. */
__attribute__((target("arch=x86-64-v4"))) static inline FC_SFX(fc_v4)
FC_SFX(fc_tanh_v4)(FC_SFX(fc_v4) x)
{
    FC_SFX(fc_v4) sign = FC_V(set1)(FC_C(-0.0));
    FC_SFX(fc_v4) a = FC_V(andnot)(sign, x), u = FC_V(mul)(x, x);
    FC_SFX(fc_v4) p = FC_V(set1)(FC_SFX(fc_tanh_c)[0]);
    for (int i = 1; i < FC_NC(FC_SFX(fc_tanh_c)); i++)
        p = FC_V(fmadd)(p, u, FC_V(set1)(FC_SFX(fc_tanh_c)[i]));
    FC_SFX(fc_v4) small = FC_V(mul)(x, p);                       /* keeps the sign of +-0 */
    FC_SFX(fc_v4) e = FC_SFX(fc_exp_v4)(FC_V(min)(FC_V(set1)(FC_TANH_ARG_HI), FC_V(add)(a, a)));
    FC_SFX(fc_v4) q = FC_V(div)(FC_V(set1)(FC_C(2.0)), FC_V(add)(e, FC_V(set1)(FC_C(1.0))));
    FC_SFX(fc_v4) big = FC_V(sub)(FC_V(set1)(FC_C(1.0)), q);
    big = FC_V(or)(big, FC_V(and)(x, sign));                     /* NaN stays NaN */
    return FC_V(mask_blend)(FC_VLT(a, FC_V(set1)(FC_C(0.625))), big, small);
}

__attribute__((target("arch=x86-64-v4"))) static inline FC_SFX(fc_v4)
FC_SFX(fc_act_v4)(int kind, FC_SFX(fc_v4) v)
{
    return kind == FC_SIGMOID ? FC_SFX(fc_sigmoid_v4)(v) : FC_SFX(fc_tanh_v4)(v);
}

__attribute__((target("arch=x86-64-v4"))) static void
FC_SFX(fc_act_rows_v4)(int kind, ptrdiff_t rows, ptrdiff_t n, const FC_REAL *a, ptrdiff_t lda,
                       const FC_REAL *b, FC_REAL *out, ptrdiff_t ldo)
{
    for (ptrdiff_t r = 0; r < rows; r++) {
        const FC_REAL *ar = a + r * lda;
        FC_REAL *orow = out + r * ldo;
        ptrdiff_t j = 0;
        for (; j + 2 * FC_L <= n; j += 2 * FC_L) {  /* two independent chains: 1.08x over one */
            FC_SFX(fc_v4) v0 = FC_V(loadu)(ar + j), v1 = FC_V(loadu)(ar + j + FC_L);
            if (b != NULL) {
                v0 = FC_V(add)(v0, FC_V(loadu)(b + j));
                v1 = FC_V(add)(v1, FC_V(loadu)(b + j + FC_L));
            }
            FC_V(storeu)(orow + j, FC_SFX(fc_act_v4)(kind, v0));
            FC_V(storeu)(orow + j + FC_L, FC_SFX(fc_act_v4)(kind, v1));
        }
        for (; j < n; j += FC_L) {
            FC_SFX(fc_v4mask) m = (FC_SFX(fc_v4mask))(n - j >= FC_L ? (1u << FC_L) - 1
                                                                  : (1u << (n - j)) - 1);
            FC_SFX(fc_v4) v = FC_V(maskz_loadu)(m, ar + j);
            if (b != NULL)
                v = FC_V(add)(v, FC_V(maskz_loadu)(m, b + j));
            FC_V(mask_storeu)(orow + j, m, FC_SFX(fc_act_v4)(kind, v));
        }
    }
}
#undef FC_V
#undef FC_VLT
#undef FC_L
#undef FC_EXP_ARG_HI
#undef FC_EXP_ARG_LO
#undef FC_TANH_ARG_HI
#endif

FC_CLONES void FC_SFX(fc_act_rows)(int kind, ptrdiff_t rows, ptrdiff_t n, const FC_REAL *a,
    ptrdiff_t lda, const FC_REAL *b, FC_REAL *out, ptrdiff_t ldo)
{
#if defined(FC_V4_INTRINSICS)
    if (fc_cpu_level() >= 4) {
        FC_SFX(fc_act_rows_v4)(kind, rows, n, a, lda, b, out, ldo);
        return;
    }
#endif
    for (ptrdiff_t r = 0; r < rows; r++) {
        const FC_REAL *ar = a + r * lda;
        FC_REAL *orow = out + r * ldo;
        if (kind == FC_SIGMOID && b != NULL) {
#pragma omp simd
            for (ptrdiff_t j = 0; j < n; j++) orow[j] = FC_SFX(fc_sigmoid)(ar[j] + b[j]);
        } else if (kind == FC_SIGMOID) {
#pragma omp simd
            for (ptrdiff_t j = 0; j < n; j++) orow[j] = FC_SFX(fc_sigmoid)(ar[j]);
        } else if (b != NULL) {
#pragma omp simd
            for (ptrdiff_t j = 0; j < n; j++) orow[j] = FC_SFX(fc_tanh)(ar[j] + b[j]);
        } else {
#pragma omp simd
            for (ptrdiff_t j = 0; j < n; j++) orow[j] = FC_SFX(fc_tanh)(ar[j]);
        }
    }
}

#undef FC_NC
#undef FC_MANT_BITS
#undef FC_EXP_BIAS
#undef FC_MAGIC
#undef FC_EXP_HI
#undef FC_EXP_LO
#undef FC_LN2_HI
#undef FC_LN2_LO
