"""Shared benchmark machinery: timing on CPU and CUDA, the machine's bandwidth ceiling, CSV and plots.

Timing: CUDA work is timed with CUDA events around each call, with the L2 cache flushed before every call
(so repeated calls do not read their input from cache), reporting the median and 20th/80th percentiles. Before
each call the GPU is held by a spin kernel (torch.cuda._sleep) for longer than the host needs to launch the call,
so the events measure the GPU's time for the work, as in a training loop whose host runs ahead, not the host's
launch time (which bounds calls of a few microseconds: a forward+backward through autograd costs the host 100 us
or more). The host's launch time is reported beside it (`host_ms`, time to return from the call).
CPU work is timed with perf_counter on the same schedule but without a cache flush: a CPU's last-level cache can
hold hundreds of MB (480 MB on the Xeon VM) and writing twice that before every call would cost far more than the
calls themselves. So CPU timings are warm-cache: inputs that fit in the caches are read from them, for every
provider alike, and a small shape's effective GB/s can exceed the copy bandwidth measured on a 256 MB tensor.
Slow providers get fewer repeats: each measurement repeats until `budget_s` has passed (at least `min_reps`, at
most `max_reps` times).
"""
import csv
import functools
import os
import platform
import statistics
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple

import torch

RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
# --quick runs write here unless --out says otherwise, so that a smoke test never overwrites the recorded results
QUICK_RESULTS_DIR = os.path.join(RESULTS_DIR, "quick")


def check_list_options(ap, args, known: dict) -> None:
    """Comma-separated list options (e.g. --datasets a,b) whose items must be known names: an unknown one is a usage
    error (ap.error) instead of a misspelling that runs something else or crashes later."""
    for option, names in known.items():
        unknown = [v for v in getattr(args, option).split(",") if v not in names]
        if unknown:
            ap.error(f"--{option}: unknown {unknown}; choose from {','.join(names)}")


def output_dir(out, quick: bool) -> str:
    """--out as given, else the recorded results' folder (QUICK_RESULTS_DIR for --quick); created."""
    path = out if out is not None else (QUICK_RESULTS_DIR if quick else RESULTS_DIR)
    os.makedirs(path, exist_ok=True)
    return path

# glibc malloc settings of the benchmark processes: keep freed memory instead of returning it to the kernel.
# With glibc's defaults a large tensor is mmap'ed (or the heap is trimmed after it is freed), so every call's
# output is faulted in again page by page: about 500 page faults, 1.4 ms, per 4 MB output on the 2-core VM,
# more than the sparsemax kernel itself at 8192x128. They fall on every provider alike.
MALLOC_TUNABLES = "glibc.malloc.mmap_threshold=1073741824:glibc.malloc.trim_threshold=1073741824"


def setup_cpu_process(thp: bool = True, tuned_malloc: bool = True) -> None:
    """Gives this benchmark process the suite's CPU allocator settings, re-executing it if needed (glibc reads its
    tunables at start-up): THP_MEM_ALLOC_ENABLE=1 (PyTorch backs large tensors with huge pages) and
    GLIBC_TUNABLES=MALLOC_TUNABLES. Settings already in the environment are kept, so `GLIBC_TUNABLES=` (empty)
    or `THP_MEM_ALLOC_ENABLE=0` measure with the defaults."""
    import sys

    os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1" if thp else "0")
    if "GLIBC_TUNABLES" in os.environ or platform.libc_ver()[0] != "glibc":
        return
    os.environ["GLIBC_TUNABLES"] = MALLOC_TUNABLES if tuned_malloc else ""
    if tuned_malloc:
        sys.stdout.flush()
        os.execv(sys.executable, [sys.executable] + sys.argv)


def allocator_settings() -> str:
    """The CPU allocator settings this process runs with (for tables and CSV rows)."""
    tunables = os.environ.get("GLIBC_TUNABLES", "")
    malloc = "malloc thresholds 1 GiB" if tunables == MALLOC_TUNABLES else (tunables or "default malloc")
    return f"THP_MEM_ALLOC_ENABLE={os.environ.get('THP_MEM_ALLOC_ENABLE', '0')}, {malloc}"


