"""Shared pieces of the fastcells examples: a NumPy Adam, global-norm gradient clipping, a Linear
output layer, softmax cross-entropy, MSE, progress bars and PNG saving.

Every trainable object here (a fastcells layer or ``Linear``) has the same small interface:
``named_parameters()`` yields ``(name, array)`` with the live arrays, ``grads[name]`` holds the
accumulated gradient of the same shape, and ``zero_grad()`` zeroes the gradients in place.
The optimizer and the clipping take a dict ``{prefix: module}`` and work across all of them.
"""
import argparse
import contextlib
import importlib
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_OUT = os.path.join(HERE, "out")


# ----------------------------------------------------------------------------- command line
def make_parser(description):
    """The options every example shares: --quick, --out, --threads, --seed."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true",
                   help="a few seconds of training (CI): asserts the loss decreased")
    p.add_argument("--out", default=DEFAULT_OUT, help="directory for PNGs (default: %(default)s)")
    p.add_argument("--threads", type=int, default=None,
                   help="threads per kernel call (default: OpenMP's default)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    return p


def require(module, pip_name, extra="examples"):
    """Import an optional dependency, or exit with code 2 and install instructions."""
    try:
        return importlib.import_module(module)
    except ImportError:
        print(f"error: this example needs {pip_name}, which is not installed.\n"
              f"  install it with:  python -m pip install {pip_name}\n"
              f"  or all example dependencies:  python -m pip install \".[{extra}]\"",
              file=sys.stderr)
        sys.exit(2)


def check_decreased(losses, what="loss", window=5):
    """Quick-mode gate: the mean of the last `window` losses must be below that of the first."""
    losses = np.asarray(losses, dtype=np.float64)
    w = max(1, min(window, len(losses) // 2))
    first, last = losses[:w].mean(), losses[-w:].mean()
    ok = bool(np.isfinite(last) and last < first)
    print(f"{what}: first {w} steps {first:.4f} -> last {w} steps {last:.4f}: "
          f"{'decreased' if ok else 'DID NOT DECREASE'}")
    return ok


def finish(ok, message):
    """Exit non-zero with `message` unless `ok`."""
    if not ok:
        print(f"FAILED: {message}", file=sys.stderr)
        sys.exit(1)


@contextlib.contextmanager
def single_threaded_numpy_blas():
    """Limits NumPy's own BLAS to one thread while fastcells trains.

    The NumPy parts of a training step (output layer, loss, optimizer) are small. If NumPy's
    OpenBLAS runs them multi-threaded, its worker threads keep spinning for a while afterwards
    and compete with fastcells' OpenMP threads for the cores: on a 2-core machine that made the
    char_lm LSTM backward ~1.6x slower. fastcells' own BLAS calls are single-threaded inside
    its threads either way, so this limit costs it nothing.
    """
    from threadpoolctl import threadpool_limits   # a dependency of fastcells
    with threadpool_limits(limits=1, user_api="blas"):
        yield


# ----------------------------------------------------------------------------- layers
class Linear:
    """y = x @ weight.T + bias over the last axis, PyTorch's layout and initialisation."""

    def __init__(self, in_features, out_features, dtype=np.float32, rng=None):
        rng = np.random.default_rng(rng)
        bound = 1.0 / np.sqrt(in_features)
        self.weight = rng.uniform(-bound, bound, (out_features, in_features)).astype(dtype)
        self.bias = rng.uniform(-bound, bound, (out_features,)).astype(dtype)
        self.grads = {"weight": np.zeros_like(self.weight), "bias": np.zeros_like(self.bias)}
        self._x = None

    def named_parameters(self):
        yield "weight", self.weight
        yield "bias", self.bias

    def zero_grad(self):
        for g in self.grads.values():
            g[...] = 0

    def __call__(self, x, save=True):
        self._x = x if save else None
        return x @ self.weight.T + self.bias

    def backward(self, dy):
        """Accumulates the parameter gradients and returns dL/dx."""
        x = self._x.reshape(-1, self.weight.shape[1])
        d = dy.reshape(-1, self.weight.shape[0])
        self.grads["weight"] += d.T @ x
        self.grads["bias"] += d.sum(axis=0)
        self._x = None
        return dy @ self.weight


# ----------------------------------------------------------------------------- losses
def softmax(logits, axis=-1):
    z = logits - logits.max(axis=axis, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=axis, keepdims=True)
    return z


def softmax_cross_entropy(logits, targets):
    """Mean cross-entropy of integer `targets` under `logits` (..., C), and dL/dlogits."""
    C = logits.shape[-1]
    flat = logits.reshape(-1, C)
    t = np.asarray(targets).reshape(-1)
    n = flat.shape[0]
    shifted = flat - flat.max(axis=1, keepdims=True)
    logsumexp = np.log(np.exp(shifted).sum(axis=1))
    loss = float(np.mean(logsumexp - shifted[np.arange(n), t]))
    grad = np.exp(shifted - logsumexp[:, None])
    grad[np.arange(n), t] -= 1
    grad /= n
    return loss, grad.reshape(logits.shape).astype(logits.dtype, copy=False)


