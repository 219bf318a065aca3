"""Extreme classification training against wall-clock time: full softmax vs negative sampling from a uniform, a
frequency (torchxc.WeightTree) and the adversarial tree distribution (torchxc.TreeSampler, Bamler & Mandt 2020).

The model is linear: xi_y(x) = w_y . x + b_y. Every (example, positive label) pair is one training example.
- full_softmax: cross-entropy over all C labels (O(C) per example), Adagrad on dense gradients;
- uniform / frequency / tree: S negatives per pair from q(. | x) and the binary logistic loss of Bamler & Mandt
  (torchxc.adversarial_negative_sampling_loss), where a sampled label that is a positive of the pair's example
  (an accidental hit) drops out of the loss (--no-remove-accidental-hits keeps it), or with --loss sampled_softmax
  the sampled softmax over the positive and the negatives with the log-Q correction; sparse gradients (only the
  rows of the sampled labels), sparse Adagrad. Predictions and the test log-likelihood use the corrected logits
  xi + log q(y | x) (their Theorem 1), normalised by a softmax over all C labels. The tree is fitted on the
  training set first and its fitting time counts as training time.

Every method trains for the same wall-clock budget per dataset; the clock runs only while training (and fitting),
not while evaluating. Evaluation at geometrically spaced times: precision@1/@5 (|top-k ∩ Y| / k, averaged over test
examples) and the mean test log-likelihood of the test pairs. Data: ../shared/data/xc (Bibtex, Delicious) and a
synthetic set with power-law label frequencies (C = 100,000 by default) generated here.

Writes benchmarks/results/xc_training.{csv,json,png}. With --lr-grid, every sampled method is trained at each
learning rate of the grid and the methods are compared at their best final P@1 (xc_lr_grid.{csv,json,png}). With
--seeds, every run is repeated per training seed and the methods are compared on the seed-mean curves (*_seeds.*).

    python benchmarks/xc_training.py [--datasets bibtex,delicious,synthetic] [--seconds 60] [--quick]
    python benchmarks/xc_training.py --methods uniform,frequency,tree --lr-grid 0.2,0.5,1,2
    python benchmarks/xc_training.py --datasets delicious --methods uniform,frequency,tree --lr-sampled 0.2 \
        --lr-tree 0.2 --seeds 0,1,2,3,4
"""
import argparse
import json
import math
import os
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import RESULTS_DIR, check_list_options, write_csv  # noqa: E402

import torchxc  # noqa: E402
from torchxc.datasets import XCData, load_xc  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_DATA = os.path.normpath(os.path.join(HERE, "..", "..", "shared", "data", "xc"))
METHODS = ("full_softmax", "uniform", "frequency", "tree")
REAL = {"bibtex": "Bibtex/bibtex", "delicious": "Delicious/delicious"}


# ---- data --------------------------------------------------------------------------------------------------------


def synthetic(num_labels, num_features, n_train, n_test, alpha=1.0, cluster_size=32, spread=0.7, noise=0.8,
              seed=0):
    """Single-label data with Zipf(alpha) label frequencies. Labels come in clusters of similar labels (embedding =
    cluster centre + spread * noise), and x = label embedding + noise * N(0, I): telling a label from its cluster
    mates is what uniform negatives rarely ask of the model."""
    g = torch.Generator().manual_seed(seed)
    n_clusters = math.ceil(num_labels / cluster_size)
    centers = torch.randn(n_clusters, num_features, generator=g)
    cluster = torch.randperm(num_labels, generator=g) % n_clusters
    emb = centers[cluster] + spread * torch.randn(num_labels, num_features, generator=g)
    freq = (torch.arange(num_labels, dtype=torch.float64) + 1) ** -alpha
    freq = freq[torch.randperm(num_labels, generator=g)]

    def split(n):
        y = torch.multinomial(freq, n, replacement=True, generator=g)
        x = (emb[y] + noise * torch.randn(n, num_features, generator=g)) / math.sqrt(num_features)
        return XCData(x, torch.arange(n + 1), y, num_labels)

    return split(n_train), split(n_test)


