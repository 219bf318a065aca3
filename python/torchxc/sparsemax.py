"""Sparsemax and the sparsemax loss (Martins & Astudillo, ICML 2016).

sparsemax(z) = argmin_{p in simplex} ||p - z||^2 = max(z - tau, 0), with tau the unique number such that the
output sums to 1. Unlike softmax it gives exact zeros. The kernels find tau exactly (Newton/Michelot steps
that end on the true support, with a bisection fallback over representable numbers; see
csrc/common/sparsemax_threshold.h), in float32 for half/bfloat16 inputs.

Conventions for special values, per slice along ``dim``:

* ``-inf`` entries get probability exactly 0 (attention-mask convention), as long as one entry is finite;
* a slice whose maximum is not finite (all ``-inf``, any ``+inf``, or any NaN) gives NaN everywhere in that
  slice, as ``torch.softmax`` does; other slices are unaffected.

The sparsemax loss of a score vector z against a target distribution q is

    L(z; q) = -q.z + 1/2 sum_{j in S(z)} (z_j^2 - tau^2) + 1/2 ||q||^2
            = 1/2 ||p - q||^2 + sum_j q_j max(tau - z_j, 0),       p = sparsemax(z),

whose gradient is p - q. The second form (used by the kernels) is shift invariant and non-negative term by
term, so it stays accurate for large scores and handles ``-inf`` scores (L = +inf when a masked class has
target mass, while masked classes without target mass contribute nothing).
"""
import math
from typing import Tuple

import torch
from torch import Tensor

from ._checks import check_reduction, check_tensor, int_arg, long_indices, wrap_dim
from ._fake import FLOATS, floating_grad, metadata, same_device

__all__ = ["sparsemax", "sparsemax_loss"]


def sparsemax(input: Tensor, dim: int = -1) -> Tensor:
    """Sparsemax along ``dim``: the Euclidean projection of each slice onto the probability simplex.

    Args:
        input: float16, bfloat16, float32 or float64 tensor of any shape, on the CPU or a CUDA device;
            non-contiguous and zero-size tensors are accepted.
        dim: the dimension that sums to 1.

    Returns:
        A tensor of ``input``'s shape and dtype, non-negative, summing to 1 along ``dim`` and usually sparse.
        ``-inf`` entries get exactly 0; slices with a non-finite maximum are NaN (see the module docstring).

    Example::

        >>> torchxc.sparsemax(torch.tensor([1.0, 0.5, -1.0]))
        tensor([0.7500, 0.2500, 0.0000])
    """
    if type(dim) is not int:  # the schema's int takes True as 1; a NumPy integer is fine
        dim = int_arg(dim, "dim", "torchxc.sparsemax")
    return torch.ops.torchxc.sparsemax.default(input, dim)


def sparsemax_loss(
    input: Tensor,
    target: Tensor,
    dim: int = -1,
    reduction: str = "mean",
    ignore_index: int = -100,
) -> Tensor:
    """The sparsemax loss, single- or multi-label; its gradient with respect to ``input`` is sparsemax(input) - q.

    Args:
        input: scores, float16/bfloat16/float32/float64, classes along ``dim``.
        target: either
            * class indices: an integer tensor with ``input``'s shape without ``dim`` (q is one-hot); entries
              equal to ``ignore_index`` skip their row, other entries must lie in [0, C); or
            * label weights shaped like ``input``: proportions, or a multi-hot (bool/0-1) vector for the
              multi-label loss. Each row is normalised to sum 1 (q = target / target.sum(dim)); weights must be
              finite and non-negative. Rows whose weights are all zero have no label and are skipped.
            No gradient flows into ``target``.
        dim: the class dimension.
        reduction: ``"none"`` (the loss of every row, shape of ``input`` without ``dim``; skipped rows give 0),
            ``"sum"``, or ``"mean"`` (over the rows that are not skipped; NaN when every row is skipped, as in
            ``torch.nn.functional.cross_entropy`` with ``ignore_index``).
        ignore_index: the class index that marks a row without a label (class-index targets only).

    Bad targets (index out of range, negative or non-finite weights) raise an error on the CPU and trigger a
    device-side assertion on CUDA, as ``cross_entropy`` does.

    Example::

        >>> z = torch.randn(8, 5, requires_grad=True)
        >>> torchxc.sparsemax_loss(z, torch.randint(5, (8,))).backward()
        >>> multi_hot = torch.rand(8, 5) > 0.6
        >>> torchxc.sparsemax_loss(z, multi_hot, reduction="none").shape
        torch.Size([8])
    """
    op = "torchxc.sparsemax_loss"
    check_reduction(reduction, op)
    check_tensor(input, "input", op)
    check_tensor(target, "target", op)
    if input.dim() == 0:
        raise ValueError("torchxc.sparsemax_loss: expected input with a class dimension, got a 0-d tensor")
    dim = wrap_dim(dim, input.dim(), op)
    if type(ignore_index) is not int:
        ignore_index = int_arg(ignore_index, "ignore_index", op)
    last = dim == input.dim() - 1  # the usual case: no view (each costs host time in a small training step)
    scores = input if last else input.movedim(dim, -1)
    if target.shape == input.shape and not (target.dim() == 0):
        target = target if last else target.movedim(dim, -1)
        if target.is_complex():
            raise ValueError(f"torchxc.sparsemax_loss: label weights must be real, got {target.dtype}")
        if target.requires_grad and torch.is_grad_enabled():
            raise ValueError("torchxc.sparsemax_loss: no gradient with respect to the target; pass target.detach()")
        if target.dtype in (torch.bool, torch.uint8):
            # exact in every float dtype (0 / 1, or counts up to 255); the op divides by the row's sum itself. The
            # float64 normalisation below would cost four passes over the batch in float64 (4096x8192: 287 -> 62 ms)
            target = target.to(input.dtype)
        elif target.dtype != input.dtype:
            # normalise before the cast (the loss divides by the row sum anyway), so that weights outside the input
            # dtype's range (1e-9 or 1e6 in float16) keep their proportions instead of under- or overflowing
            # (in float64, whose sums and quotients neither overflow for finite float32 weights nor underflow for
            # tiny ones, and which holds integer counts exactly). Negative weights must reach the op as NaN,
            # which it refuses: a tiny negative quotient would round to -0.0 in the cast and pass. Float64 weights
            # are first divided by the row's largest, so that a sum past float64's range (two weights of 1e308)
            # does not turn the row into zeros (a row without labels, skipped).
            w = target.double()
            if target.is_floating_point() or target.dtype in (torch.int8, torch.int16, torch.int32, torch.int64):
                w = w.masked_fill(w < 0, math.nan)
            if target.dtype == torch.float64 and w.shape[-1] > 0:
                m = w.amax(-1, keepdim=True)
                w = torch.where((m > 0) & (m < math.inf), w / m, w)
            s = w.sum(-1, keepdim=True)
            target = torch.where(s > 0, w / s, w).to(input.dtype)
    elif (not target.is_floating_point() and not target.is_complex() and target.dtype != torch.bool
          and target.shape == scores.shape[:-1]):  # a bool vector would be read as classes 0 and 1
        target = long_indices(target, op, "class indices", "one of them into ignore_index")
    else:
        raise ValueError(
            "torchxc.sparsemax_loss: target must be class indices of shape "
            f"{tuple(scores.shape[:-1])} (input's shape without dim={dim}) or label weights of the input's shape "
            f"{tuple(input.shape)}, but got a {target.dtype} tensor of shape {tuple(target.shape)}"
        )
    loss, stats = torch.ops.torchxc.sparsemax_loss.default(scores, target, ignore_index)
    if reduction == "none":
        return loss
    if reduction == "sum":
        return loss.sum()
    # Rows with a label have a positive target mass (stats[..., 2]); skipped rows have exactly 0. The sum in
    # float32 at least: a float16 sum of 40,000 losses of about 2 would overflow before the division.
    total = loss.sum(dtype=torch.promote_types(loss.dtype, torch.float32))
    return (total / torch.count_nonzero(stats.select(-1, 2))).to(loss.dtype)


