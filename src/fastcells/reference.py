"""NumPy reference implementation of the fastcells recurrent cells.

This module is the test oracle for the compiled kernels and the baseline the benchmarks compare
against, so it favours clarity first and plain, vectorised NumPy second:

* the input projection of every timestep is one matrix product before the time loop
  (``x W_ihᵀ`` for all ``T·B`` rows at once); per step only the recurrent ``h W_hhᵀ`` remains;
* the backward pass runs the time loop only for ``dh_{t-1} = dG_t W_hh`` and the pointwise
  derivatives; ``dx``, ``dW_ih`` and ``dW_hh`` are single matrix products after the loop;
* there is no Python loop over the batch.

Conventions (PyTorch math and weight layout, time-major):

=========  ===============  ==========================================================
array      shape            notes
=========  ===============  ==========================================================
x          (T, B, I)        input sequence
h0, c0     (B, H) or None   initial state; None means zeros (c0: LSTM only)
w_ih       (G·H, I)         gate blocks stacked along axis 0
w_hh       (G·H, H)         (G·H, P) for an LSTM with projection
b_ih, b_hh (G·H,) or None   both None (no bias) or both given
y          (T, B, H)        hidden state after every step (0 at padded positions)
h_n, c_n   (B, H)           state after the last valid step
=========  ===============  ==========================================================

G = 4 for the LSTM (gate order i, f, g, o), 3 for the GRU (r, z, n) and 1 for the Elman RNN.
All arrays of one call must share a dtype, float32 or float64; results have that dtype and are
computed in it.

``lengths`` (shape (B,), integers in [0, T]) gives PyTorch's
``pack_padded_sequence(..., enforce_sorted=False)`` semantics for a right-padded batch: sequence
``b`` is advanced only for ``t < lengths[b]``, its state is frozen afterwards, ``y[t, b] = 0``
for padded steps, and ``h_n``/``c_n`` are the states after the last valid step. A length of 0
(which PyTorch rejects) leaves the state at ``h0``. The backward pass ignores ``dy`` at padded
positions and lets ``dh_n``/``dc_n`` flow back to the last valid step.

The forward functions return a ``cache`` dict holding everything the matching backward needs
(references to the inputs plus the saved activations and states); with ``training=False`` the
cache is ``None``. The cache refers to, but does not copy, ``x`` and the weights: do not modify
them between forward and backward. Returned arrays never alias the inputs or the cache.

The backward pass works from saved post-activation values:
σ'(a) = s(1 − s), tanh'(a) = 1 − t², relu'(a) = [h > 0].
"""

import numpy as np

__all__ = [
    "lstm_forward",
    "lstm_backward",
    "gru_forward",
    "gru_backward",
    "rnn_forward",
    "rnn_backward",
]

_FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


# --------------------------------------------------------------------------------------------
# Activations (in place, on views of the gate buffer)
# --------------------------------------------------------------------------------------------


def _sigmoid_inplace(a):
    """a ← 1 / (1 + exp(−a)), PyTorch's formula; exp overflow for very negative a gives 0."""
    with np.errstate(over="ignore"):
        np.exp(np.negative(a, out=a), out=a)
    a += 1
    np.reciprocal(a, out=a)


def _tanh_inplace(a):
    np.tanh(a, out=a)


def _relu_inplace(a):
    np.maximum(a, 0, out=a)


_RNN_ACTIVATIONS = {"tanh": _tanh_inplace, "relu": _relu_inplace}


# --------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------


def _check_array(name, a, ndim, dtype=None):
    """Require a float32/float64 ndarray with ``ndim`` dims (and ``dtype`` if given)."""
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{name} must be a numpy.ndarray, got {type(a).__name__}")
    if a.dtype not in _FLOAT_DTYPES:
        raise TypeError(f"{name} must have dtype float32 or float64, got {a.dtype}")
    if dtype is not None and a.dtype != dtype:
        raise TypeError(f"{name} has dtype {a.dtype}, but x has dtype {dtype}; "
                        "all arrays of a call must share one dtype")
    if a.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-dimensional, got shape {a.shape}")


def _check_shape(name, a, shape):
    if a.shape != shape:
        raise ValueError(f"{name} must have shape {shape}, got {a.shape}")


def _check_optional(name, a, shape, dtype):
    if a is not None:
        _check_array(name, a, len(shape), dtype)
        _check_shape(name, a, shape)


