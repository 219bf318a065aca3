"""Puts curves from several benchmarks/xc_training.py runs (separate processes: other losses, rates or seeds on
the same data) into one table and one plot, and times each against a reference curve's final and best P@1.

    R=benchmarks/results
    python benchmarks/xc_training_compare.py --reference "uniform, sampled softmax" \
        --out $R/xc_training_synthetic_600s_losses_seed0 \
        "uniform, binary logistic=$R/xc_training_synthetic_600s_fused_fit_seed0.json:uniform" \
        "uniform, sampled softmax=$R/xc_training_synthetic_600s_sampled_softmax_uniform_seed0.json:uniform"

Each curve is LABEL=FILE.json:METHOD (the dataset is --dataset). Writes OUT.json (the curves, each one's time to the
reference's final and best P@1 and the ratio of the reference's own time to it) and OUT.png.
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from xc_training import plot, times_against  # noqa: E402


def parse_curve(spec):
    label, sep, rest = spec.partition("=")
    path, sep2, method = rest.rpartition(":")
    if not (sep and sep2 and label and path and method):
        raise argparse.ArgumentTypeError(f"expected LABEL=FILE.json:METHOD, got {spec!r}")
    return label, path, method


def compare(specs, dataset, reference):
    """{label: curve} from the runs' JSON files, and each curve's times to the reference's final and best P@1."""
    curves, info = {}, None
    for label, path, method in specs:
        with open(path) as f:
            res = json.load(f)["results"]
        if dataset not in res or method not in res[dataset]["curves"]:
            raise SystemExit(f"{path}: no {method!r} curve for dataset {dataset!r}")
        if label in curves:
            raise SystemExit(f"label {label!r} given twice")
        curves[label] = res[dataset]["curves"][method]
        info = info or res[dataset]["info"]
    if reference not in curves:
        raise SystemExit(f"--reference {reference!r} is not one of the labels {list(curves)}")
    final, best, times = times_against(curves, reference)
    rows = {label: dict(final=curves[label][-1], time_to_reference_final_p1=a, speedup_vs_reference_final=x,
                        time_to_reference_best_p1=b, speedup_vs_reference_best=y)
            for label, (a, x, b, y) in times.items()}
    return dict(info=info, curves=curves, reference=reference, reference_final_p1=final, reference_best_p1=best,
                methods=rows)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("curves", nargs="+", type=parse_curve, help="LABEL=FILE.json:METHOD")
    ap.add_argument("--reference", required=True, help="the label whose final / best P@1 the others are timed to")
    ap.add_argument("--dataset", default="synthetic")
    ap.add_argument("--out", required=True, help="output path without extension (.json and .png are written)")
    args = ap.parse_args(argv)
    res = compare(args.curves, args.dataset, args.reference)

    def fmt(t, x):
        return "never" if t is None else f"{t:.1f} s ({x:.1f}x)"
    print(f"reference {args.reference!r}: final P@1 {res['reference_final_p1']:.3f}, best "
          f"{res['reference_best_p1']:.3f}")
    for label, r in res["methods"].items():
        print(f"{label:40} final P@1 {r['final']['p@1']:.3f}  test LL {r['final']['test_ll']:7.3f}  to final: "
              f"{fmt(r['time_to_reference_final_p1'], r['speedup_vs_reference_final']):>16}  to best: "
              f"{fmt(r['time_to_reference_best_p1'], r['speedup_vs_reference_best']):>16}")
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out + ".json", "w") as f:
        json.dump(dict(args=dict(curves=[list(c) for c in args.curves], dataset=args.dataset,
                                 reference=args.reference), results=res), f, indent=1)
    plot(args.out + ".png", {args.dataset: res})
    print(f"wrote {args.out}.{{json,png}}")


if __name__ == "__main__":
    main()
