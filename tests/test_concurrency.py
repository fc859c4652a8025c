"""Several Python threads calling the kernels at once.

* 4 threads running a mix of cells, dtypes, options and thread counts at the same time get
  exactly (bitwise) the results of the same calls made one after another.
* The kernels release the GIL: while a long kernel runs in one thread, a pure-Python loop in
  another keeps running. Measured without timing thresholds on the kernel itself: we compare
  how far a counter loop advances during the kernel call with how far it advances during an
  equally long ``time.sleep`` (which releases the GIL), in the same conditions. A kernel that
  held the GIL would let the counter advance only in the few switch intervals around the call
  (a ratio near 0); a control call that does hold the GIL (``list.sort``) shows that.
* One workspace used by two backward calls at once: exactly one succeeds (with the right
  result), the other gets the documented RuntimeError; never both, never wrong numbers.
"""
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from conftest import CELLS, assert_results_equal, run_concurrently
from test_fuzz import build_call, call_backward, call_forward, fastcells_results

import fastcells


def _jobs():
    """A varied list of (cell, f, ups, training, n_threads, extra) jobs."""
    jobs = []
    rng = np.random.default_rng(0)
    for i, cell in enumerate(CELLS * 3):
        dtype = np.dtype([np.float32, np.float64][i % 2])
        T, B, I, H = 4 + i % 5, 3 + i % 7, 5 + i % 3, 6 + i % 9
        P = 3 if cell == "lstm" and i % 3 == 0 else None
        lengths = rng.integers(0, T + 1, B) if i % 4 == 1 else None
        f, ups = build_call(cell, dtype, T, B, I, H, P, rng, lengths=lengths)
        extra = {"reset_after": bool(i % 2)} if cell == "gru" else {}
        jobs.append((cell, f, ups, i % 5 != 4, 1 + i % 3, extra))
    return jobs


def _do(job):
    cell, f, ups, training, n_threads, extra = job
    return fastcells_results(cell, f, ups, training, n_threads, **extra)


def test_four_threads_equal_serial():
    jobs = _jobs()
    serial = [_do(j) for j in jobs]

    def worker(w):
        order = list(range(len(jobs)))
        np.random.default_rng(w).shuffle(order)   # different interleavings per thread
        out = {}
        for _ in range(3):
            for j in order:
                out.setdefault(j, []).append(_do(jobs[j]))
        return out

    results = run_concurrently(worker, 4)
    for w in range(4):
        for j, runs in results[w].items():
            for got in runs:
                assert_results_equal(got, serial[j])


def test_thread_pool_shared_inputs():
    """Many concurrent calls reading the very same input arrays (read-only sharing)."""
    rng = np.random.default_rng(1)
    f, ups = build_call("lstm", np.dtype(np.float32), 6, 9, 7, 12, None, rng)
    expected = fastcells_results("lstm", f, ups, True, 2)
    with ThreadPoolExecutor(max_workers=4) as pool:
        outs = list(pool.map(lambda _: fastcells_results("lstm", f, ups, True, 2), range(16)))
    for got in outs:
        assert_results_equal(got, expected)


# ------------------------------------------------------------------------------ GIL
def _long_call_args(cell, target_seconds=0.1):
    """A problem sized (by timing one inference forward after a warm-up) so that one
    single-threaded forward takes about ``target_seconds``. B = 1 keeps the saved activations
    small (tens of MB) while each step still costs a matrix-vector product with W_hh."""
    rng = np.random.default_rng(0)
    B, I, H = 1, 32, 128

    def make(T):
        return build_call(cell, np.dtype(np.float32), T, B, I, H, None, rng)

    f, ups = make(1000)
    call_forward(fastcells, cell, f, training=False, n_threads=1)     # warm-up
    t0 = time.perf_counter()
    call_forward(fastcells, cell, f, training=False, n_threads=1)
    per_step = (time.perf_counter() - t0) / 1000
    T = int(min(30000, max(1000, target_seconds / max(per_step, 1e-7))))
    return make(T)


def _counter_ratio(fn):
    """(counts while fn runs) / (counts during a sleep of the same length): ~1 when fn releases
    the GIL (and a core is free), ~0 when it holds the GIL."""
    count = [0]
    stop = threading.Event()
    running = threading.Event()

    def counter():
        running.set()
        n = 0
        while not stop.is_set():
            n += 1
            count[0] = n

    th = threading.Thread(target=counter, daemon=True)
    th.start()
    running.wait()
    time.sleep(0.02)
    c0 = count[0]
    t0 = time.perf_counter()
    fn()
    dt = time.perf_counter() - t0
    c1 = count[0]
    time.sleep(0.01)
    c2 = count[0]
    time.sleep(dt)
    c3 = count[0]
    stop.set()
    th.join()
    during, baseline = c1 - c0, c3 - c2
    return during / max(baseline, 1), dt


def _best_ratio(fn, tries=3):
    best = 0.0
    for _ in range(tries):
        r, dt = _counter_ratio(fn)
        best = max(best, r)
        if best > 0.25:
            break
    return best, dt


