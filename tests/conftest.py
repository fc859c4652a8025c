"""Shared helpers for the kernel tests: problem generator, runners, per-dtype comparisons.

Cells are named ``lstm``, ``gru``, ``rnn_tanh`` and ``rnn_relu``; a *problem* is one set of
forward inputs plus the upstream gradients (dy, dh_n, dc_n) for a given cell, dtype and shape.
``run(module, problem)`` runs forward + backward through ``fastcells`` or ``fastcells.reference``
and returns every output and gradient in one dict, keyed by name, so tests compare whole results.

Tolerances (relative to the largest magnitude of the expected array, see :func:`compare`)
-----------------------------------------------------------------------------------------
The oracle is always the NumPy reference evaluated in float64 on the same (exactly
representable) inputs, so the tolerance budgets only the kernel's own rounding (the reference's
own float32 path is checked in test_reference.py). The scale is max(max|expected|, 1):

* float64: 1e-12 (~9000 eps). Errors come from GEMM summation order (≤ K·eps, K ≤ a few
  hundred here, typically √K·eps), the activations (≤ 3 ulp) and their propagation through at
  most T = 20 recurrent steps with unsaturated weights; observed errors are ~1e-15.
* float32: 1e-5 (~170 eps). Same sources with eps = 6e-8: the largest sums here (dW over
  T·B = 640 rows) give √640·eps ≈ 1.5e-6 typical; observed errors are ~1e-6. A broken
  formula (wrong gate, wrong sign, a missing term) errs by O(1e-2) or more, far above it.
"""
import threading
from dataclasses import dataclass, field, replace

import numpy as np
import pytest

import fastcells
from fastcells import reference

CELLS = ("lstm", "gru", "rnn_tanh", "rnn_relu")
DTYPES = (np.float32, np.float64)
DTYPE_IDS = ("f32", "f64")
TOL = {np.dtype(np.float32): 1e-5, np.dtype(np.float64): 1e-12}

_GATES = {"lstm": 4, "gru": 3, "rnn": 1}


def pytest_configure(config):
    config.addinivalue_line("markers", "torch: compares against PyTorch (skipped if not installed)")
    config.addinivalue_line("markers", "slow: long-running; deselect with -m 'not slow'")


# ------------------------------------------------------------------------------ cells
def kind_of(cell):
    """'lstm' | 'gru' | 'rnn' (the function family) of a cell name."""
    return cell.split("_")[0]


def nonlinearity_of(cell):
    return cell.split("_")[1] if kind_of(cell) == "rnn" else None


def has_c(cell):
    return kind_of(cell) == "lstm"


def n_gates(cell):
    return _GATES[kind_of(cell)]


def output_names(cell):
    return ("y", "h_n", "c_n") if has_c(cell) else ("y", "h_n")


def grad_names(cell):
    states = ("dx", "dh0", "dc0") if has_c(cell) else ("dx", "dh0")
    return states + ("dw_ih", "dw_hh", "db_ih", "db_hh")


def upstream_names(cell):
    return ("dy", "dh_n", "dc_n") if has_c(cell) else ("dy", "dh_n")


def input_names(cell):
    states = ("x", "h0", "c0") if has_c(cell) else ("x", "h0")
    return states + ("w_ih", "w_hh", "b_ih", "b_hh")


# ------------------------------------------------------------------------------ problems
@dataclass
class Problem:
    """Forward inputs (``inputs``, keyed by argument name, None allowed) and upstream grads."""

    cell: str
    dtype: np.dtype
    T: int
    B: int
    I: int
    H: int
    inputs: dict = field(default_factory=dict)
    upstream: dict = field(default_factory=dict)

    def map(self, fn, **changes):
        """A new problem with ``fn`` applied to every array (None stays None)."""
        def each(d):
            return {k: (None if v is None else fn(v)) for k, v in d.items()}
        return replace(self, inputs=each(self.inputs), upstream=each(self.upstream), **changes)

    def copy(self):
        return self.map(np.copy)

    def astype(self, dtype):
        return self.map(lambda a: a.astype(dtype), dtype=np.dtype(dtype))


