"""Fuzzing the public API.

1. Property tests (hypothesis): random cell, dtype, sizes (0 included), biases, initial states,
   upstream gradients, lengths, LSTM projection, GRU reset_after, training/inference, n_threads
   and a random memory layout per argument; every output and gradient must match the float64
   NumPy reference, inputs must be left untouched, outputs must be fresh C-contiguous arrays.
2. A garbage-input fuzzer: start from a valid call and replace one or two arguments by
   something odd (other dtypes, shapes, layouts, Python objects, None, NaN-filled arrays,
   broken lengths / n_threads / nonlinearity, foreign workspaces). Each call must either raise
   TypeError/ValueError (RuntimeError for a consumed workspace) with a message that names an
   argument -- the corrupted one for a dtype error -- or, if the corrupted call is in fact valid,
   return exactly what the same call with plain C-contiguous arrays returns. Validity is decided
   independently of fastcells: by NumPy's conversion plus ``fastcells.reference``'s validation.
   The fuzzer runs in a child process (tests/isolated.py), so a segfault or an abort fails the
   test -- with the example that was running -- instead of killing the pytest run. It collects
   every distinct kind of failure instead of stopping at the first.

Volume: CI runs a fixed, reproducible amount (hypothesis derandomized, fuzzer seed fixed).
For a bigger run by hand:
    FASTCELLS_FUZZ_EXAMPLES=20000 FASTCELLS_FUZZ_SEED=7 python -m pytest tests/test_fuzz.py -s
(FASTCELLS_FUZZ_EXAMPLES scales both parts: it is the garbage fuzzer's number of calls and,
divided by 10, the property tests' number of examples.)
"""
import os
import re
import sys
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

from conftest import CELLS, TOL, check_relu_margin, Problem
from isolated import describe, run_cases

import fastcells
from fastcells import reference

_ENV_EXAMPLES = int(os.environ.get("FASTCELLS_FUZZ_EXAMPLES", "0") or 0)
_ENV_SEED = os.environ.get("FASTCELLS_FUZZ_SEED")
PROPERTY_EXAMPLES = max(1, _ENV_EXAMPLES // 10) if _ENV_EXAMPLES else 150
GARBAGE_EXAMPLES = _ENV_EXAMPLES or 1500
GARBAGE_SEED = int(_ENV_SEED) if _ENV_SEED else 20240605
LAYER_EXAMPLES = max(1, GARBAGE_EXAMPLES // 5)


def fuzz_settings(max_examples):
    """Reproducible in CI (derandomized, no example database); FASTCELLS_FUZZ_SEED varies it."""
    s = settings(max_examples=max_examples, deadline=None, derandomize=_ENV_SEED is None,
                 database=None, print_blob=True,
                 # no "explain" phase: it writes patch files under .hypothesis/ in the repo
                 phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink],
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                        HealthCheck.filter_too_much])

    def wrap(fn):
        fn = s(fn)
        return seed(int(_ENV_SEED))(fn) if _ENV_SEED else fn
    return wrap


_G = {"lstm": 4, "gru": 3, "rnn": 1}


def kind_of(cell):
    return cell.split("_")[0]


# ============================================================================== problems
def build_call(cell, dtype, T, B, I, H, P, rng, *, bias="both", h0=True, c0=True,
               upstream=("dy", "dh_n", "dc_n"), lengths=None, scale=1.0):
    """Forward kwargs (every argument by name) and upstream grads for one problem.

    P is the LSTM projection size (None: no projection). Weights ~ U(-k, k)*scale with
    k = 1/sqrt(H) (PyTorch's init), states and gradients ~ N(0, 1)/2 and N(0, 1).
    """
    kind, G = kind_of(cell), _G[kind_of(cell)]
    Ph = P if P is not None else H
    k = scale / np.sqrt(H)

    def u(*s):
        return rng.uniform(-k, k, s).astype(dtype)

    def n(*s, sc=1.0):
        return (sc * rng.standard_normal(s)).astype(dtype)

    f = {"x": n(T, B, I), "h0": n(B, Ph, sc=0.5) if h0 else None}
    if kind == "lstm":
        f["c0"] = n(B, H, sc=0.5) if c0 else None
    f["w_ih"], f["w_hh"] = u(G * H, I), u(G * H, Ph)
    f["b_ih"] = u(G * H) if bias in ("both", "ih") else None
    f["b_hh"] = u(G * H) if bias in ("both", "hh") else None
    if kind == "lstm" and P is not None:
        f["w_hr"] = u(P, H)
    if lengths is not None:
        f["lengths"] = lengths
    ups = {"dy": n(T, B, Ph) if "dy" in upstream else None,
           "dh_n": n(B, Ph) if "dh_n" in upstream else None}
    if kind == "lstm":
        ups["dc_n"] = n(B, H) if "dc_n" in upstream else None
    return f, ups


def call_forward(module, cell, f, **kw):
    kind = kind_of(cell)
    if kind == "rnn" and "nonlinearity" not in kw:
        kw["nonlinearity"] = cell.split("_")[1]
    return getattr(module, f"{kind}_forward")(**f, **kw)


