"""The detector in the detection pipeline, both ways.

- :class:`DetectorProposer` (``--proposer detector``): its boxes above the recall-first
  ``proposer_threshold`` become candidates for the classifier. A detector has no object
  outline, so each candidate gets the fallback mask classifier training uses for labelled
  points the proposer missed: a 3 um disc at the box centre.
- :class:`DetectorScorer` (``--mode detector``): stands where the classifier stands in
  :func:`~mitoscope.detect.detect_slide`; a candidate's "MF probability" is the detector's own
  score, the threshold its validated one (maximum F1), and there is no atypical head. With a
  :class:`DetectorProposer` at a low score floor this makes the detector's boxes the final
  detections, with the same outputs, hotspots and report as the two-stage path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InvalidInputError
from ..types import Candidates
from .detector import Detector, load_detector

#: radius of the disc mask of a detector candidate (the classifier's training fallback)
MASK_RADIUS_UM = 3.0


def _as_detector(detector: Any, checkpoint: Any, device: Any) -> Detector:
    if detector is not None:
        return detector
    if checkpoint is None:
        raise InvalidInputError(
            "--proposer detector needs --detector PATH (a checkpoint written by "
            "mitoscope train-detector)"
        )
    return load_detector(Path(checkpoint), device=device)


class DetectorProposer:
    """Candidates from a trained detector (:mod:`mitoscope.candidates` proposer ``detector``).

    Parameters
    ----------
    checkpoint : path, optional
        A detector checkpoint (``mitoscope train-detector``); or give ``detector``.
    detector : Detector, optional
    score_threshold : float, optional
        Lowest score kept; default: the detector's recall-first ``proposer_threshold``.
    device : str, optional
        ``cpu`` / ``cuda`` / ``auto`` (default: CUDA when present).
    """

    name = "detector"

    def __init__(
        self,
        checkpoint: str | Path | None = None,
        *,
        detector: Detector | None = None,
        score_threshold: float | None = None,
        device: Any = None,
    ) -> None:
        self.detector = _as_detector(detector, checkpoint, device)
        if score_threshold is not None and not 0.0 <= float(score_threshold) <= 1.0:
            raise InvalidInputError(f"score threshold must be in [0, 1], got {score_threshold}")
        self.score_threshold = (
            float(self.detector.proposer_threshold)
            if score_threshold is None
            else float(score_threshold)
        )

    def propose(self, image: np.ndarray, *, mpp: float) -> Candidates:
        from ..candidates.base import check_image

        arr = check_image(image)
        xy, boxes, scores = self.detector.detect(arr, mpp=mpp, score_threshold=self.score_threshold)
        if not len(xy):
            return Candidates.empty(self.name)
        r = MASK_RADIUS_UM / float(mpp)
        h, w = arr.shape[:2]
        x0 = np.clip(np.floor(xy[:, 0] - r), 0, w).astype(np.int64)
        y0 = np.clip(np.floor(xy[:, 1] - r), 0, h).astype(np.int64)
        x1 = np.clip(np.ceil(xy[:, 0] + r) + 1, 0, w).astype(np.int64)
        y1 = np.clip(np.ceil(xy[:, 1] + r) + 1, 0, h).astype(np.int64)
        keep = (x1 > x0) & (y1 > y0)
        masks = []
        for i in np.flatnonzero(keep):
            yy, xx = np.mgrid[y0[i] : y1[i], x0[i] : x1[i]]
            masks.append((xx - xy[i, 0]) ** 2 + (yy - xy[i, 1]) ** 2 <= r * r)
        area = np.array([m.sum() for m in masks], dtype=np.float64) * float(mpp) ** 2
        return Candidates(
            x_px=xy[keep, 0],
            y_px=xy[keep, 1],
            bbox=np.stack([x0, y0, x1, y1], axis=1)[keep],
            area_um2=area,
            score=scores[keep],
            masks=masks,
            proposer=self.name,
            mask_downsample=1.0,
        )

    def fingerprint(self) -> str:
        """The detector file's hash and the score floor (cohort resume keys)."""
        return f"{self.detector.sha256[:16]}:{self.score_threshold:.6g}"

    def for_workers(self) -> DetectorProposer:
        """The copy tile worker processes get (its detector on the CPU)."""
        return DetectorProposer(
            detector=self.detector.for_workers(), score_threshold=self.score_threshold
        )


class DetectorScorer:
    """The detector's own score as the final decision (``--mode detector``; no classifier).

    Use with a :class:`DetectorProposer` of the same detector: ``predict_candidates`` returns
    the candidates' scores as MF probabilities and NaN atypical probabilities.
    """

    has_atypical = False
    uses_mask = False

    def __init__(self, detector: Detector, *, threshold: float | None = None) -> None:
        self.detector = detector
        self.input_mpp = float(detector.input_mpp)
        self.threshold = float(detector.threshold if threshold is None else threshold)
        self.atypical_threshold = 0.5
        self.name = detector.name
        self.arch = f"fcos_{detector.card.get('backbone', 'detector')}"
        #: the report's patch: the detector's box
        self.patch_size_px = int(round(detector.box_um / detector.input_mpp))
        self.card = detector.card

    def fingerprint(self) -> str:
        """The detector file's hash and the threshold (cohort resume keys)."""
        return f"{self.detector.sha256[:16]}:{self.threshold:.6g}"

    def predict_candidates(
        self, image: np.ndarray, candidates: Candidates, **_: Any
    ) -> tuple[np.ndarray, np.ndarray]:
        mf = np.asarray(candidates.score, dtype=np.float64)
        return mf, np.full(len(mf), np.nan)


def detector_mode(
    checkpoint: str | Path, *, device: Any = None, floor: float = 0.05
) -> tuple[DetectorProposer, DetectorScorer]:
    """The proposer and the scorer of ``--mode detector``: every box scoring at least
    ``min(floor, threshold)`` is a detection candidate (the MIDOG json keeps them for AP), the
    detector's validated threshold decides which are mitoses."""
    det = load_detector(Path(checkpoint), device=device)
    return (
        DetectorProposer(detector=det, score_threshold=min(float(floor), det.threshold)),
        DetectorScorer(det),
    )


__all__ = ["MASK_RADIUS_UM", "DetectorProposer", "DetectorScorer", "detector_mode"]
