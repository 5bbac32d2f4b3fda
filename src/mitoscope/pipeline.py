"""Slide-level detection: the one place the stages are composed.

``detect_slide`` runs, for one slide or region image::

    open_slide (mpp override) -> detect_tissue -> plan_tiles (um) ->
    per tile: read at the classifier's pixel size -> propose -> keep candidates whose
    level-0 centroid lies in the tile's core -> classify (batched) -> Detections (level 0,
    contours from the masks) -> merge once -> counts (hotspot, per mm², atypical ratio)

and, with ``out_dir``, writes the per-slide outputs atomically (GeoJSON, MIDOG json, CSV,
summary json, HTML report; the run's SQLite database through ``db``).

Only the detections (small) are kept across tiles: memory does not grow with the slide beyond
them. With ``workers > 1`` tile reading and proposal run in a process pool (each worker opens
the slide itself); classification stays batched in the main process.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import InvalidInputError
from .types import Candidates, Detections, Hotspot, SlideResult, Tile
from .units import validate_mpp

if TYPE_CHECKING:
    from .slide.reader import SlideReader
    from .slide.tissue import TissueMask

#: note stored in ``SlideResult.extra["notes"]`` when a slide has no tissue
NO_TISSUE_NOTE = "no tissue found: nothing to detect (empty result)"


@dataclass(frozen=True)
class DetectConfig:
    """Options of :func:`detect_slide` (sizes in micrometres).

    Attributes
    ----------
    tile_um, overlap_um : float
        Tile size and the overlap shared by neighbouring tiles (256 / 32 um = 1024 / 128 px at
        0.25 um/px, OMG-Net).
    work_mpp : float, optional
        Pixel size tiles are read at; default: the classifier's ``input_mpp``.
    threshold : float, optional
        Decision threshold on the MF probability; default: the classifier's validated one.
    atypical_threshold : float, optional
        Threshold on the atypical probability; default: the classifier's.
    floor : float
        Candidates with an MF probability below this are dropped (keeps outputs small); all
        others are kept for the MIDOG json / AP.
    batch_size : int
        Classifier batch size.
    workers : int
        Processes for tile reading + proposal (1 = in process).
    merge_radius_um : float
        Detections closer than this (from neighbouring tiles) are one object.
    thumb_mpp : float
        Pixel size of the tissue-detection thumbnail.
    contour_tolerance_px : float
        Polygon simplification tolerance in work pixels.
    hotspot_area_mm2, hpf10_area_mm2 : float
        Field areas of the two hotspots (2 mm², Fick et al./CAP; 10 HPF = 2.37 mm², SlideRunner).
    report : bool
        Write the HTML report with ``out_dir``.
    gallery_size : int
        Top detections shown (with Grad-CAM) in the report.
    mpp_tolerance : float
        When the slide's pixel size is within this relative distance of ``work_mpp`` (e.g.
        0.2527 vs 0.25), tiles are read natively instead of resampled.
    cascade : bool, optional
        Screen candidates with the tiny cascade model (:mod:`mitoscope.classify.screen`) before
        the classifier. Default (``None``): on when the classifier is the bundled default model.
    propose_mpp : float, optional
        Pixel size the proposer works at (the tile is downsampled from ``work_mpp``); default:
        the screen's pixel size (0.5 um/px) with the cascade, else ``work_mpp``.
    screen_model : str, optional
        Path of the cascade screen checkpoint; default: the bundled ``mitoscope_screen.pt``.
    """

    tile_um: float = 256.0
    overlap_um: float = 32.0
    work_mpp: float | None = None
    threshold: float | None = None
    atypical_threshold: float | None = None
    floor: float = 0.05
    batch_size: int = 256
    workers: int = 1
    merge_radius_um: float = 4.0
    thumb_mpp: float = 8.0
    contour_tolerance_px: float = 0.75
    hotspot_area_mm2: float = 2.0
    hpf10_area_mm2: float = 2.37
    report: bool = True
    gallery_size: int = 16
    mpp_tolerance: float = 0.03
    cascade: bool | None = None
    propose_mpp: float | None = None
    screen_model: str | None = None

    def __post_init__(self) -> None:
        if self.tile_um <= 0 or self.overlap_um < 0 or self.overlap_um >= self.tile_um:
            raise InvalidInputError(
                f"tile_um must be positive and larger than overlap_um (got {self.tile_um}, "
                f"{self.overlap_um})"
            )
        for name in ("threshold", "atypical_threshold", "floor"):
            v = getattr(self, name)
            if v is not None and not (0.0 <= float(v) <= 1.0):
                raise InvalidInputError(f"--{name.replace('_', '-')} must be in [0, 1], got {v}")
        if int(self.batch_size) < 1:
            raise InvalidInputError(f"--batch-size must be at least 1, got {self.batch_size}")
        if int(self.workers) < 1:
            raise InvalidInputError(f"--workers must be at least 1, got {self.workers}")
        if self.propose_mpp is not None and not (0.05 <= float(self.propose_mpp) <= 10.0):
            raise InvalidInputError(
                f"--propose-mpp must be between 0.05 and 10 um/px, got {self.propose_mpp}"
            )


@dataclass
class TileWork:
    """What the per-tile step hands to classification: the tile image and its candidates.

    ``candidates`` are in *image* pixels of ``image`` (work resolution), already restricted to
    the tile's core.
    """

    tile: Tile
    image: np.ndarray
    candidates: Candidates
    n_proposed: int = 0
    n_screened_out: int = 0
    #: the tile's finished detections when a worker already classified its candidates (the
    #: image and candidates are then dropped; ``n_classified`` keeps their number)
    detections: Detections | None = None
    n_classified: int = 0


@dataclass(frozen=True)
class DetectionParams:
    """How classified candidates become detections (:func:`tile_detections`' keywords)."""

    slide_mpp: float
    work_mpp: float
    floor: float
    contour_min_prob: float = 0.0
    tolerance_px: float = 0.75


@dataclass
class _Run:
    """Internal state of one slide run (what the report needs besides the result)."""

    result: SlideResult
    tissue: TissueMask | None
    notes: list[str] = field(default_factory=list)


# ------------------------------------------------------------------------------ per tile (pure)
def process_tile(
    reader: SlideReader,
    tile: Tile,
    *,
    proposer: Any,
    work_mpp: float,
    propose_mpp: float | None = None,
    screen: Any = None,
    classifier: Any = None,
    mf_threshold: float = 0.5,
    params: DetectionParams | None = None,
) -> TileWork:
    """Read ``tile`` at ``work_mpp``, propose, screen; keep candidates centred in the core.

    With ``propose_mpp`` coarser than ``work_mpp`` the proposer (and the ``screen``, a
    :class:`~mitoscope.classify.screen.Screen` at that pixel size) see a downsampled copy of
    the tile; the kept candidates are mapped back to work pixels (their masks stay coarse).
    With a ``classifier`` and ``params`` (worker processes) the candidates are scored and
    turned into the tile's detections here too, and the image and candidates are dropped, so
    only the detections travel back. A pure top-level function (picklable arguments) so it can
    run in worker processes.
    """
    image, small, fx, fy, cands, n = propose_tile(
        reader, tile, proposer=proposer, work_mpp=work_mpp, propose_mpp=propose_mpp
    )
    dropped = 0
    if screen is not None and len(cands):
        from .classify.patches import extract_patches

        patches, masks = extract_patches(
            small, cands.x_px, cands.y_px, int(screen.patch_size_px), candidates=cands
        )
        keep = screen.keep(patches, masks)
        dropped = int(len(keep) - keep.sum())
        cands = cands.filter(keep)
    if (fx, fy) != (1.0, 1.0) and len(cands):
        cands = _upscale_candidates(cands, fx, fy, image.shape[:2])
    work = TileWork(tile=tile, image=image, candidates=cands, n_proposed=n, n_screened_out=dropped)
    if classifier is None or params is None:
        return work
    dets = Detections.empty()
    if len(cands):
        mf, atyp = classifier.predict_candidates(
            image, cands, **_tta_kwargs(classifier, mf_threshold)
        )
        dets = tile_detections(work, mf, atyp, **vars(params))
    work.detections, work.n_classified = dets, len(cands)
    work.image, work.candidates = np.zeros((0, 0, 3), np.uint8), Candidates.empty()
    return work


def propose_tile(
    reader: SlideReader,
    tile: Tile,
    *,
    proposer: Any,
    work_mpp: float,
    propose_mpp: float | None = None,
) -> tuple[np.ndarray, np.ndarray, float, float, Candidates, int]:
    """The proposal half of :func:`process_tile` (also used to train and tune the screen).

    Returns the tile at ``work_mpp``, the image proposed on (the same array, or a copy
    downsampled to ~``propose_mpp``), work px per proposal px along x and y, the candidates
    centred in the tile's core (in proposal px), and the number proposed before that cut.
    """
    info = reader.info
    image = reader.read_region_mpp(tile.region, work_mpp)
    small, fx, fy = _downsample(image, work_mpp, propose_mpp)
    pmpp = work_mpp * (fx + fy) / 2.0
    cands = proposer.propose(small, mpp=pmpp)
    n = len(cands)
    if n:
        sx, sy = fx * work_mpp / info.mpp, fy * work_mpp / info.mpp
        x0 = (cands.x_px + 0.5) * sx - 0.5 + tile.x
        y0 = (cands.y_px + 0.5) * sy - 0.5 + tile.y
        core = tile.core
        inside = (x0 >= core.x) & (x0 < core.x1) & (y0 >= core.y) & (y0 < core.y1)
        cands = cands.filter(inside)
    return image, small, fx, fy, cands, n


def _downsample(
    image: np.ndarray, work_mpp: float, propose_mpp: float | None
) -> tuple[np.ndarray, float, float]:
    """``image`` resampled to ~``propose_mpp`` (box filter) and the work px per new px (x, y)."""
    if propose_mpp is None or propose_mpp <= work_mpp * 1.05:
        return image, 1.0, 1.0
    from PIL import Image

    h, w = image.shape[:2]
    f = float(propose_mpp) / float(work_mpp)
    pil = Image.fromarray(np.ascontiguousarray(image))
    k = int(round(f))
    if abs(f - k) < 0.02 and h % k == 0 and w % k == 0:
        small = np.asarray(pil.reduce(k))
    else:
        size = (max(2, int(round(w / f))), max(2, int(round(h / f))))
        small = np.asarray(pil.resize(size, Image.Resampling.BOX))
    return small, w / small.shape[1], h / small.shape[0]


def _upscale_candidates(c: Candidates, fx: float, fy: float, shape: tuple[int, int]) -> Candidates:
    """Candidates found on a downsampled image -> the full-resolution image's pixels.

    Centres and boxes are mapped; the masks stay at the proposal's pixel size
    (``mask_downsample`` records the factor): patches resize them when they are cut
    (:func:`~mitoscope.classify.patches.mask_at_bbox`) and contours are traced on them.
    """
    from dataclasses import replace as _replace

    h, w = shape
    bbox = np.empty_like(c.bbox)
    bbox[:, 0] = np.floor(c.bbox[:, 0] * fx)
    bbox[:, 2] = np.ceil(c.bbox[:, 2] * fx)
    bbox[:, 1] = np.floor(c.bbox[:, 1] * fy)
    bbox[:, 3] = np.ceil(c.bbox[:, 3] * fy)
    bbox[:, [0, 2]] = np.clip(bbox[:, [0, 2]], 0, w)
    bbox[:, [1, 3]] = np.clip(bbox[:, [1, 3]], 0, h)
    return _replace(
        c,
        x_px=(c.x_px + 0.5) * fx - 0.5,
        y_px=(c.y_px + 0.5) * fy - 0.5,
        bbox=bbox,
        mask_downsample=float(c.mask_downsample) * (fx + fy) / 2.0,
    )


_WORKER: dict[str, Any] = {}


def _worker_init(
    source: Any, mpp: float, proposer: Any, screen: Any = None, classifier: Any = None
) -> None:
    from .slide import open_slide

    if "torch" in sys.modules:  # a torch-backed screen or classifier came with the pickle
        sys.modules["torch"].set_num_threads(1)  # one process per core: no extra threads
    _WORKER["reader"] = open_slide(source, mpp=mpp) if isinstance(source, (str, Path)) else source
    _WORKER["proposer"] = proposer
    _WORKER["screen"] = screen
    _WORKER["classifier"] = classifier


def _for_workers(model: Any) -> Any:
    """The worker copy of a screen / classifier (ONNX Runtime only: workers skip torch);
    ``None`` and objects without ``for_workers`` go as they are."""
    fn = getattr(model, "for_workers", None)
    return fn() if callable(fn) else model


def _worker_tile(
    tile: Tile,
    work_mpp: float,
    propose_mpp: float | None,
    mf_threshold: float = 0.5,
    params: DetectionParams | None = None,
) -> TileWork:
    return process_tile(
        _WORKER["reader"],
        tile,
        proposer=_WORKER["proposer"],
        work_mpp=work_mpp,
        propose_mpp=propose_mpp,
        screen=_WORKER["screen"],
        classifier=_WORKER["classifier"],
        mf_threshold=mf_threshold,
        params=params,
    )


def _iter_tiles(
    reader: SlideReader,
    tiles: list[Tile],
    *,
    proposer: Any,
    work_mpp: float,
    workers: int,
    propose_mpp: float | None = None,
    screen: Any = None,
    classifier: Any = None,
    mf_threshold: float = 0.5,
    params: DetectionParams | None = None,
) -> Iterator[TileWork]:
    """Yield :class:`TileWork` in tile order; bounded prefetch so memory stays flat."""
    if workers <= 1 or len(tiles) <= 1:
        for tile in tiles:
            yield process_tile(
                reader,
                tile,
                proposer=proposer,
                work_mpp=work_mpp,
                propose_mpp=propose_mpp,
                screen=screen,
            )
        return
    import multiprocessing as mp
    from collections import deque
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    path = reader.info.path
    source: Any = path if path.exists() and reader.info.backend != "array" else reader
    ctx = mp.get_context("spawn" if os.name == "nt" else "forkserver")
    args = (work_mpp, propose_mpp, mf_threshold, params)  # _worker_tile's, after the tile
    try:
        with ProcessPoolExecutor(
            max_workers=workers,
            mp_context=ctx,
            initializer=_worker_init,
            initargs=(
                source,
                reader.info.mpp,
                proposer,
                _for_workers(screen),
                _for_workers(classifier),
            ),
        ) as pool:
            pending: deque = deque()
            it = iter(tiles)
            for tile in it:
                pending.append(pool.submit(_worker_tile, tile, *args))
                if len(pending) >= 2 * workers:
                    break
            while pending:
                work = pending.popleft().result()
                nxt = next(it, None)
                if nxt is not None:
                    pending.append(pool.submit(_worker_tile, nxt, *args))
                yield work
    except (BrokenPipeError, BrokenProcessPool) as exc:
        raise RuntimeError(
            f"a tile worker process died or could not start ({exc.__class__.__name__}). When "
            "detect_slide runs with workers > 1 from a script, call it under "
            '`if __name__ == "__main__":` (the workers import the script); a worker killed '
            "for lack of memory ends the same way: try fewer --workers"
        ) from exc


# ------------------------------------------------------------------------------ classification
def _tta_kwargs(classifier: Any, threshold: float) -> dict[str, Any]:
    """Atypical test-time augmentation only for mitoses (classifiers that have it)."""
    if int(getattr(classifier, "atypical_views", 1) or 1) > 1:
        return {"atypical_min_mf": float(threshold)}
    return {}


class _Batcher:
    """Classify candidates in batches that span tiles.

    Each tile's patches are cut as soon as it arrives (its image is then released); patches
    accumulate until ``batch_size`` and are scored with ``classifier.predict_patches``.
    Classifiers without ``predict_patches`` (fakes, custom ones) are called per tile with
    ``predict_candidates``. ``add`` and ``flush`` return ``(work, mf, atypical)`` per finished
    tile, in tile order.
    """

    def __init__(self, classifier: Any, *, batch_size: int, threshold: float = 0.5) -> None:
        self.classifier = classifier
        self.batch_size = max(1, int(batch_size))
        self.kw = _tta_kwargs(classifier, threshold)
        self.by_patches = hasattr(classifier, "predict_patches") and hasattr(
            classifier, "patch_size_px"
        )
        self._items: list[tuple[TileWork, np.ndarray, np.ndarray | None]] = []
        self._n = 0

    def add(self, work: TileWork) -> list[tuple[TileWork, np.ndarray, np.ndarray]]:
        c = work.candidates
        if not self.by_patches:
            mf, atyp = self.classifier.predict_candidates(
                work.image, c, batch_size=self.batch_size, **self.kw
            )
            return [(work, mf, atyp)]
        from .classify.patches import extract_patches

        uses_mask = bool(getattr(self.classifier, "uses_mask", True))
        patches, masks = extract_patches(
            work.image,
            c.x_px,
            c.y_px,
            int(self.classifier.patch_size_px),
            candidates=c if uses_mask else None,
        )
        work.image = np.zeros((0, 0, 3), np.uint8)  # release the tile image
        self._items.append((work, patches, masks))
        self._n += len(c)
        return self.flush() if self._n >= self.batch_size else []

    def flush(self) -> list[tuple[TileWork, np.ndarray, np.ndarray]]:
        if not self._items:
            return []
        items, self._items, self._n = self._items, [], 0
        patches = np.concatenate([p for _, p, _ in items])
        masks = None
        if all(m is not None for _, _, m in items):
            masks = np.concatenate([m for _, _, m in items])  # type: ignore[misc]
        mf, atyp = self.classifier.predict_patches(
            patches, masks, batch_size=self.batch_size, **self.kw
        )
        out, start = [], 0
        for work, p, _ in items:
            end = start + len(p)
            out.append((work, mf[start:end], atyp[start:end]))
            start = end
        return out


# ------------------------------------------------------------------------------ conversions
def tile_detections(
    work: TileWork,
    mf_prob: np.ndarray,
    atyp_prob: np.ndarray,
    *,
    slide_mpp: float,
    work_mpp: float,
    floor: float,
    contour_min_prob: float = 0.0,
    tolerance_px: float = 0.75,
) -> Detections:
    """Candidates of one tile (image px) with probabilities -> level-0 :class:`Detections`.

    Candidates below ``floor`` are dropped; contours (level-0 polygons from the masks) are
    traced for those with ``mf_probability >= contour_min_prob`` (the others get ``None``:
    only mitoses are drawn as polygons).
    """
    mf_prob = np.asarray(mf_prob, dtype=np.float64).reshape(-1)
    atyp_prob = np.asarray(atyp_prob, dtype=np.float64).reshape(-1)
    keep = np.flatnonzero(mf_prob >= floor)
    if not len(keep):
        return Detections.empty()
    c = work.candidates.filter(keep)
    scale = work_mpp / slide_mpp
    x0, y0 = work.tile.x, work.tile.y
    contours = []
    probs = mf_prob[keep]
    for k in range(len(c)):
        if probs[k] < contour_min_prob:
            contours.append(None)
            continue
        m = None if c.masks is None else c.masks[k]
        contours.append(
            mask_contour(
                m,
                c.bbox[k],
                scale=scale,
                x0=x0,
                y0=y0,
                tolerance_px=tolerance_px,
            )
        )
    return Detections(
        x_px=(c.x_px + 0.5) * scale - 0.5 + x0,
        y_px=(c.y_px + 0.5) * scale - 0.5 + y0,
        mf_probability=mf_prob[keep],
        atypical_probability=atyp_prob[keep],
        area_um2=c.area_um2,
        contours=contours,
    )


def mask_contour(
    mask: np.ndarray | None,
    bbox: np.ndarray,
    *,
    scale: float,
    x0: float,
    y0: float,
    tolerance_px: float = 0.75,
) -> np.ndarray:
    """Outer contour of a bbox-cropped mask as a level-0 ``(K, 2)`` polygon of ``(x, y)``.

    ``scale`` is level-0 pixels per ``bbox`` pixel, ``(x0, y0)`` the level-0 origin of the
    image the ``bbox`` refers to. A mask coarser than its bbox (``Candidates.mask_downsample``
    > 1) is traced at its own pixel size (``tolerance_px`` is then in those pixels): it holds
    no more detail. A missing or empty mask gives the bounding box.
    """
    from skimage.measure import find_contours

    bx0, by0, bx1, by1 = (float(v) for v in bbox)
    ring = None
    if mask is not None and np.asarray(mask).any():
        m = np.asarray(mask)
        sy = max(by1 - by0, 1.0) / m.shape[0]  # bbox px per mask px
        sx = max(bx1 - bx0, 1.0) / m.shape[1]
        padded = np.pad(np.asarray(m, dtype=np.float32), 1)
        found = find_contours(padded, 0.5)
        if found:
            c = _simplify(max(found, key=len) - 1.0, tolerance_px)  # (row, col) in mask px
            if len(c) >= 4:
                ring = np.column_stack(
                    [(c[:, 1] + 0.5) * sx - 0.5 + bx0, (c[:, 0] + 0.5) * sy - 0.5 + by0]
                )
    if ring is None:
        ring = np.array(
            [[bx0, by0], [bx1 - 1, by0], [bx1 - 1, by1 - 1], [bx0, by1 - 1], [bx0, by0]],
            dtype=np.float64,
        )
    return np.column_stack(
        [(ring[:, 0] + 0.5) * scale - 0.5 + x0, (ring[:, 1] + 0.5) * scale - 0.5 + y0]
    )


def _simplify(ring: np.ndarray, tolerance: float) -> np.ndarray:
    """Drop ring vertices closer than ``tolerance`` to the line through their neighbours.

    One vectorised pass (not Douglas-Peucker): removes the collinear staircase points that
    marching squares produces on straight and diagonal edges; the ring stays closed.
    """
    if len(ring) <= 8 or tolerance <= 0:
        return ring
    closed = np.allclose(ring[0], ring[-1])
    pts = ring[:-1] if closed else ring
    prev = np.roll(pts, 1, axis=0)
    nxt = np.roll(pts, -1, axis=0)
    d = nxt - prev
    cross = np.abs((pts[:, 0] - prev[:, 0]) * d[:, 1] - (pts[:, 1] - prev[:, 1]) * d[:, 0])
    dist = cross / np.maximum(np.hypot(d[:, 0], d[:, 1]), 1e-9)
    keep = dist > tolerance * 0.5
    if keep.sum() < 4:
        return ring
    pts = pts[keep]
    return np.concatenate([pts, pts[:1]])


def merge_detections(dets: Detections, *, mpp: float, radius_um: float) -> Detections:
    """Remove duplicates (centroids within ``radius_um``), keeping the higher MF probability."""
    if len(dets) <= 1:
        return dets
    from .candidates.merge import nms_indices

    c = Candidates(
        x_px=dets.x_px,
        y_px=dets.y_px,
        bbox=np.zeros((len(dets), 4)),
        area_um2=dets.area_um2,
        score=dets.mf_probability,
    )
    keep = nms_indices(c, mpp=mpp, radius_um=radius_um, iou_threshold=1.0)
    return dets.filter(np.sort(keep))


# ------------------------------------------------------------------------------ tissue
def _tissue_for(reader: SlideReader, cfg: DetectConfig) -> tuple[TissueMask, float, list[str]]:
    """Tissue mask, tissue area (mm²) and notes.

    Region images no larger than one tile count as tissue everywhere (a crop is chosen by a
    person; thumbnail-based tissue detection is meaningless at that size) unless they are
    blank glass.
    """
    from .slide import detect_tissue
    from .slide.tissue import TissueMask

    info = reader.info
    w_um, h_um = info.width * info.mpp, info.height * info.mpp
    if w_um <= cfg.tile_um and h_um <= cfg.tile_um:
        ds = max(1.0, max(info.width, info.height) / 256.0)
        mw = max(1, int(math.ceil(info.width / ds)))
        mh = max(1, int(math.ceil(info.height / ds)))
        blank = _is_blank(reader.get_thumbnail(512))
        mask = np.full((mh, mw), not blank, dtype=bool)
        tissue = TissueMask(mask=mask, downsample=info.width / mw, mpp=info.mpp * info.width / mw)
        area = 0.0 if blank else info.area_mm2
        notes = [] if blank else ["region smaller than one tile: the whole image counts as tissue"]
        return tissue, area, notes
    tissue = detect_tissue(reader, thumb_mpp=cfg.thumb_mpp)
    return tissue, tissue.area_mm2, []


def _is_blank(rgb: np.ndarray) -> bool:
    """Whether an image is glass only (under 0.5 % of pixels stained or dark)."""
    from skimage.color import rgb2hsv

    hsv = rgb2hsv(rgb[..., :3])
    stained = (hsv[..., 1] > 0.08) | (hsv[..., 2] < 0.7)
    return float(stained.mean()) < 0.005


# ------------------------------------------------------------------------------ the pipeline
def detect_slide(
    path_or_reader: str | Path | SlideReader,
    *,
    proposer: Any = None,
    classifier: Any = None,
    config: DetectConfig | None = None,
    out_dir: str | Path | None = None,
    db: Any = None,
    progress: bool = True,
    mpp: float | None = None,
    stem: str | None = None,
    screen: Any = None,
) -> SlideResult:
    """Detect mitotic figures in one slide or region image.

    Parameters
    ----------
    path_or_reader : path or SlideReader
        A slide file / region image, or an open reader (e.g. :class:`~mitoscope.slide.ArraySlide`).
    proposer : Proposer, optional
        Stage 1; default ``get_proposer("classical")``.
    classifier : Classifier, optional
        Stage 2 (``predict_candidates``, ``input_mpp``, ``threshold``, ...); default: the
        bundled model (``mitoscope.classify.load_classifier()``).
    config : DetectConfig, optional
    out_dir : path, optional
        Write ``<stem>.geojson``, ``.midog.json``, ``.csv``, ``.summary.json`` and
        ``.report.html`` here (atomically; nothing is written when detection fails).
    db : SlideRunnerDB, optional
        Append the slide and its mitoses to this database (with ``out_dir``).
    progress : bool
        Show a progress bar over tiles (stderr).
    mpp : float, optional
        Level-0 pixel size override (um/px), for files without one.
    stem : str, optional
        Output file stem; default: the input's file name without extension.
    screen : Screen or path, optional
        Cascade stage 1 (:mod:`mitoscope.classify.screen`); default: the bundled screen when
        the cascade is on (``config.cascade``; by default on with the bundled classifier).

    Returns
    -------
    SlideResult

    Examples
    --------
    >>> result = detect_slide("slide.svs", out_dir="results")  # doctest: +SKIP
    >>> len(result.mitoses), result.hotspot_2mm2.count  # doctest: +SKIP
    """
    from .slide import open_slide

    cfg = config or DetectConfig()
    if proposer is None or isinstance(proposer, str):
        from .candidates import get_proposer

        proposer = get_proposer(proposer or "classical")
    use_cascade = cfg.cascade
    if use_cascade is None:
        use_cascade = classifier is None or screen is not None
    if classifier is None:
        from .classify import load_classifier

        classifier = load_classifier()
    if not use_cascade:
        screen = None
    elif screen is None or isinstance(screen, (str, Path)):
        from .classify.screen import load_screen

        screen = load_screen(screen or cfg.screen_model)
    if out_dir is not None:
        out_dir = check_out_dir(out_dir)

    own = not hasattr(path_or_reader, "read_region_mpp")
    reader = open_slide(path_or_reader, mpp=mpp) if own else path_or_reader  # type: ignore[arg-type]
    try:
        run = _detect(
            reader,
            proposer=proposer,
            classifier=classifier,
            cfg=cfg,
            progress=progress,
            screen=screen,
        )
        if out_dir is not None:
            write_outputs(
                run,
                out_dir,
                stem=stem or output_stem(reader.info.path),
                reader=reader,
                classifier=classifier,
                config=cfg,
                db=db,
            )
    finally:
        if own:
            reader.close()
    return run.result


def _classify_in_workers(classifier: Any, workers: int) -> bool:
    """Score candidates in the tile workers: a CPU :class:`~mitoscope.classify.Classifier`
    (picklable; ONNX Runtime sessions are rebuilt there with one thread each). Custom
    classifiers and CUDA ones score in the main process."""
    from .classify.classifier import Classifier

    dev = getattr(classifier, "device", None)
    return workers > 1 and isinstance(classifier, Classifier) and getattr(dev, "type", "") == "cpu"


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, int(cores or 1))


