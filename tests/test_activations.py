"""Accuracy and edge cases of the kernels' own sigmoid and tanh (csrc/fc_activations.h).

The kernels compute every gate with these functions, exposed for tests as
``fastcells._kernels.vsigmoid(x, out)`` / ``vtanh(x, out)`` (1-D C-contiguous, same dtype).

Error is measured in ulps of the exact result (the spacing of its binade), only where the exact
result is a normal number (denormal results are flushed or approximated, as documented):
* float32: dense samples against the function evaluated in float64, whose own error (< 1 ulp
  of float64 = 2**-29 ulp of float32) is negligible;
* float64: a subsample of every range against mpmath at 120 bits (the primary check), plus the
  dense samples against long double (64-bit mantissa: its error is ~2**-11 ulp of float64)
  where the platform has one.
"""
import mpmath
import numpy as np
import pytest

from fastcells import _kernels

# Documented bounds (csrc/fc_activations.h): max error over all finite inputs with normal results.
ULP_BOUND = {"tanh": 2.0, "sigmoid": 3.0}
N_DENSE = 1_000_001
N_MPMATH = 1500

DTYPES = [np.float32, np.float64]
DTYPE_IDS = ["f32", "f64"]
FUNCS = ["tanh", "sigmoid"]
HAS_LONG_DOUBLE = np.finfo(np.longdouble).nmant >= 63


def kernel(name, x):
    """The kernels' activation on any array-like (returned in x's dtype, x's shape)."""
    x = np.ascontiguousarray(x)
    out = np.empty_like(x)
    fn = _kernels.vtanh if name == "tanh" else _kernels.vsigmoid
    fn(x.reshape(-1), out.reshape(-1))
    return out


def numpy_exact(name, x):
    """Reference in a wider float type (float64 for float32 inputs, long double for float64)."""
    wide = np.float64 if x.dtype == np.float32 else np.longdouble
    xw = x.astype(wide)
    if name == "tanh":
        return np.tanh(xw)
    with np.errstate(over="ignore"):
        return 1 / (1 + np.exp(-xw))


def mp_exact(name, v):
    x = mpmath.mpf(float(v))
    return mpmath.tanh(x) if name == "tanh" else 1 / (1 + mpmath.exp(-x))


def ulp_errors_wide(got, exact, dtype):
    """|got - exact| in ulps of exact (binade spacing), exact in a wider type; NaN where the
    exact result is below the smallest normal of ``dtype`` (not judged)."""
    finfo = np.finfo(dtype)
    _, e = np.frexp(exact)
    ulp = np.ldexp(np.ones_like(exact), e - 1 - finfo.nmant)
    err = np.abs(got.astype(exact.dtype) - exact) / ulp
    return np.where(np.abs(exact) >= finfo.smallest_normal, err, np.nan).astype(np.float64)


def ulp_errors_mp(name, x, got):
    mpmath.mp.prec = 120
    tiny = mpmath.mpf(float(np.finfo(np.float64).smallest_normal))
    errs = []
    for xv, gv in zip(x, got):
        ex = mp_exact(name, xv)
        if abs(ex) < tiny:
            errs.append(np.nan)
            continue
        _, e = mpmath.frexp(ex)
        errs.append(float(abs(mpmath.mpf(float(gv)) - ex) / mpmath.ldexp(1, e - 53)))
    return np.array(errs)


def _consecutive(center, n, dtype):
    """The 2n floats of ``dtype`` around ``center`` (consecutive representable values)."""
    ints = np.int32 if dtype == np.float32 else np.int64
    return (np.array(center, dtype).view(ints) + np.arange(-n, n, dtype=ints)).view(dtype)


def _logspace_to_max(lo_exp, n, dtype):
    """n log-spaced positive values of ``dtype`` from 10**lo_exp up to its largest finite value."""
    top = np.log10(float(np.finfo(dtype).max)) - 1e-9   # 10**log10(max) may round above max
    x = np.logspace(lo_exp, top, n)
    x[-1] = np.finfo(dtype).max
    return x.astype(dtype)


def _both_signs(x):
    return np.concatenate([x, -x])


