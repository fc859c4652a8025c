"""The layer classes (fastcells.layers.LSTM / GRU / RNN) against an independent NumPy oracle.

The oracle composes ``fastcells.reference`` by hand, **one sequence at a time**: each sequence
is cut to its own length, the reverse direction is plain ``[::-1]`` of that cut, layers and
directions are chained in Python, and dropout uses the masks the layer drew. So it shares
neither the layer's batched reverse gather nor the kernels' ``lengths`` handling, and it
computes in float64 whatever the layer's dtype.

Every test runs twice: with the layer on the compiled kernels (``fastcells._api``) and on the
NumPy reference backend (the layer logic alone, so a failure on one backend only points at it).

Tolerances are relative to max(max|expected|, 1) over the whole array (as in conftest):
float64 1e-10, float32 1e-4 (the oracle is float64; float32 rounding through three layers and
both directions stays ~1e-6).
"""
import os
from dataclasses import dataclass, replace

import numpy as np
import pytest

from fastcells import layers, reference

TOL = {np.dtype(np.float64): 1e-10, np.dtype(np.float32): 1e-4}


# ------------------------------------------------------------------------------ backends




# ------------------------------------------------------------------------------ cases
@dataclass(frozen=True)
class Spec:
    kind: str
    proj: int = 0
    reset_after: bool = True
    nonlinearity: str = "tanh"


SPECS = {
    "lstm": Spec("lstm"),
    "lstm_proj": Spec("lstm", proj=3),
    "gru": Spec("gru"),
    "gru_classic": Spec("gru", reset_after=False),
    "rnn_tanh": Spec("rnn"),
    "rnn_relu": Spec("rnn", nonlinearity="relu"),
}


@dataclass(frozen=True)
class Case:
    cell: str = "lstm"
    T: int = 5
    B: int = 3
    I: int = 4
    H: int = 6
    num_layers: int = 1
    bidirectional: bool = False
    batch_first: bool = False
    bias: bool = True
    lengths: tuple = None
    hx: bool = True
    upstream: tuple = ("dy", "dh_n", "dc_n")
    unbatched: bool = False
    dtype: str = "float64"
    dropout: float = 0.0
    seed: int = 0

    @property
    def spec(self):
        return SPECS[self.cell]

    @property
    def D(self):
        return 2 if self.bidirectional else 1

    @property
    def H_out(self):
        return self.spec.proj or self.H


def build(case, **overrides):
    s = case.spec
    kw = dict(num_layers=case.num_layers, bias=case.bias, batch_first=case.batch_first,
              dropout=case.dropout, bidirectional=case.bidirectional, dtype=case.dtype,
              seed=case.seed)
    n_threads = overrides.pop("n_threads", 1)
    kw.update(overrides)
    if s.kind == "lstm":
        m = layers.LSTM(case.I, case.H, proj_size=s.proj, **kw)
    elif s.kind == "gru":
        m = layers.GRU(case.I, case.H, reset_after=s.reset_after, **kw)
    else:
        m = layers.RNN(case.I, case.H, nonlinearity=s.nonlinearity, **kw)
    # One thread: these problems are tiny, and idle OpenMP workers spinning between kernel
    # calls would compete with the oracle's NumPy work on a small machine.
    m.n_threads = n_threads
    return m


def make_inputs(case):
    """x, hx, lengths and upstream gradients in the layer's own layout (batch_first etc.)."""
    rng = np.random.default_rng(1000 + case.seed)
    dt = np.dtype(case.dtype)
    T, B, LD = case.T, case.B, case.num_layers * case.D

    def normal(*shape, scale=1.0):
        return (scale * rng.standard_normal(shape)).astype(dt)

    if case.unbatched:
        x = normal(T, case.I)
        h0, c0 = normal(LD, case.H_out, scale=0.5), normal(LD, case.H, scale=0.5)
        dy = normal(T, case.D * case.H_out)
        dh, dc = normal(LD, case.H_out), normal(LD, case.H)
    else:
        x = normal(B, T, case.I) if case.batch_first else normal(T, B, case.I)
        h0, c0 = normal(LD, B, case.H_out, scale=0.5), normal(LD, B, case.H, scale=0.5)
        dy = normal(*x.shape[:2], case.D * case.H_out)
        dh, dc = normal(LD, B, case.H_out), normal(LD, B, case.H)
    lstm = case.spec.kind == "lstm"
    inputs = dict(x=x, h0=h0 if case.hx else None, c0=c0 if (case.hx and lstm) else None,
                  lengths=None if case.lengths is None else np.array(case.lengths),
                  dy=dy if "dy" in case.upstream else None,
                  dh_n=dh if "dh_n" in case.upstream else None,
                  dc_n=dc if ("dc_n" in case.upstream and lstm) else None)
    return inputs


