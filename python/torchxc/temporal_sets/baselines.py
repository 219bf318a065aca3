"""The personal-frequency baseline of next-basket work: rank a user's labels by how often they occurred in the
user's past events (the whole past, not only the look-back window); ties and labels the user never had are
ordered by global popularity in the training data."""
import torch

__all__ = ["personal_frequency_scores"]


def personal_frequency_scores(examples: list, popularity: torch.Tensor) -> torch.Tensor:
    """Scores [N, C]: past count + popularity / (max popularity + 1) (so popularity only breaks ties)."""
    C = popularity.numel()
    scores = (popularity.float() / (popularity.max().float() + 1)).expand(len(examples), C).clone()
    for i, ex in enumerate(examples):
        if ex.past_counts:
            ids = torch.tensor(list(ex.past_counts.keys()), dtype=torch.long)
            scores[i, ids] += torch.tensor(list(ex.past_counts.values()), dtype=torch.float32)
    return scores
