"""Public functional API: validation, allocation and dispatch to the compiled kernels.

Nothing here loops over time or batch. Every array the caller passes is only read; outputs and
workspaces are fresh arrays. All arrays of one call must share one dtype, float32 or float64
(no silent casts: a mismatch is a TypeError naming the argument).
"""
import os
import threading

import numpy as np

from . import _kernels
from ._threads import (MAX_THREADS, blas_fallback_limit, effective_n_threads,
                       set_threads_local_address)

_ALIGN = 64   # bytes: a cache line, one AVX-512 vector (see _empty64)

_GATES = {"lstm": 4, "gru": 3, "rnn": 1}
_BLAS_INT_MAX = 2**31 - 1


_WS_TOKEN = object()
_CONSUME_LOCK = threading.Lock()

# Saved arrays of each cell and their shapes, in terms of (T, B, I, H, P).
_WS_SHAPES = {
    "lstm": lambda T, B, I, H, P: (
        ("gates", (T, B, 4 * H)), ("cs", (T, B, H)), ("hs", (T, B, P)), ("x", (T, B, I)),
        ("h0", (B, P)), ("c0", (B, H)), ("w_ih", (4 * H, I)), ("w_hh", (4 * H, P))),
    "gru": lambda T, B, I, H, P: (
        ("gates", (T, B, 3 * H)), ("hn", (T, B, H)), ("hs", (T, B, H)), ("x", (T, B, I)),
        ("h0", (B, H)), ("w_ih", (3 * H, I)), ("w_hh", (3 * H, H))),
    "rnn": lambda T, B, I, H, P: (
        ("hs", (T, B, H)), ("x", (T, B, I)), ("h0", (B, H)), ("w_ih", (H, I)),
        ("w_hh", (H, H))),
}
_OWNED = ("gates", "cs", "hs", "hn", "us")


class Workspace:
    """Opaque state saved by a training forward pass for its backward pass.

    Created only by ``lstm_forward``/``gru_forward``/``rnn_forward`` with ``training=True``.
    Holds the saved gate activations and states (owned) and references to the forward's inputs
    (x, h0, c0 and the weights, read again by backward: do not modify them in place between
    forward and backward). A backward pass consumes the workspace -- it reuses the saved
    activations' memory for the gate gradients -- so a second backward with the same workspace
    raises RuntimeError, as PyTorch does without retain_graph (also when two threads race to
    use it: exactly one wins). Its attributes are read-only.
    """

    __slots__ = ("_cell", "_dtype", "_dims", "_nonlinearity", "_reset_after", "_n_threads",
                 "_has_b_ih", "_has_b_hh", "_arrays", "_consumed", "_slices")

    def __init__(self, *args, _token=None, **kwargs):
        if _token is not _WS_TOKEN:
            raise TypeError("Workspace objects are created by the forward functions "
                            "(lstm_forward, gru_forward, rnn_forward with training=True)")
        self._init(*args, **kwargs)

    @classmethod
    def _new(cls, *args, **kwargs):
        """For the forward functions (skips the token check: ~0.5 us per call)."""
        ws = cls.__new__(cls)
        ws._init(*args, **kwargs)
        return ws

    def _init(self, cell, dtype, T, B, I, H, n_threads, has_b_ih, has_b_hh, arrays,
              nonlinearity=None, reset_after=True, P=None, slices=0):
        self._cell = cell
        self._dtype = np.dtype(dtype)
        self._dims = (T, B, I, H, H if P is None else P)
        self._nonlinearity = nonlinearity
        self._reset_after = reset_after
        self._n_threads = n_threads
        self._has_b_ih, self._has_b_hh = has_b_ih, has_b_hh
        self._arrays = arrays
        self._consumed = False
        # the forward's slice count: its saved arrays' layout, which its backward follows
        # (_kernels.pyx, "slice mode"); 0 = the grid layout
        self._slices = slices

    cell = property(lambda self: self._cell, doc="'lstm', 'gru' or 'rnn'")
    dtype = property(lambda self: self._dtype)
    T = property(lambda self: self._dims[0])
    B = property(lambda self: self._dims[1])
    I = property(lambda self: self._dims[2])  # noqa: E741
    H = property(lambda self: self._dims[3])
    P = property(lambda self: self._dims[4], doc="size of h (the projection size, else H)")
    nonlinearity = property(lambda self: self._nonlinearity)
    reset_after = property(lambda self: self._reset_after)
    n_threads = property(lambda self: self._n_threads)
    has_b_ih = property(lambda self: self._has_b_ih)
    has_b_hh = property(lambda self: self._has_b_hh)
    consumed = property(lambda self: self._consumed, doc="True once a backward pass used it")

    @property
    def nbytes(self):
        """Bytes owned by the workspace (saved activations and states; not the inputs)."""
        return sum(a.nbytes for k, a in self._arrays.items() if k in _OWNED and a is not None)

    def __repr__(self):
        state = "consumed" if self._consumed else "ready"
        T, B, I, H, P = self._dims
        return (f"<fastcells.Workspace {self._cell} {self._dtype.name} T={T} B={B} I={I} "
                f"H={H}{f' P={P}' if P != H else ''} {state}, {self.nbytes} bytes>")


