"""A trained detector: checkpoint format, loading, and tiled inference on an image of any size.

A detector checkpoint is one ``torch.save`` file (loaded with ``weights_only=True``)::

    {"format": "mitoscope-detector", "version": 1, "name": ..., "model_kwargs": {...},
     "input_mpp": 0.25, "box_um": 12.5, "tile_px": 1024, "overlap_px": 64,
     "threshold": ..., "proposer_threshold": ..., "state_dict": {...}, "card": {...}}

``threshold`` (maximum F1) and ``proposer_threshold`` (recall first) were chosen on the
validation slides only (``mitoscope train-detector``). :meth:`Detector.detect` resamples an
image to ``input_mpp``, runs the network on overlapping ``tile_px`` tiles, maps the boxes back
and removes the duplicates of the overlaps with box NMS (:func:`torchvision.ops.nms`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InvalidInputError, ModelLoadError

FORMAT = "mitoscope-detector"
VERSION = 1
#: MIDOG's box around a point label: 50 px at 0.25 um/px
BOX_UM = 12.5

#: the detector checkpoint's fields (checked before anything uses them; see
#: :func:`mitoscope.classify.checkpoint.check_fields`)
DETECTOR_FIELDS = {
    "version": ("int", False, (0, 1_000_000)),
    "name": ("str", False, None),
    "model_kwargs": ("dict", True, None),
    "input_mpp": ("float", True, (0.05, 20.0)),
    "box_um": ("float", True, (0.5, 500.0)),
    "tile_px": ("int", True, (32, 16384)),
    "overlap_px": ("int", True, (0, 8192)),
    "threshold": ("float", True, (0.0, 1.0)),
    "proposer_threshold": ("float", True, (0.0, 1.0)),
    "state_dict": ("dict", True, None),
    "card": ("dict", False, None),
}


def resolve_device(device: Any = None) -> Any:
    """``torch.device``: CUDA when present (``None`` / ``"auto"``), else the given one."""
    import torch

    if device is None or str(device).strip().lower() == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(str(device))


@dataclass
class Detector:
    """A detector network with its pixel size, box size, tiling and validated thresholds.

    Attributes
    ----------
    model : torchvision FCOS
    input_mpp : float
        Pixel size the network works at (um/px).
    box_um : float
        Side of the boxes it was trained on (12.5 um, MIDOG).
    tile_px, overlap_px : int
        Inference tiles (at ``input_mpp``) and their overlap.
    threshold : float
        Score threshold of a detection (maximum F1 on the validation slides).
    proposer_threshold : float
        Lower, recall-first threshold for candidates handed to a classifier.
    """

    model: Any
    input_mpp: float = 0.25
    box_um: float = BOX_UM
    tile_px: int = 1024
    overlap_px: int = 64
    threshold: float = 0.5
    proposer_threshold: float = 0.1
    name: str = "detector"
    card: dict[str, Any] = field(default_factory=dict)
    device: Any = None
    batch_size: int = 4
    #: SHA-256 of the checkpoint file it was loaded from ("" when built in memory)
    sha256: str = ""

    def __post_init__(self) -> None:
        self.device = resolve_device(self.device)
        self.model = self.model.to(self.device).eval()

    # -------------------------------------------------------------------------------- inference
    def detect(
        self, image: np.ndarray, *, mpp: float, score_threshold: float | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Detections in an RGB image of pixel size ``mpp``.

        Returns ``(xy, boxes, scores)`` in *image* pixels: box centres ``(N, 2)``, boxes
        ``(N, 4)`` ``x0, y0, x1, y1`` and scores ``(N,)``, highest score first; only scores
        ``>= score_threshold`` (default: :attr:`proposer_threshold`).
        """
        import torch
        from torchvision.ops import nms

        from ..units import validate_mpp

        arr = np.asarray(image)
        if arr.ndim != 3 or arr.shape[-1] not in (3, 4) or arr.shape[0] < 1 or arr.shape[1] < 1:
            raise InvalidInputError(f"expected an (H, W, 3) RGB image, got shape {arr.shape}")
        arr = np.ascontiguousarray(arr[..., :3])
        if arr.dtype != np.uint8:
            arr = np.clip(arr, 0, 255).astype(np.uint8)
        mpp = validate_mpp(float(mpp), name="mpp")
        thr = self.proposer_threshold if score_threshold is None else float(score_threshold)
        work, fx, fy = resample_to(arr, mpp, self.input_mpp)
        h, w = work.shape[:2]
        boxes, scores = [], []
        self.model.score_thresh = float(thr)
        tiles = plan_tiles(w, h, self.tile_px, self.overlap_px)
        with torch.inference_mode():
            for s in range(0, len(tiles), max(1, int(self.batch_size))):
                part = tiles[s : s + max(1, int(self.batch_size))]
                batch = [
                    torch.from_numpy(np.array(work[y0:y1, x0:x1]))  # a writable copy
                    .permute(2, 0, 1)
                    .to(self.device, torch.float32)
                    .div_(255.0)
                    for x0, y0, x1, y1 in part
                ]
                with _autocast(self.device):
                    out = self.model(batch)
                for (x0, y0, _, _), o in zip(part, out, strict=True):
                    b = o["boxes"].float().cpu()
                    if len(b):
                        boxes.append(b + torch.tensor([x0, y0, x0, y0], dtype=b.dtype))
                        scores.append(o["scores"].float().cpu())
        if not boxes:
            return np.zeros((0, 2)), np.zeros((0, 4)), np.zeros(0)
        b, sc = torch.cat(boxes), torch.cat(scores)
        keep = nms(b, sc, float(self.model.nms_thresh)) if len(tiles) > 1 else torch.arange(len(b))
        b, sc = b[keep].numpy().astype(np.float64), sc[keep].numpy().astype(np.float64)
        order = np.argsort(-sc, kind="stable")
        b, sc = b[order], sc[order]
        b[:, [0, 2]] *= fx
        b[:, [1, 3]] *= fy
        xy = np.stack([(b[:, 0] + b[:, 2]) / 2.0, (b[:, 1] + b[:, 3]) / 2.0], axis=1)
        return xy, b, sc

    def for_workers(self) -> Detector:
        """The copy that tile worker processes get (CPU, one thread each)."""
        if self.device.type == "cpu":
            return self
        import copy

        return Detector(**{**self.__dict__, "model": copy.deepcopy(self.model).cpu(),
                           "device": "cpu"})  # fmt: skip


