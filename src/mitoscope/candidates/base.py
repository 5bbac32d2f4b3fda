"""The proposer interface and the name -> proposer factory."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

from ..errors import InvalidInputError
from ..types import Candidates

#: OMG-Net's candidate size range (um²): smaller or larger objects are not nuclei.
MIN_AREA_UM2 = 2.25
MAX_AREA_UM2 = 225.0
#: green minus red (8-bit levels) above which a pixel is green / cyan marking ink, not stain:
#: haematoxylin, eosin and DAB all absorb green at least as much as red, so H&E never shows it
#: (none of the 2,894 AMi-Br mitosis crops has 1 % such pixels in its 32 um field; the 30 TCGA
#: tissue images have at most 0.08 % anywhere)
INK_GREEN_EXCESS = 30
#: a candidate with more than this share of ink pixels around it (its box grown by
#: :data:`INK_MARGIN_UM`) is an ink speck: an ink deposit's dark core is blue or purple like
#: haematoxylin, only its rim is green, so the rim around the object is what gives it away
MAX_INK_FRACTION = 0.05
INK_MARGIN_UM = 2.0


def ink_fraction(image: np.ndarray, cands: Candidates, *, mpp: float) -> np.ndarray:
    """Share of green / cyan marking-ink pixels (``G - R > INK_GREEN_EXCESS``) in each
    candidate's box grown by :data:`INK_MARGIN_UM` (``cands`` in the pixels of ``image``, whose
    pixel size is ``mpp`` um)."""
    rgb = np.asarray(image)
    out = np.zeros(len(cands))
    if not len(cands) or rgb.ndim != 3 or rgb.shape[-1] < 3:
        return out
    ink = (rgb[..., 1].astype(np.int16) - rgb[..., 0].astype(np.int16)) > INK_GREEN_EXCESS
    if not ink.any():
        return out
    h, w = ink.shape
    g = int(round(INK_MARGIN_UM / float(mpp)))
    for i, (x0, y0, x1, y1) in enumerate(cands.bbox):
        xa, ya, xb, yb = max(0, x0 - g), max(0, y0 - g), min(w, x1 + g), min(h, y1 + g)
        if xb > xa and yb > ya:
            out[i] = float(ink[ya:yb, xa:xb].mean())
    return out


@runtime_checkable
class Proposer(Protocol):
    """Something that turns an RGB tile into masked candidates.

    ``propose(image, mpp=...)`` takes an ``(H, W, 3)`` uint8 RGB array with pixel size ``mpp``
    (um/px) and returns :class:`~mitoscope.types.Candidates` in *image* pixel coordinates, with
    one boolean mask per candidate cropped to its bounding box (``mask_downsample=1.0``).
    """

    name: str

    def propose(self, image: np.ndarray, *, mpp: float) -> Candidates: ...


@dataclass(frozen=True)
class ProposerSpec:
    """A registered proposer: its name, where its class lives and what it needs."""

    name: str
    factory: str  # "package.module:Class", imported when the proposer is built
    description: str = ""

    def build(self, **options: Any) -> Proposer:
        import importlib

        module, attr = self.factory.split(":")
        fn: Callable[..., Proposer] = getattr(importlib.import_module(module), attr)
        return fn(**options)


_REGISTRY: dict[str, ProposerSpec] = {}


def register_proposer(spec: ProposerSpec) -> ProposerSpec:
    """Add a proposer to the registry (a later registration of a name replaces it).

    The factory is a ``"module:attribute"`` string imported only when the proposer is built,
    so registering costs nothing and proposers above this layer (the trained detector) can be
    named here without an import.
    """
    _REGISTRY[str(spec.name).strip().lower()] = spec
    return spec


for _spec in (
    ProposerSpec(
        "classical",
        "mitoscope.candidates.classical:ClassicalProposer",
        "haematoxylin thresholding + watershed; no weights (the default)",
    ),
    ProposerSpec(
        "sam",
        "mitoscope.candidates.sam:SamProposer",
        "Segment Anything automatic masks; needs checkpoint= (and variant=)",
    ),
    ProposerSpec(
        "detector",
        "mitoscope.detector.proposer:DetectorProposer",
        "a trained FCOS detector (mitoscope train-detector); needs checkpoint=",
    ),
):
    register_proposer(_spec)


def list_proposers() -> list[str]:
    """Names of the registered proposers."""
    return sorted(_REGISTRY)


#: the registered proposer names (at import time)
PROPOSERS = tuple(list_proposers())


def get_proposer(name: str = "classical", **options: Any) -> Proposer:
    """Build a proposer by name (one registry lookup).

    Parameters
    ----------
    name : {"classical", "sam", "detector"}
        ``classical`` needs no weights (the default); ``sam`` needs ``checkpoint=`` (a Segment
        Anything checkpoint file) and optionally ``variant=`` (``vit_h``, ``vit_l``, ``vit_b``);
        ``detector`` needs ``checkpoint=`` (``mitoscope train-detector``) and optionally
        ``score_threshold=``.
    **options
        Keyword arguments of the proposer's class (:class:`ClassicalProposer`,
        :class:`SamProposer`, :class:`~mitoscope.detector.proposer.DetectorProposer`).

    Examples
    --------
    >>> get_proposer("classical").name
    'classical'
    """
    key = str(name).strip().lower()
    spec = _REGISTRY.get(key)
    if spec is None:
        raise InvalidInputError(
            f"unknown proposer {name!r}; choose one of {', '.join(list_proposers())}"
        )
    return spec.build(**options)


def check_image(image: np.ndarray) -> np.ndarray:
    """Validate an RGB tile and return it as ``uint8 (H, W, 3)``."""
    arr = np.asarray(image)
    if arr.ndim != 3 or arr.shape[-1] not in (3, 4):
        raise InvalidInputError(f"expected an (H, W, 3) RGB image, got shape {arr.shape}")
    arr = arr[..., :3]
    if arr.dtype != np.uint8:
        arr = np.clip(arr, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(arr)


def objects_from_labels(
    labels: np.ndarray,
    *,
    mpp: float,
    score_image: np.ndarray,
    min_area_um2: float = MIN_AREA_UM2,
    max_area_um2: float = MAX_AREA_UM2,
    proposer: str = "",
) -> Candidates:
    """Turn a label image (0 = background) into :class:`Candidates` in image pixels.

    Centroids, areas and mean ``score_image`` are computed in one vectorised pass
    (``np.bincount`` over foreground pixels); objects outside ``[min_area_um2, max_area_um2]``
    are dropped. Masks are cropped to the (exclusive) bounding box.
    """
    from scipy import ndimage as ndi

    labels = np.asarray(labels)
    n = int(labels.max()) if labels.size else 0
    if n == 0:
        return Candidates.empty(proposer)
    flat_lab = labels.ravel()
    fg = np.flatnonzero(flat_lab)
    lab = flat_lab[fg]
    width = labels.shape[1]
    area = np.bincount(lab, minlength=n + 1)[1:].astype(np.float64)
    px_um2 = float(mpp) ** 2
    keep = (area * px_um2 >= min_area_um2) & (area * px_um2 <= max_area_um2)
    if not keep.any():
        return Candidates.empty(proposer)
    ys = np.bincount(lab, weights=(fg // width).astype(np.float64), minlength=n + 1)[1:]
    xs = np.bincount(lab, weights=(fg % width).astype(np.float64), minlength=n + 1)[1:]
    sc = np.bincount(
        lab, weights=np.asarray(score_image, dtype=np.float64).ravel()[fg], minlength=n + 1
    )[1:]
    slices = ndi.find_objects(labels)
    ids = np.flatnonzero(keep)
    bbox = np.empty((len(ids), 4), dtype=np.int64)
    masks = []
    for k, i in enumerate(ids):
        sy, sx = slices[i]
        bbox[k] = (sx.start, sy.start, sx.stop, sy.stop)
        masks.append(labels[sy, sx] == i + 1)
    a = area[ids]
    return Candidates(
        x_px=xs[ids] / a,
        y_px=ys[ids] / a,
        bbox=bbox,
        area_um2=a * px_um2,
        score=sc[ids] / a,
        masks=masks,
        proposer=proposer,
        mask_downsample=1.0,
    )