@pytest.fixture(scope="module")
def switch_interval():
    old = sys.getswitchinterval()
    sys.setswitchinterval(0.005)
    yield
    sys.setswitchinterval(old)


def test_control_gil_holding_call_is_detected(switch_interval):
    """The measurement works: list.sort (C code that holds the GIL) stalls the counter."""
    data = np.random.default_rng(0).random(1_000_000).tolist()
    ratio, dt = _best_ratio(lambda: sorted(data), tries=1)
    assert dt > 0.05, "control call too short to be meaningful"
    assert ratio < 0.2, f"counter advanced {ratio:.2f}x during a GIL-holding call"


@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn_tanh"])
def test_kernels_release_the_gil(switch_interval, kind):
    """Forward (inference and training) and backward each let a pure-Python thread run."""
    f, ups = _long_call_args(kind)
    holder = {}

    def fwd_inference():
        call_forward(fastcells, kind, f, training=False, n_threads=1)

    def fwd_training():
        holder["ws"] = call_forward(fastcells, kind, f, training=True, n_threads=1)[-1]

    def bwd():
        call_backward(fastcells, kind, ups, holder.pop("ws"))

    for name, fn in (("forward(training=False)", fwd_inference),
                     ("forward(training=True)", fwd_training), ("backward", bwd)):
        best, dt = 0.0, 0.0
        for _ in range(3):
            if name == "backward" and "ws" not in holder:
                fwd_training()
            r, dt = _counter_ratio(fn)
            best = max(best, r)
            if best > 0.25:
                break
        print(f"{kind} {name}: {dt * 1e3:.0f} ms, counter ratio {best:.2f}")
        assert best > 0.25, (
            f"{kind} {name}: a Python thread advanced only {best:.2f}x its sleeping-baseline "
            f"rate during a {dt * 1e3:.0f} ms call: the GIL looks held")


# ------------------------------------------------------------------------------ shared workspace
@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn_tanh"])
def test_concurrent_backward_on_one_workspace(cell):
    """Two threads call backward with the same workspace at the same moment: one gets the
    correct gradients, the other the documented RuntimeError (workspace consumed). Never both
    running on the same saved activations (that silently corrupts the gradients)."""
    rng = np.random.default_rng(0)
    f, ups = build_call(cell, np.dtype(np.float64), 40, 8, 16, 32, None, rng)
    ref_ws = call_forward(fastcells, cell, f, n_threads=1)[-1]
    expected = call_backward(fastcells, cell, ups, ref_ws)
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)   # switch threads as often as possible to provoke the race
    problems = []
    try:
        for trial in range(60):
            ws = call_forward(fastcells, cell, f, n_threads=1)[-1]
            barrier = threading.Barrier(2)
            out = [None, None]

            def run(i):
                barrier.wait()
                try:
                    out[i] = call_backward(fastcells, cell, ups, ws)
                except BaseException as e:  # noqa: BLE001
                    out[i] = e

            ts = [threading.Thread(target=run, args=(i,)) for i in range(2)]
            for t in ts:
                t.start()
            for t in ts:
                t.join()
            ok = [o for o in out if isinstance(o, tuple)]
            errs = [o for o in out if not isinstance(o, tuple)]
            if len(ok) != 1 or not all(isinstance(e, RuntimeError) for e in errs):
                problems.append(f"trial {trial}: {len(ok)} succeeded, errors "
                                f"{[type(e).__name__ + ': ' + str(e)[:60] for e in errs]}")
            for o in ok:
                if not all((a is None and b is None) or np.array_equal(a, b)
                           for a, b in zip(o, expected)):
                    problems.append(f"trial {trial}: wrong gradients")
    finally:
        sys.setswitchinterval(old)
    assert not problems, f"{len(problems)} bad trials of 60, e.g.: " + "; ".join(problems[:3])


def test_blas_fallback_limit_without_a_per_thread_setter(monkeypatch):
    """Without OpenBLAS's per-thread setter, a multi-threaded call limits SciPy's BLAS to one
    thread for its duration (process-wide, via threadpoolctl) and restores it afterwards; with
    the setter, or with one thread, the context changes nothing."""
    from fastcells import _threads

    c = _threads._controller()
    if c is None:
        pytest.skip("threadpoolctl does not see SciPy's BLAS")
    before = c.num_threads
    with _threads.blas_fallback_limit(1):
        assert c.info()["num_threads"] == before
    monkeypatch.setattr(_threads, "set_threads_local_address", lambda: 0)
    with _threads.blas_fallback_limit(2):
        assert c.info()["num_threads"] == 1
    assert c.info()["num_threads"] == before
    # and a kernel call through the fallback still gives the sequential bits
    rng = np.random.default_rng(3)
    f, ups = build_call("gru", np.dtype(np.float32), 5, 4, 3, 6, None, rng)
    from fastcells import _api
    monkeypatch.setattr(_api, "set_threads_local_address", lambda: 0)
    got = fastcells_results("gru", f, ups, True, 2)
    monkeypatch.undo()
    want = fastcells_results("gru", f, ups, True, 2)
    assert_results_equal(got, want)