def run_layer(module, inputs, masks_out=None):
    """Forward + backward through the layer; every output and gradient in one dict."""
    lstm = isinstance(module, layers.LSTM)
    if lstm:
        hx = None if inputs["h0"] is None else (inputs["h0"], inputs["c0"])
        y, (h_n, c_n) = module(inputs["x"], hx, lengths=inputs["lengths"])
    else:
        y, h_n = module(inputs["x"], inputs["h0"], lengths=inputs["lengths"])
    if masks_out is not None:
        masks_out.extend(m for m, _ in module._saved["layers"])
    if lstm:
        dx, (dh0, dc0) = module.backward(inputs["dy"], (inputs["dh_n"], inputs["dc_n"]))
        res = dict(y=y, h_n=h_n, c_n=c_n, dx=dx, dh0=dh0, dc0=dc0)
    else:
        dx, dh0 = module.backward(inputs["dy"], inputs["dh_n"])
        res = dict(y=y, h_n=h_n, dx=dx, dh0=dh0)
    res.update({"grad:" + k: g.copy() for k, g in module.grads.items()})
    return res


# ------------------------------------------------------------------------------ the oracle
def _ref_forward(spec, p, sfx, x, h0, c0):
    w = [p["weight_ih" + sfx], p["weight_hh" + sfx], p.get("bias_ih" + sfx),
         p.get("bias_hh" + sfx)]
    if spec.kind == "lstm":
        kw = {"w_hr": p["weight_hr" + sfx]} if spec.proj else {}
        return reference.lstm_forward(x, h0, c0, *w, **kw)
    if spec.kind == "gru":
        y, h_n, cache = reference.gru_forward(x, h0, *w, reset_after=spec.reset_after)
    else:
        y, h_n, cache = reference.rnn_forward(x, h0, *w, nonlinearity=spec.nonlinearity)
    return y, h_n, None, cache


def _ref_backward(spec, sfx, dy, dh_n, dc_n, cache):
    names = ["weight_ih", "weight_hh", "bias_ih", "bias_hh", "weight_hr"]
    if spec.kind == "lstm":
        res = reference.lstm_backward(dy, dh_n, dc_n, cache)
        dx, dh0, dc0, wg = res[0], res[1], res[2], res[3:]
    else:
        fn = reference.gru_backward if spec.kind == "gru" else reference.rnn_backward
        res = fn(dy, dh_n, cache)
        dx, dh0, dc0, wg = res[0], res[1], None, res[2:]
    return dx, dh0, dc0, {n + sfx: g for n, g in zip(names, wg) if g is not None}


def oracle(case, params, inputs, masks):
    """Expected outputs and gradients, one sequence at a time, in float64 (see module doc)."""
    spec, L, D, H, Ho = case.spec, case.num_layers, case.D, case.H, case.H_out
    lstm = spec.kind == "lstm"
    p = {k: v.astype(np.float64) for k, v in params.items()}

    def f64(a):
        return None if a is None else np.asarray(a, np.float64)

    # Everything time-major and batched (T, B, .) / (L*D, B, .).
    x, dy = f64(inputs["x"]), f64(inputs["dy"])
    h0, c0, dh_n, dc_n = (f64(inputs[k]) for k in ("h0", "c0", "dh_n", "dc_n"))
    if case.unbatched:
        x = x[:, None]
        dy = None if dy is None else dy[:, None]
        h0, c0, dh_n, dc_n = (None if a is None else a[:, None] for a in (h0, c0, dh_n, dc_n))
    elif case.batch_first:
        x = x.swapaxes(0, 1)
        dy = None if dy is None else dy.swapaxes(0, 1)
    T, B = x.shape[:2]
    lengths = [T] * B if inputs["lengths"] is None else list(inputs["lengths"])
    zeros = np.zeros
    h0 = zeros((L * D, B, Ho)) if h0 is None else h0
    c0 = zeros((L * D, B, H)) if c0 is None else c0
    dy = zeros((T, B, D * Ho)) if dy is None else dy
    dh_n = zeros((L * D, B, Ho)) if dh_n is None else dh_n
    dc_n = zeros((L * D, B, H)) if dc_n is None else dc_n

    y, dx = zeros((T, B, D * Ho)), zeros((T, B, case.I))
    h_n, dh0 = zeros((L * D, B, Ho)), zeros((L * D, B, Ho))
    c_n, dc0 = zeros((L * D, B, H)), zeros((L * D, B, H))
    grads = {k: zeros(v.shape) for k, v in params.items()}

    for b in range(B):
        n = lengths[b]
        caches = {}
        seq = x[:n, b:b + 1]
        for k in range(L):
            if masks[k] is not None:
                seq = seq * masks[k][:n, b:b + 1]
            outs = []
            for d in range(D):
                i, sfx = k * D + d, f"_l{k}" + ("_reverse" if d else "")
                xin = seq[::-1].copy() if d else seq
                yd, hn, cn, caches[i] = _ref_forward(spec, p, sfx, xin, h0[i, b:b + 1],
                                                     c0[i, b:b + 1] if lstm else None)
                h_n[i, b] = hn[0]
                if lstm:
                    c_n[i, b] = cn[0]
                outs.append(yd[::-1] if d else yd)
            seq = np.concatenate(outs, axis=2)
        y[:n, b] = seq[:, 0]

        d_out = dy[:n, b:b + 1]
        for k in reversed(range(L)):
            d_in = 0
            for d in range(D):
                i, sfx = k * D + d, f"_l{k}" + ("_reverse" if d else "")
                dyd = d_out[:, :, d * Ho:(d + 1) * Ho]
                dyd = dyd[::-1].copy() if d else dyd.copy()
                dxd, dh, dc, g = _ref_backward(spec, sfx, dyd, dh_n[i, b:b + 1].copy(),
                                               dc_n[i, b:b + 1].copy() if lstm else None,
                                               caches[i])
                dh0[i, b] = dh[0]
                if lstm:
                    dc0[i, b] = dc[0]
                for name, gv in g.items():
                    grads[name] += gv
                d_in = d_in + (dxd[::-1] if d else dxd)
            if masks[k] is not None:
                d_in = d_in * masks[k][:n, b:b + 1]
            d_out = d_in
        dx[:n, b] = d_out[:, 0]

    if case.unbatched:
        y, dx, h_n, c_n, dh0, dc0 = y[:, 0], dx[:, 0], h_n[:, 0], c_n[:, 0], dh0[:, 0], dc0[:, 0]
    elif case.batch_first:
        y, dx = y.swapaxes(0, 1), dx.swapaxes(0, 1)
    res = dict(y=y, h_n=h_n, dx=dx, dh0=dh0)
    if lstm:
        res.update(c_n=c_n, dc0=dc0)
    res.update({"grad:" + k: g for k, g in grads.items()})
    return res