def _validate_forward(x, h0, c0, w_ih, w_hh, b_ih, b_hh, n_gates, w_hr=None):
    """Check shapes and dtypes; return (T, B, I, H, P) where P is the size of h (H unless w_hr)."""
    _check_array("x", x, 3)
    dtype = x.dtype
    T, B, I = x.shape
    _check_array("w_ih", w_ih, 2, dtype)
    if w_ih.shape[0] % n_gates != 0 or w_ih.shape[1] != I:
        raise ValueError(f"w_ih must have shape ({n_gates}*hidden_size, {I}), got {w_ih.shape}")
    H = w_ih.shape[0] // n_gates
    P = H
    if w_hr is not None:
        _check_array("w_hr", w_hr, 2, dtype)
        if w_hr.shape[1] != H:
            raise ValueError(f"w_hr must have shape (proj_size, {H}), got {w_hr.shape}")
        P = w_hr.shape[0]
    _check_array("w_hh", w_hh, 2, dtype)
    _check_shape("w_hh", w_hh, (n_gates * H, P))
    if (b_ih is None) != (b_hh is None):
        raise ValueError("b_ih and b_hh must both be None (no bias) or both be given")
    _check_optional("b_ih", b_ih, (n_gates * H,), dtype)
    _check_optional("b_hh", b_hh, (n_gates * H,), dtype)
    _check_optional("h0", h0, (B, P), dtype)
    _check_optional("c0", c0, (B, H), dtype)
    return T, B, I, H, P


def _valid_mask(lengths, T, B):
    """(T, B) bool mask, True where step t of sequence b is processed; None if all are."""
    if lengths is None:
        return None
    lengths = np.asarray(lengths)
    if not np.issubdtype(lengths.dtype, np.integer):
        raise TypeError(f"lengths must be an integer array, got dtype {lengths.dtype}")
    if lengths.shape != (B,):
        raise ValueError(f"lengths must have shape ({B},), got {lengths.shape}")
    if B and (lengths.min() < 0 or lengths.max() > T):
        raise ValueError(f"lengths must lie in [0, {T}] (T = x.shape[0]), got {lengths}")
    if np.all(lengths == T):
        return None
    return np.arange(T)[:, None] < lengths[None, :]


def _validate_backward(cache, kind, dy, dh_n, dc_n=None):
    if cache is None:
        raise TypeError(f"{kind}_backward got cache=None: the forward pass was run with "
                        "training=False, which saves nothing for backward")
    if not isinstance(cache, dict) or cache.get("kind") != kind:
        found = cache.get("kind") if isinstance(cache, dict) else type(cache).__name__
        raise TypeError(f"{kind}_backward needs the cache of {kind}_forward, got {found!r}")
    T, B, P = cache["T"], cache["B"], cache["hs"].shape[2]
    dtype = cache["x"].dtype
    _check_optional("dy", dy, (T, B, P), dtype)
    _check_optional("dh_n", dh_n, (B, P), dtype)
    if kind == "lstm":
        _check_optional("dc_n", dc_n, (B, cache["H"]), dtype)


# --------------------------------------------------------------------------------------------
# Shared pieces of the time loops
# --------------------------------------------------------------------------------------------


def _initial_state(s0, B, size, dtype):
    return np.zeros((B, size), dtype) if s0 is None else s0


def _input_projection(x, w_ih, bias):
    """Pre-activations from the input for all timesteps in one GEMM: x W_ihᵀ (+ bias), (T, B, G·H)."""
    T, B, I = x.shape
    gates = (x.reshape(T * B, I) @ w_ih.T).reshape(T, B, w_ih.shape[0])
    if bias is not None:
        gates += bias
    return gates


def _advance(m, new, old):
    """State after a step: ``new`` where the sequence is still running (mask m), else ``old``."""
    return new if m is None else np.where(m, new, old)


def _step_mask(valid, t):
    return None if valid is None else valid[t, :, None]


def _split_grad(d_carry, dy_t, m):
    """Split the gradient on the state after step t.

    Returns (gradient reaching the step's newly computed state, gradient that skips the step).
    For a frozen (padded) step the new state was not used, so everything skips it and dy there
    is ignored; for a running step nothing skips it.
    """
    d_new = d_carry if dy_t is None else d_carry + dy_t
    if m is None:
        return d_new, None
    return np.where(m, d_new, 0), np.where(m, 0, d_carry)


