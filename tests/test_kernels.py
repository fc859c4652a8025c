"""The compiled kernels against the NumPy reference, and their behavioural contract.

Every comparison covers the forward outputs (y, h_n[, c_n]) and every gradient (dx, dh0[, dc0],
dw_ih, dw_hh, db_ih, db_hh). Each test varies one thing from the base problem; the oracle and the
tolerances are described in conftest.py.
"""
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from conftest import (
    assert_results_close,
    assert_results_equal,
    compare,
    forward,
    has_c,
    kind_of,
    make_problem,
    n_gates,
    run,
    run_fastcells,
    run_reference,
    shape_id,
    upstream_names,
)

import fastcells
from fastcells import reference

# (T, B, I, H). The base shape splits unevenly over 2 threads (B = 5) and has no power of 2.
BASE = (6, 5, 7, 11)
SHAPES = [
    (1, 1, 1, 1),      # every size 1
    (1, 4, 3, 5),      # T = 1: no recurrence, dW_hh from h0 only
    (5, 1, 3, 5),      # B = 1: one row, 2 threads degenerate to 1 OpenMP thread
    (5, 4, 1, 5),      # I = 1
    (5, 4, 3, 1),      # H = 1
    (7, 13, 5, 17),    # primes
    (3, 5, 16, 33),    # H = 33: not a multiple of the SIMD width; I != H
    (4, 3, 33, 8),     # I = 33 > H
    (20, 32, 64, 96),  # moderately large: long BLAS sums, several SIMD blocks
    (6, 3, 32, 20),    # I = 32: dx = dG W_ih on the in-place kernel (1 panel float32, 2 float64)
]
N_THREADS = [1, 2]


# ------------------------------------------------------------------------------ vs reference
@pytest.mark.parametrize("n_threads", N_THREADS)
@pytest.mark.parametrize("shape", SHAPES, ids=shape_id)
def test_matches_reference(cell, dtype, shape, n_threads):
    p = make_problem(cell, dtype, *shape, seed=1)
    assert_results_close(run_fastcells(p, n_threads), run_reference(p), dtype)


@pytest.mark.parametrize("bias", ["both", "none", "ih", "hh"])
def test_bias_variants(cell, dtype, bias):
    """The gradient of an absent bias is None; the present one's is still right."""
    p = make_problem(cell, dtype, *BASE, bias=bias)
    got = run_fastcells(p)
    assert (got["db_ih"] is None) == (bias in ("none", "hh"))
    assert (got["db_hh"] is None) == (bias in ("none", "ih"))
    assert_results_close(got, run_reference(p), dtype)


_MISSING_STATES = [(c, m) for c in ("lstm", "gru", "rnn_tanh", "rnn_relu")
                   for m in (("h0", "c0", "both") if c == "lstm" else ("h0",))]


@pytest.mark.parametrize("cell, missing", _MISSING_STATES,
                         ids=[f"{c}-{m}" for c, m in _MISSING_STATES])
def test_initial_state_none(cell, missing, dtype):
    p = make_problem(cell, dtype, *BASE, h0=missing == "c0", c0=missing == "h0")
    assert_results_close(run_fastcells(p), run_reference(p), dtype)


@pytest.mark.parametrize("cell, missing", _MISSING_STATES,
                         ids=[f"{c}-{m}" for c, m in _MISSING_STATES])
def test_initial_state_none_equals_zeros(cell, missing, dtype):
    """None is exactly zeros (bitwise)."""
    p = make_problem(cell, dtype, *BASE, h0=missing == "c0", c0=missing == "h0")
    zeros = p.copy()
    for name in ("h0", "c0"):
        if name in zeros.inputs and zeros.inputs[name] is None:
            zeros.inputs[name] = np.zeros((p.B, p.H), dtype)
    assert_results_equal(run_fastcells(p), run_fastcells(zeros))


_MISSING_UPSTREAM = [(c, m) for c in ("lstm", "gru", "rnn_tanh", "rnn_relu")
                     for m in upstream_names(c)]


@pytest.mark.parametrize("cell, missing", _MISSING_UPSTREAM,
                         ids=[f"{c}-{m}" for c, m in _MISSING_UPSTREAM])
def test_upstream_grad_none(cell, missing, dtype):
    p = make_problem(cell, dtype, *BASE, upstream=set(upstream_names(cell)) - {missing})
    assert_results_close(run_fastcells(p), run_reference(p), dtype)


@pytest.mark.parametrize("cell, missing", _MISSING_UPSTREAM,
                         ids=[f"{c}-{m}" for c, m in _MISSING_UPSTREAM])