def rel_error(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.size == 0:
        return 0.0
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1.0))


def assert_close(got, expected, dtype):
    dtype = np.dtype(dtype)
    assert set(got) == set(expected), f"{sorted(got)} != {sorted(expected)}"
    failures = []
    for name, e in expected.items():
        g = got[name]
        if g.dtype != dtype or g.shape != e.shape:
            failures.append(f"{name}: {g.dtype}{g.shape}, expected {dtype}{e.shape}")
            continue
        err = rel_error(g, e)
        if not err <= TOL[dtype]:
            failures.append(f"{name}: relative error {err:.3e} > {TOL[dtype]:.0e}")
    assert not failures, "\n".join(failures)


def check_case(case):
    module = build(case)
    inputs = make_inputs(case)
    masks = []
    got = run_layer(module, inputs, masks_out=masks)
    expected = oracle(case, module.state_dict(), inputs, masks)
    assert_close(got, expected, case.dtype)
    return module, got


# ------------------------------------------------------------------------------ vs the oracle
VARIATIONS = {
    "base": {},
    "3_layers": dict(num_layers=3),
    "bidirectional": dict(bidirectional=True),
    "batch_first": dict(batch_first=True),
    "lengths": dict(lengths=(5, 2, 4)),
    "lengths_with_zero": dict(lengths=(3, 0, 5)),
    "lengths_bidir_2_layers": dict(lengths=(2, 5, 1), bidirectional=True, num_layers=2),
    "lengths_batch_first_bidir": dict(lengths=(4, 5, 1), bidirectional=True, batch_first=True),
    "no_bias": dict(bias=False),
    "no_hx": dict(hx=False),
    "only_dy": dict(upstream=("dy",), num_layers=2, bidirectional=True),
    "only_final_state": dict(upstream=("dh_n", "dc_n"), num_layers=2, bidirectional=True),
    "unbatched_bidir_2_layers": dict(unbatched=True, bidirectional=True, num_layers=2),
    "float32_bidir_2_layers": dict(dtype="float32", bidirectional=True, num_layers=2,
                                   lengths=(5, 3, 4)),
    "float32_3_layers_batch_first": dict(dtype="float32", num_layers=3, batch_first=True),
    "T1_B1": dict(T=1, B=1, bidirectional=True),
    "large_I_odd_H": dict(I=13, H=9, B=5, T=4, lengths=(4, 1, 3, 2, 4), bidirectional=True),
}


@pytest.mark.parametrize("variation", list(VARIATIONS))
@pytest.mark.parametrize("cell", list(SPECS))
def test_matches_oracle(backend, cell, variation):
    check_case(replace(Case(cell=cell), **VARIATIONS[variation]))