def _start_grad(d, B, size, dtype):
    """Copy of an upstream state gradient (we accumulate into it), zeros for None."""
    return np.zeros((B, size), dtype) if d is None else d.copy()


def _zero_padded_outputs(y, valid):
    if valid is not None:
        y[~valid] = 0


def _input_grads(dG, x, w_ih):
    """dx = dG W_ih and dW_ih = Σ_t dG_tᵀ x_t, one GEMM each over all T·B rows."""
    T, B, I = x.shape
    dG2 = dG.reshape(T * B, dG.shape[2])
    return (dG2 @ w_ih).reshape(T, B, I), dG2.T @ x.reshape(T * B, I)


def _shared_bias_grads(dG, x, w_ih, hs, has_bias):
    """dx, dW_ih, dW_hh and the bias gradients of a cell whose x- and h-side pre-activations
    share one gradient dG (LSTM, RNN): both biases enter the same sum, so db_ih == db_hh."""
    dx, dw_ih = _input_grads(dG, x, w_ih)
    dw_hh = _sum_outer(dG, hs[:-1])
    db_ih = db_hh = None
    if has_bias:
        db_ih = dG.sum(axis=(0, 1))
        db_hh = db_ih.copy()
    return dx, dw_ih, dw_hh, db_ih, db_hh


def _sum_outer(d, v):
    """Σ_t d_tᵀ v_t for (T, B, ·) arrays as one GEMM over all T·B rows (a weight gradient)."""
    return d.reshape(-1, d.shape[2]).T @ v.reshape(-1, v.shape[2])


# --------------------------------------------------------------------------------------------
# LSTM
# --------------------------------------------------------------------------------------------


def lstm_forward(x, h0, c0, w_ih, w_hh, b_ih=None, b_hh=None, *, training=True, n_threads=None,
                 lengths=None, w_hr=None):
    """LSTM over a sequence; returns (y, h_n, c_n, cache).

    Gates (order i, f, g, o): G = x W_ihᵀ + b_ih + h W_hhᵀ + b_hh; i, f, o = σ, g = tanh;
    c' = f⊙c + i⊙g; h' = o⊙tanh(c').

    ``w_hr`` is PyTorch's ``weight_hr`` (P, H) for ``proj_size = P > 0``: h' = W_hr (o⊙tanh c'),
    so h0, y and h_n have size P and w_hh is (4H, P); c stays of size H.
    ``n_threads`` is accepted for signature compatibility and ignored.
    """
    T, B, I, H, P = _validate_forward(x, h0, c0, w_ih, w_hh, b_ih, b_hh, 4, w_hr)
    dtype = x.dtype
    valid = _valid_mask(lengths, T, B)

    # gates[t] holds the pre-activations, then (in place) the activated i, f, g, o saved for backward
    gates = _input_projection(x, w_ih, None if b_ih is None else b_ih + b_hh)
    hs = np.empty((T + 1, B, P), dtype)  # hs[t] = h entering step t
    cs = np.empty((T + 1, B, H), dtype)
    tanh_c = np.empty((T, B, H), dtype)
    y = np.empty((T, B, P), dtype)
    hs[0] = _initial_state(h0, B, P, dtype)
    cs[0] = _initial_state(c0, B, H, dtype)

    for t in range(T):
        a = gates[t]
        a += hs[t] @ w_hh.T
        _sigmoid_inplace(a[:, :2 * H])       # i, f
        _tanh_inplace(a[:, 2 * H:3 * H])     # g
        _sigmoid_inplace(a[:, 3 * H:])       # o
        i, f, g, o = a[:, :H], a[:, H:2 * H], a[:, 2 * H:3 * H], a[:, 3 * H:]
        c_new = f * cs[t] + i * g
        np.tanh(c_new, out=tanh_c[t])
        h_new = o * tanh_c[t]
        if w_hr is not None:
            h_new = h_new @ w_hr.T
        m = _step_mask(valid, t)
        cs[t + 1] = _advance(m, c_new, cs[t])
        hs[t + 1] = _advance(m, h_new, hs[t])
        y[t] = h_new
    _zero_padded_outputs(y, valid)

    cache = None
    if training:
        cache = dict(kind="lstm", T=T, B=B, H=H, x=x, w_ih=w_ih, w_hh=w_hh, w_hr=w_hr,
                     has_bias=b_ih is not None, valid=valid,
                     gates=gates, tanh_c=tanh_c, hs=hs, cs=cs)
    return y, hs[T].copy(), cs[T].copy(), cache


