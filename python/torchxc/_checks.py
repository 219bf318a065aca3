"""Argument checks shared by the Python wrappers and modules."""
import torch

REDUCTIONS = ("none", "mean", "sum")


def is_integer_dtype(t) -> bool:
    """Whether tensor ``t`` holds integers that can be class or label indices (not bool, float or complex)."""
    return not (t.is_floating_point() or t.is_complex() or t.dtype == torch.bool)


def check_reduction(reduction: str, op: str) -> None:
    """``reduction`` is one of REDUCTIONS, else a ValueError naming ``op``."""
    if reduction not in REDUCTIONS:
        raise ValueError(f"{op}: reduction must be one of {REDUCTIONS}, got {reduction!r}")
