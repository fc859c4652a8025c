"""Bad inputs raise clear exceptions that name the offending argument.

TypeError for dtypes and argument types, ValueError for shapes and values, RuntimeError for a
consumed workspace. A failed call must not consume the workspace.
"""
import re

import numpy as np
import pytest

from conftest import (
    CELLS,
    assert_results_equal,
    backward,
    forward,
    input_names,
    kind_of,
    make_problem,
    n_gates,
    run_fastcells,
    upstream_names,
)

import fastcells
from fastcells import reference

T, B, I, H = 3, 4, 5, 6


def problem(cell, dtype=np.float64):
    return make_problem(cell, dtype, T, B, I, H)


def named(arg):
    """Regex matching ``arg`` as a whole word (so 'x' does not match 'expected')."""
    return rf"(?<![A-Za-z0-9_]){re.escape(arg)}(?![A-Za-z0-9_])"


def _cells_args(names_of):
    return [(c, a) for c in CELLS for a in names_of(c)]


def _ids(pairs):
    return [f"{c}-{a}" for c, a in pairs]


# ------------------------------------------------------------------------------ dtypes
BAD_DTYPES = {
    "int64": np.int64,
    "int32": np.int32,
    "bool": np.bool_,
    "float16": np.float16,
    "longdouble": np.longdouble,
    "complex128": np.complex128,
    "complex64": np.complex64,
    "object": object,
}


@pytest.mark.parametrize("bad", BAD_DTYPES)
def test_bad_dtype_of_x(cell, bad):
    p = problem(cell)
    p.inputs["x"] = p.inputs["x"].astype(BAD_DTYPES[bad])
    with pytest.raises(TypeError, match=named("x")):
        forward(fastcells, p)


@pytest.mark.parametrize("bad", ["int64", "float16", "complex128", "object"])
@pytest.mark.parametrize("arg", ["w_ih", "w_hh", "h0", "b_ih"])
def test_bad_dtype_of_other_args(arg, bad):
    p = problem("lstm")
    p.inputs[arg] = p.inputs[arg].astype(BAD_DTYPES[bad])
    with pytest.raises(TypeError, match=named(arg)):
        forward(fastcells, p)


def test_integer_lists_are_rejected(cell):
    p = problem(cell)
    p.inputs["x"] = np.ones((T, B, I), np.int64).tolist()
    with pytest.raises(TypeError, match=named("x")):
        forward(fastcells, p)


_MIXED = _cells_args(lambda c: [a for a in input_names(c) if a != "x"])


@pytest.mark.parametrize("cell, arg", _MIXED, ids=_ids(_MIXED))
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_mixed_float_dtypes(cell, arg, dtype):
    """One argument of the other float type: TypeError naming it, never a silent cast."""
    other = np.float64 if dtype == np.float32 else np.float32
    p = problem(cell, dtype)
    p.inputs[arg] = p.inputs[arg].astype(other)
    with pytest.raises(TypeError, match=named(arg)):
        forward(fastcells, p)


_UPSTREAM = _cells_args(upstream_names)


@pytest.mark.parametrize("cell, arg", _UPSTREAM, ids=_ids(_UPSTREAM))
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_upstream_of_other_dtype(cell, arg, dtype):
    other = np.float64 if dtype == np.float32 else np.float32
    p = problem(cell, dtype)
    _, ws = forward(fastcells, p)
    p.upstream[arg] = p.upstream[arg].astype(other)
    with pytest.raises(TypeError, match=named(arg)):
        backward(fastcells, p, ws)


@pytest.mark.parametrize("cell, arg", _UPSTREAM, ids=_ids(_UPSTREAM))
def test_upstream_of_bad_dtype(cell, arg):
    p = problem(cell)
    _, ws = forward(fastcells, p)
    p.upstream[arg] = p.upstream[arg].astype(np.int64)
    with pytest.raises(TypeError, match=named(arg)):
        backward(fastcells, p, ws)


# ------------------------------------------------------------------------------ shapes
def _bad_shapes(cell):
    """(argument, bad value shape) pairs; every other argument is valid."""
    G = n_gates(cell)
    cases = [("x", (T, B)), ("x", (T, B, I, 1)), ("x", ()),
             ("h0", (B + 1, H)), ("h0", (B, H + 1)), ("h0", (B * H,)), ("h0", (1, B, H)),
             ("w_ih", (G * H + 1, I)), ("w_ih", (G * H, I + 1)), ("w_ih", (G * H * I,)),
             ("w_hh", (G * H + 1, H)), ("w_hh", (G * H, H + 1)), ("w_hh", (G * H * H,)),
             ("w_hh", (G * H, H, 1)),
             ("b_ih", (G * H + 1,)), ("b_ih", (1, G * H)), ("b_ih", ()),
             ("b_hh", (G * H - 1,)), ("b_hh", (G * H, 1))]
    if kind_of(cell) == "lstm":
        cases += [("c0", (B + 1, H)), ("c0", (B, H + 1)), ("c0", (B * H,))]
    return cases


_SHAPES = [(c, a, s) for c in CELLS for a, s in _bad_shapes(c)]


def _shape_ids(cases):
    return [f"{c}-{a}-{'x'.join(map(str, s)) or 'scalar'}" for c, a, s in cases]


@pytest.mark.parametrize("cell, arg, shape", _SHAPES, ids=_shape_ids(_SHAPES))
def test_bad_input_shape(cell, arg, shape):
    p = problem(cell)
    p.inputs[arg] = np.zeros(shape)
    with pytest.raises(ValueError, match=named(arg)):
        forward(fastcells, p)


