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


def check_output_names(out_dir: str | Path, stems: Sequence[str]) -> None:
    """Check, before any work, that every output file name fits the file system.

    Raises
    ------
    OutputError
        A ``<stem><suffix>`` name is longer than the directory allows (usually 255 bytes).
    """
    from ..io.atomic import check_name_length

    longest = max(OUTPUT_SUFFIXES, key=len)
    for stem in stems:
        check_name_length(
            Path(out_dir) / f"{stem}{longest}",
            hint=f"rename the input so that its name without extension has at most "
            f"{255 - len(longest)} bytes",
        )


def remove_stale_temporaries(out_dir: str | Path, stem: str) -> None:
    """Delete the temporary files a killed earlier run left for ``stem``'s outputs and for the
    run's database (``.<name>.*.tmp``, see :func:`mitoscope.io.atomic.temp_prefix`)."""
    import glob

    from ..io.atomic import temp_prefix

    out = Path(out_dir)
    for name in (*(f"{stem}{s}" for s in OUTPUT_SUFFIXES), DB_NAME):
        for tmp in out.glob(f"{glob.escape(temp_prefix(name))}*.tmp"):
            try:
                tmp.unlink()
            except OSError:
                pass


class RunDatabase:
    """The run's SlideRunner database, created only when the first slide's rows are ready.

    An existing file is opened (and checked) at once; a new one is created by the first
    :meth:`add_slide`, so a run that fails or is interrupted before any slide is complete leaves
    no empty database behind.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._db: Any = None
        if self.path.exists():
            self._open()

    def _open(self) -> Any:
        if self._db is None:
            from ..io.sliderunner import SlideRunnerDB

            self._db = SlideRunnerDB(self.path)
        return self._db

    def add_slide(self, *args: Any, **kwargs: Any) -> Any:
        return self._open().add_slide(*args, **kwargs)

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def __enter__(self) -> RunDatabase:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


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
    import time

    from ..io import write_detections_csv, write_midog_json, write_qupath_geojson
    from ..io.atomic import atomic_path

    t0 = time.perf_counter()
    out = check_out_dir(out_dir)
    res = run.result
    dets = res.detections
    mpp = res.info.mpp
    atyp_thr = _atypical_threshold(res)
    suffixes = [s for s in OUTPUT_SUFFIXES if config.report or s != ".report.html"]
    paths = {s: out / f"{stem}{s}" for s in suffixes}
    with contextlib.ExitStack() as stack:
        tmp = {s: stack.enter_context(atomic_path(p)) for s, p in paths.items()}
        at_model = res.atypical_model or None  # a dedicated atypical model, named
        write_qupath_geojson(
            tmp[".geojson"], dets, threshold=res.threshold, atypical_threshold=atyp_thr, mpp=mpp,
            atypical_model=at_model,
        )  # fmt: skip
        floor = 0.0 if res.stats is None else float(res.stats.floor)
        write_midog_json(tmp[".midog.json"], dets, mpp=mpp, threshold=res.threshold, floor=floor)
        write_detections_csv(
            tmp[".csv"], dets, mpp=mpp, threshold=res.threshold, atypical_model=at_model
        )
        if config.report:
            from ..report import render_report

            html = render_report(
                res, reader=reader, tissue=run.tissue, classifier=classifier, config=config
            )
            tmp[".report.html"].write_text(html, encoding="utf-8")
        if db is not None:
            add_to_database(db, res)
        if res.stats is not None:  # the other outputs' time (the summary is written last)
            res.stats.timing["write_s"] = round(time.perf_counter() - t0, 3)
        tmp[".summary.json"].write_text(json.dumps(summary_dict(res), indent=2) + "\n")
    return paths


__all__ = [
    "DB_NAME",
    "OUTPUT_SUFFIXES",
    "RunDatabase",
    "add_to_database",
    "check_out_dir",
    "check_output_names",
    "output_stem",
    "remove_stale_temporaries",
    "summary_dict",
    "unique_stems",
    "write_outputs",
]
