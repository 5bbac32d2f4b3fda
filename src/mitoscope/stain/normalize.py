"""Stain normalisers (Farooq et al.): Reinhard, Macenko, and a learned per-pixel network.

All follow ``fit(target) -> self`` / ``transform(image) -> image`` on ``(H, W, 3)`` uint8 RGB,
and can be made by name with :func:`get_normalizer`.

- **Reinhard** (Reinhard et al. 2001): match the per-channel mean and standard deviation in
  CIE-Lab of the tissue pixels to those of the target.
- **Macenko** (Macenko et al. 2009): estimate the two stain vectors of each image from the
  angular extremes of its optical densities in the plane of the two main eigenvectors, express
  the image in stain concentrations, scale the 99th percentile of each concentration to the
  target's, and rebuild with the target's stain vectors.
- **Learned** (StainNet, Kang et al. 2021): a tiny fully 1x1-convolutional network (3-32-32-3)
  trained to reproduce a teacher normaliser pixel by pixel; after training it is a fast, smooth
  per-pixel colour map that needs no per-image fitting.

Examples
--------
>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> target = rng.integers(60, 230, (64, 64, 3), dtype=np.uint8)
>>> source = rng.integers(40, 200, (64, 64, 3), dtype=np.uint8)
>>> out = get_normalizer("reinhard").fit(target).transform(source)
>>> out.shape, out.dtype
((64, 64, 3), dtype('uint8'))
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InvalidInputError
from .hed import as_uint8_rgb, od_to_rgb, rgb_to_od

#: Optical density below which a pixel counts as background (Macenko's beta).
OD_BACKGROUND = 0.15


def _tissue_pixels(rgb: np.ndarray, *, what: str) -> np.ndarray:
    """OD vectors (K, 3) of pixels that carry stain; raises on an image without tissue."""
    od = rgb_to_od(rgb).reshape(-1, 3)
    keep = np.all(od > OD_BACKGROUND, axis=1)
    if keep.sum() < 50:
        raise InvalidInputError(
            f"{what} has too little stained tissue to fit a stain normaliser "
            f"({int(keep.sum())} stained pixels; need at least 50)"
        )
    return od[keep]


@dataclass
class ReinhardNormalizer:
    """Match the Lab mean and standard deviation of stained pixels to a target image."""

    target_mean: np.ndarray | None = None
    target_std: np.ndarray | None = None

    @staticmethod
    def _stats(rgb: np.ndarray, *, what: str) -> tuple[np.ndarray, np.ndarray]:
        from skimage.color import rgb2lab

        rgb = as_uint8_rgb(rgb)
        _tissue_pixels(rgb, what=what)
        lab = rgb2lab(rgb).reshape(-1, 3)
        mask = np.all(rgb_to_od(rgb).reshape(-1, 3) > OD_BACKGROUND, axis=1)
        sel = lab[mask]
        return sel.mean(axis=0), sel.std(axis=0) + 1e-6

    def fit(self, target: np.ndarray) -> ReinhardNormalizer:
        self.target_mean, self.target_std = self._stats(target, what="the target image")
        return self

    def transform(self, image: np.ndarray) -> np.ndarray:
        from skimage.color import lab2rgb, rgb2lab

        if self.target_mean is None:
            raise InvalidInputError("call fit(target) before transform()")
        image = as_uint8_rgb(image)
        mean, std = self._stats(image, what="the image")
        lab = rgb2lab(image)
        out = (lab - mean) / std * self.target_std + self.target_mean
        rgb = lab2rgb(out)
        result = np.clip(rgb * 255.0 + 0.5, 0, 255).astype(np.uint8)
        background = np.all(rgb_to_od(image) <= OD_BACKGROUND, axis=-1)
        result[background] = image[background]  # glass stays glass
        return result


def macenko_stains(rgb: np.ndarray, *, alpha: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Stain matrix (2, 3; rows H then E, unit OD vectors) and 99th-percentile concentrations."""
    od = _tissue_pixels(as_uint8_rgb(rgb), what="the image")
    _, vecs = np.linalg.eigh(np.cov(od, rowvar=False))
    plane = vecs[:, [1, 2]]  # two largest eigenvalues
    proj = od @ plane
    phi = np.arctan2(proj[:, 1], proj[:, 0])
    lo, hi = np.percentile(phi, [alpha, 100 - alpha])
    v1 = plane @ np.array([np.cos(lo), np.sin(lo)])
    v2 = plane @ np.array([np.cos(hi), np.sin(hi)])
    v1 *= np.sign(v1.sum()) or 1.0
    v2 *= np.sign(v2.sum()) or 1.0
    # haematoxylin is the vector with the larger red (first) component
    stains = np.stack([v1, v2]) if v1[0] > v2[0] else np.stack([v2, v1])
    stains /= np.linalg.norm(stains, axis=1, keepdims=True)
    conc = np.linalg.lstsq(stains.T, od.T, rcond=None)[0]
    max_c = np.percentile(conc, 99, axis=1)
    return stains, np.maximum(max_c, 1e-6)


