"""Robustness of the public functional API: odd but valid layouts, NaN/Inf, degenerate sizes,
thread counts, workspace misuse, sizes beyond BLAS integers and impossible allocations.

test_validation.py covers the plain bad-dtype / bad-shape / bad-option errors and
test_kernels.py the plain layouts (Fortran, strided, negative strides, read-only) and T = 0 /
B = 0; this file covers what those leave out. Cases that could crash the interpreter (tampered
workspaces, sizes beyond 2**31 - 1, unaligned memory) run in child processes (tests/isolated.py),
so a segfault fails the test instead of killing the run, and with their address space capped,
so a copy the library should never make fails fast instead of eating the machine's memory.
"""
import gc
import re

import numpy as np
import pytest

from conftest import (
    CELLS,
    TOL,
    assert_results_close,
    assert_results_equal,
    backward,
    compare,
    forward,
    has_c,
    input_names,
    kind_of,
    make_problem,
    n_gates,
    run,
    run_fastcells,
    run_reference,
    upstream_names,
)
from isolated import describe, max_rss, run_cases

import fastcells
from fastcells import reference

BASE = (6, 5, 7, 11)   # (T, B, I, H)
BLAS_INT_MAX = 2**31 - 1


def named(arg):
    return rf"(?<![A-Za-z0-9_]){re.escape(arg)}(?![A-Za-z0-9_])"


def _all_arrays(p):
    return {**{k: v for k, v in p.inputs.items() if v is not None},
            **{k: v for k, v in p.upstream.items() if v is not None}}


def _snapshot(p):
    """Bitwise copies + flags of every argument, to prove the call did not modify them."""
    return {k: (np.array(v, copy=True), v.flags.writeable, v.strides)
            for k, v in _all_arrays(p).items()}


def _assert_unmodified(p, snap):
    for k, v in _all_arrays(p).items():
        before, writeable, strides = snap[k]
        assert v.flags.writeable == writeable, f"{k}: writeable flag changed"
        assert v.strides == strides, f"{k}: strides changed"
        assert np.array_equal(v, before, equal_nan=True), f"{k} was modified"
        assert np.array(v).tobytes() == before.tobytes(), f"{k} was modified (bits)"


def _assert_fresh_outputs(got, dtype):
    """Every result is a fresh, writeable, C-contiguous, native-order array of the call dtype."""
    for k, v in got.items():
        if v is None:
            continue
        assert isinstance(v, np.ndarray) and type(v) is np.ndarray, k
        assert v.dtype == dtype and v.dtype.isnative, f"{k}: dtype {v.dtype}"
        assert v.flags.c_contiguous and v.flags.writeable, f"{k}: not C-contiguous/writeable"


# ============================================================================== layouts
def _broadcast_values(p):
    """Make every array constant along its first axis, so it can be passed as a zero-stride
    broadcast view (np.broadcast_to) of its first slice."""
    return p.map(lambda a: np.ascontiguousarray(np.broadcast_to(a[:1], a.shape))
                 if a.ndim and a.shape[0] else a)


def _as_broadcast(a):
    return np.broadcast_to(a[:1], a.shape) if a.ndim and a.shape[0] else a


def _byteswapped(a):
    return a.astype(a.dtype.newbyteorder(">" if a.dtype.byteorder in "=<" else "<"))


def _offset_view(a):
    """A view starting one element into a larger buffer (non-zero offset, C-contiguous)."""
    buf = np.full(a.size + 2, np.nan, a.dtype)
    buf[1:-1] = a.reshape(-1)
    return buf[1:-1].reshape(a.shape)


def _mixed(p):
    """Each argument in a different odd layout."""
    kinds = [np.asfortranarray, lambda a: np.flip(np.flip(a).copy()),
             _byteswapped, _offset_view,
             lambda a: a[..., ::-1].copy()[..., ::-1],
             lambda a: (lambda c: (c.setflags(write=False), c)[1])(a.copy())]
    out = p.copy()
    for i, d in enumerate((out.inputs, out.upstream)):
        for j, k in enumerate(sorted(d)):
            if d[k] is not None:
                d[k] = kinds[(i * 7 + j) % len(kinds)](d[k])
    return out


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_broadcast_views(cell, dtype):
    """Zero-stride broadcast views (np.broadcast_to) for every argument: same bits as the same
    values materialised, inputs untouched (broadcast views are read-only: a write would raise)."""
    p = _broadcast_values(make_problem(cell, dtype, *BASE))
    q = p.map(_as_broadcast)
    assert q.inputs["x"].strides[0] == 0
    snap = _snapshot(q)
    got = run_fastcells(q, n_threads=2)
    _assert_unmodified(q, snap)
    _assert_fresh_outputs(got, np.dtype(dtype))
    assert_results_equal(got, run_fastcells(p, n_threads=2))


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("make", [_byteswapped, _offset_view, _mixed],
                         ids=["byteswapped", "offset", "mixed"])
