"""Does recency help the personal-frequency ranking? Each past event of a user counts r^age (age 0 = the latest
event) instead of 1, equal scores ordered by training popularity, for a few decay factors r; r = 1 is the plain
personal-frequency baseline. Written to decide whether LANET's label tokens should get a recency part (on DC they
did not: every r < 1 ranks worse than r = 1). Reads the DNNTSP JSON (the whole past of every user) and writes one
CSV row per (split, r): recall@10, NDCG@10, PHR@10 with the metrics of torchxc.temporal_sets.

    python benchmarks/temporal_sets_recency.py [--data .../DC.json] [--decays 1,0.95,0.9,0.8,0.7,0.6,0.5] [--out CSV]
"""
import argparse
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import RESULTS_DIR, write_csv  # noqa: E402
from temporal_sets_table import DEFAULT_DATA  # noqa: E402

from torchxc.temporal_sets import ndcg_at_k, phr_at_k, recall_at_k  # noqa: E402
from torchxc.temporal_sets.train import _targets, load  # noqa: E402


def recency_scores(examples: list, sequences: dict, index: dict, popularity: torch.Tensor, r: float) -> torch.Tensor:
    """float64 [N, C]: sum over the example's past events (its user's events before the target, the last one) of
    r^age for each label in the event, plus a popularity tie-break below the smallest step between two sums."""
    C = popularity.numel()
    scores = torch.zeros(len(examples), C, dtype=torch.float64)
    for b, ex in enumerate(examples):
        past = sequences[ex.user][:-1]
        for age, event in enumerate(reversed(past)):
            ids = [index[v] for v in set(event) if v in index]
            scores[b, ids] += r ** age
    pop = popularity.double()
    return scores + 1e-9 * pop / (pop.max() + 1)


def top10_row(split: str, scores, target, unseen, **keys) -> dict:
    """One CSV row: the split, ``keys`` (the setting), recall@10 / NDCG@10 / PHR@10 of ``scores`` and the users;
    also printed."""
    row = {"split": split, **keys, "recall@10": recall_at_k(scores, target, 10, unseen),
           "ndcg@10": ndcg_at_k(scores, target, 10, unseen), "phr@10": phr_at_k(scores, target, 10),
           "users": len(target)}
    print(f"{split:8s} " + " ".join(f"{k}={v:<5g}" for k, v in keys.items()) + f" recall@10 {row['recall@10']:.4f}  "
          f"ndcg@10 {row['ndcg@10']:.4f}  phr@10 {row['phr@10']:.4f}")
    return row


def save_rows(rows: list, data_path: str, out: str | None, stem: str) -> None:
    """Writes the rows to ``out``, by default benchmarks/results/<stem>_<data file name>.csv."""
    name = os.path.splitext(os.path.basename(data_path))[0]
    out = out or os.path.join(RESULTS_DIR, f"{stem}_{name}.csv")
    write_csv(out, rows)
    print(f"wrote {out}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=os.path.join(DEFAULT_DATA, "DC.json"), help="a DNNTSP JSON file")
    ap.add_argument("--decays", default="1,0.95,0.9,0.8,0.7,0.6,0.5", help="comma-separated r in (0, 1]")
    ap.add_argument("--out", default=None,
                    help="CSV path (default benchmarks/results/temporal_sets_recency_<name>.csv)")
    args = ap.parse_args(argv)
    try:
        decays = [float(v) for v in args.decays.split(",")]
    except ValueError:
        ap.error(f"--decays must be comma-separated numbers, got {args.decays!r}")
    if not all(0 < r <= 1 for r in decays):
        ap.error(f"--decays must lie in (0, 1], got {args.decays!r}")
    data = load(args.data)
    with open(args.data, encoding="utf-8-sig") as f:
        raw = json.load(f)
    index = {v: i for i, v in enumerate(data.vocab)}
    rows = []
    for split, examples in (("validate", data.validate), ("test", data.test)):
        target, unseen = _targets(examples, data.num_labels)
        sequences = {str(user): seq for user, seq in raw[split].items()}
        for r in decays:
            s = recency_scores(examples, sequences, index, data.popularity, r)
            rows.append(top10_row(split, s, target, unseen, r=r))
    save_rows(rows, args.data, args.out, "temporal_sets_recency")
    return 0


if __name__ == "__main__":
    sys.exit(main())
