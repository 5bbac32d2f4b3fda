"""``mitoscope info``: what a slide is, its pixel size, tissue area and tiling."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from ._options import JSON_OPTION, MPP_OPTION, OVERLAP_UM_OPTION


def register(app: typer.Typer) -> None:
    app.command("info")(info)


def info(
    slide: Path = typer.Argument(..., help="Whole-slide image or region image."),
    mpp: float = MPP_OPTION,
    json_out: bool = JSON_OPTION,
    tile_um: float = typer.Option(256.0, "--tile-um", help="Tile size in um for the tiling plan."),
    overlap_um: float = OVERLAP_UM_OPTION,
) -> None:
    """Show format, dimensions, levels, pixel size, tissue area and tile count of a slide."""
    from ..slide import detect_tissue, open_slide, plan_tiles

    with open_slide(slide, mpp=mpp) as reader:
        meta = reader.info.to_dict()
        tissue = detect_tissue(reader)
        tiles = plan_tiles(reader.info, tissue, tile_um=tile_um, overlap_um=overlap_um)
    meta["tissue_area_mm2"] = round(tissue.area_mm2, 4)
    meta["slide_area_mm2"] = round(reader.info.area_mm2, 4)
    meta["n_tiles"] = len(tiles)
    meta["tile_um"] = tile_um
    meta["overlap_um"] = overlap_um
    if json_out:
        typer.echo(json.dumps(meta))
        return
    width = max(len(k) for k in meta)
    for key, value in meta.items():
        typer.echo(f"{key:<{width}}  {value}")
