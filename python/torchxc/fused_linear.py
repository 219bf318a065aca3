"""ZLPR on top of a linear classifier without materialising the [N, C] logits.

``fused_linear_zlpr_loss(hidden, weight, bias, labels)`` equals
``zlpr_loss(hidden @ weight.T + bias, labels)`` (or ``zlpr_loss_sparse``), but runs over chunks of rows: each
chunk's logits go through the fused ZLPR kernel, which returns the loss and the logit gradient in one pass, and
the chunk's contributions to the gradients of hidden, weight and bias are accumulated right away (the approach of
Liger-Kernel's fused linear cross-entropy). Peak extra memory is one chunk of logits and its gradient, plus the
weight gradient, instead of several [N, C] tensors. The backward only scales the stored gradients.
"""
import math
from typing import List, Optional, Tuple

import torch
from torch import Tensor

from ._checks import as_int, check_tensor, is_integer_dtype, long_indices
from ._fake import same_device
from .zlpr import _check_label_range, _class_mask, _eager_cpu, _to_input_dtype, _wants_grad

__all__ = ["fused_linear_zlpr_loss"]


def fused_linear_zlpr_loss(
    hidden: Tensor,
    weight: Tensor,
    bias: Optional[Tensor],
    target_or_positives: Tensor,
    mask: Optional[Tensor] = None,
    reduction: str = "mean",
    sparse: Optional[bool] = None,
    chunk_size: Optional[int] = None,
) -> Tensor:
    """ZLPR loss of ``hidden @ weight.T + bias`` computed in chunks of rows.

    Args:
        hidden: [..., H] features (float16/bfloat16/float32/float64).
        weight: [C, H] classifier weights; bias: [C] or None. Same dtype and device as ``hidden``.
        target_or_positives: dense labels [..., C] (bool/{0,1} hard or float soft, as in :func:`torchxc.zlpr_loss`),
            or padded positive indices int64 [..., P] (as in :func:`torchxc.zlpr_loss_sparse`).
        mask: optional bool class mask [C] or [..., C].
        reduction: ``"mean"`` (over rows) or ``"sum"``. (``"none"`` would need the backward to rerun every chunk;
            use :func:`torchxc.zlpr_loss` on the logits for per-row losses.)
        sparse: whether ``target_or_positives`` holds positive indices; by default, an integer tensor whose last
            dim is not C does. An integer [..., C] tensor is read as dense {0, 1} labels (on the CPU, one holding
            other values is refused with a pointer to ``sparse=True``); pass ``sparse`` to say which you mean.
        chunk_size: rows per chunk; by default about max(N * H / C, H / 8) rows (a power of two), so that a chunk
            of logits is about as large as ``hidden`` but at least an eighth of ``weight``.

    Returns:
        The scalar loss; gradients flow to hidden, weight and bias. For float16/bfloat16 the weight and bias
        gradients are accumulated in float32 across chunks; in float16 the mean's 1/N is applied in the backward
        with the incoming gradient (a loss scaler's factor included), not stored in float16.

    Example::

        >>> hidden = torch.randn(4096, 1024, requires_grad=True)
        >>> head = torch.nn.Linear(1024, 131072)
        >>> positives = torch.randint(131072, (4096, 5))
        >>> loss = torchxc.fused_linear_zlpr_loss(hidden, head.weight, head.bias, positives)
        >>> loss.backward()
    """
    op = "torchxc.fused_linear_zlpr_loss"
    if reduction not in ("mean", "sum"):
        raise ValueError(f"torchxc.fused_linear_zlpr_loss: reduction must be 'mean' or 'sum', got {reduction!r}")
    for name, t in (("hidden", hidden), ("weight", weight), ("target_or_positives", target_or_positives)):
        check_tensor(t, name, op)
    for name, t in (("bias", bias), ("mask", mask)):
        if t is not None:
            check_tensor(t, name, op)
    if not hidden.is_floating_point():  # the inner zlpr kernels would name themselves
        raise ValueError(f"torchxc.fused_linear_zlpr_loss: hidden must be float16, bfloat16, float32 or float64, "
                         f"got {hidden.dtype}")
    if hidden.dim() < 1 or weight.dim() != 2 or hidden.shape[-1] != weight.shape[1]:
        raise ValueError(f"torchxc.fused_linear_zlpr_loss: expected hidden [..., H] and weight [C, H], got "
                         f"{tuple(hidden.shape)} and {tuple(weight.shape)}")
    if bias is not None and tuple(bias.shape) != (weight.shape[0],):
        raise ValueError(f"torchxc.fused_linear_zlpr_loss: expected bias of shape ({weight.shape[0]},), got "
                         f"{tuple(bias.shape)}")
    dev = hidden.device.type
    if torch.is_autocast_enabled(dev):
        # as autocast runs a Linear: float32 hidden, weight and bias in the autocast dtype (the casts' backward
        # returns float32 gradients to float32 parameters); the op itself runs with autocast off
        low = torch.get_autocast_dtype(dev)
        hidden, weight, bias = (t.to(low) if t is not None and t.dtype == torch.float32 else t
                                for t in (hidden, weight, bias))
    for name, t in (("weight", weight), ("bias", bias)):
        if t is not None and (t.dtype != hidden.dtype or t.device != hidden.device):
            raise ValueError(f"torchxc.fused_linear_zlpr_loss: {name} must have hidden's dtype and device "
                             f"({hidden.dtype}, {hidden.device}), got {t.dtype}, {t.device}")
    C, H = weight.shape
    lead = hidden.shape[:-1]
    labels = target_or_positives
    if labels.requires_grad and torch.is_grad_enabled():
        raise ValueError("torchxc.fused_linear_zlpr_loss: no gradient with respect to the target; pass "
                         "target_or_positives.detach()")
    if labels.is_complex():
        raise ValueError(f"torchxc.fused_linear_zlpr_loss: labels must be bool, integer or real, got {labels.dtype}")
    if sparse is None:
        sparse = is_integer_dtype(labels) and labels.shape[-1] != C
        if (not sparse and labels.dtype in (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)
                and _eager_cpu(labels) and labels.numel() > 0):  # (aminmax has no uint16/32/64 CPU kernel)
            # an integer [..., C] tensor is ambiguous; its values tell a misread index list apart (CPU only: on a
            # GPU this would synchronise every call of the common dense case)
            lo, hi = (int(v) for v in torch.aminmax(labels))
            if lo < 0 or hi > 1:  # the usual message (row, value, class), then what the values may have meant
                _check_label_range(labels, "torchxc.fused_linear_zlpr_loss",
                                   f". An integer target whose last dim is C = {C} is read as dense {{0, 1}} labels "
                                   f"(these hold values from {lo} to {hi}); for positive class indices (padded with "
                                   "-1) pass sparse=True")
    if labels.shape[:-1] != lead or (not sparse and labels.shape[-1] != C):
        raise ValueError(f"torchxc.fused_linear_zlpr_loss: labels must be [{', '.join(map(str, lead))}, "
                         f"{'P' if sparse else C}], got {tuple(labels.shape)}")
    if sparse and not is_integer_dtype(labels):
        raise ValueError(f"torchxc.fused_linear_zlpr_loss: with sparse=True the labels must be integer class indices "
                         f"(int64, padded with -1), got {labels.dtype}; a dense multi-hot target needs sparse=False")
    N = math.prod(lead)
    h2 = hidden.reshape(N, H)
    labels2 = labels.reshape(N, labels.shape[-1])
    if sparse:
        labels2 = long_indices(labels2, op, "positives", "2^64 - 1 into the padding -1")
    elif labels2.dtype != torch.bool and labels2.dtype != hidden.dtype:
        labels2 = _to_input_dtype(labels2, hidden.dtype, "torchxc.fused_linear_zlpr_loss")
    # a class mask [C], or one row of it per logits row (the logits are [*lead, C], flattened to [N, C] here)
    mask2 = _class_mask(mask, torch.Size((*lead, C)), "torchxc.fused_linear_zlpr_loss")
    if mask2 is not None and mask2.dim() > 1:
        mask2 = mask2.reshape(N, C)
    if chunk_size is not None:
        rows = as_int(chunk_size)  # a NumPy integer too; not True or 2.0
        if rows is None or rows < 1:
            raise ValueError(f"torchxc.fused_linear_zlpr_loss: chunk_size must be a positive int, got {chunk_size!r}")
        chunk_size = rows
    # no gradients under torch.no_grad() (an evaluation pass costs one chunked forward only)
    on = torch.is_grad_enabled()
    grads = [on and _wants_grad(h2), on and _wants_grad(weight), on and bias is not None and _wants_grad(bias)]
    # The default chunk size (0) and the mean's 1 / N are worked out inside the op from hidden's rows, so that
    # nothing here depends on the value of N: a dynamic batch stays one graph (torch.compile, torch.export).
    loss, _, _, _ = torch.ops.torchxc.fused_linear_zlpr.default(
        h2, weight, bias, labels2, mask2, sparse, 0 if chunk_size is None else chunk_size, reduction == "mean", grads
    )
    return loss


