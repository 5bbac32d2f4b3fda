"""The per-slide summary (``<stem>.summary.json``), built from a :class:`SlideResult`.

One builder for every reader of it: the summary file, the HTML report, the cohort table and its
completion markers.
"""

from __future__ import annotations

from typing import Any

from .errors import InvalidInputError, NoTissueError
from .types import DetectStats, Hotspot, SlideResult


def _hotspot(h: Hotspot | None) -> dict[str, Any] | None:
    if h is None:
        return None
    d: dict[str, Any] = {
        "count": int(h.count),
        "center_px": [round(h.center_px[0], 2), round(h.center_px[1], 2)],
        "radius_um": round(h.radius_um, 3),
        "area_mm2": h.area_mm2,
        "field_fits": bool(h.field_fits),
    }
    if h.note:
        d["note"] = h.note
    return d


def timing_dict(stats: DetectStats) -> dict[str, Any]:
    """``timing_s`` of the summary: the wall seconds of the run's phases (``tissue_s``: tissue
    detection and the tile plan; ``tiles_s``: the tile loop; ``count_s``: merging, counts and
    hotspots; ``write_s``: the output files, report and database rows), the number of tile
    ``workers``, and the per-tile stages (``read_s``, ``propose_s``, ``screen_s``,
    ``classify_s``, ``contours_s``) summed over tiles (``stages_s``: over all worker
    processes, so up to ``workers`` x ``tiles_s``) and their mean per tile (``per_tile_s``)."""
    n = max(1, int(stats.n_tiles))
    return {
        **stats.timing,
        "workers": int(stats.workers),
        "stages_s": dict(stats.stage_s),
        "per_tile_s": {k: round(v / n, 5) for k, v in stats.stage_s.items()},
    }


def summary_dict(result: SlideResult) -> dict[str, Any]:
    """The content of ``<stem>.summary.json`` (a result of :func:`mitoscope.detect_slide`)."""
    from . import __version__

    counts, stats = result.counts, result.stats
    if counts is None or stats is None:
        raise InvalidInputError("a summary needs a SlideResult of detect_slide (counts and stats)")
    per_mm2 = counts.mitoses_per_mm2
    return {
        "slide": result.info.path.name,
        "mpp": result.info.mpp,
        "mpp_source": result.info.mpp_source,
        "width_px": result.info.width,
        "height_px": result.info.height,
        "tissue_area_mm2": round(result.tissue_area_mm2, 6),
        "n_mitoses": int(counts.n_mitoses),
        "mitoses_per_mm2": None if per_mm2 is None else round(float(per_mm2), 4),
        "hotspot_2mm2": _hotspot(result.hotspot_2mm2),
        "hotspot_10hpf": _hotspot(result.hotspot_10hpf),
        "atypical_ratio": counts.atypical_ratio,
        "n_atypical": counts.n_atypical,
        "model": result.model,
        # the dedicated atypical model, when it (not the model's own head) made the calls
        **({"atypical_model": result.atypical_model} if result.atypical_model else {}),
        "proposer": result.proposer,
        "seconds": round(result.seconds, 3),
        "timing_s": timing_dict(stats),
        "threshold": result.threshold,
        "atypical_threshold": counts.atypical_threshold,
        "floor": stats.floor,
        "n_proposed": stats.n_proposed,
        "n_screened_out": stats.n_screened_out,
        "n_candidates": stats.n_candidates,
        "n_scored_above_floor": len(result.detections),
        "n_tiles": stats.n_tiles,
        "work_mpp": stats.work_mpp,
        "propose_mpp": stats.propose_mpp,
        "cascade": stats.cascade,
        "notes": list(stats.notes),
        "version": __version__,
    }


def summary_no_tissue(summary: dict[str, Any]) -> bool:
    """Whether a summary (e.g. read back from a cohort's completion marker) is of a slide
    without tissue (:class:`~mitoscope.errors.NoTissueError`)."""
    return NoTissueError.NOTE in (summary.get("notes") or [])


__all__ = ["summary_dict", "summary_no_tissue", "timing_dict"]
