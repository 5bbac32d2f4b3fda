"""Statistics the papers report: bootstrap CIs, Mann-Whitney U, tile-level rates, atypical scores."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import InvalidInputError
from .matching import as_points
from .metrics import Counts


@dataclass(frozen=True)
class ConfidenceInterval:
    """A point estimate with a percentile bootstrap interval."""

    estimate: float
    low: float
    high: float
    level: float
    n_boot: int

    def to_dict(self) -> dict[str, float]:
        return {
            "estimate": self.estimate,
            "low": self.low,
            "high": self.high,
            "level": self.level,
            "n_boot": self.n_boot,
        }


def bootstrap_ci(
    per_image: Sequence[Counts],
    *,
    metric: str = "f1",
    n_boot: int = 2000,
    level: float = 0.95,
    rng: int | np.random.Generator | None = 0,
) -> ConfidenceInterval:
    """Percentile bootstrap CI of a pooled metric, resampling **images** with replacement.

    :func:`scipy.stats.bootstrap` (``method="percentile"``) over the image indices: each
    replicate draws ``len(per_image)`` images, pools their TP/FP/FN and recomputes ``metric``
    (``"f1"``, ``"precision"`` or ``"recall"``). One image gives a zero-width interval.

    >>> c = [Counts(5, 1, 1), Counts(3, 2, 0), Counts(4, 0, 2)]
    >>> ci = bootstrap_ci(c, n_boot=200, rng=1)
    >>> ci.low <= ci.estimate <= ci.high
    True
    """
    from scipy.stats import bootstrap

    if metric not in ("f1", "precision", "recall"):
        raise InvalidInputError(f"metric must be f1, precision or recall, got {metric!r}")
    if not 0 < level < 1:
        raise InvalidInputError(f"level must be in (0, 1), got {level!r}")
    if len(per_image) == 0:
        raise InvalidInputError("bootstrap needs at least one image")
    est = float(getattr(Counts.total(per_image), metric))
    if len(per_image) == 1:
        return ConfidenceInterval(est, est, est, float(level), int(n_boot))
    gen = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    arr = np.array([[c.tp, c.fp, c.fn] for c in per_image], dtype=np.float64)

    def pooled(idx: np.ndarray, axis: int = -1) -> np.ndarray:
        sums = arr[np.moveaxis(idx, axis, -1).astype(np.int64)].sum(axis=-2)  # (..., 3)
        tp, fp, fn = sums[..., 0], sums[..., 1], sums[..., 2]
        d, empty = {"f1": (2 * tp + fp + fn, 1.0), "precision": (tp + fp, 0.0)}.get(
            metric, (tp + fn, 0.0)
        )
        num = 2 * tp if metric == "f1" else tp
        return np.where(d > 0, num / np.where(d > 0, d, 1), empty)

    res = bootstrap(
        (np.arange(len(arr)),),
        pooled,
        n_resamples=int(n_boot),
        confidence_level=float(level),
        method="percentile",
        vectorized=True,
        random_state=gen,
    )
    lo, hi = res.confidence_interval
    return ConfidenceInterval(est, float(lo), float(hi), float(level), int(n_boot))


@dataclass(frozen=True)
class MannWhitneyResult:
    statistic: float
    p_value: float
    n_a: int
    n_b: int
    median_a: float
    median_b: float

    def to_dict(self) -> dict[str, float]:
        return dict(self.__dict__)


def mann_whitney(
    a: Sequence[float], b: Sequence[float], *, alternative: str = "two-sided"
) -> MannWhitneyResult:
    """Mann-Whitney U test between two sets of runs (e.g. F1 of five seeds each, OMG-Net).

    Uses :func:`scipy.stats.mannwhitneyu` (exact p-value for small samples without ties).
    """
    from scipy.stats import mannwhitneyu

    xa = np.asarray(a, dtype=np.float64).reshape(-1)
    xb = np.asarray(b, dtype=np.float64).reshape(-1)
    if len(xa) == 0 or len(xb) == 0:
        raise InvalidInputError("Mann-Whitney U needs at least one run in each group")
    if alternative not in ("two-sided", "less", "greater"):
        raise InvalidInputError(f"alternative must be two-sided, less or greater: {alternative!r}")
    res = mannwhitneyu(xa, xb, alternative=alternative)
    return MannWhitneyResult(
        statistic=float(res.statistic),
        p_value=float(res.pvalue),
        n_a=len(xa),
        n_b=len(xb),
        median_a=float(np.median(xa)),
        median_b=float(np.median(xb)),
    )


@dataclass(frozen=True)
class TileRates:
    """Tile-level confusion counts (Ji et al.): is there a mitosis in the tile?"""

    tp: int
    fp: int
    fn: int
    tn: int

    @property
    def tpr(self) -> float:
        d = self.tp + self.fn
        return self.tp / d if d else 0.0

    @property
    def fpr(self) -> float:
        d = self.fp + self.tn
        return self.fp / d if d else 0.0

    def __add__(self, other: TileRates) -> TileRates:
        return TileRates(
            self.tp + other.tp, self.fp + other.fp, self.fn + other.fn, self.tn + other.tn
        )

    def to_dict(self) -> dict[str, float]:
        return {**self.__dict__, "tpr": self.tpr, "fpr": self.fpr}


def tile_origins(length_px: int, *, tile_px: int, stride_px: int) -> np.ndarray:
    """Tile start positions along one axis; the last tile is flush with the border."""
    if length_px <= tile_px:
        return np.array([0], dtype=np.int64)
    starts = np.arange(0, length_px - tile_px + 1, stride_px, dtype=np.int64)
    if starts[-1] != length_px - tile_px:
        starts = np.append(starts, length_px - tile_px)
    return starts


def tile_level_rates(
    truth_xy_px: object,
    pred_xy_px: object,
    *,
    width_px: int,
    height_px: int,
    tile_px: int = 250,
    stride_px: int = 125,
) -> TileRates:
    """TPR / FPR of "this tile holds a mitosis" over a sliding grid (Ji et al.: 250 px, 125).

    A tile ``[x0, x0 + tile) x [y0, y0 + tile)`` is truly positive if it contains a truth
    point and predicted positive if it contains a predicted point (pass the predictions that
    count, e.g. after thresholding).
    """
    if tile_px <= 0 or stride_px <= 0:
        raise InvalidInputError("tile_px and stride_px must be positive")
    if width_px <= 0 or height_px <= 0:
        raise InvalidInputError("image width and height must be positive")
    xs = tile_origins(int(width_px), tile_px=tile_px, stride_px=stride_px)
    ys = tile_origins(int(height_px), tile_px=tile_px, stride_px=stride_px)

    def occupied(points: np.ndarray) -> np.ndarray:
        occ = np.zeros((len(ys), len(xs)), dtype=bool)
        if len(points) == 0:
            return occ
        in_x = (points[:, 0][None, :] >= xs[:, None]) & (
            points[:, 0][None, :] < xs[:, None] + tile_px
        )
        in_y = (points[:, 1][None, :] >= ys[:, None]) & (
            points[:, 1][None, :] < ys[:, None] + tile_px
        )
        return (in_y.astype(np.int64) @ in_x.T.astype(np.int64)) > 0

    t = occupied(as_points(truth_xy_px, name="truth_xy_px"))
    p = occupied(as_points(pred_xy_px, name="pred_xy_px"))
    return TileRates(
        tp=int((t & p).sum()),
        fp=int((~t & p).sum()),
        fn=int((t & ~p).sum()),
        tn=int((~t & ~p).sum()),
    )


def _binary(y: object, name: str) -> np.ndarray:
    arr = np.asarray(y).reshape(-1)
    if arr.dtype == bool:
        return arr
    vals = set(np.unique(arr).tolist())
    if not vals <= {0, 1}:
        raise InvalidInputError(
            f"{name} must be binary (0/1 or bool), got values {sorted(vals)[:5]}"
        )
    return arr.astype(bool)


def balanced_accuracy(y_true: object, y_pred: object) -> float:
    """Mean of sensitivity and specificity (atypical = positive class), by
    :func:`sklearn.metrics.balanced_accuracy_score`; with one class present, its recall.

    >>> balanced_accuracy([1, 1, 0, 0, 0, 0], [1, 0, 0, 0, 0, 1])
    0.625
    """
    import warnings

    from sklearn.metrics import balanced_accuracy_score

    t = _binary(y_true, "y_true")
    p = _binary(y_pred, "y_pred")
    if len(t) != len(p):
        raise InvalidInputError(f"y_true has {len(t)} labels but y_pred {len(p)}")
    if len(t) == 0:
        raise InvalidInputError("balanced accuracy needs at least one label")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # one class in y_true: its recall, as documented
        return float(balanced_accuracy_score(t, p))


def roc_auc(y_true: object, score: object) -> float:
    """Area under the ROC curve (:func:`sklearn.metrics.roc_auc_score`; ties count one half).

    >>> roc_auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    0.75
    """
    from sklearn.metrics import roc_auc_score

    t = _binary(y_true, "y_true")
    s = np.asarray(score, dtype=np.float64).reshape(-1)
    if len(t) != len(s):
        raise InvalidInputError(f"y_true has {len(t)} labels but score {len(s)}")
    if t.all() or not t.any():
        raise InvalidInputError("ROC AUC needs both atypical and normal examples")
    return float(roc_auc_score(t, s))


def roc_curve(y_true: object, score: object) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """False-positive rate, true-positive rate and thresholds (descending), starting at (0, 0)
    (:func:`sklearn.metrics.roc_curve` with every threshold kept)."""
    import warnings

    from sklearn.metrics import roc_curve as _roc_curve

    t = _binary(y_true, "y_true")
    s = np.asarray(score, dtype=np.float64).reshape(-1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # one class only: that axis is NaN, as sklearn says
        fpr, tpr, thr = _roc_curve(t, s, drop_intermediate=False)
    return np.nan_to_num(fpr), np.nan_to_num(tpr), thr
