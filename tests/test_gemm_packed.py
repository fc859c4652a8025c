"""The per-step GEMM on packed weights (csrc/fc_gemm_impl.h) against NumPy, on every code path;
likewise the weight-gradient kernel C (+)= A^T B (fc_gemm_tn) and the same product with B read
in place (fc_gemm_rows: bitwise equal to the packed one, at every alignment of B).

The cell tests exercise it through the kernels, but with small H; here: K beyond one k-block
(512), column ranges that start and end inside a panel (hidden split), a K sub-range of a taller
packed matrix (classic GRU backward), M = 1 (its own micro-kernel) and remainders of the row
blocks, on the AVX-512, AVX2 and baseline paths (FASTCELLS_GEMM_ISA caps the dispatch level;
it is read once per process, so the capped paths run in subprocesses).
"""
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import misaligned

from fastcells import _kernels

CASES = [  # M, N, K, n0, n1, k_off, Kp
    (1, 64, 33, 0, 64, 0, 33),
    (1, 100, 700, 5, 97, 0, 700),
    (2, 96, 5, 0, 96, 0, 5),
    (6, 32, 512, 0, 32, 0, 512),
    (7, 100, 33, 0, 100, 0, 33),
    (13, 257, 1100, 31, 230, 0, 1100),
    (64, 512, 2048, 0, 512, 0, 2048),
    (5, 48, 16, 0, 48, 32, 48),       # rows 32..47 of a 48-row packed matrix
    (9, 40, 32, 0, 40, 0, 48),        # rows 0..31
    (3, 70, 20, 33, 34, 0, 20),       # a single column
    (4, 70, 20, 40, 40, 0, 20),       # an empty range: C untouched
    # 16 panels or more (float32): A packed too, its k-blocks as deep as the packed block holds
    (19, 1030, 129, 0, 1030, 0, 129),
    (300, 520, 700, 3, 517, 0, 700),  # beyond one block of packed rows (128)
]


def _check(dtype, case, accumulate, seed=0, transposed=False):
    M, N, K, n0, n1, k_off, Kp = case
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((M, K)).astype(dtype)
    Bm = rng.standard_normal((Kp, N)).astype(dtype)
    C = rng.standard_normal((M, N)).astype(dtype)
    want = C.astype(np.float64).copy()
    prod = A.astype(np.float64) @ Bm[k_off:k_off + K].astype(np.float64)
    want[:, n0:n1] = (want[:, n0:n1] if accumulate else 0) + prod[:, n0:n1]
    Bp = np.empty(_kernels.packed_size(Kp, N, np.dtype(dtype).itemsize), dtype)
    got = C.copy()
    src = np.ascontiguousarray(Bm.T) if transposed else Bm
    _kernels.gemm_packed(A, src, Bp, got, n0, n1, accumulate, k_off, transposed)
    eps = np.finfo(dtype).eps
    # outside the range: bit-identical; inside: error of a K-term dot product
    assert np.array_equal(got[:, :n0], C[:, :n0]) and np.array_equal(got[:, n1:], C[:, n1:])
    scale = np.abs(A).astype(np.float64) @ np.abs(Bm[k_off:k_off + K]).astype(np.float64)
    err = np.abs(got[:, n0:n1] - want[:, n0:n1]) / (scale[:, n0:n1] + np.abs(want[:, n0:n1]) + 1)
    assert err.max(initial=0) <= 4 * eps, (case, err.max())


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("accumulate", [True, False])
@pytest.mark.parametrize("transposed", [False, True], ids=["rows", "transposed"])
def test_gemm_packed(dtype, case, accumulate, transposed):
    _check(dtype, case, accumulate, transposed=transposed)


TN_CASES = [  # K, M, N (a multiple of the panel width: 32 float32, 16 float64), m0, m1
    (1, 1, 32, 0, 1),
    (100, 24, 32, 0, 24),
    (127, 13, 64, 3, 11),         # K below one k-block, partial row tiles at both ends
    (129, 40, 96, 8, 40),         # K one past a k-block
    (1024, 256, 64, 0, 128),      # the small LSTM's dW_hh, one thread's half
    (300, 7, 32, 0, 7),
    (50, 9, 32, 4, 4),            # an empty row range: C untouched
]


