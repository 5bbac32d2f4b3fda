"""``mitoscope detect``: slides in, mitotic figures, counts and a report out."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import typer

from ..detect.config import DEFAULTS
from ._options import MPP_OPTION, OVERLAP_UM_OPTION, TILE_UM_OPTION
from ._proposer import (
    DETECTOR_OPTION,
    PROPOSER_OPTION,
    SAM_CHECKPOINT_OPTION,
    SAM_VARIANT_OPTION,
    proposer_from_options,
)


def register(app: typer.Typer) -> None:
    app.command("detect")(detect)


def _load_classifier(model: Path | None, device: str, atypical: str = "auto") -> Any:
    """The classifier ensemble (the bundled model when ``model`` is None), with the dedicated
    atypical model of ``--atypical-model`` (auto: the bundled one when installed)."""
    from ..classify import load_classifier
    from ..classify.atypical import attach_atypical_model

    clf = load_classifier(None if model is None else str(model), device=device)
    return attach_atypical_model(clf, atypical, device=device)


def _check_device(device: str) -> str:
    from ..errors import InvalidInputError

    d = device.strip().lower()
    if d not in ("auto", "cpu", "cuda"):
        raise InvalidInputError(f"unknown --device {device!r}; choose auto, cpu or cuda")
    if d == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise InvalidInputError("--device cuda: no CUDA GPU is available; use --device cpu")
    return d


def _check_mode(mode: str, *, proposer: str, model: Path | None) -> str:
    from ..errors import InvalidInputError

    m = mode.strip().lower()
    if m not in ("classifier", "detector"):
        raise InvalidInputError(f"unknown --mode {mode!r}; choose classifier or detector")
    if m == "detector" and proposer.strip().lower() != "classical":
        raise InvalidInputError("--mode detector uses the detector's own boxes; drop --proposer")
    if m == "detector" and model is not None:
        raise InvalidInputError("--mode detector uses no classifier; drop --model")
    return m


def _default_cascade(
    model: Path | None, screen_model: Path | None, proposer: str, mode: str
) -> bool:
    """The cascade screen is on with the bundled classifier and the classical or SAM
    proposer; a detector's candidates are few and are not re-screened at 0.5 um/px."""
    if mode == "detector" or proposer.strip().lower() == "detector":
        return screen_model is not None
    return model is None or screen_model is not None


