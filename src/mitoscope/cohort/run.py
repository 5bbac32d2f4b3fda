"""``run_cohort``: many slides, in parallel, resumable, one summary table at the end."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InvalidInputError
from .executors import EXECUTORS, Models, SlideOutcome, SlideTask, error_line
from .manifest import read_complete_marker, write_marker

SUMMARY_NAME = "cohort_summary.csv"
SUMMARY_COLUMNS = (
    "slide",
    "status",
    "n_mitoses",
    "mitoses_per_mm2",
    "hotspot_2mm2_count",
    "hotspot_10hpf_count",
    "atypical_ratio",
    "tissue_area_mm2",
    "seconds",
    "error",
    "path",
)
#: config fields that do not change the results (left out of the resume key)
_NON_RESULT_FIELDS = ("workers", "batch_size")


@dataclass
class SlideRecord:
    """One row of the cohort summary."""

    slide: str
    path: Path
    stem: str
    status: str  # "done" | "skipped" (complete from an earlier run) | "failed"
    summary: dict[str, Any] | None = None
    seconds: float = 0.0
    error: str = ""

    def row(self) -> dict[str, Any]:
        s = self.summary or {}

        def hot(name: str) -> Any:
            h = s.get(name)
            return h.get("count") if isinstance(h, dict) else None

        return {
            "slide": self.slide,
            "status": self.status,
            "n_mitoses": s.get("n_mitoses"),
            "mitoses_per_mm2": s.get("mitoses_per_mm2"),
            "hotspot_2mm2_count": hot("hotspot_2mm2"),
            "hotspot_10hpf_count": hot("hotspot_10hpf"),
            "atypical_ratio": s.get("atypical_ratio"),
            "tissue_area_mm2": s.get("tissue_area_mm2"),
            "seconds": round(float(self.seconds), 3),
            "error": self.error,
            "path": str(self.path),
        }


@dataclass
class CohortResult:
    """What :func:`run_cohort` did: one record per input slide, in input order."""

    out_dir: Path
    records: list[SlideRecord] = field(default_factory=list)
    summary_path: Path | None = None
    seconds: float = 0.0

    @property
    def failed(self) -> list[SlideRecord]:
        return [r for r in self.records if r.status == "failed"]

    @property
    def exit_code(self) -> int:
        """0 when every slide is complete, 2 when any failed (the CLI's convention)."""
        return 2 if self.failed else 0

    def counts(self) -> dict[str, int]:
        out = {"done": 0, "skipped": 0, "failed": 0}
        for r in self.records:
            out[r.status] = out.get(r.status, 0) + 1
        return out


def options_key(*, proposer: Any, classifier: Any, config: Any, mpp: float | None) -> str:
    """A short fingerprint of the options that shape a slide's results (for resuming)."""

    def ident(obj: Any, default: str) -> str:
        if obj is None:
            return default
        if isinstance(obj, (str, Path)):
            return str(obj)
        name = getattr(obj, "name", None) or type(obj).__name__
        digest = getattr(obj, "fingerprint", None)
        extra = f":{digest()}" if callable(digest) else ""
        return f"{type(obj).__module__}.{type(obj).__qualname__}:{name}{extra}"

    cfg: dict[str, Any] = {}
    if config is not None:
        cfg = {k: v for k, v in asdict(config).items() if k not in _NON_RESULT_FIELDS}
    payload = {
        "proposer": ident(proposer, "classical"),
        "classifier": ident(classifier, "bundled"),
        "config": cfg,
        "mpp": mpp,
    }
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def write_cohort_summary(records: Sequence[SlideRecord], path: Path) -> Path:
    """Write the one-row-per-slide table atomically."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(SUMMARY_COLUMNS), lineterminator="\n")
    w.writeheader()
    for r in records:
        row = r.row()
        w.writerow({k: ("" if v is None else _fmt(v)) for k, v in row.items()})
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(buf.getvalue(), encoding="utf-8")
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def _fmt(v: Any) -> Any:
    if isinstance(v, float):
        return "" if math.isnan(v) else repr(round(v, 6))
    return v


def run_cohort(
    slides: Sequence[str | os.PathLike[str]],
    *,
    out_dir: str | os.PathLike[str],
    executor: str = "local",
    workers: int = 1,
    address: str | None = None,
    proposer: Any = None,
    classifier: Any = None,
    config: Any = None,
    mpp: float | None = None,
    resume: bool = True,
    progress: bool = True,
    db: bool = True,
) -> CohortResult:
    """Detect mitotic figures in many slides; resumable, one summary table at the end.

    Parameters
    ----------
    slides : sequence of paths
        Whole-slide images or region images (a repeated output stem gets ``-2``, ``-3``, ...).
    out_dir : path
        Gets every slide's outputs (``<stem>.geojson``, ``.midog.json``, ``.csv``,
        ``.summary.json``, ``.report.html``), a completion marker ``<stem>.done.json`` per
        slide, the run's SlideRunner database ``mitoscope.sqlite`` and ``cohort_summary.csv``.
    executor : {"local", "ray"}
        ``local``: ``workers`` processes on this machine (``workers=1`` runs the slides one
        after another in this process; a single slide with ``workers > 1`` parallelises its
        tiles instead). ``ray``: Ray tasks, one CPU each, on a local Ray instance limited to
        ``workers`` CPUs, or on the cluster at ``address``.
    workers : int
        Slides processed at the same time (local processes or Ray CPUs).
    address : str, optional
        Address of an existing Ray cluster (``"auto"``, ``"ray://host:10001"``); Ray only.
    proposer, classifier, config, mpp
        As in :func:`mitoscope.detect.detect_slide`; objects are sent to each worker once.
        ``None`` means the classical proposer and the bundled classifier.
    resume : bool
        Skip slides whose outputs are complete from an earlier run with the same options
        (see :mod:`mitoscope.cohort.manifest`); ``False`` redoes everything.
    progress : bool
        One line per finished slide on stderr.
    db : bool
        Append every slide's detections to ``out_dir/mitoscope.sqlite`` (only this driver
        process writes it; each slide in one transaction that replaces its earlier rows).

    Returns
    -------
    CohortResult
        ``exit_code`` is 2 when any slide failed; the others are complete regardless.

    Examples
    --------
    >>> res = run_cohort(["a.svs", "b.svs"], out_dir="results", executor="ray", workers=2)  # doctest: +SKIP
    >>> res.counts()  # doctest: +SKIP
    {'done': 2, 'skipped': 0, 'failed': 0}
    """
    from ..detect import DB_NAME, DetectConfig, check_out_dir, check_output_names, unique_stems

    t0 = time.perf_counter()
    ex = str(executor).strip().lower()
    if ex not in EXECUTORS:
        raise InvalidInputError(
            f"unknown executor {executor!r}; choose one of {', '.join(EXECUTORS)}"
        )
    if int(workers) < 1:
        raise InvalidInputError(f"--workers must be at least 1, got {workers}")
    if address and ex != "ray":
        raise InvalidInputError("--address is for --executor ray; add --executor ray or drop it")
    paths = [Path(s) for s in slides]
    if not paths:
        raise InvalidInputError("no input slides given")
    stems = unique_stems(paths)
    out = check_out_dir(out_dir)
    check_output_names(out, stems)
    cfg = config if config is not None else DetectConfig()
    key = options_key(proposer=proposer, classifier=classifier, config=cfg, mpp=mpp)

    records = [
        SlideRecord(slide=p.name, path=p, stem=s, status="pending")
        for p, s in zip(paths, stems, strict=True)
    ]
    tasks: list[SlideTask] = []
    for i, rec in enumerate(records):
        marker = (
            read_complete_marker(out, rec.stem, slide=rec.path, options_key=key) if resume else None
        )
        if marker is not None:
            rec.status = "skipped"
            rec.summary = marker.get("summary")
            rec.seconds = float((rec.summary or {}).get("seconds") or 0.0)
        else:
            _remove_stale_temporaries(out, rec.stem)
            tasks.append(SlideTask(index=i, path=rec.path, stem=rec.stem))

    from dataclasses import replace

    n_slide_workers = min(int(workers), max(1, len(tasks)))
    if ex == "local" and len(tasks) == 1:
        # one slide: use the workers for its tiles instead
        cfg = replace(cfg, workers=max(int(workers), int(cfg.workers)))
    elif n_slide_workers > 1 or ex == "ray":
        cfg = replace(cfg, workers=1)  # parallel over slides, not tiles: no nested pools
    threads = None
    if n_slide_workers > 1:
        from ..detect.parallel import usable_cores

        threads = max(1, usable_cores() // n_slide_workers)
    models = Models(
        proposer=proposer, classifier=classifier, config=cfg, mpp=mpp, torch_threads=threads
    )
    database = None
    if db and tasks:
        from ..detect.outputs import RunDatabase

        database = RunDatabase(out / DB_NAME)  # created with the first slide's rows
    n_total = len(records)
    try:
        if tasks:
            if ex == "ray":
                from .executors import run_ray

                outcomes = run_ray(
                    tasks, out_dir=str(out), models=models, key=key,
                    workers=int(workers) if not address else None, address=address,
                )  # fmt: skip
            elif n_slide_workers <= 1:
                from .executors import run_serial

                outcomes = run_serial(tasks, out_dir=str(out), models=models, key=key)
            else:
                from .executors import run_local_pool

                outcomes = run_local_pool(
                    tasks, out_dir=str(out), models=models, key=key, workers=n_slide_workers
                )
            finished = n_total - len(tasks)
            for outcome in outcomes:
                finished += 1
                rec = records[outcome.task.index]
                _finish(rec, outcome, out=out, database=database, key=key)
                if progress:
                    _report(rec, finished, n_total)
    finally:
        if database is not None:
            database.close()
        summary_path = out / SUMMARY_NAME
        if any(r.status != "pending" for r in records):  # none when nothing ran (no Ray, say)
            write_cohort_summary(records, summary_path)
    res = CohortResult(
        out_dir=out, records=records, summary_path=summary_path, seconds=time.perf_counter() - t0
    )
    if progress:
        c = res.counts()
        print(
            f"cohort: {c['done']} done, {c['skipped']} skipped (complete), {c['failed']} failed "
            f"in {res.seconds:.1f} s; table: {summary_path}",
            file=sys.stderr,
        )
    return res


def _finish(rec: SlideRecord, outcome: SlideOutcome, *, out: Path, database: Any, key: str) -> None:
    """Driver side of a finished slide: database rows, then the completion marker."""
    from ..detect.outputs import add_to_database
    from ..summary import summary_dict

    rec.seconds = outcome.seconds
    if outcome.status != "done":
        rec.status, rec.error = "failed", outcome.error
        return
    stats = outcome.result.stats
    if stats is not None and stats.no_tissue:  # bad input: nothing was written for it
        from ..errors import NoTissueError

        rec.status, rec.error = "failed", str(NoTissueError())
        return
    try:
        if database is not None:
            add_to_database(database, outcome.result)
        rec.summary = summary_dict(outcome.result)
        write_marker(
            out,
            rec.stem,
            slide=rec.path,
            files=[out / f for f in outcome.files],
            options_key=key,
            summary=rec.summary,
        )
        rec.status = "done"
    except Exception as exc:  # e.g. the disk filled up while writing the marker
        rec.status, rec.error = "failed", error_line(exc)


def _remove_stale_temporaries(out: Path, stem: str) -> None:
    """Delete temporary files a killed earlier run left for this slide (``.<stem><suffix>.*.tmp``)."""
    from ..detect.outputs import OUTPUT_SUFFIXES
    from ..io.atomic import temp_prefix
    from .manifest import MARKER_SUFFIX

    for suffix in (*OUTPUT_SUFFIXES, MARKER_SUFFIX):
        for tmp in out.glob(f"{glob_escape(temp_prefix(stem + suffix))}*.tmp"):
            try:
                tmp.unlink()
            except OSError:
                pass


def glob_escape(text: str) -> str:
    import glob

    return glob.escape(text)


def _report(rec: SlideRecord, finished: int, total: int) -> None:
    if rec.status == "failed":
        msg = f"FAILED: {rec.error}"
    else:
        n = (rec.summary or {}).get("n_mitoses")
        msg = f"done in {rec.seconds:.1f} s, {n} mitoses"
    print(f"[{finished}/{total}] {rec.slide}: {msg}", file=sys.stderr, flush=True)
