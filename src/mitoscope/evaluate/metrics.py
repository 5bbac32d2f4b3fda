"""Pooled detection metrics over a set of images, as the MIDOG challenges compute them.

Everything here works on :class:`EvalImage` records — plain numpy arrays of points in
**millimetres** (the unit of the official MIDOG result format and evaluator) — so it is
independent of how the points were read. Build records from pixels with
:meth:`EvalImage.from_px`.

Over 400 lines: the MIDOG metrics (F1 counts, AP, FROC, threshold sweeps) share the
:class:`EvalImage` records and the one matching.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from ..errors import InvalidInputError
from .matching import MIDOG_RADIUS_UM, as_points, match_points

#: Half the side of the box MIDOG puts around every point for AP (0.01125 mm): two such boxes
#: overlap with IoU >= 0.5 up to a horizontal offset of 7.5 um.
MIDOG_AP_HALF_BOX_UM = 11.25


@dataclass(frozen=True)
class Counts:
    """TP / FP / FN with the derived scores.

    ``f1 = 2TP / (2TP + FP + FN)``. Degenerate cases follow the official evaluator's values
    (which add ``eps = 1e-6``): precision and recall are 0 when their denominator is 0, F1 is 1
    when there was nothing to find and nothing was predicted.
    """

    tp: int = 0
    fp: int = 0
    fn: int = 0

    def __add__(self, other: Counts) -> Counts:
        return Counts(self.tp + other.tp, self.fp + other.fp, self.fn + other.fn)

    @property
    def precision(self) -> float:
        d = self.tp + self.fp
        return self.tp / d if d else 0.0

    @property
    def recall(self) -> float:
        d = self.tp + self.fn
        return self.tp / d if d else 0.0

    @property
    def f1(self) -> float:
        d = 2 * self.tp + self.fp + self.fn
        return 2 * self.tp / d if d else 1.0

    def to_dict(self) -> dict[str, float | int]:
        return {
            "tp": self.tp,
            "fp": self.fp,
            "fn": self.fn,
            "precision": self.precision,
            "recall": self.recall,
            "f1": self.f1,
        }

    @staticmethod
    def total(items: Sequence[Counts]) -> Counts:
        out = Counts()
        for c in items:
            out = out + c
        return out


@dataclass
class EvalImage:
    """Ground truth and predictions of one image, coordinates in millimetres.

    Attributes
    ----------
    image : str
        Image name (e.g. ``"007.tiff"``); predictions and truth are paired by it.
    truth_xy : float64 (N, 2)
        Ground-truth mitotic figures, in the order the evaluator visits them.
    pred_xy : float64 (M, 2)
        All predicted points.
    pred_score : float64 (M,)
        Probability of each prediction (0.5 when the file has none, as the official code).
    pred_is_mitosis : bool (M,)
        Whether the prediction is named "mitotic figure" (the official F1 counts only these).
    groups : dict
        Group labels, e.g. ``{"tumor": "human breast cancer", "domain": "...", "slide": "7"}``.
    width_px, height_px, mpp : optional
        Image size and pixel size (needed for tile-level rates and FP per mm²).
    """

    image: str
    truth_xy: np.ndarray
    pred_xy: np.ndarray
    pred_score: np.ndarray | None = None
    pred_is_mitosis: np.ndarray | None = None
    groups: dict[str, str] = field(default_factory=dict)
    width_px: int | None = None
    height_px: int | None = None
    mpp: float | None = None

    def __post_init__(self) -> None:
        self.truth_xy = as_points(self.truth_xy, name=f"truth points of {self.image}")
        self.pred_xy = as_points(self.pred_xy, name=f"predicted points of {self.image}")
        m = len(self.pred_xy)
        if self.pred_score is None:
            self.pred_score = np.full(m, 0.5)
        if self.pred_is_mitosis is None:
            self.pred_is_mitosis = np.ones(m, dtype=bool)
        self.pred_score = np.asarray(self.pred_score, dtype=np.float64).reshape(-1)
        self.pred_is_mitosis = np.asarray(self.pred_is_mitosis, dtype=bool).reshape(-1)
        if len(self.pred_score) != m or len(self.pred_is_mitosis) != m:
            raise InvalidInputError(
                f"{self.image}: {m} predicted points but {len(self.pred_score)} scores and "
                f"{len(self.pred_is_mitosis)} labels"
            )

    @classmethod
    def from_px(
        cls,
        image: str,
        truth_xy_px: object,
        pred_xy_px: object,
        *,
        mpp: float,
        **kwargs: object,
    ) -> EvalImage:
        """Build a record from level-0 pixel coordinates and the pixel size (um/px)."""
        from ..units import validate_mpp

        mpp = validate_mpp(mpp)
        t = as_points(truth_xy_px, name=f"truth points of {image}") * (mpp / 1000.0)
        p = as_points(pred_xy_px, name=f"predicted points of {image}") * (mpp / 1000.0)
        return cls(image, t, p, mpp=mpp, **kwargs)  # type: ignore[arg-type]

    @property
    def area_mm2(self) -> float | None:
        if self.width_px and self.height_px and self.mpp:
            return self.width_px * self.height_px * (self.mpp / 1000.0) ** 2
        return None

    def selected(self, threshold: float | None = None) -> np.ndarray:
        """Mask of predictions that count as mitoses.

        ``threshold=None``: the ones named "mitotic figure" (official). A number: the ones with
        ``score >= threshold``, whatever their name.
        """
        if threshold is None:
            return self.pred_is_mitosis  # type: ignore[return-value]
        return self.pred_score >= float(threshold)  # type: ignore[operator]


def _radius_mm(radius_um: float) -> float:
    r = float(radius_um)
    if not np.isfinite(r) or r <= 0:
        raise InvalidInputError(f"radius must be a positive length in um, got {radius_um!r}")
    return r / 1000.0


def score_images(
    images: Sequence[EvalImage],
    *,
    radius_um: float = MIDOG_RADIUS_UM,
    threshold: float | None = None,
) -> list[Counts]:
    """Per-image TP/FP/FN (images are matched independently)."""
    r = _radius_mm(radius_um)
    out = []
    for img in images:
        keep = img.selected(threshold)
        res = match_points(img.truth_xy, img.pred_xy[keep], radius=r)
        out.append(Counts(res.tp, res.fp, res.fn))
    return out


def group_counts(
    images: Sequence[EvalImage], counts: Sequence[Counts], by: str
) -> dict[str, Counts]:
    """Pool per-image counts by a group label (images without the label go to ``"unknown"``)."""
    groups: dict[str, Counts] = {}
    for img, c in zip(images, counts, strict=True):
        key = str(img.groups.get(by, "unknown"))
        groups[key] = groups.get(key, Counts()) + c
    return dict(sorted(groups.items()))


# --------------------------------------------------------------------------------------------
# AP (torchmetrics MeanAveragePrecision map_50 with pycocotools semantics)
# --------------------------------------------------------------------------------------------


def _box_iou(det: np.ndarray, gt: np.ndarray, half: float) -> np.ndarray:
    """IoU of axis-aligned squares around points, computed as pycocotools ``bbIou``."""
    dx1, dy1 = det[:, 0] - half, det[:, 1] - half
    dw, dh = (det[:, 0] + half) - dx1, (det[:, 1] + half) - dy1
    gx1, gy1 = gt[:, 0] - half, gt[:, 1] - half
    gw, gh = (gt[:, 0] + half) - gx1, (gt[:, 1] + half) - gy1
    w = np.minimum((dx1 + dw)[:, None], (gx1 + gw)[None, :]) - np.maximum(
        dx1[:, None], gx1[None, :]
    )
    h = np.minimum((dy1 + dh)[:, None], (gy1 + gh)[None, :]) - np.maximum(
        dy1[:, None], gy1[None, :]
    )
    inter = np.where((w > 0) & (h > 0), w * h, 0.0)
    union = (dw * dh)[:, None] + (gw * gh)[None, :] - inter
    return inter / union


def average_precision(
    images: Sequence[EvalImage],
    *,
    half_box_um: float = MIDOG_AP_HALF_BOX_UM,
    iou_threshold: float = 0.5,
    recall_thresholds: np.ndarray | None = None,
) -> float:
    """AP as the MIDOG evaluators compute it (``MeanAveragePrecision(...)['map_50']``).

    Every point (all predictions, whatever their name) becomes a square of half-side
    ``half_box_um``; detections are matched to truth boxes greedily in descending score
    order (stable), each taking the unmatched truth with the highest IoU ``>= iou_threshold``;
    precision is made monotone and sampled at 101 recall points (COCO). Returns ``-1.0`` when
    there is no ground truth at all (as pycocotools).
    """
    half = float(half_box_um) / 1000.0
    rec_thr = np.linspace(0.0, 1.0, 101) if recall_thresholds is None else recall_thresholds
    thr = min(float(iou_threshold), 1 - 1e-10)
    scores, matched = [], []
    n_gt = 0
    for img in images:
        gt = img.truth_xy
        n_gt += len(gt)
        if len(img.pred_xy) == 0:
            continue
        order = np.argsort(-img.pred_score, kind="mergesort")
        det = img.pred_xy[order]
        sc = img.pred_score[order]
        dtm = np.zeros(len(det), dtype=bool)
        if len(gt):
            ious = _box_iou(det, gt, half)
            gtm = np.zeros(len(gt), dtype=bool)
            for d in range(len(det)):
                best, m = thr, -1
                for g in range(len(gt)):
                    if gtm[g] or ious[d, g] < best:
                        continue
                    best, m = ious[d, g], g
                if m >= 0:
                    gtm[m] = True
                    dtm[d] = True
        scores.append(sc)
        matched.append(dtm)
    if n_gt == 0:
        return -1.0
    if not scores:
        return 0.0
    sc = np.concatenate(scores)
    dtm = np.concatenate(matched)
    order = np.argsort(-sc, kind="mergesort")
    tps = np.cumsum(dtm[order]).astype(np.float64)
    fps = np.cumsum(~dtm[order]).astype(np.float64)
    rc = tps / n_gt
    pr = tps / (fps + tps + np.spacing(1))
    pr = np.maximum.accumulate(pr[::-1])[::-1]
    inds = np.searchsorted(rc, rec_thr, side="left")
    q = np.where(inds < len(pr), pr[np.minimum(inds, len(pr) - 1)], 0.0)
    return float(np.mean(q))


# --------------------------------------------------------------------------------------------
# FROC
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FrocCurve:
    """Sensitivity against false positives per image (and per mm² when areas are known)."""

    thresholds: np.ndarray
    sensitivity: np.ndarray
    fp_per_image: np.ndarray
    fp_per_mm2: np.ndarray | None


def froc_curve(
    images: Sequence[EvalImage],
    *,
    radius_um: float = MIDOG_RADIUS_UM,
    thresholds: np.ndarray | None = None,
    n_thresholds: int = 40,
) -> FrocCurve:
    """Sensitivity and mean FP per image at score thresholds (``score >= t``, all predictions).

    Default thresholds: ``n_thresholds`` evenly spaced from the lowest to the highest score
    (as MIDOG 2025 ``calc_froc_score``). Sensitivity is ``TP / (TP + FN + 1e-6)`` as there.
    """
    if thresholds is None:
        all_sc = np.concatenate([img.pred_score for img in images]) if images else np.zeros(0)
        if len(all_sc) == 0:
            thresholds = np.zeros(0)
        elif all_sc.min() == all_sc.max():
            thresholds = np.array([all_sc.min()])
        else:
            thresholds = np.linspace(all_sc.min(), all_sc.max(), n_thresholds)
    thresholds = np.asarray(thresholds, dtype=np.float64)
    areas = [img.area_mm2 for img in images]
    total_area = sum(areas) if images and all(a is not None for a in areas) else None  # type: ignore[misc]
    sens, fppi, fpmm = [], [], []
    for t in thresholds:
        counts = score_images(images, radius_um=radius_um, threshold=float(t))
        c = Counts.total(counts)
        sens.append(c.tp / (c.tp + c.fn + 1e-6))
        fppi.append(float(np.mean([x.fp for x in counts])) if counts else 0.0)
        if total_area:
            fpmm.append(c.fp / total_area)
    return FrocCurve(
        thresholds=thresholds,
        sensitivity=np.asarray(sens),
        fp_per_image=np.asarray(fppi),
        fp_per_mm2=np.asarray(fpmm) if total_area else None,
    )


def froc_score(
    images: Sequence[EvalImage],
    *,
    radius_um: float = MIDOG_RADIUS_UM,
    max_fp: float = 8.0,
    n_thresholds: int = 40,
) -> float:
    """Area under the FROC curve up to ``max_fp`` FP per image (MIDOG 2025 ``froc_auc``).

    Sensitivity is interpolated at 50 points in ``[0, max_fp]`` (0 left of the curve, the last
    sensitivity right of it) and integrated with the trapezoid rule. NaN without predictions.
    """
    if not images or all(len(img.pred_xy) == 0 for img in images):
        return float("nan")
    curve = froc_curve(images, radius_um=radius_um, n_thresholds=n_thresholds)
    order = np.argsort(curve.fp_per_image)
    fp = curve.fp_per_image[order]
    sens = curve.sensitivity[order]
    grid = np.linspace(0, max_fp, 50)
    interp = np.interp(grid, fp, sens, left=0, right=sens[-1])
    # trapezoid rule, written out as numpy's trapz/trapezoid computes it
    return float((np.diff(grid) * (interp[1:] + interp[:-1]) / 2.0).sum())


# --------------------------------------------------------------------------------------------
# Threshold sweep
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ThresholdSweep:
    """Pooled precision, recall and F1 for each threshold (predictions with ``score >= t``)."""

    thresholds: np.ndarray
    precision: np.ndarray
    recall: np.ndarray
    f1: np.ndarray

    @property
    def best_threshold(self) -> float:
        """Threshold with the highest F1 (the lowest such threshold on ties)."""
        return float(self.thresholds[int(np.argmax(self.f1))])

    def to_dict(self) -> dict[str, list[float]]:
        return {
            "thresholds": self.thresholds.tolist(),
            "precision": self.precision.tolist(),
            "recall": self.recall.tolist(),
            "f1": self.f1.tolist(),
        }


def candidate_thresholds(images: Sequence[EvalImage], *, max_thresholds: int = 101) -> np.ndarray:
    """Distinct scores, thinned to at most ``max_thresholds`` quantiles when there are more."""
    all_sc = np.concatenate([img.pred_score for img in images]) if images else np.zeros(0)
    uniq = np.unique(all_sc)
    if len(uniq) <= max_thresholds:
        return uniq
    qs = np.quantile(uniq, np.linspace(0, 1, max_thresholds), method="nearest")
    return np.unique(qs)


def threshold_sweep(
    images: Sequence[EvalImage],
    *,
    radius_um: float = MIDOG_RADIUS_UM,
    thresholds: np.ndarray | None = None,
    max_thresholds: int = 101,
) -> ThresholdSweep:
    """F1, precision and recall against the decision threshold (full matching at each)."""
    if thresholds is None:
        thresholds = candidate_thresholds(images, max_thresholds=max_thresholds)
    thresholds = np.asarray(thresholds, dtype=np.float64)
    p, r, f = [], [], []
    for t in thresholds:
        c = Counts.total(score_images(images, radius_um=radius_um, threshold=float(t)))
        p.append(c.precision)
        r.append(c.recall)
        f.append(c.f1)
    return ThresholdSweep(thresholds, np.asarray(p), np.asarray(r), np.asarray(f))


def choose_threshold(
    validation: Sequence[EvalImage],
    *,
    radius_um: float = MIDOG_RADIUS_UM,
    thresholds: np.ndarray | None = None,
    max_thresholds: int = 101,
) -> float:
    """The threshold maximising pooled F1 on **validation** images (apply it to the test set).

    >>> img = EvalImage("a", [[0, 0]], [[0, 0], [1, 1]], pred_score=[0.9, 0.2])
    >>> choose_threshold([img])
    0.9
    """
    if not validation or all(len(img.pred_xy) == 0 for img in validation):
        raise InvalidInputError("cannot choose a threshold: the validation set has no predictions")
    sweep = threshold_sweep(
        validation, radius_um=radius_um, thresholds=thresholds, max_thresholds=max_thresholds
    )
    return sweep.best_threshold


# --------------------------------------------------------------------------------------------
# The whole evaluation
# --------------------------------------------------------------------------------------------


@dataclass
class Evaluation:
    """Result of :func:`evaluate`: pooled and per-group counts plus AP and FROC."""

    overall: Counts
    per_image: dict[str, Counts]
    groups: dict[str, dict[str, Counts]]
    ap: float
    froc_auc: float
    radius_um: float
    threshold: float | None
    n_images: int
    group_ap: dict[str, dict[str, float]] = field(default_factory=dict)
    extra: dict[str, object] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        out: dict[str, object] = dict(self.overall.to_dict())
        out.update(
            {
                "ap": self.ap,
                "froc_auc": None if np.isnan(self.froc_auc) else self.froc_auc,
                "n_images": self.n_images,
                "radius_um": self.radius_um,
                "threshold": self.threshold,
                "groups": {
                    by: {
                        k: {**c.to_dict(), "ap": self.group_ap.get(by, {}).get(k)}
                        for k, c in table.items()
                    }
                    for by, table in self.groups.items()
                },
                "per_image": {k: c.to_dict() for k, c in self.per_image.items()},
            }
        )
        out.update(self.extra)
        return out


def evaluate(
    images: Sequence[EvalImage],
    *,
    radius_um: float = MIDOG_RADIUS_UM,
    threshold: float | None = None,
    by: Sequence[str] | str | None = None,
) -> Evaluation:
    """Pooled MIDOG metrics over ``images`` and per group label(s) in ``by``."""
    if isinstance(by, str):
        by = [by]
    counts = score_images(images, radius_um=radius_um, threshold=threshold)
    groups: dict[str, dict[str, Counts]] = {}
    group_ap: dict[str, dict[str, float]] = {}
    for key in by or []:
        groups[key] = group_counts(images, counts, key)
        group_ap[key] = {}
        for name in groups[key]:
            members = [img for img in images if str(img.groups.get(key, "unknown")) == name]
            group_ap[key][name] = average_precision(members)
    return Evaluation(
        overall=Counts.total(counts),
        per_image={img.image: c for img, c in zip(images, counts, strict=True)},
        groups=groups,
        ap=average_precision(images),
        froc_auc=froc_score(images, radius_um=radius_um),
        radius_um=float(radius_um),
        threshold=threshold,
        n_images=len(images),
        group_ap=group_ap,
    )


def images_by_name(images: Sequence[EvalImage]) -> Mapping[str, EvalImage]:
    """Index records by image name, rejecting duplicates."""
    out: dict[str, EvalImage] = {}
    for img in images:
        if img.image in out:
            raise InvalidInputError(f"image {img.image!r} appears twice; names must be unique")
        out[img.image] = img
    return out
