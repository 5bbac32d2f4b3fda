"""``mitoscope candidates``: stage-1 proposals (every nucleus-sized object) to a CSV file."""

from __future__ import annotations

import time
from pathlib import Path

import typer

from ._options import MPP_OPTION, OVERLAP_UM_OPTION, PROGRESS_OPTION, TILE_UM_OPTION
from ._proposer import (
    DETECTOR_OPTION,
    PROPOSER_OPTION,
    SAM_CHECKPOINT_OPTION,
    SAM_VARIANT_OPTION,
    proposer_from_options,
)


def register(app: typer.Typer) -> None:
    app.command("candidates")(candidates)


def candidates(
    slide: Path = typer.Argument(..., help="Whole-slide image or region image."),
    out: Path = typer.Option(..., "--out", "-o", help="CSV file to write (one row per candidate)."),
    mpp: float = MPP_OPTION,
    proposer: str = PROPOSER_OPTION,
    sam_checkpoint: Path = SAM_CHECKPOINT_OPTION,
    sam_variant: str = SAM_VARIANT_OPTION,
    detector: Path = DETECTOR_OPTION,
    sam_cpu_dtype: str = typer.Option(
        "bfloat16",
        "--sam-cpu-dtype",
        help="SAM autocast dtype on CPU: bfloat16 (OMG-Net) | float32 (faster on CPUs "
        "without native bfloat16).",
    ),
    work_mpp: float = typer.Option(
        None,
        "--work-mpp",
        help="Pixel size to propose at (default: 0.25 for sam; max(slide mpp, 0.25) otherwise).",
    ),
    tile_um: float = TILE_UM_OPTION,
    overlap_um: float = OVERLAP_UM_OPTION,
    all_tiles: bool = typer.Option(
        False, "--all-tiles", help="Propose everywhere, not only on detected tissue."
    ),
    progress: bool = PROGRESS_OPTION,
) -> None:
    """Propose candidate objects (with masks) and write x_px,y_px,area_um2,score,bbox to CSV."""
    from ..candidates import propose_slide
    from ..candidates.table import write_candidates_csv
    from ..slide import detect_tissue, open_slide, plan_tiles

    name = proposer.strip().lower()
    prop = proposer_from_options(
        name,
        sam_checkpoint=sam_checkpoint,
        sam_variant=sam_variant,
        detector=detector,
        cpu_dtype=sam_cpu_dtype,
    )
    t0 = time.perf_counter()
    with open_slide(slide, mpp=mpp) as reader:
        info = reader.info
        if work_mpp is None:
            work_mpp = 0.25 if name == "sam" else max(info.mpp, 0.25)
        tissue = None
        note = "all tiles"
        if not all_tiles:
            tissue = detect_tissue(reader)
            if not plan_tiles(info, tissue, tile_um=tile_um, overlap_um=overlap_um):
                tissue, note = None, "no tissue detected: all tiles"
            else:
                note = f"tissue {tissue.area_mm2:.3f} mm²"
        cands = propose_slide(
            reader,
            proposer=prop,
            tissue=tissue,
            tile_um=tile_um,
            overlap_um=overlap_um,
            work_mpp=work_mpp,
            progress=progress,
        )
    write_candidates_csv(cands, out)
    typer.echo(
        f"{len(cands)} candidates ({prop.name}, {note}, work {work_mpp:g} um/px) "
        f"in {time.perf_counter() - t0:.1f} s -> {out}"
    )
