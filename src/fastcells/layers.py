"""PyTorch-compatible recurrent layers and cells on the compiled kernels.

``LSTM``, ``GRU`` and ``RNN`` take PyTorch's constructor arguments, parameter names, shapes and
initialisation, so ``fc.LSTM(...).load_state_dict({k: v.numpy() for k, v in
torch_lstm.state_dict().items()})`` reproduces a trained ``nn.LSTM``. They add what NumPy needs
in place of autograd: an explicit ``backward`` that returns the input gradients and accumulates
the parameter gradients into ``module.grads``.

How a layer maps onto the functional kernels (``fastcells.lstm_forward`` and friends)
-------------------------------------------------------------------------------------
* One kernel call per layer and direction; Python loops only over those, never over time or
  batch.
* The reverse direction runs the same forward kernel on the time-reversed input. With
  ``lengths`` each sequence is reversed within its own length (one vectorised gather with a
  precomputed index), so the padding stays at the end, the kernel's ``lengths`` semantics
  apply unchanged, and the same gather (an involution) puts the outputs back in time order.
* Bidirectional outputs are concatenated along the feature axis (forward first), and layer
  ``k > 0`` reads ``num_directions * H_out`` features, as in PyTorch.
* Dropout (training mode, ``dropout > 0``) is inverted dropout on the input of layers ``k >= 1``;
  its masks are saved for backward.
* ``backward`` chains the kernels' backward calls in reverse layer order.

Threads: ``module.n_threads`` (default None: OpenMP's default) is passed to every kernel call.
A bidirectional layer with two or more threads runs its two directions at the same time, each
on half of them (the kernels release the GIL), in forward and in backward; its bits are then
those of the kernels at that per-direction thread count. ``layers.CONCURRENT_DIRECTIONS =
False`` runs them one after the other.

Saved state: a training-mode forward saves the kernels' workspaces; ``backward`` consumes them
(a second ``backward`` raises ``RuntimeError``, like PyTorch without ``retain_graph``). A layer
keeps only its latest forward; a cell keeps a stack, so a Python loop of cell steps can be
back-propagated step by step in reverse order. In ``eval()`` mode nothing is saved.
"""
from collections import namedtuple
from concurrent.futures import ThreadPoolExecutor
import os
import threading
import warnings

import numpy as np

from . import _api
from ._threads import effective_n_threads

__all__ = ["LSTM", "GRU", "RNN", "LSTMCell", "GRUCell", "RNNCell"]

# The functional backend: fastcells._api (compiled kernels). Tests may point it at
# fastcells.reference, which has the same signatures.
_F = _api

_GATES = {"lstm": 4, "gru": 3, "rnn": 1}

IncompatibleKeys = namedtuple("IncompatibleKeys", ["missing_keys", "unexpected_keys"])


# ------------------------------------------------------------------------------ helpers
def _module_dtype(dtype):
    try:
        dt = np.dtype(dtype)
    except TypeError:
        dt = None
    if dt not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise ValueError(f"dtype must be float32 or float64, got {dtype!r}")
    return dt


def _positive_int(name, v, minimum=1):
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {v!r}")
    return int(v)


def _fmt(shape):
    return "(" + ", ".join(str(s) for s in shape) + ("," if len(shape) == 1 else "") + ")"


def _float_array(name, a, dtype):
    """``a`` as an ndarray of exactly the module dtype (no silent casts: TypeError otherwise)."""
    arr = np.asarray(a)
    if arr.dtype != dtype:
        raise TypeError(f"{name} has dtype {arr.dtype} but the module computes in {dtype.name}; "
                        f"convert it with .astype(np.{dtype.name}) (or build the module with "
                        f"dtype=np.{arr.dtype.name} if that is a float type)")
    return arr


def _state_array(name, a, dtype, shape):
    if a is None:
        return None
    arr = _float_array(name, a, dtype)
    if arr.shape != tuple(shape):
        raise ValueError(f"{name} must have shape {_fmt(shape)}, got {_fmt(arr.shape)}")
    return arr


def _check_lengths(lengths, T, B):
    """Validated lengths as an int64 array (B,), or None when every sequence is full-length."""
    arr = np.asarray(lengths)
    if arr.size == 0 and arr.dtype.kind == "f":  # [] for an empty batch
        arr = arr.astype(np.int64)
    if arr.dtype.kind not in "iu":
        raise TypeError(f"lengths must be an array of integers, got dtype {arr.dtype}")
    if arr.shape != (B,):
        raise ValueError(f"lengths must have shape (B,) = ({B},), one length per sequence, "
                         f"got {_fmt(arr.shape)}")
    if B and (arr.min() < 0 or arr.max() > T):
        bad = int(np.flatnonzero((arr < 0) | (arr > T))[0])
        raise ValueError(f"lengths must lie in [0, T] = [0, {T}] (T from the input's time "
                         f"axis), got lengths[{bad}] = {int(arr[bad])}")
    if np.all(arr == T):
        return None
    return np.ascontiguousarray(arr, dtype=np.int64)