@pytest.mark.parametrize("cell", list(SPECS))
def test_dropout_matches_oracle_with_the_layers_masks(backend, cell):
    case = Case(cell=cell, num_layers=3, bidirectional=True, dropout=0.4, lengths=(5, 2, 4))
    check_case(case)


def test_dropout_masks_rate_scale_and_reproducibility(backend):
    case = Case(cell="gru", T=40, B=30, num_layers=3, dropout=0.3, dtype="float32")
    x = make_inputs(case)["x"]
    a, b, c = build(case, seed=7), build(case, seed=7), build(case, seed=8)
    ya, _ = a(x)
    yb, _ = b(x)
    yc, _ = c(x)
    np.testing.assert_array_equal(ya, yb)   # same seed: same parameters, same masks
    assert not np.array_equal(ya, yc)
    masks = [m for m, _ in a._saved["layers"]]
    assert masks[0] is None                 # no dropout on the input of layer 0
    for m in masks[1:]:
        assert m.dtype == np.float32 and m.shape == (40, 30, 6)
        kept = m != 0
        assert abs(1 - kept.mean() - 0.3) < 0.05, "dropped fraction far from p"
        np.testing.assert_allclose(m[kept], 1 / 0.7, rtol=1e-6)  # inverted dropout
    ya2, _ = a(x)
    assert not np.array_equal(ya, ya2)      # a fresh mask each forward


def test_eval_disables_dropout_and_saves_nothing(backend):
    case = Case(cell="lstm", num_layers=2, dropout=0.5)
    x = make_inputs(case)["x"]
    plain = build(case, dropout=0.0)
    noisy = build(case)
    noisy.load_state_dict(plain.state_dict())
    y_train, _ = plain(x)
    assert noisy.eval() is noisy and not noisy.training
    y_eval, (h, c) = noisy(x)
    assert noisy._saved is None
    assert rel_error(y_eval, y_train) <= 1e-12
    with pytest.raises(RuntimeError, match="training mode"):
        noisy.backward(np.ones_like(y_eval))
    noisy.train()
    assert noisy.training
    noisy(x)
    assert noisy._saved is not None


def test_dropout_one_zeroes_the_upper_layers_input(backend):
    case = Case(cell="rnn_tanh", num_layers=2, dropout=1.0, bias=False, hx=False)
    module = build(case)
    x = make_inputs(case)["x"]
    y, h_n = module(x)
    assert not y.any() and not h_n[1].any() and h_n[0].any()
    dh_n = np.ones_like(h_n)
    dh_n[0] = 0  # gradient only on layer 1, whose input was dropped entirely
    dx, _ = module.backward(np.ones_like(y), dh_n)
    assert not dx.any()


def test_dropout_with_one_layer_warns():
    with pytest.warns(UserWarning, match="num_layers=1"):
        layers.GRU(3, 4, dropout=0.2)


# ------------------------------------------------------------------------------ semantics
@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn_relu"])
def test_full_lengths_equal_no_lengths(backend, cell):
    case = Case(cell=cell, num_layers=2, bidirectional=True)
    inputs = make_inputs(case)
    a = run_layer(build(case), inputs)
    b = run_layer(build(case), dict(inputs, lengths=np.full(case.B, case.T)))
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


@pytest.mark.parametrize("cell", ["lstm_proj", "gru", "rnn_tanh"])
def test_batch_first_and_unbatched_are_views_of_the_same_computation(backend, cell):
    case = Case(cell=cell, num_layers=2, bidirectional=True)
    inputs = make_inputs(case)
    base = run_layer(build(case), inputs)
    bf_inputs = dict(inputs, x=inputs["x"].swapaxes(0, 1).copy(),
                     dy=inputs["dy"].swapaxes(0, 1).copy())
    bf = run_layer(build(case, batch_first=True), bf_inputs)
    for name in base:
        expected = base[name].swapaxes(0, 1) if name in ("y", "dx") else base[name]
        np.testing.assert_array_equal(bf[name], expected, err_msg=name)
        assert bf[name].flags.c_contiguous, name
    # sequence 1 alone, unbatched: (T, I) input, (L*D, H) states
    one = {k: None if v is None else (v[:, 1] if v.ndim == 3 else v)
           for k, v in inputs.items()}
    ub = run_layer(build(case), one)
    for name in ("y", "h_n", "c_n", "dx", "dh0", "dc0"):
        if name in ub:
            assert ub[name].ndim == 2, name
            assert rel_error(ub[name], base[name][:, 1]) <= 1e-12, name


@pytest.mark.parametrize("cell", ["lstm_proj", "gru"])
def test_threads_give_the_same_results(cell):
    case = Case(cell=cell, B=7, num_layers=2, bidirectional=True, lengths=(5, 1, 4, 0, 5, 2, 3))
    inputs = make_inputs(case)
    one = run_layer(build(case, n_threads=1), inputs)
    two = run_layer(build(case, n_threads=2), inputs)
    for name in one:
        assert rel_error(two[name], one[name]) <= 1e-13, name


