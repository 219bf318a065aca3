"""Where the micro-AUC of a temporal-sets model comes from: pooled micro-AUC split into the (user, label) pairs whose
label is in the user's past (repeats) and those whose label is not (new labels), plus the mean per-user AUC.

Written to find out why LANET ranks next-basket labels better than the transformer over time steps (recall@10,
NDCG@10) on DC but has the lower micro-AUC. Trains each variant once (the settings of temporal_sets_table.py) and
writes benchmarks/results/temporal_sets_auc.{json,md}.

    python benchmarks/temporal_sets_auc.py [--dataset DC] [--variants frequency,transformer,lanet_softmax_pc] [--append]
"""
import argparse
import json
import os
import sys

import numpy as np
from sklearn.metrics import roc_auc_score

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import RESULTS_DIR  # noqa: E402
from temporal_sets_table import DEFAULT_DATA, VARIANTS  # noqa: E402

from torchxc.temporal_sets import past_count_matrix  # noqa: E402
from torchxc.temporal_sets.__main__ import parser as cli_parser  # noqa: E402
from torchxc.temporal_sets.train import load, run  # noqa: E402


def auc_breakdown(scores, target, past):
    """AUC on the pairs whose label is in the user's past (bool [N, C] ``past``), on the others, and per user."""
    y, s, p = target.numpy(), scores.float().numpy(), past.numpy()

    def auc(sel):
        ys = y[sel]
        return float(roc_auc_score(ys, s[sel])) if 0 < ys.sum() < ys.size else float("nan")

    per_user = [roc_auc_score(y[i], s[i]) for i in range(y.shape[0]) if 0 < y[i].sum() < y.shape[1]]
    return {"micro_auc_past": auc(p), "micro_auc_new": auc(~p),
            "mean_user_auc": float(np.mean(per_user)), "positives_in_past": float(y[p].sum() / max(y.sum(), 1)),
            "pairs_in_past": float(p.mean())}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=DEFAULT_DATA)
    ap.add_argument("--dataset", default="DC")
    ap.add_argument("--variants", default="frequency,transformer,lanet_softmax_pc")
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--max-tokens", type=int, default=512)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=RESULTS_DIR)
    ap.add_argument("--append", action="store_true",
                    help="keep the rows of other variants from the existing temporal_sets_auc.json in --out (same "
                         "dataset and seed) and add or replace the rows of --variants")
    args = ap.parse_args(argv)
    path = os.path.join(args.data, args.dataset + ".json")
    data = load(path)
    past = past_count_matrix(data.test, data.num_labels) > 0  # label anywhere in the user's past
    rows = []
    for variant in args.variants.split(","):
        cli = cli_parser().parse_args(["--data", path, "--epochs", str(args.epochs), "--seed", str(args.seed),
                                       "--max-tokens", str(args.max_tokens)] + VARIANTS[variant])
        got = {}
        res = run(cli, data, scores=got)
        row = dict(variant=variant, recall10=res["recall@10"], micro_auc=res["micro_auc"],
                   **auc_breakdown(got["test"], got["test_target"], past))
        rows.append(row)
        print(json.dumps(row), flush=True)
    old_path = os.path.join(args.out, "temporal_sets_auc.json")
    if args.append and os.path.exists(old_path):
        with open(old_path) as f:
            old = json.load(f)
        if (old["args"]["dataset"], old["args"]["seed"]) != (args.dataset, args.seed):
            raise SystemExit(f"--append: {old_path} is for {old['args']['dataset']} seed {old['args']['seed']}, "
                             f"not {args.dataset} seed {args.seed}")
        new = {r["variant"]: r for r in rows}
        rows = [new.pop(r["variant"], r) for r in old["rows"]] + list(new.values())
        args.variants = ",".join(r["variant"] for r in rows)
    cols = ["recall10", "micro_auc", "micro_auc_past", "micro_auc_new", "mean_user_auc"]
    lines = [f"{args.dataset}, seed {args.seed}: {rows[0]['positives_in_past']:.1%} of the test positives and "
             f"{rows[0]['pairs_in_past']:.1%} of the (user, label) pairs have the label in the user's past.", "",
             "| model | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
    lines += [f"| {r['variant']} | " + " | ".join(f"{r[c]:.4f}" for c in cols) + " |" for r in rows]
    print("\n".join(lines))
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "temporal_sets_auc.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    with open(os.path.join(args.out, "temporal_sets_auc.json"), "w") as f:
        json.dump({"args": vars(args), "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
