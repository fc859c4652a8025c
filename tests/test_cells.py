"""Single-step cells (LSTMCell, GRUCell, RNNCell): vs PyTorch's cells (when installed), vs the
layers (a Python loop of cell steps, back-propagated step by step, is the layer's BPTT), and
their argument handling.

Tolerances relative to max(max|expected|, 1): float64 1e-10, float32 1e-4.
"""
import numpy as np
import pytest

from fastcells import _api, layers, reference

TOL = {np.dtype(np.float64): 1e-10, np.dtype(np.float32): 1e-4}
BACKENDS = {"kernels": _api, "reference": reference}
CELLS = {
    "lstm": (layers.LSTMCell, {}),
    "gru": (layers.GRUCell, {}),
    "rnn_tanh": (layers.RNNCell, dict(nonlinearity="tanh")),
    "rnn_relu": (layers.RNNCell, dict(nonlinearity="relu")),
}


@pytest.fixture(params=list(BACKENDS))
def backend(request, monkeypatch):
    monkeypatch.setattr(layers, "_F", BACKENDS[request.param])
    return request.param


def rel_error(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1.0)) if a.size else 0.0


def make_cell(name, I, H, bias=True, dtype=np.float64, seed=0, **kw):
    cls, extra = CELLS[name]
    cell = cls(I, H, bias=bias, dtype=dtype, seed=seed, **extra, **kw)
    cell.n_threads = 1
    return cell


def step(cell, x, h, c=None):
    """One forward step; returns (h', c' or None)."""
    if isinstance(cell, layers.LSTMCell):
        return cell(x, None if h is None else (h, c))
    return cell(x, h), None


def back(cell, dh, dc=None):
    """One backward step; returns (dx, dh, dc or None)."""
    if isinstance(cell, layers.LSTMCell):
        dx, (dh0, dc0) = cell.backward(dh, dc)
        return dx, dh0, dc0
    dx, dh0 = cell.backward(dh)
    return dx, dh0, None


# ------------------------------------------------------------------------------ vs torch
@pytest.fixture(scope="module")
def torch():
    torch = pytest.importorskip("torch")
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    yield torch
    torch.set_num_threads(prev)


def torch_cell(torch, name, I, H, bias, dtype):
    if name == "lstm":
        m = torch.nn.LSTMCell(I, H, bias=bias)
    elif name == "gru":
        m = torch.nn.GRUCell(I, H, bias=bias)
    else:
        m = torch.nn.RNNCell(I, H, bias=bias, nonlinearity=name.split("_")[1])
    return m.to(torch.float64 if dtype == np.float64 else torch.float32)


def compare_with_torch(torch, name, B, I, H, bias, dtype, batched=True, hx=True):
    tm = torch_cell(torch, name, I, H, bias, dtype)
    cell = make_cell(name, I, H, bias=bias, dtype=dtype)
    cell.load_state_dict({k: v.numpy() for k, v in tm.state_dict().items()})
    assert list(cell.state_dict()) == list(tm.state_dict())
    rng = np.random.default_rng(B * 100 + I * 10 + H)
    lead = (B,) if batched else ()
    x = rng.standard_normal(lead + (I,)).astype(dtype)
    h = (0.5 * rng.standard_normal(lead + (H,))).astype(dtype) if hx else None
    c = (0.5 * rng.standard_normal(lead + (H,))).astype(dtype) if hx else None
    dh, dc = (rng.standard_normal(lead + (H,)).astype(dtype) for _ in range(2))
    lstm = name == "lstm"

    h1, c1 = step(cell, x, h, c if lstm else None)
    dx, dh0, dc0 = back(cell, dh, dc if lstm else None)

    def leaf(a):
        return None if a is None else torch.from_numpy(a.copy()).requires_grad_(True)

    tx, th, tc = leaf(x), leaf(h), leaf(c)
    if lstm:
        th1, tc1 = tm(tx, None if th is None else (th, tc))
        loss = (th1 * torch.from_numpy(dh)).sum() + (tc1 * torch.from_numpy(dc)).sum()
    else:
        th1, tc1 = tm(tx, th), None
        loss = (th1 * torch.from_numpy(dh)).sum()
    loss.backward()
    pairs = dict(h1=(h1, th1), dx=(dx, tx.grad))
    if hx:
        pairs["dh0"] = (dh0, th.grad)
    if lstm:
        pairs["c1"] = (c1, tc1)
        if hx:
            pairs["dc0"] = (dc0, tc.grad)
    for n, p in tm.named_parameters():
        pairs["grad:" + n] = (cell.grads[n], p.grad)
    errs = {}
    for k, (a, t) in pairs.items():
        t = t.detach().numpy()
        assert a.shape == t.shape and a.dtype == dtype, f"{k}: {a.dtype}{a.shape} vs {t.shape}"
        errs[k] = rel_error(a, t)
    return errs


