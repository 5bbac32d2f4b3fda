"""Building a proposer from the CLI options shared by ``candidates`` and ``detect``."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def proposer_from_options(
    name: str, *, sam_checkpoint: Path | None, sam_variant: str, **sam_options: Any
) -> Any:
    """``--proposer NAME`` with its SAM options (``get_proposer`` validates both)."""
    from ..candidates import get_proposer

    if name.strip().lower() != "sam":
        return get_proposer(name)
    return get_proposer("sam", checkpoint=sam_checkpoint, variant=sam_variant, **sam_options)
