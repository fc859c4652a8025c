/* fc_sync.h -- a small spin barrier for the threads of one kernel call.
 *
 * The kernels run one OpenMP parallel region per call and synchronise inside it with this
 * barrier (per timestep when the threads split the hidden units, and between the phases of a
 * call). It spins with `pause` for a bounded number of rounds -- the waits are microseconds,
 * as the threads do equal work -- and then sleeps on a futex (Linux; elsewhere it yields), so
 * when the machine is oversubscribed (other processes, several Python threads calling
 * fastcells at once) a waiting thread gives its core to the one it waits for instead of
 * burning it. Unlike `omp barrier` it does not depend on GOMP_SPINCOUNT / OMP_WAIT_POLICY,
 * which fastcells keeps short so that idle OpenMP threads do not steal cores from the user's
 * NumPy code between kernel calls.
 */
#ifndef FC_SYNC_H
#define FC_SYNC_H

#include <sched.h>
#include <stddef.h>
#include <stdint.h>
#ifdef __linux__
#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <limits.h>
#endif

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define FC_CPU_RELAX() _mm_pause()
#elif defined(__aarch64__)
#define FC_CPU_RELAX() __asm__ __volatile__("yield")
#else
#define FC_CPU_RELAX() ((void)0)
#endif

#define FC_SPIN_ROUNDS 4000

typedef struct {
    int n;          /* number of threads taking part */
    int count;      /* arrivals in the current generation */
    int gen;        /* generation, bumped by the last arrival (the futex word) */
    int sleepers;   /* threads that may be asleep on gen */
} fc_barrier_t;

static inline void fc_futex_wait(int *addr, int val)
{
#ifdef __linux__
    syscall(SYS_futex, addr, FUTEX_WAIT_PRIVATE, val, NULL, NULL, 0);
#else
    (void)addr; (void)val;
    sched_yield();
#endif
}

static inline void fc_futex_wake_all(int *addr)
{
#ifdef __linux__
    syscall(SYS_futex, addr, FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL, 0);
#else
    (void)addr;
#endif
}

static inline void fc_barrier_init(fc_barrier_t *b, int n)
{
    b->n = n;
    b->count = 0;
    b->gen = 0;
    b->sleepers = 0;
}

/* Set the number of participants from inside the region (all threads store the same value, the
 * team size, before their first wait), in case OpenMP granted fewer threads than requested. */
static inline void fc_barrier_set_n(fc_barrier_t *b, int n)
{
    __atomic_store_n(&b->n, n, __ATOMIC_RELAXED);
}

static inline void fc_barrier_wait(fc_barrier_t *b)
{
    int n = __atomic_load_n(&b->n, __ATOMIC_RELAXED);
    if (n <= 1)
        return;
    int gen = __atomic_load_n(&b->gen, __ATOMIC_ACQUIRE);
    if (__atomic_add_fetch(&b->count, 1, __ATOMIC_ACQ_REL) == n) {
        __atomic_store_n(&b->count, 0, __ATOMIC_RELAXED);
        __atomic_store_n(&b->gen, gen + 1, __ATOMIC_SEQ_CST);   /* releases the others */
        if (__atomic_load_n(&b->sleepers, __ATOMIC_SEQ_CST) > 0)
            fc_futex_wake_all(&b->gen);
        return;
    }
    for (unsigned spins = 0; spins < FC_SPIN_ROUNDS; spins++) {
        if (__atomic_load_n(&b->gen, __ATOMIC_ACQUIRE) != gen)
            return;
        FC_CPU_RELAX();
    }
    /* Sleep. The SEQ_CST increment of sleepers and the last arrival's SEQ_CST store of gen
     * followed by its load of sleepers guarantee a wake-up is not lost: either it sees us, or
     * we see the new gen (and futex_wait returns at once when gen has changed). */
    __atomic_add_fetch(&b->sleepers, 1, __ATOMIC_SEQ_CST);
    while (__atomic_load_n(&b->gen, __ATOMIC_SEQ_CST) == gen)
        fc_futex_wait(&b->gen, gen);
    __atomic_sub_fetch(&b->sleepers, 1, __ATOMIC_SEQ_CST);
}

/* Atomics for the C API's workspace state (a backward pass claims a workspace exactly once). */
static inline int fc_atomic_load_int(const int *p)
{
    return __atomic_load_n(p, __ATOMIC_ACQUIRE);
}

static inline void fc_atomic_store_int(int *p, int v)
{
    __atomic_store_n(p, v, __ATOMIC_RELEASE);
}

/* 1 if *p was `expected` and is now `desired`, else 0 */
static inline int fc_atomic_cas_int(int *p, int expected, int desired)
{
    return __atomic_compare_exchange_n(p, &expected, desired, 0, __ATOMIC_ACQ_REL,
                                       __ATOMIC_ACQUIRE);
}

/* Tasks handed out in turn to the threads of a phase (fc_task_take returns 0, 1, 2, ...): work
 * split into more parts than threads, taken by whichever thread is free, so that a thread whose
 * vCPU runs slower (the host's other load) does less of it. The parts themselves are fixed by
 * the call's shape and n_threads, so results do not depend on which thread takes which. */
typedef struct {
    long next;
} fc_tasks_t;

static inline void fc_tasks_init(fc_tasks_t *q)
{
    q->next = 0;
}

static inline long fc_task_take(fc_tasks_t *q)
{
    return __atomic_fetch_add(&q->next, 1, __ATOMIC_RELAXED);
}

/* Prefetch rows [0, rows) x bytes [0, row_bytes) of a matrix with row stride ld_bytes into L2
 * (prefetcht1), one request per 64-byte line: a thread's rows of the next step's input
 * projection, which the hoisted GEMM before the time loop split by rows of T*B, so that for
 * half the steps the other core wrote them. */
static inline void fc_prefetch_rows(const void *p, ptrdiff_t rows, ptrdiff_t row_bytes,
                                    ptrdiff_t ld_bytes)
{
    const char *c = (const char *)p;
    for (ptrdiff_t r = 0; r < rows; r++) {
        const char *row = c + r * ld_bytes;
        uintptr_t a = (uintptr_t)row & ~(uintptr_t)63, end = (uintptr_t)row + row_bytes;
        for (; a < end; a += 64)
            __builtin_prefetch((const void *)a, 0, 2);
    }
}

#endif
