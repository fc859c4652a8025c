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
