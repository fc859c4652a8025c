"""The embedding example (examples/embed) builds against the installed fastcells and is right.

A copy of examples/embed is built once per session in a temporary directory, as a user would
build it (``python setup.py build_ext --inplace``, include paths from fastcells.get_include(),
which points into site-packages on a regular install). Then:

* fc_embed_c (C extension, LSTM through fastcells.h) and fc_embed_cy (Cython, GRU through
  fastcells/capi.pxd) match the NumPy reference within the kernel tests' tolerances and give
  the Python API's bits at the same n_threads;
* a failing C API call raises with fc_strerror()'s message, a mis-sized buffer ValueError;
* run.py runs end to end.

Skipped when no C compiler, Cython, setuptools or Python headers are available.
"""
import importlib
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from conftest import (assert_results_close, assert_results_equal, input_names, make_problem,
                      run)

import fastcells
from fastcells import capi, reference

EMBED = Path(__file__).parent.parent / "examples" / "embed"
DTYPES = [pytest.param(np.float32, id="f32"), pytest.param(np.float64, id="f64")]
BASE = (6, 5, 7, 11)          # (T, B, I, H): uneven split over 2 threads, no power of 2
# large enough that 2 threads are used (hidden-unit split), where thread plans could diverge
THREADED = (8, 8, 32, 256)