@dataclass
class MacenkoNormalizer:
    """Macenko stain normalisation to a target image's stain vectors and intensities."""

    alpha: float = 1.0
    target_stains: np.ndarray | None = None
    target_max: np.ndarray | None = None

    def fit(self, target: np.ndarray) -> MacenkoNormalizer:
        self.target_stains, self.target_max = macenko_stains(target, alpha=self.alpha)
        return self

    def transform(self, image: np.ndarray) -> np.ndarray:
        if self.target_stains is None or self.target_max is None:
            raise InvalidInputError("call fit(target) before transform()")
        image = as_uint8_rgb(image)
        stains, max_c = macenko_stains(image, alpha=self.alpha)
        od = rgb_to_od(image).reshape(-1, 3)
        conc = np.linalg.lstsq(stains.T, od.T, rcond=None)[0]
        conc *= (self.target_max / max_c)[:, None]
        out = (conc.T @ self.target_stains).reshape(image.shape)
        return od_to_rgb(out)


@dataclass
class LearnedNormalizer:
    """StainNet-style per-pixel normaliser distilled from a teacher (Reinhard or Macenko).

    ``fit(target, sources=[...])`` fits the teacher to ``target``, normalises the source images
    with it and trains a 3-32-32-3 network of 1x1 convolutions to reproduce the result.
    """

    teacher: str = "macenko"
    epochs: int = 300
    hidden: int = 32
    seed: int = 0
    device: str = "cpu"
    _net: Any = field(default=None, repr=False)

    def _build(self) -> Any:
        import torch
        from torch import nn

        torch.manual_seed(self.seed)
        # per-pixel Linear layers == 1x1 convolutions, applied to (pixels, 3)
        return nn.Sequential(
            nn.Linear(3, self.hidden),
            nn.ReLU(inplace=True),
            nn.Linear(self.hidden, self.hidden),
            nn.ReLU(inplace=True),
            nn.Linear(self.hidden, 3),
        )

    def fit(
        self, target: np.ndarray, sources: list[np.ndarray] | None = None, *, lr: float = 1e-2
    ) -> LearnedNormalizer:
        import torch

        # a 3-32-32-3 MLP is far too small to gain from intra-op threads (and loses a lot to
        # thread contention on a busy machine): train it on one thread
        previous = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return self._fit(target, sources, lr=lr)
        finally:
            torch.set_num_threads(previous)

    def _fit(
        self, target: np.ndarray, sources: list[np.ndarray] | None, *, lr: float
    ) -> LearnedNormalizer:
        import torch

        teacher = get_normalizer(self.teacher).fit(target)
        sources = [target] if not sources else sources
        xs, ys = [], []
        for src in sources:
            src = as_uint8_rgb(src)
            xs.append(src.reshape(-1, 3))
            ys.append(teacher.transform(src).reshape(-1, 3))
        x = torch.from_numpy(np.concatenate(xs).astype(np.float32) / 255.0)
        y = torch.from_numpy(np.concatenate(ys).astype(np.float32) / 255.0)
        gen = torch.Generator().manual_seed(self.seed)
        net = self._build().to(self.device)
        opt = torch.optim.Adam(net.parameters(), lr=lr)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, self.epochs)
        n = x.shape[0]
        for _ in range(self.epochs):
            idx = torch.randint(0, n, (min(n, 4096),), generator=gen)
            xb = x[idx].to(self.device)
            yb = y[idx].to(self.device)
            loss = torch.nn.functional.l1_loss(net(xb), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        self._net = net.eval()
        return self

    def transform(self, image: np.ndarray) -> np.ndarray:
        import torch

        if self._net is None:
            raise InvalidInputError("call fit(target, sources) before transform()")
        image = as_uint8_rgb(image)
        with torch.no_grad():
            x = torch.from_numpy(image.reshape(-1, 3).astype(np.float32) / 255.0)
            out = self._net(x.to(self.device)).cpu().numpy().reshape(image.shape)
        return np.clip(out * 255.0 + 0.5, 0, 255).astype(np.uint8)

    def state_dict(self) -> dict[str, Any]:
        if self._net is None:
            raise InvalidInputError("the normaliser has not been fitted")
        return {"hidden": self.hidden, "weights": self._net.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> LearnedNormalizer:
        self.hidden = int(state["hidden"])
        net = self._build()
        net.load_state_dict(state["weights"])
        self._net = net.eval()
        return self


NORMALIZERS = {
    "reinhard": ReinhardNormalizer,
    "macenko": MacenkoNormalizer,
    "learned": LearnedNormalizer,
    "stainnet": LearnedNormalizer,
}


#: the normalisers that fit on one target image (``--stain-normalize``); ``learned`` needs training
FIT_ON_TARGET = ("reinhard", "macenko")


def fitted_normalizer(method: str, target: str | os.PathLike[str]) -> Any:
    """A ``reinhard`` / ``macenko`` normaliser fitted on the RGB image file ``target``.

    Fitted once per process for the same method and file (detection workers, the report).

    Raises
    ------
    InvalidInputError
        Unknown method, a missing or unreadable target, or a target with too little stain.
    """
    key = str(method).strip().lower()
    if key not in FIT_ON_TARGET:
        raise InvalidInputError(
            f"--stain-normalize must be one of {', '.join(FIT_ON_TARGET)}, got {method!r}"
        )
    p = Path(target)
    try:
        stamp = p.stat().st_mtime_ns
    except OSError:
        raise InvalidInputError(f"stain target image not found: {p}") from None
    return _fitted(key, str(p.resolve()), stamp)


def normalize_tile(normalizer: Any, image: np.ndarray) -> np.ndarray:
    """``normalizer.transform(image)``; a tile with too little stain to fit (glass at a tissue
    edge) is returned as it is."""
    try:
        return normalizer.transform(image)
    except InvalidInputError:
        return image


@functools.lru_cache(maxsize=4)
def _fitted(method: str, path: str, stamp: int) -> Any:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            rgb = np.asarray(im.convert("RGB"))
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise InvalidInputError(f"cannot read stain target image {path}: {exc}") from None
    return get_normalizer(method).fit(rgb)


def get_normalizer(name: str, **options: Any) -> Any:
    """Make a stain normaliser by name: ``reinhard``, ``macenko`` or ``learned`` (``stainnet``)."""
    try:
        cls = NORMALIZERS[name.lower()]
    except KeyError:
        raise InvalidInputError(
            f"unknown stain normaliser {name!r}; choose one of {', '.join(sorted(NORMALIZERS))}"
        ) from None
    return cls(**options)