class _Reverser:
    """Time reversal of (T, B, F) arrays, each sequence within its own length.

    Without lengths this is ``a[::-1]``. With lengths, position t < L_b of sequence b reads
    position L_b - 1 - t and padded positions stay where they are, so the result is again
    right-padded and the map is its own inverse. One gather over flattened (T*B) rows.
    """

    def __init__(self, lengths, T, B):
        self.rows = None
        if lengths is not None:
            t = np.arange(T)[:, None]
            src_t = np.where(t < lengths[None, :], lengths[None, :] - 1 - t, t)
            self.rows = (src_t * B + np.arange(B)[None, :]).reshape(-1)
            self.T, self.B = T, B

    def __call__(self, a):
        if self.rows is None:
            return a[::-1]
        flat = a.reshape(self.T * self.B, a.shape[2])
        return np.take(flat, self.rows, axis=0).reshape(a.shape)


def _kernel_forward(kind, params, names, x, h0, c0, lengths, training, n_threads, options):
    """One call of the functional forward. Returns (y, h_n, c_n or None, workspace)."""
    w = [None if names[k] is None else params[names[k]] for k in ("w_ih", "w_hh", "b_ih", "b_hh")]
    kw = dict(lengths=lengths, training=training, n_threads=n_threads)
    if kind == "lstm":
        w_hr = None if names["w_hr"] is None else params[names["w_hr"]]
        return _F.lstm_forward(x, h0, c0, *w, w_hr=w_hr, **kw)
    if kind == "gru":
        y, h_n, ws = _F.gru_forward(x, h0, *w, reset_after=options["reset_after"], **kw)
    else:
        y, h_n, ws = _F.rnn_forward(x, h0, *w, nonlinearity=options["nonlinearity"], **kw)
    return y, h_n, None, ws


_GRAD_KEYS = ("w_ih", "w_hh", "b_ih", "b_hh", "w_hr")


def _kernel_backward(kind, names, ws, dy, dh_n, dc_n):
    """One call of the functional backward. Returns (dx, dh0, dc0 or None, {param: grad})."""
    if kind == "lstm":
        res = _F.lstm_backward(dy, dh_n, dc_n, ws)
        dx, dh0, dc0, wgrads = res[0], res[1], res[2], res[3:]
    else:
        back = _F.gru_backward if kind == "gru" else _F.rnn_backward
        res = back(dy, dh_n, ws)
        dx, dh0, dc0, wgrads = res[0], res[1], None, res[2:]
    grads = {names[k]: g for k, g in zip(_GRAD_KEYS, wgrads) if names[k] is not None}
    return dx, dh0, dc0, grads


# Bidirectional layers run their two directions at the same time, each on half the threads:
# the kernels release the GIL and are safe to call concurrently, and one direction alone does
# not use two threads well when the batch or the hidden size is small (at batch 1 a direction
# runs on one thread anyway). Set to False to run the directions one after the other.
CONCURRENT_DIRECTIONS = True
_RNN_TRAIN_CONCURRENT_FLOPS = 64e6   # per direction's forward GEMMs; see _direction_plan
_pool = None
_pool_lock = threading.Lock()


def _direction_pool():
    """The one-worker pool that runs the second direction."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fastcells-direction")
        return _pool


def _forget_pool_after_fork():
    # A forked child has none of the parent's threads: work queued to the parent's pool would
    # never run there, and its lock may have been held at the fork. Start afresh.
    global _pool, _pool_lock
    _pool, _pool_lock = None, threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool_after_fork)


def _direction_plan(kind, D, n_threads, training, T, B, I, H):
    """(threads per direction, concurrent): the effective thread count split in two halves run
    at the same time, or n_threads for each direction one after the other.

    Measured on the bench machine (2 threads, call-by-call alternation, bidirectional layer,
    concurrent / one after the other): LSTM and GRU 0.70-0.87 at batch 1 and 16, 0.93-0.97 at
    charrnn and medium; Elman RNN inference 0.86-0.94; Elman RNN training 0.85 at charrnn but
    1.06-1.09 at batch 1 and 16, where its backward makes many tiny BLAS calls per direction
    (one set per chunk of steps) -- those shapes stay sequential."""
    nt = effective_n_threads(n_threads)
    if D != 2 or nt < 2 or not CONCURRENT_DIRECTIONS:
        return [n_threads] * D, False
    if kind == "rnn" and training and 2.0 * T * B * H * (I + H) < _RNN_TRAIN_CONCURRENT_FLOPS:
        return [n_threads] * D, False
    return [nt // 2, nt - nt // 2], True


def _run_directions(calls, plan):
    """Run ``calls`` (call d as ``f(threads[d])``, ``plan`` from _direction_plan) and return
    their results in order. Concurrent: the second runs in a pool thread while this one runs
    the first. Both always finish before this returns or raises, so no kernel is left running
    on the caller's arrays."""
    threads, concurrent = plan
    if not concurrent:
        return [f(t) for f, t in zip(calls, threads)]
    future = _direction_pool().submit(calls[1], threads[1])
    try:
        first = calls[0](threads[0])
    finally:
        second_exc = future.exception()      # waits for the second direction
    if second_exc is not None:
        raise second_exc
    return [first, future.result()]