@dataclass
class Measurement:
    median_ms: float
    p20_ms: float
    p80_ms: float
    reps: int
    host_ms: Optional[float] = None  # CUDA: median host time to launch the call (return from it, no sync)


def _measurement(times: List[float], hosts: List[Optional[float]]) -> Measurement:
    times = sorted(times)
    hosts = [h for h in hosts if h is not None]
    return Measurement(statistics.median(times), _percentile(times, 0.2), _percentile(times, 0.8), len(times),
                       statistics.median(hosts) if hosts else None)


def sleep_cycles_per_ms(device: torch.device) -> float:
    """Clock cycles of torch.cuda._sleep per millisecond on this GPU (its clock at load)."""
    with torch.cuda.device(device):
        torch.cuda._sleep(1000)
        begin = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        cycles = 20_000_000
        begin.record()
        torch.cuda._sleep(cycles)
        end.record()
        end.synchronize()
        return cycles / begin.elapsed_time(end)


def _percentile(sorted_vals: List[float], q: float) -> float:
    idx = min(len(sorted_vals) - 1, max(0, int(round(q * (len(sorted_vals) - 1)))))
    return sorted_vals[idx]


_warmed = set()


def warm_gpu(device: torch.device, seconds: float = 0.5) -> None:
    """Keeps the GPU busy for a moment before the first measurement of a process, so that no case is timed while
    the clocks ramp up from idle (an H200 idles at 345 MHz)."""
    if device in _warmed:
        return
    _warmed.add(device)
    a = torch.randn(4096, 4096, device=device)
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        for _ in range(10):
            a @ a
        torch.cuda.synchronize(device)


