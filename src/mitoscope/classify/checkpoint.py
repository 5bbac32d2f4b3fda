"""Classifier checkpoints: the file format, reading and (atomic) writing.

A checkpoint is one ``torch.save`` file (loaded with ``weights_only=True``) holding::

    {"format": "mitoscope-classifier", "version": 1, "arch": ..., "arch_kwargs": {...},
     "input_mpp": 0.25, "patch_size_px": 64, "threshold": ..., "atypical_threshold": ...,
     "members": [state_dict, ...], "card": {...}}

``members`` are the ensemble's state dicts (stored as float16 to keep the file small).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import ModelLoadError

FORMAT = "mitoscope-classifier"
VERSION = 1
#: file name of the bundled default model inside ``mitoscope/data``
DEFAULT_MODEL = "mitoscope_default_classifier.pt"


def default_model_path() -> Path:
    """Path of the bundled default classifier."""
    return Path(__file__).resolve().parents[1] / "data" / DEFAULT_MODEL


def read_checkpoint(path: Path, *, fmt: str, version: int, what: str, kind: str) -> dict:
    """The dict stored in a mitoscope checkpoint of format ``fmt``.

    ``what`` names the file in messages ("model file"), ``kind`` the model ("classifier").

    Raises
    ------
    ModelLoadError
        The file is missing, cannot be read, is not a ``fmt`` checkpoint, or is newer than
        ``version``.
    """
    import torch

    if not path.is_file():
        raise ModelLoadError(f"{what} not found: {path}")
    try:
        blob = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ModelLoadError(
            f"cannot read {what} {path} ({exc.__class__.__name__}); it is corrupt or not a "
            f"mitoscope {kind}"
        ) from None
    if not isinstance(blob, dict) or blob.get("format") != fmt:
        raise ModelLoadError(f"{path} is not a mitoscope {kind} checkpoint")
    if int(blob.get("version", 0)) > version:
        raise ModelLoadError(
            f"{path} needs a newer mitoscope (checkpoint version {blob['version']})"
        )
    return blob


def save_checkpoint(
    path: str | Path,
    *,
    arch: str,
    members: list[dict[str, Any]],
    arch_kwargs: dict[str, Any],
    input_mpp: float,
    patch_size_px: int,
    threshold: float,
    atypical_threshold: float,
    has_atypical: bool = True,
    card: dict[str, Any] | None = None,
    name: str | None = None,
    atypical_views: int = 1,
) -> Path:
    """Write a classifier checkpoint (atomic: temporary file, then rename)."""
    import torch

    from ..io.atomic import atomic_path

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    half = [
        {
            k: (v.detach().cpu().half() if v.is_floating_point() else v.detach().cpu())
            for k, v in sd.items()
        }
        for sd in members
    ]
    blob = {
        "format": FORMAT,
        "version": VERSION,
        "name": name or path.stem,
        "arch": arch,
        "arch_kwargs": dict(arch_kwargs),
        "input_mpp": float(input_mpp),
        "patch_size_px": int(patch_size_px),
        "threshold": float(threshold),
        "atypical_threshold": float(atypical_threshold),
        "has_atypical": bool(has_atypical),
        "atypical_views": int(atypical_views),
        "members": half,
        "card": card or {},
    }
    with atomic_path(path) as tmp:
        torch.save(blob, tmp)
    return path


__all__ = [
    "DEFAULT_MODEL",
    "FORMAT",
    "VERSION",
    "default_model_path",
    "read_checkpoint",
    "save_checkpoint",
]
