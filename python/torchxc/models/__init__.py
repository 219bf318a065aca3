"""Models built on the torchxc ops."""
from .lanet import LANET, TimeStepTransformer

__all__ = ["LANET", "TimeStepTransformer"]
