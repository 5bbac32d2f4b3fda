"""Per-slide outputs: file stems, the output directory, the files and the run's database.

A single slide (``mitoscope detect``) and a cohort (:mod:`mitoscope.cohort`) go through the
same functions: :func:`unique_stems`, :func:`write_outputs` (files, all or none) and
:func:`add_to_database` (the SQLite rows of one slide).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import OutputError
from ..summary import summary_dict
from ..types import SlideResult

if TYPE_CHECKING:
    from ..slide.reader import SlideReader
    from .config import DetectConfig
    from .run import SlideRun

OUTPUT_SUFFIXES = (".geojson", ".midog.json", ".csv", ".summary.json", ".report.html")
DB_NAME = "mitoscope.sqlite"


def output_stem(path: str | Path) -> str:
    """``slide.svs`` -> ``slide``; ``x.ome.tiff`` -> ``x``."""
    name = Path(path).name
    for suffix in (".ome.tiff", ".ome.tif"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem or name


def unique_stems(paths: Sequence[str | Path]) -> list[str]:
    """Output stems of several inputs; a repeated stem gets ``-2``, ``-3``, ... in input order."""
    stems: list[str] = []
    for p in paths:
        base = stem = output_stem(p)
        k = 2
        while stem in stems:
            stem = f"{base}-{k}"
            k += 1
        stems.append(stem)
    return stems


def check_out_dir(out_dir: str | Path) -> Path:
    """Create ``out_dir`` if needed and check that it is a writable directory."""
    p = Path(out_dir)
    if p.exists() and not p.is_dir():
        raise OutputError(f"--out {p} is a file, not a directory; choose a directory")
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(
            f"cannot create output directory {p}: {exc.strerror}; choose another --out"
        ) from None
    if not os.access(p, os.W_OK | os.X_OK):
        raise OutputError(f"output directory {p} is not writable; choose another --out")
    return p


def _atypical_threshold(result: SlideResult) -> float:
    return 0.5 if result.counts is None else float(result.counts.atypical_threshold)


def add_to_database(db: Any, result: SlideResult) -> None:
    """Append one slide's detections to the run's SlideRunner database, in one transaction
    that replaces the slide's earlier rows."""
    info = result.info
    db.add_slide(
        info.path.name,
        width=info.width,
        height=info.height,
        directory=str(info.path.parent) if info.backend != "array" else "",
        detections=result.detections,
        threshold=result.threshold,
        atypical_threshold=_atypical_threshold(result),
    )


def write_outputs(
    run: SlideRun,
    out_dir: str | Path,
    *,
    stem: str,
    reader: SlideReader,
    classifier: Any,
    config: DetectConfig,
    db: Any = None,
) -> dict[str, Path]:
    """Write every per-slide output; all files appear together or not at all.

    Each file is first written to a temporary name beside its destination; only when all of
    them (and the database transaction) succeeded are they renamed into place. On any error
    the temporary files are removed and earlier outputs stay untouched.
    """
    import contextlib
    import json

    from ..io import write_detections_csv, write_midog_json, write_qupath_geojson
    from ..io.atomic import atomic_path

    out = check_out_dir(out_dir)
    res = run.result
    dets = res.detections
    mpp = res.info.mpp
    atyp_thr = _atypical_threshold(res)
    suffixes = [s for s in OUTPUT_SUFFIXES if config.report or s != ".report.html"]
    paths = {s: out / f"{stem}{s}" for s in suffixes}
    with contextlib.ExitStack() as stack:
        tmp = {s: stack.enter_context(atomic_path(p)) for s, p in paths.items()}
        write_qupath_geojson(
            tmp[".geojson"], dets, threshold=res.threshold, atypical_threshold=atyp_thr, mpp=mpp
        )
        floor = 0.0 if res.stats is None else float(res.stats.floor)
        write_midog_json(tmp[".midog.json"], dets, mpp=mpp, threshold=res.threshold, floor=floor)
        write_detections_csv(tmp[".csv"], dets, mpp=mpp, threshold=res.threshold)
        tmp[".summary.json"].write_text(json.dumps(summary_dict(res), indent=2) + "\n")
        if config.report:
            from ..report import render_report

            html = render_report(
                res, reader=reader, tissue=run.tissue, classifier=classifier, config=config
            )
            tmp[".report.html"].write_text(html, encoding="utf-8")
        if db is not None:
            add_to_database(db, res)
    return paths


__all__ = [
    "DB_NAME",
    "OUTPUT_SUFFIXES",
    "add_to_database",
    "check_out_dir",
    "output_stem",
    "summary_dict",
    "unique_stems",
    "write_outputs",
]
