# The C API (csrc/fastcells.h): the kernels above behind plain C entry points that validate
# their arguments, carve the caller's workspace, and return a status code. Included by
# _kernels.pyx; the function table is published as the capsule fastcells._C_API and its
# addresses through fastcells.capi.
#
# Workspace layout: a 64-byte header (ws_header) then the buffers of the cell, each starting at a
# multiple of 64 bytes from the start; the same function computes the layout for the size query,
# the forward and the backward (lstm_ws / gru_ws / rnn_ws), so they cannot disagree.
from libc.stdint cimport int32_t, uint32_t
from cpython.pycapsule cimport PyCapsule_New
from fastcells.capi cimport (
    fastcells_capi_t, FASTCELLS_API_VERSION, FC_OK, FC_ERR_NULL, FC_ERR_SIZE, FC_ERR_ARG,
    FC_ERR_WORKSPACE_SIZE, FC_ERR_WORKSPACE_STATE)

cdef extern from "fc_sync.h" nogil:
    int fc_atomic_load_int(const int *p)
    void fc_atomic_store_int(int *p, int v)
    int fc_atomic_cas_int(int *p, int expected, int desired)

cdef enum:
    WS_ALIGN = 64
    WS_MAGIC = 0x53574346          # "FCWS"
    WS_READY = 1                   # state: a training forward is saved, not yet consumed
    WS_CONSUMED = 2                # state: anything else (fresh, inference, consumed)
    CELL_LSTM = 1
    CELL_GRU = 2
    CELL_RNN = 3
    HAS_H0 = 1                     # flags: which optional inputs the forward pass had
    HAS_C0 = 2
    HAS_LENGTHS = 4
    FLAG_OPTION = 8                # GRU reset_after / RNN relu
    MAX_SLOTS = 12

ctypedef struct ws_header:         # 64 bytes at the start of a workspace
    uint32_t magic
    int state                      # accessed atomically (fc_sync.h)
    int32_t cell
    int32_t itemsize
    int32_t flags
    int32_t reserved
    int64_t T, B, I, H, P          # P: LSTM projection size, else 0

# ---------------------------------------------------------------- planning (shared with _api.py)
# Waking a second thread costs tens to hundreds of microseconds (measured here: a B=1, T=1, H=32
# LSTM step took 24 us on one thread and 285 us on two); below this much GEMM work per thread an
# extra thread cannot pay for itself, so a call uses fewer threads than it may.
cdef double MIN_FLOPS_PER_THREAD = 16e6
# Hidden split (each thread owns a slice of the hidden units; one barrier per step) is used only
# when the batch is too small to give every thread at least two rows, and W_hh is large enough
# that a step's work pays for the barrier (a batch-1 LSTM with H=128 ran faster on one thread).
# With larger batches the batch split won once the per-step GEMM ran on packed weights
# (measured, 2 threads, paired medians: charrnn B=32 H=256 LSTM/GRU/RNN train and infer all
# faster batch-split, e.g. LSTM train 65.8 vs 77.0 ms, GRU infer 14.6 vs 18.3 ms; medium B=64
# H=512 within noise; large H=1024 LSTM train 767 vs 827 ms). Before packing, the hidden split
# had won at charrnn because each thread then re-packed only its half of W_hh.
cdef double HIDDEN_SPLIT_WEIGHT_BYTES = 512 * 1024
# At batch 1 the batch split leaves all but one thread idle; the hidden split pays once the
# packed weights a step reads (W_hh, plus W_ih in inference, which projects x per step) reach
# this size, even when the call is below MIN_FLOPS_PER_THREAD per thread (but not below half of
# it in total: GRU H=128 inference, 15 MFLOP, is among the gains below; T=10 LSTM H=128
# inference, 2 MFLOP, was 0.98x). Measured, 2 threads vs 1 (paired medians, T = 100, I = 64
# unless given): inference
# LSTM H=128 0.72-0.75x the time (384 KB per step), GRU H=128 0.76-0.84x (288 KB), LSTM H=128
# I=16 0.90x (288 KB), GRU H=160 0.85x, Elman H=256 0.85x; training LSTM H=128 0.84-0.90x
# (W_hh 256 KB). Slower or equal below it: inference LSTM H=96 0.99x (240 KB), GRU H=96 1.15x
# (180 KB), LSTM H=64 1.14x, Elman H=128 0.99x; training GRU H=128 1.15x (192 KB), Elman H=128
# 1.21x. At batch 2 the batch split stayed faster (LSTM H=128 inference: hidden 1.10x).
# Each thread is given at least half this much of the step's weights (more than 2 threads:
# an extrapolation, this machine has 2 cores).
cdef double B1_HIDDEN_SPLIT_STEP_BYTES = 256 * 1024
cdef enum:
    MAX_THREADS = 4096             # as fastcells._threads.MAX_THREADS
    BLAS_INT_MAX = 2147483647

# A batch split that gives every thread at least BATCH_SPLIT_MIN_ROWS rows runs its time loop with
# no barrier per step, so a second thread pays at a quarter of that work (counted on the
# forward's flops for a backward, see useful_threads). Measured on a 2-core AMD Zen 5 KVM guest
# (AVX-512), 2026-12-02, against the 16 MFLOP rule alone, paired blocks of 30 identical calls
# (tools/ab_compare.py --block 30), training step unless 'infer', float32, 2 threads allowed:
# Elman RNN small shape (B,T,I,H = 16,64,32,64) 0.64-0.99x the time (its backward with the
# 256-row chunks of backward_chunk; with the 4-step chunks it was 0.69-1.24x, its 32 barriers
# per call spinning ~20% of the samples), inference 0.57-0.77x; LSTM 16,16,32,64 0.57-0.61x,
# GRU 16,16,32,64 0.63-0.64x (inference 0.59-0.69x), LSTM 32,16,32,32 0.61-1.02x, Elman RNN
# 32,64,32,32 0.64-0.70x. Alternating with one-thread calls 0.64x, with a 64x64 NumPy product
# 0.63x, with a 200 us pause 0.78x. The machine's speed jumps between regimes (a second vCPU
# shared with other guests?) in which two threads can lose to one; an earlier Xeon session had
# the Elman RNN's backward 1.15x on two threads with the 4-step chunks (README).
cdef double MIN_FLOPS_PER_BATCH_THREAD = 4e6
cdef enum:
    BATCH_SPLIT_MIN_ROWS = 8