class Timer:
    def __init__(self, device: torch.device, budget_s: float = 0.5, min_reps: int = 3, max_reps: int = 200):
        self.device = device
        self.budget_s = budget_s
        self.min_reps = min_reps
        self.max_reps = max_reps
        self._flush = None
        if device.type == "cuda":
            # Larger than any L2 so far (H100: 50 MB, H200: 60 MB).
            self._flush = torch.empty(256 * 1024 * 1024, dtype=torch.int8, device=device)
            warm_gpu(device)
            self._cycles_per_ms = sleep_cycles_per_ms(device)

    def _warm_up(self, fn: Callable[[], object], setup: Optional[Callable[[], None]] = None) -> float:
        """Two untimed calls (compilation, caches, allocator). Returns the shorter host time of the two (ms), from
        the call to its return on an idle GPU, which sizes the spin before each timed CUDA call."""
        launch = []
        for _ in range(2):
            if setup:
                setup()
            self.sync()
            t = time.perf_counter()
            fn()
            launch.append((time.perf_counter() - t) * 1e3)
        self.sync()
        return min(launch)

    def __call__(self, fn: Callable[[], object], setup: Optional[Callable[[], None]] = None) -> Measurement:
        launch_ms = self._warm_up(fn, setup)
        times, hosts = [], []
        start = time.perf_counter()
        while len(times) < self.max_reps and (
            len(times) < self.min_reps or time.perf_counter() - start < self.budget_s
        ):
            if setup:
                setup()
            ms, host_ms = self._time_once(fn, launch_ms)
            times.append(ms)
            hosts.append(host_ms)
        return _measurement(times, hosts)

    def compare(self, fns: Dict[str, Callable[[], object]], rounds: int = 4,
                setups: Optional[Dict[str, Callable[[], None]]] = None,
                optional: Tuple[str, ...] = ()) -> Dict[str, Optional[Measurement]]:
        """Times several providers of the same computation in interleaved rounds (each round gives every
        provider a window of `budget_s / rounds` seconds, in a rotating order), so that a slow spell of the
        machine hits all providers alike instead of one. A provider that raises gets None, and is a FAILURE (a
        MISS in print_targets) unless it is `optional` (a reference no target is measured against, e.g. a
        torch.compile'd baseline on a machine where compiling is not possible)."""
        setups = setups or {}
        samples: Dict[str, List[float]] = {name: [] for name in fns}
        hosts: Dict[str, List[Optional[float]]] = {name: [] for name in fns}
        launch_ms: Dict[str, float] = {}
        for name, fn in fns.items():  # warm-up
            try:
                launch_ms[name] = self._warm_up(fn, setups.get(name))
            except Exception as e:  # noqa: BLE001 -- reported, and a MISS in print_targets
                message = str(e).splitlines()[0][:100] if str(e) else type(e).__name__
                print(f"  {name}: failed ({message})")
                if name not in optional:
                    FAILURES.append((name, message))
        names = [n for n in fns if n in launch_ms]
        window = self.budget_s / rounds
        for r in range(rounds):
            order = names[r % max(len(names), 1):] + names[: r % max(len(names), 1)]
            cap = self.max_reps * (r + 1) // rounds  # reps spread over the rounds (a fast provider spent them all in
            for name in order:  # the first round, and then no slow spell could reach it)
                start = time.perf_counter()
                while len(samples[name]) < cap and (
                    time.perf_counter() - start < window or len(samples[name]) <= r
                ):
                    if name in setups:
                        setups[name]()
                    ms, host_ms = self._time_once(fns[name], launch_ms[name])
                    samples[name].append(ms)
                    hosts[name].append(host_ms)
        return {name: _measurement(samples[name], hosts[name]) if samples[name] else None for name in fns}

    def sync(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def _time_once(self, fn, launch_ms: float) -> Tuple[float, Optional[float]]:
        """(time of one call, host time to launch it) in ms; the host time only on CUDA."""
        if self.device.type == "cuda":
            # Hold the GPU for twice the host's time for this call plus 0.2 ms, so that the whole call is queued
            # before the flush and the first event run. A call that waits for the GPU itself (a host sync inside)
            # is timed with that wait, as it must be.
            begin = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            torch.cuda._sleep(int((0.2 + 2 * launch_ms) * self._cycles_per_ms))
            self._flush.zero_()
            begin.record()
            t = time.perf_counter()
            fn()
            host_ms = (time.perf_counter() - t) * 1e3
            end.record()
            end.synchronize()
            return begin.elapsed_time(end), host_ms
        t = time.perf_counter()
        fn()
        return (time.perf_counter() - t) * 1e3, None


def copy_bandwidth_gbs(device: torch.device, nbytes: int = 1 << 30) -> float:
    """The machine's practical memory bandwidth: a large tensor copy, counting bytes read plus written."""
    n = nbytes // 4
    if device.type == "cpu":
        n = min(n, 1 << 26)  # 256 MB: well outside the CPU caches
    src = torch.randn(n, device=device)
    dst = torch.empty_like(src)
    timer = Timer(device, budget_s=0.5, min_reps=5)
    m = timer(lambda: dst.copy_(src))
    return 2 * src.numel() * src.element_size() / (m.median_ms * 1e-3) / 1e9


@functools.lru_cache(maxsize=None)
def cpu_model() -> str:
    """The CPU's model name and its widest x86 vector extension that torchxc's kernels use (AVX-512 or AVX2; results
    differ by both), e.g. "AMD EPYC, AVX2", followed by any kernel switch (TORCHXC_*_NO_AVX2 / _NO_AVX512) set in
    the environment when this was first called (the kernels read them when torchxc is imported)."""
    name, flags = "", set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name" and not name:
                    name = " ".join(value.split())
                elif key == "flags" and not flags:
                    flags = set(value.split())
                if name and flags:
                    break
    except OSError:
        pass
    name = name or platform.processor() or platform.machine()
    isa = "AVX-512" if {"avx512f", "avx512bw", "avx512vl"} <= flags else "AVX2" if {"avx2", "fma"} <= flags else ""
    switches = [f"{k}={v}" for k, v in sorted(os.environ.items())
                if k.startswith("TORCHXC_") and ("_NO_AVX" in k) and v not in ("", "0")]
    return ", ".join([name] + ([isa] if isa else []) + switches)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{cpu_model()} ({torch.get_num_threads()} threads)"


def write_csv(path: str, rows: List[Dict]) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    keys = list(rows[0].keys()) if rows else []
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)


