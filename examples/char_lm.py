"""Character-level LSTM language model trained on the Python standard library's own source code.

A 2-layer LSTM (one-hot characters in, a Linear layer to the vocabulary out) is trained with
truncated BPTT: the text is cut into `--batch` parallel streams, each step trains on the next
`--seq` characters of every stream, and the final (h, c) of one step is the initial state of
the next (carried, not back-propagated through). Adam and global-norm gradient clipping in NumPy.
Prints samples during training, writes a loss-curve PNG, and at the end measures training
throughput (chars/s) of the same model on fastcells, on the NumPy reference
(`fastcells.reference`) and on PyTorch if it is installed.

    python examples/char_lm.py                       # full run
    python examples/char_lm.py --quick               # CI: a few seconds, asserts the loss decreased
    python examples/char_lm.py --data /some/dir      # any directory of .py files (or one file)
"""
import contextlib
import os
import sysconfig
import time

import numpy as np

import fastcells as fc
import fastcells.layers
import fastcells.reference
from _common import (Adam, Linear, check_decreased, clip_grad_norm, finish, make_parser,
                     plot_loss, progress, single_threaded_numpy_blas, softmax,
                     softmax_cross_entropy)

# Vocabulary: newline, tab, printable ASCII; anything else becomes UNK.
UNK = "\x00"
VOCAB = [UNK, "\n", "\t"] + [chr(c) for c in range(32, 127)]
INDEX = {ch: i for i, ch in enumerate(VOCAB)}


def read_corpus(path, max_chars):
    """Concatenated .py files under `path` (sorted; site-packages skipped), at most max_chars."""
    if os.path.isfile(path):
        files = [path]
    else:
        files = []
        for root, dirs, names in os.walk(path):
            dirs[:] = sorted(d for d in dirs if d not in ("site-packages", "dist-packages",
                                                          "__pycache__"))
            files += [os.path.join(root, n) for n in sorted(names) if n.endswith(".py")]
    parts, total = [], 0
    for f in files:
        try:
            with open(f, encoding="utf-8", errors="replace") as fh:
                text = fh.read()
        except OSError:
            continue
        parts.append(text)
        total += len(text)
        if total >= max_chars:
            break
    text = "\n".join(parts)[:max_chars]
    if len(text) < 10_000:
        raise SystemExit(f"error: found only {len(text)} characters of .py source under {path}")
    ids = np.fromiter((INDEX.get(ch, 0) for ch in text), dtype=np.int64, count=len(text))
    return ids, len(files)


class Model:
    """LSTM + Linear over one-hot characters, time-major."""

    def __init__(self, hidden, layers, seed, threads):
        V = len(VOCAB)
        self.lstm = fc.LSTM(V, hidden, num_layers=layers, seed=seed)
        self.lstm.n_threads = threads
        self.head = Linear(hidden, V, rng=seed + 1)
        self.modules = {"lstm": self.lstm, "head": self.head}
        self.eye = np.eye(V, dtype=np.float32)

    def train_step(self, opt, inputs, targets, state, clip):
        """One TBPTT step on (T, B) index arrays; returns (loss, carried state)."""
        y, state = self.lstm(self.eye[inputs], state)
        loss, dlogits = softmax_cross_entropy(self.head(y), targets)
        opt.zero_grad()
        self.lstm.backward(self.head.backward(dlogits))
        clip_grad_norm(self.modules, clip)
        opt.step()
        return loss, state

    def eval_loss(self, ids, batch, seq):
        """Mean cross-entropy (nats/char) over `ids`, evaluated in `batch` streams."""
        self.lstm.eval()
        n = (len(ids) - 1) // batch
        inp = ids[:n * batch].reshape(batch, n).T
        tgt = ids[1:n * batch + 1].reshape(batch, n).T
        state, total = None, 0.0
        for s in range(0, n, seq):
            y, state = self.lstm(self.eye[inp[s:s + seq]], state)
            total += softmax_cross_entropy(self.head(y, save=False), tgt[s:s + seq])[0] * \
                y.shape[0]
        self.lstm.train()
        return total / n

    def sample(self, prime, length, temperature, rng):
        self.lstm.eval()
        ids = [INDEX.get(ch, 0) for ch in prime]
        y, state = self.lstm(self.eye[np.array(ids)][:, None, :])
        out = []
        for _ in range(length):
            p = softmax(self.head(y[-1, 0], save=False).astype(np.float64) / temperature)
            nxt = int(rng.choice(len(VOCAB), p=p / p.sum()))
            out.append(VOCAB[nxt])
            y, state = self.lstm(self.eye[[nxt]][:, None, :], state)
        self.lstm.train()
        return prime + "".join(out).replace(UNK, "?")


