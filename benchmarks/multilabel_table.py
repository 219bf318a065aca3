"""Multi-label losses on real data: the table of the sparsemax paper (Martins & Astudillo 2016, Table 2), redone.

The same classifier -- linear, or one hidden layer of 256 ReLU units -- is trained on the Mulan sets (standard
train/test splits) with four losses, each with its own decision rule:

  bce        binary logistic loss per label              predict sigmoid(s) > 0.5, i.e. s > 0
  softmax    cross-entropy against q = y / |y|            predict softmax(s) > t, t tuned on validation data
  sparsemax  the sparsemax loss (torchxc.sparsemax_loss)  predict sparsemax(s) > 0 (the support)
  zlpr       ZLPR (torchxc.zlpr_loss)                     predict s > 0

Protocol: 20% of the training set is held out for validation. Adam with mini-batches; training stops when the
validation score (mean of micro- and macro-F1) has not improved for `patience` epochs, and the best epoch is
kept (softmax: threshold chosen among 3 values per epoch, then from 12 on the kept model). Learning rate and weight decay are chosen on the validation split of seed 0 from a small grid, per dataset,
model and loss; then every seed (a different validation split, initialisation and batch order) retrains with
them, and the test micro-F1 and macro-F1 are averaged over the seeds with their standard
deviation (torchmetrics). Rows without any label are skipped by the softmax and sparsemax losses (they have no target
distribution); ZLPR and BCE train on them (all labels negative).

    python benchmarks/multilabel_table.py                       # all six sets, both models, 5 seeds
    python benchmarks/multilabel_table.py --datasets scene,emotions --models linear --seeds 2
"""
import argparse
import csv
import json
import os
import sys
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import RESULTS_DIR, check_list_options, write_csv  # noqa: E402

import torchxc  # noqa: E402
from torchxc.datasets import load_mulan  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_DATA = os.path.normpath(os.path.join(HERE, "..", "..", "shared", "data", "mulan"))
DATASETS = ["scene", "emotions", "yeast", "medical", "bibtex", "delicious"]
LOSSES = ["bce", "softmax", "sparsemax", "zlpr"]
MODELS = ["linear", "mlp"]
LR_GRID = {"linear": [3e-3, 1e-2], "mlp": [1e-3, 3e-3]}
WD_GRID = [0.0, 1e-5, 1e-4, 1e-3]
SOFTMAX_THRESHOLDS = [0.01, 0.02, 0.03, 0.05, 0.07, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5]
SOFTMAX_THRESHOLDS_COARSE = [0.03, 0.1, 0.25]  # per epoch, for early stopping; the full grid picks the final one

# Table 2 of Martins & Astudillo (ICML 2016), micro-F1 / macro-F1 in %, for the datasets we share with it; their
# "logistic" column is our bce. Quoted from the paper.
PAPER = {
    "scene": {"bce": (70.96, 72.95), "softmax": (74.01, 75.03), "sparsemax": (73.45, 74.57)},
    "emotions": {"bce": (66.75, 68.56), "softmax": (67.34, 67.51), "sparsemax": (66.38, 66.07)},
}


@dataclass
class Split:
    x: torch.Tensor
    y: torch.Tensor  # bool


def prepare(root, name):
    train, test = load_mulan(root, name, "train"), load_mulan(root, name, "test")
    xtr, xte = train.features, test.features
    if not np.isin(xtr, (0.0, 1.0)).all():  # real-valued features: standardise with training statistics
        mu, sd = xtr.mean(0), xtr.std(0)
        sd[sd < 1e-6] = 1.0
        xtr, xte = (xtr - mu) / sd, (xte - mu) / sd
    return (Split(torch.from_numpy(np.ascontiguousarray(xtr)), torch.from_numpy(train.labels)),
            Split(torch.from_numpy(np.ascontiguousarray(xte)), torch.from_numpy(test.labels)))


def holdout(train, seed, fraction=0.2):
    g = torch.Generator().manual_seed(1000 + seed)
    perm = torch.randperm(len(train.x), generator=g)
    n_val = max(1, int(round(fraction * len(perm))))
    val, fit = perm[:n_val], perm[n_val:]
    return Split(train.x[fit], train.y[fit]), Split(train.x[val], train.y[val])


