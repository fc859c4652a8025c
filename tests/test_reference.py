"""Checks of the NumPy reference (``fastcells.reference``) itself.

The reference is the oracle for every other test, so it is checked against things that do not
share its code: central finite differences in float64 (every gradient), a naive per-sequence,
per-step loop written straight from the equations (forward, including ``lengths``), and PyTorch
when it is installed (forward and backward, float64 and float32).
"""

from dataclasses import dataclass, replace

import numpy as np
import pytest

from fastcells import reference as ref


# --------------------------------------------------------------------------------------------
# Cells and cases
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Cell:
    name: str
    kind: str                 # "lstm" | "gru" | "rnn"
    n_gates: int
    reset_after: bool = True  # GRU only
    nonlinearity: str = "tanh"  # RNN only
    proj: bool = False        # LSTM only

    @property
    def has_c(self):
        return self.kind == "lstm"

    @property
    def in_torch(self):
        return not (self.kind == "gru" and not self.reset_after)


CELLS = [
    Cell("lstm", "lstm", 4),
    Cell("lstm_proj", "lstm", 4, proj=True),
    Cell("gru", "gru", 3, reset_after=True),
    Cell("gru_classic", "gru", 3, reset_after=False),
    Cell("rnn_tanh", "rnn", 1, nonlinearity="tanh"),
    Cell("rnn_relu", "rnn", 1, nonlinearity="relu"),
]
CELL_IDS = [c.name for c in CELLS]


