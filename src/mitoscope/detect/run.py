"""Detect one slide: the stages composed.

::

    open_slide (mpp override) -> tissue_for_detection -> plan_tiles (um) ->
    iter_tiles (read at the classifier's pixel size -> propose -> screen -> keep the tile
    core's candidates) -> Batcher (classify across tiles) -> tile_detections (level 0, contours)
    -> merge_detections once -> keep those on tissue -> count (hotspots, per mm², atypical)

and, with ``out_dir``, :func:`~mitoscope.detect.outputs.write_outputs`. Only the detections
(small) are kept across tiles: memory does not grow with the slide beyond them.
"""

from __future__ import annotations

import contextlib
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import InvalidInputError, NoTissueError
from ..types import Detections, DetectStats, SlideCounts, SlideResult, Tile
from ..units import validate_mpp
from .config import DetectConfig

if TYPE_CHECKING:
    from ..slide.reader import SlideReader
    from ..slide.tissue import TissueMask


@dataclass
class SlideRun:
    """One slide's result and what its report needs besides it (the tissue mask)."""

    result: SlideResult
    tissue: TissueMask | None


def detect_slide(
    path_or_reader: str | Path | SlideReader,
    *,
    proposer: Any = None,
    classifier: Any = None,
    config: DetectConfig | None = None,
    out_dir: str | Path | None = None,
    db: Any = None,
    progress: bool = True,
    mpp: float | None = None,
    stem: str | None = None,
    screen: Any = None,
) -> SlideResult:
    """Detect mitotic figures in one slide or region image.

    Parameters
    ----------
    path_or_reader : path or SlideReader
        A slide file / region image, or an open reader (e.g. :class:`~mitoscope.slide.ArraySlide`).
    proposer : Proposer, optional
        Stage 1; default ``get_proposer("classical")``.
    classifier : Classifier, optional
        Stage 2 (``predict_candidates``, ``input_mpp``, ``threshold``, ...); default: the
        bundled model (``mitoscope.classify.load_classifier()``), with the bundled dedicated
        atypical model when it is installed (:mod:`mitoscope.classify.atypical`).
    config : DetectConfig, optional
    out_dir : path, optional
        Write ``<stem>.geojson``, ``.midog.json``, ``.csv``, ``.summary.json`` and
        ``.report.html`` here (atomically; nothing is written when detection fails or the
        input has no tissue).
    db : SlideRunnerDB, optional
        Append the slide and its mitoses to this database (with ``out_dir``).
    progress : bool
        Show a progress bar (stderr) in mm² of tissue done, with the tiles done, the speed
        (mm²/s) and the time left.
    mpp : float, optional
        Level-0 pixel size override (um/px), for files without one.
    stem : str, optional
        Output file stem; default: the input's file name without extension.
    screen : Screen or path, optional
        Cascade stage 1 (:mod:`mitoscope.classify.screen`); default: the bundled screen when
        the cascade is on (``config.cascade``; by default on with the bundled classifier).

    Returns
    -------
    SlideResult
        With ``stats.no_tissue`` (and a ``RuntimeWarning``) when the input has no tissue: an
        empty result, and nothing written to ``out_dir`` or ``db`` (the CLI reports it as
        :class:`~mitoscope.errors.NoTissueError`, exit 2).

    Examples
    --------
    >>> result = detect_slide("slide.svs", out_dir="results")  # doctest: +SKIP
    >>> len(result.mitoses), result.hotspot_2mm2.count  # doctest: +SKIP
    """
    from ..slide import open_slide
    from .outputs import check_out_dir, check_output_names, output_stem, write_outputs

    cfg = config or DetectConfig()
    if proposer is None or isinstance(proposer, str):
        from ..candidates import get_proposer

        proposer = get_proposer(proposer or "classical")
    use_cascade = cfg.cascade
    if use_cascade is None:
        use_cascade = classifier is None or screen is not None
    if classifier is None:
        from ..classify import load_classifier
        from ..classify.atypical import attach_atypical_model

        classifier = attach_atypical_model(load_classifier())  # + the bundled atypical model
    if not use_cascade:
        screen = None
    elif screen is None or isinstance(screen, (str, Path)):
        from ..classify.screen import load_screen

        screen = load_screen(screen or cfg.screen_model)
    if out_dir is not None:
        out_dir = check_out_dir(out_dir)

    own = not hasattr(path_or_reader, "read_region_mpp")
    if out_dir is not None and (stem or own):
        check_output_names(out_dir, [stem or output_stem(path_or_reader)])  # type: ignore[arg-type]
    reader = open_slide(path_or_reader, mpp=mpp) if own else path_or_reader  # type: ignore[arg-type]
    try:
        run = run_slide(reader, proposer=proposer, classifier=classifier, cfg=cfg,
                        progress=progress, screen=screen)  # fmt: skip
        if out_dir is not None and not run.result.stats.no_tissue:
            write_outputs(
                run,
                out_dir,
                stem=stem or output_stem(reader.info.path),
                reader=reader,
                classifier=classifier,
                config=cfg,
                db=db,
            )
    finally:
        if own:
            reader.close()
    return run.result


