"""Checks shared by the fake kernels (which are also the ops' Meta kernels, so they see real calls that mix a meta
tensor with a CPU or CUDA one, as well as torch.compile's fake tensors)."""
from typing import Optional

import torch
from torch import Tensor


def same_device(op: str, first: Tensor, **others: Optional[Tensor]) -> None:
    """Every tensor in ``others`` (None skipped) is on ``first``'s device, as the CPU/CUDA kernels check."""
    for name, t in others.items():
        if t is not None:
            torch._check(t.device == first.device,
                         lambda: f"{op}: expected {name} on {first.device}, the device of the first tensor, but got "
                                 f"{t.device}")
