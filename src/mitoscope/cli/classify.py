"""``mitoscope classify``: score image crops, each centred on one object."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    app.command("classify")(classify_cmd)


def classify_cmd(
    images: list[Path] = typer.Argument(
        ..., help="Image crops (PNG/JPEG/TIFF), each centred on one object."
    ),
    out: Path = typer.Option(..., "--out", "-o", help="CSV file to write."),
    mpp: float = typer.Option(
        None, "--mpp", help="Pixel size of the crops in um/px (default: the model's, 0.25)."
    ),
    model: Path = typer.Option(
        None, "--model", "-m", help="Classifier checkpoint (default: bundled)."
    ),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    atypical_model: str = typer.Option(
        "auto",
        "--atypical-model",
        metavar="PATH|head|auto",
        help="Dedicated atypical-vs-normal model (mitoscope train-atypical); head: the "
        "classifier's own atypical head; auto: the bundled one when installed.",
    ),
) -> None:
    """Write file,mf_probability,is_mitosis,atypical_probability,is_atypical for each crop.

    ``is_mitosis`` and ``is_atypical`` apply the models' validated thresholds; the atypical
    columns describe the figure *if* it is a mitosis (they are not conditioned on is_mitosis).
    With a dedicated atypical model (--atypical-model, or the bundled one) it scores each crop
    at its own field and pixel size, and a last column ``atypical_model`` names it.
    """
    import numpy as np

    from ..classify import load_classifier
    from ..classify.atypical import WithAtypicalModel, attach_atypical_model
    from ..classify.crops import crop_inputs, read_rgb
    from ..io.atomic import atomic_write_text

    clf = attach_atypical_model(load_classifier(model, device=device), atypical_model,
                                device=device)  # fmt: skip
    dedicated = clf.atypical_model if isinstance(clf, WithAtypicalModel) else None
    base = clf.base if dedicated is not None else clf
    patches, masks = crop_inputs(images, base, mpp=mpp)
    mf, at = base.predict_patches(patches, masks if base.uses_mask else None)
    header = "file,mf_probability,is_mitosis,atypical_probability,is_atypical"
    extra = ""
    if dedicated is not None:
        crop_mpp = base.input_mpp if mpp is None else float(mpp)
        at = dedicated.predict_images([read_rgb(p) for p in images], mpp=crop_mpp)
        header += ",atypical_model"
        desc = dedicated.describe().replace('"', '""')
        extra = f',"{desc}"'
    lines = [header]
    for path, p, a in zip(images, mf, at, strict=True):
        a_txt = "" if np.isnan(a) else f"{a:.6f}"
        is_at = "" if np.isnan(a) else str(int(a >= clf.atypical_threshold))
        name = str(path).replace('"', '""')
        name = f'"{name}"' if ("," in name or '"' in name) else name
        lines.append(f"{name},{p:.6f},{int(p >= clf.threshold)},{a_txt},{is_at}{extra}")
    atomic_write_text(out, "\n".join(lines) + "\n")
    typer.echo(f"wrote {len(images)} rows to {out}")