@pytest.mark.torch
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("name", list(CELLS))
def test_matches_torch_cell(torch, backend, name, bias, dtype):
    for B, I, H, batched, hx in [(4, 5, 7, True, True), (1, 1, 1, True, True),
                                 (6, 13, 3, True, False), (1, 3, 5, False, True),
                                 (1, 4, 2, False, False)]:
        errs = compare_with_torch(torch, name, B, I, H, bias, dtype, batched, hx)
        bad = {k: v for k, v in errs.items() if not v <= TOL[np.dtype(dtype)]}
        assert not bad, f"B={B} I={I} H={H} batched={batched} hx={hx}: {bad}"


# ------------------------------------------------------------------------------ vs the layers
LAYER_OF = {
    "lstm": lambda I, H, **kw: layers.LSTM(I, H, **kw),
    "gru": lambda I, H, **kw: layers.GRU(I, H, **kw),
    "gru_classic": lambda I, H, **kw: layers.GRU(I, H, reset_after=False, **kw),
    "rnn_tanh": lambda I, H, **kw: layers.RNN(I, H, nonlinearity="tanh", **kw),
    "rnn_relu": lambda I, H, **kw: layers.RNN(I, H, nonlinearity="relu", **kw),
}


def cell_for(name, I, H, **kw):
    if name == "gru_classic":
        cell = layers.GRUCell(I, H, reset_after=False, **kw)
        cell.n_threads = 1
        return cell
    return make_cell(name, I, H, **kw)


@pytest.mark.parametrize("name", list(LAYER_OF))
def test_python_loop_of_steps_equals_the_layer(backend, name):
    """Steps saved on a stack, back-propagated in reverse order: BPTT of the layer."""
    T, B, I, H = 6, 3, 4, 5
    layer = LAYER_OF[name](I, H, dtype=np.float64, seed=3)
    layer.n_threads = 1
    cell = cell_for(name, I, H, dtype=np.float64, seed=4)
    cell.load_state_dict({k[:-3]: v for k, v in layer.state_dict().items()})  # drop "_l0"
    rng = np.random.default_rng(0)
    x = rng.standard_normal((T, B, I))
    h0, c0 = 0.5 * rng.standard_normal((2, 1, B, H))
    dy, dh_n, dc_n = rng.standard_normal((T, B, H)), *rng.standard_normal((2, 1, B, H))
    lstm = name == "lstm"
    if lstm:
        y, (h_n, c_n) = layer(x, (h0, c0))
        dx, (dh0, dc0) = layer.backward(dy, (dh_n, dc_n))
    else:
        y, h_n = layer(x, h0)
        dx, dh0 = layer.backward(dy, dh_n)

    h, c = h0[0], c0[0]
    ys = []
    for t in range(T):
        h, c = step(cell, x[t], h, c if lstm else None)
        ys.append(h)
    assert cell.n_saved == T
    assert rel_error(np.stack(ys), y) <= 1e-12 and rel_error(h, h_n[0]) <= 1e-12
    dh, dc = dh_n[0], dc_n[0] if lstm else None
    dxs = [None] * T
    for t in reversed(range(T)):
        dxs[t], dh, dc = back(cell, dh + dy[t], dc)
    assert cell.n_saved == 0
    assert rel_error(np.stack(dxs), dx) <= 1e-12 and rel_error(dh, dh0[0]) <= 1e-12
    if lstm:
        assert rel_error(c, c_n[0]) <= 1e-12 and rel_error(dc, dc0[0]) <= 1e-12
    for name_, g in layer.grads.items():
        assert rel_error(cell.grads[name_[:-3]], g) <= 1e-12, name_