def samples(rng_name, dtype):
    """Dense samples of one input range, both signs, in ``dtype``."""
    d = np.dtype(dtype)
    f32 = d == np.float32
    if rng_name == "unit":                     # [-1, 1]: both tanh branches, sigmoid's centre
        x = np.linspace(-1, 1, N_DENSE)
    elif rng_name == "wide":                   # [-20, 20]: typical pre-activations
        x = np.linspace(-20, 20, N_DENSE)
    elif rng_name == "switch":                 # consecutive floats across tanh's 0.625 switch
        return _both_signs(_consecutive(0.625, 1 << 16, d))
    elif rng_name == "tiny":                   # |x| from the smallest normal to 1e-2
        x = _both_signs(np.logspace(np.log10(np.finfo(d).smallest_normal), -2, N_DENSE // 2))
    elif rng_name == "large":                  # saturation, exp overflow, up to the max float
        x = _both_signs(np.concatenate([np.linspace(5, 100, N_DENSE // 4),
                                        _logspace_to_max(2, N_DENSE // 4, d)]))
    elif rng_name == "underflow":              # sigmoid's tiny results: exp(-x) near overflow
        lo = -88.8 if f32 else -709.8
        x = np.linspace(lo, lo + 10, N_DENSE)
    else:
        raise ValueError(rng_name)
    return np.unique(x.astype(d))


RANGES = ["unit", "wide", "switch", "tiny", "large", "underflow"]


@pytest.mark.parametrize("rng_name", RANGES)
@pytest.mark.parametrize("name", FUNCS)
def test_float32_ulp_error(name, rng_name):
    x = samples(rng_name, np.float32)
    err = ulp_errors_wide(kernel(name, x), numpy_exact(name, x), np.float32)
    assert np.any(~np.isnan(err)), "no sample with a normal result"
    worst = np.nanargmax(err)
    assert err[worst] <= ULP_BOUND[name], (
        f"{name}({x[worst]!r}) off by {err[worst]:.2f} ulp > {ULP_BOUND[name]}")


@pytest.mark.parametrize("rng_name", RANGES)
@pytest.mark.parametrize("name", FUNCS)
def test_float64_ulp_error_mpmath(name, rng_name):
    dense = samples(rng_name, np.float64)
    rng = np.random.default_rng(7)
    x = np.concatenate([dense[[0, -1]], rng.choice(dense, N_MPMATH, replace=False)])
    err = ulp_errors_mp(name, x, kernel(name, x))
    assert np.any(~np.isnan(err)), "no sample with a normal result"
    worst = np.nanargmax(err)
    assert err[worst] <= ULP_BOUND[name], (
        f"{name}({x[worst]!r}) off by {err[worst]:.2f} ulp > {ULP_BOUND[name]}")


@pytest.mark.skipif(not HAS_LONG_DOUBLE, reason="long double is not wider than double here")
@pytest.mark.parametrize("rng_name", RANGES)
@pytest.mark.parametrize("name", FUNCS)
def test_float64_ulp_error_dense(name, rng_name):
    x = samples(rng_name, np.float64)
    err = ulp_errors_wide(kernel(name, x), numpy_exact(name, x), np.float64)
    worst = np.nanargmax(err)
    # + 0.01: the long double reference's own rounding, in float64 ulps
    assert err[worst] <= ULP_BOUND[name] + 0.01, (
        f"{name}({x[worst]!r}) off by {err[worst]:.2f} ulp > {ULP_BOUND[name]}")


# ------------------------------------------------------------------------------ edge cases
def _bits_equal(a, b):
    return np.array(a).tobytes() == np.array(b).tobytes()


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_tanh_signed_zero(dtype):
    out = kernel("tanh", np.array([0.0, -0.0], dtype))
    assert out[0] == 0 and not np.signbit(out[0])
    assert out[1] == 0 and np.signbit(out[1])


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_tanh_infinities(dtype):
    out = kernel("tanh", np.array([np.inf, -np.inf], dtype))
    assert _bits_equal(out, np.array([1.0, -1.0], dtype))


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("name", FUNCS)
def test_nan_propagates(name, dtype):
    out = kernel(name, np.array([np.nan, -np.nan], dtype))
    assert np.all(np.isnan(out))


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_tanh_thirty_is_exactly_one(dtype):
    assert _bits_equal(kernel("tanh", np.array([30.0, -30.0], dtype)), np.array([1, -1], dtype))


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_tanh_saturates_exactly(dtype):
    """|x| > 9.1 (float32) / 19.1 (float64): +-1 exactly, as the correctly rounded value is."""
    start = 9.1 if dtype == np.float32 else 19.1
    x = np.concatenate([np.linspace(start, 1000, 100_001).astype(dtype),
                        _logspace_to_max(3, 10_001, dtype)])
    x = x[x > start]
    assert np.all(kernel("tanh", x) == 1)
    assert np.all(kernel("tanh", -x) == -1)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_sigmoid_special_values(dtype):
    x = np.array([np.inf, -np.inf, 0.0, -0.0], dtype)
    out = kernel("sigmoid", x)
    assert _bits_equal(out, np.array([1.0, 0.0, 0.5, 0.5], dtype))  # -inf -> +0, not -0


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_sigmoid_underflows_to_positive_zero(dtype):
    """x < -88.8 (float32) / -709.8 (float64): the true value is denormal; the kernel gives +0."""
    start = -88.8 if dtype == np.float32 else -709.8
    x = np.concatenate([np.linspace(start, 10 * start, 100_001).astype(dtype),
                        -_logspace_to_max(np.log10(-10 * start), 10_001, dtype)])
    x = x[x < start]
    out = kernel("sigmoid", x)
    assert _bits_equal(out, np.zeros_like(out))


def _everything(dtype):
    d = np.dtype(dtype)
    special = np.array([0.0, -0.0, np.inf, -np.inf, np.finfo(d).max, -np.finfo(d).max,
                        np.finfo(d).smallest_normal, np.finfo(d).smallest_subnormal], d)
    return np.concatenate([special] + [samples(r, d) for r in RANGES])


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("name", FUNCS)
def test_results_within_range(name, dtype):
    out = kernel(name, _everything(dtype))
    lo = -1 if name == "tanh" else 0
    assert not np.any(np.isnan(out))
    assert np.all((out >= lo) & (out <= 1))


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("name", FUNCS)
def test_monotonic(name, dtype):
    """Non-decreasing on a dense grid, and across consecutive floats at tanh's branch switch."""
    grid = np.linspace(-30, 30, 2_000_001).astype(dtype)
    assert np.all(np.diff(kernel(name, grid)) >= 0)
    for center in (-0.625, 0.625):
        x = _consecutive(center, 1 << 14, np.dtype(dtype))
        x = x if center > 0 else x[::-1]   # ascending
        assert np.all(np.diff(kernel(name, x)) >= 0)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_tanh_is_odd(dtype):
    x = _everything(dtype)
    assert _bits_equal(kernel("tanh", -x), -kernel("tanh", x))


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("name", FUNCS)
def test_independent_of_position_and_length(name, dtype):
    """The same input gives the same bits whatever its offset and the array length (SIMD body,
    peeled and remainder iterations agree), so a gate's value does not depend on H or on
    where its row starts."""
    x = np.random.default_rng(3).uniform(-10, 10, 4096).astype(dtype)
    full = kernel(name, x)
    for start in range(9):
        for n in (0, 1, 2, 3, 5, 7, 8, 9, 15, 16, 17, 31, 33, 64, 100):
            assert _bits_equal(kernel(name, x[start:start + n]), full[start:start + n]), (start, n)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("name", FUNCS)
def test_out_shorter_than_x_is_rejected(name, dtype):
    """vsigmoid/vtanh(x, out) must not write len(x) values into a shorter out. ``out`` is a view
    of the first half of a buffer so that, without the check, the overrun lands in memory we
    own (the buffer's second half) instead of corrupting the heap."""
    fn = _kernels.vtanh if name == "tanh" else _kernels.vsigmoid
    buf = np.zeros(16, dtype)
    with pytest.raises(ValueError):
        fn(np.ones(16, dtype), buf[:8])
    assert np.all(buf[8:] == 0), "wrote past the end of out"


def test_generic_path_in_subprocess():
    """With AVX-512 the kernels use fc_activations.h's intrinsics (fc_act_rows); capping the
    dispatch (FASTCELLS_GEMM_ISA=v3, read once per process) runs the compiler-vectorized scalar
    functions instead: the accuracy and edge-case tests above, on that path."""
    import os
    import subprocess
    import sys
    env = dict(os.environ, FASTCELLS_GEMM_ISA="v3")
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                          os.path.abspath(__file__), "-k",
                          "not generic_path"],
                         env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0 and " passed" in out.stdout, out.stdout[-3000:] + out.stderr[-2000:]
