"""fastcells: fast LSTM, GRU and Elman-RNN kernels for NumPy.

Forward and backpropagation-through-time backward passes are compiled (Cython + C, BLAS from
SciPy, OpenMP over the batch) and follow PyTorch's math and weight layout exactly.

    y, h_n, c_n, ws = fastcells.lstm_forward(x, h0, c0, w_ih, w_hh, b_ih, b_hh)
    dx, dh0, dc0, dw_ih, dw_hh, db_ih, db_hh = fastcells.lstm_backward(dy, dh_n, dc_n, ws)

``fastcells.reference`` holds NumPy implementations with the same signatures.
"""
import os as _os

# libgomp spins idle threads for GOMP_SPINCOUNT iterations (default 300000, i.e. milliseconds
# with x86 `pause`) after a parallel region or while waiting at a barrier. Our per-step barriers
# wait microseconds, while long spins after a kernel returns steal the cores from the NumPy/BLAS
# code that runs next in a training loop. A short spin keeps barriers fast and lets idle threads
# sleep soon. Only a default: a value set by the user (or OMP_WAIT_POLICY) wins, and it takes
# effect only if libgomp is not already loaded by another library.
if "GOMP_SPINCOUNT" not in _os.environ and "OMP_WAIT_POLICY" not in _os.environ:
    _os.environ["GOMP_SPINCOUNT"] = "2000"

from ._api import (
    Workspace,
    gru_backward,
    gru_forward,
    lstm_backward,
    lstm_forward,
    rnn_backward,
    rnn_forward,
)
from ._threads import blas_info, effective_n_threads
from .layers import GRU, LSTM, RNN, GRUCell, LSTMCell, RNNCell
from . import interop, reference

__version__ = "0.1.0"

__all__ = [
    "GRU",
    "GRUCell",
    "LSTM",
    "LSTMCell",
    "RNN",
    "RNNCell",
    "Workspace",
    "blas_info",
    "effective_n_threads",
    "gru_backward",
    "gru_forward",
    "interop",
    "lstm_backward",
    "lstm_forward",
    "reference",
    "rnn_backward",
    "rnn_forward",
]