def fmt_ratio(x: Optional[float]) -> str:
    if x is None:
        return "-"
    return f"{x:.1f}x" if x >= 10 else f"{x:.2f}x"


# Datasheet memory bandwidth (GB/s) of GPUs we have measured on.
DATASHEET_GBS = {"H100 80GB HBM3": 3350.0, "H100 PCIe": 2000.0, "H200": 4800.0}


def datasheet_gbs(device: torch.device) -> Optional[float]:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, gbs in DATASHEET_GBS.items():
        if key in name:
            return gbs
    return None


def lookup(rows: List[Dict], **key) -> Optional[Dict]:
    for r in rows:
        if all(r[k] == v for k, v in key.items()):
            return r
    return None


def ratio(rows: List[Dict], base: str, main: str = "torchxc", **key) -> Optional[float]:
    """Time of `base` over time of `main` for the case `key` (above 1: main is faster)."""
    a = lookup(rows, provider=main, **key)
    b = lookup(rows, provider=base, **key)
    return (b["median_ms"] / a["median_ms"]) if a and b else None


def loop_ratio(rows: List[Dict], base: str, main: str = "torchxc", **key) -> Optional[float]:
    """Like ratio, for calls back to back with nothing else to hide the host: each call costs the longer of its GPU
    time and its host launch time (CUDA rows only)."""
    a = lookup(rows, provider=main, **key)
    b = lookup(rows, provider=base, **key)
    if not a or not b or a.get("host_ms") is None or b.get("host_ms") is None:
        return None
    return max(b["median_ms"], b["host_ms"]) / max(a["median_ms"], a["host_ms"])


def run_suite(op: str, device: torch.device, cases, modes, make_callables, nbytes, budget_s: float, csv_path: str,
              baselines: List[str], main: str = "torchxc", optional: Tuple[str, ...] = ()) -> List[Dict]:
    """Times every provider on every (dtype, shape) case and mode, in interleaved rounds, prints the table and
    writes the CSV, a Markdown summary (mode fwd+bwd) and the plot.

    make_callables(dtype_name, shape, mode) -> {provider: zero-argument callable}; `optional` providers may fail
    without failing the suite (Timer.compare)
    nbytes(dtype_name, shape, mode, provider) -> the bytes the computation must move at least (for effective GB/s;
    per provider, for one whose inputs are another representation, e.g. sparse labels)."""
    timer = Timer(device, budget_s=budget_s)  # per provider and measurement, spread over interleaved rounds
    copy_gbs = copy_bandwidth_gbs(device)
    sheet = datasheet_gbs(device)
    thp = allocator_settings() if device.type == "cpu" else "-"
    print(f"\n== {op} on {device_name(device)}: copy bandwidth {copy_gbs:.0f} GB/s"
          + (f", datasheet {sheet:.0f} GB/s" if sheet else "") + f", torch {torch.__version__}"
          + (f", {thp}" if device.type == "cpu" else ""))
    import torchxc

    try:
        from tqdm import tqdm
    except ImportError:
        tqdm = None
    jobs = [(dt, shape, mode) for dt, shape in cases for mode in modes]
    rows = []
    for dtype_name, shape, mode in (tqdm(jobs, desc=f"{op} {device.type}", leave=False) if tqdm else jobs):
        results = timer.compare(make_callables(dtype_name, shape, mode), optional=optional)
        for name, m in results.items():
            if m is None:
                continue
            gbs = nbytes(dtype_name, shape, mode, name) / (m.median_ms * 1e-3) / 1e9
            rows.append(dict(op=op, provider=name, dtype=dtype_name, shape="x".join(map(str, shape)), mode=mode,
                             median_ms=m.median_ms, p20_ms=m.p20_ms, p80_ms=m.p80_ms, reps=m.reps,
                             host_ms=m.host_ms, gbs=gbs,
                             pct_copy_bw=100 * gbs / copy_gbs, pct_datasheet_bw=(100 * gbs / sheet) if sheet else None,
                             device=device_name(device), copy_gbs=copy_gbs, thp=thp, torch=torch.__version__,
                             torchxc=torchxc.__version__))
        del results
        if device.type == "cuda":
            torch.cuda.empty_cache()
    write_csv(csv_path, rows)
    header = (f"{device_name(device)}, copy bandwidth {copy_gbs:.0f} GB/s, torch {torch.__version__}"
              + (f", {thp}" if device.type == "cpu" else ""))
    write_markdown(csv_path[:-4] + ".md", rows, baselines, header, main)
    print_table(rows, baselines, main)
    plot(rows, csv_path[:-4] + ".png", op, device_name(device), modes)
    print(f"wrote {csv_path} and the .md / .png beside it")
    return rows