# ------------------------------------------------------------------------------ validation
def _asarray(name, a):
    try:
        return np.asarray(a)
    except (ValueError, TypeError) as e:
        raise ValueError(f"{name} could not be converted to an array ({e})") from None
    except Exception as e:  # e.g. an __array__ that raises
        raise TypeError(f"{name} could not be converted to an array "
                        f"({type(e).__name__}: {e})") from None


_F32, _F64 = np.dtype(np.float32), np.dtype(np.float64)


def _dtype_of(name, a):
    dt = getattr(a, "dtype", None)
    if dt is _F32 or dt is _F64:          # the common case, without dtype comparisons
        return dt
    if not isinstance(dt, np.dtype):
        dt = _asarray(name, a).dtype
    if dt.kind == "f" and not dt.isnative:
        dt = dt.newbyteorder("=")          # byte order is layout, not type: '>f8' is float64
    if dt not in (np.float32, np.float64):
        raise TypeError(f"{name} must have dtype float32 or float64, got {dt}")
    return dt


def _call_dtype(**arrays):
    """The one dtype shared by all non-None arrays of a call (TypeError naming the odd one)."""
    dtype = None
    first = None
    for name, a in arrays.items():
        if a is None:
            continue
        dt = a.dtype if type(a) is np.ndarray else None
        if dt is not _F32 and dt is not _F64:
            dt = _dtype_of(name, a)
        if dtype is None:
            dtype, first = dt, name
        elif dt != dtype:
            raise TypeError(f"{name} has dtype {dt} but {first} has dtype {dtype}; all arrays "
                            f"of one call must share one dtype (float32 or float64)")
    return dtype


def _array(name, a, dtype, shape=None, ndim=None):
    """``a`` as an array of ``dtype`` (any byte order), checked against ``shape``; no copy."""
    if type(a) is np.ndarray and a.dtype is dtype:    # fast path: already an array of dtype
        arr = a
    else:
        arr = _asarray(name, a)
        if _dtype_of(name, arr) != dtype:
            raise TypeError(f"{name} has dtype {arr.dtype}, expected {dtype}")
    if ndim is not None and arr.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {_fmt(arr.shape)}")
    if shape is not None and arr.shape != tuple(shape):
        raise ValueError(f"{name} must have shape {_fmt(shape)}, got {_fmt(arr.shape)}")
    return arr


def _contig(a, dtype):
    """C-contiguous, aligned, native-byte-order ``a`` (a copy only when the layout needs it)."""
    if a is None:
        return None
    if type(a) is np.ndarray and a.dtype is dtype:    # fast path: no np.require (~3 us)
        flags = a.flags
        if flags.c_contiguous and flags.aligned:
            return a
    return np.require(a, dtype=dtype, requirements=("C", "A"))


def _fmt(shape):
    return "(" + ", ".join(str(s) for s in shape) + ("," if len(shape) == 1 else "") + ")"


def _check_x(x, dtype):
    x = _array("x", x, dtype)
    if x.ndim != 3:
        raise ValueError(f"x must be 3-D (T, B, input_size), got shape {_fmt(x.shape)}")
    return x


def _check_weights(cell, w_ih, w_hh, I, dtype, w_hr=None):
    """Validate the weights' shapes (no copies); return (w_ih, w_hh, H, w_hr, P)."""
    G = _GATES[cell]
    w_hh = _array("w_hh", w_hh, dtype)
    if w_hr is not None:
        w_hr = _array("w_hr", w_hr, dtype)
        if w_hr.ndim != 2 or w_hr.shape[0] < 1 or w_hr.shape[1] < 1:
            raise ValueError(f"w_hr must have shape (proj_size, H), got {_fmt(w_hr.shape)}")
        P, H = w_hr.shape
        if w_hh.shape != (G * H, P):
            raise ValueError(f"w_hh must have shape ({G}*H, proj_size) = {_fmt((G * H, P))} "
                             f"with w_hr of shape {_fmt(w_hr.shape)}, got {_fmt(w_hh.shape)}")
    elif w_hh.ndim != 2 or w_hh.shape[1] < 1 or w_hh.shape[0] != G * w_hh.shape[1]:
        raise ValueError(f"w_hh must have shape ({G}*H, H) with H >= 1 for {cell.upper()}, "
                         f"got {_fmt(w_hh.shape)}")
    else:
        H = P = w_hh.shape[1]
    w_ih = _array("w_ih", w_ih, dtype)
    if w_ih.shape != (G * H, I):
        raise ValueError(f"w_ih must have shape ({G}*H, input_size) = {_fmt((G * H, I))} "
                         f"(H = {H} from w_hh, input_size = {I} from x), got {_fmt(w_ih.shape)}")
    return w_ih, w_hh, H, w_hr, P


def _check_sizes(T, B, I, H, G, P=None):
    """Every dimension handed to BLAS must fit its 32-bit integers: checked before any copy."""
    if max(T * B, G * H, I, H, P or 0) <= _BLAS_INT_MAX:
        return
    for what, v in (("T*B", T * B), ("gates per row (G*H)", G * H), ("input_size", I),
                    ("hidden_size", H), ("proj_size", P or 0)):
        if v > _BLAS_INT_MAX:
            raise ValueError(f"{what} = {v} exceeds the BLAS integer limit 2**31-1")


