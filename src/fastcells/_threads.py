"""Thread counts: OpenMP threads for the kernels and the BLAS (SciPy's) they call.

The kernels run the time loop with each OpenMP thread owning a slice of the batch and calling
BLAS single-threaded, and the hoisted GEMMs with BLAS using all ``n_threads``. To switch BLAS
thread counts per calling thread without touching the process-wide setting (safe when several
Python threads call fastcells at once), we pass the kernels OpenBLAS's
``openblas_set_num_threads_local``. If SciPy's BLAS has no such function (another BLAS, or an
OpenBLAS older than 0.3.27) the Python layer falls back to limiting that BLAS to one thread with
threadpoolctl for the duration of a multi-threaded call.
"""
import contextlib
import ctypes
import functools
import os

from . import _kernels


def _scipy_blas_controller():
    """threadpoolctl's controller for the BLAS library that scipy.linalg.cython_blas uses."""
    import scipy
    import scipy.linalg  # noqa: F401  (loads SciPy's BLAS so threadpoolctl can see it)
    from threadpoolctl import ThreadpoolController

    scipy_dir = os.path.dirname(os.path.dirname(os.path.abspath(scipy.__file__)))
    blas = [c for c in ThreadpoolController().lib_controllers if c.user_api == "blas"]
    for c in blas:
        path = os.path.abspath(c.filepath)
        if os.path.basename(os.path.dirname(path)) == "scipy.libs" or (
                "scipy" in os.path.basename(path) and path.startswith(scipy_dir)
                and "numpy" not in path):
            return c
    # System SciPy linking a shared BLAS: numpy usually shares it; take the only one if unique.
    return blas[0] if len(blas) == 1 else None


@functools.lru_cache(maxsize=None)
def _controller():
    return _scipy_blas_controller()


@functools.lru_cache(maxsize=None)
def set_threads_local_address():
    """Address of openblas_set_num_threads_local in SciPy's BLAS, or 0 if unavailable."""
    c = _controller()
    if c is None or c.internal_api != "openblas":
        return 0
    lib = ctypes.CDLL(c.filepath)
    for name in ("openblas_set_num_threads_local", "scipy_openblas_set_num_threads_local"):
        fn = getattr(lib, name, None)
        if fn is not None:
            return ctypes.cast(fn, ctypes.c_void_p).value or 0
    return 0


def blas_info():
    """The BLAS the kernels call: library, version, kernel (architecture), threads, path."""
    c = _controller()
    if c is None:
        return {"internal_api": "unknown"}
    info = c.info()
    info["has_set_num_threads_local"] = bool(set_threads_local_address())
    return info


# Far above any core count we could use; guards OpenMP against absurd requests (2**31 threads).
MAX_THREADS = 4096


def effective_n_threads(n_threads=None):
    """Resolve ``n_threads``: None -> OpenMP's default (OMP_NUM_THREADS, else the usable cores).

    Explicit values must be integers in [1, 4096] and are honoured as given (values above the
    number of cores oversubscribe, as with OpenMP itself); the time loop never uses more threads
    than batch rows.
    """
    if n_threads is None:
        n = _kernels.omp_max_threads()
        try:
            cores = len(os.sched_getaffinity(0))
        except AttributeError:  # pragma: no cover - not Linux
            cores = os.cpu_count() or 1
        return max(1, min(n, cores))
    if isinstance(n_threads, bool) or not isinstance(n_threads, int) and not hasattr(n_threads, "__index__"):
        raise TypeError(f"n_threads must be None or an int >= 1, got {type(n_threads).__name__}")
    n = int(n_threads.__index__())
    if n < 1:
        raise ValueError(f"n_threads must be None or an int >= 1, got {n}")
    if n > MAX_THREADS:
        raise ValueError(f"n_threads must be at most {MAX_THREADS}, got {n}")
    return n


_NO_LIMIT = contextlib.nullcontext()


def blas_fallback_limit(n_threads):
    """Limit SciPy's BLAS to one thread process-wide when no per-thread setter exists.

    A context manager. The common case (a per-thread setter exists, or one thread) is a shared
    no-op context: every kernel call enters one, and a generator-based context cost ~1 us."""
    if n_threads <= 1 or set_threads_local_address():
        return _NO_LIMIT
    return _fallback_limit()


@contextlib.contextmanager
def _fallback_limit():
    c = _controller()
    if c is None:
        yield
        return
    from threadpoolctl import threadpool_limits
    with threadpool_limits(limits=1, user_api="blas"):
        yield
