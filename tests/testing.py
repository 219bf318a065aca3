"""Shared test helpers: devices, dtypes, the low-precision tolerance rule, subprocess runs with a kernel switch
set at load time, and a tiny temporal-sets dataset."""
from __future__ import annotations  # X | None annotations on Python 3.9
import contextlib
import os
import random
import subprocess
import sys
import tempfile

import pytest
import torch

import torchxc

# torch.compile tests compile against this build, not against graphs cached by an earlier one: AOTAutograd's cache
# can hand back a backward traced from an older build's Python autograd code (a traced-backward failure of the
# fused loss passed that way). A fresh inductor cache per test process, removed at exit; an explicit
# TORCHINDUCTOR_CACHE_DIR is kept.
if "TORCHINDUCTOR_CACHE_DIR" not in os.environ:
    import atexit
    import shutil

    os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="torchxc-test-inductor-")
    atexit.register(shutil.rmtree, os.environ["TORCHINDUCTOR_CACHE_DIR"], ignore_errors=True)

dtypes = [torch.float16, torch.bfloat16, torch.float32, torch.float64]
grad_dtypes = [torch.float32, torch.float64]

devices = [torch.device("cpu")]
if torch.cuda.is_available() and torchxc.cuda_kernels_built():
    devices.append(torch.device("cuda"))

requires_cuda = pytest.mark.skipif(
    not (torch.cuda.is_available() and torchxc.cuda_kernels_built()),
    reason="needs a CUDA device and a CUDA build of torchxc",
)


# Environment settings (read by the CUDA kernels at every call) that send rows to each CUDA path of the row ops.
CUDA_PATHS = {
    "coop": {"TORCHXC_CUDA_COOP_ABOVE": "0"},  # cooperative chunks on every row length (ZLPR, sparsemax)
    "register": {"TORCHXC_CUDA_COOP_ABOVE": str(2 ** 62)},  # a warp or block per row where a row fits, else split
    "split": {"TORCHXC_CUDA_COOP_ABOVE": str(2 ** 62), "TORCHXC_CUDA_SPLIT_ABOVE": "0"},
}


def use_cuda_path(monkeypatch, path: str) -> None:
    for k, v in CUDA_PATHS[path].items():
        monkeypatch.setenv(k, v)


def device_ids(devs):
    return [d.type for d in devs]


def outputs_without_and_with(env_var: str, code: str, *args: str, base_env: dict | None = None) -> list:
    """Runs `code` in a fresh interpreter twice, without and with env_var=1 (a kernel switch read when the
    extension loads), as ``python -c code *args PATH``; the code saves its result to PATH (the last argument).
    ``base_env``: variables set in both runs. Returns the two loaded results."""
    outs = []
    for flag in (False, True):
        env = {k: v for k, v in {**os.environ, **(base_env or {})}.items() if k != env_var}
        if flag:
            env[env_var] = "1"
        path = os.path.join(tempfile.mkdtemp(), "out.pt")
        subprocess.run([sys.executable, "-c", code, *args, path], env=env, check=True)
        outs.append(torch.load(path))
    return outs


@contextlib.contextmanager
def num_threads(n: int):
    """torch's CPU thread count set to n inside the block (the CPU kernels split rows of >= 2^16 values across
    threads only when there are fewer rows than threads: csrc/cpu/rows.h)."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def max_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """Largest absolute difference, NaN-aware (NaN must match NaN), computed in float64."""
    a = a.detach().double().cpu()
    b = b.detach().double().cpu()
    assert a.shape == b.shape, (a.shape, b.shape)
    assert torch.equal(a.isnan(), b.isnan()), "NaN positions differ"
    mask = ~a.isnan()
    if not mask.any():
        return 0.0
    a, b = a[mask], b[mask]
    same_inf = (a == b) & a.isinf()
    return float((a - b).abs()[~same_inf].max()) if (~same_inf).any() else 0.0


# Tolerance of float32/float64 kernels against a float64 reference, relative to max(1, largest |reference|).
exact_atol = {torch.float32: 2e-6, torch.float64: 1e-12}


def assert_close_lowp(out, ref, plain_lowp, dtype, slack=2.0, floor=None, scale=0.0):
    """flash-attention's rule for low precision: the kernel's error against the float64 reference must be at
    most `slack` times the error of the plain PyTorch computation done in the same low precision (`plain_lowp`),
    plus a floor of one unit of rounding of the output's largest value (relative: outputs near 0.02 get a floor near
    0.02 * 2^-8 in bfloat16, not 2^-8). ``scale``: a larger magnitude to count instead, for outputs that are
    differences of larger terms (the sparsemax loss gradient p - q, whose terms reach 1)."""
    if floor is None:
        finite = ref[torch.isfinite(ref)].double().abs()
        scale = max(scale, float(finite.max()) if finite.numel() else 0.0)
        # (+ 1e-12: the float64 reference's own rounding, where the exact value is 0)
        floor = {torch.float16: 2 ** -11, torch.bfloat16: 2 ** -8}.get(dtype, 0.0) * scale + 1e-12
    err = max_err(out, ref)
    budget = slack * max_err(plain_lowp, ref) + floor
    assert err <= budget, f"error {err:.3g} > budget {budget:.3g} ({dtype})"


def check_against_reference(out, ref, plain_lowp, dtype, scale=0.0):
    if dtype in exact_atol:
        err = max_err(out, ref)
        finite = ref[torch.isfinite(ref)].double().abs()
        tol = exact_atol[dtype] * max(1.0, float(finite.max()) if finite.numel() else 1.0)
        assert err <= tol, f"error {err:.3g} > {tol:.1g} ({dtype})"
    else:
        assert_close_lowp(out, ref, plain_lowp, dtype, scale=scale)


def favourite_label_users(seed: int, num_labels: int, sizes: dict, max_events: int) -> dict:
    """Temporal-sets splits {split: {user: [[label, label], ...]}}: every user has 3 favourite labels out of
    ``num_labels`` and 2 to ``max_events`` events of 2 of them; ``sizes`` = {split: number of users}."""
    rnd = random.Random(seed)
    labels = [f"l{i}" for i in range(num_labels)]

    def user():
        fav = rnd.sample(labels, 3)
        return [rnd.sample(fav, 2) for _ in range(rnd.randint(2, max_events))]

    return {s: {f"{s}{u}": user() for u in range(n)} for s, n in sizes.items()}
