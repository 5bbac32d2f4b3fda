"""``mitoscope curate ...``: the data-curation commands (:mod:`mitoscope.curate`).

``curate_app`` is the Typer group; ``curate masks`` and ``curate crowd`` are defined here, the
registration-based commands (``rescan``, ``phh3``) in :mod:`.curate_transfer`, which adds them to
``curate_app``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from ._options import PROGRESS_OPTION
from ._proposer import SAM_VARIANT_OPTION

curate_app = typer.Typer(
    name="curate",
    help="Curate training data: masks from point labels, crowd consensus, label transfer.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def register(app: typer.Typer) -> None:
    app.add_typer(curate_app, name="curate")


def _read_labels(paths: list[Path], mpp: float | None) -> Any:
    """Labels of every file (any format :func:`mitoscope.io.read_annotations` reads)."""
    from ..io.annotations import PointAnnotations, read_annotations

    anns = []
    for p in paths:
        kwargs: dict[str, Any] = {}
        if p.suffix.lower() == ".json" and mpp is not None:
            head = p.read_text(encoding="utf-8", errors="replace")[:4096]
            if '"Multiple points"' in head or '"points"' in head:
                kwargs["mpp"] = mpp  # MIDOG points are in millimetres
        anns.append(read_annotations(p, **kwargs))
    return PointAnnotations.cat(anns) if len(anns) > 1 else anns[0]


@curate_app.command("masks")
def masks(
    labels: list[Path] = typer.Argument(
        ..., help="Label files: MIDOG++ JSON, SlideRunner .sqlite, GeoJSON, CSV points, ..."
    ),
    images: Path = typer.Option(
        ..., "--images", help="The labelled image/slide, or the folder holding the images."
    ),
    geojson: Path = typer.Option(None, "--geojson", help="Write the masks as GeoJSON here."),
    sqlite: Path = typer.Option(
        None, "--sqlite", help="Write a SlideRunner database here (flagged labels: review queue)."
    ),
    table: Path = typer.Option(None, "--table", help="Write one CSV row per label (quality)."),
    mpp: float = typer.Option(
        None, "--mpp", help="Level-0 pixel size of the images in um/px (when files lack it)."
    ),
    method: str = typer.Option(
        "auto",
        "--method",
        help="auto (sam with --sam-checkpoint, else classical) | sam | classical",
    ),
    sam_checkpoint: Path = typer.Option(
        None, "--sam-checkpoint", help="Segment Anything checkpoint (e.g. sam_vit_h_4b8939.pth)."
    ),
    sam_variant: str = SAM_VARIANT_OPTION,
    box_um: float = typer.Option(
        12.5, "--box-um", help="Side of the prompt box around point labels (um)."
    ),
    progress: bool = PROGRESS_OPTION,
) -> None:
    """One nucleus mask per label (SAM box prompts or classical); failures are flagged.

    Labels of any format (points, boxes, circles, polygons) in level-0 pixels. Accepted masks
    become polygons; labels whose mask fails the quality checks twice are written as points,
    flagged with the reason, and queued for `mitoscope review` in the --sqlite database.
    """
    from ..curate.masks import (
        MaskConfig,
        check_outputs,
        curate_masks,
        write_masks_geojson,
        write_masks_sliderunner,
        write_masks_table,
    )
    from ..errors import InvalidInputError

    check_outputs(geojson, sqlite, table)
    key = method.strip().lower()
    if key not in ("auto", "sam", "classical"):
        raise InvalidInputError(f"--method must be auto, sam or classical, got {method!r}")
    if key == "sam" and sam_checkpoint is None:
        raise InvalidInputError("--method sam needs --sam-checkpoint (a Segment Anything .pth)")
    if not (0.0 < box_um <= 100.0):
        raise InvalidInputError(f"--box-um must be in (0, 100] um, got {box_um}")
    ann = _read_labels(labels, mpp)
    if not len(ann):
        raise InvalidInputError("the label files hold no labels")
    model = None
    if sam_checkpoint is not None and key != "classical":
        from ..candidates.sam import load_sam

        model = load_sam(sam_checkpoint, variant=sam_variant)
    cfg = MaskConfig(method=key, box_um=box_um)
    result = curate_masks(ann, images, mpp=mpp, config=cfg, sam_model=model, progress=progress)
    written = []
    if table is not None:
        written.append(write_masks_table(result, table))
    if geojson is not None:
        written.append(write_masks_geojson(result, geojson))
    if sqlite is not None:
        written.append(write_masks_sliderunner(result, sqlite))
    c = result.counts()
    typer.echo(
        f"{c['labels']} labels ({result.config.method}): {c['ok']} masks "
        f"({c['ok_first_prompt']} first prompt, {c['ok_second_prompt']} second), "
        f"{c['flagged']} flagged for review"
    )
    for p in written:
        typer.echo(f"wrote {p}")


@curate_app.command("crowd")
def crowd(
    labels: list[Path] = typer.Argument(
        ...,
        help="Files with several raters' votes: MIDOG++ JSON, SlideRunner .sqlite, AMi-Br "
        "labels.csv.",
    ),
    out: Path = typer.Option(..., "--out", "-o", help="CSV table to write (one row per object)."),
    summary: Path = typer.Option(
        None, "--summary", help="Also write the agreement / rule statistics as JSON."
    ),
) -> None:
    """Consensus, agreement in [0, 1] and soft labels from several raters' votes (Ji et al.)."""
    import json

    from ..curate.crowd import crowd_summary, crowd_table, write_crowd_table
    from ..curate.masks import check_outputs
    from ..errors import InvalidInputError
    from ..io.atomic import atomic_write_text

    if out.suffix.lower() != ".csv":
        raise InvalidInputError(f"--out must be a .csv file, got {out.name}")
    check_outputs(out, summary)
    df = crowd_table(labels)
    stats = crowd_summary(df)
    write_crowd_table(df, out)
    if summary is not None:
        atomic_write_text(summary, json.dumps(stats, indent=1) + "\n")
    for key, s in stats.items():
        hist = ", ".join(f"{k}: {v}" for k, v in s["agreement_histogram"].items())
        rules = ", ".join(f"{r} {v['changed']}" for r, v in s["rules_vs_stored"].items())
        typer.echo(
            f"{key}: {s['objects']} objects, mean agreement {s['agreement_mean']:.3f} "
            f"(unanimous {100 * s['agreement_unanimous_share']:.1f}%; {hist}); "
            f"labels changed vs the stored consensus: {rules}"
        )
    typer.echo(f"wrote {out}")
