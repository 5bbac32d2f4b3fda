"""Proposal on one tile: read at the work pixel size, propose, keep the tile core's candidates.

The first half of the detection tile step (:func:`mitoscope.detect.tiles.process_tile` adds
screening and classification) and the whole step of :func:`~mitoscope.candidates.propose_slide`;
the screen's training samples (``mitoscope.train.screen_train``) come from it too.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np

from ..geometry import centre_to, scale_boxes
from ..types import Candidates, Tile
from .base import MAX_INK_FRACTION, Proposer, ink_fraction

if TYPE_CHECKING:
    from ..slide.reader import SlideReader


def propose_tile(
    reader: SlideReader,
    tile: Tile,
    *,
    proposer: Proposer,
    work_mpp: float,
    propose_mpp: float | None = None,
    timing: dict[str, float] | None = None,
    stain: Any = None,
) -> tuple[np.ndarray, np.ndarray, float, float, Candidates, int]:
    """Read ``tile`` at ``work_mpp``, propose (on a copy downsampled to ~``propose_mpp`` when
    that is coarser) and keep the candidates whose level-0 centre lies in the tile's core.

    Returns the tile at ``work_mpp``, the image proposed on (the same array, or the downsampled
    copy), work px per proposal px along x and y, the kept candidates (in proposal px), and the
    number proposed before the core cut. Cores partition the slide, so an object in an overlap
    is kept by one tile. With ``timing``, the seconds spent reading (``read_s``: decode and
    resampling to ``work_mpp``) and proposing (``propose_s``: downsampling, the proposer, the
    core cut) are added to it. With ``stain`` (a fitted normaliser, ``--stain-normalize``) the
    tile is stain-normalised right after reading: proposer, screen and classifier all see the
    normalised tile (counted in ``read_s``).
    """
    from time import perf_counter

    info = reader.info
    t0 = perf_counter()
    image = reader.read_region_mpp(tile.region, work_mpp)
    if stain is not None:
        from ..stain.normalize import normalize_tile

        image = normalize_tile(stain, image)
    t1 = perf_counter()
    small, fx, fy = downsample(image, work_mpp, propose_mpp)
    pmpp = work_mpp * (fx + fy) / 2.0
    cands = proposer.propose(small, mpp=pmpp)
    n = len(cands)
    if n:
        sx, sy = fx * work_mpp / info.mpp, fy * work_mpp / info.mpp
        # ink specks (green / cyan marking ink inside tissue) are not nuclei, whatever proposed them
        cands = cands.filter(
            in_core(tile, centre_to(cands.x_px, sx, tile.x), centre_to(cands.y_px, sy, tile.y))
            & (ink_fraction(small, cands, mpp=pmpp) <= MAX_INK_FRACTION)
        )
    if timing is not None:
        timing["read_s"] = timing.get("read_s", 0.0) + (t1 - t0)
        timing["propose_s"] = timing.get("propose_s", 0.0) + (perf_counter() - t1)
    return image, small, fx, fy, cands, n


def in_core(tile: Tile, x0: np.ndarray, y0: np.ndarray) -> np.ndarray:
    """Which level-0 points lie in the tile's core (half-open)."""
    core = tile.core
    return (x0 >= core.x) & (x0 < core.x1) & (y0 >= core.y) & (y0 < core.y1)


def downsample(
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


def upscale_candidates(
    c: Candidates, fx: float, fy: float, shape: tuple[int, int] | None = None
) -> Candidates:
    """Candidates of an image ``fx``, ``fy`` times coarser -> the finer image's pixels.

    Centres and boxes are mapped (boxes clipped to ``shape`` = ``(h, w)`` when given); the
    masks stay at their pixel size and ``mask_downsample`` records the factor: patches resize
    them when they are cut (:func:`~mitoscope.classify.patches.mask_at_bbox`) and contours are
    traced on them.
    """
    bbox = scale_boxes(c.bbox, fx, fy)
    if shape is not None:
        h, w = shape
        bbox[:, [0, 2]] = np.clip(bbox[:, [0, 2]], 0, w)
        bbox[:, [1, 3]] = np.clip(bbox[:, [1, 3]], 0, h)
    return replace(
        c,
        x_px=centre_to(c.x_px, fx),
        y_px=centre_to(c.y_px, fy),
        bbox=bbox.astype(np.int64),
        mask_downsample=float(c.mask_downsample) * (fx + fy) / 2.0,
    )


__all__ = ["downsample", "in_core", "propose_tile", "upscale_candidates"]