#: ``--workers auto``: one process per usable core, at most this many (each holds a reader,
#: the proposer and ONNX Runtime copies of the models, ~0.3 GB)
MAX_AUTO_WORKERS = 8


def resolve_workers(value: str | int) -> int:
    """``--workers``: a positive integer, or ``auto`` (usable cores, at most
    :data:`MAX_AUTO_WORKERS`)."""
    text = str(value).strip().lower()
    if text == "auto":
        return min(usable_cores(), MAX_AUTO_WORKERS)
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise InvalidInputError(f"--workers must be a positive integer or auto, got {value!r}")
    return n


def _main_threads(workers: int) -> int:
    """Torch threads for the classifier while ``workers`` processes read and propose."""
    return max(1, usable_cores() - int(workers))


def _detect(reader: SlideReader, **kw: Any) -> _Run:
    """:func:`_detect_run`, with this process's torch threads limited while workers run."""
    workers = int(kw["cfg"].workers)
    restore: Any = contextlib.nullcontext()
    if workers > 1 and "torch" in sys.modules:
        restore = _torch_threads(_main_threads(workers))
    with restore:
        return _detect_run(reader, **kw)


@contextlib.contextmanager
def _torch_threads(n: int) -> Iterator[None]:
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(min(before, n))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _detect_run(
    reader: SlideReader,
    *,
    proposer: Any,
    classifier: Any,
    cfg: DetectConfig,
    progress: bool,
    screen: Any = None,
) -> _Run:
    from .count import atypical_ratio, hotspot, mitoses_per_mm2
    from .slide.tiling import plan_tiles

    t0 = time.perf_counter()
    info = reader.info
    work_mpp = validate_mpp(cfg.work_mpp or classifier.input_mpp, name="work_mpp")
    if abs(info.mpp / work_mpp - 1.0) <= cfg.mpp_tolerance:
        work_mpp = info.mpp  # close enough: read natively, no resampling
    threshold = float(classifier.threshold if cfg.threshold is None else cfg.threshold)
    atyp_thr = float(
        getattr(classifier, "atypical_threshold", 0.5)
        if cfg.atypical_threshold is None
        else cfg.atypical_threshold
    )
    floor = min(float(cfg.floor), threshold)
    propose_mpp = cfg.propose_mpp
    if screen is not None:
        smpp = float(screen.input_mpp)
        if propose_mpp is not None and abs(float(propose_mpp) / smpp - 1.0) > 0.05:
            raise InvalidInputError(
                f"the cascade screen works at {smpp} um/px, so candidates are proposed there; "
                f"--propose-mpp {propose_mpp} needs --no-cascade"
            )
        propose_mpp = smpp if smpp > work_mpp * 1.05 else None

    tissue, tissue_area, notes = _tissue_for(reader, cfg)
    if not tissue.mask.any():
        notes.append(NO_TISSUE_NOTE)
        warnings.warn(f"{info.path.name}: {NO_TISSUE_NOTE}", RuntimeWarning, stacklevel=3)
        tiles: list[Tile] = []
    else:
        tiles = plan_tiles(info, tissue, tile_um=cfg.tile_um, overlap_um=cfg.overlap_um)

    in_workers = _classify_in_workers(classifier, int(cfg.workers)) and len(tiles) > 1
    params = DetectionParams(
        slide_mpp=info.mpp,
        work_mpp=work_mpp,
        floor=floor,
        contour_min_prob=threshold,
        tolerance_px=cfg.contour_tolerance_px,
    )
    iterator: Any = _iter_tiles(
        reader,
        tiles,
        proposer=proposer,
        work_mpp=work_mpp,
        workers=int(cfg.workers),
        propose_mpp=propose_mpp,
        screen=screen,
        classifier=classifier if in_workers else None,
        mf_threshold=threshold,
        params=params,
    )
    bar = None
    if progress and tiles:
        from tqdm import tqdm

        bar = tqdm(total=len(tiles), desc=info.path.name, unit="tile", leave=False)
    parts: list[Detections] = []
    n_proposed = n_candidates = n_screened_out = 0
    timing = {"tissue_s": time.perf_counter() - t0, "propose_s": 0.0, "classify_s": 0.0}
    batcher = _Batcher(classifier, batch_size=int(cfg.batch_size), threshold=threshold)

    def emit(items: list[tuple[TileWork, np.ndarray, np.ndarray]]) -> None:
        for work, mf, atyp in items:
            d = tile_detections(work, mf, atyp, **vars(params))
            if len(d):
                parts.append(d)

    try:
        t_wait = time.perf_counter()
        for work in iterator:
            t_got = time.perf_counter()
            timing["propose_s"] += t_got - t_wait
            n_proposed += work.n_proposed
            n_screened_out += work.n_screened_out
            if work.detections is not None:  # classified in a worker
                n_candidates += work.n_classified
                if len(work.detections):
                    parts.append(work.detections)
            elif len(work.candidates):
                n_candidates += len(work.candidates)
                emit(batcher.add(work))
            if bar is not None:
                bar.update(1)
            t_wait = time.perf_counter()
            timing["classify_s"] += t_wait - t_got
        t_got = time.perf_counter()
        emit(batcher.flush())
        timing["classify_s"] += time.perf_counter() - t_got
    finally:
        if bar is not None:
            bar.close()
    dets = Detections.cat(parts) if parts else Detections.empty()
    dets = merge_detections(dets, mpp=info.mpp, radius_um=cfg.merge_radius_um)
    if tissue.mask.any() and len(dets):
        # tiles overlap the glass around tissue: objects there (debris, dust) are not counted
        dets = dets.filter(tissue.contains(dets.x_px, dets.y_px))
    order = np.argsort(-dets.mf_probability, kind="stable")
    dets = dets.filter(order)

    is_mf = dets.mf_probability >= threshold
    mx, my = dets.x_px[is_mf], dets.y_px[is_mf]
    extent = (float(info.width), float(info.height))
    has_tissue = bool(tissue.mask.any())
    hot2 = hotspot(
        mx, my, mpp=info.mpp, area_mm2=cfg.hotspot_area_mm2,
        tissue=tissue if has_tissue else None, extent_px=extent,
    )  # fmt: skip
    hot10 = hotspot(
        mx, my, mpp=info.mpp, area_mm2=cfg.hpf10_area_mm2,
        tissue=tissue if has_tissue else None, extent_px=extent,
    )  # fmt: skip
    n_mf = int(is_mf.sum())
    has_atyp = bool(getattr(classifier, "has_atypical", True))
    ratio = (
        atypical_ratio(dets.atypical_probability[is_mf], threshold=atyp_thr) if has_atyp else None
    )
    seconds = time.perf_counter() - t0
    timing["count_s"] = seconds - sum(timing.values())
    result = SlideResult(
        info=info,
        detections=dets,
        threshold=threshold,
        tissue_area_mm2=float(tissue_area),
        hotspot_2mm2=hot2,
        hotspot_10hpf=hot10,
        model=str(getattr(classifier, "name", type(classifier).__name__)),
        proposer=str(getattr(proposer, "name", type(proposer).__name__)),
        seconds=seconds,
        extra={
            "n_mitoses": n_mf,
            "mitoses_per_mm2": mitoses_per_mm2(n_mf, tissue_area),
            "atypical_ratio": ratio,
            "atypical_threshold": atyp_thr,
            "n_atypical": int(np.count_nonzero(dets.atypical_probability[is_mf] >= atyp_thr)),
            "n_candidates": int(n_candidates),
            "n_proposed": int(n_proposed),
            "n_screened_out": int(n_screened_out),
            "cascade": screen is not None,
            "classified_in_workers": bool(in_workers),
            "propose_mpp": float(propose_mpp or work_mpp),
            "n_tiles": len(tiles),
            "floor": floor,
            "work_mpp": work_mpp,
            "tile_um": cfg.tile_um,
            "overlap_um": cfg.overlap_um,
            "notes": notes,
            "timing": {k: round(v, 3) for k, v in timing.items()},
        },
    )
    return _Run(result=result, tissue=tissue, notes=notes)