cdef int useful_threads(int n, double flops, idx B, bint backward) noexcept nogil:
    # backward: the call is a backward pass (twice its forward's flops); the batch-split rule
    # counts its forward's flops, so that a training step's forward and backward agree (a
    # forward on one thread and its backward on two lost: LSTM 16,16,32,32 1.24-1.49x)
    cdef double k = flops / MIN_FLOPS_PER_THREAD
    cdef double kb = flops / (MIN_FLOPS_PER_BATCH_THREAD * (2 if backward else 1))
    if B >= 2 * BATCH_SPLIT_MIN_ROWS and kb > k:
        if kb > <double>(B // BATCH_SPLIT_MIN_ROWS):
            kb = <double>(B // BATCH_SPLIT_MIN_ROWS)
        if kb > k:
            k = kb
    if k < 1:
        return 1
    return n if k >= n else <int>k


cdef void plan_threads(int n, double flops, idx B, idx H, int G, idx P, idx I_loop,
                       int itemsize, bint hidden_ok, int forced, bint backward, int *nt,
                       int *n_rows, int *n_cols) noexcept nogil:
    # threads of a call (n_threads n, its GEMM flops) and the (n_rows, n_cols) grid of its time
    # loop. I_loop: the input width whose weights the loop reads every step (I for an inference
    # forward, which projects x per step; 0 otherwise). forced: 0 = choose, 1 = batch,
    # 2 = hidden split, 3 = all n threads, in slice mode where possible (else the batch
    # split; see train_slices).
    cdef double step_bytes = <double>G * H * (P + I_loop) * itemsize
    cdef bint can_split_hidden
    cdef int k = useful_threads(n, flops, B, backward), m
    if forced == 3:
        forced = 1
        k = n              # every thread allowed (for tests and experiments)
    cdef bint b1_hidden = (B == 1 and hidden_ok and forced != 1
                           and step_bytes >= B1_HIDDEN_SPLIT_STEP_BYTES
                           and flops >= MIN_FLOPS_PER_THREAD / 2)
    if b1_hidden and k < n:
        m = <int>(step_bytes / (B1_HIDDEN_SPLIT_STEP_BYTES / 2))
        k = n if m >= n else m
        m = <int>(H // 32)
        if m >= 2 and k > m:
            k = m
    nt[0] = k
    n_rows[0] = 1
    n_cols[0] = 1
    if k <= 1:
        return
    can_split_hidden = hidden_ok and H >= 32 * k
    if can_split_hidden and (forced == 2 or (forced != 1 and (b1_hidden or (
            B < 2 * k and <double>G * H * P * itemsize > HIDDEN_SPLIT_WEIGHT_BYTES)))):
        n_cols[0] = k
        return
    n_rows[0] = <int>(B if B < k else k) if B > 0 else 1


def plan(int n_threads, double flops, Py_ssize_t B, Py_ssize_t H, int G, Py_ssize_t P,
         int itemsize, bint hidden_ok, int forced, Py_ssize_t I_loop=0, bint backward=False):
    """(threads, n_rows, n_cols) a call of this size uses (the same rule as the C API)."""
    cdef int nt, rows, cols
    plan_threads(n_threads, flops, B, H, G, P, I_loop, itemsize, hidden_ok, forced, backward,
                 &nt, &rows, &cols)
    return nt, rows, cols


cdef inline idx balanced_chunk(idx T, idx c) noexcept nogil:
    # c steps per chunk, balanced over T (100 steps at c = 32: 4 x 25, not 32+32+32+4)
    cdef idx n
    if c >= T:
        return T
    n = (T + c - 1) // c
    return (T + n - 1) // n


cdef enum:
    # batch rows per chunk of the Elman-RNN backward when its dG scratch lives in dx
    RNN_CHUNK_ROWS_IN_DX = 256


cdef idx rnn_dg_offset(idx T, idx B, idx I, idx H, int itemsize, idx top) noexcept nogil:
    # Where in dx (elements from its start) the Elman-RNN backward's top-chunk dG scratch (top
    # steps, top*B*H elements) may live, or -1. It goes after the first packed_size(H, H)
    # elements (rounded up to 64 bytes), which the Python API gives the packed W_hh, and must
    # end below the top chunk's own rows of dx: the top chunk's reductions read it and write
    # only those rows, after which it is dead (every lower chunk's dG lives in hs), and the rows
    # that rnn_bwd defers for the packing (t_defer) end below it, so the deferred dx never
    # reads it. A rule of the shape alone, for the Python and the C API alike.
    cdef idx n_pack, off, a = 64 // itemsize
    if B <= 0 or I <= 0 or H <= 0 or top >= T:
        return -1
    n_pack = fc_packed_size_f32(H, H) if itemsize == 4 else fc_packed_size_f64(H, H)
    if n_pack > T * B * I:
        return -1
    off = (n_pack + a - 1) // a * a
    if off + top * B * H <= (T - top) * B * I:
        return off
    return -1


cdef idx backward_chunk(idx T, idx B, idx I, idx H, int itemsize) noexcept nogil:
    # Timesteps per chunk of the Elman-RNN backward. Its hoisted products (dW_hh, dW_ih, dx, db)
    # run once per chunk, each preceded and followed by a barrier; the top chunk's dG needs a
    # scratch of chunk*B*H, the lower chunks' dG live in the dead rows of hs.
    # Where that scratch fits in dx (rnn_dg_offset) it costs no memory, and a chunk has at least
    # RNN_CHUNK_ROWS_IN_DX rows: small shape (B,T,I,H = 16,64,32,64) 16-step chunks instead
    # of 4, so 4 rounds of products and 8 barriers instead of 16 and 32.
    # Otherwise ~1/16 of the sequence, so the scratch is ~6% of the saved states, but at least
    # 32 batch rows: below that the hoisted products' fixed cost dominates (batch 1, T = 100,
    # 2 threads, call-by-call alternation: 25-step chunks took 0.92x the time of 7-step ones,
    # 16-step 0.93x).
    cdef idx c, big
    if T <= 0:
        return 1
    c = (T + 15) // 16
    if B > 0 and (32 + B - 1) // B > c:
        c = (32 + B - 1) // B
    c = balanced_chunk(T, c)
    if B > 0 and (RNN_CHUNK_ROWS_IN_DX + B - 1) // B > c:
        big = balanced_chunk(T, (RNN_CHUNK_ROWS_IN_DX + B - 1) // B)
        if rnn_dg_offset(T, B, I, H, itemsize, big) >= 0:
            return big
    return c


cdef inline idx chunk_top(idx T, idx B, idx I, idx H, int itemsize) noexcept nogil:
    # steps of the top chunk (the dG scratch's size in steps)
    cdef idx c = backward_chunk(T, B, I, H, itemsize)
    return c if c < T else T


cdef idx rnn_slice_dg_offset(int S, idx T, idx B, idx I, idx H, int itemsize) noexcept nogil:
    # Where in dx (elements) the Elman-RNN backward in slice mode keeps its top chunk's dG
    # scratch (top*B*H elements, chunk_top): after the S slices' partials (slice_scratch_elems)
    # and ending below the top chunk's rows of dx, which rnn_bwd writes first; -1 if it does
    # not fit. The Python and the C API put it there (no memory beyond dx).
    cdef idx top = chunk_top(T, B, I, H, itemsize), off
    if S < 2 or B <= 0 or I <= 0 or top >= T:
        return -1
    off = rnd16(slice_scratch_elems(S, H, I, H, H))
    if off + top * B * H <= (T - top) * B * I:
        return off
    return -1


def rnn_backward_slice_dg_offset(int S, Py_ssize_t T, Py_ssize_t B, Py_ssize_t I, Py_ssize_t H,
                         int itemsize):
    """rnn_slice_dg_offset, for _api.rnn_backward."""
    return rnn_slice_dg_offset(S, T, B, I, H, itemsize)


# Slice mode (see _kernels.pyx, "slice mode"): a training forward planned as a batch split
# over nt >= 2 threads runs each thread's slice as a problem of its own, and its backward
# follows (the Workspace / the C API's workspace header record the slice count). For small H
# only: there the grid layout's shared pages and cross-core products cost most, and a slice's
# hoisted products on one core stay small. Paired against the grid's batch split
# (tools/ab_compare.py, "_api._FORCED_SPLIT = 1" against 0 or 3; Xeon guest, 2 threads,
# 2026-12-07; training step): B,T,I,H = 16,64,32,64 LSTM 0.83-0.86x, GRU 0.80-0.81x, Elman RNN
# 0.76x; 32,64,32,64 0.76x, 0.78x, 0.77-0.79x; 32,64,64,128 LSTM 0.91x, GRU 0.82x;
# 32,64,128,128 Elman RNN 0.95x; 8,64,32,64 (4 rows a slice) LSTM 0.92x, GRU 0.95x; at
# H = 256 (32,100,128,256) LSTM 1.02x, GRU 0.985x, Elman RNN 0.98x: no gain, hence
# SLICE_MAX_H = 128.
# Conditions: at least SLICE_MIN_ROWS rows per slice; a slice's rows of one step of x within
# the stack buffer (SLICE_BUF_BYTES); the backward's partials within dx (T*B*I elements); the
# Elman RNN's top-chunk dG scratch too (rnn_slice_dg_offset).
cdef enum:
    SLICE_MIN_ROWS = 4
    SLICE_MAX_H = 128


cdef int train_slices(int nt, int n_rows, int n_cols, int forced, idx T, idx B, idx I, idx H,
                      int Gk, idx P, bint allowed, int itemsize) noexcept nogil:
    # The slice count of a training forward planned as (nt, n_rows, n_cols), 0 for the grid
    # layout. Gk: gates per hidden unit; P: the state width (LSTM projection: not allowed).
    # forced as in plan_threads (3: slice mode wherever its layout works, whatever H).
    if not allowed or forced == 1 or forced == 2 or nt < 2 or n_cols != 1 or n_rows != nt:
        return 0
    if T < 1 or I < 1 or B < SLICE_MIN_ROWS * nt:
        return 0
    if forced != 3 and H > SLICE_MAX_H:
        return 0
    if (B + nt - 1) // nt * I * itemsize > SLICE_BUF_BYTES:
        return 0
    if slice_scratch_elems(nt, Gk * H, I, P, H) > T * B * I:
        return 0
    if Gk == 1 and rnn_slice_dg_offset(nt, T, B, I, H, itemsize) < 0:
        return 0
    return nt


def slices(int nt, int n_rows, int n_cols, int forced, Py_ssize_t T, Py_ssize_t B,
           Py_ssize_t I, Py_ssize_t H, int G, Py_ssize_t P, bint allowed, int itemsize):
    """The slice count of a training forward planned as (nt, n_rows, n_cols); 0 = the grid
    layout (train_slices, the same rule as the C API)."""
    return train_slices(nt, n_rows, n_cols, forced, T, B, I, H, G, P, allowed, itemsize)


def rnn_backward_chunk(Py_ssize_t T, Py_ssize_t B, Py_ssize_t I, Py_ssize_t H, int itemsize):
    """Timesteps per chunk of the Elman-RNN backward (its dG scratch holds this many)."""
    return backward_chunk(T, B, I, H, itemsize)


def rnn_backward_dg_offset(Py_ssize_t T, Py_ssize_t B, Py_ssize_t I, Py_ssize_t H,
                           int itemsize):
    """Offset in dx (elements) where the backward's dG scratch may live, or -1 (rnn_dg_offset)."""
    return rnn_dg_offset(T, B, I, H, itemsize, chunk_top(T, B, I, H, itemsize))


# ---------------------------------------------------------------- state set by fastcells/__init__
cdef set_threads_fn _capi_set_threads = NULL
cdef int _capi_forced_split = 0
cdef bytes _capi_version_bytes = b"unknown"
cdef fastcells_capi_t _table
cdef object _capsule = None


# ---------------------------------------------------------------- checks
cdef inline bint fits_blas(int64_t v) noexcept nogil:
    return 0 <= v <= BLAS_INT_MAX


cdef int check_dims(int64_t T, int64_t B, int64_t I, int64_t H, int64_t P, int G) noexcept nogil:
    if T < 0 or B < 0 or I < 0 or H < 1 or P < 0:
        return FC_ERR_SIZE
    # everything handed to BLAS must fit its 32-bit integers; each factor is bounded before a
    # product is formed, so no product can wrap around int64 (T = B = 2**32 would give 0)
    if not (fits_blas(T) and fits_blas(B) and fits_blas(H) and fits_blas(I) and fits_blas(P)):
        return FC_ERR_SIZE
    if not (fits_blas(T * B) and fits_blas(G * H)):
        return FC_ERR_SIZE
    return FC_OK


cdef int resolve_threads(int n_threads, int *nt) noexcept nogil:
    if n_threads < 0 or n_threads > MAX_THREADS:
        return FC_ERR_ARG
    nt[0] = n_threads if n_threads > 0 else openmp.omp_get_max_threads()
    if nt[0] < 1:
        nt[0] = 1
    if _capi_set_threads == NULL:
        # no per-thread BLAS thread setter: a threaded BLAS inside our threads would
        # oversubscribe, and the C API changes no global state -- run single-threaded
        nt[0] = 1
    return FC_OK


cdef int check_lengths(const int64_t *lengths, int64_t B, int64_t T) noexcept nogil:
    cdef int64_t b
    if lengths == NULL:
        return FC_OK
    for b in range(B):
        if lengths[b] < 0 or lengths[b] > T:
            return FC_ERR_ARG
    return FC_OK


cdef inline bint missing(const void *p, int64_t n) noexcept nogil:
    # a required array is NULL (arrays with no elements may be NULL)
    return p == NULL and n > 0


cdef int64_t carve(const double *counts, int n, int itemsize, int64_t *off) noexcept nogil:
    # offsets of n buffers of counts[k] elements after the header; total bytes, or FC_ERR_SIZE
    cdef double total = WS_ALIGN, nbytes
    cdef int k
    for k in range(n):
        off[k] = <int64_t>total
        nbytes = counts[k] * itemsize
        if nbytes > 4.0e18:
            return FC_ERR_SIZE
        total += (<int64_t>((nbytes + WS_ALIGN - 1) / WS_ALIGN)) * <double>WS_ALIGN
    if total > 4.0e18:                 # (int64 holds 9.2e18; sizes passed check_dims first)
        return FC_ERR_SIZE
    return <int64_t>total


cdef int check_ws(void *ws, int64_t ws_bytes, int64_t need) noexcept nogil:
    if need < 0:
        return <int>need
    if ws == NULL or ws_bytes < need or (<uintptr_t>ws) % 8 != 0:
        return FC_ERR_WORKSPACE_SIZE
    return FC_OK


cdef void ws_begin(void *ws) noexcept nogil:
    # a forward pass invalidates whatever the workspace held before
    cdef ws_header *hd = <ws_header *>ws
    fc_atomic_store_int(&hd.state, WS_CONSUMED)


cdef void ws_publish(void *ws, int cell, int itemsize, int flags, int64_t T, int64_t B,
                     int64_t I, int64_t H, int64_t P, int slices) noexcept nogil:
    # slices: the forward's slice count (its saved arrays' layout), 0 = the grid layout
    cdef ws_header *hd = <ws_header *>ws
    hd.magic = WS_MAGIC
    hd.cell = cell
    hd.itemsize = itemsize
    hd.flags = flags
    hd.reserved = slices
    hd.T = T
    hd.B = B
    hd.I = I
    hd.H = H
    hd.P = P
    fc_atomic_store_int(&hd.state, WS_READY)          # release: the saved data is complete


cdef int ws_claim(void *ws, int cell, int itemsize, int flags, int64_t T, int64_t B, int64_t I,
                  int64_t H, int64_t P) noexcept nogil:
    # a backward pass takes the workspace: it must hold a matching, unconsumed training forward
    cdef ws_header *hd = <ws_header *>ws
    if fc_atomic_load_int(&hd.state) != WS_READY:
        return FC_ERR_WORKSPACE_STATE
    if (hd.magic != WS_MAGIC or hd.cell != cell or hd.itemsize != itemsize
            or hd.flags != flags or hd.T != T or hd.B != B or hd.I != I or hd.H != H
            or hd.P != P):
        return FC_ERR_WORKSPACE_STATE
    if not fc_atomic_cas_int(&hd.state, WS_READY, WS_CONSUMED):
        return FC_ERR_WORKSPACE_STATE                 # another backward took it first
    return FC_OK


cdef int backward_plan(const void *ws, int nt, double flops, idx T, idx B, idx I, idx H,
                       int Gk, idx P, bint hidden_ok, int itemsize, int *n_threads,
                       int *n_rows, int *n_cols, int *slices) noexcept nogil:
    # A backward's threads: the forward's slices if it ran in slice mode (the saved arrays'
    # layout; recorded in the header by ws_publish), else plan_threads. FC_ERR_WORKSPACE_STATE
    # if the recorded count is not one the forward could have chosen.
    cdef int sl = (<const ws_header *>ws).reserved
    slices[0] = 0
    if sl == 0:
        plan_threads(nt, flops, B, H, Gk, P, 0, itemsize, hidden_ok, _capi_forced_split, True,
                     n_threads, n_rows, n_cols)
        return FC_OK
    if sl < 2 or sl > MAX_THREADS or train_slices(sl, sl, 1, 3, T, B, I, H, Gk, P, True,
                                                  itemsize) != sl:
        return FC_ERR_WORKSPACE_STATE
    n_threads[0] = n_rows[0] = slices[0] = sl
    n_cols[0] = 1
    return FC_OK


cdef int input_flags(const void *h0, const void *c0, const int64_t *lengths,
                     bint option) noexcept nogil:
    return ((HAS_H0 if h0 != NULL else 0) | (HAS_C0 if c0 != NULL else 0)
            | (HAS_LENGTHS if lengths != NULL else 0) | (FLAG_OPTION if option else 0))


cdef void transpose_into(floating *dst, const floating *src, idx rows, idx cols) noexcept nogil:
    # dst (cols, rows) = src (rows, cols)^T, in 32 x 32 tiles
    cdef idx i0, j0, i, j, i1, j1
    for i0 in range(0, rows, 32):
        i1 = i0 + 32 if i0 + 32 < rows else rows
        for j0 in range(0, cols, 32):
            j1 = j0 + 32 if j0 + 32 < cols else cols
            for i in range(i0, i1):
                for j in range(j0, j1):
                    dst[j * rows + i] = src[i * cols + j]


cdef void bias_sum(floating *dst, const floating *a, const floating *b, idx n) noexcept nogil:
    cdef idx j
    for j in range(n):
        dst[j] = (a[j] if a != NULL else 0) + (b[j] if b != NULL else 0)


cdef inline floating *slot(void *ws, const int64_t *off, int k, floating *like) noexcept nogil:
    # the k-th buffer of the workspace, typed like `like` (only its type matters)
    return <floating *>(<char *>ws + off[k])


cdef inline floating *pslot(void *ws, const int64_t *off, int k, floating *like) noexcept nogil:
    # a packed-weight slot, rounded up to a 64-byte boundary (it is packed afresh by every call,
    # so nothing depends on the workspace's address staying the same between calls)
    cdef uintptr_t a = <uintptr_t>(<char *>ws + off[k])
    return <floating *>((a + WS_ALIGN - 1) & ~(<uintptr_t>(WS_ALIGN - 1)))


cdef inline double psize(int64_t K, int64_t N, int itemsize, bint also_transposed) noexcept nogil:
    # elements of the packed K x N weight (and of its N x K transpose, for backward: the same
    # workspace slot holds the forward's packing, then the backward's)
    cdef double a, b
    if itemsize == 4:
        a, b = fc_packed_size_f32(K, N), fc_packed_size_f32(N, K)
    else:
        a, b = fc_packed_size_f64(K, N), fc_packed_size_f64(N, K)
    # + one WS_ALIGN of slack: pslot() starts the panels on a 64-byte boundary wherever the
    # caller's workspace starts (misaligned panels slow the per-step GEMM by ~12%, see _api.py)
    return (a if not also_transposed or a > b else b) + WS_ALIGN // itemsize


cdef inline bint packs_input(int64_t I, bint training, int itemsize) noexcept nogil:
    # whether a forward takes W_ih^T packed (the same rule as _api._x_pack): inference always
    # (it projects x per step); training in float32 when the input is narrow (I up to two
    # panel widths, 64), where the packed kernel projects all steps at once faster than BLAS
    # (in float64, I <= 32, LSTM training measured 1.005-1.020x the time that way: BLAS)
    return not training or (itemsize == 4 and 0 < I <= 2 * fc_packed_panel_width_f32())


def forward_packs_input(int64_t I, bint training, int itemsize):
    """Whether a forward takes W_ih^T packed (``w_ih_pack``); see _api._x_pack."""
    return packs_input(I, training, itemsize)


cdef inline int64_t serves_inference(int64_t training_bytes, int64_t inference_bytes) noexcept nogil:
    # a training-sized workspace also serves an inference forward of the same shape
    if training_bytes < 0 or inference_bytes < 0:
        return training_bytes if training_bytes < 0 else inference_bytes
    return training_bytes if training_bytes > inference_bytes else inference_bytes


# ---------------------------------------------------------------- LSTM
cdef enum:
    L_WT, L_WIH, L_WRT, L_BIAS, L_ZERO, L_GATES, L_CS, L_HS, L_US, L_DHS, L_DU, L_HBUF, L_N

cdef int64_t lstm_ws(int64_t T, int64_t B, int64_t I, int64_t H, int64_t P, bint training,
                     int itemsize, int64_t *off) noexcept nogil:
    cdef double c[L_N]
    cdef int64_t tmp[MAX_SLOTS]
    cdef bint proj = P > 0
    cdef int64_t Pe = P if proj else H
    cdef double TB = <double>T * B, G = 4
    c[L_WT] = psize(Pe, 4 * H, itemsize, training)     # W_hh^T (P, 4H) packed; W_hh in bwd
    c[L_WRT] = <double>H * P if proj else 0            # W_hr^T (H, P)
    c[L_BIAS] = G * H                                  # b_ih + b_hh
    c[L_ZERO] = <double>B * (Pe if Pe > H else H)      # zeros for absent h0 / c0
    c[L_WIH] = psize(I, 4 * H, itemsize, False) if packs_input(I, training, itemsize) else 0
    c[L_GATES] = (TB if training else <double>B) * G * H
    c[L_CS] = TB * H if training else 0
    c[L_HS] = TB * Pe if training else 0
    c[L_US] = (TB if training else B) * H if proj else 0
    c[L_DHS] = TB * Pe if training and proj else 0     # backward scratch
    c[L_DU] = <double>B * H if training and proj else 0
    c[L_HBUF] = 0 if training else <double>B * Pe
    return serves_inference(carve(c, L_N, itemsize, off),
                            lstm_ws(T, B, I, H, P, False, itemsize, tmp) if training else 0)


cdef int64_t lstm_ws_size(int64_t T, int64_t B, int64_t I, int64_t H, int64_t P, int training,
                          int itemsize) noexcept nogil:
    cdef int64_t off[MAX_SLOTS]
    cdef int st = check_dims(T, B, I, H, P, 4)
    if st != FC_OK:
        return st
    if training != 0 and training != 1:
        return FC_ERR_ARG
    return lstm_ws(T, B, I, H, P, training, itemsize, off)

cdef int64_t lstm_ws_size_f32(int64_t T, int64_t B, int64_t I, int64_t H, int64_t P,
                              int training) noexcept nogil:
    return lstm_ws_size(T, B, I, H, P, training, 4)

cdef int64_t lstm_ws_size_f64(int64_t T, int64_t B, int64_t I, int64_t H, int64_t P,
                              int training) noexcept nogil:
    return lstm_ws_size(T, B, I, H, P, training, 8)


cdef int capi_lstm_forward(floating *y, floating *h_n, floating *c_n, void *ws, int64_t ws_bytes,
                           const floating *x, const floating *h0, const floating *c0,
                           const floating *w_ih, const floating *w_hh, const floating *b_ih,
                           const floating *b_hh, const floating *w_hr, const int64_t *lengths,
                           int64_t T, int64_t B, int64_t I, int64_t H, int64_t P, int training,
                           int n_threads) noexcept nogil:
    cdef int64_t off[MAX_SLOTS]
    cdef int st, nt, rows, cols, sl = 0
    cdef bint proj = P > 0
    cdef int64_t Pe = P if proj else H, G = 4
    cdef floating *zero
    st = check_dims(T, B, I, H, P, 4)
    if st != FC_OK:
        return st
    if training != 0 and training != 1:
        return FC_ERR_ARG
    st = resolve_threads(n_threads, &nt)
    if st != FC_OK:
        return st
    if (missing(y, T * B * Pe) or missing(h_n, B * Pe) or missing(c_n, B * H)
            or missing(x, T * B * I) or missing(w_ih, G * H * I) or w_hh == NULL
            or (proj and w_hr == NULL)):
        return FC_ERR_NULL
    if not proj and w_hr != NULL:
        return FC_ERR_ARG                  # w_hr given but P = 0: ambiguous, refuse
    st = check_lengths(lengths, B, T)
    if st != FC_OK:
        return st
    st = check_ws(ws, ws_bytes, lstm_ws(T, B, I, H, P, training, sizeof(floating), off))
    if st != FC_OK:
        return st
    ws_begin(ws)
    zero = slot(ws, off, L_ZERO, y)
    memset(zero, 0, B * (Pe if Pe > H else H) * sizeof(floating))
    if proj:
        transpose_into(slot(ws, off, L_WRT, y), w_hr, Pe, H)
    bias_sum(slot(ws, off, L_BIAS, y), b_ih, b_hh, G * H)
    plan_threads(nt, 2.0 * T * B * G * H * (I + Pe) + 2.0 * T * B * Pe * H, B, H, 4, Pe,
                 0 if training else I, sizeof(floating), not proj, _capi_forced_split, False,
                 &nt, &rows, &cols)
    sl = train_slices(nt, rows, cols, _capi_forced_split, T, B, I, H, 4, Pe, training and not proj,
                      sizeof(floating))
    st = lstm_fwd(y, h_n, c_n, slot(ws, off, L_GATES, y),
                  slot(ws, off, L_CS, y) if training else NULL,
                  slot(ws, off, L_HS, y) if training else NULL,
                  slot(ws, off, L_US, y) if proj else NULL,
                  NULL if training else slot(ws, off, L_HBUF, y),
                  x, h0 if h0 != NULL else zero, c0 if c0 != NULL else zero, w_ih, w_hh,
                  pslot(ws, off, L_WT, y),
                  pslot(ws, off, L_WIH, y) if packs_input(I, training, sizeof(floating))
                  else NULL,
                  slot(ws, off, L_BIAS, y),
                  slot(ws, off, L_WRT, y) if proj else NULL, lengths,
                  T, B, I, H, Pe,
                  nt, rows, cols, sl, _capi_set_threads)
    if st == FC_OK and training:
        ws_publish(ws, CELL_LSTM, sizeof(floating), input_flags(h0, c0, lengths, False),
                   T, B, I, H, P, sl)
    return st


cdef int capi_lstm_backward(floating *dx, floating *dh0, floating *dc0, floating *dw_ih,
                            floating *dw_hh, floating *db_ih, floating *db_hh, floating *dw_hr,
                            void *ws, int64_t ws_bytes, const floating *dy,
                            const floating *dh_n, const floating *dc_n, const floating *x,
                            const floating *h0, const floating *c0, const floating *w_ih,
                            const floating *w_hh, const floating *w_hr,
                            const int64_t *lengths, int64_t T, int64_t B, int64_t I, int64_t H,
                            int64_t P, int n_threads) noexcept nogil:
    cdef int64_t off[MAX_SLOTS]
    cdef int st, nt, rows, cols, sl = 0
    cdef bint proj = P > 0
    cdef int64_t Pe = P if proj else H, G = 4
    cdef floating *zero
    cdef floating *db
    st = check_dims(T, B, I, H, P, 4)
    if st != FC_OK:
        return st
    st = resolve_threads(n_threads, &nt)
    if st != FC_OK:
        return st
    if (missing(dx, T * B * I) or missing(dh0, B * Pe) or missing(dc0, B * H)
            or missing(dw_ih, G * H * I) or dw_hh == NULL or (proj and dw_hr == NULL)
            or missing(x, T * B * I) or missing(w_ih, G * H * I) or w_hh == NULL
            or (proj and w_hr == NULL)):
        return FC_ERR_NULL
    if not proj and (w_hr != NULL or dw_hr != NULL):
        return FC_ERR_ARG
    st = check_lengths(lengths, B, T)
    if st != FC_OK:
        return st
    st = check_ws(ws, ws_bytes, lstm_ws(T, B, I, H, P, True, sizeof(floating), off))
    if st != FC_OK:
        return st
    # the thread plan (the forward's slices) before claiming: a refused call changes nothing
    st = backward_plan(ws, nt, 4.0 * T * B * G * H * (I + Pe) + 4.0 * T * B * Pe * H, T, B, I,
                       H, 4, Pe, not proj, sizeof(floating), &nt, &rows, &cols, &sl)
    if st != FC_OK:
        return st
    st = ws_claim(ws, CELL_LSTM, sizeof(floating), input_flags(h0, c0, lengths, False),
                  T, B, I, H, P)
    if st != FC_OK:
        return st
    zero = slot(ws, off, L_ZERO, dx)
    db = db_ih if db_ih != NULL else db_hh
    st = lstm_bwd(dx, dh0, dc0, dw_ih, dw_hh, db, dw_hr if proj else NULL,
                  slot(ws, off, L_GATES, dx), slot(ws, off, L_CS, dx), slot(ws, off, L_HS, dx),
                  slot(ws, off, L_US, dx) if proj else NULL,
                  slot(ws, off, L_DHS, dx) if proj else NULL,
                  slot(ws, off, L_DU, dx) if proj else NULL, pslot(ws, off, L_WT, dx),
                  x, h0 if h0 != NULL else zero, c0 if c0 != NULL else zero, w_ih, w_hh,
                  w_hr if proj else NULL, dy, dh_n, dc_n, lengths, T, B, I, H, Pe,
                  nt, rows, cols, sl, _capi_set_threads)
    if db_ih != NULL and db_hh != NULL and db_hh != db_ih:
        memcpy(db_hh, db_ih, G * H * sizeof(floating))   # both biases enter the same sum
    return st


# ---------------------------------------------------------------- GRU
cdef enum:
    G_WT, G_WIH, G_ZERO, G_GH, G_GATES, G_HN, G_HS, G_DGH, G_HBUF, G_N

cdef int64_t gru_ws(int64_t T, int64_t B, int64_t I, int64_t H, bint reset_after, bint training,
                    int itemsize, int64_t *off) noexcept nogil:
    cdef double c[G_N]
    cdef int64_t tmp[MAX_SLOTS]
    cdef double TB = <double>T * B, G = 3
    c[G_WT] = psize(H, 3 * H, itemsize, training)      # W_hh^T (H, 3H) packed; W_hh in bwd
    c[G_ZERO] = <double>B * H if B * H > 3 * H else 3.0 * H   # zeros: h0, b_ih, b_hh
    c[G_GH] = <double>B * G * H                        # h W_hh^T of a step
    c[G_WIH] = psize(I, 3 * H, itemsize, False) if packs_input(I, training, itemsize) else 0
    c[G_GATES] = (TB if training else <double>B) * G * H
    c[G_HN] = TB * H if training else (0 if reset_after else <double>B * H)
    c[G_HS] = TB * H if training else 0
    c[G_DGH] = (0 if reset_after else <double>B * H) if training else 0   # classic bwd: d(r*h)
    c[G_HBUF] = 0 if training else <double>B * H
    return serves_inference(carve(c, G_N, itemsize, off),
                            gru_ws(T, B, I, H, reset_after, False, itemsize, tmp) if training
                            else 0)


cdef int64_t gru_ws_size(int64_t T, int64_t B, int64_t I, int64_t H, int reset_after,
                         int training, int itemsize) noexcept nogil:
    cdef int64_t off[MAX_SLOTS]
    cdef int st = check_dims(T, B, I, H, 0, 3)
    if st != FC_OK:
        return st
    if training not in (0, 1) or reset_after not in (0, 1):
        return FC_ERR_ARG
    return gru_ws(T, B, I, H, reset_after, training, itemsize, off)

cdef int64_t gru_ws_size_f32(int64_t T, int64_t B, int64_t I, int64_t H, int reset_after,
                             int training) noexcept nogil:
    return gru_ws_size(T, B, I, H, reset_after, training, 4)

cdef int64_t gru_ws_size_f64(int64_t T, int64_t B, int64_t I, int64_t H, int reset_after,
                             int training) noexcept nogil:
    return gru_ws_size(T, B, I, H, reset_after, training, 8)


cdef int capi_gru_forward(floating *y, floating *h_n, void *ws, int64_t ws_bytes,
                          const floating *x, const floating *h0, const floating *w_ih,
                          const floating *w_hh, const floating *b_ih, const floating *b_hh,
                          const int64_t *lengths, int64_t T, int64_t B, int64_t I, int64_t H,
                          int reset_after, int training, int n_threads) noexcept nogil:
    cdef int64_t off[MAX_SLOTS]
    cdef int st, nt, rows, cols, sl = 0
    cdef int64_t G = 3
    cdef floating *zero
    st = check_dims(T, B, I, H, 0, 3)
    if st != FC_OK:
        return st
    if training not in (0, 1) or reset_after not in (0, 1):
        return FC_ERR_ARG
    st = resolve_threads(n_threads, &nt)
    if st != FC_OK:
        return st
    if (missing(y, T * B * H) or missing(h_n, B * H) or missing(x, T * B * I)
            or missing(w_ih, G * H * I) or w_hh == NULL):
        return FC_ERR_NULL
    st = check_lengths(lengths, B, T)
    if st != FC_OK:
        return st
    st = check_ws(ws, ws_bytes, gru_ws(T, B, I, H, reset_after, training, sizeof(floating), off))
    if st != FC_OK:
        return st
    ws_begin(ws)
    zero = slot(ws, off, G_ZERO, y)
    memset(zero, 0, (B * H if B * H > 3 * H else 3 * H) * sizeof(floating))
    plan_threads(nt, 2.0 * T * B * G * H * (I + H), B, H, 3, H, 0 if training else I,
                 sizeof(floating), reset_after, _capi_forced_split, False, &nt, &rows, &cols)
    sl = train_slices(nt, rows, cols, _capi_forced_split, T, B, I, H, 3, H, training,
                      sizeof(floating))
    st = gru_fwd(y, h_n, slot(ws, off, G_GATES, y),
                 slot(ws, off, G_HN, y) if training or not reset_after else NULL,
                 slot(ws, off, G_HS, y) if training else NULL, slot(ws, off, G_GH, y),
                 NULL if training else slot(ws, off, G_HBUF, y),
                 x, h0 if h0 != NULL else zero, w_ih, w_hh, pslot(ws, off, G_WT, y),
                 pslot(ws, off, G_WIH, y) if packs_input(I, training, sizeof(floating)) else NULL,
                 b_ih if b_ih != NULL else zero, b_hh if b_hh != NULL else zero, reset_after,
                 lengths, T, B, I, H,
                 nt, rows, cols, sl, _capi_set_threads)
    if st == FC_OK and training:
        ws_publish(ws, CELL_GRU, sizeof(floating), input_flags(h0, NULL, lengths, reset_after),
                   T, B, I, H, 0, sl)
    return st


cdef int capi_gru_backward(floating *dx, floating *dh0, floating *dw_ih, floating *dw_hh,
                           floating *db_ih, floating *db_hh, void *ws, int64_t ws_bytes,
                           const floating *dy, const floating *dh_n, const floating *x,
                           const floating *h0, const floating *w_ih, const floating *w_hh,
                           const int64_t *lengths, int64_t T, int64_t B, int64_t I, int64_t H,
                           int reset_after, int n_threads) noexcept nogil:
    cdef int64_t off[MAX_SLOTS]
    cdef int st, nt, rows, cols, sl = 0
    cdef int64_t G = 3
    st = check_dims(T, B, I, H, 0, 3)
    if st != FC_OK:
        return st
    if reset_after not in (0, 1):
        return FC_ERR_ARG
    st = resolve_threads(n_threads, &nt)
    if st != FC_OK:
        return st
    if (missing(dx, T * B * I) or missing(dh0, B * H) or missing(dw_ih, G * H * I)
            or dw_hh == NULL or missing(x, T * B * I) or missing(w_ih, G * H * I)
            or w_hh == NULL):
        return FC_ERR_NULL
    st = check_lengths(lengths, B, T)
    if st != FC_OK:
        return st
    st = check_ws(ws, ws_bytes, gru_ws(T, B, I, H, reset_after, True, sizeof(floating), off))
    if st != FC_OK:
        return st
    # the thread plan (the forward's slices) before claiming: a refused call changes nothing
    st = backward_plan(ws, nt, 4.0 * T * B * G * H * (I + H), T, B, I, H, 3, H, reset_after,
                       sizeof(floating), &nt, &rows, &cols, &sl)
    if st != FC_OK:
        return st
    st = ws_claim(ws, CELL_GRU, sizeof(floating), input_flags(h0, NULL, lengths, reset_after),
                  T, B, I, H, 0)
    if st != FC_OK:
        return st
    return gru_bwd(dx, dh0, dw_ih, dw_hh, db_ih, db_hh, slot(ws, off, G_GATES, dx),
                   slot(ws, off, G_HN, dx), slot(ws, off, G_DGH, dx), pslot(ws, off, G_WT, dx),
                   slot(ws, off, G_HS, dx),
                   x, h0 if h0 != NULL else slot(ws, off, G_ZERO, dx), w_ih, w_hh, reset_after,
                   dy, dh_n, lengths, T, B, I, H, nt, rows, cols, sl, _capi_set_threads)


# ---------------------------------------------------------------- Elman RNN
cdef enum:
    R_WT, R_WIH, R_BIAS, R_ZERO, R_HS, R_DG, R_HBUF, R_N

cdef int64_t rnn_ws(int64_t T, int64_t B, int64_t I, int64_t H, bint training, int itemsize,
                    int64_t *off) noexcept nogil:
    cdef double c[R_N]
    cdef int64_t tmp[MAX_SLOTS]
    cdef double TB = <double>T * B
    cdef idx top
    c[R_WT] = psize(H, H, itemsize, False)             # W_hh^T packed (W_hh in backward)
    c[R_WIH] = psize(I, H, itemsize, False) if packs_input(I, training, itemsize) else 0
    c[R_BIAS] = H                                      # b_ih + b_hh
    c[R_ZERO] = <double>B * H                          # zeros for an absent h0
    c[R_HS] = TB * H if training else 0
    # backward scratch, unless it fits in dx (rnn_dg_offset)
    top = chunk_top(T, B, I, H, itemsize)
    c[R_DG] = 0
    if training and rnn_dg_offset(T, B, I, H, itemsize, top) < 0:
        c[R_DG] = <double>top * B * H
    c[R_HBUF] = 0 if training else <double>B * H
    return serves_inference(carve(c, R_N, itemsize, off),
                            rnn_ws(T, B, I, H, False, itemsize, tmp) if training else 0)


cdef int64_t rnn_ws_size(int64_t T, int64_t B, int64_t I, int64_t H, int relu, int training,
                         int itemsize) noexcept nogil:
    cdef int64_t off[MAX_SLOTS]
    cdef int st = check_dims(T, B, I, H, 0, 1)
    if st != FC_OK:
        return st
    if training not in (0, 1) or relu not in (0, 1):
        return FC_ERR_ARG
    return rnn_ws(T, B, I, H, training, itemsize, off)

cdef int64_t rnn_ws_size_f32(int64_t T, int64_t B, int64_t I, int64_t H, int relu,
                             int training) noexcept nogil:
    return rnn_ws_size(T, B, I, H, relu, training, 4)

cdef int64_t rnn_ws_size_f64(int64_t T, int64_t B, int64_t I, int64_t H, int relu,
                             int training) noexcept nogil:
    return rnn_ws_size(T, B, I, H, relu, training, 8)


cdef int capi_rnn_forward(floating *y, floating *h_n, void *ws, int64_t ws_bytes,
                          const floating *x, const floating *h0, const floating *w_ih,
                          const floating *w_hh, const floating *b_ih, const floating *b_hh,
                          const int64_t *lengths, int64_t T, int64_t B, int64_t I, int64_t H,
                          int relu, int training, int n_threads) noexcept nogil:
    cdef int64_t off[MAX_SLOTS]
    cdef int st, nt, rows, cols, sl = 0
    cdef floating *zero
    st = check_dims(T, B, I, H, 0, 1)
    if st != FC_OK:
        return st
    if training not in (0, 1) or relu not in (0, 1):
        return FC_ERR_ARG
    st = resolve_threads(n_threads, &nt)
    if st != FC_OK:
        return st
    if (missing(y, T * B * H) or missing(h_n, B * H) or missing(x, T * B * I)
            or missing(w_ih, H * I) or w_hh == NULL):
        return FC_ERR_NULL
    st = check_lengths(lengths, B, T)
    if st != FC_OK:
        return st
    st = check_ws(ws, ws_bytes, rnn_ws(T, B, I, H, training, sizeof(floating), off))
    if st != FC_OK:
        return st
    ws_begin(ws)
    zero = slot(ws, off, R_ZERO, y)
    memset(zero, 0, B * H * sizeof(floating))
    bias_sum(slot(ws, off, R_BIAS, y), b_ih, b_hh, H)
    plan_threads(nt, 2.0 * T * B * H * (I + H), B, H, 1, H, 0 if training else I,
                 sizeof(floating), True, _capi_forced_split, False, &nt, &rows, &cols)
    sl = train_slices(nt, rows, cols, _capi_forced_split, T, B, I, H, 1, H, training,
                      sizeof(floating))
    st = rnn_fwd(y, h_n, slot(ws, off, R_HS, y) if training else NULL,
                 NULL if training else slot(ws, off, R_HBUF, y),
                 x, h0 if h0 != NULL else zero, w_ih, w_hh, pslot(ws, off, R_WT, y),
                 pslot(ws, off, R_WIH, y) if packs_input(I, training, sizeof(floating)) else NULL,
                 slot(ws, off, R_BIAS, y), lengths, T, B, I, H, relu, nt, rows, cols, sl,
                 _capi_set_threads)
    if st == FC_OK and training:
        ws_publish(ws, CELL_RNN, sizeof(floating), input_flags(h0, NULL, lengths, relu),
                   T, B, I, H, 0, sl)
    return st


cdef int capi_rnn_backward(floating *dx, floating *dh0, floating *dw_ih, floating *dw_hh,
                           floating *db_ih, floating *db_hh, void *ws, int64_t ws_bytes,
                           const floating *dy, const floating *dh_n, const floating *x,
                           const floating *h0, const floating *w_ih, const floating *w_hh,
                           const int64_t *lengths, int64_t T, int64_t B, int64_t I, int64_t H,
                           int relu, int n_threads) noexcept nogil:
    cdef int64_t off[MAX_SLOTS]
    cdef idx chunk, dg_off
    cdef int st, nt, rows, cols, sl = 0
    cdef floating *db
    st = check_dims(T, B, I, H, 0, 1)
    if st != FC_OK:
        return st
    if relu not in (0, 1):
        return FC_ERR_ARG
    st = resolve_threads(n_threads, &nt)
    if st != FC_OK:
        return st
    if (missing(dx, T * B * I) or missing(dh0, B * H) or missing(dw_ih, H * I)
            or dw_hh == NULL or missing(x, T * B * I) or missing(w_ih, H * I) or w_hh == NULL):
        return FC_ERR_NULL
    st = check_lengths(lengths, B, T)
    if st != FC_OK:
        return st
    st = check_ws(ws, ws_bytes, rnn_ws(T, B, I, H, True, sizeof(floating), off))
    if st != FC_OK:
        return st
    # the thread plan (the forward's slices) before claiming: a refused call changes nothing
    st = backward_plan(ws, nt, 4.0 * T * B * H * (I + H), T, B, I, H, 1, H, True,
                       sizeof(floating), &nt, &rows, &cols, &sl)
    if st != FC_OK:
        return st
    st = ws_claim(ws, CELL_RNN, sizeof(floating), input_flags(h0, NULL, lengths, relu),
                  T, B, I, H, 0)
    if st != FC_OK:
        return st
    db = db_ih if db_ih != NULL else db_hh
    chunk = backward_chunk(T, B, I, H, sizeof(floating))
    if sl > 1:
        dg_off = rnn_slice_dg_offset(sl, T, B, I, H, sizeof(floating))   # >= 0 (train_slices)
    else:
        dg_off = rnn_dg_offset(T, B, I, H, sizeof(floating), chunk if chunk < T else T)
    st = rnn_bwd(dx, dh0, dw_ih, dw_hh, db,
                 dx + dg_off if dg_off >= 0 else slot(ws, off, R_DG, dx),
                 pslot(ws, off, R_WT, dx), slot(ws, off, R_HS, dx),
                 x, h0 if h0 != NULL else slot(ws, off, R_ZERO, dx), w_ih, w_hh, dy, dh_n,
                 lengths, T, B, I, H, relu, chunk, nt, rows, cols, sl, _capi_set_threads)
    if db_ih != NULL and db_hh != NULL and db_hh != db_ih:
        memcpy(db_hh, db_ih, H * sizeof(floating))   # both biases enter the same sum
    return st


# ---------------------------------------------------------------- table, capsule, addresses
cdef const char *capi_strerror(int status) noexcept nogil:
    if status == FC_OK:
        return b"fastcells: success"
    if status == FC_ERR_NULL:
        return b"fastcells: a required pointer is NULL"
    if status == FC_ERR_SIZE:
        return b"fastcells: a size is negative (or H < 1), or too large for BLAS's 32-bit integers"
    if status == FC_ERR_ARG:
        return (b"fastcells: bad argument (n_threads outside [0, 4096], a flag not 0/1, lengths "
                b"outside [0, T], or w_hr given with P = 0)")
    if status == FC_ERR_WORKSPACE_SIZE:
        return b"fastcells: workspace is NULL, not 8-byte aligned, or smaller than the size query"
    if status == FC_ERR_WORKSPACE_STATE:
        return (b"fastcells: workspace holds no unconsumed training forward of this cell, dtype, "
                b"shape and inputs (run the training forward again)")
    return b"fastcells: unknown status"


def _capi_init(str version, uintptr_t set_threads, int forced_split):
    """Called once by fastcells/__init__.py: fill the C API table and return its capsule."""
    global _capi_set_threads, _capi_forced_split, _capi_version_bytes, _capsule
    if _capsule is not None:
        return _capsule
    _capi_set_threads = <set_threads_fn>set_threads
    _capi_forced_split = forced_split
    _capi_version_bytes = version.encode()
    _table.api_version = FASTCELLS_API_VERSION
    _table.table_size = sizeof(fastcells_capi_t)
    _table.version = _capi_version_bytes
    _table.strerror = capi_strerror
    _table.lstm_workspace_size_f32 = lstm_ws_size_f32
    _table.lstm_forward_f32 = capi_lstm_forward[float]
    _table.lstm_backward_f32 = capi_lstm_backward[float]
    _table.gru_workspace_size_f32 = gru_ws_size_f32
    _table.gru_forward_f32 = capi_gru_forward[float]
    _table.gru_backward_f32 = capi_gru_backward[float]
    _table.rnn_workspace_size_f32 = rnn_ws_size_f32
    _table.rnn_forward_f32 = capi_rnn_forward[float]
    _table.rnn_backward_f32 = capi_rnn_backward[float]
    _table.lstm_workspace_size_f64 = lstm_ws_size_f64
    _table.lstm_forward_f64 = capi_lstm_forward[double]
    _table.lstm_backward_f64 = capi_lstm_backward[double]
    _table.gru_workspace_size_f64 = gru_ws_size_f64
    _table.gru_forward_f64 = capi_gru_forward[double]
    _table.gru_backward_f64 = capi_gru_backward[double]
    _table.rnn_workspace_size_f64 = rnn_ws_size_f64
    _table.rnn_forward_f64 = capi_rnn_forward[double]
    _table.rnn_backward_f64 = capi_rnn_backward[double]
    _capsule = PyCapsule_New(<void *>&_table, b"fastcells._C_API", NULL)
    return _capsule


def _capi_addresses():
    """{'fc_<name>': address} of every C API function (after _capi_init)."""
    if _capsule is None:
        raise RuntimeError("fastcells C API not initialised (import fastcells first)")
    return {
        "fc_strerror": <uintptr_t>_table.strerror,
        "fc_lstm_workspace_size_f32": <uintptr_t>_table.lstm_workspace_size_f32,
        "fc_lstm_forward_f32": <uintptr_t>_table.lstm_forward_f32,
        "fc_lstm_backward_f32": <uintptr_t>_table.lstm_backward_f32,
        "fc_gru_workspace_size_f32": <uintptr_t>_table.gru_workspace_size_f32,
        "fc_gru_forward_f32": <uintptr_t>_table.gru_forward_f32,
        "fc_gru_backward_f32": <uintptr_t>_table.gru_backward_f32,
        "fc_rnn_workspace_size_f32": <uintptr_t>_table.rnn_workspace_size_f32,
        "fc_rnn_forward_f32": <uintptr_t>_table.rnn_forward_f32,
        "fc_rnn_backward_f32": <uintptr_t>_table.rnn_backward_f32,
        "fc_lstm_workspace_size_f64": <uintptr_t>_table.lstm_workspace_size_f64,
        "fc_lstm_forward_f64": <uintptr_t>_table.lstm_forward_f64,
        "fc_lstm_backward_f64": <uintptr_t>_table.lstm_backward_f64,
        "fc_gru_workspace_size_f64": <uintptr_t>_table.gru_workspace_size_f64,
        "fc_gru_forward_f64": <uintptr_t>_table.gru_forward_f64,
        "fc_gru_backward_f64": <uintptr_t>_table.gru_backward_f64,
        "fc_rnn_workspace_size_f64": <uintptr_t>_table.rnn_workspace_size_f64,
        "fc_rnn_forward_f64": <uintptr_t>_table.rnn_forward_f64,
        "fc_rnn_backward_f64": <uintptr_t>_table.rnn_backward_f64,
    }


def _capi_version_info():
    return _table.api_version, _table.table_size
