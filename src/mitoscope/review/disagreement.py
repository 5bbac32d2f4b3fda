"""Ensemble disagreement of a run's detections (``mitoscope select --strategy disagreement``).

Each detection is scored again from its slide: the patch centred on it at the classifier's
pixel size (its mask from the classical proposer, as ``mitoscope classify`` makes one for a
centred crop), through **every member** of the classifier separately and in ``views`` dihedral
views (1 = as is, 4 = the rotations, 8 = and their mirror images). The disagreement is the
standard deviation of those ``members x views`` MF probabilities (the square root of their
variance; 0 when they all agree). A classifier with one member needs ``views`` > 1.

The run database stores only the averaged probability, so the slides are read again: only
slides under the given folder are opened (the review app's rule), at the pixel size recorded
in the run's ``summary.json``, else the slide's own metadata.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InvalidInputError
from .store import ReviewStore

#: context read around a detection, as a multiple of the patch side (for the proposer's mask)
CONTEXT = 1.5


def member_view_probabilities(
    classifier: Any,
    patches: np.ndarray,
    masks: np.ndarray | None,
    *,
    views: int = 1,
    batch_size: int = 64,
) -> np.ndarray:
    """MF probability of each patch by each member in each view: ``(N, members * views)``.

    ``patches`` ``(N, S, S, 3)`` uint8 at the classifier's pixel size and patch size;
    ``masks`` ``(N, S, S)`` bool (or None when the model takes no mask).
    """
    import torch

    from ..classify.backends import forward_torch
    from ..classify.ensemble import dihedral_views

    order = dihedral_views(int(views))
    n = len(patches)
    out = np.zeros((n, len(classifier.models) * len(order)))
    dev = classifier.device
    size = classifier.patch_size_px
    for v, (k, flip) in enumerate(order):
        a = np.rot90(patches, k, axes=(1, 2))
        m = None if masks is None else np.rot90(masks, k, axes=(1, 2))
        if flip:
            a = a[:, :, ::-1]
            m = None if m is None else m[:, :, ::-1]
        for s in range(0, n, int(batch_size)):
            e = min(n, s + int(batch_size))
            x = torch.from_numpy(np.ascontiguousarray(a[s:e])).to(dev)
            x = (
                x.permute(0, 3, 1, 2)
                .float()
                .div_(255.0)
                .contiguous(memory_format=torch.channels_last)
            )
            mk = None
            if classifier.uses_mask:
                mk = (
                    torch.zeros((e - s, 1, size, size), device=dev)
                    if m is None
                    else torch.from_numpy(np.ascontiguousarray(m[s:e])).to(dev)[:, None].float()
                )
            for j, net in enumerate(classifier.models):
                mf, _ = forward_torch(
                    [net], x, mk, device_type=dev.type, cpu_bf16=classifier.cpu_bf16
                )
                out[s:e, v * len(classifier.models) + j] = mf
    return out


def disagreement(probabilities: np.ndarray) -> np.ndarray:
    """Standard deviation of each row of member/view probabilities (0 = all agree)."""
    p = np.asarray(probabilities, dtype=np.float64)
    return p.std(axis=1) if p.ndim == 2 and p.shape[1] else np.zeros(len(p))


def detection_patches(
    reader: Any, xy: list[tuple[float, float]], classifier: Any
) -> tuple[np.ndarray, np.ndarray | None]:
    """Patches (and masks) centred on level-0 points of an open slide, at the classifier's
    pixel size; outside the slide is white."""
    from ..classify.crops import centred_input
    from ..types import Region

    mpp_in = float(classifier.input_mpp)
    side = CONTEXT * classifier.patch_size_px * mpp_in / float(reader.info.mpp)  # level-0 px
    patches, masks = [], []
    for x, y in xy:
        x0, y0 = int(round(x - side / 2)), int(round(y - side / 2))
        img = reader.read_region_mpp(
            Region(x0, y0, int(round(side)), int(round(side))), mpp_in, clip=True
        )
        patch, mask = centred_input(
            img, mpp=mpp_in, input_mpp=mpp_in, size_px=classifier.patch_size_px,
            with_mask=classifier.uses_mask,
        )  # fmt: skip
        patches.append(patch)
        masks.append(mask)
    if not patches:
        s = classifier.patch_size_px
        return np.zeros((0, s, s, 3), np.uint8), None
    return np.stack(patches), (np.stack(masks) if classifier.uses_mask else None)


def classifier_disagreement(
    classifier: Any, slides_dir: str | Path, *, views: int = 4, batch_size: int = 64
) -> Any:
    """A scorer for :func:`~mitoscope.review.select.select_for_review`: ``(store, uids) ->
    {uid: disagreement}`` of a classifier's members and ``views`` over the slides in
    ``slides_dir``."""
    from ..slide import open_slide
    from .tiles import NotServable, safe_slide_path

    if not 1 <= int(views) <= 8:
        raise InvalidInputError("--views must be between 1 and 8")
    if len(classifier.models) * int(views) < 2:
        raise InvalidInputError(
            "--strategy disagreement needs several opinions: the classifier has one member; "
            "give --views 2-8 (test-time flips/rotations) or a checkpoint with several seeds"
        )
    root = Path(slides_dir)
    if not root.is_dir():
        raise InvalidInputError(f"--slides {root} is not a folder")

    def score(store: ReviewStore, uids: list[int]) -> dict[int, float]:
        by_slide: dict[str, list[int]] = defaultdict(list)
        for u in uids:
            by_slide[store.by_uid[u].slide_name].append(u)
        out: dict[int, float] = {}
        for name, its in sorted(by_slide.items()):
            try:
                path = safe_slide_path(root, name)
            except NotServable:
                raise InvalidInputError(
                    f"slide {name} of {store.path} is not under --slides {root}"
                ) from None
            mpp = store.slide_mpp.get(store.by_uid[its[0]].slide)  # read with the store
            with open_slide(path, mpp=mpp) as reader:
                xy = [(store.by_uid[u].x, store.by_uid[u].y) for u in its]
                patches, masks = detection_patches(reader, xy, classifier)
            probs = member_view_probabilities(
                classifier, patches, masks, views=views, batch_size=batch_size
            )
            out.update(zip(its, disagreement(probs).tolist(), strict=True))
        return out

    return score
