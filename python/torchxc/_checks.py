"""Argument checks shared by the Python wrappers and modules."""

REDUCTIONS = ("none", "mean", "sum")


def check_reduction(reduction: str, op: str) -> None:
    """``reduction`` is one of REDUCTIONS, else a ValueError naming ``op``."""
    if reduction not in REDUCTIONS:
        raise ValueError(f"{op}: reduction must be one of {REDUCTIONS}, got {reduction!r}")
