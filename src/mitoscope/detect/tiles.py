"""The one tile loop: read -> propose -> screen -> classify -> level-0 detections.

:func:`iter_tiles` yields a :class:`TileWork` per tile, in tile order, from this process or from
a pool of workers (:func:`~mitoscope.detect.parallel.ordered_map`); :class:`Batcher` scores
candidates in batches that span tiles. Workers score with the same :class:`Batcher`, one tile
at a time, when the classifier can travel to them (a CPU
:class:`~mitoscope.classify.Classifier`); only the tile's detections come back then.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from time import perf_counter
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from ..candidates.tiles import propose_tile, upscale_candidates
from ..geometry import centre_to, mask_contour
from ..types import Candidates, Detections, Tile

if TYPE_CHECKING:
    from ..slide.reader import SlideReader

#: The per-tile stages timed in :attr:`TileWork.timing` (seconds, in the process that ran them):
#: reading at the work pixel size, proposal (with its downsampling), the cascade screen,
#: classification (patch cutting and the network) and contour tracing.
TILE_STAGES = ("read_s", "propose_s", "screen_s", "classify_s", "contours_s")


class CandidateClassifier(Protocol):
    """What detection needs of a classifier (the bundled one, a fake, a future detector).

    A classifier that also has ``predict_patches(patches, masks, *, batch_size, **kw)`` and
    ``patch_size_px`` (and optionally ``uses_mask`` and ``atypical_views``) is scored in
    batches that span tiles; others are called per tile.
    """

    input_mpp: float
    threshold: float

    def predict_candidates(
        self, image: np.ndarray, candidates: Candidates, **kw: Any
    ) -> tuple[np.ndarray, np.ndarray]: ...


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
    #: seconds of each stage of :data:`TILE_STAGES` run for this tile so far
    timing: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class DetectionParams:
    """How classified candidates become detections (:func:`tile_detections`' keywords)."""

    slide_mpp: float
    work_mpp: float
    floor: float
    contour_min_prob: float = 0.0
    tolerance_px: float = 0.75


@dataclass(frozen=True)
class Scoring:
    """How a worker scores a tile's candidates (with a classifier in the worker)."""

    params: DetectionParams
    threshold: float = 0.5
    batch_size: int = 256


# ------------------------------------------------------------------------------ one tile
def process_tile(
    reader: SlideReader,
    tile: Tile,
    *,
    proposer: Any,
    work_mpp: float,
    propose_mpp: float | None = None,
    screen: Any = None,
    classifier: Any = None,
    scoring: Scoring | None = None,
    stain: Any = None,
) -> TileWork:
    """Read ``tile`` at ``work_mpp`` (stain-normalised with a fitted ``stain`` normaliser),
    propose, screen; keep candidates centred in the core.

    With ``propose_mpp`` coarser than ``work_mpp`` the proposer (and the ``screen``, a
    :class:`~mitoscope.classify.screen.Screen` at that pixel size) see a downsampled copy of
    the tile; the kept candidates are mapped back to work pixels (their masks stay coarse).
    With a ``classifier`` and ``scoring`` (worker processes) the candidates are scored and
    turned into the tile's detections here too, and the image and candidates are dropped, so
    only the detections travel back.
    """
    timing: dict[str, float] = dict.fromkeys(TILE_STAGES, 0.0)
    image, small, fx, fy, cands, n = propose_tile(
        reader, tile, proposer=proposer, work_mpp=work_mpp, propose_mpp=propose_mpp,
        timing=timing, stain=stain,
    )  # fmt: skip
    t0 = perf_counter()
    dropped = 0
    if screen is not None and len(cands):
        from ..classify.patches import extract_patches

        patches, masks = extract_patches(
            small, cands.x_px, cands.y_px, int(screen.patch_size_px), candidates=cands
        )
        keep = screen.keep(patches, masks)
        dropped = int(len(keep) - keep.sum())
        cands = cands.filter(keep)
    if (fx, fy) != (1.0, 1.0) and len(cands):
        cands = upscale_candidates(cands, fx, fy, image.shape[:2])
    timing["screen_s"] += perf_counter() - t0
    work = TileWork(
        tile=tile, image=image, candidates=cands, n_proposed=n, n_screened_out=dropped,
        timing=timing,
    )  # fmt: skip
    if classifier is None or scoring is None:
        return work
    dets, n_classified = Detections.empty(), len(cands)
    if len(cands):
        t0 = perf_counter()
        batcher = Batcher(classifier, batch_size=scoring.batch_size, threshold=scoring.threshold)
        scored = batcher.add(work) + batcher.flush()
        t1 = perf_counter()
        for w, mf, atyp in scored:
            dets = tile_detections(w, mf, atyp, **vars(scoring.params))
        timing["classify_s"] += t1 - t0
        timing["contours_s"] += perf_counter() - t1
    work.detections, work.n_classified = dets, n_classified
    work.image, work.candidates = np.zeros((0, 0, 3), np.uint8), Candidates.empty()
    return work


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
    probs = mf_prob[keep]
    contours = [
        None
        if probs[k] < contour_min_prob
        else mask_contour(
            None if c.masks is None else c.masks[k],
            c.bbox[k],
            scale=scale,
            x0=x0,
            y0=y0,
            tolerance_px=tolerance_px,
        )
        for k in range(len(c))
    ]
    return Detections(
        x_px=centre_to(c.x_px, scale, x0),
        y_px=centre_to(c.y_px, scale, y0),
        mf_probability=probs,
        atypical_probability=atyp_prob[keep],
        area_um2=c.area_um2,
        contours=contours,
    )


# ------------------------------------------------------------------------------ classification
def tta_kwargs(classifier: Any, threshold: float) -> dict[str, Any]:
    """Atypical test-time augmentation, or a dedicated atypical model
    (:class:`~mitoscope.classify.atypical.WithAtypicalModel`), only for mitoses."""
    views = int(getattr(classifier, "atypical_views", 1) or 1)
    if views > 1 or getattr(classifier, "atypical_model", None) is not None:
        return {"atypical_min_mf": float(threshold)}
    return {}


class Batcher:
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
        self.kw = tta_kwargs(classifier, threshold)
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
        from ..classify.patches import extract_patches

        uses_mask = bool(getattr(self.classifier, "uses_mask", True))
        # a dedicated atypical model may need a larger field than the classifier's patch
        size = getattr(self.classifier, "cut_size_px", None) or self.classifier.patch_size_px
        patches, masks = extract_patches(
            work.image, c.x_px, c.y_px, int(size), candidates=c if uses_mask else None
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


# ------------------------------------------------------------------------------ the loop
def classify_in_workers(classifier: Any, workers: int) -> bool:
    """Score candidates in the tile workers: a CPU :class:`~mitoscope.classify.Classifier`
    (picklable; ONNX Runtime sessions are rebuilt there with one thread each). Custom
    classifiers and CUDA ones score in the main process."""
    from ..classify.atypical import WithAtypicalModel
    from ..classify.classifier import Classifier

    base = classifier.base if isinstance(classifier, WithAtypicalModel) else classifier
    dev = getattr(base, "device", None)
    return workers > 1 and isinstance(base, Classifier) and getattr(dev, "type", "") == "cpu"


def for_workers(model: Any) -> Any:
    """The worker copy of a screen / classifier (ONNX Runtime only: workers skip torch);
    ``None`` and objects without ``for_workers`` go as they are."""
    fn = getattr(model, "for_workers", None)
    return fn() if callable(fn) else model


_WORKER: dict[str, Any] = {}


def _worker_init(
    source: Any,
    mpp: float,
    proposer: Any,
    screen: Any = None,
    classifier: Any = None,
    stain: Any = None,
) -> None:
    from ..slide import open_slide
    from .parallel import cap_threads

    cap_threads(1)  # one process per core: no extra BLAS or torch threads
    _WORKER["reader"] = open_slide(source, mpp=mpp) if isinstance(source, (str, Path)) else source
    _WORKER["proposer"] = proposer
    _WORKER["screen"] = screen
    _WORKER["classifier"] = classifier
    _WORKER["stain"] = stain


def _worker_tile(
    tile: Tile, work_mpp: float, propose_mpp: float | None, scoring: Scoring | None = None
) -> TileWork:
    return process_tile(
        _WORKER["reader"],
        tile,
        proposer=_WORKER["proposer"],
        work_mpp=work_mpp,
        propose_mpp=propose_mpp,
        screen=_WORKER["screen"],
        classifier=_WORKER["classifier"],
        scoring=scoring,
        stain=_WORKER.get("stain"),
    )


def iter_tiles(
    reader: SlideReader,
    tiles: list[Tile],
    *,
    proposer: Any,
    work_mpp: float,
    workers: int,
    propose_mpp: float | None = None,
    screen: Any = None,
    classifier: Any = None,
    scoring: Scoring | None = None,
    stain: Any = None,
) -> Iterator[TileWork]:
    """Yield :class:`TileWork` in tile order; bounded prefetch so memory stays flat.

    With ``workers > 1`` the tiles run in worker processes (each opens the slide itself);
    with a ``classifier`` and ``scoring`` the workers score the candidates too.
    """
    if workers <= 1 or len(tiles) <= 1:
        for tile in tiles:
            yield process_tile(
                reader,
                tile,
                proposer=proposer,
                work_mpp=work_mpp,
                propose_mpp=propose_mpp,
                screen=screen,
                stain=stain,
            )
        return
    from .parallel import ordered_map

    path = reader.info.path
    source: Any = path if path.exists() and reader.info.backend != "array" else reader
    yield from ordered_map(
        _worker_tile,
        tiles,
        work_mpp,
        propose_mpp,
        scoring,
        workers=workers,
        initializer=_worker_init,
        initargs=(
            source,
            reader.info.mpp,
            proposer,
            for_workers(screen),
            for_workers(classifier),
            stain,
        ),
    )


__all__ = [
    "TILE_STAGES",
    "Batcher",
    "CandidateClassifier",
    "DetectionParams",
    "Scoring",
    "TileWork",
    "classify_in_workers",
    "iter_tiles",
    "process_tile",
    "tile_detections",
]