def _check_tn(dtype, case, accumulate, seed=0):
    K, M, N, m0, m1 = case
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((K, M)).astype(dtype)
    Bm = rng.standard_normal((K, N)).astype(dtype)
    C = rng.standard_normal((M, N)).astype(dtype)
    want = C.astype(np.float64)
    prod = A.astype(np.float64).T @ Bm.astype(np.float64)
    want[m0:m1] = (want[m0:m1] if accumulate else 0) + prod[m0:m1]
    got = C.copy()
    _kernels.gemm_tn(A, Bm, got, accumulate, m0, m1)
    assert np.array_equal(got[:m0], C[:m0]) and np.array_equal(got[m1:], C[m1:])
    scale = np.abs(A).astype(np.float64).T @ np.abs(Bm).astype(np.float64)
    err = np.abs(got - want) / (scale + np.abs(want) + 1)
    assert err.max(initial=0) <= 4 * np.finfo(dtype).eps, (case, err.max())


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", TN_CASES)
@pytest.mark.parametrize("accumulate", [True, False])
def test_gemm_tn(dtype, case, accumulate):
    if case[2] % (128 // np.dtype(dtype).itemsize):
        pytest.skip("N not a multiple of the panel width")
    _check_tn(dtype, case, accumulate)


ROWS_CASES = [  # M, K, N in panels (32 columns float32, 16 float64), n0, n1 (None: N)
    (1, 128, 4, 0, None),         # batch 1, two panels at a time
    (1, 300, 6, 0, None),         # K beyond one k-block
    (1, 7, 2, 0, None),           # K below the 4-row unroll: the first and last row in one
    (1, 1, 2, 0, None),           # one row: first and last at once
    (1, 257, 3, 0, None),         # an odd panel out
    (1, 64, 4, 3, -1),            # a column range inside panels (hidden split)
    (1, 64, 4, 32, None),         # a range starting at a panel boundary (f32) / inside (f64)
    (2, 50, 2, 0, None),          # batch 2: the general row tiles on strided rows
    (9, 129, 3, 5, None),
    (37, 600, 17, 0, None),       # 17 panels: A packed (float32)
    (20, 70, 33, 40, None),       # A packed, the range from inside the second panel (f64)
]


def _check_rows(dtype, case, accumulate, offset, seed=0):
    M, K, panels, n0, n1 = case
    it = np.dtype(dtype).itemsize
    N = panels * (128 // it)
    n1 = N if n1 is None else (N + n1 if n1 < 0 else n1)
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((M, K)).astype(dtype)
    Bm = misaligned(rng.standard_normal((K, N)).astype(dtype), offset)
    C = rng.standard_normal((M, N)).astype(dtype)
    packed = C.copy()
    Bp = np.empty(_kernels.packed_size(K, N, it), dtype)
    _kernels.gemm_packed(A, np.ascontiguousarray(Bm), Bp, packed, n0, n1, accumulate)
    got = C.copy()
    _kernels.gemm_rows(A, Bm, got, n0, n1, accumulate)
    assert np.array_equal(got, packed), (case, offset, np.abs(got - packed).max())
    want = (C[:, n0:n1].astype(np.float64) if accumulate else 0) + (
        A.astype(np.float64) @ Bm[:, n0:n1].astype(np.float64))
    scale = np.abs(A).astype(np.float64) @ np.abs(Bm[:, n0:n1]).astype(np.float64)
    err = np.abs(got[:, n0:n1] - want) / (scale + np.abs(want) + 1)
    assert err.max(initial=0) <= 4 * np.finfo(dtype).eps


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", ROWS_CASES)
@pytest.mark.parametrize("accumulate", [True, False])
@pytest.mark.parametrize("offset", [0, 8, 16, 48])
def test_gemm_rows_matches_packed(dtype, case, accumulate, offset):
    if offset % np.dtype(dtype).itemsize:
        pytest.skip("offset not a multiple of the element size")
    _check_rows(dtype, case, accumulate, offset)


def test_gemm_rows_rejects_bad_shapes():
    A = np.ones((1, 4), np.float32)
    with pytest.raises(ValueError, match="panel width"):
        _kernels.gemm_rows(A, np.ones((4, 40), np.float32), np.zeros((1, 40), np.float32), 0,
                           40, False)
    with pytest.raises(ValueError, match="inconsistent"):
        _kernels.gemm_rows(A, np.ones((4, 32), np.float32), np.zeros((1, 32), np.float32), 0,
                           33, False)


def test_gemm_tn_rejects_bad_shapes():
    A = np.ones((5, 3), np.float32)
    with pytest.raises(ValueError):      # N = 20: not a multiple of the panel width
        _kernels.gemm_tn(A, np.ones((5, 20), np.float32), np.zeros((3, 20), np.float32), False)
    with pytest.raises(ValueError):      # K mismatch
        _kernels.gemm_tn(A, np.ones((4, 32), np.float32), np.zeros((3, 32), np.float32), False)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("K, N", [(1, 1), (15, 33), (16, 32), (17, 64), (40, 100), (300, 7),
                                  (64, 96), (48, 128)])
@pytest.mark.parametrize("transposed", [False, True], ids=["rows", "transposed"])
def test_pack_layout(dtype, K, N, transposed):
    """The packed layout element by element, from both source orientations (rows of B
    contiguous, as for the backward's W_hh, or columns, as for the forward's W_hh^T): panel p
    holds rows 0..K-1 of columns p*w .. p*w + w - 1, zero past N; every element written."""
    itemsize = np.dtype(dtype).itemsize
    w = 128 // itemsize
    B = np.random.default_rng(K * N).standard_normal((K, N)).astype(dtype)
    n_panels = -(-N // w)
    want = np.zeros((n_panels, K, w), dtype)
    for p in range(n_panels):
        cols = B[:, p * w:(p + 1) * w]
        want[p, :, :cols.shape[1]] = cols
    Bp = np.full(_kernels.packed_size(K, N, itemsize), np.nan, dtype)
    src = np.ascontiguousarray(B.T) if transposed else B
    A = np.zeros((1, K), dtype)
    C = np.zeros((1, N), dtype)
    _kernels.gemm_packed(A, src, Bp, C, 0, N, False, 0, transposed)
    assert np.array_equal(Bp.reshape(n_panels, K, w), want)


def test_gemm_packed_rejects_bad_shapes():
    A = np.ones((2, 3), np.float32)
    Bm = np.ones((3, 4), np.float32)
    C = np.zeros((2, 4), np.float32)
    Bp = np.empty(_kernels.packed_size(3, 4, 4), np.float32)
    with pytest.raises(ValueError):
        _kernels.gemm_packed(A, Bm, Bp, C, 0, 5, True)
    with pytest.raises(ValueError):
        _kernels.gemm_packed(A, Bm, Bp[:-1], C, 0, 4, True)


def _check_a_packing_same_bits(dtype, M, K, accumulate, seed=0):
    """A product of 20 panels of columns packs A (16 panels or more; csrc/fc_gemm_impl.h
    fc_pack_a) with k-blocks as deep as the packed block holds; the same product in column
    ranges of 5 panels reads A in place with 512-deep k-blocks. Each element's sum runs over k
    in the same order either way, so the bits must agree."""
    w = 128 // np.dtype(dtype).itemsize
    N = 20 * w
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((M, K)).astype(dtype)
    Bm = rng.standard_normal((K, N)).astype(dtype)
    C = rng.standard_normal((M, N)).astype(dtype)
    Bp = np.empty(_kernels.packed_size(K, N, np.dtype(dtype).itemsize), dtype)
    whole = C.copy()
    _kernels.gemm_packed(A, Bm, Bp, whole, 0, N, accumulate)
    parts = C.copy()
    for n0 in range(0, N, 5 * w):
        _kernels.gemm_packed(A, Bm, Bp, parts, n0, n0 + 5 * w, accumulate)
    assert np.array_equal(whole, parts), (M, K, np.abs(whole - parts).max())


A_PACK_CASES = [(2, 70), (13, 700), (37, 1100), (150, 300)]   # M, K (150 > 128 packed rows)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("M, K", A_PACK_CASES)
@pytest.mark.parametrize("accumulate", [True, False])
def test_a_packing_same_bits(dtype, M, K, accumulate):
    _check_a_packing_same_bits(dtype, M, K, accumulate)


@pytest.mark.parametrize("isa", ["v3", "base"])
def test_gemm_packed_other_isas(isa):
    """The AVX2 and baseline kernels (and a whole LSTM step through them) in a subprocess."""
    code = (
        "import numpy as np, sys; sys.path.insert(0, %r)\n"
        "import test_gemm_packed as t\n"
        "for dt in (np.float32, np.float64):\n"
        "    for c in t.CASES:\n"
        "        for acc in (True, False):\n"
        "            t._check(dt, c, acc)\n"
        "            t._check(dt, c, acc, transposed=True)\n"
        "    for c in t.ROWS_CASES:\n"
        "        for off in (0, 16):\n"
        "            t._check_rows(dt, c, True, off)\n"
        "    for m, k in t.A_PACK_CASES:\n"
        "        t._check_a_packing_same_bits(dt, m, k, True)\n"
        "    for c in t.TN_CASES:\n"
        "        if c[2] %% (128 // np.dtype(dt).itemsize) == 0:\n"
        "            for acc in (True, False):\n"
        "                t._check_tn(dt, c, acc)\n"
        "import fastcells\n"
        "from fastcells import reference as R\n"
        "rng = np.random.default_rng(1)\n"
        "T, B, I, H = 3, 5, 4, 40\n"
        "x = rng.standard_normal((T, B, I)); w_ih = rng.standard_normal((4 * H, I)) * .3\n"
        "w_hh = rng.standard_normal((4 * H, H)) * .3\n"
        "y, h, c, ws = fastcells.lstm_forward(x, None, None, w_ih, w_hh)\n"
        "yr = R.lstm_forward(x, None, None, w_ih, w_hh)[0]\n"
        "assert np.abs(y - yr).max() < 1e-12, np.abs(y - yr).max()\n"
        "print('ok')\n" % os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, FASTCELLS_GEMM_ISA=isa)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-3000:]