def test_odd_layouts(cell, make):
    """Non-native byte order, views at an offset into a bigger buffer, and every argument in a
    different layout at once: same bits as C-contiguous inputs; inputs never modified."""
    p = make_problem(cell, np.float64, *BASE)
    q = make(p) if make is _mixed else p.map(make)
    snap = _snapshot(q)
    got = run_fastcells(q, n_threads=2)
    _assert_unmodified(q, snap)
    _assert_fresh_outputs(got, np.dtype(np.float64))
    assert_results_equal(got, run_fastcells(p, n_threads=2))


@pytest.mark.parametrize("cell", CELLS)
def test_nested_tuples_and_memmap(cell, tmp_path):
    """Nested tuples of Python floats (float64) and np.memmap arrays are accepted."""
    p = make_problem(cell, np.float64, 3, 2, 3, 4)
    expected = run_fastcells(p)

    def to_tuple(a):
        return tuple(to_tuple(r) for r in a) if a.ndim > 1 else tuple(float(v) for v in a)

    assert_results_equal(run_fastcells(p.map(to_tuple)), expected)
    counter = iter(range(100))

    def to_memmap(a):
        m = np.memmap(tmp_path / f"a{next(counter)}.bin", dtype=a.dtype, mode="w+",
                      shape=a.shape)
        m[...] = a
        m.flush()
        return np.memmap(m.filename, dtype=a.dtype, mode="r", shape=a.shape)

    assert_results_equal(run_fastcells(p.map(to_memmap)), expected)


@pytest.mark.parametrize("make", [
    lambda L: np.asarray(L, np.int32), lambda L: np.asarray(L, np.uint8),
    lambda L: np.asarray(L, np.int16)[::-1].copy()[::-1], lambda L: tuple(L),
    lambda L: np.asarray(L, np.int64).repeat(2)[::2],
    lambda L: np.asarray(L, ">i8"), lambda L: np.asarray(L, np.float64)],
    ids=["int32", "uint8", "int16-negstride", "tuple", "strided", "bigendian", "integral-f64"])
def test_lengths_layouts(cell, make):
    """lengths in any integer dtype, byte order or layout (and integral floats) give the same
    results as an int64 array, and are not modified."""
    p = make_problem(cell, np.float64, *BASE)
    L = [6, 0, 3, 6, 1]
    expected = run_fastcells(p, lengths=np.asarray(L, np.int64))
    lengths = make(L)
    before = np.array(lengths, copy=True)
    assert_results_equal(run_fastcells(p, lengths=lengths), expected)
    assert np.array_equal(np.asarray(lengths), before)


# ============================================================================== NaN / Inf
_INJECT = [("x", (2, 1, 3)), ("h0", (1, 2)), ("c0", (1, 2)), ("w_ih", (3, 1)),
           ("w_hh", (2, 2)), ("b_ih", (4,)), ("b_hh", (5,)), ("dy", (3, 1, 2)),
           ("dh_n", (0, 1)), ("dc_n", (1, 1))]
_NAN_CASES = [(c, a, i) for c in CELLS for a, i in _INJECT
              if a in input_names(c) or a in upstream_names(c)]


def _relu_rnn_oracle(p):
    """float64 Elman-ReLU forward + backward with relu' applied as a *select*, like PyTorch's
    threshold_backward and the kernels: dG = where(h > 0, dh, 0). fastcells.reference multiplies
    by the mask instead (dh * (h > 0)), which turns a NaN/Inf upstream gradient at an inactive
    unit into NaN where PyTorch and the kernels give 0. Everything else is the same math."""
    q = p.astype(np.float64)
    a, u = q.inputs, q.upstream
    T, B, I, H = q.T, q.B, q.I, q.H
    x, w_ih, w_hh = a["x"], a["w_ih"], a["w_hh"]
    bias = sum(b for b in (a["b_ih"], a["b_hh"]) if b is not None) if (
        a["b_ih"] is not None or a["b_hh"] is not None) else np.zeros(H)
    h = a["h0"] if a["h0"] is not None else np.zeros((B, H))
    hs = [h]
    with np.errstate(all="ignore"):
        for t in range(T):
            h = np.maximum(x[t] @ w_ih.T + hs[-1] @ w_hh.T + bias, 0)
            h = np.where(np.isnan(h), np.nan, h)   # np.maximum keeps NaN; be explicit
            hs.append(h)
        y = np.stack(hs[1:])
        dh = u["dh_n"] if u["dh_n"] is not None else np.zeros((B, H))
        dG = np.empty((T, B, H))
        for t in reversed(range(T)):
            d = dh + (u["dy"][t] if u["dy"] is not None else 0)
            dG[t] = np.where(hs[t + 1] > 0, d, 0.0)
            dh = dG[t] @ w_hh
        dGf = dG.reshape(T * B, H)
        res = {"y": y, "h_n": hs[-1], "dx": (dGf @ w_ih).reshape(T, B, I), "dh0": dh,
               "dw_ih": dGf.T @ x.reshape(T * B, I),
               "dw_hh": dGf.T @ np.stack(hs[:-1]).reshape(T * B, H)}
        db = dGf.sum(0)
    res["db_ih"] = db if a["b_ih"] is not None else None
    res["db_hh"] = db.copy() if a["b_hh"] is not None else None
    return res


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf], ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("cell, arg, index", _NAN_CASES,
                         ids=[f"{c}-{a}" for c, a, _ in _NAN_CASES])