def _autocast(device: Any) -> Any:
    import contextlib

    import torch

    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.float16)
    return contextlib.nullcontext()


def resample_to(
    image: np.ndarray, mpp: float, target_mpp: float
) -> tuple[np.ndarray, float, float]:
    """``image`` (pixel size ``mpp``) at ``target_mpp`` (Pillow, antialiased), and the input
    pixels per output pixel along x and y (1.0 when within 3 %: no resampling)."""
    if abs(mpp / target_mpp - 1.0) <= 0.03:
        return image, 1.0, 1.0
    from PIL import Image

    h, w = image.shape[:2]
    f = target_mpp / mpp
    size = (max(1, int(round(w / f))), max(1, int(round(h / f))))
    out = np.asarray(Image.fromarray(image).resize(size, Image.Resampling.LANCZOS))
    return out, w / out.shape[1], h / out.shape[0]


def plan_tiles(
    width: int, height: int, tile_px: int, overlap_px: int
) -> list[tuple[int, int, int, int]]:
    """Overlapping ``tile_px`` squares ``(x0, y0, x1, y1)`` covering a ``width x height`` image
    (the last tile of a row / column is shifted inwards, so no tile hangs over the edge)."""
    step = max(1, int(tile_px) - int(overlap_px))

    def starts(n: int) -> list[int]:
        if n <= tile_px:
            return [0]
        s = list(range(0, n - tile_px, step)) + [n - tile_px]
        return sorted(set(s))

    return [
        (x0, y0, min(width, x0 + tile_px), min(height, y0 + tile_px))
        for y0 in starts(height)
        for x0 in starts(width)
    ]


# ------------------------------------------------------------------------------ checkpoints
def save_detector(
    path: str | Path,
    model: Any,
    *,
    input_mpp: float,
    box_um: float,
    tile_px: int,
    overlap_px: int,
    threshold: float,
    proposer_threshold: float,
    card: dict[str, Any] | None = None,
    name: str | None = None,
) -> Path:
    """Write a detector checkpoint atomically (float32 weights: a few MB)."""
    import torch

    from ..io.atomic import atomic_path
    from .model import model_kwargs

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    blob = {
        "format": FORMAT,
        "version": VERSION,
        "name": name or path.stem,
        "model_kwargs": model_kwargs(model),
        "input_mpp": float(input_mpp),
        "box_um": float(box_um),
        "tile_px": int(tile_px),
        "overlap_px": int(overlap_px),
        "threshold": float(threshold),
        "proposer_threshold": float(proposer_threshold),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "card": card or {},
    }
    with atomic_path(path) as tmp:
        torch.save(blob, tmp)
    return path


def load_detector(path: str | Path, *, device: Any = None) -> Detector:
    """Read a detector checkpoint written by ``mitoscope train-detector``.

    Raises
    ------
    ModelLoadError
        Missing, unreadable or corrupt file, not a detector checkpoint, a field of the wrong
        type, or weights that do not fit the architecture (one line each).
    """
    from ..classify.checkpoint import read_checkpoint
    from .model import build_detector

    p = Path(path)
    blob = read_checkpoint(
        p, fmt=FORMAT, version=VERSION, what="detector file", kind="detector",
        fields=DETECTOR_FIELDS,
    )  # fmt: skip
    kw = dict(blob["model_kwargs"])
    known = {"backbone", "fpn_channels", "head_convs", "nms_iou"}
    if not set(kw) <= known or not isinstance(kw.get("backbone"), str):
        raise ModelLoadError(f"{p} is not a valid mitoscope detector checkpoint: bad model_kwargs")
    try:
        model = build_detector(pretrained=False, **kw)
    except (InvalidInputError, TypeError, ValueError) as exc:
        raise ModelLoadError(f"{p} is not a valid mitoscope detector checkpoint: {exc}") from None
    try:
        model.load_state_dict({k: v.float() for k, v in blob["state_dict"].items()})
    except (RuntimeError, AttributeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelLoadError(
            f"{p}: the weights do not fit the {kw['backbone']} detector ({first[:120]})"
        ) from None
    if blob["overlap_px"] >= blob["tile_px"]:
        raise ModelLoadError(f"{p}: overlap_px must be smaller than tile_px")
    return Detector(
        model=model,
        input_mpp=blob["input_mpp"],
        box_um=blob["box_um"],
        tile_px=blob["tile_px"],
        overlap_px=blob["overlap_px"],
        threshold=blob["threshold"],
        proposer_threshold=blob["proposer_threshold"],
        name=str(blob.get("name") or p.stem),
        card=dict(blob.get("card") or {}),
        device=device,
        sha256=_sha256(p),
    )


def _sha256(path: Path) -> str:
    import hashlib

    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


__all__ = [
    "BOX_UM",
    "DETECTOR_FIELDS",
    "FORMAT",
    "VERSION",
    "Detector",
    "load_detector",
    "plan_tiles",
    "resample_to",
    "resolve_device",
    "save_detector",
]