def load(name, root, args):
    if name == "synthetic":
        return synthetic(args.synthetic_labels, args.synthetic_features, args.synthetic_train, args.synthetic_test)
    train, test = (load_xc(os.path.join(root, f"{REAL[name]}_{s}.txt")) for s in ("train", "test"))
    for d in (train, test):  # unit-length rows, as usual for linear models on bag-of-words features
        d.features = F.normalize(d.features, dim=1)
    return train, test


def with_bias(x):
    return torch.cat([x, torch.ones(x.shape[0], 1, dtype=x.dtype)], 1)


# ---- samplers ----------------------------------------------------------------------------------------------------


class Uniform:
    def __init__(self, C):
        self.C = C

    def sample(self, x, S):
        return torch.randint(self.C, (x.shape[0], S)), torch.full((x.shape[0], S), -math.log(self.C))

    def log_prob(self, x, y):
        return torch.full(y.shape, -math.log(self.C))

    def log_prob_all(self, x):
        return torch.full((x.shape[0], self.C), -math.log(self.C))


class Frequency:
    """Label frequencies in the training pairs, add-one smoothed (every label keeps q > 0)."""

    def __init__(self, labels, C):
        self.tree = torchxc.WeightTree(torch.bincount(labels, minlength=C).double() + 1)
        self.log_all = (self.tree.weights / self.tree.total).log().float()

    def sample(self, x, S):
        idx = self.tree.sample(x.shape[0] * S).view(x.shape[0], S)
        return idx, self.log_all[idx]

    def log_prob(self, x, y):
        return self.log_all[y]

    def log_prob_all(self, x):
        return self.log_all.expand(x.shape[0], -1)


# ---- training ----------------------------------------------------------------------------------------------------


def pairs(d: XCData):
    return torch.repeat_interleave(torch.arange(d.num_examples), d.indptr.diff()), d.indices


def fit_subset(n, rows, seed):
    """Sorted random example rows for the tree's fit (None: all n)."""
    if rows <= 0 or rows >= n:
        return None
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:rows].sort().values


def subset(d: XCData, rows):
    """The examples ``rows`` (sorted) with their features and labels."""
    keep = torch.zeros(d.num_examples, dtype=torch.bool)
    keep[rows] = True
    counts = d.indptr.diff()[rows]
    return XCData(d.features[rows], torch.cat([torch.zeros(1, dtype=torch.long), torch.cumsum(counts, 0)]),
                  d.indices[keep[pairs(d)[0]]], d.num_labels)


@torch.no_grad()
def evaluate(W, sampler, test: XCData, max_rows, chunk=512):
    """precision@1, precision@5 and the mean log-likelihood of the test pairs, on the first max_rows examples."""
    n = min(test.num_examples, max_rows) if max_rows > 0 else test.num_examples
    p1 = p5 = ll = 0.0
    n_pairs = 0
    for r0 in range(0, n, chunk):
        r1 = min(n, r0 + chunk)
        x = test.features[r0:r1]
        scores = with_bias(x) @ W.T
        if sampler is not None:
            scores += sampler.log_prob_all(x)
        logp = torch.log_softmax(scores, 1)
        lo, hi = int(test.indptr[r0]), int(test.indptr[r1])
        rows = torch.repeat_interleave(torch.arange(r1 - r0), test.indptr[r0 + 1:r1 + 1] - test.indptr[r0:r1])
        truth = torch.zeros_like(scores, dtype=torch.bool)
        truth[rows, test.indices[lo:hi]] = True
        top = scores.topk(min(5, scores.shape[1]), 1).indices
        hits = truth.gather(1, top).float()
        p1 += hits[:, 0].sum().item()
        p5 += (hits.sum(1) / 5).sum().item()
        ll += logp[rows, test.indices[lo:hi]].sum().item()
        n_pairs += hi - lo
    return p1 / n, p5 / n, ll / max(n_pairs, 1)


