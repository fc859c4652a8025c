"""Paired A/B timing of two variants of fastcells, alternating call by call in one process.

On a shared VM the machine's speed drifts by 10-100% within minutes, so timing variant A for a
while and then variant B (or two processes one after the other) cannot resolve differences
below ~15%. Alternating the two variants call by call, with the order flipped every round, and
comparing the medians of a few hundred calls resolved 2-3% here (identical variants came out
within +-2%). Every kernel decision of 2026-11-30 in issue 6 was made this way.

A variant is selected by running a snippet of Python before each call, with ``fc`` (fastcells),
``_api``, ``_kernels``, ``layers`` and ``os`` in scope. Or, with ``--old-so``, variant A is the
compiled ``_kernels`` module from another build (copy the .so aside before rebuilding):

    python tools/ab_compare.py --rounds 300 --a "_api._FORCED_SPLIT = 0" \\
        --b "_api._FORCED_SPLIT = 2" lstm:small:train gru:latency:infer:1
    cp src/fastcells/_kernels*.so /tmp/old/ && <edit, rebuild> && \\
        python tools/ab_compare.py --old-so /tmp/old/_kernels*.so lstm:large:infer

Configurations are cell:shape:mode[:threads] with the benchmark's shapes (fastcells.bench) or
BxTxIxH (e.g. rnn:16x64x32x60:train).
Run with OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE unset, like the benchmark.

Call by call, a variant that uses a second thread pays for the other variant's idle worker (a
one-thread call lets libgomp's worker go idle), so changes of the thread count need blocks:
``--block 30`` times 30 identical calls per variant and round (after 5 untimed ones) and
reports the median of the per-round ratios of the blocks' medians (2026-12-02, Zen 5 VM: the
thread-threshold change measured 1.00-1.01x call by call and 0.64-0.77x in blocks, which the
benchmark's own blocks confirmed).
"""
import argparse
import importlib.util
import os
import time

import numpy as np

import fastcells as fc
from fastcells import _api, _kernels, bench, layers


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("configs", nargs="+", help="cell:shape:mode[:threads], shape a name or BxTxIxH")
    p.add_argument("--rounds", type=int, default=200, help="calls per variant")
    p.add_argument("--a", default="", help="snippet run before each call of variant A")
    p.add_argument("--b", default="", help="snippet run before each call of variant B")
    p.add_argument("--old-so", default=None, help="variant A uses this compiled _kernels")
    p.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    p.add_argument("--block", type=int, default=1,
                   help="calls per variant and round (1: alternate call by call)")
    args = p.parse_args()
    bench.keep_freed_memory()
    scope = dict(fc=fc, _api=_api, _kernels=_kernels, layers=layers, os=os)
    new_kernels = _api._kernels
    old_kernels = None
    if args.old_so:
        spec = importlib.util.spec_from_file_location("fastcells._kernels", args.old_so)
        old_kernels = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(old_kernels)

    def select(v):
        if old_kernels is not None:
            _api._kernels = old_kernels if v == "A" else new_kernels
        exec(args.a if v == "A" else args.b, scope)

    for cfg in args.configs:
        parts = cfg.split(":")
        cell, shape, mode = parts[:3]
        threads = int(parts[3]) if len(parts) > 3 else 2
        B, T, I, H = (bench.SHAPES[shape] if shape in bench.SHAPES
                      else (int(v) for v in shape.split("x")))
        f = bench.step_fn(fc, cell, bench.make_problem(cell, B, T, I, H, np.dtype(args.dtype)), mode,
                          threads)
        times = {"A": [], "B": []}
        for v in times:                      # warm both up
            select(v)
            f()
            f()
        for r in range(args.rounds):
            for v in ("A", "B") if r % 2 == 0 else ("B", "A"):
                select(v)
                if args.block > 1:
                    for _ in range(5):
                        f()
                block = []
                for _ in range(args.block):
                    t = time.perf_counter()
                    f()
                    block.append(time.perf_counter() - t)
                times[v].append(np.median(block))
        select("B")
        _api._kernels = new_kernels
        a, b = (np.median(times[v]) * 1e3 for v in ("A", "B"))
        paired = np.median(np.array(times["B"]) / np.array(times["A"]))
        print(f"{cfg:24s} A {a:10.3f} ms  B {b:10.3f} ms  B/A {b / a:.3f}  paired {paired:.3f}",
              flush=True)


if __name__ == "__main__":
    main()