def call_backward(module, cell, ups, ws):
    names = ("dy", "dh_n", "dc_n") if kind_of(cell) == "lstm" else ("dy", "dh_n")
    return getattr(module, f"{kind_of(cell)}_backward")(*[ups[k] for k in names], ws)


def out_names(cell, training, proj):
    fwd = ["y", "h_n"] + (["c_n"] if kind_of(cell) == "lstm" else [])
    if not training:
        return fwd
    grads = ["dx", "dh0"] + (["dc0"] if kind_of(cell) == "lstm" else []) + \
            ["dw_ih", "dw_hh", "db_ih", "db_hh"] + (["dw_hr"] if proj else [])
    return fwd + grads


def reference_results(cell, f, ups, training):
    """float64 oracle; the reference takes both biases or neither (pair a lone one with 0)."""
    g = {k: (np.asarray(v, np.float64) if k != "lengths" and v is not None else v)
         for k, v in f.items()}
    lone = (g["b_ih"] is None) != (g["b_hh"] is None)
    if lone:
        z = np.zeros_like(g["b_ih"] if g["b_ih"] is not None else g["b_hh"])
        g["b_ih"] = z if g["b_ih"] is None else g["b_ih"]
        g["b_hh"] = z if g["b_hh"] is None else g["b_hh"]
    if g.get("lengths") is not None:
        g["lengths"] = np.asarray(g["lengths"]).astype(np.int64)
    out = call_forward(reference, cell, g, training=training)
    res = list(out[:-1])
    if training:
        u = {k: None if v is None else np.asarray(v, np.float64) for k, v in ups.items()}
        res += list(call_backward(reference, cell, u, out[-1]))
    names = out_names(cell, training, f.get("w_hr") is not None)
    d = dict(zip(names, res))
    if training:
        if f["b_ih"] is None:
            d["db_ih"] = None
        if f["b_hh"] is None:
            d["db_hh"] = None
    return d


def fastcells_results(cell, f, ups, training, n_threads, **kw):
    out = call_forward(fastcells, cell, f, training=training, n_threads=n_threads, **kw)
    res = list(out[:-1])
    if training:
        assert out[-1] is not None
        res += list(call_backward(fastcells, cell, ups, out[-1]))
    else:
        assert out[-1] is None
    return dict(zip(out_names(cell, training, f.get("w_hr") is not None), res))


# ------------------------------------------------------------------------------ layouts
def _strided(a):
    if a.ndim == 0:
        return a
    buf = np.full(a.shape[:-1] + (2 * a.shape[-1],), np.nan, a.dtype)
    buf[..., ::2] = a
    return buf[..., ::2]


def _readonly(a):
    a = a.copy()
    a.setflags(write=False)
    return a


def _byteswap(a):
    return a.astype(a.dtype.newbyteorder(">" if a.dtype.byteorder in "=<" else "<"))


LAYOUTS = {
    "C": lambda a: a,
    "F": np.asfortranarray,
    "strided": _strided,
    "negative": lambda a: np.flip(np.flip(a).copy()),
    "readonly": _readonly,
    "byteswap": _byteswap,
    # float64 only (a list is float64); a nested list cannot carry an empty axis's length
    "list": lambda a: a.tolist() if a.size else a,
}


# ============================================================================== properties
@st.composite
def problems(draw):
    cell = draw(st.sampled_from(CELLS))
    dtype = np.dtype(draw(st.sampled_from([np.float32, np.float64])))
    T, B = draw(st.integers(0, 7)), draw(st.integers(0, 6))
    I, H = draw(st.integers(0, 6)), draw(st.integers(1, 8))
    P = draw(st.none() | st.integers(1, H + 1)) if cell == "lstm" else None
    opts = dict(
        bias=draw(st.sampled_from(["both", "none", "ih", "hh"])),
        h0=draw(st.booleans()), c0=draw(st.booleans()),
        upstream=tuple(draw(st.sets(st.sampled_from(["dy", "dh_n", "dc_n"])))),
        scale=draw(st.sampled_from([1.0, 3.0])) if dtype == np.float64 else 1.0)
    lengths = None
    if draw(st.booleans()):
        vals = draw(st.lists(st.integers(0, T), min_size=B, max_size=B))
        # (B = 0 with a plain [] is test_robustness.test_empty_list_lengths_for_empty_batch)
        form = draw(st.sampled_from(["list", "int64", "int32", "uint16"] if B else ["int64"]))
        lengths = vals if form == "list" else np.asarray(vals, form)
    extra = {}
    if kind_of(cell) == "gru":
        extra["reset_after"] = draw(st.booleans())
    training = draw(st.booleans())
    n_threads = draw(st.sampled_from([None, 1, 2, 3, 5]))
    layout_names = [k for k in LAYOUTS if k != "list" or dtype == np.float64]
    layouts = draw(st.lists(st.sampled_from(layout_names), min_size=12, max_size=12))
    rng_seed = draw(st.integers(0, 2**32 - 1))
    return dict(cell=cell, dtype=dtype, T=T, B=B, I=I, H=H, P=P, opts=opts, lengths=lengths,
                extra=extra, training=training, n_threads=n_threads, layouts=layouts,
                seed=rng_seed)