@torch.library.custom_op("torchxc::fused_linear_zlpr", mutates_args=())
def _fused_linear_zlpr(
    hidden: Tensor,
    weight: Tensor,
    bias: Optional[Tensor],
    labels: Tensor,
    mask: Optional[Tensor],
    sparse: bool,
    chunk_size: int,
    mean: bool,
    grads: List[bool],
) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """The sum (or, with mean, the mean over the N rows) of the ZLPR losses of hidden @ weight.T + bias, with the
    gradients of that value wrt hidden, weight and bias (empty tensors where grads[i] is False)."""
    _check_op_args(hidden, weight, bias, labels, mask, sparse, chunk_size, grads)
    with torch.autocast(hidden.device.type, enabled=False):  # the products and their out= buffers in one dtype
        rows = _chunk_rows(hidden, weight, chunk_size)
        return _fused_linear_zlpr_impl(hidden, weight, bias, labels, mask, sparse, rows, _scale(hidden.shape[0], mean),
                                       grads)


def _check_positives_range(positives: Tensor, C: int) -> None:
    """Raises naming this op, the batch row and the first index outside [-1, C) (after a chunk's kernel refused)."""
    bad = (positives < -1) | (positives >= C)
    if bool(bad.any()):
        row = int(bad.any(1).nonzero()[0, 0])
        value = int(positives[row][bad[row]][0])
        raise RuntimeError(f"torchxc::fused_linear_zlpr: positive class index {value} of row {row} is out of range "
                           f"for {C} classes (-1 pads the list)")