def test_kernels_called_once_per_layer_and_direction_with_lengths(monkeypatch):
    """The layer hands the whole batch and ``lengths`` to the functional kernels: no Python
    loop over time or batch, one call per layer and direction in forward and in backward."""
    calls = []

    class Spy:
        def __getattr__(self, name):
            fn = getattr(reference, name)

            def wrapped(*args, **kw):
                calls.append((name, args[0].shape if args[0] is not None else None, kw))
                return fn(*args, **kw)
            return wrapped

    monkeypatch.setattr(layers, "_F", Spy())
    case = Case(cell="lstm", num_layers=2, bidirectional=True, lengths=(5, 2, 4), B=3)
    run_layer(build(case), make_inputs(case))
    fwd = [c for c in calls if c[0] == "lstm_forward"]
    bwd = [c for c in calls if c[0] == "lstm_backward"]
    assert len(fwd) == 4 and len(bwd) == 4 and len(calls) == 8
    for _, shape, kw in fwd:
        assert shape[:2] == (5, 3)
        np.testing.assert_array_equal(kw["lengths"], [5, 2, 4])
        assert kw["training"] is True


@pytest.mark.parametrize("cell", ["lstm", "lstm_proj", "gru", "gru_classic", "rnn_tanh"])
def test_concurrent_directions_give_the_kernels_bits(cell, monkeypatch):
    """With 2 threads a bidirectional layer runs its directions at the same time, one thread
    each: the results are bitwise those of running them one after the other with
    n_threads=1, and agree with the 2-thread sequential run to rounding. (A small Elman RNN
    trains with its directions one after the other: see layers._direction_plan.)"""
    case = Case(cell=cell, B=6, T=9, num_layers=2, bidirectional=True, lengths=(9, 1, 4, 0, 9, 2),
                dtype="float32")
    inputs = make_inputs(case)
    seen = []
    real = layers._run_directions

    def spy(calls, plan):
        seen.append(plan)
        return real(calls, plan)
    monkeypatch.setattr(layers, "_run_directions", spy)
    conc = run_layer(build(case, n_threads=2), inputs)
    concurrent = not cell.startswith("rnn")
    expected_plan = ([1, 1], True) if concurrent else ([2, 2], False)
    assert len(seen) == 4 and all(p == expected_plan for p in seen), seen
    monkeypatch.setattr(layers, "CONCURRENT_DIRECTIONS", False)
    one = run_layer(build(case, n_threads=1), inputs)
    two = run_layer(build(case, n_threads=2), inputs)
    for name in one:
        if concurrent:
            np.testing.assert_array_equal(conc[name], one[name], err_msg=name)
        else:
            np.testing.assert_array_equal(conc[name], two[name], err_msg=name)
        assert rel_error(two[name], one[name]) <= 1e-5, name


def test_direction_plan():
    lp = layers._direction_plan
    assert lp("lstm", 2, 2, True, 100, 1, 64, 128) == ([1, 1], True)
    assert lp("gru", 2, 3, False, 100, 1, 64, 128) == ([1, 2], True)
    assert lp("lstm", 1, 2, True, 100, 1, 64, 128) == ([2], False)
    assert lp("lstm", 2, 1, True, 100, 1, 64, 128) == ([1, 1], False)
    # Elman RNN training with tiny directions stays sequential (measured), large ones do not
    assert lp("rnn", 2, 2, True, 64, 16, 32, 64) == ([2, 2], False)
    assert lp("rnn", 2, 2, False, 64, 16, 32, 64) == ([1, 1], True)
    assert lp("rnn", 2, 2, True, 100, 32, 128, 256) == ([1, 1], True)


def test_run_directions_waits_for_both_and_raises():
    """An error in either direction propagates, and only after the other direction finished:
    no kernel keeps running on the caller's arrays."""
    import threading
    import time
    done = threading.Event()

    def slow(nt):
        time.sleep(0.2)
        done.set()
        return "second"

    def boom(nt):
        raise ValueError("first failed")
    with pytest.raises(ValueError, match="first failed"):
        layers._run_directions([boom, slow], ([1, 1], True))
    assert done.is_set()

    def boom2(nt):
        raise KeyError("second failed")
    with pytest.raises(KeyError, match="second failed"):
        layers._run_directions([lambda nt: "first", boom2], ([1, 1], True))
    assert layers._run_directions([lambda nt: nt, lambda nt: nt], ([1, 2], True)) == [1, 2]
    assert layers._run_directions([lambda nt: nt, lambda nt: nt], ([None, None], False)) == [
        None, None]


