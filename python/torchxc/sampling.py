"""Negative sampling for extreme classification: the adversarial tree sampler of Bamler & Mandt (ICLR 2020),
a frequency sampler, and the losses that correct for the sampling bias.

Training a softmax over C classes costs O(C) per example; uniform negative sampling is cheap but its negatives are
easy, so training learns slowly. Bamler & Mandt draw negatives from an auxiliary model q(y | x) that mimics the
data -- a binary tree of logistic classifiers over the labels, O(log C) per sample -- and train the main model's
logits xi_y(x) with a binary logistic loss between positives and those negatives. Its optimum is
xi_y(x) = log p(y | x) - log q(y | x) (Theorem 1), so ``xi + log q`` are softmax logits: see
:func:`adversarial_negative_sampling_loss` and :func:`corrected_logits`.

The tree (exact definition in csrc/common/tree_common.h): C labels, depth D = ceil(log2 C); internal nodes in
heap order (children of i are 2i+1 and 2i+2); leaf j < C holds label ``leaf_to_label[j]``, leaves >= C are
padding. Node i has a logistic classifier P(right | z) = sigmoid(w_i . z + b_i) on z = (x - mean) @ projection;
a node whose right subtree holds only padding goes left with probability 1. q(y | x) is the product of the branch
probabilities on the path to y's leaf and sums to 1 over the C labels.
"""
from __future__ import annotations  # X | None annotations on Python 3.9
import contextlib
import math
import mmap
import numbers

import torch
from torch import Tensor

from ._checks import as_int, check_reduction, check_tensor, is_integer_dtype, long_indices
from ._fake import floating_grad, metadata, same_device

__all__ = [
    "TreeSampler",
    "WeightTree",
    "adversarial_negative_sampling_loss",
    "corrected_logits",
    "sampled_softmax_loss",
]


_HUGE_PAGE = 1 << 21  # the x86-64 / arm64 transparent huge page
_HUGE_PAGE_MIN_BYTES = 1 << 20


