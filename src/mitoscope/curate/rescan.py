"""``curate rescan``: move labels from a slide to a re-scan of its glass, mask the lost ones.

Fick et al. (papers/002) re-scanned exhaustively labelled glass slides on other scanners,
registered the re-scans to the originals and moved every mitotic-figure label across; an
ensemble of classifiers then masked the labels it could no longer recognise in the re-scan
(out of focus, cut by stitching, outside the scanned area), and training ignored those.

Here:

1. both slides are opened with their own pixel sizes (metadata or ``mpp`` / ``target_mpp``);
2. labels are moved by slide-level then patch-level registration
   (:mod:`~mitoscope.curate.registration`); labels that land outside the re-scan are dropped
   and counted;
3. each mitotic-figure label is scored by the ensemble (one or more mitoscope classifiers,
   averaged; default the bundled model) on the original and on the re-scan, and its
   :data:`QUALITY_UM` patch compared between the two (at the coarser pixel size). It becomes
   class ``"ignore"``, with the reason, when the re-scan patch is less than ``sharpness_ratio``
   as sharp as the original (variance of the Laplacian of Gaussian at 0.5 um:
   ``out_of_focus``), holds less than
   half the original's stained pixels (``no_tissue``: not scanned, cut by stitching), or the
   ensemble's re-scan probability is below ``min_probability`` (default: the members' mean
   validated threshold, "the ensemble would not call it a mitosis": ``not_recognised``);
4. other labels (imposters, other classes) are moved as they are.

Outputs: :func:`~mitoscope.curate.transfer_out.write_transfer_outputs`.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InvalidInputError
from ..types import Region
from .registration import (
    MARGIN_UM,
    PATCH_UM,
    PointTransfer,
    check_points_in_slide,
    check_transfer_settings,
    open_scan,
    transfer_with,
)
from .transfer_out import IGNORE, OutLabel, check_out_dir, write_transfer_outputs

#: the re-scan patch is "out of focus" below this share of the original's sharpness
SHARPNESS_RATIO = 0.5
#: scale of the sharpness measure (um): nuclear detail, above pixel noise
SHARPNESS_SIGMA_UM = 0.5
#: summed optical density above which a pixel is stained (glass is below ~0.1)
TISSUE_OD = 0.25
#: the patch side (um) over which sharpness and tissue are compared
QUALITY_UM = 16.0


@dataclass
class RescanConfig:
    """Settings of :func:`curate_rescan` (defaults are the CLI's)."""

    models: tuple[str, ...] = ()  # classifier checkpoints; () -> the bundled model
    min_probability: float | None = None  # None -> mean of the members' thresholds
    sharpness_ratio: float = SHARPNESS_RATIO
    patch: bool = True
    patch_um: float = PATCH_UM
    margin_um: float = MARGIN_UM
    method: str = "orb"
    channel: str = "od"
    max_scale_change: float = 0.1
    device: str = "auto"
    seed: int = 0

    def check(self) -> None:
        check_transfer_settings(self)
        if self.min_probability is not None and not 0.0 <= self.min_probability <= 1.0:
            raise InvalidInputError(
                f"--min-probability must be in [0, 1], got {self.min_probability}"
            )
        if not 0.0 < self.sharpness_ratio <= 1.0:
            raise InvalidInputError(
                f"--sharpness-ratio must be in (0, 1], got {self.sharpness_ratio}"
            )


@dataclass
class RescanResult:
    """Labels on the re-scan and how they got there."""

    labels: list[OutLabel]
    transfer: PointTransfer
    report: dict[str, Any]
    source_index: np.ndarray  # (N,) row of the input labels each output label came from
    paths: dict[str, Path] = field(default_factory=dict)


def labels_for_slide(ann: Any, slide_name: str, labels_path: str | os.PathLike[str]) -> Any:
    """The rows of ``ann`` on ``slide_name`` (matched by file name or stem); a file naming one
    image only is taken as labels of the slide given."""
    names = list(dict.fromkeys(str(n) for n in ann.image.tolist()))
    if not names:
        raise InvalidInputError(f"{labels_path}: no labels")
    stem = slide_name.rsplit(".", 1)[0]
    hit = [n for n in names if Path(n).name in (slide_name, stem) or Path(n).stem == stem]
    if hit:
        return ann.for_images(hit)
    if len(names) == 1:
        return ann
    raise InvalidInputError(
        f"{labels_path} has no labels for {slide_name} (it names {', '.join(names[:3])}"
        f"{', ...' if len(names) > 3 else ''}); pass the labels of this slide"
    )


def _sharpness(rgb: np.ndarray, mpp: float) -> float:
    """Variance of the Laplacian of Gaussian at :data:`SHARPNESS_SIGMA_UM`: the detail a
    focus loss removes, above the pixel-level noise and interpolation that differ between
    scanners."""
    from scipy.ndimage import gaussian_laplace

    g = rgb.astype(np.float32).mean(axis=-1) / 255.0
    return float(gaussian_laplace(g, sigma=max(SHARPNESS_SIGMA_UM / mpp, 0.5)).var())


def _tissue_fraction(rgb: np.ndarray) -> float:
    """Share of stained pixels (summed optical density above :data:`TISSUE_OD`)."""
    od = -np.log10((rgb[..., :3].astype(np.float32) + 1.0) / 256.0).sum(axis=-1)
    return float((od > TISSUE_OD).mean())


def _read_centred(reader: Any, x: float, y: float, side_um: float, mpp: float) -> np.ndarray:
    """A square of ``side_um`` centred on level-0 ``x, y``, read at ``mpp`` (white outside)."""
    side = side_um / reader.info.mpp
    r = Region(
        int(round(x - side / 2)), int(round(y - side / 2)), int(round(side)), int(round(side))
    )
    return reader.read_region_mpp(r, mpp, clip=True)


def ensemble_probabilities(
    classifiers: list[Any], reader: Any, xy: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Mitosis probability of each point under each classifier: ``(members, N)``, and the
    classifiers' thresholds ``(members,)``."""
    from ..classify.crops import centred_input

    probs = np.zeros((len(classifiers), len(xy)))
    for k, clf in enumerate(classifiers):
        side_um = 2.0 * clf.patch_size_px * clf.input_mpp  # context for the mask proposer
        patches, masks = [], []
        for x, y in xy:
            img = _read_centred(reader, x, y, side_um, clf.input_mpp)
            patch, mask = centred_input(
                img, mpp=clf.input_mpp, input_mpp=clf.input_mpp,
                size_px=clf.patch_size_px, with_mask=clf.uses_mask,
            )  # fmt: skip
            patches.append(patch)
            masks.append(mask if mask is not None else np.zeros(patch.shape[:2], bool))
        if patches:
            probs[k] = clf.predict_patches(np.stack(patches), np.stack(masks))[0]
    return probs, np.array([float(c.threshold) for c in classifiers])


def load_ensemble(models: tuple[str, ...], device: str = "auto") -> list[Any]:
    """The ensemble's classifiers (the bundled model when ``models`` is empty)."""
    from ..classify.classifier import load_classifier

    return [load_classifier(m, device=device) for m in (models or (None,))]  # type: ignore[arg-type]


def curate_rescan(
    source: str | os.PathLike[str],
    target: str | os.PathLike[str],
    labels: str | os.PathLike[str],
    out: str | os.PathLike[str] | None,
    *,
    mpp: float | None = None,
    target_mpp: float | None = None,
    config: RescanConfig | None = None,
    classifiers: list[Any] | None = None,
) -> RescanResult:
    """Move ``labels`` (any format :func:`~mitoscope.io.annotations.read_annotations` reads,
    level-0 px of ``source``) onto ``target``, a re-scan of the same glass slide; mark the
    mitotic figures the ensemble no longer recognises ``"ignore"``; write to ``out`` (``None``:
    write nothing). ``classifiers``: already loaded ensemble members (else ``config.models``)."""
    from ..io.annotations import read_annotations

    cfg = config or RescanConfig()
    cfg.check()
    if out is not None:
        check_out_dir(out)
    with (
        open_scan(source, mpp, "--mpp") as src,
        open_scan(target, target_mpp, "--target-mpp") as tgt,
    ):
        if Path(source).resolve() == Path(target).resolve():
            raise InvalidInputError("the source and the re-scan are the same file")
        ann = labels_for_slide(read_annotations(labels), src.info.path.name, labels)
        xy = ann.points()
        check_points_in_slide(xy, src.info, what=f"labels in {Path(labels).name}")
        moved = transfer_with(cfg, src, tgt, xy)
        ti = tgt.info
        inside = (
            (moved.xy[:, 0] >= 0)
            & (moved.xy[:, 1] >= 0)
            & (moved.xy[:, 0] < ti.width)
            & (moved.xy[:, 1] < ti.height)
        )
        mitotic = np.asarray(ann.is_mitosis, dtype=bool) & inside
        idx_mf = np.flatnonzero(mitotic)
        members = classifiers if classifiers is not None else load_ensemble(cfg.models, cfg.device)
        p_src, thr = ensemble_probabilities(members, src, xy[idx_mf])
        p_tgt, _ = ensemble_probabilities(members, tgt, moved.xy[idx_mf])
        p_src_mean, p_tgt_mean = p_src.mean(axis=0), p_tgt.mean(axis=0)
        min_p = float(thr.mean()) if cfg.min_probability is None else float(cfg.min_probability)
        q_mpp = max(src.info.mpp, ti.mpp)
        out_labels: list[OutLabel] = []
        src_rows: list[int] = []
        reasons: dict[str, int] = {}
        ratios: list[float] = []
        k_of = {int(i): k for k, i in enumerate(idx_mf)}
        for i in np.flatnonzero(inside):
            x, y = moved.xy[i]
            meas = {
                "registration_residual_um": float(moved.residual_um[i]),
                "source_x_px": float(xy[i, 0]),
                "source_y_px": float(xy[i, 1]),
            }
            notes = {"registration": str(moved.level[i]), "source_class": str(ann.label[i])}
            cls = _class_name(ann, i)
            flagged = moved.level[i] != "patch"
            if int(i) in k_of:
                k = k_of[int(i)]
                meas["mf_probability"] = float(p_tgt_mean[k])
                meas["mf_probability_source"] = float(p_src_mean[k])
                a = _read_centred(src, *xy[i], QUALITY_UM, q_mpp)
                b = _read_centred(tgt, x, y, QUALITY_UM, q_mpp)
                s_a, s_b = _sharpness(a, q_mpp), _sharpness(b, q_mpp)
                ratio = s_b / s_a if s_a > 0 else 1.0
                meas["sharpness_ratio"] = ratio
                ratios.append(ratio)
                reason = ""
                if ratio < cfg.sharpness_ratio:
                    reason = "out_of_focus"
                elif _tissue_fraction(b) < 0.5 * _tissue_fraction(a):
                    reason = "no_tissue"
                elif p_tgt_mean[k] < min_p:
                    reason = "not_recognised"
                if reason:
                    notes["ignore_reason"] = reason
                    reasons[reason] = reasons.get(reason, 0) + 1
                    cls, flagged = IGNORE, True
            out_labels.append(OutLabel(float(x), float(y), cls, meas, notes, None, bool(flagged)))
            src_rows.append(int(i))
        n_mf = int(ann.is_mitosis.sum())
        report = {
            "command": "curate rescan",
            "source": {
                "path": str(src.info.path),
                "mpp": src.info.mpp,
                "mpp_source": src.info.mpp_source,
            },
            "target": {"path": str(ti.path), "mpp": ti.mpp, "mpp_source": ti.mpp_source},
            "labels_file": str(labels),
            "registration": moved.summary(),
            "labels_in": int(len(ann)),
            "mitotic_in": n_mf,
            "outside_rescan_dropped": int((~inside).sum()),
            "mitotic_ignored": int(sum(reasons.values())),
            "ignore_reasons": reasons,
            "mitotic_kept": int(len(idx_mf) - sum(reasons.values())),
            "sharpness_ratio_median": (round(float(np.median(ratios)), 4) if ratios else None),
            "source_not_recognised": int((p_src_mean < min_p).sum()),
            "min_probability": min_p,
            "ensemble": [getattr(c, "name", "?") for c in members],
            "settings": {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(cfg).items()},
        }
        result = RescanResult(out_labels, moved, report, np.asarray(src_rows, dtype=np.int64))
        if out is not None:
            result.paths = write_transfer_outputs(
                out, target=tgt, labels=out_labels, report=report, command="rescan"
            )
        return result


def _class_name(ann: Any, i: int) -> str:
    """SlideRunner class of an input label (mitotic / atypical / non-mitotic / as named)."""
    from ..io.sliderunner import CLASS_AMF, CLASS_MF, CLASS_NON_MF

    if bool(ann.is_mitosis[i]):
        a = float(ann.atypical[i])
        return CLASS_AMF if math.isfinite(a) and a >= 0.5 else CLASS_MF
    if str(ann.label[i]) == "non-mitotic figure":
        return CLASS_NON_MF
    return str(ann.label[i])


__all__ = [
    "QUALITY_UM",
    "SHARPNESS_RATIO",
    "RescanConfig",
    "RescanResult",
    "curate_rescan",
    "ensemble_probabilities",
    "labels_for_slide",
    "load_ensemble",
]
