"""Slice mode (issue 6): small training problems on several threads, each thread running its
batch slice as a problem of its own (see _kernels.pyx, "slice mode", and _capi.pxi's
train_slices).

The forward records the slice count in its Workspace and saves its activations in the
[slice][T][rows][X] layout; the backward follows it whatever its own plan would say. Checked
here: the rule, the results against the float64 reference (forward and every gradient, float32
and float64, odd shapes, lengths, absent states / biases / upstream gradients, both GRU
variants), bitwise repeatability, the results when OpenMP grants fewer threads than slices, a
forward in slice mode followed by a backward asked for other thread counts, and the corrupted
workspace check. The C API's parity with the Python API in slice mode is in test_capi.py.
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import (
    assert_results_close,
    assert_results_equal,
    backward,
    forward,
    make_problem,
    run_reference,
    shape_id,
)

import fastcells
from fastcells import _api, _kernels, reference

# (rnn_relu differs from rnn_tanh only in its pointwise kernels, checked by test_kernels.py;
# random problems this size have relu pre-activations too close to 0 for its reference check)
SLICE_CELLS = ("lstm", "gru", "gru_classic", "rnn_tanh")

# (T, B, I, H) where the backward's partials fit in dx (T*B*I elements): slice mode applies
SHAPES = [
    (16, 16, 32, 16),   # 8 rows per slice
    (9, 9, 24, 5),      # odd B: slices of 4 and 5 rows; H = 5 below the SIMD width
    (3, 13, 40, 7),     # T = 3
    (1, 16, 64, 3),     # T = 1: dW_hh from h0 alone
    (40, 10, 33, 17),   # I = 33: dx and dW_ih on BLAS (I not a multiple of the panel width)
    (12, 24, 96, 16),   # 3 slices with n_threads=3
]
# The Elman RNN also needs its top chunk's dG below that chunk's rows of dx: not at T = 1 or 3
RNN_SKIP = {(3, 13, 40, 7), (1, 16, 64, 3)}
CASES = [(c, s) for c in SLICE_CELLS for s in SHAPES
         if not (c.startswith("rnn") and s in RNN_SKIP)]


def _problem(cell, dtype, shape, **kw):
    return make_problem("gru" if cell == "gru_classic" else cell, dtype, *shape, **kw)


def _kw(cell, lengths=None):
    kw = {"lengths": lengths}
    if cell == "gru_classic":
        kw["reset_after"] = False
    return kw


def _gates(cell):
    return {"lstm": 4, "gru": 3, "rnn": 1}[cell.split("_")[0]]


def _run(p, cell, n_threads, forced=3, lengths=None, bwd_threads=None):
    """Forward + backward with _FORCED_SPLIT = forced; the forward's slice count too."""
    saved = _api._FORCED_SPLIT
    _api._FORCED_SPLIT = forced
    try:
        out, ws = forward(fastcells, p, training=True, n_threads=n_threads, **_kw(cell, lengths))
        slices = ws._slices
        if bwd_threads is not None:
            ws._n_threads = bwd_threads
        out.update(backward(fastcells, p, ws))
    finally:
        _api._FORCED_SPLIT = saved
    return out, slices


def _reference(p, cell, lengths=None):
    """run_reference (float64), with lengths and the classic GRU."""
    if cell != "gru_classic" and lengths is None:
        return run_reference(p)
    p64 = p.astype(np.float64)
    b_ih, b_hh = p64.inputs["b_ih"], p64.inputs["b_hh"]
    if (b_ih is None) != (b_hh is None):          # the reference takes both biases or none
        zeros = np.zeros_like(b_ih if b_ih is not None else b_hh)
        p64.inputs["b_ih"] = zeros if b_ih is None else b_ih
        p64.inputs["b_hh"] = zeros if b_hh is None else b_hh
    res, ws = forward(reference, p64, **_kw(cell, lengths))
    res.update(backward(reference, p64, ws))
    for k in ("b_ih", "b_hh"):
        if p.inputs[k] is None:
            res[f"d{k}"] = None
    return res