def test_nonfinite_propagates_like_numpy(cell, arg, index, dtype, value):
    """One NaN or ±Inf in any input or upstream gradient: no crash, no hang, and exactly the
    results that NumPy's float64 evaluation of the same formulas makes NaN / +Inf / -Inf are
    NaN / +Inf / -Inf; every finite result still matches. (0 * Inf = NaN and Inf - Inf = NaN
    as in IEEE arithmetic: e.g. an Inf input at a saturated gate gives NaN weight gradients.)
    For ReLU the oracle applies relu' as a select, as PyTorch does (see _relu_rnn_oracle)."""
    p = make_problem(cell, dtype, *BASE)
    d = p.inputs if arg in p.inputs else p.upstream
    d[arg][index] = value
    snap = _snapshot(p)
    got = run_fastcells(p, n_threads=2)
    _assert_unmodified(p, snap)
    if cell == "rnn_relu":
        expected = _relu_rnn_oracle(p)
    else:
        with np.errstate(all="ignore"):
            expected = run(reference, p.astype(np.float64))
    for name, b in expected.items():
        a = got[name]
        if b is None:
            assert a is None, name
            continue
        for test in (np.isnan, np.isposinf, np.isneginf):
            mismatch = test(a) != test(b)
            assert not mismatch.any(), (
                f"{name}: {test.__name__} differs at {np.argwhere(mismatch)[:5].tolist()} "
                f"(kernel {int(test(a).sum())}, NumPy {int(test(b).sum())})")
        finite = np.isfinite(b)
        compare(np.where(finite, a, 0).astype(dtype), np.where(finite, b, 0), dtype, what=name)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_all_nan_and_huge_inputs(cell, dtype):
    """Every input NaN, or every input near the dtype's largest value (pre-activations overflow
    to ±Inf and Inf - Inf = NaN inside the GEMMs): the call returns, outputs are NaN or within
    the activation's range, and inference agrees with training bit for bit."""
    big = np.finfo(dtype).max / 4
    for fill in (np.nan, big, -big):
        p = make_problem(cell, dtype, 4, 3, 5, 6).map(lambda a: np.full_like(a, fill))
        with np.errstate(all="ignore"):
            got = run_fastcells(p, n_threads=2)
            infer, _ = forward(fastcells, p, n_threads=2, training=False)
        assert_results_equal(infer, {k: got[k] for k in infer})
        y = got["y"]
        if cell == "rnn_relu":
            assert np.all(np.isnan(y) | (y >= 0)), "relu output negative"
        else:
            # tanh/sigmoid outputs lie in [-1, 1]; a GRU state is a convex combination of
            # tanh values and the previous state, so it is bounded by max(1, |h0|).
            bound = max(1.0, float(np.abs(p.inputs["h0"]).max())) if cell == "gru" else 1.0
            assert np.all(np.isnan(y) | (np.abs(y) <= bound)), "activation out of range"
        if fill is np.nan:
            assert np.isnan(y).all()


# ============================================================================== degenerate sizes
@pytest.mark.parametrize("T, B, I", [(0, 0, 3), (0, 3, 0), (3, 0, 0), (0, 0, 0)])
def test_empty_everything(cell, dtype, T, B, I):
    """Several sizes 0 at once: shapes as documented, results per the T = 0 / B = 0 rules."""
    p = make_problem(cell, dtype, T, B, I, 5)
    got = run_fastcells(p, n_threads=3)
    H, G = 5, n_gates(cell)
    assert got["y"].shape == (T, B, H) and got["dx"].shape == (T, B, I)
    assert got["dw_ih"].shape == (G * H, I) and not got["dw_ih"].any()
    assert not got["dw_hh"].any() and not got["db_ih"].any()
    assert_results_equal({"h_n": got["h_n"], "dh0": got["dh0"]},
                         {"h_n": p.inputs["h0"], "dh0": p.upstream["dh_n"]})