def _state(name, a, dtype, B, H):
    if a is None:
        return np.zeros((B, H), dtype)
    return _contig(_array(name, a, dtype, (B, H)), dtype)


def _bias(name, a, dtype, n):
    return None if a is None else _contig(_array(name, a, dtype, (n,)), dtype)


def _flag(name, v):
    if isinstance(v, (bool, np.bool_)) or (isinstance(v, (int, np.integer)) and v in (0, 1)):
        return bool(v)
    raise TypeError(f"{name} must be True or False, got {v!r}")


def _hbuf(lengths, B, P, dtype):
    """The inference forward's (B, P) h double buffer: only with lengths (rows past their
    length keep their state while y gets zeros); without, h_t is written straight to y_t."""
    return None if lengths is None else _empty64((B, P), dtype)


def _lengths(lengths, T, B):
    """int64 (B,) array of sequence lengths in [0, T], or None."""
    if lengths is None:
        return None
    arr = _asarray("lengths", lengths)
    if arr.shape != (B,):
        raise ValueError(f"lengths must have shape ({B},) (one length per batch entry), "
                         f"got {_fmt(arr.shape)}")
    if arr.dtype == bool or arr.dtype.kind not in "iuf":
        raise TypeError(f"lengths must be integers, got dtype {arr.dtype}")
    if arr.size == 0:
        return np.zeros(0, np.int64)       # e.g. [] (float64) for an empty batch
    if arr.dtype.kind == "f" and not (np.all(np.isfinite(arr)) and np.all(arr == np.round(arr))):
        raise TypeError(f"lengths must be integers, got non-integral values of dtype "
                        f"{arr.dtype}")
    lo, hi = arr.min(), arr.max()
    if lo < 0 or hi > T:
        raise ValueError(f"lengths must lie in [0, T] = [0, {T}], got values in [{lo}, {hi}]")
    return np.ascontiguousarray(arr, dtype=np.int64)


def _forced_split():
    """FASTCELLS_SPLIT=batch|hidden|slices forces the time loop's thread layout (for
    experiments; batch: the grid's batch split, never slice mode; slices: slice mode wherever
    its layout works, see _capi.pxi's train_slices).
    Read at import (reading os.environ cost ~1 us per call); experiments in one process set
    _FORCED_SPLIT (0 = the rule, 1 = batch, 2 = hidden), as tools/ab_compare.py does."""
    return {"batch": 1, "hidden": 2, "slices": 3}.get(os.environ.get("FASTCELLS_SPLIT", ""), 0)


_FORCED_SPLIT = _forced_split()


def _plan(n_threads, flops, B, H, G, P, itemsize, hidden_ok=True, I_loop=0, backward=False):
    """(threads, n_rows, n_cols) for a call: fewer threads for small work, and the time loop's
    thread grid (batch split or hidden-unit split). I_loop: the input width whose weights the
    time loop reads every step (I for an inference forward, 0 otherwise); backward: a backward
    pass (flops twice its forward's; see useful_threads). The rule lives in
    _capi.pxi, shared with the C API."""
    return _kernels.plan(n_threads, flops, B, H, G, P, itemsize, hidden_ok, _FORCED_SPLIT,
                         I_loop, backward)


def _slices(nt, n_rows, n_cols, T, B, I, H, G, P, itemsize, allowed=True):
    """The slice count of a training forward planned as (nt, n_rows, n_cols): 0 for the grid
    layout (_capi.pxi's train_slices, shared with the C API)."""
    return _kernels.slices(nt, n_rows, n_cols, _FORCED_SPLIT, T, B, I, H, G, P, allowed,
                           itemsize)


def _backward_plan(ws, flops, G, hidden_ok=True):
    """(threads, n_rows, n_cols, slices) of a backward: the forward's slices if it ran in
    slice mode (the saved arrays' layout), else _plan."""
    if ws._slices:
        return ws._slices, ws._slices, 1, ws._slices
    T, B, I, H, P = ws._dims
    return _plan(ws.n_threads, flops, B, H, G, P, ws._dtype.itemsize, hidden_ok,
                 backward=True) + (0,)


def _check_ws_type(ws, cell, fn):
    if not isinstance(ws, Workspace):
        raise TypeError(f"{fn}: ws must be the Workspace returned by {cell}_forward(..., "
                        f"training=True), got {type(ws).__name__}"
                        + (" (forward ran with training=False?)" if ws is None else ""))
    if ws._cell != cell:
        raise ValueError(f"{fn}: ws comes from {ws._cell}_forward, not {cell}_forward")