# ------------------------------------------------------------------------------ outputs
OUTPUT_SUFFIXES = (".geojson", ".midog.json", ".csv", ".summary.json", ".report.html")
DB_NAME = "mitoscope.sqlite"


def output_stem(path: str | Path) -> str:
    """``slide.svs`` -> ``slide``; ``x.ome.tiff`` -> ``x``."""
    name = Path(path).name
    for suffix in (".ome.tiff", ".ome.tif"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem or name


def check_out_dir(out_dir: str | Path) -> Path:
    """Create ``out_dir`` if needed and check that it is a writable directory."""
    from .errors import OutputError

    p = Path(out_dir)
    if p.exists() and not p.is_dir():
        raise OutputError(f"--out {p} is a file, not a directory; choose a directory")
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(
            f"cannot create output directory {p}: {exc.strerror}; choose another --out"
        ) from None
    if not os.access(p, os.W_OK | os.X_OK):
        raise OutputError(f"output directory {p} is not writable; choose another --out")
    return p


def summary_dict(result: SlideResult) -> dict[str, Any]:
    """The content of ``<stem>.summary.json``."""
    from . import __version__

    ex = result.extra

    def hot(h: Hotspot | None) -> dict[str, Any] | None:
        if h is None:
            return None
        d: dict[str, Any] = {
            "count": int(h.count),
            "center_px": [round(h.center_px[0], 2), round(h.center_px[1], 2)],
            "radius_um": round(h.radius_um, 3),
            "area_mm2": h.area_mm2,
            "field_fits": bool(h.field_fits),
        }
        if h.note:
            d["note"] = h.note
        return d

    per_mm2 = ex.get("mitoses_per_mm2")
    return {
        "slide": result.info.path.name,
        "mpp": result.info.mpp,
        "mpp_source": result.info.mpp_source,
        "width_px": result.info.width,
        "height_px": result.info.height,
        "tissue_area_mm2": round(result.tissue_area_mm2, 6),
        "n_mitoses": int(ex.get("n_mitoses", len(result.mitoses))),
        "mitoses_per_mm2": None if per_mm2 is None else round(float(per_mm2), 4),
        "hotspot_2mm2": hot(result.hotspot_2mm2),
        "hotspot_10hpf": hot(result.hotspot_10hpf),
        "atypical_ratio": ex.get("atypical_ratio"),
        "n_atypical": ex.get("n_atypical"),
        "model": result.model,
        "proposer": result.proposer,
        "seconds": round(result.seconds, 3),
        "timing_s": dict(ex.get("timing", {})),
        "threshold": result.threshold,
        "atypical_threshold": ex.get("atypical_threshold"),
        "floor": ex.get("floor"),
        "n_proposed": ex.get("n_proposed"),
        "n_screened_out": ex.get("n_screened_out"),
        "n_candidates": ex.get("n_candidates"),
        "n_scored_above_floor": len(result.detections),
        "n_tiles": ex.get("n_tiles"),
        "work_mpp": ex.get("work_mpp"),
        "propose_mpp": ex.get("propose_mpp"),
        "cascade": ex.get("cascade"),
        "notes": list(ex.get("notes", [])),
        "version": __version__,
    }


def write_outputs(
    run: _Run,
    out_dir: str | Path,
    *,
    stem: str,
    reader: SlideReader,
    classifier: Any,
    config: DetectConfig,
    db: Any = None,
) -> dict[str, Path]:
    """Write every per-slide output; all files appear together or not at all.

    Each file is first written to a temporary name beside its destination; only when all of
    them (and the database transaction) succeeded are they renamed into place. On any error
    the temporary files are removed and earlier outputs stay untouched.
    """
    import contextlib
    import json

    from .io import write_detections_csv, write_midog_json, write_qupath_geojson
    from .io.atomic import atomic_path

    out = check_out_dir(out_dir)
    res = run.result
    dets = res.detections
    mpp = res.info.mpp
    atyp_thr = float(res.extra.get("atypical_threshold", 0.5))
    suffixes = [s for s in OUTPUT_SUFFIXES if config.report or s != ".report.html"]
    paths = {s: out / f"{stem}{s}" for s in suffixes}
    with contextlib.ExitStack() as stack:
        tmp = {s: stack.enter_context(atomic_path(p)) for s, p in paths.items()}
        write_qupath_geojson(
            tmp[".geojson"], dets, threshold=res.threshold, atypical_threshold=atyp_thr, mpp=mpp
        )
        write_midog_json(
            tmp[".midog.json"],
            dets,
            mpp=mpp,
            threshold=res.threshold,
            floor=float(res.extra.get("floor", 0.0)),
        )
        write_detections_csv(tmp[".csv"], dets, mpp=mpp, threshold=res.threshold)
        tmp[".summary.json"].write_text(json.dumps(summary_dict(res), indent=2) + "\n")
        if config.report:
            from .report import render_report

            html = render_report(
                res, reader=reader, tissue=run.tissue, classifier=classifier, config=config
            )
            tmp[".report.html"].write_text(html, encoding="utf-8")
        if db is not None:
            directory = str(res.info.path.parent) if res.info.backend != "array" else ""
            db.add_slide(
                res.info.path.name,
                width=res.info.width,
                height=res.info.height,
                directory=directory,
                detections=dets,
                threshold=res.threshold,
                atypical_threshold=atyp_thr,
            )
    return paths


__all__ = [
    "DB_NAME",
    "NO_TISSUE_NOTE",
    "DetectConfig",
    "TileWork",
    "DetectionParams",
    "check_out_dir",
    "detect_slide",
    "mask_contour",
    "merge_detections",
    "output_stem",
    "process_tile",
    "summary_dict",
    "tile_detections",
    "write_outputs",
]