def lstm_backward(dy, dh_n, dc_n, cache):
    """BPTT for :func:`lstm_forward`.

    Returns (dx, dh0, dc0, dw_ih, dw_hh, db_ih, db_hh), plus dw_hr as an 8th element when the
    forward used ``w_hr``. dy, dh_n, dc_n may be None (zeros); db_ih/db_hh are None without bias.
    """
    _validate_backward(cache, "lstm", dy, dh_n, dc_n)
    T, B, H = cache["T"], cache["B"], cache["H"]
    x, w_ih, w_hh, w_hr = cache["x"], cache["w_ih"], cache["w_hh"], cache["w_hr"]
    gates, tanh_c, hs, cs, valid = (cache[k] for k in ("gates", "tanh_c", "hs", "cs", "valid"))
    dtype, P = x.dtype, hs.shape[2]

    dG = np.empty_like(gates)  # gradient w.r.t. the gate pre-activations, (T, B, 4H)
    dh_out = np.empty((T, B, P), dtype) if w_hr is not None else None  # grad on projected h'
    dh = _start_grad(dh_n, B, P, dtype)
    dc = _start_grad(dc_n, B, H, dtype)

    for t in reversed(range(T)):
        m = _step_mask(valid, t)
        dh_new, dh_skip = _split_grad(dh, None if dy is None else dy[t], m)
        dc_new, dc_skip = _split_grad(dc, None, m)
        if w_hr is not None:
            dh_out[t] = dh_new
            dh_new = dh_new @ w_hr            # h' = W_hr u  ⇒  du = dh' W_hr
        a = gates[t]
        i, f, g, o = a[:, :H], a[:, H:2 * H], a[:, 2 * H:3 * H], a[:, 3 * H:]
        tc = tanh_c[t]
        # h' = o⊙tanh(c')  and  c' = f⊙c + i⊙g
        dc_new = dc_new + dh_new * o * (1 - tc * tc)
        d = dG[t]
        d[:, :H] = dc_new * g * i * (1 - i)
        d[:, H:2 * H] = dc_new * cs[t] * f * (1 - f)
        d[:, 2 * H:3 * H] = dc_new * i * (1 - g * g)
        d[:, 3 * H:] = dh_new * tc * o * (1 - o)
        dh = d @ w_hh
        dc = dc_new * f
        if m is not None:
            dh += dh_skip
            dc += dc_skip

    dx, dw_ih, dw_hh, db_ih, db_hh = _shared_bias_grads(dG, x, w_ih, hs, cache["has_bias"])
    grads = (dx, dh, dc, dw_ih, dw_hh, db_ih, db_hh)
    if w_hr is not None:
        u = gates[:, :, 3 * H:] * tanh_c  # o⊙tanh(c'), the unprojected output, (T, B, H)
        grads += (_sum_outer(dh_out, u),)
    return grads


# --------------------------------------------------------------------------------------------
# GRU
# --------------------------------------------------------------------------------------------


