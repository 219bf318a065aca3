"""Draws per second of the adversarial tree sampler (torchxc.TreeSampler.sample) against pure PyTorch.

Providers, all drawing S labels with replacement for each of B rows from the same tree distribution q(. | z):
- torchxc: the tree_sample op (one walk per draw, D dot products of length k, counter-based RNG);
- pytorch_levels: the same walk written level by level with tensor ops over all B*S draws at once (gather the node
  weights, dot product, sigmoid, compare with a uniform, step to the child): the direct eager formulation;
- at the main C only, the stronger pure-PyTorch samplers, whose ratios are printed beside the target's:
  pytorch_levels_tuned (pytorch_levels_tuned_sample below: the same walk with a matmul per upper level and logit(u)
  comparisons) and torch.compile of each of the two. The target is measured against pytorch_levels, the issue's
  baseline;
- multinomial: torch.multinomial over the full distribution exp(log q(. | z)) [B, C]. Only the multinomial call is
  timed (the [B, C] probabilities are computed beforehand, which favours this baseline); at large C it runs on a
  slice of the rows (rows are independent, draws/s is per row slice) so that [rows, C] fits in memory.

The main case is the issue's: C = 2^18, k = 16, B = 4096, S = 64. A sweep over C gives the PNG (draws/s vs C).
Targets: CPU >= 20x the pure-PyTorch sampler; GPU >= 1e9 draws/s (H100). Also reported, with no target: log q of
every label (log_prob_all, for evaluation) against the same computation level by level in PyTorch
(tree_log_prob_all_<device>.csv).

    python benchmarks/bench_tree_sampler.py [--device cpu|cuda|all] [--quick]
"""
import argparse
import functools
import math
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (COMPILED_BASELINES, Timer, add_timing_options, device_name,  # noqa: E402
                    print_targets, selected_devices, allocator_settings, output_dir, setup_cpu_process, write_csv)

import torchxc  # noqa: E402

MAIN = dict(C=2 ** 18, k=16, B=4096, S=64)


def make_sampler(C, k, device, seed=0):
    """A random tree whose branch probabilities are neither degenerate nor uniform (logits of std ~1.5)."""
    g = torch.Generator().manual_seed(seed)
    D = max(0, math.ceil(math.log2(C))) if C > 1 else 0
    nodes = (1 << D) - 1
    W = torch.randn(nodes, k, generator=g) * (1.5 / math.sqrt(k))
    b = torch.randn(nodes, generator=g) * 0.5
    leaf_to_label = torch.cat([torch.randperm(C, generator=g), torch.full(((1 << D) - C,), -1, dtype=torch.long)])
    return torchxc.TreeSampler.from_parameters(W.to(device), b.to(device), C, leaf_to_label.to(device))


def pytorch_levels_sample(z, W, b, leaf_to_label, C, S, generator=None):
    """Pure-PyTorch level-by-level sampler: all B*S walks advance one level per iteration."""
    B = z.shape[0]
    D = max(0, math.ceil(math.log2(C))) if C > 1 else 0
    node = torch.zeros(B, S, dtype=torch.long, device=z.device)
    log_q = torch.zeros(B, S, dtype=z.dtype, device=z.device)
    u = torch.rand(B, S, D, dtype=z.dtype, device=z.device, generator=generator)
    for level in range(D):
        first = (1 << level) - 1
        # right child empty: its first leaf (2p+1) << (D - level - 1) is padding
        right_empty = ((2 * (node - first) + 1) << (D - level - 1)) >= C
        logit = torch.einsum("bsk,bk->bs", W[node], z) + b[node]
        right = (u[:, :, level] < torch.sigmoid(logit)) & ~right_empty
        step = torch.nn.functional.logsigmoid(torch.where(right, logit, -logit))
        log_q += torch.where(right_empty, torch.zeros_like(step), step)
        node = 2 * node + 1 + right.long()
    return leaf_to_label[node - ((1 << D) - 1)], log_q


