"""mitoscope: find, count and grade mitotic figures in H&E whole-slide images.

The public API (heavy modules load on first use)::

    from mitoscope import open_slide, detect_slide, load_classifier, get_proposer

    result = detect_slide("slide.svs", out_dir="results")
"""

from __future__ import annotations

import importlib
from typing import Any

from .errors import MitoscopeError
from .slide import open_slide

__version__ = "0.1.0"

_LAZY = {
    "detect_slide": "mitoscope.detect",
    "DetectConfig": "mitoscope.detect",
    "load_classifier": "mitoscope.classify",
    "get_proposer": "mitoscope.candidates",
    "run_cohort": "mitoscope.cohort",
    "read_annotations": "mitoscope.io.annotations",
    "match_points": "mitoscope.evaluate",
}

__all__ = ["MitoscopeError", "__version__", "open_slide", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'mitoscope' has no attribute {name!r}")
