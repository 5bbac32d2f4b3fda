"""Training label sources: every labelled format :mod:`mitoscope.io` reads -> a :class:`SampleSet`.

A registry of source types (name -> builder, like timm's ``register_model``); a config lists
sources as ``[[train.sources]]`` tables (see docs/training.md)::

    [[train.sources]]
    type = "midogpp"                # amibr | midogpp | sliderunner | reviewed | geojson | csv | tissue
    path = "MIDOGpp.json"           # the labels (a crop / tissue folder for amibr / tissue)
    images = "midogpp_images/"      # the image folder (default: beside the labels)
    split_csv = "MIDOGpp_datasets_xvalidation.csv"
    split = "train"
    weight = 2.0                    # share of the sampling mass (relative), default 1
    group = "aperio"                # domain group (default: per source / scanner / organ)

Rules (sizes in micrometres, converted with each image's pixel size):

- **Positives**: patches centred on the labelled mitotic figures.
- **Negatives**: patches centred on labelled imposters (any labelled non-mitotic object), plus
  every other proposer candidate more than ``exclusion_um`` (7.5 um, the MIDOG match radius)
  from all labelled mitotic figures and more than ``match_um`` (4 um) from every labelled object
  -- the rule of the AMi-Br builder (:func:`~mitoscope.train.samples.labelled_image_samples`),
  because these sources label exhaustively. ``tissue`` sources: every candidate is a negative.
  ``reviewed`` sources (the answers of ``mitoscope review`` in a run database) label only the
  detections someone reviewed: their samples are those detections alone, no candidate negatives,
  each with its review weight (:func:`mitoscope.io.reviewed.read_reviewed`) as ``mf_agreement``,
  which the loss applies with ``mf_loss = "agreement"``.
- **Pixel size**: the source's ``mpp`` when given, else the image/slide metadata; an image with
  neither is an error. Everything is resampled to the model's 0.25 um/px.
- **Large images**: an image with more than :data:`MAX_WHOLE_PX` px on a side (whole slides) is
  never read whole: labels are grouped greedily into ``window_um`` (256 um) squares, each square
  is centred on its cluster and read with :data:`CONTEXT_UM` of context on every side; every
  candidate inside a square (and not inside an earlier square) is used.
- Labelled objects larger than :data:`MAX_OBJECT_UM` (region / ROI annotations) are ignored.
- Slide names are ``<source name>/<image stem>`` (tissue: ``tissue/<organ>/<stem>``) so
  slide-grouped splits never mix sources.

Over 1,000 lines, the largest module: the source registry, the config checks, image resolution and
windowing, the per-format label adapters and the cached builders all work on the one source spec
dict and :class:`BuildOptions`. The clean cuts for a future split: the config checks (``_coerce``
.. ``parse_source_arg``, about 200 lines) into ``train/source_config.py``, and the per-format label
adapters (``_labelled`` .. ``source_labels``, about 110 lines) with image resolution into
``train/source_labels.py``.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InvalidInputError, MitoscopeError
from .samples import (
    CACHE_VERSION,
    KIND_CANDIDATE,
    KIND_CENTRE,
    KIND_IMPOSTER,
    SampleSet,
    concat_samples,
    default_cache_dir,
    load_samples,
    samples_from_columns,
    save_samples,
)

#: images with more than this many pixels on a side are read in windows around the labels
MAX_WHOLE_PX = 4096
#: side of the windows read around label clusters of large images / whole slides
WINDOW_UM = 256.0
#: context read around each window so candidates and patches near its edge are whole
CONTEXT_UM = 16.0
#: labelled objects whose box is larger than this on a side are regions, not cells: ignored
MAX_OBJECT_UM = 50.0
#: a large image whose labels all lie within this fraction of its size looks labelled in mm
MM_FRACTION = 0.01
#: ... checked only on images at least this large (px, shorter side)
MM_CHECK_MIN_PX = 1000

IMAGE_SUFFIXES = (
    ".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".svs", ".ndpi", ".mrxs", ".scn",
    ".vms", ".vmu", ".svslide", ".bif", ".czi", ".dcm",
)  # fmt: skip

#: keys every source accepts: name -> value type
COMMON_KEYS: dict[str, str] = {
    "type": "str",
    "name": "str",
    "path": "path",
    "mpp": "mpp",
    "weight": "positive",
    "group": "str",
    "limit": "int",
}


@dataclass(frozen=True)
class SourceType:
    """A registered label-source type."""

    name: str
    build: Callable[..., SampleSet]
    keys: dict[str, str]
    description: str
    labelled: bool = True


SOURCE_TYPES: dict[str, SourceType] = {}


def register_source(
    name: str, *, keys: dict[str, str] | None = None, description: str = "", labelled: bool = True
) -> Callable[[Callable[..., SampleSet]], Callable[..., SampleSet]]:
    """Register a builder ``fn(spec, opts) -> SampleSet`` under a source type name."""

    def deco(fn: Callable[..., SampleSet]) -> Callable[..., SampleSet]:
        SOURCE_TYPES[name] = SourceType(
            name, fn, {**COMMON_KEYS, **(keys or {})}, description, labelled
        )
        return fn

    return deco


def list_sources() -> list[str]:
    """Names of the registered source types."""
    return sorted(SOURCE_TYPES)


@dataclass(frozen=True)
class BuildOptions:
    """Sample-building options shared by all sources."""

    mpp: float = 0.25
    size_px: int = 100
    proposer: str = "classical"
    exclusion_um: float = 7.5
    match_um: float = 4.0
    cache_dir: str | None = None
    progress: bool = True


# -- validation ------------------------------------------------------------------------------
def _coerce(key: str, kind: str, value: Any, where: str, problems: list[str]) -> Any:
    try:
        if kind == "str":
            if not isinstance(value, (str, int, float)) or str(value).strip() == "":
                raise ValueError("expected a non-empty string")
            return str(value).strip()
        if kind in ("path", "path?"):
            if isinstance(value, (list, tuple)):
                if not value:
                    raise ValueError("empty list")
                for v in value:
                    if not Path(str(v)).exists():
                        raise ValueError(f"{v} does not exist")
                return [str(v) for v in value]
            p = Path(str(value)).expanduser()
            if not p.exists():
                raise ValueError(f"{p} does not exist")
            return str(p)
        if kind == "list":
            if isinstance(value, str):
                items = [v.strip() for v in value.split("|")]
            elif isinstance(value, (list, tuple)):
                items = [str(v).strip() for v in value]
            else:
                raise ValueError("expected a list (or 'a|b' on the command line)")
            items = [v for v in items if v]
            if not items:
                raise ValueError("empty list")
            return items
        if kind == "mpp":
            from ..units import validate_mpp

            return validate_mpp(float(value), name=key)
        if kind == "positive":
            v = float(value)
            if not math.isfinite(v) or v <= 0:
                raise ValueError("must be a positive number")
            return v
        if kind == "int":
            v = float(value)
            if v != int(v) or v < 1:
                raise ValueError("must be a whole number of at least 1")
            return int(v)
        if kind == "split":
            s = str(value).strip()
            return None if s.lower() in ("", "none", "all") else s
    except MitoscopeError as exc:
        problems.append(f"{where}: {exc}")
        return None
    except (TypeError, ValueError) as exc:
        problems.append(f"{where}: {key}={value!r}: {exc}")
        return None
    raise AssertionError(kind)


def validate_sources(sources: Any) -> tuple[dict[str, Any], ...]:
    """Check and normalise source tables; every mistake is reported (one line, ``;``-joined).

    Adds ``name`` (default: the type, numbered when repeated) and ``weight`` (default 1).
    """
    if isinstance(sources, dict):
        sources = [sources]
    if not isinstance(sources, (list, tuple)) or not sources:
        raise InvalidInputError("sources must be a non-empty list of tables with a 'type'")
    problems: list[str] = []
    out: list[dict[str, Any]] = []
    seen: dict[str, int] = {}
    for i, raw in enumerate(sources, 1):
        where = f"source #{i}"
        if not isinstance(raw, dict):
            problems.append(f"{where}: expected a table with type and path, got {raw!r}")
            continue
        typ = str(raw.get("type", "")).strip().lower()
        if typ not in SOURCE_TYPES:
            problems.append(
                f"{where}: unknown source type {raw.get('type')!r}; choose one of "
                f"{', '.join(list_sources())}"
            )
            continue
        st = SOURCE_TYPES[typ]
        where = f"source #{i} ({typ})"
        unknown = sorted(set(raw) - set(st.keys))
        if unknown:
            problems.append(
                f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(st.keys))}"
            )
        if "path" not in raw:
            problems.append(f"{where}: needs path")
        spec: dict[str, Any] = {"type": typ}
        for key, value in raw.items():
            if key in ("type",) or key in unknown or value is None:
                continue
            v = _coerce(key, st.keys[key], value, where, problems)
            if v is not None:
                spec[key] = v
        name = spec.get("name") or typ
        if "/" in name or ":" in name:
            problems.append(f"{where}: name {name!r} must not contain '/' or ':'")
        if st.labelled and name.lower() == "tissue":
            problems.append(f"{where}: the name 'tissue' is reserved for tissue sources")
        if "name" not in spec:
            seen[name] = seen.get(name, 0) + 1
            if seen[name] > 1:
                name = f"{name}{seen[name]}"
        spec["name"] = name
        spec.setdefault("weight", 1.0)
        out.append(spec)
    names = [s["name"] for s in out]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        problems.append(f"source names must be unique: {', '.join(dup)} repeated")
    if problems:
        raise InvalidInputError("; ".join(problems))
    return tuple(out)


#: the labels.csv columns of an AMi-Br crop folder that training reads
AMIBR_COLUMNS = ("file", "label", "slide", "dataset", "uid", "expert1_label")


def check_amibr_folder(path: str | Path) -> None:
    """Check an AMi-Br crop folder's ``labels.csv`` before any work (one-line errors).

    Raises
    ------
    InvalidInputError
        No folder or no ``labels.csv``; the file is not UTF-8 CSV, lacks a column of
        :data:`AMIBR_COLUMNS`, has no rows, or a label other than Normal / Atypical.
    """
    import csv

    root = Path(path)
    if not root.is_dir():
        raise InvalidInputError(f"--data-dir {root} is not a folder; pass the amibr-train folder")
    lab = root / "labels.csv"
    if not lab.is_file():
        raise InvalidInputError(f"{root} has no labels.csv; pass the amibr-train folder")
    try:
        with open(lab, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
            header = list(rows[0]) if rows else []
            if not rows:
                f.seek(0)
                header = next(csv.reader(f), [])
    except (UnicodeDecodeError, csv.Error, OSError) as exc:
        raise InvalidInputError(
            f"{lab} is not a readable CSV file ({type(exc).__name__}); pass the amibr-train folder"
        ) from None
    missing = [c for c in AMIBR_COLUMNS if c not in header]
    if missing:
        raise InvalidInputError(
            f"{lab} lacks the column(s) {', '.join(missing)}; expected the AMi-Br labels "
            f"({', '.join(AMIBR_COLUMNS)}, ...)"
        )
    if not rows:
        raise InvalidInputError(f"{lab} has a header but no rows: nothing to train on")
    bad = sorted({str(r.get("label")) for r in rows} - {"Normal", "Atypical"})
    if bad:
        raise InvalidInputError(
            f"{lab}: label must be Normal or Atypical, got {', '.join(bad[:3])}"
        )


def check_config_types(cfg: Any) -> None:
    """Check that every field of a config dataclass has its declared type (str, int, float,
    bool, optional, tuple), so a wrong type in a config file fails at once, in one line."""
    import dataclasses

    names = {"str": "a string", "int": "an integer", "float": "a number", "bool": "true or false"}
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        typ = str(f.type).replace(" | None", "")
        if value is None and "None" in str(f.type):
            continue
        if typ.startswith("tuple"):
            if not isinstance(value, (tuple, list)):
                raise InvalidInputError(f"{f.name} must be a list, got {value!r:.60}")
            item = typ[len("tuple[") :].split(",")[0].strip()
            if item in names and not all(_is_type(v, item) for v in value):
                raise InvalidInputError(f"{f.name} must be a list of {item}, got {value!r:.60}")
        elif typ in names and not _is_type(value, typ):
            raise InvalidInputError(f"{f.name} must be {names[typ]}, got {value!r:.60}")


def _is_type(value: Any, typ: str) -> bool:
    if typ == "bool":
        return isinstance(value, bool)
    if isinstance(value, bool):
        return False
    if typ == "int":
        return isinstance(value, int)
    if typ == "float":
        return isinstance(value, (int, float))
    return isinstance(value, str)


def parse_source_arg(text: str) -> dict[str, Any]:
    """Parse ``TYPE:PATH[,key=value...]`` (the ``--source`` option) into a source table.

    List values use ``|`` (``tumor_types=human breast cancer|canine lymphoma``); a path with a
    comma needs a config file.
    """
    head, _, rest = str(text).partition(",")
    typ, sep, path = head.partition(":")
    if not sep or not typ.strip() or not path.strip():
        raise InvalidInputError(
            f"--source {text!r}: expected TYPE:PATH[,key=value...], e.g. "
            "midogpp:MIDOGpp.json,images=imgs,split=train"
        )
    spec: dict[str, Any] = {"type": typ.strip(), "path": path.strip()}
    for item in [r for r in rest.split(",") if r.strip()] if rest else []:
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise InvalidInputError(f"--source {text!r}: {item!r} is not key=value")
        spec[key.strip()] = value.strip()
    return spec


# -- image lookup and geometry ----------------------------------------------------------------
def _index_folder(folder: Path) -> tuple[dict[str, Path], dict[str, list[Path]]]:
    by_name: dict[str, Path] = {}
    by_stem: dict[str, list[Path]] = {}
    if folder.is_dir():
        for p in sorted(folder.iterdir()):
            by_name[p.name] = p
            by_stem.setdefault(image_stem(p.name), []).append(p)
    return by_name, by_stem


def image_stem(name: str) -> str:
    """The file name of ``name`` without folder and extension (``.ome.tif(f)`` as one)."""
    n = Path(str(name)).name
    low = n.lower()
    for suffix in (".ome.tiff", ".ome.tif"):
        if low.endswith(suffix):
            return n[: -len(suffix)]
    return Path(n).stem


def resolve_images(names: list[str], folder: Path, source: str) -> dict[str, Path]:
    """Map label image names to files of ``folder`` (exact name, else the same stem); every
    missing image is named in one error."""
    by_name, by_stem = _index_folder(folder)
    out: dict[str, Path] = {}
    missing: list[str] = []
    for n in names:
        base = Path(str(n)).name
        hit = by_name.get(base)
        if hit is None:
            cands = [p for p in by_stem.get(image_stem(base), []) if _is_image(p)]
            hit = cands[0] if cands else None
        if hit is None:
            missing.append(str(n))
        else:
            out[str(n)] = hit
    if missing:
        shown = ", ".join(missing[:3]) + (", ..." if len(missing) > 3 else "")
        where = folder if folder.is_dir() else f"{folder} (not a folder)"
        raise InvalidInputError(
            f"{source}: {len(missing)} of {len(names)} labelled images are not in {where}: "
            f"{shown}; set images= to the folder that holds them"
        )
    return out


def _is_image(p: Path) -> bool:
    return p.is_dir() or p.suffix.lower() in IMAGE_SUFFIXES


def plan_windows(
    x: np.ndarray, y: np.ndarray, width: int, height: int, side_px: float
) -> list[tuple[tuple[float, float, float, float], np.ndarray]]:
    """Squares (``x0, y0, x1, y1`` level-0 px, side ``side_px``) covering every label.

    Greedy: the top-most unassigned label seeds a cluster of the unassigned labels that fit
    in one square below it; the square is centred on the cluster's bounding box.
    """
    order = np.lexsort((x, y))
    free = np.ones(len(x), dtype=bool)
    out = []
    half = side_px / 2.0
    for i in order:
        if not free[i]:
            continue
        sel = free & (y >= y[i]) & (y <= y[i] + side_px) & (np.abs(x - x[i]) <= half)
        idx = np.flatnonzero(sel)
        xs, ys = x[idx], y[idx]
        # keep the cluster within one square side in x as well
        idx = idx[(xs - xs.min()) <= side_px]
        xs, ys = x[idx], y[idx]
        cx, cy = (xs.min() + xs.max()) / 2.0, (ys.min() + ys.max()) / 2.0
        x0, y0 = cx - half, cy - half
        out.append(((x0, y0, x0 + side_px, y0 + side_px), idx))
        free[idx] = False
    return out


# -- labelled images -> samples ---------------------------------------------------------------
@dataclass
class LabelledImages:
    """What a labelled source names: its labels, the image files and their groups."""

    name: str
    ann: Any  # PointAnnotations of the images used
    files: dict[str, Path]  # label image name -> file
    groups: dict[str, str]  # label image name -> domain group
    mpp: float | None = None  # the source's pixel-size override
    #: every object of the images is labelled (other candidates are negatives); False for
    #: reviewed detections, whose neighbours nobody looked at
    exhaustive: bool = True

    def counts(self) -> dict[str, int]:
        mf = self.ann.is_mitosis
        return {
            "images": len(set(self.ann.image.tolist())),
            "mitotic_figures": int(mf.sum()),
            "imposters": int((~mf).sum()),
        }


def open_source_image(path: Path, mpp: float | None, source: str) -> Any:
    """Open image ``path`` of ``source`` (``mpp`` ``None``: from its metadata); a missing pixel
    size or an unreadable file is an :class:`InvalidInputError` naming the source."""
    from ..errors import MissingMetadataError, SlideOpenError
    from ..slide import open_slide

    try:
        return open_slide(path, mpp=mpp)
    except MissingMetadataError:
        raise InvalidInputError(
            f"{source}: {path.name} has no pixel size in its metadata; set the source's mpp "
            "(um/px, e.g. mpp=0.25 for a 40x scan)"
        ) from None
    except SlideOpenError as exc:
        raise InvalidInputError(f"{source}: {exc}") from None


def check_label_positions(
    x: np.ndarray, y: np.ndarray, width: int, height: int, *, image: str, source: str
) -> None:
    """Labels must lie inside the image, in level-0 pixels.

    Raises when a label is outside ``[0, width] x [0, height]``, or when the image is at least
    :data:`MM_CHECK_MIN_PX` px on its shorter side and every label lies within the first
    :data:`MM_FRACTION` of its width and height (coordinates in mm where px are expected).
    """
    out = (x < 0) | (y < 0) | (x > width) | (y > height)
    if out.any():
        i = int(np.flatnonzero(out)[0])
        raise InvalidInputError(
            f"{source}: {int(out.sum())} label(s) of {image} lie outside the image "
            f"({width}x{height} px), e.g. at ({x[i]:.1f}, {y[i]:.1f}); labels must be level-0 "
            "pixels of this image"
        )
    if (
        len(x)
        and min(width, height) >= MM_CHECK_MIN_PX
        and (x < width * MM_FRACTION).all()
        and (y < height * MM_FRACTION).all()
    ):
        raise InvalidInputError(
            f"{source}: all {len(x)} label(s) of {image} lie within {x.max():.3g}, {y.max():.3g} "
            f"of the corner of a {width}x{height} px image: they look like millimetres; give "
            "level-0 pixel coordinates"
        )


PLAIN_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")


def probe_image(path: Path, mpp: float | None, source: str) -> tuple[int, int, float]:
    """``(width, height, mpp)`` of an image without decoding its pixels where possible.

    The pixel size is ``mpp`` when given, else the file's metadata (the same rules as
    :func:`mitoscope.slide.open_slide`); neither is an error.
    """
    if path.suffix.lower() in PLAIN_SUFFIXES and mpp is None:
        from PIL import Image

        try:
            with Image.open(path) as im:
                w, h = im.size
                dpi = im.info.get("dpi")
        except (OSError, ValueError, SyntaxError) as exc:
            raise InvalidInputError(f"{source}: cannot read {path.name}: {exc}") from None
        found = None
        if dpi and dpi[0] and float(dpi[0]) > 1.5 and 25400.0 / float(dpi[0]) < 20:
            found = 25400.0 / float(dpi[0])
        if found is None:
            open_source_image(path, None, source)  # raises the missing-pixel-size error
        return int(w), int(h), float(found)
    if path.suffix.lower() in PLAIN_SUFFIXES:
        from PIL import Image

        try:
            with Image.open(path) as im:
                w, h = im.size
        except (OSError, ValueError, SyntaxError) as exc:
            raise InvalidInputError(f"{source}: cannot read {path.name}: {exc}") from None
        return int(w), int(h), float(mpp)
    with open_source_image(path, mpp, source) as reader:
        return reader.info.width, reader.info.height, float(reader.info.mpp)


def check_source_images(lab: LabelledImages) -> None:
    """Every image of a labelled source has a pixel size and its labels lie inside it."""
    for name in sorted(lab.files):
        w, h, _ = probe_image(lab.files[name], lab.mpp, lab.name)
        ann = lab.ann.for_image(name)
        check_label_positions(ann.x_px, ann.y_px, w, h, image=name, source=lab.name)


def _label_points(ann: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    aty = np.where(np.isfinite(ann.atypical), ann.atypical, -1).astype(np.int64)
    return ann.is_mitosis.astype(bool), aty, np.arange(len(ann))


def labelled_source_samples(
    lab: LabelledImages, opts: BuildOptions, *, window_um: float
) -> SampleSet:
    """Samples of every labelled image of a source (windows around labels on large images)."""
    from tqdm.auto import tqdm

    from ..candidates import get_proposer
    from ..classify.patches import disc_mask
    from ..types import Region
    from .samples import SAMPLE_ARRAYS, LabelPoint, labelled_image_samples

    prop = get_proposer(opts.proposer)
    disc = disc_mask(opts.size_px, 3.0 / opts.mpp)
    cols: dict[str, list[Any]] = {k: [] for k in SAMPLE_ARRAYS if k != "source"}
    n_fallback = n_windows = n_skipped = 0
    area_px = 0.0
    for name in tqdm(sorted(lab.files), desc=lab.name, disable=not opts.progress):
        path = lab.files[name]
        ann = lab.ann.for_image(name)
        with open_source_image(path, lab.mpp, lab.name) as reader:
            info = reader.info
            img_mpp = float(info.mpp)
            check_label_positions(
                ann.x_px, ann.y_px, info.width, info.height, image=name, source=lab.name
            )
            if ann.bbox is not None:
                side = np.fmax(ann.bbox[:, 2] - ann.bbox[:, 0], ann.bbox[:, 3] - ann.bbox[:, 1])
                big = np.isfinite(side) & (side * img_mpp > MAX_OBJECT_UM)
                if big.any():
                    n_skipped += int(big.sum())
                    ann = ann.filter(~big)
            if not len(ann):
                continue
            x, y = ann.x_px, ann.y_px
            is_mf, aty, _ = _label_points(ann)
            # raters agreeing with each label (MIDOG++ votes, SlideRunner persons, crowd tables)
            agree = np.where(np.isfinite(ann.agreement), ann.agreement, 1.0)
            if max(info.width, info.height) <= MAX_WHOLE_PX:
                windows = [((0.0, 0.0, float(info.width), float(info.height)), np.arange(len(x)))]
                ctx = 0.0
            else:
                windows = plan_windows(x, y, info.width, info.height, window_um / img_mpp)
                ctx = CONTEXT_UM / img_mpp
            done: list[tuple[float, float, float, float]] = []
            slide = f"{lab.name}/{image_stem(name)}"
            group = lab.groups[name]
            for core, idx in windows:
                x0, y0, x1, y1 = core
                rx0, ry0 = int(math.floor(x0 - ctx)), int(math.floor(y0 - ctx))
                rx1, ry1 = int(math.ceil(x1 + ctx)), int(math.ceil(y1 + ctx))
                region = Region(rx0, ry0, rx1 - rx0, ry1 - ry0)
                img = reader.read_region_mpp(region, opts.mpp, clip=True)
                sx, sy = region.width / img.shape[1], region.height / img.shape[0]

                def to_win(px: np.ndarray, py: np.ndarray, r: Region = region, a=sx, b=sy):
                    return (px - r.x + 0.5) / a - 0.5, (py - r.y + 0.5) / b - 0.5

                def to_l0(u: np.ndarray, v: np.ndarray, r: Region = region, a=sx, b=sy):
                    return r.x + (u + 0.5) * a - 0.5, r.y + (v + 0.5) * b - 0.5

                near = (x >= rx0 - 2 * ctx) & (x <= rx1 + 2 * ctx)
                near &= (y >= ry0 - 2 * ctx) & (y <= ry1 + 2 * ctx)
                mine = np.zeros(len(x), dtype=bool)
                mine[idx] = True
                pts = []
                for j in np.flatnonzero(near | mine):
                    u, v = to_win(x[j], y[j])
                    kind = KIND_CENTRE if is_mf[j] else KIND_IMPOSTER
                    pts.append(
                        LabelPoint(
                            float(u), float(v), kind, int(aty[j]), emit=bool(mine[j]),
                            mf_agreement=float(agree[j]),
                        )
                    )  # fmt: skip
                prev = list(done)

                def ok(u: np.ndarray, v: np.ndarray, c=core, prev=prev, to_l0=to_l0) -> np.ndarray:
                    if not lab.exhaustive:  # unlabelled neighbours are not negatives
                        return np.zeros(len(u), dtype=bool)
                    gx, gy = to_l0(u, v)
                    keep = (gx >= c[0]) & (gx < c[2]) & (gy >= c[1]) & (gy < c[3])
                    for p0, q0, p1, q1 in prev:
                        keep &= ~((gx >= p0) & (gx < p1) & (gy >= q0) & (gy < q1))
                    return keep

                part, stats = labelled_image_samples(
                    img, pts, mpp=opts.mpp, size_px=opts.size_px, proposer=prop,
                    exclusion_um=opts.exclusion_um, match_um=opts.match_um, disc=disc,
                    candidate_ok=ok,
                )  # fmt: skip
                done.append(core)
                n_fallback += stats["mask_fallbacks"]
                n = len(part["kind"])
                for k, v in part.items():
                    cols[k].extend(v)
                cols["crop"].extend([n_windows] * n)
                cols["slide"].extend([slide] * n)
                cols["group"].extend([group] * n)
                n_windows += 1
                cw = min(x1, info.width) - max(x0, 0.0)
                ch = min(y1, info.height) - max(y0, 0.0)
                area_px += max(cw, 0.0) * max(ch, 0.0) * (img_mpp / opts.mpp) ** 2
    if not cols["kind"]:
        raise InvalidInputError(f"{lab.name}: no samples (no usable labels in its images)")
    return samples_from_columns(
        cols,
        meta={
            "source": lab.name,
            "mpp": float(opts.mpp),
            "size_px": int(opts.size_px),
            "proposer": opts.proposer,
            "exclusion_um": float(opts.exclusion_um),
            "match_um": float(opts.match_um),
            "n_images": len(lab.files),
            "n_windows": n_windows,
            "labelled_area_mm2": area_px * (opts.mpp / 1000.0) ** 2,
            "mask_fallbacks": int(n_fallback),
            "region_labels_ignored": int(n_skipped),
        },
    )


def _limit_images(ann: Any, limit: int | None) -> Any:
    names = sorted(set(ann.image.tolist()))
    if limit:
        names = names[: int(limit)]
    return ann.for_images(names)


#: class names that are neither a mitotic figure nor a negative: such labels are left out of
#: training (e.g. a reviewer's "Equivocal" in a database written by ``mitoscope review``)
UNCERTAIN_CLASSES = {"equivocal", "ignore", "unknown", "unsure", "uncertain", "not sure"}


def drop_uncertain(ann: Any) -> Any:
    """The labels of ``ann`` whose class is not one of :data:`UNCERTAIN_CLASSES`."""
    lab = np.array([str(v).strip().lower() for v in ann.label], dtype=object)
    keep = ~np.isin(lab, sorted(UNCERTAIN_CLASSES))
    return ann if keep.all() else ann.filter(keep)


def _labelled(
    spec: dict[str, Any], ann: Any, folder: Path, groups: dict[str, str], check_images: bool
) -> LabelledImages:
    ann = drop_uncertain(_limit_images(ann, spec.get("limit")))
    names = sorted(set(ann.image.tolist()))
    files = resolve_images(names, folder, spec["name"]) if check_images else {}
    grp = {n: spec.get("group") or groups.get(n) or spec["name"] for n in names}
    return LabelledImages(spec["name"], ann, files, grp, spec.get("mpp"))


# -- label readers per source type ------------------------------------------------------------
def _labels_midogpp(spec: dict[str, Any], check_images: bool = True) -> LabelledImages:
    from ..io.midog import read_midogpp_json

    path = Path(spec["path"])
    ann = read_midogpp_json(path, split_csv=spec.get("split_csv"), split=spec.get("split"))
    wanted = spec.get("tumor_types")
    if wanted:
        have = sorted({str(t) for t in ann.meta["tumor_type"].tolist()})
        low = {t.lower(): t for t in have}
        bad = [t for t in wanted if t.lower() not in low]
        if bad:
            raise InvalidInputError(
                f"{spec['name']}: tumor type(s) {', '.join(bad)} not in {path.name}; it has "
                f"{', '.join(have)}"
            )
        keep = {low[t.lower()] for t in wanted}
        ann = ann.filter(np.isin(ann.meta["tumor_type"].astype(str), sorted(keep)))
    groups: dict[str, str] = {}
    for n in set(ann.image.tolist()):
        meta = ann.image_meta.get(n, {})
        # the official split table spells one scanner two ways ("Hamammatsu XR")
        scanner = str(meta.get("scanner") or "").replace("Hamammatsu", "Hamamatsu")
        dom = scanner or meta.get("tumor_type") or ""
        groups[n] = f"{spec['name']}:{dom}" if dom else spec["name"]
    folder = Path(spec.get("images") or path.parent)
    return _labelled(spec, ann, folder, groups, check_images)


def _labels_sliderunner(spec: dict[str, Any], check_images: bool = True) -> LabelledImages:
    from ..io.sliderunner import read_sliderunner

    path = Path(spec["path"])
    ann = read_sliderunner(path)
    folder = Path(spec.get("images") or path.parent)
    return _labelled(spec, ann, folder, {}, check_images)


#: the keys of a ``reviewed`` source that set the review weights (io.reviewed.read_reviewed)
REVIEW_WEIGHT_KEYS = {
    "contested_weight": "positive",
    "equivocal_as": "str",
    "equivocal_weight": "positive",
}


def _labels_reviewed(spec: dict[str, Any], check_images: bool = True) -> LabelledImages:
    from ..io.reviewed import read_reviewed, run_database

    db = run_database(spec["path"])
    ann = read_reviewed(db, **{k: spec[k] for k in REVIEW_WEIGHT_KEYS if k in spec})
    if not len(ann):
        raise InvalidInputError(
            f"{spec['name']}: {db} has no reviewed detections yet; answer some with "
            "mitoscope review first"
        )
    lab = _labelled(spec, ann, Path(spec.get("images") or db.parent), {}, check_images)
    lab.exhaustive = False
    return lab


def review_weighted(spec: dict[str, Any]) -> bool:
    """Whether a (validated) source gives some labels a weight below 1 that only the
    ``agreement`` MF loss applies: a ``reviewed`` source with ``contested_weight`` < 1 or
    ``equivocal_as``."""
    return spec.get("type") == "reviewed" and (
        float(spec.get("contested_weight", 1.0)) < 1.0 or spec.get("equivocal_as") is not None
    )


def check_review_loss(specs: Any, mf_loss: str) -> None:
    """Down-weighted reviewed labels need the loss that applies per-label weights: raise a
    one-line error when a source is :func:`review_weighted` and ``mf_loss`` is not
    ``"agreement"`` (``hard`` ignores the weights; ``soft`` would read them as rater shares)."""
    named = [s["name"] for s in specs if review_weighted(s)]
    if named and mf_loss != "agreement":
        raise InvalidInputError(
            f"source {', '.join(named)} down-weights reviewed labels (contested_weight < 1 or "
            f'equivocal_as) but mf_loss is {mf_loss!r}: set mf_loss = "agreement" (or '
            "--mf-loss agreement) so the weights reach the loss"
        )


def _label_files(spec: dict[str, Any], suffixes: tuple[str, ...]) -> list[Path]:
    paths = spec["path"] if isinstance(spec["path"], list) else [spec["path"]]
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files += sorted(f for f in p.iterdir() if f.name.lower().endswith(suffixes))
        else:
            files.append(p)
    if not files:
        raise InvalidInputError(
            f"{spec['name']}: no {'/'.join(suffixes)} label files in {', '.join(map(str, paths))}"
        )
    return files


def _default_images(spec: dict[str, Any]) -> Path:
    if spec.get("images"):
        return Path(spec["images"])
    first = spec["path"][0] if isinstance(spec["path"], list) else spec["path"]
    p = Path(first)
    return p if p.is_dir() else p.parent


def _labels_geojson(spec: dict[str, Any], check_images: bool = True) -> LabelledImages:
    from ..io.annotations import PointAnnotations
    from ..io.geojson import read_geojson

    anns = [read_geojson(f) for f in _label_files(spec, (".geojson", ".json"))]
    ann = PointAnnotations.cat([a for a in anns if len(a)])
    return _labelled(spec, ann, _default_images(spec), {}, check_images)


def _labels_csv(spec: dict[str, Any], check_images: bool = True) -> LabelledImages:
    from ..io.annotations import PointAnnotations
    from ..io.csvpoints import read_csv_points

    anns = [read_csv_points(f, mpp=spec.get("mpp")) for f in _label_files(spec, (".csv",))]
    ann = PointAnnotations.cat([a for a in anns if len(a)])
    return _labelled(spec, ann, _default_images(spec), {}, check_images)


LABEL_READERS: dict[str, Callable[..., LabelledImages]] = {
    "midogpp": _labels_midogpp,
    "sliderunner": _labels_sliderunner,
    "reviewed": _labels_reviewed,
    "geojson": _labels_geojson,
    "csv": _labels_csv,
}


def source_labels(spec: dict[str, Any], *, check_images: bool = True) -> LabelledImages:
    """Read a labelled source's labels (after its filters: split, tumor types, limit) and find
    its images; a missing image is an error naming them, unless ``check_images=False``."""
    spec = validate_sources([spec])[0] if "weight" not in spec else spec
    if spec["type"] not in LABEL_READERS:
        raise InvalidInputError(f"{spec['type']} sources have no labels to read")
    return LABEL_READERS[spec["type"]](spec, check_images)


# -- caching ---------------------------------------------------------------------------------
def _fingerprint(spec: dict[str, Any], files: list[Path], opts: BuildOptions) -> str:
    h = hashlib.sha1()
    keep = {k: v for k, v in spec.items() if k not in ("weight", "name", "group")}
    h.update(json.dumps(keep, sort_keys=True, default=str).encode())
    h.update(
        f"{opts.mpp}:{opts.size_px}:{opts.proposer}:{opts.exclusion_um}:{opts.match_um}:"
        f"{CACHE_VERSION}:{WINDOW_UM}:{CONTEXT_UM}:{MAX_WHOLE_PX}".encode()
    )
    for f in files:
        st = f.stat()
        h.update(f"{f.resolve()}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:14]


def _cached(
    spec: dict[str, Any], files: list[Path], opts: BuildOptions, build: Callable[[], SampleSet]
) -> SampleSet:
    if str(opts.cache_dir).lower() == "none":
        return build()
    cdir = Path(opts.cache_dir) if opts.cache_dir else default_cache_dir()
    path = cdir / f"source_{spec['type']}_{_fingerprint(spec, files, opts)}.npz"
    if path.is_file():
        return load_samples(path)
    samples = build()
    save_samples(samples, path)
    return samples


# -- builders ---------------------------------------------------------------------------------
_LABELLED_KEYS = {"images": "path", "window_um": "positive"}


def _build_labelled(
    spec: dict[str, Any], opts: BuildOptions, lab: LabelledImages | None = None
) -> SampleSet:
    if lab is None:
        lab = source_labels(spec)
        check_source_images(lab)
    if spec["type"] in ("geojson", "csv"):
        label_files = _label_files(spec, ("",))
    elif spec["type"] == "reviewed":  # answers may still sit in the write-ahead log
        from ..io.reviewed import run_database

        db = run_database(spec["path"])
        wal = db.with_name(db.name + "-wal")
        label_files = [db] + ([wal] if wal.is_file() else [])
    else:
        label_files = [Path(spec["path"])]
        label_files += [Path(spec["split_csv"])] if spec.get("split_csv") else []
    files = label_files + [lab.files[n] for n in sorted(lab.files)]
    window_um = float(spec.get("window_um", WINDOW_UM))
    key = {**spec, "_columns": "mf_agreement"}  # caches from before the column are rebuilt
    return _cached(
        key, files, opts, lambda: labelled_source_samples(lab, opts, window_um=window_um)
    )


register_source(
    "midogpp",
    keys={**_LABELLED_KEYS, "split_csv": "path", "split": "split", "tumor_types": "list"},
    description="MIDOG++ JSON (path) + image folder (images) [+ split_csv, split, tumor_types]",
)(_build_labelled)
register_source(
    "sliderunner",
    keys=_LABELLED_KEYS,
    description="SlideRunner SQLite (path) + slide/image folder (images)",
)(_build_labelled)
register_source(
    "reviewed",
    keys={**_LABELLED_KEYS, **REVIEW_WEIGHT_KEYS},
    description="the answers of mitoscope review (path: run directory or its mitoscope.sqlite) "
    "+ slide folder (images) [+ contested_weight, equivocal_as, equivocal_weight]",
)(_build_labelled)
register_source(
    "geojson",
    keys=_LABELLED_KEYS,
    description="QuPath GeoJSON per image (path: folder or file, named like the images) + images",
)(_build_labelled)
register_source(
    "csv",
    keys=_LABELLED_KEYS,
    description="CSV points (path: a CSV with an image column, or a folder of per-image CSVs) "
    "+ images",
)(_build_labelled)


@register_source(
    "amibr",
    keys={"neighbours": "path"},
    description="AMi-Br crop folder (path: labels.csv + Normal/ + Atypical/) [+ neighbours CSV]",
)
def _build_amibr(spec: dict[str, Any], opts: BuildOptions) -> SampleSet:
    from .samples import build_amibr_samples

    s = build_amibr_samples(
        spec["path"],
        neighbours_csv=spec.get("neighbours"),
        mpp=opts.mpp,
        size_px=opts.size_px,
        proposer=opts.proposer,
        exclusion_um=opts.exclusion_um,
        match_um=opts.match_um,
        limit=spec.get("limit"),
        cache_dir=opts.cache_dir,
        progress=opts.progress,
    )
    s.slide = np.char.add(f"{spec['name']}/", np.asarray(s.slide, dtype=str))
    return s


@register_source(
    "tissue",
    keys={"organs": "list", "exclude_organs": "list", "organ": "str"},
    description="ordinary-tissue negatives: a folder with images.csv (file, organ, mpp), or a "
    "folder of images (with mpp, organ); every candidate is a negative",
    labelled=False,
)
def _build_tissue(spec: dict[str, Any], opts: BuildOptions) -> SampleSet:
    from .samples import negative_image_samples

    images = tissue_images(spec)
    root = Path(spec["path"])
    return _cached(
        spec,
        [p for p, *_ in images],
        opts,
        lambda: negative_image_samples(
            images, mpp=opts.mpp, size_px=opts.size_px, proposer=opts.proposer,
            progress=opts.progress, source=f"{spec['name']} ({root})",
        ),
    )  # fmt: skip


def tissue_images(spec: dict[str, Any]) -> list[tuple[Path, float, str, str]]:
    """The images of a (validated) ``tissue`` source after its organ filters and limit:
    ``(path, mpp, group, slide name)`` each; missing, unreadable or too large images and
    unknown organs are errors."""
    from PIL import Image

    from .samples import read_tissue_index, tissue_slide_name

    root = Path(spec["path"])
    name = spec["name"]
    images: list[tuple[Path, float, str, str]] = []
    if (root / "images.csv").is_file():
        rows = read_tissue_index(root)
        have = sorted({r["organ"] for r in rows})
        for key in ("organs", "exclude_organs"):
            bad = [o for o in spec.get(key, []) if o not in have]
            if bad:
                raise InvalidInputError(
                    f"{name}: {key} {', '.join(bad)} not in {root / 'images.csv'}; it has "
                    f"{', '.join(have)}"
                )
        if spec.get("organs"):
            rows = [r for r in rows if r["organ"] in set(spec["organs"])]
        rows = [r for r in rows if r["organ"] not in set(spec.get("exclude_organs", []))]
        entries = [(root / r["file"], r["organ"], spec.get("mpp") or float(r["mpp"])) for r in rows]
    elif root.is_dir():
        organ = spec.get("organ") or name
        files = sorted(p for p in root.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise InvalidInputError(f"{name}: {root} has neither images.csv nor images")
        entries = [(p, organ, spec.get("mpp")) for p in files]
    else:
        raise InvalidInputError(f"{name}: {root} is not a folder")
    if spec.get("limit"):
        entries = entries[: int(spec["limit"])]
    for path, organ, mpp in entries:
        if not path.is_file():
            raise InvalidInputError(f"{name}: image {path} is missing")
        try:
            with Image.open(path) as im:
                w, h = im.size
        except (OSError, ValueError) as exc:
            raise InvalidInputError(f"{name}: cannot read {path.name}: {exc}") from None
        if max(w, h) > MAX_WHOLE_PX:
            raise InvalidInputError(
                f"{name}: {path.name} is {w}x{h} px; tissue sources take region images up to "
                f"{MAX_WHOLE_PX} px a side (export regions of whole slides)"
            )
        if mpp is None:
            with open_source_image(path, None, name) as reader:
                mpp = reader.info.mpp
        slide = tissue_slide_name(organ, path.name)
        if name != "tissue":
            slide = f"tissue/{organ}/{name}-{path.stem}"
        images.append((path, float(mpp), spec.get("group") or f"tissue_{organ}", slide))
    if not images:
        raise InvalidInputError(f"{name}: no images left after the organ filters")
    return images


# -- all sources -----------------------------------------------------------------------------
def check_source_labels(specs: list[dict[str, Any]]) -> dict[str, LabelledImages]:
    """Read and check the labels, images, pixel sizes and positions of every labelled source
    (validated ``specs``) before any work; the labels by source name. Raises
    :class:`~mitoscope.errors.InvalidInputError` when no source holds a mitotic figure."""
    n_mf = 0
    labs: dict[str, LabelledImages] = {}
    for spec in specs:
        if spec["type"] in LABEL_READERS:
            lab = labs[spec["name"]] = source_labels(spec)
            check_source_images(lab)
            n_mf += lab.counts()["mitotic_figures"]
        elif spec["type"] == "amibr":
            n_mf += 1  # every crop is centred on a mitotic figure
    if n_mf == 0:
        raise InvalidInputError(
            "the training sources have no labelled mitotic figures (positives); add a labelled "
            "source (amibr, midogpp, sliderunner, reviewed, geojson or csv)"
        )
    return labs


def build_source_samples(
    sources: Any,
    *,
    mpp: float = 0.25,
    size_px: int = 100,
    proposer: str = "classical",
    cache_dir: str | None = None,
    progress: bool = True,
) -> SampleSet:
    """One :class:`SampleSet` of several label sources, each with its name, weight and group.

    Labels and images of every labelled source are checked first (missing images, no mitotic
    figure anywhere) before any sample is built. ``samples.source`` names each sample's source
    and ``samples.meta["source_weights"]`` their sampling weights.
    """
    specs = validate_sources(sources)
    opts = BuildOptions(
        mpp=mpp, size_px=size_px, proposer=proposer, cache_dir=cache_dir, progress=progress
    )
    labs = check_source_labels(specs)
    parts = []
    summary = []
    for spec in specs:
        if spec["name"] in labs:
            s = _build_labelled(spec, opts, labs[spec["name"]])
        else:
            s = SOURCE_TYPES[spec["type"]].build(spec, opts)
        s.source = np.full(len(s), spec["name"])
        if spec.get("group"):
            s.group = np.full(len(s), spec["group"])
        parts.append(s)
        summary.append(
            {
                "name": spec["name"],
                "type": spec["type"],
                "path": spec["path"],
                "weight": spec["weight"],
                "n_samples": len(s),
                "n_mf": int(s.is_mf.sum()),
                "groups": sorted(set(s.group.tolist())),
            }
        )
    owner: dict[str, str] = {}
    for spec, s in zip(specs, parts, strict=True):
        for sl in np.unique(s.slide).tolist():
            if owner.setdefault(sl, spec["name"]) != spec["name"]:
                raise InvalidInputError(
                    f"sources {owner[sl]} and {spec['name']} both have slide {sl!r}; give them "
                    "different names"
                )
    out = concat_samples(*parts)
    subtypes = next((p.meta["subtypes"] for p in parts if p.meta.get("subtypes")), [])
    out.meta = {
        "source": "sources",
        "mpp": float(mpp),
        "size_px": int(size_px),
        "proposer": proposer,
        "subtypes": subtypes,  # atypia subtypes of the (first) AMi-Br source
        "parts": out.meta.get("parts", []),
    }
    out.meta["sources"] = summary
    out.meta["source_weights"] = {spec["name"]: float(spec["weight"]) for spec in specs}
    if not out.is_mf.any():
        raise InvalidInputError("the training sources gave no positive samples")
    if not (out.kind == KIND_CANDIDATE).any() and not (~out.is_mf.astype(bool)).any():
        raise InvalidInputError("the training sources gave no negative samples")
    return out