def pytorch_levels_tuned_sample(z, W, b, leaf_to_label, C, S, generator=None):
    """The same walk, tuned (from a benchmark review): while a level has at most S nodes, one [B, 2^l] matmul gives
    every node's logit for each row and the walks gather theirs (no [B, S, k] weight gather); deeper levels use a
    batched matmul; the branch compares logit(u) with the logit instead of u with a sigmoid; in-place masking."""
    B = z.shape[0]
    D = max(0, math.ceil(math.log2(C))) if C > 1 else 0
    node = torch.zeros(B, S, dtype=torch.long, device=z.device)
    log_q = torch.zeros(B, S, dtype=z.dtype, device=z.device)
    thresholds = torch.logit(torch.rand(D, B, S, dtype=z.dtype, device=z.device, generator=generator))
    for level in range(D):
        first = (1 << level) - 1
        right_empty = ((2 * (node - first) + 1) << (D - level - 1)) >= C
        if (1 << level) <= S:
            logit = torch.addmm(b[first:2 * first + 1], z, W[first:2 * first + 1].T).gather(1, node - first)
        else:
            logit = torch.bmm(W[node], z[:, :, None])[..., 0] + b[node]
        right = (thresholds[level] < logit) & ~right_empty
        log_q += torch.nn.functional.logsigmoid(torch.where(right, logit, -logit)).masked_fill_(right_empty, 0)
        node = 2 * node + 1 + right.long()
    return leaf_to_label[node - ((1 << D) - 1)], log_q


def measure(C, k, B, S, device, budget_s, multinomial_rows, compiled=False):
    sampler = make_sampler(C, k, device)
    g = torch.Generator(device=device).manual_seed(1)
    z = torch.randn(B, k, device=device, generator=g)
    W, b, l2l = sampler.node_weight.detach(), sampler.node_bias.detach(), sampler.leaf_to_label
    rows = min(B, multinomial_rows)
    probs = sampler.log_prob_all(z[:rows]).detach().exp()
    fns = {
        "torchxc": lambda: sampler.sample(z, S),
        "pytorch_levels": lambda: pytorch_levels_sample(z, W, b, l2l, C, S),
        "multinomial": lambda: torch.multinomial(probs, S, replacement=True),
    }
    draws = {"torchxc": B * S, "pytorch_levels": B * S, "multinomial": rows * S}
    optional = ()
    if compiled:  # the other pure-PyTorch samplers, at the main C: compiled in the warm-up (not timed)
        fns["pytorch_levels_tuned"] = lambda: pytorch_levels_tuned_sample(z, W, b, l2l, C, S)
        if COMPILED_BASELINES:
            for name, fn in (("pytorch_levels", pytorch_levels_sample),
                             ("pytorch_levels_tuned", pytorch_levels_tuned_sample)):
                fns[f"{name}_compiled"] = functools.partial(torch.compile(fn), z, W, b, l2l, C, S)
        optional = ("pytorch_levels_compiled", "pytorch_levels_tuned_compiled")
        draws.update({name: B * S for name in fns if name.startswith("pytorch_levels_")})
    with torch.no_grad():
        res = Timer(device, budget_s=budget_s, min_reps=3).compare(fns, rounds=3, optional=optional)
    out = []
    for name, m in res.items():
        if m is None:
            continue
        out.append(dict(device=device_name(device), C=C, k=k, B=B, S=S, provider=name, draws=draws[name],
                        median_ms=m.median_ms, p20_ms=m.p20_ms, p80_ms=m.p80_ms, reps=m.reps,
                        draws_per_s=draws[name] / (m.median_ms * 1e-3),
                        allocator=allocator_settings() if device.type == "cpu" else "-"))
    return out


