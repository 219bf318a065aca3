"""LANET (Kovtun et al., "Label Attention Network for sequential multi-label classification", arXiv 2303.00280):
self-attention over labels, not over time steps.

Each label c of the vocabulary is a token, the concatenation of
  (a) its embedding,
  (b) the sum, over the last ``look_back`` events of the history that contain c, of a time-gap embedding plus a
      position embedding (zero when c is absent from the history),
  (c) where the data has amounts, the same sum for an amount embedding (bucketed amounts);
  (d) optionally (``past_counts=True``, a torchxc extension, not in the paper) a projection of how often the label
      occurred in the user's *whole* past (log1p(count), count / the user's largest count, count > 0): the
      look-back window alone hides older repeats, which is what the personal-frequency baseline ranks by;
  (e) optionally (``transitions=True``, a torchxc extension) a projection of the label's transition lift from the
      user's most recent event and from the user's whole past
      (:class:`torchxc.temporal_sets.transitions.TransitionPrior`): what the training users did next, which is
      the signal for labels new to the user; the same two numbers also enter every label's logit through one
      learned linear map, so that labels outside the tokens of a large vocabulary get them too;
  (f) optionally (``neighbours=True``, a torchxc extension) a projection of the label's lift in the label distribution
      of the user's most similar training users (:class:`torchxc.temporal_sets.neighbours.NeighbourPrior`), which
      also enters every label's logit through a learned scale (it does not choose the tokens of a large vocabulary);
an optional learned id token goes in front, a TransformerEncoder mixes the tokens, and one shared Linear head gives
each label token its logit. The attention normaliser is ``softmax`` or ``sparsemax`` (torchxc.sparsemax: sparse
label attention); :attr:`LANET.zero_fraction` reports the share of exactly-zero attention weights over the eval-mode
forward passes since :meth:`LANET.reset_attention_stats` (every layer, head and valid key).

Large vocabularies: attention over all C tokens costs O(C^2) per example. When C exceeds ``max_tokens``, the tokens
of an example are its candidates -- the labels of its look-back window first (they carry the time-gap and position
embeddings), then (with past counts) the other labels of its whole past, then the most popular labels of the
training data, up to ``max_tokens`` -- and the other labels get only their learned per-label bias (a popularity
prior that every label has). With C <= max_tokens (DC: 217 labels) every label is a token.
"""
from __future__ import annotations  # X | None annotations on Python 3.9
import math
import numbers

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import torchxc

from .._checks import check_counts

__all__ = ["Dropout16", "LANET", "TimeStepTransformer", "LabelAttentionLayer"]


