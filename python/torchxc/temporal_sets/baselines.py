"""The personal-frequency baseline of next-basket work: rank a user's labels by how often they occurred in the
user's past events (the whole past, not only the look-back window); ties and labels the user never had are
ordered by global popularity in the training data -- or, given a :class:`TransitionPrior`, by the smoothed
probability that the label follows the user's past labels (geometric mean over the distinct past labels), which
is popularity for a user without a past."""
import torch

__all__ = ["personal_frequency_scores"]


def personal_frequency_scores(examples: list, popularity: torch.Tensor, prior=None) -> torch.Tensor:
    """Scores [N, C]: past count + a tie-break in [0, 1): popularity / (max popularity + 1), or with ``prior`` (a
    :class:`torchxc.temporal_sets.transitions.TransitionPrior`) 0.999 * P(label | past)."""
    C = popularity.numel()
    if prior is None:
        scores = (popularity.float() / (popularity.max().float() + 1)).expand(len(examples), C).clone()
    else:
        scores = torch.cat([0.999 * (prior.log_pop + prior.features(examples[i:i + 512])[..., 1]).exp()
                            for i in range(0, len(examples), 512)]) if examples else torch.zeros(0, C)
    for i, ex in enumerate(examples):
        if ex.past_counts:
            ids = torch.tensor(list(ex.past_counts.keys()), dtype=torch.long)
            scores[i, ids] += torch.tensor(list(ex.past_counts.values()), dtype=torch.float32)
    return scores