# ------------------------------------------------------------------------------ base module
class _Module:
    """Parameters as a dict of C-contiguous arrays, gradients, state dicts, train/eval."""

    _kind = None

    def _init_module(self, dtype, seed, shapes):
        """shapes: list of (name, shape) in PyTorch's parameter order."""
        self.dtype = _module_dtype(dtype)
        self.training = True
        self.n_threads = None
        self._rng = np.random.default_rng(seed)
        # 64-byte aligned, like the kernels' own buffers: where a kernel reads a weight in place
        # (the Elman RNN's batch-1 backward reads W_hh so), a misaligned row splits cache lines
        # (1.06-1.11x the step's time); load_state_dict and updates write into these arrays.
        self._params = {name: _api._empty64(shape, self.dtype) for name, shape in shapes}
        for p in self._params.values():
            p[...] = 0
        self.grads = {name: np.zeros(shape, self.dtype) for name, shape in shapes}
        self.reset_parameters()

    def reset_parameters(self):
        """U(-1/sqrt(H), 1/sqrt(H)) for every parameter, as PyTorch initialises RNNs."""
        k = 1.0 / np.sqrt(self.hidden_size)
        for p in self._params.values():
            p[...] = self._rng.uniform(-k, k, p.shape)

    # -- attribute access to parameters, PyTorch style (module.weight_ih_l0)
    def __getattr__(self, name):
        params = self.__dict__.get("_params")
        if params is not None and name in params:
            return params[name]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __setattr__(self, name, value):
        params = self.__dict__.get("_params")
        if params is not None and name in params:
            self.load_state_dict({name: value}, strict=False)
        else:
            object.__setattr__(self, name, value)

    # -- parameters and gradients
    def named_parameters(self):
        """(name, array) pairs in PyTorch's order. The arrays are the parameters themselves:
        update them in place (``p -= lr * g``) and the module sees the change."""
        return iter(list(self._params.items()))

    def parameters(self):
        return iter(list(self._params.values()))

    def zero_grad(self):
        """Set every accumulated gradient in ``grads`` to zero (in place)."""
        for g in self.grads.values():
            g.fill(0)

    def _accumulate(self, grads):
        for name, g in grads.items():
            if g is not None:
                self.grads[name] += g

    # -- state dicts
    def state_dict(self):
        """A dict name -> copy of the parameter, in PyTorch's order and with PyTorch's names."""
        return {name: p.copy() for name, p in self._params.items()}

    def load_state_dict(self, state_dict, strict=True):
        """Copy parameters in from a mapping of name -> array (anything with ``__array__``:
        NumPy arrays, torch CPU tensors, ...), cast to the module dtype.

        Every name must be known and every shape must match (ValueError naming the key). With
        ``strict=True`` (default) every parameter must be given too. Nothing is changed unless
        everything checks out. Returns ``(missing_keys, unexpected_keys)`` like PyTorch.
        """
        if not hasattr(state_dict, "items"):
            raise TypeError(f"state_dict must be a mapping of name -> array, got "
                            f"{type(state_dict).__name__}")
        unexpected = [k for k in state_dict if k not in self._params]
        missing = [k for k in self._params if k not in state_dict]
        if unexpected:
            raise ValueError(f"state_dict has unexpected key(s) {unexpected}; this "
                             f"{type(self).__name__} has parameters {list(self._params)}")
        if strict and missing:
            raise ValueError(f"state_dict is missing key(s) {missing} (pass strict=False to "
                             f"load a subset)")
        new = {}
        for name, value in state_dict.items():
            target = self._params[name]
            try:
                arr = np.asarray(value)
            except Exception as e:  # e.g. a torch tensor that requires grad
                raise TypeError(f"state_dict[{name!r}] cannot be converted to an array "
                                f"({e}); pass .detach().numpy() for torch tensors") from e
            if arr.shape != target.shape:
                raise ValueError(f"state_dict[{name!r}] has shape {_fmt(arr.shape)}, expected "
                                 f"{_fmt(target.shape)}")
            if arr.dtype.kind not in "fiub":
                raise TypeError(f"state_dict[{name!r}] has non-numeric dtype {arr.dtype}")
            new[name] = arr
        for name, arr in new.items():
            self._params[name][...] = arr  # in place: casts, keeps outside references valid
        return IncompatibleKeys(missing, unexpected)

    # -- modes
    def train(self, mode=True):
        """Training mode: forward saves workspaces for backward and applies dropout."""
        self.training = bool(mode)
        return self

    def eval(self):
        """Inference mode: no dropout, nothing saved (backward raises RuntimeError)."""
        return self.train(False)

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)


