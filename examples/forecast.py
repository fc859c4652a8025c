"""One-step-ahead forecasting of the Mauna Loa CO2 series with a stacked LSTM (4 x 50, dropout 0.2).

Data: statsmodels' bundled weekly CO2 record (1958-2001), averaged to months, gaps interpolated.
The series is MinMax-scaled with the range of the training years only. Each example is a
60-month window; the network sees the window relative to its last value and predicts the change
to the next month (so a rising trend outside the training range needs no extrapolation), and the
forecast is last value + predicted change. The last 20 % of the months are held out. The full run
must beat the naive last-value forecast on held-out RMSE (exit 1 otherwise).

    python examples/forecast.py            # full run
    python examples/forecast.py --quick    # CI: a few seconds, asserts the loss decreased
"""
import os
import time

import numpy as np

import fastcells as fc
from _common import (Adam, Linear, check_decreased, clip_grad_norm, finish, make_parser, mse,
                     plot_loss, progress, require, single_threaded_numpy_blas, save_png)

WINDOW = 60


def load_co2():
    sm = require("statsmodels.api", "statsmodels")
    weekly = sm.datasets.co2.load_pandas().data["co2"]
    monthly = weekly.resample("MS").mean().interpolate()
    return monthly.index, monthly.to_numpy(np.float64)


def make_windows(scaled, targets_from, targets_to):
    """Windows whose target index t is in [targets_from, targets_to): inputs scaled[t-60:t]."""
    ts = np.arange(max(targets_from, WINDOW), targets_to)
    win = np.stack([scaled[t - WINDOW:t] for t in ts])              # (N, 60)
    last = win[:, -1]
    x = (win - last[:, None])[:, :, None].astype(np.float32)        # (N, 60, 1), relative
    dt = (scaled[ts] - last).astype(np.float32)[:, None]            # (N, 1) change to predict
    return ts, x, dt, last


def main():
    p = make_parser(__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=150)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--hidden", type=int, default=50)
    p.add_argument("--dropout", type=float, default=0.2)
    args = p.parse_args()
    if args.quick:
        args.epochs = 6

    dates, series = load_co2()
    n = len(series)
    split = int(round(0.8 * n))
    lo, hi = series[:split].min(), series[:split].max()             # MinMax on training only
    scaled = (series - lo) / (hi - lo)
    _, x_tr, d_tr, _ = make_windows(scaled, 0, split)
    ts_te, x_te, d_te, last_te = make_windows(scaled, split, n)
    print(f"CO2 monthly {dates[0]:%Y-%m}..{dates[-1]:%Y-%m}: {n} months; "
          f"{len(x_tr)} training windows, {len(x_te)} held-out windows "
          f"(targets from {dates[split]:%Y-%m})")

    rng = np.random.default_rng(args.seed)
    lstm = fc.LSTM(1, args.hidden, num_layers=args.layers, dropout=args.dropout,
                   batch_first=True, seed=args.seed)
    lstm.n_threads = args.threads
    head = Linear(args.hidden, 1, rng=rng)
    modules = {"lstm": lstm, "head": head}
    opt = Adam(modules, lr=args.lr)
    L = args.layers

    def predict_change(x):
        lstm.eval()
        _, (h_n, _) = lstm(x)
        lstm.train()
        return head(h_n[-1], save=False)

    def rmse_ppm(pred_change):
        pred = (last_te + pred_change[:, 0]) * (hi - lo) + lo
        return float(np.sqrt(np.mean((pred - series[ts_te]) ** 2))), pred

    naive_rmse = float(np.sqrt(np.mean((series[ts_te - 1] - series[ts_te]) ** 2)))
    seasonal_rmse = float(np.sqrt(np.mean((series[ts_te - 12] - series[ts_te]) ** 2)))

    steps_per_epoch = int(np.ceil(len(x_tr) / args.batch))
    losses, eval_x, eval_rmse = [], [], []
    bar = progress(args.epochs * steps_per_epoch, "forecast LSTM")
    t0 = time.perf_counter()
    for epoch in range(args.epochs):
        order = rng.permutation(len(x_tr))
        for s in range(steps_per_epoch):
            idx = order[s * args.batch:(s + 1) * args.batch]
            _, (h_n, _) = lstm(x_tr[idx])
            loss, dpred = mse(head(h_n[-1]), d_tr[idx])
            opt.zero_grad()
            dh_n = np.zeros_like(h_n)
            dh_n[-1] = head.backward(dpred)                  # loss on the top layer's last state
            lstm.backward(None, (dh_n, None))
            clip_grad_norm(modules, 1.0)
            opt.step()
            losses.append(loss)
            bar.set_postfix(mse=f"{loss:.2e}")
            bar.update()
        if (epoch + 1) % max(1, args.epochs // 15) == 0 or epoch + 1 == args.epochs:
            eval_x.append(len(losses))
            eval_rmse.append(rmse_ppm(predict_change(x_te))[0])
            bar.set_postfix(mse=f"{loss:.2e}", test_rmse=f"{eval_rmse[-1]:.3f}")
    bar.close()
    elapsed = time.perf_counter() - t0

    rmse, pred = rmse_ppm(predict_change(x_te))
    print(f"LSTM(1, {args.hidden}, num_layers={L}, dropout={args.dropout}) + Linear, "
          f"{args.epochs} epochs, {len(losses)} steps in {elapsed:.1f} s")
    print(f"held-out RMSE: LSTM {rmse:.3f} ppm | naive last value {naive_rmse:.3f} ppm | "
          f"seasonal naive (12 months ago) {seasonal_rmse:.3f} ppm")

    name = "forecast_quick" if args.quick else "forecast"

    def draw(fig, ax):
        ax.plot(dates[ts_te], series[ts_te], "k-", lw=1.5, label="truth")
        ax.plot(dates[ts_te], pred, "r-", lw=1.2, label=f"LSTM (RMSE {rmse:.2f} ppm)")
        ax.plot(dates[ts_te], series[ts_te - 1], ":", color="gray", lw=1,
                label=f"naive last value (RMSE {naive_rmse:.2f} ppm)")
        ax.set_title("Mauna Loa CO2, held-out months: one-step-ahead forecast")
        ax.set_ylabel("CO2 (ppm)")
        ax.grid(alpha=0.3)
        ax.legend()
    save_png(os.path.join(args.out, f"{name}_test.png"), draw, figsize=(8, 4))
    scale2 = (hi - lo) ** 2
    plot_loss(os.path.join(args.out, f"{name}_loss.png"), np.array(losses) * scale2,
              "CO2 LSTM: training MSE of the monthly change", ylabel="MSE (ppm²)",
              extra={"held-out MSE": (np.array(eval_x), np.array(eval_rmse) ** 2)})
    if args.quick:
        finish(check_decreased(losses), "training loss did not decrease")
    else:
        finish(rmse < naive_rmse, f"LSTM RMSE {rmse:.3f} does not beat naive {naive_rmse:.3f}")


if __name__ == "__main__":
    with single_threaded_numpy_blas():
        main()
