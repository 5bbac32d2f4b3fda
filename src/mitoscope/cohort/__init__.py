"""Cohorts: many slides in parallel (local processes or Ray), resumable, with a summary table.

>>> from mitoscope.cohort import run_cohort
>>> res = run_cohort(["a.svs", "b.svs"], out_dir="results", workers=2)  # doctest: +SKIP
"""

from .executors import EXECUTORS, SlideOutcome, SlideTask
from .manifest import MARKER_SUFFIX, read_complete_marker, write_marker
from .run import SUMMARY_COLUMNS, SUMMARY_NAME, CohortResult, SlideRecord, run_cohort

__all__ = [
    "EXECUTORS",
    "MARKER_SUFFIX",
    "SUMMARY_COLUMNS",
    "SUMMARY_NAME",
    "CohortResult",
    "SlideOutcome",
    "SlideRecord",
    "SlideTask",
    "read_complete_marker",
    "run_cohort",
    "write_marker",
]
