"""The record type of every annotation reader: :class:`PointAnnotations`, and reader helpers.

Every reader in :mod:`mitoscope.io` (MIDOG++ JSON, MIDOG result/truth points, SlideRunner SQLite,
GeoJSON, CSV points, AMi-Br crop labels, TUPAC/ICPR CSV) returns the same column container, so
training, evaluation and conversion code never look at a source format again.

Positions are **level-0 pixels** of the image named in ``image``. Labels are canonical:
``"mitotic figure"`` (``is_mitosis`` true; atypical figures too, with ``atypical == 1``),
``"non-mitotic figure"`` (imposters, hard negatives, mitotic-like figures) or any other class name
kept verbatim (``is_mitosis`` false).

The format modules import from here only (never from each other or from the dispatcher,
:mod:`mitoscope.io.annotations`).

Over 400 lines: :class:`PointAnnotations` (a column container with its filters, joins and
conversions) is most of it; the label vocabulary and reader helpers are the few lines every
format module shares.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InvalidInputError

#: canonical label of a mitotic figure (normal or atypical)
MITOTIC = "mitotic figure"
#: canonical label of an imposter / hard negative / mitotic-like figure
NON_MITOTIC = "non-mitotic figure"

_MF_NAMES = {
    "mitotic figure",
    "mitotic figures",
    "mitosis",
    "mitoses",
    "mitose",
    "mitotic",
    "mf",
    "normal mitotic figure",
    "normal mitosis",
    "normal",
    "atypical mitotic figure",
    "atypical mitosis",
    "atypical",
    "amf",
    "positive",
}
_ATYPICAL_NAMES = {"atypical mitotic figure", "atypical mitosis", "atypical", "amf"}
_NORMAL_NAMES = {"normal mitotic figure", "normal mitosis", "normal"}
_NON_MF_NAMES = {
    "not mitotic figure",
    "non mitotic figure",
    "nonmitotic figure",
    "not mitosis",
    "non mitosis",
    "no mitosis",
    "not mf",
    "non mf",
    "hard negative",
    "hard negatives",
    "imposter",
    "impostor",
    "mitotic like figure",
    "mitotic figure like",
    "mitotic figure lookalike",
    "mitotic lookalike",
    "lookalike",
    "mlf",
    "negative",
}


def canonical_label(name: Any) -> tuple[str, bool, float]:
    """Map a class name from any source to ``(label, is_mitosis, atypical)``.

    ``atypical`` is 1.0 for atypical mitotic figures, 0.0 for explicitly normal ones and NaN
    when unknown.

    >>> canonical_label("Mitose")
    ('mitotic figure', True, nan)
    >>> canonical_label("not mitotic figure")
    ('non-mitotic figure', False, nan)
    >>> canonical_label("Atypical mitotic figure")
    ('mitotic figure', True, 1.0)
    >>> canonical_label("Tumor")
    ('Tumor', False, nan)
    """
    raw = "" if name is None else str(name).strip()
    key = re.sub(r"[\s_\-]+", " ", raw.lower()).strip()
    if key in _MF_NAMES:
        atypical = 1.0 if key in _ATYPICAL_NAMES else 0.0 if key in _NORMAL_NAMES else math.nan
        return MITOTIC, True, atypical
    if key in _NON_MF_NAMES:
        return NON_MITOTIC, False, math.nan
    return raw, False, math.nan


def str_array(values: Iterable[Any] | np.ndarray) -> np.ndarray:
    values = list(values)
    arr = np.empty(len(values), dtype=object)
    arr[:] = ["" if v is None else str(v) for v in values]
    return arr


@dataclass
class PointAnnotations:
    """A column container of point annotations (or point predictions), one row per object.

    All arrays have length ``N``. Build one with :meth:`from_columns`, which fills defaults.

    Attributes
    ----------
    image : object (N,)
        Image / slide identifier as in the source (usually the file name).
    x_px, y_px : float64 (N,)
        Position in level-0 pixels of that image.
    label : object (N,)
        Canonical label (see :func:`canonical_label`).
    is_mitosis : bool (N,)
    score : float64 (N,)
        Predicted probability; NaN for human labels.
    atypical : float64 (N,)
        1 atypical, 0 normal, NaN unknown.
    agreement : float64 (N,)
        Share of raters whose vote agrees with ``label`` (1.0 for a single label).
    n_raters : int64 (N,)
    uid : object (N,)
        Source annotation id as a string.
    bbox : float64 (N, 4) or None
        ``x0, y0, x1, y1`` in level-0 pixels (NaN rows where a source object has no box).
    meta : dict of str -> array (N,)
        Optional per-row columns (``slide``, ``dataset``, ``scanner``, ``tumor_type``,
        ``species``, ``split``, ``subtype``, ...).
    images_all : list of str or None
        Every image of the source, including images without annotations (they matter for
        evaluation: every prediction there is a false positive). ``None`` means "the images
        that have rows".
    image_meta : dict of str -> dict
        Per-image metadata (``width``, ``height``, ``tumor_type``, ``split``, ...).
    source : str
        Format the data was read from (``"midog++"``, ``"sliderunner"``, ...).
    """

    image: np.ndarray
    x_px: np.ndarray
    y_px: np.ndarray
    label: np.ndarray
    is_mitosis: np.ndarray
    score: np.ndarray
    atypical: np.ndarray
    agreement: np.ndarray
    n_raters: np.ndarray
    uid: np.ndarray
    bbox: np.ndarray | None = None
    meta: dict[str, np.ndarray] = field(default_factory=dict)
    images_all: list[str] | None = None
    image_meta: dict[str, dict[str, Any]] = field(default_factory=dict)
    source: str = ""

    _ROW_FIELDS = (
        "image",
        "x_px",
        "y_px",
        "label",
        "is_mitosis",
        "score",
        "atypical",
        "agreement",
        "n_raters",
        "uid",
    )

    def __post_init__(self) -> None:
        self.image = _as_obj(self.image)
        self.x_px = np.asarray(self.x_px, dtype=np.float64).reshape(-1)
        self.y_px = np.asarray(self.y_px, dtype=np.float64).reshape(-1)
        self.label = _as_obj(self.label)
        self.is_mitosis = np.asarray(self.is_mitosis, dtype=bool).reshape(-1)
        self.score = np.asarray(self.score, dtype=np.float64).reshape(-1)
        self.atypical = np.asarray(self.atypical, dtype=np.float64).reshape(-1)
        self.agreement = np.asarray(self.agreement, dtype=np.float64).reshape(-1)
        self.n_raters = np.asarray(self.n_raters, dtype=np.int64).reshape(-1)
        self.uid = _as_obj(self.uid)
        if self.bbox is not None:
            self.bbox = np.asarray(self.bbox, dtype=np.float64).reshape(-1, 4)
        self.meta = {str(k): np.asarray(v).reshape(-1) for k, v in self.meta.items()}
        n = len(self.x_px)
        for name in self._ROW_FIELDS:
            if len(getattr(self, name)) != n:
                raise ValueError(
                    f"PointAnnotations.{name} has length {len(getattr(self, name))}, expected {n}"
                )
        if self.bbox is not None and len(self.bbox) != n:
            raise ValueError(f"PointAnnotations.bbox has length {len(self.bbox)}, expected {n}")
        for k, v in self.meta.items():
            if len(v) != n:
                raise ValueError(f"PointAnnotations.meta[{k!r}] has length {len(v)}, expected {n}")

    # -- construction -----------------------------------------------------------------------
    @classmethod
    def from_columns(
        cls,
        *,
        image: Sequence[Any] | np.ndarray | str,
        x_px: Sequence[float] | np.ndarray,
        y_px: Sequence[float] | np.ndarray,
        label: Sequence[Any] | np.ndarray | str | None = None,
        is_mitosis: Sequence[bool] | np.ndarray | None = None,
        score: Sequence[float] | np.ndarray | None = None,
        atypical: Sequence[float] | np.ndarray | None = None,
        agreement: Sequence[float] | np.ndarray | None = None,
        n_raters: Sequence[int] | np.ndarray | None = None,
        uid: Sequence[Any] | np.ndarray | None = None,
        bbox: np.ndarray | None = None,
        meta: dict[str, Any] | None = None,
        images_all: Sequence[str] | None = None,
        image_meta: dict[str, dict[str, Any]] | None = None,
        source: str = "",
    ) -> PointAnnotations:
        """Build a container, canonicalising labels and filling missing columns.

        A missing ``label`` means ``"mitotic figure"``; ``is_mitosis`` and ``atypical`` default
        to what the (raw) label says; ``score`` to NaN; ``agreement`` to 1; ``n_raters`` to 1;
        ``uid`` to the row number; a scalar ``image`` is broadcast.

        >>> a = PointAnnotations.from_columns(image="img.png", x_px=[1, 2], y_px=[3, 4],
        ...                                   label=["Mitose", "Hard negative"])
        >>> a.label.tolist(), a.is_mitosis.tolist()
        (['mitotic figure', 'non-mitotic figure'], [True, False])
        """
        x = np.asarray(x_px, dtype=np.float64).reshape(-1)
        n = len(x)
        if isinstance(image, (str, os.PathLike)):
            images = str_array([str(image)] * n)
        else:
            images = _as_obj(image)
        if label is None:
            raw = [MITOTIC] * n
        elif isinstance(label, str):
            raw = [label] * n
        else:
            raw = list(label)
        canon = [canonical_label(v) for v in raw]
        labels = str_array([c[0] for c in canon])
        mit = np.array([c[1] for c in canon], dtype=bool)
        aty = np.array([c[2] for c in canon], dtype=np.float64).reshape(-1)
        if is_mitosis is not None:
            mit = np.asarray(is_mitosis, dtype=bool).reshape(-1)
        if atypical is not None:
            aty = np.asarray(atypical, dtype=np.float64).reshape(-1)
        nan = np.full(n, np.nan)
        return cls(
            image=images,
            x_px=x,
            y_px=y_px,
            label=labels,
            is_mitosis=mit,
            score=nan.copy() if score is None else score,
            atypical=aty,
            agreement=np.ones(n) if agreement is None else agreement,
            n_raters=np.ones(n, dtype=np.int64) if n_raters is None else n_raters,
            uid=str_array(range(n)) if uid is None else str_array(uid),
            bbox=bbox,
            meta=dict(meta or {}),
            images_all=None if images_all is None else [str(i) for i in images_all],
            image_meta=dict(image_meta or {}),
            source=source,
        )

    @classmethod
    def empty(
        cls, *, images_all: Sequence[str] | None = None, source: str = ""
    ) -> PointAnnotations:
        """A container with no rows (optionally listing the images it covers)."""
        return cls.from_columns(
            image=str_array([]), x_px=[], y_px=[], images_all=images_all, source=source
        )

    # -- container protocol -----------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.x_px)

    def __repr__(self) -> str:
        return (
            f"PointAnnotations(n={len(self)}, mitoses={int(self.is_mitosis.sum())}, "
            f"images={len(self.images())}, source={self.source!r})"
        )

    def filter(self, keep: np.ndarray | Sequence[int] | Sequence[bool]) -> PointAnnotations:
        """Return the rows selected by a boolean mask or an index array (image list kept)."""
        keep = np.asarray(keep)
        idx = np.flatnonzero(keep) if keep.dtype == bool else keep.astype(np.int64)
        return replace(
            self,
            image=self.image[idx],
            x_px=self.x_px[idx],
            y_px=self.y_px[idx],
            label=self.label[idx],
            is_mitosis=self.is_mitosis[idx],
            score=self.score[idx],
            atypical=self.atypical[idx],
            agreement=self.agreement[idx],
            n_raters=self.n_raters[idx],
            uid=self.uid[idx],
            bbox=None if self.bbox is None else self.bbox[idx],
            meta={k: v[idx] for k, v in self.meta.items()},
            images_all=None if self.images_all is None else list(self.images_all),
            image_meta={k: dict(v) for k, v in self.image_meta.items()},
        )

    def copy(self) -> PointAnnotations:
        """A deep copy of all columns."""
        return self.filter(np.arange(len(self)))

    @staticmethod
    def cat(items: Sequence[PointAnnotations]) -> PointAnnotations:
        """Concatenate containers; meta columns missing in some become ``None``/NaN there."""
        items = [a for a in items if a is not None]
        if not items:
            return PointAnnotations.empty()
        keys: list[str] = []
        for a in items:
            keys += [k for k in a.meta if k not in keys]
        meta = {}
        for k in keys:
            parts = []
            for a in items:
                if k in a.meta:
                    parts.append(a.meta[k])
                else:
                    parts.append(np.full(len(a), None, dtype=object))
            kinds = {p.dtype.kind for p in parts}
            meta[k] = np.concatenate([p.astype(object) for p in parts] if len(kinds) > 1 else parts)
        if all(a.bbox is None for a in items):
            bbox = None
        else:
            bbox = np.concatenate(
                [a.bbox if a.bbox is not None else np.full((len(a), 4), np.nan) for a in items]
            )
        images_all: list[str] | None = None
        if any(a.images_all is not None for a in items):
            images_all = []
            seen: set[str] = set()
            for a in items:
                for name in a.images():
                    if name not in seen:
                        seen.add(name)
                        images_all.append(name)
        image_meta: dict[str, dict[str, Any]] = {}
        for a in items:
            for k, v in a.image_meta.items():
                image_meta.setdefault(k, {}).update(v)
        sources = list(dict.fromkeys(a.source for a in items if a.source))
        return PointAnnotations(
            image=np.concatenate([a.image for a in items]),
            x_px=np.concatenate([a.x_px for a in items]),
            y_px=np.concatenate([a.y_px for a in items]),
            label=np.concatenate([a.label for a in items]),
            is_mitosis=np.concatenate([a.is_mitosis for a in items]),
            score=np.concatenate([a.score for a in items]),
            atypical=np.concatenate([a.atypical for a in items]),
            agreement=np.concatenate([a.agreement for a in items]),
            n_raters=np.concatenate([a.n_raters for a in items]),
            uid=np.concatenate([a.uid for a in items]),
            bbox=bbox,
            meta=meta,
            images_all=images_all,
            image_meta=image_meta,
            source="+".join(sources),
        )

    # -- queries ----------------------------------------------------------------------------
    def images(self) -> list[str]:
        """All images: ``images_all`` when known (including unlabelled ones), else the images
        that have rows, in order of first appearance."""
        if self.images_all is not None:
            return list(self.images_all)
        return list(dict.fromkeys(self.image.tolist()))

    def for_image(self, name: str) -> PointAnnotations:
        """Rows of one image (empty when the image has none); ``images_all`` becomes ``[name]``."""
        sub = self.filter(self.image == str(name))
        sub.images_all = [str(name)]
        sub.image_meta = {str(name): dict(self.image_meta.get(str(name), {}))}
        return sub

    def for_images(self, names: Iterable[str]) -> PointAnnotations:
        """Rows of several images; ``images_all`` becomes ``names`` (in the given order)."""
        names = [str(n) for n in names]
        sub = self.filter(np.isin(self.image.astype(str), names))
        sub.images_all = names
        sub.image_meta = {n: dict(self.image_meta[n]) for n in names if n in self.image_meta}
        return sub

    def mitoses(self) -> PointAnnotations:
        """Only the mitotic figures."""
        return self.filter(self.is_mitosis)

    def points(self) -> np.ndarray:
        """``(N, 2)`` float array of ``x_px, y_px``."""
        return np.stack([self.x_px, self.y_px], axis=1)

    def to_pandas(self) -> Any:
        """One row per annotation as a :class:`pandas.DataFrame` (meta columns appended)."""
        import pandas as pd

        data: dict[str, Any] = {name: getattr(self, name) for name in self._ROW_FIELDS}
        if self.bbox is not None:
            for i, name in enumerate(("bbox_x0", "bbox_y0", "bbox_x1", "bbox_y1")):
                data[name] = self.bbox[:, i]
        for k, v in self.meta.items():
            if k not in data:
                data[k] = v
        return pd.DataFrame(data)


def _as_obj(values: Any) -> np.ndarray:
    arr = np.asarray(values, dtype=object).reshape(-1)
    return arr


# -- shared reader helpers -------------------------------------------------------------------
def polygon_centroid(ring: np.ndarray) -> tuple[float, float]:
    """Area centroid of a polygon ring ``(K, 2)`` (closed or not); vertex mean if degenerate."""
    ring = np.asarray(ring, dtype=np.float64).reshape(-1, 2)
    if len(ring) > 1 and np.allclose(ring[0], ring[-1]):
        ring = ring[:-1]
    if len(ring) < 3:
        m = ring.mean(axis=0)
        return float(m[0]), float(m[1])
    x, y = ring[:, 0], ring[:, 1]
    x0, y0 = x.mean(), y.mean()  # shift for numerical stability with large coordinates
    xs, ys = x - x0, y - y0
    xn, yn = np.roll(xs, -1), np.roll(ys, -1)
    cross = xs * yn - xn * ys
    area = cross.sum() / 2.0
    if abs(area) < 1e-12:
        return float(x0), float(y0)
    cx = ((xs + xn) * cross).sum() / (6.0 * area)
    cy = ((ys + yn) * cross).sum() / (6.0 * area)
    return float(cx + x0), float(cy + y0)


def check_file(path: str | os.PathLike[str], what: str) -> Path:
    p = Path(path)
    if not p.exists():
        raise InvalidInputError(f"{what} file not found: {p}")
    if p.is_dir():
        raise InvalidInputError(f"{p} is a directory; give the {what} file")
    return p


def load_json(path: Path, what: str) -> Any:
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except UnicodeDecodeError:
        raise InvalidInputError(f"{path} is not a UTF-8 text file; expected {what} JSON") from None
    except json.JSONDecodeError as exc:
        raise InvalidInputError(
            f"{path} is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}); "
            f"expected {what}"
        ) from None
    except OSError as exc:
        raise InvalidInputError(f"cannot read {path}: {exc.strerror}") from None


def probability(value: float, name: str) -> float:
    """``value`` as a probability in [0, 1]; an error naming ``name`` otherwise."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise InvalidInputError(f"{name} must be a probability in [0, 1], got {value!r}") from None
    if not (0.0 <= v <= 1.0) or math.isnan(v):
        raise InvalidInputError(f"{name} must be a probability in [0, 1], got {value!r}")
    return v
