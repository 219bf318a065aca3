"""Temporal sets: metrics on worked examples, loaders, the frequency baseline, LANET and the command line."""
import json
import math
import random
import re

import numpy as np
import pytest
import torch
from testing import favourite_label_users

from torchxc.models import LANET, TimeStepTransformer
from torchxc.temporal_sets import (Example, TemporalSets, collate, evaluate_scores, load_temporal_sets_csv,
                                   load_temporal_sets_json, ndcg_at_k, past_count_matrix, personal_frequency_scores,
                                   phr_at_k, recall_at_k, tune_thresholds)
from torchxc.temporal_sets.__main__ import main as cli_main, parser as cli_parser
from torchxc.temporal_sets.data import NUM_AMOUNTS, NUM_GAPS, gap_bucket
from torchxc.temporal_sets.neighbours import NeighbourPrior
from torchxc.temporal_sets.train import run
from torchxc.temporal_sets.transitions import TransitionPrior


def test_ranking_metrics_worked_examples():
    scores = torch.tensor([[0.9, 0.8, 0.7, 0.1, 0.0],    # top-2 = {0, 1}; T = {1, 3} + 1 unseen label: |T| = 3
                           [0.9, 0.8, 0.7, 0.1, 0.0],    # T = {4}: no hit in the top 2
                           [0.9, 0.8, 0.7, 0.1, 0.0]])   # T = {0, 1, 2}: |T| > K
    target = torch.zeros(3, 5, dtype=torch.bool)
    target[0, [1, 3]] = True
    target[1, 4] = True
    target[2, [0, 1, 2]] = True
    unseen = torch.tensor([1.0, 0.0, 0.0])
    r = [1 / 3, 0.0, 2 / 3]
    assert recall_at_k(scores, target, 2, unseen) == pytest.approx(sum(r) / 3)
    g = 1 / math.log2(3)
    n = [g / (1 + g), 0.0, 1.0]  # row 0: one hit at rank 2, ideal = 2 hits (min(|T|, K) = 2)
    assert ndcg_at_k(scores, target, 2, unseen) == pytest.approx(sum(n) / 3)
    assert phr_at_k(scores, target, 2) == pytest.approx(2 / 3)
    # K larger than |T|: the ideal DCG has |T| hits
    assert ndcg_at_k(scores[1:2], target[1:2], 5) == pytest.approx((1 / math.log2(6)) / 1.0)


def test_ndcg_ideal_list_can_outgrow_the_vocabulary():
    """|T| counts unseen labels, so with K > C the ideal DCG has min(|T|, K) hits even when |T| > C."""
    scores, target = torch.tensor([[0.9, 0.8, 0.7]]), torch.ones(1, 3, dtype=torch.bool)
    disc = [1 / math.log2(r + 1) for r in range(1, 5)]
    assert ndcg_at_k(scores, target, 10, torch.tensor([1.0])) == pytest.approx(sum(disc[:3]) / sum(disc))
    assert recall_at_k(scores, target, 10, torch.tensor([1.0])) == pytest.approx(0.75)
    assert ndcg_at_k(scores, target, 10) == pytest.approx(1.0)


def test_unseen_labels_are_misses_in_f1_and_auc():
    """Two users scored perfectly over the vocabulary; user 0 also has one unseen target label."""
    scores = torch.tensor([[0.9, 0.1], [0.2, 0.8]])
    target = torch.tensor([[True, False], [False, True]])
    thr = torch.tensor([0.5, 0.5])
    seen = evaluate_scores(scores, target, torch.zeros(2), thr)
    assert seen["micro_f1"] == pytest.approx(1.0) and seen["micro_auc"] == pytest.approx(1.0)
    got = evaluate_scores(scores, target, torch.tensor([1.0, 0.0]), thr)
    assert got["micro_f1"] == pytest.approx(2 * 2 / (2 * 2 + 0 + 1))  # TP 2, FP 0, FN 1
    assert got["weighted_f1"] == pytest.approx((1 + 1 + 0) / 3)  # supports 1, 1 and 1 (the unseen label, F1 0)
    # the unseen positive ranks below all 2 negatives: 4 of the 6 (positive, negative) pairs are ordered
    assert got["micro_auc"] == pytest.approx(4 / 6)
    assert got["macro_auc"] == pytest.approx(seen["macro_auc"])  # over the vocabulary labels
    assert got["recall@10"] == pytest.approx((0.5 + 1) / 2)


def test_thresholds_maximise_f1_per_label():
    scores = torch.tensor([[0.9, 0.1], [0.8, 0.2], [0.3, 0.3], [0.2, 0.3]])
    target = torch.tensor([[1, 0], [1, 0], [0, 0], [1, 0]], dtype=torch.bool)
    thr = tune_thresholds(scores, target)
    # label 0: cut after 0.8 gives F1 = 2*2/(2+3) = 0.8; after 0.2 (everything) 2*3/(4+3) = 0.857
    assert thr[0].item() == pytest.approx(0.2)
    assert math.isinf(thr[1].item())  # no positives
    empty = tune_thresholds(torch.zeros(0, 3), torch.zeros(0, 3, dtype=torch.bool))  # an IndexError before
    assert empty.shape == (3,) and torch.isinf(empty).all()


def test_thresholds_best_f1_with_ties_against_brute_force():
    """With heavily tied scores, the chosen threshold's F1 equals the best F1 over every threshold (a cut between
    equal scores is not a threshold)."""
    g = torch.Generator().manual_seed(0)
    for _ in range(50):
        scores = torch.randint(0, 4, (12, 3), generator=g).float()
        target = torch.rand(12, 3, generator=g) < 0.4
        thr = tune_thresholds(scores, target)
        for c in range(3):
            y = target[:, c]
            if not y.any():
                assert math.isinf(thr[c].item())
                continue
            f1 = lambda t: 2 * (y & (scores[:, c] >= t)).sum().item() / ((scores[:, c] >= t).sum().item() + y.sum().item())
            assert f1(thr[c].item()) == pytest.approx(max(f1(t.item()) for t in scores[:, c].unique()))


SPLITS = {"train": {"u1": [["a"], ["a", "b"], ["c"]], "u2": [["b"], ["b"]]},
          "validate": {"v1": [["a"], ["z", "a"]]}, "test": {"t1": [["c"], ["b"], ["a", "c", "y"]], "t2": [["a"]]}}


def test_json_loader_protocol(tmp_path):
    p = tmp_path / "d.json"
    p.write_text(json.dumps(SPLITS))
    d = load_temporal_sets_json(str(p), look_back=3)
    # training labels only ("y", "z" appear only in validate/test), most popular first (events with the label)
    assert d.vocab == ["b", "a", "c"] and d.popularity.tolist() == [3, 2, 1]
    ix = {v: i for i, v in enumerate(d.vocab)}
    # training users: one example per prefix (u1: 2, u2: 1); most recent history event first
    assert len(d.train) == 3
    ex = [e for e in d.train if e.user == "u1"][1]
    assert ex.history == [sorted([ix["a"], ix["b"]]), [ix["a"]]] and ex.target == [ix["c"]]
    assert ex.gaps == [2, 2]  # 1 + floor(log2(1 + events back)): 1 and 2 events back
    # validation/test users: the last set only; unseen labels counted; a user with one set has no example
    (v,) = d.validate
    assert v.target == [ix["a"]] and v.n_unseen == 1
    (t,) = d.test
    assert t.user == "t1" and t.n_unseen == 1 and t.history == [[ix["b"]], [ix["c"]]]
    assert t.past_counts == {ix["b"]: 1, ix["c"]: 1}
    d1 = load_temporal_sets_json(str(p), look_back=1)
    assert d1.test[0].history == [[ix["b"]]]  # truncated to the last event
    h, g, a, tgt = collate(d.test, d.num_labels, 3)
    assert h.shape == (1, 3, 3) and h[0, 0, ix["b"]] and h[0, 1, ix["c"]] and not h[0, 2].any()
    assert g[0, 2] == 0 and a is None and tgt[0, ix["a"]] and tgt[0, ix["c"]]
    with pytest.raises(ValueError, match="lacks the split"):
        p.write_text(json.dumps({"train": {}}))
        load_temporal_sets_json(str(p))


def test_csv_loader_events_gaps_amounts(tmp_path):
    p = tmp_path / "d.csv"
    rows = ["user,time,label,amount"]
    rnd = random.Random(0)
    for u in range(20):
        for t in (0, 8, 9):
            rows += [f"u{u},{t},{lab},{rnd.randint(1, 100)}" for lab in rnd.sample("abcde", 2)]
    p.write_text("\n".join(rows) + "\n")
    d = load_temporal_sets_csv(str(p), look_back=3, split=(0.6, 0.2, 0.2))
    assert d.has_amounts and len(d.test) == 4 and len(d.validate) == 4 and len(d.train) == 12 * 2
    ex = d.test[0]
    assert len(ex.history) == 2 and len(ex.history[0]) == 2  # two labels per event
    assert ex.gaps == [2, 4]  # 1 and 9 time units before the target: 1 + floor(log2(1 + delta))
    h, g, a, t = collate(d.test, d.num_labels, 3, with_amounts=True)
    assert a.shape == h.shape and (a[h] > 0).all() and (a[~h] == 0).all()


def test_loaders_reject_malformed_files(tmp_path):
    p = tmp_path / "d.csv"
    p.write_text("")
    with pytest.raises(ValueError, match="empty file"):
        load_temporal_sets_csv(str(p))
    p.write_text("user,time,label,amount\nu,1,x,2\nu,2,x\n")
    with pytest.raises(ValueError, match="line 3: expected 4 fields"):
        load_temporal_sets_csv(str(p))
    p.write_text("user,time,label\nu,yesterday,x\n")
    with pytest.raises(ValueError, match="line 2"):
        load_temporal_sets_csv(str(p))
    q = tmp_path / "d.json"
    q.write_text(json.dumps({"train": [], "validate": {}, "test": {}}))
    with pytest.raises(ValueError, match="split 'train' must map each user"):
        load_temporal_sets_json(str(q))


