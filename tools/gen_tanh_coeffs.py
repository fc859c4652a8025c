"""Generate the small-|x| polynomial for tanh used in csrc/fc_activations.h.

tanh(x) = x * P(x*x) for |x| < A, where P is a Chebyshev interpolant (near-minimax) of
tanh(sqrt(u))/sqrt(u) on [0, A^2], computed in 60-digit arithmetic with mpmath.
Run: python tools/gen_tanh_coeffs.py
"""
import mpmath as mp

mp.mp.dps = 60
A = mp.mpf("0.625")


def g(u):
    if u == 0:
        return mp.mpf(1)
    s = mp.sqrt(u)
    return mp.tanh(s) / s


for name, degree in (("float", 5), ("double", 12)):
    coeffs, err = mp.chebyfit(g, [0, A * A], degree + 1, error=True)
    print(f"/* {name}: degree {degree} in u=x^2 on |x| < {A}, max rel. interpolation error {mp.nstr(err, 3)} */")
    print(", ".join(mp.nstr(c, 25 if name == 'double' else 12) for c in coeffs))
