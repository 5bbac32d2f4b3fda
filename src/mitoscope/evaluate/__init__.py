"""Evaluation: the MIDOG matching protocol, pooled metrics, statistics and survival analysis.

Public API::

    match_points(truth_xy, pred_xy, radius=...)      # one image, official MIDOG matching
    EvalImage / evaluate(images, by="tumor")         # pooled TP/FP/FN, F1, AP, FROC per group
    choose_threshold(validation_images)              # F1-optimal threshold on validation only
    bootstrap_ci, mann_whitney, tile_level_rates, balanced_accuracy, roc_auc

Survival analysis (lifelines, optional extra "survival") lives in :mod:`.survival`.
"""

from .matching import MIDOG_RADIUS_UM, MatchResult, match_points
from .metrics import (
    MIDOG_AP_HALF_BOX_UM,
    Counts,
    EvalImage,
    Evaluation,
    FrocCurve,
    ThresholdSweep,
    average_precision,
    choose_threshold,
    evaluate,
    froc_curve,
    froc_score,
    group_counts,
    score_images,
    threshold_sweep,
)
from .stats import (
    ConfidenceInterval,
    MannWhitneyResult,
    TileRates,
    balanced_accuracy,
    bootstrap_ci,
    mann_whitney,
    roc_auc,
    roc_curve,
    tile_level_rates,
)

__all__ = [
    "MIDOG_AP_HALF_BOX_UM",
    "MIDOG_RADIUS_UM",
    "ConfidenceInterval",
    "Counts",
    "EvalImage",
    "Evaluation",
    "FrocCurve",
    "MannWhitneyResult",
    "MatchResult",
    "ThresholdSweep",
    "TileRates",
    "average_precision",
    "balanced_accuracy",
    "bootstrap_ci",
    "choose_threshold",
    "evaluate",
    "froc_curve",
    "froc_score",
    "group_counts",
    "mann_whitney",
    "match_points",
    "roc_auc",
    "roc_curve",
    "score_images",
    "threshold_sweep",
    "tile_level_rates",
]
