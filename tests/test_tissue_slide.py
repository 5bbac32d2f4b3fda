"""The realistic benchmark slide (issue 13): real tissue in islands on glass (mitoscope.synth)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from conftest import shared_file
from mitoscope.errors import InvalidInputError
from mitoscope.slide import detect_tissue, open_slide
from mitoscope.synth import (
    MIN_SLIDE_PX,
    TISSUE_GLASS_RGB,
    build_tissue_slide,
    island_field,
    load_tissue_images,
    tissue_slide_file_name,
    tissue_slide_size,
)
from mitoscope.types import Region

SIDE = 4096
TISSUE_MM2 = 0.35  # of a 4096 x 4096 px slide at 0.25 um/px (1.05 mm²)


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    imgs, names = load_tissue_images(shared_file("tissue"), mpp=0.25, limit=6)
    assert len(names) == len(imgs) == 6
    return imgs


@pytest.fixture(scope="module")
def slide(tmp_path_factory: pytest.TempPathFactory, images: np.ndarray) -> Path:
    path = tmp_path_factory.mktemp("tissue_slide") / "t.tif"
    return build_tissue_slide(
        path, tissue_mm2=TISSUE_MM2, width=SIDE, height=SIDE, images=images, seed=2,
        min_level_px=256,
    )  # fmt: skip


def test_images_are_resampled_by_their_own_pixel_size(images: np.ndarray) -> None:
    # MoNuSeg: 1000 px at 0.2527 um/px = 1011 px at 0.25 -> cropped to 960 (a multiple of 64)
    assert images.shape == (6, 960, 960, 3) and images.dtype == np.uint8
    native, _ = load_tissue_images(shared_file("tissue"), mpp=0.2527, limit=1)  # as scanned
    half, _ = load_tissue_images(shared_file("tissue"), mpp=0.5054, limit=1)  # 2x coarser
    assert native.shape[1] == 960 and half.shape[1] == 448  # 500 px -> 448
    # the centre of the 2x coarser image is the 2x block mean of the native centre
    a = half[0, 224 - 128 : 224 + 128, 224 - 128 : 224 + 128].astype(float).mean(axis=2)
    b = native[0, 480 - 256 : 480 + 256, 480 - 256 : 480 + 256].astype(float).mean(axis=2)
    b = b.reshape(256, 2, 256, 2).mean(axis=(1, 3))
    assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.95
    # resampled at 0.25 um/px: the same tissue 1.1% larger than at 0.2527 um/px
    c = images[0, 480 - 253 : 480 + 253, 480 - 253 : 480 + 253]
    from PIL import Image

    c = np.asarray(Image.fromarray(c).resize((500, 500), Image.Resampling.LANCZOS)).mean(axis=2)
    d = native[0, 230:730, 230:730].astype(float).mean(axis=2)
    assert np.corrcoef(c.ravel(), d.ravel())[0, 1] > 0.95


def test_slide_is_a_pyramid_of_tissue_islands_on_glass(slide: Path) -> None:
    import openslide

    assert openslide.OpenSlide.detect_format(str(slide)) == "generic-tiff"
    with openslide.OpenSlide(str(slide)) as osl:
        assert f"tissue_mm2={TISSUE_MM2:.3f}" in osl.properties["tiff.ImageDescription"]
    with open_slide(slide) as reader:
        info = reader.info
        assert (info.width, info.height) == (SIDE, SIDE)
        assert info.mpp == pytest.approx(0.25, rel=1e-3)
        assert info.levels == 3 and info.level_downsamples[1] == pytest.approx(4.0, rel=1e-2)
        # tissue detection finds about the built area (its closing fills small gaps)
        area = detect_tissue(reader).area_mm2
        assert TISSUE_MM2 * 0.85 <= area <= TISSUE_MM2 * 1.25, area
        thumb = reader.get_thumbnail(512).astype(float)
    grey = np.abs(thumb - np.asarray(TISSUE_GLASS_RGB)).max(axis=2) <= 8
    assert 0.5 < grey.mean() < 0.8  # most of the slide is glass
    # the slide border is glass: islands lie inside, as on a real slide
    assert grey[:4].mean() > 0.9 and grey[-4:].mean() > 0.9


def test_glass_is_noisy_and_tissue_is_real_he(slide: Path, images: np.ndarray) -> None:
    with open_slide(slide) as reader:
        tissue = detect_tissue(reader)
        level0 = reader.read_region_mpp(Region(0, 0, SIDE, SIDE), 0.25)
    glass = level0[:200, :200].reshape(-1, 3).astype(float)  # a corner: glass
    assert np.abs(glass.mean(axis=0) - TISSUE_GLASS_RGB).max() < 2
    assert 0.5 < glass.std(axis=0).mean() < 4  # slight noise, as scanned glass
    # an all-tissue cell holds one of the real images in one of the 8 orientations
    rng = np.random.default_rng(2)
    s = images.shape[1]
    n_cells = math.ceil(SIDE / s)
    index = rng.integers(0, len(images), size=(n_cells, n_cells))
    orient = rng.integers(0, 8, size=(n_cells, n_cells))
    found = 0
    for r in range(n_cells - 1):
        for q in range(n_cells - 1):
            if tissue.fraction_in(q * s, r * s, (q + 1) * s, (r + 1) * s) < 0.5:
                continue
            cell = level0[r * s : (r + 1) * s, q * s : (q + 1) * s].astype(float)
            on = np.abs(cell - TISSUE_GLASS_RGB).max(axis=2) > 12  # not glass
            if on.mean() < 0.5:
                continue
            ref = np.rot90(images[index[r, q]], k=int(orient[r, q]) % 4)
            if orient[r, q] >= 4:
                ref = ref[:, ::-1]
            err = np.abs(cell - ref.astype(float)).max(axis=2)[on]
            assert err.mean() < 8, (r, q, err.mean())  # JPEG quality 90
            found += 1
    assert found >= 1


def test_island_field_fraction_and_names() -> None:
    field, thr = island_field(120, 150, tissue_fraction=0.3, n_islands=4, seed=1)
    assert (field > thr).mean() == pytest.approx(0.3, abs=0.01)
    again, thr2 = island_field(120, 150, tissue_fraction=0.3, n_islands=4, seed=1)
    assert np.array_equal(field, again) and thr == thr2
    # the slide is at least 40,000 px and holds the tissue on about 40% of it
    assert tissue_slide_size(10) == 40960 and tissue_slide_size(150) == 77824
    assert tissue_slide_size(150) ** 2 * 0.25**2 / 1e6 * 0.4 >= 150
    assert MIN_SLIDE_PX == 40000
    a = tissue_slide_file_name(50, seed=0)
    b = tissue_slide_file_name(50, seed=0, min_level_px=10**9)
    assert a != b and a.endswith(".tif") and "50mm2" in a


def test_bad_parameters_are_one_clear_error(tmp_path: Path, images: np.ndarray) -> None:
    with pytest.raises(InvalidInputError, match="does not fit"):
        build_tissue_slide(
            tmp_path / "x.tif", tissue_mm2=5.0, width=2048, height=2048, images=images
        )
    with pytest.raises(InvalidInputError, match="tissue_mm2"):
        build_tissue_slide(tmp_path / "x.tif", tissue_mm2=0, images=images)
    bad = tmp_path / "src"
    bad.mkdir()
    (bad / "images.csv").write_text("file,organ\na.png,lung\n")
    with pytest.raises(InvalidInputError, match="mpp"):
        load_tissue_images(bad)
    assert not (tmp_path / "x.tif").exists()
