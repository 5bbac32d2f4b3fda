"""``curate masks``: one nucleus mask per label, from point, box, circle or polygon labels.

OMG-Net (``papers/001_*``) unified the labels of five datasets into nucleus masks by prompting
Segment Anything with each annotation's box; 8% of the masks needed a second prompt with an
adjusted box, and the masks were reviewed. Here, per label:

1. **Prompt box**: the label's own box (MIDOG++ / SlideRunner rectangles and circles, GeoJSON
   polygons) when it is at most ``max_box_um`` on a side, else a ``box_um`` square centred on the
   point (MIDOG++'s boxes are 50 px = 12.5 um at 0.25 um/px). Larger boxes are regions, not
   nuclei: such labels are flagged, never prompted.
2. **First mask**: SAM prompted with the box (``method="sam"``, a user checkpoint), or, without
   weights, the classical proposer's object under the label point (``method="classical"``).
3. **Quality checks** (:class:`MaskConfig`): area in 2.25-225 um² (OMG-Net's nucleus range), the
   label point inside the mask or at most ``max_offset_um`` from it, at most ``max_outside`` of
   the mask outside the prompt box (plus ``box_margin_um``), solidity at least
   ``min_solidity``; for SAM also its predicted IoU and stability score.
4. **Second prompt** when the first mask fails: SAM with the box enlarged ``second_box_scale``
   times plus the label point as a positive point prompt; the classical method segments a crop
   of that enlarged box on its own (a local haematoxylin threshold instead of the window's).
5. A label whose second mask fails too is **flagged** with the reason: written without a mask
   (its point) and, in the SlideRunner output, queued for ``mitoscope review``.

Images are read in windows of ``window_um`` around label clusters at ``work_mpp`` (SAM encodes
each window once). Everything is in level-0 pixels of each image; sizes in micrometres
converted with the image's own pixel size.

Over 400 lines: the ``curate masks`` pipeline (prompt boxes, SAM or classical first mask, quality
checks, second prompt, per-label result) shares :class:`MaskConfig` and :class:`LabelMask` with its
comparison against reference outlines and its three writers (GeoJSON, table, SlideRunner). A future
split would move the writers (``masks_feature_collection`` .. ``write_masks_sliderunner``, about
165 lines) and the outline comparison (``polygon_iou``, ``compare_to_outlines``, about 65 lines)
into their own modules.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..candidates.base import MAX_AREA_UM2, MIN_AREA_UM2
from ..errors import InvalidInputError
from ..units import validate_mpp

METHODS = ("auto", "sam", "classical")


@dataclass(frozen=True)
class MaskConfig:
    """Settings of :func:`curate_masks` (sizes in um)."""

    method: str = "auto"
    work_mpp: float = 0.25
    box_um: float = 12.5
    max_box_um: float = 50.0
    window_um: float = 256.0
    context_um: float = 16.0
    second_box_scale: float = 1.5
    min_area_um2: float = MIN_AREA_UM2
    max_area_um2: float = MAX_AREA_UM2
    max_offset_um: float = 1.0
    max_outside: float = 0.25
    box_margin_um: float = 2.0
    min_solidity: float = 0.6
    min_pred_iou: float = 0.8
    min_stability: float = 0.8
    cpu_dtype: str = "bfloat16"


@dataclass
class LabelMask:
    """The curated mask of one label (level-0 pixels of ``image``)."""

    index: int
    image: str
    x_px: float
    y_px: float
    label: str
    uid: str
    box: tuple[float, float, float, float]
    method: str
    atypical: float = math.nan
    status: str = "flagged"  # "ok" | "flagged"
    attempt: int = 0
    reason: str = ""
    polygon: np.ndarray | None = None
    area_um2: float = math.nan
    offset_um: float = math.nan
    outside: float = math.nan
    solidity: float = math.nan
    pred_iou: float = math.nan
    stability: float = math.nan
    first_reason: str = ""


@dataclass
class MaskResult:
    """All labels' masks plus what each image was (name -> path, width, height, mpp)."""

    masks: list[LabelMask]
    images: dict[str, dict[str, Any]] = field(default_factory=dict)
    config: MaskConfig = field(default_factory=MaskConfig)

    def counts(self) -> dict[str, int]:
        ok = [m for m in self.masks if m.status == "ok"]
        return {
            "labels": len(self.masks),
            "ok": len(ok),
            "ok_first_prompt": sum(1 for m in ok if m.attempt == 1),
            "ok_second_prompt": sum(1 for m in ok if m.attempt == 2),
            "flagged": len(self.masks) - len(ok),
        }