def _resolution(
    reader: SlideReader, classifier: Any, cfg: DetectConfig, screen: Any
) -> tuple[float, float | None]:
    """The work pixel size (native when close enough) and the proposal's (``None``: work)."""
    work_mpp = validate_mpp(cfg.work_mpp or classifier.input_mpp, name="work_mpp")
    if abs(reader.info.mpp / work_mpp - 1.0) <= cfg.mpp_tolerance:
        work_mpp = reader.info.mpp  # close enough: read natively, no resampling
    propose_mpp = cfg.propose_mpp
    if screen is not None:
        smpp = float(screen.input_mpp)
        if propose_mpp is not None and abs(float(propose_mpp) / smpp - 1.0) > 0.05:
            raise InvalidInputError(
                f"the cascade screen works at {smpp} um/px, so candidates are proposed there; "
                f"--propose-mpp {propose_mpp} needs --no-cascade"
            )
        propose_mpp = smpp if smpp > work_mpp * 1.05 else None
    return work_mpp, propose_mpp


def run_slide(
    reader: SlideReader,
    *,
    proposer: Any,
    classifier: Any,
    cfg: DetectConfig,
    progress: bool = False,
    screen: Any = None,
) -> SlideRun:
    """Detect and count on an open slide with resolved stages (no outputs)."""
    from functools import partial

    from ..candidates.merge import merge_detections
    from ..slide.tiling import plan_tiles
    from ..slide.tissue import tissue_for_detection
    from .parallel import band_map, limited_torch_threads, main_threads
    from .tiles import (
        TILE_STAGES,
        Batcher,
        DetectionParams,
        Scoring,
        classify_in_workers,
        iter_tiles,
        tile_detections,
    )

    t0 = time.perf_counter()
    info = reader.info
    workers = int(cfg.workers)
    work_mpp, propose_mpp = _resolution(reader, classifier, cfg, screen)
    threshold = float(classifier.threshold if cfg.threshold is None else cfg.threshold)
    atyp_thr = float(
        getattr(classifier, "atypical_threshold", 0.5)
        if cfg.atypical_threshold is None
        else cfg.atypical_threshold
    )
    floor = min(float(cfg.floor), threshold)

    if workers > 1:  # a big single-level slide's banded tissue pass runs in the workers too
        reader.band_map = (partial(band_map, workers=workers), workers)
    try:
        tissue, tissue_area, notes = tissue_for_detection(
            reader, tile_um=cfg.tile_um, thumb_mpp=cfg.thumb_mpp
        )
    finally:
        reader.band_map = None
    no_tissue = not tissue.mask.any()
    tiles: list[Tile] = []
    if no_tissue:
        notes.append(NoTissueError.NOTE)
        warnings.warn(f"{info.path.name}: {NoTissueError.NOTE}", RuntimeWarning, stacklevel=3)
    else:
        tiles = plan_tiles(info, tissue, tile_um=cfg.tile_um, overlap_um=cfg.overlap_um)

    in_workers = classify_in_workers(classifier, workers) and len(tiles) > 1
    params = DetectionParams(
        slide_mpp=info.mpp,
        work_mpp=work_mpp,
        floor=floor,
        contour_min_prob=threshold,
        tolerance_px=cfg.contour_tolerance_px,
    )
    scoring = Scoring(params=params, threshold=threshold, batch_size=int(cfg.batch_size))
    stain = None
    if cfg.stain_normalize is not None:
        from ..stain.normalize import fitted_normalizer

        stain = fitted_normalizer(cfg.stain_normalize, str(cfg.stain_target))
        notes.append(
            f"tiles stain-normalised ({cfg.stain_normalize}) to {Path(cfg.stain_target).name}"
        )
    n = {"proposed": 0, "candidates": 0, "screened_out": 0}
    t_tiles = time.perf_counter()
    timing = {"tissue_s": t_tiles - t0}  # wall clock of the run's phases
    stages = dict.fromkeys(TILE_STAGES, 0.0)  # per-tile stages, summed over tiles and processes
    parts: list[Detections] = []
    batcher = Batcher(classifier, batch_size=int(cfg.batch_size), threshold=threshold)

    def emit(scoring_call: Any) -> None:
        t = time.perf_counter()
        items = scoring_call()
        t_scored = time.perf_counter()
        for work, mf, atyp in items:
            d = tile_detections(work, mf, atyp, **vars(params))
            if len(d):
                parts.append(d)
        stages["classify_s"] += t_scored - t
        stages["contours_s"] += time.perf_counter() - t_scored

    bar = TissueProgress(info.path.name, tiles, tissue_area) if progress and tiles else None
    threads = limited_torch_threads(main_threads(workers)) if workers > 1 else None
    with threads or contextlib.nullcontext():
        try:
            for work in iter_tiles(
                reader, tiles, proposer=proposer, work_mpp=work_mpp, workers=workers,
                propose_mpp=propose_mpp, screen=screen,
                classifier=classifier if in_workers else None, scoring=scoring, stain=stain,
            ):  # fmt: skip
                n["proposed"] += work.n_proposed
                n["screened_out"] += work.n_screened_out
                for k, v in work.timing.items():
                    stages[k] = stages.get(k, 0.0) + v
                if work.detections is not None:  # classified in a worker
                    n["candidates"] += work.n_classified
                    if len(work.detections):
                        parts.append(work.detections)
                elif len(work.candidates):
                    n["candidates"] += len(work.candidates)
                    emit(partial(batcher.add, work))
                if bar is not None:
                    bar.tile_done(work.tile)
            emit(batcher.flush)
        finally:
            if bar is not None:
                bar.close()
    t_count = time.perf_counter()
    timing["tiles_s"] = t_count - t_tiles
    dets = merge_detections(Detections.cat(parts), mpp=info.mpp, radius_um=cfg.merge_radius_um)
    if not no_tissue and len(dets):
        # tiles overlap the glass around tissue: objects there (debris, dust) are not counted
        dets = dets.filter(tissue.contains(dets.x_px, dets.y_px))
    dets = dets.filter(np.argsort(-dets.mf_probability, kind="stable"))

    counts, hot2, hot10 = count_slide(
        dets, reader=reader, tissue=None if no_tissue else tissue, tissue_area_mm2=tissue_area,
        threshold=threshold, atypical_threshold=atyp_thr, cfg=cfg,
        has_atypical=bool(getattr(classifier, "has_atypical", True)),
    )  # fmt: skip
    seconds = time.perf_counter() - t0
    timing["count_s"] = seconds - (t_count - t0)
    stats = DetectStats(
        n_candidates=int(n["candidates"]),
        n_proposed=int(n["proposed"]),
        n_screened_out=int(n["screened_out"]),
        cascade=screen is not None,
        classified_in_workers=bool(in_workers),
        propose_mpp=float(propose_mpp or work_mpp),
        n_tiles=len(tiles),
        floor=floor,
        work_mpp=work_mpp,
        tile_um=cfg.tile_um,
        overlap_um=cfg.overlap_um,
        notes=notes,
        timing={k: round(v, 3) for k, v in timing.items()},
        stage_s={k: round(v, 4) for k, v in stages.items()},
        workers=workers,
        no_tissue=no_tissue,
    )
    result = SlideResult(
        info=info,
        detections=dets,
        threshold=threshold,
        tissue_area_mm2=float(tissue_area),
        hotspot_2mm2=hot2,
        hotspot_10hpf=hot10,
        model=str(getattr(classifier, "name", type(classifier).__name__)),
        proposer=str(getattr(proposer, "name", type(proposer).__name__)),
        seconds=seconds,
        counts=counts,
        stats=stats,
        atypical_model=str(getattr(classifier, "atypical_source", "") or ""),
    )
    return SlideRun(result=result, tissue=tissue)