@dataclass(frozen=True)
class Case:
    T: int = 3
    B: int = 2
    I: int = 5
    H: int = 7
    bias: bool = True
    h0: bool = True                # False: pass h0 = c0 = None
    lengths: tuple = None
    no_upstream: tuple = ()        # outputs whose upstream gradient is passed as None
    seed: int = 0

    @property
    def P(self):
        """Projection size used for the lstm_proj cell."""
        return max(1, self.H // 2)


# Finite-difference cases: each varies one thing from "base" (or a stated few).
FD_CASES = {
    "base": Case(),
    "ones": Case(T=1, B=1, I=1, H=1),
    "other_primes": Case(T=5, B=3, I=2, H=3, seed=1),
    "no_bias": Case(bias=False),
    "h0_none": Case(h0=False),
    "dy_none": Case(no_upstream=("y",)),
    "dh_n_none": Case(no_upstream=("h_n",)),
    "dc_n_none": Case(no_upstream=("c_n",)),
    "final_state_only": Case(no_upstream=("y", "c_n")),
    "lengths": Case(T=4, B=4, I=3, H=5, lengths=(4, 0, 2, 1), seed=2),
    "lengths_h0_none_no_bias": Case(T=4, B=4, I=3, H=5, lengths=(1, 4, 0, 3), h0=False,
                                    bias=False, seed=3),
}


def _fd_params():
    for cell in CELLS:
        for case_name, case in FD_CASES.items():
            if "c_n" in case.no_upstream and case.no_upstream == ("c_n",) and not cell.has_c:
                continue  # identical to "base" for cells without a cell state
            yield pytest.param(cell, case, id=f"{cell.name}-{case_name}")


def grad_names(cell):
    """Names of the differentiable inputs, in the order the backward function returns them."""
    names = ["x", "h0"] + (["c0"] if cell.has_c else []) + ["w_ih", "w_hh", "b_ih", "b_hh"]
    return names + (["w_hr"] if cell.proj else [])


def output_names(cell):
    return ["y", "h_n"] + (["c_n"] if cell.has_c else [])


def make_args(cell, case, dtype=np.float64):
    """Random inputs for one forward call, keyed like grad_names (None where the case says so)."""
    rng = np.random.default_rng(case.seed)
    T, B, I, H, G = case.T, case.B, case.I, case.H, cell.n_gates
    P = case.P if cell.proj else H

    def normal(*shape, scale=0.6):
        return (scale * rng.standard_normal(shape)).astype(dtype)

    args = {
        "x": normal(T, B, I, scale=1.0),
        "h0": normal(B, P) if case.h0 else None,
        "c0": normal(B, H) if case.h0 and cell.has_c else None,
        "w_ih": normal(G * H, I),
        "w_hh": normal(G * H, P),
        "b_ih": normal(G * H, scale=0.3) if case.bias else None,
        "b_hh": normal(G * H, scale=0.3) if case.bias else None,
        "w_hr": normal(P, H) if cell.proj else None,
    }
    return {k: v for k, v in args.items() if k in grad_names(cell)}


def make_upstream(cell, case, outputs, dtype=np.float64):
    """Random upstream gradients dL/d(output) (None where the case says so)."""
    rng = np.random.default_rng(case.seed + 1000)
    return {k: None if k in case.no_upstream else rng.standard_normal(outputs[k].shape).astype(dtype)
            for k in output_names(cell)}


def lengths_array(case):
    return None if case.lengths is None else np.array(case.lengths, dtype=np.int64)


# --------------------------------------------------------------------------------------------
# Uniform drivers over the three cells
# --------------------------------------------------------------------------------------------


def forward(cell, args, **kw):
    """Run the reference forward; returns ({output name: array}, cache)."""
    if cell.kind == "lstm":
        y, h_n, c_n, cache = ref.lstm_forward(args["x"], args["h0"], args["c0"], args["w_ih"],
                                              args["w_hh"], args["b_ih"], args["b_hh"],
                                              w_hr=args.get("w_hr"), **kw)
        return {"y": y, "h_n": h_n, "c_n": c_n}, cache
    common = (args["x"], args["h0"], args["w_ih"], args["w_hh"], args["b_ih"], args["b_hh"])
    if cell.kind == "gru":
        y, h_n, cache = ref.gru_forward(*common, reset_after=cell.reset_after, **kw)
    else:
        y, h_n, cache = ref.rnn_forward(*common, nonlinearity=cell.nonlinearity, **kw)
    return {"y": y, "h_n": h_n}, cache


def backward(cell, upstream, cache):
    """Run the reference backward; returns {input name: gradient}."""
    if cell.kind == "lstm":
        grads = ref.lstm_backward(upstream["y"], upstream["h_n"], upstream["c_n"], cache)
    elif cell.kind == "gru":
        grads = ref.gru_backward(upstream["y"], upstream["h_n"], cache)
    else:
        grads = ref.rnn_backward(upstream["y"], upstream["h_n"], cache)
    names = grad_names(cell)
    assert len(grads) == len(names)
    return dict(zip(names, grads))


def loss(outputs, upstream):
    """Scalar L = Σ_k Σ upstream_k ⊙ output_k, so dL/d(output_k) = upstream_k."""
    return sum(float(np.sum(upstream[k] * outputs[k])) for k in upstream if upstream[k] is not None)


def with_zero_states(cell, args, case):
    """Same arguments with None initial states replaced by explicit zeros."""
    args = dict(args)
    P = case.P if cell.proj else case.H
    if args["h0"] is None:
        args["h0"] = np.zeros((case.B, P), args["x"].dtype)
    if cell.has_c and args["c0"] is None:
        args["c0"] = np.zeros((case.B, case.H), args["x"].dtype)
    return args


def numerical_grad(cell, args, upstream, name, lengths, eps=1e-6):
    """Central finite difference of L with respect to args[name], element by element."""
    args = {k: None if v is None else v.copy() for k, v in args.items()}
    a = args[name]
    grad = np.empty_like(a)
    for idx in np.ndindex(a.shape):
        orig = a[idx]
        a[idx] = orig + eps
        up = loss(forward(cell, args, lengths=lengths, training=False)[0], upstream)
        a[idx] = orig - eps
        down = loss(forward(cell, args, lengths=lengths, training=False)[0], upstream)
        a[idx] = orig
        grad[idx] = (up - down) / (2 * eps)
    return grad


# --------------------------------------------------------------------------------------------
# Naive oracle: one sequence and one step at a time, straight from the equations
# --------------------------------------------------------------------------------------------


def _sigmoid(a):
    return 1.0 / (1.0 + np.exp(-a))


def naive_forward(cell, args, lengths=None):
    """Returns ({output name: array}, list of RNN pre-activations). No hoisting, no masks."""
    x = args["x"]
    T, B, _ = x.shape
    w_ih, w_hh = args["w_ih"], args["w_hh"]
    H = w_ih.shape[0] // cell.n_gates
    P = w_hh.shape[1]
    zeros = np.zeros(cell.n_gates * H, x.dtype)
    b_ih = zeros if args["b_ih"] is None else args["b_ih"]
    b_hh = zeros if args["b_hh"] is None else args["b_hh"]
    lengths = [T] * B if lengths is None else lengths
    y = np.zeros((T, B, P), x.dtype)
    h_n = np.zeros((B, P), x.dtype)
    c_n = np.zeros((B, H), x.dtype)
    preacts = []
    for b in range(B):
        h = np.zeros(P, x.dtype) if args["h0"] is None else args["h0"][b]
        c = None
        if cell.has_c:
            c = np.zeros(H, x.dtype) if args["c0"] is None else args["c0"][b]
        for t in range(lengths[b]):
            gx = w_ih @ x[t, b] + b_ih
            if cell.kind == "lstm":
                i, f, g, o = np.split(gx + w_hh @ h + b_hh, 4)
                c = _sigmoid(f) * c + _sigmoid(i) * np.tanh(g)
                h = _sigmoid(o) * np.tanh(c)
                if cell.proj:
                    h = args["w_hr"] @ h
            elif cell.kind == "gru":
                w_hr, w_hz, w_hn = np.split(w_hh, 3)
                b_hr, b_hz, b_hn = np.split(b_hh, 3)
                x_r, x_z, x_n = np.split(gx, 3)
                r = _sigmoid(x_r + w_hr @ h + b_hr)
                z = _sigmoid(x_z + w_hz @ h + b_hz)
                if cell.reset_after:
                    n = np.tanh(x_n + r * (w_hn @ h + b_hn))
                else:
                    n = np.tanh(x_n + w_hn @ (r * h) + b_hn)
                h = (1 - z) * n + z * h
            else:
                a = gx + w_hh @ h + b_hh
                preacts.append(a)
                h = np.tanh(a) if cell.nonlinearity == "tanh" else np.maximum(a, 0)
            y[t, b] = h
        h_n[b] = h
        if cell.has_c:
            c_n[b] = c
    outputs = {"y": y, "h_n": h_n}
    if cell.has_c:
        outputs["c_n"] = c_n
    return outputs, preacts


def make_valid_case(cell, case, margin=1e-3):
    """For ReLU, move to the next seed until no pre-activation is within `margin` of the kink,
    so finite differences never straddle it. Other cells are smooth: the case is returned as is."""
    if cell.nonlinearity != "relu" or cell.kind != "rnn":
        return case
    for seed in range(case.seed, case.seed + 50):
        candidate = replace(case, seed=seed)
        _, preacts = naive_forward(cell, with_zero_states(cell, make_args(cell, candidate), candidate),
                                   list(candidate.lengths) if candidate.lengths else None)
        if not preacts or np.min(np.abs(np.concatenate(preacts))) > margin:
            return candidate
    raise AssertionError("no seed keeps ReLU pre-activations away from 0")


def assert_close(actual, expected, rtol, atol, what):
    assert actual is not None and expected is not None, what
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol, err_msg=what)


