"""The cohort branch of ``mitoscope detect`` (several inputs, ``--executor ray``, ``--address``)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from .run import run_cohort


def detect_cohort(
    paths: list[Path],
    *,
    out_dir: Path,
    proposer: Any,
    classifier: Any,
    config: Any,
    mpp: float | None,
    executor: str,
    workers: int,
    address: str | None,
    resume: bool,
    quiet: bool,
) -> int:
    """Run :func:`~mitoscope.cohort.run_cohort` and print one line per slide; the exit code."""
    res = run_cohort(
        paths,
        out_dir=out_dir,
        executor=executor,
        workers=workers,
        address=address,
        proposer=proposer,
        classifier=classifier,
        config=config,
        mpp=mpp,
        resume=resume,
        progress=not quiet,
    )
    from ..errors import NoTissueError
    from ..summary import summary_no_tissue

    failures = len(res.failed)
    for rec in res.records:
        if rec.status == "failed":
            err = str(rec.error)
            named = err.startswith((str(rec.path), Path(rec.path).name))
            print(f"mitoscope: error: {err if named else f'{rec.path}: {err}'}", file=sys.stderr)
            continue
        s = rec.summary or {}
        if summary_no_tissue(s):
            # complete outputs of a no-tissue slide from an earlier version: still bad input
            failures += 1
            print(f"mitoscope: error: {NoTissueError(rec.path)}", file=sys.stderr)
            continue
        if quiet:
            continue
        per = s.get("mitoses_per_mm2")
        hot = (s.get("hotspot_2mm2") or {}).get("count", 0)
        tail = " (complete from an earlier run)" if rec.status == "skipped" else ""
        print(
            f"{rec.slide}: {s.get('n_mitoses', 0)} mitoses"
            f" ({'n/a' if per is None else f'{per:.2f}'}/mm² of "
            f"{float(s.get('tissue_area_mm2') or 0):.2f} mm² tissue), hotspot 2 mm²: {hot}, "
            f"{rec.seconds:.1f} s -> {Path(out_dir) / rec.stem}.*{tail}"
        )
    if failures and quiet:  # one line per failed input, nothing more
        return 2
    if failures:
        print(
            f"mitoscope: {failures} of {len(res.records)} input(s) failed; see the errors "
            f"above and {res.summary_path}",
            file=sys.stderr,
        )
        return 2
    return 0
