"""The ZLPR loss ("multi-label softmax + cross-entropy", Su et al., arXiv 2208.02955).

With scores s over C classes (classes on the last dim) and labels t in [0, 1] (hard labels are 0/1):

    L = log(1 + sum_i (1 - t_i) e^{s_i}) + log(1 + sum_i t_i e^{-s_i})

For hard labels this is log(1 + sum_{neg} e^{s_i}) + log(1 + sum_{pos} e^{-s_j}): every positive is pushed above
0 and every negative below it, so the decision rule is s_i > 0 (no threshold to tune). For soft labels the
per-class optimum is t = sigmoid(2 s), hence :func:`zlpr_probs` with ``soft=True``.

What torchxc does differently from the formulas usually copied around:

* t = 1 and t = 0 remove the class from the other sum exactly (weight 0), with no epsilon clipping. (Clipping t to
  [1e-7, 1 - 1e-7] leaks a confident positive into the negative sum: a correct score s = 25 then costs 8.9.)
* Masks are real exclusions, not 1e12 constants (which overflow float16 into NaN).
* The sparse form never computes log(1 - e^x): positives are excluded from the negative sum exactly, so it stays
  finite and exact when every positive is fitted.
* Both sums are log-sum-exps with their own maximum: scores of +-1e4 in float32 give finite, exact losses.
* One fused pass computes the loss and its gradient; the backward hands the stored gradient on (for a mean or a
  sum, untouched; other incoming gradients scale its rows in place; no host sync on a GPU). float16 and bfloat16
  are computed in float32.

Masked classes (mask False) and -inf scores are excluded from both sums. Scores should otherwise be finite: a NaN
score makes its row's loss and gradient NaN, and so does +inf on a class with negative weight (t < 1; the loss would be
+inf); +inf on a positive (t = 1) contributes 0.
"""
import math
import struct
from typing import Optional, Tuple

import torch
from torch import Tensor

from ._checks import check_reduction, check_tensor, is_integer_dtype, long_indices
from ._fake import FLOATS, metadata, same_device

__all__ = ["zlpr_loss", "zlpr_loss_sparse", "zlpr_probs"]


def zlpr_loss(input: Tensor, target: Tensor, mask: Optional[Tensor] = None, reduction: str = "mean") -> Tensor:
    """ZLPR loss with dense labels.

    Args:
        input: scores [..., C], float16/bfloat16/float32/float64, CPU or CUDA (GlobalPointer users flatten their
            span dims into the leading dims).
        target: labels of the input's shape: bool or integer {0, 1} (hard), or float in [0, 1] (soft). Values
            outside [0, 1] raise an error (a device-side assertion on CUDA).
        mask: optional bool, broadcastable to ``input``; False removes the class from both sums.
        reduction: ``"none"`` (loss per row, shape ``input.shape[:-1]``), ``"mean"`` (over rows) or ``"sum"``.

    Example::

        >>> logits = torch.randn(8, 20, requires_grad=True)
        >>> labels = torch.rand(8, 20) < 0.2
        >>> torchxc.zlpr_loss(logits, labels).backward()
        >>> predicted = logits > 0                     # the ZLPR decision rule
    """
    _check(input, reduction, "torchxc.zlpr_loss", target=target)
    if target.is_complex():
        raise ValueError(f"torchxc.zlpr_loss: target must be bool, integer or real, got {target.dtype}")
    if target.requires_grad and torch.is_grad_enabled():
        raise ValueError("torchxc.zlpr_loss: no gradient with respect to the target; pass target.detach()")
    if target.dtype != torch.bool and target.dtype != input.dtype:
        target = _to_input_dtype(target, input.dtype)  # integer labels take the soft path, which checks their range
    loss, _ = torch.ops.torchxc.zlpr_loss.default(input, target, _class_mask(mask, input.shape, "torchxc.zlpr_loss"),
                                                  _wants_grad(input), _grad_scale(input, reduction))
    return _reduce(loss, reduction)


def zlpr_loss_sparse(input: Tensor, positives: Tensor, mask: Optional[Tensor] = None, reduction: str = "mean") -> Tensor:
    """ZLPR loss with sparse labels, for C up to millions where a dense target would not fit.

    Args:
        input: scores [..., C].
        positives: int64 [..., P], the positive class indices of each row padded with -1 (rows may have any number
            of positives up to P). A class listed twice counts once. Indices >= C or < -1 raise an error.
        mask, reduction: as in :func:`zlpr_loss`.

    Gives the same value and gradient as :func:`zlpr_loss` with the corresponding dense hard target.

    Example::

        >>> logits = torch.randn(4, 1_000_000, requires_grad=True)
        >>> positives = torch.tensor([[3, 17, -1], [5, -1, -1], [0, 1, 2], [-1, -1, -1]])
        >>> torchxc.zlpr_loss_sparse(logits, positives).backward()
    """
    _check(input, reduction, "torchxc.zlpr_loss_sparse", positives=positives)
    if not is_integer_dtype(positives):
        raise ValueError(f"torchxc.zlpr_loss_sparse: positives must be integer class indices (int64, padded with -1), "
                         f"got {positives.dtype}; a dense multi-hot target goes to torchxc.zlpr_loss")
    if positives.dtype != torch.long:
        positives = long_indices(positives, "torchxc.zlpr_loss_sparse", "positives", "2^64 - 1 into the padding -1")
    loss, _ = torch.ops.torchxc.zlpr_loss_sparse.default(
        input, positives, _class_mask(mask, input.shape, "torchxc.zlpr_loss_sparse"), _wants_grad(input),
        _grad_scale(input, reduction)
    )
    return _reduce(loss, reduction)


