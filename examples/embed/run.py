"""Run the two embedding examples and measure the per-call cost of each way into the kernels.

    python setup.py build_ext --inplace    # once; run.py runs it itself if the modules are missing
    python run.py [--quick] [--threads N]

1. fc_embed_c (a C extension, LSTM) and fc_embed_cy (Cython, GRU) run a training forward +
   backward on random data in float32 and float64. Their results are compared with the NumPy
   reference (float64, on the same inputs) and with the Python API at the same n_threads, which
   must give the same bits: both reach the same kernels with the same thread plan.
2. The time per call of a tiny LSTM step (float32, T=1, B=1, I=32, H=32, one thread), where
   the per-call overhead dominates, through the Python API, the C extension called from Python,
   the C API through ctypes (fastcells.capi) and the C API from C (fc_embed_c.time_calls),
   for an inference forward and for a training forward + backward.

Exits 1 if a result is off (error above tolerance or not bitwise equal to the Python API).
"""
import argparse
import os
import subprocess
import sys
import time

import numpy as np

import fastcells
from fastcells import capi, reference

HERE = os.path.dirname(os.path.abspath(__file__))
# max |a - b| / max(max |b|, 1) against the float64 reference, as tests/conftest.py measures it
TOL = {np.float32: 1e-5, np.float64: 1e-12}
LSTM_OUT = ("y", "h_n", "c_n", "dx", "dh0", "dc0", "dw_ih", "dw_hh", "db_ih", "db_hh")
GRU_OUT = ("y", "h_n", "dx", "dh0", "dw_ih", "dw_hh", "db_ih", "db_hh")


def load_extensions():
    """Import fc_embed_c and fc_embed_cy from this directory, building them first if needed."""
    sys.path.insert(0, HERE)
    try:
        import fc_embed_c
        import fc_embed_cy
    except ImportError:
        cmd = [sys.executable, "setup.py", "build_ext", "--inplace"]
        print(f"building the extensions: (cd {HERE} && {' '.join(cmd[1:])})", flush=True)
        if subprocess.run(cmd, cwd=HERE).returncode != 0:
            print("error: the build failed; it needs a C compiler, Cython and setuptools.",
                  file=sys.stderr)
            sys.exit(2)
        import fc_embed_c
        import fc_embed_cy
    return fc_embed_c, fc_embed_cy


def problem(G, T, B, I, H, dtype, seed):
    """Inputs and upstream gradients of a G-gate cell, PyTorch's initialisation for weights."""
    rng = np.random.default_rng(seed)
    k = 1 / np.sqrt(H)

    def uniform(*shape):
        return rng.uniform(-k, k, shape).astype(dtype)

    def normal(*shape):
        return rng.standard_normal(shape).astype(dtype)

    p = dict(x=normal(T, B, I), h0=0.5 * normal(B, H), c0=0.5 * normal(B, H),
             w_ih=uniform(G * H, I), w_hh=uniform(G * H, H), b_ih=uniform(G * H),
             b_hh=uniform(G * H), dy=normal(T, B, H), dh_n=normal(B, H), dc_n=normal(B, H))
    if G != 4:
        del p["c0"], p["dc_n"]
    return p


def rel_error(a, b):
    b = np.asarray(b, np.float64)
    return float(np.abs(np.asarray(a, np.float64) - b).max() / max(np.abs(b).max(), 1.0))


def report(name, got, oracle, api, dtype):
    """Print the max error against the reference and the bitwise check; return True if good."""
    err = max(rel_error(got[k], oracle[k]) for k in oracle)
    same = all(got[k].tobytes() == api[k].tobytes() for k in api)
    ok = err <= TOL[dtype] and same
    print(f"  {name:<38} {np.dtype(dtype).name:<8} {err:9.1e} (tol {TOL[dtype]:.0e})"
          f"   {'yes' if same else 'NO'}{'' if ok else '   <-- FAILED'}")
    return ok