def test_zero_lengths_equal_empty_sequence(cell, dtype):
    """lengths all 0: nothing is processed. y is zeros, h_n = h0 (c_n = c0), dh0 = dh_n
    (dc0 = dc_n), dx and every weight gradient 0, whatever dy holds."""
    p = make_problem(cell, dtype, *BASE)
    got = run_fastcells(p, lengths=np.zeros(p.B, np.int64), n_threads=2)
    assert not got["y"].any() and not got["dx"].any()
    for k in ("dw_ih", "dw_hh", "db_ih", "db_hh"):
        assert not got[k].any(), k
    pairs = [("h_n", "h0"), ("dh0", "dh_n")] + ([("c_n", "c0"), ("dc0", "dc_n")]
                                                 if has_c(cell) else [])
    for out, src in pairs:
        ref = p.inputs.get(src, p.upstream.get(src))
        assert np.array_equal(got[out], ref), out


def test_lengths_with_empty_sequence_and_batch(cell):
    """T = 0 with lengths all 0, and B = 0 with an empty integer lengths array, are valid."""
    p = make_problem(cell, np.float64, 0, 3, 4, 5)
    got = run_fastcells(p, lengths=[0, 0, 0])
    assert got["y"].shape == (0, 3, 5)
    p = make_problem(cell, np.float64, 4, 0, 4, 5)
    got = run_fastcells(p, lengths=np.zeros(0, np.int64))
    assert got["y"].shape == (4, 0, 5)


def test_empty_list_lengths_for_empty_batch(cell):
    """B = 0: ``lengths=[]`` (np.asarray([]) is float64, empty) means "no lengths to give" and
    is accepted like an empty integer array -- as the layer classes accept it."""
    p = make_problem(cell, np.float64, 4, 0, 3, 5)
    got = run_fastcells(p, lengths=[])
    assert_results_equal(got, run_fastcells(p, lengths=np.zeros(0, np.int64)))


# ============================================================================== n_threads
@pytest.mark.parametrize("cell, n_threads", [(c, 8) for c in CELLS] + [
    ("lstm", 64), ("gru", fastcells._threads.MAX_THREADS)])
def test_n_threads_beyond_cores(cell, n_threads):
    """More threads than cores (and than batch rows) is allowed and used as given (the time
    loop uses at most B threads); results match one thread to the dtype's tolerance."""
    p = make_problem(cell, np.float64, 4, 3, 5, 6)
    assert_results_close(run_fastcells(p, n_threads=n_threads), run_fastcells(p, n_threads=1),
                         np.float64)


def test_n_threads_above_maximum_rejected(cell):
    with pytest.raises(ValueError, match=named("n_threads")):
        forward(fastcells, make_problem(cell, np.float64, 2, 2, 2, 2),
                n_threads=fastcells._threads.MAX_THREADS + 1)


@pytest.mark.parametrize("n_threads", [np.int32(2), np.uint8(1), np.int64(3)],
                         ids=["int32", "uint8", "int64"])
def test_n_threads_numpy_integers(n_threads):
    p = make_problem("gru", np.float64, 3, 4, 5, 6)
    assert_results_close(run_fastcells(p, n_threads=n_threads), run_fastcells(p, n_threads=1),
                         np.float64)


# ============================================================================== workspace
@pytest.mark.parametrize("bad", ["forward-tuple", "dict", "class", "int", "string"])
def test_backward_with_non_workspace(cell, bad):
    """Anything that is not a Workspace -- including the whole tuple forward returned (a
    common slip) and the Workspace class itself -- is a TypeError naming ws."""
    p = make_problem(cell, np.float64, 3, 2, 3, 4)
    out = getattr(fastcells, f"{kind_of(cell)}_forward")(
        *[p.inputs[k] for k in input_names(cell)],
        **({"nonlinearity": cell.split("_")[1]} if kind_of(cell) == "rnn" else {}))
    ws = {"forward-tuple": out, "dict": {"kind": kind_of(cell)}, "class": fastcells.Workspace,
          "int": 3, "string": "ws"}[bad]
    with pytest.raises(TypeError, match=named("ws")):
        backward(fastcells, p, ws)
    backward(fastcells, p, out[-1])      # the real one still works afterwards


