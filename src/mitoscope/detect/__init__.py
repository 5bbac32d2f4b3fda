"""Detection: the stages composed into one slide's result and outputs.

``config.py`` the options (:class:`DetectConfig`), ``tiles.py`` the one tile loop (read ->
propose -> screen -> classify), ``parallel.py`` the worker processes, ``run.py``
:func:`detect_slide`, ``outputs.py`` stems, files and the database.
"""

from __future__ import annotations

from .config import DetectConfig
from .outputs import (
    DB_NAME,
    OUTPUT_SUFFIXES,
    RunDatabase,
    add_to_database,
    check_out_dir,
    check_output_names,
    output_stem,
    remove_stale_temporaries,
    unique_stems,
    write_outputs,
)
from .parallel import MAX_AUTO_WORKERS, resolve_workers, usable_cores
from .run import SlideRun, count_slide, detect_slide, run_slide
from .tiles import DetectionParams, TileWork, process_tile, tile_detections

__all__ = [
    "DB_NAME",
    "MAX_AUTO_WORKERS",
    "OUTPUT_SUFFIXES",
    "DetectConfig",
    "DetectionParams",
    "RunDatabase",
    "SlideRun",
    "TileWork",
    "add_to_database",
    "check_out_dir",
    "check_output_names",
    "count_slide",
    "detect_slide",
    "output_stem",
    "process_tile",
    "remove_stale_temporaries",
    "resolve_workers",
    "run_slide",
    "tile_detections",
    "unique_stems",
    "usable_cores",
    "write_outputs",
]
