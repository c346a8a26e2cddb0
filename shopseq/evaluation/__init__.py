"""Full-ranking evaluation: ``evaluate(model, eval_set, EvalConfig(...)) -> EvalResult``."""

from shopseq.evaluation.evaluator import EvalConfig, EvalResult, evaluate, target_pairs
from shopseq.evaluation.metrics import (
    coverage,
    discounts,
    ideal_dcg,
    per_target_metrics,
    per_user_metrics,
    target_ranks,
)

__all__ = [
    "EvalConfig",
    "EvalResult",
    "coverage",
    "discounts",
    "evaluate",
    "ideal_dcg",
    "per_target_metrics",
    "per_user_metrics",
    "target_pairs",
    "target_ranks",
]