def test_upstream_grad_none_equals_zeros(cell, missing, dtype):
    p = make_problem(cell, dtype, *BASE, upstream=set(upstream_names(cell)) - {missing})
    zeros = p.copy()
    shape = (p.T, p.B, p.H) if missing == "dy" else (p.B, p.H)
    zeros.upstream[missing] = np.zeros(shape, dtype)
    assert_results_equal(run_fastcells(p), run_fastcells(zeros))


def test_all_upstream_none_gives_zero_grads(cell, dtype):
    p = make_problem(cell, dtype, *BASE, upstream=())
    got = run_fastcells(p)
    for name in ("dx", "dh0", "dc0", "dw_ih", "dw_hh", "db_ih", "db_hh"):
        if name in got:
            assert got[name].dtype == dtype
            assert np.all(got[name] == 0), name


def test_saturated_activations(cell):
    """Weights x30: gates deep in saturation, where sigmoid/tanh are flat and their derivatives
    from saved values (s(1-s), 1-t^2) cancel. float64 only: in float32 that cancellation costs
    the reference's own float32 path as much accuracy (~1e-4) as the kernels, so no tolerance
    below the conditioning of the problem would be meaningful."""
    p = make_problem(cell, np.float64, *BASE)
    for name in ("w_ih", "w_hh"):
        p.inputs[name] = p.inputs[name] * 30
    assert_results_close(run_fastcells(p, n_threads=2), run_reference(p), np.float64)


def test_nan_propagates_like_reference(cell, dtype):
    """One NaN in x: exactly the results the reference makes NaN are NaN (relu and the
    activations must not swallow it); everything else still matches."""
    p = make_problem(cell, dtype, *BASE)
    p.inputs["x"][2, 3, 4] = np.nan
    got = run_fastcells(p, n_threads=2)
    with np.errstate(invalid="ignore"):
        expected = run(reference, p.astype(np.float64))
    for name, b in expected.items():
        if b is None:
            assert got[name] is None
            continue
        nan = np.isnan(b)
        assert np.array_equal(np.isnan(got[name]), nan), name
        compare(np.where(nan, 0, got[name]), np.where(nan, 0, b), dtype, what=name)
    assert np.isnan(got["y"][2:, 3]).all() and not np.isnan(got["y"][:, :3]).any()


# ------------------------------------------------------------------------------ inference
@pytest.mark.parametrize("n_threads", N_THREADS)
def test_inference_equals_training(cell, dtype, n_threads):
    p = make_problem(cell, dtype, *BASE)
    train, ws_train = forward(fastcells, p, n_threads=n_threads)
    infer, ws_infer = forward(fastcells, p, n_threads=n_threads, training=False)
    assert ws_infer is None and ws_train is not None
    # same math; the input projection runs through another GEMM kernel (packed, per step) in
    # inference, so the bits may differ (docs/guarantees.md, Determinism)
    assert_results_close(infer, train, dtype)


# Long sequences and a wide batch. Inference runs the input projection on packed W_ih (per step;
# the Elman RNN's first two shapes all steps before the loop, the third per step), training as
# one BLAS GEMM: same math, rounding may differ in the last bits.
LONG_SHAPES = [(300, 4, 16, 64), (800, 8, 16, 64), (3, 2100, 4, 128)]


@pytest.mark.parametrize("n_threads", N_THREADS)
@pytest.mark.parametrize("shape", LONG_SHAPES, ids=shape_id)
def test_large_inference_equals_training(cell, dtype, shape, n_threads):
    p = make_problem(cell, dtype, *shape)
    train, _ = forward(fastcells, p, n_threads=n_threads)
    infer, _ = forward(fastcells, p, n_threads=n_threads, training=False)
    assert_results_close(infer, train, dtype)


# ------------------------------------------------------------------------------ threads
@pytest.mark.parametrize("n_threads", [2, 3, 16])
def test_threads_agree(cell, dtype, n_threads):
    """B = 13 splits unevenly over 2 and 3 threads; 16 > B leaves threads without rows."""
    p = make_problem(cell, dtype, 5, 13, 6, 10)
    one = run_fastcells(p, n_threads=1)
    assert_results_close(run_fastcells(p, n_threads=n_threads), one, dtype)


def test_default_n_threads_agrees(cell, dtype):
    p = make_problem(cell, dtype, 5, 13, 6, 10)
    assert_results_close(run_fastcells(p, n_threads=None), run_fastcells(p, n_threads=1), dtype)


