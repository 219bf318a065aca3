"""Times the register paths of the CUDA row kernels against their split path on the same rows (GPU only).

Every row-wise CUDA op of torchxc (sparsemax, its backward, sparsemax_loss, ZLPR dense and sparse) keeps rows of up to
32768 values in registers (a warp or a block per row) and splits longer rows into chunks of 8192 values handled by
separate blocks. Which is faster for rows of 8192..32768 depends on the row count and the chip (a 1024-thread block
per row leaves one block per multiprocessor, the split path re-reads the row). ZLPR and sparsemax (forward and
backward) have a third path, the cooperative chunks (4096 values per 256-thread block, the chunks of a row meeting
through global memory; by default only for float32 sparsemax backward rows longer than 16384, csrc/cuda/coop.cuh).
This script runs the paths on the same inputs, forcing the split path with TORCHXC_CUDA_SPLIT_ABOVE=0 and the
cooperative one with TORCHXC_CUDA_COOP_ABOVE=0 (and keeping it off for the other two), checks that they agree, and
prints kernel times (CUDA events, L2 flushed, no autograd) and effective bandwidth:

    python tools/tune_split_threshold.py [--out DIR]
"""
import argparse
import os
import sys

import torch

import torchxc

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "benchmarks"))
from common import Timer, write_csv  # noqa: E402  (flushes the L2 before each call, warms the GPU up first)

SHAPES = [(4096, 2048), (256, 8192), (4096, 8192), (256, 16384), (4096, 16384), (256, 32768), (1024, 32768),
          (4096, 32768), (64, 1048576)]
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
ENV = "TORCHXC_CUDA_SPLIT_ABOVE"
COOP_ENV = "TORCHXC_CUDA_COOP_ABOVE"
NO_COOP = str(2**62)
PATHS = {"register": {COOP_ENV: NO_COOP}, "split": {ENV: "0", COOP_ENV: NO_COOP}, "coop": {COOP_ENV: "0"}}


def set_path(name):
    for k in (ENV, COOP_ENV):
        os.environ.pop(k, None)
    os.environ.update(PATHS[name] if name else {})


def cases(rows, d, dtype, gen):
    x = torch.randn(rows, d, device="cuda", dtype=torch.float32, generator=gen).to(dtype)
    g = torch.randn(rows, d, device="cuda", dtype=torch.float32, generator=gen).to(dtype)
    p = torchxc.sparsemax(x)
    y = torch.randint(d, (rows,), device="cuda", generator=gen)
    hard = torch.rand(rows, d, device="cuda", generator=gen) < 0.01
    pos = torch.randint(-1, d, (rows, 16), device="cuda", generator=gen)
    e = x.element_size()
    n = rows * d
    ops = torch.ops.torchxc
    return [  # name, call, bytes moved at least once
        ("sparsemax", lambda: ops.sparsemax(x, -1), 2 * n * e),
        ("sparsemax_backward", lambda: ops.sparsemax_backward(g, p, -1), 3 * n * e),
        ("sparsemax_loss", lambda: ops.sparsemax_loss(x, y, -100), n * e),
        ("zlpr_loss+grad", lambda: ops.zlpr_loss(x, hard, None, True), 2 * n * e + n),
        ("zlpr_loss_sparse+grad", lambda: ops.zlpr_loss_sparse(x, pos, None, True), 2 * n * e),
    ]


def max_diff(a, b):
    a = a if isinstance(a, (tuple, list)) else (a,)
    b = b if isinstance(b, (tuple, list)) else (b,)
    return max((u.double() - v.double()).abs().nan_to_num(0, 0, 0).max().item() if u.numel() else 0.0
               for u, v in zip(a, b))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "benchmarks", "results"))
    ap.add_argument("--reps", type=int, default=30)
    args = ap.parse_args(argv)
    assert torch.cuda.is_available() and torchxc.cuda_kernels_built(), "needs a GPU and a CUDA build"
    set_path(None)
    timer = Timer(torch.device("cuda"), budget_s=0.0, min_reps=args.reps, max_reps=args.reps)
    gen = torch.Generator(device="cuda").manual_seed(0)
    rows_out = []
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}")
    print("register: a warp or block per row where the row fits (else split); coop: not sparsemax_loss; GB/s of the "
          "bytes each op must move once")
    print(f"{'op':<22} {'dtype':<9} {'shape':>12} {'register ms':>12} {'split ms':>9} {'coop ms':>8} "
          f"{'reg GB/s':>9} {'split GB/s':>10} {'coop GB/s':>9} {'split/reg':>9} {'coop/reg':>8} {'max diff':>9}")
    nan = float("nan")
    for dt_name, dtype in DTYPES.items():
        for rows, d in SHAPES:
            for name, fn, nbytes in cases(rows, d, dtype, gen):
                t, diff, ref = {}, 0.0, None
                for path in PATHS:
                    if path == "coop" and name == "sparsemax_loss":  # no cooperative path
                        t[path] = nan
                        continue
                    set_path(path)
                    out = fn()
                    t[path] = timer(fn).median_ms
                    diff = max(diff, max_diff(ref, out)) if ref is not None else diff
                    ref = out if ref is None else ref
                set_path(None)
                row = dict(op=name, dtype=dt_name, rows=rows, d=d, register_ms=t["register"], split_ms=t["split"],
                           coop_ms=t["coop"], register_gbs=nbytes / t["register"] / 1e6,
                           split_gbs=nbytes / t["split"] / 1e6, coop_gbs=nbytes / t["coop"] / 1e6,
                           split_over_register=t["split"] / t["register"], coop_over_register=t["coop"] / t["register"],
                           max_diff=diff, device=torch.cuda.get_device_name())
                rows_out.append(row)
                print(f"{name:<22} {dt_name:<9} {f'{rows}x{d}':>12} {t['register']:12.4f} {t['split']:9.4f} "
                      f"{t['coop']:8.4f} {row['register_gbs']:9.0f} {row['split_gbs']:10.0f} {row['coop_gbs']:9.0f} "
                      f"{row['split_over_register']:9.2f} {row['coop_over_register']:8.2f} {diff:9.1e}", flush=True)
            torch.cuda.empty_cache()
    path = os.path.join(args.out, "split_threshold_cuda.csv")
    write_csv(path, rows_out)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