def make_problem(cell, dtype, T=3, B=4, I=5, H=7, *, seed=0, bias="both", h0=True, c0=True,
                 upstream=None):
    """Random problem with activations in their sensitive (unsaturated) range.

    Weights and biases ~ U(-1/√H, 1/√H) as PyTorch initialises them, so pre-activations are
    O(1); x, h0, c0 and the upstream gradients ~ N(0, 1) (states scaled by 0.5).
    bias: 'both' | 'none' | 'ih' | 'hh' (which of b_ih / b_hh is given).
    h0, c0: False passes None (c0 is ignored for cells without a cell state).
    upstream: names among dy, dh_n, dc_n that are given (default all); the others are None.
    """
    assert bias in ("both", "none", "ih", "hh")
    dtype = np.dtype(dtype)
    rng = np.random.default_rng(seed)
    G = n_gates(cell)
    k = 1.0 / np.sqrt(H)

    def uniform(*shape):
        return rng.uniform(-k, k, shape).astype(dtype)

    def normal(*shape, scale=1.0):
        return (scale * rng.standard_normal(shape)).astype(dtype)

    inputs = {"x": normal(T, B, I), "h0": normal(B, H, scale=0.5)}
    if has_c(cell):
        inputs["c0"] = normal(B, H, scale=0.5)
    inputs["w_ih"], inputs["w_hh"] = uniform(G * H, I), uniform(G * H, H)
    inputs["b_ih"], inputs["b_hh"] = uniform(G * H), uniform(G * H)
    ups = {"dy": normal(T, B, H), "dh_n": normal(B, H)}
    if has_c(cell):
        ups["dc_n"] = normal(B, H)
    # Draw everything first, then drop: each option varies one thing, not the random stream.
    if not h0:
        inputs["h0"] = None
    if has_c(cell) and not c0:
        inputs["c0"] = None
    if bias in ("none", "hh"):
        inputs["b_ih"] = None
    if bias in ("none", "ih"):
        inputs["b_hh"] = None
    if upstream is not None:
        ups = {k: (v if k in upstream else None) for k, v in ups.items()}
    return Problem(cell, dtype, T, B, I, H, inputs, ups)


# ------------------------------------------------------------------------------ runners
def forward(module, problem, **kw):
    """(outputs dict, workspace) of ``module.<kind>_forward`` on the problem's inputs."""
    cell, a = problem.cell, problem.inputs
    kind = kind_of(cell)
    if kind == "rnn":
        kw.setdefault("nonlinearity", nonlinearity_of(cell))
    args = [a[name] for name in input_names(cell)]
    res = getattr(module, f"{kind}_forward")(*args, **kw)
    return dict(zip(output_names(cell), res[:-1])), res[-1]


def backward(module, problem, ws):
    """Gradients dict of ``module.<kind>_backward`` with the problem's upstream gradients."""
    cell = problem.cell
    ups = [problem.upstream[name] for name in upstream_names(cell)]
    res = getattr(module, f"{kind_of(cell)}_backward")(*ups, ws)
    return dict(zip(grad_names(cell), res))


def run(module, problem, **kw):
    """Forward + backward; one dict with every output and every gradient."""
    out, ws = forward(module, problem, **kw)
    out.update(backward(module, problem, ws))
    return out


def run_fastcells(problem, n_threads=1, **kw):
    return run(fastcells, problem, n_threads=n_threads, **kw)


def run_reference(problem):
    """The oracle: ``fastcells.reference`` in float64 on the problem's inputs.

    The reference takes both biases or neither; a bias given alone is paired with zeros (the
    same function) and the gradient of the absent one is reported as None, as fastcells does.
    """
    p = problem.astype(np.float64)
    b_ih, b_hh = p.inputs["b_ih"], p.inputs["b_hh"]
    if (b_ih is None) != (b_hh is None):
        zeros = np.zeros_like(b_ih if b_ih is not None else b_hh)
        p.inputs["b_ih"] = zeros if b_ih is None else b_ih
        p.inputs["b_hh"] = zeros if b_hh is None else b_hh
    if problem.cell == "rnn_relu":
        check_relu_margin(problem)
    res = run(reference, p)
    if b_ih is None:
        res["db_ih"] = None
    if b_hh is None:
        res["db_hh"] = None
    return res


def relu_preactivations(a, T, B, H):
    """Pre-activations (T, B, H) of a ReLU RNN in float64 for the inputs in dict ``a`` (x, h0,
    w_ih, w_hh, b_ih, b_hh; h0 and the biases may be None), or None when T or B is 0."""
    if T == 0 or B == 0:
        return None
    a = {k: (None if a[k] is None else np.asarray(a[k], np.float64))
         for k in ("x", "h0", "w_ih", "w_hh", "b_ih", "b_hh")}
    bias = sum(b for b in (a["b_ih"], a["b_hh"]) if b is not None)
    h = a["h0"] if a["h0"] is not None else np.zeros((B, H))
    pres = []
    for t in range(T):
        pres.append(a["x"][t] @ a["w_ih"].T + h @ a["w_hh"].T + bias)
        h = np.maximum(pres[-1], 0)
    return np.stack(pres)


def check_relu_margin(problem):
    """relu' jumps at 0: a pre-activation within rounding distance of 0 makes the kernel and
    the oracle legitimately disagree on the gradient mask. Fail loudly (choose another seed)
    instead of reporting a spurious kernel error."""
    p, dtype = problem, problem.dtype
    pre = relu_preactivations(p.inputs, p.T, p.B, p.H)
    if pre is None:
        return
    margin = np.abs(pre).min() / max(np.abs(pre).max(), 1e-300)
    assert margin > 100 * np.finfo(dtype).eps, (
        f"test problem has a relu pre-activation {margin:.2e} (relative) from 0; pick another "
        f"seed so the gradient mask is not decided by rounding")


