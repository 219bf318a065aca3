"""Smoke tests of the experiment scripts on tiny settings, so that they keep working (their real runs are long)."""
import csv
import importlib
import json
import math
import os
import subprocess
import sys

import pytest
import torch
from testing import favourite_label_users

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MULAN = os.path.join(ROOT, "..", "shared", "data", "mulan")


@pytest.mark.skipif(not os.path.isdir(MULAN), reason="../shared/data/mulan not present")
def test_multilabel_table_runs(tmp_path):
    cmd = [sys.executable, os.path.join(ROOT, "benchmarks", "multilabel_table.py"), "--datasets", "emotions",
           "--models", "linear", "--losses", "zlpr,sparsemax,softmax,bce", "--seeds", "1", "--max-epochs", "3",
           "--out", str(tmp_path)]
    subprocess.run(cmd, check=True, capture_output=True)
    rows = json.load(open(tmp_path / "multilabel_table.json"))["rows"]
    assert {r["loss"] for r in rows} == {"zlpr", "sparsemax", "softmax", "bce"}
    assert all(0 < r["micro_f1"] <= 100 and 0 <= r["macro_f1"] <= 100 for r in rows)
    assert (tmp_path / "multilabel_table.png").exists() and (tmp_path / "multilabel_table.md").exists()
    # --report states the rows' seed count (it printed --seeds' default, 5) and the kind of standard deviation
    subprocess.run(cmd[:2] + ["--report", "--out", str(tmp_path)], check=True, capture_output=True)
    head = (tmp_path / "multilabel_table.md").read_text().splitlines()[0]
    assert "population std (numpy's std, ddof 0) over 1 seeds" in head


def test_multilabel_report_without_rows(tmp_path):
    (tmp_path / "multilabel_table.csv").write_text("dataset,model,loss,micro_f1,micro_f1_std,macro_f1,macro_f1_std,"
                                                   "seeds\n")
    res = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "multilabel_table.py"), "--report", "--out",
                          str(tmp_path)], capture_output=True, text=True)
    assert res.returncode != 0 and "no rows" in res.stderr


@pytest.mark.parametrize("script,options,msg", [
    ("multilabel_table.py", ["--losses", "Softmax"], "--losses: unknown ['Softmax']"),  # trained as softmax before
    ("multilabel_table.py", ["--models", "cnn"], "--models: unknown ['cnn']"),
    ("xc_training.py", ["--methods", "unifrom"], "--methods: unknown ['unifrom']"),  # an AttributeError before
    ("xc_training.py", ["--datasets", "eurlex"], "--datasets: unknown ['eurlex']"),
    ("xc_training.py", ["--seconds", "0"], "--seconds must be > 0"),  # was the default budget
])
def test_benchmark_scripts_refuse_unknown_options(script, options, msg):
    res = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", script)] + options, capture_output=True,
                         text=True)
    assert res.returncode == 2 and msg in res.stderr


def test_fused_linear_memory_benchmark_runs(tmp_path):
    cmd = [sys.executable, os.path.join(ROOT, "benchmarks", "bench_fused_linear_zlpr.py"), "--device", "cpu",
           "--N", "256", "--H", "32", "--C", "4096", "--out", str(tmp_path)]
    out = subprocess.run(cmd, capture_output=True, text=True)
    assert "equal loss and gradients" in out.stdout and "[PASS] equal loss and gradients" in out.stdout
    assert (tmp_path / "fused_linear_zlpr_cpu.csv").exists()


def benchmark_module(name):
    """Imports benchmarks/<name>.py (the benchmark folder is not a package)."""
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.pop(0)


def run_xc_training_quick(tmp_path, stem, *options):
    """benchmarks/xc_training.py --quick on the synthetic set with uniform and tree negatives: its results JSON."""
    cmd = [sys.executable, os.path.join(ROOT, "benchmarks", "xc_training.py"), "--quick", "--datasets", "synthetic",
           "--methods", "uniform,tree", *options, "--out", str(tmp_path)]
    subprocess.run(cmd, check=True, capture_output=True)
    return json.load(open(tmp_path / f"{stem}.json"))["results"]["synthetic"]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc tunables")
