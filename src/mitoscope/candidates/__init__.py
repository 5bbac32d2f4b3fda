"""Stage 1: candidate proposers (every nucleus-sized object, with a mask).

``get_proposer("classical")`` (default, no weights) or ``get_proposer("sam", checkpoint=...)``
turns a tile into :class:`~mitoscope.types.Candidates`; :func:`propose_slide` runs a proposer
over the tissue tiles of a slide and merges the overlaps once.
"""

from __future__ import annotations

from typing import Any

from .base import Proposer, get_proposer
from .merge import merge_candidates

__all__ = [
    "ClassicalProposer",
    "Proposer",
    "SamProposer",
    "get_proposer",
    "merge_candidates",
    "propose_image",
    "propose_slide",
]


def __getattr__(name: str) -> Any:  # lazy: keep ``import mitoscope.candidates`` light
    if name == "ClassicalProposer":
        from .classical import ClassicalProposer

        return ClassicalProposer
    if name == "SamProposer":
        from .sam import SamProposer

        return SamProposer
    if name in ("propose_image", "propose_slide"):
        from . import slide

        return getattr(slide, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