class TissueProgress:
    """A progress bar (stderr, tqdm) in mm² of tissue: done / total, tiles done, mm²/s, time
    left. Each tile counts for its core's share of the tissue (the tiling plan's
    ``tissue_fraction`` x core area), scaled so the tiles add up to the slide's tissue area."""

    def __init__(self, name: str, tiles: list[Tile], tissue_mm2: float) -> None:
        from tqdm import tqdm

        w = np.array([t.tissue_fraction * t.core.width * t.core.height for t in tiles], float)
        if not w.sum() > 0:
            w = np.ones(len(tiles))
        total = max(float(tissue_mm2), 0.0)
        self.share = dict(zip((t.index for t in tiles), w / w.sum() * total, strict=True))
        self.n_tiles, self.done = len(tiles), 0
        self.bar = tqdm(
            total=round(total, 3),
            desc=name,
            unit="mm²",
            leave=False,
            bar_format=(
                "{desc}: {percentage:3.0f}%|{bar}| {n:.2f}/{total:.2f} mm² tissue "
                "[{elapsed}<{remaining}, {rate_noinv_fmt}{postfix}]"
            ),
        )
        self.bar.set_postfix_str(f"0/{self.n_tiles} tiles", refresh=False)

    def tile_done(self, tile: Tile) -> None:
        self.done += 1
        self.bar.set_postfix_str(f"{self.done}/{self.n_tiles} tiles", refresh=False)
        self.bar.update(float(self.share.get(tile.index, 0.0)))

    def close(self) -> None:
        self.bar.refresh()  # the final state, even when every tile came within tqdm's 0.1 s
        self.bar.close()


