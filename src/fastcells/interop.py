"""Weight conversion between Keras recurrent layers and fastcells (PyTorch layout).

Keras stores a recurrent layer as ``kernel`` (I, G·H), ``recurrent_kernel`` (H, G·H) and an
optional ``bias``, with the gates side by side along the columns; fastcells (like PyTorch)
stores ``weight_ih`` (G·H, I), ``weight_hh`` (G·H, H) and two biases, ``bias_ih`` and
``bias_hh``, with the gates stacked along the rows. The conversions here transpose, reorder
the gates and split or merge the biases:

==========  ==================  ==============  ==========================================
Keras       gate order          bias            fastcells module
==========  ==================  ==============  ==========================================
LSTM        i, f, c, o          (4H,)           ``LSTM`` (order i, f, g, o: the same)
GRU         z, r, h             (2, 3H)         ``GRU(reset_after=True)`` (order r, z, n);
            reset_after=True    input, recur.   bias[0] -> bias_ih, bias[1] -> bias_hh
GRU         z, r, h             (3H,)           ``GRU(reset_after=False)``; the single bias
            reset_after=False                   goes to bias_ih and bias_hh is zero
SimpleRNN   --                  (H,)            ``RNN`` (same ``activation``)
==========  ==================  ==============  ==========================================

A single Keras bias becomes ``bias_ih`` with ``bias_hh = 0``; going back, the two fastcells
biases are summed. Both are exact: the two biases only ever enter as their sum (LSTM, RNN,
classic GRU), except the GRU's candidate bias under ``reset_after=True``, which Keras keeps
split as well. Keras' default activations are assumed (tanh, and sigmoid for the gates,
which is Keras' default since 2.3); fastcells LSTMs with projections have no Keras equivalent.

Example::

    import numpy as np
    import fastcells as fc
    from fastcells import interop

    # keras_layer = keras.layers.GRU(32)  (reset_after=True, the default), built on 16 features
    weights = keras_layer.get_weights()          # [kernel, recurrent_kernel, bias]
    gru = fc.GRU(16, 32, reset_after=True)
    gru.load_state_dict(interop.from_keras("gru", weights))

    # and back: keras_layer.set_weights(interop.to_keras(gru))

    # stacked / bidirectional: one get_weights() list per Keras layer
    lstm = fc.LSTM(16, 32, num_layers=2, bidirectional=True)
    lstm.load_state_dict(interop.from_keras_stack("lstm", [w.get_weights() for w in keras_layers],
                                                  bidirectional=True))
"""
import numpy as np

__all__ = ["from_keras", "to_keras", "from_keras_stack", "to_keras_stack"]

_GATES = {"lstm": 4, "gru": 3, "rnn": 1}
# Keras GRU columns are z, r, h; fastcells/PyTorch rows are r, z, n: block j of fastcells is
# block _GRU_FROM_KERAS[j] of Keras (the permutation is its own inverse).
_GRU_FROM_KERAS = (1, 0, 2)


def _kind(cell):
    kind = {"lstm": "lstm", "gru": "gru", "rnn": "rnn", "simplernn": "rnn"}.get(str(cell).lower())
    if kind is None:
        raise ValueError(f"cell must be 'lstm', 'gru' or 'rnn' (Keras SimpleRNN), got {cell!r}")
    return kind


def _reorder(a, kind, axis):
    """Swap the GRU's first two gate blocks along ``axis`` (no-op for LSTM and RNN)."""
    if kind != "gru":
        return a
    blocks = np.split(a, 3, axis=axis)
    return np.concatenate([blocks[j] for j in _GRU_FROM_KERAS], axis=axis)


def _as_float(name, a):
    arr = np.asarray(a)
    if arr.dtype.kind != "f":
        if arr.dtype.kind not in "iub":
            raise TypeError(f"{name} must be a numeric array, got dtype {arr.dtype}")
        arr = arr.astype(np.float64)
    return arr


def _keras_triple(weights):
    """(kernel, recurrent_kernel, bias or None) from a get_weights() list or a mapping."""
    if hasattr(weights, "items"):
        found = {}
        for key, value in weights.items():
            short = str(key).split("/")[-1].split(":")[0]
            if short not in ("kernel", "recurrent_kernel", "bias"):
                raise ValueError(f"weights has unexpected key {key!r}; expected 'kernel', "
                                 f"'recurrent_kernel' and optionally 'bias'")
            found[short] = value
        for k in ("kernel", "recurrent_kernel"):
            if k not in found:
                raise ValueError(f"weights is missing {k!r}")
        return found["kernel"], found["recurrent_kernel"], found.get("bias")
    weights = list(weights)
    if len(weights) not in (2, 3):
        raise ValueError(f"weights must be [kernel, recurrent_kernel] or [kernel, "
                         f"recurrent_kernel, bias] (one Keras layer's get_weights()), got "
                         f"{len(weights)} arrays")
    return weights[0], weights[1], (weights[2] if len(weights) == 3 else None)