def test_classic_gru_cell_differs_from_pytorch_gru_cell(backend):
    a = cell_for("gru", 3, 4, dtype=np.float64, seed=0)
    b = cell_for("gru_classic", 3, 4, dtype=np.float64, seed=0)
    x, h = np.ones((2, 3)), np.full((2, 4), 0.5)
    assert b.reset_after is False and "reset_after=False" in repr(b)
    assert rel_error(a(x, h), b(x, h)) > 1e-3


# ------------------------------------------------------------------------------ state, modes
def test_parameters_and_init(backend):
    cell = layers.LSTMCell(5, 8, seed=0)
    assert [(n, p.shape) for n, p in cell.named_parameters()] == [
        ("weight_ih", (32, 5)), ("weight_hh", (32, 8)), ("bias_ih", (32,)), ("bias_hh", (32,))]
    assert all(np.abs(p).max() <= 1 / np.sqrt(8) and p.dtype == np.float32
               for p in cell.parameters())
    assert [n for n, _ in layers.RNNCell(2, 3, bias=False).named_parameters()] == \
        ["weight_ih", "weight_hh"]
    assert repr(layers.RNNCell(2, 3, nonlinearity="relu")) == "RNNCell(2, 3, nonlinearity='relu')"


def test_eval_saves_nothing_and_backward_needs_a_step(backend):
    cell = make_cell("gru", 3, 4)
    x = np.ones((2, 3))
    with pytest.raises(RuntimeError, match="preceding forward"):
        cell.backward(np.ones((2, 4)))
    cell.eval()
    h_eval = cell(x)
    assert cell.n_saved == 0
    with pytest.raises(RuntimeError, match="preceding forward"):
        cell.backward(np.ones((2, 4)))
    cell.train()
    h_train = cell(x)
    assert rel_error(h_eval, h_train) <= 1e-12 and cell.n_saved == 1
    cell.clear_saved()
    assert cell.n_saved == 0


def test_gradients_accumulate_and_zero_grad(backend):
    cell = make_cell("lstm", 3, 4)
    x = np.ones((2, 3))
    for _ in range(2):
        cell(x)
        cell.backward(np.ones((2, 4)), np.ones((2, 4)))
    twice = {k: g.copy() for k, g in cell.grads.items()}
    cell.zero_grad()
    cell(x)
    cell.backward((np.ones((2, 4)), np.ones((2, 4))))  # a tuple (dh, dc) works too
    for k, g in cell.grads.items():
        np.testing.assert_allclose(twice[k], 2 * g, rtol=1e-14, atol=1e-15)


@pytest.mark.parametrize("call, exc, match", [
    (lambda c: c(np.ones((2, 4))), ValueError, r"input has 4 features .* input_size is 3"),
    (lambda c: c(np.ones((2, 2, 3))), ValueError, r"input must be 2-D \(B, input_size\)"),
    (lambda c: c(np.ones((2, 3), np.float32)), TypeError, r"input has dtype float32"),
    (lambda c: c(np.ones((2, 3)), np.ones((2, 5))), ValueError, r"hx must be a tuple \(h, c\)"),
    (lambda c: c(np.ones((2, 3)), (np.ones((3, 5)), np.ones((2, 5)))), ValueError,
     r"hx\[0\] \(h\) must have shape \(2, 5\)"),
    (lambda c: c(np.ones(3), (np.ones(5), np.ones((1, 5)))), ValueError,
     r"hx\[1\] \(c\) must have shape \(5,\)"),
])
def test_bad_lstm_cell_arguments(call, exc, match):
    cell = make_cell("lstm", 3, 5)
    with pytest.raises(exc, match=match):
        call(cell)


def test_bad_cell_backward_arguments():
    cell = make_cell("rnn_tanh", 3, 5)
    cell(np.ones((2, 3)))
    with pytest.raises(ValueError, match=r"dh must have shape \(2, 5\)"):
        cell.backward(np.ones(5))
    with pytest.raises(ValueError, match=r"hx must have shape \(2, 5\)"):
        cell(np.ones((2, 3)), np.ones((3, 5)))
    cell.backward(np.ones((2, 5)))  # the failed calls changed nothing
    with pytest.raises(ValueError, match="nonlinearity"):
        layers.RNNCell(3, 5, nonlinearity="gelu")