def test_csv_loader_bom_spaces_amount_column_and_bad_amounts(tmp_path):
    p = tmp_path / "d.csv"
    p.write_text("\ufeffuser, time, label\n" + "".join(f"u{u}, {t}, {'ab'[t % 2]}\n" for u in range(8)
                                                      for t in range(4)), encoding="utf-8")
    d = load_temporal_sets_csv(str(p))  # the byte-order mark is skipped, spaces around values are not names
    assert sorted(d.vocab) == ["a", "b"]
    for header, row, msg in (("user,time,label,store", "u,1,x,s1", "expected the header user,time,label"),
                             ("user,time,label,amount,extra", "u,1,x,2,3", "expected the header user,time,label"),
                             ("user,time,label,amount", "u,1,x,nan", "line 2: amount must be a finite number"),
                             ("user,time,label,amount", "u,1,x,inf", "line 2: amount must be a finite number")):
        p.write_text(f"{header}\n{row}\n")
        with pytest.raises(ValueError, match=msg):
            load_temporal_sets_csv(str(p))


def test_csv_split_does_not_follow_the_training_seed(tmp_path):
    p = tmp_path / "d.csv"
    p.write_text("user,time,label\n" + "".join(f"u{u},{t},{'abc'[(t + u) % 3]}\n" for u in range(30)
                                                for t in range(4)))
    results = [json.loads((tmp_path / f"{seed}.json").read_text()) if cli_main(
        ["--data", str(p), "--model", "frequency", "--seed", str(seed), "--output", str(tmp_path / f"{seed}.json")])
        == 0 else None for seed in (0, 1)]
    # the same test users: every ranking metric equal (recall@10 alone is 1.0 for any split of 3 labels)
    assert all(results[0][k] == results[1][k] for k in ("recall@10", "ndcg@10", "ndcg@20", "phr@10", "micro_auc"))
    split = [load_temporal_sets_csv(str(p), seed=s) for s in (0, 1)]
    assert [e.user for e in split[0].test] != [e.user for e in split[1].test]  # --split-seed moves them


def test_cli_refuses_options_the_model_ignores(tmp_path, capsys):
    data = favourite_label_users(1, 12, {"train": 10, "validate": 4, "test": 4}, max_events=4)
    p = tmp_path / "d.json"
    p.write_text(json.dumps(data))
    for extra, msg in ((["--model", "transformer", "--attention", "sparsemax"], "--attention applies to"),
                       (["--model", "transformer", "--past-counts"], "--past-counts applies to"),
                       (["--model", "transformer", "--transitions"], "--transitions applies to"),
                       (["--model", "frequency", "--past-counts"], "--past-counts applies to"),
                       (["--model", "frequency", "--loss", "bce"], "--loss applies to"),
                       (["--model", "lanet", "--epochs", "0"], "--epochs must be >= 1"),
                       (["--model", "lanet", "--d-model", "16", "--d-time", "16"], "expected 0 <= --d-time < --d-model"),
                       (["--model", "lanet", "--d-time", "0", "--past-counts"], "--d-time 0 would drop --past-counts"),
                       (["--model", "lanet", "--d-time", "0", "--transitions"], "--d-time 0 would drop --transitions"),
                       (["--model", "lanet", "--d-time", "0", "--neighbours", "5"],
                        "--d-time 0 would drop --neighbours"),
                       (["--model", "transformer", "--neighbours", "5"], "--neighbours applies to"),
                       (["--model", "lanet", "--neighbours", "-1"], "--neighbours must be an int >= 0"),
                       (["--model", "frequency", "--neighbours", "5", "--transitions"], "one prior: --transitions or"),
                       (["--model", "lanet", "--heads", "3", "--neighbours", "5"],
                        "--heads 3 must divide LANET's token width 80"),
                       (["--model", "lanet", "--heads", "8", "--d-time", "12", "--past-counts"],
                        "--heads 8 must divide LANET's token width 76"),
                       (["--model", "transformer", "--heads", "3"], "--heads 3 must divide --d-model 64"),
                       (["--model", "lanet", "--ema", "-0.5"], "--ema must lie in [0, 1)"),
                       (["--model", "lanet", "--ema", "1.5"], "--ema must lie in [0, 1)"),
                       (["--model", "transformer", "--batch-size", "0"], "--batch-size must be >= 1"),
                       # these trained one epoch (--patience 0), or failed deep inside torch (the sizes)
                       (["--model", "lanet", "--patience", "0"], "--patience must be >= 1"),
                       (["--model", "transformer", "--patience", "-1"], "--patience must be >= 1"),
                       (["--model", "lanet", "--dropout", "1.5"], "--dropout must lie in [0, 1)"),
                       (["--model", "transformer", "--dropout", "-0.5"], "--dropout must lie in [0, 1)"),
                       (["--model", "transformer", "--d-model", "0"], "--d-model must be >= 1"),
                       (["--model", "lanet", "--lr", "-1"], "--lr must be a finite number >= 0"),
                       (["--model", "lanet", "--lr", "inf"], "--lr must be a finite number >= 0"),
                       (["--model", "transformer", "--weight-decay", "-1"], "--weight-decay must be a finite number")):
        with pytest.raises(SystemExit):
            cli_main(["--data", str(p)] + extra)
        assert msg in capsys.readouterr().err
        with pytest.raises(ValueError, match=re.escape(msg)):
            run(cli_parser().parse_args(["--data", str(p)] + extra))
    # options that depend on the data: a CSV with amounts adds a --d-time wide amount part to LANET's tokens
    q = tmp_path / "a.csv"
    q.write_text("user,time,label,amount\n" + "".join(f"u{u},{t},{'abc'[(t + u) % 3]},{t + 1}\n" for u in range(30)
                                                       for t in range(4)))
    for extra, msg in ((["--d-time", "0"], "--d-time 0 would drop the data's amounts"),
                       (["--heads", "6", "--d-time", "16"], "--heads 6 must divide LANET's token width 80")):
        with pytest.raises(SystemExit):
            cli_main(["--data", str(q), "--model", "lanet", "--epochs", "1"] + extra)
        assert msg in capsys.readouterr().err
    # a width the heads divide builds the model: 64 + 16 (past counts) = 80 = 5 x 16
    out = tmp_path / "ok.json"
    assert cli_main(["--data", str(p), "--model", "lanet", "--epochs", "1", "--heads", "5", "--past-counts",
                     "--output", str(out)]) == 0
    assert json.loads(out.read_text())["num_labels"] > 0


def test_cli_reports_data_errors_without_a_traceback(tmp_path, capsys):
    """A missing or malformed data file is an error message and exit status 1 (it was a traceback); run() raises
    DataError, a ValueError."""
    from torchxc.temporal_sets.train import DataError

    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(dict(SPLITS, test={"u": [["a"], []]})))
    short = tmp_path / "short.json"
    short.write_text(json.dumps(dict(SPLITS, validate={"v1": [["a"]]})))
    for path, msg in ((tmp_path / "missing.json", "No such file or directory"),
                      (bad, "event 1 is empty"),
                      (short, "the validate split has no example"),
                      (tmp_path / "d.txt", "unknown data format")):
        assert cli_main(["--data", str(path), "--model", "frequency"]) == 1
        err = capsys.readouterr().err
        assert err.startswith("python -m torchxc.temporal_sets: error: ") and msg in err and "Traceback" not in err
        with pytest.raises(DataError, match=msg):
            run(cli_parser().parse_args(["--data", str(path), "--model", "frequency"]))


def test_diverged_training_is_reported(tmp_path):
    """A learning rate that makes the scores NaN used to pass early stopping (NDCG of NaN scores is a number) and
    then failed in sklearn's AUC with "Input contains NaN"."""
    data = favourite_label_users(1, 12, {"train": 10, "validate": 4, "test": 4}, max_events=4)
    p = tmp_path / "d.json"
    p.write_text(json.dumps(data))
    with pytest.raises(RuntimeError, match=r"training diverged: the model's scores on the validation users are not "
                                           r"finite after epoch 1 .* try a lower --lr \(got 1e\+30\)"):
        run(cli_parser().parse_args(["--data", str(p), "--model", "lanet", "--epochs", "2", "--lr", "1e30",
                                     "--d-model", "16", "--d-time", "8"]))


def test_late_divergence_keeps_the_best_earlier_epoch(tmp_path, monkeypatch):
    """Scores that turn non-finite after a finite epoch stop training with a warning; the best earlier epoch is
    evaluated (the first version of the check threw the run away)."""
    import torchxc.temporal_sets.train as train_mod

    data = favourite_label_users(1, 12, {"train": 10, "validate": 4, "test": 4}, max_events=4)
    p = tmp_path / "d.json"
    p.write_text(json.dumps(data))
    real, calls = train_mod.predict, []

    def predict(*a, **k):  # before epoch 2's validation: the weights diverge (NaN), so only the best earlier
        calls.append(1)  # epoch's weights, restored, give finite test metrics (scores alone left them finite)
        if len(calls) == 2:
            with torch.no_grad():
                for q in a[0].parameters():
                    q.fill_(math.nan)
        return real(*a, **k)

    monkeypatch.setattr(train_mod, "predict", predict)
    with pytest.warns(RuntimeWarning, match=r"not finite after epoch 2 .* evaluating the best earlier epoch"):
        res = run(cli_parser().parse_args(["--data", str(p), "--model", "lanet", "--epochs", "4", "--d-model", "16",
                                           "--d-time", "8"]), progress=False)
    assert res["epochs_run"] == 2 and res["diverged_at_epoch"] == 2 and math.isfinite(res["ndcg@10"])