# ------------------------------------------------------------------------------ layers
class _RNNBase(_Module):
    def __init__(self, kind, input_size, hidden_size, num_layers, bias, batch_first, dropout,
                 bidirectional, proj_size, dtype, seed, options):
        self._kind = kind
        self.input_size = _positive_int("input_size", input_size)
        self.hidden_size = _positive_int("hidden_size", hidden_size)
        self.num_layers = _positive_int("num_layers", num_layers)
        self.bias = bool(bias)
        self.batch_first = bool(batch_first)
        if (isinstance(dropout, bool) or not isinstance(dropout, (int, float, np.floating))
                or not 0 <= dropout <= 1):
            raise ValueError(f"dropout must be a number in [0, 1], got {dropout!r}")
        self.dropout = float(dropout)
        if self.dropout > 0 and self.num_layers == 1:
            warnings.warn(f"dropout={self.dropout} has no effect with num_layers=1: dropout "
                          f"applies between layers (as in PyTorch)", UserWarning, stacklevel=3)
        self.bidirectional = bool(bidirectional)
        proj_size = _positive_int("proj_size", proj_size, minimum=0)
        if proj_size >= self.hidden_size:
            raise ValueError(f"proj_size must be smaller than hidden_size ({self.hidden_size}), "
                             f"got {proj_size}")
        self.proj_size = proj_size
        self._options = options
        H, G, D = self.hidden_size, _GATES[kind], self.num_directions
        self._h_out = proj_size or H
        shapes = []
        self._names = []  # [layer][direction] -> dict of parameter names (None if absent)
        for k in range(self.num_layers):
            layer_in = self.input_size if k == 0 else D * self._h_out
            per_dir = []
            for d in range(D):
                sfx = f"_l{k}" + ("_reverse" if d else "")
                names = dict(w_ih="weight_ih" + sfx, w_hh="weight_hh" + sfx,
                             b_ih="bias_ih" + sfx if self.bias else None,
                             b_hh="bias_hh" + sfx if self.bias else None,
                             w_hr="weight_hr" + sfx if proj_size else None)
                shapes += [(names["w_ih"], (G * H, layer_in)),
                           (names["w_hh"], (G * H, self._h_out))]
                if self.bias:
                    shapes += [(names["b_ih"], (G * H,)), (names["b_hh"], (G * H,))]
                if proj_size:
                    shapes.append((names["w_hr"], (proj_size, H)))
                per_dir.append(names)
            self._names.append(per_dir)
        self._saved = None
        self._init_module(dtype, seed, shapes)

    @property
    def num_directions(self):
        return 2 if self.bidirectional else 1

    def clear_saved(self):
        """Drop what the latest training-mode forward saved for backward (frees its memory)."""
        self._saved = None

    def __repr__(self):
        s = f"{type(self).__name__}({self.input_size}, {self.hidden_size}"
        if self.proj_size:
            s += f", proj_size={self.proj_size}"
        if self.num_layers != 1:
            s += f", num_layers={self.num_layers}"
        if self._kind == "rnn" and self._options["nonlinearity"] != "tanh":
            s += f", nonlinearity={self._options['nonlinearity']!r}"
        if not self.bias:
            s += ", bias=False"
        if self.batch_first:
            s += ", batch_first=True"
        if self.dropout:
            s += f", dropout={self.dropout}"
        if self.bidirectional:
            s += ", bidirectional=True"
        if self._kind == "gru" and not self._options["reset_after"]:
            s += ", reset_after=False"
        if self.dtype != np.float32:
            s += f", dtype={self.dtype.name}"
        return s + ")"

    # -- argument handling
    def _time_major_input(self, input):
        x = _float_array("input", input, self.dtype)
        if x.ndim not in (2, 3):
            layout = "(B, T, input_size)" if self.batch_first else "(T, B, input_size)"
            raise ValueError(f"input must be 3-D {layout} or 2-D (T, input_size) for one "
                             f"unbatched sequence, got shape {_fmt(x.shape)}")
        if x.shape[-1] != self.input_size:
            raise ValueError(f"input has {x.shape[-1]} features (last axis) but input_size is "
                             f"{self.input_size}; got shape {_fmt(x.shape)}")
        if x.ndim == 2:
            return x[:, None, :], False
        return (x.swapaxes(0, 1) if self.batch_first else x), True

    def _state_shapes(self, B, batched):
        LD = self.num_layers * self.num_directions
        h = (LD, B, self._h_out) if batched else (LD, self._h_out)
        c = (LD, B, self.hidden_size) if batched else (LD, self.hidden_size)
        return h, c

    def _states(self, hx, B, batched, names):
        """(h, c) as (L*D, B, .) arrays or None, from hx in the caller's layout.

        names: ("hx", None) for GRU/RNN; ("hx[0] (h0)", "hx[1] (c0)") for the LSTM.
        """
        h_shape, c_shape = self._state_shapes(B, batched)
        if self._kind == "lstm":
            if hx is None:
                h = c = None
            else:
                if not isinstance(hx, (tuple, list)) or len(hx) != 2:
                    raise ValueError(f"{names[0].split('[')[0]} must be a tuple (h0, c0) for "
                                     f"the LSTM, got {type(hx).__name__}")
                h = _state_array(names[0], hx[0], self.dtype, h_shape)
                c = _state_array(names[1], hx[1], self.dtype, c_shape)
        else:
            h = _state_array(names[0], hx, self.dtype, h_shape)
            c = None
        if not batched:
            h = None if h is None else h[:, None, :]
            c = None if c is None else c[:, None, :]
        return h, c

    def _dropout_mask(self, shape):
        p = self.dropout
        if p >= 1:
            return np.zeros(shape, self.dtype)
        keep = self._rng.random(shape, dtype=self.dtype) >= p
        return np.multiply(keep, 1.0 / (1.0 - p), dtype=self.dtype)

    # -- forward / backward
    def _forward(self, input, hx, lengths):
        x, batched = self._time_major_input(input)
        T, B = x.shape[0], x.shape[1]
        if lengths is not None:
            if not batched:
                raise ValueError("lengths is only supported for batched input (3-D); an "
                                 "unbatched sequence has a single length: slice it instead")
            lengths = _check_lengths(lengths, T, B)
        is_lstm = self._kind == "lstm"
        state_names = ("hx[0] (h0)", "hx[1] (c0)") if is_lstm else ("hx", None)
        h0, c0 = self._states(hx, B, batched, state_names)
        L, D, Ho, H = self.num_layers, self.num_directions, self._h_out, self.hidden_size
        reverse = _Reverser(lengths, T, B)
        training = self.training
        h_n = np.empty((L * D, B, Ho), self.dtype)
        c_n = np.empty((L * D, B, H), self.dtype) if is_lstm else None
        saved = []
        layer_in = x
        plans = []
        for k in range(L):
            mask = None
            if k > 0 and training and self.dropout > 0:
                mask = self._dropout_mask(layer_in.shape)
                layer_in = layer_in * mask
            out = None
            workspaces = []
            inputs = [layer_in] if D == 1 else [layer_in, reverse(layer_in)]
            plans.append(_direction_plan(self._kind, D, self.n_threads, training, T, B,
                                         layer_in.shape[2], H))
            results = _run_directions(
                [lambda nt, d=d, i=k * D + d: _kernel_forward(
                    self._kind, self._params, self._names[k][d], inputs[d],
                    None if h0 is None else h0[i], None if c0 is None else c0[i],
                    lengths, training, nt, self._options) for d in range(D)], plans[k])
            for d, (y, h, c, ws) in enumerate(results):
                i = k * D + d
                h_n[i] = h
                if is_lstm:
                    c_n[i] = c
                workspaces.append(ws)
                if D == 1:
                    out = y
                else:
                    if out is None:
                        out = np.empty((T, B, D * Ho), self.dtype)
                    out[:, :, d * Ho:(d + 1) * Ho] = reverse(y) if d else y
            saved.append((mask, workspaces))
            layer_in = out
        self._saved = (dict(layers=saved, reverse=reverse, T=T, B=B, batched=batched,
                            plans=plans) if training else None)
        y = layer_in
        if not batched:
            y, h_n = y[:, 0], h_n[:, 0]
            c_n = None if c_n is None else c_n[:, 0]
        elif self.batch_first:
            y = np.ascontiguousarray(y.swapaxes(0, 1))
        return y, h_n, c_n

    def _backward(self, dy, dh_n, dc_n):
        saved = self._saved
        if saved is None:
            raise RuntimeError(
                f"{type(self).__name__}.backward needs a preceding forward in training mode: "
                f"eval() forwards save nothing, and each backward consumes what its forward "
                f"saved (run forward again)")
        T, B, batched = saved["T"], saved["B"], saved["batched"]
        L, D, Ho = self.num_layers, self.num_directions, self._h_out
        h_shape, c_shape = self._state_shapes(B, batched)
        if batched:
            y_shape = (B, T, D * Ho) if self.batch_first else (T, B, D * Ho)
        else:
            y_shape = (T, D * Ho)
        is_lstm = self._kind == "lstm"
        dy = _state_array("dy", dy, self.dtype, y_shape)
        dh_n = _state_array("dh_n", dh_n, self.dtype, h_shape)
        dc_n = _state_array("dc_n", dc_n, self.dtype, c_shape) if is_lstm else None
        self._saved = None  # consumed: the kernels reuse the workspaces' memory
        if dy is not None:
            dy = dy[:, None, :] if not batched else (dy.swapaxes(0, 1) if self.batch_first else dy)
        if not batched:
            dh_n = None if dh_n is None else dh_n[:, None, :]
            dc_n = None if dc_n is None else dc_n[:, None, :]
        reverse = saved["reverse"]
        dh0 = np.empty((L * D, B, Ho), self.dtype)
        dc0 = np.empty((L * D, B, self.hidden_size), self.dtype) if is_lstm else None
        d_out = dy  # gradient w.r.t. the current layer's output, (T, B, D*Ho) or None
        for k in reversed(range(L)):
            mask, workspaces = saved["layers"][k]
            d_in = None
            dys = []
            for d in range(D):
                dy_d = None if d_out is None else d_out[:, :, d * Ho:(d + 1) * Ho]
                dys.append(reverse(dy_d) if d and dy_d is not None else dy_d)
            # each backward runs on its forward's threads (kept in the workspace), and at the
            # same time as the other direction's if the forwards ran that way
            results = _run_directions(
                [lambda nt, d=d, i=k * D + d: _kernel_backward(
                    self._kind, self._names[k][d], workspaces[d], dys[d],
                    None if dh_n is None else dh_n[i], None if dc_n is None else dc_n[i])
                 for d in range(D)], saved["plans"][k])
            for d, (dx, dh, dc, grads) in enumerate(results):
                i = k * D + d
                dh0[i] = dh
                if is_lstm:
                    dc0[i] = dc
                self._accumulate(grads)
                if d:
                    dx = reverse(dx)
                d_in = dx if d_in is None else d_in + dx
            if mask is not None:
                d_in = d_in * mask
            d_out = d_in
        dx = d_out
        if not batched:
            dx, dh0 = dx[:, 0], dh0[:, 0]
            dc0 = None if dc0 is None else dc0[:, 0]
        elif self.batch_first:
            dx = np.ascontiguousarray(dx.swapaxes(0, 1))
        return dx, dh0, dc0


