"""Benchmark report: fastcells vs the NumPy reference, PyTorch (if installed) and the GEMM floor.

    python -m fastcells bench [--quick] [--cells lstm,gru,rnn] [--dtype float32,float64]
                              [--threads 1,2] [--modes train,infer] [--shapes ...]
                              [--json out.json] [--plot out.png] [--fail-if-slower]

Timing method: each configuration is warmed up, then the implementations are timed in
alternating blocks (one block of each per round, order rotated every round, each block starting
with an untimed settle period) so that a machine drifting in speed affects all of them alike and
no implementation pays for the idle threads of the one before; the figures are medians (and,
for the sanity gate, minima) over all timed calls. Ratios are taken
within one run. Unset OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE in the benchmark command only (they
select a slower OpenBLAS kernel on some machines); the header names the kernel that ran.
"""
import argparse
import ctypes
import datetime
import json
import os
import platform
import sys
import time

import numpy as np

from . import _api, reference
from ._threads import blas_info, effective_n_threads, set_threads_local_address

# (B, T, I, H) -- from batch-1 latency to large
SHAPES = {
    "latency": (1, 100, 64, 128),
    "small": (16, 64, 32, 64),
    "charrnn": (32, 100, 128, 256),
    "medium": (64, 100, 256, 512),
    "large": (64, 50, 512, 1024),
}
# The quick run (CI's sanity gate, ~30 s) covers batch-1 and small shapes; the default run
# covers the larger ones.
QUICK_SHAPES = ("latency", "small")
GATES = {"lstm": 4, "gru": 3, "rnn": 1}


# ------------------------------------------------------------------------------ problems
def make_problem(cell, B, T, I, H, dtype, seed=0):
    """Random inputs and PyTorch-style initialised weights for one configuration.

    The arrays start on 64-byte boundaries, as PyTorch's tensors and fastcells' layer
    parameters do, so that a run does not depend on where malloc put them (the Elman RNN's
    batch-1 backward reads W_hh in place: 1.06-1.09x the time when it is misaligned)."""
    rng = np.random.default_rng(seed)
    G = GATES[cell]
    k = 1.0 / np.sqrt(H)
    dtype = np.dtype(dtype)

    def aligned(a):
        out = _api._empty64(a.shape, dtype)
        out[...] = a
        return out

    return {name: aligned(a) for name, a in dict(
        x=rng.standard_normal((T, B, I)),
        h0=0.1 * rng.standard_normal((B, H)),
        c0=0.1 * rng.standard_normal((B, H)),
        w_ih=rng.uniform(-k, k, (G * H, I)),
        w_hh=rng.uniform(-k, k, (G * H, H)),
        b_ih=rng.uniform(-k, k, G * H),
        b_hh=rng.uniform(-k, k, G * H),
        dy=rng.standard_normal((T, B, H)),
    ).items()}


def forward_args(cell, p):
    """The positional arguments of ``{cell}_forward`` for a problem of make_problem."""
    return (p["x"], p["h0"]) + ((p["c0"],) if cell == "lstm" else ()) + (
        p["w_ih"], p["w_hh"], p["b_ih"], p["b_hh"])


def step_fn(mod, cell, p, mode, n_threads):
    """A zero-argument callable: inference forward, or training forward + full backward."""
    training = mode == "train"
    args = forward_args(cell, p)
    fwd = getattr(mod, f"{cell}_forward")
    bwd = getattr(mod, f"{cell}_backward")
    dy = p["dy"]

    if not training:
        return lambda: fwd(*args, training=False, n_threads=n_threads)
    if cell == "lstm":
        def run():
            *_, ws = fwd(*args, training=True, n_threads=n_threads)
            bwd(dy, None, None, ws)
    else:
        def run():
            *_, ws = fwd(*args, training=True, n_threads=n_threads)
            bwd(dy, None, ws)
    return run


def minimal_workspace_bytes(cell, B, T, H, itemsize):
    """What a training step must keep between forward and backward: the saved gate activations
    and states (LSTM: gates 4H + c + h per step and row; GRU: gates 3H + the n-gate's hidden part
    + h; RNN: h)."""
    per = {"lstm": 6 * H, "gru": 5 * H, "rnn": H}[cell]
    return T * B * per * itemsize


