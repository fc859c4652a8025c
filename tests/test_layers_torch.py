"""The layer classes against PyTorch's nn.LSTM / nn.GRU / nn.RNN (skipped without torch).

Each test builds a torch module, moves it into fastcells with one
``load_state_dict({k: v.numpy() for k, v in torch_module.state_dict().items()})`` and compares
outputs, final states, dx, dh0/dc0 and every parameter gradient. Torch's gradients come from
autograd on the loss sum(y*dy) + sum(h_n*dh_n) [+ sum(c_n*dc_n)], whose gradients are exactly
what ``backward(dy, dh_n[, dc_n])`` returns. ``lengths`` go through
``pack_padded_sequence(..., enforce_sorted=False)`` and ``pad_packed_sequence(total_length=T)``.

Both sides compute in the same dtype. Tolerances, relative to max(max|expected|, 1) over each
array: float64 1e-10, float32 1e-4 (observed ~1e-6 in float32: two implementations' rounding
through up to three layers).
"""
from dataclasses import dataclass, replace

import numpy as np
import pytest

from fastcells import layers

torch = pytest.importorskip("torch")

pytestmark = [
    pytest.mark.torch,
    pytest.mark.filterwarnings("ignore:LSTM with projections is not supported with oneDNN"),
    pytest.mark.usefixtures("torch_single_thread"),
]

TOL = {np.dtype(np.float64): 1e-10, np.dtype(np.float32): 1e-4}




@dataclass(frozen=True)
class Config:
    cell: str = "lstm"          # lstm | gru | rnn_tanh | rnn_relu
    T: int = 5
    B: int = 3
    I: int = 4
    H: int = 6
    num_layers: int = 1
    bidirectional: bool = False
    batch_first: bool = False
    bias: bool = True
    proj_size: int = 0
    lengths: tuple = None
    hx: bool = True
    unbatched: bool = False
    dtype: str = "float64"
    seed: int = 0

    @property
    def kind(self):
        return self.cell.split("_")[0]

    @property
    def D(self):
        return 2 if self.bidirectional else 1

    @property
    def H_out(self):
        return self.proj_size or self.H


def torch_module(cfg):
    kw = dict(num_layers=cfg.num_layers, bias=cfg.bias, batch_first=cfg.batch_first,
              bidirectional=cfg.bidirectional)
    torch.manual_seed(cfg.seed)
    if cfg.kind == "lstm":
        m = torch.nn.LSTM(cfg.I, cfg.H, proj_size=cfg.proj_size, **kw)
    elif cfg.kind == "gru":
        m = torch.nn.GRU(cfg.I, cfg.H, **kw)
    else:
        m = torch.nn.RNN(cfg.I, cfg.H, nonlinearity=cfg.cell.split("_")[1], **kw)
    return m.to(torch.float64 if cfg.dtype == "float64" else torch.float32)


def fastcells_module(cfg):
    kw = dict(num_layers=cfg.num_layers, bias=cfg.bias, batch_first=cfg.batch_first,
              bidirectional=cfg.bidirectional, dtype=cfg.dtype, seed=cfg.seed)
    if cfg.kind == "lstm":
        m = layers.LSTM(cfg.I, cfg.H, proj_size=cfg.proj_size, **kw)
    elif cfg.kind == "gru":
        m = layers.GRU(cfg.I, cfg.H, **kw)
    else:
        m = layers.RNN(cfg.I, cfg.H, nonlinearity=cfg.cell.split("_")[1], **kw)
    m.n_threads = 1
    return m


def make_data(cfg):
    rng = np.random.default_rng(100 + cfg.seed)
    dt = np.dtype(cfg.dtype)
    LD = cfg.num_layers * cfg.D

    def normal(*shape, scale=1.0):
        return (scale * rng.standard_normal(shape)).astype(dt)

    if cfg.unbatched:
        x_shape, h_shape, c_shape = (cfg.T, cfg.I), (LD, cfg.H_out), (LD, cfg.H)
    else:
        x_shape = (cfg.B, cfg.T, cfg.I) if cfg.batch_first else (cfg.T, cfg.B, cfg.I)
        h_shape, c_shape = (LD, cfg.B, cfg.H_out), (LD, cfg.B, cfg.H)
    x = normal(*x_shape)
    data = dict(x=x, h0=normal(*h_shape, scale=0.5), c0=normal(*c_shape, scale=0.5),
                dy=normal(*x_shape[:-1], cfg.D * cfg.H_out), dh_n=normal(*h_shape),
                dc_n=normal(*c_shape))
    if not cfg.hx:
        data["h0"] = data["c0"] = None
    if cfg.kind != "lstm":
        data["c0"] = data["dc_n"] = None
    data["lengths"] = None if cfg.lengths is None else np.array(cfg.lengths)
    return data