def make_model(kind, d_in, d_out):
    if kind == "linear":
        return torch.nn.Linear(d_in, d_out)
    return torch.nn.Sequential(torch.nn.Linear(d_in, 256), torch.nn.ReLU(), torch.nn.Linear(256, d_out))


def loss_fn(kind, s, y):
    if kind == "bce":
        return F.binary_cross_entropy_with_logits(s, y.to(s.dtype))
    if kind == "zlpr":
        return torchxc.zlpr_loss(s, y)
    if kind == "sparsemax":
        return torchxc.sparsemax_loss(s, y)  # multi-hot target normalised per row; empty rows skipped
    has = y.any(1)
    if not has.any():
        return s.sum() * 0
    q = y[has].to(s.dtype)
    return F.cross_entropy(s[has], q / q.sum(1, keepdim=True))


def scores(kind, s):
    """Per-label scores whose decision rule is `> threshold`."""
    if kind == "softmax":
        return torch.softmax(s, -1)
    if kind == "sparsemax":
        return torchxc.sparsemax(s, -1)
    return s


def f1s(y_true, y_pred):
    """Micro- and macro-F1 (%) of bool predictions, by torchmetrics (labels never predicted nor present count 0
    in the macro average, as scikit-learn's zero_division=0)."""
    from torchmetrics.functional.classification import multilabel_f1_score

    kw = dict(num_labels=y_true.shape[1], threshold=0.5, zero_division=0, validate_args=False)
    p, t = y_pred.float(), y_true.int()
    return (100 * float(multilabel_f1_score(p, t, average="micro", **kw)),
            100 * float(multilabel_f1_score(p, t, average="macro", **kw)))


def evaluate(kind, model, split, threshold, grid=SOFTMAX_THRESHOLDS):
    """(micro-F1, macro-F1) on `split` and the threshold used; for softmax with threshold None, the threshold of
    `grid` that is best on this (validation) split."""
    model.eval()
    with torch.no_grad():
        sc = scores(kind, model(split.x))
    model.train()
    if kind == "softmax" and threshold is None:
        best = max(grid, key=lambda t: sum(f1s(split.y, sc > t)))
        return f1s(split.y, sc > best), best
    t = threshold if kind == "softmax" else 0.0
    return f1s(split.y, sc > t), t


