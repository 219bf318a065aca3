"""python -m torchxc.temporal_sets --data PATH --model {lanet,transformer,frequency} [options]

Trains one model on a temporal-sets dataset (DNNTSP JSON, or CSV of user,time,label[,amount]), early-stopping on
the validation split, evaluates on the test users and writes the metrics as JSON (--output)."""
import argparse
import json
import sys

from .train import DataError, OptionError, check_args, run


def parser():
    ap = argparse.ArgumentParser(prog="python -m torchxc.temporal_sets", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="a .json (DNNTSP format) or .csv (user,time,label[,amount])")
    ap.add_argument("--model", choices=["lanet", "transformer", "frequency"], default="lanet")
    ap.add_argument("--attention", choices=["softmax", "sparsemax"], default="softmax", help="LANET's normaliser")
    ap.add_argument("--loss", choices=["zlpr", "bce", "softmax"], default="zlpr")
    ap.add_argument("--look-back", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--patience", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--lr-schedule", choices=["constant", "cosine"], default="constant",
                    help="cosine: decay the learning rate to 0 over --epochs (per step)")
    ap.add_argument("--ema", type=float, default=0.0,
                    help="validate and test an exponential moving average of the weights with this decay per step "
                         "(e.g. 0.999; 0 = off)")
    ap.add_argument("--weight-decay", type=float, default=0.0)
    ap.add_argument("--d-model", type=int, default=64)
    ap.add_argument("--d-time", type=int, default=16, help="LANET: width of the time (and amount) part of a token")
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--heads", type=int, default=2)
    ap.add_argument("--dropout", type=float, default=0.1)
    ap.add_argument("--max-tokens", type=int, default=512, help="LANET: label tokens per example on large vocabularies")
    ap.add_argument("--past-counts", action="store_true",
                    help="LANET: add each label's count over the user's whole past to its token (torchxc extension)")
    ap.add_argument("--transitions", action="store_true",
                    help="LANET: add each label's transition lift from the user's last event and whole past, counted "
                         "over the training users (torchxc extension); frequency: break ties by the transition "
                         "probability from the user's past instead of popularity")
    ap.add_argument("--neighbours", type=int, default=0, metavar="K",
                    help="LANET: add each label's lift in the label distribution of the user's K most similar "
                         "training users (cosine of whole-past counts; torchxc extension, e.g. 300); frequency: break "
                         "ties by that distribution instead of popularity. 0: off")
    ap.add_argument("--seed", type=int, default=0, help="initialisation and batch order")
    ap.add_argument("--split-seed", type=int, default=0,
                    help="CSV data: the random split of users into train / validate / test (JSON data has its own)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--output", default=None, help="write the metrics here (JSON)")
    return ap


def main(argv=None):
    ap = parser()
    args = ap.parse_args(argv)
    try:
        check_args(args)
        result = run(args)  # checks again once the data is loaded (whether it has amounts)
    except OptionError as e:
        ap.error(str(e))  # exit status 2, with the usage line
    except DataError as e:
        print(f"{ap.prog}: error: {e}", file=sys.stderr)
        return 1
    keys = ["micro_auc", "macro_auc", "weighted_f1", "micro_f1", "recall@10", "ndcg@10", "recall@20", "ndcg@20",
            "phr@10", "train_seconds", "num_labels"]
    print(json.dumps({k: result[k] for k in keys if k in result}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