def test_workspace_of_other_dtype_and_shape(cell):
    """Upstream gradients that fit another forward (other dtype / other T, B or H) than the
    workspace's: TypeError / ValueError naming the gradient, and the workspace stays usable."""
    p = make_problem(cell, np.float32, *BASE)
    _, ws = forward(fastcells, p)
    other_dtype = p.astype(np.float64)
    with pytest.raises(TypeError, match=named("dy")):
        backward(fastcells, other_dtype, ws)
    for shape in [(BASE[0] + 1,) + BASE[1:], (BASE[0], BASE[1] + 1) + BASE[2:],
                  BASE[:3] + (BASE[3] + 1,)]:
        other = make_problem(cell, np.float32, *shape)
        with pytest.raises(ValueError, match=named("dy")):
            backward(fastcells, other, ws)
    backward(fastcells, p, ws)


def test_workspace_keeps_its_inputs_alive(cell, dtype):
    """The caller may drop every reference to the inputs between forward and backward: the
    workspace holds what backward reads, and the gradients are unchanged."""
    p = make_problem(cell, dtype, *BASE)
    expected = run_fastcells(p)
    q = p.copy()
    out, ws = forward(fastcells, q, n_threads=1)
    q.inputs.clear()
    gc.collect()
    out.update(backward(fastcells, p, ws))
    assert_results_equal(out, expected)


def test_backward_twice_raises_and_says_so(cell):
    """Documented: backward consumes the workspace; the second call raises RuntimeError that
    tells the user to run forward again, and returns nothing half-computed."""
    p = make_problem(cell, np.float64, 3, 2, 3, 4)
    _, ws = forward(fastcells, p)
    backward(fastcells, p, ws)
    with pytest.raises(RuntimeError, match="forward"):
        backward(fastcells, p, ws)
    assert "consumed" in repr(ws)


# ---- tampered and forged workspaces (in child processes: a bug here corrupts memory)
def _tamper_case(cell, attr, value_repr, upstream):
    """Child: forward, set ws.<attr> = value, backward. Returns how it ended.
    upstream 'all' passes every upstream gradient (their shapes are checked against the
    workspace's sizes), 'none' passes None for all of them (nothing to check them against)."""
    value = eval(value_repr, {"np": np})
    p = make_problem(cell, np.float64, 5, 3, 4, 6,
                     upstream=None if upstream == "all" else ())
    expected = run_fastcells(p, n_threads=1)
    _, ws = forward(fastcells, p, n_threads=1)
    try:
        setattr(ws, attr, value)
    except (AttributeError, TypeError) as e:
        return {"outcome": "refused", "message": str(e)}
    try:
        got = backward(fastcells, p, ws)
    except (TypeError, ValueError, RuntimeError) as e:
        return {"outcome": "raised", "type": type(e).__name__, "message": str(e)}
    same = all((got[k] is None and expected[k] is None) or
               (got[k] is not None and expected[k] is not None and
                got[k].shape == expected[k].shape and np.array_equal(got[k], expected[k]))
               for k in got)
    return {"outcome": "ran", "same_as_untampered": bool(same)}


_TAMPER = [("T", "100"), ("B", "50"), ("I", "100"), ("H", "100"), ("P", "100"),
           ("dtype", "np.float32"), ("cell", "'nonsense'"), ("n_threads", "0"),
           ("n_threads", "-3"), ("n_threads", "10**6")]
_TAMPER_CASES = [(c, a, v, u) for c in ("lstm", "gru", "rnn_tanh") for a, v in _TAMPER
                 for u in (("all",) if a == "n_threads" else ("all", "none"))]


def _tamper_id(c, a, v, u):
    return f"{c}-{a}={v}-upstream_{u}"


@pytest.fixture(scope="module")
def tamper_outcomes():
    cases = [(_tamper_id(*c), "test_robustness:_tamper_case", c) for c in _TAMPER_CASES]
    return run_cases(cases, timeout=120)


@pytest.mark.parametrize("cell, attr, value, upstream", _TAMPER_CASES,
                         ids=[_tamper_id(*c) for c in _TAMPER_CASES])
def test_tampered_workspace(tamper_outcomes, cell, attr, value, upstream):
    """A workspace whose public attributes were changed after forward: the change is refused
    (read-only attribute), or backward raises a clear error, or -- for an attribute the cell
    does not use -- gives the untampered result. Never a crash, never wrong numbers."""
    o = tamper_outcomes[_tamper_id(cell, attr, value, upstream)]
    assert o["status"] == "ok", describe(o)
    v = o["value"]
    assert v["outcome"] in ("refused", "raised") or v["same_as_untampered"], (
        f"backward ran on a workspace with {attr} = {value} and returned different results "
        f"(it trusted inconsistent metadata): {v}")