def test_xc_training_learning_rate_grid_runs(tmp_path):
    """--lr-grid trains every sampled method at each rate and compares each at its best final P@1."""
    res = run_xc_training_quick(tmp_path, "xc_lr_grid_quick", "--lr-grid", "0.5,1")
    for method in ("uniform", "tree"):
        grid = res["lr_grid"][method]
        assert set(grid["final"]) == {"0.5", "1"}
        best = grid["final"][f"{grid['best_lr']:g}"]["p@1"]
        assert best == max(c["p@1"] for c in grid["final"].values()) == res["curves"][method][-1]["p@1"]
    assert res["uniform_final_p1"] == res["curves"]["uniform"][-1]["p@1"]
    assert (tmp_path / "xc_lr_grid_quick.csv").exists() and (tmp_path / "xc_lr_grid_quick.png").exists()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc tunables")
def test_xc_training_seeds_average_the_runs(tmp_path):
    """--seeds repeats every run per seed and compares the methods on the seed-mean curves."""
    res = run_xc_training_quick(tmp_path, "xc_training_seeds_quick", "--seeds", "0,1")
    for method in ("uniform", "tree"):
        runs = res["per_seed"][method]
        assert set(runs) == {"0", "1"}
        finals = [runs[s][-1]["p@1"] for s in ("0", "1")]
        last = res["curves"][method][-1]
        assert last["seeds"] == 2 and len(res["curves"][method]) == len(runs["0"]) == len(runs["1"])
        assert last["p@1"] == pytest.approx(sum(finals) / 2)
        assert last["p@1_std"] == pytest.approx(abs(finals[0] - finals[1]) / 2 ** 0.5)
    assert res["uniform_final_p1"] == res["curves"]["uniform"][-1]["p@1"]
    with open(tmp_path / "xc_training_seeds_quick.csv") as f:
        assert {r["seed"] for r in csv.DictReader(f)} == {"0", "1"}


def test_xc_training_sampled_losses_match_their_definitions():
    """xc_training's --loss: the paper's binary logistic loss and the sampled softmax of the model xi + log q,
    against float64 formulas written here, with accidental hits dropped (positives given) or kept (None)."""
    xc = benchmark_module("xc_training")
    g = torch.Generator().manual_seed(0)
    B, S, reg = 7, 5, 0.3
    xi = torch.randn(B, 1 + S, dtype=torch.float64, generator=g) * 3
    y = torch.randint(0, 40, (B,), generator=g)
    neg = torch.randint(0, 40, (B, S), generator=g)
    pos_lq = -torch.rand(B, dtype=torch.float64, generator=g) * 8
    neg_lq = -torch.rand(B, S, dtype=torch.float64, generator=g) * 8
    positives = torch.full((B, 3), -1)
    positives[:, 0] = y
    positives[2, 1] = 33
    neg[0, 1], neg[2, 3], neg[2, 4], neg[5, 0] = y[0], 33, y[2], y[5]  # four accidental hits, two in one row
    hit = (neg[:, :, None] == positives[:, None, :]).any(-1)
    assert int(hit.sum()) >= 4
    for drop in (True, False):
        keep = ~hit if drop else torch.ones_like(hit)
        # sampled softmax: log q cancels against the log-Q correction, the softmax runs over xi
        masked = torch.cat([xi[:, :1], xi[:, 1:].masked_fill(~keep, -math.inf)], 1)
        want = -torch.log_softmax(masked, 1)[:, 0].mean()
        got = xc.sampled_loss("sampled_softmax", xi, y, neg, pos_lq, neg_lq, positives if drop else None, reg)
        torch.testing.assert_close(got, want)
        # binary logistic: a mean over the S negatives (a dropped hit counts 0) and the regulariser on xi + log q
        neg_term = (-torch.nn.functional.logsigmoid(-xi[:, 1:]) + reg * (xi[:, 1:] + neg_lq) ** 2) * keep
        want = (-torch.nn.functional.logsigmoid(xi[:, 0]) + reg * (xi[:, 0] + pos_lq) ** 2
                + neg_term.sum(1) / S).mean()
        got = xc.sampled_loss("binary_logistic", xi, y, neg, pos_lq, neg_lq, positives if drop else None, reg)
        torch.testing.assert_close(got, want)