def _walk_copy(t: Tensor) -> Tensor:
    """A contiguous copy of a tensor that the walks read at random (node parameters, leaf maps). On Linux, a CPU
    tensor of at least 1 MiB goes into 2 MiB-aligned memory advised MADV_HUGEPAGE, so the kernel backs it with
    transparent huge pages where the system allows them on request (``madvise`` mode, the usual default): the deep
    levels of a large tree touch a random node per walk, and with 4 KiB pages nearly every such load also misses the
    TLB. Measured on 2 Xeon cores (AVX-512), the same process with and without: +10-17% draws/s at C = 2^18, +22%
    at 2^20 (PyTorch's own ``THP_MEM_ALLOC_ENABLE=1`` does the same for every large tensor). Such a storage cannot
    be resized in place (``untyped_storage().resize_``, which FSDP-style code uses to free parameters): assign a
    new tensor to the parameter instead. Anywhere else (GPU, fake or meta tensors, under torch.compile, another OS,
    a failed mapping): a clone."""
    t = t.detach()
    nbytes = t.numel() * t.element_size()
    if (t.device.type != "cpu" or type(t) is not Tensor or nbytes < _HUGE_PAGE_MIN_BYTES
            or not hasattr(mmap, "MADV_HUGEPAGE") or torch.compiler.is_compiling()):
        return t.clone(memory_format=torch.contiguous_format)
    try:
        size = -(-nbytes // _HUGE_PAGE) * _HUGE_PAGE
        region = mmap.mmap(-1, size + _HUGE_PAGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        region.madvise(mmap.MADV_HUGEPAGE)
        start = -torch.frombuffer(region, dtype=torch.uint8, count=1).data_ptr() % _HUGE_PAGE
        # a storage of exactly the tensor's bytes (torch.save writes no padding); it keeps the mapping alive
        raw = torch.frombuffer(region, dtype=torch.uint8, count=nbytes, offset=start)
    except (OSError, ValueError):
        return t.clone(memory_format=torch.contiguous_format)
    out = raw.view(t.dtype).view(t.shape)
    out.copy_(t)
    return out


def _depth(num_labels: int) -> int:
    return max(0, math.ceil(math.log2(num_labels))) if num_labels > 1 else 0


def _count(n, op: str, name: str) -> int:
    """n as a non-negative int below 2^63 (a Python or NumPy integer, or a 0-d integer tensor); 2.7 or True are
    errors, not 2 or 1, and so is 2**64 (which reached the ops as an unreadable argument-parsing error)."""
    value = as_int(n)
    if value is None:
        raise ValueError(f"{op}: {name} must be a non-negative int, got {n!r}")
    if not 0 <= value < 1 << 63:
        raise ValueError(f"{op}: {name} must be a non-negative int below 2^63, got {value}")
    return value


def _is_leaf_map(leaf_to_label: Tensor, num_labels: int, depth: int) -> bool:
    """Whether ``leaf_to_label`` has 2^depth entries whose first ``num_labels`` are a permutation of the labels (on
    the meta device, where there are no values: whether it has 2^depth entries)."""
    if leaf_to_label.device.type == "meta":
        return leaf_to_label.shape == (1 << depth,)
    return leaf_to_label.shape == (1 << depth,) and torch.equal(
        leaf_to_label[:num_labels].sort().values, torch.arange(num_labels, device=leaf_to_label.device))


def _seed_from(generator: torch.Generator | None) -> int:
    """A 62-bit seed for the counter-based generator of the kernels, drawn on the host from a CPU `generator` (or
    from torch's default CPU generator, so torch.manual_seed makes sampling reproducible). The draws themselves run
    on the features' device."""
    if generator is not None and not hasattr(generator, "device"):  # an int seed failed with an AttributeError
        raise ValueError(f"TreeSampler.sample: generator must be a torch.Generator or None, got "
                         f"{type(generator).__name__}")
    if generator is not None and generator.device.type != "cpu":
        raise ValueError("TreeSampler.sample: pass a CPU torch.Generator (it only seeds the kernels' counter-based "
                         "generator; the draws run on the features' device)")
    return int(torch.randint(0, 2 ** 62, (1,), generator=generator).item())


class TreeSampler(torch.nn.Module):
    """The adversarial tree sampler q(y | x). Build it with :meth:`fit` (from data) or :meth:`from_parameters`.

    Its node classifiers are parameters (``node_weight`` [2^D - 1, k], ``node_bias`` [2^D - 1]), so the tree can
    also be trained by gradient descent through :meth:`log_prob`. Move it with ``.to(device)``.

    Example::

        >>> sampler = torchxc.TreeSampler.fit(features, labels, num_labels=C, dim=16)
        >>> neg, neg_log_q = sampler.sample(x_batch, num_samples=64)          # [B, 64] each
        >>> pos_log_q = sampler.log_prob(x_batch, y_batch[:, None])[:, 0]

    The constructor takes what :meth:`from_parameters` takes: ``node_weight`` [2^D - 1, k] and ``node_bias``
    [2^D - 1] in heap order (D = ceil(log2 C)), ``num_labels`` C, ``leaf_to_label`` int64 [2^D] (its first C entries
    a permutation of the labels, the rest padding; default: label j on leaf j), ``projection`` [F, k] and ``mean``
    [F] (z = (x - mean) @ projection; each optional: without a projection z = x - mean and F = k, without a mean
    nothing is subtracted).
    """

    def __init__(self, node_weight: Tensor, node_bias: Tensor, num_labels: int, leaf_to_label: Tensor | None = None,
                 projection: Tensor | None = None, mean: Tensor | None = None):
        super().__init__()
        num_labels = _count(num_labels, "TreeSampler", "num_labels")
        if node_weight.dtype not in (torch.float32, torch.float64) or not node_bias.is_floating_point():
            raise ValueError(f"TreeSampler: node_weight must be float32 or float64 (the sampling ops' dtypes) and "
                             f"node_bias floating point (cast to node_weight's dtype), got {node_weight.dtype} and "
                             f"{node_bias.dtype}")
        if leaf_to_label is not None and not is_integer_dtype(leaf_to_label):
            raise ValueError(f"TreeSampler: leaf_to_label must hold integer labels, got {leaf_to_label.dtype}")
        D = _depth(num_labels)
        nodes = (1 << D) - 1
        if node_weight.dim() != 2 or node_weight.shape[0] != nodes:
            raise ValueError(f"TreeSampler: node_weight must be [2^D - 1 = {nodes}, k] for {num_labels} labels, got "
                             f"{tuple(node_weight.shape)}")
        if tuple(node_bias.shape) != (nodes,):
            raise ValueError(f"TreeSampler: node_bias must be [{nodes}], got {tuple(node_bias.shape)}")
        k = node_weight.shape[1]
        if num_labels < 1:
            raise ValueError(f"TreeSampler: num_labels must be >= 1, got {num_labels}")
        if leaf_to_label is None:
            leaf_to_label = torch.arange(1 << D)
            leaf_to_label[num_labels:] = -1
        leaf_to_label = leaf_to_label.to(device=node_weight.device, dtype=torch.long)  # the buffers live with the nodes
        real = leaf_to_label[:num_labels]
        if not _is_leaf_map(leaf_to_label, num_labels, D):
            raise ValueError(f"TreeSampler: leaf_to_label must have {1 << D} entries whose first {num_labels} are a "
                             "permutation of the labels")
        label_to_leaf = torch.empty(num_labels, dtype=torch.long, device=real.device)
        label_to_leaf[real] = torch.arange(num_labels, device=real.device)
        for name, t in (("projection", projection), ("mean", mean)):
            if t is not None and not t.is_floating_point():
                raise ValueError(f"TreeSampler: {name} must be a real floating-point tensor, got {t.dtype}")
        if projection is not None and (projection.dim() != 2 or projection.shape[1] != k):
            raise ValueError(f"TreeSampler: projection must be [F, {k}], got {tuple(projection.shape)}")
        F = projection.shape[0] if projection is not None else k
        if mean is not None and tuple(mean.shape) != (F,):
            raise ValueError(f"TreeSampler: mean must be [F = {F}] (the " +
                             ("projection's input width" if projection is not None else "node width k, as there is "
                              "no projection") + f"), got {tuple(mean.shape)}")
        self.num_labels = int(num_labels)
        self.depth = D
        self.node_weight = torch.nn.Parameter(_walk_copy(node_weight))
        self.node_bias = torch.nn.Parameter(_walk_copy(node_bias.to(node_weight.dtype)))
        self.register_buffer("leaf_to_label", _walk_copy(leaf_to_label))
        self.register_buffer("label_to_leaf", _walk_copy(label_to_leaf))
        # the projection in the nodes' dtype (so float64 nodes get float64 z)
        self.register_buffer("projection", None if projection is None else
                             projection.detach().to(node_weight.dtype).clone())
        self.register_buffer("mean", None if mean is None else mean.detach().to(node_weight.dtype).clone())

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # the label maps are checked as the constructor checks them, before anything is copied in: a map that is
        # not a permutation, or a label_to_leaf that is not its inverse, made sample and log_prob disagree silently
        l2l, inv = state_dict.get(prefix + "leaf_to_label"), state_dict.get(prefix + "label_to_leaf")
        C, D = self.num_labels, self.depth
        # the state's label count (not stored: label_to_leaf has one entry per label; leaf_to_label's padding leaves
        # may hold anything, so a state with it alone is left to the permutation check below)
        state_C = inv.shape[0] if isinstance(inv, Tensor) and inv.dim() == 1 else C
        if state_C != C:
            raise ValueError(f"TreeSampler.load_state_dict: the state is a sampler of {state_C} labels, this one has "
                             f"{C}")
        # one map alone (strict=False) must agree with the module's other map; meta tensors have no values to check
        pair = (self.leaf_to_label if l2l is None else l2l, self.label_to_leaf if inv is None else inv)
        if (l2l is not None or inv is not None) and all(t.device.type != "meta" for t in pair):
            l2l, inv = (t.detach().to("cpu", torch.long) for t in pair)
            ok = _is_leaf_map(l2l, C, D) and inv.shape == (C,)
            if ok:  # every label's leaf is one of the first C, and maps back to the label
                ok = bool(((inv >= 0) & (inv < C)).all()) and torch.equal(l2l[inv.clamp(0, C - 1)], torch.arange(C))
            if not ok:
                raise ValueError(f"TreeSampler.load_state_dict: leaf_to_label must have {1 << D} entries whose first "
                                 f"{C} are a permutation of the labels, and label_to_leaf must be its inverse")
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @classmethod
    def from_parameters(cls, node_weight: Tensor, node_bias: Tensor, num_labels: int,
                        leaf_to_label: Tensor | None = None, projection: Tensor | None = None,
                        mean: Tensor | None = None) -> "TreeSampler":
        """A sampler with the given node classifiers (and optionally the leaf order and the input projection
        z = (x - mean) @ projection; identity when None)."""
        return cls(node_weight, node_bias, num_labels, leaf_to_label, projection, mean)

    def extra_repr(self) -> str:
        F = self.projection.shape[0] if self.projection is not None else self.node_weight.shape[1]
        return (f"num_labels={self.num_labels}, depth={self.depth}, k={self.node_weight.shape[1]}, features={F}, "
                f"dtype={self.node_weight.dtype}")

    def _apply(self, fn, recurse=True):
        # a cast to a dtype the sampling ops lack (a parent module's .half() or .bfloat16()) keeps the nodes' dtype
        # and follows the move; float32 <-> float64 casts apply (the constructor refuses float16 by name)
        # .data: the grad object itself is converted in place (param.grad.data = fn(param.grad))
        kept = {name: (t.data, None if t.grad is None else t.grad.data) for name, t in self._parameters.items()
                if t is not None}
        kept_buffers = {name: t for name, t in self._buffers.items() if t is not None and t.is_floating_point()}
        out = super()._apply(fn, recurse)
        if self.node_weight.dtype not in (torch.float32, torch.float64):
            dev = self.node_weight.device
            for name, (data, grad) in kept.items():
                p = self._parameters[name]
                p.data = data.to(dev)
                if grad is not None:
                    p.grad = grad.to(dev)
            for name, t in kept_buffers.items():
                self._buffers[name] = t.to(dev)
        return out

    def project(self, features: Tensor) -> Tensor:
        """z = (x - mean) @ projection, in the nodes' dtype (also inside an autocast region: the walk's logits and
        log q are computed from z, so it is not rounded to 16 bits)."""
        F = self.projection.shape[0] if self.projection is not None else self.node_weight.shape[1]
        if features.dim() != 2 or features.shape[1] != F:
            raise ValueError(f"TreeSampler: expected features [B, {F}] (the projection's input width), got "
                             f"{tuple(features.shape)}")
        if not features.is_floating_point():  # complex would drop its imaginary part, ints and bools pass silently
            raise ValueError(f"TreeSampler: expected float features, got {features.dtype}")
        x = features.to(self.node_weight.dtype)
        if self.mean is not None:
            x = x - self.mean
        if self.projection is None:
            return x
        dev = x.device.type
        with torch.autocast(dev, enabled=False) if torch.amp.is_autocast_available(dev) else contextlib.nullcontext():
            return x @ self.projection

    def sample(self, features: Tensor, num_samples: int, generator: torch.Generator | None = None
               ) -> tuple[Tensor, Tensor]:
        """``num_samples`` independent draws (with replacement) from q(. | x) per row of ``features`` [B, F]:
        (labels int64 [B, S], log q float [B, S]). Deterministic for a seeded generator; with none, torch's
        default generator seeds the draw (so ``torch.manual_seed`` makes it reproducible)."""
        num_samples = _count(num_samples, "TreeSampler.sample", "num_samples")
        if torch.compiler.is_compiling():  # the seed is drawn on the host: it would be a data-dependent value
            raise RuntimeError("TreeSampler.sample: cannot run inside torch.compile or torch.export (it draws its "
                               "seed on the host); call it outside the compiled function and pass the draws in")
        with torch.no_grad():
            z = self.project(features)
            return torch.ops.torchxc.tree_sample.default(z, self.node_weight, self.node_bias, self.leaf_to_label,
                                                         self.num_labels, num_samples, _seed_from(generator))

    def log_prob(self, features: Tensor, labels: Tensor) -> Tensor:
        """log q(labels | x) for labels int64 [B, P] in [0, C); differentiable with respect to the node classifiers
        (and to ``features``)."""
        z = self.project(features)
        return torch.ops.torchxc.tree_log_prob.default(z, self.node_weight, self.node_bias, self.label_to_leaf,
                                                       labels)

    def log_prob_all(self, features: Tensor) -> Tensor:
        """log q(y | x) for every label: [B, C] (O(B C k); for evaluation: computed without gradient, use
        :meth:`log_prob` of the labels for a differentiable log q)."""
        with torch.no_grad():
            z = self.project(features)
            return torch.ops.torchxc.tree_log_prob_all.default(z, self.node_weight, self.node_bias,
                                                               self.label_to_leaf)

    # ---- fitting --------------------------------------------------------------------------------------------

    @classmethod
    def fit(cls, features: Tensor, labels: Tensor | tuple[Tensor, Tensor], num_labels: int, dim: int = 16,
            iterations: int = 4, newton_steps: int = 1, l2: float = 1.0, progress: bool = True,
            seed: int = 0) -> "TreeSampler":
        """Fits the tree to data, top down (the construction of Bamler & Mandt):

        1. a whitened PCA projection of the features to ``dim`` dimensions (randomised SVD);
        2. at every level, each node splits its labels in two balanced halves (sized by the leaves below each
           child), fits an L2-regularised logistic regression (``l2`` on the weights) on the examples that reach
           it, and reassigns its labels to the children by their mean score, within the children's capacity;
           this repeats ``iterations`` times (each time ``newton_steps`` Newton steps, warm-started from the
           previous regression), then the next level refines each half.

        Every level is one batched Newton solve over all its nodes (no Python loop per node; on the CPU a fused
        kernel, torchxc::tree_fit_newton, makes each step one pass over the level's examples). The defaults (4
        reassignments of one Newton step each) gave held-out log q(y | x) better than 3 x 3 steps on Bibtex and a
        synthetic C = 100,000 set and equal within 0.002 on Delicious, in 0.6x the time (numbers in the "Tree
        sampler" section of README.md).

        Args:
            features: [N, F] float tensor (float64 ones are centred in float64, the rest of the fit is float32).
            labels: int64 [N] (one label per example), int64 [N, P] padded with -1 (multi-label), a CSR pair
                (indptr [N + 1], indices [nnz]), or a torch.sparse_csr_tensor [N, C] whose stored non-zero entries
                are the positives. Each positive counts as one example; an example may list a label once.
            num_labels: C.
            dim: k, the width of the whitened PCA projection (at most F and N - 1).
            iterations: label reassignments per level; newton_steps: Newton steps per reassignment.
            l2: the L2 penalty on each node's weights (> 0; its bias gets a weak fixed one).
            progress: a tqdm bar over the levels. seed: the randomised SVD's seed (the global RNG is left alone).
        """
        if features.dim() != 2 or not features.is_floating_point():
            raise ValueError(f"TreeSampler.fit: expected float features [N, F], got {features.dtype} "
                             f"{tuple(features.shape)}")
        if features.layout != torch.strided:
            raise ValueError(f"TreeSampler.fit: expected dense features, got layout {features.layout} (e.g. the CSR "
                             "features of load_xc(..., dense=False)); pass features.to_dense()")
        if features.shape[0] == 0:
            raise ValueError("TreeSampler.fit: needs at least one example, got N = 0")
        if not bool(torch.isfinite(features).all()):
            bad = int((~torch.isfinite(features)).any(1).nonzero()[0])
            raise ValueError(f"TreeSampler.fit: features must be finite, but row {bad} has a NaN or infinite value")
        num_labels, dim, iterations, newton_steps = (_count(v, "TreeSampler.fit", name) for v, name in (
            (num_labels, "num_labels"), (dim, "dim"), (iterations, "iterations"), (newton_steps, "newton_steps")))
        if features.shape[1] == 0:
            raise ValueError("TreeSampler.fit: needs at least one feature, got F = 0")
        if num_labels < 1 or dim < 1 or iterations < 1 or newton_steps < 1:
            raise ValueError(f"TreeSampler.fit: num_labels, dim, iterations and newton_steps must be >= 1, got "
                             f"{num_labels}, {dim}, {iterations}, {newton_steps}")
        if not l2 > 0 or not math.isfinite(l2):
            raise ValueError(f"TreeSampler.fit: l2 must be positive and finite (nodes without examples need it), "
                             f"got {l2}")
        features = features.detach()
        device = features.device
        N, F = features.shape
        offset = None
        if features.dtype == torch.float64:
            # The fit computes in float32. Float64 features are centred in float64 first (a block of rows at a
            # time, no float64 copy), so an offset large against their spread (1e8 + O(1) values) is not rounded
            # into it; the sampler's mean adds the offset back.
            offset = features.mean(0)
            x = torch.empty(N, F, dtype=torch.float32, device=device)
            step = max(1, (1 << 22) // F)
            for i in range(0, N, step):
                x[i:i + step] = features[i:i + step] - offset
        else:
            x = features.to(torch.float32)
        k = int(min(dim, F, max(N - 1, 1)))
        mean = x.mean(0)
        # 1. whitened PCA: z has (about) unit variance in every direction
        gen_state = torch.random.get_rng_state()
        torch.manual_seed(seed)
        try:
            _, s, v = torch.pca_lowrank(x, q=k, center=True, niter=4)
        finally:
            torch.random.set_rng_state(gen_state)
        # Directions whose spread is rounding noise relative to the largest (features of rank below k: their
        # spread comes out at 1e-8 - 1e-7 of the largest in float32) get a zero column rather than a huge one. The
        # test is relative, so the features' overall scale does not matter, and independent of N (a cut-off
        # growing with N, as pseudo-inverses use, dropped real directions at N = 1e6).
        std = s[:k] / math.sqrt(max(N - 1, 1))
        tol = std[0] * 100 * torch.finfo(x.dtype).eps
        keep = std > tol
        projection = torch.where(keep, v[:, :k] / torch.where(keep, std, torch.ones_like(std)), 0.0)
        if not bool(torch.isfinite(projection).all()):
            raise ValueError(f"TreeSampler.fit: the features' spread (a standard deviation of {float(std[-1]):.3g} "
                             "along a principal direction) is below float32's normal range, so whitening it "
                             "overflows; rescale the features")
        z = (x - mean) @ projection
        ex, lab = _pairs(labels, N, num_labels, device)
        ze = z.index_select(0, ex)  # [E, k]: one row per positive
        C, D = num_labels, _depth(num_labels)
        f32 = dict(dtype=torch.float32, device=device)  # explicit: a float64 default dtype must not leak in
        node_weight = torch.zeros((1 << D) - 1, k, **f32)
        node_bias = torch.zeros((1 << D) - 1, **f32)
        # initial order: labels by the mean of their examples' first component (labels without examples last)
        count = torch.zeros(C, **f32).index_add_(0, lab, torch.ones(len(lab), **f32))
        centroid = torch.zeros(C, **f32).index_add_(0, lab, ze[:, 0]) / count.clamp(min=1)
        centroid = torch.where(count > 0, centroid, torch.full_like(centroid, float("inf")))
        pos = torch.empty(C, dtype=torch.long, device=device)
        pos[torch.argsort(centroid, stable=True)] = torch.arange(C, device=device)
        levels = range(D)
        if progress:
            try:
                from tqdm import tqdm

                levels = tqdm(levels, desc=f"fitting the tree ({C} labels, {len(ex)} examples)")
            except ImportError:
                pass
        for level in levels:
            span = 1 << (D - level)  # leaves under a node of this level
            n_nodes = 1 << level
            start = torch.arange(n_nodes, device=device) * span
            size = (C - start).clamp(min=0, max=span)  # labels per node
            n_left = size.clamp(max=span // 2)
            theta = torch.zeros(n_nodes, k + 1, **f32)
            # a node keeps its labels while they are reassigned between its children, so the examples' nodes (and
            # the solver's layout) are fixed for the whole level
            node_of_label = pos // span
            solver = _NodeLogistic(ze, node_of_label[lab], n_nodes, l2)
            lab_sorted = lab[solver.order]
            for _ in range(max(1, iterations)):
                side = (pos - start[node_of_label]) >= n_left[node_of_label]  # True: right child
                theta, margins = solver.solve(side[lab_sorted].to(ze.dtype), theta, newton_steps)
                # reassign: within each node, labels sorted by mean score; the lowest n_left go left
                score = torch.zeros(C, **f32).index_add_(0, lab_sorted, margins)
                score /= count.clamp(min=1)
                order = torch.argsort(_node_score_key(node_of_label, score), stable=True)  # by node, then by score
                rank = torch.empty(C, dtype=torch.long, device=device)
                rank[order] = torch.arange(C, device=device)
                pos = rank  # node p's labels keep the positions [start_p, start_p + size_p), now ordered by score
            first = n_nodes - 1
            node_weight[first:first + n_nodes] = theta[:, :k]
            node_bias[first:first + n_nodes] = theta[:, k]
        leaf_to_label = torch.full((1 << D,), -1, dtype=torch.long, device=device)
        leaf_to_label[pos] = torch.arange(C, device=device)
        # float64 features give a float64 sampler; every other dtype a float32 one (the kernels' two dtypes)
        dtype = torch.float64 if features.dtype == torch.float64 else torch.float32
        mean = mean.to(dtype) if offset is None else offset + mean.to(dtype)
        return cls(node_weight.to(dtype), node_bias.to(dtype), C, leaf_to_label, projection.to(dtype), mean)


def _node_score_key(node: Tensor, score: Tensor) -> Tensor:
    """int64 keys that sort as (node, score) pairs do, for float32 scores (one stable integer sort: 3.8 ms at C =
    100,000, against 11 ms for a float sort followed by a stable sort by node). A float's bits, read as int32, sort like
    the float once a negative one has its magnitude bits flipped; -0.0 is made +0.0 first, so that it ties with 0.0 as a
    float would."""
    bits = (score + 0.0).view(torch.int32).long()
    return (node << 32) + (bits ^ ((bits >> 31) & 0x7FFFFFFF)) + (1 << 31)


def _pairs(labels, N, num_labels, device) -> tuple[Tensor, Tensor]:
    """(example index, label) of every positive, from int64 [N], padded [N, P], a CSR pair (indptr, indices) or a
    torch.sparse_csr_tensor [N, C] (its stored non-zero entries are the positives)."""
    op = "TreeSampler.fit"

    def integral(t, name):
        t = torch.as_tensor(t)
        if not is_integer_dtype(t):
            raise ValueError(f"{op}: expected integer {name}, got {t.dtype}")
        return t.to(device=device, dtype=torch.long)

    if isinstance(labels, Tensor) and labels.layout == torch.sparse_csr:
        if labels.dim() != 2 or labels.shape[0] != N:
            raise ValueError(f"{op}: expected a sparse CSR label matrix [N = {N}, C], got {tuple(labels.shape)}")
        nz = labels.values() != 0
        indptr, indices = labels.crow_indices(), labels.col_indices()
        ex = torch.repeat_interleave(torch.arange(N, device=indptr.device), indptr[1:] - indptr[:-1])
        ex, lab = ex[nz].to(device), indices[nz].to(device=device, dtype=torch.long)
    elif isinstance(labels, (tuple, list)):
        if len(labels) != 2:
            raise ValueError(f"{op}: a CSR label pair is (indptr [N + 1], indices [nnz]), got {len(labels)} items")
        indptr, lab = integral(labels[0], "indptr"), integral(labels[1], "indices")
        if indptr.shape != (N + 1,) or lab.dim() != 1:
            raise ValueError(f"{op}: expected CSR indptr [N + 1 = {N + 1}] and indices [nnz], got "
                             f"{tuple(indptr.shape)} and {tuple(lab.shape)}")
        counts = indptr[1:] - indptr[:-1]
        if indptr[0] != 0 or (counts < 0).any() or indptr[-1] != lab.numel():
            raise ValueError(f"{op}: CSR indptr must start at 0, not decrease and end at len(indices) = "
                             f"{lab.numel()}, got indptr[0] = {int(indptr[0])}, indptr[-1] = {int(indptr[-1])}")
        ex = torch.repeat_interleave(torch.arange(N, device=device), counts)
    else:
        labels = integral(labels, "labels (int64 [N] or [N, P] padded with -1)")
        if labels.dim() not in (1, 2) or labels.shape[0] != N:
            raise ValueError(f"{op}: expected labels [N = {N}] or [N = {N}, P] (one row per example), got "
                             f"{tuple(labels.shape)}")
        if labels.dim() == 1:
            ex, lab = torch.arange(N, device=device), labels
        else:
            if (labels < -1).any():
                raise ValueError(f"{op}: padded labels must lie in [0, {num_labels}) or be -1")
            ex, col = (labels >= 0).nonzero(as_tuple=True)
            lab = labels[ex, col]
    if lab.numel() and (lab.min() < 0 or lab.max() >= num_labels):
        raise ValueError(f"{op}: labels must lie in [0, {num_labels}), got [{int(lab.min())}, {int(lab.max())}]")
    if lab.numel() > 1 and not (isinstance(labels, Tensor) and labels.dim() == 1):
        # A label twice in one example would count as two examples of it; a multi-hot matrix given as padded labels
        # (its rows repeat 0 and 1) is the usual way to get there.
        key = torch.sort(ex * num_labels + lab).values
        same = (key[1:] == key[:-1]).nonzero()
        if same.numel():
            e, y = divmod(int(key[int(same[0])]), num_labels)
            hint = (" (an [N, C] multi-hot matrix is not a list of labels padded with -1: pass "
                    "labels.to_sparse_csr())" if isinstance(labels, Tensor) and labels.layout == torch.strided
                    else "")
            raise ValueError(f"{op}: example {e} lists label {y} more than once{hint}")
    return ex, lab


class _NodeLogistic:
    """Batched Newton steps for one L2-regularised logistic regression per node, with weights and a bias (theta
    [n_nodes, k + 1], bias last): example e (features z[e], [E, k]) belongs to node node_e[e]. The weights are
    regularised with l2, the bias lightly; each step is a trust-region step (norm at most `max_step`), so that a
    node whose examples are all on one side, or whose probabilities saturate in float32, moves a bounded distance
    instead of diverging.

    The examples are sorted by node once. On the CPU a fused kernel (torchxc::tree_fit_newton,
    csrc/cpu/tree_fit_cpu.cpp) makes each step one pass over them. Elsewhere row (n, i) of a fixed CSR matrix
    M [n_nodes * (k + 1), E] holds x_e,i for the examples e of node n (x_e = (z_e, 1)), so that a Newton step's
    gradients are M @ (p - t) and its Hessians H_n = sum_{e in n} w_e x_e x_e^T are M @ (w * X): sparse @ dense
    products, with no per-step gathers (``fused=False`` takes this path on the CPU too)."""

    def __init__(self, z: Tensor, node_e: Tensor, n_nodes: int, l2: float, fused: bool = True):
        E, k1 = z.shape[0], z.shape[1] + 1
        device = z.device
        self.n_nodes, self.k1 = n_nodes, k1
        self.reg = torch.full((k1,), l2, dtype=z.dtype, device=device)
        self.reg[-1] = 1e-3  # the bias: a weak prior, which also keeps nodes without examples solvable
        self.order = torch.argsort(node_e, stable=True)
        self.counts = torch.bincount(node_e, minlength=n_nodes)
        self.zs = z.index_select(0, self.order)
        self.fused = fused and device.type == "cpu" and z.dtype == torch.float32
        if self.fused:
            self.offsets = torch.zeros(n_nodes + 1, dtype=torch.long, device=device)
            torch.cumsum(self.counts, 0, out=self.offsets[1:])
            return
        self.zs = torch.cat([self.zs, torch.ones(E, 1, dtype=z.dtype, device=device)], 1)  # x_e = (z_e, 1)
        seg = torch.cumsum(self.counts, 0) - self.counts
        ns = node_e[self.order]
        # CSR layout: node n's block starts at k1 * seg[n]; row (n, i) is its i-th run of counts[n] values
        pos = ((k1 * seg[ns] + torch.arange(E, device=device) - seg[ns])[:, None]
               + torch.arange(k1, device=device)[None, :] * self.counts[ns][:, None]).flatten()
        values = torch.empty(E * k1, dtype=z.dtype, device=device)
        values[pos] = self.zs.flatten()
        col = torch.empty(E * k1, dtype=torch.long, device=device)
        col[pos] = torch.arange(E, device=device).repeat_interleave(k1)
        del pos
        crow = torch.zeros(n_nodes * k1 + 1, dtype=torch.long, device=device)
        crow[1:] = torch.cumsum(self.counts.repeat_interleave(k1), 0)
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "sparse CSR support is in beta"
            self.m = torch.sparse_csr_tensor(crow, col, values, size=(n_nodes * k1, E), check_invariants=False)

    def margins(self, theta: Tensor) -> Tensor:
        """x_e . theta_{node(e)} (x_e = (z_e, 1)) for the examples in node order (the ATen path)."""
        return (self.zs * theta.repeat_interleave(self.counts, 0, output_size=self.zs.shape[0])).sum(1)

    def solve(self, target: Tensor, theta: Tensor, steps: int, max_step: float = 4.0) -> tuple[Tensor, Tensor]:
        """`steps` Newton steps from theta [n_nodes, k + 1] toward fitting the targets in {0, 1} of the examples, given
        in node order (z[order]). Returns the new theta and the examples' margins under it."""
        if self.fused:
            return torch.ops.torchxc.tree_fit_newton(self.zs, self.offsets, theta, target, self.reg, steps, max_step)
        n, k1 = self.n_nodes, self.k1
        for _ in range(steps):
            p = torch.sigmoid(self.margins(theta))
            grad = theta * self.reg + (self.m @ (p - target)[:, None]).view(n, k1)
            hess = (self.m @ ((p * (1 - p))[:, None] * self.zs)).view(n, k1, k1) + torch.diag(self.reg)
            step = torch.linalg.solve(hess, grad.unsqueeze(-1)).squeeze(-1)
            norm = step.norm(dim=1, keepdim=True)
            theta = theta - step * (max_step / norm.clamp(min=max_step))
        return theta, self.margins(theta)


# ---- frequency sampler -------------------------------------------------------------------------------------------


class WeightTree(torch.nn.Module):
    """A sum tree over non-negative weights [C]: draws y with probability w_y / sum(w), gives log-probabilities and
    takes weight updates, all in O(log C) per item and batched (a label-frequency or popularity sampler).

    A module with one float64 buffer (``tree``), so ``.to(device)``, ``state_dict`` / ``load_state_dict`` and a
    parent module's checkpoint carry it; a dtype cast (``.float()``, ``.half()`` of a parent) moves it but keeps
    float64, which its exact sums need.

    Example::

        >>> tree = torchxc.WeightTree(label_counts.double())
        >>> negatives = tree.sample(4096 * 64).view(4096, 64)
        >>> tree.update(torch.tensor([3, 17]), torch.tensor([10.0, 0.0]))
    """

    def __init__(self, weights: Tensor):
        super().__init__()
        w = torch.as_tensor(weights).detach()
        if w.is_complex():  # the cast would drop the imaginary part with only a warning
            raise ValueError(f"WeightTree: expected real weights, got {w.dtype}")
        w = w.to(torch.float64)
        if w.dim() != 1:
            raise ValueError(f"WeightTree: expected weights [C] (one per label), got shape {tuple(w.shape)}")
        values = w.device.type != "meta"  # built under torch.device("meta"): shapes only, values come with a state
        if w.numel() == 0 or values and ((w < 0).any() or not torch.isfinite(w).all()):
            raise ValueError("WeightTree: expected a non-empty tensor of finite, non-negative weights")
        if values and not torch.isfinite(w.sum()):
            raise ValueError("WeightTree: the weights' sum overflows float64; scale them down")
        self.num_labels = w.numel()
        self.depth = _depth(self.num_labels)
        self.offset = (1 << self.depth) - 1  # index of leaf 0 in the heap array
        tree = torch.zeros(2 * (1 << self.depth) - 1, dtype=torch.float64, device=w.device)
        tree[self.offset:self.offset + self.num_labels] = w
        self.register_buffer("tree", self._sum_levels(tree))
        self._refresh_mass()

    def extra_repr(self) -> str:
        return f"num_labels={self.num_labels}"

    # The state holds the label count beside the tree: trees of the same depth have buffers of the same size.
    def get_extra_state(self) -> dict:
        return {"num_labels": self.num_labels}

    def set_extra_state(self, state) -> None:
        pass  # checked before anything is loaded (_load_from_state_dict)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # checked before the tree is copied in, so that a refused state leaves this tree as it was
        extra = state_dict.get(prefix + "_extra_state")
        if isinstance(extra, dict) and extra.get("num_labels") != self.num_labels:
            raise ValueError(f"WeightTree.load_state_dict: the state is a tree of {extra.get('num_labels')} labels, "
                             f"this one has {self.num_labels}")
        tree = state_dict.get(prefix + "tree")
        if tree is not None and tree.dtype != torch.float64:
            raise ValueError(f"WeightTree.load_state_dict: expected a float64 tree (its sums are exact), got "
                             f"{tree.dtype}")
        if tree is not None and tree.shape == self.tree.shape:
            self._check_tree(tree)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._refresh_mass()  # the loaded weights'

    def _sum_levels(self, tree: Tensor) -> Tensor:
        """Sets every inner node of `tree` (in place, returned) to the sum of its children, level by level from the
        leaves: exact float64 sums, no drift, and the same order of additions as update's ancestors."""
        for level in range(self.depth - 1, -1, -1):
            first, n = (1 << level) - 1, 1 << level
            tree[first:first + n] = (tree[2 * first + 1:2 * first + 1 + 2 * n:2] +
                                     tree[2 * first + 2:2 * first + 2 + 2 * n:2])
        return tree

    def _check_tree(self, tree: Tensor) -> None:
        """A state's tree must be one this class builds: finite non-negative leaf weights, zero padding leaves, and
        every parent the float64 sum of its children (as computed here, so the comparison is exact)."""
        leaves = tree[self.offset:]
        problem = None
        if (leaves < 0).any() or not torch.isfinite(leaves).all():
            problem = "its weights must be finite and non-negative"
        elif not torch.isfinite(tree[0]):
            problem = "the weights' sum overflows float64"
        elif (leaves[self.num_labels:] != 0).any():
            problem = "its padding leaves must be zero"
        elif not torch.equal(self._sum_levels(tree.clone()), tree):
            problem = "its inner nodes must be the sums of their children"
        if problem:
            raise ValueError(f"WeightTree.load_state_dict: the state is not a weight tree: {problem}")

    def _apply(self, fn, recurse=True):
        tree = self.tree
        out = super()._apply(fn, recurse)
        if self.tree.dtype != torch.float64:  # a cast (module.float()): follow the move, keep the exact dtype
            self.tree = tree.to(self.tree.device)
        return out

    @property
    def weights(self) -> Tensor:
        return self.tree[self.offset:self.offset + self.num_labels]

    @property
    def total(self) -> Tensor:
        return self.tree[0]

    def _refresh_mass(self) -> None:
        """Host-side facts about the total that sample needs without a device sync: whether there is any mass, and
        a power of two that lifts a total of a few subnormal ulps into the normal range (rand * total rounded to
        multiples of 5e-324 there: three weights of 5e-324 were drawn 1 : 2 : 3)."""
        if self.tree.device.type == "meta":  # no values: sampling on meta gives shapes only
            self._has_mass, self._tiny = True, False
            return
        total = float(self.total)
        self._has_mass = total > 0
        self._tiny = 0 < total < 2.0 ** -960  # scaled by 2^1000 in sample: exact, and every node stays < 2^40

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """n independent labels (int64 [n]), each with probability w_y / sum(w); ``generator`` (a torch.Generator
        on the tree's device) makes the draws reproducible."""
        n = _count(n, "WeightTree.sample", "n")
        if generator is not None and not isinstance(generator, torch.Generator):  # torch.rand's error was a page
            raise ValueError(f"WeightTree.sample: generator must be a torch.Generator or None, got "
                             f"{type(generator).__name__}")
        if not self._has_mass:
            raise ValueError("WeightTree.sample: every weight is zero")
        tree = self.tree
        if self._tiny:  # scaled exactly; by 1 if the buffer has changed in place since (the flag is host-side)
            tree = tree * torch.where(tree[0] < 2.0 ** -960, tree.new_tensor(2.0 ** 1000), tree.new_tensor(1.0))
        u = torch.rand(n, dtype=torch.float64, device=tree.device, generator=generator) * tree[0]
        # The top levels in one step: a binary search in the running sums of level L = bit_length(n) + 2, whose 2^L
        # nodes are more than 4 n and at most 8 n (so this stays O(log C) per draw); the walk goes on from there with
        # one round of tensor ops per level (the whole walk took 17 rounds at C = 10^5; L = bit_length(n) + 2
        # measured best of bit_length(n) - 2 .. + 6 at n = 2^11 .. 2^16). The same decisions as the walk from the
        # root, up to rounding: the same draws for a seed.
        top = min(self.depth, n.bit_length() + 2)
        first = (1 << top) - 1
        sums = torch.cumsum(tree[first:2 * first + 1], 0)
        u = torch.minimum(u, torch.nextafter(sums[-1], sums.new_zeros(())))  # u < the last sum: a node of weight > 0
        i = torch.searchsorted(sums, u, right=True)  # the first node whose running sum exceeds u (sums[i] > sums[i-1])
        u = u - torch.where(i > 0, sums[(i - 1).clamp_(min=0)], 0.0)
        node = first + i
        for _ in range(top, self.depth):
            left = 2 * node + 1
            lw, rw = tree[left], tree[left + 1]
            right = ((u >= lw) & (rw > 0)) | (lw <= 0)  # never into a subtree of zero weight
            u = torch.where(right, u - lw, u)
            node = left + right.long()
        return node - self.offset

    def log_prob(self, idx: Tensor) -> Tensor:
        """log(w_idx / sum(w)) for labels idx (int64, any shape, in [0, C))."""
        idx = self._indices(idx, "log_prob")
        if not self._has_mass:
            raise ValueError("WeightTree.log_prob: every weight is zero (no distribution)")
        return torch.log(self.tree[self.offset + idx.long()]) - torch.log(self.total)

    def _indices(self, idx, op: str) -> Tensor:
        idx = torch.as_tensor(idx, device=self.tree.device)
        if not is_integer_dtype(idx):
            raise ValueError(f"WeightTree.{op}: expected integer label indices, got {idx.dtype}")
        idx = long_indices(idx, f"WeightTree.{op}", "indices", "2^64 - 1 into -1")  # uint64 has no min()
        # a label outside [0, C) reads an inner node of the heap or a padding leaf: checked on the host, or under
        # torch.compile by an assertion in the graph (meta tensors have no values)
        if not idx.numel() or idx.device.type == "meta":
            return idx.long()
        if torch.compiler.is_compiling():
            torch._assert_async(((idx >= 0) & (idx < self.num_labels)).all(),
                                f"WeightTree.{op}: indices must lie in [0, {self.num_labels})")
        elif idx.min() < 0 or idx.max() >= self.num_labels:
            raise ValueError(f"WeightTree.{op}: indices must lie in [0, {self.num_labels}), got "
                             f"[{int(idx.min())}, {int(idx.max())}]")
        return idx.long()

    def update(self, idx: Tensor, new_weights: Tensor) -> None:
        """Sets w[idx] = new_weights (with repeated indices, the last one wins) and refreshes their ancestors."""
        idx = self._indices(idx, "update").flatten()
        new_weights = torch.as_tensor(new_weights, device=self.tree.device)
        if new_weights.is_complex():
            raise ValueError(f"WeightTree.update: expected real weights, got {new_weights.dtype}")
        # detached: weights that require grad would chain every update into one growing autograd graph
        new_weights = new_weights.detach().to(torch.float64).flatten()
        if new_weights.numel() not in (1, idx.numel()):
            raise ValueError(f"WeightTree.update: expected one weight or one per index ({idx.numel()}), got "
                             f"{new_weights.numel()}")
        new_weights = new_weights.expand(idx.shape)
        if (new_weights < 0).any() or not torch.isfinite(new_weights).all():
            raise ValueError("WeightTree.update: weights must be finite and non-negative")
        # last occurrence of each index wins
        order = torch.arange(idx.numel(), device=idx.device)
        last = torch.zeros(self.num_labels, dtype=torch.long, device=idx.device).scatter_reduce_(
            0, idx, order, reduce="amax", include_self=False)
        keep = last[idx] == order
        leaves = self.offset + idx[keep]
        old = self.tree[leaves].clone()
        self._write(leaves, new_weights[keep])
        if not torch.isfinite(self.total):  # the new total bounds every partial sum: all of them are finite
            self._write(leaves, old)
            raise ValueError("WeightTree.update: the weights' sum would overflow float64; scale them down")
        self._refresh_mass()

    def _write(self, leaves: Tensor, values: Tensor) -> None:
        """Sets the given leaf nodes (distinct) and recomputes their ancestors."""
        nodes = leaves
        self.tree[nodes] = values
        for _ in range(self.depth):
            nodes = torch.unique((nodes - 1) // 2)
            self.tree[nodes] = self.tree[2 * nodes + 1] + self.tree[2 * nodes + 2]


# ---- losses ---------------------------------------------------------------------------------------------------------


def _check_float(op: str, **tensors) -> None:
    """Logits and log q must be real floating point (an integer logit failed deep in softplus or logsumexp)."""
    for name, t in tensors.items():
        if t is not None and (not t.is_floating_point()):
            raise ValueError(f"{op}: expected {name} of a floating-point dtype, got {t.dtype}")


def _reduce(loss: Tensor, reduction: str, op: str) -> Tensor:
    check_reduction(reduction, op)
    if reduction == "none":
        return loss
    return loss.sum() if reduction == "sum" else loss.mean()


_WRAPS = "2^64 - 1 into the padding -1"  # what .long() makes of an unsigned label tensor's largest value


def _positives(op: str, positives: Tensor, B: int) -> Tensor:
    """Every positive of each example, int64 [B, P] padded with -1 (checked: an integer dtype, that shape)."""
    if not is_integer_dtype(positives):
        raise ValueError(f"{op}: expected positives of an integer dtype (class indices, int64 [B, P] padded with -1, "
                         f"not a multi-hot mask), got {positives.dtype}")
    if positives.dim() != 2 or positives.shape[0] != B:
        raise ValueError(f"{op}: expected positives int64 [B = {B}, P] (padded with -1), got {tuple(positives.shape)}")
    return long_indices(positives, op, "positives", _WRAPS)


def _accidental_hits(op: str, neg_labels: Tensor, positives: Tensor, device: torch.device) -> Tensor:
    """bool [B, S]: which sampled labels (int64 [B, S]) are among the example's positives (from :func:`_positives`).
    Both must be on the logits' device."""
    for name, t in (("neg_labels", neg_labels), ("positives", positives)):
        if t.device != device:
            raise ValueError(f"{op}: expected {name} on the logits' device {device}, got {t.device}")
    # an integer 0/1 multi-hot matrix [B, C] made labels 0 and 1 the positives of every row: refused when it can be
    # told apart (at least 3 columns, every value 0 or 1, so no -1 padding and labels repeated; a repeated label of a
    # padded list is harmless); on CPU tensors outside compile, elsewhere it would cost a sync
    if (positives.device.type == "cpu" and positives.shape[1] >= 3 and positives.numel()
            and not torch.compiler.is_compiling() and bool(((positives == 0) | (positives == 1)).all())):
        raise ValueError(f"{op}: positives holds only 0s and 1s in {positives.shape[1]} columns: a multi-hot "
                         "matrix? positives are label ids padded with -1")
    return (neg_labels[:, :, None] == positives[:, None, :]).any(-1)


def adversarial_negative_sampling_loss(pos_logits: Tensor, neg_logits: Tensor, pos_log_q: Tensor,
                                       neg_log_q: Tensor, reg: float = 0.0, reduction: str = "mean",
                                       neg_labels: Tensor | None = None, positives: Tensor | None = None) -> Tensor:
    """The binary logistic objective of Bamler & Mandt (2020) for negatives drawn from q(. | x).

    Per example: -log sigmoid(xi_pos) - mean_s log sigmoid(-xi_neg_s) + reg * [(xi_pos + log q_pos)^2 +
    mean_s (xi_neg_s + log q_neg_s)^2]. Positives and negatives weigh the same (a mean over the S negatives), so
    the optimum is xi_y(x) = log p(y | x) - log q(y | x) and ``xi + log q`` are the softmax logits
    (:func:`corrected_logits`); the regulariser ties down the scale those logits leave free.

    Multi-label data (one training pair per positive) with a good sampler: q(. | x) puts much of its mass on the
    example's other positives (a tree fitted on Bibtex drew one in 23% of its draws, uniform negatives in 2%), so
    without removal a quarter of the negatives push true labels down. Given ``neg_labels`` and ``positives``, a
    sampled label among the example's positives (an accidental hit) drops out of the negative term and of the
    regulariser: its term is 0 and the mean still divides by S, so each label keeps the weight q(y' | x) / S it has
    when it is not a positive. The objective is then "positives above non-positives" rather than the softmax of
    the mixture p(y | x) over the example's labels, which suits ranking (precision@k); ``xi + log q`` still ranks.

    Args:
        pos_logits [B], neg_logits [B, S]: the model's logits xi of the positive and the sampled labels.
        pos_log_q [B], neg_log_q [B, S]: their log q (from :meth:`TreeSampler.log_prob` / :meth:`~TreeSampler.sample`).
            They enter as constants (detached): the auxiliary model q is fitted on its own (:meth:`TreeSampler.fit`,
            or by maximising :meth:`TreeSampler.log_prob` of the data), as in the paper, and this loss must not
            pull it toward the model's logits.
        reg: lambda. reduction: ``"none"`` ([B]), ``"mean"`` or ``"sum"``.
        neg_labels int64 [B, S], positives int64 [B, P] padded with -1 (every positive of each example, the pair's
            own one included): give both to remove accidental hits (above); neither to keep every negative.

    Example::

        >>> neg, neg_lq = sampler.sample(x, 64)
        >>> pos_lq = sampler.log_prob(x, y[:, None])[:, 0]
        >>> loss = torchxc.adversarial_negative_sampling_loss(xi(x, y), xi(x, neg), pos_lq, neg_lq, reg=1e-3)
    """
    if neg_logits.dim() != 2 or pos_logits.shape != neg_logits.shape[:1] or neg_log_q.shape != neg_logits.shape \
            or pos_log_q.shape != pos_logits.shape:
        raise ValueError("adversarial_negative_sampling_loss: expected pos_logits/pos_log_q [B] and "
                         f"neg_logits/neg_log_q [B, S], got {tuple(pos_logits.shape)}, {tuple(neg_logits.shape)}, "
                         f"{tuple(pos_log_q.shape)}, {tuple(neg_log_q.shape)}")
    if neg_logits.shape[1] == 0:
        raise ValueError("adversarial_negative_sampling_loss: needs at least one negative per example (S >= 1), got "
                         "S = 0")
    _check_float("adversarial_negative_sampling_loss", pos_logits=pos_logits, neg_logits=neg_logits,
                 pos_log_q=pos_log_q, neg_log_q=neg_log_q)
    # a number or a 0-d real tensor (kept as it is: a reg that requires grad gets its gradient); a negative reg makes
    # the objective unbounded below; True was taken for 1, None or "0.1" failed in a bare '<='
    if isinstance(reg, torch.Tensor):
        value = float(reg) if reg.dim() == 0 and not reg.is_complex() and reg.dtype != torch.bool else None
    else:
        value = reg if isinstance(reg, numbers.Real) and not isinstance(reg, bool) else None
    if value is None or not 0 <= value < math.inf:
        raise ValueError(f"adversarial_negative_sampling_loss: reg must be a finite number >= 0, got "
                         f"{type(reg).__name__} {reg!r:.40}")
    if (neg_labels is None) != (positives is None):
        raise ValueError("adversarial_negative_sampling_loss: accidental hits are removed with both neg_labels and "
                         f"positives, got only {'neg_labels' if positives is None else 'positives'}")
    hit = None
    if neg_labels is not None:
        op = "adversarial_negative_sampling_loss"
        check_tensor(neg_labels, "neg_labels", op)
        check_tensor(positives, "positives", op)
        if not is_integer_dtype(neg_labels):
            raise ValueError(f"{op}: expected neg_labels of an integer dtype (class indices), got {neg_labels.dtype}")
        if neg_labels.shape != neg_logits.shape:
            raise ValueError(f"{op}: expected neg_labels of neg_logits' shape {tuple(neg_logits.shape)}, got "
                             f"{tuple(neg_labels.shape)}")
        hit = _accidental_hits(op, long_indices(neg_labels, op, "neg_labels", _WRAPS),
                               _positives(op, positives, neg_logits.shape[0]), neg_logits.device)
    pos_log_q, neg_log_q = pos_log_q.detach(), neg_log_q.detach()  # q is fitted on its own (see the docstring)
    if hit is not None:
        # hits' inputs are set to 0 (which makes their regulariser terms 0; an infinite hit would give a NaN
        # gradient, 0 * inf, through the square) and their softplus terms to 0 after
        neg_logits, neg_log_q = neg_logits.masked_fill(hit, 0), neg_log_q.masked_fill(hit, 0)
    neg_terms = torch.nn.functional.softplus(neg_logits)
    loss = torch.nn.functional.softplus(-pos_logits) + (neg_terms if hit is None
                                                        else neg_terms.masked_fill(hit, 0)).mean(-1)
    if value:
        # in float32 at least: (xi + log q)^2 overflowed float16 for |xi + log q| > 256 before reg scaled it down
        acc = torch.promote_types(loss.dtype, torch.float32)
        penalty = ((pos_logits.to(acc) + pos_log_q.to(acc)) ** 2
                   + ((neg_logits.to(acc) + neg_log_q.to(acc)) ** 2).mean(-1))
        loss = (loss.to(acc) + reg * penalty).to(loss.dtype)
    return _reduce(loss, reduction, "adversarial_negative_sampling_loss")


def corrected_logits(logits: Tensor, log_q: Tensor) -> Tensor:
    """Softmax logits from a model trained with :func:`adversarial_negative_sampling_loss`: xi + log q
    (Theorem 1 of Bamler & Mandt). With ``log_q = sampler.log_prob_all(x)`` they rank and normalise over all
    labels. ``log_q`` must have the logits' shape: expand a per-label [C] log q (an input-independent q) to
    [B, C] first (a [B] and a [C] log q look alike when B == C)."""
    if tuple(log_q.shape) != tuple(logits.shape):
        raise ValueError(f"corrected_logits: expected log_q of the logits' shape {tuple(logits.shape)}, got "
                         f"{tuple(log_q.shape)} (it would broadcast)")
    return logits + log_q


def sampled_softmax_loss(pos_logits: Tensor, neg_logits: Tensor, neg_labels: Tensor, neg_log_q: Tensor,
                         pos_labels: Tensor, pos_log_q: Tensor | None = None, positives: Tensor | None = None,
                         remove_accidental_hits: bool = True, reduction: str = "mean") -> Tensor:
    """Sampled softmax with the log-Q correction (Jean et al. 2015; Bengio & Senecal 2008), per-example negatives.

    Per example: -log softmax([pos - log q_pos, neg_1 - log q_1, ..., neg_S - log q_S])[0], where sampled labels
    that are positives of the example (accidental hits) are removed from the denominator.

    Args:
        pos_logits [B], pos_labels int64 [B]: the positive's logit and label.
        neg_logits [B, S], neg_labels int64 [B, S], neg_log_q [B, S]: the sampled labels, their logits and log q
            (S >= 1; a row whose negatives are all accidental hits has loss 0).
        pos_log_q [B]: log q of the positive (optional: without it the positive's logit is not corrected, as in
            the usual formulation where the positive is not a sample). log q enters as a constant (detached).
        positives: int64 [B, P] padded with -1, every positive of each example for the accidental-hit check
            (default: pos_labels); a label may repeat, but a [B, P >= 3] tensor of only 0s and 1s (an integer
            multi-hot matrix) is refused (on CPU tensors).
        remove_accidental_hits: drop sampled labels equal to a positive from the denominator (default True).
        reduction: ``"none"`` (loss [B]), ``"mean"`` or ``"sum"``.
    """
    op = "sampled_softmax_loss"
    for name, t in (("pos_logits", pos_logits), ("neg_logits", neg_logits), ("neg_labels", neg_labels),
                    ("neg_log_q", neg_log_q), ("pos_labels", pos_labels)):
        check_tensor(t, name, op)
    for name, t in (("pos_log_q", pos_log_q), ("positives", positives)):
        if t is not None:
            check_tensor(t, name, op)
    kind = type(remove_accidental_hits)
    numpy_bool = kind.__module__ == "numpy" and kind.__name__ in ("bool", "bool_")
    if not (isinstance(remove_accidental_hits, bool) or numpy_bool):
        # "no" is truthy: it removed them (NumPy's bool_ is fine)
        raise TypeError(f"{op}: remove_accidental_hits must be a bool, got {kind.__name__}")
    if neg_logits.dim() != 2 or neg_labels.shape != neg_logits.shape or neg_log_q.shape != neg_logits.shape \
            or pos_logits.shape != neg_logits.shape[:1] or pos_labels.shape != pos_logits.shape:
        raise ValueError("sampled_softmax_loss: expected pos_logits/pos_labels [B] and neg_logits/neg_labels/"
                         f"neg_log_q [B, S], got {tuple(pos_logits.shape)}, {tuple(pos_labels.shape)}, "
                         f"{tuple(neg_logits.shape)}, {tuple(neg_labels.shape)}, {tuple(neg_log_q.shape)}")
    for name, t in (("pos_labels", pos_labels), ("neg_labels", neg_labels)):
        if not is_integer_dtype(t):
            raise ValueError(f"sampled_softmax_loss: expected {name} of an integer dtype (class indices), got "
                             f"{t.dtype}")
    if neg_logits.shape[1] == 0:
        raise ValueError("sampled_softmax_loss: needs at least one sampled negative per example (S >= 1), got "
                         f"neg_logits of shape {tuple(neg_logits.shape)}; with none the loss would be 0 whatever the "
                         "logits")
    _check_float("sampled_softmax_loss", pos_logits=pos_logits, neg_logits=neg_logits, neg_log_q=neg_log_q,
                 pos_log_q=pos_log_q)
    if pos_log_q is not None and pos_log_q.shape != pos_logits.shape:
        raise ValueError(f"sampled_softmax_loss: expected pos_log_q of shape {tuple(pos_logits.shape)}, got "
                         f"{tuple(pos_log_q.shape)}")
    if positives is not None:  # checked whether or not hits are removed
        positives = _positives(op, positives, pos_logits.shape[0])
    neg_labels, pos_labels = long_indices(neg_labels, op, "neg_labels", _WRAPS), long_indices(pos_labels, op,
                                                                                              "pos_labels", _WRAPS)
    pos = pos_logits - (pos_log_q.detach() if pos_log_q is not None else 0)  # log q is a constant (as above)
    # log(1 + sum_s e^(neg_s - pos)): 0, not inf - inf, when pos - log q_pos is +inf (q_pos = 0, e.g. a label of
    # weight 0 in a WeightTree)
    diff = (neg_logits - neg_log_q.detach()) - pos[:, None]
    if remove_accidental_hits:  # masked after the difference: -inf - (-inf) for a positive of logit -inf was NaN
        hit = _accidental_hits(op, neg_labels, positives if positives is not None else pos_labels[:, None],
                               neg_logits.device)
        diff = diff.masked_fill(hit, float("-inf"))
    loss = torch.logsumexp(torch.cat([torch.zeros_like(pos)[:, None], diff], 1), 1)
    return _reduce(loss, reduction, "sampled_softmax_loss")


# ---- fake kernels of the tree ops ----------------------------------------------------------------------------------


def _tree_metadata(op: str, z: Tensor, node_weight: Tensor, node_bias: Tensor, leaf_map: Tensor, map_name: str,
                   labels: Tensor | None = None) -> None:
    """What the kernels require of z [B, k] (float32 / float64), the node parameters (z's dtype, [n, k] and [n]), a
    label map (int64 [n], n >= 1) and labels (int64 [B, P])."""
    metadata(op, "z", z, (torch.float32, torch.float64), dim=2)
    metadata(op, "node_weight", node_weight, (z.dtype,), dim=2)
    metadata(op, "node_bias", node_bias, (z.dtype,), dim=1)
    torch._check(node_weight.shape[1] == z.shape[1], lambda: f"{op}: expected node_weight with k = {z.shape[1]} "
                                                             f"columns (z's), but got {list(node_weight.shape)}")
    metadata(op, map_name, leaf_map, (torch.int64,), dim=1)
    torch._check(leaf_map.shape[0] >= 1, lambda: f"{op}: expected a non-empty {map_name}")
    if labels is not None:
        metadata(op, "labels", labels, (torch.int64,), dim=2)
        torch._check(labels.shape[0] == z.shape[0], lambda: f"{op}: expected labels of shape [{z.shape[0]}, P] (one "
                                                            f"row per row of z), but got {list(labels.shape)}")


@torch.library.register_fake("torchxc::tree_sample")
def _tree_sample_fake(z, node_weight, node_bias, leaf_to_label, num_labels, num_samples, seed):
    same_device("torchxc::tree_sample", z, node_weight=node_weight, node_bias=node_bias, leaf_to_label=leaf_to_label)
    _tree_metadata("torchxc::tree_sample", z, node_weight, node_bias, leaf_to_label, "leaf_to_label")
    torch._check(0 <= num_samples <= 1 << 32, lambda: f"torchxc::tree_sample: expected 0 <= num_samples <= 2^32, but "
                                                       f"got {num_samples}")
    B = z.shape[0]
    return z.new_empty((B, num_samples), dtype=torch.long), z.new_empty((B, num_samples))


@torch.library.register_fake("torchxc::tree_log_prob")
def _tree_log_prob_fake(z, node_weight, node_bias, label_to_leaf, labels):
    same_device("torchxc::tree_log_prob", z, node_weight=node_weight, node_bias=node_bias,
                label_to_leaf=label_to_leaf, labels=labels)
    _tree_metadata("torchxc::tree_log_prob", z, node_weight, node_bias, label_to_leaf, "label_to_leaf", labels)
    return z.new_empty(labels.shape)


@torch.library.register_fake("torchxc::tree_log_prob_backward")
def _tree_log_prob_backward_fake(grad, z, node_weight, node_bias, label_to_leaf, labels):
    same_device("torchxc::tree_log_prob_backward", z, grad=grad, node_weight=node_weight, node_bias=node_bias,
                label_to_leaf=label_to_leaf, labels=labels)
    _tree_metadata("torchxc::tree_log_prob_backward", z, node_weight, node_bias, label_to_leaf, "label_to_leaf",
                   labels)
    floating_grad("torchxc::tree_log_prob_backward", "grad", grad)
    # contiguous, as the kernels return them (empty_like kept a transposed input's strides)
    return z.new_empty(z.shape), node_weight.new_empty(node_weight.shape), node_bias.new_empty(node_bias.shape)


@torch.library.register_fake("torchxc::tree_log_prob_all")
def _tree_log_prob_all_fake(z, node_weight, node_bias, label_to_leaf):
    same_device("torchxc::tree_log_prob_all", z, node_weight=node_weight, node_bias=node_bias,
                label_to_leaf=label_to_leaf)
    _tree_metadata("torchxc::tree_log_prob_all", z, node_weight, node_bias, label_to_leaf, "label_to_leaf")
    return z.new_empty((z.shape[0], label_to_leaf.shape[0]))


@torch.library.register_fake("torchxc::tree_fit_newton")
def _tree_fit_newton_fake(z, offsets, theta, target, reg, steps, max_step):
    op = "torchxc::tree_fit_newton"
    same_device(op, z, offsets=offsets, theta=theta, target=target, reg=reg)
    metadata(op, "z", z, (torch.float32,), dim=2)
    metadata(op, "offsets", offsets, (torch.int64,), dim=1)
    metadata(op, "theta", theta, (torch.float32,), dim=2)
    metadata(op, "target", target, (torch.float32,), dim=1)
    metadata(op, "reg", reg, (torch.float32,), dim=1)
    E, k1, n = z.shape[0], z.shape[1] + 1, theta.shape[0]
    torch._check(theta.shape[1] == k1, lambda: f"{op}: expected theta [nodes, k + 1 = {k1}], got {list(theta.shape)}")
    torch._check(offsets.shape[0] == n + 1, lambda: f"{op}: expected offsets [nodes + 1 = {n + 1}], got "
                                                    f"{list(offsets.shape)}")
    torch._check(target.shape[0] == E, lambda: f"{op}: expected target [E = {E}], got {list(target.shape)}")
    torch._check(reg.shape[0] == k1, lambda: f"{op}: expected reg [k + 1 = {k1}], got {list(reg.shape)}")
    torch._check(steps >= 0, lambda: f"{op}: steps must be >= 0, got {steps}")
    return theta.new_empty(theta.shape), z.new_empty((E,))


# Autograd of tree_log_prob: csrc/autograd/tree_sampler_autograd.cpp (backward: the tree_log_prob_backward op).
