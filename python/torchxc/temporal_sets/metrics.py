"""Metrics of temporal sets prediction.

Ranking metrics as the DNNTSP code defines them, averaged over test users, with T the user's target set (labels
outside the vocabulary included: they can never be hit, and count in |T|):
- Recall@K = |topK ∩ T| / |T|;
- NDCG@K = sum over ranks r <= K of 1[item r in T] / log2(r + 1), divided by the ideal DCG with min(|T|, K) hits;
- PHR@K = share of users with at least one hit in the top K.
Equal scores are ranked in label-id order (the loaders number labels by training popularity, most popular first),
so ties give the same metrics on every machine.
No library has these for sets, so they are written here (and tested on worked examples). AUC and F1 come from
scikit-learn: micro / macro ROC-AUC (macro over the vocabulary labels with both classes in the test set), weighted
/ micro F1 with one threshold per label chosen on the validation split. Unseen target labels are misses there too:
F1 counts them as false negatives (extra label columns never predicted: F1 0 with their support in the weighted
mean), and micro-AUC counts them as positives scored below every vocabulary score.
"""
import math
import numbers

import numpy as np
import torch

__all__ = ["evaluate_scores", "ndcg_at_k", "phr_at_k", "recall_at_k", "tune_thresholds"]


def _check(fn: str, scores, target, n_unseen=None, k=1) -> None:
    """scores and target [N, C] of one shape, n_unseen None, a number or [N]: a mismatch broadcast silently; k an
    int >= 1."""
    if not isinstance(k, numbers.Integral) or isinstance(k, bool) or k < 1:
        raise ValueError(f"{fn}: k must be an int >= 1, got {k!r}")
    if not isinstance(scores, torch.Tensor) or not isinstance(target, torch.Tensor):
        raise ValueError(f"{fn}: scores and target must be tensors, got {type(scores).__name__} and "
                         f"{type(target).__name__}")
    if scores.dim() != 2 or tuple(target.shape) != tuple(scores.shape):
        raise ValueError(f"{fn}: expected 2-D scores and target of one shape [N, C], got {tuple(scores.shape)} and "
                         f"{tuple(target.shape)}")
    if n_unseen is not None:
        unseen = torch.as_tensor(n_unseen)
        shape = tuple(unseen.shape)
        if shape not in ((), (scores.shape[0],)):
            raise ValueError(f"{fn}: expected n_unseen of shape [N = {scores.shape[0]}] (or one number), got {shape}")
        if bool((unseen < 0).any()):  # a negative count gave a recall of 2
            raise ValueError(f"{fn}: n_unseen counts labels, so it must be >= 0")
    if scores.is_floating_point() and bool(torch.isnan(scores).any()):  # topk ranks NaN first: a hit at rank 1
        raise ValueError(f"{fn}: scores contain NaN (row {int(torch.isnan(scores).any(1).nonzero()[0])})")


def _top(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Indices [N, min(k, C)] of each row's k highest scores, best first; equal scores in label-id order (topk's
    order among ties is unspecified), so a tie never makes a metric depend on the machine."""
    vals, idx = scores.topk(min(k, scores.shape[1]), 1)
    if idx.shape[1] == 0:
        return idx
    tied = (scores >= vals[:, -1:]).sum(1) > idx.shape[1]  # a tie across the cut: which ones are in?
    tied |= (vals[:, 1:] == vals[:, :-1]).any(1)  # a tie inside the top k: in which order?
    if bool(tied.any()):  # only those rows are sorted in full (23x topk's time on TaFeng's 4935 labels)
        rows = tied.nonzero().squeeze(1)
        idx[rows] = scores[rows].sort(dim=1, descending=True, stable=True).indices[:, :idx.shape[1]]
    return idx


def _hits(scores: torch.Tensor, target: torch.Tensor, k: int) -> torch.Tensor:
    return target.gather(1, _top(scores, k)).float()  # [N, k]: 1 where the rank-r item is a target


def _sizes(target: torch.Tensor, n_unseen) -> torch.Tensor:
    n = target.sum(1).float()
    return n + (torch.as_tensor(n_unseen, dtype=torch.float32) if n_unseen is not None else 0)


def recall_at_k(scores, target, k, n_unseen=None) -> float:
    """Mean over rows of |top-k of scores [N, C] that are in target (bool [N, C])| / |T|, where |T| also counts the
    row's n_unseen target labels outside the vocabulary (misses); rows with |T| = 0 count 0."""
    _check("recall_at_k", scores, target, n_unseen, k)
    size = _sizes(target, n_unseen)
    return (_hits(scores, target, k).sum(1) / size.clamp(min=1)).mean().item()


def ndcg_at_k(scores, target, k, n_unseen=None) -> float:
    """Mean over rows of DCG@k / ideal DCG@k: a hit at rank r (1-based) counts 1 / log2(r + 1); the ideal list has
    min(|T|, k) hits, |T| counting the row's n_unseen labels (DNNTSP's definition)."""
    _check("ndcg_at_k", scores, target, n_unseen, k)
    hits = _hits(scores, target, k)  # [N, min(k, C)]
    # the ideal list has min(|T|, k) hits, |T| counting unseen labels (so it can be longer than the vocabulary)
    ideal_n = _sizes(target, n_unseen).clamp(max=k).long()
    n = max(hits.shape[1], int(ideal_n.max()) if ideal_n.numel() else 0)  # not k: k = 10**9 is a valid "all"
    disc = 1.0 / torch.log2(torch.arange(2, n + 2, dtype=torch.float32))
    dcg = (hits * disc[:hits.shape[1]]).sum(1)
    idcg = torch.cat([torch.zeros(1), disc.cumsum(0)])[ideal_n]
    return (dcg / idcg.clamp(min=1e-12)).mean().item()


