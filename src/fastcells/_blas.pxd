# cython: language_level=3
# The only place fastcells calls BLAS: row-major GEMM over the fused float type, with the
# routines taken from scipy.linalg.cython_blas (the BLAS SciPy ships) at import time.
from cython cimport floating

# C(M, N) = alpha * op(A)(M, K) @ op(B)(K, N) + beta * C, all row-major with leading dimensions.
# trans_a: op(A) = A^T, A stored (K, M); trans_b: op(B) = B^T, B stored (N, K).
cdef void gemm(bint trans_a, bint trans_b, int M, int N, int K,
               floating alpha, const floating *A, int lda,
               const floating *B, int ldb,
               floating beta, floating *C, int ldc) noexcept nogil

# Per-calling-thread BLAS thread count (OpenBLAS openblas_set_num_threads_local: sets, returns
# the previous value). NULL when the BLAS has none; the Python layer then limits BLAS globally.
ctypedef int (*set_threads_fn)(int) noexcept nogil

cdef inline int set_blas_threads(set_threads_fn fn, int n) noexcept nogil:
    """Set this thread's BLAS thread count; return the previous one (0 when not settable)."""
    if fn == NULL:
        return 0
    return fn(n)

cdef inline void restore_blas_threads(set_threads_fn fn, int prev) noexcept nogil:
    if fn != NULL and prev > 0:
        fn(prev)

cdef inline Py_ssize_t slice_start(Py_ssize_t n, int parts, int k) noexcept nogil:
    # Part k of `parts` owns rows [slice_start(k), slice_start(k + 1)) of n.
    return (n * k) // parts

# Row-block GEMM for one part of a parallel region, and a self-contained parallel version.
cdef void gemm_part(int part, int parts, bint trans_a, bint trans_b, Py_ssize_t M,
                    Py_ssize_t N, Py_ssize_t K, const floating *A, Py_ssize_t lda,
                    const floating *Bm, Py_ssize_t ldb, floating beta, floating *C,
                    Py_ssize_t ldc) noexcept nogil
cdef void par_gemm(int n_threads, set_threads_fn set_threads, bint trans_a, bint trans_b,
                   Py_ssize_t M, Py_ssize_t N, Py_ssize_t K, const floating *A, Py_ssize_t lda,
                   const floating *Bm, Py_ssize_t ldb, floating beta, floating *C,
                   Py_ssize_t ldc) noexcept nogil