def zlpr_probs(input: Tensor, soft: bool = False) -> Tensor:
    """Probabilities of a ZLPR model: sigmoid(s), or sigmoid(2 s) for a model trained on soft labels (whose
    per-class optimum is t = sigmoid(2 s)). Either way p > 0.5 exactly when s > 0.

    Example::

        >>> torchxc.zlpr_probs(torch.tensor([-2.0, 0.0, 3.0]))
        tensor([0.1192, 0.5000, 0.9526])
    """
    return torch.sigmoid(input * 2 if soft else input)


def _check(input: Tensor, reduction: str, op: str, **labels) -> None:
    check_reduction(reduction, op)
    check_tensor(input, "input", op)
    for name, t in labels.items():
        check_tensor(t, name, op)
    if input.dim() == 0:
        raise ValueError(f"{op}: expected input with a class dimension, got a 0-d tensor")


def _wants_grad(input: Tensor) -> bool:
    if not torch.is_grad_enabled():
        return False
    if input.requires_grad or torch.compiler.is_compiling():
        return input.requires_grad
    # under torch.vmap the batched wrapper reports requires_grad=False while autograd still records the op on the
    # tensor it wraps: look through the wrappers (one per vmap level) for a tensor that requires grad
    t = input
    while torch._C._functorch.is_functorch_wrapped_tensor(t):
        t = torch._C._functorch.get_unwrapped(t)
        if t.requires_grad:
            return True
    return False


def _grad_scale(input: Tensor, reduction: str) -> float:
    """The factor the kernels put into the stored gradient. For "mean" it is the incoming gradient of every row
    that loss.backward() brings (1 / rows, rounded to the loss dtype as mean's backward rounds it), so that the
    backward can hand the stored gradient on without touching it. 1.0 under torch.compile (whose traced backward
    always scales) and for float16, whose range would flush a gradient divided by the row count to zero before a
    loss scaler's factor reaches it."""
    if reduction != "mean" or input.dtype == torch.float16 or torch.compiler.is_compiling():
        return 1.0
    rows = math.prod(input.shape[:-1])
    return _round_to_dtype(1.0 / rows, input.dtype) if rows > 0 else 1.0


def _round_to_dtype(x: float, dtype: torch.dtype) -> float:
    """x rounded to float32 or bfloat16 (through float32, to nearest, ties to even), as a Python float."""
    if dtype == torch.float64:
        return x
    f32 = struct.unpack("f", struct.pack("f", x))[0]
    if dtype != torch.bfloat16:
        return f32
    bits = struct.unpack("I", struct.pack("f", f32))[0]
    bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
    return struct.unpack("f", struct.pack("I", bits))[0]


def _to_input_dtype(target: Tensor, dtype: torch.dtype, op: str = "torchxc::zlpr_loss") -> Tensor:
    """Soft labels in the input's dtype. A narrowing cast must not move a label across 0 or 1: t < 1 rounded to 1
    or t > 0 rounded to 0 would drop the class from a term (such labels become 1 - eps/2 or the smallest normal),
    and a label outside [0, 1] rounded into it (float32 1.0004 -> float16 1, -1e-30 -> -0) would pass the op's range
    check. On the CPU in eager mode the labels' range is checked here (one min/max pass; the error names the label's
    own value); elsewhere (CUDA, torch.compile, vmap: no host sync, nothing data-dependent) such labels become the
    nearest value on their own side (1 + eps, minus the smallest normal), which the op refuses."""
    t = target.to(dtype)
    # any change of floating dtype can round: to fewer mantissa bits (float16 0.9995 -> bfloat16 1) or into a
    # narrower exponent range (bfloat16 1e-9 -> float16 0). No replacement value is copied from the host (new_tensor
    # of a float would be, with a stream sync on CUDA).
    if target.is_floating_point() and target.dtype != dtype:
        info = torch.finfo(dtype)

        def value(v):  # a 0-d value made by t itself: fake or traced like t, filled on its device (no copy)
            return t.new_full((), v)

        if _eager_cpu(target):
            if target.numel() > 0:
                lo, hi = torch.aminmax(target)
                if bool(lo < 0) or bool(hi > 1):
                    _check_label_range(target, op)
        else:  # no check here: labels outside [0, 1] rounded onto 1 or 0 stay outside, for the op to refuse
            t = torch.where((t == 1) & (target > 1), value(1 + info.eps), t)
            t = torch.where((t == 0) & (target < 0), value(-info.tiny), t)
        t = torch.where((t == 1) & (target < 1), value(1 - info.eps / 2), t)
        t = torch.where((t == 0) & (target > 0), value(info.tiny), t)
    return t