def _take_workspace(ws, cell, fn):
    """Validate ``ws`` and consume it atomically; return its saved arrays."""
    _check_ws_type(ws, cell, fn)
    T, B, I, H, P = ws._dims
    # defence in depth: the saved arrays must be what the dimensions say (kernels trust them)
    arrays = ws._arrays
    if not ws._consumed:
        n = ws._n_threads
        if not isinstance(n, int) or not 1 <= n <= MAX_THREADS:
            raise ValueError(f"{fn}: corrupted workspace (n_threads = {n!r})")
        s = ws._slices
        if s != 0 and (not isinstance(s, int) or not 2 <= s <= MAX_THREADS or _kernels.slices(
                s, s, 1, 3, T, B, I, H, _GATES[cell], P, True, ws._dtype.itemsize) != s):
            raise ValueError(f"{fn}: corrupted workspace (slices = {s!r})")
        spec = _WS_SHAPES[cell](T, B, I, H, P)
        key = _kernels.misfit_array(arrays, spec, ws._dtype)
        if key is not None:
            raise ValueError(f"{fn}: corrupted workspace ({key!r} is not a C-contiguous "
                             f"{ws._dtype} array of shape {_fmt(dict(spec)[key])})")
        lengths = arrays.get("lengths")
        if lengths is not None and not (
                isinstance(lengths, np.ndarray) and lengths.dtype == np.int64
                and lengths.shape == (B,) and lengths.flags.c_contiguous
                and (B == 0 or (lengths.min() >= 0 and lengths.max() <= T))):
            raise ValueError(f"{fn}: corrupted workspace ('lengths')")
    with _CONSUME_LOCK:
        if ws._consumed:
            raise RuntimeError(f"{fn}: this workspace was already used by a backward pass "
                               f"(backward reuses its memory); run the forward pass again")
        ws._consumed = True
        arrays, ws._arrays = ws._arrays, {}
    return arrays


def _grad(name, a, dtype, shape):
    if a is None:
        return None
    if type(a) is not np.ndarray or a.dtype is not dtype:
        a = _asarray(name, a)
        dt = _dtype_of(name, a)
        if dt != dtype:
            raise TypeError(f"{name} has dtype {dt} but the forward pass ran in {dtype}")
    return _contig(_array(name, a, dtype, shape), dtype)


def _empty64(shape, dtype):
    """np.empty for the kernels' own buffers (packed weights, workspace, scratch), starting on a
    64-byte boundary. NumPy's allocations are 16-byte aligned, and every AVX-512 load of a
    misaligned packed-weight panel splits two cache lines: measured on the bench machine, the
    per-step GEMMs of LSTM inference at the large shape ran 12% slower (2 threads, 196-200 vs
    221-227 ms). Arrays handed back to the caller stay plain np.empty (they own their data),
    except a dW_hh (LSTM, GRU) or dx (Elman RNN) that doubles as the backward's packed W_hh
    (see _grad_and_pack, rnn_backward): a view of a longer allocation."""
    return _kernels.empty_aligned(shape, dtype, _ALIGN)


def _pack_buffer(K, N, dtype):
    """Scratch for a K x N weight packed for the per-step GEMM (see csrc/fc_gemm_impl.h)."""
    return _empty64(_kernels.packed_size(K, N, dtype.itemsize), dtype)


# Backward packs W_hh into an output array where it can (see _grad_and_pack); tests switch this
# off to check that both placements give the same bits.
_ALIAS_PACKED = True
# Training forwards project narrow inputs on the packed kernel (see _x_pack); tests switch this
# off to cover the BLAS path at every shape.
_NARROW_X_PACKED = True


def _x_pack(training, I, N, dtype):
    """The packed W_ih^T (I x N) buffer a forward takes, or None.

    Inference projects x per step on it. A training forward projects all T*B rows at once
    before its loop: with BLAS (None), or, for narrow float32 inputs (I up to two panel
    widths, 64), on the packed kernel: with so short a sum per output, OpenBLAS spent a good
    part of the product zeroing the output (beta = 0) and copying x. Paired: Elman RNN small
    (one thread) 0.968-0.973x the training step's time, LSTM latency 0.973-0.984x, LSTM and
    GRU small 0.994-1.003x; in float64 (I <= 32) LSTM took 1.005-1.020x, so float64 stays
    with BLAS. The rule is _capi.pxi's packs_input, shared with the C API (which then gives
    the same bits)."""
    if (not training or _NARROW_X_PACKED) and _kernels.forward_packs_input(I, training,
                                                                         dtype.itemsize):
        return _pack_buffer(I, N, dtype)
    return None


def _grad_and_pack(K, N, dtype):
    """dW_hh (K, N) for a backward, and the buffer that backward packs W_hh (K x N) into.

    LSTM and GRU backward read the packed W_hh only in the time loop and write dW_hh only after
    it, so the two share one 64-byte-aligned buffer: dW_hh is its first K * N elements. The
    packed layout pads N up to a multiple of the panel width (32 columns in float32, 16 in
    float64), so for other N the buffer is up to 31 columns longer than dW_hh. A training step
    then holds no packed copy beyond the gradient it returns: the forward's packed W_hh^T is
    freed before the backward allocates its gradients, which are larger, so the step's peak is
    the saved workspace plus the returned arrays (issue 6, target 3). (The Elman RNN's backward
    accumulates dW_hh chunk by chunk; it puts the packing into dx, see rnn_backward.)"""
    if not _ALIAS_PACKED:
        return np.empty((K, N), dtype), _pack_buffer(K, N, dtype)
    buf = _empty64(_kernels.packed_size(K, N, dtype.itemsize), dtype)
    return buf[:K * N].reshape(K, N), buf