def _relu_margin_ok(cell, f, dtype, T, B, I, H):
    if cell != "rnn_relu":
        return True
    p = Problem(cell, dtype, T, B, I, H,
                {k: f[k] for k in ("x", "h0", "w_ih", "w_hh", "b_ih", "b_hh")}, {})
    try:
        check_relu_margin(p)
    except AssertionError:
        return False
    return True


@fuzz_settings(PROPERTY_EXAMPLES)
@given(problems())
def test_random_problems_match_reference(pr):
    """Random valid problems: every result matches the float64 reference within the dtype's
    tolerance (conftest.py), inputs are not modified, outputs are fresh C-contiguous arrays."""
    from hypothesis import assume

    cell, dtype = pr["cell"], pr["dtype"]
    T, B, I, H, P = pr["T"], pr["B"], pr["I"], pr["H"], pr["P"]
    rng = np.random.default_rng(pr["seed"])
    f, ups = build_call(cell, dtype, T, B, I, H, P, rng, lengths=pr["lengths"], **pr["opts"])
    assume(_relu_margin_ok(cell, f, dtype, T, B, I, H))
    if pr["extra"]:   # GRU: reset_after
        expected = _reference_gru(f, ups, pr["training"], pr["extra"]["reset_after"])
    else:
        expected = reference_results(cell, f, ups, pr["training"])
    # Random layout per argument (lengths keeps its own form).
    names = [k for k in list(f) + list(ups) if k != "lengths"]
    laid_f, laid_u = {}, {}
    for i, k in enumerate(names):
        src = f if k in f else ups
        v = src[k]
        dst = laid_f if k in f else laid_u
        dst[k] = None if v is None else LAYOUTS[pr["layouts"][i % 12]](v)
    if "lengths" in f:
        laid_f["lengths"] = f["lengths"]
    snapshot = {k: np.array(v, copy=True) for k, v in {**laid_f, **laid_u}.items()
                if v is not None}
    got = fastcells_results(cell, laid_f, laid_u, pr["training"], pr["n_threads"],
                            **pr["extra"])
    for k, v in {**laid_f, **laid_u}.items():
        if v is not None:
            assert np.array_equal(np.asarray(v), snapshot[k]), f"input {k} was modified"
    assert set(got) == set(expected), (sorted(got), sorted(expected))
    for name, b in expected.items():
        a = got[name]
        if b is None:
            assert a is None, f"{name}: expected None"
            continue
        assert isinstance(a, np.ndarray) and a.dtype == dtype, f"{name}: {type(a)} {a.dtype}"
        assert a.flags.c_contiguous and a.flags.writeable, f"{name}: layout"
        assert a.shape == b.shape, f"{name}: shape {a.shape} != {b.shape}"
        assert np.all(np.isfinite(a)), f"{name}: non-finite"
        err = 0.0 if a.size == 0 else (np.abs(a.astype(np.float64) - b).max()
                                       / max(np.abs(b).max(), 1.0))
        assert err <= TOL[dtype], f"{name}: relative error {err:.3e} > {TOL[dtype]:.0e}"
    for a in got.values():
        for v in list(laid_f.values()) + list(laid_u.values()):
            if isinstance(a, np.ndarray) and isinstance(v, np.ndarray):
                assert not np.shares_memory(a, v), "a result aliases an input"


def _reference_gru(f, ups, training, reset_after):
    g = {k: (np.asarray(v, np.float64) if k != "lengths" and v is not None else v)
         for k, v in f.items()}
    lone = (g["b_ih"] is None) != (g["b_hh"] is None)
    if lone:
        z = np.zeros_like(g["b_ih"] if g["b_ih"] is not None else g["b_hh"])
        g["b_ih"] = z if g["b_ih"] is None else g["b_ih"]
        g["b_hh"] = z if g["b_hh"] is None else g["b_hh"]
    if g.get("lengths") is not None:
        g["lengths"] = np.asarray(g["lengths"]).astype(np.int64)
    y, h_n, cache = reference.gru_forward(**g, training=training, reset_after=reset_after)
    d = {"y": y, "h_n": h_n}
    if training:
        u = {k: None if v is None else np.asarray(v, np.float64) for k, v in ups.items()}
        dx, dh0, dw_ih, dw_hh, db_ih, db_hh = reference.gru_backward(u["dy"], u["dh_n"], cache)
        d.update(dx=dx, dh0=dh0, dw_ih=dw_ih, dw_hh=dw_hh,
                 db_ih=db_ih if f["b_ih"] is not None else None,
                 db_hh=db_hh if f["b_hh"] is not None else None)
    return d


