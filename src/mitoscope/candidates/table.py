"""Candidates as a table (CSV), one row per candidate, level-0 pixels."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from ..types import Candidates

#: CSV columns written by :func:`write_candidates_csv`
CSV_COLUMNS = (
    "x_px",
    "y_px",
    "area_um2",
    "score",
    "bbox_x0_px",
    "bbox_y0_px",
    "bbox_x1_px",
    "bbox_y1_px",
    "proposer",
)


def candidates_to_csv_text(c: Candidates) -> str:
    """The CSV text of ``c`` (header :data:`CSV_COLUMNS`; bbox ``x1, y1`` exclusive)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    for i in range(len(c)):
        x0, y0, x1, y1 = (int(v) for v in c.bbox[i])
        w.writerow(
            [
                f"{c.x_px[i]:.2f}",
                f"{c.y_px[i]:.2f}",
                f"{c.area_um2[i]:.3f}",
                f"{float(c.score[i]):.5f}",
                x0,
                y0,
                x1,
                y1,
                c.proposer,
            ]
        )
    return buf.getvalue()


def write_candidates_csv(c: Candidates, path: str | Path) -> Path:
    """Write ``c`` to ``path`` as CSV atomically (temporary file, then rename)."""
    from ..io.atomic import atomic_write_text

    return atomic_write_text(path, candidates_to_csv_text(c))