# --------------------------------------------------------------------------------------------
# Gradients vs finite differences (float64)
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cell, case", list(_fd_params()))
def test_gradients_match_finite_differences(cell, case):
    case = make_valid_case(cell, case)
    args = make_args(cell, case)
    lengths = lengths_array(case)
    outputs, cache = forward(cell, args, lengths=lengths)
    upstream = make_upstream(cell, case, outputs)
    grads = backward(cell, upstream, cache)

    fd_args = with_zero_states(cell, args, case)  # dh0/dc0 are defined even for h0=None
    for name in grad_names(cell):
        if fd_args[name] is None:  # no bias
            assert grads[name] is None, f"{name} gradient should be None without bias"
            continue
        assert grads[name].dtype == np.float64, name
        expected = numerical_grad(cell, fd_args, upstream, name, lengths)
        assert_close(grads[name], expected, rtol=1e-6, atol=1e-8, what=f"d{name}")


# --------------------------------------------------------------------------------------------
# Forward vs the naive loop (independent of PyTorch), lengths semantics
# --------------------------------------------------------------------------------------------


FORWARD_CASES = {
    "base": Case(),
    "no_bias_h0_none": Case(bias=False, h0=False),
    "lengths": Case(T=5, B=4, I=3, H=4, lengths=(5, 0, 3, 1), seed=4),
}