def test_small_csv_keeps_a_validation_user_and_empty_splits_are_refused(tmp_path):
    p = tmp_path / "d.csv"
    p.write_text("user,time,label\n" + "".join(f"u{u},{t},{'ab'[t % 2]}\n" for u in range(8) for t in range(4)))
    d = load_temporal_sets_csv(str(p))  # 10% of 8 users rounds down to 0: one validation user all the same
    assert len(d.validate) == 1 and len(d.test) == 3 and len(d.train) == 4 * 3  # taken from training
    assert cli_main(["--data", str(p), "--model", "frequency"]) == 0
    q = tmp_path / "d.json"
    q.write_text(json.dumps(dict(SPLITS, validate={"v1": [["a"]]})))  # one event: no validation example
    for model in ("frequency", "lanet"):
        with pytest.raises(ValueError, match="validate split has no example"):
            run(cli_parser().parse_args(["--data", str(q), "--model", model]))


def test_personal_frequency_ranks_own_history_first(tmp_path):
    p = tmp_path / "d.json"
    p.write_text(json.dumps(SPLITS))
    d = load_temporal_sets_json(str(p))
    s = personal_frequency_scores(d.test, d.popularity)
    ix = {v: i for i, v in enumerate(d.vocab)}
    order = s[0].argsort(descending=True).tolist()
    # t1 had b and c once each: ties broken by popularity (b: 3 > c: 1); a (never bought) after both
    assert order == [ix["b"], ix["c"], ix["a"]]


def test_lanet_state_dict_carries_the_token_choice_and_inputs_are_checked():
    import io

    torch.manual_seed(0)
    C, B, J = 40, 3, 3
    m = LANET(C, J, d_label=24, d_time=8, n_layers=1, n_heads=2, max_tokens=8,
              popularity=torch.randint(1, 100, (C,))).eval()
    history, gap = torch.rand(B, J, C) < 0.1, torch.tensor([[1, 2, 3]] * B)
    buf = io.BytesIO()
    torch.save(m.state_dict(), buf)
    buf.seek(0)
    other = LANET(C, J, d_label=24, d_time=8, n_layers=1, n_heads=2, max_tokens=8).eval()  # no popularity given
    other.load_state_dict(torch.load(buf))
    with torch.no_grad():
        assert torch.equal(other(history, gap), m(history, gap))  # the same tokens, so the same logits
    bad = [((torch.rand(B, J, C + 5) < 0.1, gap), r"history \[B, J, C\] with C = 40"),
           ((torch.rand(B, 5, C) < 0.1, torch.ones(B, 5, dtype=torch.long)), "1 <= J <= look_back = 3"),
           ((history, gap[:, :2]), r"expected gap \[B, J\]")]
    for args, msg in bad:
        with pytest.raises(ValueError, match=msg):
            m(*args)
    with pytest.raises(ValueError, match="amount must be"):
        m(history, gap, amount=torch.ones(B, J, C, dtype=torch.long))  # built without an amount embedding
    with pytest.raises(ValueError, match="popularity must be"):
        LANET(C, J, popularity=torch.ones(C + 1))
    with pytest.raises(ValueError, match=r"token width d_label 23 \+ d_time 8 \+ d_time 8 \(past_counts\) = 39 "
                                         r"must be divisible by n_heads, got n_heads=2"):
        LANET(C, J, d_label=23, d_time=8, n_heads=2, past_counts=True)
    for heads in (0, -2):  # TimeStepTransformer took -2 (it divides the width) and failed later, in forward's view
        with pytest.raises(ValueError, match=f"LANET: n_heads must be >= 1, got {heads}"):
            LANET(C, J, n_heads=heads)
        with pytest.raises(ValueError, match=f"n_heads must be >= 1, got {heads}"):
            TimeStepTransformer(C, J, d_model=16, n_heads=heads)
    t = TimeStepTransformer(C, J, d_model=16, n_heads=2)
    with pytest.raises(ValueError, match="TimeStepTransformer.forward: expected history"):
        t(torch.rand(B, J, C - 1) < 0.1, gap)


@pytest.mark.parametrize("attention", ["softmax", "sparsemax"])
@pytest.mark.parametrize("max_tokens", [512, 8])
def test_lanet_forward_backward(attention, max_tokens):
    torch.manual_seed(0)
    C, B, J = 50, 4, 3
    m = LANET(C, J, d_label=24, d_time=8, n_layers=2, n_heads=2, attention=attention, max_tokens=max_tokens,
              popularity=torch.randint(1, 100, (C,)))
    history = torch.rand(B, J, C) < 0.1
    gap = torch.tensor([[2, 2, 3]] * B)
    out = m(history, gap)
    assert out.shape == (B, C) and torch.isfinite(out).all()
    out.sum().backward()
    assert m.label.weight.grad is not None and m.label.weight.grad.abs().sum() > 0
    assert m.gap.weight.grad.abs().sum() > 0 and m.bias.grad.abs().sum() > 0
    m.eval()
    with torch.no_grad():
        m(history, gap)
    if attention == "sparsemax":
        assert 0.0 < m.zero_fraction < 1.0  # exact zeros in the label attention
        # the share is pooled over every eval forward since the reset (it was the last batch's alone)
        other_history, fractions = torch.rand(1, J, C) < 0.3, []
        for batches in ([history], [other_history], [history, other_history]):
            m.reset_attention_stats()
            with torch.no_grad():
                for h in batches:
                    m(h, gap[:h.shape[0]])
            fractions.append(m.zero_fraction)
        n = [B, 1]  # weights per forward are proportional to the batch size (no padded keys)
        assert fractions[2] == pytest.approx((n[0] * fractions[0] + n[1] * fractions[1]) / sum(n), abs=1e-12)
        assert fractions[0] != fractions[1]
    else:
        assert m.zero_fraction == 0.0
    if max_tokens == 8:  # labels outside an example's candidates get their bias only
        with torch.no_grad():
            cand = m.candidates(history)
            out = m(history, gap)
            other = torch.ones(B, C, dtype=torch.bool).scatter_(1, cand, False)
            assert torch.equal(out[other], m.bias.expand(B, -1)[other])
            assert history.any(1)[0].nonzero().flatten().tolist() == sorted(
                set(cand[0].tolist()) & set(history.any(1)[0].nonzero().flatten().tolist()))


def test_lanet_past_counts(tmp_path):
    """The past-count token part: counts over the whole past (beyond look_back) reach the logits, labels with a past
    count are candidates on large vocabularies, and a model built with it refuses a batch without counts."""
    seqs = {"u": [["a"], ["b"], ["c"], ["d"], ["a", "e"]]}
    p = tmp_path / "d.json"
    p.write_text(json.dumps({"train": seqs, "validate": {}, "test": seqs}))
    d = load_temporal_sets_json(str(p), look_back=2)
    ex = d.test[0]
    ix = {v: i for i, v in enumerate(d.vocab)}
    counts = past_count_matrix([ex], d.num_labels)
    assert counts[0, ix["a"]] == 1 and counts[0, ix["d"]] == 1 and counts[0, ix["e"]] == 0
    h, g, _, _ = collate([ex], d.num_labels, 2)
    assert not h[0, :, ix["a"]].any()  # "a" is outside the look-back window but in the past counts
    torch.manual_seed(0)
    m = LANET(d.num_labels, 2, d_label=8, d_time=4, n_layers=1, n_heads=2, max_tokens=3,
              popularity=d.popularity, past_counts=True)
    with pytest.raises(ValueError, match="needs counts"):
        m(h, g)
    cand = m.candidates(h, counts)
    assert ix["a"] in cand[0].tolist()
    out = m(h, g, counts=counts)
    out.sum().backward()
    assert m.count.weight.grad.abs().sum() > 0
    m.eval()
    with torch.no_grad():
        assert not torch.equal(m(h, g, counts=counts), m(h, g, counts=torch.zeros_like(counts)))


def test_lanet_candidates_put_the_window_first():
    """On a large vocabulary the look-back window's labels get tokens before older past labels, however popular."""
    C = 10
    m = LANET(C, 2, d_label=8, d_time=4, n_layers=1, n_heads=2, max_tokens=3,
              popularity=torch.arange(C, 0, -1), past_counts=True)  # label 0 the most popular
    history = torch.zeros(1, 2, C, dtype=torch.bool)
    history[0, 0, [8, 9]] = True  # the window: the two least popular labels
    counts = torch.zeros(1, C)
    counts[0, [0, 1, 2, 8, 9]] = 1.0  # older past: the three most popular
    cand = m.candidates(history, counts)
    assert sorted(cand[0].tolist()) == [0, 8, 9]  # both window labels, then the most popular older past label


def test_layers_refuse_fully_masked_rows_and_time_step_transformer_float64():
    from torchxc.models.lanet import LabelAttentionLayer
    layer = LabelAttentionLayer(8, 2, 16, 0.0, "sparsemax")
    mask = torch.zeros(2, 4, dtype=torch.bool)
    mask[0] = True
    with pytest.raises(ValueError, match="every key masked"):
        layer(torch.randn(2, 4, 8), mask)
    t = TimeStepTransformer(12, 3, d_model=8, n_heads=2, d_ff=8).double()
    out = t(torch.rand(4, 3, 12) < 0.3, torch.randint(1, 10, (4, 3)))
    assert out.dtype == torch.float64 and out.shape == (4, 12)


def _transition_reference(train: dict, vocab: list, popularity, p_labels: list, c: int, alpha: float,
                          exclude_user=None) -> float:
    """Mean over p of log P(c | p) - log pop(c), P(c | p) = (N[p, c] + alpha pop(c)) / (N[p] + alpha), counted in
    float64 from the raw training sequences (without ``exclude_user``'s)."""
    ix = {v: i for i, v in enumerate(vocab)}
    pop = popularity.double() / popularity.sum()
    n_pc = {}
    n_p = {}
    for u, seq in train.items():
        if u == exclude_user:
            continue
        for prev, nxt in zip(seq[:-1], seq[1:]):
            for p in {ix[v] for v in prev}:
                n_p[p] = n_p.get(p, 0) + 1
                for q in {ix[v] for v in nxt}:
                    n_pc[p, q] = n_pc.get((p, q), 0) + 1
    if not p_labels:
        return 0.0
    return sum(math.log((n_pc.get((p, c), 0) + alpha * pop[c]) / (n_p.get(p, 0) + alpha) / pop[c])
               for p in p_labels) / len(p_labels)