class LSTM(_RNNBase):
    """Multi-layer LSTM with PyTorch's ``nn.LSTM`` arguments, parameters and semantics.

    ``y, (h_n, c_n) = lstm(x, (h0, c0), lengths=None)``; ``hx`` may be omitted (zeros).
    ``dx, (dh0, dc0) = lstm.backward(dy, (dh_n, dc_n))``; any of dy, dh_n, dc_n may be None.

    Shapes (D = 2 if bidirectional else 1, H_out = proj_size or hidden_size):
    x (T, B, input_size), or (B, T, input_size) with batch_first, or (T, input_size) unbatched;
    y (T, B, D*H_out) in the same layout; h0, h_n (num_layers*D, B, H_out);
    c0, c_n (num_layers*D, B, hidden_size) (no B axis for unbatched input).
    ``lengths`` (B,) integers in [0, T]: right-padded sequences with PyTorch's
    ``pack_padded_sequence(..., enforce_sorted=False)`` semantics.
    """

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
                 dropout=0.0, bidirectional=False, proj_size=0, dtype=np.float32, seed=None):
        super().__init__("lstm", input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional, proj_size, dtype, seed, {})

    def forward(self, input, hx=None, lengths=None):
        y, h_n, c_n = self._forward(input, hx, lengths)
        return y, (h_n, c_n)

    def backward(self, dy=None, dhx=None):
        """Gradients of the loss given dL/dy and ``dhx = (dh_n, dc_n)`` (each may be None).

        Returns ``dx, (dh0, dc0)`` and adds every parameter gradient into ``self.grads``.
        """
        if dhx is None:
            dh_n = dc_n = None
        elif isinstance(dhx, (tuple, list)) and len(dhx) == 2:
            dh_n, dc_n = dhx
        else:
            raise ValueError(f"dhx must be a tuple (dh_n, dc_n) or None, got "
                             f"{type(dhx).__name__}")
        dx, dh0, dc0 = self._backward(dy, dh_n, dc_n)
        return dx, (dh0, dc0)