@pytest.mark.parametrize("case", FORWARD_CASES.values(), ids=FORWARD_CASES.keys())
@pytest.mark.parametrize("cell", CELLS, ids=CELL_IDS)
def test_forward_matches_naive_loop(cell, case):
    args = make_args(cell, case)
    outputs, _ = forward(cell, args, lengths=lengths_array(case))
    expected, _ = naive_forward(cell, args, case.lengths)
    for name in output_names(cell):
        assert outputs[name].dtype == np.float64
        assert_close(outputs[name], expected[name], rtol=1e-12, atol=1e-14, what=name)


@pytest.mark.parametrize("cell", CELLS, ids=CELL_IDS)
def test_lengths_freeze_state_and_zero_padded_outputs(cell):
    case = Case(T=4, B=3, I=3, H=5, lengths=(4, 0, 2))
    args = make_args(cell, case)
    outputs, _ = forward(cell, args, lengths=lengths_array(case))
    y = outputs["y"]
    assert np.all(y[2:, 2] == 0) and np.all(y[:, 1] == 0)
    if cell.nonlinearity != "relu" or cell.kind != "rnn":  # ReLU outputs real zeros too
        assert np.all(y[:2, 2] != 0) and np.all(y[:, 0] != 0)
    # A sequence's final state is its output at its last valid step; length 0 keeps h0 / c0.
    np.testing.assert_array_equal(outputs["h_n"][0], y[3, 0])
    np.testing.assert_array_equal(outputs["h_n"][2], y[1, 2])
    np.testing.assert_array_equal(outputs["h_n"][1], args["h0"][1])
    if cell.has_c:
        np.testing.assert_array_equal(outputs["c_n"][1], args["c0"][1])


@pytest.mark.parametrize("cell", CELLS, ids=CELL_IDS)
def test_full_lengths_equal_no_lengths(cell):
    case = Case(T=3, B=3, I=2, H=4)
    args = make_args(cell, case)
    out_a, cache_a = forward(cell, args)
    out_b, cache_b = forward(cell, args, lengths=np.full(case.B, case.T))
    upstream = make_upstream(cell, case, out_a)
    for name in output_names(cell):
        np.testing.assert_array_equal(out_a[name], out_b[name])
    grads_a, grads_b = backward(cell, upstream, cache_a), backward(cell, upstream, cache_b)
    for name in grad_names(cell):
        np.testing.assert_array_equal(grads_a[name], grads_b[name], err_msg=name)