@fuzz_settings(max(1, PROPERTY_EXAMPLES // 3))
@given(st.sampled_from(CELLS), st.sampled_from([np.float32, np.float64]),
       st.integers(1, 6), st.integers(1, 9), st.integers(0, 2**32 - 1))
def test_thread_counts_agree(cell, dtype, T, B, rng_seed):
    """Any n_threads gives the one-thread result to the dtype's tolerance (test_determinism.py
    says which agree bit for bit)."""
    rng = np.random.default_rng(rng_seed)
    f, ups = build_call(cell, np.dtype(dtype), T, B, 5, 6, None, rng)
    one = fastcells_results(cell, f, ups, True, 1)
    for n in (2, 3, 16):
        got = fastcells_results(cell, f, ups, True, n)
        for k, b in one.items():
            err = np.abs(got[k].astype(np.float64) - b).max() / max(np.abs(b).max(), 1.0)
            assert err <= TOL[np.dtype(dtype)], (k, n, err)


# ============================================================================== garbage fuzzer
class UserError(Exception):
    """Raised by an argument's own __array__: must propagate unchanged (NumPy does the same)."""


class RaisesOnArray:
    def __array__(self, *args, **kwargs):
        raise UserError("boom from __array__")


_BAD_DTYPES = ["int8", "int64", "uint64", "bool", "float16", "longdouble", "complex128",
               "object", "U3", "datetime64[s]"]
_ARRAY_KINDS = (["C", "F", "strided", "negative", "readonly", "byteswap", "offset", "broadcast",
                 "list", "tuple", "matrix", "nan", "inf", "none", "other_float"]
                + [f"dtype:{d}" for d in _BAD_DTYPES]
                + ["add_axis", "drop_axis", "grow_axis", "shrink_axis", "empty_axis", "scalar",
                   "transpose", "pyfloat", "pyint", "string", "dict", "ragged", "bytes",
                   "raises_on_array", "set"])
_LENGTHS_KINDS = ["none", "list", "int32", "uint8", "negstride", "float_integral",
                  "float_frac", "negative", "too_big", "bool", "2d", "short", "string",
                  "nan", "huge_float", "object", "empty_list"]
_NTHREADS = [None, 1, 2, 3, np.int64(2), np.uint8(1), 0, -1, 4097, 1.5, "2", True, [2],
             2**40, np.float64(2.0)]
_NONLIN = ["tanh", "relu", np.str_("relu"), "sigmoid", "", None, 1, ["tanh"],
           np.array(["tanh", "relu"]), "TANH"]


def _garbage_array(kind, a, rng):
    """(value, tag) for an array argument ``a``. tag: 'layout' (valid iff the values are),
    'dtype' (must be TypeError), 'shape' (may be valid, e.g. x of another T), 'object'."""
    if kind == "C":
        return a, "layout"
    if kind == "F":
        return np.asfortranarray(a), "layout"
    if kind == "strided":
        return _strided(a), "layout"
    if kind == "negative":
        return np.flip(np.flip(a).copy()), "layout"
    if kind == "readonly":
        return _readonly(a), "layout"
    if kind == "byteswap":
        return _byteswap(a), "layout"
    if kind == "offset":
        buf = np.zeros(a.size + 1, a.dtype)
        buf[1:] = a.reshape(-1)
        return buf[1:].reshape(a.shape), "layout"
    if kind == "broadcast":
        return (np.broadcast_to(a[:1], a.shape) if a.ndim and a.shape[0] else a), "layout"
    if kind == "list":
        return a.tolist(), "layout"
    if kind == "tuple":
        def tup(v):
            return tuple(tup(r) for r in v) if isinstance(v, list) else v
        return tup(a.tolist()), "layout"
    if kind == "matrix":
        return (np.asmatrix(a) if a.ndim == 2 else a), "layout"
    if kind == "nan":
        return np.full_like(a, np.nan), "layout"
    if kind == "inf":
        return np.full_like(a, np.inf), "layout"
    if kind == "none":
        return None, "none"
    if kind == "other_float":
        return a.astype(np.float32 if a.dtype == np.float64 else np.float64), "dtype"
    if kind.startswith("dtype:"):
        d = kind.split(":", 1)[1]
        with np.errstate(all="ignore"):
            if d == "U3":
                return a.astype(str).astype("U3"), "dtype"
            if d.startswith("datetime"):
                return np.zeros(a.shape, d), "dtype"
            if d == "object":
                return a.astype(object), "dtype"
            return np.nan_to_num(a).astype(d), "dtype"
    if kind == "add_axis":
        return a[None], "shape"
    if kind == "drop_axis":
        if a.ndim > 1:
            return a.reshape(-1), "shape"
        return (a[0] if a.size else np.zeros((), a.dtype)), "shape"
    if kind in ("grow_axis", "shrink_axis", "empty_axis"):
        if a.ndim == 0:
            return a, "shape"
        ax = int(rng.integers(a.ndim))
        n = a.shape[ax]
        new = {"grow_axis": n + 1, "shrink_axis": max(n - 1, 0), "empty_axis": 0}[kind]
        shape = list(a.shape)
        shape[ax] = new
        return rng.standard_normal(shape).astype(a.dtype), "shape"
    if kind == "scalar":
        return a.dtype.type(1.0), "shape"
    if kind == "transpose":
        return a.T, "shape"
    if kind == "pyfloat":
        return 1.5, "object"
    if kind == "pyint":
        return 3, "object"
    if kind == "string":
        return "abc", "object"
    if kind == "dict":
        return {"a": 1}, "object"
    if kind == "ragged":
        return [[1.0, 2.0], [3.0]], "object"
    if kind == "bytes":
        return b"\x00" * 8, "object"
    if kind == "raises_on_array":
        return RaisesOnArray(), "user"
    if kind == "set":
        return {1.0, 2.0}, "object"
    raise KeyError(kind)


def _garbage_lengths(kind, T, B, rng):
    vals = rng.integers(0, T + 1, B)
    return {
        "none": (None, "layout"), "list": (vals.tolist(), "layout"),
        "int32": (vals.astype(np.int32), "layout"), "uint8": (vals.astype(np.uint8), "layout"),
        "negstride": (vals[::-1].copy()[::-1], "layout"),
        "float_integral": (vals.astype(np.float64), "layout"),
        "float_frac": (vals + 0.5, "lengths"), "negative": (vals - T - 1, "lengths"),
        "too_big": (vals + T + 1, "lengths"), "bool": (vals > 0, "lengths"),
        "2d": (vals[None], "lengths"), "short": (vals[:-1] if B else np.zeros(1, int), "lengths"),
        "string": ("abc", "lengths"), "nan": (np.full(B, np.nan), "lengths"),
        "huge_float": (np.full(B, 1e300), "lengths"),
        "object": (np.array([None] * B, object), "lengths"),
        "empty_list": ([], "lengths"),
    }[kind]


def _canonical(v):
    """What a well-behaved library would see: a native-order C-contiguous ndarray (or None).
    Raises whatever NumPy raises for values that are not arrays at all."""
    if v is None:
        return None
    a = np.asarray(v)
    if a.dtype.kind == "f" and not a.dtype.isnative:
        a = a.astype(a.dtype.newbyteorder("="))
    return np.asarray(a, order="C")      # (np.ascontiguousarray would make 0-d arrays 1-d)


def _canonical_lengths(v, B):
    """int64 lengths as fastcells documents them (integers, or integral finite floats), else
    raise. An empty float list is accepted for an empty batch (``[]`` is how one writes it)."""
    if v is None:
        return None
    a = np.asarray(v)
    if a.dtype.kind == "f" and (a.size == 0 or (np.all(np.isfinite(a)) and
                                                np.all(a == np.round(a)))):
        with np.errstate(all="ignore"):
            a = a.astype(np.int64)
    if a.dtype == bool or a.dtype.kind not in "iu":
        raise TypeError("lengths")
    if a.dtype.kind == "u" and a.size and a.max() > np.iinfo(np.int64).max:
        raise ValueError("lengths")
    return a.astype(np.int64)


def _forward_valid(cell, f, kw):
    """Is this forward call valid? Decided without fastcells: NumPy conversion, then
    fastcells.reference's own validation, plus the documented extra rules (H >= 1, P >= 1,
    n_threads None or an integer in [1, 4096], nonlinearity 'tanh'/'relu', lengths rules)."""
    try:
        g = {k: _canonical(v) for k, v in f.items() if k != "lengths"}
    except Exception:
        return False
    x = g["x"]
    if x is None or x.ndim != 3:
        return False
    T, B = x.shape[0], x.shape[1]
    try:
        lengths = _canonical_lengths(f.get("lengths"), B)
    except Exception:
        return False
    if lengths is not None and (lengths.shape != (B,) or
                                (B and (lengths.min() < 0 or lengths.max() > T))):
        return False
    nt = kw.get("n_threads")
    if nt is not None and (isinstance(nt, bool) or not isinstance(nt, (int, np.integer))
                           or not 1 <= int(nt) <= 4096):
        return False
    nl = kw.get("nonlinearity", "tanh")
    if kind_of(cell) == "rnn" and not (isinstance(nl, str) and nl in ("tanh", "relu")):
        return False
    w_hh, w_hr = g.get("w_hh"), g.get("w_hr")
    if w_hh is None or g.get("w_ih") is None or w_hh.ndim != 2 or w_hh.shape[1] < 1:
        return False
    if w_hr is not None and (w_hr.ndim != 2 or 0 in w_hr.shape):
        return False
    lone = (g["b_ih"] is None) != (g["b_hh"] is None)
    if lone:   # the reference takes both biases or neither: pair with zeros of the same kind
        b = g["b_ih"] if g["b_ih"] is not None else g["b_hh"]
        g["b_ih" if g["b_ih"] is None else "b_hh"] = np.zeros_like(b)
    try:
        call_forward(reference, cell, {**g, "lengths": lengths}, training=False,
                     **{k: v for k, v in kw.items() if k != "n_threads"})
    except (TypeError, ValueError):
        return False
    return True


_ALL_ARGS = ("x", "h0", "c0", "w_ih", "w_hh", "b_ih", "b_hh", "w_hr", "lengths", "n_threads",
             "nonlinearity", "dy", "dh_n", "dc_n", "ws")


def _names_an_argument(msg, args):
    for a in args:
        if re.search(rf"(?<![A-Za-z0-9_]){re.escape(a)}(?![A-Za-z0-9_])", msg):
            return True
    return "workspace" in msg.lower()


def _same(a, b):
    if a is None or b is None:
        return a is None and b is None
    return (a.dtype == b.dtype and a.shape == b.shape
            and np.ascontiguousarray(a).tobytes() == np.ascontiguousarray(b).tobytes())


class _Fuzz:
    def __init__(self, seed_value):
        self.rng = np.random.default_rng(seed_value)
        self.failures = {}
        self.counts = {"calls": 0, "raised": 0, "ran": 0}

    def fail(self, bucket, detail):
        """One bucket per (function family, kind of failure, message shape): the corrupted
        arguments are left out of the key so one cause shows up once, with an example."""
        where, problem = bucket[0], bucket[1]
        msg_shape = re.sub(r"[0-9]+", "N", str(detail))[:60]
        key = (where.split("_")[1], problem, msg_shape)    # 'forward' / 'backward'
        if key not in self.failures:
            self.failures[key] = f"{detail}   [{self.current}]"
        self.failures.setdefault("_counts", {})
        self.failures["_counts"][key] = self.failures["_counts"].get(key, 0) + 1

    def log(self, text):
        self.current = text
        sys.stderr.write("FUZZ " + text + "\n")
        sys.stderr.flush()

    def pick(self, seq):
        return seq[int(self.rng.integers(len(seq)))]

    def base(self):
        r = self.rng
        cell = self.pick(CELLS)
        dtype = np.dtype(self.pick([np.float32, np.float64]))
        T, B, I, H = (int(r.integers(0, 5)), int(r.integers(0, 5)), int(r.integers(0, 5)),
                      int(r.integers(1, 6)))
        P = int(r.integers(1, H + 1)) if cell == "lstm" and r.random() < 0.3 else None
        f, ups = build_call(cell, dtype, T, B, I, H, P, r)
        if r.random() < 0.3:
            f["lengths"] = r.integers(0, T + 1, B)
        return cell, dtype, (T, B, I, H, P), f, ups

    def check_outcome(self, where, corrupted, tag_of, valid, run, expected_fn, args):
        """Run ``run()``; judge it against validity (None: either outcome is acceptable, but
        never a crash or an unclear error). ``corrupted``: the names replaced."""
        self.counts["calls"] += 1
        try:
            got = run()
        except UserError:
            self.counts["raised"] += 1
            if not any(tag_of[c] == "user" for c in corrupted):
                self.fail((where, "UserError-unexpected"), corrupted)
            return
        except (TypeError, ValueError, RuntimeError) as e:
            self.counts["raised"] += 1
            msg = str(e)
            key = tuple(sorted((c, tag_of[c]) for c in corrupted))
            if valid:
                self.fail((where, "rejected-valid", key), f"{type(e).__name__}: {msg}")
                return
            if valid is None:
                return
            if isinstance(e, RuntimeError) and "ws" not in corrupted:
                self.fail((where, "RuntimeError", key), msg)
            if not msg.strip() or not _names_an_argument(msg, args):
                self.fail((where, "message-names-no-argument", key),
                          f"{type(e).__name__}: {msg}")
            if len(corrupted) == 1:
                (c,) = corrupted
                if tag_of[c] == "dtype" and not (isinstance(e, TypeError)
                                                 and _names_an_argument(msg, [c])):
                    self.fail((where, "dtype-error-not-TypeError-naming-arg", key),
                              f"{type(e).__name__}: {msg}")
            return
        except MemoryError as e:
            self.fail((where, "MemoryError-on-small-input"), str(e))
            return
        except Exception as e:  # noqa: BLE001
            key = tuple(sorted((c, tag_of[c]) for c in corrupted))
            self.fail((where, f"unexpected-{type(e).__name__}", key), str(e)[:300])
            return
        self.counts["ran"] += 1
        key = tuple(sorted((c, tag_of[c]) for c in corrupted))
        if valid is False:
            self.fail((where, "accepted-invalid", key), "call returned results")
            return
        expected = expected_fn()
        if len(got) != len(expected) or not all(_same(a, b) for a, b in zip(got, expected)):
            self.fail((where, "result-differs-from-canonical-call", key), "")

    def forward_example(self):
        cell, dtype, sizes, f, ups = self.base()
        kw = {"n_threads": 1}
        candidates = [k for k in f] + ["n_threads"] + (["nonlinearity"] if cell.startswith(
            "rnn") else [])
        n_bad = 1 if self.rng.random() < 0.7 else 2
        corrupted = list(self.rng.choice(candidates, size=min(n_bad, len(candidates)),
                                         replace=False))
        g, tag_of, desc = dict(f), {}, []
        T, B = sizes[0], sizes[1]
        for c in corrupted:
            if c == "n_threads":
                kw["n_threads"] = self.pick(_NTHREADS)
                tag_of[c] = "option"
                desc.append(f"n_threads={kw['n_threads']!r}")
            elif c == "nonlinearity":
                kw["nonlinearity"] = self.pick(_NONLIN)
                tag_of[c] = "option"
                desc.append(f"nonlinearity={kw['nonlinearity']!r}")
            elif c == "lengths":
                kind = self.pick(_LENGTHS_KINDS)
                g[c], tag_of[c] = _garbage_lengths(kind, T, B, self.rng)
                desc.append(f"lengths:{kind}")
            else:
                kind = self.pick(_ARRAY_KINDS)
                g[c], tag_of[c] = _garbage_array(kind, f[c], self.rng)
                desc.append(f"{c}:{kind}")
        if cell.startswith("rnn"):
            kw.setdefault("nonlinearity", cell.split("_")[1])
        self.log(f"forward {cell} {dtype.name} T,B,I,H,P={sizes} {' '.join(desc)}")
        valid = _forward_valid(cell, g, kw)
        canon = None
        if valid:
            canon = {k: (_canonical_lengths(v, B) if k == "lengths" else _canonical(v))
                     for k, v in g.items()}
        args = list(g) + list(kw)

        def run():
            return call_forward(fastcells, cell, g, training=False, **kw)[:-1]

        def expected():
            return call_forward(fastcells, cell, canon, training=False, **kw)[:-1]

        self.check_outcome(f"{kind_of(cell)}_forward", corrupted, tag_of, valid, run, expected,
                           args)

    def backward_example(self):
        cell, dtype, sizes, f, ups = self.base()
        kind = kind_of(cell)
        names = ["dy", "dh_n"] + (["dc_n"] if kind == "lstm" else []) + ["ws"]
        c = self.pick(names)
        T, B, I, H, P = sizes
        Ph = P if P is not None else H
        u = dict(ups)
        tag_of = {}
        _, ws = call_forward(fastcells, cell, f, n_threads=1)[-2:]
        _, ws_canon = call_forward(fastcells, cell, f, n_threads=1)[-2:]
        if c == "ws":
            choice = self.pick(["none", "int", "dict", "tuple", "other_cell", "consumed",
                                "inference", "reference_cache", "real"])
            tag_of[c] = "ws"
            if choice == "none":
                bad = None
            elif choice == "int":
                bad = 7
            elif choice == "dict":
                bad = {"cell": kind}
            elif choice == "tuple":
                bad = call_forward(fastcells, cell, f, n_threads=1)
            elif choice == "other_cell":
                other = self.pick([k for k in ("lstm", "gru", "rnn_tanh") if kind_of(k) != kind])
                of, _ = build_call(other, dtype, T, B, I, H, None, self.rng)
                bad = call_forward(fastcells, other, of, n_threads=1)[-1]
            elif choice == "consumed":
                bad = call_forward(fastcells, cell, f, n_threads=1)[-1]
                call_backward(fastcells, cell, ups, bad)
            elif choice == "inference":
                bad = call_forward(fastcells, cell, f, n_threads=1, training=False)[-1]
            elif choice == "reference_cache":
                bad = _reference_cache(cell, f)
            else:
                bad = ws
            valid = choice == "real"
            desc = f"ws:{choice}"
            ws_used = bad
        else:
            akind = self.pick(_ARRAY_KINDS)
            base = ups[c] if ups[c] is not None else np.zeros(
                (T, B, Ph) if c == "dy" else ((B, Ph) if c == "dh_n" else (B, H)), dtype)
            u[c], tag_of[c] = _garbage_array(akind, base, self.rng)
            desc = f"{c}:{akind}"
            ws_used = ws
            want = (T, B, Ph) if c == "dy" else ((B, Ph) if c == "dh_n" else (B, H))
            try:
                cv = _canonical(u[c])
                valid = cv is None or (cv.dtype == dtype and cv.shape == want)
            except Exception:
                valid = False
        self.log(f"backward {cell} {dtype.name} T,B,I,H,P={sizes} {desc}")
        canon = {k: (_canonical(v) if valid else v) for k, v in u.items()}

        def run():
            return call_backward(fastcells, cell, u, ws_used)

        def expected():
            return call_backward(fastcells, cell, canon, ws_canon)

        self.check_outcome(f"{kind}_backward", [c], tag_of, valid, run, expected,
                           names)


def _reference_cache(cell, f):
    g = {k: (np.asarray(v, np.float64) if k != "lengths" and v is not None else v)
         for k, v in f.items()}
    if g.get("lengths") is not None:
        g["lengths"] = np.asarray(g["lengths"], np.int64)
    return call_forward(reference, cell, g)[-1]


def garbage_fuzz(n_examples, seed_value):
    """Child-process entry point: n_examples garbage calls; returns counts and failures."""
    fz = _Fuzz(seed_value)
    t0 = time.perf_counter()
    with np.errstate(all="ignore"):
        for i in range(n_examples):
            if fz.rng.random() < 0.65:
                fz.forward_example()
            else:
                fz.backward_example()
    counts = fz.failures.pop("_counts", {})
    return {"counts": fz.counts, "seconds": time.perf_counter() - t0,
            "failures": [{"bucket": repr(k), "example": str(v)[:500],
                          "occurrences": counts.get(k, 0)} for k, v in fz.failures.items()]}


def _format_failures(value):
    lines = [f"{len(value['failures'])} kind(s) of failure in {value['counts']['calls']} calls:"]
    for f in value["failures"]:
        lines.append(f"  {f['bucket']}  x{f['occurrences']}\n      e.g. {f['example']}")
    return "\n".join(lines)


def test_garbage_inputs_functional_api():
    """Garbage in, clear exception or correct result out; never a crash (child process)."""
    o = run_cases([("fuzz", "test_fuzz:garbage_fuzz", (GARBAGE_EXAMPLES, GARBAGE_SEED))],
                  timeout=600)["fuzz"]
    assert o["status"] == "ok", describe(o)
    v = o["value"]
    print(f"\ngarbage fuzzer: {v['counts']} in {v['seconds']:.1f} s (seed {GARBAGE_SEED})")
    assert v["counts"]["calls"] == GARBAGE_EXAMPLES
    assert not v["failures"], _format_failures(v)


# ------------------------------------------------------------------------------ layers
def _layers_module():
    try:
        import fastcells.layers as layers
    except ImportError:
        return None
    if not all(hasattr(layers, n) for n in ("LSTM", "GRU", "RNN")):
        return None
    return layers


def layer_fuzz(n_examples, seed_value):
    """Child: garbage for the layer classes' forward/backward (when fastcells.layers exists).
    Outcome must be a TypeError/ValueError/RuntimeError with a non-empty message, or a result;
    a dtype-changed input must be a TypeError (no silent cast)."""
    layers = _layers_module()
    rng = np.random.default_rng(seed_value)
    failures, calls = {}, 0
    classes = [n for n in ("LSTM", "GRU", "RNN") if hasattr(layers, n)]
    with np.errstate(all="ignore"):
        for i in range(n_examples):
            name = classes[int(rng.integers(len(classes)))]
            dtype = np.dtype(rng.choice([np.float32, np.float64]))
            I, H = int(rng.integers(1, 4)), int(rng.integers(1, 5))
            mod = getattr(layers, name)(I, H, dtype=dtype, seed=1)
            T, B = int(rng.integers(0, 4)), int(rng.integers(0, 4))
            x = rng.standard_normal((T, B, I)).astype(dtype)
            which = rng.choice(["input", "hx", "lengths", "dy"])
            kind = _ARRAY_KINDS[int(rng.integers(len(_ARRAY_KINDS)))]
            sys.stderr.write(f"FUZZ layer {name} {dtype.name} T,B,I,H={(T, B, I, H)} "
                             f"{which}:{kind}\n")
            sys.stderr.flush()
            calls += 1
            try:
                if which == "input":
                    bad, tag = _garbage_array(kind, x, rng)
                    mod.forward(bad)
                elif which == "hx":
                    h = np.zeros((1, B, H), dtype)
                    bad, tag = _garbage_array(kind, h, rng)
                    hx = (bad, np.zeros((1, B, H), dtype)) if name == "LSTM" else bad
                    mod.forward(x, hx)
                elif which == "lengths":
                    bad, tag = _garbage_lengths(
                        _LENGTHS_KINDS[int(rng.integers(len(_LENGTHS_KINDS)))], T, B, rng)
                    mod.forward(x, None, lengths=bad)
                else:
                    y = mod.forward(x)[0]
                    bad, tag = _garbage_array(kind, np.ones_like(y), rng)
                    mod.backward(bad)
            except UserError:
                continue
            except (TypeError, ValueError, RuntimeError) as e:
                if not str(e).strip():
                    failures.setdefault((name, which, "empty-message"), kind)
                continue
            except Exception as e:  # noqa: BLE001
                failures.setdefault((name, which, f"unexpected-{type(e).__name__}"),
                                    f"{kind}: {e}"[:300])
                continue
            if tag == "dtype":
                failures.setdefault((name, which, "silent-cast"), kind)
    return {"calls": calls, "failures": [f"{k}: {v}" for k, v in failures.items()]}


def test_garbage_inputs_layers():
    if _layers_module() is None:
        pytest.skip("fastcells.layers (LSTM, GRU, RNN) not available")
    o = run_cases([("layers", "test_fuzz:layer_fuzz", (LAYER_EXAMPLES, GARBAGE_SEED))],
                  timeout=600)["layers"]
    assert o["status"] == "ok", describe(o)
    assert not o["value"]["failures"], "\n".join(o["value"]["failures"])