def _bad_upstream_shapes(cell):
    cases = [("dy", (T, B, H + 1)), ("dy", (T + 1, B, H)), ("dy", (T, B * H)),
             ("dh_n", (B, H + 1)), ("dh_n", (B + 1, H)), ("dh_n", (B * H,))]
    if kind_of(cell) == "lstm":
        cases += [("dc_n", (B, H + 1)), ("dc_n", (B + 1, H)), ("dc_n", (1, B, H))]
    return cases


_UP_SHAPES = [(c, a, s) for c in CELLS for a, s in _bad_upstream_shapes(c)]


@pytest.mark.parametrize("cell, arg, shape", _UP_SHAPES, ids=_shape_ids(_UP_SHAPES))
def test_bad_upstream_shape(cell, arg, shape):
    p = problem(cell)
    _, ws = forward(fastcells, p)
    p.upstream[arg] = np.zeros(shape)
    with pytest.raises(ValueError, match=named(arg)):
        backward(fastcells, p, ws)


# ------------------------------------------------------------------------------ options
@pytest.mark.parametrize("bad", ["sigmoid", "Tanh", "", None])
def test_bad_nonlinearity(bad):
    p = problem("rnn_tanh")
    with pytest.raises(ValueError, match="nonlinearity"):
        forward(fastcells, p, nonlinearity=bad)


@pytest.mark.parametrize("n_threads", [0, -1])
def test_n_threads_not_positive(cell, n_threads):
    with pytest.raises(ValueError, match="n_threads"):
        forward(fastcells, problem(cell), n_threads=n_threads)


@pytest.mark.parametrize("n_threads", [1.5, 2.0, "2", True, [2]], ids=repr)
def test_n_threads_not_an_int(cell, n_threads):
    with pytest.raises(TypeError, match="n_threads"):
        forward(fastcells, problem(cell), n_threads=n_threads)


@pytest.mark.parametrize("n_threads", [2**31, 2**63])
def test_n_threads_beyond_c_int(n_threads):
    """An int >= 1 too large for a C int: either run (threads are capped by the batch anyway)
    or raise ValueError naming n_threads -- not an OverflowError from the Cython boundary."""
    p = problem("lstm")
    try:
        forward(fastcells, p, n_threads=n_threads)
    except ValueError as e:
        assert re.search(named("n_threads"), str(e)), str(e)


def test_n_threads_numpy_int_accepted(cell):
    p = problem(cell)
    assert_results_equal(run_fastcells(p, n_threads=np.int64(2)), run_fastcells(p, n_threads=2))


# ------------------------------------------------------------------------------ workspace
def test_backward_without_workspace(cell):
    p = problem(cell)
    with pytest.raises(TypeError, match="ws"):
        backward(fastcells, p, None)


def test_backward_after_inference_forward(cell):
    p = problem(cell)
    _, ws = forward(fastcells, p, training=False)
    with pytest.raises(TypeError, match="training=False"):
        backward(fastcells, p, ws)


def test_backward_with_reference_cache(cell):
    p = problem(cell)
    _, cache = forward(reference, p)
    with pytest.raises(TypeError, match="ws"):
        backward(fastcells, p, cache)


_OTHER = [(c, o) for c in CELLS for o in ("lstm", "gru", "rnn_tanh") if kind_of(o) != kind_of(c)]


@pytest.mark.parametrize("cell, other", _OTHER, ids=[f"{c}-ws_from_{o}" for c, o in _OTHER])
def test_backward_with_workspace_of_other_cell(cell, other):
    _, ws = forward(fastcells, problem(other))
    with pytest.raises(ValueError, match="ws"):
        backward(fastcells, problem(cell), ws)


def test_backward_twice(cell):
    p = problem(cell)
    _, ws = forward(fastcells, p)
    backward(fastcells, p, ws)
    with pytest.raises(RuntimeError, match="already"):
        backward(fastcells, p, ws)


@pytest.mark.parametrize("failure", ["dtype", "shape", "other_cell"])
def test_failed_backward_does_not_consume_workspace(cell, failure):
    p = problem(cell)
    expected = run_fastcells(p)
    out, ws = forward(fastcells, p, n_threads=1)
    bad = p.copy()
    if failure == "dtype":
        bad.upstream["dy"] = bad.upstream["dy"].astype(np.float32)
        err = TypeError
    elif failure == "shape":
        bad.upstream["dh_n"] = np.zeros((B, H + 1))
        err = ValueError
    else:
        bad = problem("gru" if kind_of(cell) != "gru" else "lstm")
        err = ValueError
    with pytest.raises(err):
        backward(fastcells, bad, ws)
    out.update(backward(fastcells, p, ws))
    assert_results_equal(out, expected)


# ------------------------------------------------------------------------------ lists
def test_nested_lists_match_arrays(cell):
    """float64 nested Python lists are accepted for every argument and give the same bits."""
    p = problem(cell)
    lists = p.map(np.ndarray.tolist)
    assert_results_equal(run_fastcells(lists), run_fastcells(p))


def test_lists_with_float32_arrays_rejected(cell):
    """A list is float64: mixing it with float32 arrays is a dtype mismatch, not a cast."""
    p = problem(cell, np.float32)
    p.inputs["x"] = p.inputs["x"].tolist()
    with pytest.raises(TypeError, match=named("x")):
        forward(fastcells, p)