def sampled_loss(kind, xi, y, neg, pos_lq, neg_lq, positives, reg):
    """One step's loss with sampled negatives. xi [B, 1 + S]: the model's scores of the positive y [B] and of the
    negatives neg [B, S]; pos_lq [B] / neg_lq [B, S]: their log q; positives [B, P] padded with -1, every label of
    each pair's example (negatives among them drop out of the loss), or None to keep such accidental hits.
    kind "binary_logistic": the paper's loss with its regulariser reg; "sampled_softmax": the model's logit is
    xi + log q (the prediction rule of evaluate), so after the log-Q correction the softmax over the positive and
    the negatives sees xi itself."""
    if kind == "sampled_softmax":
        return torchxc.sampled_softmax_loss(xi[:, 0] + pos_lq, xi[:, 1:] + neg_lq, neg, neg_lq, y, pos_lq,
                                            positives=positives, remove_accidental_hits=positives is not None)
    hits = {} if positives is None else dict(neg_labels=neg, positives=positives)
    return torchxc.adversarial_negative_sampling_loss(xi[:, 0], xi[:, 1:], pos_lq, neg_lq, reg=reg, **hits)


def default_lr(method, args):
    return {"full_softmax": args.lr_full, "tree": args.lr_tree}.get(method, args.lr_sampled)


def train(method, train_d: XCData, test_d: XCData, args, seconds, progress, lr=None, seed=None):
    seed = args.seed if seed is None else seed
    torch.manual_seed(seed)
    C, Fdim = train_d.num_labels, train_d.features.shape[1]
    rows, labels = pairs(train_d)
    positives = train_d.padded_labels() if args.remove_accidental_hits and method != "full_softmax" else None
    clock = 0.0
    sampler = None
    start = time.perf_counter()
    if method == "uniform":
        sampler = Uniform(C)
    elif method == "frequency":
        sampler = Frequency(labels, C)
    elif method == "tree":
        fit_rows = fit_subset(train_d.num_examples, args.tree_fit_rows, seed)
        fit_d = train_d if fit_rows is None else subset(train_d, fit_rows)
        sampler = torchxc.TreeSampler.fit(fit_d.features, (fit_d.indptr, fit_d.indices), C, dim=args.tree_dim,
                                          l2=args.tree_l2, progress=False, seed=seed)
    clock += time.perf_counter() - start
    sparse = method != "full_softmax"
    emb = torch.nn.Embedding(C, Fdim + 1, sparse=sparse)
    torch.nn.init.zeros_(emb.weight)
    lr = default_lr(method, args) if lr is None else lr
    opt = torch.optim.Adagrad(emb.parameters(), lr=lr)
    x_all = with_bias(train_d.features)
    # evaluations at geometric times between the end of fitting and the end of the budget (which the fitting
    # time is part of; if fitting alone took the budget, one more second of training)
    end = max(seconds, clock + 1.0)
    checkpoints = [clock + (end - clock) * 2.0 ** -j for j in range(args.evals - 1, -1, -1)]
    curve = [dict(seconds=clock, steps=0, epochs=0.0, **dict(zip(("p@1", "p@5", "test_ll"),
                                                                   evaluate(emb.weight, sampler, test_d,
                                                                            args.eval_rows))))]
    steps, seen, nxt = 0, 0, 0
    B, S = args.batch_size, args.negatives
    while nxt < len(checkpoints):
        perm = torch.randperm(labels.numel())
        for i in range(0, perm.numel(), B):
            t0 = time.perf_counter()
            idx = perm[i:i + B]
            r = rows[idx]
            x, y = x_all[r], labels[idx]
            if method == "full_softmax":
                loss = F.cross_entropy(x @ emb.weight.T, y)
            else:
                with torch.no_grad():
                    raw = train_d.features[r]
                    neg, neg_lq = sampler.sample(raw, S)
                    pos_lq = sampler.log_prob(raw, y[:, None])[:, 0]
                w = emb(torch.cat([y[:, None], neg], 1))  # [B, 1 + S, F + 1]
                xi = torch.einsum("bsf,bf->bs", w, x)
                loss = sampled_loss(args.loss, xi, y, neg, pos_lq, neg_lq,
                                    None if positives is None else positives[r], args.reg)
                if args.l2:  # on the rows this step touches, once per occurrence (the sparse-gradient way)
                    loss = loss + args.l2 * w.pow(2).sum() / idx.numel()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            clock += time.perf_counter() - t0
            steps += 1
            seen += idx.numel()
            if clock >= checkpoints[nxt]:
                p1, p5, ll = evaluate(emb.weight, sampler, test_d, args.eval_rows)
                curve.append(dict(seconds=clock, steps=steps, epochs=seen / labels.numel(), **{"p@1": p1, "p@5": p5,
                                                                                                "test_ll": ll}))
                progress.set_postfix_str(f"{method} lr {lr:g} {clock:.0f}s P@1 {p1:.3f} P@5 {p5:.3f} LL {ll:.2f}")
                nxt += 1
                if nxt == len(checkpoints):
                    break
    return curve