# ------------------------------------------------------------------------------ LSTM
def lstm_forward(x, h0, c0, w_ih, w_hh, b_ih=None, b_hh=None, *, w_hr=None, lengths=None,
                 training=True, n_threads=None):
    """LSTM over a sequence (PyTorch ``nn.LSTM`` math, one layer, one direction).

    x (T, B, I); h0 (B, P), c0 (B, H) or None (zeros); w_ih (4H, I); w_hh (4H, P);
    b_ih, b_hh (4H,) or None; gate order i, f, g, o. P = H, unless ``w_hr`` (P, H) is given:
    PyTorch's ``weight_hr`` (``proj_size = P``), h = W_hr (o * tanh c). ``lengths`` (B,) ints in
    [0, T]: right-padded batch with PyTorch packed-sequence semantics (state frozen and y = 0
    past each length; h_n, c_n taken at the last valid step).

    Returns y (T, B, P), h_n (B, P), c_n (B, H) and the Workspace for :func:`lstm_backward`
    (None when ``training=False``).
    """
    dtype = _call_dtype(x=x, h0=h0, c0=c0, w_ih=w_ih, w_hh=w_hh, b_ih=b_ih, b_hh=b_hh,
                        w_hr=w_hr)
    x = _check_x(x, dtype)
    T, B, I = x.shape
    w_ih, w_hh, H, w_hr, P = _check_weights("lstm", w_ih, w_hh, I, dtype, w_hr)
    _check_sizes(T, B, I, H, 4, P)
    x, w_ih, w_hh, w_hr = (_contig(a, dtype) for a in (x, w_ih, w_hh, w_hr))
    training = _flag("training", training)
    h0 = _state("h0", h0, dtype, B, P)
    c0 = _state("c0", c0, dtype, B, H)
    b_ih, b_hh = _bias("b_ih", b_ih, dtype, 4 * H), _bias("b_hh", b_hh, dtype, 4 * H)
    bias = _sum_bias(b_ih, b_hh, dtype, 4 * H)
    lengths = _lengths(lengths, T, B)
    nt_requested = effective_n_threads(n_threads)
    proj = w_hr is not None
    nt, n_rows, n_cols = _plan(nt_requested, 2.0 * T * B * 4 * H * (I + P) + 2.0 * T * B * P * H,
                               B, H, 4, P, dtype.itemsize, hidden_ok=not proj,
                               I_loop=0 if training else I)
    slices = _slices(nt, n_rows, n_cols, T, B, I, H, 4, P, dtype.itemsize,
                     training and not proj)
    y = np.empty((T, B, P), dtype)
    h_n = np.empty((B, P), dtype)
    c_n = np.empty((B, H), dtype)
    hbuf = None
    if training:
        gates = _empty64((T, B, 4 * H), dtype)
        cs = _empty64((T, B, H), dtype)
        hs = _empty64((T, B, P), dtype)
        us = _empty64((T, B, H), dtype) if proj else None
    else:
        gates = _empty64((B, 4 * H), dtype)   # one step: the input projection runs per step
        cs = hs = None
        us = _empty64((B, H), dtype) if proj else None
        hbuf = _hbuf(lengths, B, P, dtype)
    w_pack = _pack_buffer(P, 4 * H, dtype)
    w_ih_pack = _x_pack(training, I, 4 * H, dtype)
    w_hr_t = np.ascontiguousarray(w_hr.T) if proj else None
    with blas_fallback_limit(nt):
        _kernels.lstm_forward(y, h_n, c_n, gates, cs, hs, us, hbuf, x, h0, c0, w_ih, w_hh, w_pack,
                              w_ih_pack, bias, w_hr_t, lengths, T, B, I, H, P, nt, n_rows, n_cols,
                              slices, set_threads_local_address())
    if not training:
        return y, h_n, c_n, None
    ws = Workspace._new("lstm", dtype, T, B, I, H, nt_requested, b_ih is not None,
                        b_hh is not None,
                        dict(gates=gates, cs=cs, hs=hs, us=us, x=x, h0=h0, c0=c0, w_ih=w_ih,
                             w_hh=w_hh, w_hr=w_hr, lengths=lengths), P=P, slices=slices)
    return y, h_n, c_n, ws


