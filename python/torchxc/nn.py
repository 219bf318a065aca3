"""``torch.nn`` modules wrapping the torchxc ops."""
import torch
from torch import Tensor

from .sparsemax import sparsemax, sparsemax_loss

__all__ = ["Sparsemax", "SparsemaxLoss"]


class Sparsemax(torch.nn.Module):
    """Sparsemax along ``dim``; a drop-in replacement for ``torch.nn.Softmax(dim)`` with exact zeros.

    Example::

        >>> attn = torchxc.nn.Sparsemax(dim=-1)(scores)   # scores [B, H, Q, K]
    """

    def __init__(self, dim: int = -1):
        super().__init__()
        self.dim = dim

    def forward(self, input: Tensor) -> Tensor:
        return sparsemax(input, self.dim)

    def extra_repr(self) -> str:
        return f"dim={self.dim}"


class SparsemaxLoss(torch.nn.Module):
    """The sparsemax loss; see :func:`torchxc.sparsemax_loss` for the target forms.

    Example::

        >>> loss_fn = torchxc.nn.SparsemaxLoss()
        >>> loss = loss_fn(logits, labels)           # labels: int64 [N] or multi-hot [N, C]
    """

    def __init__(self, dim: int = -1, reduction: str = "mean", ignore_index: int = -100):
        super().__init__()
        self.dim = dim
        self.reduction = reduction
        self.ignore_index = ignore_index

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return sparsemax_loss(input, target, self.dim, self.reduction, self.ignore_index)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, reduction={self.reduction!r}, ignore_index={self.ignore_index}"
