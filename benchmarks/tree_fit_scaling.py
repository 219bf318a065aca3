"""Time and memory of TreeSampler.fit at extreme-classification scale (the issue's check: N = 1,000,000 examples,
F = 512 features, C = 200,000 labels, in minutes on 2 CPU cores).

Synthetic data: Zipf label frequencies, x = label embedding (rank 64, lifted to F dims) + noise. Reports the fit's
wall-clock time and peak resident memory, and how well the fitted tree models the data (mean log q(y | x) of
held-out pairs against uniform's -log C). Writes benchmarks/results/tree_fit_scaling.json.

    python benchmarks/tree_fit_scaling.py [--N 1000000 --F 512 --C 200000 --dim 16] [--aten-solver]

--aten-solver runs the Newton steps with the ATen solver that other devices use instead of the CPU's fused kernel
(torchxc::tree_fit_newton) and writes tree_fit_scaling_aten.json.
"""
import argparse
import json
import math
import os
import resource
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import RESULTS_DIR  # noqa: E402

import torchxc  # noqa: E402


def make_data(N, F, C, seed=0, rank=64):
    g = torch.Generator().manual_seed(seed)
    lift = torch.randn(rank, F, generator=g) / math.sqrt(rank)
    emb = torch.randn(C, rank, generator=g)
    freq = (torch.arange(C, dtype=torch.float64) + 1) ** -1.0
    y = torch.multinomial(freq, N, replacement=True, generator=g)
    x = torch.empty(N, F)
    for i in range(0, N, 1 << 16):  # in chunks: no [N, rank] temporaries beside x
        j = min(N, i + (1 << 16))
        x[i:j] = (emb[y[i:j]] + 0.5 * torch.randn(j - i, rank, generator=g)) @ lift
        x[i:j] += 0.1 * torch.randn(j - i, F, generator=g)
    return x, y


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--N", type=int, default=1_000_000)
    ap.add_argument("--F", type=int, default=512)
    ap.add_argument("--C", type=int, default=200_000)
    ap.add_argument("--dim", type=int, default=16)
    ap.add_argument("--aten-solver", action="store_true",
                    help="the ATen Newton solver instead of the fused CPU kernel (for comparison)")
    ap.add_argument("--out", default=RESULTS_DIR)
    args = ap.parse_args(argv)
    if args.aten_solver:
        from torchxc import sampling

        fused_init = sampling._NodeLogistic.__init__
        sampling._NodeLogistic.__init__ = lambda self, *a, **kw: fused_init(self, *a, **{**kw, "fused": False})
    t = time.perf_counter()
    x, y = make_data(args.N + 20_000, args.F, args.C)
    x_test, y_test = x[args.N:], y[args.N:]
    x, y = x[:args.N], y[:args.N]
    print(f"data: {args.N} x {args.F}, {args.C} labels ({time.perf_counter() - t:.0f} s to generate)", flush=True)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t = time.perf_counter()
    sampler = torchxc.TreeSampler.fit(x, y, args.C, dim=args.dim, progress=True)
    seconds = time.perf_counter() - t
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    log_q = sampler.log_prob(x_test, y_test[:, None])[:, 0]
    result = dict(N=args.N, F=args.F, C=args.C, dim=args.dim, threads=torch.get_num_threads(),
                  solver="aten" if args.aten_solver else "fused",
                  fit_seconds=seconds, peak_rss_mb=peak, rss_before_fit_mb=rss0,
                  heldout_mean_log_q=log_q.mean().item(), uniform_log_q=-math.log(args.C))
    print(json.dumps(result, indent=1))
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "tree_fit_scaling_aten.json" if args.aten_solver else "tree_fit_scaling.json"),
              "w") as f:
        json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
