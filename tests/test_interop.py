"""Keras <-> fastcells weight conversion (fastcells.interop).

Keras is not needed: Keras' cell equations are written out below in NumPy, straight from
Keras' LSTMCell / GRUCell (both reset_after modes) / SimpleRNNCell, on Keras-layout weights
(kernel (I, G*H), recurrent_kernel (H, G*H), bias; GRU gate order z, r, h). A fastcells module
loaded through ``from_keras`` must reproduce them, and conversions must round-trip.
"""
import numpy as np
import pytest

from fastcells import interop, layers

G = {"lstm": 4, "gru": 3, "rnn": 1}


def sigmoid(a):
    return 1 / (1 + np.exp(-a))


# ------------------------------------------------------------------------------ Keras math
def keras_step(kind, x, h, c, kernel, recurrent, bias, reset_after=True):
    """One Keras cell step, (B, I) -> (h', c'). bias None means use_bias=False."""
    H = recurrent.shape[0]
    if kind == "lstm":
        z = x @ kernel + h @ recurrent + (0 if bias is None else bias)
        i, f, g, o = np.split(z, 4, axis=1)
        c = sigmoid(f) * c + sigmoid(i) * np.tanh(g)
        return sigmoid(o) * np.tanh(c), c
    if kind == "rnn":
        return np.tanh(x @ kernel + (0 if bias is None else bias) + h @ recurrent), None
    if reset_after:
        b_in, b_rec = (0, 0) if bias is None else (bias[0], bias[1])
        x_z, x_r, x_h = np.split(x @ kernel + b_in, 3, axis=1)
        r_z, r_r, r_h = np.split(h @ recurrent + b_rec, 3, axis=1)
        z, r = sigmoid(x_z + r_z), sigmoid(x_r + r_r)
        hh = np.tanh(x_h + r * r_h)
    else:
        x_z, x_r, x_h = np.split(x @ kernel + (0 if bias is None else bias), 3, axis=1)
        z = sigmoid(x_z + h @ recurrent[:, :H])
        r = sigmoid(x_r + h @ recurrent[:, H:2 * H])
        hh = np.tanh(x_h + (r * h) @ recurrent[:, 2 * H:])
    return z * h + (1 - z) * hh, None


def keras_sequence(kind, x, weights, reset_after=True, go_backwards=False):
    """A Keras recurrent layer with return_sequences=True on x (B, T, I) from zero state;
    go_backwards output is put back in time order, as keras.layers.Bidirectional does."""
    kernel, recurrent = weights[0], weights[1]
    bias = weights[2] if len(weights) == 3 else None
    B, T, _ = x.shape
    H = recurrent.shape[0]
    h, c = np.zeros((B, H)), np.zeros((B, H))
    ys = [None] * T
    order = range(T - 1, -1, -1) if go_backwards else range(T)
    for t in order:
        h, c = keras_step(kind, x[:, t], h, c, kernel, recurrent, bias, reset_after)
        ys[t] = h
    return np.stack(ys, axis=1)


def keras_weights(kind, I, H, bias=True, reset_after=True, seed=0):
    rng = np.random.default_rng(seed)
    w = [rng.uniform(-0.5, 0.5, (I, G[kind] * H)), rng.uniform(-0.5, 0.5, (H, G[kind] * H))]
    if bias:
        shape = (2, 3 * H) if (kind == "gru" and reset_after) else (G[kind] * H,)
        w.append(rng.uniform(-0.5, 0.5, shape))
    return w


def fastcells_module(kind, I, H, bias=True, reset_after=True, **kw):
    kw = dict(bias=bias, batch_first=True, dtype=np.float64, **kw)
    if kind == "lstm":
        return layers.LSTM(I, H, **kw)
    if kind == "gru":
        return layers.GRU(I, H, reset_after=reset_after, **kw)
    return layers.RNN(I, H, **kw)


CASES = [("lstm", True, True), ("lstm", False, True), ("gru", True, True),
         ("gru", True, False), ("gru", False, True), ("gru", False, False), ("rnn", True, True),
         ("rnn", False, True)]
CASE_IDS = [f"{k}-{'bias' if b else 'nobias'}" + ("" if k != "gru" else
                                                  f"-reset_after={r}") for k, b, r in CASES]


@pytest.mark.parametrize("kind, bias, reset_after", CASES, ids=CASE_IDS)
def test_fastcells_reproduces_keras_layer(kind, bias, reset_after):
    I, H, B, T = 5, 4, 3, 6
    w = keras_weights(kind, I, H, bias, reset_after)
    x = np.random.default_rng(1).standard_normal((B, T, I))
    m = fastcells_module(kind, I, H, bias, reset_after)
    m.load_state_dict(interop.from_keras(kind, w))
    y = m(x)[0]
    np.testing.assert_allclose(y, keras_sequence(kind, x, w, reset_after), rtol=1e-12,
                               atol=1e-13)


