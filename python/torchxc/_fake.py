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


FLOATS = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _dtype_name(d: torch.dtype) -> str:
    """float32 rather than torch.float32, in the fake kernels' messages."""
    return str(d).replace("torch.", "")


def metadata(op: str, name: str, t: Tensor, dtypes=None, dim=None, min_dim: int = 0) -> None:
    """The dtype and rank that the CPU/CUDA kernels require of an argument (they determine the outputs' metadata,
    so a fake kernel that skipped them returned outputs for calls the kernels refuse): ``dtypes`` a tuple, ``dim``
    an exact rank or None, ``min_dim`` a least rank."""
    if dtypes is not None:
        torch._check(t.dtype in dtypes, lambda: f"{op}: expected {name} of dtype "
                                                f"{' or '.join(_dtype_name(d) for d in dtypes)}, "
                                                f"but got {_dtype_name(t.dtype)}")
    torch._check(t.dim() == dim if dim is not None else t.dim() >= min_dim,
                 lambda: f"{op}: expected {name} with " + (f"{dim} dimensions" if dim is not None else
                                                           f"at least {min_dim} dimension(s)") + f", but got {t.dim()}")


def floating_grad(op: str, name: str, t: Tensor) -> None:
    """An incoming gradient of a real floating-point dtype, as the backward kernels require."""
    torch._check(t.is_floating_point(),
                 lambda: f"{op}: expected a floating-point {name}, but got {_dtype_name(t.dtype)}")