def test_transition_prior_against_counts(tmp_path):
    """TransitionPrior.features equals the lift computed from raw counts, with and without leaving the example's own
    user out, for the last event and for the whole past; an example without a past gets zeros."""
    rnd = random.Random(3)
    labels = [f"l{i}" for i in range(9)]
    train = {f"u{u}": [rnd.sample(labels, rnd.randint(1, 3)) for _ in range(rnd.randint(2, 6))] for u in range(12)}
    test = {"t0": [["l0", "l1"], ["l2"], ["l3", "l0"]], "t1": [["l4"]]}
    p = tmp_path / "d.json"
    p.write_text(json.dumps({"train": train, "validate": {}, "test": test}))
    d = load_temporal_sets_json(str(p), look_back=2)
    prior = TransitionPrior(d, alpha=2.0)
    for examples, loo in ((d.train, True), (d.train, False), (d.test, False)):
        f = prior.features(examples, leave_user_out=loo)
        assert f.shape == (len(examples), d.num_labels, 2) and f.dtype == torch.float32
        for b, ex in enumerate(examples):
            for k, past in enumerate((ex.history[0] if ex.history else [], list(ex.past_counts))):
                for c in range(d.num_labels):
                    ref = _transition_reference(train, d.vocab, d.popularity, past, c, 2.0,
                                                ex.user if loo else None)
                    assert f[b, c, k].item() == pytest.approx(ref, abs=1e-5), (b, c, k, loo)
    assert len(d.test) == 1  # t1 has a single event: no example
    with pytest.raises(ValueError, match="alpha"):
        TransitionPrior(d, alpha=0.0)


def _pair_sets(tmp_path, seed):
    """A JSON file of 20 users with 4 events of 2 of 10 labels each, the same users in every split, and its
    TemporalSets (look-back 2)."""
    rnd = random.Random(seed)
    labels = [f"l{i}" for i in range(10)]
    train = {f"u{u}": [rnd.sample(labels, 2) for _ in range(4)] for u in range(20)}
    p = tmp_path / "d.json"
    p.write_text(json.dumps({"train": train, "validate": train, "test": train}))
    return p, load_temporal_sets_json(str(p), look_back=2)


def test_lanet_transitions(tmp_path):
    """The transition part reaches the logits of token and non-token labels, candidates follow the transition
    score on a large vocabulary, a model built with it refuses a batch without the features, and the command line
    trains with --transitions."""
    p, d = _pair_sets(tmp_path, 4)
    prior = TransitionPrior(d)
    batch = d.test[:3]
    h, g, _, _ = collate(batch, d.num_labels, 2)
    counts = past_count_matrix(batch, d.num_labels)
    tr = prior.features(batch)
    torch.manual_seed(0)
    m = LANET(d.num_labels, 2, d_label=8, d_time=4, n_layers=1, n_heads=2, max_tokens=6, popularity=d.popularity,
              past_counts=True, transitions=True)
    with pytest.raises(ValueError, match="needs transitions"):
        m(h, g, counts=counts)
    with pytest.raises(ValueError, match="needs transitions"):
        m(h, g, counts=counts, transitions=tr[..., :1])
    cand = m.candidates(h, counts, tr)
    seen = (counts > 0) | h.any(1)
    for b in range(3):
        n_seen = int(seen[b].sum())
        got = cand[b].tolist()
        assert set(got[:n_seen]) == set(seen[b].nonzero().flatten().tolist()) or n_seen >= 6
        if n_seen < 6:  # the rest: the best unseen labels by log pop + lift of the whole past
            score = m.log_popularity + tr[b, :, 1]
            score[seen[b]] = -math.inf
            best = torch.topk(score, 6 - n_seen).indices.tolist()
            assert set(got[n_seen:]) == set(best)
    out = m(h, g, counts=counts, transitions=tr)
    out.sum().backward()
    assert m.trans.weight.grad.abs().sum() > 0 and m.trans_out.weight.grad.abs().sum() > 0
    m.eval()
    with torch.no_grad():
        other = torch.ones_like(out, dtype=torch.bool).scatter_(1, cand, False)
        changed = m(h, g, counts=counts, transitions=tr) != m(h, g, counts=counts, transitions=torch.zeros_like(tr))
        assert changed[other].all() and changed[~other].any()
    res_path = tmp_path / "r.json"
    assert cli_main(["--data", str(p), "--model", "lanet", "--past-counts", "--transitions", "--epochs", "1",
                     "--d-model", "16", "--d-time", "4", "--output", str(res_path)]) == 0
    assert 0 <= json.loads(res_path.read_text())["recall@10"] <= 1


def _neighbour_reference(train, vocab, popularity, past_counts, k, beta, leave_out=None):
    """(float64 neighbour share [C], every user's cosine sorted from the largest) written from the definition:
    whole-sequence profiles of the training users (events containing each label), cosine to the past counts, the k
    most similar users (ties: any; the caller skips them), share = (sum_u w_u n_u / |n_u| + beta pop) /
    (sum_u w_u + beta)."""
    index = {v: i for i, v in enumerate(vocab)}
    C = len(vocab)
    pop = popularity.double().clamp(min=1)
    pop = pop / pop.sum()
    m = torch.zeros(C, dtype=torch.float64)
    for c, n in past_counts.items():
        m[c] = n
    sims = []
    for user, seq in train.items():
        if user == leave_out:
            continue
        n = torch.zeros(C, dtype=torch.float64)
        for event in seq:
            for lab in set(event):
                n[index[lab]] += 1
        cos = float(m @ n) / (float(m.norm() * n.norm()) or 1.0)
        sims.append((cos, n / n.sum()))
    sims.sort(key=lambda t: -t[0])
    top = sims[:k]
    mass = sum(w * dist for w, dist in top) + beta * pop
    return mass / (sum(w for w, _ in top) + beta), [w for w, _ in sims]


def test_neighbour_prior_against_its_definition(tmp_path):
    """NeighbourPrior.share equals the share written from its definition for training examples (with and without
    leaving the user out) and test examples; rows sum to 1; without a past it is popularity; features are the lift
    log share - log pop; k above the number of users takes them all."""
    rnd = random.Random(5)
    labels = [f"l{i}" for i in range(8)]
    # distinct profiles, so that the k most similar users are unambiguous
    train = {f"u{u}": [rnd.sample(labels, rnd.randint(1, 3)) for _ in range(rnd.randint(2, 7))] for u in range(15)}
    test = {"t0": [["l0", "l1"], ["l2"], ["l1", "l0"], ["l3"]], "t1": [["l5"], ["l6"]]}
    p = tmp_path / "d.json"
    p.write_text(json.dumps({"train": train, "validate": {}, "test": test}))
    d = load_temporal_sets_json(str(p), look_back=2)
    checked = skipped = 0
    for k, beta in ((4, 0.5), (1, 2.0), (100, 1.0)):
        prior = NeighbourPrior(d, k=k, beta=beta)
        for examples, loo in ((d.train, True), (d.train, False), (d.test, False)):
            share = prior.share(examples, leave_user_out=loo)
            assert share.shape == (len(examples), d.num_labels) and share.dtype == torch.float32
            torch.testing.assert_close(share.sum(1), torch.ones(len(examples)))
            for b, ex in enumerate(examples):
                ref, sims = _neighbour_reference(train, d.vocab, d.popularity, ex.past_counts, k, beta,
                                                 ex.user if loo else None)
                if len(sims) > k and sims[k - 1] - sims[k] < 1e-6:
                    skipped += 1
                    continue  # a tie at the k-th neighbour: either user is right
                torch.testing.assert_close(share[b].double(), ref, rtol=1e-5, atol=1e-7)
                checked += 1
        f = prior.features(d.test)
        torch.testing.assert_close(f[..., 0], prior.share(d.test).log() - prior.log_pop)
    assert checked > 3 * skipped, (checked, skipped)
    # the own user is left out: a training example whose user is unique gets a different share
    ex = d.train[-1]
    prior = NeighbourPrior(d, k=1)
    assert not torch.equal(prior.share([ex], leave_user_out=True), prior.share([ex]))
    # no past: popularity, and a zero lift
    nopast = Example(history=[], gaps=[], target=[0])
    torch.testing.assert_close(prior.share([nopast])[0], prior.pop)
    assert prior.features([nopast]).abs().max() < 1e-6
    for bad in ({"k": 0}, {"k": True}, {"k": 2.5}, {"beta": 0.0}, {"beta": math.nan}, {"beta": math.inf}):
        with pytest.raises(ValueError, match="NeighbourPrior: (k|beta) must be"):
            NeighbourPrior(d, **bad)
    bad_ex = Example(history=[], gaps=[], target=[0], past_counts={d.num_labels: 1})
    with pytest.raises(ValueError, match=r"NeighbourPrior.share: example 0 has past_counts label ids"):
        prior.share([bad_ex])
    for count in (math.nan, -1.0):  # a NaN count made NaN shares, a negative one a negative cosine
        with pytest.raises(ValueError, match=r"NeighbourPrior.share: example 0: counts must be finite numbers >= 0"):
            prior.share([Example(history=[], gaps=[], target=[0], past_counts={0: count})])
    # no training user at all: every share is popularity
    empty = NeighbourPrior(TemporalSets([], [], [], d.vocab, d.popularity, 2), k=3)
    torch.testing.assert_close(empty.share(d.test), empty.pop.expand(len(d.test), -1))