@pytest.mark.parametrize("kind, bias, reset_after", CASES, ids=CASE_IDS)
def test_keras_round_trip(kind, bias, reset_after):
    w = keras_weights(kind, 3, 5, bias, reset_after, seed=2)
    back = interop.to_keras(interop.from_keras(kind, w), kind, reset_after=reset_after)
    assert len(back) == len(w)
    for a, b in zip(back, w):
        assert a.shape == b.shape
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("kind, bias, reset_after", CASES, ids=CASE_IDS)
def test_fastcells_to_keras_preserves_the_function(kind, bias, reset_after):
    """A fastcells module with nonzero bias_ih and bias_hh -> Keras -> fastcells computes the
    same function (the biases may be re-split, their role is kept)."""
    I, H = 4, 3
    m = fastcells_module(kind, I, H, bias, reset_after, seed=5)
    w = interop.to_keras(m)
    x = np.random.default_rng(3).standard_normal((2, 5, I))
    np.testing.assert_allclose(keras_sequence(kind, x, w, reset_after), m(x)[0], rtol=1e-12,
                               atol=1e-13)
    m2 = fastcells_module(kind, I, H, bias, reset_after, seed=6)
    m2.load_state_dict(interop.from_keras(kind, w))
    np.testing.assert_allclose(m2(x)[0], m(x)[0], rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn"])
def test_stacked_bidirectional_stack_helpers(kind):
    I, H, B, T, L = 3, 4, 2, 5, 2
    per_layer = []
    for k in range(L):
        i_k = I if k == 0 else 2 * H
        per_layer.append(keras_weights(kind, i_k, H, seed=10 + k)
                         + keras_weights(kind, i_k, H, seed=20 + k))
    m = fastcells_module(kind, I, H, num_layers=L, bidirectional=True)
    m.load_state_dict(interop.from_keras_stack(kind, per_layer, bidirectional=True))
    x = np.random.default_rng(4).standard_normal((B, T, I))
    seq = x
    for w in per_layer:  # Keras: Bidirectional(layer, merge_mode="concat"), stacked
        seq = np.concatenate([keras_sequence(kind, seq, w[:len(w) // 2]),
                              keras_sequence(kind, seq, w[len(w) // 2:], go_backwards=True)],
                             axis=2)
    np.testing.assert_allclose(m(x)[0], seq, rtol=1e-12, atol=1e-13)
    back = interop.to_keras_stack(m)
    m2 = fastcells_module(kind, I, H, num_layers=L, bidirectional=True, seed=9)
    m2.load_state_dict(interop.from_keras_stack(kind, back, bidirectional=True))
    np.testing.assert_allclose(m2(x)[0], seq, rtol=1e-12, atol=1e-13)


def test_names_mappings_and_cells():
    w = keras_weights("gru", 3, 4, reset_after=False)
    sd = interop.from_keras("gru", {"gru/gru_cell/kernel:0": w[0],
                                    "gru/gru_cell/recurrent_kernel:0": w[1],
                                    "gru/gru_cell/bias:0": w[2]}, layer=2, reverse=True)
    assert sorted(sd) == sorted(f"{n}_l2_reverse" for n in
                                ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))
    assert not sd["bias_hh_l2_reverse"].any()
    assert sd["weight_ih_l2_reverse"].flags.c_contiguous
    # a cell module uses the plain names
    cell = layers.GRUCell(3, 4, reset_after=False, dtype=np.float64)
    cell.load_state_dict({k[:-len("_l2_reverse")]: v for k, v in sd.items()})
    for a, b in zip(interop.to_keras(cell), w):
        np.testing.assert_array_equal(a, b)
    x, h = np.ones((2, 3)), np.full((2, 4), 0.3)
    np.testing.assert_allclose(cell(x, h), keras_step("gru", x, h, None, *w, reset_after=False)[0],
                               rtol=1e-12)


@pytest.mark.parametrize("call, match", [
    (lambda: interop.from_keras("lstm", keras_weights("gru", 3, 4)), r"recurrent_kernel"),
    (lambda: interop.from_keras("gru", [np.zeros((3, 9)), np.zeros((4, 12))]), r"kernel must"),
    (lambda: interop.from_keras("gru", keras_weights("gru", 3, 4), reset_after=False),
     r"reset_after=False but the bias shape \(2, 12\)"),
    (lambda: interop.from_keras("lstm", keras_weights("lstm", 3, 4)[:1]), r"weights must be"),
    (lambda: interop.from_keras("lstm", [np.zeros((3, 16)), np.zeros((4, 16)), np.zeros(12)]),
     r"bias must have shape \(16,\)"),
    (lambda: interop.from_keras("transformer", []), r"cell must be"),
    (lambda: interop.from_keras("rnn", {"kernel": np.zeros((2, 3))}), r"missing 'recurrent"),
    (lambda: interop.to_keras(layers.LSTM(3, 4, proj_size=2)), r"projections"),
    (lambda: interop.to_keras(layers.GRU(3, 4), reset_after=False), r"reset_after"),
    (lambda: interop.to_keras(layers.GRU(3, 4).state_dict()), r"cell .* is required"),
    (lambda: interop.to_keras(layers.GRU(3, 4), layer=1), r"no 'weight_ih_l1'"),
])
def test_bad_arguments(call, match):
    with pytest.raises(ValueError, match=match):
        call()