def test_xc_training_tree_fit_rows():
    """--tree-fit-rows: the examples a tree is fitted on, with their features and labels (an example without labels
    kept)."""
    import torch

    xc_training = benchmark_module("xc_training")
    d = xc_training.XCData(torch.arange(6.0).view(3, 2), torch.tensor([0, 2, 2, 5]), torch.tensor([1, 4, 0, 2, 3]), 5)
    e = xc_training.subset(d, torch.tensor([1, 2]))
    assert e.features.tolist() == [[2.0, 3.0], [4.0, 5.0]] and e.indptr.tolist() == [0, 0, 3]
    assert e.indices.tolist() == [0, 2, 3] and e.num_labels == 5
    e = xc_training.subset(d, torch.tensor([0, 2]))
    assert e.indptr.tolist() == [0, 2, 5] and e.indices.tolist() == [1, 4, 0, 2, 3]
    rows = xc_training.fit_subset(10, 4, seed=0)
    assert rows.tolist() == sorted(set(rows.tolist())) and len(rows) == 4 and 0 <= rows.min() and rows.max() < 10
    assert xc_training.fit_subset(10, 0, seed=0) is None and xc_training.fit_subset(10, 10, seed=0) is None


def test_xc_training_summary_uses_uniform_best_when_it_falls_again():
    """A uniform curve whose P@1 peaks and falls before the budget ends: the speed-up against its final P@1 would
    flatter the other methods, so the summary also times them to uniform's best P@1 (linear interpolation)."""
    xc_training = benchmark_module("xc_training")

    def curve(points):
        return [{"seconds": t, "p@1": p} for t, p in points]
    curves = {"uniform": curve([(0, 0.0), (10, 0.5), (20, 0.7), (40, 0.6)]),
              "tree": curve([(1, 0.4), (2, 0.6), (4, 0.8), (8, 0.9)])}
    res = xc_training.summarise("toy", curves)
    assert res["uniform_final_p1"] == 0.6 and res["uniform_best_p1"] == 0.7
    uniform, tree = res["methods"]["uniform"], res["methods"]["tree"]
    assert uniform["time_to_uniform_final_p1"] == pytest.approx(15.0)  # first crossing of 0.6, not the end
    assert uniform["time_to_uniform_best_p1"] == 20 and uniform["speedup_vs_uniform_best"] == 1.0
    assert tree["time_to_uniform_final_p1"] == 2 and tree["speedup_vs_uniform"] == pytest.approx(7.5)
    assert tree["time_to_uniform_best_p1"] == pytest.approx(3.0)
    assert tree["speedup_vs_uniform_best"] == pytest.approx(20 / 3)


def test_benchmark_processes_get_the_allocator_settings(tmp_path):
    """Benchmark scripts re-execute themselves with the suite's malloc thresholds (read by glibc at start-up) and
    huge pages; settings already in the environment, such as an empty GLIBC_TUNABLES, are kept."""
    import platform

    if platform.libc_ver()[0] != "glibc":
        pytest.skip("not glibc")
    script = tmp_path / "probe.py"
    script.write_text("import sys\nsys.path.insert(0, %r)\nimport common\ncommon.setup_cpu_process()\n"
                      "print(common.allocator_settings())\n" % os.path.join(ROOT, "benchmarks"))
    env = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", "THP_MEM_ALLOC_ENABLE")}
    tuned = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, check=True).stdout
    assert tuned.strip() == "THP_MEM_ALLOC_ENABLE=1, malloc thresholds 1 GiB"
    env["GLIBC_TUNABLES"] = ""
    default = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, check=True).stdout
    assert default.strip() == "THP_MEM_ALLOC_ENABLE=1, default malloc"