@pytest.mark.parametrize("cell", CELLS, ids=CELL_IDS)
def test_empty_sequence(cell):
    case = Case(T=0, B=2, I=3, H=4)
    args = make_args(cell, case)
    outputs, cache = forward(cell, args)
    assert outputs["y"].shape == (0, 2, args["w_hh"].shape[1])
    np.testing.assert_array_equal(outputs["h_n"], args["h0"])
    assert outputs["h_n"] is not args["h0"] and not np.shares_memory(outputs["h_n"], args["h0"])
    upstream = make_upstream(cell, case, outputs)
    grads = backward(cell, upstream, cache)
    np.testing.assert_array_equal(grads["h0"], upstream["h_n"])
    if cell.has_c:
        np.testing.assert_array_equal(grads["c0"], upstream["c_n"])
    for name in ("w_ih", "w_hh", "b_ih", "b_hh"):
        assert grads[name].shape == args[name].shape and not grads[name].any(), name


# --------------------------------------------------------------------------------------------
# dtype, inference mode, no side effects
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("lengths", [None, (3, 1, 0)], ids=["full", "lengths"])
@pytest.mark.parametrize("cell", CELLS, ids=CELL_IDS)
def test_float32_matches_float64(cell, lengths):
    case = make_valid_case(cell, Case(T=3, B=3, I=5, H=7, lengths=lengths, seed=5))
    args64 = make_args(cell, case)
    args32 = {k: None if v is None else v.astype(np.float32) for k, v in args64.items()}
    out64, cache64 = forward(cell, args64, lengths=lengths_array(case))
    out32, cache32 = forward(cell, args32, lengths=lengths_array(case))
    up64 = make_upstream(cell, case, out64)
    up32 = {k: v.astype(np.float32) for k, v in up64.items()}
    grads64, grads32 = backward(cell, up64, cache64), backward(cell, up32, cache32)
    for name in output_names(cell):
        assert out32[name].dtype == np.float32, name
        assert_close(out32[name], out64[name], rtol=1e-4, atol=1e-5, what=name)
    for name in grad_names(cell):
        assert grads32[name].dtype == np.float32, name
        assert_close(grads32[name], grads64[name], rtol=1e-4, atol=1e-5, what=f"d{name}")


@pytest.mark.parametrize("cell", CELLS, ids=CELL_IDS)
def test_inference_mode_matches_training(cell):
    case = Case(lengths=(3, 2))
    args = make_args(cell, case)
    out_train, cache = forward(cell, args, lengths=lengths_array(case), training=True)
    out_infer, no_cache = forward(cell, args, lengths=lengths_array(case), training=False,
                                  n_threads=3)
    assert cache is not None and no_cache is None
    for name in output_names(cell):
        np.testing.assert_array_equal(out_infer[name], out_train[name], err_msg=name)
    with pytest.raises(TypeError, match="training=False"):
        backward(cell, make_upstream(cell, case, out_train), None)


@pytest.mark.parametrize("cell", CELLS, ids=CELL_IDS)
def test_inputs_not_modified(cell):
    case = Case(T=4, B=3, I=3, H=5, lengths=(4, 0, 2))
    args = make_args(cell, case)
    lengths = lengths_array(case)
    before = {k: None if v is None else v.copy() for k, v in args.items()}
    outputs, cache = forward(cell, args, lengths=lengths)
    upstream = make_upstream(cell, case, outputs)
    upstream_before = {k: v.copy() for k, v in upstream.items()}
    backward(cell, upstream, cache)
    for name, value in before.items():
        np.testing.assert_array_equal(args[name], value, err_msg=name)
    for name, value in upstream_before.items():
        np.testing.assert_array_equal(upstream[name], value, err_msg=f"d{name}")
    np.testing.assert_array_equal(lengths, case.lengths)


