"""The C API (csrc/fastcells.h) called through ctypes (``fastcells.capi.function``).

* Correctness: every cell (LSTM without and with projection, GRU with reset_after 1 and 0,
  RNN tanh and relu), float32 and float64, training forward + backward and inference forward,
  with and without h0/c0, biases, lengths, upstream gradients, bias gradients requested or not,
  degenerate and odd shapes and n_threads 0/1/2: BITWISE equal to the Python API (same kernels,
  same thread plan) and close to ``fastcells.reference`` (the tolerances of conftest.py).
  Outputs are pre-filled with NaN (an element the C API forgets to write shows) and every input
  is checked to be unmodified.
* Workspace: size queries, too small / NULL / misaligned workspaces, the training-forward ->
  backward state machine (consumed by backward, invalidated by inference, re-armed by a new
  training forward, refused for any mismatch of cell, dtype, sizes, flags or optional inputs,
  without being consumed by the refused call).
* Bad arguments: sizes (negative, zero H, beyond BLAS's 32-bit integers -- those in a child
  process, tests/isolated.py), NULL pointers, lengths, n_threads, flags, w_hr with P = 0. An
  error return leaves every array the call could reach (outputs, workspace, inputs) untouched.
* Concurrency: 4 Python threads calling the C API at once (ctypes drops the GIL) get the serial
  results bitwise; two threads racing for one workspace's backward: exactly one wins.
* Consistency of capi.py, capi.pxd, the header and the capsule ``fastcells._C_API``.
"""
import ctypes
import os
import re
import sys
import threading

import numpy as np
import pytest

from conftest import (assert_results_close, assert_results_equal, relu_preactivations,
                      run_concurrently)
from isolated import describe, run_cases

import fastcells
from fastcells import _kernels, capi, reference

CELLS = ("lstm", "lstmp", "gru", "gru_classic", "rnn_tanh", "rnn_relu")
KIND = {"lstm": "lstm", "lstmp": "lstm", "gru": "gru", "gru_classic": "gru",
        "rnn_tanh": "rnn", "rnn_relu": "rnn"}
GATES = {"lstm": 4, "gru": 3, "rnn": 1}
DTYPES = (np.float32, np.float64)
DTYPE_IDS = ("f32", "f64")
BLAS_INT_MAX = 2**31 - 1
STATUS_NAMES = ("FC_OK", "FC_ERR_NULL", "FC_ERR_SIZE", "FC_ERR_ARG", "FC_ERR_WORKSPACE_SIZE",
                "FC_ERR_WORKSPACE_STATE")


@pytest.fixture(params=CELLS)
def cell(request):
    return request.param


@pytest.fixture(params=DTYPES, ids=DTYPE_IDS)
def dtype(request):
    return np.dtype(request.param)


def suffix(dtype):
    return "f32" if np.dtype(dtype) == np.float32 else "f64"


def fname(cell, what, dtype):
    return f"fc_{KIND[cell]}_{what}_{suffix(dtype)}"


def option(cell):
    """The cell's flag argument: {'reset_after': 0/1} (GRU), {'relu': 0/1} (RNN), {} (LSTM)."""
    if KIND[cell] == "gru":
        return {"reset_after": int(cell == "gru")}
    if KIND[cell] == "rnn":
        return {"relu": int(cell == "rnn_relu")}
    return {}


# ============================================================================== problems
class Problem:
    """Inputs and upstream gradients of one call; P = 0 unless the cell is 'lstmp'."""

    def __init__(self, cell, dtype, T, B, I, H, P, arrays):
        self.cell, self.dtype = cell, np.dtype(dtype)
        self.T, self.B, self.I, self.H, self.P = T, B, I, H, P
        self.a = arrays

    @property
    def kind(self):
        return KIND[self.cell]

    @property
    def G(self):
        return GATES[self.kind]

    @property
    def Pe(self):
        return self.P if self.P > 0 else self.H

    def replace(self, **arrays):
        return Problem(self.cell, self.dtype, self.T, self.B, self.I, self.H, self.P,
                       {**self.a, **arrays})

    def astype(self, dtype):
        return Problem(self.cell, dtype, self.T, self.B, self.I, self.H, self.P,
                       {k: (v if v is None or v.dtype.kind != "f" else v.astype(dtype))
                        for k, v in self.a.items()})

    def snapshot(self):
        return {k: v.tobytes() for k, v in self.a.items() if v is not None}

    def assert_unmodified(self, snap):
        for k, v in self.a.items():
            if v is not None:
                assert v.tobytes() == snap[k], f"input {k} was modified by the C API"


def make(cell, dtype, T=5, B=3, I=4, H=6, P=None, *, seed=0, h0=True, c0=True, bias="both",
         lengths=False, upstream=("dy", "dh_n", "dc_n")):
    """Random problem (PyTorch-like init: weights ~ U(-1/sqrt(H), 1/sqrt(H)), data ~ N(0, 1)).

    Everything is drawn first, then dropped, so options do not change the other values. For
    rnn_relu, problems are redrawn (deterministically) until no pre-activation lies within
    100 eps of 0, where relu' and hence the reference comparison would be decided by rounding.
    """
    dtype = np.dtype(dtype)
    kind = KIND[cell]
    G = GATES[kind]
    if cell == "lstmp":
        P = max(1, H - 2) if P is None else P
        assert P >= 1
    else:
        P = 0
    Pe = P or H
    for attempt in range(200):
        rng = np.random.default_rng([seed, attempt])
        k = 1.0 / np.sqrt(H)

        def uni(*shape):
            return rng.uniform(-k, k, shape).astype(dtype)

        def nrm(*shape, scale=1.0):
            return (scale * rng.standard_normal(shape)).astype(dtype)

        a = {"x": nrm(T, B, I), "h0": nrm(B, Pe, scale=0.5),
             "c0": nrm(B, H, scale=0.5) if kind == "lstm" else None,
             "w_ih": uni(G * H, I), "w_hh": uni(G * H, Pe), "b_ih": uni(G * H),
             "b_hh": uni(G * H), "w_hr": uni(P, H) if P else None}
        lens = rng.integers(0, T + 1, B).astype(np.int64)
        if B >= 2:
            lens[0], lens[-1] = 0, T          # both ends of [0, T]
        a["lengths"] = lens if lengths else None
        a["dy"], a["dh_n"] = nrm(T, B, Pe), nrm(B, Pe)
        a["dc_n"] = nrm(B, H) if kind == "lstm" else None
        if not h0:
            a["h0"] = None
        if not c0:
            a["c0"] = None
        if bias in ("none", "hh"):
            a["b_ih"] = None
        if bias in ("none", "ih"):
            a["b_hh"] = None
        for name in ("dy", "dh_n", "dc_n"):
            if name not in upstream:
                a[name] = None
        p = Problem(cell, dtype, T, B, I, H, P, a)
        if cell != "rnn_relu" or relu_margin_ok(p):
            return p
    raise AssertionError("could not draw a relu problem with a safe margin")


def relu_margin_ok(p):
    pre = relu_preactivations(p.a, p.T, p.B, p.H)
    if pre is None:
        return True
    pre = np.abs(pre)
    return pre.min() > 100 * np.finfo(p.dtype).eps * max(pre.max(), 1.0)


def nan(shape, dtype):
    return np.full(shape, np.nan, dtype)