def test_concurrent_python_threads(cell, dtype):
    """Calls from several Python threads at once (each with 2 OpenMP threads, no shared
    scratch) give the same bits as the same calls made one after another."""
    problems = [make_problem(cell, dtype, 6, 9, 7, 12, seed=s) for s in range(6)]
    serial = [run_fastcells(p, n_threads=2) for p in problems]
    with ThreadPoolExecutor(max_workers=3) as pool:
        concurrent = list(pool.map(lambda p: run_fastcells(p, n_threads=2), problems * 2))
    for i, got in enumerate(concurrent):
        assert_results_equal(got, serial[i % len(problems)])


@pytest.mark.parametrize("n_threads", N_THREADS)
def test_repeated_calls_bitwise_identical(cell, dtype, n_threads):
    p = make_problem(cell, dtype, 7, 13, 5, 17)
    first = run_fastcells(p, n_threads=n_threads)
    for _ in range(3):
        assert_results_equal(run_fastcells(p, n_threads=n_threads), first)


# ------------------------------------------------------------------------------ empty
def _check_empty(p, got):
    """T = 0 or B = 0: y empty, h_n = h0, c_n = c0, dh0 = dh_n, dc0 = dc_n, other grads 0."""
    T, B, I, H = p.T, p.B, p.I, p.H
    dtype = p.dtype
    zeros_bh = np.zeros((B, H), dtype)
    expect = {"y": np.zeros((T, B, H), dtype), "h_n": p.inputs["h0"],
              "dx": np.zeros((T, B, I), dtype), "dh0": p.upstream["dh_n"],
              "dw_ih": np.zeros((n_gates(p.cell) * H, I), dtype),
              "dw_hh": np.zeros((n_gates(p.cell) * H, H), dtype),
              "db_ih": np.zeros(n_gates(p.cell) * H, dtype),
              "db_hh": np.zeros(n_gates(p.cell) * H, dtype)}
    if has_c(p.cell):
        expect.update(c_n=p.inputs["c0"], dc0=p.upstream["dc_n"])
    expect = {k: zeros_bh if v is None else v for k, v in expect.items()}
    assert_results_equal(got, expect)


@pytest.mark.parametrize("given", [True, False], ids=["given", "none"])
def test_empty_sequence(cell, dtype, given):
    """T = 0; 'none' passes h0, c0, dh_n, dc_n as None (then all results are zeros)."""
    ups = upstream_names(cell) if given else ()
    p = make_problem(cell, dtype, 0, 4, 3, 5, h0=given, c0=given, upstream=ups)
    _check_empty(p, run_fastcells(p))


@pytest.mark.parametrize("given", [True, False], ids=["given", "none"])
def test_empty_batch(cell, dtype, given):
    ups = upstream_names(cell) if given else ()
    p = make_problem(cell, dtype, 4, 0, 3, 5, h0=given, c0=given, upstream=ups)
    _check_empty(p, run_fastcells(p))


def test_zero_input_size(cell, dtype):
    """I = 0: the input projection is empty (a GEMM with K = 0); the recurrence still runs."""
    p = make_problem(cell, dtype, 4, 3, 0, 5)
    got = run_fastcells(p, n_threads=2)
    assert got["dx"].shape == (4, 3, 0) and got["dw_ih"].shape == (n_gates(cell) * 5, 0)
    assert_results_close(got, run_reference(p), dtype)


def test_empty_sequence_inference(cell, dtype):
    p = make_problem(cell, dtype, 0, 4, 3, 5)
    out, ws = forward(fastcells, p, training=False)
    assert ws is None
    assert out["y"].shape == (0, 4, 5) and out["y"].dtype == dtype
    assert_results_equal({k: out[k] for k in out if k != "y"},
                         {k: p.inputs[k.replace("_n", "0")] for k in out if k != "y"})


# ------------------------------------------------------------------------------ inputs
def _all_arrays(p):
    return {**{k: v for k, v in p.inputs.items() if v is not None},
            **{k: v for k, v in p.upstream.items() if v is not None}}


@pytest.mark.parametrize("training", [True, False], ids=["training", "inference"])
def test_inputs_not_modified(cell, dtype, training):
    p = make_problem(cell, dtype, *BASE)
    before = p.copy()
    if training:
        run_fastcells(p, n_threads=2)
    else:
        forward(fastcells, p, n_threads=2, training=False)
    assert_results_equal(_all_arrays(p), _all_arrays(before))


@pytest.mark.parametrize("T", [0, 3])
def test_results_do_not_alias(cell, dtype, T):
    """No result shares memory with an input or with another result (T = 0 included, where
    returning h0 itself as h_n would be tempting)."""
    p = make_problem(cell, dtype, T, 4, 3, 5)
    got = run_fastcells(p)
    arrays = [(k, v) for k, v in {**_all_arrays(p), **got}.items() if v is not None]
    results = set(got)
    for i, (ka, a) in enumerate(arrays):
        for kb, b in arrays[i + 1:]:
            if ka in results or kb in results:
                assert not np.shares_memory(a, b), f"{ka} shares memory with {kb}"


