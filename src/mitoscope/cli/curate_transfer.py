"""``mitoscope curate rescan`` and ``mitoscope curate phh3``: labels moved between two scans of
one section by registration (:mod:`mitoscope.curate.rescan`, :mod:`mitoscope.curate.phh3`).

Added to the ``curate`` group defined in :mod:`.curate`; docs/curate-rescan.md and
docs/curate-phh3.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from .curate import curate_app

#: the options both registration-based commands take
OUT_DIR_OPTION = typer.Option(..., "--out", "-o", help="Output directory (created).")
METHOD_OPTION = typer.Option("orb", "--method", help="Slide-level features: orb | sift.")


def _print_registration(reg: dict[str, Any]) -> None:
    s = reg["slide_level"]
    typer.echo(
        f"slide level: {s['inliers']}/{s['matches']} matches agree, rotation "
        f"{s['rotation_deg']:.2f} deg, size x{s['scale_change']:.4f}, residual median "
        f"{s['residual_median_um']} um (p95 {s['residual_p95_um']} um)"
    )
    typer.echo(
        f"patch level: {reg['patch_registered']} of {reg['points']} labels in "
        f"{reg['windows'] - 1} windows ({reg['slide_level_only']} on the slide-level map only); "
        f"registration error (inlier residual) median {reg['residual_median_um']} um, "
        f"p95 {reg['residual_p95_um']} um"
    )


def rescan(
    source: Path = typer.Argument(..., help="The labelled slide (the original scan)."),
    target: Path = typer.Argument(..., help="The re-scan of the same glass slide."),
    labels: Path = typer.Argument(
        ..., help="Labels of SOURCE in level-0 px: SlideRunner, MIDOG++ JSON, GeoJSON or CSV."
    ),
    out: Path = OUT_DIR_OPTION,
    mpp: float = typer.Option(None, "--mpp", help="Pixel size of SOURCE (um/px) if not in it."),
    target_mpp: float = typer.Option(
        None, "--target-mpp", help="Pixel size of the re-scan (um/px) if not in it."
    ),
    model: list[Path] = typer.Option(
        None, "--model", help="Ensemble member (repeat; default: the bundled classifier)."
    ),
    min_probability: float = typer.Option(
        None,
        "--min-probability",
        help="Ensemble mitosis probability on the re-scan below which a label is ignored "
        "(default: the members' mean validated threshold).",
    ),
    sharpness_ratio: float = typer.Option(
        0.5,
        "--sharpness-ratio",
        help="Ignore a label whose re-scan patch is less sharp than this share of the "
        "original's (0: off).",
    ),
    patch: bool = typer.Option(
        True, "--patch/--no-patch", help="Refine the slide-level map around the labels."
    ),
    method: str = METHOD_OPTION,
    channel: str = typer.Option(
        "od", "--channel", help="Image the features are found on: od | haematoxylin | gray."
    ),
) -> None:
    """Move labels to a re-scan of the same glass slide; mark lost mitoses "ignore"."""
    from ..curate.rescan import RescanConfig, curate_rescan

    cfg = RescanConfig(
        models=tuple(str(m) for m in (model or [])),
        min_probability=min_probability,
        sharpness_ratio=sharpness_ratio,
        patch=patch,
        method=method,
        channel=channel,
    )
    res = curate_rescan(source, target, labels, out, mpp=mpp, target_mpp=target_mpp, config=cfg)
    r = res.report
    _print_registration(r["registration"])
    typer.echo(
        f"labels: {r['labels_in']} in, {len(res.labels)} moved, {r['outside_rescan_dropped']} "
        f"outside the re-scan dropped; mitotic figures: {r['mitotic_kept']} kept, "
        f"{r['mitotic_ignored']} ignore {r['ignore_reasons']}"
    )
    typer.echo(f"wrote {', '.join(str(p) for p in res.paths.values())}")


def phh3(
    he: Path = typer.Argument(..., metavar="HE", help="The H&E slide to label."),
    phh3_slide: Path = typer.Argument(..., metavar="PHH3", help="The pHH3 re-stain of it."),
    out: Path = OUT_DIR_OPTION,
    he_mpp: float = typer.Option(None, "--he-mpp", help="Pixel size of HE (um/px) if not in it."),
    phh3_mpp: float = typer.Option(
        None, "--phh3-mpp", help="Pixel size of PHH3 (um/px) if not in it."
    ),
    dab_threshold: float = typer.Option(
        0.5, "--dab-threshold", help="DAB optical density (decadic) of a positive pixel."
    ),
    min_area_um2: float = typer.Option(10.0, "--min-area-um2", help="Smallest positive nucleus."),
    max_area_um2: float = typer.Option(250.0, "--max-area-um2", help="Largest positive nucleus."),
    detect_mpp: float = typer.Option(
        0.5, "--detect-mpp", help="Pixel size the pHH3 slide is thresholded at (um/px)."
    ),
    patch: bool = typer.Option(
        True, "--patch/--no-patch", help="Refine the slide-level map around the nuclei."
    ),
    method: str = METHOD_OPTION,
    channel: str = typer.Option(
        "haematoxylin",
        "--channel",
        help="Image the features are found on: haematoxylin (common to both stains) | od | gray.",
    ),
) -> None:
    """Label mitoses on an H&E slide from a pHH3 re-stain of the same section."""
    from ..curate.phh3 import PHH3Config, curate_phh3

    cfg = PHH3Config(
        dab_threshold=dab_threshold,
        min_area_um2=min_area_um2,
        max_area_um2=max_area_um2,
        detect_mpp=detect_mpp,
        patch=patch,
        method=method,
        channel=channel,
    )
    res = curate_phh3(he, phh3_slide, out, he_mpp=he_mpp, phh3_mpp=phh3_mpp, config=cfg)
    r = res.report
    typer.echo(
        f"pHH3: {r['dab_positive_fraction']:.3%} of pixels DAB-positive, {r['objects']} "
        "positive nuclei"
    )
    _print_registration(r["registration"])
    typer.echo(
        f"labels: {r['labels']} mitotic figures with masks on the H&E ({r['flagged']} flagged, "
        f"{r['outside_he_dropped']} outside it dropped)"
    )
    typer.echo(f"wrote {', '.join(str(p) for p in res.paths.values())}")


def register(app: typer.Typer) -> None:
    """Add ``rescan`` and ``phh3`` to the ``curate`` group (``app`` is the root app)."""
    curate_app.command("rescan")(rescan)
    curate_app.command("phh3")(phh3)