class _HiddenStateRNN(_RNNBase):
    """Layers whose state is h alone (GRU, RNN): ``y, h_n = layer(x, h0)``."""

    def forward(self, input, hx=None, lengths=None):
        y, h_n, _ = self._forward(input, hx, lengths)
        return y, h_n

    def backward(self, dy=None, dh_n=None):
        """Returns ``dx, dh0``; adds every parameter gradient into ``self.grads``."""
        dx, dh0, _ = self._backward(dy, dh_n, None)
        return dx, dh0


class GRU(_HiddenStateRNN):
    """Multi-layer GRU with PyTorch's ``nn.GRU`` arguments, parameters and semantics.

    ``y, h_n = gru(x, h0=None, lengths=None)``; ``dx, dh0 = gru.backward(dy, dh_n)``.
    ``reset_after=True`` is PyTorch's GRU (reset gate applied to ``h W_hn^T + b_hn``);
    ``reset_after=False`` is the classic GRU of Cho et al. 2014 / Keras ``reset_after=False``
    (reset applied to h before the recurrent matmul). Same parameters either way.
    Shapes as for :class:`LSTM` with H_out = hidden_size.
    """

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
                 dropout=0.0, bidirectional=False, dtype=np.float32, seed=None,
                 reset_after=True):
        super().__init__("gru", input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional, 0, dtype, seed, {"reset_after": bool(reset_after)})

    @property
    def reset_after(self):
        return self._options["reset_after"]