def memory_use(cell, p, mode, n_threads):
    """Peak bytes fastcells allocates for one step beyond the arrays it returns (tracemalloc
    sees NumPy's allocations): forward (+ backward for training)."""
    import tracemalloc
    step_args = forward_args(cell, p)
    fwd, bwd = getattr(_api, f"{cell}_forward"), getattr(_api, f"{cell}_backward")
    training = mode == "train"
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        *outs, ws = fwd(*step_args, training=training, n_threads=n_threads)
        if training:
            extra = (None,) if cell == "lstm" else ()
            outs += [g for g in bwd(p["dy"], None, *extra, ws) if g is not None]
            del ws
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    return peak - sum(a.nbytes for a in outs)


def torch_step_fn(cell, p, mode, n_threads):
    """The same step through torch.nn.LSTM/GRU/RNN (CPU), or None if torch is missing."""
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(n_threads)
    T, B, I = p["x"].shape
    H = p["w_hh"].shape[1]
    dtype = torch.float32 if p["x"].dtype == np.float32 else torch.float64
    cls = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU, "rnn": torch.nn.RNN}[cell]
    m = cls(I, H).to(dtype)
    with torch.no_grad():
        for name in ("w_ih", "w_hh", "b_ih", "b_hh"):
            getattr(m, {"w_ih": "weight_ih_l0", "w_hh": "weight_hh_l0", "b_ih": "bias_ih_l0",
                        "b_hh": "bias_hh_l0"}[name]).copy_(torch.from_numpy(p[name]))
    x = torch.from_numpy(p["x"])
    h0 = torch.from_numpy(p["h0"])[None]
    hx = (h0, torch.from_numpy(p["c0"])[None]) if cell == "lstm" else h0
    dy = torch.from_numpy(p["dy"])
    if mode == "infer":
        m.eval()

        def run():
            with torch.inference_mode():
                m(x, hx)
        return run
    xg = x.clone().requires_grad_(True)

    def run():
        for q in m.parameters():
            q.grad = None
        xg.grad = None
        y, _ = m(xg, hx)
        y.backward(dy)
    return run


def floor_fn(cell, p, mode, n_threads):
    """The GEMM floor for this configuration: callables for both schedules (see _floor.pyx)."""
    from . import _floor
    T, B, I = p["x"].shape
    H = p["w_hh"].shape[1]
    G = GATES[cell]
    dt = p["x"].dtype
    rng = np.random.default_rng(1)

    def buf(*shape):
        return (0.01 * rng.standard_normal(shape)).astype(dt).reshape(-1)
    bufs = (p["x"].reshape(-1), p["w_ih"].reshape(-1), p["w_hh"].reshape(-1),
            np.ascontiguousarray(p["w_hh"].T).reshape(-1), buf(T, B, G * H), buf(T, B, H),
            buf(T, B, I), buf(G * H, I), buf(G * H, H), buf(B, H))
    addr = set_threads_local_address()
    training = mode == "train"
    fns = []
    # whole-batch (n_par 1) and, with several threads, the split schedule of the kernels
    for n_par in sorted({1, max(2, min(n_threads, B)) if n_threads > 1 else 1}):
        fns.append(lambda n_par=n_par: _floor.run_sequence(
            *bufs, T, B, I, H, G, training, n_threads, n_par, addr))
    return fns


def gemm_flops(cell, B, T, I, H, mode):
    """FLOPs of the necessary GEMMs (2 per multiply-add)."""
    GH = GATES[cell] * H
    fwd = 2.0 * T * B * GH * (I + H)
    if mode == "infer":
        return fwd
    return fwd + 2.0 * T * B * GH * H + 2.0 * T * B * GH * I * 2 + 2.0 * T * B * GH * H


def peak_gflops(dtype, n_threads, n=1536):
    """Practical FLOP peak: a large square GEMM through the same BLAS."""
    from . import _floor
    rng = np.random.default_rng(2)
    A = rng.standard_normal(n * n).astype(dtype)
    Bm = rng.standard_normal(n * n).astype(dtype)
    C = np.empty(n * n, dtype)
    addr = set_threads_local_address()
    _floor.run_gemm(A, Bm, C, n, 1, n_threads, addr)
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        _floor.run_gemm(A, Bm, C, n, 2, n_threads, addr)
        best = min(best, (time.perf_counter() - t) / 2)
    return 2.0 * n ** 3 / best / 1e9


