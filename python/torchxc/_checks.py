"""Argument checks shared by the Python wrappers and modules."""
import operator

import torch

REDUCTIONS = ("none", "mean", "sum")


def is_integer_dtype(t) -> bool:
    """Whether tensor ``t`` holds integers that can be class or label indices (not bool, float or complex)."""
    return not (t.is_floating_point() or t.is_complex() or t.dtype == torch.bool)


def as_int(n):
    """``n`` as an int if it is an integer (Python's, NumPy's or a 0-d integer tensor), else None: a bool, a float
    (2.0) or a float or bool tensor is not taken for one."""
    if isinstance(n, bool) or (isinstance(n, torch.Tensor) and (n.is_floating_point() or n.dtype == torch.bool)):
        return None
    try:
        return operator.index(n)
    except TypeError:
        return None


def check_reduction(reduction: str, op: str) -> None:
    """``reduction`` is one of REDUCTIONS, else a ValueError naming ``op``."""
    if reduction not in REDUCTIONS:
        raise ValueError(f"{op}: reduction must be one of {REDUCTIONS}, got {reduction!r}")