def check_lstm(fc_embed_c, dtype, n_threads):
    T, B, I, H = 6, 5, 7, 11
    p = problem(4, T, B, I, H, dtype, seed=1)
    out = {"y": (T, B, H), "h_n": (B, H), "c_n": (B, H), "dx": (T, B, I), "dh0": (B, H),
           "dc0": (B, H), "dw_ih": (4 * H, I), "dw_hh": (4 * H, H), "db_ih": (4 * H,),
           "db_hh": (4 * H,)}
    got = {k: np.empty(shape, dtype) for k, shape in out.items()}
    fc_embed_c.lstm_train(**p, **got, T=T, B=B, I=I, H=H, n_threads=n_threads)

    fwd = [p[k] for k in ("x", "h0", "c0", "w_ih", "w_hh", "b_ih", "b_hh")]
    *res, ws = fastcells.lstm_forward(*fwd, n_threads=n_threads)
    api = dict(zip(LSTM_OUT, res + list(fastcells.lstm_backward(p["dy"], p["dh_n"], p["dc_n"],
                                                                ws))))
    *res, cache = reference.lstm_forward(*[a.astype(np.float64) for a in fwd])
    grads = reference.lstm_backward(*[p[k].astype(np.float64) for k in ("dy", "dh_n", "dc_n")],
                                    cache)
    return report("fc_embed_c.lstm_train", got, dict(zip(LSTM_OUT, res + list(grads))), api,
                  dtype)


def check_gru(fc_embed_cy, dtype, n_threads, reset_after):
    p = problem(3, 6, 5, 7, 11, dtype, seed=2)
    fwd = [p[k] for k in ("x", "h0", "w_ih", "w_hh", "b_ih", "b_hh")]
    got = dict(zip(GRU_OUT, fc_embed_cy.gru_train(*fwd, p["dy"], p["dh_n"],
                                                   reset_after=reset_after,
                                                   n_threads=n_threads)))
    *res, ws = fastcells.gru_forward(*fwd, reset_after=reset_after, n_threads=n_threads)
    api = dict(zip(GRU_OUT, res + list(fastcells.gru_backward(p["dy"], p["dh_n"], ws))))
    *res, cache = reference.gru_forward(*[a.astype(np.float64) for a in fwd],
                                        reset_after=reset_after)
    grads = reference.gru_backward(p["dy"].astype(np.float64), p["dh_n"].astype(np.float64),
                                   cache)
    return report(f"fc_embed_cy.gru_train{'' if reset_after else ' (reset_after=0)'}", got,
                  dict(zip(GRU_OUT, res + list(grads))), api, dtype)


