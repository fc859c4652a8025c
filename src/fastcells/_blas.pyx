# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Row-major GEMM through SciPy's BLAS.

The sgemm/dgemm pointers are read from ``scipy.linalg.cython_blas.__pyx_capi__`` at import
rather than cimported: a cimport pins the exact C signature string of the SciPy we were built
against, so a wheel built with one SciPy would fail to import with another (SciPy >= 1.18 spells
the integer arguments ``blas_int``). We check the signature ourselves and accept 32-bit BLAS
integers under either spelling; an ILP64 (64-bit integer) SciPy BLAS is refused at import.
"""
from cpython.pycapsule cimport PyCapsule_GetPointer, PyCapsule_GetName
from cython cimport floating
from cython.parallel cimport parallel, threadid
from openmp cimport omp_get_num_threads

ctypedef void (*sgemm_t)(const char *transa, const char *transb, const int *m, const int *n,
                         const int *k, const float *alpha, const float *a, const int *lda,
                         const float *b, const int *ldb, const float *beta, float *c,
                         const int *ldc) noexcept nogil
ctypedef void (*dgemm_t)(const char *transa, const char *transb, const int *m, const int *n,
                         const int *k, const double *alpha, const double *a, const int *lda,
                         const double *b, const int *ldb, const double *beta, double *c,
                         const int *ldc) noexcept nogil

cdef sgemm_t _sgemm = NULL
cdef dgemm_t _dgemm = NULL


def _blas_int_spelling(signature):
    """Return the spelling of the BLAS integer in a cython_blas capsule signature."""
    args = signature.split("(", 1)[1]
    third = args.split(",")[2].strip()
    return third


cdef void *_load(str name) except NULL:
    from scipy.linalg import cython_blas
    capsule = cython_blas.__pyx_capi__[name]
    cdef const char *sig = PyCapsule_GetName(capsule)
    spelling = _blas_int_spelling(sig.decode())
    if spelling != "int *" and "blas_int" not in spelling:
        raise ImportError(
            f"fastcells needs SciPy's BLAS with 32-bit integers; scipy.linalg.cython_blas.{name} "
            f"takes {spelling!r}")
    if "blas_int" in spelling:
        import scipy
        cfg = str(getattr(getattr(scipy, "__config__", None), "CONFIG", "")).lower()
        if "ilp64" in cfg and "blas_int" in spelling:
            raise ImportError("fastcells does not support SciPy built with ILP64 BLAS")
    return PyCapsule_GetPointer(capsule, sig)


_sgemm = <sgemm_t>_load("sgemm")
_dgemm = <dgemm_t>_load("dgemm")


cdef void gemm(bint trans_a, bint trans_b, int M, int N, int K,
               floating alpha, const floating *A, int lda,
               const floating *B, int ldb,
               floating beta, floating *C, int ldc) noexcept nogil:
    # Row-major C = op(A) op(B) is column-major C^T = op(B)^T op(A)^T: swap the operands.
    cdef char ta = b'T' if trans_b else b'N'
    cdef char tb = b'T' if trans_a else b'N'
    if M <= 0 or N <= 0:
        return
    if K <= 0:
        # BLAS with k = 0 scales C by beta; some implementations skip even that. Be explicit.
        _scale(M, N, beta, C, ldc)
        return
    if floating is float:
        _sgemm(&ta, &tb, &N, &M, &K, &alpha, B, &ldb, A, &lda, &beta, C, &ldc)
    else:
        _dgemm(&ta, &tb, &N, &M, &K, &alpha, B, &ldb, A, &lda, &beta, C, &ldc)


cdef void _scale(int M, int N, floating beta, floating *C, int ldc) noexcept nogil:
    cdef Py_ssize_t i, j
    for i in range(M):
        for j in range(N):
            C[i * <Py_ssize_t>ldc + j] = 0 if beta == 0 else beta * C[i * <Py_ssize_t>ldc + j]


def _gemm_for_tests(bint trans_a, bint trans_b, floating[:, ::1] A, floating[:, ::1] B,
                    floating[:, ::1] C, double alpha=1.0, double beta=0.0):
    """C = alpha op(A) op(B) + beta C (row-major). For tests of the wrapper only."""
    cdef int M = C.shape[0], N = C.shape[1]
    cdef int K = A.shape[0] if trans_a else A.shape[1]
    with nogil:
        gemm(trans_a, trans_b, M, N, K, <floating>alpha, &A[0, 0], A.shape[1],
             &B[0, 0], B.shape[1], <floating>beta, &C[0, 0], C.shape[1])

cdef void gemm_part(int part, int parts, bint trans_a, bint trans_b, Py_ssize_t M,
                    Py_ssize_t N, Py_ssize_t K, const floating *A, Py_ssize_t lda,
                    const floating *Bm, Py_ssize_t ldb, floating beta, floating *C,
                    Py_ssize_t ldc) noexcept nogil:
    """Rows [M*part/parts, M*(part+1)/parts) of C = op(A) @ op(Bm) + beta C.

    Called by each thread of a parallel region with its own part, BLAS single-threaded, so the
    threads together compute the whole product and BLAS's own thread pool is never woken.
    trans_a: A is stored (K, M) and a row block of op(A) is a column block of A.
    """
    cdef Py_ssize_t r0 = slice_start(M, parts, part), r1 = slice_start(M, parts, part + 1)
    if r1 > r0:
        gemm(trans_a, trans_b, <int>(r1 - r0), <int>N, <int>K, <floating>1,
             A + (r0 if trans_a else r0 * lda), <int>lda, Bm, <int>ldb, beta, C + r0 * ldc,
             <int>ldc)


cdef void par_gemm(int n_threads, set_threads_fn set_threads, bint trans_a, bint trans_b,
                   Py_ssize_t M, Py_ssize_t N, Py_ssize_t K, const floating *A, Py_ssize_t lda,
                   const floating *Bm, Py_ssize_t ldb, floating beta, floating *C,
                   Py_ssize_t ldc) noexcept nogil:
    """C = op(A) @ op(Bm) + beta C with the rows of C split over an OpenMP region of its own."""
    cdef int prev, nthr
    with parallel(num_threads=n_threads):
        nthr = omp_get_num_threads()
        prev = set_blas_threads(set_threads, 1)
        gemm_part(threadid(), nthr, trans_a, trans_b, M, N, K, A, lda, Bm, ldb, beta, C, ldc)
        restore_blas_threads(set_threads, prev)
