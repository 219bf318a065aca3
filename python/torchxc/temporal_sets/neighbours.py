"""A user-neighbour prior for temporal sets (a torchxc extension; not in the LANET paper).

Personal frequency ranks the labels a user already had; for the others (most DC target labels are new to the user)
what similar users had is a collaborative signal, the idea behind user-kNN next-basket methods such as TIFU-KNN
(Hu et al., SIGIR 2020). Every training user u has a profile n_u[c] = the number of u's events containing label c
(the whole sequence). An example with past counts m (its whole past) takes the k training users whose profiles are
the most cosine-similar to m, with weights w_u = cos(m, n_u), and its neighbour share of label c is

    share(c) = (sum_u w_u n_u[c] / |n_u| + beta * pop(c)) / (sum_u w_u + beta),

|n_u| = sum_c n_u[c] and pop the training popularity (normalised): the neighbours' label distribution, shrunk towards
popularity by beta (in units of similarity weight). An example without a past, or without a neighbour sharing one
of its labels, gets pop. The feature is the lift log share(c) - log pop(c) (0 without a past, as the transition
prior's).

Leave-one-user-out: a training example's neighbours exclude its own user, whose profile holds its own target.
Validation and test examples see the training users only. The profiles are sparse (CSR), so memory grows with the
training data, not with users x labels; a batch of B examples costs a dense [B, users] similarity matrix.
"""
import math
import numbers

import torch

from .data import _quiet_sparse_csr, past_count_matrix

__all__ = ["NeighbourPrior"]


class NeighbourPrior:
    """Built from :attr:`TemporalSets.train_sequences` and :attr:`TemporalSets.popularity`; :meth:`share` gives the
    neighbour share float32 [B, C] (rows sum to 1), :meth:`features` its lift over popularity [B, C, 1].

    Args:
        data: the :class:`~torchxc.temporal_sets.data.TemporalSets` whose training users are the neighbours.
        k: the number of neighbours (at most the number of training users).
        beta: shrinkage towards popularity, > 0.
    """

    def __init__(self, data, k: int = 100, beta: float = 1.0):
        if not isinstance(k, numbers.Integral) or isinstance(k, bool) or k < 1:
            raise ValueError(f"NeighbourPrior: k must be an int >= 1, got {k!r}")
        if not isinstance(beta, numbers.Real) or isinstance(beta, bool) or not 0 < beta < math.inf:
            raise ValueError(f"NeighbourPrior: beta must be a finite number > 0, got {beta!r}")
        C = data.num_labels
        self.C, self.k, self.beta = C, int(k), float(beta)
        users = list(data.train_sequences)
        self.index = {u: i for i, u in enumerate(users)}
        rows, cols = [], []
        for i, u in enumerate(users):
            for event in data.train_sequences[u]:  # an event's labels are distinct (sorted sets)
                rows += [i] * len(event)
                cols += event
        U = len(users)
        counts = torch.sparse_coo_tensor(torch.tensor([rows, cols], dtype=torch.long).reshape(2, -1),
                                         torch.ones(len(rows), dtype=torch.float64), (U, C),
                                         check_invariants=True).coalesce()
        (r, c), n = counts.indices(), counts.values()  # n_u[c] > 0, rows in order
        norm = torch.zeros(U, dtype=torch.float64).index_add_(0, r, n * n).sqrt().clamp(min=1e-30)
        total = torch.zeros(U, dtype=torch.float64).index_add_(0, r, n).clamp(min=1e-30)
        # n_u / ||n_u|| (for the cosine) as [U, C], and (n_u / |n_u|) transposed to [C, U]: both CSR, float32
        with _quiet_sparse_csr():
            self.unit = torch.sparse_coo_tensor(counts.indices(), (n / norm[r]).float(), (U, C),
                                                check_invariants=True).to_sparse_csr()
            self.dist_t = torch.sparse_coo_tensor(torch.stack([c, r]), (n / total[r]).float(), (C, U),
                                                  check_invariants=True).coalesce().to_sparse_csr()
        pop = data.popularity.double().clamp(min=1)
        self.pop = (pop / pop.sum()).float()
        self.log_pop = self.pop.log()

    def share(self, batch: list, leave_user_out: bool = False) -> torch.Tensor:
        """float32 [B, C]: the neighbour share of every label (see the module docstring). ``leave_user_out``: an
        example's own user is not its neighbour (for training examples)."""
        query = past_count_matrix(batch, self.C, "NeighbourPrior.share")  # checks ids and counts (finite, >= 0)
        own = [(b, self.index[ex.user]) for b, ex in enumerate(batch) if leave_user_out and ex.user in self.index]
        query = query / query.norm(dim=1, keepdim=True).clamp(min=1e-30)
        with _quiet_sparse_csr():
            sim = (self.unit @ query.T).T.contiguous()  # [B, U], in [0, 1]: profiles and counts are >= 0
        if own:
            rows, cols = torch.tensor(own).T
            sim[rows, cols] = -1.0  # below every cosine: never among the top k when another user is left
        # the k largest, equal cosines in user order (topk's choice among ties is its own: users with proportional
        # profiles tie exactly, and which of them fills the k-th place would depend on the kernel)
        w, who = sim.sort(dim=1, descending=True, stable=True)
        w, who = w[:, :self.k], who[:, :self.k]
        w = w.clamp(min=0)  # the left-out user, if it had to be taken (a single training user), weighs nothing
        weights = torch.zeros_like(sim).scatter_(1, who, w)  # [B, U] sparse in effect: k nonzeros per row
        with _quiet_sparse_csr():
            mass = (self.dist_t @ weights.T).T + self.beta * self.pop
        return mass / (w.sum(1, keepdim=True) + self.beta)

    def features(self, batch: list, leave_user_out: bool = False) -> torch.Tensor:
        """float32 [B, C, 1]: log share(c) - log pop(c), the lift of the neighbour share over popularity."""
        return (self.share(batch, leave_user_out).log() - self.log_pop)[..., None]