def test_frequency_breaks_ties_by_the_neighbours(tmp_path):
    """With a NeighbourPrior, personal frequency still ranks by past counts and orders equal counts by the
    neighbour share; one prior at a time."""
    rnd = random.Random(6)
    labels = [f"l{i}" for i in range(9)]
    train = {f"u{u}": [rnd.sample(labels, 2) for _ in range(5)] for u in range(25)}
    p = tmp_path / "d.json"
    p.write_text(json.dumps({"train": train, "validate": {}, "test": train}))
    d = load_temporal_sets_json(str(p), look_back=2)
    near = NeighbourPrior(d, k=5)
    s = personal_frequency_scores(d.test, d.popularity, neighbours=near)
    counts = past_count_matrix(d.test, d.num_labels)
    torch.testing.assert_close(s.floor(), counts)
    torch.testing.assert_close(s - counts, 0.999 * near.share(d.test), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="one prior"):
        personal_frequency_scores(d.test, d.popularity, TransitionPrior(d), near)
    with pytest.raises(ValueError, match="the neighbour prior covers 9 labels, popularity 8"):
        personal_frequency_scores(d.test, d.popularity[:8], neighbours=near)


def test_lanet_neighbours(tmp_path):
    """The neighbour part reaches every label's logit (token or not), the model refuses a batch without the
    features, features it would ignore and non-finite ones, and the command line trains with --neighbours."""
    p, d = _pair_sets(tmp_path, 7)
    batch = d.test[:3]
    h, g, _, _ = collate(batch, d.num_labels, 2)
    nb = NeighbourPrior(d, k=4).features(batch)
    torch.manual_seed(0)
    m = LANET(d.num_labels, 2, d_label=8, d_time=4, n_layers=1, n_heads=2, max_tokens=6, popularity=d.popularity,
              neighbours=True)
    assert LANET.token_width(8, 4, neighbours=True) == 16 and "neighbours=True" in repr(m)
    with pytest.raises(ValueError, match=r"needs neighbours \[B, C, 1\]"):
        m(h, g)
    with pytest.raises(ValueError, match="needs neighbours"):
        m(h, g, neighbours=nb[:, :5])
    with pytest.raises(ValueError, match="neighbours must be finite"):
        m(h, g, neighbours=torch.where(nb == nb.max(), math.nan, nb))
    with pytest.raises(ValueError, match="built without neighbours=True"):
        LANET(d.num_labels, 2, d_label=8, d_time=4, n_layers=1, n_heads=2)(h, g, neighbours=nb)
    out = m(h, g, neighbours=nb)
    out.sum().backward()
    assert m.nbr.weight.grad.abs().sum() > 0 and m.nbr_out.weight.grad.abs().sum() > 0
    cand = m.candidates(h)
    m.eval()
    with torch.no_grad():
        other = torch.ones_like(out, dtype=torch.bool).scatter_(1, cand, False)
        changed = m(h, g, neighbours=nb) != m(h, g, neighbours=torch.zeros_like(nb))
        assert changed[other].all() and changed[~other].any()
    res_path = tmp_path / "r.json"
    assert cli_main(["--data", str(p), "--model", "lanet", "--past-counts", "--neighbours", "4", "--epochs", "1",
                     "--d-model", "16", "--d-time", "4", "--output", str(res_path)]) == 0
    res = json.loads(res_path.read_text())
    assert 0 <= res["recall@10"] <= 1 and res["config"]["neighbours"] == 4
    assert cli_main(["--data", str(p), "--model", "frequency", "--neighbours", "4", "--output", str(res_path)]) == 0


def test_time_step_transformer_shapes():
    m = TimeStepTransformer(30, 3, d_model=16, n_layers=1, n_heads=2)
    gap = torch.tensor([[2, 2, 0], [2, 0, 0]])
    out = m((torch.rand(2, 3, 30) < 0.2) & (gap > 0)[..., None], gap)  # padding events (gap 0) hold no labels
    assert out.shape == (2, 30)
    out.sum().backward()


def test_cli_end_to_end(tmp_path):
    data = favourite_label_users(1, 12, {"train": 40, "validate": 10, "test": 10}, max_events=5)
    p = tmp_path / "d.json"
    p.write_text(json.dumps(data))
    for model in ("lanet", "transformer", "frequency"):
        out = tmp_path / f"{model}.json"
        assert cli_main(["--data", str(p), "--model", model, "--epochs", "2", "--d-model", "16", "--d-time", "8",
                         "--output", str(out)]) == 0
        res = json.loads(out.read_text())
        for key in ("micro_auc", "macro_auc", "weighted_f1", "micro_f1", "recall@10", "ndcg@10", "recall@20",
                    "ndcg@20", "phr@10", "train_seconds", "num_labels"):
            assert key in res, key
        assert res["num_labels"] == 12 and 0 <= res["recall@10"] <= 1
        if model == "frequency":  # each user's labels are 3 favourites: frequency ranks them at the top
            # (recall@10 on 12 labels is a weak test: random rankings average 0.84; their NDCG@10 is far lower)
            assert res["recall@10"] > 0.9 and res["ndcg@10"] > 0.8 and res["phr@10"] == 1.0


def test_run_hands_back_test_scores(tmp_path):
    """run(..., scores=d) fills d with the test scores and targets the reported metrics were computed from."""
    seqs = {f"u{i}": [["a", "b"], ["b", "c"], ["a"], ["a", "b"]] for i in range(4)}
    p = tmp_path / "d.json"
    p.write_text(json.dumps({"train": seqs, "validate": seqs, "test": seqs}))
    args = cli_parser().parse_args(["--data", str(p), "--model", "frequency"])
    got = {}
    res = run(args, scores=got)
    assert got["test"].shape == got["test_target"].shape == (4, res["num_labels"])
    assert got["test_target"].dtype == torch.bool
    assert res["recall@10"] == pytest.approx(recall_at_k(got["test"], got["test_target"], 10,
                                                         torch.zeros(4)))


def test_weight_average_update_and_swap():
    """WeightAverage keeps avg <- d avg + (1 - d) w per update; swap exchanges averaged and current weights."""
    from torchxc.temporal_sets.train import WeightAverage

    m = torch.nn.Linear(3, 2)
    w0 = m.weight.detach().clone()
    ema = WeightAverage(m, 0.9)
    with torch.no_grad():
        m.weight.add_(1.0)
    ema.update(m)
    expect = 0.9 * w0 + 0.1 * (w0 + 1.0)
    torch.testing.assert_close(ema.avg["weight"], expect)
    ema.swap(m)
    torch.testing.assert_close(m.weight.detach(), expect)
    ema.swap(m)
    torch.testing.assert_close(m.weight.detach(), w0 + 1.0)
    with pytest.raises(ValueError, match="decay"):
        WeightAverage(m, 1.0)