class RNN(_HiddenStateRNN):
    """Multi-layer Elman RNN with PyTorch's ``nn.RNN`` arguments (``nonlinearity`` 'tanh' or
    'relu', 4th positional as in PyTorch), parameters and semantics.

    ``y, h_n = rnn(x, h0=None, lengths=None)``; ``dx, dh0 = rnn.backward(dy, dh_n)``.
    """

    def __init__(self, input_size, hidden_size, num_layers=1, nonlinearity="tanh", bias=True,
                 batch_first=False, dropout=0.0, bidirectional=False, dtype=np.float32,
                 seed=None):
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
        super().__init__("rnn", input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional, 0, dtype, seed, {"nonlinearity": nonlinearity})

    @property
    def nonlinearity(self):
        return self._options["nonlinearity"]


# ------------------------------------------------------------------------------ cells
class _CellBase(_Module):
    def __init__(self, kind, input_size, hidden_size, bias, dtype, seed, options):
        self._kind = kind
        self.input_size = _positive_int("input_size", input_size)
        self.hidden_size = _positive_int("hidden_size", hidden_size)
        self.bias = bool(bias)
        self._options = options
        G, H = _GATES[kind], self.hidden_size
        self._names = dict(w_ih="weight_ih", w_hh="weight_hh",
                           b_ih="bias_ih" if self.bias else None,
                           b_hh="bias_hh" if self.bias else None, w_hr=None)
        shapes = [("weight_ih", (G * H, self.input_size)), ("weight_hh", (G * H, H))]
        if self.bias:
            shapes += [("bias_ih", (G * H,)), ("bias_hh", (G * H,))]
        self._saved = []  # stack of (workspace, batched), one per training-mode step
        self._init_module(dtype, seed, shapes)

    def __repr__(self):
        s = f"{type(self).__name__}({self.input_size}, {self.hidden_size}"
        if not self.bias:
            s += ", bias=False"
        if self._kind == "rnn" and self._options["nonlinearity"] != "tanh":
            s += f", nonlinearity={self._options['nonlinearity']!r}"
        if self._kind == "gru" and not self._options["reset_after"]:
            s += ", reset_after=False"
        if self.dtype != np.float32:
            s += f", dtype={self.dtype.name}"
        return s + ")"

    @property
    def n_saved(self):
        """Number of training-mode steps saved and not yet back-propagated."""
        return len(self._saved)

    def clear_saved(self):
        """Drop every saved step (e.g. after a forward-only rollout in training mode)."""
        self._saved.clear()

    def _step_forward(self, input, h, c):
        x = _float_array("input", input, self.dtype)
        if x.ndim not in (1, 2):
            raise ValueError(f"input must be 2-D (B, input_size) or 1-D (input_size,), got "
                             f"shape {_fmt(x.shape)}")
        if x.shape[-1] != self.input_size:
            raise ValueError(f"input has {x.shape[-1]} features (last axis) but input_size is "
                             f"{self.input_size}; got shape {_fmt(x.shape)}")
        batched = x.ndim == 2
        B = x.shape[0] if batched else 1
        shape = (B, self.hidden_size) if batched else (self.hidden_size,)
        hname, cname = ("hx[0] (h)", "hx[1] (c)") if self._kind == "lstm" else ("hx", None)
        h = _state_array(hname, h, self.dtype, shape)
        c = _state_array(cname, c, self.dtype, shape) if self._kind == "lstm" else None
        if not batched:
            h = None if h is None else h[None]
            c = None if c is None else c[None]
        x3 = x[None] if batched else x[None, None]
        _, h_new, c_new, ws = _kernel_forward(self._kind, self._params, self._names, x3, h, c,
                                              None, self.training, self.n_threads,
                                              self._options)
        if self.training:
            self._saved.append((ws, batched, B))
        if not batched:
            h_new = h_new[0]
            c_new = None if c_new is None else c_new[0]
        return h_new, c_new

    def _step_backward(self, dh, dc):
        if not self._saved:
            raise RuntimeError(
                f"{type(self).__name__}.backward needs a preceding forward in training mode "
                f"(eval() forwards save nothing; each backward consumes the most recent saved "
                f"step)")
        ws, batched, B = self._saved[-1]
        shape = (B, self.hidden_size) if batched else (self.hidden_size,)
        names = ("dh", "dc") if self._kind == "lstm" else ("dh", None)
        dh = _state_array(names[0], dh, self.dtype, shape)
        dc = _state_array(names[1], dc, self.dtype, shape) if self._kind == "lstm" else None
        self._saved.pop()
        if not batched:
            dh = None if dh is None else dh[None]
            dc = None if dc is None else dc[None]
        dx, dh_prev, dc_prev, grads = _kernel_backward(self._kind, self._names, ws, None, dh, dc)
        self._accumulate(grads)
        dx = dx[0] if batched else dx[0, 0]
        if not batched:
            dh_prev = dh_prev[0]
            dc_prev = None if dc_prev is None else dc_prev[0]
        return dx, dh_prev, dc_prev


