"""Check and time the slice-mode prototypes of tools/slice_prototype.pyx against the current
kernels (a training step: forward with workspace + backward, 2 threads).

    cat tools/slice_prototype.pyx >> src/fastcells/_kernels.pyx
    python setup.py build_ext --inplace
    python tools/slice_prototype.py rnn 16,64,32,64
    python tools/slice_prototype.py lstm 16,64,32,64
    python tools/slice_prototype.py gru 16,64,32,64
    git checkout src/fastcells/_kernels.pyx && python setup.py build_ext --inplace

Prints each output's largest error relative to the float64 reference, then paired timings.
Run with OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE unset, like the benchmark.
"""
import argparse
import time

import numpy as np

import fastcells as fc
from fastcells import _kernels, bench, reference


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("cell", choices=["rnn", "lstm", "gru"])
    ap.add_argument("shape", help="B,T,I,H")
    ap.add_argument("--calls", type=int, default=500)
    args = ap.parse_args()
    B, T, I, H = (int(v) for v in args.shape.split(","))
    lstm = args.cell == "lstm"
    G = {"lstm": 4, "gru": 3, "rnn": 1}[args.cell] * H
    bench.keep_freed_memory()
    p = bench.make_problem(args.cell, B, T, I, H, np.float32)
    bias = (p["b_ih"] + p["b_hh"]).astype(np.float32)
    flat = lambda a: a.reshape(-1)

    def slice_step():
        f32 = lambda *shape: np.empty(shape, np.float32)
        y, h_n, dx, dh0 = f32(T, B, H), f32(B, H), f32(T, B, I), f32(B, H)
        dw_ih, dw_hh, db = f32(G, I), f32(G, H), f32(G)
        if lstm:
            c_n, dc0 = f32(B, H), f32(B, H)
            _kernels.slice_lstm_step(flat(y), flat(h_n), flat(c_n), flat(dx), flat(dh0),
                                     flat(dc0), flat(dw_ih), flat(dw_hh), db, flat(p["x"]),
                                     flat(p["h0"]), flat(p["c0"]), flat(p["w_ih"]),
                                     flat(p["w_hh"]), bias, flat(p["dy"]), T, B, I, H)
            return y, h_n, c_n, dx, dh0, dc0, dw_ih, dw_hh, db
        if args.cell == "gru":
            db2 = f32(G + H)             # db_ih, then db_hh's n part (its r, z parts = db_ih's)
            _kernels.slice_gru_step(flat(y), flat(h_n), flat(dx), flat(dh0), flat(dw_ih),
                                    flat(dw_hh), db2, db2, flat(p["x"]), flat(p["h0"]),
                                    flat(p["w_ih"]), flat(p["w_hh"]), p["b_ih"], p["b_hh"],
                                    flat(p["dy"]), T, B, I, H)
            db_hh = np.concatenate([db2[:2 * H], db2[G:]])
            return y, h_n, dx, dh0, dw_ih, dw_hh, db2[:G], db_hh
        _kernels.slice_rnn_step(flat(y), flat(h_n), flat(dx), flat(dh0), flat(dw_ih),
                                flat(dw_hh), db, flat(p["x"]), flat(p["h0"]), flat(p["w_ih"]),
                                flat(p["w_hh"]), bias, flat(p["dy"]), T, B, I, H)
        return y, h_n, dx, dh0, dw_ih, dw_hh, db

    d = lambda a: a.astype(np.float64)
    args64 = [d(a) for a in bench.forward_args(args.cell, p)]
    *fwd, ws = getattr(reference, f"{args.cell}_forward")(*args64)
    grads = getattr(reference, f"{args.cell}_backward")(d(p["dy"]), None,
                                                         *((None,) if lstm else ()), ws)
    gru = args.cell == "gru"
    exact = list(fwd) + list(grads if gru else grads[:-1])   # LSTM, RNN: db_ih == db_hh
    names = (["y", "h_n", "c_n", "dx", "dh0", "dc0"] if lstm else ["y", "h_n", "dx", "dh0"]) + (
        ["dw_ih", "dw_hh", "db_ih", "db_hh"] if gru else ["dw_ih", "dw_hh", "db"])
    for name, got, ref in zip(names, slice_step(), exact):
        print(f"{name} {np.abs(got - ref).max() / max(np.abs(ref).max(), 1e-30):.1e}", end="; ")
    print()
    current = bench.step_fn(fc, args.cell, p, "train", 2)
    for _ in range(20):
        current()
        slice_step()
    for _ in range(4):
        times = []
        for f in (current, slice_step):
            t0 = time.perf_counter()
            for _ in range(args.calls):
                f()
            times.append((time.perf_counter() - t0) / args.calls * 1e6)
        print(f"{args.cell} training step {args.shape}: current {times[0]:.1f} us, slice "
              f"prototype {times[1]:.1f} us, ratio {times[1] / times[0]:.3f}")


if __name__ == "__main__":
    main()
