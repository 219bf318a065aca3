"""Smoke tests of the experiment scripts on tiny settings, so that they keep working (their real runs are long)."""
import json
import os
import subprocess
import sys

import pytest

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


def test_fused_linear_memory_benchmark_runs(tmp_path):
    cmd = [sys.executable, os.path.join(ROOT, "benchmarks", "bench_fused_linear_zlpr.py"), "--device", "cpu",
           "--N", "256", "--H", "32", "--C", "4096", "--out", str(tmp_path)]
    out = subprocess.run(cmd, capture_output=True, text=True)
    assert "equal loss and gradients" in out.stdout and "[PASS] equal loss and gradients" in out.stdout
    assert (tmp_path / "fused_linear_zlpr_cpu.csv").exists()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc tunables")
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