def lstm_backward(dy, dh_n, dc_n, ws):
    """Backward of :func:`lstm_forward`: gradients of a loss given dL/dy, dL/dh_n, dL/dc_n.

    dy (T, B, P), dh_n (B, P), dc_n (B, H), each may be None (zero). Returns
    (dx, dh0, dc0, dw_ih, dw_hh, db_ih, db_hh), plus dw_hr as an 8th element when the forward
    used ``w_hr``; a bias gradient is None when that bias was None. Gradients at padded
    positions of ``dy`` (t >= lengths[b]) are ignored. The workspace is consumed.
    """
    _check_ws_type(ws, "lstm", "lstm_backward")
    dtype, (T, B, I, H, P) = ws._dtype, ws._dims
    dy = _grad("dy", dy, dtype, (T, B, P))
    dh_n = _grad("dh_n", dh_n, dtype, (B, P))
    dc_n = _grad("dc_n", dc_n, dtype, (B, H))
    a = _take_workspace(ws, "lstm", "lstm_backward")
    proj = a.get("w_hr") is not None
    if proj and (a.get("us") is None or a["us"].shape != (T, B, H) or a["w_hr"].shape != (P, H)):
        raise ValueError("lstm_backward: corrupted workspace (projection arrays)")
    dx = np.empty((T, B, I), dtype)
    dh0 = np.empty((B, P), dtype)
    dc0 = np.empty((B, H), dtype)
    dw_ih = np.empty((4 * H, I), dtype)
    dw_hh, w_pack = _grad_and_pack(4 * H, P, dtype)
    db = np.empty(4 * H, dtype) if (ws.has_b_ih or ws.has_b_hh) else None
    dw_hr = np.empty((P, H), dtype) if proj else None
    dhs = _empty64((T, B, P), dtype) if proj else None
    du = _empty64((B, H), dtype) if proj else None
    nt, n_rows, n_cols, slices = _backward_plan(
        ws, 4.0 * T * B * 4 * H * (I + P) + 4.0 * T * B * P * H, 4, hidden_ok=not proj)
    with blas_fallback_limit(nt):
        _kernels.lstm_backward(dx, dh0, dc0, dw_ih, dw_hh, db, dw_hr, a["gates"], a["cs"], a["hs"],
                               a["us"], dhs, du, w_pack, a["x"], a["h0"], a["c0"], a["w_ih"],
                               a["w_hh"], a["w_hr"], dy, dh_n, dc_n, a["lengths"], T, B, I, H, P,
                               nt, n_rows, n_cols, slices, set_threads_local_address())
    db_ih, db_hh = _split_bias_grad(db, ws)
    grads = (dx, dh0, dc0, dw_ih, dw_hh, db_ih, db_hh)
    return grads + (dw_hr,) if proj else grads


def _sum_bias(b_ih, b_hh, dtype, n):
    if b_ih is None and b_hh is None:
        return np.zeros(n, dtype)
    if b_ih is None:
        return b_hh
    if b_hh is None:
        return b_ih
    return b_ih + b_hh


def _split_bias_grad(db, ws):
    """LSTM/RNN: both biases enter the same sum, so both get the same gradient."""
    if db is None:
        return None, None
    return (db if ws.has_b_ih else None), (db.copy() if ws.has_b_ih and ws.has_b_hh else
                                          (db if ws.has_b_hh else None))


# ------------------------------------------------------------------------------ GRU
def gru_forward(x, h0, w_ih, w_hh, b_ih=None, b_hh=None, *, reset_after=True, lengths=None,
                training=True, n_threads=None):
    """GRU over a sequence.

    ``reset_after=True`` is PyTorch's ``nn.GRU`` (b_hn inside the reset product, eq. G3);
    ``reset_after=False`` the classic GRU, n = tanh(x W_in^T + b_in + (r*h) W_hn^T + b_hn)
    (Keras ``reset_after=False``, Cho et al. 2014). x (T, B, I); h0 (B, H) or None; w_ih
    (3H, I); w_hh (3H, H); b_ih, b_hh (3H,) or None; gate order r, z, n. ``lengths`` as in
    :func:`lstm_forward`. Returns y (T, B, H), h_n (B, H), Workspace (None for inference).
    """
    dtype = _call_dtype(x=x, h0=h0, w_ih=w_ih, w_hh=w_hh, b_ih=b_ih, b_hh=b_hh)
    x = _check_x(x, dtype)
    T, B, I = x.shape
    w_ih, w_hh, H, _, _ = _check_weights("gru", w_ih, w_hh, I, dtype)
    _check_sizes(T, B, I, H, 3)
    x, w_ih, w_hh = (_contig(a, dtype) for a in (x, w_ih, w_hh))
    training = _flag("training", training)
    h0 = _state("h0", h0, dtype, B, H)
    b_ih, b_hh = _bias("b_ih", b_ih, dtype, 3 * H), _bias("b_hh", b_hh, dtype, 3 * H)
    kb_ih = b_ih if b_ih is not None else np.zeros(3 * H, dtype)
    kb_hh = b_hh if b_hh is not None else np.zeros(3 * H, dtype)
    lengths = _lengths(lengths, T, B)
    reset_after = _flag("reset_after", reset_after)
    nt_requested = effective_n_threads(n_threads)
    nt, n_rows, n_cols = _plan(nt_requested, 2.0 * T * B * 3 * H * (I + H), B, H, 3, H,
                               dtype.itemsize, hidden_ok=reset_after,
                               I_loop=0 if training else I)
    slices = _slices(nt, n_rows, n_cols, T, B, I, H, 3, H, dtype.itemsize, training)
    y = np.empty((T, B, H), dtype)
    h_n = np.empty((B, H), dtype)
    gh = _empty64((B, 3 * H), dtype)
    hbuf = None
    if training:
        gates = _empty64((T, B, 3 * H), dtype)
        hn = _empty64((T, B, H), dtype)
        hs = _empty64((T, B, H), dtype)
    else:
        gates = _empty64((B, 3 * H), dtype)   # one step: the input projection runs per step
        hn = None if reset_after else _empty64((B, H), dtype)
        hs = None
        hbuf = _hbuf(lengths, B, H, dtype)
    with blas_fallback_limit(nt):
        _kernels.gru_forward(y, h_n, gates, hn, hs, gh, hbuf, x, h0, w_ih, w_hh,
                             _pack_buffer(H, 3 * H, dtype),
                             _x_pack(training, I, 3 * H, dtype), kb_ih, kb_hh,
                             reset_after, lengths, T, B, I, H, nt, n_rows, n_cols, slices,
                             set_threads_local_address())
    if not training:
        return y, h_n, None
    ws = Workspace._new("gru", dtype, T, B, I, H, nt_requested, b_ih is not None,
                        b_hh is not None,
                        dict(gates=gates, hn=hn, hs=hs, x=x, h0=h0, w_ih=w_ih, w_hh=w_hh,
                             lengths=lengths), reset_after=reset_after, slices=slices)
    return y, h_n, ws