def _suffix(layer, reverse):
    if isinstance(layer, bool) or not isinstance(layer, (int, np.integer)) or layer < 0:
        raise ValueError(f"layer must be an integer >= 0, got {layer!r}")
    return f"_l{layer}" + ("_reverse" if reverse else "")


def from_keras(cell, weights, *, layer=0, reverse=False, reset_after=None):
    """fastcells state-dict entries from one Keras LSTM / GRU / SimpleRNN layer.

    ``weights``: ``keras_layer.get_weights()`` (``[kernel, recurrent_kernel]`` or
    ``[kernel, recurrent_kernel, bias]``), or a mapping with those names (path prefixes such
    as ``"gru/gru_cell/kernel:0"`` are fine). ``layer`` and ``reverse`` pick the names
    (``weight_ih_l{layer}[_reverse]`` ...), so entries of several Keras layers can be merged
    into one dict for a stacked or bidirectional module. For a GRU, ``reset_after`` defaults
    to what the bias shape says ((2, 3H): True, (3H,): False); the fastcells GRU must be built
    with the same ``reset_after``. Returns a dict name -> array (new arrays).
    """
    kind = _kind(cell)
    G = _GATES[kind]
    sfx = _suffix(layer, reverse)
    kernel, recurrent, bias = _keras_triple(weights)
    kernel, recurrent = _as_float("kernel", kernel), _as_float("recurrent_kernel", recurrent)
    if recurrent.ndim != 2 or recurrent.shape[1] != G * recurrent.shape[0]:
        raise ValueError(f"recurrent_kernel must have shape (H, {G}*H) for a Keras "
                         f"{kind.upper()}, got {recurrent.shape}")
    H = recurrent.shape[0]
    if kernel.ndim != 2 or kernel.shape[1] != G * H:
        raise ValueError(f"kernel must have shape (input_size, {G}*H) = (input_size, {G * H}) "
                         f"(H = {H} from recurrent_kernel), got {kernel.shape}")
    out = {"weight_ih" + sfx: np.ascontiguousarray(_reorder(kernel, kind, 1).T),
           "weight_hh" + sfx: np.ascontiguousarray(_reorder(recurrent, kind, 1).T)}
    if bias is None:
        return out
    bias = _as_float("bias", bias)
    split = bias.shape == (2, G * H)
    if kind == "gru":
        if not split and bias.shape != (G * H,):
            raise ValueError(f"bias must have shape (2, {G * H}) (reset_after=True) or "
                             f"({G * H},) (reset_after=False), got {bias.shape}")
        if reset_after is not None and bool(reset_after) != split:
            raise ValueError(f"reset_after={reset_after} but the bias shape {bias.shape} is "
                             f"that of a Keras GRU with reset_after={split}")
    elif bias.shape != (G * H,):
        raise ValueError(f"bias must have shape ({G * H},), got {bias.shape}")
    if split:
        b_ih, b_hh = bias[0], bias[1]
    else:
        b_ih, b_hh = bias, np.zeros_like(bias)
    out["bias_ih" + sfx] = np.ascontiguousarray(_reorder(b_ih, kind, 0))
    out["bias_hh" + sfx] = np.ascontiguousarray(_reorder(b_hh, kind, 0))
    return out


def _module_info(source, cell, reset_after):
    """(kind, state dict, reset_after) from a fastcells module or a state dict."""
    if hasattr(source, "state_dict") and hasattr(source, "_kind"):
        kind = source._kind
        if cell is not None and _kind(cell) != kind:
            raise ValueError(f"cell={cell!r} but the module is a {type(source).__name__}")
        mod_reset = getattr(source, "reset_after", None)
        if reset_after is not None and mod_reset is not None and bool(reset_after) != mod_reset:
            raise ValueError(f"reset_after={reset_after} but the module has "
                             f"reset_after={mod_reset}")
        if getattr(source, "proj_size", 0):
            raise ValueError("Keras has no LSTM with projections (proj_size > 0)")
        return kind, source.state_dict(), mod_reset if mod_reset is not None else reset_after
    if cell is None:
        raise ValueError("cell ('lstm', 'gru' or 'rnn') is required when converting a "
                         "state dict")
    return _kind(cell), source, reset_after