def _chunk_rows(hidden, weight, chunk_size):
    """Rows per chunk: chunk_size (at most N), or for 0 a chunk of logits about as large as hidden and at least 1/8
    of the weight (H / 8 rows; thinner chunks make the three matrix products per chunk slow and re-read the [C, H]
    weight gradient every few rows), rounded up to a power of two."""
    (N, H), C = hidden.shape, weight.shape[0]
    if chunk_size == 0:
        rows = max(N / max(1, math.ceil(C / max(H, 1))), H / 8)
        chunk_size = max(1, 2 ** math.ceil(math.log2(max(1.0, rows))))
    return int(min(chunk_size, max(N, 1)))


def _scale(rows, mean):
    """The loss's factor: 1 / rows for a mean (NaN over no rows, as zlpr_loss's mean), 1 for a sum."""
    if not mean:
        return 1.0
    return 1.0 / rows if rows > 0 else math.nan


def _check_op_args(hidden, weight, bias, labels, mask, sparse, chunk_size, grads):
    """The op's own argument checks (torch.ops users skip the wrapper's): shapes the chunk loop relies on."""
    op = "torchxc::fused_linear_zlpr"
    # one device (a meta argument sends the call to the fake kernel, whose CPU outputs were uninitialised memory)
    same_device(op, hidden, weight=weight, bias=bias, labels=labels, mask=mask)
    for name, t in (("weight", weight), ("bias", bias)):
        if t is not None and t.dtype != hidden.dtype:
            raise ValueError(f"{op}: expected {name} of hidden's dtype {hidden.dtype}, got {t.dtype}")
    if sparse and labels.dtype != torch.int64:
        raise ValueError(f"{op}: expected positives (sparse=True) of dtype int64, got {labels.dtype}")
    if not sparse and labels.dtype not in (torch.bool, hidden.dtype):
        raise ValueError(f"{op}: expected dense labels of dtype bool or hidden's dtype {hidden.dtype}, got "
                         f"{labels.dtype}")
    if mask is not None and mask.dtype != torch.bool:
        raise ValueError(f"{op}: expected mask of dtype bool, got {mask.dtype}")
    if hidden.dim() != 2 or weight.dim() != 2 or hidden.shape[1] != weight.shape[1]:
        raise ValueError(f"{op}: expected hidden [N, H] and weight [C, H], got {tuple(hidden.shape)} and "
                         f"{tuple(weight.shape)}")
    N, C = hidden.shape[0], weight.shape[0]
    if bias is not None and tuple(bias.shape) != (C,):
        raise ValueError(f"{op}: expected bias [{C}], got {tuple(bias.shape)}")
    if labels.dim() != 2 or labels.shape[0] != N or (not sparse and labels.shape[1] != C):
        raise ValueError(f"{op}: expected labels [{N}, {'P' if sparse else C}], got {tuple(labels.shape)}")
    if mask is not None and not (tuple(mask.shape) == (C,) or tuple(mask.shape) == (N, C)):
        raise ValueError(f"{op}: expected mask [{C}] or [{N}, {C}], got {tuple(mask.shape)}")
    if chunk_size < 0:
        raise ValueError(f"{op}: expected chunk_size >= 1 (or 0: the default), got {chunk_size}")
    if len(grads) != 3:
        raise ValueError(f"{op}: expected grads = [hidden, weight, bias] flags, got {len(grads)} flags")