class Dropout16(nn.Dropout):
    """:class:`torch.nn.Dropout` whose training-mode masks on the CPU come from 16 random bits per element: four
    elements per 64-bit word of ``torch.randint`` (the default generator, so ``torch.manual_seed`` reproduces them),
    instead of one ``bernoulli_`` draw per element, which took a fifth of a LANET training step on 2 CPU cores.
    An element is dropped with probability ``round(p * 2^16) / 2^16`` (p rounded to a multiple of 2^-16) and the kept
    ones are scaled by 1 / (1 - that probability) (that scale rounded to the input's dtype, as ``nn.Dropout`` does:
    0.16% off in bfloat16 at p = 0.1), so the expectation is the input's. Everywhere else (eval
    mode, CUDA, torch.compile, ``inplace=True``, integer inputs) it is ``nn.Dropout``."""

    def forward(self, x: Tensor) -> Tensor:
        if (not self.training or self.p == 0 or self.inplace or x.device.type != "cpu" or not x.is_floating_point()
                or torch.compiler.is_compiling()):
            return super().forward(x)
        drop = round(self.p * 65536)  # dropped iff the element's int16 word < drop - 2^15
        if drop == 0:
            return x
        if drop == 65536:
            return x * 0  # every element dropped (no 1 / (1 - p) = inf scale: 0 * inf would be NaN)
        n = x.numel()
        words = torch.randint(-2**63, 2**63 - 1, ((n + 3) // 4,), dtype=torch.int64)
        keep = words.view(torch.int16)[:n].view(x.shape) >= drop - 32768
        # one pass builds the scaled mask in x's dtype (multiplying by the bool mask converted it in a copy per call)
        return x * torch.where(keep, x.new_full((), 65536 / (65536 - drop)), x.new_zeros(()))


_ALL_MASKED = "a batch element has every key masked (key_padding_mask all True); its attention would be undefined"


class LabelAttentionLayer(nn.Module):
    """A post-norm transformer encoder layer whose attention normaliser is softmax or torchxc.sparsemax."""

    def __init__(self, d_model: int, n_heads: int, d_ff: int, dropout: float, attention: str = "softmax"):
        super().__init__()
        if attention not in ("softmax", "sparsemax"):
            raise ValueError(f"attention must be 'softmax' or 'sparsemax', got {attention!r}")
        if n_heads < 1:
            raise ValueError(f"n_heads must be >= 1, got {n_heads}")
        if d_model % n_heads:
            raise ValueError(f"d_model ({d_model}) must be divisible by n_heads ({n_heads})")
        self.attention, self.h = attention, n_heads
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out = nn.Linear(d_model, d_model)
        self.ff = nn.Sequential(nn.Linear(d_model, d_ff), nn.GELU(), Dropout16(dropout), nn.Linear(d_ff, d_model))
        self.norm1, self.norm2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.drop = Dropout16(dropout)
        # exactly-zero attention weights and all weights (valid keys) counted over eval-mode forwards
        self.zero_count, self.weight_count = 0, 0

    def extra_repr(self) -> str:
        return f"attention={self.attention!r}, n_heads={self.h}"

    def forward(self, x: Tensor, key_padding_mask: Tensor | None = None) -> Tensor:
        B, L, D = x.shape
        q, k, v = self.qkv(x).view(B, L, 3, self.h, D // self.h).permute(2, 0, 3, 1, 4)
        # the mask is tested on the host for CPU tensors outside torch.compile (elsewhere a sync per layer; under
        # torch.compile(fullgraph=True) it cannot be read): there, an assertion in the graph / on the device
        if key_padding_mask is not None and key_padding_mask.device.type == "cpu" and \
                not torch.compiler.is_compiling():
            if not bool(key_padding_mask.any()):
                key_padding_mask = None
            elif bool(key_padding_mask.all(-1).any()):
                raise ValueError(f"LabelAttentionLayer: {_ALL_MASKED}")
        elif key_padding_mask is not None and key_padding_mask.device.type != "meta":
            torch._assert_async(~key_padding_mask.all(-1).any(), f"LabelAttentionLayer: {_ALL_MASKED}")
        if self.attention == "softmax" and self.training:  # PyTorch's fused kernel; statistics only in eval
            mask = None if key_padding_mask is None else ~key_padding_mask[:, None, None, :]
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        else:
            scores = q @ k.transpose(-1, -2) / math.sqrt(D // self.h)  # [B, h, L, L]
            if key_padding_mask is not None:
                scores = scores.masked_fill(key_padding_mask[:, None, None, :], float("-inf"))
            attn = torch.softmax(scores, -1) if self.attention == "softmax" else torchxc.sparsemax(scores, -1)
            if not self.training and attn.device.type != "meta":  # meta: shapes only, no counts to read
                with torch.no_grad():
                    zeros = (attn == 0).sum().item()
                    total = attn.numel()
                    if key_padding_mask is not None:  # padded keys are zero by construction: not counted
                        n_pad = key_padding_mask.sum().item() * self.h * L
                        zeros, total = zeros - n_pad, total - n_pad
                    self.zero_count += zeros
                    self.weight_count += total
            y = attn @ v
        y = y.transpose(1, 2).reshape(B, L, D)
        x = self.norm1(x + self.drop(self.out(y)))
        return self.norm2(x + self.drop(self.ff(x)))


class LANET(nn.Module):
    """Label attention network. Forward takes a batch from :func:`torchxc.temporal_sets.data.collate`:

    - ``history`` bool [B, J, C]: label c is in the j-th most recent history event (j = 0 the latest);
    - ``gap`` int64 [B, J]: time-gap bucket of each event (0 = padding event);
    - ``amount`` int64 [B, J, C] or None: amount bucket of label c in event j (0 = none);
    - ``counts`` float [B, C] or None (required when ``past_counts``): the label's count over the whole past
      (:func:`torchxc.temporal_sets.data.past_count_matrix`);
    - ``transitions`` float [B, C, 2] or None (required when ``transitions``): the transition lifts
      (:meth:`torchxc.temporal_sets.transitions.TransitionPrior.features`);
    - ``neighbours`` float [B, C, 1] or None (required when ``neighbours``): the neighbour lifts
      (:meth:`torchxc.temporal_sets.neighbours.NeighbourPrior.features`);
    and returns logits [B, C] (class c predicted when its logit is high; ZLPR: > 0).

    Args:
        num_labels: C, the label vocabulary (one token per label, or per candidate when C > ``max_tokens``).
        look_back: J, the most history events a token sums over (the data's ``look_back``).
        d_label, d_time, d_amount: widths of the label embedding, of the time-gap + position part and of the
            amount part (0: no amounts); the token width d_model is their sum, plus ``d_time`` for each of
            ``past_counts``, ``transitions`` and ``neighbours`` (:meth:`token_width`), and must be divisible by
            ``n_heads``.
        n_layers, n_heads, d_ff, dropout: the encoder: layers, attention heads, feed-forward width, dropout.
        attention: ``"softmax"`` or ``"sparsemax"`` (torchxc.sparsemax over the keys: sparse label attention).
        id_token: a learned token in front of the label tokens.
        max_tokens: the most label tokens per example (see the module docstring for large vocabularies).
        num_gaps, num_amounts: the number of time-gap and amount buckets (the data's, by default 32 and 16).
        popularity: [C] non-negative label counts of the training data (optional): it initialises every label's
            logit offset to its centred log(1 + count) and chooses which labels get tokens when C > ``max_tokens``.
        past_counts: a token part from the label's count over the whole past (``counts`` in forward).
        transitions: a token part from the transition lifts, plus their own logit term (``transitions`` in
            forward).
        neighbours: a token part from the neighbour lift, plus its own logit term (``neighbours`` in forward).
    """

    def __init__(self, num_labels: int, look_back: int = 3, d_label: int = 48, d_time: int = 16, d_amount: int = 0,
                 n_layers: int = 2, n_heads: int = 4, d_ff: int = 128, dropout: float = 0.1,
                 attention: str = "softmax", id_token: bool = True, max_tokens: int = 512,
                 num_gaps: int = 32, num_amounts: int = 16, popularity: Tensor | None = None,
                 past_counts: bool = False, transitions: bool = False, neighbours: bool = False):
        super().__init__()
        if num_labels < 1 or look_back < 1 or max_tokens < 1:
            raise ValueError(f"LANET: num_labels, look_back and max_tokens must be >= 1, got {num_labels}, {look_back}, "
                             f"{max_tokens}")
        if popularity is not None:
            if not isinstance(popularity, Tensor) or tuple(popularity.shape) != (num_labels,):
                got = tuple(popularity.shape) if isinstance(popularity, Tensor) else type(popularity).__name__
                raise ValueError(f"LANET: popularity must be [{num_labels}] finite label counts >= 0, got {got}")
            check_counts(popularity, "LANET", "popularity", f"[{num_labels}] ")
        self.C, self.look_back, self.max_tokens = num_labels, look_back, max_tokens
        d_model = self.token_width(d_label, d_time, d_amount, past_counts, transitions, neighbours)
        if n_heads < 1:
            raise ValueError(f"LANET: n_heads must be >= 1, got {n_heads}")
        if d_model % n_heads:
            parts = f"d_label {d_label} + d_time {d_time}" + (f" + d_amount {d_amount}" if d_amount else "") + \
                (f" + d_time {d_time} (past_counts)" if past_counts else "") + \
                (f" + d_time {d_time} (transitions)" if transitions else "") + \
                (f" + d_time {d_time} (neighbours)" if neighbours else "")
            raise ValueError(f"LANET: the token width {parts} = {d_model} must be divisible by n_heads, got "
                             f"n_heads={n_heads}")
        self.count = nn.Linear(3, d_time) if past_counts else None
        self.trans = nn.Linear(2, d_time) if transitions else None
        self.trans_out = nn.Linear(2, 1, bias=False) if transitions else None
        self.nbr = nn.Linear(1, d_time) if neighbours else None
        self.nbr_out = nn.Linear(1, 1, bias=False) if neighbours else None
        self.label = nn.Embedding(num_labels, d_label)
        self.gap = nn.Embedding(num_gaps, d_time)
        self.pos = nn.Embedding(look_back, d_time)
        self.amount = nn.Embedding(num_amounts, d_amount) if d_amount else None
        self.id_token = nn.Parameter(torch.randn(d_model) * 0.02) if id_token else None
        self.layers = nn.ModuleList(LabelAttentionLayer(d_model, n_heads, d_ff, dropout, attention)
                                    for _ in range(n_layers))
        self.head = nn.Linear(d_model, 1)
        prior = torch.zeros(num_labels) if popularity is None else (popularity.float() + 1).log()
        self.bias = nn.Parameter(prior - prior.mean())  # every label's logit offset (the only part of non-tokens)
        order = torch.argsort(popularity.float(), descending=True) if popularity is not None \
            else torch.arange(num_labels)
        # saved with the weights: they choose which labels get tokens on large vocabularies (a model loaded into one
        # built without the same popularity would otherwise pick other tokens)
        self.register_buffer("popular", order)
        share = torch.ones(num_labels) if popularity is None else popularity.float().clamp(min=1)
        self.register_buffer("log_popularity", (share / share.sum()).log())

    def extra_repr(self) -> str:
        return (f"num_labels={self.C}, look_back={self.look_back}, max_tokens={self.max_tokens}, "
                f"id_token={self.id_token is not None}, past_counts={self.count is not None}, "
                f"transitions={self.trans is not None}, neighbours={self.nbr is not None}")

    @staticmethod
    def token_width(d_label: int, d_time: int, d_amount: int = 0, past_counts: bool = False,
                    transitions: bool = False, neighbours: bool = False) -> int:
        """The width of a label token (the model's d_model): label, time and amount parts, plus a d_time wide part
        for each of past counts, transitions and neighbours."""
        return d_label + d_time + d_amount + d_time * (bool(past_counts) + bool(transitions) + bool(neighbours))

    @property
    def zero_fraction(self) -> float:
        """Share of exactly-zero attention weights (valid keys) in the eval-mode forwards since the last
        :meth:`reset_attention_stats`, over every layer."""
        return sum(layer.zero_count for layer in self.layers) / max(sum(layer.weight_count for layer in self.layers), 1)

    def reset_attention_stats(self) -> None:
        for layer in self.layers:
            layer.zero_count, layer.weight_count = 0, 0

    def candidates(self, history: Tensor, counts: Tensor | None = None,
                   transitions: Tensor | None = None) -> Tensor:
        """Token labels [B, L], L = min(C, max_tokens), never padded: every label when C <= max_tokens, else the
        labels of the example's look-back window first, then those of the rest of its past, then the others by
        popularity (with ``transitions``: by popularity plus the transition lift from the whole past, i.e. by the
        smoothed transition probability)."""
        B = history.shape[0]
        dev = history.device
        if self.C <= self.max_tokens:
            return torch.arange(self.C, device=dev).expand(B, -1)
        seen = history.any(1)  # [B, C]
        if counts is not None:
            seen = seen | (counts > 0)
        if transitions is None:
            key = torch.empty(self.C, dtype=torch.long, device=dev)
            key[self.popular] = torch.arange(self.C, device=dev)
            key = key[None, :].expand(B, -1)
        else:  # by log pop(c) + lift = log P(c | past); equal scores in popularity order
            score = self.log_popularity[None, :] + transitions[..., 1].to(self.log_popularity.dtype)
            order = torch.argsort(-score[:, self.popular], dim=1, stable=True)
            key = torch.empty_like(order).scatter_(1, self.popular[order], torch.arange(self.C, device=dev).expand(B, -1))
        # the look-back window's labels first (only they carry time-gap and position embeddings), then the rest of
        # the past, then the others by the key; keep max_tokens
        key = key - seen.long() * (self.C + 1) - history.any(1).long() * (2 * self.C + 2)
        return torch.topk(key, self.max_tokens, dim=1, largest=False).indices

    def forward(self, history: Tensor, gap: Tensor, amount: Tensor | None = None,
                counts: Tensor | None = None, transitions: Tensor | None = None,
                neighbours: Tensor | None = None) -> Tensor:
        _check_events("LANET", history, gap, self.C, self.look_back, self.gap.num_embeddings)
        B, J, C = history.shape
        if amount is not None and (self.amount is None or tuple(amount.shape) != (B, J, C)):
            raise ValueError(f"LANET.forward: amount must be [B, J, C] = [{B}, {J}, {C}] for a model built with "
                             f"d_amount > 0, got {tuple(amount.shape)} (d_amount "
                             f"{0 if self.amount is None else self.amount.embedding_dim})")
        if amount is not None:
            _check_buckets("LANET", "amount", amount, self.amount.num_embeddings)
        extras = (("counts", counts, self.count, "past_counts", (B, C), "past_count_matrix"),
                  ("transitions", transitions, self.trans, "transitions", (B, C, 2), "TransitionPrior.features"),
                  ("neighbours", neighbours, self.nbr, "neighbours", (B, C, 1), "NeighbourPrior.features"))
        for name, value, part, flag, shape, source in extras:
            if part is not None and (value is None or tuple(value.shape) != shape):
                dims = ", ".join(["B", "C"] + [str(d) for d in shape[2:]])
                raise ValueError(f"LANET({flag}=True).forward needs {name} [{dims}] = {list(shape)} ({source}), got "
                                 f"{None if value is None else list(value.shape)}")
            if value is None:
                continue
            if part is None:  # it would be ignored: the caller meant a model that uses it
                raise ValueError(f"LANET.forward: got {name}, but the model was built without {flag}=True and "
                                 f"would ignore them")
            if not value.is_floating_point():
                raise ValueError(f"LANET.forward: {name} must be a floating-point tensor, got {value.dtype}")
            if value.device.type == "cpu" and not torch.compiler.is_compiling():  # elsewhere a sync per forward
                lift = name != "counts"  # transition and neighbour lifts may be negative
                bad = ~torch.isfinite(value) if lift else ~(torch.isfinite(value) & (value >= 0))
                if bool(bad.any()):  # NaN logits for every label of the example otherwise
                    what = "finite" if lift else "finite counts >= 0"
                    raise ValueError(f"LANET.forward: {name} must be {what}, got {value[bad][0].item()} (example "
                                     f"{int(bad.reshape(B, -1).any(1).nonzero()[0])})")
        cand = self.candidates(history, counts, transitions)
        L = cand.shape[1]
        member = history.gather(2, cand[:, None, :].expand(B, J, L)).to(self.label.weight.dtype)  # [B, J, L]
        pos = torch.arange(J, device=history.device)
        event = self.gap(gap) + self.pos(pos)[None]  # [B, J, d_time]
        parts = [self.label(cand), torch.einsum("bjl,bjd->bld", member, event)]
        if self.amount is not None:
            a = amount.gather(2, cand[:, None, :].expand(B, J, L)) if amount is not None else \
                torch.zeros(B, J, L, dtype=torch.long, device=history.device)
            parts.append((self.amount(a) * member[..., None]).sum(1))
        if self.count is not None:
            c = counts.to(self.label.weight.dtype)
            top = c.amax(1, keepdim=True).clamp(min=1)
            c = c.gather(1, cand)
            parts.append(self.count(torch.stack([c.log1p(), c / top, (c > 0).to(c.dtype)], -1)))
        if transitions is not None:
            transitions = transitions.to(self.label.weight.dtype)
            parts.append(self.trans(transitions.gather(1, cand[..., None].expand(B, L, 2))))
        if neighbours is not None:
            neighbours = neighbours.to(self.label.weight.dtype)
            parts.append(self.nbr(neighbours.gather(1, cand[..., None])))
        x = torch.cat(parts, -1)
        if self.id_token is not None:
            x = torch.cat([self.id_token.expand(B, 1, -1), x], 1)
        for layer in self.layers:  # no key-padding mask (tokens are never padded): no host-side mask test per layer
            x = layer(x)
        if self.id_token is not None:
            x = x[:, 1:]
        token_logits = self.head(x).squeeze(-1)  # [B, L]
        logits = self.bias.expand(B, -1).clone()
        if transitions is not None:
            logits = logits + self.trans_out(transitions).squeeze(-1)
        if neighbours is not None:
            logits = logits + self.nbr_out(neighbours).squeeze(-1)
        # in the bias's dtype: under autocast the head gives bfloat16 token logits, which scatter_add refused to mix
        return logits.scatter_add(1, cand, token_logits.to(logits.dtype))


class TimeStepTransformer(nn.Module):
    """The vanilla baseline: one token per time step (the event's multi-hot vector projected to d_model, plus a
    position embedding and the event's time-gap embedding), a stack of self-attention layers (post-norm, GELU: the
    LabelAttentionLayer LANET uses) over the J steps with padding events masked, the latest step's output -> Linear ->
    C logits. ``forward(history, gap, amount=None)``: ``amount`` is accepted so that both models take the same call
    and is ignored (the baseline sees multi-hot events only).

    Args:
        num_labels: C, the width of the multi-hot events and of the output.
        look_back: J, the most history events (one token each).
        d_model, n_layers, n_heads, d_ff, dropout: the encoder (d_model divisible by n_heads).
        num_gaps: the number of time-gap buckets (the data's, by default 32)."""

    def __init__(self, num_labels: int, look_back: int = 3, d_model: int = 64, n_layers: int = 2, n_heads: int = 4,
                 d_ff: int = 128, dropout: float = 0.1, num_gaps: int = 32):
        super().__init__()
        for name, v in (("num_labels", num_labels), ("look_back", look_back), ("d_model", d_model),
                        ("n_layers", n_layers), ("d_ff", d_ff)):
            if not isinstance(v, numbers.Integral) or isinstance(v, bool) or v < (0 if name == "n_layers" else 1):
                raise ValueError(f"TimeStepTransformer: {name} must be an int >= {0 if name == 'n_layers' else 1}, "
                                 f"got {v!r}")
        self.inp = nn.Linear(num_labels, d_model)
        self.pos = nn.Embedding(look_back, d_model)
        self.gap = nn.Embedding(num_gaps, d_model)
        self.layers = nn.ModuleList(LabelAttentionLayer(d_model, n_heads, d_ff, dropout) for _ in range(n_layers))
        self.out = nn.Linear(d_model, num_labels)
        self.look_back = look_back

    def forward(self, history: Tensor, gap: Tensor, amount: Tensor | None = None) -> Tensor:
        _check_events("TimeStepTransformer", history, gap, self.inp.in_features, self.look_back,
                      self.gap.num_embeddings)
        B, J, C = history.shape
        pos = torch.arange(J, device=history.device)
        x = self.inp(history.to(self.inp.weight.dtype)) + self.pos(pos)[None] + self.gap(gap)
        pad = gap == 0  # padding events
        pad[:, 0] = False  # the latest step is always present
        for layer in self.layers:
            x = layer(x, pad)
        return self.out(x[:, 0])


def _check_events(model: str, history: Tensor, gap: Tensor, C: int, look_back: int, num_gaps: int) -> None:
    """history bool [B, J, C] (most recent event first) with 1 <= J <= look_back, gap integer [B, J] in
    [0, num_gaps) (the range is checked on CPU tensors outside torch.compile: elsewhere it would cost a sync)."""
    if history.dtype != torch.bool:
        raise ValueError(f"{model}.forward: expected history of dtype bool (label c is in event j), got "
                         f"{history.dtype}")
    _check_buckets(model, "gap", gap, num_gaps)
    if history.dim() != 3 or history.shape[2] != C or not 1 <= history.shape[1] <= look_back:
        raise ValueError(f"{model}.forward: expected history [B, J, C] with C = {C} labels and 1 <= J <= look_back = "
                         f"{look_back} events, got {tuple(history.shape)}")
    if tuple(gap.shape) != tuple(history.shape[:2]):
        raise ValueError(f"{model}.forward: expected gap [B, J] = {list(history.shape[:2])}, got {tuple(gap.shape)}")
    if history.device.type == "cpu" and gap.device.type == "cpu" and not torch.compiler.is_compiling():
        padded = (gap == 0) & history.any(2)  # gap 0 marks a padding event: one with labels would be dropped or not
        if bool(padded.any()):
            b, j = (int(v) for v in padded.nonzero()[0])
            raise ValueError(f"{model}.forward: event {j} of example {b} has labels but gap bucket 0, which marks a "
                             "padding event; a real event's gap bucket is >= 1")


def _check_buckets(model: str, name: str, buckets: Tensor, num: int) -> None:
    """Integer buckets in [0, num) (the range is checked on CPU tensors outside torch.compile: elsewhere it would
    cost a sync, and an out-of-range bucket is the embedding's index error)."""
    if buckets.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"{model}.forward: expected {name} int64 (or int32) "
                         f"{'time-gap' if name == 'gap' else name} buckets, got {buckets.dtype}")
    if buckets.device.type == "cpu" and buckets.numel() and not torch.compiler.is_compiling():
        lo, hi = (int(v) for v in torch.aminmax(buckets))  # one pass for both bounds
        if lo < 0 or hi >= num:
            raise ValueError(f"{model}.forward: {name} buckets must lie in [0, {num}), got values from {lo} to {hi}")


def loss_fn(name: str, logits: Tensor, target: Tensor) -> Tensor:
    """``zlpr`` (torchxc.zlpr_loss), ``bce``, or ``softmax``: the paper's softmax cross-entropy summed over the
    positives of each example (mean over examples)."""
    if name == "zlpr":
        return torchxc.zlpr_loss(logits, target)
    if name == "bce":
        return F.binary_cross_entropy_with_logits(logits, target.float())
    if name == "softmax":
        return -(torch.log_softmax(logits, -1) * target.float()).sum(-1).mean()
    raise ValueError(f"loss must be 'zlpr', 'bce' or 'softmax', got {name!r}")
