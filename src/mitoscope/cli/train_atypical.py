"""``mitoscope train-atypical``: train the dedicated atypical-vs-normal classifier."""

from __future__ import annotations

from pathlib import Path

import typer

from ._options import CHECKPOINT_OUT_OPTION, SEEDS_OPTION, THREADS_OPTION


def register(app: typer.Typer) -> None:
    app.command("train-atypical")(train_atypical_cmd)


def train_atypical_cmd(
    config: Path = typer.Option(
        None, "--config", "-c", help="TOML file with an atypical table (configs/atypical.toml)."
    ),
    out: Path = CHECKPOINT_OUT_OPTION,
    data_dir: Path = typer.Option(None, "--data-dir", help="The amibr-train folder."),
    arch: str = typer.Option(None, "--arch", help="Architecture (effnet_lite0, ...)."),
    patch_size: int = typer.Option(None, "--patch-size", help="Input side in px."),
    input_mpp: float = typer.Option(None, "--input-mpp", help="Input pixel size in um/px."),
    epochs: int = typer.Option(None, "--epochs", help="Epochs (one pass over the crops each)."),
    seeds: str = SEEDS_OPTION,
    tta_views: int = typer.Option(
        None, "--tta-views", help="Dihedral views averaged at inference (1-8)."
    ),
    threads: int = THREADS_OPTION,
    cache_dir: Path = typer.Option(
        None, "--cache-dir", help="Crop and member cache (none: off; default ~/.cache/mitoscope)."
    ),
    limit_crops: int = typer.Option(None, "--limit-crops", help="Use the first N crops only."),
    card: Path = typer.Option(None, "--card", help="Also write the model card (Markdown) here."),
    fast_dev_run: bool = typer.Option(
        False, "--fast-dev-run", help="Two batches, one epoch: check the pipeline."
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress lines."),
) -> None:
    """Train the atypical-vs-normal classifier on AMi-Br crops; write it with its model card.

    Its own field (default 128 px at 0.25 um/px), EfficientNet-Lite0 fine-tuned from the
    offline ImageNet weights, stain + geometric augmentation, class-balanced sampling,
    agreement-weighted loss, epoch and threshold chosen on validation slides only. Detection and
    `mitoscope classify` use it with --atypical-model PATH (see docs/atypical.md).
    """
    import json
    from dataclasses import replace

    from ..train.atypical import (
        AtypicalConfig,
        coerce_config,
        load_atypical_config,
        render_atypical_card,
        train_atypical,
    )
    from .train import check_writable, parse_seeds

    fields = load_atypical_config(config) if config is not None else {}
    overrides = {
        "out": None if out is None else str(out),
        "data_dir": None if data_dir is None else str(data_dir),
        "arch": arch,
        "patch_size_px": patch_size,
        "input_mpp": input_mpp,
        "epochs": epochs,
        "tta_views": tta_views,
        "threads": threads,
        "cache_dir": None if cache_dir is None else str(cache_dir),
        "limit_crops": limit_crops,
    }
    if seeds is not None:
        overrides["seeds"] = parse_seeds(seeds)
    fields.update({k: v for k, v in overrides.items() if v is not None})
    cfg = AtypicalConfig(**coerce_config(fields, where="options"))
    if fast_dev_run:
        cfg = replace(cfg, fast_dev_run=True)
    if quiet:
        cfg = replace(cfg, progress=False)
    cfg = cfg.validate()
    check_writable(Path(cfg.out))  # before any work: a run must not fail at its last step
    if card is not None:
        check_writable(card)
    result = train_atypical(cfg)
    if card is not None:
        from ..io.atomic import atomic_write_text

        atomic_write_text(
            card,
            render_atypical_card(
                result.model.card, threshold=result.model.threshold, path=str(result.path)
            ),
        )
    typer.echo(json.dumps({"out": str(result.path), **result.metrics}, default=float))