def gru_forward(x, h0, w_ih, w_hh, b_ih=None, b_hh=None, *, training=True, n_threads=None,
                lengths=None, reset_after=True):
    """GRU over a sequence; returns (y, h_n, cache).

    Gates (order r, z, n): r = σ(x W_irᵀ + b_ir + h W_hrᵀ + b_hr), z likewise,
    h' = (1 − z)⊙n + z⊙h, with
      reset_after=True  (PyTorch, cuDNN):        n = tanh(x W_inᵀ + b_in + r⊙(h W_hnᵀ + b_hn))
      reset_after=False (Cho et al. 2014, Keras): n = tanh(x W_inᵀ + b_in + (r⊙h) W_hnᵀ + b_hn)
    ``n_threads`` is accepted for signature compatibility and ignored.
    """
    T, B, I, H, _ = _validate_forward(x, h0, None, w_ih, w_hh, b_ih, b_hh, 3)
    dtype = x.dtype
    valid = _valid_mask(lengths, T, B)
    has_bias = b_ih is not None

    # Every bias except b_hn under reset_after (it sits inside r⊙(...)) folds into the hoisted GEMM.
    bias = None
    if has_bias:
        bias = b_ih.copy()
        bias[:2 * H] += b_hh[:2 * H]
        if not reset_after:
            bias[2 * H:] += b_hh[2 * H:]
    gates = _input_projection(x, w_ih, bias)  # becomes activated r, z, n in place
    w_hrz, w_hn = w_hh[:2 * H], w_hh[2 * H:]
    # reset_after: h W_hnᵀ + b_hn, the term r multiplies;  classic: r⊙h, the input of W_hn
    inner = np.empty((T, B, H), dtype)
    hs = np.empty((T + 1, B, H), dtype)
    y = np.empty((T, B, H), dtype)
    hs[0] = _initial_state(h0, B, H, dtype)

    for t in range(T):
        a, h = gates[t], hs[t]
        if reset_after:
            gh = h @ w_hh.T
            a[:, :2 * H] += gh[:, :2 * H]
            _sigmoid_inplace(a[:, :2 * H])
            inner[t] = gh[:, 2 * H:]
            if has_bias:
                inner[t] += b_hh[2 * H:]
            r = a[:, :H]
            a[:, 2 * H:] += r * inner[t]
        else:
            a[:, :2 * H] += h @ w_hrz.T
            _sigmoid_inplace(a[:, :2 * H])
            r = a[:, :H]
            np.multiply(r, h, out=inner[t])
            a[:, 2 * H:] += inner[t] @ w_hn.T
        _tanh_inplace(a[:, 2 * H:])
        z, n = a[:, H:2 * H], a[:, 2 * H:]
        h_new = (1 - z) * n + z * h
        hs[t + 1] = _advance(_step_mask(valid, t), h_new, h)
        y[t] = h_new
    _zero_padded_outputs(y, valid)

    cache = None
    if training:
        cache = dict(kind="gru", T=T, B=B, H=H, x=x, w_ih=w_ih, w_hh=w_hh, has_bias=has_bias,
                     reset_after=reset_after, valid=valid, gates=gates, inner=inner, hs=hs)
    return y, hs[T].copy(), cache


def gru_backward(dy, dh_n, cache):
    """BPTT for :func:`gru_forward`; returns (dx, dh0, dw_ih, dw_hh, db_ih, db_hh).

    dy and dh_n may be None (zeros); db_ih/db_hh are None without bias.
    """
    _validate_backward(cache, "gru", dy, dh_n)
    T, B, H = cache["T"], cache["B"], cache["H"]
    x, w_ih, w_hh = cache["x"], cache["w_ih"], cache["w_hh"]
    gates, inner, hs, valid = cache["gates"], cache["inner"], cache["hs"], cache["valid"]
    reset_after = cache["reset_after"]
    dtype = x.dtype
    w_hrz, w_hn = w_hh[:2 * H], w_hh[2 * H:]

    dGx = np.empty_like(gates)  # gradient w.r.t. the input-side pre-activations x W_ihᵀ + b_ih
    # reset_after: gradient w.r.t. h W_hhᵀ + b_hh (its n block is scaled by r)
    dGh = np.empty_like(gates) if reset_after else None
    dh = _start_grad(dh_n, B, H, dtype)

    for t in reversed(range(T)):
        m = _step_mask(valid, t)
        dh_new, dh_skip = _split_grad(dh, None if dy is None else dy[t], m)
        a, h = gates[t], hs[t]
        r, z, n = a[:, :H], a[:, H:2 * H], a[:, 2 * H:]
        # h' = (1 − z)⊙n + z⊙h
        dan = dh_new * (1 - z) * (1 - n * n)     # w.r.t. n's pre-activation
        daz = dh_new * (h - n) * z * (1 - z)
        dh = dh_new * z
        d = dGx[t]
        d[:, H:2 * H] = daz
        d[:, 2 * H:] = dan
        if reset_after:
            d[:, :H] = dan * inner[t] * r * (1 - r)
            dgh = dGh[t]
            dgh[:, :2 * H] = d[:, :2 * H]
            dgh[:, 2 * H:] = dan * r
            dh += dgh @ w_hh
        else:
            d_rh = dan @ w_hn                    # w.r.t. r⊙h
            d[:, :H] = d_rh * h * r * (1 - r)
            dh += d_rh * r
            dh += d[:, :2 * H] @ w_hrz
        if m is not None:
            dh += dh_skip

    dx, dw_ih = _input_grads(dGx, x, w_ih)
    if reset_after:
        dw_hh = _sum_outer(dGh, hs[:-1])
    else:
        dw_hh = np.concatenate([_sum_outer(dGx[:, :, :2 * H], hs[:-1]),   # W_hr, W_hz see h
                                _sum_outer(dGx[:, :, 2 * H:], inner)])    # W_hn sees r⊙h
    db_ih = db_hh = None
    if cache["has_bias"]:
        db_ih = dGx.sum(axis=(0, 1))
        db_hh = dGh.sum(axis=(0, 1)) if reset_after else db_ih.copy()
    return dx, dh, dw_ih, dw_hh, db_ih, db_hh


