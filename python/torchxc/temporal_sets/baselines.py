"""The personal-frequency baseline of next-basket work: rank a user's labels by how often they occurred in the
user's past events (the whole past, not only the look-back window); ties and labels the user never had are
ordered by global popularity in the training data -- or, given a :class:`TransitionPrior`, by the smoothed
probability that the label follows the user's past labels (geometric mean over the distinct past labels), which
is popularity for a user without a past -- or, given a :class:`NeighbourPrior`, by the label's share among the
user's most similar training users."""
import torch

from .._checks import check_counts
from .data import past_count_matrix

__all__ = ["personal_frequency_scores"]


def personal_frequency_scores(examples: list, popularity: torch.Tensor, prior=None, neighbours=None) -> torch.Tensor:
    """Scores [N, C]: past count + a tie-break in [0, 1): popularity / (max popularity + 1), or with ``prior`` (a
    :class:`torchxc.temporal_sets.transitions.TransitionPrior`) 0.999 * P(label | past), or with ``neighbours`` (a
    :class:`torchxc.temporal_sets.neighbours.NeighbourPrior`) 0.999 * the neighbour share (one of the two priors,
    not both). ``popularity``: [C] finite label counts >= 0 (:attr:`TemporalSets.popularity`)."""
    fn = "personal_frequency_scores"
    if prior is not None and neighbours is not None:
        raise ValueError(f"{fn}: the tie-break comes from one prior: got both a transition and a neighbour prior")
    if not isinstance(popularity, torch.Tensor) or popularity.dim() != 1 or popularity.numel() == 0:
        got = tuple(popularity.shape) if isinstance(popularity, torch.Tensor) else type(popularity).__name__
        raise ValueError(f"{fn}: popularity must be a 1-D tensor of label counts [C], got {got}")
    check_counts(popularity, fn, "popularity")  # NaN: the tie-break would make every score NaN
    C = popularity.numel()
    for what, p in (("the prior", prior), ("the neighbour prior", neighbours)):
        if p is not None and p.C != C:
            raise ValueError(f"{fn}: {what} covers {p.C} labels, popularity {C}")
    counts = past_count_matrix(examples, C, fn)  # checks every example's ids and counts first
    if neighbours is not None:
        scores = torch.cat([0.999 * neighbours.share(examples[i:i + 512]) for i in range(0, len(examples), 512)]) \
            if examples else torch.zeros(0, C)
    elif prior is None:
        pop = popularity.double()
        scores = (pop / (pop.max() + 1)).float().expand(len(examples), C).clone()
    else:
        scores = torch.cat([0.999 * (prior.log_pop + prior.features(examples[i:i + 512])[..., 1]).exp()
                            for i in range(0, len(examples), 512)]) if examples else torch.zeros(0, C)
    return scores.add_(counts)  # scores is a fresh matrix in both branches