@pytest.mark.parametrize("cell", CELLS, ids=CELL_IDS)
def test_outputs_do_not_alias_cache(cell):
    """Returned arrays share memory with neither the inputs nor the cache; scribbling over them
    does not change the gradients."""
    case = Case()
    args = make_args(cell, case)
    outputs, cache = forward(cell, args)
    upstream = make_upstream(cell, case, outputs)
    expected = backward(cell, upstream, cache)
    outputs, cache = forward(cell, args)
    held = [v for v in list(cache.values()) + list(args.values()) if isinstance(v, np.ndarray)]
    for name, value in outputs.items():
        assert not any(np.shares_memory(value, other) for other in held), name
    for value in outputs.values():
        value[...] = 123.0
    grads = backward(cell, upstream, cache)
    for name in grad_names(cell):
        np.testing.assert_array_equal(grads[name], expected[name], err_msg=name)


# --------------------------------------------------------------------------------------------
# Argument checking
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cell", CELLS, ids=CELL_IDS)
def test_bad_arguments_are_rejected(cell):
    case = Case()
    args = make_args(cell, case)

    def call(**changes):
        forward(cell, {**args, **changes})

    with pytest.raises(TypeError, match="w_hh"):
        call(w_hh=args["w_hh"].astype(np.float32))
    with pytest.raises(TypeError, match="x"):
        call(x=args["x"].tolist())
    with pytest.raises(TypeError, match="x"):
        call(x=args["x"].astype(np.int64))
    with pytest.raises(ValueError, match="h0"):
        call(h0=args["h0"][:1])
    with pytest.raises(ValueError, match="w_ih"):
        call(w_ih=args["w_ih"][:, :-1])
    with pytest.raises(ValueError, match="w_hh"):
        call(w_hh=args["w_hh"][:-1])
    with pytest.raises(ValueError, match="b_hh"):
        call(b_hh=args["b_hh"][:-1])
    with pytest.raises(ValueError, match="both"):
        call(b_hh=None)
    if cell.has_c:
        with pytest.raises(ValueError, match="c0"):
            call(c0=args["c0"][:, :-1])
    with pytest.raises(ValueError, match="lengths"):
        forward(cell, args, lengths=np.array([1, case.T + 1]))
    with pytest.raises(ValueError, match="lengths"):
        forward(cell, args, lengths=np.array([1, -1]))
    with pytest.raises(ValueError, match="lengths"):
        forward(cell, args, lengths=np.array([1, 2, 3]))
    with pytest.raises(TypeError, match="lengths"):
        forward(cell, args, lengths=np.array([1.0, 2.0]))

    outputs, cache = forward(cell, args)
    upstream = make_upstream(cell, case, outputs)
    with pytest.raises(ValueError, match="dy"):
        backward(cell, {**upstream, "y": upstream["y"][:-1]}, cache)
    with pytest.raises(TypeError, match="dh_n"):
        backward(cell, {**upstream, "h_n": upstream["h_n"].astype(np.float32)}, cache)
    other = CELLS[2] if cell.kind == "lstm" else CELLS[0]
    _, other_cache = forward(other, make_args(other, case))
    with pytest.raises(TypeError, match="cache"):
        backward(cell, upstream, other_cache)


def test_bad_rnn_nonlinearity():
    args = make_args(CELLS[4], Case())
    with pytest.raises(ValueError, match="nonlinearity"):
        ref.rnn_forward(args["x"], args["h0"], args["w_ih"], args["w_hh"], nonlinearity="sigmoid")


# --------------------------------------------------------------------------------------------
# Parity with PyTorch
# --------------------------------------------------------------------------------------------


TORCH_CASES = {
    "base": Case(T=4, B=3, I=5, H=7, seed=6),
    "no_bias": Case(T=4, B=3, I=5, H=7, bias=False, seed=7),
    "h0_none": Case(T=4, B=3, I=5, H=7, h0=False, seed=8),
    # PyTorch requires every length >= 1; include one equal to T.
    "lengths": Case(T=4, B=4, I=5, H=7, lengths=(2, 4, 1, 3), seed=9),
}
TORCH_TOL = {np.float64: dict(rtol=1e-10, atol=1e-12), np.float32: dict(rtol=1e-4, atol=2e-5)}


