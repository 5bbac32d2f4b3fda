"""Classifier checkpoints: the file format, reading and (atomic) writing.

A checkpoint is one ``torch.save`` file (loaded with ``weights_only=True``) holding::

    {"format": "mitoscope-classifier", "version": 1, "arch": ..., "arch_kwargs": {...},
     "input_mpp": 0.25, "patch_size_px": 64, "threshold": ..., "atypical_threshold": ...,
     "members": [state_dict, ...], "card": {...}}

``members`` are the ensemble's state dicts (stored as float16 to keep the file small).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import InvalidInputError, ModelLoadError

FORMAT = "mitoscope-classifier"
VERSION = 1
#: file name of the bundled default model inside ``mitoscope/data``
DEFAULT_MODEL = "mitoscope_default_classifier.pt"


def default_model_path() -> Path:
    """Path of the bundled default classifier."""
    return Path(__file__).resolve().parents[1] / "data" / DEFAULT_MODEL


#: field -> (kind, required, (low, high) or None); kinds: int, float, str, bool, dict, list
Field = tuple[str, bool, "tuple[float, float] | None"]

#: the field every checkpoint may carry, checked first
VERSION_FIELD: Field = ("int", False, (0, 1_000_000))


def ensemble_fields(**own: Field) -> dict[str, Field]:
    """The fields of an ensemble checkpoint (:func:`write_members_blob`): version, name and
    architecture, then the model's ``own`` fields, then the members and the card."""
    return {
        "version": VERSION_FIELD,
        "name": ("str", False, None),
        "arch": ("str", True, None),
        **own,
        "members": ("list", True, None),
        "card": ("dict", False, None),
    }


def ensemble_header(
    path: Path, *, fmt: str, version: int, name: str | None, arch: str
) -> dict[str, Any]:
    """The first fields :func:`ensemble_fields` names, as a checkpoint writes them: format,
    version, name (default: the file's stem) and architecture."""
    return {"format": fmt, "version": version, "name": name or path.stem, "arch": str(arch)}


#: the classifier checkpoint's fields (read_checkpoint checks them before anything uses them)
CLASSIFIER_FIELDS: dict[str, Field] = ensemble_fields(
    arch_kwargs=("dict", False, None),
    input_mpp=("float", True, (0.05, 20.0)),
    patch_size_px=("int", True, (8, 4096)),
    threshold=("float", True, (0.0, 1.0)),
    atypical_threshold=("float", True, (0.0, 1.0)),
    has_atypical=("bool", False, None),
    atypical_views=("int", False, (1, 64)),
)

#: the fields of ``arch_kwargs`` the loader reads
ARCH_KWARGS_FIELDS: dict[str, Field] = {
    "use_mask": ("bool", False, None),
    "n_subtypes": ("int", False, (0, 1000)),
}


def _bad(path: Path, kind: str, key: str, want: str, value: Any) -> ModelLoadError:
    shown = repr(value)
    shown = shown if len(shown) <= 40 else shown[:37] + "..."
    return ModelLoadError(
        f"{path} is not a valid mitoscope {kind} checkpoint: {key!r} must be {want}, got {shown}"
    )


def check_fields(blob: dict, fields: dict[str, Field], *, path: Path, kind: str) -> None:
    """Check the types and ranges of ``fields`` in ``blob`` (in place: numbers normalised).

    Raises
    ------
    ModelLoadError
        A required field is missing, or a field has the wrong type or an impossible value.
    """
    import math

    for key, (typ, required, bounds) in fields.items():
        if key not in blob or blob[key] is None:
            if required:
                raise ModelLoadError(
                    f"{path} is not a valid mitoscope {kind} checkpoint: field {key!r} is "
                    "missing; re-save it with mitoscope train"
                )
            continue
        value = blob[key]
        if typ in ("int", "float"):
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
            if ok and typ == "int":
                ok = float(value).is_integer()
            if not ok or not math.isfinite(float(value)):
                raise _bad(path, kind, key, "an integer" if typ == "int" else "a number", value)
            value = int(value) if typ == "int" else float(value)
            if bounds is not None and not bounds[0] <= value <= bounds[1]:
                raise _bad(path, kind, key, f"in [{bounds[0]:g}, {bounds[1]:g}]", value)
            blob[key] = value
        elif typ == "str" and not isinstance(value, str):
            raise _bad(path, kind, key, "a string", value)
        elif typ == "bool" and not isinstance(value, (bool, int)):
            raise _bad(path, kind, key, "true or false", value)
        elif typ == "dict" and not isinstance(value, dict):
            raise _bad(path, kind, key, "a mapping", value)
        elif typ == "list" and not isinstance(value, (list, tuple)):
            raise _bad(path, kind, key, "a list", value)