def _forged_case(kind):
    """Child: a Workspace built by hand from a short forward but claiming a long sequence."""
    p = make_problem({"rnn": "rnn_tanh"}.get(kind, kind), np.float64, 2, 3, 4, 6)
    _, ws = forward(fastcells, p, n_threads=1)
    arrays = ws._arrays
    try:
        forged = fastcells.Workspace(kind, np.dtype(np.float64), 500, 3, 4, 6, 1, True, True,
                                     arrays, nonlinearity="tanh" if kind == "rnn" else None)
    except (TypeError, ValueError, RuntimeError) as e:
        return {"outcome": "refused", "message": str(e)}
    fn = getattr(fastcells, f"{kind}_backward")
    ups = [np.ones((500, 3, 6))] + [None] * (2 if kind == "lstm" else 1)
    try:
        fn(*ups, forged)
    except (TypeError, ValueError, RuntimeError) as e:
        return {"outcome": "raised", "type": type(e).__name__, "message": str(e)}
    return {"outcome": "ran"}


@pytest.fixture(scope="module")
def forged_outcomes():
    return run_cases([(k, "test_robustness:_forged_case", (k,)) for k in ("lstm", "gru", "rnn")],
                     timeout=120)


@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn"])
def test_forged_workspace(forged_outcomes, kind):
    """fastcells.Workspace is a public name; one assembled by hand with saved arrays that do
    not fit its sizes must be refused (at construction or by backward), not read out of bounds."""
    o = forged_outcomes[kind]
    assert o["status"] == "ok", describe(o)
    assert o["value"]["outcome"] in ("refused", "raised"), (
        f"backward ran on a forged workspace (T = 500 claimed, arrays for T = 2): {o['value']}")


# ============================================================================== unaligned memory
def _unaligned(a):
    buf = np.zeros(a.nbytes + 1, np.uint8)
    u = np.frombuffer(buf.data, dtype=a.dtype, count=a.size, offset=1).reshape(a.shape)
    u[...] = a
    assert not u.flags.aligned
    return u


def _unaligned_case(cell, dtype_name):
    p = make_problem(cell, np.dtype(dtype_name), *BASE)
    expected = run_fastcells(p, n_threads=2)
    got = run_fastcells(p.map(_unaligned), n_threads=2)
    assert_results_equal(got, expected)
    return "ok"


@pytest.fixture(scope="module")
def unaligned_outcomes():
    return run_cases([(f"{c}-{d}", "test_robustness:_unaligned_case", (c, d))
                      for c in CELLS for d in ("float32", "float64")], timeout=120)


@pytest.mark.parametrize("dtype_name", ["float32", "float64"])
def test_unaligned_arrays(unaligned_outcomes, cell, dtype_name):
    """Arrays whose data pointer is not aligned to the item size (np.frombuffer at an odd
    offset): same bits as aligned inputs (in a child: misaligned SIMD loads would crash)."""
    o = unaligned_outcomes[f"{cell}-{dtype_name}"]
    assert o["status"] == "ok" and o["value"] == "ok", describe(o)


# ============================================================================== huge sizes
# Arrays whose *shapes* exceed what BLAS's 32-bit integers can index are built as zero-stride
# broadcast views, so they cost no memory. The library must reject them with ValueError before
# copying or allocating anything, and before any kernel runs. The child's address space is
# capped at start-up + 2 GiB, so a copy of such a view fails with MemoryError (which fails the
# test), and the peak RSS of the child must not grow by more than HUGE_RSS_SLACK.
HUGE_RSS_SLACK = 256 << 20


def _zeros_view(shape, dtype=np.float32):
    return np.broadcast_to(np.zeros((), dtype), shape)


