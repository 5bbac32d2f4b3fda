"""``mitoscope train``: train a candidate classifier (MF vs non-MF + atypical vs normal)."""

from __future__ import annotations

from pathlib import Path

import typer

from ._options import (
    CHECKPOINT_OUT_OPTION,
    FAST_DEV_RUN_OPTION,
    SEEDS_OPTION,
    THREADS_OPTION,
    source_option,
)


def register(app: typer.Typer) -> None:
    app.command("train")(train_cmd)


def train_cmd(
    config: Path = typer.Option(
        None, "--config", "-c", help="TOML or YAML file of TrainConfig fields."
    ),
    arch: str = typer.Option(
        None, "--arch", help="Architecture (see mitoscope.classify.list_models)."
    ),
    epochs: int = typer.Option(None, "--epochs", help="Epochs of the main (MF) stage."),
    samples_per_epoch: int = typer.Option(
        None, "--samples-per-epoch", help="Patches drawn per epoch."
    ),
    seeds: str = SEEDS_OPTION,
    out: Path = CHECKPOINT_OUT_OPTION,
    data: str = typer.Option(
        None,
        "--data",
        help="Type of --data-dir: amibr (default), midogpp, sliderunner, reviewed, geojson, csv, "
        "tissue.",
    ),
    data_dir: Path = typer.Option(
        None, "--data-dir", help="The data of --data (e.g. the amibr-train folder)."
    ),
    source: list[str] = source_option(
        "e.g. midogpp:MIDOGpp.json,images=imgs/,split=train,weight=2 or tissue:tissue/. Keys as in "
        "[[train.sources]] (docs/training.md); lists with '|'.",
    ),
    neg_ratio: float = typer.Option(None, "--neg-ratio", help="Negative:positive sampling ratio."),
    mf_loss: str = typer.Option(
        None,
        "--mf-loss",
        help="MF loss: hard, agreement (each label weighted by its raters' agreement or its "
        "review weight) or soft.",
    ),
    no_mask: bool = typer.Option(False, "--no-mask", help="Disable the candidate-mask branch."),
    no_multitask: bool = typer.Option(False, "--no-multitask", help="MF loss only in stage 1."),
    stain_sigma: float = typer.Option(None, "--stain-sigma", help="HED jitter sigma (0 = off)."),
    cache_dir: Path = typer.Option(None, "--cache-dir", help="Where the patch cache is kept."),
    threads: int = THREADS_OPTION,
    atypical_tta: int = typer.Option(
        None,
        "--atypical-tta",
        help="Views averaged for the atypical probability (1-8: 4 = the rotations); the atypical "
        "threshold is chosen with them.",
    ),
    fast_dev_run: bool = FAST_DEV_RUN_OPTION,
) -> None:
    """Train a classifier ensemble on labelled data and write a checkpoint with its model card.

    Data: AMi-Br crops (--data-dir), or any labelled sources (--source, or [[train.sources]] in
    the --config file): MIDOG++ JSON, SlideRunner SQLite, GeoJSON or CSV points per image, and
    ordinary-tissue negatives. See docs/training.md.
    """
    import json
    from dataclasses import replace

    from ..train.sources import parse_source_arg
    from ..train.train import TrainConfig, load_config, train

    fields = load_config(config) if config is not None else {}
    if source:
        fields["sources"] = tuple(parse_source_arg(s) for s in source)
    cfg = TrainConfig(**fields)
    overrides = {
        "arch": arch,
        "epochs": epochs,
        "samples_per_epoch": samples_per_epoch,
        "out": None if out is None else str(out),
        "data": data,
        "data_dir": None if data_dir is None else str(data_dir),
        "neg_ratio": neg_ratio,
        "mf_loss": mf_loss,
        "stain_sigma": stain_sigma,
        "cache_dir": None if cache_dir is None else str(cache_dir),
        "threads": threads,
        "atypical_tta": atypical_tta,
    }
    if seeds is not None:
        overrides["seeds"] = parse_seeds(seeds)
    cfg = replace(cfg, **{k: v for k, v in overrides.items() if v is not None})
    if no_mask:
        cfg = replace(cfg, use_mask=False)
    if no_multitask:
        cfg = replace(cfg, multitask=False)
    if fast_dev_run:
        cfg = replace(cfg, fast_dev_run=True)
    cfg = cfg.validate()
    from ..train.sources import check_amibr_folder

    if not cfg.sources and cfg.data == "amibr":
        check_amibr_folder(cfg.data_dir)  # labels.csv readable, before any work
    for src in cfg.sources:
        if str(src.get("type", "")).lower() == "amibr" and src.get("path"):
            check_amibr_folder(src["path"])
    check_writable(Path(cfg.out))  # before any work: a run must not fail at its last step
    result = train(cfg)
    typer.echo(json.dumps({"out": str(result.path), **result.metrics}, default=float))


def parse_seeds(seeds: str) -> tuple[int, ...]:
    """The ``--seeds`` option (comma-separated integers) as a tuple; a clear error otherwise."""
    try:
        return tuple(int(s) for s in seeds.split(",") if s.strip())
    except ValueError:
        from ..errors import InvalidInputError

        raise InvalidInputError(
            f"--seeds must be comma-separated integers, got {seeds!r}"
        ) from None


def check_writable(out: Path) -> None:
    """Raise :class:`~mitoscope.errors.OutputError` unless the checkpoint ``out`` can be written
    (its nearest existing parent is a writable folder, and ``out`` is not a folder)."""
    import os

    from ..errors import OutputError

    if out.is_dir():
        raise OutputError(f"--out {out} is a folder; give the checkpoint file (.pt)")
    anc = out.absolute().parent
    while not anc.exists():
        anc = anc.parent
    if not anc.is_dir() or not os.access(anc, os.W_OK | os.X_OK):
        raise OutputError(f"cannot write the checkpoint {out}: {anc} is not a writable folder")
    import tempfile

    try:  # the real test (root passes os.access everywhere, read-only mounts do not)
        fd, probe = tempfile.mkstemp(prefix=".mitoscope-probe.", dir=anc)
    except OSError as exc:
        raise OutputError(
            f"cannot write the checkpoint {out}: {anc}: {exc.strerror}; choose another --out"
        ) from None
    os.close(fd)
    os.unlink(probe)