def mse(pred, target):
    """Mean squared error and dL/dpred."""
    diff = pred - target
    return float(np.mean(diff * diff)), (2.0 / diff.size) * diff


# ----------------------------------------------------------------------------- optimisation
def _named(modules):
    for prefix, m in modules.items():
        for name, p in m.named_parameters():
            yield f"{prefix}.{name}", p, m.grads[name]


class Adam:
    """Adam (Kingma & Ba) with bias correction; moments keyed by 'prefix.parameter_name'.

    ``modules`` is a dict {prefix: module}; ``step()`` updates every parameter in place from
    ``module.grads``.
    """

    def __init__(self, modules, lr=1e-3, betas=(0.9, 0.999), eps=1e-8):
        self.modules = modules
        self.lr, (self.b1, self.b2), self.eps = lr, betas, eps
        self.t = 0
        self.m = {k: np.zeros_like(p) for k, p, _ in _named(modules)}
        self.v = {k: np.zeros_like(p) for k, p, _ in _named(modules)}

    def step(self):
        self.t += 1
        c1 = 1.0 - self.b1 ** self.t
        c2 = 1.0 - self.b2 ** self.t
        for k, p, g in _named(self.modules):
            m, v = self.m[k], self.v[k]
            m *= self.b1
            m += (1.0 - self.b1) * g
            v *= self.b2
            v += (1.0 - self.b2) * (g * g)
            p -= (self.lr / c1) * m / (np.sqrt(v / c2) + self.eps)

    def zero_grad(self):
        for m in self.modules.values():
            m.zero_grad()


def clip_grad_norm(modules, max_norm):
    """Scales all gradients in place so their global L2 norm is at most `max_norm`.

    Returns the norm before clipping (like ``torch.nn.utils.clip_grad_norm_``).
    """
    total = np.sqrt(sum(float(np.dot(g.ravel(), g.ravel())) for _, _, g in _named(modules)))
    if total > max_norm:
        scale = max_norm / (total + 1e-6)
        for _, _, g in _named(modules):
            g *= scale
    return total


# ----------------------------------------------------------------------------- progress / plots
class _PlainProgress:
    """Fallback when tqdm is missing: a line every ~10 % of the run."""

    def __init__(self, total, desc):
        self.total, self.desc, self.n, self.post = total, desc, 0, ""
        self.every = max(1, total // 10)
        self.t0 = time.perf_counter()

    def update(self, n=1):
        self.n += n
        if self.n % self.every == 0 or self.n == self.total:
            print(f"{self.desc}: {self.n}/{self.total} {self.post} "
                  f"[{time.perf_counter() - self.t0:.0f}s]", flush=True)

    def set_postfix(self, **kw):
        self.post = " ".join(f"{k}={v}" for k, v in kw.items())

    def close(self):
        pass


class _TqdmProgress:
    def __init__(self, bar):
        self.bar = bar

    def update(self, n=1):
        self.bar.update(n)

    def set_postfix(self, **kw):
        self.bar.set_postfix(refresh=False, **kw)   # redrawn at tqdm's own pace

    def close(self):
        self.bar.close()


def progress(total, desc):
    """A tqdm bar if tqdm is installed and stderr is a terminal, else a plain line every ~10 %
    of the run (readable in CI logs). Both have update(n), set_postfix(**kw) and close()."""
    try:
        from tqdm import tqdm
    except ImportError:
        tqdm = None
    if tqdm is None or not sys.stderr.isatty():
        return _PlainProgress(total, desc)
    return _TqdmProgress(tqdm(total=total, desc=desc, dynamic_ncols=True, mininterval=0.5))


def save_png(path, draw, figsize=(7, 4)):
    """Calls draw(fig, ax) and saves a PNG if matplotlib is installed. Returns path or None."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(f"(matplotlib not installed: skipping {path})")
        return None
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig, ax = plt.subplots(figsize=figsize)
    draw(fig, ax)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    print(f"wrote {path}")
    return path


def plot_loss(path, losses, title, ylabel="loss", xlabel="step", extra=None):
    """Loss-curve PNG; `extra` is an optional dict label -> (xs, ys) of further curves."""
    def draw(fig, ax):
        ax.plot(np.arange(1, len(losses) + 1), losses, lw=0.8, label="train (per step)")
        if len(losses) >= 20:
            k = max(5, len(losses) // 50)
            smooth = np.convolve(losses, np.ones(k) / k, mode="valid")
            ax.plot(np.arange(k, len(losses) + 1), smooth, lw=1.8, label=f"{k}-step mean")
        for label, (xs, ys) in (extra or {}).items():
            ax.plot(xs, ys, "o-", lw=1.5, label=label)
        ax.set_title(title)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend()
    return save_png(path, draw)