def _eager_cpu(t: Tensor) -> bool:
    """Whether t is a plain CPU tensor computed now: not traced (torch.compile, make_fx, fake tensors, any dispatch
    mode) and not batched by vmap, so that data-dependent checks may run on it."""
    from torch._subclasses.fake_tensor import is_fake

    return (t.device.type == "cpu" and not torch.compiler.is_compiling() and not is_fake(t)
            and torch._C._len_torch_dispatch_stack() == 0
            and not torch._C._functorch.is_functorch_wrapped_tensor(t))


def _check_label_range(target: Tensor, op: str, hint: str = "") -> None:
    """On the CPU, raises naming the first label outside [0, 1] (NaN included): its row (flattened over the leading
    dims), value and class, then ``hint``. Data-dependent: for error paths only (the kernels check every label)."""
    outside = ~((target >= 0) & (target <= 1))
    if target.device.type == "cpu" and target.dim() > 0 and target.numel() > 0 and bool(outside.any()):
        flat = outside.reshape(-1, target.shape[-1])
        row, cls = (int(i) for i in flat.nonzero()[0])
        value = target.reshape(-1, target.shape[-1])[row, cls].item()
        raise RuntimeError(f"{op}: labels must lie in [0, 1], but row {row} has {int(flat[row].sum())} outside, "
                           f"the first {_shortest(value, target.dtype)} (class {cls}){hint}")


def _shortest(value, dtype: torch.dtype) -> str:
    """The shortest decimal that reads back as ``value`` in ``dtype`` (float32 for the narrower floats, whose values
    float32 holds exactly): 1.0004 rather than 1 or 1.0003999471664429, as the CPU kernel prints it."""
    if not isinstance(value, float) or dtype == torch.float64 or value != value:
        return repr(value)
    for p in range(1, 10):
        text = f"{value:.{p}g}"
        if struct.unpack("f", struct.pack("f", float(text)))[0] == value:
            return text
    return repr(value)


def _class_mask(mask: Optional[Tensor], shape: torch.Size, op: str = "torchxc.zlpr_loss") -> Optional[Tensor]:
    """A mask the kernels take, for logits of `shape`: that shape, or [C] when it only varies along the class dim."""
    if mask is None:
        return None
    check_tensor(mask, "mask", op)
    if mask.dtype != torch.bool:
        raise TypeError(f"{op}: mask must be a bool tensor, got {mask.dtype}")
    if mask.dim() == 0:
        return mask.expand(shape[-1:]).contiguous()
    if mask.shape == shape:
        return mask
    try:
        broadcast = torch.broadcast_shapes(mask.shape, shape)
    except RuntimeError:
        broadcast = None
    if broadcast != shape:
        raise ValueError(f"{op}: mask of shape {tuple(mask.shape)} does not broadcast to the input's "
                         f"shape {tuple(shape)}")
    if all(s == 1 for s in mask.shape[:-1]) and mask.shape[-1] == shape[-1]:
        return mask.reshape(shape[-1])
    return mask.expand(shape)


def _reduce(loss: Tensor, reduction: str) -> Tensor:
    if reduction == "none":
        return loss
    return loss.sum() if reduction == "sum" else loss.mean()


# ---- fake kernels ----------------------------------------------------------------------------------------------


def _zlpr_metadata(op: str, input: Tensor, mask: Optional[Tensor]) -> None:
    metadata(op, "input", input, FLOATS, min_dim=1)
    if mask is not None:
        metadata(op, "mask", mask, (torch.bool,))


def _zlpr_outputs(input: Tensor, compute_grad: bool) -> Tuple[Tensor, Tensor]:
    grad = input.new_empty(input.shape) if compute_grad else input.new_empty((0,))
    return input.new_empty(input.shape[:-1]), grad


@torch.library.register_fake("torchxc::zlpr_loss")
def _zlpr_fake(input: Tensor, labels: Tensor, mask: Optional[Tensor] = None,
               compute_grad: bool = True, grad_scale: float = 1.0) -> Tuple[Tensor, Tensor]:
    same_device("torchxc::zlpr_loss", input, target=labels, mask=mask)
    _zlpr_metadata("torchxc::zlpr_loss", input, mask)
    metadata("torchxc::zlpr_loss", "target", labels, (torch.bool, input.dtype))
    return _zlpr_outputs(input, compute_grad)


@torch.library.register_fake("torchxc::zlpr_loss_sparse")
def _zlpr_sparse_fake(input: Tensor, labels: Tensor, mask: Optional[Tensor] = None,
                      compute_grad: bool = True, grad_scale: float = 1.0) -> Tuple[Tensor, Tensor]:
    same_device("torchxc::zlpr_loss_sparse", input, positives=labels, mask=mask)
    _zlpr_metadata("torchxc::zlpr_loss_sparse", input, mask)
    metadata("torchxc::zlpr_loss_sparse", "positives", labels, (torch.int64,), dim=input.dim())
    return _zlpr_outputs(input, compute_grad)

# Autograd: csrc/autograd/zlpr_autograd.cpp (the backward scales the gradient the forward stored).
