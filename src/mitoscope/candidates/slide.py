"""Run a proposer over the tiles of a slide (or a large image) and merge the overlaps once."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np

from ..types import Candidates
from ..units import validate_mpp
from .base import Proposer, get_proposer
from .merge import merge_candidates

if TYPE_CHECKING:
    from ..slide.reader import SlideReader
    from ..slide.tissue import TissueMask


def _resolve(proposer: Proposer | str | None) -> Proposer:
    if proposer is None:
        return get_proposer("classical")
    if isinstance(proposer, str):
        return get_proposer(proposer)
    return proposer


def propose_slide(
    reader: SlideReader,
    *,
    proposer: Proposer | str | None = None,
    tissue: TissueMask | None = None,
    tile_um: float = 256.0,
    overlap_um: float = 32.0,
    work_mpp: float = 0.25,
    merge_radius_um: float = 4.0,
    progress: bool = False,
) -> Candidates:
    """Candidates over a whole slide, in level-0 pixels.

    Tiles are planned with :func:`~mitoscope.slide.plan_tiles` over ``tissue`` (all tiles when
    ``None``), read at ``work_mpp`` um/px with ``reader.read_region_mpp`` and proposed on. Each
    tile keeps only the candidates whose centroid lies in its ``core`` (cores partition the
    slide, so an object in an overlap is reported by one tile), then everything is merged once
    (:func:`merge_candidates`, ``merge_radius_um``; only candidates of *different* tiles can
    suppress each other, because each tile's proposer de-duplicated its own output).

    Returns
    -------
    Candidates
        Centroids and boxes in level-0 pixels; masks stay at the work resolution
        (``mask_downsample = work_mpp / reader.info.mpp``); ``area_um2`` is physical.
    """
    from ..slide.tiling import plan_tiles

    prop = _resolve(proposer)
    info = reader.info
    work_mpp = validate_mpp(work_mpp, name="work_mpp")
    scale = work_mpp / info.mpp
    tiles = plan_tiles(info, tissue, tile_um=tile_um, overlap_um=overlap_um)
    iterator = tiles
    if progress:
        from tqdm import tqdm

        iterator = tqdm(tiles, desc=f"proposing ({prop.name})", unit="tile")
    parts = []
    tile_ids = []
    for tile in iterator:
        img = reader.read_region_mpp(tile.region, work_mpp)
        c = prop.propose(img, mpp=work_mpp)
        if len(c) == 0:
            continue
        c = _to_level0(c, scale=scale, x0=tile.x, y0=tile.y)
        core = tile.core
        inside = (c.x_px >= core.x) & (c.x_px < core.x1) & (c.y_px >= core.y) & (c.y_px < core.y1)
        parts.append(c.filter(inside))
        tile_ids.append(np.full(int(inside.sum()), tile.index))
    if not parts:
        out = Candidates.empty(prop.name)
        out.mask_downsample = scale
        return out
    allc = Candidates.cat(parts)
    allc.proposer = prop.name
    # each tile is de-duplicated by its proposer: only merge objects seen by two tiles
    return merge_candidates(
        allc, mpp=info.mpp, radius_um=merge_radius_um, groups=np.concatenate(tile_ids)
    )


def _to_level0(c: Candidates, *, scale: float, x0: int, y0: int) -> Candidates:
    """Image pixels at ``scale`` level-0 px per pixel -> level-0 pixels of a tile at (x0, y0)."""
    if scale == 1.0:
        out = c.translate(x0, y0)
    else:
        # pixel centres: index i covers [i, i+1) work px -> level-0 centre (i + 0.5) * s - 0.5
        bb = c.bbox.astype(np.float64)
        bbox = np.column_stack(
            [np.floor(bb[:, 0] * scale), np.floor(bb[:, 1] * scale)]
            + [np.ceil(bb[:, 2] * scale), np.ceil(bb[:, 3] * scale)]
        ).astype(np.int64)
        out = replace(
            c,
            x_px=(c.x_px + 0.5) * scale - 0.5,
            y_px=(c.y_px + 0.5) * scale - 0.5,
            bbox=bbox,
        ).translate(x0, y0)
    out.mask_downsample = float(c.mask_downsample) * scale
    return out


def propose_image(
    image: np.ndarray,
    *,
    mpp: float,
    proposer: Proposer | str | None = None,
    tile_um: float = 256.0,
    overlap_um: float = 32.0,
    merge_radius_um: float = 4.0,
) -> Candidates:
    """Candidates of an in-memory RGB image of any size, in its own pixel coordinates.

    The image is tiled like a slide (no resampling: the work resolution is ``mpp``), so large
    images cost memory per tile only, and masks have ``mask_downsample = 1``.

    Examples
    --------
    >>> import numpy as np
    >>> img = np.full((200, 200, 3), 240, dtype=np.uint8)
    >>> img[90:110, 90:110] = (70, 40, 110)
    >>> c = propose_image(img, mpp=0.25)
    >>> len(c), float(c.x_px[0]), float(c.y_px[0])
    (1, 99.5, 99.5)
    """
    from ..slide.reader import ArraySlide

    mpp = validate_mpp(mpp)
    reader = ArraySlide(image, mpp=mpp)
    return propose_slide(
        reader,
        proposer=proposer,
        tile_um=tile_um,
        overlap_um=overlap_um,
        work_mpp=mpp,
        merge_radius_um=merge_radius_um,
    )