def test_empty_sequence(backend):
    case = Case(cell="lstm", T=0, num_layers=2, bidirectional=True)
    module = build(case)
    inputs = make_inputs(case)
    got = run_layer(module, inputs)
    assert got["y"].shape == (0, 3, 12) and got["dx"].shape == (0, 3, 4)
    np.testing.assert_array_equal(got["h_n"], inputs["h0"])
    np.testing.assert_array_equal(got["c_n"], inputs["c0"])
    np.testing.assert_array_equal(got["dh0"], inputs["dh_n"])
    np.testing.assert_array_equal(got["dc0"], inputs["dc_n"])
    assert not any(got[k].any() for k in got if k.startswith("grad:"))


def test_gradients_accumulate_until_zero_grad(backend):
    case = Case(cell="gru", num_layers=2, bidirectional=True)
    module = build(case)
    inputs = make_inputs(case)
    once = run_layer(module, inputs)
    twice = run_layer(module, inputs)
    for name in module.grads:
        np.testing.assert_allclose(twice["grad:" + name], 2 * once["grad:" + name],
                                   rtol=1e-14, atol=1e-15)
    grads_before = dict(module.grads)
    module.zero_grad()
    for name, g in module.grads.items():
        assert g is grads_before[name] and not g.any()  # zeroed in place


def test_backward_consumes_the_forward(backend):
    module = build(Case(cell="rnn_tanh"))
    x = make_inputs(Case(cell="rnn_tanh"))["x"]
    with pytest.raises(RuntimeError, match="preceding forward"):
        module.backward(None, None)
    y, h = module(x)
    module.backward(np.ones_like(y))
    with pytest.raises(RuntimeError, match="preceding forward"):
        module.backward(np.ones_like(y))
    module(x)
    module.clear_saved()
    with pytest.raises(RuntimeError, match="preceding forward"):
        module.backward(np.ones_like(y))


def test_all_upstream_none_gives_zero_gradients(backend):
    case = Case(cell="lstm", num_layers=2, bidirectional=True, upstream=())
    got = run_layer(build(case), make_inputs(case))
    for name in ("dx", "dh0", "dc0") + tuple(k for k in got if k.startswith("grad:")):
        assert not got[name].any(), name


def test_inputs_are_not_modified(backend):
    case = Case(cell="lstm", num_layers=2, bidirectional=True, dropout=0.3, lengths=(5, 1, 3))
    inputs = make_inputs(case)
    copies = {k: None if v is None else v.copy() for k, v in inputs.items()}
    run_layer(build(case), inputs)
    for k, v in inputs.items():
        if v is not None:
            np.testing.assert_array_equal(v, copies[k], err_msg=k)


# ------------------------------------------------------------------------------ parameters
def expected_names(kind, L, bidirectional, bias, proj):
    names = []
    for k in range(L):
        for sfx in ("", "_reverse")[:2 if bidirectional else 1]:
            names += [f"weight_ih_l{k}{sfx}", f"weight_hh_l{k}{sfx}"]
            if bias:
                names += [f"bias_ih_l{k}{sfx}", f"bias_hh_l{k}{sfx}"]
            if proj:
                names.append(f"weight_hr_l{k}{sfx}")
    return names


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("cls, G, proj", [(layers.LSTM, 4, 0), (layers.LSTM, 4, 3),
                                          (layers.GRU, 3, 0), (layers.RNN, 1, 0)])
def test_parameter_names_shapes_and_init(cls, G, proj, bidirectional):
    I, H, L = 5, 7, 3
    kw = dict(proj_size=proj) if proj else {}
    m = cls(I, H, num_layers=L, bidirectional=bidirectional, seed=0, **kw)
    names = [n for n, _ in m.named_parameters()]
    assert names == expected_names(None, L, bidirectional, True, proj)
    assert list(m.grads) == names and list(m.state_dict()) == names
    D, Ho = (2 if bidirectional else 1), proj or H
    bound = 1 / np.sqrt(H)
    for name, p in m.named_parameters():
        k = int(name.split("_l")[1][0])
        expected = {"weight_ih": (G * H, I if k == 0 else D * Ho), "weight_hh": (G * H, Ho),
                    "bias_ih": (G * H,), "bias_hh": (G * H,), "weight_hr": (proj, H)}
        assert p.shape == expected[name.split("_l")[0]], name
        assert p.dtype == np.float32 and p.flags.c_contiguous, name
        assert np.abs(p).max() <= bound, name
        assert m.grads[name].shape == p.shape and not m.grads[name].any()
    m2 = cls(I, H, num_layers=L, bidirectional=bidirectional, seed=0, **kw)
    for (n, p), (_, q) in zip(m.named_parameters(), m2.named_parameters()):
        np.testing.assert_array_equal(p, q, err_msg=f"same seed, different {n}")
    all_vals = np.concatenate([p.ravel() for p in m.parameters()])
    assert abs(all_vals.std() - bound / np.sqrt(3)) < 0.1 * bound  # U(-k, k) has std k/sqrt(3)
    assert all_vals.max() > 0.95 * bound and all_vals.min() < -0.95 * bound
    assert m.num_directions == D