def count_slide(
    dets: Detections,
    *,
    reader: SlideReader,
    tissue: TissueMask | None,
    tissue_area_mm2: float,
    threshold: float,
    atypical_threshold: float,
    cfg: DetectConfig,
    has_atypical: bool = True,
) -> tuple[SlideCounts, Any, Any]:
    """The slide's counts and its two hotspots (2 mm² and 10 HPF fields)."""
    from ..count import atypical_ratio, hotspot, mitoses_per_mm2

    info = reader.info
    is_mf = dets.mf_probability >= threshold
    mx, my = dets.x_px[is_mf], dets.y_px[is_mf]
    extent = (float(info.width), float(info.height))
    hot2, hot10 = (
        hotspot(mx, my, mpp=info.mpp, area_mm2=area, tissue=tissue, extent_px=extent)
        for area in (cfg.hotspot_area_mm2, cfg.hpf10_area_mm2)
    )
    n_mf = int(is_mf.sum())
    atyp = dets.atypical_probability[is_mf]
    counts = SlideCounts(
        n_mitoses=n_mf,
        mitoses_per_mm2=mitoses_per_mm2(n_mf, tissue_area_mm2),
        atypical_ratio=atypical_ratio(atyp, threshold=atypical_threshold) if has_atypical else None,
        atypical_threshold=atypical_threshold,
        n_atypical=int(np.count_nonzero(atyp >= atypical_threshold)),
    )
    return counts, hot2, hot10


__all__ = ["SlideRun", "TissueProgress", "count_slide", "detect_slide", "run_slide"]