# ------------------------------------------------------------------------------ the rule
def test_rule():
    sl = _kernels.slices
    T, B, I, H = 64, 16, 32, 64                      # the benchmark's small shape
    for G in (4, 3, 1):
        assert sl(2, 2, 1, 0, T, B, I, H, G, H, True, 4) == 2
        assert sl(2, 2, 1, 0, T, B, I, H, G, H, True, 8) == 2
        assert sl(2, 2, 1, 0, T, B, I, H, G, H, False, 4) == 0   # inference, projection
        assert sl(2, 2, 1, 1, T, B, I, H, G, H, True, 4) == 0    # forced grid batch split
        assert sl(2, 1, 2, 0, T, B, I, H, G, H, True, 4) == 0    # hidden split
        assert sl(1, 1, 1, 0, T, B, I, H, G, H, True, 4) == 0    # one thread
        assert sl(2, 2, 1, 0, T, 7, I, H, G, H, True, 4) == 0    # fewer than 4 rows a slice
        assert sl(2, 2, 1, 0, 1, B, I, H, G, H, True, 4) == 0    # partials do not fit in dx
        assert sl(2, 2, 1, 0, T, B, 0, H, G, H, True, 4) == 0    # no input
        assert sl(2, 2, 1, 0, T, B, 4096, H, G, H, True, 4) == 0  # x rows beyond the buffer
    # H above the threshold: only when forced (and the partials fit)
    assert _kernels.slices(2, 2, 1, 0, 100, 32, 128, 256, 4, 256, True, 4) == 0
    assert _kernels.slices(2, 2, 1, 3, 100, 32, 128, 256, 4, 256, True, 4) == 2
    # Elman RNN: the top chunk's dG must fit in dx below that chunk's rows (not at T = 3 here)
    assert sl(2, 2, 1, 3, 3, 13, 40, 7, 1, 7, True, 4) == 0
    assert sl(2, 2, 1, 3, 3, 13, 40, 7, 3, 7, True, 4) == 2
    assert _kernels.rnn_backward_slice_dg_offset(2, 3, 13, 40, 7, 4) == -1
    off = _kernels.rnn_backward_slice_dg_offset(2, T, B, I, H, 4)
    top = min(_kernels.rnn_backward_chunk(T, B, I, H, 4), T)
    assert off % 16 == 0 and off + top * B * H <= (T - top) * B * I


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn_tanh"])
def test_small_shape_uses_slices(cell):
    """The rule picks slice mode for the benchmark's small training shape on 2 threads, and
    the plan of an inference forward is unchanged (it never slices)."""
    p = _problem(cell, np.float32, (64, 16, 32, 64))
    _, slices = _run(p, cell, 2, forced=0)
    assert slices == 2
    out, ws = forward(fastcells, p, training=False, n_threads=2)
    assert ws is None


# ------------------------------------------------------------------------------ correctness
@pytest.mark.parametrize("cell, shape", CASES, ids=[f"{c}-{shape_id(s)}" for c, s in CASES])
def test_matches_reference(cell, dtype, shape):
    p = _problem(cell, dtype, shape, seed=2)
    n = 3 if shape[1] >= 24 else 2
    got, slices = _run(p, cell, n)
    assert slices == n
    assert_results_close(got, _reference(p, cell), dtype)
    # and agrees with the grid layout on as many threads, and with one thread, to rounding
    for threads, forced in ((n, 1), (1, 0)):
        other, s = _run(p, cell, threads, forced=forced)
        assert s == 0
        assert_results_close(other, got, dtype)


@pytest.mark.parametrize("cell", SLICE_CELLS)
def test_lengths(cell, dtype):
    """Packed-sequence semantics in every slice: zeros in y past each length, states frozen;
    lengths 0 and T in both slices."""
    shape = (8, 10, 32, 9)
    p = _problem(cell, dtype, shape, seed=3)
    lengths = np.array([8, 0, 3, 8, 1, 0, 8, 5, 2, 6])
    got, slices = _run(p, cell, 2, lengths=lengths)
    assert slices == 2
    assert_results_close(got, _reference(p, cell, lengths), dtype)
    t = np.arange(shape[0])[:, None]
    assert np.all(got["y"][t >= lengths[None, :]] == 0)


@pytest.mark.parametrize("variant", ["no-states", "no-bias", "bias-ih", "bias-hh",
                                     "dy-only", "dh_n-only", "no-upstream"])
