"""Turn truth and prediction files into :class:`EvalImage` records (via :mod:`mitoscope.io`).

No format parsing happens here: every file is read with
:func:`mitoscope.io.annotations.read_annotations`; this module pairs images, converts pixels
to the millimetres of the MIDOG protocol and rejects coordinates in the wrong unit.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InvalidInputError
from ..units import validate_mpp
from .matching import MIDOG_RADIUS_UM
from .metrics import EvalImage

#: group name -> image metadata keys tried in order
GROUP_KEYS: dict[str, tuple[str, ...]] = {
    "tumor": ("tumor_type", "tumor", "tumor domain", "tumor_domain"),
    "domain": ("domain", "tumor domain", "tumor_domain", "scanner", "origin"),
    "scanner": ("scanner",),
    "species": ("species",),
    "slide": ("slide", "slide_id"),
}

#: suffixes stripped from a prediction file name to get the image stem
_PRED_SUFFIXES = (".json", ".geojson", ".csv", ".midog", ".detections", ".predictions")


@dataclass
class LoadedSet:
    """Paired images plus what could not be paired (reported, as the official code warns)."""

    images: list[EvalImage]
    missing_predictions: list[str] = field(default_factory=list)
    unknown_predictions: list[str] = field(default_factory=list)
    #: (prediction image, truth image) paired although their names differ: one of each
    paired: list[tuple[str, str]] = field(default_factory=list)
    #: both sides in millimetres: matched mm to mm, no pixel size needed (or used)
    mm_only: bool = False


#: the pixel size used inside when truth and predictions are both MIDOG points (mm): any
#: value gives the same mm-to-mm matching; 1 um/px keeps the conversions exact
NOMINAL_MPP = 1.0


def _stem(name: str) -> str:
    base = os.path.basename(str(name))
    changed = True
    while changed:
        changed = False
        for suf in _PRED_SUFFIXES:
            if base.lower().endswith(suf):
                base = base[: -len(suf)]
                changed = True
    return Path(base).stem if "." in base else base


def _read(path: Path, what: str, **kwargs: Any) -> Any:
    from ..io.annotations import read_annotations

    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    try:
        return read_annotations(path, **kwargs)
    except TypeError as exc:  # a keyword the chosen reader does not take
        bad = ", ".join(sorted(kwargs))
        raise InvalidInputError(
            f"{what} {path.name}: option(s) {bad} do not apply to this format ({exc})"
        ) from None


def _is_midog_points(path: Path) -> bool:
    if path.suffix.lower() != ".json":
        return False
    import json

    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, ValueError) as exc:
        raise InvalidInputError(f"{path.name} is not valid JSON: {exc}") from None
    return isinstance(data, dict) and (
        "points" in data or data.get("type") in ("Multiple points", "Point")
    )


def read_truth(
    path: str | os.PathLike[str],
    *,
    split_csv: str | os.PathLike[str] | None = None,
    split: str | None = None,
    mpp: float | None = None,
) -> Any:
    """Read ground truth (any format :mod:`mitoscope.io` knows) as ``PointAnnotations``."""
    p = Path(path)
    if not p.exists():
        raise InvalidInputError(f"truth file not found: {p}")
    kwargs: dict[str, Any] = {}
    if split_csv is not None or split is not None:
        kwargs.update(split_csv=split_csv, split=split)
    if p.is_file() and _is_midog_points(p):
        if mpp is None:
            raise InvalidInputError(
                f"{p.name} holds MIDOG points in millimetres; pass the pixel size with --mpp"
            )
        kwargs["mpp"] = mpp
    return _read(p, "truth", **kwargs)


def _prediction_files(p: Path) -> list[Path]:
    """The prediction file, or the prediction files of a directory."""
    if not p.exists():
        raise InvalidInputError(f"prediction path not found: {p}")
    if not p.is_dir():
        return [p]
    files = sorted(
        f
        for f in p.iterdir()
        if f.is_file()
        and f.suffix.lower() in (".json", ".geojson", ".csv")
        and not f.name.endswith(".summary.json")
    )
    if not files:
        raise InvalidInputError(
            f"no prediction files (*.midog.json, *.geojson, *.csv) in directory {p}"
        )
    return files


def read_predictions(path: str | os.PathLike[str], *, mpp: float | None) -> list[Any]:
    """Read predictions: one file, or a directory of per-image files (``<stem>.midog.json``)."""
    files = _prediction_files(Path(path))
    out = []
    for f in files:
        kwargs: dict[str, Any] = {}
        if _is_midog_points(f):
            if mpp is None:
                raise InvalidInputError(
                    f"{f.name} holds MIDOG points in millimetres; pass the pixel size with --mpp"
                )
            kwargs["mpp"] = mpp
        out.append(_read(f, "prediction", **kwargs))
    return out


def _group_labels(meta: dict[str, Any], image: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for group, keys in GROUP_KEYS.items():
        for k in keys:
            if k in meta and meta[k] not in (None, ""):
                out[group] = str(meta[k])
                break
    out.setdefault("slide", str(meta.get("slide", _stem(image))))
    return out


def pair_images(
    truth: Any,
    predictions: Sequence[Any],
    *,
    mpp: float | None,
    radius_um: float = MIDOG_RADIUS_UM,
    per_file_predictions: bool = False,
) -> LoadedSet:
    """Pair truth and prediction images by name (exact, then by stem) into ``EvalImage`` records.

    Truth rows that are not mitotic figures are ignored. Images of the truth without any
    prediction *file* (directory input) are skipped and listed, like the official evaluator;
    with a single prediction file, an image without rows simply has no predictions.
    """
    truth_images = list(truth.images_all) if truth.images_all is not None else truth.images()
    by_stem: dict[str, str] = {}
    for name in truth_images:
        by_stem.setdefault(_stem(name), name)

    pred_rows: dict[str, list[tuple[Any, np.ndarray]]] = {}
    unknown: list[str] = []
    paired: list[tuple[str, str]] = []
    for ann in predictions:
        names = list(ann.images_all) if ann.images_all is not None else ann.images()
        single = not per_file_predictions and len(predictions) == len(names) == 1
        single = single and len(truth_images) == 1
        for name in names:
            target = name if name in truth_images else by_stem.get(_stem(name))
            if target is None and single:  # one truth image, one predicted: the same image
                target = truth_images[0]
                paired.append((str(name), str(target)))
            if target is None:
                unknown.append(str(name))
                continue
            pred_rows.setdefault(target, []).append((ann, ann.image == name))
    if per_file_predictions and unknown:
        raise InvalidInputError(
            f"{len(unknown)} prediction file(s) match no truth image by name: "
            f"{', '.join(sorted(set(unknown))[:5])}{', ...' if len(set(unknown)) > 5 else ''}; "
            "name each <image stem>.midog.json"
        )

    images, missing = [], []
    for name in truth_images:
        if per_file_predictions and name not in pred_rows:
            missing.append(name)
            continue
        meta = dict(truth.image_meta.get(name, {}))
        img_mpp = meta.get("mpp") or mpp
        if img_mpp is None:
            raise InvalidInputError(
                f"pixel size of image {name} unknown; pass --mpp (um/px) to convert the "
                f"{radius_um:g} um radius"
            )
        img_mpp = validate_mpp(img_mpp, name="mpp")
        t = truth.for_image(name)
        t = t.filter(t.is_mitosis)
        txy = np.c_[t.x_px, t.y_px]
        pxy, score, is_mf = [np.zeros((0, 2))], [np.zeros(0)], [np.zeros(0, dtype=bool)]
        for ann, mask in pred_rows.get(name, []):
            pxy.append(np.c_[ann.x_px[mask], ann.y_px[mask]])
            s = np.asarray(ann.score[mask], dtype=np.float64)
            score.append(np.where(np.isnan(s), 0.5, s))  # official default without probability
            is_mf.append(np.asarray(ann.is_mitosis[mask], dtype=bool))
        pred_xy = np.concatenate(pxy)
        width, height = meta.get("width"), meta.get("height")
        _check_units(name, pred_xy, width, height, radius_px=radius_um / img_mpp)
        images.append(
            EvalImage.from_px(
                name,
                txy,
                pred_xy,
                mpp=img_mpp,
                pred_score=np.concatenate(score),
                pred_is_mitosis=np.concatenate(is_mf),
                groups=_group_labels(meta, name),
                width_px=int(width) if width else None,
                height_px=int(height) if height else None,
            )
        )
    return LoadedSet(images, missing, sorted(set(unknown)), paired=paired)


def _check_units(
    name: str, xy_px: np.ndarray, width: Any, height: Any, *, radius_px: float
) -> None:
    """Reject predictions that cannot lie in the image: the unit or the mpp is wrong.

    The official MIDOG 2025 evaluator rejects a submission whose points lie beyond -7.5 um or
    10 mm ("Is it possible you used pixel coordinates?"); with the image size known we apply the
    same idea exactly: every point must be inside the image (with one radius of slack).
    """
    if len(xy_px) == 0 or not width or not height:
        return
    w, h = float(width), float(height)
    lo = -radius_px
    bad = (
        (xy_px[:, 0] < lo)
        | (xy_px[:, 1] < lo)
        | (xy_px[:, 0] > w + radius_px)
        | (xy_px[:, 1] > h + radius_px)
    )
    if bad.any():
        x, y = xy_px[np.flatnonzero(bad)[0]]
        raise InvalidInputError(
            f"prediction at ({x:.6g}, {y:.6g}) px lies outside image {name} "
            f"({int(w)}x{int(h)} px): wrong units (pixels vs mm) or wrong --mpp"
        )
    if len(xy_px) >= 3 and max(w, h) >= 1000 and float(np.abs(xy_px).max()) < 20 * math.sqrt(2):
        raise InvalidInputError(
            f"all predictions of image {name} lie within 28 px of the origin: they look like "
            "millimetres given as pixels; use the MIDOG points format or pixel coordinates"
        )


def load_eval_set(
    truth_path: str | os.PathLike[str],
    pred_path: str | os.PathLike[str],
    *,
    mpp: float | None = None,
    split_csv: str | os.PathLike[str] | None = None,
    split: str | None = None,
    radius_um: float = MIDOG_RADIUS_UM,
) -> LoadedSet:
    """Read and pair truth and predictions from files (see the ``mitoscope evaluate`` command)."""
    mm_only = False
    if mpp is not None:
        mpp = validate_mpp(mpp, name="--mpp")
    else:
        t, files = Path(truth_path), _prediction_files(Path(pred_path))
        t_mm = t.is_file() and _is_midog_points(t)
        p_mm = [_is_midog_points(f) for f in files]
        if t_mm and all(p_mm):
            mpp, mm_only = NOMINAL_MPP, True  # mm to mm, as the official evaluator
        elif t_mm or any(p_mm):
            mm = t.name if t_mm else files[p_mm.index(True)].name
            raise InvalidInputError(
                f"{mm} is in millimetres (MIDOG points) but the other side is in pixels; pass "
                "the pixel size with --mpp (um/px) to match them"
            )
    truth = read_truth(truth_path, split_csv=split_csv, split=split, mpp=mpp)
    preds = read_predictions(pred_path, mpp=mpp)
    loaded = pair_images(
        truth, preds, mpp=mpp, radius_um=radius_um, per_file_predictions=Path(pred_path).is_dir()
    )
    loaded.mm_only = mm_only
    return loaded