def _empty_rows_like(x: Tensor, dim: int) -> Tensor:
    # Same shape and strides as the CPU/CUDA kernels' output: rows of `dim` laid out contiguously.
    if x.dim() == 0:
        return torch.empty_like(x, memory_format=torch.contiguous_format)
    dim = wrap_dim(dim, x.dim(), "torchxc.sparsemax")
    return x.new_empty(x.movedim(dim, -1).shape).movedim(-1, dim)


# ---- fake (meta) kernels: shapes and strides for torch.compile / FakeTensor -----------------------------------


@torch.library.register_fake("torchxc::sparsemax")
def _sparsemax_fake(input: Tensor, dim: int = -1) -> Tensor:
    metadata("torchxc::sparsemax", "input", input, FLOATS)
    return _empty_rows_like(input, dim)


@torch.library.register_fake("torchxc::sparsemax_backward")
def _sparsemax_backward_fake(grad_output: Tensor, output: Tensor, dim: int = -1) -> Tensor:
    same_device("torchxc::sparsemax_backward", output, grad_output=grad_output)
    metadata("torchxc::sparsemax_backward", "output", output, FLOATS)
    metadata("torchxc::sparsemax_backward", "grad_output", grad_output, (output.dtype,))
    return _empty_rows_like(output, dim)


@torch.library.register_fake("torchxc::sparsemax_loss")
def _sparsemax_loss_fake(input: Tensor, target: Tensor, ignore_index: int = -100) -> Tuple[Tensor, Tensor]:
    same_device("torchxc::sparsemax_loss", input, target=target)
    metadata("torchxc::sparsemax_loss", "input", input, FLOATS, min_dim=1)
    # class indices [...] or label weights of the input's dtype and shape
    metadata("torchxc::sparsemax_loss", "target", target, (torch.int64, input.dtype),
             dim=input.dim() - (1 if target.dtype == torch.int64 else 0))
    stats_dtype = torch.float64 if input.dtype == torch.float64 else torch.float32
    batch = input.shape[:-1]
    return input.new_empty(batch), input.new_empty((*batch, 3), dtype=stats_dtype)


@torch.library.register_fake("torchxc::sparsemax_loss_backward")
def _sparsemax_loss_backward_fake(grad_loss: Tensor, input: Tensor, target: Tensor, stats: Tensor) -> Tensor:
    same_device("torchxc::sparsemax_loss_backward", input, grad_loss=grad_loss, target=target, stats=stats)
    metadata("torchxc::sparsemax_loss_backward", "input", input, FLOATS, min_dim=1)
    floating_grad("torchxc::sparsemax_loss_backward", "grad_loss", grad_loss)
    return input.new_empty(input.shape)

# Autograd: csrc/autograd/sparsemax_autograd.cpp (the backward ops above are registered ops with fake kernels).
