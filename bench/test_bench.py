"""fastcells vs the NumPy reference, PyTorch and the GEMM floor (pytest-benchmark).

Grid: cell (lstm, gru, rnn) x mode (infer: forward without workspace; train: forward with
workspace + full backward) x shape (B,T,I,H) from batch-1 latency to large x dtype x threads.
Benchmarks are grouped by configuration so the implementations sit side by side. Run with
OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE unset (see conftest.py); the session header names the BLAS.
"""
import numpy as np
import pytest

from fastcells import _api, blas_info, reference
from fastcells.bench import SHAPES, floor_fn, make_problem, step_fn, torch_step_fn

CONFIGS = [(cell, mode, shape, dtype, nt)
           for shape in SHAPES for cell in ("lstm", "gru", "rnn") for mode in ("infer", "train")
           for dtype in ("float32", "float64") for nt in (1, 2)]
IMPLS = ("fastcells", "reference", "torch", "floor")


def _id(cfg):
    cell, mode, shape, dtype, nt = cfg
    return f"{cell}-{mode}-{shape}-{dtype}-t{nt}"


_PROBLEMS = {}


def _problem(cell, shape, dtype):
    key = (cell, shape, dtype)
    if key not in _PROBLEMS:
        _PROBLEMS.clear()   # keep at most one configuration's arrays alive
        B, T, I, H = SHAPES[shape]
        _PROBLEMS[key] = make_problem(cell, B, T, I, H, np.dtype(dtype))
    return _PROBLEMS[key]


def pytest_report_header(config):
    info = blas_info()
    return f"fastcells BLAS: {info.get('internal_api')} {info.get('version')} kernel " \
           f"{info.get('architecture')}"


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("config", CONFIGS, ids=[_id(c) for c in CONFIGS])
def test_step(benchmark, config, impl):
    cell, mode, shape, dtype, nt = config
    p = _problem(cell, shape, dtype)
    if impl == "fastcells":
        fn = step_fn(_api, cell, p, mode, nt)
    elif impl == "reference":
        fn = step_fn(reference, cell, p, mode, nt)
    elif impl == "torch":
        fn = torch_step_fn(cell, p, mode, nt)
        if fn is None:
            pytest.skip("PyTorch is not installed")
    else:
        fns = floor_fn(cell, p, mode, nt)
        fn = fns[-1]   # the kernels' own schedule (threads split the work, BLAS 1 thread each)
    benchmark.group = _id(config)
    benchmark.extra_info.update(dict(cell=cell, mode=mode, shape=shape, dims=SHAPES[shape],
                                     dtype=dtype, threads=nt, impl=impl))
    if impl == "reference":
        from threadpoolctl import threadpool_limits
        with threadpool_limits(limits=nt, user_api="blas"):
            benchmark.pedantic(fn, rounds=5, warmup_rounds=1, iterations=1)
    else:
        benchmark.pedantic(fn, rounds=5, warmup_rounds=1, iterations=1)
