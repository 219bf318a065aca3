"""Training and evaluation of one model on one temporal-sets dataset (the CLI is ``python -m torchxc.temporal_sets``).

Models: ``lanet`` (torchxc.models.LANET, attention softmax or sparsemax), ``transformer`` (a vanilla transformer
over time steps) and ``frequency`` (personal frequency, no training). Neural models train with Adam and stop early
on the validation split's NDCG@10 (patience epochs without improvement; the best epoch's weights are kept).
Options: a cosine learning-rate decay to 0 over ``--epochs`` (``--lr-schedule cosine``) and an exponential moving
average of the weights (``--ema DECAY``, updated after every step), which is then what is validated and tested.
"""
from __future__ import annotations  # X | None annotations on Python 3.9
import json
import math
import os
import random
import resource
import time
import warnings

import torch

from ..models.lanet import LANET, TimeStepTransformer, loss_fn
from .baselines import personal_frequency_scores
from .data import (NUM_GAPS, TemporalSets, _check_id_list, collate, load_temporal_sets_csv, load_temporal_sets_json,
                   past_count_matrix)
from .metrics import evaluate_scores, ndcg_at_k, tune_thresholds
from .neighbours import NeighbourPrior
from .transitions import TransitionPrior

__all__ = ["load", "run"]


def load(path: str, look_back: int = 3, split_seed: int = 0) -> TemporalSets:
    """A DNNTSP JSON (its own split) or a CSV (users split at random by ``split_seed``)."""
    if path.endswith(".json"):
        return load_temporal_sets_json(path, look_back)
    if path.endswith(".csv"):
        return load_temporal_sets_csv(path, look_back, seed=split_seed)
    raise ValueError(f"unknown data format (expected .json or .csv): {path}")


def _targets(examples, C):
    target = torch.zeros(len(examples), C, dtype=torch.bool)
    for i, ex in enumerate(examples):
        _check_id_list("temporal_sets", i, "target", ex.target, C)
        target[i, ex.target] = True
    return target, torch.tensor([ex.n_unseen for ex in examples], dtype=torch.float32)


def _forward(model, batch, data: TemporalSets, device, training: bool = False):
    """(logits, target) of one batch of examples (``training``: transition and neighbour features leave the user
    out)."""
    h, g, a, t = collate(batch, data.num_labels, data.look_back, data.has_amounts)
    extra = {}
    if getattr(model, "count", None) is not None:
        extra["counts"] = past_count_matrix(batch, data.num_labels).to(device)
    if getattr(model, "trans", None) is not None:
        extra["transitions"] = model.prior.features(batch, leave_user_out=training).to(device)
    if getattr(model, "nbr", None) is not None:
        extra["neighbours"] = model.neighbour_prior.features(batch, leave_user_out=training).to(device)
    return model(h.to(device), g.to(device), None if a is None else a.to(device), **extra), t


@torch.no_grad()
def predict(model, examples, data: TemporalSets, device, batch_size=256):
    model.eval()
    out = [_forward(model, examples[i:i + batch_size], data, device)[0].float().cpu()
           for i in range(0, len(examples), batch_size)]
    return torch.cat(out) if out else torch.zeros(0, data.num_labels)


class WeightAverage:
    """Exponential moving average of a model's floating-point parameters and buffers: after each optimiser step
    avg <- decay * avg + (1 - decay) * current. ``swap`` exchanges the averaged and the current weights in place."""

    def __init__(self, model: torch.nn.Module, decay: float):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"WeightAverage: decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.avg = {k: v.detach().clone() for k, v in model.state_dict().items() if v.is_floating_point()}

    @torch.no_grad()
    def update(self, model: torch.nn.Module):
        state = model.state_dict()
        for k, a in self.avg.items():
            a.lerp_(state[k], 1.0 - self.decay)

    @torch.no_grad()
    def swap(self, model: torch.nn.Module):
        state = model.state_dict()
        for k, a in self.avg.items():
            tmp = state[k].clone()
            state[k].copy_(a)
            a.copy_(tmp)


def build_model(args, data: TemporalSets):
    if args.model == "lanet":
        model = LANET(data.num_labels, data.look_back, **_lanet_sizes(args, data.has_amounts), n_layers=args.layers,
                      n_heads=args.heads, d_ff=2 * args.d_model, dropout=args.dropout, attention=args.attention,
                      max_tokens=args.max_tokens, num_gaps=NUM_GAPS, popularity=data.popularity)
        if model.trans is not None:
            model.prior = TransitionPrior(data)  # counts from the training users (not a parameter)
        if model.nbr is not None:
            model.neighbour_prior = NeighbourPrior(data, k=args.neighbours)  # the training users' profiles
        return model
    return TimeStepTransformer(data.num_labels, data.look_back, d_model=args.d_model, n_layers=args.layers,
                               n_heads=args.heads, d_ff=2 * args.d_model, dropout=args.dropout, num_gaps=NUM_GAPS)


class OptionError(ValueError):
    """Options that cannot build the chosen model, or that it would silently ignore (the command line reports it as
    a usage error)."""