def torch_forward_backward(torch, cell, args, upstream, lengths):
    """Outputs and gradients from a one-layer torch.nn module holding the same weights."""
    dtype = {np.dtype(np.float64): torch.float64, np.dtype(np.float32): torch.float32}[args["x"].dtype]
    T, B, I = args["x"].shape
    H = args["w_ih"].shape[0] // cell.n_gates
    bias = args["b_ih"] is not None
    if cell.kind == "lstm":
        module = torch.nn.LSTM(I, H, bias=bias, proj_size=args["w_hh"].shape[1] if cell.proj else 0)
    elif cell.kind == "gru":
        module = torch.nn.GRU(I, H, bias=bias)
    else:
        module = torch.nn.RNN(I, H, bias=bias, nonlinearity=cell.nonlinearity)
    module = module.to(dtype)
    names = {"w_ih": "weight_ih_l0", "w_hh": "weight_hh_l0", "b_ih": "bias_ih_l0",
             "b_hh": "bias_hh_l0", "w_hr": "weight_hr_l0"}
    params = dict(module.named_parameters())
    with torch.no_grad():
        for ours, theirs in names.items():
            if args.get(ours) is not None:
                params[theirs].copy_(torch.from_numpy(args[ours]))

    x = torch.from_numpy(args["x"].copy()).requires_grad_()
    states = {k: torch.from_numpy(args[k].copy()).requires_grad_()
              for k in ("h0", "c0") if args.get(k) is not None}
    hx = None
    if states:
        hx = (states["h0"][None], states["c0"][None]) if cell.has_c else states["h0"][None]
    inputs = x
    if lengths is not None:
        inputs = torch.nn.utils.rnn.pack_padded_sequence(x, torch.from_numpy(lengths),
                                                         enforce_sorted=False)
    y, state_n = module(inputs, hx)
    if lengths is not None:
        y, _ = torch.nn.utils.rnn.pad_packed_sequence(y, total_length=T)
    outputs = {"y": y}
    if cell.has_c:
        outputs["h_n"], outputs["c_n"] = state_n[0][0], state_n[1][0]
    else:
        outputs["h_n"] = state_n[0]
    total = sum((outputs[k] * torch.from_numpy(upstream[k])).sum() for k in outputs)
    total.backward()

    grads = {"x": x.grad.numpy()}
    grads.update({k: v.grad.numpy() for k, v in states.items()})
    grads.update({ours: params[theirs].grad.numpy() for ours, theirs in names.items()
                  if theirs in params})
    return {k: v.detach().numpy() for k, v in outputs.items()}, grads


@pytest.mark.filterwarnings("ignore:LSTM with projections is not supported with oneDNN")
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("case", TORCH_CASES.values(), ids=TORCH_CASES.keys())
@pytest.mark.parametrize("cell", [c for c in CELLS if c.in_torch],
                         ids=[c.name for c in CELLS if c.in_torch])
def test_matches_torch(cell, case, dtype):
    torch = pytest.importorskip("torch")
    case = make_valid_case(cell, case)
    args = make_args(cell, case, dtype)
    lengths = lengths_array(case)
    outputs, cache = forward(cell, args, lengths=lengths)
    upstream = make_upstream(cell, case, outputs, dtype)
    grads = backward(cell, upstream, cache)
    t_outputs, t_grads = torch_forward_backward(torch, cell, args, upstream, lengths)

    tol = TORCH_TOL[dtype]
    for name in output_names(cell):
        assert_close(outputs[name], t_outputs[name], what=name, **tol)
    for name in grad_names(cell):
        if args[name] is None:
            if name in ("b_ih", "b_hh"):
                assert grads[name] is None
            continue  # torch has no gradient for a state it was not given
        assert_close(grads[name], t_grads[name], what=f"d{name}", **tol)