def print_table(rows: List[Dict], baselines: List[str], main: str = "torchxc") -> None:
    host = any(r.get("host_ms") is not None for r in rows)
    head = (f"{'provider':15} {'dtype':9} {'shape':13} {'mode':8} {'ms':>9} " + (f"{'host ms':>9} " if host else "")
            + f"{'GB/s':>7} {'%copy':>6} " + " ".join(f"{'vs ' + b:>15}" for b in baselines))
    print(head)
    print("-" * len(head))
    for r in rows:
        if r["provider"] in baselines or r["provider"] == "copy":  # copy: a reference (x.clone()), not compared
            continue
        key = dict(dtype=r["dtype"], shape=r["shape"], mode=r["mode"])
        cells = [fmt_ratio(ratio(rows, b, r["provider"], **key)) for b in baselines]
        print(f"{r['provider']:15} {r['dtype']:9} {r['shape']:13} {r['mode']:8} {r['median_ms']:9.3f} "
              + (f"{r['host_ms']:9.3f} " if host else "") + f"{r['gbs']:7.1f} "
              f"{r['pct_copy_bw']:5.0f}% " + " ".join(f"{x:>15}" for x in cells))
    print(f"(ratios: baseline time / {main} time; above 1 means torchxc is faster"
          + ("; ms: GPU time, host ms: the host's time to launch the call" if host else "") + ")")


