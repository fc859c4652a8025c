"""The compiled kernels against PyTorch (one-layer nn.LSTM / nn.GRU / nn.RNN), when installed.

Weights are copied into the torch module; the loss sum(y*dy) + sum(h_n*dh_n) [+ sum(c_n*dc_n)]
makes torch's autograd produce exactly the gradients fastcells' backward returns. Both sides
compute in the same dtype, so the float32 tolerance covers the rounding of two implementations
(observed ~1e-6 against 1e-5).
"""
import numpy as np
import pytest

from conftest import (
    assert_results_close,
    check_relu_margin,
    has_c,
    kind_of,
    make_problem,
    nonlinearity_of,
    run_fastcells,
    shape_id,
)

torch = pytest.importorskip("torch")

pytestmark = [pytest.mark.torch, pytest.mark.usefixtures("torch_single_thread")]

SHAPES = [
    (1, 1, 1, 1),
    (5, 1, 3, 5),
    (7, 13, 5, 17),
    (3, 5, 16, 33),
    (20, 32, 64, 96),
]
BASE = (6, 5, 7, 11)


def torch_module(cell, I, H, bias):
    kind = kind_of(cell)
    if kind == "lstm":
        return torch.nn.LSTM(I, H, bias=bias)
    if kind == "gru":
        return torch.nn.GRU(I, H, bias=bias)
    return torch.nn.RNN(I, H, nonlinearity=nonlinearity_of(cell), bias=bias)


def run_torch(p):
    """Forward + backward through torch; same result names as conftest.run."""
    tdtype = torch.float64 if p.dtype == np.float64 else torch.float32
    a, u = p.inputs, p.upstream
    if p.cell == "rnn_relu":
        check_relu_margin(p)
    bias = a["b_ih"] is not None
    assert bias == (a["b_hh"] is not None), "torch has both biases or neither"
    mod = torch_module(p.cell, p.I, p.H, bias).to(tdtype)
    with torch.no_grad():
        mod.weight_ih_l0.copy_(torch.from_numpy(a["w_ih"]))
        mod.weight_hh_l0.copy_(torch.from_numpy(a["w_hh"]))
        if bias:
            mod.bias_ih_l0.copy_(torch.from_numpy(a["b_ih"]))
            mod.bias_hh_l0.copy_(torch.from_numpy(a["b_hh"]))

    def leaf(arr, shape):
        t = torch.zeros(shape, dtype=tdtype) if arr is None else torch.from_numpy(arr.copy())
        return t.reshape(shape).requires_grad_(True)

    x = leaf(a["x"], (p.T, p.B, p.I))
    h0 = leaf(a["h0"], (1, p.B, p.H))
    if has_c(p.cell):
        c0 = leaf(a["c0"], (1, p.B, p.H))
        y, (h_n, c_n) = mod(x, (h0, c0))
    else:
        y, h_n = mod(x, h0)
    loss = (y * torch.from_numpy(u["dy"])).sum() + (h_n[0] * torch.from_numpy(u["dh_n"])).sum()
    if has_c(p.cell):
        loss = loss + (c_n[0] * torch.from_numpy(u["dc_n"])).sum()
    loss.backward()

    np_ = lambda t: t.detach().numpy().astype(np.float64)  # noqa: E731
    res = {"y": np_(y), "h_n": np_(h_n[0]), "dx": np_(x.grad), "dh0": np_(h0.grad[0]),
           "dw_ih": np_(mod.weight_ih_l0.grad), "dw_hh": np_(mod.weight_hh_l0.grad),
           "db_ih": np_(mod.bias_ih_l0.grad) if bias else None,
           "db_hh": np_(mod.bias_hh_l0.grad) if bias else None}
    if has_c(p.cell):
        res.update(c_n=np_(c_n[0]), dc0=np_(c0.grad[0]))
    return res


@pytest.mark.parametrize("n_threads", [1, 2])
@pytest.mark.parametrize("shape", SHAPES, ids=shape_id)
def test_matches_torch(cell, dtype, shape, n_threads):
    p = make_problem(cell, dtype, *shape, seed=1)
    assert_results_close(run_fastcells(p, n_threads), run_torch(p), dtype)


def test_matches_torch_without_bias(cell, dtype):
    p = make_problem(cell, dtype, *BASE, bias="none")
    assert_results_close(run_fastcells(p), run_torch(p), dtype)


def test_matches_torch_without_initial_state(cell, dtype):
    """h0 (and c0) None in fastcells = torch's zero initial state; dh0 is still returned."""
    p = make_problem(cell, dtype, *BASE, h0=False, c0=False)
    assert_results_close(run_fastcells(p), run_torch(p), dtype)