def test_benchmark_tables_with_host_times(tmp_path):
    """CUDA rows carry the host's launch time beside the GPU time: the tables show it, `ratio` compares GPU times
    and `loop_ratio` the longer of the two per call; CPU rows (no host time) keep the plain table."""
    common = benchmark_module("common")

    def row(provider, ms, host):
        return dict(provider=provider, dtype="float32", shape="8x8", mode="fwd+bwd", median_ms=ms, host_ms=host,
                    gbs=1.0, pct_copy_bw=1.0)

    rows = [row("torchxc", 0.01, 0.2), row("base", 0.5, 0.3)]
    key = dict(dtype="float32", shape="8x8", mode="fwd+bwd")
    assert common.ratio(rows, "base", **key) == pytest.approx(50.0)
    assert common.loop_ratio(rows, "base", **key) == pytest.approx(2.5)
    common.write_markdown(str(tmp_path / "gpu.md"), rows, ["base"], "header")
    text = (tmp_path / "gpu.md").read_text()
    assert "| host ms |" in text and "| float32 | 8x8 | 0.010 | 0.200 | 1.0 | 50.0x |" in text
    cpu = [dict(r, host_ms=None) for r in rows]
    assert common.loop_ratio(cpu, "base", **key) is None
    common.write_markdown(str(tmp_path / "cpu.md"), cpu, ["base"], "header")
    text = (tmp_path / "cpu.md").read_text()
    assert "host ms" not in text and "| float32 | 8x8 | 0.010 | 1.0 | 50.0x |" in text


def test_temporal_sets_table_runs(tmp_path):
    """The table script on a tiny dataset: frequency variants run once (they have no seed), LANET once per seed,
    and the CSV / markdown / JSON / PNG come out."""
    data = favourite_label_users(0, 8, {"train": 24, "validate": 6, "test": 6}, max_events=4)
    (tmp_path / "Tiny.json").write_text(json.dumps(data))
    out = tmp_path / "out"
    cmd = [sys.executable, os.path.join(ROOT, "benchmarks", "temporal_sets_table.py"), "--data", str(tmp_path),
           "--datasets", "Tiny", "--variants", "frequency,frequency_tr,lanet_softmax_pc_tr", "--seeds", "2",
           "--epochs", "1", "--out", str(out)]
    subprocess.run(cmd, check=True, capture_output=True)
    res = json.load(open(out / "temporal_sets.json"))
    seeds = {r["variant"]: r["seeds"] for r in res["summary"]}
    assert seeds == {"frequency": 1, "frequency_tr": 1, "lanet_softmax_pc_tr": 2}
    assert all(0 <= r["recall@10"] <= 1 for r in res["runs"])
    for ext in ("csv", "md", "png"):
        assert (out / f"temporal_sets.{ext}").exists()
    assert not (out / "temporal_sets.partial.csv").exists()  # a finished run removes its resume file
    # --report summarises a partial run and keeps its resume file; with none it writes an empty table
    (out / "temporal_sets.csv").rename(out / "temporal_sets.partial.csv")
    report = cmd[:2] + ["--data", str(tmp_path), "--datasets", "Tiny", "--out", str(out), "--report"]
    subprocess.run(report, check=True, capture_output=True)
    assert (out / "temporal_sets.partial.csv").exists()
    assert len(json.load(open(out / "temporal_sets.json"))["runs"]) == len(res["runs"])
    empty = tmp_path / "empty"
    subprocess.run(report[:-3] + ["--out", str(empty), "--report"], check=True, capture_output=True)
    assert json.load(open(empty / "temporal_sets.json"))["runs"] == []
    # the AUC breakdown, run in two parts: --append keeps the first part's rows
    auc = [sys.executable, os.path.join(ROOT, "benchmarks", "temporal_sets_auc.py"), "--data", str(tmp_path),
           "--dataset", "Tiny", "--out", str(out)]
    subprocess.run(auc + ["--variants", "frequency,frequency_tr"], check=True, capture_output=True)
    first = json.load(open(out / "temporal_sets_auc.json"))["rows"]
    subprocess.run(auc + ["--variants", "frequency_tr,transformer", "--epochs", "1", "--append"], check=True,
                   capture_output=True)
    rows = json.load(open(out / "temporal_sets_auc.json"))["rows"]
    assert [r["variant"] for r in rows] == ["frequency", "frequency_tr", "transformer"]
    assert rows[:2] == first  # frequency is deterministic: the rerun frequency_tr row is the same
    assert "| transformer |" in (out / "temporal_sets_auc.md").read_text()


