"""A first-order label-transition prior for temporal sets (a torchxc extension; not in the LANET paper).

Most labels of a DC target set are new to the user (60.8% of the test positives), and label tokens alone rank them
hardly better than popularity does. What the training users did next is a signal a model can use directly: from
every pair of consecutive events (e_t, e_{t+1}) of the training users, count N[p, c] = how often label c followed
label p, and N[p] = how often p had a next event. The smoothed transition probability is

    P(c | p) = (N[p, c] + alpha * pop(c)) / (N[p] + alpha),

(pop = the training popularity, normalised), and its lift over popularity is log P(c | p) - log pop(c), which is
log(alpha / (N[p] + alpha)) for a pair never seen and approaches the pointwise mutual information of (p, c) when p
is frequent. An example's two features per label c are the mean lift over the labels p of (0) its most recent
event and (1) its whole past (each distinct past label once); both are 0 for an example without a past.

Leave-one-user-out: a training example's features are computed without its own user's transitions (which include
its own target), so the model learns how much to trust the prior from the same kind of numbers it sees on users it
has never met. The counts are sparse (a COO matrix), so this also works for large vocabularies.
"""
import math
import numbers
from collections import Counter

import torch

from .data import _check_id_list, _checked_past_ids, _quiet_sparse_csr

__all__ = ["TransitionPrior"]


class TransitionPrior:
    """Built from :attr:`TemporalSets.train_sequences`; :meth:`features` gives float32 [B, C, 2]."""

    def __init__(self, data, alpha: float = 10.0):
        if not isinstance(alpha, numbers.Real) or isinstance(alpha, bool) or not 0 < alpha < math.inf:
            raise ValueError(f"TransitionPrior: alpha must be a finite number > 0, got {alpha!r}")  # NaN: NaN features
        C = data.num_labels
        self.C = C
        pairs, out, per_user = Counter(), Counter(), {}
        for user, ids in data.train_sequences.items():
            up, uo = Counter(), Counter()
            for prev, nxt in zip(ids[:-1], ids[1:]):
                for p in prev:
                    uo[p] += 1
                    for c in nxt:
                        up[(p, c)] += 1
            pairs.update(up)
            out.update(uo)
            per_user[user] = (up, uo)
        pop = data.popularity.double().clamp(min=1)
        scaled_pop = alpha * pop / pop.sum()  # alpha * pop(c)
        self.log_pop = (pop / pop.sum()).log().float()  # log pop(c): log P(c | past) = log_pop + features[..., 1]
        self.log_out = torch.zeros(C, dtype=torch.float64)  # log(N[p] + alpha) - log(alpha)
        if out:
            o = torch.tensor(list(out.keys()))
            self.log_out[o] = torch.tensor([float(v) for v in out.values()], dtype=torch.float64)
        self.log_out = (self.log_out / alpha).log1p()
        if pairs:
            idx = torch.tensor(list(pairs.keys())).T  # [2, nnz] rows p, columns c
            n = torch.tensor([float(v) for v in pairs.values()], dtype=torch.float64)
            vals = (n / scaled_pop[idx[1]]).log1p()  # log1p(N[p, c] / (alpha pop(c)))
        else:
            idx, vals = torch.zeros(2, 0, dtype=torch.long), torch.zeros(0, dtype=torch.float64)
        # S[p, c] = log1p(N[p, c] / (alpha pop(c))); features = weights @ S, a sparse-sparse product (an example's
        # weights are nonzero only on its past labels)
        self.S = torch.sparse_coo_tensor(idx, vals, (C, C), check_invariants=True).coalesce().float()
        self.loo = {}
        for user, (up, uo) in per_user.items():
            if not uo:
                continue
            a = torch.tensor([k[0] for k in up], dtype=torch.long)
            c = torch.tensor([k[1] for k in up], dtype=torch.long)
            own = torch.tensor([float(v) for v in up.values()], dtype=torch.float64)
            total = torch.tensor([float(pairs[k]) for k in up], dtype=torch.float64)
            sp = scaled_pop[c]
            d_s = ((total - own) / sp).log1p() - (total / sp).log1p()
            oa = torch.tensor(list(uo.keys()), dtype=torch.long)
            m = torch.tensor([float(v) for v in uo.values()], dtype=torch.float64)
            tot_o = torch.tensor([float(out[k]) for k in uo], dtype=torch.float64)
            d_o = ((tot_o - m) / alpha).log1p() - (tot_o / alpha).log1p()
            self.loo[user] = (a, c, d_s.float(), oa, d_o.float())

    def features(self, batch: list, leave_user_out: bool = False) -> torch.Tensor:
        """float32 [B, C, 2]: mean lift of each label over the most recent event's labels and over all past labels.
        ``leave_user_out``: subtract each example's own user's transitions (for training examples)."""
        B, C = len(batch), self.C
        W = torch.zeros(2, B, C)
        for b, ex in enumerate(batch):  # ids checked: a negative one would index from the end
            if not isinstance(ex.history, (list, tuple)):
                raise ValueError(f"TransitionPrior.features: example {b}: history must be a list of events (lists of "
                                 f"label ids), got {type(ex.history).__name__}")
            if ex.history:
                _check_id_list("TransitionPrior.features", b, "history", ex.history[0], C)
                if len(ex.history[0]):
                    last = sorted(set(ex.history[0]))  # each label once, as in the whole-past mean
                    W[0, b, last] = 1.0 / len(last)
            keys = _checked_past_ids("TransitionPrior.features", b, ex, C)
            if keys:
                W[1, b, keys] = 1.0 / len(keys)
        Wf = W.view(2 * B, C)
        with _quiet_sparse_csr():  # torch routes the product through sparse CSR
            f = torch.sparse.mm(Wf.to_sparse(), self.S).to_dense()
        f = f - (Wf @ self.log_out.float())[:, None]
        f = f.reshape(2, B, C)
        if leave_user_out:
            for b, ex in enumerate(batch):
                corr = self.loo.get(ex.user)
                if corr is None:
                    continue
                a, c, d_s, oa, d_o = corr
                for k in range(2):
                    f[k, b].index_add_(0, c, W[k, b, a] * d_s)
                    f[k, b] -= (W[k, b, oa] * d_o).sum()
        return f.permute(1, 2, 0).contiguous()