def run_torch(cfg, tm, d):
    def leaf(a):
        return None if a is None else torch.from_numpy(a.copy()).requires_grad_(True)

    x, h0, c0 = leaf(d["x"]), leaf(d["h0"]), leaf(d["c0"])
    hx = (h0, c0) if (cfg.kind == "lstm" and h0 is not None) else h0
    inp = x
    if d["lengths"] is not None:
        inp = torch.nn.utils.rnn.pack_padded_sequence(
            x, torch.from_numpy(d["lengths"]), batch_first=cfg.batch_first,
            enforce_sorted=False)
    y, state = tm(inp, hx)
    if d["lengths"] is not None:
        y, _ = torch.nn.utils.rnn.pad_packed_sequence(y, batch_first=cfg.batch_first,
                                                      total_length=cfg.T)
    h_n, c_n = state if cfg.kind == "lstm" else (state, None)
    loss = (y * torch.from_numpy(d["dy"])).sum() + (h_n * torch.from_numpy(d["dh_n"])).sum()
    if c_n is not None:
        loss = loss + (c_n * torch.from_numpy(d["dc_n"])).sum()
    loss.backward()

    def npy(t):
        return t.detach().numpy()

    res = dict(y=npy(y), h_n=npy(h_n), dx=npy(x.grad))
    if h0 is not None:
        res["dh0"] = npy(h0.grad)
    if c_n is not None:
        res["c_n"] = npy(c_n)
        if c0 is not None:
            res["dc0"] = npy(c0.grad)
    for name, p in tm.named_parameters():
        res["grad:" + name] = npy(p.grad)
    return res


def run_fastcells(cfg, m, d):
    if cfg.kind == "lstm":
        hx = None if d["h0"] is None else (d["h0"], d["c0"])
        y, (h_n, c_n) = m(d["x"], hx, lengths=d["lengths"])
        dx, (dh0, dc0) = m.backward(d["dy"], (d["dh_n"], d["dc_n"]))
        res = dict(y=y, h_n=h_n, c_n=c_n, dx=dx, dh0=dh0, dc0=dc0)
    else:
        y, h_n = m(d["x"], d["h0"], lengths=d["lengths"])
        dx, dh0 = m.backward(d["dy"], d["dh_n"])
        res = dict(y=y, h_n=h_n, dx=dx, dh0=dh0)
    if d["h0"] is None:  # torch has no gradient for an omitted hx
        res.pop("dh0")
        res.pop("dc0", None)
    res.update({"grad:" + k: g for k, g in m.grads.items()})
    return res


def rel_error(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.size == 0:
        return 0.0
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1.0))


def errors_vs_torch(cfg):
    """{name: relative error} of fastcells (current backend) against torch for one config."""
    tm = torch_module(cfg)
    m = fastcells_module(cfg)
    m.load_state_dict({k: v.numpy() for k, v in tm.state_dict().items()})
    d = make_data(cfg)
    got, expected = run_fastcells(cfg, m, d), run_torch(cfg, tm, d)
    assert set(got) == set(expected), f"{sorted(got)} != {sorted(expected)}"
    errs = {}
    for name, e in expected.items():
        g = got[name]
        assert g.shape == e.shape, f"{name}: shape {g.shape}, torch {e.shape}"
        assert g.dtype == np.dtype(cfg.dtype), f"{name}: dtype {g.dtype}"
        errs[name] = rel_error(g, e)
    return errs


def check(cfg):
    errs = errors_vs_torch(cfg)
    tol = TOL[np.dtype(cfg.dtype)]
    bad = {k: f"{v:.2e}" for k, v in errs.items() if not v <= tol}
    assert not bad, f"{cfg}: relative errors above {tol:.0e}: {bad}"


# ------------------------------------------------------------------------------ one at a time
VARIATIONS = {
    "base": {},
    "3_layers": dict(num_layers=3),
    "bidirectional": dict(bidirectional=True),
    "batch_first": dict(batch_first=True),
    "lengths": dict(lengths=(5, 2, 4)),
    "lengths_bidirectional": dict(lengths=(1, 5, 3), bidirectional=True),
    "no_bias": dict(bias=False),
    "no_hx": dict(hx=False),
    "unbatched": dict(unbatched=True, bidirectional=True),
    "float32": dict(dtype="float32"),
}
CELLS = ["lstm", "gru", "rnn_tanh", "rnn_relu"]