def to_keras(source, cell=None, *, layer=0, reverse=False, reset_after=None):
    """Keras ``set_weights()`` list for one layer and direction of a fastcells module.

    ``source`` is a fastcells ``LSTM``/``GRU``/``RNN`` (or cell) module, or a state dict
    together with ``cell``. Returns ``[kernel, recurrent_kernel, bias]`` (``[kernel,
    recurrent_kernel]`` without bias) for the parameters ``*_l{layer}[_reverse]`` (plain
    ``weight_ih`` ... for a cell module or a cell state dict). For a GRU the Keras layer must
    have the module's ``reset_after`` (for a state dict, pass it; default True): bias (2, 3H)
    for True, (3H,) for False.
    """
    kind, sd, reset_after = _module_info(source, cell, reset_after)
    reset_after = True if reset_after is None else bool(reset_after)
    sfx = _suffix(layer, reverse)
    if "weight_ih" in sd and "weight_ih" + sfx not in sd:  # a cell: no layer suffix
        if layer or reverse:
            raise ValueError("a cell has a single layer and direction")
        sfx = ""
    if "weight_hr" + sfx in sd:
        raise ValueError("Keras has no LSTM with projections (found weight_hr" + sfx + ")")
    try:
        w_ih, w_hh = np.asarray(sd["weight_ih" + sfx]), np.asarray(sd["weight_hh" + sfx])
    except KeyError as e:
        raise ValueError(f"state dict has no {e.args[0]!r} (layer={layer}, "
                         f"reverse={reverse})") from None
    G = _GATES[kind]
    H = w_hh.shape[1]
    if w_hh.shape != (G * H, H) or w_ih.ndim != 2 or w_ih.shape[0] != G * H:
        raise ValueError(f"weight_ih{sfx} {w_ih.shape} / weight_hh{sfx} {w_hh.shape} are not "
                         f"the shapes of a {kind.upper()}")
    out = [np.ascontiguousarray(_reorder(w_ih.T, kind, 1)),
           np.ascontiguousarray(_reorder(w_hh.T, kind, 1))]
    if "bias_ih" + sfx in sd:
        b_ih, b_hh = np.asarray(sd["bias_ih" + sfx]), np.asarray(sd["bias_hh" + sfx])
        if kind == "gru" and reset_after:
            bias = np.stack([_reorder(b_ih, kind, 0), _reorder(b_hh, kind, 0)])
        else:
            bias = _reorder(b_ih + b_hh, kind, 0)
        out.append(np.ascontiguousarray(bias))
    return out


def from_keras_stack(cell, layers_weights, *, bidirectional=False, reset_after=None):
    """The full state dict of a stacked (and optionally bidirectional) fastcells module from
    a list of Keras layers' ``get_weights()``, first layer first.

    With ``bidirectional=True`` each entry is a Keras ``Bidirectional(...)`` layer's
    ``get_weights()``: the forward layer's arrays, then the backward layer's (2, 4 or 6 arrays;
    ``merge_mode="concat"`` matches fastcells' output). Load it into
    ``fc.LSTM(..., num_layers=len(layers_weights), bidirectional=...)``.
    """
    sd = {}
    for k, w in enumerate(layers_weights):
        if bidirectional:
            w = list(w)
            if len(w) % 2:
                raise ValueError(f"layers_weights[{k}] has {len(w)} arrays; a Bidirectional "
                                 f"layer has the forward layer's then the backward layer's")
            half = len(w) // 2
            sd.update(from_keras(cell, w[:half], layer=k, reset_after=reset_after))
            sd.update(from_keras(cell, w[half:], layer=k, reverse=True, reset_after=reset_after))
        else:
            sd.update(from_keras(cell, w, layer=k, reset_after=reset_after))
    return sd


def to_keras_stack(module):
    """One Keras ``set_weights()`` list per layer of a fastcells ``LSTM``/``GRU``/``RNN``
    (for a bidirectional module, forward arrays then backward arrays, as a Keras
    ``Bidirectional`` layer expects)."""
    out = []
    for k in range(module.num_layers):
        w = to_keras(module, layer=k)
        if module.bidirectional:
            w = w + to_keras(module, layer=k, reverse=True)
        out.append(w)
    return out
