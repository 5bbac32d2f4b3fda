"""Run a proposer over the tiles of a slide (or a large image) and merge the overlaps once.

Each tile goes through :func:`~mitoscope.candidates.tiles.propose_tile`, the proposal step of
detection.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ..types import Candidates
from ..units import validate_mpp
from .base import Proposer, get_proposer
from .merge import merge_candidates
from .tiles import propose_tile, upscale_candidates

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
        _, _, _, _, c, n_proposed = propose_tile(reader, tile, proposer=prop, work_mpp=work_mpp)
        if n_proposed == 0:
            continue
        c = c if scale == 1.0 else upscale_candidates(c, scale, scale)
        parts.append(c.translate(tile.x, tile.y))
        tile_ids.append(np.full(len(c), tile.index))
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
