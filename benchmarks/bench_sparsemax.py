"""Sparsemax: torchxc against every pure-PyTorch alternative, forward, backward and forward+backward.

Providers
  torchxc       torchxc.sparsemax (exact threshold search, fused backward)
  entmax_sort   entmax.sparsemax (full sort)
  entmax_k64    entmax.sparsemax(k=64) (partial sort by top-k, doubling k when the support does not fit)
  torch_sort    the textbook sort + cumsum formula in plain PyTorch, backward by autograd
  softmax       torch.softmax: not sparsemax, but the speed a row normaliser can reach

Effective bandwidth counts the bytes each pass must move at least: forward reads x and writes p (2 tensors),
backward reads g and p and writes the input gradient (3), forward+backward 5. It is compared with the
machine's copy bandwidth measured in the same run (and, on known GPUs, the datasheet figure).

    python benchmarks/bench_sparsemax.py                 # CPU, and CUDA too when a GPU is present
    python benchmarks/bench_sparsemax.py --device cuda --quick
"""
import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import RESULTS_DIR, Timer, copy_bandwidth_gbs, device_name, fmt_ratio, write_csv  # noqa: E402

import torchxc  # noqa: E402

SHAPES = [(8192, 128), (4096, 1024), (256, 32768), (16, 1048576)]
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
MODES = ("fwd", "bwd", "fwd+bwd")
BYTES_PER_ELEMENT_PASSES = {"fwd": 2, "bwd": 3, "fwd+bwd": 5}
# Datasheet memory bandwidth (GB/s) of GPUs we have measured on.
DATASHEET_GBS = {"H100 80GB HBM3": 3350.0, "H100 PCIe": 2000.0, "H200": 4800.0}


