"""Command line: ``python -m fastcells bench ...`` (benchmark report) and ``check``."""
import argparse
import sys


def check(args):
    """Compare every kernel with the NumPy reference on a few shapes; exit 1 on mismatch."""
    import numpy as np
    from . import _api, reference
    from .bench import GATES, forward_args, make_problem
    worst = 0.0
    ok = True
    for dt, tol in ((np.float64, 1e-10), (np.float32, 1e-4)):
        for cell in GATES:
            for (B, T, I, H) in ((3, 5, 4, 7), (16, 20, 32, 33)):
                p = make_problem(cell, B, T, I, H, dt)
                outs = []
                for mod in (_api, reference):
                    *fwd, ws = getattr(mod, f"{cell}_forward")(*forward_args(cell, p))
                    extra = (None,) if cell == "lstm" else ()
                    grads = getattr(mod, f"{cell}_backward")(p["dy"], None, *extra, ws)
                    outs.append(list(fwd) + list(grads))
                err = max(float(np.max(np.abs(a - b)) / max(1e-30, float(np.max(np.abs(b)))))
                          for a, b in zip(*outs) if a is not None and b.size)
                worst = max(worst, err)
                good = err < tol
                ok &= good
                print(f"{cell:4s} {np.dtype(dt).name} B,T,I,H={B},{T},{I},{H}: max rel. error "
                      f"vs reference {err:.2e} {'ok' if good else 'MISMATCH'}")
    print("all kernels match the reference" if ok else "MISMATCH")
    return 0 if ok else 1


def main(argv=None):
    from . import bench
    parser = argparse.ArgumentParser(prog="python -m fastcells")
    sub = parser.add_subparsers(dest="command")
    b = sub.add_parser("bench", help="benchmark report vs NumPy reference, torch, GEMM floor")
    bench.add_arguments(b)
    sub.add_parser("check", help="check the kernels against the NumPy reference")
    args = parser.parse_args(argv)
    if args.command == "bench":
        return bench.run(args)
    if args.command == "check":
        return check(args)
    parser.print_help()
    return 0


if __name__ == "__main__":
    sys.exit(main())
