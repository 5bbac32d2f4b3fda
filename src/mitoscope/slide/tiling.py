"""Tiling plans in micrometres: tiles over tissue with overlap, each owning a core region."""

from __future__ import annotations

import math

from ..errors import InvalidInputError
from ..types import Region, SlideInfo, Tile
from .tissue import TissueMask

#: OMG-Net: 1024 x 1024 px tiles at ~0.25 um/px.
DEFAULT_TILE_UM = 256.0
#: Margin shared by neighbouring tiles; larger than the biggest nucleus (225 um² -> ~17 um).
DEFAULT_OVERLAP_UM = 32.0


def plan_tiles(
    info: SlideInfo,
    tissue: TissueMask | None = None,
    *,
    tile_um: float = DEFAULT_TILE_UM,
    overlap_um: float = DEFAULT_OVERLAP_UM,
    min_tissue_fraction: float = 0.0,
) -> list[Tile]:
    """Plan tiles of ``tile_um`` (with ``overlap_um`` shared with each neighbour) over tissue.

    The slide is cut into a grid of *cores* of ``tile_um - overlap_um``; each tile is its core
    grown by ``overlap_um / 2`` on every side (clipped to the slide). Cores partition the slide,
    so an object is reported by exactly the tile whose core holds its centre. Only tiles whose
    core touches tissue (more than ``min_tissue_fraction``) are kept. Coordinates are level-0
    pixels; nothing is read.
    """
    if tile_um <= 0 or overlap_um < 0 or overlap_um >= tile_um:
        raise InvalidInputError(
            f"tile size must be positive and larger than the overlap (tile_um={tile_um}, overlap_um={overlap_um})"
        )
    stride_px = (tile_um - overlap_um) / info.mpp
    margin_px = overlap_um / 2.0 / info.mpp
    nx = max(1, math.ceil(info.width / stride_px))
    ny = max(1, math.ceil(info.height / stride_px))
    tiles: list[Tile] = []
    for gy in range(ny):
        cy0 = int(round(gy * stride_px))
        cy1 = min(info.height, int(round((gy + 1) * stride_px)))
        if cy1 <= cy0:
            continue
        for gx in range(nx):
            cx0 = int(round(gx * stride_px))
            cx1 = min(info.width, int(round((gx + 1) * stride_px)))
            if cx1 <= cx0:
                continue
            frac = 1.0 if tissue is None else tissue.fraction_in(cx0, cy0, cx1, cy1)
            if tissue is not None and frac <= min_tissue_fraction:
                continue
            x0 = max(0, int(math.floor(cx0 - margin_px)))
            y0 = max(0, int(math.floor(cy0 - margin_px)))
            x1 = min(info.width, int(math.ceil(cx1 + margin_px)))
            y1 = min(info.height, int(math.ceil(cy1 + margin_px)))
            tiles.append(
                Tile(
                    index=len(tiles),
                    x=x0,
                    y=y0,
                    width=x1 - x0,
                    height=y1 - y0,
                    core=Region(cx0, cy0, cx1 - cx0, cy1 - cy0),
                    tissue_fraction=frac,
                )
            )
    return tiles