class DataError(ValueError):
    """A data file that cannot be read or used: missing, malformed, or with an empty split (the command line reports
    it as an error message, without a traceback)."""


def _lanet_sizes(args, has_amounts: bool) -> dict:
    """LANET's token parts from the options: --d-model split into the label part and a --d-time part, a --d-time
    wide amount part when the data has amounts, and the past-count, transition and neighbour switches (each --d-time
    wide)."""
    return dict(d_label=args.d_model - args.d_time, d_time=args.d_time, d_amount=args.d_time if has_amounts else 0,
                past_counts=getattr(args, "past_counts", False), transitions=getattr(args, "transitions", False),
                neighbours=getattr(args, "neighbours", 0) > 0)


def check_args(args, has_amounts: bool | None = None) -> None:
    """Refuses options the chosen model would silently ignore, and sizes that cannot build it. ``has_amounts``: whether
    the data has amounts (None before it is loaded: the checks that depend on it wait)."""
    neural = args.model in ("lanet", "transformer")
    problems = []
    if args.model != "lanet":
        if args.attention != "softmax":
            problems.append("--attention applies to --model lanet only (the transformer over time steps uses softmax)")
        if getattr(args, "past_counts", False):
            problems.append("--past-counts applies to --model lanet only (frequency always ranks by the whole past)")
    if args.model == "transformer" and getattr(args, "transitions", False):
        problems.append("--transitions applies to --model lanet and frequency only")
    neighbours = getattr(args, "neighbours", 0)
    if isinstance(neighbours, bool) or not isinstance(neighbours, int) or neighbours < 0:
        problems.append(f"--neighbours must be an int >= 0 (0: off), got {neighbours!r}")
    elif neighbours and args.model == "transformer":
        problems.append("--neighbours applies to --model lanet and frequency only")
    elif neighbours and args.model == "frequency" and getattr(args, "transitions", False):
        problems.append("frequency breaks ties by one prior: --transitions or --neighbours, not both")
    if args.model == "frequency" and args.loss != "zlpr":
        problems.append("--loss applies to the trained models (lanet, transformer), not frequency")
    if neural and args.epochs < 1:
        problems.append(f"--epochs must be >= 1 for a trained model, got {args.epochs}")
    if args.look_back < 1:
        problems.append(f"--look-back must be >= 1, got {args.look_back}")
    if neural:
        if args.batch_size < 1:
            problems.append(f"--batch-size must be >= 1, got {args.batch_size}")
        if not 0 <= getattr(args, "ema", 0.0) < 1:
            problems.append(f"--ema must lie in [0, 1) (0: no weight average), got {args.ema}")
        if args.heads < 1 or args.layers < 1:
            problems.append(f"--heads and --layers must be >= 1, got {args.heads} and {args.layers}")
        if args.d_model < 1:
            problems.append(f"--d-model must be >= 1, got {args.d_model}")
        if args.patience < 1:
            problems.append(f"--patience must be >= 1 (epochs without a better validation NDCG@10 before stopping), "
                            f"got {args.patience}")
        if not 0 <= args.dropout < 1:
            problems.append(f"--dropout must lie in [0, 1), got {args.dropout}")
        if not 0 <= args.lr < math.inf:  # 0: weights that never move, a control
            problems.append(f"--lr must be a finite number >= 0, got {args.lr}")
        if not 0 <= args.weight_decay < math.inf:
            problems.append(f"--weight-decay must be a finite number >= 0, got {args.weight_decay}")
    if args.model == "lanet":
        if not 0 <= args.d_time < args.d_model:
            problems.append(f"LANET splits --d-model into a label part and a --d-time part: expected 0 <= --d-time < "
                            f"--d-model, got {args.d_time} and {args.d_model}")
        elif args.d_time == 0:
            dropped = [name for name, on in (("--past-counts", getattr(args, "past_counts", False)),
                                             ("--transitions", getattr(args, "transitions", False)),
                                             ("--neighbours", getattr(args, "neighbours", 0) > 0),
                                             ("the data's amounts", bool(has_amounts))) if on]
            if dropped:
                problems.append(f"the past-count, transition, neighbour and amount parts of LANET's label tokens are "
                                f"--d-time wide: --d-time 0 would drop {', '.join(dropped)}")
        if args.max_tokens < 1:
            problems.append(f"--max-tokens must be >= 1, got {args.max_tokens}")
        width = LANET.token_width(**_lanet_sizes(args, bool(has_amounts)))
        if has_amounts is not None and args.heads >= 1 and width % args.heads:
            problems.append(f"--heads {args.heads} must divide LANET's token width {width} (--d-model {args.d_model} "
                            f"plus --d-time {args.d_time} for each of past counts, transitions, neighbours and "
                            f"amounts)")
    if args.model == "transformer" and args.heads >= 1 and args.d_model % args.heads:
        problems.append(f"--heads {args.heads} must divide --d-model {args.d_model}")
    if problems:
        raise OptionError("temporal_sets: " + "; ".join(problems))