def test_a_provider_that_raises_is_a_missed_target(capsys):
    """A torchxc op (or a baseline a target is measured against) that raises inside the timer drops its ratios:
    print_targets reports it as a MISS, so `make bench` fails instead of passing on the remaining targets."""
    import torch
    common = benchmark_module("common")
    common.FAILURES.clear()

    def broken():
        raise ValueError("broken op")

    res = common.Timer(torch.device("cpu"), budget_s=0.01, min_reps=1).compare({"torchxc": broken,
                                                                              "base": lambda: torch.ones(4).sum()})
    assert res["torchxc"] is None and res["base"] is not None
    assert common.print_targets([]) is False
    assert "[MISS] torchxc ran: failed: broken op" in capsys.readouterr().out
    assert common.print_targets([("x", True, "1x")]) is True  # reported once


def test_tree_sampler_targets_with_a_failed_baseline(capsys):
    """A failed baseline leaves no row: bench_tree_sampler's check_targets still prints its lines and the MISS."""
    import torch
    common, bts = benchmark_module("common"), benchmark_module("bench_tree_sampler")
    common.FAILURES[:] = [("multinomial", "out of memory")]
    rows = [dict(C=2 ** 18, provider="torchxc", draws_per_s=1e8), dict(C=2 ** 18, provider="pytorch_levels",
                                                                      draws_per_s=1e6)]
    assert bts.check_targets(rows, torch.device("cpu")) is False
    out = capsys.readouterr().out
    assert "[PASS] CPU draws/s >= 20x" in out and "[MISS] multinomial ran: failed: out of memory" in out
    assert not common.FAILURES


def test_temporal_sets_ensemble_runs(tmp_path):
    """The seed-ensemble script on a tiny dataset: each seed trained once and cached, the ensemble row is the
    metrics of the mean of the cached logits, and a second call evaluates from the cache without training."""
    from torchxc.temporal_sets import ndcg_at_k, recall_at_k

    data = favourite_label_users(0, 8, {"train": 24, "validate": 6, "test": 6}, max_events=4)
    (tmp_path / "Tiny.json").write_text(json.dumps(data))
    out, cache = tmp_path / "out", tmp_path / "cache"
    cmd = [sys.executable, os.path.join(ROOT, "benchmarks", "temporal_sets_ensemble.py"), "--data", str(tmp_path),
           "--dataset", "Tiny", "--variant", "lanet_softmax_pc_tr", "--seeds", "0,1", "--epochs", "1",
           "--cache", str(cache), "--out", str(out)]
    subprocess.run(cmd[:-2] + ["--seeds", "1", "--train-only"], check=True, capture_output=True)
    assert sorted(os.listdir(cache)) == ["Tiny_lanet_softmax_pc_tr_seed1_epochs1_tokens128.pt"]
    subprocess.run(cmd, check=True, capture_output=True)
    files = sorted(os.listdir(cache))
    mtimes = [os.path.getmtime(cache / f) for f in files]
    rows = list(csv.DictReader(open(out / "temporal_sets_ensemble_Tiny_lanet_softmax_pc_tr.csv")))
    assert [r["members"] for r in rows] == ["1", "1", "", "2"]
    import torch

    runs = [torch.load(cache / f) for f in files]
    assert not torch.equal(runs[0]["test"], runs[1]["test"])  # two seeds, two models
    mean = (runs[0]["test"] + runs[1]["test"]) / 2
    target, unseen = runs[0]["test_target"], runs[0]["test_unseen"]
    assert float(rows[3]["ndcg@10"]) == pytest.approx(ndcg_at_k(mean, target, 10, unseen), abs=1e-9)
    assert float(rows[3]["recall@10"]) == pytest.approx(recall_at_k(mean, target, 10, unseen), abs=1e-9)
    assert float(rows[0]["ndcg@10"]) == pytest.approx(runs[0]["result"]["ndcg@10"], abs=1e-9)
    subprocess.run(cmd, check=True, capture_output=True)  # from the cache: nothing retrained
    assert [os.path.getmtime(cache / f) for f in files] == mtimes
    assert list(csv.DictReader(open(out / "temporal_sets_ensemble_Tiny_lanet_softmax_pc_tr.csv"))) == rows
    assert "ensemble of seeds 0,1" in (out / "temporal_sets_ensemble_Tiny_lanet_softmax_pc_tr.md").read_text()
    # a cached seed made from another data file (here: the same file touched later) is trained again
    os.utime(tmp_path / "Tiny.json", (1e9, 1e9))
    subprocess.run(cmd[:-2] + ["--seeds", "1", "--train-only"], check=True, capture_output=True)
    assert os.path.getmtime(cache / files[1]) != mtimes[1] and os.path.getmtime(cache / files[0]) == mtimes[0]
    bad = subprocess.run(cmd[:-2] + ["--seeds", "0,0"], capture_output=True, text=True)
    assert bad.returncode == 2 and "give one or more distinct seeds, got '0,0'" in bad.stderr