# --------------------------------------------------------------------------------------------
# Elman RNN
# --------------------------------------------------------------------------------------------


def rnn_forward(x, h0, w_ih, w_hh, b_ih=None, b_hh=None, *, nonlinearity="tanh", training=True,
                n_threads=None, lengths=None):
    """Elman RNN over a sequence; returns (y, h_n, cache).

    h' = act(x W_ihᵀ + b_ih + h W_hhᵀ + b_hh), act ∈ {"tanh", "relu"}.
    ``n_threads`` is accepted for signature compatibility and ignored.
    """
    if nonlinearity not in _RNN_ACTIVATIONS:
        raise ValueError(f"nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
    activation = _RNN_ACTIVATIONS[nonlinearity]
    T, B, I, H, _ = _validate_forward(x, h0, None, w_ih, w_hh, b_ih, b_hh, 1)
    dtype = x.dtype
    valid = _valid_mask(lengths, T, B)

    # acts[t]: pre-activation, then (in place) the new hidden state h' saved for backward
    acts = _input_projection(x, w_ih, None if b_ih is None else b_ih + b_hh)
    hs = np.empty((T + 1, B, H), dtype)
    hs[0] = _initial_state(h0, B, H, dtype)
    for t in range(T):
        a = acts[t]
        a += hs[t] @ w_hh.T
        activation(a)
        hs[t + 1] = _advance(_step_mask(valid, t), a, hs[t])
    y = acts.copy()
    _zero_padded_outputs(y, valid)

    cache = None
    if training:
        cache = dict(kind="rnn", T=T, B=B, H=H, x=x, w_ih=w_ih, w_hh=w_hh,
                     has_bias=b_ih is not None, nonlinearity=nonlinearity, valid=valid,
                     acts=acts, hs=hs)
    return y, hs[T].copy(), cache


def rnn_backward(dy, dh_n, cache):
    """BPTT for :func:`rnn_forward`; returns (dx, dh0, dw_ih, dw_hh, db_ih, db_hh).

    dy and dh_n may be None (zeros); db_ih/db_hh are None without bias.
    """
    _validate_backward(cache, "rnn", dy, dh_n)
    T, B, H = cache["T"], cache["B"], cache["H"]
    x, w_ih, w_hh, acts, hs, valid = (cache[k] for k in ("x", "w_ih", "w_hh", "acts", "hs", "valid"))
    relu = cache["nonlinearity"] == "relu"

    dG = np.empty_like(acts)  # gradient w.r.t. the pre-activations, (T, B, H)
    dh = _start_grad(dh_n, B, H, x.dtype)
    for t in reversed(range(T)):
        m = _step_mask(valid, t)
        dh_new, dh_skip = _split_grad(dh, None if dy is None else dy[t], m)
        h_new = acts[t]
        if relu:
            # a select, not a product with the mask: an inactive unit passes no gradient,
            # not even an inf/NaN one (0 * inf would be NaN), as in PyTorch
            np.copyto(dG[t], np.where(h_new > 0, dh_new, 0))
        else:
            np.multiply(dh_new, 1 - h_new * h_new, out=dG[t])
        dh = dG[t] @ w_hh
        if m is not None:
            dh += dh_skip

    dx, dw_ih, dw_hh, db_ih, db_hh = _shared_bias_grads(dG, x, w_ih, hs, cache["has_bias"])
    return dx, dh, dw_ih, dw_hh, db_ih, db_hh
