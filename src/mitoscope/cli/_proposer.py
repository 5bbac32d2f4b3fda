"""The proposer options ``candidates`` and ``detect`` share (proposer, SAM, detector) and the
proposer built from them; the pixel size and tiling options are in :mod:`._options`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

PROPOSER_OPTION = typer.Option("classical", "--proposer", help="classical | sam | detector")
SAM_CHECKPOINT_OPTION = typer.Option(
    None, "--sam-checkpoint", help="Segment Anything checkpoint (needed by --proposer sam)."
)
SAM_VARIANT_OPTION = typer.Option("vit_h", "--sam-variant", help="vit_h | vit_l | vit_b")
DETECTOR_OPTION = typer.Option(
    None,
    "--detector",
    help="Detector checkpoint from mitoscope train-detector (needed by --proposer detector and "
    "--mode detector).",
)


def proposer_from_options(
    name: str,
    *,
    sam_checkpoint: Path | None = None,
    sam_variant: str = "vit_h",
    detector: Path | None = None,
    device: str | None = None,
    **sam_options: Any,
) -> Any:
    """``--proposer NAME`` with its options: one registry lookup (``get_proposer`` validates
    the name and each proposer its options)."""
    from ..candidates import get_proposer

    key = name.strip().lower()
    options = {
        "sam": lambda: {"checkpoint": sam_checkpoint, "variant": sam_variant, "device": device,
                        **sam_options},
        "detector": lambda: {"checkpoint": detector, "device": device},
    }  # fmt: skip
    return get_proposer(key, **options.get(key, dict)())
