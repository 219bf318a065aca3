"""The benchmark suite: every benchmarks/bench_*.py against its pure-PyTorch baselines, on the CPU and, when a
GPU is present, on CUDA. Each script prints its table, writes its results (CSV, and a PNG and markdown table
where it has them: sparsemax_<device>.*, zlpr_<device>.*, fused_linear_zlpr_<device>.csv, tree_sampler_<device>.*
and tree_log_prob_all_<device>.csv) to benchmarks/results/ (--quick: benchmarks/results/quick/; --out: there),
and checks the speed targets of its op; this script exits non-zero if a target was missed.

    python benchmarks/run_all.py [--device cpu|cuda|all] [--quick] [--out DIR]

On the CPU the suite sets THP_MEM_ALLOC_ENABLE=1 (PyTorch's allocator then backs large tensors with huge pages)
and glibc's malloc thresholds to 1 GiB (freed tensors are reused instead of being returned to the kernel and
faulted in again on the next call; see common.MALLOC_TUNABLES). Both remove page-fault time from allocating
outputs and apply to every provider alike. Pass --no-thp / --default-malloc to measure without them (settings
already in the environment win: THP_MEM_ALLOC_ENABLE=1 exported stays on).
"""
import argparse
import glob
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", choices=["cpu", "cuda", "all"], default="all")
    ap.add_argument("--quick", action="store_true",
                    help="smaller cases and budgets; results under benchmarks/results/quick/ unless --out is given")
    ap.add_argument("--out", default=None, help="results folder (default benchmarks/results/)")
    ap.add_argument("--no-thp", action="store_true", help="do not enable huge pages for large CPU tensors")
    ap.add_argument("--default-malloc", action="store_true", help="keep glibc's default malloc thresholds")
    args = ap.parse_args()  # per-script options (--budget, --N, ...): run that script itself
    sys.path.insert(0, HERE)
    from common import setup_cpu_process

    setup_cpu_process(thp=not args.no_thp, tuned_malloc=not args.default_malloc)  # may re-execute this script
    failed = []
    for path in sorted(glob.glob(os.path.join(HERE, "bench_*.py"))):
        name = os.path.splitext(os.path.basename(path))[0]
        argv = ["--device", args.device] + (["--quick"] if args.quick else []) + (["--out", args.out] if args.out else [])
        start = time.time()
        print(f"\n######## {name} {' '.join(argv)}", flush=True)
        # one process per benchmark (the allocator settings above are inherited through the environment): a
        # benchmark starts with a fresh heap, thread pools and compiled-code caches instead of the state the
        # previous one left (the fused-linear benchmark alone leaves a 5 GB heap behind; in one process the
        # sparsemax and sampler ratios measured after it came out 5-10% lower than standalone)
        code = subprocess.run([sys.executable, path] + argv).returncode
        if code != 0:
            failed.append(name)
        print(f"######## {name}: {time.time() - start:.0f}s", flush=True)
    if failed:
        print(f"\nspeed targets missed (or a benchmark failed) in: {', '.join(failed)}")
        return 1
    print("\nall speed targets met")
    return 0


if __name__ == "__main__":
    sys.exit(main())