def _require_device_kernels(device: torch.device) -> None:
    """This op runs the zlpr kernels on `device`: a CUDA tensor with a build without CUDA kernels gets the error
    under this op's name (it came from the inner torchxc::zlpr_loss, which the caller never called)."""
    from . import _C

    if device.type == "cuda" and not _C.with_cuda:
        raise RuntimeError("torchxc::fused_linear_zlpr: this build of torchxc has no CUDA kernels (it was compiled "
                           "without CUDA), but got CUDA tensors. Rebuild with a CUDA build of torch and the CUDA "
                           "toolkit (FORCE_CUDA=1 pip install ...), or move the inputs to the CPU.")


def _fused_linear_zlpr_impl(hidden, weight, bias, labels, mask, sparse, chunk_size, scale, grads):
    _require_device_kernels(hidden.device)
    N, H = hidden.shape
    C = weight.shape[0]
    want_h, want_w, want_b = grads
    reduced = hidden.dtype in (torch.float16, torch.bfloat16)
    acc = torch.float32 if reduced else hidden.dtype
    # float16: the gradients are stored without `scale` (the weight and bias ones in float32) and the backward
    # applies scale * grad_loss, as PyTorch's own backward does: a mean's 1/N applied here would push small float16
    # gradients into subnormals before a loss scaler's factor (torch.amp.GradScaler) could lift them.
    unscaled = hidden.dtype == torch.float16
    gscale = 1.0 if unscaled else scale
    grad_h = torch.empty_like(hidden) if want_h else hidden.new_empty(0)
    grad_w = torch.zeros(C, H, dtype=acc, device=hidden.device) if want_w else hidden.new_empty(0)
    grad_b = torch.zeros(C, dtype=acc, device=hidden.device) if want_b else hidden.new_empty(0)
    total = torch.zeros((), dtype=torch.float64 if hidden.dtype == torch.float64 else torch.float32,
                        device=hidden.device)
    op = torch.ops.torchxc.zlpr_loss_sparse.default if sparse else torch.ops.torchxc.zlpr_loss.default
    need_grad = want_h or want_w or want_b
    for start in range(0, N, chunk_size):
        end = min(start + chunk_size, N)
        h = hidden[start:end]
        logits = torch.addmm(bias, h, weight.t()) if bias is not None else h @ weight.t()
        m = mask if mask is None or mask.dim() == 1 else mask[start:end]
        try:
            loss, g = op(logits, labels[start:end], m, need_grad, gscale if need_grad else 1.0)  # gscale * dL/dlogits
        except RuntimeError:
            if not sparse and labels.is_floating_point():  # name the batch's row, not the chunk's
                _check_label_range(labels, "torchxc.fused_linear_zlpr_loss")
            if sparse:  # name this op (the error came from the zlpr_loss_sparse kernel) and the batch's row
                _check_positives_range(labels, C)
            raise
        total += loss.sum(dtype=total.dtype)
        del logits
        if not need_grad:
            continue
        if want_h:
            torch.mm(g, weight, out=grad_h[start:end])
        if want_w:
            if reduced:
                grad_w.addmm_(g.t().float(), h.float())
            else:
                grad_w.addmm_(g.t(), h)
        if want_b:
            grad_b += g.sum(0, dtype=acc)
    loss = (total * scale).to(hidden.dtype)
    if not unscaled:
        grad_w = grad_w.to(weight.dtype) if want_w else grad_w
        grad_b = grad_b.to(weight.dtype) if want_b else grad_b
    return loss, grad_h, grad_w, grad_b


@_fused_linear_zlpr.register_fake
def _(hidden, weight, bias, labels, mask, sparse, chunk_size, mean, grads):
    _check_op_args(hidden, weight, bias, labels, mask, sparse, chunk_size, grads)
    want_h, want_w, want_b = grads
    stored = torch.float32 if hidden.dtype == torch.float16 else weight.dtype  # see _fused_linear_zlpr
    return (
        hidden.new_empty(()),
        torch.empty_like(hidden) if want_h else hidden.new_empty(0),
        weight.new_empty(weight.shape, dtype=stored) if want_w else hidden.new_empty(0),
        weight.new_empty(weight.shape[:1], dtype=stored) if want_b else hidden.new_empty(0),
    )