def sparsemax_torch_sort(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Sparsemax by full sort in plain PyTorch (the formula of the paper); backward via autograd."""
    z = x.movedim(dim, -1)
    zs, _ = torch.sort(z, dim=-1, descending=True)
    k = torch.arange(1, z.shape[-1] + 1, device=z.device, dtype=z.dtype)
    cs = zs.cumsum(-1) - 1
    support = (k * zs > cs).sum(-1, keepdim=True)
    tau = cs.gather(-1, support - 1) / support.to(z.dtype)
    return torch.clamp(z - tau, min=0).movedim(-1, dim)


def providers():
    out = {"torchxc": lambda x: torchxc.sparsemax(x, -1)}
    try:
        import entmax

        out["entmax_sort"] = lambda x: entmax.sparsemax(x, -1)
        out["entmax_k64"] = lambda x: entmax.sparsemax(x, -1, k=64)
    except ImportError:
        print("entmax is not installed: skipping its baselines (pip install entmax)")
    out["torch_sort"] = sparsemax_torch_sort
    out["softmax"] = lambda x: torch.softmax(x, -1)
    return out


def mode_callable(fn, x, g, mode):
    """The timed call of `fn` for a mode: forward without autograd, backward of a kept graph, or both."""
    if mode == "fwd":
        def run():
            with torch.no_grad():
                return fn(x)
        return run
    xr = x.detach().clone().requires_grad_(True)
    if mode == "bwd":
        y = fn(xr)
        return lambda: torch.autograd.grad(y, xr, g, retain_graph=True)
    return lambda: torch.autograd.grad(fn(xr), xr, g)


def datasheet_gbs(device):
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, gbs in DATASHEET_GBS.items():
        if key in name:
            return gbs
    return None


def run(device, shapes, dtypes, budget_s, csv_path, png_path):
    timer = Timer(device, budget_s=budget_s)  # per provider and measurement, spread over interleaved rounds
    copy_gbs = copy_bandwidth_gbs(device)
    sheet = datasheet_gbs(device)
    thp = os.environ.get("THP_MEM_ALLOC_ENABLE", "0") if device.type == "cpu" else "-"
    print(f"\n== sparsemax on {device_name(device)}: copy bandwidth {copy_gbs:.0f} GB/s"
          + (f", datasheet {sheet:.0f} GB/s" if sheet else "") + f", torch {torch.__version__}"
          + (f", THP_MEM_ALLOC_ENABLE={thp}" if device.type == "cpu" else ""))
    provs = providers()
    rows = []
    gen = torch.Generator(device="cpu").manual_seed(0)
    try:
        from tqdm import tqdm
    except ImportError:
        tqdm = None
    jobs = [(dt, s, m) for dt in dtypes for s in shapes for m in MODES]
    bar = tqdm(jobs, desc=f"sparsemax {device.type}", leave=False) if tqdm else jobs
    for dtype_name, shape, mode in bar:
        dtype = DTYPES[dtype_name]
        x = torch.randn(shape, generator=gen).to(device=device, dtype=dtype)
        g = torch.randn(shape, generator=gen).to(device=device, dtype=dtype)
        nbytes = BYTES_PER_ELEMENT_PASSES[mode] * x.numel() * x.element_size()
        results = timer.compare({name: mode_callable(fn, x, g, mode) for name, fn in provs.items()})
        for name, m in results.items():
            if m is None:
                continue
            gbs = nbytes / (m.median_ms * 1e-3) / 1e9
            rows.append(dict(op="sparsemax", provider=name, dtype=dtype_name, shape="x".join(map(str, shape)),
                             mode=mode, median_ms=m.median_ms, p20_ms=m.p20_ms, p80_ms=m.p80_ms, reps=m.reps,
                             gbs=gbs, pct_copy_bw=100 * gbs / copy_gbs,
                             pct_datasheet_bw=(100 * gbs / sheet) if sheet else None,
                             device=device_name(device), copy_gbs=copy_gbs, thp=thp, torch=torch.__version__,
                             torchxc=torchxc.__version__))
        del x, g, results
        if device.type == "cuda":
            torch.cuda.empty_cache()
    write_csv(csv_path, rows)
    write_markdown(csv_path[:-4] + ".md", rows, list(provs), device, copy_gbs)
    print_table(rows, list(provs))
    plot(rows, png_path, device_name(device))
    print(f"wrote {csv_path} and {png_path}")
    return rows


def _lookup(rows, **key):
    for r in rows:
        if all(r[k] == v for k, v in key.items()):
            return r
    return None


def print_table(rows, provider_names):
    baselines = [p for p in provider_names if p != "torchxc"]
    head = f"{'dtype':9} {'shape':13} {'mode':8} {'torchxc ms':>10} {'GB/s':>7} {'%copy':>6} " + " ".join(
        f"{'vs ' + b:>15}" for b in baselines)
    print(head)
    print("-" * len(head))
    for r in rows:
        if r["provider"] != "torchxc":
            continue
        ratios = []
        for b in baselines:
            rb = _lookup(rows, provider=b, dtype=r["dtype"], shape=r["shape"], mode=r["mode"])
            ratios.append(fmt_ratio(rb["median_ms"] / r["median_ms"]) if rb else "-")
        print(f"{r['dtype']:9} {r['shape']:13} {r['mode']:8} {r['median_ms']:10.3f} {r['gbs']:7.1f} "
              f"{r['pct_copy_bw']:5.0f}% " + " ".join(f"{x:>15}" for x in ratios))
    print("(ratios: baseline time / torchxc time; above 1 means torchxc is faster)")


def write_markdown(path, rows, provider_names, device, copy_gbs):
    """Forward+backward summary as a Markdown table (pasted into README.md)."""
    baselines = [p for p in provider_names if p != "torchxc"]
    lines = [f"{device_name(device)}, copy bandwidth {copy_gbs:.0f} GB/s, torch {torch.__version__}"
             + (f", THP_MEM_ALLOC_ENABLE={os.environ.get('THP_MEM_ALLOC_ENABLE', '0')}" if device.type == "cpu" else ""),
             "", "| dtype | shape | torchxc fwd+bwd ms | GB/s | " + " | ".join(f"vs {b}" for b in baselines) + " |",
             "|---|---|---|---|" + "---|" * len(baselines)]
    for r in rows:
        if r["provider"] != "torchxc" or r["mode"] != "fwd+bwd":
            continue
        cells = []
        for b in baselines:
            rb = _lookup(rows, provider=b, dtype=r["dtype"], shape=r["shape"], mode=r["mode"])
            cells.append(fmt_ratio(rb["median_ms"] / r["median_ms"]) if rb else "-")
        lines.append(f"| {r['dtype']} | {r['shape']} | {r['median_ms']:.3f} | {r['gbs']:.1f} | " + " | ".join(cells) + " |")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def check_targets(rows, device):
    """The issue's speed targets, checked on this run's numbers."""
    lines = []

    def ratio(base, dtype, shape, mode):
        a = _lookup(rows, provider="torchxc", dtype=dtype, shape=shape, mode=mode)
        b = _lookup(rows, provider=base, dtype=dtype, shape=shape, mode=mode)
        return (b["median_ms"] / a["median_ms"]) if a and b else None

    dtypes = sorted({r["dtype"] for r in rows})
    shapes = sorted({r["shape"] for r in rows}, key=lambda s: [int(v) for v in s.split("x")])
    for dt in dtypes:
        for s in shapes:
            if device.type == "cpu":
                checks = [("entmax_sort", 20.0), ("entmax_k64", 4.0)]
            else:
                checks = [("entmax_sort", 10.0)]
            for base, need in checks:
                r = ratio(base, dt, s, "fwd+bwd")
                if r is not None:
                    lines.append((f"{dt} {s} fwd+bwd vs {base} >= {need:g}x", r >= need, f"{r:.1f}x"))
        if device.type == "cpu":
            r = ratio("softmax", dt, "4096x1024", "fwd+bwd")
            if r is not None:
                lines.append((f"{dt} 4096x1024 fwd+bwd time <= 2x softmax", r >= 0.5, f"{1 / r:.2f}x softmax"))
        else:
            for s in ("4096x1024", "256x32768"):
                a = _lookup(rows, provider="torchxc", dtype=dt, shape=s, mode="fwd")
                if a:
                    pct = a["pct_datasheet_bw"] if a["pct_datasheet_bw"] is not None else a["pct_copy_bw"]
                    lines.append((f"{dt} {s} fwd >= 70% of memory bandwidth", pct >= 70,
                                  f"{a['gbs']:.0f} GB/s = {pct:.0f}% (datasheet) / {a['pct_copy_bw']:.0f}% (copy)"))
    print("\ntargets:")
    for name, ok, val in lines:
        print(f"  [{'PASS' if ok else 'MISS'}] {name}: {val}")
    return lines


def plot(rows, path, title):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no plot")
        return
    dtypes = sorted({r["dtype"] for r in rows})
    shapes = []
    for r in rows:
        if r["shape"] not in shapes:
            shapes.append(r["shape"])
    provs = []
    for r in rows:
        if r["provider"] not in provs:
            provs.append(r["provider"])
    fig, axes = plt.subplots(len(dtypes), 2, figsize=(14, 4.5 * len(dtypes)), squeeze=False)
    width = 0.8 / max(len(provs), 1)
    for i, dt in enumerate(dtypes):
        for j, mode in enumerate(("fwd", "fwd+bwd")):
            ax = axes[i][j]
            for k, p in enumerate(provs):
                vals = []
                for s in shapes:
                    r = _lookup(rows, provider=p, dtype=dt, shape=s, mode=mode)
                    vals.append(r["gbs"] if r else 0)
                ax.bar([x + k * width for x in range(len(shapes))], vals, width, label=p)
            ax.set_xticks([x + width * (len(provs) - 1) / 2 for x in range(len(shapes))])
            ax.set_xticklabels(shapes)
            ax.set_yscale("log")
            ax.set_ylabel("effective GB/s (higher is better)")
            ax.set_title(f"sparsemax {mode}, {dt}")
            ax.grid(axis="y", alpha=0.3)
            ax.legend(fontsize=8)
    fig.suptitle(f"sparsemax: torchxc vs pure-PyTorch baselines on {title}")
    fig.tight_layout()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", choices=["cpu", "cuda", "all"], default="all",
                    help="all = the CPU, and CUDA when a GPU is present")
    ap.add_argument("--quick", action="store_true", help="float32 only, short timing budget")
    ap.add_argument("--budget", type=float, default=0.4, help="seconds of repeats per measurement")
    ap.add_argument("--out", default=RESULTS_DIR)
    args = ap.parse_args(argv)
    devices = []
    if args.device in ("cpu", "all"):
        devices.append(torch.device("cpu"))
    if args.device in ("cuda", "all") and torch.cuda.is_available():
        devices.append(torch.device("cuda"))
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("no CUDA device available")
    dtypes = ["float32"] if args.quick else list(DTYPES)
    ok = True
    for dev in devices:
        tag = dev.type
        rows = run(dev, SHAPES, dtypes, 0.1 if args.quick else args.budget,
                   os.path.join(args.out, f"sparsemax_{tag}.csv"), os.path.join(args.out, f"sparsemax_{tag}.png"))
        ok &= all(passed for _, passed, _ in check_targets(rows, dev))
    return 0 if ok else 1


if __name__ == "__main__":
    main()