def _huge_args(case):
    f4 = np.float32
    if case == "lstm-T*B":          # T*B = 2**31 + 2**16 rows of the input projection
        T, B = 2**16, 2**15 + 1
        return "lstm", (_zeros_view((T, B, 1)), None, None, np.zeros((4, 1), f4),
                        np.zeros((4, 1), f4)), {}
    if case == "gru-T*B":
        return "gru", (_zeros_view((2**16, 2**15 + 1, 1)), None, np.zeros((3, 1), f4),
                       np.zeros((3, 1), f4)), {}
    if case == "rnn-T*B":
        return "rnn", (_zeros_view((2**16, 2**15 + 1, 1)), None, np.zeros((1, 1), f4),
                       np.zeros((1, 1), f4)), {}
    if case == "rnn-input_size":    # I = 2**31
        I = 2**31
        return "rnn", (_zeros_view((1, 1, I)), None, _zeros_view((1, I)),
                       np.zeros((1, 1), f4)), {}
    if case == "lstm-input_size":
        I = 2**31
        return "lstm", (_zeros_view((1, 1, I)), None, None, _zeros_view((4, I)),
                        np.zeros((4, 1), f4)), {}
    if case == "lstm-4H":           # H = 2**29: 4H = 2**31 gate columns
        H = 2**29
        return "lstm", (np.zeros((1, 1, 1), f4), None, None, _zeros_view((4 * H, 1)),
                        _zeros_view((4 * H, H))), {}
    if case == "gru-3H":            # H = 715827883: 3H = 2**31 + 1
        H = 715827883
        return "gru", (np.zeros((1, 1, 1), f4), None, _zeros_view((3 * H, 1)),
                       _zeros_view((3 * H, H))), {}
    if case == "lstm-proj_size":    # P = 2**31 (H = 1): the recurrent GEMM's K
        P = 2**31
        return "lstm", (np.zeros((1, 1, 1), f4), None, None, np.zeros((4, 1), f4),
                        _zeros_view((4, P))), {"w_hr": _zeros_view((P, 1))}
    if case == "lstm-hidden_size-proj":  # H = 2**31 reachable with a projection (P = 1)
        H = 2**31
        return "lstm", (np.zeros((1, 1, 1), f4), None, None, _zeros_view((4 * H, 1)),
                        _zeros_view((4 * H, 1))), {"w_hr": _zeros_view((1, H))}
    raise KeyError(case)


def _huge_case(case, training):
    kind, args, kw = _huge_args(case)
    rss0 = max_rss()
    try:
        getattr(fastcells, f"{kind}_forward")(*args, training=training, n_threads=1, **kw)
        outcome = {"outcome": "ran"}
    except (ValueError, MemoryError, TypeError, OverflowError) as e:
        outcome = {"outcome": "raised", "type": type(e).__name__, "message": str(e)}
    outcome["rss_growth"] = max_rss() - rss0
    return outcome


_HUGE = ["lstm-T*B", "gru-T*B", "rnn-T*B", "rnn-input_size", "lstm-input_size", "lstm-4H",
         "gru-3H", "lstm-proj_size", "lstm-hidden_size-proj"]


@pytest.fixture(scope="module")
def huge_outcomes():
    cases = [(f"{c}-{t}", "test_robustness:_huge_case", (c, t))
             for c in _HUGE for t in (True, False)]
    cases += [(f"alloc-{t}", "test_robustness:_impossible_alloc_case", (t,))
              for t in (True, False)]
    return run_cases(cases, timeout=180)


@pytest.mark.parametrize("training", [True, False], ids=["training", "inference"])
@pytest.mark.parametrize("case", _HUGE)
def test_sizes_beyond_blas_int(huge_outcomes, case, training):
    """A size that does not fit BLAS's 32-bit integers (T*B rows, input_size, G*H gate
    columns, proj_size, hidden_size) is a ValueError naming that size and the limit, raised
    before anything is copied or allocated and before any kernel runs."""
    o = huge_outcomes[f"{case}-{training}"]
    assert o["status"] == "ok", describe(o)
    v = o["value"]
    assert v["outcome"] == "raised" and v["type"] == "ValueError", (
        f"expected ValueError about the BLAS integer limit, got {v}")
    assert re.search(r"2\*\*31|2147483647|BLAS", v["message"]), v["message"]
    assert v["rss_growth"] < HUGE_RSS_SLACK, f"peak RSS grew by {v['rss_growth'] >> 20} MiB"


def _impossible_alloc_case(training):
    """T*B = 2**30 rows (fits BLAS), I = 0 (x costs nothing), H = 4096: y alone would need
    2**42 floats (16 TiB). Must fail with MemoryError (or ValueError) before any kernel."""
    T, B, H = 2**20, 2**10, 4096
    x = np.zeros((T, B, 0), np.float32)
    w_ih = np.zeros((H, 0), np.float32)
    w_hh = _zeros_view((H, H))
    rss0 = max_rss()
    try:
        fastcells.rnn_forward(x, None, w_ih, w_hh, training=training, n_threads=1)
        outcome = {"outcome": "ran"}
    except (MemoryError, ValueError) as e:
        outcome = {"outcome": "raised", "type": type(e).__name__, "message": str(e)}
    outcome["rss_growth"] = max_rss() - rss0
    return outcome


