"""``torch.nn`` modules wrapping the torchxc ops."""
import torch
from torch import Tensor

from typing import Optional

from ._checks import check_reduction, int_arg
from .sparsemax import sparsemax, sparsemax_loss
from .zlpr import zlpr_loss, zlpr_loss_sparse

__all__ = ["Sparsemax", "SparsemaxLoss", "ZLPRLoss"]


class Sparsemax(torch.nn.Module):
    """Sparsemax along ``dim``; a drop-in replacement for ``torch.nn.Softmax(dim)`` with exact zeros.

    Example::

        >>> attn = torchxc.nn.Sparsemax(dim=-1)(scores)   # scores [B, H, Q, K]
    """

    def __init__(self, dim: int = -1):
        super().__init__()
        self.dim = int_arg(dim, "dim", type(self).__name__)  # refused here, not at the first forward

    def forward(self, input: Tensor) -> Tensor:
        return sparsemax(input, self.dim)

    def extra_repr(self) -> str:
        return f"dim={self.dim}"


class SparsemaxLoss(torch.nn.Module):
    """The sparsemax loss; see :func:`torchxc.sparsemax_loss` for the target forms.

    Example::

        >>> loss_fn = torchxc.nn.SparsemaxLoss()
        >>> loss = loss_fn(logits, labels)           # labels: int64 [N] or multi-hot [N, C]

    Args: ``dim`` (the class dimension), ``reduction`` (``"none"``, ``"mean"`` or ``"sum"``) and ``ignore_index``
    (rows of class-index targets with this class are ignored), as in :func:`torchxc.sparsemax_loss`.
    """

    def __init__(self, dim: int = -1, reduction: str = "mean", ignore_index: int = -100):
        super().__init__()
        self.dim = int_arg(dim, "dim", type(self).__name__)  # these refused here, not at the first forward
        check_reduction(reduction, type(self).__name__)
        self.reduction = reduction
        self.ignore_index = int_arg(ignore_index, "ignore_index", type(self).__name__)

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return sparsemax_loss(input, target, self.dim, self.reduction, self.ignore_index)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, reduction={self.reduction!r}, ignore_index={self.ignore_index}"


class ZLPRLoss(torch.nn.Module):
    """The ZLPR multi-label loss; see :func:`torchxc.zlpr_loss`. With ``sparse=True`` the target is a padded
    list of positive class indices (:func:`torchxc.zlpr_loss_sparse`).

    Example::

        >>> loss_fn = torchxc.nn.ZLPRLoss()
        >>> loss = loss_fn(logits, multi_hot)          # logits [N, C], multi_hot bool [N, C]
        >>> loss = torchxc.nn.ZLPRLoss(sparse=True)(logits, positives)   # positives int64 [N, P], -1 padded

    Args: ``reduction`` (``"none"``, ``"mean"`` or ``"sum"``, as in :func:`torchxc.zlpr_loss`) and ``sparse``;
    ``forward(input, target, mask=None)`` takes the functions' ``mask``.
    """

    def __init__(self, reduction: str = "mean", sparse: bool = False):
        super().__init__()
        check_reduction(reduction, type(self).__name__)  # refused here, not at the first forward
        self.reduction = reduction
        if not isinstance(sparse, bool):  # sparse="no" would select the sparse loss
            raise TypeError(f"{type(self).__name__}: sparse must be a bool, got {type(sparse).__name__} {sparse!r}")
        self.sparse = sparse

    def forward(self, input: Tensor, target: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        fn = zlpr_loss_sparse if self.sparse else zlpr_loss
        return fn(input, target, mask, self.reduction)

    def extra_repr(self) -> str:
        return f"reduction={self.reduction!r}, sparse={self.sparse}"
