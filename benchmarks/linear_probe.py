"""selfsup's linear probe (selfsup.eval.image_probe.linear_probe) against scikit-learn's
LogisticRegression doing the same job, in one process, on the same features.

    python benchmarks/linear_probe.py --threads 1
    python benchmarks/linear_probe.py --n 20000 --dim 512 --threads 2

Features: --n training and --n-test test rows of --dim noisy clustered features (10 classes,
class means drawn at random, noise std --noise), CIFAR-10's size by default. Both sides do the
whole probe: a sweep of 5 settings scored on a held-out 10% of the training rows (each side
draws its own seeded split), then a refit on all training rows at the best setting, scored on
the test rows. Both sides get --threads threads (torch's, and the BLAS pool scikit-learn's
lbfgs runs on, through threadpoolctl).

- selfsup: linear_probe (mini-batch AdamW softmax regression, 30 epochs, cosine, 5 lrs).
- scikit-learn: LogisticRegression (lbfgs, multinomial, max_iter --max-iter) on the features
  standardised by the fitting rows' mean and std, sweeping C over --cs.

Reported: seconds and test accuracy of each side (median of --repeats, sides interleaved) and
the ratio of their seconds. On a shared machine the figures are not quiet ones: the load
average is printed too.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import cpu_name  # noqa: E402

from selfsup.eval.image_probe import linear_probe  # noqa: E402


def clustered(n: int, dim: int, noise: float, g: torch.Generator, means: torch.Tensor):
    y = torch.randint(0, len(means), (n,), generator=g)
    return means[y] + noise * torch.randn(n, dim, generator=g), y


def sklearn_probe(x, y, x_test, y_test, cs, max_iter: int, seed: int) -> float:
    import numpy as np
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    x, y, x_test, y_test = (t.numpy() for t in (x, y, x_test, y_test))
    order = np.random.default_rng(seed).permutation(len(x))
    held, fit = order[: len(x) // 10], order[len(x) // 10 :]

    def fit_score(c, xa, ya, xb, yb):
        s = StandardScaler().fit(xa)
        m = LogisticRegression(C=c, max_iter=max_iter).fit(s.transform(xa), ya)
        return m.score(s.transform(xb), yb)

    best = max(cs, key=lambda c: fit_score(c, x[fit], y[fit], x[held], y[held]))
    return fit_score(best, x, y, x_test, y_test)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20_000)
    ap.add_argument("--n-test", type=int, default=10_000)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--noise", type=float, default=3.0)
    ap.add_argument("--cs", type=float, nargs="+", default=[0.01, 0.03, 0.1, 0.3, 1.0])
    ap.add_argument("--max-iter", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    threadpool_limits(args.threads)  # numpy's BLAS, which scikit-learn's lbfgs runs on
    g = torch.Generator().manual_seed(0)
    means = torch.randn(10, args.dim, generator=g) * 0.3
    x, y = clustered(args.n, args.dim, args.noise, g, means)
    x_test, y_test = clustered(args.n_test, args.dim, args.noise, g, means)

    times, accs = {"selfsup": [], "sklearn": []}, {}
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        accs["selfsup"] = linear_probe(x, y, x_test, y_test, seed=0)["accuracy"]
        times["selfsup"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        accs["sklearn"] = sklearn_probe(x, y, x_test, y_test, args.cs, args.max_iter, 0)
        times["sklearn"].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"{cpu_name()}, {args.threads} thread(s), load average {os.getloadavg()[0]:.2f}; "
          f"{args.n:,} x {args.dim} train, {args.n_test:,} test features")  # fmt: skip
    for k in med:
        print(f"{k:8s} {med[k]:7.2f} s  test accuracy {accs[k]:.4f}")
    print(f"sklearn / selfsup time: {med['sklearn'] / med['selfsup']:.2f}x")


if __name__ == "__main__":
    main()