# -- mask sources ----------------------------------------------------------------------------
class _SamPrompter:
    """SAM's predictor on one window at a time: box (+ point) prompts -> best mask."""

    def __init__(self, model: Any, cpu_dtype: str = "bfloat16", device: str | None = None) -> None:
        import torch
        from segment_anything import SamPredictor

        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.model = model.to(self.device).eval()
        self.predictor = SamPredictor(self.model)
        self.cpu_dtype = cpu_dtype

    def _ctx(self) -> Any:
        import contextlib

        import torch

        if self.device == "cpu" and self.cpu_dtype == "bfloat16":
            return torch.autocast("cpu", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def set_image(self, rgb: np.ndarray) -> None:
        import torch

        with torch.inference_mode(), self._ctx():
            self.predictor.set_image(rgb)

    def predict(
        self, box: np.ndarray, point: tuple[float, float] | None
    ) -> tuple[np.ndarray, float, float]:
        """(mask, predicted IoU, stability score) of the output with the best predicted IoU."""
        import torch
        from segment_anything.utils.amg import calculate_stability_score

        pred = self.predictor
        dev = pred.device
        coords = labels = None
        if point is not None:
            xy = pred.transform.apply_coords(
                np.array([point], dtype=np.float32), pred.original_size
            )
            coords = torch.as_tensor(xy, dtype=torch.float, device=dev)[None]
            labels = torch.ones((1, 1), dtype=torch.int, device=dev)
        b = pred.transform.apply_boxes(np.asarray(box, dtype=np.float32)[None], pred.original_size)
        with torch.inference_mode(), self._ctx():
            logits_t, iou_t, _ = pred.predict_torch(
                coords,
                labels,
                torch.as_tensor(b, dtype=torch.float, device=dev),
                None,
                multimask_output=True,
                return_logits=True,
            )
        logits_t = logits_t[0].float().cpu()  # float32 (bfloat16 under CPU autocast)
        iou = iou_t[0].float().cpu().numpy()
        thr = float(self.model.mask_threshold)
        stab = calculate_stability_score(logits_t, thr, 1.0).float().numpy()
        logits = logits_t.numpy()
        k = int(np.argmax(iou))
        return np.asarray(logits[k]) > thr, float(iou[k]), float(stab[k])


def _classical_object(
    cands: Any, shape: tuple[int, ...], point: tuple[float, float]
) -> np.ndarray | None:
    """The proposer object (of ``cands``) under, else nearest to, ``point`` as a mask of
    ``shape``; among several under the point the largest (the whole nucleus)."""
    if not len(cands):
        return None
    u, v = int(round(point[0])), int(round(point[1]))
    best, best_key = None, None
    for k in range(len(cands)):
        x0, y0, x1, y1 = (int(b) for b in cands.bbox[k])
        inside = x0 <= u < x1 and y0 <= v < y1 and bool(cands.masks[k][v - y0, u - x0])
        dist = math.hypot(cands.x_px[k] - point[0], cands.y_px[k] - point[1])
        key = (0, -float(cands.area_um2[k])) if inside else (1, dist)
        if best_key is None or key < best_key:
            best, best_key = k, key
    assert best is not None
    out = np.zeros(shape[:2], dtype=bool)
    x0, y0, x1, y1 = (int(b) for b in cands.bbox[best])
    out[y0:y1, x0:x1] = cands.masks[best]
    return out


# -- quality ---------------------------------------------------------------------------------
def mask_quality(
    mask: np.ndarray,
    point: tuple[float, float],
    box: Sequence[float],
    *,
    mpp: float,
    cfg: MaskConfig,
) -> tuple[np.ndarray | None, dict[str, float], str]:
    """Keep the component of ``mask`` at (else nearest to) ``point`` (holes filled) and check it.

    Returns ``(mask or None, measurements, reason)``; ``reason`` is ``""`` when every check
    passes. ``point`` and ``box`` (``x0, y0, x1, y1``) are in the mask's pixels (``mpp`` um/px).
    """
    from scipy import ndimage as ndi
    from skimage.measure import regionprops

    meas = {"area_um2": 0.0, "offset_um": math.nan, "outside": math.nan, "solidity": math.nan}
    lab, n = ndi.label(np.asarray(mask, dtype=bool))
    if n == 0:
        return None, meas, "empty mask"
    u = min(max(int(round(point[0])), 0), mask.shape[1] - 1)
    v = min(max(int(round(point[1])), 0), mask.shape[0] - 1)
    k = int(lab[v, u])
    offset_px = 0.0
    if k == 0:
        dist, (iy, ix) = ndi.distance_transform_edt(lab == 0, return_indices=True)
        k = int(lab[iy[v, u], ix[v, u]])
        offset_px = float(dist[v, u])
    comp = ndi.binary_fill_holes(lab == k)
    area_px = float(comp.sum())
    meas["area_um2"] = area_px * mpp * mpp
    meas["offset_um"] = offset_px * mpp
    m = cfg.box_margin_um / mpp
    yy, xx = np.nonzero(comp)
    inside = (xx >= box[0] - m) & (xx < box[2] + m) & (yy >= box[1] - m) & (yy < box[3] + m)
    meas["outside"] = float(1.0 - inside.mean())
    meas["solidity"] = float(regionprops(comp.astype(np.uint8))[0].solidity)
    if meas["area_um2"] < cfg.min_area_um2:
        return comp, meas, f"area {meas['area_um2']:.2f} um² < {cfg.min_area_um2:g}"
    if meas["area_um2"] > cfg.max_area_um2:
        return comp, meas, f"area {meas['area_um2']:.0f} um² > {cfg.max_area_um2:g}"
    if meas["offset_um"] > cfg.max_offset_um:
        return comp, meas, f"label point {meas['offset_um']:.1f} um outside the mask"
    if meas["outside"] > cfg.max_outside:
        return comp, meas, f"{100 * meas['outside']:.0f}% of the mask outside the prompt box"
    if meas["solidity"] < cfg.min_solidity:
        return comp, meas, f"solidity {meas['solidity']:.2f} < {cfg.min_solidity:g}"
    return comp, meas, ""


# -- the curation loop -----------------------------------------------------------------------
def prompt_boxes(ann: Any, mpp_of: Callable[[str], float], cfg: MaskConfig) -> np.ndarray:
    """``(N, 4)`` level-0 prompt boxes: the label's box, else a ``box_um`` square (NaN rows for
    boxes larger than ``max_box_um``, which are regions)."""
    n = len(ann)
    out = np.empty((n, 4))
    for i in range(n):
        mpp = mpp_of(str(ann.image[i]))
        half = 0.5 * cfg.box_um / mpp
        x, y = float(ann.x_px[i]), float(ann.y_px[i])
        b = ann.bbox[i] if ann.bbox is not None else None
        if b is not None and np.isfinite(b).all() and (b[2] - b[0]) > 1 and (b[3] - b[1]) > 1:
            side_um = max(b[2] - b[0], b[3] - b[1]) * mpp
            out[i] = b if side_um <= cfg.max_box_um else np.nan
        else:
            out[i] = (x - half, y - half, x + half, y + half)
    return out


def _windows(
    x: np.ndarray, y: np.ndarray, boxes: np.ndarray, size_px: float, margin_px: float
) -> list[tuple[tuple[int, int, int, int], np.ndarray]]:
    """Group labels by ``size_px`` grid cell; each window spans its labels' boxes + margin."""
    cells: dict[tuple[int, int], list[int]] = {}
    for i in np.flatnonzero(np.isfinite(boxes).all(axis=1)):
        cells.setdefault((int(x[i] // size_px), int(y[i] // size_px)), []).append(int(i))
    out = []
    for _, idx in sorted(cells.items()):
        b = boxes[idx]
        x0 = int(math.floor(b[:, 0].min() - margin_px))
        y0 = int(math.floor(b[:, 1].min() - margin_px))
        x1 = int(math.ceil(b[:, 2].max() + margin_px))
        y1 = int(math.ceil(b[:, 3].max() + margin_px))
        out.append(((x0, y0, x1, y1), np.asarray(idx)))
    return out


def _scaled_box(box: np.ndarray, scale: float) -> np.ndarray:
    cx, cy = 0.5 * (box[0] + box[2]), 0.5 * (box[1] + box[3])
    hw, hh = 0.5 * scale * (box[2] - box[0]), 0.5 * scale * (box[3] - box[1])
    return np.array([cx - hw, cy - hh, cx + hw, cy + hh])


def check_label_positions(ann: Any, sizes: dict[str, tuple[int, int]]) -> None:
    """One-line errors for labels outside their image or all crowded near its origin (labels
    in millimetres or micrometres instead of level-0 pixels)."""
    for name, (w, h) in sizes.items():
        sub = ann.image == name
        xs, ys = ann.x_px[sub], ann.y_px[sub]
        if not len(xs):
            continue
        bad = (xs < 0) | (ys < 0) | (xs >= w) | (ys >= h) | ~np.isfinite(xs) | ~np.isfinite(ys)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise InvalidInputError(
                f"{name}: label at ({xs[i]:.1f}, {ys[i]:.1f}) is outside the {w}x{h} px image; "
                "are the labels for another image or in other units than level-0 pixels?"
            )
        if min(w, h) >= 1000 and len(xs) >= 3 and xs.max() < 0.01 * w and ys.max() < 0.01 * h:
            raise InvalidInputError(
                f"{name}: all labels lie within {xs.max():.2f} x {ys.max():.2f} px of the "
                f"corner of a {w}x{h} px image: they look like millimetres; give level-0 pixels"
            )


def resolve_image(name: str, images: Path) -> Path:
    """The image file of label image ``name``: ``images`` itself when it is a file, else the
    file in the folder ``images`` named ``name`` or with the same stem."""
    if images.is_file():
        return images
    direct = images / name
    if direct.exists():
        return direct
    stem = Path(name).stem if Path(name).suffix else name
    for p in sorted(images.iterdir()):
        if p.is_file() and p.stem == stem:
            return p
    raise InvalidInputError(
        f"no image for labels of {name!r} in {images}; the label file and --images do not match"
    )


def curate_masks(
    ann: Any,
    images: str | os.PathLike[str] | dict[str, str | os.PathLike[str]],
    *,
    mpp: float | None = None,
    config: MaskConfig | None = None,
    sam_model: Any = None,
    progress: bool = False,
    **overrides: Any,
) -> MaskResult:
    """Curate one nucleus mask per label of ``ann`` (:class:`~mitoscope.io.PointAnnotations`).

    Parameters
    ----------
    ann : PointAnnotations
        Labels in level-0 pixels; ``bbox`` rows (when finite) are the labels' boxes.
    images : path or dict
        An image / slide (all labels on it), a folder holding the labels' images (matched by
        name or stem), or a mapping label image name -> file.
    mpp : float, optional
        Level-0 pixel size of the images (um/px) when their files do not say it.
    config : MaskConfig, optional
    sam_model : segment_anything Sam, optional
        A loaded SAM (:func:`mitoscope.candidates.sam.load_sam`); ``method="auto"`` uses SAM
        when it is given and the classical proposer otherwise.
    **overrides
        Fields of :class:`MaskConfig`.
    """
    from ..candidates.classical import ClassicalProposer
    from ..geometry import mask_contour
    from ..slide import open_slide
    from ..types import Region

    cfg = config or MaskConfig()
    cfg = replace(cfg, **overrides) if overrides else cfg
    if cfg.method not in METHODS:
        raise InvalidInputError(
            f"unknown method {cfg.method!r}; choose one of {', '.join(METHODS)}"
        )
    method = (
        cfg.method if cfg.method != "auto" else ("sam" if sam_model is not None else "classical")
    )
    if method == "sam" and sam_model is None:
        raise InvalidInputError(
            "method 'sam' needs a Segment Anything checkpoint (--sam-checkpoint)"
        )
    validate_mpp(cfg.work_mpp, name="work_mpp")
    if mpp is not None:
        validate_mpp(mpp)
    names = list(dict.fromkeys(str(v) for v in ann.image.tolist()))
    if isinstance(images, dict):
        files = {n: Path(images[n]) for n in names if n in images}
        missing = [n for n in names if n not in files]
        if missing:
            raise InvalidInputError(f"no image given for labels of {missing[0]!r}")
    else:
        root = Path(images)
        if not root.exists():
            raise InvalidInputError(f"images not found: {root}")
        if root.is_file() and len(names) > 1:
            raise InvalidInputError(
                f"the labels name {len(names)} images ({', '.join(names[:3])}, ...) but --images "
                "is one file; give the folder holding them"
            )
        files = {n: resolve_image(n, root) for n in names}
    info: dict[str, dict[str, Any]] = {}
    for n in names:  # open every image first: a bad one fails before any work
        with open_slide(files[n], mpp=mpp) as reader:
            i = reader.info
            info[n] = {"path": str(files[n]), "width": i.width, "height": i.height, "mpp": i.mpp}
    check_label_positions(ann, {n: (v["width"], v["height"]) for n, v in info.items()})
    boxes = prompt_boxes(ann, lambda n: float(info[n]["mpp"]), cfg)
    sam = _SamPrompter(sam_model, cfg.cpu_dtype) if method == "sam" else None
    prop = ClassicalProposer()
    out: list[LabelMask] = []
    for i in range(len(ann)):
        out.append(
            LabelMask(
                index=i,
                image=str(ann.image[i]),
                x_px=float(ann.x_px[i]),
                y_px=float(ann.y_px[i]),
                label=str(ann.label[i]),
                uid=str(ann.uid[i]),
                box=tuple(float(v) for v in boxes[i]),  # type: ignore[arg-type]
                method=method,
                atypical=float(ann.atypical[i]),
            )
        )
        if not np.isfinite(boxes[i]).all():
            out[i].reason = f"label box larger than {cfg.max_box_um:g} um: a region, not a nucleus"
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(ann), desc="masks")
    work = cfg.work_mpp
    for name in names:
        sel = np.flatnonzero(ann.image == name)
        img_mpp = float(info[name]["mpp"])
        size_px = cfg.window_um / img_mpp
        margin = cfg.context_um / img_mpp
        grown = np.array([_scaled_box(b, cfg.second_box_scale) for b in boxes[sel]])
        with open_slide(files[name], mpp=mpp) as reader:
            for (x0, y0, x1, y1), local in _windows(
                ann.x_px[sel], ann.y_px[sel], grown, size_px, margin
            ):
                region = Region(x0, y0, x1 - x0, y1 - y0)
                img = reader.read_region_mpp(region, work, clip=True)
                sx, sy = region.width / img.shape[1], region.height / img.shape[0]

                def to_win(px: float, py: float, r: Region = region, a=sx, b=sy) -> tuple:
                    return (px - r.x + 0.5) / a - 0.5, (py - r.y + 0.5) / b - 0.5

                cands = None
                if sam is not None:
                    sam.set_image(img)
                else:
                    cands = prop.propose(img, mpp=work)
                for j in sel[local]:
                    rec = out[int(j)]
                    pt = to_win(rec.x_px, rec.y_px)
                    b0 = np.array([*to_win(*boxes[j][:2]), *to_win(*boxes[j][2:])])
                    kept = _curate_one(rec, img, pt, b0, work, cfg, sam, cands)
                    if kept is not None:
                        crop, cbox = kept
                        rec.polygon = mask_contour(crop, cbox, scale=sx, x0=x0, y0=y0)
                    if bar is not None:
                        bar.update(1)
    if bar is not None:
        bar.close()
    return MaskResult(out, info, replace(cfg, method=method))


def _bbox(mask: np.ndarray) -> tuple[int, int, int, int]:
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def _curate_one(
    rec: LabelMask,
    img: np.ndarray,
    pt: tuple[float, float],
    box: np.ndarray,
    mpp: float,
    cfg: MaskConfig,
    sam: _SamPrompter | None,
    cands: Any,
) -> tuple[np.ndarray, np.ndarray] | None:
    """Up to two prompts for one label; fills ``rec`` and returns the accepted mask cropped to
    its bounding box and that box (window pixels), or None when the label is flagged."""
    from ..candidates.classical import ClassicalProposer

    for attempt in (1, 2):
        pred_iou = stability = math.nan
        if sam is not None:
            b = box if attempt == 1 else _scaled_box(box, cfg.second_box_scale)
            mask, pred_iou, stability = sam.predict(b, None if attempt == 1 else pt)
        elif attempt == 1:
            mask = _classical_object(cands, img.shape, pt)
        else:  # the enlarged box alone: a local threshold
            g = _scaled_box(box, max(cfg.second_box_scale, 2.0))
            h, w = img.shape[:2]
            cx0, cy0 = max(int(math.floor(g[0])), 0), max(int(math.floor(g[1])), 0)
            cx1, cy1 = min(int(math.ceil(g[2])), w), min(int(math.ceil(g[3])), h)
            mask = None
            if cx1 - cx0 >= 4 and cy1 - cy0 >= 4:
                sub = img[cy0:cy1, cx0:cx1]
                crop = _classical_object(
                    ClassicalProposer().propose(sub, mpp=mpp), sub.shape, (pt[0] - cx0, pt[1] - cy0)
                )
                if crop is not None:
                    mask = np.zeros(img.shape[:2], dtype=bool)
                    mask[cy0:cy1, cx0:cx1] = crop
        if mask is None:
            comp, meas, reason = None, {}, "no object at the label"
        else:  # checked in a crop around the box (a leaking mask is cut, still flagged)
            o = _scaled_box(box, 3.0)
            pad = cfg.box_margin_um / mpp + 2
            qx0, qy0 = max(int(o[0] - pad), 0), max(int(o[1] - pad), 0)
            qx1 = min(int(math.ceil(o[2] + pad)), mask.shape[1])
            qy1 = min(int(math.ceil(o[3] + pad)), mask.shape[0])
            shift = np.array([qx0, qy0, qx0, qy0], dtype=np.float64)
            comp, meas, reason = mask_quality(
                mask[qy0:qy1, qx0:qx1], (pt[0] - qx0, pt[1] - qy0), box - shift, mpp=mpp, cfg=cfg
            )
            if comp is not None:
                full = np.zeros(mask.shape, dtype=bool)
                full[qy0:qy1, qx0:qx1] = comp
                comp = full
        if not reason and sam is not None:
            if pred_iou < cfg.min_pred_iou:
                reason = f"SAM predicted IoU {pred_iou:.2f} < {cfg.min_pred_iou:g}"
            elif stability < cfg.min_stability:
                reason = f"SAM stability {stability:.2f} < {cfg.min_stability:g}"
        rec.attempt = attempt
        rec.pred_iou, rec.stability = pred_iou, stability
        rec.area_um2 = meas.get("area_um2", math.nan)
        rec.offset_um = meas.get("offset_um", math.nan)
        rec.outside = meas.get("outside", math.nan)
        rec.solidity = meas.get("solidity", math.nan)
        if not reason and comp is not None:
            rec.status, rec.reason = "ok", ""
            x0, y0, x1, y1 = _bbox(comp)
            return comp[y0:y1, x0:x1], np.array([x0, y0, x1, y1])
        if attempt == 1:
            rec.first_reason = reason
        rec.reason = reason
    rec.status = "flagged"
    return None


# -- measuring masks against reference outlines ----------------------------------------------
def polygon_iou(a: np.ndarray | None, b: np.ndarray | None) -> float:
    """IoU of two level-0 polygons ``(K, 2)`` rasterised on the pixel grid (0 if one is None)."""
    from skimage.draw import polygon as fill

    if a is None or b is None or len(a) < 3 or len(b) < 3:
        return 0.0
    both = np.vstack([a, b])
    x0, y0 = np.floor(both.min(axis=0)).astype(int) - 1
    x1, y1 = np.ceil(both.max(axis=0)).astype(int) + 2
    shape = (y1 - y0, x1 - x0)
    ma = np.zeros(shape, dtype=bool)
    mb = np.zeros(shape, dtype=bool)
    ra, ca = fill(a[:, 1] - y0, a[:, 0] - x0, shape)
    rb, cb = fill(b[:, 1] - y0, b[:, 0] - x0, shape)
    ma[ra, ca] = True
    mb[rb, cb] = True
    union = int((ma | mb).sum())
    return float((ma & mb).sum()) / union if union else 0.0


def compare_to_outlines(
    result: MaskResult, outlines: Sequence[np.ndarray | None], *, iou_threshold: float = 0.5
) -> dict[str, float]:
    """Curated masks against reference outlines (``outlines[i]`` for ``result.masks[i]``).

    ``mean_iou`` counts flagged labels as 0 (no usable mask); ``mean_iou_ok`` is over accepted
    masks; ``recall`` is the share of labels with an accepted mask of IoU >= ``iou_threshold``;
    ``accepted_below_threshold`` counts accepted masks the checks should have flagged.
    """
    if len(outlines) != len(result.masks):
        raise InvalidInputError(
            f"{len(outlines)} reference outlines for {len(result.masks)} curated labels"
        )
    ious = np.array(
        [
            polygon_iou(m.polygon, ref) if m.status == "ok" else 0.0
            for m, ref in zip(result.masks, outlines, strict=True)
        ]
    )
    ok = np.array([m.status == "ok" for m in result.masks])
    n = max(len(ious), 1)
    return {
        "labels": float(len(ious)),
        "accepted": float(ok.sum()),
        "flagged": float((~ok).sum()),
        "second_prompt": float(sum(1 for m in result.masks if m.status == "ok" and m.attempt == 2)),
        "mean_iou": float(ious.sum() / n),
        "mean_iou_ok": float(ious[ok].mean()) if ok.any() else 0.0,
        "recall": float(((ious >= iou_threshold) & ok).sum() / n),
        "accepted_below_threshold": float(((ious < iou_threshold) & ok).sum()),
    }


# -- outputs ---------------------------------------------------------------------------------
#: the SlideRunner person of accepted masks, and the one ``mitoscope review`` queues (flagged)
PERSON_CURATED = "mitoscope curate"
PERSON_REVIEW = "mitoscope"
TABLE_COLUMNS = (
    "image", "uid", "x_px", "y_px", "label", "method", "status", "attempt", "reason",
    "first_reason", "area_um2", "offset_um", "outside", "solidity", "pred_iou", "stability",
    "box_x0", "box_y0", "box_x1", "box_y1",
)  # fmt: skip


def _class_name(m: LabelMask) -> str:
    from ..io.records import MITOTIC, NON_MITOTIC
    from ..io.sliderunner import CLASS_AMF, CLASS_MF, CLASS_NON_MF

    if m.label == MITOTIC:
        return CLASS_AMF if m.atypical == 1.0 else CLASS_MF
    return CLASS_NON_MF if m.label == NON_MITOTIC else m.label


def _num(v: float, nd: int = 4) -> float | None:
    return None if not math.isfinite(v) else round(float(v), nd)


def masks_feature_collection(result: MaskResult) -> dict[str, Any]:
    """One GeoJSON feature per label: the mask's Polygon (accepted) or the label's Point
    (flagged), ``classification`` the label's class, ``curate`` the quality record."""
    feats = []
    for m in result.masks:
        if m.status == "ok" and m.polygon is not None:
            ring = np.round(m.polygon, 2).tolist()
            if ring[0] != ring[-1]:
                ring.append(list(ring[0]))
            geom: dict[str, Any] = {"type": "Polygon", "coordinates": [ring]}
        else:
            geom = {"type": "Point", "coordinates": [round(m.x_px, 2), round(m.y_px, 2)]}
        feats.append(
            {
                "type": "Feature",
                "geometry": geom,
                "properties": {
                    "objectType": "annotation",
                    "name": m.uid,
                    "image": m.image,
                    "classification": {"name": _class_name(m)},
                    "measurements": {
                        k: v
                        for k, v in (
                            ("area_um2", _num(m.area_um2)),
                            ("pred_iou", _num(m.pred_iou)),
                            ("stability", _num(m.stability)),
                        )
                        if v is not None and m.status == "ok"
                    },
                    "curate": {
                        "status": m.status,
                        "method": m.method,
                        "attempt": m.attempt,
                        "reason": m.reason,
                        "first_reason": m.first_reason,
                        "label_x_px": round(m.x_px, 2),
                        "label_y_px": round(m.y_px, 2),
                    },
                },
            }
        )
    return {"type": "FeatureCollection", "features": feats}


def check_outputs(*paths: str | os.PathLike[str] | None) -> None:
    """Fail before any work when an output cannot be written (one line, exit 2)."""
    from ..io.atomic import check_name_length, prepare_dir

    given = [Path(p) for p in paths if p is not None]
    if not given:
        raise InvalidInputError("nothing to write; give --geojson, --sqlite and/or --table")
    for p in given:
        prepare_dir(p)
        check_name_length(p)


def write_masks_geojson(result: MaskResult, path: str | os.PathLike[str]) -> Path:
    """All labels of all images in one FeatureCollection (``properties.image`` names the
    image), written atomically."""
    import json

    from ..io.atomic import atomic_write_text

    fc = masks_feature_collection(result)
    return atomic_write_text(path, json.dumps(fc, separators=(",", ":")) + "\n")


def write_masks_table(result: MaskResult, path: str | os.PathLike[str]) -> Path:
    """One CSV row per label with its quality record (:data:`TABLE_COLUMNS`)."""
    import csv
    import io

    from ..io.atomic import atomic_write_text

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(TABLE_COLUMNS)
    for m in result.masks:
        nums = [m.area_um2, m.offset_um, m.outside, m.solidity, m.pred_iou, m.stability]
        w.writerow(
            [m.image, m.uid, round(m.x_px, 2), round(m.y_px, 2), m.label, m.method, m.status,
             m.attempt, m.reason, m.first_reason, *["" if _num(v) is None else _num(v) for v in nums],
             *[round(v, 2) if math.isfinite(v) else "" for v in m.box]]
        )  # fmt: skip
    return atomic_write_text(path, buf.getvalue())


def write_masks_sliderunner(result: MaskResult, path: str | os.PathLike[str]) -> Path:
    """A new SlideRunner database (replacing ``path`` atomically) of the curated labels.

    Accepted masks are polygon annotations (type 3) labelled by :data:`PERSON_CURATED`;
    flagged labels are spots (type 1) labelled by :data:`PERSON_REVIEW` with the reason in
    ``description`` (``curate_flag=...``), so ``mitoscope review DB --slides DIR`` queues exactly
    them. ``agreedClass`` is the label's class in both cases.
    """
    import sqlite3
    import tempfile
    import time
    import uuid

    from ..io.atomic import prepare_dir, temp_prefix
    from ..io.sliderunner import POLYGON, SPOT, SlideRunnerDB

    out = Path(path)
    parent = prepare_dir(out)
    fd, name = tempfile.mkstemp(prefix=temp_prefix(out.name), suffix=".tmp", dir=parent)
    os.close(fd)
    tmp = Path(name)
    tmp.unlink()  # SlideRunnerDB creates the schema in a new file
    try:
        with SlideRunnerDB(tmp, person=PERSON_REVIEW):
            pass
        with SlideRunnerDB(tmp, person=PERSON_CURATED) as db:
            slides = {}
            for img, meta in result.images.items():
                slides[img] = db.add_slide(
                    img,
                    width=int(meta["width"]),
                    height=int(meta["height"]),
                    directory=str(Path(meta["path"]).parent),
                )
            classes = {c: db.class_uid(c) for c in dict.fromkeys(map(_class_name, result.masks))}
        con = sqlite3.connect(str(tmp))
        try:
            person = dict(con.execute("SELECT name, uid FROM Persons"))
            now = time.time()
            with con:
                for m in result.masks:
                    ok = m.status == "ok" and m.polygon is not None
                    cls = classes[_class_name(m)]
                    if ok:
                        pts = [(float(x), float(y)) for x, y in m.polygon]  # type: ignore[union-attr]
                        if len(pts) > 1 and pts[0] == pts[-1]:
                            pts = pts[:-1]
                        desc = f"curate={m.method} attempt={m.attempt} area_um2={m.area_um2:.2f}"
                    else:
                        pts = [(m.x_px, m.y_px)]
                        desc = f"curate_flag={m.reason}"
                    cur = con.execute(
                        "INSERT INTO Annotations (slide, guid, lastModified, deleted, type, "
                        "agreedClass, description) VALUES (?, ?, ?, 0, ?, ?, ?)",
                        (slides[m.image], str(uuid.uuid4()), now, POLYGON if ok else SPOT, cls,
                         desc),
                    )  # fmt: skip
                    anno = int(cur.lastrowid)
                    con.executemany(
                        "INSERT INTO Annotations_coordinates (coordinateX, coordinateY, slide, "
                        "annoId, orderIdx, coordinateZ) VALUES (?, ?, ?, ?, ?, 0)",
                        [
                            (int(round(x)), int(round(y)), slides[m.image], anno, k + 1)
                            for k, (x, y) in enumerate(pts)
                        ],
                    )
                    con.execute(
                        "INSERT INTO Annotations_label (person, class, annoId) VALUES (?, ?, ?)",
                        (person[PERSON_CURATED if ok else PERSON_REVIEW], cls, anno),
                    )
        finally:
            con.close()
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            tmp.unlink()
    return out