def build_prerequisites_missing():
    if not (shutil.which("cc") or shutil.which("gcc")):
        return "no C compiler (cc/gcc) on PATH"
    for module in ("Cython", "setuptools"):
        if importlib.util.find_spec(module) is None:
            return f"{module} is not installed"
    if not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")):
        return "Python.h not found (no Python development headers)"
    return None


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """(dir, c, cy): the example built in a fresh copy, and its two modules imported."""
    missing = build_prerequisites_missing()
    if missing:
        pytest.skip(f"cannot build the embedding example: {missing}")
    d = tmp_path_factory.mktemp("embed") / "embed"
    # a build left in the source tree must not stand in for this one
    shutil.copytree(EMBED, d, ignore=shutil.ignore_patterns(
        "build", "*.so", "*.pyd", "fc_embed_cy.c", "__pycache__"))
    # what is checked is that it builds and what it computes, not its speed: -O0 builds the
    # ~40k lines Cython generates several times faster
    env = dict(os.environ, CFLAGS=(os.environ.get("CFLAGS", "") + " -O0 -g0").strip())
    res = subprocess.run([sys.executable, "setup.py", "build_ext", "--inplace"], cwd=d, env=env,
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, (f"build failed\n--- stdout\n{res.stdout[-3000:]}"
                                 f"\n--- stderr\n{res.stderr[-3000:]}")
    sys.path.insert(0, str(d))
    try:
        c = importlib.import_module("fc_embed_c")
        cy = importlib.import_module("fc_embed_cy")
    finally:
        sys.path.remove(str(d))
    for m in (c, cy):
        assert Path(m.__file__).resolve().parent == d.resolve()
    return SimpleNamespace(dir=d, c=c, cy=cy)


def needs_same_thread_plan(n_threads):
    """Without OpenBLAS's per-thread setter the C API runs single-threaded (it changes no
    process-wide BLAS setting) while the Python API limits BLAS globally and uses n_threads:
    the thread plans, and so possibly the bits, differ."""
    if n_threads > 1 and not fastcells.blas_info().get("has_set_num_threads_local"):
        pytest.skip("SciPy's BLAS has no per-thread setter: C API runs single-threaded")


# ------------------------------------------------------------------------------ get_include
def test_get_include():
    dirs = fastcells.get_include()
    assert isinstance(dirs, list) and len(dirs) == 2
    assert all(isinstance(d, str) and os.path.isdir(d) for d in dirs)
    header_dir, pxd_root = dirs
    assert os.path.isfile(os.path.join(header_dir, "fastcells.h"))
    assert os.path.isfile(os.path.join(pxd_root, "fastcells", "capi.pxd"))
    # the pxd root is the directory the imported package lives in
    assert os.path.samefile(os.path.join(pxd_root, "fastcells"),
                            os.path.dirname(fastcells.__file__))


def test_docs_prototypes_match_header():
    """docs/embedding.md writes the float32 prototypes out; they must be the header's."""
    doc = Path(__file__).parent.parent / "docs" / "embedding.md"
    text = doc.read_text(encoding="utf-8")
    block = text[text.index("## Functions"):]
    block = block[block.index("```c"):block.index("```", block.index("```c") + 4)]
    block = re.sub(r"/\*.*?\*/", " ", block, flags=re.S)
    documented = {}
    for ret, name, args in re.findall(r"(int64_t|int|const char \*)\s*(fc_\w+)\((.*?)\);",
                                      block, re.S):
        params = [" ".join(a.replace("*", " * ").split()).rpartition(" ") for a in args.split(",")]
        documented[name] = (ret.replace(" *", "*"),
                            [(t.replace(" *", "*"), n) for t, _, n in params])
    sigs = capi.signatures()
    expected = {n: s for n, s in sigs.items() if not n.endswith("_f64")}
    assert documented == expected


# ------------------------------------------------------------------------------ C extension
LSTM_OUTPUTS = {"y": "TBH", "h_n": "BH", "c_n": "BH", "dx": "TBI", "dh0": "BH", "dc0": "BH",
                "dw_ih": "GI", "dw_hh": "GH", "db_ih": "G", "db_hh": "G"}


def lstm_outputs(T, B, I, H, dtype, bias=True):
    size = {"T": T, "B": B, "I": I, "H": H, "G": 4 * H}
    out = {k: np.full([size[c] for c in dims], np.nan, dtype) for k, dims in LSTM_OUTPUTS.items()}
    if not bias:
        out["db_ih"] = out["db_hh"] = None
    return out


def c_lstm_train(c, p, lengths=None, n_threads=1):
    """fc_embed_c.lstm_train on a conftest problem; its outputs keyed like conftest.run's."""
    out = lstm_outputs(p.T, p.B, p.I, p.H, p.dtype, bias=p.inputs["b_ih"] is not None)
    c.lstm_train(**p.inputs, **p.upstream, **out, T=p.T, B=p.B, I=p.I, H=p.H, lengths=lengths,
                 n_threads=n_threads)
    return out


@pytest.mark.parametrize("case", ["base", "no-optional", "lengths", "threaded"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_c_lstm_train(built, dtype, case):
    shape, n_threads = (THREADED, 2) if case == "threaded" else (BASE, 1)
    needs_same_thread_plan(n_threads)
    if case == "no-optional":
        p = make_problem("lstm", dtype, *shape, seed=1, bias="none", h0=False, c0=False,
                         upstream=("dy",))
    else:
        p = make_problem("lstm", dtype, *shape, seed=1)
    lengths = np.array([6, 0, 3, 1, 6], np.int64) if case == "lengths" else None
    got = c_lstm_train(built.c, p, lengths, n_threads)
    kw = {} if lengths is None else {"lengths": lengths}
    assert_results_close(got, run(reference, p.astype(np.float64), **kw), dtype)
    assert_results_equal(got, run(fastcells, p, n_threads=n_threads, **kw))


@pytest.mark.parametrize("dtype", DTYPES)
def test_c_lstm_forward_inference(built, dtype):
    p = make_problem("lstm", dtype, *BASE, seed=2)
    T, B, I, H = BASE
    out = {k: np.full(s, np.nan, dtype) for k, s in
           (("y", (T, B, H)), ("h_n", (B, H)), ("c_n", (B, H)))}
    built.c.lstm_forward(**p.inputs, **out, T=T, B=B, I=I, H=H)
    y, h_n, c_n, ws = fastcells.lstm_forward(*[p.inputs[k] for k in input_names("lstm")],
                                             training=False, n_threads=1)
    assert ws is None
    assert_results_equal(out, {"y": y, "h_n": h_n, "c_n": c_n})


def test_c_bad_status_raises_with_strerror(built):
    p = make_problem("lstm", np.float32, *BASE)
    T, B, I, H = BASE
    out = lstm_outputs(T, B, I, H, np.float32)
    kw = dict(p.inputs, **p.upstream, **out, T=T, B=B, I=I, H=H)
    with pytest.raises(built.c.FastcellsError, match="fc_lstm_forward_f32") as e:
        built.c.lstm_train(**kw, n_threads=-1)
    assert capi.strerror(capi.FC_ERR_ARG) in str(e.value)
    with pytest.raises(built.c.FastcellsError) as e:
        built.c.lstm_train(**kw, lengths=np.array([1, 2, 3, 4, T + 1]))
    assert capi.strerror(capi.FC_ERR_ARG) in str(e.value)
    assert isinstance(e.value, RuntimeError)
    # H = 0: all buffers have the (zero) sizes the dims ask for; the library refuses the size
    empty = {k: np.zeros(0 if k not in ("x", "dx") else (T, B, I), np.float32)
             for k in list(p.inputs) + list(p.upstream) + list(out)}
    with pytest.raises(built.c.FastcellsError) as e:
        built.c.lstm_train(**empty, T=T, B=B, I=I, H=0)
    assert capi.strerror(capi.FC_ERR_SIZE) in str(e.value)


def test_c_bad_buffers(built):
    T, B, I, H = BASE
    p = make_problem("lstm", np.float32, *BASE)
    out = lstm_outputs(T, B, I, H, np.float32)
    kw = dict(p.inputs, **p.upstream, **out, T=T, B=B, I=I, H=H)
    for name, bad in [("x", np.zeros((T, B, I + 1), np.float32)),
                      ("w_hh", np.zeros((4 * H, H - 1), np.float32)),
                      ("dw_ih", np.zeros(3, np.float32)),
                      ("c_n", np.zeros(0, np.float32))]:
        with pytest.raises(ValueError, match=f"^{name} must have"):
            built.c.lstm_train(**dict(kw, **{name: bad}))
    with pytest.raises(ValueError, match="lengths"):
        built.c.lstm_train(**kw, lengths=np.full(B + 1, T, np.int64))
    with pytest.raises(ValueError, match=">= 0"):
        built.c.lstm_train(**dict(kw, T=-1))
    with pytest.raises(ValueError, match="more elements than fit"):
        built.c.lstm_train(**dict(kw, T=2**62))
    with pytest.raises(TypeError, match="w_ih is float64 but x is float32"):
        built.c.lstm_train(**dict(kw, w_ih=p.inputs["w_ih"].astype(np.float64)))
    with pytest.raises(TypeError, match="float32 or float64"):
        built.c.lstm_train(**dict(kw, x=p.inputs["x"].astype(np.float16)))
    with pytest.raises(TypeError, match="int64"):
        built.c.lstm_train(**kw, lengths=np.full(B, T, np.int32))
    read_only = out["y"].copy()
    read_only.flags.writeable = False
    with pytest.raises((ValueError, BufferError)):
        built.c.lstm_train(**dict(kw, y=read_only))
    with pytest.raises((ValueError, BufferError)):           # not C-contiguous
        built.c.lstm_train(**dict(kw, x=np.zeros((T, B, 2 * I), np.float32)[:, :, ::2]))
    # nothing above reached the kernels
    assert all(np.isnan(a).all() for a in out.values())


def test_c_time_calls(built):
    for training in (False, True):
        us = built.c.time_calls(50, 1, 1, 32, 32, training)
        assert isinstance(us, float) and 0 < us < 1e5
    with pytest.raises(ValueError):
        built.c.time_calls(0, 1, 1, 32, 32, False)
    with pytest.raises(built.c.FastcellsError, match="bad argument"):
        built.c.time_calls(5, 1, 1, 32, 32, True, n_threads=-1)


def test_compiled_api_version(built):
    assert built.c.API_VERSION == capi.API_VERSION


# ------------------------------------------------------------------------------ Cython
GRU_OUTPUTS = ("y", "h_n", "dx", "dh0", "dw_ih", "dw_hh", "db_ih", "db_hh")


@pytest.mark.parametrize("case", ["base", "no-optional", "threaded"])
@pytest.mark.parametrize("reset_after", [True, False], ids=["reset_after", "reset_before"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_cython_gru_train(built, dtype, reset_after, case):
    shape, n_threads = (THREADED, 2) if case == "threaded" else (BASE, 1)
    needs_same_thread_plan(n_threads)
    if case == "no-optional":
        p = make_problem("gru", dtype, *shape, seed=3, bias="none", h0=False, upstream=("dh_n",))
    else:
        p = make_problem("gru", dtype, *shape, seed=3)
    a, u = p.inputs, p.upstream
    got = dict(zip(GRU_OUTPUTS, built.cy.gru_train(
        a["x"], a["h0"], a["w_ih"], a["w_hh"], a["b_ih"], a["b_hh"], u["dy"], u["dh_n"],
        reset_after=reset_after, n_threads=n_threads)))
    assert_results_close(got, run(reference, p.astype(np.float64), reset_after=reset_after),
                         dtype)
    assert_results_equal(got, run(fastcells, p, reset_after=reset_after, n_threads=n_threads))


def test_cython_errors(built):
    p = make_problem("gru", np.float64, *BASE)
    a, u = p.inputs, p.upstream
    args = [a["x"], a["h0"], a["w_ih"], a["w_hh"], a["b_ih"], a["b_hh"], u["dy"], u["dh_n"]]
    with pytest.raises(built.cy.FastcellsError) as e:
        built.cy.gru_train(*args, n_threads=-1)
    assert capi.strerror(capi.FC_ERR_ARG) in str(e.value) and e.value.status == capi.FC_ERR_ARG
    bad = list(args)
    bad[1] = np.zeros((BASE[1], BASE[3] + 1))
    with pytest.raises(ValueError, match="h0 must have shape"):
        built.cy.gru_train(*bad)


# ------------------------------------------------------------------------------ run.py
def test_run_py_quick(built):
    res = subprocess.run([sys.executable, "run.py", "--quick"], cwd=built.dir,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, f"--- stdout\n{res.stdout[-3000:]}\n--- stderr\n{res.stderr}"
    assert "building" not in res.stdout          # used the modules built by the fixture
    assert "all results match" in res.stdout
    assert "C API from C (fc_embed_c.time_calls)" in res.stdout