@pytest.mark.parametrize("cell", SLICE_CELLS)
def test_optional_arguments(cell, variant):
    dtype = np.float64
    kw = {"no-states": dict(h0=False, c0=False), "no-bias": dict(bias="none"),
          "bias-ih": dict(bias="ih"), "bias-hh": dict(bias="hh"),
          "dy-only": dict(upstream=("dy",)), "dh_n-only": dict(upstream=("dh_n", "dc_n")),
          "no-upstream": dict(upstream=())}[variant]
    p = _problem(cell, dtype, (6, 12, 32, 10), seed=4, **kw)
    got, slices = _run(p, cell, 2)
    assert slices == 2
    assert_results_close(got, _reference(p, cell), dtype)


@pytest.mark.parametrize("cell", SLICE_CELLS)
def test_bitwise_repeatable_and_inputs_unmodified(cell):
    p = _problem(cell, np.float32, (16, 16, 32, 16), seed=5)
    snap = p.copy()
    first, slices = _run(p, cell, 2)
    assert slices == 2
    for _ in range(3):
        assert_results_equal(_run(p, cell, 2)[0], first)
    for k, v in p.inputs.items():
        assert v is None or np.array_equal(v, snap.inputs[k]), k


@pytest.mark.parametrize("bwd_threads", [1, 4])
@pytest.mark.parametrize("cell", SLICE_CELLS)
def test_backward_follows_the_forward(cell, bwd_threads):
    """The saved arrays' layout is the forward's: a backward asked for another thread count
    (here by editing the workspace's n_threads) still runs in the forward's slices and gives
    the same bits."""
    p = _problem(cell, np.float32, (16, 16, 32, 16), seed=6)
    base, _ = _run(p, cell, 2)
    other, slices = _run(p, cell, 2, bwd_threads=bwd_threads)
    assert slices == 2
    assert_results_equal(other, base)


def test_corrupted_slice_count():
    """A slice count the forward could not have chosen for the shape is refused (a plausible
    wrong one cannot be told apart: private state, like the saved arrays themselves)."""
    p = make_problem("lstm", np.float32, 16, 16, 32, 16)
    saved = _api._FORCED_SPLIT
    _api._FORCED_SPLIT = 3
    try:
        for bad in (1, 8, 17, -2, 2.0, "2", None):
            out, ws = forward(fastcells, p, training=True, n_threads=2)
            assert ws._slices == 2
            ws._slices = bad
            with pytest.raises(ValueError, match="corrupted workspace"):
                backward(fastcells, p, ws)
    finally:
        _api._FORCED_SPLIT = saved


# ------------------------------------------------------------------------------ fewer threads
_CHILD = r"""
import json, sys
import numpy as np
sys.path.insert(0, sys.argv[1])
from conftest import make_problem, forward, backward
import fastcells
from fastcells import _api
_api._FORCED_SPLIT = 3
_api._plan = lambda *a, **k: (2, 2, 1)      # plan 2 threads whatever OpenMP allows
out = {}
for cell in ("lstm", "gru", "rnn_tanh"):
    p = make_problem(cell, np.float32, 16, 16, 32, 16, seed=7)
    res, ws = forward(fastcells, p, training=True, n_threads=2)
    assert ws._slices == 2
    res.update(backward(fastcells, p, ws))
    out[cell] = {k: (None if v is None else v.tobytes().hex()) for k, v in res.items()}
print(json.dumps(out))
"""


def test_fewer_openmp_threads_than_slices():
    """With OMP_THREAD_LIMIT=1 the OpenMP region of a 2-slice call gets one thread, which then
    runs both slices: the same bits as two threads (each slice's sums run in the same order
    on whichever thread)."""
    here = os.path.dirname(os.path.abspath(__file__))
    res = []
    for limit in (None, "1"):
        env = dict(os.environ)
        env.pop("OMP_THREAD_LIMIT", None)
        if limit:
            env["OMP_THREAD_LIMIT"] = limit
        r = subprocess.run([sys.executable, "-c", _CHILD, here], env=env, capture_output=True,
                           text=True, timeout=120)
        assert r.returncode == 0, r.stderr[-2000:]
        res.append(json.loads(r.stdout.strip().splitlines()[-1]))
    assert res[0] == res[1]