def test_aliased_inputs(cell, dtype):
    """Inputs that are the same array (c0 is h0, w_ih is w_hh, b_hh is b_ih, dc_n is dh_n)
    give the same results as separate copies: the kernels only read their inputs."""
    p = make_problem(cell, dtype, 6, 5, 7, 7)     # I = H so that w_ih and w_hh can alias
    aliased = {"w_ih": "w_hh", "b_hh": "b_ih", "c0": "h0", "dc_n": "dh_n"}
    for dst, src in aliased.items():
        for d in (p.inputs, p.upstream):
            if dst in d:
                d[dst] = d[src]
    assert_results_equal(run_fastcells(p, n_threads=2), run_fastcells(p.copy(), n_threads=2))


def _fortran(a):
    return np.asfortranarray(a)


def _strided(a):
    """Every other element of a twice-as-long last axis (non-contiguous view)."""
    buf = np.full(a.shape[:-1] + (2 * a.shape[-1],), np.nan, a.dtype)
    buf[..., ::2] = a
    return buf[..., ::2]


def _negative(a):
    """Negative strides on every axis."""
    return np.flip(np.flip(a).copy())


def _readonly(a):
    a = a.copy()
    a.setflags(write=False)
    return a


LAYOUTS = {"fortran": _fortran, "strided": _strided, "negative": _negative,
           "readonly": _readonly}


@pytest.mark.parametrize("layout", LAYOUTS)
def test_layouts_give_same_results(cell, dtype, layout):
    """Every array argument in the given layout; results bitwise equal to contiguous inputs."""
    p = make_problem(cell, dtype, *BASE)
    q = p.map(LAYOUTS[layout])
    if layout == "readonly":
        assert not q.inputs["x"].flags.writeable
    else:
        assert not q.inputs["x"].flags.c_contiguous
    assert_results_equal(run_fastcells(q, n_threads=2), run_fastcells(p, n_threads=2))



@pytest.mark.parametrize("n_threads", N_THREADS)
@pytest.mark.parametrize("packed", [False, True], ids=["blas", "packed"])
def test_training_input_projection_both_paths(cell, dtype, packed, n_threads, monkeypatch):
    """A training forward projects narrow float32 inputs (I = 20 here) on the packed kernel,
    others with BLAS (_api._x_pack): both paths against the reference (float64 takes BLAS
    either way, and must be unaffected by the switch)."""
    from fastcells import _api
    monkeypatch.setattr(_api, "_NARROW_X_PACKED", packed)
    p = make_problem(cell, dtype, 7, 6, 20, 13, seed=3)
    assert_results_close(run_fastcells(p, n_threads), run_reference(p), dtype)


@pytest.mark.parametrize("split", [1, 2], ids=["batch-split", "hidden-split"])
@pytest.mark.parametrize("with_lengths", [False, True], ids=["full", "lengths"])
def test_inference_state_in_y_on_both_splits(cell, dtype, split, with_lengths, monkeypatch):
    """Inference without lengths writes h_t straight into y_t and reads it there at step t+1;
    with lengths, h goes through a double buffer (rows past their length keep their state while
    y gets zeros). Both, on the batch and on the hidden split of two threads (H = 64: 32 units
    per thread), against the reference's forward, and y at every step against h_n."""
    from fastcells import _api

    def plan(n_threads, flops, B, H, G, P, itemsize, hidden_ok=True, I_loop=0):
        # the grid forced (this problem is below the rule's 16 MFLOP per thread); the classic
        # GRU has no hidden split (hidden_ok False), it gets the batch split
        return (2, 1, 2) if split == 2 and hidden_ok else (2, 2, 1)
    monkeypatch.setattr(_api, "_plan", plan)
    p = make_problem(cell, dtype, 6, 5, 9, 64, seed=4)
    lengths = np.array([6, 0, 3, 6, 1]) if with_lengths else None
    got, _ = forward(fastcells, p, training=False, n_threads=2, lengths=lengths)
    want, _ = forward(reference, p.astype(np.float64), lengths=lengths)
    assert_results_close(got, want, dtype)
    # the last step of full rows is h_n itself, bit for bit
    full = np.arange(5) if lengths is None else np.flatnonzero(lengths == 6)
    np.testing.assert_array_equal(got["y"][-1][full], got["h_n"][full])
