"""Former home of slide-level detection; the names now live in :mod:`mitoscope.detect`.

Kept importable (``from mitoscope.pipeline import detect_slide, DetectConfig, ...``) while
callers move to ``mitoscope.detect`` (or ``mitoscope.detect_slide``). New code: import from
:mod:`mitoscope.detect` and the modules named below.
"""

from __future__ import annotations

from .candidates.merge import merge_detections
from .candidates.tiles import downsample as _downsample
from .candidates.tiles import propose_tile
from .candidates.tiles import upscale_candidates as _upscale_candidates
from .detect import (
    DB_NAME,
    MAX_AUTO_WORKERS,
    OUTPUT_SUFFIXES,
    DetectConfig,
    DetectionParams,
    TileWork,
    check_out_dir,
    detect_slide,
    output_stem,
    process_tile,
    resolve_workers,
    tile_detections,
    usable_cores,
    write_outputs,
)
from .errors import NoTissueError
from .geometry import mask_contour
from .summary import summary_dict

#: note stored in the result of a slide without tissue (``NoTissueError.NOTE``)
NO_TISSUE_NOTE = NoTissueError.NOTE

__all__ = [
    "DB_NAME",
    "MAX_AUTO_WORKERS",
    "NO_TISSUE_NOTE",
    "OUTPUT_SUFFIXES",
    "DetectConfig",
    "DetectionParams",
    "TileWork",
    "_downsample",
    "_upscale_candidates",
    "check_out_dir",
    "detect_slide",
    "mask_contour",
    "merge_detections",
    "output_stem",
    "process_tile",
    "propose_tile",
    "resolve_workers",
    "summary_dict",
    "tile_detections",
    "usable_cores",
    "write_outputs",
]