def detect(
    inputs: list[Path] = typer.Argument(
        None, help="Whole-slide images or region images (none: the bundled sample slide)."
    ),
    out: Path = typer.Option(..., "--out", "-o", help="Output directory (created if missing)."),
    mpp: float = MPP_OPTION,
    proposer: str = PROPOSER_OPTION,
    sam_checkpoint: Path = SAM_CHECKPOINT_OPTION,
    sam_variant: str = SAM_VARIANT_OPTION,
    detector: Path = DETECTOR_OPTION,
    mode: str = typer.Option(
        "classifier",
        "--mode",
        help="classifier: proposer + classifier (two stages); detector: the --detector's boxes "
        "are the detections (no classifier, no atypical probability).",
    ),
    model: Path = typer.Option(
        None, "--model", help="Classifier checkpoint (default: the bundled model)."
    ),
    atypical_model: str = typer.Option(
        "auto",
        "--atypical-model",
        metavar="PATH|head|auto",
        help="Dedicated atypical-vs-normal model for every mitosis (mitoscope train-atypical); "
        "head: the classifier's own atypical head; auto: the bundled one when installed.",
    ),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda"),
    batch_size: int = typer.Option(
        DEFAULTS.batch_size, "--batch-size", help="Classifier batch size."
    ),
    threshold: float = typer.Option(
        None, "--threshold", help="MF probability threshold (default: the model's validated one)."
    ),
    workers: str = typer.Option(
        "auto",
        "--workers",
        metavar="N|auto",
        help="Processes: slides in parallel when there are several inputs, else the tiles of "
        "the one input (1 = all in this process); Ray CPUs with --executor ray. auto: the "
        "usable CPU cores, at most 8.",
    ),
    executor: str = typer.Option(
        "local", "--executor", help="local | ray: where slides run (see docs/cohort.md)."
    ),
    address: str = typer.Option(
        None, "--address", help="Existing Ray cluster (with --executor ray); default: local Ray."
    ),
    resume: bool = typer.Option(
        True,
        "--resume/--no-resume",
        help="With several inputs or --executor ray: skip inputs whose outputs are complete.",
    ),
    cascade: bool = typer.Option(
        None,
        "--cascade/--no-cascade",
        help="Screen candidates with the tiny cascade model before the classifier (default: on "
        "with the bundled model, off with --model).",
    ),
    screen_model: Path = typer.Option(
        None, "--screen-model", help="Cascade screen checkpoint (default: the bundled one)."
    ),
    propose_mpp: float = typer.Option(
        None,
        "--propose-mpp",
        help="Pixel size (um/px) candidates are proposed at (default: the screen's 0.5 with the "
        "cascade, else the classifier's).",
    ),
    stain_normalize: str = typer.Option(
        None,
        "--stain-normalize",
        help="Stain-normalise each tile before proposal and classification: reinhard or "
        "macenko (needs --stain-target; off by default, the bundled models do not use it).",
    ),
    stain_target: Path = typer.Option(
        None,
        "--stain-target",
        help="Reference H&E image (PNG/JPEG/TIFF) whose stain --stain-normalize maps tiles to.",
    ),
    tile_um: float = TILE_UM_OPTION,
    overlap_um: float = OVERLAP_UM_OPTION,
    no_report: bool = typer.Option(False, "--no-report", help="Skip the HTML report."),
    sample: bool = typer.Option(False, "--sample", help="Run on the bundled sample slide."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar or summary lines."),
) -> None:
    """Detect mitotic figures and count them; write results and a report per slide.

    Per input, --out DIR gets <stem>.geojson (QuPath), <stem>.midog.json, <stem>.csv, <stem>.summary.json and <stem>.report.html; all slides of the run are appended to DIR/mitoscope.sqlite (SlideRunner). A bad input (or one without tissue) is reported in one line, gets no outputs and is skipped (exit code 2 at the end).
    """
    import warnings
    from dataclasses import replace

    from ..detect import (
        DB_NAME,
        DetectConfig,
        RunDatabase,
        check_out_dir,
        check_output_names,
        detect_slide,
        remove_stale_temporaries,
        resolve_workers,
        unique_stems,
    )
    from ..errors import MitoscopeError, NoTissueError

    n_workers = resolve_workers(workers)
    mode = _check_mode(mode, proposer=proposer, model=model)
    paths = list(inputs or [])
    if sample or not paths:
        from ..data import sample_slide

        paths = [sample_slide(), *paths]
    config = DetectConfig(
        tile_um=tile_um,
        overlap_um=overlap_um,
        threshold=threshold,
        batch_size=batch_size,
        workers=n_workers,
        report=not no_report,
        cascade=_default_cascade(model, screen_model, proposer, mode)
        if cascade is None
        else cascade,
        propose_mpp=propose_mpp,
        screen_model=None if screen_model is None else str(screen_model),
        stain_normalize=stain_normalize,
        stain_target=None if stain_target is None else str(stain_target),
    )
    if config.stain_normalize is not None:
        from ..stain.normalize import fitted_normalizer

        fitted_normalizer(config.stain_normalize, config.stain_target)  # bad target: exit 2 now
    if mpp is not None:
        from ..units import validate_mpp

        validate_mpp(mpp, name="--mpp")
    stems = unique_stems(paths)
    out_dir = check_out_dir(out)
    check_output_names(out_dir, stems)  # before any work: a name too long fails now
    dev = _check_device(device)
    if mode == "detector":
        from ..detector.proposer import detector_mode

        if detector is None:
            from ..errors import InvalidInputError

            raise InvalidInputError(
                "--mode detector needs --detector PATH (mitoscope train-detector)"
            )
        floor = min(config.floor, 1.0 if threshold is None else threshold)  # keep --threshold's
        prop, classifier = detector_mode(detector, device=None if dev == "auto" else dev,
                                         floor=floor)  # fmt: skip
    else:
        prop = proposer_from_options(
            proposer,
            sam_checkpoint=sam_checkpoint,
            sam_variant=sam_variant,
            detector=detector,
            device=None if dev == "auto" else dev,
        )
        classifier = _load_classifier(model, dev, atypical_model)
    dev_type = getattr(getattr(getattr(prop, "detector", None), "device", None), "type", "cpu")
    if n_workers > 1 and (getattr(prop, "name", "") == "sam" or dev_type == "cuda"):
        # GPU-bound proposal (SAM, a detector on CUDA): propose in the main process
        config = replace(config, workers=1)
    if config.cascade:
        from ..classify.screen import load_screen

        load_screen(config.screen_model)  # a missing or corrupt screen fails here, exit 2
    if len(paths) > 1 or executor.strip().lower() != "local" or address:
        # cohorts: slides in parallel (local processes or Ray), resumable, cohort_summary.csv
        from ..cohort.cli import detect_cohort

        code = detect_cohort(
            paths, out_dir=out_dir, proposer=prop, classifier=classifier, config=config,
            mpp=mpp, executor=executor, workers=n_workers, address=address, resume=resume,
            quiet=quiet,
        )  # fmt: skip
        if code:
            raise typer.Exit(code)
        return

    failures = 0
    with RunDatabase(out_dir / DB_NAME) as db:  # created with the first slide's results
        for path, stem in zip(paths, stems, strict=True):
            remove_stale_temporaries(out_dir, stem)  # left by a killed earlier run
            try:
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always", RuntimeWarning)
                    result = detect_slide(
                        path,
                        proposer=prop,
                        classifier=classifier,
                        config=config,
                        out_dir=out_dir,
                        db=db,
                        progress=not quiet,
                        mpp=mpp,
                        stem=stem,
                    )
            except MitoscopeError as exc:
                failures += 1
                msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                named = msg.startswith((str(path), path.name))
                print(f"mitoscope: error: {msg if named else f'{path}: {msg}'}", file=sys.stderr)
                continue
            if result.stats.no_tissue:
                # bad input: one line, nothing written (detect_slide writes no outputs for it)
                failures += 1
                print(f"mitoscope: error: {NoTissueError(path)}", file=sys.stderr)
                continue
            for w in caught:
                if issubclass(w.category, RuntimeWarning):
                    print(f"mitoscope: warning: {w.message}", file=sys.stderr)
            if not quiet:
                per = result.counts.mitoses_per_mm2
                hot = result.hotspot_2mm2
                typer.echo(
                    f"{path.name}: {result.counts.n_mitoses} mitoses"
                    f" ({'n/a' if per is None else f'{per:.3g}'}/mm² of "
                    f"{result.tissue_area_mm2:.3g} mm² tissue), hotspot 2 mm²: "
                    f"{0 if hot is None else hot.count}, {result.seconds:.1f} s"
                    f" -> {out_dir / stem}.*"
                )
    if failures:  # one line per failed input was printed above, nothing more
        raise typer.Exit(2)