@pytest.mark.parametrize("training", [True, False], ids=["training", "inference"])
def test_impossible_allocation(huge_outcomes, training):
    o = huge_outcomes[f"alloc-{training}"]
    assert o["status"] == "ok", describe(o)
    v = o["value"]
    assert v["outcome"] == "raised" and v["type"] in ("MemoryError", "ValueError"), v
    assert v["rss_growth"] < HUGE_RSS_SLACK, f"peak RSS grew by {v['rss_growth'] >> 20} MiB"


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [0, 1, 7, (3, 5), (2, 0, 4), (64, 16, 192), (1000003,),
                                   [4, 3], np.int64(5)])
def test_kernel_buffers_are_64_byte_aligned(shape, dtype):
    """The kernels' own buffers (_api._empty64) start on a cache line whatever malloc returned,
    are C-contiguous and independent of each other."""
    from fastcells import _api
    dt = np.dtype(dtype)
    arrays = [_api._empty64(shape, dt) for _ in range(8)]
    want = tuple(shape) if isinstance(shape, (tuple, list)) else (shape,)
    for a in arrays:
        assert a.shape == want and a.dtype == dt and a.flags.c_contiguous
        if a.size:
            assert a.ctypes.data % 64 == 0
    if arrays[0].size:
        for a in arrays:
            a[...] = 1
        arrays[0][...] = 2
        assert all(np.all(a == 1) for a in arrays[1:])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_kernel_entry_rejects_what_it_cannot_pass_as_a_pointer(dtype):
    """The private kernel entry points (_kernels.*_forward/_backward) take raw pointers of
    ndarrays: anything but a C-contiguous, aligned, native-order array of the call's dtype
    (writeable where the kernel writes) is a Python exception naming the argument, not a
    crash; the arrays _api passes run and match the public function."""
    from fastcells import _api, _kernels
    dt = np.dtype(dtype)
    other = np.float64 if dt == np.float32 else np.float32
    T, B, I, H = 3, 2, 4, 5
    rng = np.random.default_rng(0)
    x, h0 = rng.standard_normal((T, B, I)).astype(dt), rng.standard_normal((B, H)).astype(dt)
    w_ih, w_hh = rng.standard_normal((H, I)).astype(dt), rng.standard_normal((H, H)).astype(dt)
    bias = np.zeros(H, dt)
    x0 = x.copy()

    def call(**over):
        a = dict(y=np.empty((T, B, H), dt), h_n=np.empty((B, H), dt), hs=None,
                 hbuf=_api._empty64((B, H), dt), x=x, h0=h0, w_ih=w_ih, w_hh=w_hh,
                 w_pack=_api._pack_buffer(H, H, dt), w_ih_pack=_api._pack_buffer(I, H, dt),
                 bias=bias, lengths=None)
        a.update(over)
        _kernels.rnn_forward(*a.values(), T, B, I, H, False, 1, 1, 1, 0, 0)
        return a["y"], a["h_n"]

    y, h_n = call()
    y_ref, h_ref, _ = fastcells.rnn_forward(x, h0, w_ih, w_hh, training=False, n_threads=1)
    np.testing.assert_array_equal(y, y_ref)
    np.testing.assert_array_equal(h_n, h_ref)
    read_only = np.empty((T, B, H), dt)
    read_only.flags.writeable = False
    for name, bad, err in [
            ("x", x.astype(other), ValueError),                     # another dtype
            ("x", np.asfortranarray(x), ValueError),                 # not C-contiguous
            ("x", x[:, ::-1], ValueError),                           # negative strides
            ("x", x.astype(dt.newbyteorder()), ValueError),          # byte-swapped
            ("x", x.tolist(), TypeError),                            # not an ndarray
            ("y", read_only, ValueError),                            # an output, read-only
            ("y", np.empty((T, B, H), np.int32), TypeError),         # the call's dtype: none
            ("lengths", np.full(B, T, np.int32), ValueError),        # lengths must be int64
    ]:
        with pytest.raises(err, match=name):
            call(**{name: bad})
    np.testing.assert_array_equal(x, x0)      # the input was only read


def test_kernel_buffer_bad_shapes():
    """_kernels.empty_aligned refuses a negative dimension and a size whose byte count
    overflows, instead of allocating something else."""
    from fastcells import _kernels
    dt = np.dtype(np.float32)
    with pytest.raises(ValueError, match="negative"):
        _kernels.empty_aligned((3, -1), dt, 64)
    with pytest.raises(MemoryError, match="too big"):
        _kernels.empty_aligned((2**40, 2**40), dt, 64)
    with pytest.raises(MemoryError, match="too big"):
        _kernels.empty_aligned((2**61,), dt, 64)