def run_concurrently(fn, n):
    """fn(0), ..., fn(n - 1) in n threads released together by a barrier; their results in
    order. An exception in any thread fails the caller (with all of them listed)."""
    start = threading.Barrier(n)
    results, errors = [None] * n, []

    def worker(w):
        try:
            start.wait()
            results[w] = fn(w)
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    return results


# ------------------------------------------------------------------------------ comparisons
def misaligned(a, offset):
    """A copy of ``a`` starting ``offset`` bytes past a 64-byte boundary (kernels that read an
    input in place must give the same bits at every alignment)."""
    raw = np.empty(a.size + 64 // a.itemsize, a.dtype)
    skip = (offset - raw.ctypes.data) % 64 // a.itemsize
    out = raw[skip:skip + a.size].reshape(a.shape)
    out[...] = a
    assert out.ctypes.data % 64 == offset
    return out


def rel_error(a, b):
    """max |a - b| / max(max |b|, 1); 0 for empty arrays.

    The floor of 1 is the magnitude of the problems' data (inputs and upstream gradients are
    O(1)): a gradient that is a sum with heavy cancellation (a bias gradient with H = 1, say)
    can be far smaller than the terms it sums, whose rounding sets the error, so dividing by
    it alone would demand more than the arithmetic can give.
    """
    a64, b64 = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a64.size == 0:
        return 0.0
    return np.abs(a64 - b64).max() / max(np.abs(b64).max(), 1.0)


def compare(a, b, dtype, what="array"):
    """Assert a (a fastcells result of ``dtype``) matches b (the oracle) to the dtype's tolerance.

    Error is measured relative to max|b| over the whole array (not elementwise; see
    :func:`rel_error`): gradients contain entries that are sums with cancellation, whose
    elementwise relative error is meaningless. None must match None.
    """
    if b is None:
        assert a is None, f"{what}: expected None, got an array"
        return
    assert a is not None, f"{what}: expected an array, got None"
    dtype = np.dtype(dtype)
    assert isinstance(a, np.ndarray), f"{what}: expected ndarray, got {type(a).__name__}"
    assert a.dtype == dtype, f"{what}: dtype {a.dtype}, expected {dtype}"
    assert a.shape == b.shape, f"{what}: shape {a.shape}, expected {b.shape}"
    assert np.all(np.isfinite(a)), f"{what}: non-finite values"
    err = rel_error(a, b)
    assert err <= TOL[dtype], (
        f"{what}: max error {err:.3e} (relative to max(max|expected|, 1)) > {TOL[dtype]:.0e}")


def assert_results_close(got, expected, dtype):
    """compare() every entry; report all mismatching names at once."""
    assert set(got) == set(expected), f"result names {sorted(got)} != {sorted(expected)}"
    failures = []
    for name in expected:
        try:
            compare(got[name], expected[name], dtype, what=name)
        except AssertionError as e:
            failures.append(str(e))
    assert not failures, "\n".join(failures)


def assert_results_equal(got, expected):
    """Bitwise equality of every entry (same dtype, shape, bits; None matches None)."""
    assert set(got) == set(expected), f"result names {sorted(got)} != {sorted(expected)}"
    failures = []
    for name, b in expected.items():
        a = got[name]
        if a is None or b is None:
            if not (a is None and b is None):
                failures.append(f"{name}: {type(a).__name__} vs {type(b).__name__}")
            continue
        if a.dtype != b.dtype or a.shape != b.shape:
            failures.append(f"{name}: {a.dtype}{a.shape} vs {b.dtype}{b.shape}")
        elif _bits(a).tobytes() != _bits(b).tobytes():
            n = int(np.sum(a != b))
            failures.append(f"{name}: {n} of {a.size} elements differ, max |diff| "
                            f"{np.abs(a.astype(np.float64) - b).max():.3e}")
    assert not failures, "not bitwise identical:\n" + "\n".join(failures)


def _bits(a):
    return np.ascontiguousarray(a).view(np.uint8)


def shape_id(shape):
    return "T{}-B{}-I{}-H{}".format(*shape)


@pytest.fixture(params=DTYPES, ids=DTYPE_IDS)
def dtype(request):
    return np.dtype(request.param)


@pytest.fixture(params=CELLS)
def cell(request):
    return request.param


# ------------------------------------------------------------------------------ shared fixtures
@pytest.fixture(scope="module")
def torch_single_thread():
    """Keep torch's own thread pool out of the way of the kernels' OpenMP threads."""
    torch = pytest.importorskip("torch")
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(prev)


LAYER_BACKENDS = ("kernels", "reference")


@pytest.fixture(params=LAYER_BACKENDS)
def backend(request, monkeypatch):
    """Run the layer classes on the compiled kernels and on the NumPy reference."""
    from fastcells import _api, layers, reference
    monkeypatch.setattr(layers, "_F", {"kernels": _api, "reference": reference}[request.param])
    return request.param
