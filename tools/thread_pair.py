"""How much the batch split's shared layout costs: one call on two threads against two calls
on one thread each, run at the same time from two Python threads (the kernels release the GIL).

Both do the same work per thread: B/2 batch rows of every step with the same kernels. The
two-thread call keeps both threads' rows of a step side by side in the same pages of its
arrays (y, the gates, the saved states); the two one-thread calls each have arrays of their
own. On the Xeon of 2026-12-07 the two-thread call took 1.17-1.45x the time per step at
H = 64 (README, "The small shape and 1.10x the floor"): that gap is what a thread-blocked
layout of the time loop's buffers could win back.

    python tools/thread_pair.py rnn --mode infer -H 64
    python tools/thread_pair.py gru --mode train -B 16 -T 640 -I 32 -H 64

``--mode infer`` and ``--mode train`` time forward passes (``train``: the training forward,
which saves the workspace); ``--mode step`` a training step (that forward and the backward).
Run with OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE unset, like the benchmark.
"""
import argparse
import threading
import time

import numpy as np

import fastcells as fc
from fastcells import bench


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("cell", choices=["lstm", "gru", "rnn"])
    ap.add_argument("--mode", choices=["infer", "train", "step"], default="infer")
    ap.add_argument("-B", type=int, default=16, help="batch of the two-thread call (even)")
    ap.add_argument("-T", type=int, default=640)
    ap.add_argument("-I", type=int, default=32)
    ap.add_argument("-H", type=int, default=64)
    ap.add_argument("--calls", type=int, default=100, help="calls per measurement")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    if args.B < 2 or args.B % 2:
        ap.error("-B must be even and at least 2")
    bench.keep_freed_memory()

    def make(B, n_threads):
        p = bench.make_problem(args.cell, B, args.T, args.I, args.H, np.float32)
        if args.mode == "step":
            return bench.step_fn(fc, args.cell, p, "train", n_threads)
        a = bench.forward_args(args.cell, p)
        fwd = getattr(fc, f"{args.cell}_forward")
        return lambda: fwd(*a, training=args.mode == "train", n_threads=n_threads)

    both = make(args.B, 2)
    halves = [make(args.B // 2, 1), make(args.B // 2, 1)]
    for f in [both] + halves:
        for _ in range(5):
            f()

    def per_step(fns):
        """us per step of running each of fns `calls` times, the fns in threads of their own."""
        def run(f):
            for _ in range(args.calls):
                f()
        threads = [threading.Thread(target=run, args=(f,)) for f in fns]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return (time.perf_counter() - t0) / args.calls / args.T * 1e6

    print(f"{args.cell} {args.mode} B={args.B} T={args.T} I={args.I} H={args.H}, us per step:")
    for _ in range(args.repeats):
        alone = per_step(halves[:1])
        pair = per_step(halves)
        two = per_step([both])
        print(f"  one thread, B/2 alone {alone:8.3f} | two 1-thread calls at once {pair:8.3f} | "
              f"one 2-thread call on B {two:8.3f} | ratio {two / pair:.2f}")


if __name__ == "__main__":
    main()