def run(args, data: TemporalSets | None = None, progress: bool = True, scores: dict | None = None) -> dict:
    """Trains (unless frequency) and evaluates; returns the result dict (also written to args.output if set).
    ``scores``, if given, receives the test and validation scores [N, C], targets and counts of labels outside the
    vocabulary (keys ``test``, ``test_target``, ``test_unseen``, ``validate``, ``validate_target``,
    ``validate_unseen``) for analysis or ensembling."""
    check_args(args)
    torch.manual_seed(args.seed)
    random.seed(args.seed)
    if data is None:  # the CSV split does not follow --seed: seeds of one configuration see the same users
        try:
            data = load(args.data, args.look_back, getattr(args, "split_seed", 0))
        except (ValueError, OSError) as e:  # the loaders' messages name the file and what is wrong in it
            raise DataError(str(e)) from e
    check_args(args, data.has_amounts)
    C = data.num_labels
    for name in ("train", "validate", "test"):
        if not getattr(data, name):
            raise DataError(f"temporal_sets: the {name} split has no example (a user needs at least two events to give "
                             f"one: a target and a history); {name} is needed for "
                             + {"train": "training", "validate": "early stopping and the F1 thresholds",
                                "test": "the evaluation"}[name])
    device = torch.device(args.device)
    val_t, val_u = _targets(data.validate, C)
    test_t, test_u = _targets(data.test, C)
    start = time.perf_counter()
    info = {}
    if args.model == "frequency":
        prior = TransitionPrior(data) if getattr(args, "transitions", False) else None
        k = getattr(args, "neighbours", 0)
        near = NeighbourPrior(data, k=k) if k else None
        val_s = personal_frequency_scores(data.validate, data.popularity, prior, near)
        test_s = personal_frequency_scores(data.test, data.popularity, prior, near)
        epochs_run = 0
    else:
        model = build_model(args, data).to(device)
        opt = torch.optim.Adam(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
        sched = None
        if getattr(args, "lr_schedule", "constant") == "cosine":
            steps_per_epoch = -(-len(data.train) // args.batch_size)
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, args.epochs * steps_per_epoch))
        ema = WeightAverage(model, args.ema) if getattr(args, "ema", 0.0) > 0 else None
        best, best_state, bad, epochs_run = -1.0, None, 0, 0
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=args.epochs, desc=f"{args.model} {os.path.basename(str(args.data))}")
        train = list(data.train)
        for epoch in range(args.epochs):
            model.train()
            random.Random(args.seed * 1000 + epoch).shuffle(train)
            total = 0.0
            for i in range(0, len(train), args.batch_size):
                logits, t = _forward(model, train[i:i + args.batch_size], data, device, training=True)
                loss = loss_fn(args.loss, logits, t.to(device))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                if sched is not None:
                    sched.step()
                if ema is not None:
                    ema.update(model)
                total += loss.item() * t.shape[0]
            epochs_run += 1
            if ema is not None:
                ema.swap(model)  # validate (and keep) the averaged weights
            val_s = predict(model, data.validate, data, device)
            if not torch.isfinite(val_s).all():  # the metrics would rank NaN scores, sklearn's AUC would refuse them
                if bar:
                    bar.close()
                message = (f"temporal_sets: training diverged: the model's scores on the validation users are not "
                           f"finite after epoch {epoch + 1} (mean training loss {total / len(train):.4g}); try a lower "
                           f"--lr (got {args.lr})")
                if best_state is None:
                    raise RuntimeError(message)
                warnings.warn(message + f"; evaluating the best earlier epoch (validation NDCG@10 {best:.4f})",
                              RuntimeWarning)
                info["diverged_at_epoch"] = epoch + 1
                bar = None
                if ema is not None:
                    ema.swap(model)
                break
            score = ndcg_at_k(val_s, val_t, 10, val_u)
            if score > best:
                best, bad = score, 0
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            else:
                bad += 1
            if ema is not None:
                ema.swap(model)
            if bar:
                bar.update(1)
                bar.set_postfix(loss=f"{total / len(train):.4f}", val_ndcg10=f"{score:.4f}", best=f"{best:.4f}")
            if bad >= args.patience:
                break
        if bar:
            bar.close()
        model.load_state_dict(best_state)
        val_s = predict(model, data.validate, data, device)
        if args.model == "lanet":
            model.reset_attention_stats()
        test_s = predict(model, data.test, data, device)
        if args.model == "lanet":
            info["attention_zero_fraction"] = model.zero_fraction  # over every test user
        info["best_val_ndcg@10"] = best
        info["parameters"] = sum(p.numel() for p in model.parameters())
    seconds = time.perf_counter() - start
    thresholds = tune_thresholds(val_s, val_t)
    result = evaluate_scores(test_s, test_t, test_u, thresholds)
    if scores is not None:
        scores.update(test=test_s, test_target=test_t, test_unseen=test_u, validate=val_s, validate_target=val_t,
                      validate_unseen=val_u)
    result.update(info)
    result.update(train_seconds=seconds, epochs_run=epochs_run, num_labels=C, train_examples=len(data.train),
                  test_users=len(data.test), peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  threads=torch.get_num_threads(),
                  config={k: v for k, v in vars(args).items() if k != "output"})
    if getattr(args, "output", None):
        os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
        with open(args.output, "w") as f:
            json.dump(result, f, indent=1)
    return result
