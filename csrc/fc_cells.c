/* fc_cells.c -- instantiates the pointwise cell kernels (fc_cells_impl.h) and activations
 * (fc_activations.h) for float (_f32) and double (_f64) from one source.
 *
 * On x86-64 with GCC or Clang each kernel is compiled three times (x86-64-v4 = AVX-512,
 * x86-64-v3 = AVX2+FMA, and baseline SSE2) and the loader picks the best one for the CPU at run
 * time (target_clones / ifunc), so a portable build still runs wide vectors. Results are
 * deterministic for a given machine; clones may differ in the last bit (FMA contraction).
 */
#include <stddef.h>
#include <string.h>
#include <math.h>
#include <stdlib.h>
#include "fc_cells.h"

#if defined(__x86_64__) && defined(__GNUC__) && defined(__ELF__) && !defined(FC_NO_CLONES) \
    && !defined(__SANITIZE_ADDRESS__)
#define FC_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define FC_CLONES
#endif

#define FC_C(x) ((FC_REAL)(x))

#if defined(__x86_64__) && defined(__GNUC__) && !defined(FC_NO_CLONES)
#include <immintrin.h>
#define FC_V4_INTRINSICS 1   /* AVX-512 activations (fc_activations.h), chosen at run time */
/* 4: x86-64-v4 (AVX-512), 3: x86-64-v3 (AVX2 + FMA), else 0; for the run-time dispatch of
 * fc_gemm_impl.h's kernels and fc_activations.h's fc_act_rows.
 * FASTCELLS_GEMM_ISA=v3|base caps it (read once; for testing every path on one machine). */
static int fc_cpu_level(void)
{
    static int level = -1;
    int l = __atomic_load_n(&level, __ATOMIC_RELAXED);
    if (l < 0) {
        const char *cap = getenv("FASTCELLS_GEMM_ISA");
        __builtin_cpu_init();
        l = __builtin_cpu_supports("x86-64-v4") ? 4 : __builtin_cpu_supports("x86-64-v3") ? 3 : 0;
        if (cap != NULL && strcmp(cap, "v3") == 0 && l > 3)
            l = 3;
        else if (cap != NULL && strcmp(cap, "base") == 0)
            l = 0;
        __atomic_store_n(&level, l, __ATOMIC_RELAXED);
    }
    return l;
}
#endif

#define FC_REAL float
#define FC_SFX(n) n##_f32
#define FC_IS_DOUBLE 0
#define FC_C1 1.0f
#include "fc_activations.h"
#include "fc_cells_impl.h"
#include "fc_gemm_impl.h"
#undef FC_REAL
#undef FC_SFX
#undef FC_IS_DOUBLE
#undef FC_C1

#define FC_REAL double
#define FC_SFX(n) n##_f64
#define FC_IS_DOUBLE 1
#define FC_C1 1.0
#include "fc_activations.h"
#include "fc_cells_impl.h"
#include "fc_gemm_impl.h"