class LSTMCell(_CellBase):
    """One LSTM step with ``nn.LSTMCell``'s names and semantics.

    ``h1, c1 = cell(x, (h0, c0))``: x (B, input_size) or (input_size,); h, c (B, hidden_size)
    or (hidden_size,); hx may be omitted (zeros).
    ``dx, (dh0, dc0) = cell.backward(dh1, dc1)`` (either may be None) back-propagates the most
    recent saved step and adds the parameter gradients into ``grads``. Steps are saved on a
    stack, so after a Python loop of T steps, T backward calls in reverse order give BPTT.
    """

    def __init__(self, input_size, hidden_size, bias=True, dtype=np.float32, seed=None):
        super().__init__("lstm", input_size, hidden_size, bias, dtype, seed, {})

    def forward(self, input, hx=None):
        if hx is None:
            h = c = None
        elif isinstance(hx, (tuple, list)) and len(hx) == 2:
            h, c = hx
        else:
            raise ValueError(f"hx must be a tuple (h, c) or None, got {type(hx).__name__}")
        return self._step_forward(input, h, c)

    def backward(self, dh=None, dc=None):
        if isinstance(dh, (tuple, list)) and dc is None:  # backward((dh, dc)) also accepted
            if len(dh) != 2:
                raise ValueError("dh must be an array, or a tuple (dh, dc)")
            dh, dc = dh
        dx, dh_prev, dc_prev = self._step_backward(dh, dc)
        return dx, (dh_prev, dc_prev)


class GRUCell(_CellBase):
    """One GRU step with ``nn.GRUCell``'s names and semantics: ``h1 = cell(x, h0)``,
    ``dx, dh0 = cell.backward(dh1)``. ``reset_after=False`` gives the classic GRU (see
    :class:`GRU`). Saved steps form a stack, as for :class:`LSTMCell`."""

    def __init__(self, input_size, hidden_size, bias=True, dtype=np.float32, seed=None,
                 reset_after=True):
        super().__init__("gru", input_size, hidden_size, bias, dtype, seed,
                         {"reset_after": bool(reset_after)})

    @property
    def reset_after(self):
        return self._options["reset_after"]

    def forward(self, input, hx=None):
        return self._step_forward(input, hx, None)[0]

    def backward(self, dh=None):
        dx, dh_prev, _ = self._step_backward(dh, None)
        return dx, dh_prev


class RNNCell(_CellBase):
    """One Elman-RNN step with ``nn.RNNCell``'s names and semantics (``nonlinearity`` 'tanh' or
    'relu'): ``h1 = cell(x, h0)``, ``dx, dh0 = cell.backward(dh1)``. Saved steps form a stack,
    as for :class:`LSTMCell`."""

    def __init__(self, input_size, hidden_size, bias=True, nonlinearity="tanh",
                 dtype=np.float32, seed=None):
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
        super().__init__("rnn", input_size, hidden_size, bias, dtype, seed,
                         {"nonlinearity": nonlinearity})

    @property
    def nonlinearity(self):
        return self._options["nonlinearity"]

    def forward(self, input, hx=None):
        return self._step_forward(input, hx, None)[0]

    def backward(self, dh=None):
        dx, dh_prev, _ = self._step_backward(dh, None)
        return dx, dh_prev
