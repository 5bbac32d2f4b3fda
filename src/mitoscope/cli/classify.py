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
) -> None:
    """Write file,mf_probability,is_mitosis,atypical_probability,is_atypical for each crop.

    ``is_mitosis`` and ``is_atypical`` apply the model's validated thresholds; the atypical
    columns describe the figure *if* it is a mitosis (they are not conditioned on is_mitosis).
    """
    import numpy as np

    from ..classify import load_classifier
    from ..classify.crops import crop_inputs
    from ..io.atomic import atomic_write_text

    clf = load_classifier(model, device=device)
    patches, masks = crop_inputs(images, clf, mpp=mpp)
    mf, at = clf.predict_patches(patches, masks if clf.uses_mask else None)
    lines = ["file,mf_probability,is_mitosis,atypical_probability,is_atypical"]
    for path, p, a in zip(images, mf, at, strict=True):
        a_txt = "" if np.isnan(a) else f"{a:.6f}"
        is_at = "" if np.isnan(a) else str(int(a >= clf.atypical_threshold))
        name = str(path).replace('"', '""')
        name = f'"{name}"' if ("," in name or '"' in name) else name
        lines.append(f"{name},{p:.6f},{int(p >= clf.threshold)},{a_txt},{is_at}")
    atomic_write_text(out, "\n".join(lines) + "\n")
    typer.echo(f"wrote {len(images)} rows to {out}")
