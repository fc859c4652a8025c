"""fastcells: fast LSTM, GRU and Elman-RNN kernels for NumPy.

Forward and backpropagation-through-time backward passes are compiled (Cython + C, BLAS from
SciPy, OpenMP over the batch) and follow PyTorch's math and weight layout exactly.

    y, h_n, c_n, ws = fastcells.lstm_forward(x, h0, c0, w_ih, w_hh, b_ih, b_hh)
    dx, dh0, dc0, dw_ih, dw_hh, db_ih, db_hh = fastcells.lstm_backward(dy, dh_n, dc_n, ws)

``fastcells.reference`` holds NumPy implementations with the same signatures.
"""
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

__version__ = "0.1.0"

__all__ = [
    "Workspace",
    "blas_info",
    "effective_n_threads",
    "gru_backward",
    "gru_forward",
    "lstm_backward",
    "lstm_forward",
    "rnn_backward",
    "rnn_forward",
]