def gru_backward(dy, dh_n, ws):
    """Backward of :func:`gru_forward`. dy (T, B, H) and dh_n (B, H) may be None.

    Returns (dx, dh0, dw_ih, dw_hh, db_ih, db_hh); consumes the workspace.
    """
    _check_ws_type(ws, "gru", "gru_backward")
    dtype, (T, B, I, H, _) = ws._dtype, ws._dims
    dy = _grad("dy", dy, dtype, (T, B, H))
    dh_n = _grad("dh_n", dh_n, dtype, (B, H))
    a = _take_workspace(ws, "gru", "gru_backward")
    dx = np.empty((T, B, I), dtype)
    dh0 = np.empty((B, H), dtype)
    dw_ih = np.empty((3 * H, I), dtype)
    dw_hh, w_pack = _grad_and_pack(3 * H, H, dtype)
    db_ih = np.empty(3 * H, dtype) if ws.has_b_ih else None
    db_hh = np.empty(3 * H, dtype) if ws.has_b_hh else None
    dgh = None if ws.reset_after else _empty64((B, H), dtype)   # classic: d(r*h) of a step
    nt, n_rows, n_cols, slices = _backward_plan(ws, 4.0 * T * B * 3 * H * (I + H), 3,
                                                hidden_ok=ws.reset_after)
    with blas_fallback_limit(nt):
        _kernels.gru_backward(dx, dh0, dw_ih, dw_hh, db_ih, db_hh, a["gates"], a["hn"], dgh, w_pack,
                              a["hs"], a["x"], a["h0"], a["w_ih"], a["w_hh"], ws.reset_after, dy,
                              dh_n, a["lengths"], T, B, I, H, nt, n_rows, n_cols, slices,
                              set_threads_local_address())
    return dx, dh0, dw_ih, dw_hh, db_ih, db_hh


