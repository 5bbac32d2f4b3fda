"""Torch datasets, slide-grouped splits and domain-balanced samplers over a SampleSet."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import InvalidInputError
from .samples import SampleSet


def slide_split(
    slides: np.ndarray, *, val_fraction: float = 0.15, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Boolean ``(train, val)`` masks that split samples by slide (never by crop)."""
    uniq = np.unique(slides)
    if len(uniq) < 2:
        raise InvalidInputError("need samples from at least 2 slides for a slide-grouped split")
    rng = np.random.default_rng(seed)
    perm = rng.permutation(uniq)
    n_val = max(1, int(round(len(uniq) * float(val_fraction))))
    val_slides = set(perm[:n_val].tolist())
    val = np.array([s in val_slides for s in slides])
    return ~val, val


def slide_folds(slides: np.ndarray, *, n_folds: int = 3, seed: int = 0) -> list[np.ndarray]:
    """``n_folds`` boolean test masks that partition the samples by slide."""
    uniq = np.unique(slides)
    if len(uniq) < n_folds:
        raise InvalidInputError(f"only {len(uniq)} slides; cannot make {n_folds} folds")
    perm = np.random.default_rng(seed).permutation(uniq)
    fold_of = {s: i % n_folds for i, s in enumerate(perm)}
    f = np.array([fold_of[s] for s in slides])
    return [f == k for k in range(n_folds)]


def mf_sample_weights(
    samples: SampleSet, *, neg_ratio: float = 1.0, domain_balanced: bool = True
) -> np.ndarray:
    """Sampling weights for the MF-vs-non-MF stage.

    Positives and negatives get total mass ``1 : neg_ratio`` (Ji et al.); within each class,
    each training source (``samples.source``) gets a share proportional to its weight
    (``samples.meta["source_weights"]``, default 1; one source when the column is empty), and
    within a source every domain group (scanner / dataset) gets the same mass when
    ``domain_balanced`` (Fick et al.); hard negatives (labelled imposters) count as negatives.
    """
    y = samples.is_mf.astype(bool)
    src = np.asarray(samples.source, dtype=str)
    sweights = dict(samples.meta.get("source_weights") or {})
    w = np.zeros(len(y))
    for cls, mass in ((True, 1.0), (False, float(neg_ratio))):
        sel = y == cls
        if not sel.any():
            continue
        names, s_inv = np.unique(src[sel], return_inverse=True)
        share = np.array([float(sweights.get(n, 1.0)) for n in names])
        share = share / share.sum()
        wc = np.zeros(int(sel.sum()))
        for k in range(len(names)):
            mine = s_inv == k
            groups = samples.group[sel][mine] if domain_balanced else np.zeros(mine.sum())
            ug, inv, cnt = np.unique(groups, return_inverse=True, return_counts=True)
            wc[mine] = mass * share[k] / len(ug) / cnt[inv]
        w[sel] = wc
    return w / w.sum()


def atypical_sample_weights(samples: SampleSet, *, domain_balanced: bool = True) -> np.ndarray:
    """Weights over mitotic figures with an atypia label: normal and atypical equally likely."""
    lab = samples.atypical
    w = np.zeros(len(lab))
    for cls in (0, 1):
        sel = lab == cls
        if not sel.any():
            continue
        groups = samples.group[sel] if domain_balanced else np.zeros(sel.sum())
        ug, inv, cnt = np.unique(groups, return_inverse=True, return_counts=True)
        w[sel] = 1.0 / len(ug) / cnt[inv]
    if w.sum() == 0:
        raise InvalidInputError("no mitotic figures with an atypical/normal label to train on")
    return w / w.sum()


class PatchDataset:
    """Map-style dataset: augmented ``(image, mask, targets)`` for a model input size.

    Augmentation (when ``augment``): random shift of up to ``shift_px``, the domain
    augmentations ``domain_ops`` (:func:`mitoscope.stain.augment.domain_augment`), Tellez HED jitter
    (``stain_sigma``; 0 disables), horizontal flip (``p_flip``, 0.4) and a random 90-degree
    rotation.
    """

    def __init__(
        self,
        samples: SampleSet,
        *,
        size_px: int,
        augment: bool = True,
        stain_sigma: float = 0.14,
        shift_px: int = 4,
        seed: int = 0,
        domain_ops: tuple[str, ...] = (),
        domain_p: float = 0.5,
        input_mpp: float = 0.25,
        p_flip: float = 0.4,
    ) -> None:
        if samples.patches.shape[1] < size_px:
            raise InvalidInputError(
                f"stored patches are {samples.patches.shape[1]} px, model needs {size_px} px"
            )
        self.s = samples
        self.size = int(size_px)
        self.augment = augment
        self.stain_sigma = float(stain_sigma)
        self.shift = int(shift_px) if augment else 0
        self.rng = np.random.default_rng(seed)
        self.domain_ops = tuple(domain_ops)
        self.domain_p = float(domain_p)
        self.input_mpp = float(input_mpp)
        self.p_flip = float(p_flip)

    def __len__(self) -> int:
        return len(self.s)

    def __getitem__(self, i: int) -> dict[str, Any]:
        import torch

        from ..stain.augment import flip_rotate, hed_jitter

        s = self.s
        full = s.patches.shape[1]
        off = (full - self.size) // 2
        dx = dy = 0
        if self.shift:
            room = min(self.shift, off)
            if room > 0:
                dx, dy = (int(v) for v in self.rng.integers(-room, room + 1, size=2))
        y0, x0 = off + dy, off + dx
        img = s.patches[i, y0 : y0 + self.size, x0 : x0 + self.size]
        msk = s.masks[i, y0 : y0 + self.size, x0 : x0 + self.size]
        if self.augment:
            if self.domain_ops:
                from ..stain.augment import domain_augment

                img, msk = domain_augment(
                    img, msk, ops=self.domain_ops, p=self.domain_p, mpp=self.input_mpp, rng=self.rng
                )
            if self.stain_sigma > 0:
                img = hed_jitter(img, sigma=self.stain_sigma, rng=self.rng)
            both = np.concatenate([img, msk[..., None].astype(np.uint8)], axis=-1)
            both = flip_rotate(both, p_flip=self.p_flip, rng=self.rng)
            img, msk = both[..., :3], both[..., 3].astype(bool)
        x = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1).float().div_(255.0)
        m = torch.from_numpy(np.ascontiguousarray(msk))[None].float()
        return {
            "image": x,
            "mask": m,
            "is_mf": torch.tensor(float(s.is_mf[i])),
            "atypical": torch.tensor(int(s.atypical[i])),
            "agreement": torch.tensor(float(s.agreement[i])),
            "mf_agreement": torch.tensor(float(s.mf_agreement[i])),
            "subtype": torch.tensor(int(s.subtype[i])),
        }


def make_loader(
    dataset: PatchDataset,
    *,
    weights: np.ndarray | None,
    num_samples: int | None,
    batch_size: int,
    seed: int,
    shuffle: bool = True,
) -> Any:
    """A DataLoader drawing ``num_samples`` per epoch with the given sampling weights."""
    import torch
    from torch.utils.data import DataLoader, WeightedRandomSampler

    gen = torch.Generator().manual_seed(int(seed))
    if weights is not None:
        sampler = WeightedRandomSampler(
            torch.as_tensor(weights, dtype=torch.double),
            num_samples=int(num_samples or len(dataset)),
            replacement=True,
            generator=gen,
        )
        return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=0)
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=gen, num_workers=0)