# ============================================================================== C API calls
class Ws:
    """A workspace buffer (NaN-filled: nothing may depend on its initial contents) whose address
    is 64-byte aligned plus ``offset``; ``nbytes`` is what the calls are told it holds."""

    def __init__(self, nbytes, offset=0, fill=np.nan):
        self.buf = np.full((int(nbytes) + offset + 192) // 8, fill, np.float64)
        base = self.buf.ctypes.data
        self.addr = (base + 63) // 64 * 64 + offset
        self.nbytes = int(nbytes)
        assert self.addr + self.nbytes <= base + self.buf.nbytes


def call(name, kw):
    """Call C API function ``name`` with arguments by name (arrays, Ws, int addresses, None).
    The kw dicts hold the Ws objects themselves, keeping their buffers alive."""
    _, params = capi.signatures()[name]
    names = [n for _, n in params]
    assert set(kw) == set(names), (
        f"{name}: missing {set(names) - set(kw)}, unexpected {set(kw) - set(names)}")
    args = []
    for typ, n in params:
        v = kw[n]
        if typ.endswith("*") and isinstance(v, np.ndarray):
            v = v.ctypes.data
        elif isinstance(v, Ws):
            v = v.addr
        args.append(v)
    return capi.function(name)(*args)


def size_kw(p, training):
    kw = dict(T=p.T, B=p.B, I=p.I, H=p.H, training=training, **option(p.cell))
    if p.kind == "lstm":
        kw["P"] = p.P
    return kw


def ws_size(p, training):
    n = call(fname(p.cell, "workspace_size", p.dtype), size_kw(p, training))
    assert n > 0, f"size query returned {n} ({capi.strerror(n)})"
    return n


def fwd_kw(p, ws, training=1, n_threads=1):
    """(function name, keyword arguments, NaN-filled outputs) of a forward call."""
    a, dt = p.a, p.dtype
    outs = {"y": nan((p.T, p.B, p.Pe), dt), "h_n": nan((p.B, p.Pe), dt)}
    if p.kind == "lstm":
        outs["c_n"] = nan((p.B, p.H), dt)
    kw = dict(outs, ws=ws, ws_bytes=ws.nbytes, x=a["x"], h0=a["h0"], w_ih=a["w_ih"],
              w_hh=a["w_hh"], b_ih=a["b_ih"], b_hh=a["b_hh"], lengths=a["lengths"], T=p.T,
              B=p.B, I=p.I, H=p.H, training=training, n_threads=n_threads, **option(p.cell))
    if p.kind == "lstm":
        kw.update(c0=a["c0"], w_hr=a["w_hr"], P=p.P)
    return fname(p.cell, "forward", dt), kw, outs


def bwd_kw(p, ws, n_threads=1, db=("ih", "hh")):
    """(function name, keyword arguments, NaN-filled gradients) of a backward call."""
    a, dt, G = p.a, p.dtype, p.G
    grads = {"dx": nan((p.T, p.B, p.I), dt), "dh0": nan((p.B, p.Pe), dt)}
    if p.kind == "lstm":
        grads["dc0"] = nan((p.B, p.H), dt)
    grads.update(dw_ih=nan((G * p.H, p.I), dt), dw_hh=nan((G * p.H, p.Pe), dt),
                 db_ih=nan(G * p.H, dt) if "ih" in db else None,
                 db_hh=nan(G * p.H, dt) if "hh" in db else None)
    if p.kind == "lstm":
        grads["dw_hr"] = nan((p.P, p.H), dt) if p.P else None
    kw = dict(grads, ws=ws, ws_bytes=ws.nbytes, dy=a["dy"], dh_n=a["dh_n"], x=a["x"],
              h0=a["h0"], w_ih=a["w_ih"], w_hh=a["w_hh"], lengths=a["lengths"], T=p.T, B=p.B,
              I=p.I, H=p.H, n_threads=n_threads, **option(p.cell))
    if p.kind == "lstm":
        kw.update(dc_n=a["dc_n"], c0=a["c0"], w_hr=a["w_hr"], P=p.P)
    if p.kind != "lstm" or not p.P:
        grads.pop("dw_hr", None)
    return fname(p.cell, "backward", dt), kw, grads


def ok(name, kw):
    st = call(name, kw)
    assert st == capi.FC_OK, f"{name} returned {st}: {capi.strerror(st)}"


def expect_status(expected, name, kw, watch=()):
    """Call; assert the status and that no array the call could reach changed (outputs,
    inputs and the buffers in ``watch``, e.g. the workspace): errors come before any work."""
    arrays = [v.buf if isinstance(v, Ws) else v for v in kw.values()
              if isinstance(v, (np.ndarray, Ws))] + list(watch)
    before = [a.tobytes() for a in arrays]
    st = call(name, kw)
    assert st == expected, (f"{name}: status {st} ({capi.strerror(st)}), expected {expected} "
                            f"({capi.strerror(expected)})")
    if st != capi.FC_OK:
        for a, b in zip(arrays, before):
            assert a.tobytes() == b, f"{name} failed with {st} but wrote to an argument"


def c_train(p, n_threads=1, db=("ih", "hh"), ws=None, bwd_threads=None):
    """C API training forward + backward: {outputs..., gradients...}."""
    ws = ws or Ws(ws_size(p, 1))
    name, kw, outs = fwd_kw(p, ws, 1, n_threads)
    ok(name, kw)
    name, kw, grads = bwd_kw(p, ws, n_threads if bwd_threads is None else bwd_threads, db)
    ok(name, kw)
    return {**outs, **grads}


def c_infer(p, n_threads=1, ws=None):
    ws = ws or Ws(ws_size(p, 0))
    name, kw, outs = fwd_kw(p, ws, 0, n_threads)
    ok(name, kw)
    return outs


# ====================================================================== Python API / reference
def py_threads(n_threads):
    """The Python API's n_threads for the C API's (0 = OpenMP's default)."""
    return n_threads if n_threads > 0 else _kernels.omp_max_threads()


def api_forward(module, p, a, training, **kw):
    if p.kind == "lstm":
        y, h_n, c_n, ws = module.lstm_forward(a["x"], a["h0"], a["c0"], a["w_ih"], a["w_hh"],
                                              a["b_ih"], a["b_hh"], w_hr=a["w_hr"],
                                              lengths=a["lengths"], training=training, **kw)
        return {"y": y, "h_n": h_n, "c_n": c_n}, ws
    if p.kind == "gru":
        y, h_n, ws = module.gru_forward(a["x"], a["h0"], a["w_ih"], a["w_hh"], a["b_ih"],
                                        a["b_hh"], reset_after=p.cell == "gru",
                                        lengths=a["lengths"], training=training, **kw)
    else:
        y, h_n, ws = module.rnn_forward(a["x"], a["h0"], a["w_ih"], a["w_hh"], a["b_ih"],
                                        a["b_hh"], nonlinearity=p.cell.split("_")[1],
                                        lengths=a["lengths"], training=training, **kw)
    return {"y": y, "h_n": h_n}, ws


def api_backward(module, p, a, ws):
    if p.kind == "lstm":
        res = module.lstm_backward(a["dy"], a["dh_n"], a["dc_n"], ws)
        names = ["dx", "dh0", "dc0", "dw_ih", "dw_hh", "db_ih", "db_hh"] + (
            ["dw_hr"] if p.P else [])
    else:
        res = getattr(module, f"{p.kind}_backward")(a["dy"], a["dh_n"], ws)
        names = ["dx", "dh0", "dw_ih", "dw_hh", "db_ih", "db_hh"]
    assert len(res) == len(names)
    return dict(zip(names, res))


def zero_biases(p, a):
    a = dict(a)
    for k in ("b_ih", "b_hh"):
        if a[k] is None:
            a[k] = np.zeros(p.G * p.H, a["w_hh"].dtype)
    return a


def expected_train(module, p, n_threads=1, db=("ih", "hh")):
    """What the C API's training forward + backward must give, from the Python API (bitwise)
    or the reference (float64, biases paired with zeros: the reference takes both or none).
    A requested bias gradient whose bias was NULL is the gradient at a zero bias."""
    kw = {"n_threads": py_threads(n_threads)} if module is fastcells else {}
    a = p.a
    if module is reference:
        a = zero_biases(p, {k: (v.astype(np.float64) if v is not None and v.dtype.kind == "f"
                                else v) for k, v in a.items()})
    outs, ws = api_forward(module, p, a, True, **kw)
    res = {**outs, **api_backward(module, p, a, ws)}
    need = [k for k in ("ih", "hh") if k in db and a[f"b_{k}"] is None]
    if need:
        za = zero_biases(p, a)
        outs2, ws2 = api_forward(module, p, za, True, **kw)
        res2 = api_backward(module, p, za, ws2)
        for k in need:
            res[f"db_{k}"] = res2[f"db_{k}"]
    for k in ("ih", "hh"):
        if k not in db:
            res[f"db_{k}"] = None
    return res


def expected_infer(module, p, n_threads=1):
    kw = {"n_threads": py_threads(n_threads)} if module is fastcells else {}
    a = p.a
    if module is reference:
        a = zero_biases(p, {k: (v.astype(np.float64) if v is not None and v.dtype.kind == "f"
                                else v) for k, v in a.items()})
    outs, ws = api_forward(module, p, a, False, **kw)
    assert ws is None
    return outs


# ============================================================================== 1. correctness
# (id, (T, B, I, H, P), options). P is used by 'lstmp' only (the other cells have P = 0).
CASES = [
    ("base", (5, 3, 4, 6, 4), {}),
    ("nt2", (5, 3, 4, 6, 4), dict(n_threads=2)),
    ("nt0", (5, 3, 4, 6, 4), dict(n_threads=0)),
    ("no-state-no-bias-no-db", (5, 3, 4, 6, 4), dict(h0=False, c0=False, bias="none", db=())),
    ("no-bias-db-both", (5, 3, 4, 6, 4), dict(bias="none")),
    ("h0-only-bias-ih", (5, 3, 4, 6, 4), dict(c0=False, bias="ih")),
    ("c0-only-bias-hh-db-ih", (5, 3, 4, 6, 4), dict(h0=False, bias="hh", db=("ih",))),
    ("db-hh-only", (5, 3, 4, 6, 4), dict(db=("hh",))),
    ("lengths", (6, 5, 4, 6, 4), dict(lengths=True)),
    ("lengths-nt2", (6, 5, 4, 6, 4), dict(lengths=True, n_threads=2, seed=3)),
    ("lengths-no-state", (6, 5, 4, 6, 4), dict(lengths=True, h0=False, c0=False, seed=4)),
    ("no-upstream", (5, 3, 4, 6, 4), dict(upstream=())),
    ("dy-only", (5, 3, 4, 6, 4), dict(upstream=("dy",))),
    ("dh_n-dc_n-only", (5, 3, 4, 6, 4), dict(upstream=("dh_n", "dc_n"))),
    ("T0", (0, 3, 4, 6, 4), dict(lengths=True)),
    ("B0", (5, 0, 4, 6, 4), dict(lengths=True)),
    ("B1", (5, 1, 4, 6, 4), dict(lengths=True, n_threads=2)),
    ("I0", (5, 3, 0, 6, 4), {}),
    ("H1", (5, 3, 4, 1, 1), {}),
    ("T1", (1, 3, 4, 6, 4), {}),
    ("P-gt-H", (4, 3, 5, 3, 5), {}),
    ("primes", (7, 13, 5, 17, 11), dict(lengths=True, n_threads=2)),
    # large enough for 2 threads (see _kernels.plan): batch split, and hidden split (H = 256)
    ("big-batch-split", (20, 32, 72, 64, 32), dict(n_threads=2, lengths=True)),
    ("big-hidden-split", (32, 3, 32, 256, 64), dict(n_threads=2)),
    # batch 1 with enough weights per step: hidden split below MIN_FLOPS_PER_THREAD per thread
    ("big-b1-hidden-split", (60, 1, 64, 128, 64), dict(n_threads=2, lengths=True)),
    # training in slice mode (see test_slices.py; the workspace header records it): the
    # benchmark's small shape
    ("slices", (64, 16, 32, 64, 16), dict(n_threads=2, lengths=True, seed=5)),
]


def _case_problem(cell, dtype, shape, opts):
    T, B, I, H, P = shape
    opts = dict(opts)
    opts.pop("n_threads", None)
    opts.pop("db", None)
    return make(cell, dtype, T, B, I, H, P if cell == "lstmp" else None,
                seed=opts.pop("seed", 1), **opts)


@pytest.mark.parametrize("case, shape, opts", CASES, ids=[c[0] for c in CASES])
def test_matches_python_api_and_reference(cell, dtype, case, shape, opts):
    p = _case_problem(cell, dtype, shape, opts)
    nt = opts.get("n_threads", 1)
    db = opts.get("db", ("ih", "hh"))
    snap = p.snapshot()
    got = c_train(p, nt, db)
    got_inf = c_infer(p, nt)
    p.assert_unmodified(snap)
    # same kernels, same thread plan: bitwise equal to the Python API
    assert_results_equal(got, expected_train(fastcells, p, nt, db))
    assert_results_equal(got_inf, expected_infer(fastcells, p, nt))
    # and right
    assert_results_close(got, expected_train(reference, p, nt, db), dtype)
    assert_results_close(got_inf, expected_infer(reference, p, nt), dtype)
    if p.a["lengths"] is not None and p.T > 0:
        # packed-sequence semantics: y = 0 past each length
        t = np.arange(p.T)[:, None]
        assert np.all(got["y"][t >= p.a["lengths"][None, :]] == 0)


def test_big_cases_use_two_threads():
    """The 'big' cases above do exercise the multi-threaded paths (batch and hidden split)."""
    layouts = set()
    for cid, (T, B, I, H, P), _ in CASES:
        if not cid.startswith("big"):
            continue
        for kind, G in GATES.items():
            nt, rows, cols = _kernels.plan(2, 2.0 * T * B * G * H * (I + H), B, H, G, H, 4,
                                           True, 0)
            if kind == "lstm":
                assert nt == 2, (cid, kind)
            layouts.add((rows, cols))
    assert {(2, 1), (1, 2)} <= layouts


def test_slices_case_uses_slice_mode():
    """The 'slices' case above trains every cell but the projected LSTM in slice mode."""
    (T, B, I, H, P), = [shape for cid, shape, _ in CASES if cid == "slices"]
    for G in (4, 3, 1):
        nt, rows, cols = _kernels.plan(2, 2.0 * T * B * G * H * (I + H), B, H, G, H, 4, True, 0)
        assert _kernels.slices(nt, rows, cols, 0, T, B, I, H, G, H, True, 4) == 2


@pytest.mark.parametrize("cell", ["lstm", "gru", "gru_classic", "rnn_tanh"])
def test_slices_backward_follows_the_header(cell):
    """A slice-mode forward's backward runs in its slices whatever n_threads it is given (the
    header records the count: the same bits as the Python API at 2 threads), and a count the
    forward could not have chosen is refused with FC_ERR_WORKSPACE_STATE."""
    import ctypes
    (T, B, I, H, P), = [shape for cid, shape, _ in CASES if cid == "slices"]
    p = make(cell, np.float32, T, B, I, H, lengths=True, seed=8)
    want = expected_train(fastcells, p, 2)
    for bwd_threads in (1, 4):
        assert_results_equal(c_train(p, 2, bwd_threads=bwd_threads), want)
    ws = Ws(ws_size(p, 1))
    name, kw, _ = fwd_kw(p, ws, 1, 2)
    ok(name, kw)
    reserved = ctypes.c_int32.from_address(ws.addr + 20)     # ws_header.reserved
    assert reserved.value == 2
    reserved.value = 9
    bname, bkw, _ = bwd_kw(p, ws, 2)
    expect_status(capi.FC_ERR_WORKSPACE_STATE, bname, bkw, [ws.buf])


def test_batch1_hidden_split_rule():
    """At batch 1 the hidden split takes a second thread once the packed weights a step reads
    reach 256 KB (W_hh, plus W_ih in an inference forward), if the call has at least 8 MFLOP;
    never with n_threads = 1, a forced batch split, or where the hidden split is not allowed."""
    plan = _kernels.plan
    T, I, H = 100, 64, 128
    lstm_fwd = 2.0 * T * 4 * H * (I + H)
    assert plan(2, lstm_fwd, 1, H, 4, H, 4, True, 0, I) == (2, 1, 2)      # inference, 384 KB
    assert plan(2, lstm_fwd, 1, H, 4, H, 4, True, 0, 0) == (2, 1, 2)      # training, 256 KB
    assert plan(2, 2 * lstm_fwd, 1, H, 4, H, 4, True, 0, 0) == (2, 1, 2)  # backward
    gru_fwd = 2.0 * T * 3 * H * (I + H)
    assert plan(2, gru_fwd, 1, H, 3, H, 4, True, 0, I) == (2, 1, 2)       # inference, 288 KB
    assert plan(2, 2 * gru_fwd, 1, H, 3, H, 4, True, 0, 0)[1:] == (1, 1)  # training, 192 KB
    assert plan(2, 2.0 * T * H * (I + H), 1, H, 1, H, 4, True, 0, I)[0] == 1  # Elman, 96 KB
    assert plan(2, lstm_fwd / T, 1, H, 4, H, 4, True, 0, I)[0] == 1       # T = 1: 0.2 MFLOP
    assert plan(1, lstm_fwd, 1, H, 4, H, 4, True, 0, I) == (1, 1, 1)
    assert plan(2, lstm_fwd, 1, H, 4, H, 4, True, 1, I)[2] == 1           # forced batch split
    assert plan(2, lstm_fwd, 1, H, 4, H, 4, False, 0, I)[2] == 1          # projection
    assert plan(2, 2 * lstm_fwd, 2, H, 4, H, 4, True, 0, I) == (2, 2, 1)  # batch 2: batch split
    assert plan(4, lstm_fwd, 1, H, 4, H, 8, True, 0, I) == (4, 1, 4)      # 768 KB: 4 threads
    assert plan(4, lstm_fwd, 1, 96, 4, 96, 8, True, 0, I) == (3, 1, 3)    # H = 96: 3 x 32 units


def _null_empty(kw):
    """kw with every array that has no elements replaced by NULL."""
    return {k: (None if isinstance(v, np.ndarray) and v.size == 0 else v) for k, v in kw.items()}


@pytest.mark.parametrize("what", ["T0", "B0", "I0"])
def test_empty_arrays_may_be_null(cell, dtype, what):
    """A required array with no elements may be NULL (not stated by the header; _capi.pxi's
    missing() allows it, as Cython passes empty arrays as NULL): same results as with real
    empty arrays. NULL-ing empty h0/c0/lengths does so in forward and backward alike."""
    T, B, I = {"T0": (0, 3, 4), "B0": (4, 0, 4), "I0": (4, 3, 0)}[what]
    p = make(cell, dtype, T, B, I, 5, lengths=True)
    expected, expected_inf = expected_train(fastcells, p), expected_infer(fastcells, p)
    ws = Ws(ws_size(p, 1))
    name, kw, outs = fwd_kw(p, ws)
    nkw = _null_empty(kw)
    assert any(nkw[k] is None for k in ("x", "y", "w_ih"))
    ok(name, nkw)
    name, kw, grads = bwd_kw(p, ws)
    nkw = _null_empty(kw)
    assert any(nkw[k] is None for k in ("x", "dx", "dw_ih"))
    ok(name, nkw)
    assert_results_equal({**outs, **grads}, expected)
    name, kw, outs = fwd_kw(p, Ws(ws_size(p, 0)), 0)
    ok(name, _null_empty(kw))
    assert_results_equal(outs, expected_inf)


# ============================================================================== 2. workspace
def test_workspace_size_queries(cell, dtype):
    p = make(cell, dtype, 1, 4, 3, 8)
    sizes = [ws_size(make(cell, dtype, T, 4, 3, 8), 1) for T in range(0, 8)]
    assert all(isinstance(s, int) and s > 0 for s in sizes)
    # non-decreasing in T, growing with it once the saved activations outweigh the inference
    # scratch (a training-sized workspace also serves inference)
    assert all(b >= a for a, b in zip(sizes, sizes[1:])), f"training sizes decrease: {sizes}"
    assert sizes[-1] > sizes[0], sizes
    assert all(s >= ws_size(make(cell, dtype, T, 4, 3, 8), 0) for T, s in enumerate(sizes))
    # inference: O(B*H + weights), independent of T
    T0 = 1000
    inf = {T: call(fname(cell, "workspace_size", dtype),
                   {**size_kw(p, 0), "T": T}) for T in (1, 5, T0, T0 + 1, 3 * T0, 50 * T0)}
    assert all(v > 0 for v in inf.values()), inf
    assert inf[T0] == inf[T0 + 1] == inf[3 * T0] == inf[50 * T0], inf
    assert inf[1] == inf[5] == inf[T0]
    train_big = call(fname(cell, "workspace_size", dtype), {**size_kw(p, 1), "T": 50 * T0})
    assert train_big > 40 * inf[50 * T0]
    # float64 needs more than float32
    s32 = ws_size(make(cell, np.float32, 7, 4, 3, 8), 1)
    s64 = ws_size(make(cell, np.float64, 7, 4, 3, 8), 1)
    assert s64 > s32
    # bad flags / sizes
    name = fname(cell, "workspace_size", dtype)
    for training in (2, -1):
        assert call(name, {**size_kw(p, 1), "training": training}) == capi.FC_ERR_ARG
    for k in option(cell):
        for v in (2, -1):
            assert call(name, {**size_kw(p, 1), k: v}) == capi.FC_ERR_ARG
    for k, v in (("T", -1), ("B", -1), ("I", -1), ("H", 0), ("H", -3)):
        assert call(name, {**size_kw(p, 1), k: v}) == capi.FC_ERR_SIZE, (k, v)
    if p.kind == "lstm":
        assert call(name, {**size_kw(p, 1), "P": -1}) == capi.FC_ERR_SIZE


@pytest.mark.parametrize("training", [1, 0], ids=["training", "inference"])
def test_workspace_too_small_null_misaligned(cell, dtype, training):
    p = make(cell, dtype)
    need = ws_size(p, training)
    expected = expected_train(fastcells, p) if training else expected_infer(fastcells, p)
    bad = [Ws(need - 1), Ws(0), Ws(need, offset=4), Ws(need, offset=2), Ws(need, offset=1),
           Ws(need, offset=12)]
    for ws in bad:
        name, kw, _ = fwd_kw(p, ws, training)
        expect_status(capi.FC_ERR_WORKSPACE_SIZE, name, kw, [ws.buf])
    # NULL with a big enough size, and a negative size
    name, kw, _ = fwd_kw(p, Ws(need), training)
    expect_status(capi.FC_ERR_WORKSPACE_SIZE, name, {**kw, "ws": None})
    expect_status(capi.FC_ERR_WORKSPACE_SIZE, name, {**kw, "ws_bytes": -need})
    # 8-byte alignment is enough (and a larger ws_bytes is fine), with the same bits; the
    # packed-weight slots are rounded up to 64 bytes at run time, also with several panels
    big = make(cell, dtype, T=4, B=5, I=7, H=70, P=40 if cell == "lstmp" else None)
    big_need = ws_size(big, training)
    big_expected = expected_train(fastcells, big) if training else expected_infer(fastcells, big)
    for offset in (8, 16, 24, 40, 56):
        for q, n, want in ((p, need, expected), (big, big_need, big_expected)):
            ws = Ws(n + offset, offset=offset)
            got = c_train(q, ws=ws) if training else c_infer(q, ws=ws)
            assert_results_equal(got, want)
    if training:
        # backward: the same checks, and a refused backward does not consume the workspace
        ws = Ws(need)
        name, kw, outs = fwd_kw(p, ws)
        ok(name, kw)
        name, kw, grads = bwd_kw(p, ws)
        for bad_kw in ({"ws_bytes": need - 1}, {"ws": None}, {"ws": ws.addr + 4},
                       {"ws_bytes": 0}):
            expect_status(capi.FC_ERR_WORKSPACE_SIZE, name, {**kw, **bad_kw}, [ws.buf])
        ok(name, kw)
        assert_results_equal({**outs, **grads}, expected)


def test_workspace_state_machine(cell, dtype):
    p = make(cell, dtype, seed=5)
    q = make(cell, dtype, seed=6)            # same shape, other values
    need = ws_size(p, 1)
    exp_p, exp_q = expected_train(fastcells, p), expected_train(fastcells, q)

    # fresh workspaces (never used: NaN or zero bytes) hold no forward
    for fill in (np.nan, 0.0):
        ws = Ws(need, fill=fill)
        name, kw, _ = bwd_kw(p, ws)
        expect_status(capi.FC_ERR_WORKSPACE_STATE, name, kw, [ws.buf])

    ws = Ws(need)
    name, kw, outs = fwd_kw(p, ws)
    ok(name, kw)
    bname, bkw, grads = bwd_kw(p, ws)
    ok(bname, bkw)
    assert_results_equal({**outs, **grads}, exp_p)
    # consumed: a second backward is refused and writes nothing
    bname, bkw2, _ = bwd_kw(p, ws)
    expect_status(capi.FC_ERR_WORKSPACE_STATE, bname, bkw2, [ws.buf])
    # a new training forward re-arms it (other inputs: the new forward's gradients)
    name, kw, outs = fwd_kw(q, ws)
    ok(name, kw)
    bname, bkw, grads = bwd_kw(q, ws)
    ok(bname, bkw)
    assert_results_equal({**outs, **grads}, exp_q)

    # an inference forward invalidates a saved training forward
    name, kw, _ = fwd_kw(p, ws)
    ok(name, kw)
    name, kw, outs = fwd_kw(q, ws, training=0)
    ok(name, kw)
    assert_results_equal(outs, expected_infer(fastcells, q))
    bname, bkw, _ = bwd_kw(p, ws)
    expect_status(capi.FC_ERR_WORKSPACE_STATE, bname, bkw, [ws.buf])
    # an inference-sized workspace is too small for backward
    inf_need = ws_size(p, 0)
    if inf_need < need:
        ws_inf = Ws(inf_need)
        name, kw, _ = fwd_kw(p, ws_inf, training=0)
        ok(name, kw)
        bname, bkw, _ = bwd_kw(p, ws_inf)
        expect_status(capi.FC_ERR_WORKSPACE_SIZE, bname, bkw, [ws_inf.buf])

    # a failing forward changes nothing: the saved forward is still there
    name, kw, _ = fwd_kw(p, ws)
    ok(name, kw)
    name, kw, _ = fwd_kw(q, ws)
    expect_status(capi.FC_ERR_ARG, name, {**kw, "n_threads": -1}, [ws.buf])
    expect_status(capi.FC_ERR_WORKSPACE_SIZE, name, {**kw, "ws_bytes": need - 1}, [ws.buf])
    bname, bkw, grads = bwd_kw(p, ws, n_threads=2)     # backward may use other n_threads
    ok(bname, bkw)
    assert_results_close({**grads}, {k: v for k, v in expected_train(reference, p).items()
                                     if k in grads}, dtype)


def test_inference_workspace_reusable(cell, dtype):
    """Inference needs no state: one (inference-sized) workspace serves any number of calls,
    in any order, also after a training forward used a bigger buffer."""
    probs = [make(cell, dtype, seed=s, lengths=s % 2 == 1) for s in range(4)]
    expected = [expected_infer(fastcells, p) for p in probs]
    ws = Ws(ws_size(probs[0], 0))
    for i in (0, 1, 2, 3, 2, 0, 1):
        assert_results_equal(c_infer(probs[i], ws=ws), expected[i])
    big = Ws(ws_size(probs[0], 1))
    name, kw, _ = fwd_kw(probs[0], big)
    ok(name, kw)
    for i in (3, 1):
        assert_results_equal(c_infer(probs[i], ws=big), expected[i])


def _mismatches(p):
    """(description, problem q, argument overrides) for a backward that does not match the
    training forward of p: every one must be refused with FC_ERR_WORKSPACE_STATE."""
    T, B, I, H = p.T, p.B, p.I, p.H
    c, dt = p.cell, p.dtype
    P = p.P if p.P else None
    out = [(f"T={T - 1}", make(c, dt, T - 1, B, I, H, P), {}),
           (f"T={T + 1}", make(c, dt, T + 1, B, I, H, P), {}),
           (f"B={B - 1}", make(c, dt, T, B - 1, I, H, P), {}),
           (f"B={B + 1}", make(c, dt, T, B + 1, I, H, P), {}),
           (f"I={I + 1}", make(c, dt, T, B, I + 1, H, P), {}),
           (f"I={I - 1}", make(c, dt, T, B, I - 1, H, P), {}),
           (f"H={H - 1}", make(c, dt, T, B, I, H - 1, P), {}),
           (f"H={H + 1}", make(c, dt, T, B, I, H + 1, P), {}),
           ("dtype", p.astype(np.float64 if dt == np.float32 else np.float32), {})]
    other_kind = {"lstm": "gru", "gru": "rnn_tanh", "rnn": "lstm"}[p.kind]
    out.append((f"cell={other_kind}", make(other_kind, dt, T, B, I, H), {}))
    if p.kind == "lstm":
        if p.P:
            out.append(("P=0", make("lstm", dt, T, B, I, H), {}))
            out.append((f"P={p.P + 1}", make("lstmp", dt, T, B, I, H, p.P + 1), {}))
        else:
            out.append(("P=2", make("lstmp", dt, T, B, I, H, 2), {}))
    for k, v in option(c).items():
        out.append((f"{k}={1 - v}", p, {k: 1 - v}))
    if p.a["h0"] is not None:
        out.append(("h0 NULL", p.replace(h0=None), {}))
    else:
        out.append(("h0 given", p.replace(h0=np.zeros((B, p.Pe), dt)), {}))
    if p.kind == "lstm":
        if p.a["c0"] is not None:
            out.append(("c0 NULL", p.replace(c0=None), {}))
        else:
            out.append(("c0 given", p.replace(c0=np.zeros((B, H), dt)), {}))
    if p.a["lengths"] is not None:
        out.append(("lengths NULL", p.replace(lengths=None), {}))
    else:
        out.append(("lengths given", p.replace(lengths=np.full(B, T, np.int64)), {}))
    return out


@pytest.mark.parametrize("variant", ["all-inputs", "no-optional"])
def test_backward_must_match_forward(cell, dtype, variant):
    """A backward with other sizes, dtype, cell, flags, or optional inputs (h0, c0, lengths)
    NULL where forward had them (or the reverse) is refused -- and does not consume the
    workspace: the matching backward still works afterwards."""
    if variant == "all-inputs":
        p = make(cell, dtype, 5, 4, 4, 6, lengths=True, seed=7)
    else:
        p = make(cell, dtype, 5, 4, 4, 6, h0=False, c0=False, seed=7)
    expected = expected_train(fastcells, p)
    mism = _mismatches(p)
    need = max([ws_size(p, 1)] + [ws_size(q, 1) for _, q, _ in mism])
    ws = Ws(need)                     # big enough for every claimed shape
    name, kw, outs = fwd_kw(p, ws)
    ok(name, kw)
    for what, q, over in mism:
        bname, bkw, _ = bwd_kw(q, ws)
        bkw.update(over)
        try:
            expect_status(capi.FC_ERR_WORKSPACE_STATE, bname, bkw, [ws.buf])
        except AssertionError as e:
            raise AssertionError(f"backward with {what}: {e}") from None
    bname, bkw, grads = bwd_kw(p, ws)
    ok(bname, bkw)
    assert_results_equal({**outs, **grads}, expected)


# ============================================================================== 3. bad arguments
def _armed(p):
    """A workspace holding p's training forward, and p's backward call."""
    ws = Ws(ws_size(p, 1))
    name, kw, _ = fwd_kw(p, ws)
    ok(name, kw)
    bname, bkw, _ = bwd_kw(p, ws)
    return ws, bname, bkw


def _all_calls(p):
    """[(label, name, kw, watch)] for size-checked calls: forward training/inference and an
    armed backward (call last: a final good backward proves nothing consumed it)."""
    ws_t, ws_i = Ws(ws_size(p, 1)), Ws(ws_size(p, 0))
    n1, k1, _ = fwd_kw(p, ws_t, 1)
    n0, k0, _ = fwd_kw(p, ws_i, 0)
    ws_b, nb, kb = _armed(p)
    return [("forward-training", n1, k1, [ws_t.buf]), ("forward-inference", n0, k0, [ws_i.buf]),
            ("backward", nb, kb, [ws_b.buf])]


def _finish(calls):
    """The unmodified calls still succeed (the backward's workspace was not consumed)."""
    for label, name, kw, _ in calls:
        ok(name, kw)


def test_bad_sizes(cell, dtype):
    p = make(cell, dtype)
    calls = _all_calls(p)
    bad = [("T", -1), ("B", -1), ("I", -1), ("H", 0), ("H", -1), ("T", -(2**40))]
    if p.kind == "lstm":
        bad.append(("P", -1))
    for label, name, kw, watch in calls:
        for k, v in bad:
            try:
                expect_status(capi.FC_ERR_SIZE, name, {**kw, k: v}, watch)
            except AssertionError as e:
                raise AssertionError(f"{label} {k}={v}: {e}") from None
    _finish(calls)


REQUIRED = {"forward": {"y", "h_n", "c_n", "x", "w_ih", "w_hh"},
            "backward": {"dx", "dh0", "dc0", "dw_ih", "dw_hh", "x", "w_ih", "w_hh"}}
OPTIONAL = {"forward": {"h0", "c0", "b_ih", "b_hh", "lengths", "w_hr"},
            "backward": {"dy", "dh_n", "dc_n", "db_ih", "db_hh", "h0", "c0", "lengths", "w_hr",
                         "dw_hr"}}


def test_null_pointers(cell, dtype):
    """NULL for a required array -> FC_ERR_NULL; NULL ws -> FC_ERR_WORKSPACE_SIZE; every pointer
    of the signatures is classified (a new one makes this test fail until it is)."""
    p = make(cell, dtype, lengths=True)
    proj = {"w_hr", "dw_hr"} if p.P else set()
    calls = _all_calls(p)
    for label, name, kw, watch in calls:
        what = "backward" if label == "backward" else "forward"
        ptrs = {n for t, n in capi.signatures()[name][1] if t.endswith("*")}
        required = (REQUIRED[what] | (proj & ptrs)) & ptrs
        optional = (OPTIONAL[what] - proj) & ptrs
        assert ptrs == required | optional | {"ws"}, (
            f"{name}: unclassified pointers {ptrs - required - optional - {'ws'}}")
        for n in sorted(required):
            try:
                expect_status(capi.FC_ERR_NULL, name, {**kw, n: None}, watch)
            except AssertionError as e:
                raise AssertionError(f"{label} {n}=NULL: {e}") from None
        expect_status(capi.FC_ERR_WORKSPACE_SIZE, name, {**kw, "ws": None}, watch)
    _finish(calls)
    # the optional ones may be NULL (forward: each alone; backward: the upstream gradients and
    # the bias gradients -- h0, c0, lengths must match forward, tested above)
    ws = Ws(ws_size(p, 1))
    name, kw, _ = fwd_kw(p, ws)
    for n in sorted((OPTIONAL["forward"] - proj) & set(kw)):
        if kw[n] is not None:
            ok(name, {**kw, n: None})
    for n in sorted({"dy", "dh_n", "dc_n", "db_ih", "db_hh"}):
        ok(name, kw)
        bname, bkw, _ = bwd_kw(p, ws)
        if n in bkw:
            ok(bname, {**bkw, n: None})


def test_bad_lengths(cell, dtype):
    p = make(cell, dtype, 5, 4, 3, 6, lengths=True)
    calls = _all_calls(p)
    for label, name, kw, watch in calls:
        for pos in (0, 2, 3):
            for v in (-1, p.T + 1, -(2**62), 2**62):
                lengths = p.a["lengths"].copy()
                lengths[pos] = v
                try:
                    expect_status(capi.FC_ERR_ARG, name, {**kw, "lengths": lengths}, watch)
                except AssertionError as e:
                    raise AssertionError(f"{label} lengths={lengths}: {e}") from None
    _finish(calls)


def test_bad_n_threads(cell, dtype):
    p = make(cell, dtype)
    calls = _all_calls(p)
    for label, name, kw, watch in calls:
        for nt in (-1, -(2**31), 4097, 5000, 2**31 - 1):
            expect_status(capi.FC_ERR_ARG, name, {**kw, "n_threads": nt}, watch)
    _finish(calls)
    # the upper bound itself is valid (a small problem then uses fewer threads)
    assert_results_equal(c_train(p, 4096), expected_train(fastcells, p, 4096))
    assert_results_equal(c_infer(p, 4096), expected_infer(fastcells, p, 4096))


def test_bad_flags(cell, dtype):
    p = make(cell, dtype)
    calls = _all_calls(p)
    for label, name, kw, watch in calls:
        flags = dict(option(cell))
        if label != "backward":
            flags["training"] = 1
        for k in flags:
            for v in (2, -1, 256):
                try:
                    expect_status(capi.FC_ERR_ARG, name, {**kw, k: v}, watch)
                except AssertionError as e:
                    raise AssertionError(f"{label} {k}={v}: {e}") from None
    _finish(calls)


def test_w_hr_with_p0(dtype):
    """LSTM without projection (P = 0) with w_hr / dw_hr given is refused (FC_ERR_ARG); with
    P > 0 they are required (FC_ERR_NULL)."""
    p = make("lstm", dtype)
    junk = np.zeros((p.H, p.H), dtype)
    calls = _all_calls(p)
    for label, name, kw, watch in calls:
        expect_status(capi.FC_ERR_ARG, name, {**kw, "w_hr": junk}, watch)
        if label == "backward":
            expect_status(capi.FC_ERR_ARG, name, {**kw, "dw_hr": junk}, watch)
    _finish(calls)
    q = make("lstmp", dtype)
    for label, name, kw, watch in _all_calls(q):
        expect_status(capi.FC_ERR_NULL, name, {**kw, "w_hr": None}, watch)
        if label == "backward":
            expect_status(capi.FC_ERR_NULL, name, {**kw, "dw_hr": None}, watch)
            ok(name, kw)


def test_strerror_and_check():
    codes = [getattr(capi, n) for n in STATUS_NAMES]
    assert codes == [0, -1, -2, -3, -4, -5]
    msgs = [capi.strerror(c) for c in codes]
    assert all(isinstance(m, str) and m.strip() for m in msgs)
    assert len(set(msgs)) == len(msgs), msgs
    unknown = {capi.strerror(c) for c in (1, 5, -6, -100, 2**31 - 1, -(2**31))}
    assert len(unknown) == 1, unknown
    (u,) = unknown
    assert "unknown" in u.lower() and u not in msgs
    # the ctypes function directly: bytes
    assert capi.function("fc_strerror")(capi.FC_ERR_SIZE).decode() == msgs[2]
    # check()
    assert capi.check(capi.FC_OK) == 0
    assert capi.check(7) == 7
    for c, m in zip(codes[1:], msgs[1:]):
        with pytest.raises(capi.CapiError) as ei:
            capi.check(c)
        assert ei.value.status == c
        assert isinstance(ei.value, RuntimeError)
        assert m in str(ei.value)
    with pytest.raises(capi.CapiError) as ei:
        capi.check(-77)
    assert ei.value.status == -77
    with pytest.raises(KeyError):
        capi.function("fc_no_such_function")


# ------------------------------------------------------------------------------ huge sizes (child)
def _huge_shapes(cell):
    """(label, T, B, I, H, P) beyond BLAS's 32-bit integers. The 'wrap' ones overflow int64
    when multiplied (T*B = 2**64; G*H = 2**64 + small), which must not fool the check."""
    G = GATES[KIND[cell]]
    P = 2 if cell == "lstmp" else 0
    shapes = [("TB=2^32", 2**16, 2**16, 1, 4, P), ("T=2^31", 2**31, 1, 1, 4, P),
              ("B=2^31", 1, 2**31, 1, 4, P), ("I=2^31", 1, 1, 2**31, 4, P),
              ("GH>2^31-1", 1, 1, 1, BLAS_INT_MAX // G + 1, P),
              ("TB-wrap-2^32x2^32", 2**32, 2**32, 1, 4, P),
              ("TB-wrap-2^33x2^31", 2**33, 2**31, 1, 4, P)]
    if KIND[cell] == "lstm":
        shapes.append(("P=2^31", 1, 1, 1, 4, 2**31))
        shapes.append(("GH-wrap-H=2^62", 1, 1, 1, 2**62, P))
    if KIND[cell] == "gru":
        shapes.append(("GH-wrap-3H=2^64+2", 1, 1, 1, (2**64 + 2) // 3, 0))
    return shapes


def _huge_case(cell, dtype_name, T, B, I, H, P, with_lengths):
    """Child process: statuses of the size query, forward (training, inference) and backward
    with these sizes and SMALL buffers. lengths: 4 valid entries (0), then -1: reading past what
    a correct check allows (the sizes are refused first) turns into FC_ERR_ARG."""
    dtype = np.dtype(dtype_name)
    small = np.zeros(64, dtype)
    lengths = np.array([0, 0, 0, 0] + [-1] * 60, np.int64) if with_lengths else None
    ws = Ws(1 << 16)
    kind = KIND[cell]
    out = {}
    skw = dict(T=T, B=B, I=I, H=H, training=1, **option(cell))
    if kind == "lstm":
        skw["P"] = P
    out["size1"] = call(fname(cell, "workspace_size", dtype), skw)
    out["size0"] = call(fname(cell, "workspace_size", dtype), {**skw, "training": 0})
    _, params = capi.signatures()[fname(cell, "forward", dtype)]
    for training in (1, 0):
        kw = {n: small for t, n in params if t.endswith("*")}
        kw.update(skw, training=training, n_threads=1, ws=ws.addr, ws_bytes=ws.nbytes,
                  lengths=lengths, h0=None, c0=None, b_ih=None, b_hh=None)
        if kind == "lstm" and not P:
            kw["w_hr"] = None
        kw = {n: kw[n] for _, n in params}
        out[f"forward{training}"] = call(fname(cell, "forward", dtype), kw)
    _, params = capi.signatures()[fname(cell, "backward", dtype)]
    kw = {n: small for t, n in params if t.endswith("*")}
    kw.update(skw, n_threads=1, ws=ws.addr, ws_bytes=ws.nbytes, lengths=lengths, h0=None,
              c0=None)
    kw.pop("training")
    if kind == "lstm" and not P:
        kw["w_hr"] = kw["dw_hr"] = None
    kw = {n: kw[n] for _, n in params}
    out["backward"] = call(fname(cell, "backward", dtype), kw)
    return out


_HUGE = [(c, d, s, wl) for c in CELLS for d in ("float32", "float64") for s in _huge_shapes(c)
         for wl in (False, True)]


def _huge_id(c, d, s, wl):
    return f"{c}-{d}-{s[0]}-{'lengths' if wl else 'nolengths'}"


@pytest.fixture(scope="module")
def huge_outcomes():
    return run_cases([(_huge_id(*h), "test_capi:_huge_case", (h[0], h[1], *h[2][1:], h[3]))
                      for h in _HUGE], timeout=120, mem_headroom=1 << 30)


@pytest.mark.parametrize(
    "cell, dtype_name, shape, with_lengths",
    _HUGE,
    ids=[_huge_id(*h) for h in _HUGE])
def test_sizes_beyond_blas_int(huge_outcomes, cell, dtype_name, shape, with_lengths):
    """Sizes that do not fit BLAS's 32-bit integers give FC_ERR_SIZE from every function, with
    small buffers: nothing is read or written (run in a child process with a memory cap)."""
    o = huge_outcomes[_huge_id(cell, dtype_name, shape, with_lengths)]
    assert o["status"] == "ok", describe(o)
    assert o["value"] == {k: capi.FC_ERR_SIZE for k in ("size1", "size0", "forward1",
                                                        "forward0", "backward")}, o["value"]


def test_size_limit_boundary(cell, dtype):
    """T*B = 2**31 - 1 is still a valid size (the query answers), 2**31 is not."""
    p = make(cell, dtype, 1, 1, 1, 2)
    name = fname(cell, "workspace_size", dtype)
    for training in (0, 1):
        assert call(name, {**size_kw(p, training), "T": BLAS_INT_MAX}) > 0
        assert call(name, {**size_kw(p, training), "B": BLAS_INT_MAX, "T": 1}) > 0
        assert call(name, {**size_kw(p, training), "T": BLAS_INT_MAX + 1}) == capi.FC_ERR_SIZE
        assert call(name, {**size_kw(p, training), "B": 2, "T": 2**30}) == capi.FC_ERR_SIZE
        assert call(name, {**size_kw(p, training), "I": BLAS_INT_MAX}) > 0


# ============================================================================== 4. concurrency
def _jobs():
    jobs = []
    for i, cell in enumerate(CELLS):
        for j, dt in enumerate(DTYPES):
            k = 2 * i + j
            p = make(cell, dt, 4 + k % 4, 3 + k % 5, 5, 6 + k % 7, lengths=k % 3 == 1, seed=k,
                     h0=k % 4 != 2)
            jobs.append((p, 1 + k % 2))
    jobs.append((make("lstm", np.float32, 20, 32, 72, 64, seed=90, lengths=True), 2))
    jobs.append((make("gru", np.float64, 16, 16, 32, 256, seed=91), 2))
    return jobs


def _run_job(job):
    p, nt = job
    return {**c_train(p, nt), **{f"inf_{k}": v for k, v in c_infer(p, nt).items()}}


def test_four_threads_equal_serial():
    jobs = _jobs()
    serial = [_run_job(j) for j in jobs]
    for (p, nt), res in zip(jobs, serial):       # the serial results are the Python API's
        exp = expected_train(fastcells, p, nt)
        assert_results_equal({k: v for k, v in res.items() if not k.startswith("inf_")}, exp)

    def worker(w):
        out = []
        rng = np.random.default_rng(w)
        for _ in range(4):
            for j in rng.permutation(len(jobs)):
                out.append((j, _run_job(jobs[j])))
        return out

    results = run_concurrently(worker, 4)
    for w in range(4):
        assert len(results[w]) == 4 * len(jobs)
        for j, got in results[w]:
            assert_results_equal(got, serial[j])


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn_tanh"])
def test_racing_backwards_on_one_workspace(cell):
    """Two threads call backward on the same workspace at the same moment: exactly one gets
    FC_OK (with the right gradients), the other FC_ERR_WORKSPACE_STATE (its outputs untouched)."""
    p = make(cell, np.float64, 8, 4, 6, 8)
    expected = expected_train(fastcells, p)
    ws = Ws(ws_size(p, 1))
    reps = 50
    go, done = threading.Barrier(3, timeout=60), threading.Barrier(3, timeout=60)
    slots = [None, None]
    statuses = [None, None]
    stop = [False]
    old = sys.getswitchinterval()

    def worker(i):
        while True:
            go.wait()
            if stop[0]:
                return
            name, kw, grads = slots[i]
            statuses[i] = call(name, kw)
            done.wait()

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(2)]
    for t in threads:
        t.start()
    problems = []
    sys.setswitchinterval(1e-6)
    try:
        for rep in range(reps):
            name, kw, outs = fwd_kw(p, ws)
            ok(name, kw)
            slots[0], slots[1] = bwd_kw(p, ws), bwd_kw(p, ws)   # own output buffers each
            go.wait()
            done.wait()
            if sorted(statuses) != [capi.FC_ERR_WORKSPACE_STATE, capi.FC_OK]:
                problems.append(f"rep {rep}: statuses {statuses}")
                continue
            win = statuses.index(capi.FC_OK)
            try:
                assert_results_equal({**outs, **slots[win][2]}, expected)
            except AssertionError as e:
                problems.append(f"rep {rep}: winner's results: {e}")
            loser = slots[1 - win][2]
            if not all(np.isnan(v).all() for v in loser.values() if v is not None):
                problems.append(f"rep {rep}: the refused backward wrote its outputs")
    finally:
        sys.setswitchinterval(old)
        stop[0] = True
        go.wait()
        for t in threads:
            t.join()
    assert not problems, f"{len(problems)} bad reps of {reps}: " + "; ".join(problems[:3])


# ============================================================================== 5. consistency
def _header():
    return open(capi.header_path(), encoding="utf-8").read()


def test_names_and_addresses():
    addrs = capi.addresses()
    assert capi.names() == sorted(addrs)
    assert len(addrs) == 19 and "fc_strerror" in addrs
    assert all(isinstance(v, int) and v != 0 for v in addrs.values())
    assert len(set(addrs.values())) == len(addrs), "two functions share an address"
    # every function has a ctypes wrapper with the signature's arity and return type
    for name, (ret, params) in capi.signatures().items():
        fn = capi.function(name)
        assert len(fn.argtypes) == len(params), name
        assert ctypes.cast(fn, ctypes.c_void_p).value == addrs[name]
        want = {"int": ctypes.c_int, "int64_t": ctypes.c_int64,
                "const char*": ctypes.c_char_p}[ret]
        assert fn.restype is want, name
        for (t, n), at in zip(params, fn.argtypes):
            if t.endswith("*"):
                assert at is ctypes.c_void_p, (name, n)
            else:
                assert at is {"int": ctypes.c_int, "int64_t": ctypes.c_int64}[t], (name, n)


def test_constants_match_header():
    defines = dict(re.findall(r"^#define\s+(FC_\w+|FASTCELLS_API_VERSION)\s+\(?(-?\d+)\)?",
                              _header(), re.M))
    assert set(STATUS_NAMES) <= set(defines)
    for n in STATUS_NAMES:
        assert getattr(capi, n) == int(defines[n]), n
    assert capi.API_VERSION == int(defines["FASTCELLS_API_VERSION"])
    assert set(capi.__all__) >= set(STATUS_NAMES) | {"API_VERSION", "CapiError", "check"}


def _norm(arg):
    arg = " ".join(arg.replace("*", " * ").split())
    typ, _, name = arg.rpartition(" ")
    return typ.replace(" *", "*"), name


def test_pxd_matches_header():
    path = os.path.join(os.path.dirname(fastcells.__file__), "capi.pxd")
    text = open(path, encoding="utf-8").read()
    text = re.sub(r"#[^\n]*", "", text)
    decls = re.findall(r"ctypedef\s+(\w+)\s+\(\*fc_(\w+)_fn\)\((.*?)\)\s*noexcept\s+nogil",
                       text, re.S)
    sigs = capi.signatures()
    fn_names = {f"fc_{n}" for _, n, _ in decls}
    assert fn_names == set(sigs) - {"fc_strerror"}
    for ret, n, args in decls:
        want_ret, want_params = sigs[f"fc_{n}"]
        assert ret == want_ret, n
        got = [_norm(a) for a in args.split(",")]
        assert got == want_params, f"fc_{n}: pxd {got} != header {want_params}"
        # the function and its table entry are declared with that type
        assert re.search(rf"^\s*fc_{n}_fn\s+fc_{n}\s*$", text, re.M), n
        assert re.search(rf"^\s*fc_{n}_fn\s+{n}\s*$", text, re.M), n
    assert re.search(r"const char \*fc_strerror\(int status\)", text)
    for n in STATUS_NAMES + ("FASTCELLS_API_VERSION",):
        assert re.search(rf"^\s+{n}\s*$", text, re.M), n


def _table_fields():
    body = _header()
    start = body.index("#define FASTCELLS_PROTOTYPES")
    decls = re.findall(r"FC_DECL\(\s*\w+\s*,\s*(\w+)_##FC_S", body[start:])
    return [f"{d}_{s}" for s in ("f32", "f64") for d in decls]


def test_capsule():
    cap = fastcells._C_API
    api = ctypes.pythonapi
    api.PyCapsule_GetName.restype = ctypes.c_char_p
    api.PyCapsule_GetName.argtypes = [ctypes.py_object]
    api.PyCapsule_IsValid.restype = ctypes.c_int
    api.PyCapsule_IsValid.argtypes = [ctypes.py_object, ctypes.c_char_p]
    api.PyCapsule_GetPointer.restype = ctypes.c_void_p
    api.PyCapsule_GetPointer.argtypes = [ctypes.py_object, ctypes.c_char_p]
    assert type(cap).__name__ == "PyCapsule"
    assert api.PyCapsule_GetName(cap) == b"fastcells._C_API"
    assert api.PyCapsule_IsValid(cap, b"fastcells._C_API") == 1
    assert api.PyCapsule_IsValid(cap, b"fastcells._C_APIx") == 0
    # the table behind it (struct fastcells_capi in the header) holds the same functions
    fields = _table_fields()
    assert len(fields) == 18
    table_t = type("fastcells_capi_t", (ctypes.Structure,), {"_fields_": [
        ("api_version", ctypes.c_int), ("table_size", ctypes.c_int),
        ("version", ctypes.c_char_p), ("strerror", ctypes.c_void_p)]
        + [(f, ctypes.c_void_p) for f in fields]})
    ptr = api.PyCapsule_GetPointer(cap, b"fastcells._C_API")
    assert ptr
    t = table_t.from_address(ptr)
    assert t.api_version == capi.API_VERSION
    assert t.table_size == ctypes.sizeof(table_t)
    assert t.version.decode() == fastcells.__version__
    addrs = capi.addresses()
    assert t.strerror == addrs["fc_strerror"]
    for f in fields:
        assert getattr(t, f) == addrs[f"fc_{f}"], f
    # the package re-uses one capsule
    assert fastcells._init_capi() is cap