# ------------------------------------------------------------------------------ RNN
def _relu_flag(nonlinearity):
    if not isinstance(nonlinearity, str) or nonlinearity not in ("tanh", "relu"):
        raise ValueError(f"nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
    return nonlinearity == "relu"


def rnn_forward(x, h0, w_ih, w_hh, b_ih=None, b_hh=None, *, nonlinearity="tanh", lengths=None,
                training=True, n_threads=None):
    """Elman RNN over a sequence (PyTorch ``nn.RNN``): h' = act(x W_ih^T + b_ih + h W_hh^T + b_hh).

    x (T, B, I); h0 (B, H) or None; w_ih (H, I); w_hh (H, H); b_ih, b_hh (H,) or None;
    nonlinearity 'tanh' or 'relu'; ``lengths`` as in :func:`lstm_forward`.
    Returns y (T, B, H), h_n (B, H), Workspace or None.
    """
    relu = _relu_flag(nonlinearity)
    dtype = _call_dtype(x=x, h0=h0, w_ih=w_ih, w_hh=w_hh, b_ih=b_ih, b_hh=b_hh)
    x = _check_x(x, dtype)
    T, B, I = x.shape
    w_ih, w_hh, H, _, _ = _check_weights("rnn", w_ih, w_hh, I, dtype)
    _check_sizes(T, B, I, H, 1)
    x, w_ih, w_hh = (_contig(a, dtype) for a in (x, w_ih, w_hh))
    training = _flag("training", training)
    h0 = _state("h0", h0, dtype, B, H)
    b_ih, b_hh = _bias("b_ih", b_ih, dtype, H), _bias("b_hh", b_hh, dtype, H)
    bias = _sum_bias(b_ih, b_hh, dtype, H)
    lengths = _lengths(lengths, T, B)
    nt_requested = effective_n_threads(n_threads)
    nt, n_rows, n_cols = _plan(nt_requested, 2.0 * T * B * H * (I + H), B, H, 1, H,
                               dtype.itemsize, I_loop=0 if training else I)
    slices = _slices(nt, n_rows, n_cols, T, B, I, H, 1, H, dtype.itemsize, training)
    y = np.empty((T, B, H), dtype)
    h_n = np.empty((B, H), dtype)
    hs = _empty64((T, B, H), dtype) if training else None
    hbuf = None if training else _hbuf(lengths, B, H, dtype)
    with blas_fallback_limit(nt):
        _kernels.rnn_forward(y, h_n, hs, hbuf, x, h0, w_ih, w_hh, _pack_buffer(H, H, dtype),
                             _x_pack(training, I, H, dtype), bias, lengths, T, B,
                             I, H, relu, nt, n_rows, n_cols, slices, set_threads_local_address())
    if not training:
        return y, h_n, None
    ws = Workspace._new("rnn", dtype, T, B, I, H, nt_requested, b_ih is not None,
                        b_hh is not None,
                        dict(hs=hs, x=x, h0=h0, w_ih=w_ih, w_hh=w_hh, lengths=lengths),
                        nonlinearity=nonlinearity, slices=slices)
    return y, h_n, ws


def rnn_backward(dy, dh_n, ws):
    """Backward of :func:`rnn_forward`. dy (T, B, H) and dh_n (B, H) may be None.

    Returns (dx, dh0, dw_ih, dw_hh, db_ih, db_hh); consumes the workspace.
    """
    _check_ws_type(ws, "rnn", "rnn_backward")
    dtype, (T, B, I, H, _) = ws._dtype, ws._dims
    dy = _grad("dy", dy, dtype, (T, B, H))
    dh_n = _grad("dh_n", dh_n, dtype, (B, H))
    a = _take_workspace(ws, "rnn", "rnn_backward")
    # When dx is large enough (T*B*I >= H*H, rounded up to the panel width) its first rows hold
    # the packed W_hh: the kernel then writes those rows of dx only after its time loop (the
    # same shape test, in _kernels.rnn_bwd), and the step needs no packed copy beyond what it
    # returns (issue 6, target 3).
    # Otherwise (batch 1, short sequences), when H is a multiple of the panel width, the step
    # GEMM reads W_hh in place (w_pack None: the same bits as packed), and the top chunk's dG
    # scratch goes into dx's first rows where they are below that chunk's own rows of dx: the
    # kernel writes them only after that chunk (RNN batch 1 at the latency shape: 2.66x the
    # minimal workspace with a packed copy and a scratch, 1.12x so, ~7 KB of which is the fixed
    # cost of a call; training took 0.96-0.99x the time with W_hh 64-byte aligned, 1.06-1.09x
    # misaligned, paired).
    # And where the top chunk's dG scratch fits in dx after the packing and below that chunk's
    # own rows of dx, it goes there too (rnn_backward_dg_offset; the kernel's chunks are then
    # at least 256 rows: fewer rounds of hoisted products and barriers, no memory for them).
    # In slice mode (the forward's; see _kernels.pyx) dx first holds the slices' weight-gradient
    # partials and then, from rnn_backward_slice_dg_offset, the top chunk's dG (the kernel
    # writes dx last); W_hh is read in place when H is a multiple of the panel width, else
    # packed into a buffer of its own.
    n_pack = _kernels.packed_size(H, H, dtype.itemsize)
    chunk = _kernels.rnn_backward_chunk(T, B, I, H, dtype.itemsize)
    top = min(chunk, T)
    dg = None
    if ws._slices:
        dx = _empty64((T, B, I), dtype)
        dg_off = _kernels.rnn_backward_slice_dg_offset(ws._slices, T, B, I, H, dtype.itemsize)
        dg = dx.reshape(-1)[dg_off:dg_off + top * B * H]
        w_pack = None if n_pack == H * H else _pack_buffer(H, H, dtype)
    elif _ALIAS_PACKED and n_pack <= T * B * I:
        dx = _empty64((T, B, I), dtype)
        w_pack = dx.reshape(-1)[:n_pack]
        dg_off = _kernels.rnn_backward_dg_offset(T, B, I, H, dtype.itemsize)
        if dg_off >= 0:
            dg = dx.reshape(-1)[dg_off:dg_off + top * B * H]
    elif _ALIAS_PACKED and n_pack == H * H:
        dx = _empty64((T, B, I), dtype)
        w_pack = None
        if top * B * H <= (T - top) * B * I:
            dg = dx.reshape(-1)[:top * B * H]
    else:
        dx = np.empty((T, B, I), dtype)
        w_pack = _pack_buffer(H, H, dtype)
    dh0 = np.empty((B, H), dtype)
    dw_ih = np.empty((H, I), dtype)
    dw_hh = np.empty((H, H), dtype)
    db = np.empty(H, dtype) if (ws.has_b_ih or ws.has_b_hh) else None
    if dg is None:
        dg = _empty64((top, B, H), dtype)
    nt, n_rows, n_cols, slices = _backward_plan(ws, 4.0 * T * B * H * (I + H), 1)
    with blas_fallback_limit(nt):
        _kernels.rnn_backward(dx, dh0, dw_ih, dw_hh, db, dg, w_pack, a["hs"], a["x"], a["h0"],
                              a["w_ih"], a["w_hh"], dy, dh_n, a["lengths"], T, B, I, H,
                              ws.nonlinearity == "relu", chunk, nt, n_rows, n_cols, slices,
                              set_threads_local_address())
    db_ih, db_hh = _split_bias_grad(db, ws)
    return dx, dh0, dw_ih, dw_hh, db_ih, db_hh
