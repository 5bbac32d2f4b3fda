"""The options ``candidates`` and ``detect`` share (pixel size, proposer, SAM) and the proposer
built from them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

MPP_OPTION = typer.Option(
    None, "--mpp", help="Pixel size of level 0 in um/px (overrides metadata)."
)
PROPOSER_OPTION = typer.Option("classical", "--proposer", help="classical | sam")
SAM_CHECKPOINT_OPTION = typer.Option(
    None, "--sam-checkpoint", help="Segment Anything checkpoint (needed by --proposer sam)."
)
SAM_VARIANT_OPTION = typer.Option("vit_h", "--sam-variant", help="vit_h | vit_l | vit_b")


def proposer_from_options(
    name: str, *, sam_checkpoint: Path | None, sam_variant: str, **sam_options: Any
) -> Any:
    """``--proposer NAME`` with its SAM options (``get_proposer`` validates both)."""
    from ..candidates import get_proposer

    if name.strip().lower() != "sam":
        return get_proposer(name)
    return get_proposer("sam", checkpoint=sam_checkpoint, variant=sam_variant, **sam_options)