def mean_curve(curves):
    """The seed-mean of runs evaluated at the same budget fractions (each run's j-th evaluation is the first step past
    the same clock target), with the standard deviation of P@1 over the seeds (0 for one run)."""
    out = []
    for points in zip(*curves):
        p1 = torch.tensor([c["p@1"] for c in points], dtype=torch.float64)
        mean = {key: sum(c[key] for c in points) / len(points) for key in ("seconds", "steps", "epochs", "p@1", "p@5",
                                                                           "test_ll")}
        out.append(dict(mean, **{"p@1_std": p1.std().item() if len(points) > 1 else 0.0, "seeds": len(points)}))
    return out


def time_to_reach(curve, target):
    """First training time at which P@1 >= target (linear interpolation between evaluations); None if never."""
    prev = None
    for c in curve:
        if c["p@1"] >= target:
            if prev is None or c["p@1"] == prev["p@1"]:
                return c["seconds"]
            f = (target - prev["p@1"]) / (c["p@1"] - prev["p@1"])
            return prev["seconds"] + f * (c["seconds"] - prev["seconds"])
        prev = c
    return None


def times_against(curves, reference):
    """The reference curve's final and best P@1, and for each curve (the reference's too) its time to each and the
    reference's own first time at that value divided by it: {name: (t_final, speedup, t_best, speedup_best)}."""
    ref = curves[reference]
    final, best = ref[-1]["p@1"], max(c["p@1"] for c in ref)
    t_final, t_best = time_to_reach(ref, final), time_to_reach(ref, best)
    out = {}
    for name, curve in curves.items():
        a, b = time_to_reach(curve, final), time_to_reach(curve, best)
        out[name] = (a, t_final / a if a else None, b, t_best / b if b else None)
    return final, best, out


def summarise(name, curves):
    """Each method's time to reach uniform's final P@1, and (for curves that are not monotone, where uniform's P@1
    falls again before the budget ends) its time to reach uniform's best P@1 against the time uniform first had it."""
    target, best, times = times_against(curves, "uniform")
    out = {}
    for method, (t, speedup, t_best, speedup_best) in times.items():
        out[method] = dict(final=curves[method][-1], time_to_uniform_final_p1=t, speedup_vs_uniform=speedup,
                           time_to_uniform_best_p1=t_best, speedup_vs_uniform_best=speedup_best)
    return dict(dataset=name, uniform_final_p1=target, uniform_best_p1=best, methods=out)


