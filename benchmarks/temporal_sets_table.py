"""Every temporal-sets model on every dataset: personal frequency, a vanilla transformer over time steps, and LANET
with softmax and with sparsemax label attention (ZLPR loss; lanet_softmax_pc_bce: the same with BCE), over several
seeds. Prints the table (mean ± std)
with the published DC numbers beside ours, and writes benchmarks/results/temporal_sets.{csv,md,json,png}.

    python benchmarks/temporal_sets_table.py [--datasets DC,TaFeng] [--seeds 3] [--epochs 20]
"""
import argparse
import csv
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import RESULTS_DIR, write_csv  # noqa: E402

from torchxc.temporal_sets.__main__ import parser as cli_parser  # noqa: E402
from torchxc.temporal_sets.train import load, run  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_DATA = os.path.normpath(os.path.join(HERE, "..", "..", "shared", "data", "temporal_sets"))
# lanet_*: LANET as published (look-back window only); lanet_*_pc: plus each label's count over the user's whole past
# (--past-counts, a torchxc extension: the window alone hides the older repeats that personal frequency ranks by);
# *_tr: plus the label-transition prior counted over the training users (--transitions, torchxc extension: most
# target labels are new to the user); frequency_tr breaks frequency's ties by that prior instead of popularity;
# *_ema: validated and tested with an exponential moving average of the weights (--ema 0.995, per step);
# *_d128: --d-model 128 with 4 heads instead of 64 with 2 (token width 160 against 96 with past counts and
# transitions); *_cos: cosine learning-rate decay over the epochs;
# *_do2: dropout 0.2 instead of 0.1; *_smx: the paper's softmax cross-entropy over the positives instead of ZLPR;
# *_nb: plus the label distribution of the user's 100 most similar training users (--neighbours 100, torchxc
# extension; frequency_nb breaks frequency's ties by it).
PC_TR_EMA = ["--model", "lanet", "--attention", "softmax", "--past-counts", "--transitions", "--ema", "0.995"]
VARIANTS = {"frequency": ["--model", "frequency"], "transformer": ["--model", "transformer"],
            "lanet_softmax": ["--model", "lanet", "--attention", "softmax"],
            "lanet_sparsemax": ["--model", "lanet", "--attention", "sparsemax"],
            "lanet_softmax_pc": ["--model", "lanet", "--attention", "softmax", "--past-counts"],
            "lanet_sparsemax_pc": ["--model", "lanet", "--attention", "sparsemax", "--past-counts"],
            "lanet_softmax_pc_bce": ["--model", "lanet", "--attention", "softmax", "--past-counts", "--loss", "bce"],
            "frequency_tr": ["--model", "frequency", "--transitions"],
            "lanet_softmax_pc_tr": ["--model", "lanet", "--attention", "softmax", "--past-counts", "--transitions"],
            "lanet_softmax_pc_ema": ["--model", "lanet", "--attention", "softmax", "--past-counts", "--ema", "0.995"],
            "lanet_softmax_pc_tr_ema": PC_TR_EMA,
            "lanet_softmax_pc_tr_ema_d128": PC_TR_EMA + ["--d-model", "128", "--heads", "4"],
            "lanet_softmax_pc_tr_ema_cos": PC_TR_EMA + ["--lr-schedule", "cosine"],
            "lanet_softmax_pc_tr_ema_do2": PC_TR_EMA + ["--dropout", "0.2"],
            "lanet_softmax_pc_tr_ema_smx": PC_TR_EMA + ["--loss", "softmax"],
            "frequency_nb": ["--model", "frequency", "--neighbours", "100"],
            "lanet_softmax_pc_tr_nb_ema": PC_TR_EMA + ["--neighbours", "100"]}
METRICS = ["recall@10", "ndcg@10", "phr@10", "recall@20", "ndcg@20", "micro_auc", "macro_auc", "weighted_f1",
           "micro_f1", "train_seconds"]
