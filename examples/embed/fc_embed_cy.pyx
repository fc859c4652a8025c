# cython: language_level=3, boundscheck=False, wraparound=False
"""fc_embed_cy -- calling the fastcells C API from Cython: a GRU training step.

    from fastcells cimport capi as fc     # declarations from fastcells/capi.pxd
    fc.import_fastcells()                 # once, at import: fetch the function table

gru_train(x, h0, w_ih, w_hh, b_ih, b_hh, dy, dh_n, reset_after=True, n_threads=1) runs the
training forward and its backward on C-contiguous float32 or float64 arrays (one dtype per
call; typed memoryviews, so any buffer-protocol object works) and returns new arrays
(y, h_n, dx, dh0, dw_ih, dw_hh, db_ih, db_hh). h0, b_ih, b_hh, dy, dh_n may be None (zeros /
no bias); the gradient of an absent bias is None. The kernels run without the GIL.
"""
from cython cimport floating
from libc.stdint cimport int64_t
from libc.stdlib cimport free, malloc

import numpy as np

from fastcells cimport capi as fc

fc.import_fastcells()


class FastcellsError(RuntimeError):
    """A fastcells C API call returned an error status (``.status``)."""

    def __init__(self, what, int status):
        self.status = status
        super().__init__(f"{what}: {fc.fc_strerror(status).decode()} (status {status})")


# Pointers of optional arrays: NULL for None, which the C API reads as "absent".
cdef const floating *opt1(const floating[::1] a) noexcept:
    if a is None:
        return NULL
    return &a[0]

cdef const floating *opt2(const floating[:, ::1] a) noexcept:
    if a is None:
        return NULL
    return &a[0, 0]

cdef const floating *opt3(const floating[:, :, ::1] a) noexcept:
    if a is None:
        return NULL
    return &a[0, 0, 0]


def _check_shape(name, a, shape):
    if a is not None and tuple(a.shape[:len(shape)]) != shape:
        raise ValueError(f"{name} must have shape {shape}, got {tuple(a.shape[:len(shape)])}")


def gru_train(const floating[:, :, ::1] x not None, const floating[:, ::1] h0,
              const floating[:, ::1] w_ih not None, const floating[:, ::1] w_hh not None,
              const floating[::1] b_ih, const floating[::1] b_hh,
              const floating[:, :, ::1] dy, const floating[:, ::1] dh_n,
              bint reset_after=True, int n_threads=1):
    """GRU training forward + backward through the fastcells C API (see the module doc)."""
    cdef int64_t T = x.shape[0], B = x.shape[1], I = x.shape[2], H = w_hh.shape[1]
    cdef int64_t ws_bytes
    cdef void *ws
    cdef int st
    cdef bint fwd_ok = False
    # memoryviews carry their shapes, so (unlike raw pointers) everything can be checked here
    _check_shape("w_hh", w_hh, (3 * H, H))
    _check_shape("w_ih", w_ih, (3 * H, I))
    _check_shape("h0", h0, (B, H))
    _check_shape("b_ih", b_ih, (3 * H,))
    _check_shape("b_hh", b_hh, (3 * H,))
    _check_shape("dy", dy, (T, B, H))
    _check_shape("dh_n", dh_n, (B, H))

    dtype = np.float32 if floating is float else np.float64
    y, h_n = np.empty((T, B, H), dtype), np.empty((B, H), dtype)
    dx, dh0 = np.empty((T, B, I), dtype), np.empty((B, H), dtype)
    dw_ih, dw_hh = np.empty((3 * H, I), dtype), np.empty((3 * H, H), dtype)
    db_ih = None if b_ih is None else np.empty(3 * H, dtype)
    db_hh = None if b_hh is None else np.empty(3 * H, dtype)
    cdef floating[:, :, ::1] y_v = y, dx_v = dx
    cdef floating[:, ::1] h_n_v = h_n, dh0_v = dh0, dw_ih_v = dw_ih, dw_hh_v = dw_hh
    cdef floating[::1] db_ih_v = db_ih, db_hh_v = db_hh
    cdef floating *db_ih_p = NULL if db_ih is None else &db_ih_v[0]
    cdef floating *db_hh_p = NULL if db_hh is None else &db_hh_v[0]
    # optional inputs: NULL in forward and the same NULL in backward
    cdef const floating *h0_p = opt2(h0)
    cdef const floating *b_ih_p = opt1(b_ih)
    cdef const floating *b_hh_p = opt1(b_hh)
    cdef const floating *dy_p = opt3(dy)
    cdef const floating *dh_n_p = opt2(dh_n)

    if floating is float:
        ws_bytes = fc.fc_gru_workspace_size_f32(T, B, I, H, reset_after, 1)
    else:
        ws_bytes = fc.fc_gru_workspace_size_f64(T, B, I, H, reset_after, 1)
    if ws_bytes < 0:
        raise FastcellsError("fc_gru_workspace_size", <int>ws_bytes)
    ws = malloc(ws_bytes)
    if ws == NULL:
        raise MemoryError()
    try:
        with nogil:
            if floating is float:
                st = fc.fc_gru_forward_f32(&y_v[0, 0, 0], &h_n_v[0, 0], ws, ws_bytes,
                                           &x[0, 0, 0], h0_p, &w_ih[0, 0], &w_hh[0, 0],
                                           b_ih_p, b_hh_p, NULL, T, B, I, H, reset_after, 1,
                                           n_threads)
                if st == fc.FC_OK:
                    fwd_ok = True
                    st = fc.fc_gru_backward_f32(&dx_v[0, 0, 0], &dh0_v[0, 0], &dw_ih_v[0, 0],
                                                &dw_hh_v[0, 0], db_ih_p, db_hh_p, ws, ws_bytes,
                                                dy_p, dh_n_p, &x[0, 0, 0], h0_p,
                                                &w_ih[0, 0], &w_hh[0, 0], NULL, T, B, I, H,
                                                reset_after, n_threads)
            else:
                st = fc.fc_gru_forward_f64(&y_v[0, 0, 0], &h_n_v[0, 0], ws, ws_bytes,
                                           &x[0, 0, 0], h0_p, &w_ih[0, 0], &w_hh[0, 0],
                                           b_ih_p, b_hh_p, NULL, T, B, I, H, reset_after, 1,
                                           n_threads)
                if st == fc.FC_OK:
                    fwd_ok = True
                    st = fc.fc_gru_backward_f64(&dx_v[0, 0, 0], &dh0_v[0, 0], &dw_ih_v[0, 0],
                                                &dw_hh_v[0, 0], db_ih_p, db_hh_p, ws, ws_bytes,
                                                dy_p, dh_n_p, &x[0, 0, 0], h0_p,
                                                &w_ih[0, 0], &w_hh[0, 0], NULL, T, B, I, H,
                                                reset_after, n_threads)
    finally:
        free(ws)
    if st != fc.FC_OK:
        raise FastcellsError("fc_gru_backward" if fwd_ok else "fc_gru_forward", st)
    return y, h_n, dx, dh0, dw_ih, dw_hh, db_ih, db_hh
