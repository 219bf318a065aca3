"""Seed ensembles of one temporal-sets configuration: trains the configuration once per seed (or reuses the scores
an earlier call saved), then evaluates every seed alone and the ensemble that averages the seeds' test (and
validation) logits, with the same metrics and F1-threshold rule as the single runs (thresholds tuned on the
ensemble's validation scores). Writes benchmarks/results/temporal_sets_ensemble_<dataset>_<variant>.{csv,md}.

    python benchmarks/temporal_sets_ensemble.py --dataset DC --variant lanet_softmax_pc_tr_ema --seeds 0,1,2

Seeds can be trained in separate processes first (``--train-only --seeds 0``, ``--seeds 1`` side by side, one
thread each); a last call with every seed then only evaluates. The cache (benchmarks/.cache/) keeps each seed's
scores with the command line, the data file's size and time and a hash of the installed torchxc that made them; a seed
whose record differs is trained again.
"""
import argparse
import functools
import hashlib
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import RESULTS_DIR, write_csv  # noqa: E402
from temporal_sets_table import DEFAULT_DATA, PUBLISHED, VARIANTS  # noqa: E402

from torchxc.temporal_sets.__main__ import parser as cli_parser  # noqa: E402
from torchxc.temporal_sets.metrics import evaluate_scores, tune_thresholds  # noqa: E402
from torchxc.temporal_sets.train import load, run  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
KEYS = ("test", "test_target", "test_unseen", "validate", "validate_target", "validate_unseen")
SHOWN = ["recall@10", "ndcg@10", "phr@10", "recall@20", "ndcg@20", "micro_auc", "weighted_f1"]


@functools.lru_cache(maxsize=None)  # read once per process, not once per seed
def source_hash() -> str:
    """SHA-256 of the installed torchxc: its Python files and compiled library, in path order."""
    import torchxc

    root, h = os.path.dirname(os.path.abspath(torchxc.__file__)), hashlib.sha256()
    for dirpath, dirnames, files in sorted(os.walk(root)):
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
        for name in sorted(f for f in files if f.endswith((".py", ".so", ".pyd"))):
            h.update(os.path.relpath(os.path.join(dirpath, name), root).encode())
            with open(os.path.join(dirpath, name), "rb") as f:
                h.update(f.read())
    return h.hexdigest()