def batches(ids, batch, seq):
    """Yields (inputs, targets, new_epoch) of shape (seq, batch) forever, streams in parallel."""
    n = (len(ids) - 1) // batch
    inp = ids[:n * batch].reshape(batch, n).T
    tgt = ids[1:n * batch + 1].reshape(batch, n).T
    while True:
        for s in range(0, n - seq + 1, seq):
            yield inp[s:s + seq], tgt[s:s + seq], s == 0


@contextlib.contextmanager
def reference_backend(threads):
    """Runs fastcells' layers on the plain-NumPy reference kernels (same signatures), with
    NumPy's BLAS allowed `threads` threads (the reference's only parallelism)."""
    from threadpoolctl import threadpool_limits
    saved = fastcells.layers._F
    fastcells.layers._F = fastcells.reference
    try:
        with threadpool_limits(limits=threads, user_api="blas"):
            yield
    finally:
        fastcells.layers._F = saved


def numpy_stepper(args, ids, backend):
    """A function running one full training step (forward, backward, clip, Adam) of a fresh
    model on fastcells' kernels or, with backend="reference", on fastcells.reference."""
    model = Model(args.hidden, args.layers, args.seed, args.threads)
    opt = Adam(model.modules, lr=args.lr)
    it = batches(ids, args.batch, args.seq)
    box = [None]
    threads = args.threads or os.cpu_count()

    def step():
        inp, tgt, _ = next(it)
        ctx = reference_backend(threads) if backend == "reference" else contextlib.nullcontext()
        with ctx:
            box[0] = model.train_step(opt, inp, tgt, box[0], args.clip)[1]
    return step


def torch_stepper(args, ids):
    """The same training step in PyTorch (nn.LSTM, nn.Linear, Adam, clip_grad_norm_)."""
    try:
        import torch
    except ImportError:
        return None
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads or os.cpu_count())
    V = len(VOCAB)
    lstm = torch.nn.LSTM(V, args.hidden, num_layers=args.layers)
    head = torch.nn.Linear(args.hidden, V)
    params = list(lstm.parameters()) + list(head.parameters())
    opt = torch.optim.Adam(params, lr=args.lr)
    eye = torch.eye(V)
    it = batches(ids, args.batch, args.seq)
    box = [None]

    def step():
        inp, tgt, _ = next(it)
        y, state = lstm(eye[torch.from_numpy(inp)], box[0])
        box[0] = tuple(s.detach() for s in state)
        loss = torch.nn.functional.cross_entropy(head(y).reshape(-1, V),
                                                 torch.from_numpy(tgt).reshape(-1))
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, args.clip)
        opt.step()
    return step