def _setup_context(ctx, inputs, output):
    ctx.grads = inputs[8]
    ctx.unscaled = inputs[0].dtype == torch.float16  # stored without the scale (see _fused_linear_zlpr)
    # the scale of the unscaled (float16) gradients; over no rows they are zeros and stay so (the loss is NaN)
    rows = inputs[0].shape[0]
    ctx.scale = _scale(rows, inputs[7]) if rows > 0 else 0.0
    ctx.dtype = inputs[1].dtype
    _, grad_h, grad_w, grad_b = output
    ctx.save_for_backward(grad_h, grad_w, grad_b)
    ctx.set_materialize_grads(False)  # the gradient outputs get no gradient: no [C, H] zeros in the backward


def _no_double_backward(outputs, incoming):
    """Under create_graph=True, gradients whose dependence on the inputs is not recorded (the stored ones) get a
    node that raises when differentiated, so a second derivative is an error rather than silently missing terms.
    The node (torchxc::_double_backward_error, the C++ losses' own mechanism) is linked to this backward node's
    edges (hidden, weight, bias) and to the incoming gradient, so that differentiating the gradients with respect to
    hidden reaches it: linked to detached copies only (as torch.autograd.function.once_differentiable does),
    autograd.grad(g, hidden) failed with "not used in the graph" and torch.autograd.functional.hessian returned
    zeros. It holds no tensor beyond the backward."""
    if not torch.is_grad_enabled():
        return outputs
    live = [i for i, t in enumerate(outputs) if isinstance(t, Tensor)]
    if not live:
        return outputs
    wrapped = torch.ops.torchxc._double_backward_error(
        [outputs[i] for i in live], [incoming],
        "torchxc.fused_linear_zlpr_loss: double backward (differentiating its gradient again) is not supported")
    out = list(outputs)
    for i, t in zip(live, wrapped):
        out[i] = t
    return tuple(out)


def _is_traced(t: Tensor) -> bool:
    from torch._subclasses.fake_tensor import is_fake

    return torch.compiler.is_compiling() or is_fake(t)


def _backward(ctx, grad_loss, _gh, _gw, _gb):
    # The gradients were computed with the loss; the backward only scales them by the incoming scalar.
    grad_h, grad_w, grad_b = ctx.saved_tensors
    want_h, want_w, want_b = ctx.grads
    if grad_loss is None:  # only the (non-differentiable) gradient outputs were used
        return None, None, None, None, None, None, None, None, None
    for i, name in enumerate(("hidden", "weight", "bias")):
        if ctx.needs_input_grad[i] and not ctx.grads[i]:  # e.g. a graph exported under torch.no_grad(), then trained
            raise RuntimeError(f"torchxc.fused_linear_zlpr_loss: backward needs the gradient of {name}, but the op "
                               "ran without computing it (its forward was traced or exported under torch.no_grad() "
                               f"or with {name} not requiring grad); run the forward with gradients enabled")
    with torch.no_grad():
        if ctx.unscaled:  # float16: scale * grad_loss computed in float32, rounded once into the result
            factor = grad_loss.float() * ctx.scale

            def scaled(g):  # g.float() first: a CUDA multiply would round the float32 factor to float16
                return g.float().mul_(factor).to(ctx.dtype)
        else:
            # The stored gradients are this node's own when the backward frees the graph and is not traced
            # (torch.compile: the traced backward always scales out of place); a retained graph keeps them, and
            # they must not become a .grad that later backwards accumulate into. Then loss.backward() (seed 1) gets
            # them handed on as they are, and any other seed scales them in place: either way the peak holds one
            # [C, H] weight gradient, not two (autograd moves them into .grad without a copy). The seed test is made
            # on the CPU only; on a GPU it would cost a host sync, so the in-place product (no sync, CUDA-graph
            # safe) serves every seed there.
            own = not _is_traced(grad_loss) and not torch.ops.torchxc._backward_keeps_graph()
            one = own and grad_loss.device.type == "cpu" and bool(grad_loss == 1)

            def scaled(g):
                if one:
                    return g
                return g.mul_(grad_loss.to(g.dtype)) if own else g * grad_loss.to(g.dtype)

        out = (scaled(grad_h) if want_h else None, scaled(grad_w) if want_w else None,
               scaled(grad_b) if want_b else None, None, None, None, None, None, None)
    return _no_double_backward(out, grad_loss)


_fused_linear_zlpr.register_autograd(_backward, setup_context=_setup_context)