def test_temporal_sets_recency_at_r_1_is_personal_frequency(tmp_path):
    """benchmarks/temporal_sets_recency.py: with r = 1 every past event counts 1, so its scores rank as personal
    frequency does (the same metrics); r = 0.5 ranks differently on some user of this set; bad --decays are
    refused."""
    import torch
    from torchxc.temporal_sets import ndcg_at_k, personal_frequency_scores, recall_at_k
    from torchxc.temporal_sets.train import _targets, load

    data = favourite_label_users(1, 12, {"train": 30, "validate": 8, "test": 40}, max_events=6)
    path = tmp_path / "Tiny.json"
    path.write_text(json.dumps(data))
    out = tmp_path / "recency.csv"
    subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "temporal_sets_recency.py"), "--data", str(path),
                    "--decays", "1,0.5", "--out", str(out)], check=True, capture_output=True)
    rows = {(r["split"], float(r["r"])): r for r in csv.DictReader(open(out))}
    sets = load(str(path))
    target, unseen = _targets(sets.test, sets.num_labels)
    freq = personal_frequency_scores(sets.test, sets.popularity)
    assert float(rows["test", 1.0]["recall@10"]) == pytest.approx(recall_at_k(freq, target, 10, unseen))
    assert float(rows["test", 1.0]["ndcg@10"]) == pytest.approx(ndcg_at_k(freq, target, 10, unseen))
    recency = benchmark_module("temporal_sets_recency")
    seqs = {str(u): s for u, s in data["test"].items()}
    index = {v: i for i, v in enumerate(sets.vocab)}
    half = recency.recency_scores(sets.test, seqs, index, sets.popularity, 0.5)
    assert not torch.equal(half.argsort(dim=1, descending=True, stable=True),
                           freq.double().argsort(dim=1, descending=True, stable=True))
    bad = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "temporal_sets_recency.py"), "--data",
                          str(path), "--decays", "0"], capture_output=True, text=True)
    assert bad.returncode == 2 and "--decays must lie in (0, 1]" in bad.stderr


