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


def int_arg(n, name: str, op: str) -> int:
    """``n`` as an int (see ``as_int``), else a TypeError naming ``op`` and ``name``: ``dim=True`` or ``dim=1.0``
    were taken for 1, and a reduction string passed in the ``dim`` slot failed in a bare comparison."""
    value = as_int(n)
    if value is None:
        raise TypeError(f"{op}: {name} must be an int, got {type(n).__name__} {n!r}")
    return value


def wrap_dim(dim, ndim: int, op: str) -> int:
    """``dim`` (an int) in [0, rank) for a tensor of ``ndim`` dimensions, a 0-d tensor counting as one (as in
    softmax); an IndexError naming ``op`` when it is out of range, as the ops raise."""
    dim = int_arg(dim, "dim", op)
    rank = max(ndim, 1)
    if not -rank <= dim < rank:
        raise IndexError(f"{op}: dim must be in [{-rank}, {rank - 1}], got {dim}")
    return dim % rank


def check_tensor(t, name: str, op: str) -> None:
    """A TypeError naming ``op`` unless ``t`` is a tensor (a reduction string passed in the ``mask`` slot failed
    with "'str' object has no attribute 'dtype'")."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{op}: {name} must be a tensor, got {type(t).__name__}")


def long_indices(t: torch.Tensor, op: str, name: str, wraps: str) -> torch.Tensor:
    """Integer index tensor ``t`` as int64; uint64 is refused, naming ``op`` and what its large values would wrap
    into (``.long()`` turns 2^63 and more negative, 2^64 - 1 into -1)."""
    if t.dtype == torch.uint64:
        raise ValueError(f"{op}: {name} of dtype uint64 are not supported (values of 2^63 and more would turn "
                         f"negative, {wraps}); pass int64")
    return t.long()


def check_counts(t: torch.Tensor, op: str, name: str, shape: str = "") -> None:
    """A real tensor of finite values >= 0 (label counts), else a ValueError naming ``op``, ``name`` (described as
    ``shape`` + "finite label counts >= 0") and the first bad value: NaN passes a ``< 0`` test."""
    if t.dtype == torch.bool or t.is_complex():
        raise ValueError(f"{op}: {name} must hold real label counts, got {t.dtype}")
    if t.device.type == "meta":  # no values to check (a model built under torch.device("meta"))
        return
    bad = ~(torch.isfinite(t) & (t >= 0))
    if bool(bad.any()):
        i = int(bad.nonzero()[0])
        raise ValueError(f"{op}: {name} must be {shape}finite label counts >= 0, got {t[i].item()} for label {i} "
                         f"({int(bad.sum())} such values)")


def check_reduction(reduction: str, op: str) -> None:
    """``reduction`` is one of REDUCTIONS, else a ValueError naming ``op``."""
    if reduction not in REDUCTIONS:
        raise ValueError(f"{op}: reduction must be one of {REDUCTIONS}, got {reduction!r}")
