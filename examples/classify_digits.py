"""Many-to-one GRU classifier on scikit-learn's bundled 8x8 digits (image rows as timesteps).

Each 8x8 image is a sequence of 8 rows of 8 pixels. A GRU reads the rows and a Linear layer maps
the last hidden state to the 10 classes; softmax cross-entropy, Adam, global-norm clipping.
The full run must reach >= 95 % held-out accuracy (exit 1 otherwise).

    python examples/classify_digits.py            # full run
    python examples/classify_digits.py --quick    # CI: a few seconds, asserts the loss decreased
"""
import os
import time

import numpy as np

import fastcells as fc
from _common import (Adam, Linear, check_decreased, clip_grad_norm, finish, make_parser,
                     plot_loss, progress, require, single_threaded_numpy_blas, softmax_cross_entropy)


def main():
    p = make_parser(__doc__.splitlines()[0])
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=3e-3)
    args = p.parse_args()
    datasets = require("sklearn.datasets", "scikit-learn")
    model_selection = require("sklearn.model_selection", "scikit-learn")
    if args.quick:
        args.epochs, args.hidden = 3, 64

    digits = datasets.load_digits()
    X = (digits.images / 16.0).astype(np.float32)            # (N, 8 rows, 8 pixels)
    y = digits.target.astype(np.int64)
    X_tr, X_te, y_tr, y_te = model_selection.train_test_split(
        X, y, test_size=0.25, stratify=y, random_state=args.seed)
    print(f"digits: {len(X_tr)} train / {len(X_te)} test images, 8 timesteps x 8 features")

    rng = np.random.default_rng(args.seed)
    gru = fc.GRU(8, args.hidden, batch_first=True, seed=args.seed)
    gru.n_threads = args.threads
    head = Linear(args.hidden, 10, rng=rng)
    modules = {"gru": gru, "head": head}
    opt = Adam(modules, lr=args.lr)

    def predict(Xb):
        gru.eval()
        _, h_n = gru(Xb)
        gru.train()
        return head(h_n[-1], save=False).argmax(axis=1)

    losses, test_acc = [], []
    steps_per_epoch = int(np.ceil(len(X_tr) / args.batch))
    bar = progress(args.epochs * steps_per_epoch, "digits GRU")
    t0 = time.perf_counter()
    for epoch in range(args.epochs):
        order = rng.permutation(len(X_tr))
        for s in range(steps_per_epoch):
            idx = order[s * args.batch:(s + 1) * args.batch]
            xb, yb = X_tr[idx], y_tr[idx]
            _, h_n = gru(xb)                                  # h_n: (1, B, H)
            logits = head(h_n[-1])
            loss, dlogits = softmax_cross_entropy(logits, yb)
            opt.zero_grad()
            dh = head.backward(dlogits)
            gru.backward(None, dh[None])                      # loss on the final state only
            clip_grad_norm(modules, 5.0)
            opt.step()
            losses.append(loss)
            bar.set_postfix(loss=f"{loss:.3f}")
            bar.update()
        test_acc.append(float(np.mean(predict(X_te) == y_te)))
        bar.set_postfix(loss=f"{loss:.3f}", test_acc=f"{test_acc[-1]:.3f}")
    bar.close()
    elapsed = time.perf_counter() - t0

    acc = test_acc[-1]
    train_acc = float(np.mean(predict(X_tr) == y_tr))
    print(f"GRU(8, {args.hidden}) + Linear({args.hidden}, 10), {args.epochs} epochs, "
          f"{len(losses)} steps in {elapsed:.1f} s")
    print(f"final train loss {np.mean(losses[-steps_per_epoch:]):.4f}, "
          f"train accuracy {train_acc:.4f}, held-out accuracy {acc:.4f}")
    name = "digits_quick" if args.quick else "digits"
    epochs_x = np.arange(1, args.epochs + 1) * steps_per_epoch
    plot_loss(os.path.join(args.out, f"{name}_loss.png"), losses,
              f"GRU digits: held-out accuracy {acc:.1%}",
              extra={"held-out error rate": (epochs_x, 1.0 - np.array(test_acc))})
    if args.quick:
        finish(check_decreased(losses), "training loss did not decrease")
    else:
        finish(acc >= 0.95, f"held-out accuracy {acc:.4f} < 0.95")


if __name__ == "__main__":
    with single_threaded_numpy_blas():
        main()