# DC, DNNTSP split, as rerun in the PIETSP manuscript's table: recall@10, NDCG@10, PHR@10
PUBLISHED = {"DC": {"DNNTSP": (0.4609, 0.3282, 0.5528), "SFCNTSP": (0.4585, 0.3330, 0.5552),
                    "PIETSP": (0.4615, 0.3463, 0.5613)}}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=DEFAULT_DATA)
    ap.add_argument("--datasets", default="DC,TaFeng")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--seeds-for", default="", help="per-variant seed counts, e.g. lanet_sparsemax_pc=1")
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--max-tokens", type=int, default=128, help="LANET label tokens per example (large vocabularies)")
    ap.add_argument("--max-tokens-for", default="DC=512",
                    help="per-dataset --max-tokens (DC's 217 labels are all tokens, as in the paper)")
    ap.add_argument("--out", default=RESULTS_DIR)
    ap.add_argument("--report", action="store_true", help="no training: summarise the runs of the partial CSV")
    args = ap.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    partial = os.path.join(args.out, "temporal_sets.partial.csv")
    runs = []
    if os.path.exists(partial):  # resume an interrupted run
        with open(partial) as f:
            runs = [{k: (v if k in ("dataset", "variant") else float(v)) for k, v in r.items()}
                    for r in csv.DictReader(f)]
    done = {(r["dataset"], r["variant"], int(r["seed"])) for r in runs}
    tokens_for = {k: int(v) for k, v in (kv.split("=") for kv in args.max_tokens_for.split(",") if kv)}
    seeds_for = {k: int(v) for k, v in (kv.split("=") for kv in args.seeds_for.split(",") if kv)}
    start = time.time()
    for name in args.datasets.split(","):
        path = os.path.join(args.data, name + ".json")
        data = None if args.report else load(path)
        for variant in args.variants.split(","):
            for seed in range(1 if variant.startswith("frequency") else seeds_for.get(variant, args.seeds)):
                if (name, variant, seed) in done or args.report:
                    continue
                cli = cli_parser().parse_args(["--data", path, "--epochs", str(args.epochs), "--seed", str(seed),
                                               "--max-tokens", str(tokens_for.get(name, args.max_tokens))] + VARIANTS[variant])
                res = run(cli, data)
                row = dict(dataset=name, variant=variant, seed=seed, **{m: res.get(m, float("nan")) for m in METRICS},
                           epochs=res["epochs_run"], peak_rss_mb=res["peak_rss_mb"],
                           zero_fraction=res.get("attention_zero_fraction", float("nan")))
                runs.append(row)
                print(f"{name} {variant} seed {seed}: " + ", ".join(f"{m} {row[m]:.4f}" for m in METRICS[:8]) +
                      f", {row['train_seconds']:.0f} s", flush=True)
                write_csv(partial, runs)
    summary = summarise(runs)
    print_table(summary)
    write_csv(os.path.join(args.out, "temporal_sets.csv"), runs)
    write_markdown(os.path.join(args.out, "temporal_sets.md"), summary)
    with open(os.path.join(args.out, "temporal_sets.json"), "w") as f:
        json.dump({"args": vars(args), "runs": runs, "summary": summary, "published": PUBLISHED,
                   "seconds": time.time() - start}, f, indent=1)
    plot(os.path.join(args.out, "temporal_sets.png"), summary)
    if not args.report and os.path.exists(partial):  # --report only looks: the partial file still resumes the run
        os.remove(partial)
    return 0


def summarise(runs):
    out = []
    for key in dict.fromkeys((r["dataset"], r["variant"]) for r in runs):
        sel = [r for r in runs if (r["dataset"], r["variant"]) == key]
        row = dict(dataset=key[0], variant=key[1], seeds=len(sel))
        for m in METRICS + ["zero_fraction", "peak_rss_mb", "epochs"]:
            v = np.array([float(r[m]) for r in sel])
            row[m], row[m + "_std"] = float(v.mean()), float(v.std())
        out.append(row)
    return out


def print_table(summary):
    cols = ["recall@10", "ndcg@10", "phr@10", "micro_auc", "weighted_f1"]
    print(f"\n{'dataset':8} {'model':16} " + " ".join(f"{c:>17}" for c in cols) + f" {'train s':>8}")
    for r in summary:
        print(f"{r['dataset']:8} {r['variant']:16} " + " ".join(f"{r[c]:8.4f} ±{r[c + '_std']:.4f}" for c in cols) +
              f" {r['train_seconds']:8.0f}")
    for ds, models in PUBLISHED.items():
        for m, (rec, ndcg, phr) in models.items():
            print(f"{ds:8} {m + ' (published)':16} {rec:8.4f} {'':8} {ndcg:8.4f} {'':8} {phr:8.4f}")


STD_NOTE = "± is the population standard deviation over the seeds (numpy's std, ddof 0)."


def write_markdown(path, summary):
    cols = ["recall@10", "ndcg@10", "phr@10", "recall@20", "ndcg@20", "micro_auc", "macro_auc", "weighted_f1"]
    lines = ["| dataset | model | seeds | " + " | ".join(cols) +
             " | zero attention | train s | epochs | process peak RSS MB |",
             "|" + "---|" * (len(cols) + 7)]
    for r in summary:
        z = f"{r['zero_fraction']:.3f}" if r["zero_fraction"] == r["zero_fraction"] else ""
        lines.append(f"| {r['dataset']} | {r['variant']} | {r['seeds']} | " +
                     " | ".join(f"{r[c]:.4f} ± {r[c + '_std']:.4f}" for c in cols) +
                     f" | {z} | {r['train_seconds']:.0f} | {r['epochs']:.1f} | {r['peak_rss_mb']:.0f} |")
    for ds, models in PUBLISHED.items():
        for m, (rec, ndcg, phr) in models.items():
            lines.append(f"| {ds} | *{m} (published)* | | {rec:.4f} | {ndcg:.4f} | {phr:.4f} |" + " |" * 9)
    lines += ["", STD_NOTE]
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def plot(path, summary):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    cols = ["recall@10", "ndcg@10", "phr@10", "micro_auc", "weighted_f1"]
    datasets = list(dict.fromkeys(r["dataset"] for r in summary))
    if not datasets:
        return
    fig, axes = plt.subplots(1, len(datasets), figsize=(7 * len(datasets), 4.5), squeeze=False)
    for ax, ds in zip(axes[0], datasets):
        sel = [r for r in summary if r["dataset"] == ds]
        w = 0.8 / len(sel)
        for i, r in enumerate(sel):
            ax.bar([j + i * w for j in range(len(cols))], [r[c] for c in cols], w,
                   yerr=[r[c + "_std"] for c in cols], label=r["variant"], capsize=2)
        ax.set_xticks([j + w * (len(sel) - 1) / 2 for j in range(len(cols))])
        ax.set_xticklabels(cols)
        ax.set_title(ds)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("Temporal sets: LANET (softmax / sparsemax label attention) vs baselines (test users)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
