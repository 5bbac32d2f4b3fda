"""Cascade stage 1: a tiny screening CNN that discards the obvious non-mitoses cheaply.

The full classifier (an EfficientNet-Lite0 ensemble at 0.25 um/px) costs a few milliseconds per
candidate on a CPU, and a slide has ~10,000 nucleus-sized candidates per mm². The screen sees the
same candidates at half the resolution (0.5 um/px, 32 x 32 px = 16 um, RGB + the candidate's
mask), costs a small fraction of that, and keeps a candidate when its score is at or above a
threshold chosen on *validation slides* for a target recall of mitotic figures (default 0.995,
i.e. at most 0.5% of the figures lost there). Only the kept candidates reach the full classifier.

The screen is trained by :mod:`mitoscope.train.screen_train` (through the classifier's Lightning
training path) on the same slide split as the bundled classifier (its validation slides are never
trained on) and stored as a small checkpoint (``mitoscope_screen.pt``, ~100 kB) that ships with
the package. ``benchmarks/cascade_recall.py``
measures its recall loss and the share of candidates it discards.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InvalidInputError, ModelLoadError

FORMAT = "mitoscope-screen"
VERSION = 1


def default_screen_path() -> Path:
    """The bundled screening model (inside the installed package)."""
    return Path(__file__).resolve().parents[1] / "data" / "mitoscope_screen.pt"


def build_screen_net(width: int = 8) -> Any:
    """The screening CNN: 4 inputs (RGB + mask), ~11k parameters, ~1.5 MFLOP at 32 x 32 px."""
    from torch import nn

    w = int(width)
    return nn.Sequential(
        nn.Conv2d(4, w, 3, stride=2, padding=1, bias=False),  # 16 x 16
        nn.BatchNorm2d(w),
        nn.ReLU(inplace=True),
        nn.Conv2d(w, 2 * w, 3, padding=1, bias=False),
        nn.BatchNorm2d(2 * w),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),  # 8 x 8
        nn.Conv2d(2 * w, 4 * w, 3, padding=1, bias=False),
        nn.BatchNorm2d(4 * w),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),  # 4 x 4
        nn.Conv2d(4 * w, 4 * w, 3, padding=1, bias=False),
        nn.BatchNorm2d(4 * w),
        nn.ReLU(inplace=True),
        nn.AdaptiveMaxPool2d(1),
        nn.Flatten(),
        nn.Linear(4 * w, 1),
    )


def _to_tensor(patches: np.ndarray, masks: np.ndarray | None, size: int) -> Any:
    import torch

    from .patches import centre_crop

    arr = centre_crop(np.asarray(patches), size)
    x = torch.from_numpy(np.ascontiguousarray(arr)).permute(0, 3, 1, 2).float().div_(255.0)
    if masks is None:
        m = torch.zeros((len(arr), 1, size, size))
    else:
        mk = centre_crop(np.asarray(masks), size)
        m = torch.from_numpy(np.ascontiguousarray(mk))[:, None].float()
    return torch.cat([x, m], 1).contiguous(memory_format=torch.channels_last)


@dataclass
class Screen:
    """A trained screening model with its validated keep-threshold.

    Attributes
    ----------
    net : torch.nn.Module
    input_mpp : float
        Pixel size of its patches (um/px).
    patch_size_px : int
    threshold : float
        Candidates scoring at or above this are kept.
    card : dict
        What it was trained on and what it measured (recall and discard share on validation).
    """

    net: Any
    input_mpp: float
    patch_size_px: int
    threshold: float
    width: int = 8
    card: dict[str, Any] = field(default_factory=dict)
    #: the network as an ONNX graph: scored in ONNX Runtime from numpy (~3x torch for this size)
    onnx: bytes | None = field(default=None, repr=False)
    _session: Any = field(default=None, repr=False)

    def __getstate__(self) -> dict[str, Any]:
        return dict(self.__dict__, _session=None)

    def for_workers(self) -> Screen:
        """A copy without the torch network when ONNX Runtime scores it (workers then never
        import torch); otherwise this screen."""
        from dataclasses import replace

        return self if self.onnx is None else replace(self, net=None, _session=None)

    def _scores_onnx(self, patches: np.ndarray, masks: np.ndarray | None) -> np.ndarray:
        from .patches import centre_crop

        if self._session is None:
            from .backends import ort_session

            self._session = ort_session(self.onnx, threads=1)
        size = self.patch_size_px
        arr = centre_crop(np.asarray(patches), size)
        x = np.zeros((len(arr), 4, size, size), np.float32)
        np.multiply(arr.transpose(0, 3, 1, 2), np.float32(1.0 / 255.0), out=x[:, :3])
        if masks is not None:
            x[:, 3] = centre_crop(np.asarray(masks), size)
        from .backends import sigmoid

        return sigmoid(self._session.run(None, {"x": x})[0][:, 0])

    def scores(self, patches: np.ndarray, masks: np.ndarray | None, *, batch_size: int = 1024):
        """Screening probability per patch (``(N, H, W, 3)`` uint8 at :attr:`input_mpp`)."""
        n = len(patches)
        out = np.empty(n, dtype=np.float64)
        if n == 0:
            return out
        if self.onnx is not None:
            for s in range(0, n, int(batch_size)):
                e = min(n, s + int(batch_size))
                out[s:e] = self._scores_onnx(patches[s:e], None if masks is None else masks[s:e])
            return out
        import torch

        self.net.eval()
        with torch.inference_mode():
            for s in range(0, n, int(batch_size)):
                e = min(n, s + int(batch_size))
                mk = None if masks is None else masks[s:e]
                x = _to_tensor(patches[s:e], mk, self.patch_size_px)
                out[s:e] = torch.sigmoid(self.net(x)[:, 0]).numpy()
        return out

    def keep(self, patches: np.ndarray, masks: np.ndarray | None) -> np.ndarray:
        """Boolean mask of the patches that go on to the full classifier."""
        return self.scores(patches, masks) >= self.threshold

    def save(self, path: str | Path) -> Path:
        """Write the checkpoint atomically."""
        import torch

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        blob = {
            "format": FORMAT,
            "version": VERSION,
            "width": int(self.width),
            "input_mpp": float(self.input_mpp),
            "patch_size_px": int(self.patch_size_px),
            "threshold": float(self.threshold),
            "state_dict": {k: v.detach().cpu() for k, v in self.net.state_dict().items()},
            "card": self.card,
        }
        tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
        torch.save(blob, tmp)
        os.replace(tmp, path)
        return path


def _onnx_ok() -> bool:
    from .backends import onnx_available, resolve_backend

    return resolve_backend() != "torch" and onnx_available()


def _export(net: Any, size: int, checkpoint_sha256: str) -> bytes:
    """The network as an ONNX graph, from the user cache when this checkpoint was exported
    before (:func:`~mitoscope.classify.backends.cached_graph`)."""
    import torch

    from .backends import cached_graph, onnx_graph

    def build() -> bytes:
        return onnx_graph(
            net, (torch.rand(2, 4, size, size),), input_names=["x"], output_names=["logit"]
        )

    key = {"kind": "screen", "checkpoint_sha256": checkpoint_sha256, "patch_size_px": size}
    return cached_graph(key, build)


def load_screen(path: str | Path | None = None, *, onnx: bool = True) -> Screen:
    """Load a screening checkpoint (``None`` -> the bundled one).

    With ``onnx`` (the default; ONNX Runtime installed and ``MITOSCOPE_BACKEND`` not ``torch``)
    the network is scored in ONNX Runtime; its graph is exported once per checkpoint file and
    kept in the user cache.

    Raises
    ------
    ModelLoadError
        Missing, corrupt, not a screening model, or weights that do not fit the network.
    """
    from .checkpoint import read_checkpoint

    p = default_screen_path() if path is None else Path(path)
    fields = {
        "width": ("int", False, (1, 1024)),
        "input_mpp": ("float", True, (0.05, 20.0)),
        "patch_size_px": ("int", True, (8, 4096)),
        "threshold": ("float", True, (0.0, 1.0)),
        "state_dict": ("dict", True, None),
        "card": ("dict", False, None),
    }
    blob = read_checkpoint(
        p, fmt=FORMAT, version=VERSION, what="screening model", kind="screening model",
        fields=fields,
    )  # fmt: skip
    width = int(blob.get("width", 8))
    net = build_screen_net(width)
    try:
        net.load_state_dict(blob["state_dict"], strict=True)
    except (RuntimeError, KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ModelLoadError(
            f"{p}: weights do not fit the screening network ({exc!s:.120})"
        ) from None
    net.eval()
    graph = None
    if onnx and _onnx_ok():
        from .backends import file_sha256

        graph = _export(net, int(blob["patch_size_px"]), file_sha256(p))
    return Screen(
        onnx=graph,
        net=net,
        input_mpp=float(blob["input_mpp"]),
        patch_size_px=int(blob["patch_size_px"]),
        threshold=float(blob["threshold"]),
        width=width,
        card=dict(blob.get("card") or {}),
    )


def recall_threshold(scores_pos: np.ndarray, target_recall: float) -> float:
    """The largest threshold keeping at least ``target_recall`` of the positives.

    >>> recall_threshold(np.array([0.1, 0.5, 0.9, 0.95]), 0.75)
    0.5
    """
    s = np.sort(np.asarray(scores_pos, dtype=np.float64))
    if len(s) == 0:
        raise InvalidInputError("no positives to choose a screening threshold on")
    k = int(np.floor((1.0 - float(target_recall)) * len(s) + 1e-9))
    return float(s[min(k, len(s) - 1)])