def plot(path, results):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    names = list(results)
    fig, axes = plt.subplots(2, len(names), figsize=(max(7.0, 5 * len(names)), 7.5), squeeze=False)
    for j, name in enumerate(names):
        for method, curve in results[name]["curves"].items():
            t = [max(c["seconds"], 1e-2) for c in curve]
            line, = axes[0][j].plot(t, [c["p@1"] for c in curve], "o-", ms=3, label=method)
            if curve[-1].get("seeds", 1) > 1:  # a seed-mean curve: shade +- one standard deviation
                axes[0][j].fill_between(t, [c["p@1"] - c["p@1_std"] for c in curve],
                                        [c["p@1"] + c["p@1_std"] for c in curve], color=line.get_color(), alpha=0.15)
            axes[1][j].plot(t, [c["test_ll"] for c in curve], "o-", ms=3, label=method)
        info = results[name]["info"]
        axes[0][j].set_title(f"{name}: C={info['num_labels']}, {info['train_pairs']} training pairs", fontsize=10)
        axes[0][j].set_ylabel("test precision@1")
        axes[1][j].set_ylabel("test log-likelihood (per pair)")
        for ax in (axes[0][j], axes[1][j]):
            ax.set_xscale("log")
            ax.set_xlabel("training wall-clock seconds (2 CPU cores)")
            ax.grid(alpha=0.3, which="both")
            ax.legend(fontsize=8)
        lls = [c["test_ll"] for cv in results[name]["curves"].values() for c in cv[1:]]
        if lls:
            axes[1][j].set_ylim(max(min(lls), -2 * math.log(info["num_labels"])), max(lls) + 0.2)
    sep = " " if len(names) > 2 else "\n"  # narrower figures get the title on two lines
    fig.suptitle(f"Linear extreme classifier:{sep}full softmax vs negative sampling (uniform, frequency, adversarial tree)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=DEFAULT_DATA, help="the xc/ folder (Bibtex/, Delicious/)")
    ap.add_argument("--datasets", default="bibtex,delicious,synthetic")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--seconds", type=float, default=None,
                    help="training budget per method (default: 30 for bibtex, 45 for delicious, 120 for synthetic)")
    ap.add_argument("--batch-size", type=int, default=512)
    ap.add_argument("--negatives", type=int, default=16)
    ap.add_argument("--lr-full", type=float, default=0.5, help="Adagrad lr of the full softmax")
    ap.add_argument("--lr-sampled", type=float, default=0.2, help="Adagrad lr of uniform and frequency negatives")
    ap.add_argument("--lr-tree", type=float, default=0.05, help="Adagrad lr with tree negatives (harder negatives, "
                    "larger gradients)")
    ap.add_argument("--lr-grid", default="",
                    help="comma-separated learning rates: train every sampled method at each, compare each method at "
                         "its best final test P@1 (the same grid and rule for every method), write xc_lr_grid.*")
    ap.add_argument("--loss", choices=("binary_logistic", "sampled_softmax"), default="binary_logistic",
                    help="sampled methods: the paper's binary logistic loss with its regulariser --reg "
                         "(adversarial_negative_sampling_loss) or the sampled softmax with the log-Q correction "
                         "(sampled_softmax_loss; the model's logit is xi + log q for both, --reg unused)")
    ap.add_argument("--reg", type=float, default=1e-3)
    ap.add_argument("--l2", type=float, default=0.0,
                    help="sampled methods: L2 penalty on the weight rows of each step's positives and negatives")
    ap.add_argument("--remove-accidental-hits", action=argparse.BooleanOptionalAction, default=True,
                    help="sampled methods: a negative that is a positive of the pair's example drops out of the loss "
                         "(adversarial_negative_sampling_loss(neg_labels=, positives=)); results before the "
                         "twenty-seventh session kept them (--no-remove-accidental-hits)")
    ap.add_argument("--tree-dim", type=int, default=16)
    ap.add_argument("--tree-l2", type=float, default=1.0, help="L2 penalty of the tree's node classifiers (fit)")
    ap.add_argument("--tree-fit-rows", type=int, default=0,
                    help="fit the tree on this many training examples drawn at random (0: all of them)")
    ap.add_argument("--evals", type=int, default=9, help="evaluations per run, at budget * 2^-j")
    ap.add_argument("--eval-rows", type=int, default=3000,
                    help="test rows evaluated: the first ones of the test file (Bibtex has 2515, all of them; "
                         "Delicious 3185, so 185 are left out; 0 = all)")
    ap.add_argument("--synthetic-labels", type=int, default=100_000)
    ap.add_argument("--synthetic-features", type=int, default=64)
    ap.add_argument("--synthetic-train", type=int, default=500_000)
    ap.add_argument("--synthetic-test", type=int, default=3000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--seeds", default="",
                    help="comma-separated training seeds (tree fit and training order; the synthetic set stays the "
                         "same): every run is repeated per seed, methods are compared on the seed-mean curves "
                         "(P@1 std beside them), writes xc_training_seeds.* / xc_lr_grid_seeds.*")
    ap.add_argument("--quick", action="store_true",
                    help="a smoke run: 2 s per run whatever --seconds says, and the synthetic set at 5000 labels, "
                         "20000 training rows, 3 evaluations (overriding --synthetic-labels/-train, --evals)")
    ap.add_argument("--out", default=RESULTS_DIR)
    args = ap.parse_args(argv)
    check_list_options(ap, args, {"datasets": (*REAL, "synthetic"), "methods": METHODS})
    if args.seconds is not None and args.seconds <= 0:
        ap.error(f"--seconds must be > 0, got {args.seconds}")
    if args.quick:
        args.synthetic_labels, args.synthetic_train, args.evals = 5000, 20000, 3
    from tqdm import tqdm

    budgets = {"bibtex": 30.0, "delicious": 45.0, "synthetic": 120.0}
    results, rows = {}, []
    datasets = args.datasets.split(",")
    methods = args.methods.split(",")
    lrs = [float(v) for v in args.lr_grid.split(",") if v]
    seeds = [int(v) for v in args.seeds.split(",") if v] or [args.seed]
    progress = tqdm(total=len(datasets) * len(methods), desc="dataset x method")
    for name in datasets:
        train_d, test_d = load(name, args.data, args)
        seconds = 2.0 if args.quick else (args.seconds if args.seconds is not None else budgets.get(name, 60.0))
        curves, grid, per_seed = {}, {}, {}
        for method in methods:
            grid_lrs = lrs if lrs and method != "full_softmax" else [default_lr(method, args)]
            runs = {lr: {seed: train(method, train_d, test_d, args, seconds, progress, lr=lr, seed=seed)
                         for seed in seeds} for lr in grid_lrs}
            for lr, by_seed in runs.items():
                rows += [dict(dataset=name, method=method, lr=lr, seed=seed, **c) for seed, curve in by_seed.items()
                         for c in curve]
            mean = {lr: mean_curve(list(by_seed.values())) for lr, by_seed in runs.items()}
            best = max(grid_lrs, key=lambda lr: mean[lr][-1]["p@1"])
            curves[method] = mean[best]
            if len(seeds) > 1:
                per_seed[method] = {str(seed): curve for seed, curve in runs[best].items()}
            if len(grid_lrs) > 1:
                grid[method] = dict(best_lr=best, final={f"{lr:g}": curve[-1] for lr, curve in mean.items()})
            progress.update(1)
        info = dict(num_labels=train_d.num_labels, train_pairs=int(train_d.indices.numel()),
                    train_examples=train_d.num_examples, test_examples=min(test_d.num_examples, args.eval_rows) if args.eval_rows > 0 else test_d.num_examples,
                    features=int(train_d.features.shape[1]), budget_seconds=seconds)
        results[name] = dict(info=info, curves=curves, **(summarise(name, curves) if "uniform" in curves else {}))
        if grid:
            results[name]["lr_grid"] = grid
        if per_seed:
            results[name]["per_seed"] = per_seed
    progress.close()
    print(f"\n{'dataset':10} {'method':13} {'P@1':>6} {'+-std':>6} {'P@5':>6} {'test LL':>8} "
          f"{'t(uniform final P@1)':>21} {'t(uniform best P@1)':>20}  ({len(seeds)} seed{'s' if len(seeds) > 1 else ''})")
    def when(t):
        if "uniform" not in methods:
            return "n/a (no uniform)"
        return f"{t:.1f} s" if t is not None else "never"
    for name, res in results.items():
        for method, curve in res["curves"].items():
            summary = res.get("methods", {}).get(method, {})
            last = curve[-1]
            print(f"{name:10} {method:13} {last['p@1']:6.3f} {last['p@1_std']:6.3f} {last['p@5']:6.3f} "
                  f"{last['test_ll']:8.3f} {when(summary.get('time_to_uniform_final_p1')):>21} "
                  f"{when(summary.get('time_to_uniform_best_p1')):>20}")
    for name, res in results.items():
        for method, g in res.get("lr_grid", {}).items():
            print(f"{name:10} {method:13} final P@1 by lr: " +
                  "  ".join(f"{lr}: {c['p@1']:.3f}" for lr, c in g["final"].items()) + f"  (best {g['best_lr']:g})")
    os.makedirs(args.out, exist_ok=True)
    suffix = ("_seeds" if len(seeds) > 1 else "") + ("_quick" if args.quick else "")
    stem = ("xc_lr_grid" if lrs else "xc_training") + suffix
    write_csv(os.path.join(args.out, stem + ".csv"), rows)
    with open(os.path.join(args.out, stem + ".json"), "w") as f:
        json.dump({"args": vars(args), "results": results}, f, indent=1)
    plot(os.path.join(args.out, stem + ".png"), results)
    print(f"wrote {args.out}/{stem}.{{csv,json,png}}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
