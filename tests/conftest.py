"""Shared fixtures: real data from ../shared/data and synthetic slides written on the fly."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("MITOSCOPE_SHARED_DATA", ROOT.parent / "shared" / "data"))


def shared_file(*parts: str) -> Path:
    """Path to a file in ../shared/data, skipping the test when it is absent."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real data not available: {path} (needs ../shared/data beside the repo)")
    return path


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.exists():
        pytest.skip(f"real data not available: {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def cmu_svs() -> Path:
    """The real Aperio SVS (2220x2967, 0.499 um/px)."""
    return shared_file("slides", "cmu_small_region.svs")


@pytest.fixture(scope="session")
def he_image() -> Path:
    """A 1000x1000 real H&E image (no pixel size in metadata)."""
    return shared_file("slides", "tiatoolbox_target_image.png")


def synthetic_he(height: int, width: int, *, seed: int = 0, tissue: bool = True) -> np.ndarray:
    """An H&E-like RGB image: pink tissue with purple nuclei on white glass."""
    rng = np.random.default_rng(seed)
    img = np.full((height, width, 3), 245, dtype=np.uint8)
    if not tissue:
        return img
    yy, xx = np.mgrid[0:height, 0:width]
    cy, cx = height / 2, width / 2
    inside = ((yy - cy) / (0.4 * height)) ** 2 + ((xx - cx) / (0.4 * width)) ** 2 < 1
    img[inside] = (230, 150, 190)
    n = max(1, height * width // 400)
    ys = rng.integers(0, height, n)
    xs = rng.integers(0, width, n)
    for y, x in zip(ys, xs, strict=True):
        if inside[y, x]:
            r = int(rng.integers(3, 6))
            img[max(0, y - r) : y + r, max(0, x - r) : x + r] = (90, 50, 140)
    return img


def write_pyramid_tiff(
    path: Path,
    image: np.ndarray,
    *,
    mpp: float | None = 0.25,
    levels: int = 3,
    tile: int = 256,
    compression: str = "zlib",
) -> Path:
    """Write a tiled pyramidal TIFF (levels as consecutive main IFDs, ``subfiletype=1``).

    OpenSlide reads this as ``generic-tiff`` with a pyramid; ``mpp`` becomes the resolution tags.
    """
    import tifffile
    from skimage.transform import downscale_local_mean

    kwargs = {}
    if mpp is not None:
        kwargs = {"resolution": (1e4 / mpp, 1e4 / mpp), "resolutionunit": "CENTIMETER"}
    with tifffile.TiffWriter(str(path), bigtiff=False) as tw:
        current = image
        for lvl in range(levels):
            tw.write(
                current,
                tile=(tile, tile),
                compression=compression,
                photometric="rgb",
                subfiletype=0 if lvl == 0 else 1,
                **({} if lvl else kwargs),
            )
            if min(current.shape[:2]) < 2 * tile:
                break
            current = downscale_local_mean(current, (2, 2, 1)).astype(np.uint8)
    return path


@pytest.fixture
def pyramid_tiff(tmp_path: Path) -> Path:
    """A 2048x1536 synthetic pyramidal TIFF at 0.25 um/px."""
    return write_pyramid_tiff(tmp_path / "synthetic.tif", synthetic_he(1536, 2048))