# ----------------------------------------------------------------------------------- timing
def best_mean_us(fn, n, repeats):
    """Best over `repeats` of the mean time of `n` calls of fn(), in microseconds."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        best = min(best, (time.perf_counter() - t0) / n)
    return best * 1e6


def timings(fc_embed_c, n, repeats):
    """{way: (inference us, training us)} for the tiny LSTM step."""
    T, B, I, H = 1, 1, 32, 32
    p = problem(4, T, B, I, H, np.float32, seed=3)
    fwd = [p[k] for k in ("x", "h0", "c0", "w_ih", "w_hh", "b_ih", "b_hh")]
    ups = [p[k] for k in ("dy", "dh_n", "dc_n")]

    def api_infer():
        fastcells.lstm_forward(*fwd, training=False, n_threads=1)

    def api_train():
        *_, ws = fastcells.lstm_forward(*fwd, training=True, n_threads=1)
        fastcells.lstm_backward(*ups, ws)

    # preallocated outputs for the C extension and ctypes
    out = {k: np.empty(s, np.float32) for k, s in
           dict(y=(T, B, H), h_n=(B, H), c_n=(B, H), dx=(T, B, I), dh0=(B, H), dc0=(B, H),
                dw_ih=(4 * H, I), dw_hh=(4 * H, H), db_ih=(4 * H,), db_hh=(4 * H,)).items()}
    fwd_kw = {k: p[k] for k in ("x", "h0", "c0", "w_ih", "w_hh", "b_ih", "b_hh")}
    infer_kw = dict(fwd_kw, y=out["y"], h_n=out["h_n"], c_n=out["c_n"], T=T, B=B, I=I, H=H)
    train_kw = dict(p, **out, T=T, B=B, I=I, H=H)

    def ext_infer():
        fc_embed_c.lstm_forward(**infer_kw)

    def ext_train():
        fc_embed_c.lstm_train(**train_kw)

    # ctypes: pointers as integers, argument tuples built once
    f_size = capi.function("fc_lstm_workspace_size_f32")
    f_fwd, f_bwd = capi.function("fc_lstm_forward_f32"), capi.function("fc_lstm_backward_f32")
    ws_inf = np.empty(f_size(T, B, I, H, 0, 0), np.uint8)
    ws_tr = np.empty(f_size(T, B, I, H, 0, 1), np.uint8)
    ptr = {k: a.ctypes.data for k, a in {**p, **out}.items()}
    in_ptrs = [ptr[k] for k in ("x", "h0", "c0", "w_ih", "w_hh", "b_ih", "b_hh")]
    out_ptrs = [ptr["y"], ptr["h_n"], ptr["c_n"]]
    infer_args = (*out_ptrs, ws_inf.ctypes.data, ws_inf.nbytes, *in_ptrs, None, None,
                  T, B, I, H, 0, 0, 1)
    train_args = (*out_ptrs, ws_tr.ctypes.data, ws_tr.nbytes, *in_ptrs, None, None,
                  T, B, I, H, 0, 1, 1)
    bwd_args = (*[ptr[k] for k in ("dx", "dh0", "dc0", "dw_ih", "dw_hh", "db_ih", "db_hh")],
                None, ws_tr.ctypes.data, ws_tr.nbytes, ptr["dy"], ptr["dh_n"], ptr["dc_n"],
                *[ptr[k] for k in ("x", "h0", "c0", "w_ih", "w_hh")], None, None,
                T, B, I, H, 0, 1)

    def ctypes_infer():
        capi.check(f_fwd(*infer_args))

    def ctypes_train():
        capi.check(f_fwd(*train_args))
        capi.check(f_bwd(*bwd_args))

    def in_c(training):
        return min(fc_embed_c.time_calls(10 * n, T, B, I, H, training, n_threads=1)
                   for _ in range(repeats))

    return {
        "Python API (fastcells.lstm_forward/backward)":
            (best_mean_us(api_infer, n, repeats), best_mean_us(api_train, n, repeats)),
        "C extension called from Python (fc_embed_c)":
            (best_mean_us(ext_infer, n, repeats), best_mean_us(ext_train, n, repeats)),
        "C API via ctypes (fastcells.capi.function)":
            (best_mean_us(ctypes_infer, n, repeats), best_mean_us(ctypes_train, n, repeats)),
        "C API from C (fc_embed_c.time_calls)": (in_c(False), in_c(True)),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="few timing calls (CI)")
    ap.add_argument("--threads", type=int, default=1,
                    help="n_threads of the correctness runs (default: %(default)s)")
    args = ap.parse_args()
    fc_embed_c, fc_embed_cy = load_extensions()
    print(f"fastcells {fastcells.__version__}, C API version {capi.API_VERSION}; "
          f"examples compiled against API version {fc_embed_c.API_VERSION}")

    print(f"\ntraining forward + backward, T=6 B=5 I=7 H=11, n_threads={args.threads}:")
    print(f"  {'':<38} {'dtype':<8} {'max error vs reference':>22}   bitwise = Python API")
    ok = True
    for dtype in (np.float32, np.float64):
        ok &= check_lstm(fc_embed_c, dtype, args.threads)
        for reset_after in (True, False):
            ok &= check_gru(fc_embed_cy, dtype, args.threads, reset_after)

    n, repeats = (200, 2) if args.quick else (2000, 9)
    print(f"\ntime per call, LSTM float32 T=1 B=1 I=32 H=32, n_threads=1 "
          f"(best of {repeats} repeats of the mean over {n} calls; {10 * n} in C):")
    print(f"  {'':<46} {'inference':>10} {'training fwd+bwd':>18}")
    for way, (t_inf, t_train) in timings(fc_embed_c, n, repeats).items():
        print(f"  {way:<46} {t_inf:>7.1f} us {t_train:>15.1f} us")

    if not ok:
        print("\nFAILED: a result differs from the reference or the Python API", file=sys.stderr)
        sys.exit(1)
    print("\nall results match")


if __name__ == "__main__":
    main()
