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


def get_include():
    """Directories a downstream build needs, as a list of str.

    ``[header_dir, pxd_root]``: ``header_dir`` holds ``fastcells.h`` (C extensions:
    ``include_dirs=fastcells.get_include()``); ``pxd_root`` is the directory that contains the
    ``fastcells`` package, where Cython finds ``fastcells/capi.pxd`` (``cythonize(...,
    include_path=fastcells.get_include())``; ``cimport fastcells.capi``).
    """
    here = _os.path.dirname(_os.path.abspath(__file__))
    installed = _os.path.join(here, "include")
    # an installed package carries its headers; a source checkout (editable install) has csrc/
    source = _os.path.join(_os.path.dirname(_os.path.dirname(here)), "csrc")
    header_dir = installed if _os.path.exists(_os.path.join(installed, "fastcells.h")) else source
    return [header_dir, _os.path.dirname(here)]


# The C API: function table in the capsule fastcells._C_API (import_fastcells() in fastcells.h),
# addresses in fastcells.capi. It shares the per-thread BLAS thread setter and the
# FASTCELLS_SPLIT override (read once, here) with the Python API.
def _init_capi():
    from ._api import _FORCED_SPLIT
    from ._threads import set_threads_local_address
    from . import _kernels
    return _kernels._capi_init(__version__, set_threads_local_address(), _FORCED_SPLIT)


_C_API = _init_capi()
from . import capi  # noqa: E402

__all__ = [
    "GRU",
    "GRUCell",
    "LSTM",
    "LSTMCell",
    "RNN",
    "RNNCell",
    "Workspace",
    "blas_info",
    "capi",
    "effective_n_threads",
    "get_include",
    "gru_backward",
    "gru_forward",
    "interop",
    "lstm_backward",
    "lstm_forward",
    "reference",
    "rnn_backward",
    "rnn_forward",
]
