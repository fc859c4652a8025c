"""No memory or reference leaks.

* 10,000 small forward + backward calls (all cells, both dtypes, with and without lengths,
  projections, inference, failing calls in between): resident memory grows by less than
  RSS_LIMIT, the number of live Python objects tracked by the garbage collector stays flat,
  and NumPy-tracked allocations (tracemalloc sees array data) do not accumulate.
* Reference counts of every input are back to where they were once the results and the
  workspace are dropped -- after successful calls, after inference, after calls that raise
  (validation errors), and after a backward that consumed the workspace.

The 10k loop is marked ``slow`` (deselect locally with ``-m "not slow"``); CI runs it. It
takes a few seconds.
"""
import gc
import os
import sys
import tracemalloc

import numpy as np
import pytest

from conftest import CELLS
from test_fuzz import build_call, call_backward, call_forward

import fastcells

N_CALLS = int(os.environ.get("FASTCELLS_LEAK_CALLS", "10000"))
RSS_LIMIT = 4 << 20          # bytes of RSS growth allowed over the whole loop


def rss_bytes():
    """Current resident set size (Linux /proc/self/statm; else peak RSS from resource)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:  # pragma: no cover - not Linux
        import resource
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _jobs():
    rng = np.random.default_rng(0)
    jobs = []
    for i in range(24):
        cell = CELLS[i % 4]
        dtype = np.dtype([np.float32, np.float64][(i // 4) % 2])
        T, B, I, H = 2 + i % 3, 1 + i % 3, 3, 4
        P = 2 if cell == "lstm" and i % 3 == 0 else None
        lengths = rng.integers(0, T + 1, B) if i % 5 == 0 else None
        f, ups = build_call(cell, dtype, T, B, I, H, P, rng, lengths=lengths)
        jobs.append((cell, f, ups, i % 6 != 5, 1 + i % 2))
    return jobs


def _one(job):
    cell, f, ups, training, n_threads = job
    out = call_forward(fastcells, cell, f, training=training, n_threads=n_threads)
    if training:
        call_backward(fastcells, cell, ups, out[-1])


def _failing(job):
    """Calls that fail validation at different points (before and after allocation)."""
    cell, f, ups, _, _ = job
    bad = dict(f)
    bad["w_hh"] = bad["w_hh"][:-1]
    for args, kw in ((bad, {}), (f, {"n_threads": 0}), (f, {"n_threads": "2"})):
        try:
            call_forward(fastcells, cell, args, **kw)
        except (TypeError, ValueError):
            pass
    ws = call_forward(fastcells, cell, f, n_threads=1)[-1]
    wrong = {k: (None if v is None else np.zeros(v.shape[:-1] + (v.shape[-1] + 1,), v.dtype))
             for k, v in ups.items()}
    try:
        call_backward(fastcells, cell, wrong, ws)
    except ValueError:
        pass
    call_backward(fastcells, cell, ups, ws)
    try:
        call_backward(fastcells, cell, ups, ws)      # consumed
    except RuntimeError:
        pass


@pytest.mark.slow
def test_ten_thousand_calls_do_not_grow_memory():
    jobs = _jobs()
    for i in range(600):                              # warm-up: caches, allocator pools
        _one(jobs[i % len(jobs)])
        if i % 50 == 0:
            _failing(jobs[i % len(jobs)])
    gc.collect()
    rss0, objects0 = rss_bytes(), len(gc.get_objects())
    for i in range(N_CALLS):
        _one(jobs[i % len(jobs)])
        if i % 100 == 0:
            _failing(jobs[i % len(jobs)])
    gc.collect()
    growth, objects = rss_bytes() - rss0, len(gc.get_objects()) - objects0
    print(f"\n{N_CALLS} forward+backward calls: RSS {growth / 2**20:+.2f} MiB, "
          f"gc objects {objects:+d}")
    assert growth < RSS_LIMIT, f"RSS grew by {growth / 2**20:.1f} MiB over {N_CALLS} calls"
    assert objects < 200, f"{objects} more live Python objects after {N_CALLS} calls"


def test_no_accumulating_allocations():
    """tracemalloc (which sees NumPy's array data): net allocations after 1,000 calls are
    the same as after 200 -- nothing is kept per call."""
    jobs = _jobs()
    for i in range(200):
        _one(jobs[i % len(jobs)])
    gc.collect()
    tracemalloc.start()
    try:
        for i in range(200):
            _one(jobs[i % len(jobs)])
        gc.collect()
        after_200 = tracemalloc.get_traced_memory()[0]
        for i in range(800):
            _one(jobs[i % len(jobs)])
            if i % 100 == 0:
                _failing(jobs[i % len(jobs)])
        gc.collect()
        after_1000 = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert after_1000 - after_200 < 64 << 10, (
        f"{(after_1000 - after_200) / 1024:.0f} KiB more traced memory after 800 more calls")


def _refcounts(objs):
    return [sys.getrefcount(o) for o in objs]


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("mode", ["training", "inference", "failing", "lengths-proj"])
def test_input_refcounts_restored(cell, mode):
    """Every input array (and the lengths array) has the same reference count after the call
    and after dropping its results/workspace as before it."""
    rng = np.random.default_rng(0)
    P = 2 if (mode == "lengths-proj" and cell == "lstm") else None
    lengths = np.array([3, 0, 2], np.int64) if mode == "lengths-proj" else None
    f, ups = build_call(cell, np.dtype(np.float64), 3, 3, 4, 5, P, rng, lengths=lengths)
    objs = [v for v in list(f.values()) + list(ups.values()) if v is not None]
    for _ in range(3):                      # warm up any caches first
        _run_mode(cell, f, ups, mode)
    gc.collect()
    before = _refcounts(objs)
    for _ in range(20):
        _run_mode(cell, f, ups, mode)
    gc.collect()
    after = _refcounts(objs)
    names = [k for k, v in list(f.items()) + list(ups.items()) if v is not None]
    leaked = {n: a - b for n, a, b in zip(names, after, before) if a != b}
    assert not leaked, f"reference counts changed: {leaked}"


def _run_mode(cell, f, ups, mode):
    if mode == "inference":
        res = call_forward(fastcells, cell, f, training=False, n_threads=2)
        del res
    elif mode == "failing":
        _failing((cell, f, ups, True, 1))
    else:
        out = call_forward(fastcells, cell, f, n_threads=2)
        grads = call_backward(fastcells, cell, ups, out[-1])
        del out, grads


def test_workspace_released_after_backward(cell):
    """Backward drops the workspace's saved arrays and its references to the inputs at once
    (the caller may keep the consumed Workspace object around)."""
    rng = np.random.default_rng(0)
    f, ups = build_call(cell, np.dtype(np.float64), 4, 3, 4, 5, None, rng)
    x = f["x"]
    base = sys.getrefcount(x)
    out = call_forward(fastcells, cell, f, n_threads=1)
    ws = out[-1]
    assert sys.getrefcount(x) > base          # the workspace holds x for backward
    call_backward(fastcells, cell, ups, ws)
    del out
    gc.collect()
    assert sys.getrefcount(x) == base, "consumed workspace still references the input"
    assert ws.nbytes == 0