def test_no_bias_parameters():
    m = layers.GRU(3, 4, num_layers=2, bias=False)
    assert [n for n, _ in m.named_parameters()] == expected_names(None, 2, False, False, 0)


def test_state_dict_copies_and_load_casts_in_place():
    m = layers.LSTM(3, 5, num_layers=2, proj_size=2, dtype=np.float32, seed=1)
    sd = m.state_dict()
    sd["weight_ih_l0"][...] = 0
    assert m.weight_ih_l0.any(), "state_dict must return copies"
    params = dict(m.named_parameters())
    src = layers.LSTM(3, 5, num_layers=2, proj_size=2, dtype=np.float64, seed=2)
    out = m.load_state_dict(src.state_dict())
    assert out.missing_keys == [] and out.unexpected_keys == []
    for name, p in m.named_parameters():
        assert p is params[name] and p.dtype == np.float32  # in place, cast
        np.testing.assert_array_equal(p, src.state_dict()[name].astype(np.float32))


def test_load_state_dict_accepts_array_likes_and_subsets():
    class ArrayLike:  # e.g. a torch tensor: anything with __array__
        def __init__(self, a):
            self.a = a

        def __array__(self, dtype=None, copy=None):
            return self.a if dtype is None else self.a.astype(dtype)

    m = layers.RNN(2, 3, bias=False, dtype=np.float64)
    w = np.arange(9.0).reshape(3, 3)
    res = m.load_state_dict({"weight_hh_l0": ArrayLike(w)}, strict=False)
    assert res.missing_keys == ["weight_ih_l0"]
    np.testing.assert_array_equal(m.weight_hh_l0, w)
    m.weight_ih_l0 = [[1, 2], [3, 4], [5, 6]]  # attribute assignment copies in place too
    np.testing.assert_array_equal(m.state_dict()["weight_ih_l0"], [[1, 2], [3, 4], [5, 6]])


def test_load_state_dict_rejects_bad_keys_and_shapes_atomically():
    m = layers.GRU(3, 4, seed=0)
    before = m.state_dict()
    good = layers.GRU(3, 4, seed=1).state_dict()
    with pytest.raises(ValueError, match="unexpected key.*'bias_ih_l1'"):
        m.load_state_dict(dict(good, bias_ih_l1=np.zeros(12)))
    with pytest.raises(ValueError, match="missing key.*'bias_hh_l0'"):
        m.load_state_dict({k: v for k, v in good.items() if k != "bias_hh_l0"})
    bad = dict(good, weight_hh_l0=np.zeros((12, 5)))
    with pytest.raises(ValueError, match=r"state_dict\['weight_hh_l0'\] has shape \(12, 5\)"):
        m.load_state_dict(bad)
    with pytest.raises(TypeError, match="mapping"):
        m.load_state_dict([("weight_ih_l0", good["weight_ih_l0"])])
    for name, v in m.state_dict().items():
        np.testing.assert_array_equal(v, before[name], err_msg="partial load after an error")


def test_repr_matches_pytorch_style():
    assert repr(layers.LSTM(3, 5, proj_size=2, num_layers=2, bidirectional=True)) == \
        "LSTM(3, 5, proj_size=2, num_layers=2, bidirectional=True)"
    assert repr(layers.RNN(3, 4, nonlinearity="relu", bias=False, batch_first=True,
                           dtype=np.float64)) == \
        "RNN(3, 4, nonlinearity='relu', bias=False, batch_first=True, dtype=float64)"


# ------------------------------------------------------------------------------ bad arguments
@pytest.fixture
def lstm2():
    return layers.LSTM(4, 6, num_layers=2, bidirectional=True, dtype=np.float64, seed=0)


def x64(*shape):
    return np.zeros(shape)