def test_temporal_sets_neighbours_rows_are_the_cli_frequency_metrics(tmp_path):
    """benchmarks/temporal_sets_neighbours.py: its k = 0 row is plain personal frequency and each (k, beta) row gives
    the metrics of personal_frequency_scores with that NeighbourPrior (the CLI's --model frequency --neighbours K at
    beta 1); a neighbour tie-break changes some ranking of this set; bad --k is refused."""
    from torchxc.temporal_sets import NeighbourPrior, personal_frequency_scores
    from torchxc.temporal_sets.__main__ import main as cli_main
    from torchxc.temporal_sets.train import load

    data = favourite_label_users(1, 12, {"train": 30, "validate": 8, "test": 40}, max_events=6)
    path = tmp_path / "Tiny.json"
    path.write_text(json.dumps(data))
    out = tmp_path / "neighbours.csv"
    script = os.path.join(ROOT, "benchmarks", "temporal_sets_neighbours.py")
    subprocess.run([sys.executable, script, "--data", str(path), "--k", "3,10", "--beta", "1,5", "--out", str(out)],
                   check=True, capture_output=True)
    rows = {(r["split"], int(r["k"]), float(r["beta"])): r for r in csv.DictReader(open(out))}
    assert len(rows) == 10
    for k, extra in ((0, []), (3, ["--neighbours", "3"]), (10, ["--neighbours", "10"])):
        res = tmp_path / f"cli{k}.json"
        assert cli_main(["--data", str(path), "--model", "frequency", "--output", str(res)] + extra) == 0
        cli = json.loads(res.read_text())
        row = rows["test", k, 1.0 if k else 0.0]
        for key in ("recall@10", "ndcg@10", "phr@10"):
            assert float(row[key]) == pytest.approx(cli[key]), (k, key)
    sets = load(str(path))
    plain = personal_frequency_scores(sets.test, sets.popularity)
    near = personal_frequency_scores(sets.test, sets.popularity, neighbours=NeighbourPrior(sets, k=3))
    assert not torch.equal(plain.argsort(dim=1, descending=True, stable=True),
                           near.argsort(dim=1, descending=True, stable=True))
    bad = subprocess.run([sys.executable, script, "--data", str(path), "--k", "0"], capture_output=True, text=True)
    assert bad.returncode == 2 and "--k must be > 0" in bad.stderr


def test_xc_training_compare_times_curves_against_a_reference(tmp_path):
    """benchmarks/xc_training_compare.py: curves of separate runs timed against one of them (linear interpolation),
    and clear errors for a bad curve spec, a missing method and an unknown reference."""
    cmp = benchmark_module("xc_training_compare")

    def run(path, **curves):
        pts = {m: [dict(seconds=t, steps=0, epochs=0.0, **{"p@1": p, "p@5": 0.0, "test_ll": -1.0})
                   for t, p in c] for m, c in curves.items()}
        info = dict(num_labels=5, train_pairs=9)
        path.write_text(json.dumps(dict(results=dict(synthetic=dict(info=info, curves=pts)))))
        return str(path)

    a = run(tmp_path / "a.json", uniform=[(0, 0.0), (10, 0.5), (100, 0.6), (200, 0.55)])
    b = run(tmp_path / "b.json", tree=[(2, 0.3), (4, 0.7)])
    res = cmp.compare([("u", a, "uniform"), ("t", b, "tree")], "synthetic", "u")
    assert res["reference_final_p1"] == 0.55 and res["reference_best_p1"] == 0.6
    t = res["methods"]["t"]
    assert t["time_to_reference_final_p1"] == pytest.approx(2 + 2 * 0.25 / 0.4)
    assert t["time_to_reference_best_p1"] == pytest.approx(2 + 2 * 0.3 / 0.4)
    assert t["speedup_vs_reference_final"] == pytest.approx(55 / (2 + 2 * 0.25 / 0.4))  # u first had 0.55 at 55 s
    assert t["speedup_vs_reference_best"] == pytest.approx(100 / (2 + 2 * 0.3 / 0.4))
    assert res["methods"]["u"]["speedup_vs_reference_best"] == 1.0
    with pytest.raises(SystemExit, match="not one of the labels"):
        cmp.compare([("u", a, "uniform")], "synthetic", "tree")
    with pytest.raises(SystemExit, match="no 'tree' curve"):
        cmp.compare([("u", a, "tree")], "synthetic", "u")
    with pytest.raises(Exception, match="LABEL=FILE.json:METHOD"):
        cmp.parse_curve("u:a.json")
    cmp.main(["--reference", "u", "--out", str(tmp_path / "out" / "cmp"), f"u={a}:uniform", f"t={b}:tree"])
    assert json.load(open(tmp_path / "out" / "cmp.json"))["results"]["methods"]["t"]["final"]["p@1"] == 0.7