@pytest.mark.parametrize("variation", list(VARIATIONS))
@pytest.mark.parametrize("cell", CELLS)
def test_one_variation(backend, cell, variation):
    check(replace(Config(cell=cell), **VARIATIONS[variation]))


@pytest.mark.parametrize("variation", ["base", "lengths_bidir_2_layers", "float32_batch_first"])
def test_lstm_projection(backend, variation):
    extra = {"base": {},
             "lengths_bidir_2_layers": dict(lengths=(5, 2, 4), bidirectional=True, num_layers=2),
             "float32_batch_first": dict(dtype="float32", batch_first=True, num_layers=2)}
    check(Config(cell="lstm", proj_size=3, **extra[variation]))


# ------------------------------------------------------------------------------ random sweep
def random_configs(n, seed=2024):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        cell = ["lstm", "lstm", "gru", "rnn_tanh", "rnn_relu"][rng.integers(5)]
        T, B, I, H = (int(v) for v in (rng.integers(1, 8), rng.integers(1, 6),
                                       rng.integers(1, 9), rng.integers(1, 10)))
        proj = int(rng.integers(1, H)) if cell == "lstm" and H > 1 and rng.random() < 0.5 else 0
        unbatched = bool(rng.random() < 0.15)
        lengths = None
        if not unbatched and rng.random() < 0.6:
            lengths = tuple(int(v) for v in rng.integers(1, T + 1, B))  # torch rejects 0
        out.append(Config(cell=cell, T=T, B=B, I=I, H=H, num_layers=int(rng.integers(1, 4)),
                          bidirectional=bool(rng.random() < 0.5),
                          batch_first=bool(rng.random() < 0.5), bias=bool(rng.random() < 0.75),
                          proj_size=proj, lengths=lengths, hx=bool(rng.random() < 0.8),
                          unbatched=unbatched, dtype=["float32", "float64"][rng.integers(2)],
                          seed=i))
    return out


SWEEP = random_configs(30)


@pytest.mark.parametrize("cfg", SWEEP, ids=[f"cfg{i}" for i in range(len(SWEEP))])
def test_random_configuration(backend, cfg):
    check(cfg)


# ------------------------------------------------------------------------------ parameters
@pytest.mark.parametrize("cell, kw", [
    ("lstm", dict(num_layers=3, bidirectional=True, proj_size=2)),
    ("lstm", dict(num_layers=2, bias=False)),
    ("gru", dict(num_layers=2, bidirectional=True)),
    ("rnn_relu", dict(num_layers=3, bias=False, bidirectional=True)),
])
def test_parameter_names_order_and_shapes_match_torch(cell, kw):
    cfg = Config(cell=cell, I=5, H=7, **kw)
    tm, m = torch_module(cfg), fastcells_module(cfg)
    assert [(n, tuple(p.shape)) for n, p in tm.named_parameters()] == \
        [(n, p.shape) for n, p in m.named_parameters()]
    assert list(tm.state_dict()) == list(m.state_dict())
    assert repr(m).replace(", dtype=float64", "").replace("nonlinearity='relu', ", "") == \
        repr(tm).replace("nonlinearity=relu, ", "")


def test_load_state_dict_takes_torch_tensors_directly():
    cfg = Config(cell="gru", num_layers=2, bidirectional=True, dtype="float32")
    tm = torch_module(cfg).double()  # float64 tensors into a float32 module: cast
    m = fastcells_module(cfg)
    m.load_state_dict(tm.state_dict())
    for name, t in tm.state_dict().items():
        np.testing.assert_array_equal(getattr(m, name), t.numpy().astype(np.float32))


def test_initialisation_matches_torch_distribution():
    cfg = Config(cell="lstm", I=16, H=32, num_layers=2)
    tm, m = torch_module(cfg), fastcells_module(cfg)
    t = np.concatenate([p.detach().numpy().ravel() for p in tm.parameters()])
    f = np.concatenate([p.ravel() for p in m.parameters()])
    bound = 1 / np.sqrt(cfg.H)
    assert np.abs(t).max() <= bound and np.abs(f).max() <= bound
    assert abs(f.std() - t.std()) < 0.05 * bound and abs(f.mean()) < 0.05 * bound
