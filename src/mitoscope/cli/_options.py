"""Options several commands share, each defined once: the same flags, default and help wherever
a command takes it (``mpp: float = MPP_OPTION``). The proposer's options are in :mod:`._proposer`.
"""

from __future__ import annotations

from typing import Any

import typer

from ..detect.config import DEFAULTS

# -- a slide and its tiling (detect, candidates, info) ------------------------------------------
MPP_OPTION = typer.Option(
    None, "--mpp", help="Pixel size of level 0 in um/px (overrides metadata)."
)
TILE_UM_OPTION = typer.Option(DEFAULTS.tile_um, "--tile-um", help="Tile size in um.")
OVERLAP_UM_OPTION = typer.Option(DEFAULTS.overlap_um, "--overlap-um", help="Tile overlap in um.")

# -- output -------------------------------------------------------------------------------------
PROGRESS_OPTION = typer.Option(False, "--progress", help="Show a progress bar.")
JSON_OPTION = typer.Option(False, "--json", help="Print one JSON object.")

# -- training (train, train-atypical, train-detector) -------------------------------------------
CHECKPOINT_OUT_OPTION = typer.Option(None, "--out", "-o", help="Checkpoint to write (.pt).")
SEEDS_OPTION = typer.Option(
    None, "--seeds", help="Comma-separated seeds; one ensemble member each."
)
THREADS_OPTION = typer.Option(None, "--threads", help="CPU threads for torch.")
FAST_DEV_RUN_OPTION = typer.Option(False, "--fast-dev-run", help="One batch: check the pipeline.")


def source_option(examples: str) -> Any:
    """``--source`` / ``-s TYPE:PATH[,key=value...]`` (repeatable): a label source as
    :func:`~mitoscope.train.sources.parse_source_arg` reads it; ``examples`` ends its help."""
    return typer.Option(
        None,
        "--source",
        "-s",
        metavar="TYPE:PATH[,key=value...]",
        help=f"A label source (repeatable; replaces the config's sources), {examples}",
    )
