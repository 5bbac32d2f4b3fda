"""Core data types shared by every stage.

Coordinates are **level-0 pixels** of the slide unless a name says otherwise; names carry
units (``x_px``, ``area_um2``, ``radius_um``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np


@dataclass(frozen=True)
class SlideInfo:
    """Metadata of an opened slide or region image."""

    path: Path
    backend: str
    width: int
    height: int
    level_dimensions: tuple[tuple[int, int], ...]
    level_downsamples: tuple[float, ...]
    mpp: float
    mpp_source: str  # "metadata" | "user" | ...
    vendor: str | None = None
    objective_power: float | None = None
    format: str | None = None

    @property
    def levels(self) -> int:
        return len(self.level_dimensions)

    @property
    def area_mm2(self) -> float:
        return self.width * self.height * (self.mpp / 1000.0) ** 2

    def level_mpp(self, level: int) -> float:
        return self.mpp * self.level_downsamples[level]

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "backend": self.backend,
            "format": self.format,
            "vendor": self.vendor,
            "width": self.width,
            "height": self.height,
            "levels": self.levels,
            "level_dimensions": [list(d) for d in self.level_dimensions],
            "level_downsamples": list(self.level_downsamples),
            "mpp": self.mpp,
            "mpp_source": self.mpp_source,
            "objective_power": self.objective_power,
        }


@dataclass(frozen=True)
class Region:
    """An axis-aligned rectangle in level-0 pixels."""

    x: int
    y: int
    width: int
    height: int

    @property
    def x1(self) -> int:
        return self.x + self.width

    @property
    def y1(self) -> int:
        return self.y + self.height


@dataclass(frozen=True)
class Tile:
    """One tile of a tiling plan.

    ``x, y, width, height`` are the tile in level-0 pixels (including the overlap margin);
    ``core`` is the part of the tile this tile *owns* (non-overlapping across the plan), so an
    object whose centre falls in ``core`` is reported by this tile only.
    """

    index: int
    x: int
    y: int
    width: int
    height: int
    core: Region
    tissue_fraction: float = 1.0

    @property
    def region(self) -> Region:
        return Region(self.x, self.y, self.width, self.height)


@dataclass
class Candidates:
    """A column container of candidate objects (like SAM's ``MaskData``).

    All arrays have the same length ``N``. Positions are level-0 pixels.

    Attributes
    ----------
    x_px, y_px : float64 (N,)
        Centroid.
    bbox : int64 (N, 4)
        ``x0, y0, x1, y1`` (exclusive) in level-0 pixels.
    area_um2 : float64 (N,)
    score : float32 (N,)
        Proposer quality score (higher is better; e.g. SAM predicted IoU).
    masks : list of bool arrays or None
        Per-candidate binary mask cropped to ``bbox`` (shape ``(y1-y0, x1-x0)``), at the
        resolution given by ``mask_downsample`` relative to level 0.
    proposer : str
    """

    x_px: np.ndarray
    y_px: np.ndarray
    bbox: np.ndarray
    area_um2: np.ndarray
    score: np.ndarray
    masks: list[np.ndarray] | None = None
    proposer: str = ""
    mask_downsample: float = 1.0

    def __post_init__(self) -> None:
        self.x_px = np.asarray(self.x_px, dtype=np.float64).reshape(-1)
        self.y_px = np.asarray(self.y_px, dtype=np.float64).reshape(-1)
        self.bbox = np.asarray(self.bbox, dtype=np.int64).reshape(-1, 4)
        self.area_um2 = np.asarray(self.area_um2, dtype=np.float64).reshape(-1)
        self.score = np.asarray(self.score, dtype=np.float32).reshape(-1)
        n = len(self.x_px)
        for name in ("y_px", "bbox", "area_um2", "score"):
            if len(getattr(self, name)) != n:
                raise ValueError(
                    f"Candidates.{name} has length {len(getattr(self, name))}, expected {n}"
                )
        if self.masks is not None and len(self.masks) != n:
            raise ValueError(f"Candidates.masks has length {len(self.masks)}, expected {n}")

    def __len__(self) -> int:
        return len(self.x_px)

    @classmethod
    def empty(cls, proposer: str = "") -> Candidates:
        return cls(
            x_px=np.zeros(0),
            y_px=np.zeros(0),
            bbox=np.zeros((0, 4), dtype=np.int64),
            area_um2=np.zeros(0),
            score=np.zeros(0, dtype=np.float32),
            masks=[],
            proposer=proposer,
        )

    def filter(self, keep: np.ndarray | Sequence[int]) -> Candidates:
        """Return the subset selected by a boolean mask or an index array."""
        keep = np.asarray(keep)
        idx = np.flatnonzero(keep) if keep.dtype == bool else keep.astype(np.int64)
        masks = None if self.masks is None else [self.masks[i] for i in idx]
        return replace(
            self,
            x_px=self.x_px[idx],
            y_px=self.y_px[idx],
            bbox=self.bbox[idx],
            area_um2=self.area_um2[idx],
            score=self.score[idx],
            masks=masks,
        )

    def translate(self, dx: float, dy: float) -> Candidates:
        """Shift all positions by ``(dx, dy)`` level-0 pixels (e.g. tile -> slide)."""
        off = np.array([dx, dy, dx, dy], dtype=np.float64)
        return replace(
            self,
            x_px=self.x_px + dx,
            y_px=self.y_px + dy,
            bbox=np.round(self.bbox + off).astype(np.int64),
        )

    @staticmethod
    def cat(items: Sequence[Candidates]) -> Candidates:
        """Concatenate several containers (same proposer and mask resolution)."""
        items = [c for c in items if c is not None]
        if not items:
            return Candidates.empty()
        has_masks = all(c.masks is not None for c in items)
        return Candidates(
            x_px=np.concatenate([c.x_px for c in items]),
            y_px=np.concatenate([c.y_px for c in items]),
            bbox=np.concatenate([c.bbox for c in items]).reshape(-1, 4),
            area_um2=np.concatenate([c.area_um2 for c in items]),
            score=np.concatenate([c.score for c in items]),
            masks=[m for c in items for m in c.masks] if has_masks else None,  # type: ignore[union-attr]
            proposer=items[0].proposer,
            mask_downsample=items[0].mask_downsample,
        )


@dataclass
class Detections:
    """Classified candidates: a column container, one row per candidate kept.

    ``mf_probability`` is the ensemble probability of being a mitotic figure,
    ``atypical_probability`` the probability that the figure is atypical (NaN if the model has
    no atypical head). ``contours`` are optional level-0 polygons (list of (K, 2) float arrays).
    """

    x_px: np.ndarray
    y_px: np.ndarray
    mf_probability: np.ndarray
    atypical_probability: np.ndarray
    area_um2: np.ndarray
    contours: list[np.ndarray] | None = None

    def __post_init__(self) -> None:
        self.x_px = np.asarray(self.x_px, dtype=np.float64).reshape(-1)
        self.y_px = np.asarray(self.y_px, dtype=np.float64).reshape(-1)
        self.mf_probability = np.asarray(self.mf_probability, dtype=np.float64).reshape(-1)
        self.atypical_probability = np.asarray(self.atypical_probability, dtype=np.float64).reshape(
            -1
        )
        self.area_um2 = np.asarray(self.area_um2, dtype=np.float64).reshape(-1)
        n = len(self.x_px)
        for f in fields(self):
            v = getattr(self, f.name)
            if v is not None and len(v) != n:
                raise ValueError(f"Detections.{f.name} has length {len(v)}, expected {n}")

    def __len__(self) -> int:
        return len(self.x_px)

    @classmethod
    def empty(cls) -> Detections:
        z = np.zeros(0)
        return cls(z, z, z, z, z, contours=[])

    def filter(self, keep: np.ndarray | Sequence[int]) -> Detections:
        keep = np.asarray(keep)
        idx = np.flatnonzero(keep) if keep.dtype == bool else keep.astype(np.int64)
        return Detections(
            x_px=self.x_px[idx],
            y_px=self.y_px[idx],
            mf_probability=self.mf_probability[idx],
            atypical_probability=self.atypical_probability[idx],
            area_um2=self.area_um2[idx],
            contours=None if self.contours is None else [self.contours[i] for i in idx],
        )

    @staticmethod
    def cat(items: Sequence[Detections]) -> Detections:
        items = list(items)
        if not items:
            return Detections.empty()
        has_c = all(d.contours is not None for d in items)
        return Detections(
            x_px=np.concatenate([d.x_px for d in items]),
            y_px=np.concatenate([d.y_px for d in items]),
            mf_probability=np.concatenate([d.mf_probability for d in items]),
            atypical_probability=np.concatenate([d.atypical_probability for d in items]),
            area_um2=np.concatenate([d.area_um2 for d in items]),
            contours=[c for d in items for c in d.contours] if has_c else None,  # type: ignore[union-attr]
        )


@dataclass(frozen=True)
class Hotspot:
    """The circular field with the most mitoses."""

    count: int
    center_px: tuple[float, float]
    radius_um: float
    area_mm2: float
    field_fits: bool = True  # False when the tissue/region is smaller than the field
    note: str = ""


@dataclass(frozen=True)
class SlideCounts:
    """The counts of one slide (mitoses at the decision threshold)."""

    n_mitoses: int
    mitoses_per_mm2: float | None  # None without tissue
    atypical_ratio: float | None  # None when the model has no atypical head (or no mitoses)
    atypical_threshold: float
    n_atypical: int


@dataclass(frozen=True)
class DetectStats:
    """How a slide was run: stage counts, the resolved options, notes and stage times."""

    n_candidates: int  # classified
    n_proposed: int
    n_screened_out: int
    cascade: bool
    classified_in_workers: bool
    propose_mpp: float
    n_tiles: int
    floor: float
    work_mpp: float
    tile_um: float
    overlap_um: float
    notes: list[str] = field(default_factory=list)
    timing: dict[str, float] = field(default_factory=dict)  # wall seconds per phase of the run
    no_tissue: bool = False  # the slide has no tissue: an empty result (NoTissueError.NOTE)
    #: seconds of each per-tile stage (read, propose, screen, classify, contours) summed over
    #: tiles, measured in the process that ran it (so over ``workers`` processes)
    stage_s: dict[str, float] = field(default_factory=dict)
    workers: int = 1  # tile worker processes


@dataclass
class SlideResult:
    """Everything detection produces for one slide.

    ``counts`` (mitoses, per mm², atypical) and ``stats`` (stage counts, resolved options,
    notes, stage times) are the typed record of the run.
    """

    info: SlideInfo
    detections: Detections  # all scored candidates above the floor
    threshold: float
    tissue_area_mm2: float
    hotspot_2mm2: Hotspot | None = None
    hotspot_10hpf: Hotspot | None = None
    model: str = ""
    proposer: str = ""
    seconds: float = 0.0
    counts: SlideCounts | None = None
    stats: DetectStats | None = None
    #: the dedicated model that made the atypical calls (its description); "" when the
    #: classifier's own atypical head made them
    atypical_model: str = ""

    @property
    def mitoses(self) -> Detections:
        return self.detections.filter(self.detections.mf_probability >= self.threshold)