def scores_for(args, seed: int, loaded: dict) -> dict:
    """The seed's validation and test scores: from the cache if an earlier call saved them for the same command
    line, data file (size and time) and installed torchxc, else trained now."""
    data_path = os.path.abspath(os.path.join(args.data, args.dataset + ".json"))
    cli_args = ["--data", data_path, "--epochs", str(args.epochs), "--seed", str(seed), "--max-tokens",
                str(args.max_tokens)] + VARIANTS[args.variant]
    stat = os.stat(data_path)
    key = dict(cli=cli_args, data_size=stat.st_size, data_mtime=stat.st_mtime, source=source_hash())
    path = os.path.join(args.cache, f"{args.dataset}_{args.variant}_seed{seed}_epochs{args.epochs}_"
                                    f"tokens{args.max_tokens}.pt")
    if os.path.exists(path):
        cached = torch.load(path)
        if cached.get("key") == key:
            return cached
        print(f"{path}: made by another command line, data file or torchxc source; training again", flush=True)
    if "data" not in loaded:
        loaded["data"] = load(data_path)
    got = {}
    res = run(cli_parser().parse_args(cli_args), loaded["data"], scores=got)
    out = {k: got[k] for k in KEYS}
    out["result"] = {k: v for k, v in res.items() if k != "config"}
    out["key"] = key
    os.makedirs(args.cache, exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"  # a killed run leaves no half-written file that a later call would trust
    torch.save(out, tmp)
    os.replace(tmp, path)
    return out


def evaluate(runs: list) -> dict:
    """Metrics of the mean of the runs' logits (the runs must share the split: same targets)."""
    for r in runs[1:]:
        if not (torch.equal(r["test_target"], runs[0]["test_target"])
                and torch.equal(r["validate_target"], runs[0]["validate_target"])):
            raise ValueError("temporal_sets_ensemble: the runs were made on different splits")
    test = torch.stack([r["test"].float() for r in runs]).mean(0)
    val = torch.stack([r["validate"].float() for r in runs]).mean(0)
    thresholds = tune_thresholds(val, runs[0]["validate_target"])
    return evaluate_scores(test, runs[0]["test_target"], runs[0]["test_unseen"], thresholds)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=DEFAULT_DATA)
    ap.add_argument("--dataset", default="DC")
    ap.add_argument("--variant", default="lanet_softmax_pc_tr_ema", choices=sorted(VARIANTS))
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--epochs", type=int, default=10, help="the cap of the table's _pc_tr_ema rows")
    ap.add_argument("--max-tokens", type=int, default=None,
                    help="LANET label tokens per example; by default the table's (DC 512, other datasets 128)")
    ap.add_argument("--cache", default=os.path.join(HERE, ".cache", "temporal_sets_scores"),
                    help="where each seed's scores are kept between calls")
    ap.add_argument("--train-only", action="store_true", help="train and cache the seeds, no table")
    ap.add_argument("--out", default=RESULTS_DIR)
    args = ap.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",") if s]
    if not seeds or len(set(seeds)) != len(seeds):
        ap.error(f"--seeds: give one or more distinct seeds, got {args.seeds!r}")
    if args.max_tokens is None:
        args.max_tokens = 512 if args.dataset == "DC" else 128
    loaded = {}  # the dataset, loaded once for every seed that trains
    runs = [scores_for(args, s, loaded) for s in seeds]
    if args.train_only:
        return 0
    rows = []
    for s, r in zip(seeds, runs):
        m = evaluate([r])
        if any(abs(m[k] - r["result"][k]) > 1e-9 for k in SHOWN):  # one run evaluates as run() reported it
            raise RuntimeError(f"temporal_sets_ensemble: seed {s} evaluates differently from its run")
        rows.append(dict(model=f"seed {s}", members=1, epochs=r["result"]["epochs_run"],
                         train_seconds=r["result"]["train_seconds"], **{k: m[k] for k in SHOWN}))
    singles = {k: np.array([row[k] for row in rows]) for k in SHOWN}
    rows.append(dict(model="mean of the single runs (± std, ddof 0)", members="",
                     **{k: f"{singles[k].mean():.4f} ± {singles[k].std():.4f}" for k in SHOWN}))
    for n in range(2, len(runs) + 1):
        m = evaluate(runs[:n])
        rows.append(dict(model=f"ensemble of seeds {','.join(map(str, seeds[:n]))} (mean logits)", members=n,
                         train_seconds=sum(r["result"]["train_seconds"] for r in runs[:n]),
                         **{k: m[k] for k in SHOWN}))
    stem = os.path.join(args.out, f"temporal_sets_ensemble_{args.dataset}_{args.variant}")
    write_csv(stem + ".csv", rows)
    fmt = (lambda v: f"{v:.4f}" if isinstance(v, float) else str(v))
    lines = [f"# {args.dataset}, {args.variant}: single seeds and their ensembles (test users)", "",
             "| model | members | " + " | ".join(SHOWN) + " | train s |", "|---" * (len(SHOWN) + 3) + "|"]
    for row in rows:
        ts = row.get("train_seconds")
        lines.append(f"| {row['model']} | {row['members']} | " + " | ".join(fmt(row[k]) for k in SHOWN) +
                     f" | {'' if ts is None else f'{ts:.0f}'} |")
    for name, (r10, n10, p10) in PUBLISHED.get(args.dataset, {}).items():
        lines.append(f"| {name} (published) | | {r10} | {n10} | {p10} |" + " |" * (len(SHOWN) - 2))
    with open(stem + ".md", "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