def check_draws(device):
    """The samplers draw from the same distribution: their label frequencies at small C against log_prob_all, and
    the pure-PyTorch samplers' log q against log_prob_all of the labels they drew."""
    C, k, B, S = 37, 4, 2, 200_000
    sampler = make_sampler(C, k, device)
    z = torch.randn(B, k, device=device)
    p = sampler.log_prob_all(z).detach().exp()
    W, b, l2l = sampler.node_weight.detach(), sampler.node_bias.detach(), sampler.leaf_to_label
    draws = {"torchxc": sampler.sample(z, S), "pytorch_levels": pytorch_levels_sample(z, W, b, l2l, C, S),
             "pytorch_levels_tuned": pytorch_levels_tuned_sample(z, W, b, l2l, C, S)}
    for name, (labels, log_q) in draws.items():
        freq = torch.stack([torch.bincount(r, minlength=C) for r in labels.cpu()]).double() / S
        err = (freq - p.cpu()).abs().max().item()
        assert err < 0.01, f"{name} disagrees with log_prob_all: max frequency error {err}"
        lq_err = (log_q - p.log().gather(1, labels)).abs().max().item()
        assert lq_err < 1e-4, f"{name}: log q of the drawn labels off by {lq_err}"


def plot(rows, path, title):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name in dict.fromkeys(r["provider"] for r in rows):
        sel = sorted((r for r in rows if r["provider"] == name), key=lambda r: r["C"])
        ax.plot([r["C"] for r in sel], [r["draws_per_s"] for r in sel], "o-", label=name)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("number of labels C")
    ax.set_ylabel("draws per second")
    ax.set_title(f"tree sampler, k={rows[0]['k']}, B={rows[0]['B']}, S={rows[0]['S']}: {title}", fontsize=9)
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run(device, quick, budget_s, out_dir):
    check_draws(device)
    cpu = device.type == "cpu"
    sweep = [2 ** 10, 2 ** 14, 2 ** 18] if quick else [2 ** 10, 2 ** 12, 2 ** 14, 2 ** 16, 2 ** 18, 2 ** 20]
    rows = []
    for C in sweep:
        mrows = max(1, min(MAIN["B"], (1 << 27) // C if cpu else (1 << 30) // C))  # [rows, C] <= 512 MB / 4 GB
        if cpu:
            mrows = min(mrows, 256)  # multinomial on the CPU costs O(C) per row: a slice is enough to time it
        rows += measure(C, MAIN["k"], MAIN["B"], MAIN["S"], device, budget_s, mrows, compiled=C == MAIN["C"])
        sel = [r for r in rows if r["C"] == C]
        base = {r["provider"]: r["draws_per_s"] for r in sel}
        ratios = [f"torchxc/{n} {base['torchxc'] / v:.1f}x" for n, v in base.items() if n != "torchxc"
                  and "torchxc" in base]  # a provider that failed has no row (and is a MISS in print_targets)
        print(f"C={C:>8}: " + "  ".join(f"{n} {v / 1e6:8.2f} M draws/s" for n, v in base.items()) + "  | " +
              "  ".join(ratios), flush=True)
    name = "cuda" if device.type == "cuda" else "cpu"
    os.makedirs(out_dir, exist_ok=True)
    write_csv(os.path.join(out_dir, f"tree_sampler_{name}.csv"), rows)
    plot(rows, os.path.join(out_dir, f"tree_sampler_{name}.png"), device_name(device))
    return rows


def pytorch_levels_log_prob_all(z, W, b, label_to_leaf, C):
    """log q(y | z) for every label, level by level with tensor ops: a matrix product per level, log sigmoid of
    both branches (exact form, as torch.nn.functional.logsigmoid), the children's values interleaved; padding
    subtrees get probability 0. The direct eager formulation of TreeSampler.log_prob_all."""
    D = max(0, math.ceil(math.log2(C))) if C > 1 else 0
    logp = torch.zeros(z.shape[0], 1, dtype=z.dtype, device=z.device)
    for level in range(D):
        first, width = (1 << level) - 1, 1 << level
        x = torch.addmm(b[first:first + width], z, W[first:first + width].t())
        empty = (2 * torch.arange(width, device=z.device) + 1) * (1 << (D - level - 1)) >= C
        left = torch.where(empty, 0.0, torch.nn.functional.logsigmoid(-x))
        right = torch.where(empty, -math.inf, torch.nn.functional.logsigmoid(x))
        logp = torch.stack([logp + left, logp + right], -1).reshape(z.shape[0], 2 * width)
    return logp.index_select(1, label_to_leaf)


LOG_PROB_ALL_CASES = [(2 ** 14, 512), (2 ** 20, 64)]  # (C, B), k = 16


def measure_log_prob_all(device, budget_s, out_dir):
    """Evaluation: log q of every label (TreeSampler.log_prob_all, [B, C]) against pytorch_levels_log_prob_all;
    entries (B * C) per second and the bandwidth of writing the output."""
    rows = []
    for C, B in LOG_PROB_ALL_CASES:
        sampler = make_sampler(C, MAIN["k"], device)
        z = torch.randn(B, MAIN["k"], device=device, generator=torch.Generator(device=device).manual_seed(2))
        W, b, l2l = sampler.node_weight.detach(), sampler.node_bias.detach(), sampler.label_to_leaf
        err = (sampler.log_prob_all(z) - pytorch_levels_log_prob_all(z, W, b, l2l, C)).abs().max().item()
        assert err < 1e-3, f"log_prob_all and the pure-PyTorch version differ by {err} at C = {C}"
        fns = {"torchxc": lambda: sampler.log_prob_all(z),
               "pytorch_levels": lambda: pytorch_levels_log_prob_all(z, W, b, l2l, C)}
        with torch.no_grad():
            res = Timer(device, budget_s=budget_s, min_reps=3).compare(fns, rounds=3)
        base = {}
        for name, m in res.items():
            if m is None:
                continue
            base[name] = B * C / (m.median_ms * 1e-3)
            rows.append(dict(device=device_name(device), C=C, k=MAIN["k"], B=B, provider=name,
                             median_ms=m.median_ms, p20_ms=m.p20_ms, p80_ms=m.p80_ms, reps=m.reps,
                             entries_per_s=base[name], output_GBps=B * C * 4 / (m.median_ms * 1e-3) / 1e9))
        ratio = f"{base['torchxc'] / base['pytorch_levels']:.1f}x" if len(base) == 2 else "-"
        print(f"log_prob_all C={C:>8} B={B}: " + "  ".join(f"{n} {v / 1e6:8.1f} M entries/s" for n, v in base.items())
              + f"  | torchxc/pytorch_levels {ratio}", flush=True)
    name = "cuda" if device.type == "cuda" else "cpu"
    write_csv(os.path.join(out_dir, f"tree_log_prob_all_{name}.csv"), rows)
    return rows


def check_targets(rows, device):
    main = {r["provider"]: r["draws_per_s"] for r in rows if r["C"] == MAIN["C"]}
    lines = []
    ours, levels, multinomial = main.get("torchxc"), main.get("pytorch_levels"), main.get("multinomial")
    if ours is not None and levels is not None and device.type == "cpu":
        ratio = ours / levels
        lines.append(("CPU draws/s >= 20x pure-PyTorch level-by-level sampler at C=2^18", ratio >= 20, f"{ratio:.1f}x"))
    elif ours is not None and device.type != "cpu":
        lines.append(("GPU >= 1e9 draws/s at C=2^18", ours >= 1e9, f"{ours:.3g} draws/s"))
    if ours is not None and multinomial is not None:
        lines.append(("faster than torch.multinomial over the full distribution", ours > multinomial,
                      f"{ours / multinomial:.1f}x"))
    # a provider that failed left no row: print_targets reports it as a MISS
    return print_targets(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    timing_budget = add_timing_options(ap, "fewer C values", quick_budget=0.3, budget=1.5)
    args = ap.parse_args(argv)
    budget = timing_budget(args)
    out = output_dir(args.out, args.quick)
    ok = True
    for dev in selected_devices(args.device):
        print(f"\ntree sampler on {device_name(dev)} (torch threads: {torch.get_num_threads()})")
        rows = run(dev, args.quick, budget, out)
        ok &= check_targets(rows, dev)
        measure_log_prob_all(dev, budget, out)  # no target: reported only
    return 0 if ok else 1


if __name__ == "__main__":
    setup_cpu_process()  # the suite's allocator settings (see common.py)
    sys.exit(main())