def read_checkpoint(
    path: Path,
    *,
    fmt: str,
    version: int,
    what: str,
    kind: str,
    fields: dict[str, Field] | None = None,
) -> dict:
    """The dict stored in a mitoscope checkpoint of format ``fmt``.

    ``what`` names the file in messages ("model file"), ``kind`` the model ("classifier");
    ``fields`` (see :data:`CLASSIFIER_FIELDS`) are checked for presence, type and range.

    Raises
    ------
    ModelLoadError
        The file is missing, cannot be read, is not a ``fmt`` checkpoint, is newer than
        ``version``, or a field is missing or has the wrong type.
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
    check_fields(blob, {"version": VERSION_FIELD}, path=path, kind=kind)
    if int(blob.get("version") or 0) > version:
        raise ModelLoadError(
            f"{path} needs a newer mitoscope (checkpoint version {blob['version']})"
        )
    if fields:
        check_fields(blob, fields, path=path, kind=kind)
    return blob


def known_arch(path: Path, arch: str) -> str:
    """``arch`` when the registry (:mod:`~mitoscope.classify.registry`) has it.

    Raises
    ------
    ModelLoadError
        The checkpoint ``path`` names an architecture mitoscope does not know.
    """
    from .registry import get_spec

    try:
        get_spec(arch)
    except InvalidInputError:
        raise ModelLoadError(f"{path} uses unknown architecture {arch!r}") from None
    return arch


def load_members(
    path: Path, arch: str, members: list[dict[str, Any]], build: Callable[[], Any]
) -> list[Any]:
    """One network per state dict of ``members``: ``build()`` makes it, the weights (cast to
    its dtypes) are loaded strictly.

    Raises
    ------
    ModelLoadError
        A state dict does not fit the architecture ``arch`` the checkpoint ``path`` names.
    """
    nets = []
    for sd in members:
        net = build()
        own = net.state_dict()
        try:
            sd = {k: v.to(own[k].dtype) if k in own else v for k, v in sd.items()}
            net.load_state_dict(sd, strict=True)
        except (RuntimeError, AttributeError, TypeError, ValueError) as exc:
            lines = str(exc).strip().splitlines()
            detail = lines[1].strip() if len(lines) > 1 else (lines[0] if lines else "")
            raise ModelLoadError(
                f"{path} does not match architecture {arch!r}: {detail[:160]}"
            ) from None
        nets.append(net)
    return nets


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
    path = Path(path)
    fields = {
        **ensemble_header(path, fmt=FORMAT, version=VERSION, name=name, arch=arch),
        "arch_kwargs": dict(arch_kwargs),
        "input_mpp": float(input_mpp),
        "patch_size_px": int(patch_size_px),
        "threshold": float(threshold),
        "atypical_threshold": float(atypical_threshold),
        "has_atypical": bool(has_atypical),
        "atypical_views": int(atypical_views),
    }
    return write_members_blob(path, fields, members, card)


def write_members_blob(
    path: str | Path,
    fields: dict[str, Any],
    members: list[dict[str, Any]],
    card: dict[str, Any] | None,
) -> Path:
    """Write ``fields`` plus the ensemble ``members`` (float tensors stored as float16) and the
    ``card`` with ``torch.save``, atomically (temporary file, then rename). Shared by the
    classifier and the dedicated atypical model checkpoints."""
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
    blob = {**fields, "members": half, "card": card or {}}
    with atomic_path(path) as tmp:
        torch.save(blob, tmp)
    return path


def set_threshold(
    path: str | Path, threshold: float, *, rule: str, evidence: dict[str, Any]
) -> Path:
    """Replace a classifier checkpoint's MF threshold (atomically), recording in its card the
    ``rule`` that chose it and the ``evidence`` (measured numbers) it was chosen on; the
    threshold ``train`` chose is kept in the card as ``threshold_at_training``."""
    path = Path(path)
    blob = read_checkpoint(
        path,
        fmt=FORMAT,
        version=VERSION,
        what="model file",
        kind="classifier",
        fields=CLASSIFIER_FIELDS,
    )
    card = dict(blob.get("card") or {})
    card.setdefault("threshold_at_training", float(blob["threshold"]))
    card["threshold_choice"] = rule + (
        "; atypical: max balanced accuracy on the validation figures"
        if "atypical" not in rule
        else ""
    )
    card["threshold_evidence"] = evidence
    fields = {k: v for k, v in blob.items() if k not in ("members", "card")}
    return write_members_blob(
        path, {**fields, "threshold": float(threshold)}, blob["members"], card
    )


__all__ = [
    "ARCH_KWARGS_FIELDS",
    "CLASSIFIER_FIELDS",
    "DEFAULT_MODEL",
    "FORMAT",
    "VERSION",
    "VERSION_FIELD",
    "check_fields",
    "default_model_path",
    "ensemble_fields",
    "ensemble_header",
    "known_arch",
    "load_members",
    "read_checkpoint",
    "save_checkpoint",
    "set_threshold",
    "write_members_blob",
]