# ------------------------------------------------------------------------------ timing
def time_paired(fns, budget_s, min_rounds=5, max_rounds=20, settle_s=0.15):
    """Median and best seconds of each callable, timed in rotated alternating blocks.

    Each round runs every implementation once as a block, in an order rotated from round to
    round so that a drifting machine affects all alike. A block first runs the implementation
    untimed for ``settle_s`` (at least one call): idle worker threads of the implementation
    before it -- OpenBLAS's thread server keeps spinning ~100 ms after NumPy's last matrix
    product (measured here: fastcells ran at half speed for that long after the reference),
    libgomp's for milliseconds -- would otherwise be charged to this one, and an idle CPU
    wakes slowly. Then it times calls worth about ``budget_s / rounds``.
    At least 5 rounds: with 3 (one timed call per block at the large shape) one slow spell of
    the machine decided a median -- LSTM large inference came out at 224 ms in a full run,
    160 ms on its own, and 103-115 ms in a loop of its own calls (2026-12-02, Zen 5 VM).
    """
    names = list(fns)
    est = {}
    for n in names:                                  # warm-up; estimates each call's cost
        t = time.perf_counter()
        fns[n]()
        est[n] = max(time.perf_counter() - t, 1e-6)
    round_s = sum(est.values())
    rounds = int(min(max_rounds, max(min_rounds, budget_s / max(round_s, 1e-9))))
    samples = {n: [] for n in names}
    for r in range(rounds):
        k = r % len(names)
        for n in names[k:] + names[:k]:
            t_end = time.perf_counter() + settle_s
            fns[n]()
            while time.perf_counter() < t_end:
                fns[n]()
            calls = max(1, int(round(budget_s / rounds / len(names) / est[n])))
            for _ in range(min(calls, 50)):
                t = time.perf_counter()
                fns[n]()
                samples[n].append(time.perf_counter() - t)
    return ({n: float(np.median(v)) for n, v in samples.items()},
            {n: float(np.min(v)) for n, v in samples.items()}, rounds)