def write_markdown(path: str, rows: List[Dict], baselines: List[str], header: str, main: str = "torchxc",
                   mode: str = "fwd+bwd") -> None:
    """The `mode` rows of the main provider as a Markdown table (pasted into README.md)."""
    host = any(r.get("host_ms") is not None for r in rows)
    lines = [header, "", f"| dtype | shape | {main} {mode} ms | " + ("host ms | " if host else "") + "GB/s | "
             + " | ".join(f"vs {b}" for b in baselines) + " |", "|---|---|---|" + ("---|" if host else "") + "---|"
             + "---|" * len(baselines)]
    for r in rows:
        if r["provider"] != main or r["mode"] != mode:
            continue
        key = dict(dtype=r["dtype"], shape=r["shape"], mode=mode)
        cells = [fmt_ratio(ratio(rows, b, main, **key)) for b in baselines]
        lines.append(f"| {r['dtype']} | {r['shape']} | {r['median_ms']:.3f} | "
                     + (f"{r['host_ms']:.3f} | " if host else "") + f"{r['gbs']:.1f} | " + " | ".join(cells) + " |")
    if host:
        lines += ["", "ms: GPU time (the host launches each call while the GPU is held, as in a loop whose host runs "
                  "ahead); host ms: the host's time to launch the call."]
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def plot(rows: List[Dict], path: str, op: str, title: str, modes) -> None:
    """Effective GB/s of every provider, per dtype (rows of panels) and mode (columns), log scale."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no plot")
        return

    def ordered(key):
        out = []
        for r in rows:
            if r[key] not in out:
                out.append(r[key])
        return out

    dtypes, shapes, provs = ordered("dtype"), ordered("shape"), ordered("provider")
    fig, axes = plt.subplots(len(dtypes), len(modes), figsize=(7 * len(modes), 4.5 * len(dtypes)), squeeze=False)
    width = 0.8 / max(len(provs), 1)
    for i, dt in enumerate(dtypes):
        for j, mode in enumerate(modes):
            ax = axes[i][j]
            for k, p in enumerate(provs):
                vals = [(lookup(rows, provider=p, dtype=dt, shape=s, mode=mode) or {}).get("gbs", 0) for s in shapes]
                ax.bar([x + k * width for x in range(len(shapes))], vals, width, label=p)
            ax.set_xticks([x + width * (len(provs) - 1) / 2 for x in range(len(shapes))])
            ax.set_xticklabels(shapes)
            ax.set_yscale("log")
            ax.set_ylabel("effective GB/s (higher is better)")
            ax.set_title(f"{op} {mode}, {dt}")
            ax.grid(axis="y", alpha=0.3)
            ax.legend(fontsize=8)
    fig.suptitle(f"{op}: torchxc vs pure-PyTorch baselines on {title}")
    fig.tight_layout()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def selected_devices(choice: str) -> List[torch.device]:
    """--device cpu|cuda|all: `all` is the CPU, plus CUDA when a GPU is present."""
    if choice == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device available")
    devices = [torch.device("cpu")] if choice in ("cpu", "all") else []
    if choice in ("cuda", "all") and torch.cuda.is_available():
        devices.append(torch.device("cuda"))
    return devices


def add_timing_options(ap, quick_what: str, quick_budget: float, budget: float):
    """The speed benchmarks' shared options (--device, --quick, --budget, --out) on the parser `ap`; `quick_what`
    says what --quick leaves out. Returns a function of the parsed arguments giving the timing budget in seconds:
    --budget if given, else quick_budget with --quick, else budget."""
    ap.add_argument("--device", choices=["cpu", "cuda", "all"], default="all",
                    help="all = the CPU, and CUDA when a GPU is present")
    ap.add_argument("--quick", action="store_true", help=f"{quick_what}, short timing budget ({quick_budget:g} s "
                    "unless --budget is given), results under results/quick/ unless --out is given")
    ap.add_argument("--budget", type=float, default=None,
                    help=f"seconds of repeats per provider and measurement (default {budget:g})")
    ap.add_argument("--out", default=None, help=f"results folder (default {RESULTS_DIR})")
    return lambda args: args.budget if args.budget is not None else quick_budget if args.quick else budget


def suite_main(argv, doc: str, run, check_targets, dtypes: List[str]) -> int:
    """Command line of the speed benchmarks: run(device, dtypes, budget_s, out_dir) -> rows, then check_targets."""
    import argparse

    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    timing_budget = add_timing_options(ap, "float32 only", quick_budget=0.1, budget=0.4)
    args = ap.parse_args(argv)
    budget = timing_budget(args)
    out = output_dir(args.out, args.quick)
    ok = True
    for dev in selected_devices(args.device):
        rows = run(dev, ["float32"] if args.quick else dtypes, budget, out)
        ok &= check_targets(rows, dev)
    return 0 if ok else 1


# torch.compile'd baselines (reported beside the targets' baselines): TORCHXC_BENCH_COMPILED=0 leaves them out, e.g.
# on a lent GPU whose minutes are for the kernels (tools/gpu_check.sh), since each case compiles anew.
COMPILED_BASELINES = os.environ.get("TORCHXC_BENCH_COMPILED", "1") != "0"

def compile_for_case(fn):
    """torch.compile of a baseline for one benchmark case, or None when COMPILED_BASELINES is off. Dynamo is reset
    first: every case compiles anew, so a suite of cases never reaches dynamo's recompile limit (past it, calls
    would silently run eagerly)."""
    if not COMPILED_BASELINES:
        return None
    torch._dynamo.reset()
    return torch.compile(fn, dynamic=False)


# Providers that raised in Timer.compare since the last print_targets: each is a MISS there, since a failed torchxc
# op, or a baseline that a target is measured against, would otherwise only drop that target's line.
FAILURES: List[Tuple[str, str]] = []


def print_targets(lines) -> bool:
    lines = list(lines) + [(f"{name} ran", False, f"failed: {message}") for name, message in FAILURES]
    FAILURES.clear()
    print("\ntargets:")
    for name, ok, val in lines:
        print(f"  [{'PASS' if ok else 'MISS'}] {name}: {val}")
    return all(ok for _, ok, _ in lines)