def compare_throughput(args, ids):
    """chars/s of one training step per backend, timed in blocks: two rounds, backends in
    rotated order, each block one untimed settle step (so no backend pays for the previous
    one's still-spinning threads) and then speed_steps/2 timed steps; the median is reported."""
    steppers = {"fastcells": numpy_stepper(args, ids, "fastcells"),
                "fastcells.reference": numpy_stepper(args, ids, "reference")}
    torch_step = torch_stepper(args, ids)
    if torch_step is not None:
        steppers["PyTorch"] = torch_step
    names = list(steppers)
    times = {n: [] for n in names}
    per_block = max(1, args.speed_steps // 2)
    for r in range(2):
        for n in names[r:] + names[:r]:
            steppers[n]()
            for _ in range(per_block):
                t0 = time.perf_counter()
                steppers[n]()
                times[n].append(time.perf_counter() - t0)
    chars = args.batch * args.seq
    speed = {n: chars / float(np.median(t)) for n, t in times.items()}
    print(f"\nthroughput of the same training step (batch {args.batch}, TBPTT {args.seq}; median "
          f"of {2 * per_block} steps in blocks; {args.threads or os.cpu_count()} threads):")
    for n in names:
        rel = "" if n == "fastcells" else f"  (fastcells is {speed['fastcells'] / speed[n]:.2f}x)"
        print(f"  {n:<20} {speed[n]:>9,.0f} chars/s{rel}")
    if torch_step is None:
        print("  PyTorch              not installed")
    return speed


def main():
    p = make_parser(__doc__.splitlines()[0])
    p.add_argument("--data", default=sysconfig.get_paths()["stdlib"],
                   help="directory of .py files or a text file (default: the stdlib, %(default)s)")
    p.add_argument("--max-chars", type=int, default=4_000_000)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--seq", type=int, default=100, help="TBPTT length")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--clip", type=float, default=5.0)
    p.add_argument("--sample-every", type=int, default=300)
    p.add_argument("--temperature", type=float, default=0.7)
    p.add_argument("--speed-steps", type=int, default=10,
                   help="timed steps per backend in the throughput comparison")
    args = p.parse_args()
    if args.quick:
        args.hidden, args.seq, args.batch, args.steps = 128, 50, 16, 80
        args.max_chars, args.sample_every, args.speed_steps = 300_000, 40, 4

    ids, n_files = read_corpus(args.data, args.max_chars)
    n_val = max(len(ids) // 50, 2 * args.batch * args.seq)
    train_ids, val_ids = ids[:-n_val], ids[-n_val:]
    print(f"corpus: {len(ids):,} chars from {n_files} files under {args.data}; "
          f"{len(train_ids):,} train / {len(val_ids):,} validation; vocabulary {len(VOCAB)}")
    print(f"model: LSTM({len(VOCAB)}, {args.hidden}, num_layers={args.layers}) + "
          f"Linear({args.hidden}, {len(VOCAB)}); TBPTT {args.seq} x batch {args.batch}")

    model = Model(args.hidden, args.layers, args.seed, args.threads)
    opt = Adam(model.modules, lr=args.lr)
    rng = np.random.default_rng(args.seed)
    it = batches(train_ids, args.batch, args.seq)
    chars_per_step = args.batch * args.seq
    losses, val_x, val_y, state = [], [], [], None
    bar = progress(args.steps, "char LSTM")
    t0 = time.perf_counter()
    train_time = 0.0
    for step in range(1, args.steps + 1):
        inp, tgt, new_epoch = next(it)
        if new_epoch:
            state = None
        ts = time.perf_counter()
        loss, state = model.train_step(opt, inp, tgt, state, args.clip)
        train_time += time.perf_counter() - ts
        losses.append(loss)
        bar.set_postfix(loss=f"{loss:.3f}", chars_s=f"{step * chars_per_step / train_time:,.0f}")
        bar.update()
        if step % args.sample_every == 0 or step == args.steps:
            val_x.append(step)
            val_y.append(model.eval_loss(val_ids, args.batch, args.seq))
            print(f"\n--- step {step}: train loss {np.mean(losses[-20:]):.3f}, "
                  f"validation loss {val_y[-1]:.3f} nats/char "
                  f"({val_y[-1] / np.log(2):.2f} bits/char); sample:")
            print(model.sample("def ", 240 if not args.quick else 80, args.temperature, rng))
            print("---", flush=True)
    bar.close()
    elapsed = time.perf_counter() - t0
    speed = args.steps * chars_per_step / train_time
    print(f"trained {args.steps} steps ({args.steps * chars_per_step:,} chars) in {elapsed:.1f} s "
          f"(training steps alone {train_time:.1f} s: {speed:,.0f} chars/s); "
          f"final validation loss {val_y[-1]:.3f} nats/char ({val_y[-1] / np.log(2):.2f} bits/char)")
    name = "char_lm_quick" if args.quick else "char_lm"
    plot_loss(os.path.join(args.out, f"{name}_loss.png"), losses,
              f"char LSTM {args.layers}x{args.hidden} on stdlib source", ylabel="nats / char",
              extra={"validation": (np.array(val_x), np.array(val_y))})

    compare_throughput(args, train_ids)
    if args.quick:
        finish(check_decreased(losses), "training loss did not decrease")


if __name__ == "__main__":
    with single_threaded_numpy_blas():
        main()