@pytest.mark.parametrize("call, exc, match", [
    (lambda m: m(x64(5, 3, 2, 4)), ValueError, r"input must be 3-D"),
    (lambda m: m(x64(5, 3, 3)), ValueError, r"input has 3 features .* input_size is 4"),
    (lambda m: m(np.zeros((5, 3, 4), np.float32)), TypeError, r"input has dtype float32"),
    (lambda m: m(x64(5, 3, 4), x64(4, 3, 6)), ValueError, r"hx must be a tuple \(h0, c0\)"),
    (lambda m: m(x64(5, 3, 4), (x64(4, 2, 6), x64(4, 3, 6))), ValueError,
     r"hx\[0\] \(h0\) must have shape \(4, 3, 6\)"),
    (lambda m: m(x64(5, 3, 4), (x64(4, 3, 6), x64(2, 3, 6))), ValueError,
     r"hx\[1\] \(c0\) must have shape \(4, 3, 6\)"),
    (lambda m: m(x64(5, 3, 4), lengths=[5, 2]), ValueError, r"lengths must have shape \(B,\)"),
    (lambda m: m(x64(5, 3, 4), lengths=[[5, 2, 1]]), ValueError, r"lengths must have shape"),
    (lambda m: m(x64(5, 3, 4), lengths=[5, 6, 1]), ValueError,
     r"lengths must lie in \[0, T\] = \[0, 5\].*lengths\[1\] = 6"),
    (lambda m: m(x64(5, 3, 4), lengths=[5, -1, 1]), ValueError, r"lengths\[1\] = -1"),
    (lambda m: m(x64(5, 3, 4), lengths=[5.0, 2.0, 1.0]), TypeError, r"lengths must be .*integer"),
    (lambda m: m(x64(5, 4), lengths=[5]), ValueError, r"lengths is only supported for batched"),
    (lambda m: m(x64(5, 4), (x64(4, 1, 6), x64(4, 1, 6))), ValueError,
     r"hx\[0\] \(h0\) must have shape \(4, 6\)"),
])
def test_bad_forward_arguments(lstm2, call, exc, match):
    with pytest.raises(exc, match=match):
        call(lstm2)


def test_bad_backward_arguments(lstm2):
    y, _ = lstm2(x64(5, 3, 4))
    with pytest.raises(ValueError, match=r"dy must have shape \(5, 3, 12\)"):
        lstm2.backward(x64(5, 3, 6))
    with pytest.raises(ValueError, match=r"dh_n must have shape \(4, 3, 6\)"):
        lstm2.backward(None, (x64(2, 3, 6), None))
    with pytest.raises(ValueError, match=r"dc_n must have shape \(4, 3, 6\)"):
        lstm2.backward(None, (None, x64(4, 6)))
    with pytest.raises(ValueError, match=r"dhx must be a tuple"):
        lstm2.backward(None, x64(4, 3, 6))
    with pytest.raises(TypeError, match=r"dy has dtype float32"):
        lstm2.backward(np.zeros((5, 3, 12), np.float32))
    lstm2.backward(y)  # the failed calls did not consume the saved forward


def test_bad_gru_rnn_hx():
    g = layers.GRU(4, 6, dtype=np.float64)
    with pytest.raises(ValueError, match=r"hx must have shape \(1, 3, 6\)"):
        g(x64(5, 3, 4), x64(3, 6))
    r = layers.RNN(4, 6, batch_first=True, dtype=np.float64)
    with pytest.raises(ValueError, match=r"input must be 3-D \(B, T, input_size\)"):
        r(x64(4))


@pytest.mark.parametrize("make, match", [
    (lambda: layers.LSTM(0, 4), "input_size must be an integer >= 1"),
    (lambda: layers.LSTM(3, 0), "hidden_size must be an integer >= 1"),
    (lambda: layers.LSTM(3, 4, num_layers=0), "num_layers must be an integer >= 1"),
    (lambda: layers.LSTM(3, 4, proj_size=4), "proj_size must be smaller than hidden_size"),
    (lambda: layers.LSTM(3, 4, proj_size=-1), "proj_size must be an integer >= 0"),
    (lambda: layers.GRU(3, 4, num_layers=2, dropout=1.5), r"dropout must be a number in \[0, 1\]"),
    (lambda: layers.RNN(3, 4, nonlinearity="sigmoid"), "nonlinearity must be 'tanh' or 'relu'"),
    (lambda: layers.RNN(3, 4, dtype=np.int32), "dtype must be float32 or float64"),
    (lambda: layers.GRU(3.5, 4), "input_size must be an integer"),
])
def test_bad_constructor_arguments(make, match):
    with pytest.raises(ValueError, match=match):
        make()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_forked_child_runs_concurrent_directions():
    """A child forked after the parent ran a bidirectional layer (so the direction pool and
    its worker thread exist in the parent) runs one too, with the same bits, instead of queueing
    work for a thread it does not have."""
    import time
    m = layers.LSTM(8, 40, bidirectional=True, seed=0)
    m.n_threads = 2
    x = np.random.default_rng(0).standard_normal((20, 4, 8)).astype(np.float32)
    y0 = m(x)[0]
    assert layers._pool is not None
    pid = os.fork()
    if pid == 0:  # child: report through the exit status only
        try:
            code = 0 if np.array_equal(m(x)[0], y0) else 3
        except BaseException:
            code = 4
        os._exit(code)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            assert os.waitstatus_to_exitcode(status) == 0
            return
        time.sleep(0.02)
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    pytest.fail("the forked child hung running a bidirectional layer")
