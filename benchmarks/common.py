"""Shared benchmark machinery: timing on CPU and CUDA, the machine's bandwidth ceiling, CSV and plots.

Timing: CUDA work is timed with CUDA events around each call, with the L2 cache flushed before every call
(so repeated calls do not read their input from cache), reporting the median and 20th/80th percentiles.
CPU work is timed with perf_counter on the same schedule. Slow providers get fewer repeats: each
measurement repeats until `budget_s` has passed (at least `min_reps`, at most `max_reps` times).
"""
import csv
import os
import platform
import statistics
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional

import torch

RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


@dataclass
class Measurement:
    median_ms: float
    p20_ms: float
    p80_ms: float
    reps: int


def _percentile(sorted_vals: List[float], q: float) -> float:
    idx = min(len(sorted_vals) - 1, max(0, int(round(q * (len(sorted_vals) - 1)))))
    return sorted_vals[idx]


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

    def __call__(self, fn: Callable[[], object], setup: Optional[Callable[[], None]] = None) -> Measurement:
        for _ in range(2):  # warm-up: compilation, caches, allocator
            if setup:
                setup()
            fn()
        self.sync()
        times = []
        start = time.perf_counter()
        while len(times) < self.max_reps and (
            len(times) < self.min_reps or time.perf_counter() - start < self.budget_s
        ):
            if setup:
                setup()
            times.append(self._time_once(fn))
        times.sort()
        return Measurement(statistics.median(times), _percentile(times, 0.2), _percentile(times, 0.8), len(times))

    def compare(self, fns: Dict[str, Callable[[], object]], rounds: int = 4,
                setups: Optional[Dict[str, Callable[[], None]]] = None) -> Dict[str, Optional[Measurement]]:
        """Times several providers of the same computation in interleaved rounds (each round gives every
        provider a window of `budget_s / rounds` seconds, in a rotating order), so that a slow spell of the
        machine hits all providers alike instead of one. A provider that raises gets None."""
        setups = setups or {}
        samples: Dict[str, List[float]] = {name: [] for name in fns}
        failed = set()
        for name, fn in fns.items():  # warm-up
            try:
                for _ in range(2):
                    if name in setups:
                        setups[name]()
                    fn()
                self.sync()
            except (RuntimeError, torch.OutOfMemoryError) as e:
                print(f"  {name}: failed ({str(e).splitlines()[0][:100]})")
                failed.add(name)
        names = [n for n in fns if n not in failed]
        window = self.budget_s / rounds
        for r in range(rounds):
            order = names[r % max(len(names), 1):] + names[: r % max(len(names), 1)]
            for name in order:
                start = time.perf_counter()
                while len(samples[name]) < self.max_reps and (
                    time.perf_counter() - start < window or len(samples[name]) <= r
                ):
                    if name in setups:
                        setups[name]()
                    samples[name].append(self._time_once(fns[name]))
        out: Dict[str, Optional[Measurement]] = {}
        for name in fns:
            t = sorted(samples[name])
            out[name] = (Measurement(statistics.median(t), _percentile(t, 0.2), _percentile(t, 0.8), len(t))
                         if t else None)
        return out

    def sync(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def _time_once(self, fn) -> float:
        if self.device.type == "cuda":
            self._flush.zero_()
            begin = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            begin.record()
            fn()
            end.record()
            end.synchronize()
            return begin.elapsed_time(end)
        t = time.perf_counter()
        fn()
        return (time.perf_counter() - t) * 1e3


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


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()} ({torch.get_num_threads()} threads)"


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