def train_one(kind, model_kind, fit, val, lr, wd, seed, max_epochs, patience, batch_size):
    torch.manual_seed(seed)
    model = make_model(model_kind, fit.x.shape[1], fit.y.shape[1])
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=wd)
    g = torch.Generator().manual_seed(seed)
    best = (-1.0, None, 0)  # (validation score, state, epoch)
    for epoch in range(max_epochs):
        perm = torch.randperm(len(fit.x), generator=g)
        for i in range(0, len(perm), batch_size):
            idx = perm[i:i + batch_size]
            loss = loss_fn(kind, model(fit.x[idx]), fit.y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        (mi, ma), _ = evaluate(kind, model, val, None, SOFTMAX_THRESHOLDS_COARSE)
        if (mi + ma) / 2 > best[0]:
            best = ((mi + ma) / 2, {k: v.clone() for k, v in model.state_dict().items()}, epoch)
        elif epoch - best[2] >= patience:
            break
    model.load_state_dict(best[1])
    (mi, ma), thr = evaluate(kind, model, val, None)  # softmax: the threshold from the full grid
    return model, (mi + ma) / 2, thr, best[2] + 1


def read_partial(path):
    """Rows a previous, interrupted run left in its partial CSV (``--resume``)."""
    if not os.path.exists(path):
        return []
    with open(path) as f:
        rows = list(csv.DictReader(f))
    text = ("dataset", "model", "loss")
    return [{k: (v if k in text else None if v in ("", "None") else float(v)) for k, v in r.items()} for r in rows]


def run(args):
    datasets = args.datasets.split(",")
    losses = args.losses.split(",")
    models = args.models.split(",")
    rows = read_partial(args.partial) if args.resume else []
    done = {(r["dataset"], r["model"], r["loss"]) for r in rows}
    try:
        from tqdm import tqdm
    except ImportError:
        tqdm = None
    total = len(datasets) * len(models) * len(losses)
    bar = tqdm(total=total, desc="dataset x model x loss") if tqdm else None
    for name in datasets:
        train, test = prepare(args.data, name)
        batch = args.batch_size if len(train.x) > 2000 else 64
        fit0, val0 = holdout(train, 0)
        for model_kind in models:
            for kind in losses:
                if (name, model_kind, kind) in done:
                    if bar:
                        bar.update(1)
                    continue
                start = time.time()
                # 1. hyper-parameters on seed 0's validation split
                grid = [(lr, wd) for lr in LR_GRID[model_kind] for wd in WD_GRID]
                tuned = max(grid, key=lambda p: train_one(kind, model_kind, fit0, val0, p[0], p[1], 0,
                                                          args.max_epochs, args.patience, batch)[1])
                # 2. every seed: its own validation split, initialisation and batch order
                test_f1, epochs = [], []
                for seed in range(args.seeds):
                    fit, val = holdout(train, seed)
                    model, _, thr, ep = train_one(kind, model_kind, fit, val, tuned[0], tuned[1], seed,
                                                  args.max_epochs, args.patience, batch)
                    test_f1.append(evaluate(kind, model, test, thr)[0])
                    epochs.append(ep)
                f = np.array(test_f1)
                paper = PAPER.get(name, {}).get(kind) if model_kind == "linear" else None
                rows.append(dict(dataset=name, model=model_kind, loss=kind, micro_f1=f[:, 0].mean(),
                                 micro_f1_std=f[:, 0].std(), macro_f1=f[:, 1].mean(), macro_f1_std=f[:, 1].std(),
                                 seeds=args.seeds, lr=tuned[0], weight_decay=tuned[1],
                                 mean_epochs=float(np.mean(epochs)), seconds=time.time() - start,
                                 paper_micro_f1=paper[0] if paper else None,
                                 paper_macro_f1=paper[1] if paper else None))
                if bar:
                    bar.update(1)
                    bar.set_postfix(last=f"{name}/{model_kind}/{kind} {f[:, 0].mean():.1f}/{f[:, 1].mean():.1f}")
                if args.partial:
                    write_csv(args.partial, rows)  # a long run keeps what it has
    if bar:
        bar.close()
    return rows


def print_table(rows, seeds):
    print(f"\nTest micro-F1 / macro-F1 (%), mean +- std over {seeds} seeds; paper = Martins & Astudillo 2016, Table 2")
    head = f"{'dataset':10} {'model':7} {'loss':10} {'micro-F1':>13} {'macro-F1':>13} {'paper':>13}"
    print(head)
    print("-" * len(head))
    for r in rows:
        paper = f"{r['paper_micro_f1']:.2f}/{r['paper_macro_f1']:.2f}" if r["paper_micro_f1"] is not None else ""
        print(f"{r['dataset']:10} {r['model']:7} {r['loss']:10} {r['micro_f1']:6.2f} +-{r['micro_f1_std']:4.2f} "
              f"{r['macro_f1']:6.2f} +-{r['macro_f1_std']:4.2f} {paper:>13}")


def write_markdown(path, rows, seeds):
    lines = [f"Test micro-F1 / macro-F1 (%), mean ± population std (numpy's std, ddof 0) over {seeds} seeds. "
             "*paper*: Martins & Astudillo 2016, "
             "Table 2 (their logistic = our bce; linear models).", "",
             "| dataset | model | bce | softmax | sparsemax | zlpr |", "|---|---|---|---|---|---|"]
    by = {(r["dataset"], r["model"], r["loss"]): r for r in rows}
    for name in dict.fromkeys(r["dataset"] for r in rows):
        for model in dict.fromkeys(r["model"] for r in rows):
            cells = []
            for loss in LOSSES:
                r = by.get((name, model, loss))
                if r is None:
                    cells.append("-")
                    continue
                cell = f"{r['micro_f1']:.1f}±{r['micro_f1_std']:.1f} / {r['macro_f1']:.1f}±{r['macro_f1_std']:.1f}"
                if r["paper_micro_f1"] is not None:
                    cell += f" (*paper* {r['paper_micro_f1']:.1f} / {r['paper_macro_f1']:.1f})"
                cells.append(cell)
            lines.append(f"| {name} | {model} | " + " | ".join(cells) + " |")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def plot(path, rows):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    models = list(dict.fromkeys(r["model"] for r in rows))
    datasets = list(dict.fromkeys(r["dataset"] for r in rows))
    fig, axes = plt.subplots(len(models), 2, figsize=(14, 4.2 * len(models)), squeeze=False)
    width = 0.8 / len(LOSSES)
    for i, model in enumerate(models):
        for j, metric in enumerate(("micro_f1", "macro_f1")):
            ax = axes[i][j]
            for k, loss in enumerate(LOSSES):
                sel = [next((r for r in rows if r["dataset"] == d and r["model"] == model and r["loss"] == loss), None)
                       for d in datasets]
                ax.bar([x + k * width for x in range(len(datasets))], [r[metric] if r else 0 for r in sel], width,
                       yerr=[r[metric + "_std"] if r else 0 for r in sel], label=loss, capsize=2)
            ax.set_xticks([x + width * 1.5 for x in range(len(datasets))])
            ax.set_xticklabels(datasets)
            ax.set_ylabel(metric.replace("_", "-").replace("f1", "F1") + " (%)")
            ax.set_title(f"{model} model")
            ax.grid(axis="y", alpha=0.3)
            ax.legend(fontsize=8)
    fig.suptitle("Multi-label losses on the Mulan sets (test set, mean and std over seeds)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=DEFAULT_DATA, help="the mulan/ folder")
    ap.add_argument("--datasets", default=",".join(DATASETS))
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--losses", default=",".join(LOSSES))
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--max-epochs", type=int, default=100)
    ap.add_argument("--patience", type=int, default=10)
    ap.add_argument("--batch-size", type=int, default=256,
                    help="minibatch size for training sets of more than 2000 rows (smaller ones use 64)")
    ap.add_argument("--out", default=RESULTS_DIR)
    ap.add_argument("--resume", action="store_true", help="keep the rows of an interrupted run's partial CSV")
    ap.add_argument("--report", action="store_true",
                    help="no training: write the table, markdown and plot from the rows on disk (partial or final)")
    args = ap.parse_args(argv)
    # (an unknown loss trained as softmax and was thresholded as raw logits)
    check_list_options(ap, args, {"datasets": DATASETS, "models": MODELS, "losses": LOSSES})
    os.makedirs(args.out, exist_ok=True)
    args.partial = os.path.join(args.out, "multilabel_table.partial.csv")
    if args.report:
        final = os.path.join(args.out, "multilabel_table.csv")
        rows = read_partial(args.partial if os.path.exists(args.partial) else final)
        if not rows:
            raise SystemExit(f"multilabel_table: no rows in {args.out} to report")
        counts = {int(float(r["seeds"])) for r in rows}  # what the rows hold, not --seeds
        if len(counts) != 1:
            raise SystemExit(f"multilabel_table: the rows were averaged over different seed counts {sorted(counts)} "
                             "(a resumed run with another --seeds); rerun them")
        seeds = counts.pop()
        print_table(rows, seeds)
        write_markdown(os.path.join(args.out, "multilabel_table.md"), rows, seeds)
        plot(os.path.join(args.out, "multilabel_table.png"), rows)
        print(f"{len(rows)} rows; wrote {args.out}/multilabel_table.{{md,png}}")
        return 0
    start = time.time()
    rows = run(args)
    print_table(rows, args.seeds)
    write_csv(os.path.join(args.out, "multilabel_table.csv"), rows)
    os.remove(args.partial)
    write_markdown(os.path.join(args.out, "multilabel_table.md"), rows, args.seeds)
    plot(os.path.join(args.out, "multilabel_table.png"), rows)
    with open(os.path.join(args.out, "multilabel_table.json"), "w") as f:
        json.dump({"args": {k: v for k, v in vars(args).items() if k != "partial"}, "seconds": time.time() - start,
                   "rows": rows}, f, indent=1, default=float)
    print(f"\n{time.time() - start:.0f} s; wrote {args.out}/multilabel_table.{{csv,md,png,json}}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
