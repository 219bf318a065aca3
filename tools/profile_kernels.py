"""Where the time of a forward+backward goes: each kernel (and, on the CPU, each op) of the benchmark cases whose
bandwidth targets are missed on the GPU, from torch.profiler, with its share of the call's device time.

    python tools/profile_kernels.py [--device cuda] [--reps 20] [--out DIR]

Cases: ZLPR forward+backward at 1024x32768 and 4096x1024 float32 (as bench_zlpr.py times them: mean reduction,
torch.autograd.grad), sparsemax forward at 4096x1024 and 256x32768 float32 (as bench_sparsemax.py), and the tree
sampler's log_prob_all at 512 rows x 2^14 labels (as bench_tree_sampler.py). For each case it
prints the kernels sorted by total device time, their count per call and the call's device time per rep, and
writes the tables to DIR/profile_kernels.txt. A gap between the call's wall time and the sum of its kernels is time
the device sat idle (launch gaps, host work).
"""
import argparse
import os
import time

import torch
from torch.profiler import ProfilerActivity, profile

import torchxc


def cases(device):
    g = torch.Generator().manual_seed(0)
    out = {}
    for rows, C in ((1024, 32768), (4096, 1024)):
        s = torch.randn(rows, C, generator=g).to(device).requires_grad_(True)
        hard = (torch.rand(rows, C, generator=g) < 8 / C).to(device)
        out[f"zlpr fwd+bwd {rows}x{C} float32"] = lambda s=s, hard=hard: torch.autograd.grad(
            torchxc.zlpr_loss(s, hard), s)
    for rows, C in ((4096, 1024), (256, 32768)):
        x = torch.randn(rows, C, generator=g).to(device)
        out[f"sparsemax fwd {rows}x{C} float32"] = lambda x=x: torchxc.sparsemax(x)
    # log q of every label, as bench_tree_sampler.py times it (C = 2^14, 512 rows, k = 16): on CUDA an ATen composite
    C, k = 2 ** 14, 16
    sampler = torchxc.TreeSampler.from_parameters(torch.randn(C - 1, k, generator=g) * 0.5,
                                                  torch.randn(C - 1, generator=g) * 0.5, C).to(device)
    z = torch.randn(512, k, generator=g).to(device)
    out[f"tree log_prob_all 512x{C} float32"] = lambda: sampler.log_prob_all(z)
    return out


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def profile_case(fn, device, reps):
    for _ in range(3):
        fn()
    sync(device)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        start = time.perf_counter()
        for _ in range(reps):
            fn()
        sync(device)
        wall_us = (time.perf_counter() - start) / reps * 1e6
    key = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    rows = []
    for e in prof.key_averages():
        t = getattr(e, key, 0.0)
        # on CUDA the kernels alone: an op's row repeats its kernels' time (which counted every kernel twice)
        is_op = e.key.startswith(("aten::", "torchxc::"))
        wanted = not is_op if device.type == "cuda" else is_op
        if t > 0 and wanted:
            rows.append((t / reps, e.count / reps, e.key))
    rows.sort(reverse=True)
    return wall_us, rows


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--reps", type=int, default=20)
    p.add_argument("--out", default=None, help="directory for profile_kernels.txt")
    args = p.parse_args()
    dev = torch.device(args.device)
    lines = [f"torch {torch.__version__}, {torch.cuda.get_device_name(dev) if dev.type == 'cuda' else 'cpu'}, "
             f"{args.reps} reps per case; times per rep in us"]
    for name, fn in cases(dev).items():
        wall_us, rows = profile_case(fn, dev, args.reps)
        total = sum(r[0] for r in rows)
        what = "kernels" if dev.type == "cuda" else "ops (self CPU time)"
        lines.append(f"\n{name}: wall {wall_us:.1f} us per call (under the profiler), {what} {total:.1f} us")
        for t, n, key in rows[:12]:
            lines.append(f"  {t:9.1f} us {100 * t / max(total, 1e-9):5.1f}%  x{n:4.1f}  {key[:110]}")
    text = "\n".join(lines)
    print(text)
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "profile_kernels.txt"), "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
