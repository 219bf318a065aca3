"""Personal frequency with ties broken by the user's neighbours (torchxc.temporal_sets.NeighbourPrior: the label
distribution of the k training users whose whole-past label counts are the most cosine-similar, shrunk towards
popularity by beta) for a grid of k and beta, on the validation and test users; the first row of each split is
the plain baseline (ties by popularity). Written to choose the neighbour part of LANET's label tokens on the
validation users and to see how much of the signal is in the non-neural ranking. One CSV row per (split, k,
beta): recall@10, NDCG@10, PHR@10 with the metrics of torchxc.temporal_sets.

    python benchmarks/temporal_sets_neighbours.py [--data .../DC.json] [--k 50,100,300,1000,3000] [--beta 1]
                                                  [--out CSV]
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from temporal_sets_recency import save_rows, top10_row  # noqa: E402
from temporal_sets_table import DEFAULT_DATA  # noqa: E402

from torchxc.temporal_sets import NeighbourPrior, personal_frequency_scores  # noqa: E402
from torchxc.temporal_sets.train import _targets, load  # noqa: E402


def _numbers(ap, name: str, text: str, kind):
    try:
        values = [kind(v) for v in text.split(",")]
    except ValueError:
        ap.error(f"--{name} must be comma-separated {kind.__name__}s, got {text!r}")
    if not all(v > 0 for v in values):
        ap.error(f"--{name} must be > 0, got {text!r}")
    return values


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=os.path.join(DEFAULT_DATA, "DC.json"), help="a DNNTSP JSON or temporal-sets CSV")
    ap.add_argument("--k", default="50,100,300,1000,3000", help="comma-separated numbers of neighbours")
    ap.add_argument("--beta", default="1", help="comma-separated shrinkage weights towards popularity")
    ap.add_argument("--out", default=None,
                    help="CSV path (default benchmarks/results/temporal_sets_neighbours_<name>.csv)")
    args = ap.parse_args(argv)
    ks, betas = _numbers(ap, "k", args.k, int), _numbers(ap, "beta", args.beta, float)
    data = load(args.data)
    priors = [(k, beta, NeighbourPrior(data, k=k, beta=beta)) for k in ks for beta in betas]
    rows = []
    for split, examples in (("validate", data.validate), ("test", data.test)):
        target, unseen = _targets(examples, data.num_labels)
        for k, beta, prior in [(0, 0.0, None)] + priors:
            s = personal_frequency_scores(examples, data.popularity, neighbours=prior)
            rows.append(top10_row(split, s, target, unseen, k=k, beta=beta))
    save_rows(rows, args.data, args.out, "temporal_sets_neighbours")
    return 0


if __name__ == "__main__":
    sys.exit(main())
