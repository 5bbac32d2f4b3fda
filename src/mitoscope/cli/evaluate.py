"""``mitoscope evaluate``: score predictions against ground truth with the MIDOG protocol."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

from ._options import JSON_OPTION


def register(app: typer.Typer) -> None:
    app.command("evaluate")(evaluate)


def evaluate(
    truth: Path = typer.Option(
        ...,
        "--truth",
        help="Ground truth (MIDOG++ JSON, MIDOG points "
        "JSON, GeoJSON, CSV points, SlideRunner SQLite).",
    ),
    pred: Path = typer.Option(
        ...,
        "--pred",
        help="Predictions: one file, or a directory of "
        "<stem>.midog.json files (one per image, as `mitoscope detect`).",
    ),
    split: Path = typer.Option(None, "--split", help="MIDOG++ split CSV (slide;Dataset;Tumor...)."),
    split_name: str = typer.Option(None, "--split-name", help="Split to evaluate, e.g. test."),
    radius_um: float = typer.Option(7.5, "--radius-um", help="Matching radius in um."),
    mpp: float = typer.Option(
        None,
        "--mpp",
        help="Pixel size in um/px (needed for mm files and when the truth has no pixel size).",
    ),
    by: list[str] = typer.Option(
        None, "--by", help="Group by tumor | domain | slide | scanner | species (repeatable)."
    ),
    threshold: float = typer.Option(
        None,
        "--threshold",
        help="Count predictions with probability >= P (default: the names in the file).",
    ),
    val_truth: Path = typer.Option(
        None,
        "--val-truth",
        help="Validation truth to choose the threshold on (never the test set).",
    ),
    val_pred: Path = typer.Option(None, "--val-pred", help="Validation predictions."),
    val_split_name: str = typer.Option(
        None, "--val-split-name", help="Split of --val-truth to use with --split (e.g. train)."
    ),
    bootstrap: int = typer.Option(
        1000, "--bootstrap", help="Bootstrap replicates for the F1 95% CI (0 = off)."
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of the bootstrap."),
    json_out: bool = JSON_OPTION,
    out: Path = typer.Option(None, "--out", help="Write a report (.html or .md)."),
) -> None:
    """Match predictions to truth within 7.5 um (MIDOG), pool TP/FP/FN, report F1, AP, FROC."""
    from ..errors import InvalidInputError
    from ..evaluate.loading import GROUP_KEYS, load_eval_set
    from ..evaluate.metrics import (
        Counts,
        choose_threshold,
        froc_curve,
        threshold_sweep,
    )
    from ..evaluate.metrics import (
        evaluate as run_evaluation,
    )
    from ..evaluate.stats import bootstrap_ci, tile_level_rates

    groups = [g.lower() for g in (by or [])]
    for g in groups:
        if g not in GROUP_KEYS:
            raise InvalidInputError(f"--by {g!r}: choose from {', '.join(GROUP_KEYS)}")
    if radius_um is None or not radius_um > 0:
        raise InvalidInputError(f"--radius-um must be a positive length in um, got {radius_um}")
    if threshold is not None and (val_truth or val_pred):
        raise InvalidInputError("give either --threshold or --val-truth/--val-pred, not both")
    if bool(val_truth) != bool(val_pred):
        raise InvalidInputError("--val-truth and --val-pred go together")
    if bootstrap < 0:
        raise InvalidInputError(
            f"--bootstrap must be 0 (off) or a number of replicates, got {bootstrap}"
        )
    if threshold is not None and not 0.0 <= threshold <= 1.0:
        raise InvalidInputError(f"--threshold must be a probability in [0, 1], got {threshold}")

    test = load_eval_set(
        truth, pred, mpp=mpp, split_csv=split, split=split_name, radius_um=radius_um
    )
    if test.missing_predictions:
        print(
            f"mitoscope: warning: {len(test.missing_predictions)} truth image(s) without a "
            f"prediction file skipped (as the official evaluator): "
            f"{_short(test.missing_predictions)}",
            file=sys.stderr,
        )
    for pred_name, truth_name in test.paired:
        print(
            f"mitoscope: note: one truth image and one predicted image: {pred_name} is "
            f"evaluated as {truth_name}",
            file=sys.stderr,
        )
    if test.unknown_predictions:
        print(
            f"mitoscope: warning: predictions for {len(test.unknown_predictions)} image(s) "
            f"not in the truth ignored: {_short(test.unknown_predictions)}",
            file=sys.stderr,
        )
    if not test.images:
        raise InvalidInputError("no image of the truth has predictions; check names and --pred")

    threshold_source = "names in the prediction file" if threshold is None else "--threshold"
    if val_truth is not None:
        val = load_eval_set(
            val_truth, val_pred, mpp=mpp, split_csv=split, split=val_split_name, radius_um=radius_um
        )
        if not val.images:
            raise InvalidInputError("the validation set has no images with predictions")
        threshold = choose_threshold(val.images, radius_um=radius_um)
        threshold_source = "chosen on the validation set (max F1)"

    result = run_evaluation(test.images, radius_um=radius_um, threshold=threshold, by=groups)
    per_image = list(result.per_image.values())
    extra: dict[str, object] = {
        "threshold_source": threshold_source,
        "missing_predictions": test.missing_predictions,
        "unknown_predictions": test.unknown_predictions,
        "paired": [list(p) for p in test.paired],
        "units": "mm" if test.mm_only else "px",
    }
    if bootstrap > 0:
        extra["f1_ci95"] = bootstrap_ci(per_image, n_boot=bootstrap, rng=seed).to_dict()
    sized = [img for img in test.images if img.width_px and img.height_px and img.mpp]
    if sized and len(sized) == len(test.images):
        tiles = None
        for img in sized:
            keep = img.selected(threshold)
            scale = 1000.0 / img.mpp  # mm -> px
            r = tile_level_rates(
                img.truth_xy * scale,
                img.pred_xy[keep] * scale,
                width_px=img.width_px,
                height_px=img.height_px,
            )
            tiles = r if tiles is None else tiles + r
        extra["tile_level"] = tiles.to_dict() if tiles else None
    result.extra.update(extra)

    if out is not None:
        from ..evaluate.report import write_report

        sweep = threshold_sweep(test.images, radius_um=radius_um)
        froc = froc_curve(test.images, radius_um=radius_um)
        c: Counts = result.overall
        notes = [
            f"truth: {truth}; predictions: {pred}; {result.n_images} images",
            f"radius {radius_um:g} um; threshold: "
            f"{'names' if threshold is None else f'{threshold:.4g}'} ({threshold_source})",
            f"TP {c.tp}, FP {c.fp}, FN {c.fn}; F1 {c.f1:.4f}; AP {result.ap:.4f}; "
            f"FROC AUC {result.froc_auc:.4f}",
        ]
        write_report(out, result, sweep=sweep, froc=froc, notes=notes)

    data = result.to_dict()
    if json_out:
        typer.echo(json.dumps(data))
        return
    c = result.overall
    typer.echo(f"images     {result.n_images}")
    typer.echo(f"tp fp fn   {c.tp} {c.fp} {c.fn}")
    typer.echo(f"precision  {c.precision:.4f}")
    typer.echo(f"recall     {c.recall:.4f}")
    typer.echo(f"f1         {c.f1:.4f}")
    typer.echo(f"ap         {result.ap:.4f}")
    if "f1_ci95" in extra:
        ci = extra["f1_ci95"]
        typer.echo(f"f1 95% CI  {ci['low']:.4f} - {ci['high']:.4f}")  # type: ignore[index]
    for g, table in result.groups.items():
        for name, gc in table.items():
            typer.echo(f"{g}={name}: tp {gc.tp} fp {gc.fp} fn {gc.fn} f1 {gc.f1:.4f}")


def _short(names: list[str], n: int = 5) -> str:
    more = f", ... (+{len(names) - n})" if len(names) > n else ""
    return ", ".join(names[:n]) + more