def phr_at_k(scores, target, k) -> float:
    """Share of rows with at least one target label among their top k scores."""
    _check("phr_at_k", scores, target, k=k)
    return (_hits(scores, target, k).sum(1) > 0).float().mean().item()


def tune_thresholds(scores: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per label, the threshold (predict score >= threshold) that maximises F1 on (scores, target) [N, C];
    +inf, which :func:`evaluate_scores` reads as "predict nobody", for labels without positives (every label when
    there are no rows); a best cut at a score of +inf is the largest finite number of the scores' dtype (which only
    +inf exceeds; in float16 a finite score of 65504 reaches it too)."""
    _check("tune_thresholds", scores, target)
    if scores.shape[0] == 0:
        return torch.full(scores.shape[1:], math.inf, dtype=torch.float32, device=scores.device)
    # sorted in the scores' own dtype: float32 thresholds of float64 scores round up past the score they came from
    s, order = (scores if scores.is_floating_point() else scores.double()).sort(0, descending=True)
    y = target.gather(0, order).float()
    tp = y.cumsum(0)
    predicted = torch.arange(1, s.shape[0] + 1, dtype=torch.float32, device=s.device)[:, None]
    f1 = 2 * tp / (predicted + y.sum(0, keepdim=True))
    # a cut between equal scores is not a threshold: only the last index of a run of ties counts
    last_of_tie = torch.ones_like(s, dtype=torch.bool)
    last_of_tie[:-1] = s[:-1] != s[1:]
    f1 = torch.where(last_of_tie, f1, torch.zeros_like(f1))
    best = f1.argmax(0)
    thr = s.gather(0, best[None])[0]
    # +inf is the mark of "predict nobody"; a cut at a score of +inf (predict the +inf scores) is the largest finite
    # number instead, which only +inf reaches
    thr = torch.where(thr == math.inf, torch.full_like(thr, torch.finfo(thr.dtype).max), thr)
    return torch.where(y.sum(0) > 0, thr, torch.full_like(thr, float("inf")))


def evaluate_scores(scores, target, n_unseen, thresholds=None, ks=(10, 20)) -> dict:
    """All metrics of the temporal-sets table for scores [N, C] against target bool [N, C] (+ n_unseen [N]); F1
    with ``thresholds`` [C] (:func:`tune_thresholds`: label c is predicted when its score >= thresholds[c]; a
    threshold of +inf predicts nobody)."""
    _check("evaluate_scores", scores, target, n_unseen)
    from sklearn.metrics import f1_score, roc_auc_score

    # the scores' own precision (float32 rounding of float64 scores made ties), gradients and device dropped
    scores, target = scores.detach().cpu(), target.detach().cpu().bool()
    if not scores.is_floating_point():
        scores = scores.double()
    if thresholds is not None:
        thresholds = torch.as_tensor(thresholds).detach().cpu()
        if tuple(thresholds.shape) != (scores.shape[1],):  # [1] or [N, 1] broadcast silently
            raise ValueError(f"evaluate_scores: expected thresholds [C = {scores.shape[1]}] (tune_thresholds), got "
                             f"{tuple(thresholds.shape)}")
    out = {}
    for k in ks:
        out[f"recall@{k}"] = recall_at_k(scores, target, k, n_unseen)
        out[f"ndcg@{k}"] = ndcg_at_k(scores, target, k, n_unseen)
        out[f"phr@{k}"] = phr_at_k(scores, target, k)
    unseen = (torch.zeros(scores.shape[0]) if n_unseen is None else torch.as_tensor(n_unseen)).long()
    unseen = unseen.expand(scores.shape[0])  # one number for every row, or [N] already
    # unseen target labels: column j is True for the users with more than j of them, never predicted
    extra = (unseen[:, None] > torch.arange(int(unseen.max()) if unseen.numel() else 0)).numpy()
    n_extra = int(unseen.sum())
    y, s = target.numpy(), scores.numpy().astype(np.float64)

    def below(v: np.ndarray) -> float:  # below every score (min - 1 rounded back to min in float32 for 1e8: a tie)
        return float(v.min()) - 1.0 - abs(float(v.min())) if v.size else 0.0

    # +-inf (a masked label), or finite scores so low that nothing lies below them in float64 (-1e308, with unseen
    # labels to place there): AUC depends on the order only, which ranks keep
    if not np.isfinite(s).all() or (n_extra and not math.isfinite(below(s))):
        s = np.unique(s, return_inverse=True)[1].reshape(s.shape).astype(np.float64)
    lowest = below(s)
    out["micro_auc"] = float(roc_auc_score(np.concatenate([y.ravel(), np.ones(n_extra, dtype=bool)]),
                                           np.concatenate([s.ravel(), np.full(n_extra, lowest)])))
    both = (y.sum(0) > 0) & (y.sum(0) < y.shape[0])
    out["macro_auc"] = float(roc_auc_score(y[:, both], s[:, both], average="macro")) if both.any() else float("nan")
    if thresholds is not None:
        # a threshold of +inf predicts nobody (tune_thresholds' mark for a label without validation positives),
        # not the +inf scores
        pred = ((scores >= thresholds[None, :]) & (thresholds != math.inf)[None, :]).numpy()
        y_all = np.concatenate([y, extra], 1)
        pred_all = np.concatenate([pred, np.zeros_like(extra)], 1)
        out["weighted_f1"] = float(f1_score(y_all, pred_all, average="weighted", zero_division=0))
        out["micro_f1"] = float(f1_score(y_all, pred_all, average="micro", zero_division=0))
    out["num_users"] = int(scores.shape[0])
    return out
