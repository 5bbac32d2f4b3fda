"""``curate phh3``: mitosis labels on an H&E slide from a pHH3 re-stain of the same section.

OMG-Net's STMF (papers/001): an H&E section was scanned, de-stained, immunolabelled with
anti-phosphohistone H3 (pHH3, which marks cells in mitosis) and scanned again; the two slides
were registered with RANSAC at slide and patch level, the pHH3-positive nuclei were found by a
threshold and their masks moved to the H&E slide as mitotic-figure labels, which pathologists
then reviewed (pHH3 is neither perfectly sensitive nor specific).

Here:

1. DAB is separated by colour deconvolution (:func:`skimage.color.rgb2hed`, Ruifrok-Johnston
   vectors) on the pHH3 slide read at ``detect_mpp``; a pixel is pHH3-positive when its DAB
   optical density (decadic, ``6 x`` skimage's unit) is at least ``dab_threshold`` and larger
   than its haematoxylin and eosin densities (brown, not dark blue or pink);
2. positive pixels are opened (``open_um``), holes filled, and connected objects kept when
   their area is within ``[min_area_um2, max_area_um2]`` (a nucleus, not a speck or a
   stained region);
3. the slides are registered (slide level, then one patch-level fit per group of objects,
   :mod:`~mitoscope.curate.registration`); each object's outline is moved with the map of its
   window;
4. every object becomes a "Mitotic figure" label on the H&E slide with its mask (GeoJSON
   polygon), DAB density, area and registration residual; labels whose patch registration
   failed (slide-level map only) are flagged and come first in the review queue.

Outputs: :func:`~mitoscope.curate.transfer_out.write_transfer_outputs`; then ``mitoscope review
OUT --slides DIR`` and ``mitoscope train --source sliderunner:OUT/mitoscope.sqlite,...``.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InvalidInputError
from .registration import (
    MARGIN_UM,
    PATCH_UM,
    PointTransfer,
    check_transfer_settings,
    open_scan,
    transfer_with,
)
from .transfer_out import OutLabel, check_out_dir, write_transfer_outputs

#: decadic optical density per unit of :func:`skimage.color.rgb2hed` (which divides the
#: natural-log density by ``ln(1e6)``)
DECADIC_PER_SKIMAGE = math.log(1e6) / math.log(10.0)
#: default DAB threshold (decadic OD): above the counterstains' leak into the DAB channel
#: measured on the 30 H&E images in ../shared (docs/curate-phh3.md)
DAB_THRESHOLD = 0.5
#: side of the tiles the pHH3 slide is read in (um) and their overlap
TILE_UM = 512.0
OVERLAP_UM = 40.0


@dataclass
class PHH3Config:
    """Settings of :func:`curate_phh3` (defaults are the CLI's)."""

    dab_threshold: float = DAB_THRESHOLD
    min_area_um2: float = 10.0
    max_area_um2: float = 250.0
    open_um: float = 0.5
    detect_mpp: float = 0.5
    patch: bool = True
    patch_um: float = PATCH_UM
    margin_um: float = MARGIN_UM
    method: str = "orb"
    channel: str = "haematoxylin"
    max_scale_change: float = 0.1
    seed: int = 0

    def check(self) -> None:
        check_transfer_settings(self)
        for name in ("dab_threshold", "min_area_um2", "max_area_um2", "detect_mpp"):
            v = float(getattr(self, name))
            if not math.isfinite(v) or v <= 0:
                option = "--" + name.replace("_", "-")  # the CLI's name for the setting
                raise InvalidInputError(f"{name} ({option}) must be a positive number, got {v}")
        if self.min_area_um2 >= self.max_area_um2:
            raise InvalidInputError(
                f"min_area_um2 ({self.min_area_um2}) must be below max_area_um2 "
                f"({self.max_area_um2})"
            )
        if self.open_um < 0:
            raise InvalidInputError(f"open_um must be >= 0, got {self.open_um}")


@dataclass
class DabObjects:
    """pHH3-positive objects in level-0 px of the slide they were found on."""

    x: np.ndarray
    y: np.ndarray
    area_um2: np.ndarray
    dab_od: np.ndarray  # mean DAB optical density (decadic) over the object
    contours: list[np.ndarray] = field(default_factory=list)  # (K, 2) x, y
    positive_fraction: float = 0.0  # share of pixels read that were DAB-positive

    def __len__(self) -> int:
        return len(self.x)


def stain_densities(rgb: np.ndarray) -> np.ndarray:
    """Haematoxylin, eosin and DAB optical densities (decadic), ``(H, W, 3)`` float32."""
    from skimage.color import rgb2hed

    return (rgb2hed(np.asarray(rgb)[..., :3]) * DECADIC_PER_SKIMAGE).astype(np.float32)


def dab_mask(rgb: np.ndarray, threshold: float = DAB_THRESHOLD) -> np.ndarray:
    """DAB-positive pixels: DAB density >= ``threshold`` and above both other stains."""
    hed = stain_densities(rgb)
    h, e, d = hed[..., 0], hed[..., 1], hed[..., 2]
    return (d >= float(threshold)) & (d > h) & (d > e)


def detect_dab(rgb: np.ndarray, mpp: float, cfg: PHH3Config | None = None) -> DabObjects:
    """pHH3-positive objects of one image at pixel size ``mpp`` (image pixel coordinates)."""
    from scipy import ndimage as ndi
    from skimage.measure import find_contours, regionprops
    from skimage.morphology import disk, opening

    cfg = cfg or PHH3Config()
    hed = stain_densities(rgb)
    h, e, d = hed[..., 0], hed[..., 1], hed[..., 2]
    pos = (d >= cfg.dab_threshold) & (d > h) & (d > e)
    frac = float(pos.mean()) if pos.size else 0.0
    r = int(round(cfg.open_um / mpp))
    if r >= 1:
        pos = opening(pos, disk(r))
    pos = ndi.binary_fill_holes(pos)
    lab, _ = ndi.label(pos)
    px_area = mpp * mpp
    xs, ys, areas, dabs, contours = [], [], [], [], []
    for rp in regionprops(lab, intensity_image=d):
        area = rp.area * px_area
        if not cfg.min_area_um2 <= area <= cfg.max_area_um2:
            continue
        cy, cx = rp.centroid
        y0, x0, _, _ = rp.bbox
        ring = find_contours(np.pad(rp.image, 1).astype(np.float32), 0.5)
        ring = max(ring, key=len) if ring else np.zeros((0, 2))
        contours.append(np.column_stack([ring[:, 1] - 1 + x0, ring[:, 0] - 1 + y0]))
        xs.append(cx)
        ys.append(cy)
        areas.append(area)
        dabs.append(float(rp.intensity_mean))
    return DabObjects(
        np.asarray(xs, float), np.asarray(ys, float), np.asarray(areas, float),
        np.asarray(dabs, float), contours, frac,
    )  # fmt: skip


def detect_dab_slide(reader: Any, cfg: PHH3Config | None = None) -> DabObjects:
    """pHH3-positive objects of a whole slide (level-0 px), read in overlapping tiles at
    ``cfg.detect_mpp``; an object belongs to the tile whose core holds its centre."""
    from ..slide.tiling import plan_tiles

    cfg = cfg or PHH3Config()
    info = reader.info
    mpp = max(cfg.detect_mpp, info.mpp)
    tiles = plan_tiles(info, None, tile_um=TILE_UM, overlap_um=OVERLAP_UM)
    parts: list[DabObjects] = []
    n_pos = n_px = 0.0
    for t in tiles:
        img = reader.read_region_mpp(t.region, mpp, clip=True)
        f = t.width / img.shape[1]  # level-0 px per work px
        obj = detect_dab(img, mpp, cfg)
        n_pos += obj.positive_fraction * img.shape[0] * img.shape[1]
        n_px += img.shape[0] * img.shape[1]
        if not len(obj):
            continue
        x = (obj.x + 0.5) * f - 0.5 + t.x
        y = (obj.y + 0.5) * f - 0.5 + t.y
        c = t.core
        cx0, cy0, cx1, cy1 = c.x, c.y, c.x1, c.y1
        keep = (x >= cx0) & (x < cx1) & (y >= cy0) & (y < cy1)
        idx = np.flatnonzero(keep)
        parts.append(
            DabObjects(
                x[idx], y[idx], obj.area_um2[idx], obj.dab_od[idx],
                [(obj.contours[i] + 0.5) * f - 0.5 + np.array([t.x, t.y]) for i in idx],
            )
        )  # fmt: skip
    if not parts:
        return DabObjects(np.zeros(0), np.zeros(0), np.zeros(0), np.zeros(0), [], 0.0)
    return DabObjects(
        np.concatenate([p.x for p in parts]),
        np.concatenate([p.y for p in parts]),
        np.concatenate([p.area_um2 for p in parts]),
        np.concatenate([p.dab_od for p in parts]),
        [c for p in parts for c in p.contours],
        n_pos / n_px if n_px else 0.0,
    )


@dataclass
class PHH3Result:
    """Labels on the H&E slide and how they got there."""

    labels: list[OutLabel]
    objects: DabObjects  # on the pHH3 slide
    transfer: PointTransfer | None
    report: dict[str, Any]
    paths: dict[str, Path] = field(default_factory=dict)


def curate_phh3(
    he: str | os.PathLike[str],
    phh3: str | os.PathLike[str],
    out: str | os.PathLike[str] | None,
    *,
    he_mpp: float | None = None,
    phh3_mpp: float | None = None,
    config: PHH3Config | None = None,
) -> PHH3Result:
    """Find pHH3-positive nuclei on ``phh3``, move them with their masks onto ``he`` (the same
    section in H&E) and write them to ``out`` as mitotic-figure labels (``None``: write
    nothing). Raises :class:`~mitoscope.errors.InvalidInputError` (one line) for slides that
    do not register, wrong pixel sizes or a pHH3 slide without any positive nucleus."""
    from ..io.sliderunner import CLASS_MF

    cfg = config or PHH3Config()
    cfg.check()
    if out is not None:
        check_out_dir(out)
    if Path(he).resolve() == Path(phh3).resolve():
        raise InvalidInputError("the H&E and the pHH3 slide are the same file")
    with open_scan(he, he_mpp, "--he-mpp") as he_r, open_scan(phh3, phh3_mpp, "--phh3-mpp") as ph_r:
        objects = detect_dab_slide(ph_r, cfg)
        if not len(objects):
            raise InvalidInputError(
                f"{ph_r.info.path.name}: no pHH3-positive nucleus found (DAB >= "
                f"{cfg.dab_threshold:g} OD, {cfg.min_area_um2:g}-{cfg.max_area_um2:g} um2; "
                f"{objects.positive_fraction:.2%} of pixels DAB-positive); is it the "
                "pHH3 slide? lower --dab-threshold if the stain is faint"
            )
        xy = np.column_stack([objects.x, objects.y])
        moved = transfer_with(cfg, ph_r, he_r, xy)
        hi = he_r.info
        labels: list[OutLabel] = []
        outside = 0
        for i in range(len(objects)):
            x, y = moved.xy[i]
            if not (0 <= x < hi.width and 0 <= y < hi.height):
                outside += 1
                continue
            t = moved.transforms[int(moved.window[i])]
            ring = t.map(objects.contours[i]) if len(objects.contours[i]) >= 3 else None
            labels.append(
                OutLabel(
                    float(x), float(y), CLASS_MF,
                    {
                        "dab_od": float(objects.dab_od[i]),
                        "area_um2": float(objects.area_um2[i]),
                        "registration_residual_um": float(moved.residual_um[i]),
                        "phh3_x_px": float(objects.x[i]),
                        "phh3_y_px": float(objects.y[i]),
                    },
                    {"source": "phh3", "registration": str(moved.level[i])},
                    ring,
                    moved.level[i] != "patch",
                )
            )  # fmt: skip
        report = {
            "command": "curate phh3",
            "he": {"path": str(hi.path), "mpp": hi.mpp, "mpp_source": hi.mpp_source},
            "phh3": {
                "path": str(ph_r.info.path),
                "mpp": ph_r.info.mpp,
                "mpp_source": ph_r.info.mpp_source,
            },  # fmt: skip
            "dab_positive_fraction": round(objects.positive_fraction, 6),
            "objects": int(len(objects)),
            "labels": len(labels),
            "outside_he_dropped": outside,
            "flagged": int(sum(lab.flagged for lab in labels)),
            "registration": moved.summary(),
            "settings": dict(vars(cfg)),
        }
        result = PHH3Result(labels, objects, moved, report)
        if out is not None:
            result.paths = write_transfer_outputs(
                out, target=he_r, labels=labels, report=report, command="phh3"
            )
        return result


__all__ = [
    "DAB_THRESHOLD",
    "DECADIC_PER_SKIMAGE",
    "DabObjects",
    "PHH3Config",
    "PHH3Result",
    "curate_phh3",
    "dab_mask",
    "detect_dab",
    "detect_dab_slide",
    "stain_densities",
]
