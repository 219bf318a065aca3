"""Temporal sets prediction (next-basket / next event's label set): data, metrics, baselines and the training
entry point ``python -m torchxc.temporal_sets``. The model is :class:`torchxc.models.LANET`."""
from .baselines import personal_frequency_scores
from .data import Example, TemporalSets, collate, load_temporal_sets_csv, load_temporal_sets_json, past_count_matrix
from .metrics import evaluate_scores, ndcg_at_k, phr_at_k, recall_at_k, tune_thresholds
from .neighbours import NeighbourPrior
from .transitions import TransitionPrior

__all__ = ["Example", "NeighbourPrior", "TemporalSets", "collate", "evaluate_scores", "load_temporal_sets_csv",
           "load_temporal_sets_json", "ndcg_at_k", "past_count_matrix", "personal_frequency_scores", "phr_at_k",
           "recall_at_k", "TransitionPrior", "tune_thresholds"]