def test_cli_cosine_schedule_and_weight_average(tmp_path):
    """--lr-schedule cosine and --ema train end to end and still learn the favourite-labels data."""
    data = favourite_label_users(2, 12, {"train": 60, "validate": 15, "test": 15}, max_events=5)
    p = tmp_path / "d.json"
    p.write_text(json.dumps(data))
    out = tmp_path / "r.json"
    assert cli_main(["--data", str(p), "--model", "lanet", "--epochs", "3", "--d-model", "16", "--d-time", "8",
                     "--past-counts", "--lr-schedule", "cosine", "--ema", "0.9", "--lr", "3e-3",
                     "--output", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["config"]["lr_schedule"] == "cosine" and res["config"]["ema"] == 0.9
    # learned something: above the same model whose weights never move (recall@10 on 12 labels is no test: random
    # rankings average 0.84)
    still = tmp_path / "still.json"
    assert cli_main(["--data", str(p), "--model", "lanet", "--epochs", "3", "--d-model", "16", "--d-time", "8",
                     "--past-counts", "--lr-schedule", "cosine", "--ema", "0.9", "--lr", "0",
                     "--output", str(still)]) == 0
    assert res["ndcg@10"] > json.loads(still.read_text())["ndcg@10"] + 0.03


@pytest.mark.parametrize("extra", [[], ["--ema", "0.9"], ["--lr-schedule", "cosine"]])
def test_early_stopping_counts_epochs_without_improvement(tmp_path, monkeypatch, extra):
    """Training stops after --patience consecutive epochs without a better validation NDCG@10, whatever the
    schedule or weight averaging, and keeps the best epoch's score."""
    import torchxc.temporal_sets.train as train_mod

    data = favourite_label_users(3, 12, {"train": 20, "validate": 5, "test": 5}, max_events=4)
    p = tmp_path / "d.json"
    p.write_text(json.dumps(data))
    scores = iter([0.1, 0.2, 0.1, 0.3, 0.2, 0.1, 0.9, 0.9])
    monkeypatch.setattr(train_mod, "ndcg_at_k", lambda *a, **k: next(scores))
    args = cli_parser().parse_args(["--data", str(p), "--epochs", "8", "--patience", "2", "--d-model", "16",
                                    "--d-time", "8"] + extra)
    res = run(args, progress=False)
    assert res["epochs_run"] == 6 and res["best_val_ndcg@10"] == 0.3


def test_csv_dates_are_utc_whatever_the_machine_zone(tmp_path, monkeypatch):
    import time
    p = tmp_path / "d.csv"
    p.write_text("user,time,label\nu,2020-03-08,a\nu,2020-03-09,b\nu,2020-03-10,a\n")
    if not hasattr(time, "tzset"):
        pytest.skip("time.tzset is POSIX only")
    try:
        for zone in ("UTC", "America/New_York"):  # 2020-03-08 is a 23-hour day in New York
            monkeypatch.setenv("TZ", zone)
            time.tzset()
            d = load_temporal_sets_csv(str(p), split=(1, 0, 0))
            # the last prefix: history (b on 03-09, a on 03-08) one and two days before 03-10
            assert d.train[-1].gaps == [gap_bucket(1.0), gap_bucket(2.0)] == [2, 2]
            assert d.train[0].gaps == [gap_bucket(1.0)]  # gap_bucket(23 / 24) would be 1
    finally:
        monkeypatch.undo()
        time.tzset()


def test_csv_and_json_malformed_values_get_errors_naming_the_line(tmp_path):
    p = tmp_path / "d.csv"
    for text, msg in (("user,time,label\nu,2020-01-01,a\nu,5,b\n", "line 3: time '5' is a number, earlier rows' "
                                                                     "times are dates"),
                      ("user,time,label\nu,nan,a\nu,1,b\n", "line 2: time must be a finite number"),
                      ("user,time,label\nu,1,a\nu,-inf,b\n", "line 3: time must be a finite number"),
                      ("user,time,label\nu,1,\nu,2,b\n", "line 2: the label is empty"),
                      ("user,time,label\n,1,a\nu,2,b\n", "line 2: the user is empty")):
        p.write_text(text)
        with pytest.raises(ValueError, match=re.escape(msg)):
            load_temporal_sets_csv(str(p), split=(1, 0, 0))
    # far-apart times and amounts whose sum overflows: the top bucket, not an OverflowError
    p.write_text("user,time,label,amount\nu,-1e308,a,1e308\nu,-1e308,a,1e308\nu,1e308,b,1\n")
    d = load_temporal_sets_csv(str(p), split=(1, 0, 0))
    assert len(d.train) == 1 and d.train[0].gaps == [gap_bucket(math.inf)] == [NUM_GAPS - 1]
    assert d.train[0].amounts == [{d.vocab.index("a"): NUM_AMOUNTS - 1}]  # a's amounts sum to inf
    p.write_text("user,time,label\n" + "".join(f"u{u},{t},a\n" for u in range(3) for t in range(2)))
    for split in ((0.5, 0.5), (0.5, 0.6, 0.0), (0.0, 0.5, 0.5), (1.2, -0.2, 0.0)):
        with pytest.raises(ValueError, match="split must be three fractions"):
            load_temporal_sets_csv(str(p), split=split)
    d = load_temporal_sets_csv(str(p), split=(0.5, 0.5, 0.0))  # no test fraction: no test user (was 1)
    assert len(d.test) == 0 and len(d.validate) == 1 and len(d.train) == 2
    q = tmp_path / "d.json"
    for data, msg in (([], "expected an object with the splits"),
                      (dict(SPLITS, train={"u": [["a", ["b"]], ["a"]]}), "labels must be strings or integers, got ['b']"),
                      (dict(SPLITS, train={"u": [["a", None], ["a"]]}), "labels must be strings or integers, got None")):
        q.write_text(json.dumps(data))
        with pytest.raises(ValueError, match=re.escape(msg)):
            load_temporal_sets_json(str(q))
    # an empty event was accepted (as a target it scored 0 whatever the model); an event given as a string said
    # "got dict"; an empty file raised a bare JSONDecodeError
    for data, msg in ((dict(SPLITS, test={"t": [["a"], ["b"], []]}), "split 'test', user 't', event 2 is empty"),
                      (dict(SPLITS, train={"u": [[], ["a"]]}), "split 'train', user 'u', event 0 is empty"),
                      (dict(SPLITS, train={"u": ["ab", "cd"]}), "split 'train', user 'u', event 0: expected a list "
                                                                 "of labels, got str 'ab'"),
                      (dict(SPLITS, train={"u": "ab"}), "split 'train', user 'u': expected a list of events")):
        q.write_text(json.dumps(data))
        with pytest.raises(ValueError, match=re.escape("load_temporal_sets_json: " + msg)):
            load_temporal_sets_json(str(q))
    for raw in (b"", b"{", b'{"train": "\xff"}'):
        q.write_bytes(raw)
        with pytest.raises(ValueError, match=f"load_temporal_sets_json: {re.escape(str(q))} is not UTF-8 JSON"):
            load_temporal_sets_json(str(q))
    q.write_bytes(b"\xef\xbb\xbf" + json.dumps(SPLITS).encode())  # a byte-order mark is skipped, as in the CSV
    with_bom = load_temporal_sets_json(str(q))
    q.write_text(json.dumps(SPLITS))
    assert with_bom.vocab == load_temporal_sets_json(str(q)).vocab and with_bom.num_labels > 0
    with pytest.raises(ValueError, match=r"load_temporal_sets_json: look_back must be an int >= 1, got 2.5"):
        load_temporal_sets_json(str(q), look_back=2.5)
    # too few users for the split: said that the train split had no example
    for users in (1, 2):
        p.write_text("user,time,label\n" + "".join(f"u{u},{t},a\n" for u in range(users) for t in range(3)))
        with pytest.raises(ValueError, match=re.escape(f"has {users} user(s); the split (0.7, 0.1, 0.2) needs at "
                                                       "least 3")):
            load_temporal_sets_csv(str(p))
    assert len(load_temporal_sets_csv(str(p), split=(1, 0, 0)).train) == 2 * 2  # no split needs one user each
    p.write_bytes(b"user,time,label\nu,1,caf\xe9\n")
    with pytest.raises(ValueError, match=r"load_temporal_sets_csv: .* is not UTF-8 text \(the bytes b'\\xe9\\n' do "
                                         r"not decode\)"):
        load_temporal_sets_csv(str(p))
    for kw, msg in ((dict(look_back=2.5), "look_back must be an int >= 1, got 2.5"),
                    (dict(split=("a", 0.5, 0.5)), "split must be three fractions")):
        with pytest.raises(ValueError, match=re.escape("load_temporal_sets_csv: " + msg)):
            load_temporal_sets_csv(str(p), **kw)


def test_metrics_and_models_refuse_inputs_that_would_broadcast_or_be_misread():
    """An n_unseen [N, 1] broadcast the set sizes to [N, N] (recall@1 0.375 instead of 0.25), a target with extra
    columns was read silently, a float history changed LANET's logits and a float gap failed deep in nn.Embedding."""
    scores = torch.tensor([[.9, .1, .5, .2], [.1, .2, .9, .5]])
    target = torch.tensor([[True, False, False, False], [False, True, False, False]])
    assert recall_at_k(scores, target, 1, torch.tensor([1, 0])) == pytest.approx(0.25)
    assert recall_at_k(scores, target, 1, 1) == pytest.approx(0.25)  # one number for every row
    for fn in (recall_at_k, ndcg_at_k):
        with pytest.raises(ValueError, match=r"expected n_unseen of shape \[N = 2\] \(or one number\), got \(2, 1\)"):
            fn(scores, target, 1, torch.tensor([[1], [0]]))
        with pytest.raises(ValueError, match=r"expected 2-D scores and target of one shape \[N, C\], got \(2, 4\) and "
                                             r"\(2, 5\)"):
            fn(scores, torch.zeros(2, 5, dtype=torch.bool), 1)
    with pytest.raises(ValueError, match="tune_thresholds: expected 2-D scores and target of one shape"):
        tune_thresholds(scores, torch.zeros(2, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match="evaluate_scores: expected n_unseen of shape"):
        evaluate_scores(scores, target, torch.tensor([[1], [0]]))
    assert evaluate_scores(scores, target, 1)["recall@10"] == pytest.approx(0.5)  # |T| = 2 per row, one hit each

    C, J = 6, 3
    history, gap = torch.rand(2, J, C) < 0.5, torch.tensor([[1, 2, 3]] * 2)
    for model in (LANET(C, J, d_label=8, d_time=8, n_layers=1, n_heads=2), TimeStepTransformer(C, J, d_model=8,
                                                                                                  n_heads=2)):
        name = type(model).__name__
        with pytest.raises(ValueError, match=f"{name}.forward: expected history of dtype bool .* got torch.float32"):
            model(history.float() * 2, gap)
        for bad in (gap.float(), gap.short()):  # int16 failed deep in nn.Embedding too
            with pytest.raises(ValueError, match=f"{name}.forward: expected gap int64 \\(or int32\\) time-gap buckets, "
                                                 f"got {bad.dtype}"):
                model(history, bad)
        with pytest.raises(ValueError, match=rf"{name}.forward: gap buckets must lie in \[0, 32\), got values from 1 "
                                             r"to 32"):
            model(history, torch.tensor([[1, 2, 32]] * 2))


def test_collate_and_past_counts_refuse_bad_examples():
    """Label ids outside the vocabulary failed with a bare IndexError (negative ones were read from the end),
    too many history events with one and an out-of-range gap bucket passed collate."""
    from torchxc.temporal_sets import Example

    good = Example([[1, 2], [0]], [1, 2], [3], past_counts={1: 2, 0: 1})
    h, g, _, t = collate([good], 5, 3)
    assert h.sum() == 3 and g.tolist() == [[1, 2, 0]] and t[0].nonzero().flatten().tolist() == [3]
    assert past_count_matrix([good], 5)[0].tolist() == [1, 2, 0, 0, 0]
    cases = [
        (Example([[1, 7]], [1], [2]), r"collate: example 0 has history label ids \[7\] outside \[0, num_labels = 5\)"),
        (Example([[1, -1]], [1], [2]), r"history label ids \[-1\] outside"),
        (Example([[1]], [1], [5]), r"target label ids \[5\] outside"),
        (Example([[1], [2], [3], [4]], [1, 1, 1, 1], [2]), r"has 4 history events and 4 gaps; expected one gap per "
                                                           r"event and at most look_back = 3 events"),
        (Example([[1]], [1, 2], [2]), r"has 1 history events and 2 gaps"),
        (Example([[1]], [99], [2]), r"gap buckets \[99\]; each must be an int in \[1, 32\)"),
        (Example([[1]], [0], [2]), r"gap buckets \[0\]"),
    ]
    for ex, msg in cases:
        with pytest.raises(ValueError, match=msg):
            collate([good, ex] if "example 0" not in msg else [ex], 5, 3)
    with pytest.raises(ValueError, match=r"past_count_matrix: example 1 has past_counts label ids \[9\] outside"):
        past_count_matrix([good, Example([[1]], [1], [2], past_counts={9: 2})], 5)
    with pytest.raises(ValueError, match=r"collate: example 0 has amounts label ids \[8\] outside"):
        collate([Example([[1]], [1], [2], amounts=[{8: 1}])], 5, 3, with_amounts=True)
    for bucket in (True, -1, 2.0):  # a bool is an Integral: True passed as bucket 1
        with pytest.raises(ValueError, match=r"collate: example 0 has amount buckets \[.*\]; each must be an int in "
                                             r"\[0, "):
            collate([Example([[1]], [1], [2], amounts=[{1: bucket}])], 5, 3, with_amounts=True)
    assert collate([Example([[1]], [1], [2], amounts=[{1: 3}])], 5, 3, with_amounts=True)[2][0, 0, 1] == 3
    # target None set the whole target row (every label a positive); other shapes failed with bare TypeErrors
    for ex, msg in ((Example([[1]], [1], None), "target must be a list of label ids, got NoneType"),
                    (Example([[1]], [1], 3), "target must be a list of label ids, got int 3"),
                    (Example([1, 2], [1, 1], [3]), "each history event must be a list of label ids"),
                    (Example([[1]], 1, [3]), "history must be a list of events"),
                    (Example([[torch.tensor(1)]], [1], [3]), "history label ids [tensor(1)] of type Tensor; each "
                                                             "must be an int in [0, num_labels = 5)")):
        with pytest.raises(ValueError, match=re.escape("collate: example 0") + ".*" + re.escape(msg)):
            collate([ex], 5, 3)
    np_history = collate([Example([np.array([1, 2])], (1,), np.array([0, 4]))], 5, 3)  # numpy ids, as before
    assert np_history[0][0, 0].nonzero().flatten().tolist() == [1, 2] and np_history[3][0].tolist() == [1, 0, 0, 0, 1]
    with pytest.raises(ValueError, match="collate: example 0: amounts must be a list of dicts"):
        collate([Example([[1]], [1], [2], amounts=[[1]])], 5, 3, with_amounts=True)
    for counts, msg in (([1, 2], "past_counts must be a dict {label id: count}, got list"),
                        ({1: float("nan")}, "counts must be finite numbers >= 0, got [nan]"),
                        ({1: -2}, "counts must be finite numbers >= 0, got [-2]"),
                        ({1: "x"}, "counts must be finite numbers >= 0, got ['x']"),
                        ({1: True}, "counts must be finite numbers >= 0, got [True]")):
        with pytest.raises(ValueError, match=re.escape("past_count_matrix: example 0: " + msg)):
            past_count_matrix([Example([[1]], [1], [2], past_counts=counts)], 5)


@pytest.mark.parametrize("p", [0.1, 0.5, 0.3])
def test_dropout16_masks(p):
    """Dropout16: the drop rate is p rounded to 2^-16 (binomial check on 10^6 elements), kept elements are scaled
    by exactly 1 / (1 - that rate) and get that gradient, the dropped ones get 0; the mask follows
    torch.manual_seed, and the input's dtype, shape and strides do not matter."""
    from torchxc.models.lanet import Dropout16

    drop = Dropout16(p)
    rate = round(p * 65536) / 65536
    x = torch.randn(1000, 2000, dtype=torch.float64)[:, ::2].requires_grad_()  # non-contiguous, 10^6 elements
    torch.manual_seed(0)
    y = drop(x)
    zero = y == 0
    n = zero.numel()
    assert abs(zero.double().mean().item() - rate) < 5 * math.sqrt(rate * (1 - rate) / n)
    torch.testing.assert_close(y[~zero], x.detach()[~zero] * (1 / (1 - rate)), rtol=1e-15, atol=0)
    y.sum().backward()
    torch.testing.assert_close(x.grad, (~zero).double() / (1 - rate), rtol=1e-15, atol=0)
    torch.manual_seed(0)
    assert torch.equal(drop(x.detach()) == 0, zero)  # same seed, same mask
    assert not torch.equal(drop(x.detach()) == 0, zero)  # the generator moved on
    # the masks of neighbouring elements are independent: pairs (2i, 2i+1) dropped together at rate^2
    torch.manual_seed(1)
    z = drop(torch.ones(4_000_000)) == 0
    both = (z[0::2] & z[1::2]).double().mean().item()
    assert abs(both - rate**2) < 5 * math.sqrt(rate**2 * (1 - rate**2) / 2_000_000)
    for dtype in (torch.bfloat16, torch.float16, torch.float32):
        assert drop(torch.ones(3, 5, dtype=dtype)).dtype == dtype
    assert drop(torch.ones(0, 3)).shape == (0, 3)
    drop.eval()
    assert drop(x) is x


def test_dropout16_edge_rates():
    from torchxc.models.lanet import Dropout16

    x = torch.randn(7, 9, requires_grad=True)
    y = Dropout16(1.0)(x)
    assert torch.equal(y, torch.zeros_like(x)) and not y.isnan().any()
    y.sum().backward()
    assert torch.equal(x.grad, torch.zeros_like(x))
    assert Dropout16(0.0)(x) is x
    assert torch.equal(Dropout16(1e-6)(x), x)  # rounds to 0 in 2^-16 steps: nothing dropped
    with pytest.raises(ValueError):
        Dropout16(1.5)
    with pytest.raises(RuntimeError):  # as nn.Dropout: integer input is refused (it was scaled by 1, truncated)
        Dropout16(0.5)(torch.ones(3, dtype=torch.long))


def test_metrics_refuse_nan_and_negative_unseen_and_keep_the_scores_precision():
    """From a user-side review: NaN scores ranked first (recall@1 of 1.0), a negative n_unseen gave a recall of 2,
    float64 scores got float32 thresholds above the score they came from (no one predicted), and unseen positives
    tied with the lowest score in the micro-AUC for scores of 1e8 (0.75 instead of 0.5)."""
    from torchxc.temporal_sets import phr_at_k, recall_at_k, tune_thresholds

    t = torch.tensor([[True, False, False]])
    for fn in (recall_at_k, ndcg_at_k, phr_at_k):
        with pytest.raises(ValueError, match=f"{fn.__name__}: scores contain NaN"):
            fn(torch.tensor([[math.nan, 0.5, 0.1]]), t, 1)
    with pytest.raises(ValueError, match="recall_at_k: n_unseen counts labels, so it must be >= 0"):
        recall_at_k(torch.tensor([[1.0, 0.0]]), torch.tensor([[True, True]]), 2, n_unseen=torch.tensor([-1]))
    s = torch.tensor([[0.1], [0.05], [0.01]], dtype=torch.float64)
    y = torch.tensor([[True], [False], [False]])
    thr = tune_thresholds(s, y)
    assert thr.dtype == torch.float64 and (s >= thr).ravel().tolist() == [True, False, False]
    res = evaluate_scores(torch.tensor([[1e8, 2e8]]), torch.tensor([[False, True]]), torch.tensor([1]))
    assert res["micro_auc"] == 0.5


def test_baseline_and_prior_refuse_bad_ids_and_arguments(tmp_path):
    """A past-count id of -1 added to the last label, a float id indexed anyway, NaN popularity made every score
    NaN, TransitionPrior(alpha=nan) built NaN features, and TransitionPrior.features read ids -1 from the end."""
    from torchxc.temporal_sets import Example

    p = tmp_path / "d.json"
    p.write_text(json.dumps(SPLITS))
    d = load_temporal_sets_json(str(p))
    C = d.num_labels
    good = Example([[0]], [1], [1], past_counts={0: 2})
    ref = personal_frequency_scores([good], d.popularity)
    assert ref[0, 0] == pytest.approx(2 + d.popularity[0].item() / (d.popularity.max().item() + 1))
    prior = TransitionPrior(d)
    for bad, msg in ((Example([[0]], [1], [1], past_counts={-1: 2}), r"past_counts label ids \[-1\] outside"),
                     (Example([[0]], [1], [1], past_counts={1.0: 2}), r"past_counts label ids \[1.0\] of type float"),
                     (Example([[0]], [1], [1], past_counts={0: -3}), r"counts must be finite numbers >= 0")):
        with pytest.raises(ValueError, match=r"personal_frequency_scores: example 1.*" + msg):
            personal_frequency_scores([good, bad], d.popularity)
        if "counts must" not in msg:
            with pytest.raises(ValueError, match=r"TransitionPrior.features: example 1.*" + msg):
                prior.features([good, bad])
    with pytest.raises(ValueError, match=r"TransitionPrior.features: example 0 has history label ids \[-1\] outside"):
        prior.features([Example([[-1]], [1], [1])])
    for pop, msg in ((torch.tensor([3.0, math.nan, 1.0]), "got nan for label 1"), (torch.tensor([3, -1, 1]), "got -1"),
                     (torch.tensor([[3, 2, 1]]), r"1-D tensor of label counts \[C\], got \(1, 3\)"),
                     (torch.tensor([1 + 1j, 2, 3]), "real label counts, got torch.complex64")):
        with pytest.raises(ValueError, match="personal_frequency_scores: popularity must .*" + msg):
            personal_frequency_scores([good], pop)
    with pytest.raises(ValueError, match=f"personal_frequency_scores: the prior covers {C} labels, popularity {C + 1}"):
        personal_frequency_scores([good], torch.ones(C + 1), prior)
    for alpha in (math.nan, math.inf, -1.0, True, "10"):
        with pytest.raises(ValueError, match="TransitionPrior: alpha must be a finite number > 0"):
            TransitionPrior(d, alpha=alpha)
    # a repeated id in the latest event is one label of the mean, as in the whole past
    assert torch.equal(prior.features([Example([[0, 0, 1]], [1], [1])]), prior.features([Example([[0, 1]], [1], [1])]))


def test_lanet_refuses_inputs_it_would_misread():
    """NaN popularity passed the `< 0` check, counts of -1 or NaN gave NaN logits, counts / transitions given to a
    model built without them were ignored, an amount bucket out of range was a bare IndexError, and an event with
    labels but gap bucket 0 (padding) was used by LANET and masked by TimeStepTransformer."""
    C, J = 6, 2
    torch.manual_seed(0)
    kw = dict(d_label=8, d_time=4, n_layers=1, n_heads=2)
    for pop in (torch.tensor([1.0, math.nan, 2, 3, 4, 5]), torch.tensor([1.0, math.inf, 2, 3, 4, 5]), [1] * 6):
        with pytest.raises(ValueError, match=r"LANET: popularity must be \[6\] finite label counts >= 0"):
            LANET(C, J, popularity=pop, **kw)
    history, gap = torch.zeros(2, J, C, dtype=torch.bool), torch.tensor([[1, 2], [3, 0]])
    history[0, 0, 1] = history[0, 1, 2] = history[1, 0, 3] = True
    m = LANET(C, J, past_counts=True, transitions=True, d_amount=4, **kw).eval()
    counts, tr = torch.zeros(2, C), torch.zeros(2, C, 2)
    assert m(history, gap, counts=counts, transitions=tr).isfinite().all()
    for bad in (-1.0, math.nan, math.inf):
        c = counts.clone()
        c[1, 4] = bad
        with pytest.raises(ValueError, match=r"LANET.forward: counts must be finite counts >= 0, got .* \(example 1\)"):
            m(history, gap, counts=c, transitions=tr)
    t = tr.clone()
    t[0, 2, 1] = math.nan
    with pytest.raises(ValueError, match=r"LANET.forward: transitions must be finite, got nan \(example 0\)"):
        m(history, gap, counts=counts, transitions=t)
    with pytest.raises(ValueError, match="counts must be a floating-point tensor, got torch.int64"):
        m(history, gap, counts=counts.long(), transitions=tr)
    amount = torch.zeros(2, J, C, dtype=torch.long)
    amount[0, 0, 1] = NUM_AMOUNTS
    with pytest.raises(ValueError, match=rf"LANET.forward: amount buckets must lie in \[0, {NUM_AMOUNTS}\), got "
                                         rf"values from 0 to {NUM_AMOUNTS}"):
        m(history, gap, amount, counts=counts, transitions=tr)
    plain = LANET(C, J, **kw)
    with torch.device("meta"):  # shapes only (the eval-mode attention statistics called .item() on meta)
        assert LANET(C, J, **kw).eval()(history.to("meta"), gap.to("meta")).shape == (2, C)
    with pytest.raises(ValueError, match="got counts, but the model was built without past_counts=True"):
        plain(history, gap, counts=counts)
    with pytest.raises(ValueError, match="got transitions, but the model was built without transitions=True"):
        plain(history, gap, transitions=tr)
    padded = history.clone()
    padded[1, 1, 5] = True  # example 1's event 1 has gap 0
    for model in (plain, TimeStepTransformer(C, J, d_model=8, n_layers=1, n_heads=2)):
        model(history, gap)
        with pytest.raises(ValueError, match=f"{type(model).__name__}.forward: event 1 of example 1 has labels but "
                                             "gap bucket 0, which marks a padding event"):
            model(padded, gap)
    assert TimeStepTransformer(np.int64(C), J, d_model=8, n_layers=1, n_heads=2)(history, gap).shape == (2, C)
    for name, value in (("num_labels", 0), ("look_back", 0), ("d_model", 0), ("d_ff", 0), ("n_layers", -1),
                        ("num_labels", 2.5)):
        args = dict(num_labels=C, look_back=J, d_model=8, n_heads=2) | {name: value}
        with pytest.raises(ValueError, match=f"TimeStepTransformer: {name} must be an int"):
            TimeStepTransformer(**args)


def test_metrics_rank_ties_by_label_id_and_accept_inf_and_float64_scores():
    """torch.topk's order among equal scores is unspecified (all-zero scores over 12 labels gave the top 3 as
    labels 9, 7, 8); inf scores failed in scikit-learn's AUC; float64 scores were rounded to float32 (new ties);
    scores that require grad failed in .numpy(); thresholds of the wrong shape broadcast; k = 10**9 allocated a
    discount table of 10**9 entries."""
    scores = torch.zeros(1, 12)
    target = torch.zeros(1, 12, dtype=torch.bool)
    target[0, [0, 1, 2]] = True
    assert recall_at_k(scores, target, 3) == 1.0 and ndcg_at_k(scores, target, 3) == pytest.approx(1.0)
    target = target.roll(9, 1)  # labels 9, 10, 11: last among the ties
    assert recall_at_k(scores, target, 3) == 0.0 and phr_at_k(scores, target, 9) == 0.0
    # a tie inside the top k is ordered by id as well: the hit (label 5) ranks 2nd behind label 3
    s = torch.tensor([[0.0, 1, 1, 2, 0, 2, 2]])
    t = torch.zeros(1, 7, dtype=torch.bool)
    t[0, 5] = True
    assert ndcg_at_k(s, t, 2) == pytest.approx(1 / math.log2(3))
    # ... also when the whole tie lies inside the top k (no tie across the cut): topk gave labels 1, 3, 2
    s, t = torch.tensor([[0.0, 3, 3, 3, 1]]), torch.tensor([[False, False, True, False, False]])
    assert ndcg_at_k(s, t, 3) == pytest.approx(1 / math.log2(3))
    rng = torch.Generator().manual_seed(0)
    s = torch.randn(40, 9, generator=rng).double()
    y = torch.rand(40, 9, generator=rng) < 0.3
    y[:, 0] = True  # every row has a positive
    finite = evaluate_scores(s, y, None)
    s_inf = s.clone()
    s_inf[s_inf < -1.0] = -math.inf  # the lowest scores become -inf, +inf the highest: the order is the same
    s_inf[s_inf > 1.5] = math.inf
    got = evaluate_scores(s_inf, y, torch.ones(40))
    ref = evaluate_scores(torch.where(s_inf.isinf(), s_inf.sign() * 1e3, s_inf), y, torch.ones(40))
    for key in ("micro_auc", "macro_auc", "recall@10", "ndcg@10"):
        assert got[key] == pytest.approx(ref[key]), key
    assert got["micro_auc"] < finite["micro_auc"]  # the unseen positives (below every score) count
    # finite float64 scores with nothing below them (min - 1 - |min| was -inf, which scikit-learn refused)
    low = torch.where(s < -1.0, -torch.finfo(torch.float64).max, s)
    ref = evaluate_scores(torch.where(s < -1.0, -1e3, s), y, torch.ones(40))
    assert evaluate_scores(low, y, torch.ones(40))["micro_auc"] == pytest.approx(ref["micro_auc"])
    big = (1e8 + s).requires_grad_()  # float32 rounds 1e8 + x to multiples of 8: ties
    res = evaluate_scores(big, y, None, tune_thresholds(big.detach(), y))
    assert res["micro_auc"] == pytest.approx(finite["micro_auc"]) and res["ndcg@10"] == pytest.approx(finite["ndcg@10"])
    with pytest.raises(ValueError, match=r"evaluate_scores: expected thresholds \[C = 9\] \(tune_thresholds\), got "
                                         r"\(1,\)"):
        evaluate_scores(s, y, None, torch.zeros(1))
    for k in (0, -1, 2.0, True):
        with pytest.raises(ValueError, match="recall_at_k: k must be an int >= 1"):
            recall_at_k(s, y, k)
    assert ndcg_at_k(s, y, 2**62) == pytest.approx(ndcg_at_k(s, y, 9))  # a table of 2^62 entries failed
    # +inf scores against tune_thresholds' +inf ("predict nobody" for a label without validation positives): the
    # +inf score is not a prediction; a validation positive scored +inf gives a threshold that +inf scores reach
    thr = tune_thresholds(torch.tensor([[1.0, 0.0, math.inf], [2.0, 0.0, 0.0]]),
                          torch.tensor([[True, False, True], [False, False, False]]))
    assert thr[:2].tolist() == [1.0, math.inf] and thr[2] == torch.finfo(torch.float32).max
    got = evaluate_scores(torch.tensor([[1.0, math.inf, math.inf]]), torch.tensor([[True, False, True]]), None, thr,
                          ks=(1,))
    assert got["micro_f1"] == 1.0  # labels 0 and 2 predicted, label 1 (threshold +inf) not


def test_models_under_autocast_compile_meta_and_repr():
    """A user-side review of the models: LANET failed under torch.autocast (bfloat16 token logits scattered into
    float32 biases); TimeStepTransformer could not be compiled with fullgraph=True nor run on meta tensors (its
    layers read the key-padding mask on the host); LANET with popularity could not be built under
    torch.device("meta"); the reprs did not say which attention a model uses."""
    torch.manual_seed(0)
    C = 20
    history = torch.zeros(2, 3, C, dtype=torch.bool)
    history[:, :, 0] = True
    history[1, 2] = False
    gap = torch.tensor([[1, 2, 3], [1, 2, 0]])
    for attention in ("softmax", "sparsemax"):
        model = LANET(C, d_label=12, d_time=4, n_heads=2, d_ff=16, attention=attention).eval()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(history, gap)
        assert low.dtype == torch.float32 and (low - model(history, gap)).abs().max() < 0.1
        assert f"attention={attention!r}, n_heads=2" in repr(model)
    assert "num_labels=20, look_back=3, max_tokens=512, id_token=True, past_counts=False" in repr(model)
    base = TimeStepTransformer(C, d_model=16, n_heads=2, d_ff=16).eval()
    ref = base(history, gap)
    got = torch.compile(base, fullgraph=True, backend="aot_eager")(history, gap)
    assert torch.allclose(got, ref, atol=1e-5)
    assert base.to("meta")(history.to("meta"), gap.to("meta")).shape == (2, C)
    from torchxc.models.lanet import LabelAttentionLayer

    layer = LabelAttentionLayer(16, 2, 16, 0.0, "sparsemax")  # every key of a row masked: an error, compiled too
    mask = torch.zeros(2, 3, dtype=torch.bool)
    mask[0] = True
    with pytest.raises(ValueError, match="every key masked"):
        layer(torch.randn(2, 3, 16), mask)
    with pytest.raises(RuntimeError, match="every key masked"):
        torch.compile(layer, fullgraph=True, backend="aot_eager")(torch.randn(2, 3, 16), mask)
    with torch.device("meta"):
        lazy = LANET(C, d_label=12, d_time=4, n_heads=2, d_ff=16, popularity=torch.arange(20.0))
    assert lazy.bias.is_meta