# ------------------------------------------------------------------------------ report
def keep_freed_memory():
    """Stop glibc's malloc from handing freed memory back to the OS between calls.

    By default glibc trims the top of the heap (and unmaps large blocks) as soon as the arrays of
    a call are freed, so every call faults its fresh pages in again: measured on the bench
    machine, an LSTM charrnn training step paid ~4060 page faults (16 MB) per call, 54-68 ms
    instead of 35-50 ms, and the GRU small step 0 or ~500 faults depending on the process's
    history (1.1-1.6 vs 1.8-2.5 ms). That cost and its randomness belong to the allocator, not
    to any of the implementations compared; the same setting applies to all of them in this
    process (the GEMM floor allocates nothing). Returns a description for the header, or None
    where mallopt is unavailable (not glibc). Users get the same with the environment variables
    MALLOC_TRIM_THRESHOLD_ / MALLOC_MMAP_THRESHOLD_ (README, "Performance notes")."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return None
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
    trim, mmap = 1 << 30, 32 << 20      # 32 MiB is glibc's largest mmap threshold on 64-bit
    if mallopt(M_TRIM_THRESHOLD, trim) != 1 or mallopt(M_MMAP_THRESHOLD, mmap) != 1:
        return None
    return f"glibc mallopt: trim threshold {trim >> 20} MiB, mmap threshold {mmap >> 20} MiB"


def machine_header(threads, dtypes):
    info = blas_info()
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    import scipy
    from . import __version__
    h = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "fastcells": __version__,
        "blas": f"{info.get('internal_api')} {info.get('version')}",
        "blas_kernel": info.get("architecture"),
        "blas_threading": info.get("threading_layer"),
        "blas_num_threads": info.get("num_threads"),
        "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE"),
        "threads": threads,
    }
    try:
        import torch
        h["torch"] = torch.__version__
    except ImportError:
        h["torch"] = None
    h["peak_gflops"] = peaks(threads, dtypes)
    return h


def peaks(threads, dtypes):
    """The practical peak for every dtype and thread count of a run, as the header shows it."""
    return {f"{np.dtype(dt).name}/{nt}thr": round(peak_gflops(dt, nt), 1)
            for dt in dtypes for nt in threads}


PEAK_DRIFT = 0.15      # relative change of the peak over a run that the report warns about


def peak_drift_warning(start, end):
    """A warning line if the practical peak moved by more than PEAK_DRIFT during the run (the
    shared host got busier or calmer: configurations timed at different moments then met
    different machines, which the paired timing within a configuration does not undo), else
    None. On this project's 2-vCPU guest one run started at 312 GFLOP/s and ended near 200,
    and its large-shape ratios against torch moved by up to 2x."""
    moved = {k: (start[k], end[k]) for k in start if k in end and start[k] > 0
             and abs(end[k] / start[k] - 1) > PEAK_DRIFT}
    if not moved:
        return None
    what = ", ".join(f"{k} {a} -> {b}" for k, (a, b) in moved.items())
    return (f"WARNING: the practical peak moved during the run ({what} GFLOP/s): the host's "
            f"load changed; compare ratios across configurations with care")


def format_table(rows, have_torch):
    cols = ["cell", "mode", "shape", "B,T,I,H", "dtype", "thr", "fastcells ms", "ref ms",
            "vs ref"]
    if have_torch:
        cols += ["torch ms", "vs torch"]
    cols += ["floor ms", "x floor", "GFLOP/s"]
    lines = []
    for r in rows:
        line = [r["cell"], r["mode"], r["shape"], ",".join(map(str, r["dims"])), r["dtype"],
                str(r["threads"]), f"{r['fastcells_ms']:.3f}", f"{r['reference_ms']:.3f}",
                f"{r['speedup_vs_reference']:.2f}x"]
        if have_torch:
            line += ([f"{r['torch_ms']:.3f}", f"{r['speedup_vs_torch']:.2f}x"]
                     if r.get("torch_ms") is not None else ["-", "-"])
        line += [f"{r['floor_ms']:.3f}", f"{r['fastcells_over_floor']:.2f}",
                 f"{r['gflops']:.1f}"]
        lines.append(line)
    widths = [max(len(c), *(len(l[i]) for l in lines)) if lines else len(c)
              for i, c in enumerate(cols)]
    out = [" | ".join(c.rjust(w) for c, w in zip(cols, widths)),
           "-|-".join("-" * w for w in widths)]
    out += [" | ".join(v.rjust(w) for v, w in zip(l, widths)) for l in lines]
    return "\n".join(out)


def format_memory(rows):
    """Memory table: what a step allocates beyond its results (tracemalloc), against the
    minimal training workspace; inference in units of one (B, H) state."""
    lines = ["memory (fastcells, one step; extra = peak allocation beyond the returned arrays)",
             "cell |  mode |   shape |   dtype | extra MiB | minimal MiB | extra / minimal "
             "| extra / (B*H state)"]
    for r in rows:
        B, T, I, H = r["dims"]
        state = B * H * np.dtype(r["dtype"]).itemsize
        mn = r["minimal_workspace_bytes"]
        lines.append(
            f"{r['cell']:>4} | {r['mode']:>5} | {r['shape']:>7} | {r['dtype']:>7} | "
            f"{r['extra_bytes'] / 2**20:9.2f} | "
            + (f"{mn / 2**20:11.2f} | {r['extra_over_minimal']:15.2f} | {'':>19}" if mn else
               f"{'':>11} | {'':>15} | {r['extra_bytes'] / state:19.1f}"))
    return "\n".join(lines)


def plot(rows, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(f"matplotlib is not installed: no plot written ({path}); pip install matplotlib")
        return False
    labels = [f"{r['cell']} {r['mode']}\n{r['shape']} {r['dtype'][-2:]} t{r['threads']}"
              for r in rows]
    xs = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(max(8, 0.55 * len(rows)), 5))
    w = 0.27
    ax.bar(xs - w, [r["speedup_vs_reference"] for r in rows], w, label="vs NumPy reference")
    if any(r.get("speedup_vs_torch") for r in rows):
        ax.bar(xs, [r.get("speedup_vs_torch") or 0 for r in rows], w, label="vs PyTorch")
    ax.bar(xs + w, [1.0 / r["fastcells_over_floor"] for r in rows], w,
           label="fraction of GEMM floor")
    ax.axhline(1.0, color="k", lw=0.8)
    ax.set_yscale("log")
    ax.set_ylabel("speedup (x), fraction of floor (log scale)")
    ax.set_xticks(xs)
    ax.set_xticklabels(labels, rotation=90, fontsize=7)
    ax.set_title("fastcells: speedup vs peers and fraction of the GEMM floor")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return True


def run(args):
    cells = [c.strip() for c in args.cells.split(",") if c.strip()]
    for c in cells:
        if c not in GATES:
            raise SystemExit(f"--cells: unknown cell {c!r} (lstm, gru, rnn)")
    dtypes = [np.dtype(d.strip()) for d in args.dtype.split(",")]
    for d in dtypes:
        if d not in (np.float32, np.float64):
            raise SystemExit(f"--dtype: {d} is not float32 or float64")
    threads = ([effective_n_threads()] if args.threads is None else
               [int(t) for t in args.threads.split(",")])
    modes = [m.strip() for m in args.modes.split(",")]
    for m in modes:
        if m not in ("train", "infer"):
            raise SystemExit(f"--modes: unknown mode {m!r} (train, infer)")
    shape_names = (args.shapes.split(",") if args.shapes else
                   list(QUICK_SHAPES if args.quick else SHAPES))
    for s in shape_names:
        if s not in SHAPES:
            raise SystemExit(f"--shapes: unknown shape {s!r} ({', '.join(SHAPES)})")
    budget = args.budget if args.budget is not None else (0.5 if args.quick else 1.0)
    # quick: fewer, shorter settle periods, but enough timed calls for a stable best-of
    timing = dict(min_rounds=2, max_rounds=3) if args.quick else {}

    malloc = keep_freed_memory() if args.malloc == "keep" else None
    header = machine_header(threads, dtypes)
    header["malloc"] = malloc or "default"
    print("fastcells benchmark")
    for k, v in header.items():
        print(f"  {k:18s} {v}")
    if header["OPENBLAS_CORETYPE"]:
        print("  WARNING: OPENBLAS_CORETYPE is set; it may select a slower BLAS kernel. "
              "Run as: env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python -m fastcells bench")
    have_torch = header["torch"] is not None
    if not have_torch:
        print("  note: PyTorch is not installed; the torch column is skipped "
              "(pip install torch to add it)")

    configs = [(cell, mode, s, dt, nt) for s in shape_names for cell in cells for mode in modes
               for dt in dtypes for nt in threads]
    try:
        from tqdm import tqdm
        progress = tqdm(configs, desc="benchmark", unit="cfg", file=sys.stderr,
                        disable=args.no_progress)
    except ImportError:
        progress = configs
    rows = []
    from threadpoolctl import threadpool_limits
    for cell, mode, s, dt, nt in progress:
        if hasattr(progress, "set_postfix_str"):
            progress.set_postfix_str(f"{cell} {mode} {s} {dt.name} t{nt}")
        elif not args.no_progress:
            print(f"  ... {cell} {mode} {s} {dt.name} t{nt}", file=sys.stderr, flush=True)
        B, T, I, H = SHAPES[s]
        p = make_problem(cell, B, T, I, H, dt)
        fns = {"fastcells": step_fn(_api, cell, p, mode, nt),
               "reference": step_fn(reference, cell, p, mode, nt)}
        tf = torch_step_fn(cell, p, mode, nt) if have_torch else None
        if tf is not None:
            fns["torch"] = tf
        for i, f in enumerate(floor_fn(cell, p, mode, nt)):
            fns[f"floor{i}"] = f
        with threadpool_limits(limits=nt, user_api="blas"):   # NumPy's BLAS for the reference
            med, best, rounds = time_paired(fns, budget, **timing)
        floor = min(v for k, v in med.items() if k.startswith("floor"))
        mem = memory_use(cell, p, mode, nt)
        mem_min = minimal_workspace_bytes(cell, B, T, H, dt.itemsize) if mode == "train" else None
        fc = med["fastcells"]
        row = dict(cell=cell, mode=mode, shape=s, dims=[B, T, I, H], dtype=dt.name,
                   threads=nt, rounds=rounds, fastcells_ms=fc * 1e3,
                   reference_ms=med["reference"] * 1e3,
                   speedup_vs_reference=med["reference"] / fc,
                   torch_ms=med["torch"] * 1e3 if "torch" in med else None,
                   speedup_vs_torch=med["torch"] / fc if "torch" in med else None,
                   floor_ms=floor * 1e3, fastcells_over_floor=fc / floor,
                   fastcells_best_ms=best["fastcells"] * 1e3,
                   reference_best_ms=best["reference"] * 1e3,
                   gflops=gemm_flops(cell, B, T, I, H, mode) / fc / 1e9,
                   extra_bytes=mem, minimal_workspace_bytes=mem_min,
                   extra_over_minimal=mem / mem_min if mem_min else None)
        rows.append(row)
    header["peak_gflops_end"] = peaks(threads, dtypes)
    drift = peak_drift_warning(header["peak_gflops"], header["peak_gflops_end"])
    print()
    print(f"  peak_gflops_end    {header['peak_gflops_end']}")
    if drift:
        print(f"  {drift}")
    print()
    print(format_table(rows, have_torch))
    print()
    print("vs ref / vs torch: speedup of fastcells (higher is better); x floor: fastcells time "
          "/ GEMM-floor time (1.00 = only the matrix products); GFLOP/s of the necessary GEMMs.")
    print()
    print(format_memory(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"header": header, "rows": rows}, f, indent=2)
        print(f"wrote {args.json}")
    if args.plot and plot(rows, args.plot):
        print(f"wrote {args.plot}")
    # The sanity gate compares best-of-rounds times: on a shared machine noise only ever adds
    # time, so the minimum is the robust estimate of what each implementation can do, while a
    # median ratio near 1.0 can flip either way from one run to the next. A configuration that
    # looks slower is timed again, fastcells against the reference alone, with five times the
    # budget, and the gate decides on that confirmation (sequential testing, not a tolerance).
    slower = [r for r in rows if r["fastcells_best_ms"] > r["reference_best_ms"]]
    if slower and args.fail_if_slower:
        from threadpoolctl import threadpool_limits
        for r in slower:
            B, T, I, H = r["dims"]
            p = make_problem(r["cell"], B, T, I, H, np.dtype(r["dtype"]))
            fns = {"fastcells": step_fn(_api, r["cell"], p, r["mode"], r["threads"]),
                   "reference": step_fn(reference, r["cell"], p, r["mode"], r["threads"])}
            with threadpool_limits(limits=r["threads"], user_api="blas"):
                _, best, _ = time_paired(fns, 5 * budget, min_rounds=5, max_rounds=10)
            print(f"re-measured {r['cell']} {r['mode']} {r['shape']} {r['dtype']} "
                  f"t{r['threads']}: fastcells {best['fastcells'] * 1e3:.3f} ms, reference "
                  f"{best['reference'] * 1e3:.3f} ms (best of rounds)")
            r["fastcells_best_ms"] = best["fastcells"] * 1e3
            r["reference_best_ms"] = best["reference"] * 1e3
        slower = [r for r in slower if r["fastcells_best_ms"] > r["reference_best_ms"]]
    median_slower = [r for r in rows if r["speedup_vs_reference"] < 1.0]
    if median_slower:
        print("\nmedian slower than the NumPy reference on: " + "; ".join(
            f"{r['cell']} {r['mode']} {r['shape']} {r['dtype']} t{r['threads']} "
            f"({r['speedup_vs_reference']:.2f}x)" for r in median_slower))
    if slower:
        print("\nbest-of-rounds slower than the NumPy reference on: " + "; ".join(
            f"{r['cell']} {r['mode']} {r['shape']} {r['dtype']} t{r['threads']} "
            f"({r['fastcells_best_ms']:.3f} vs {r['reference_best_ms']:.3f} ms)"
            for r in slower))
        if args.fail_if_slower:
            return 1
    elif args.fail_if_slower:
        print("\nsanity gate passed: fastcells is not slower than the NumPy reference on any "
              "configuration (best-of-rounds times)")
    return 0


def add_arguments(p):
    p.add_argument("--quick", action="store_true",
                   help="small shapes (latency, small), float32, short budget")
    p.add_argument("--cells", default="lstm,gru,rnn")
    p.add_argument("--dtype", default="float32", help="comma list: float32,float64")
    p.add_argument("--threads", default=None, help="comma list, default: effective threads")
    p.add_argument("--modes", default="train,infer", help="comma list: train,infer")
    p.add_argument("--shapes", default=None, help="comma list of " + ",".join(SHAPES))
    p.add_argument("--budget", type=float, default=None, help="seconds of timing per config")
    p.add_argument("--json", default=None, help="write results as JSON")
    p.add_argument("--plot", default=None, help="write a PNG plot (needs matplotlib)")
    p.add_argument("--fail-if-slower", action="store_true",
                   help="exit 1 if fastcells is slower than the NumPy reference anywhere "
                        "(best-of-rounds times)")
    p.add_argument("--malloc", choices=("keep", "default"), default="keep",
                   help="keep (default): glibc keeps freed memory for the next call instead of "
                        "returning it to the OS, so no implementation pays page faults for "
                        "fresh pages on every call; default: glibc's own trimming")
    p.add_argument("--no-progress", action="store_true")
