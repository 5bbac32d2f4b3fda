"""The real-H&E mosaic slide builder (mitoscope.synth) and the fast OpenSlide read path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from conftest import shared_file
from mitoscope.errors import InvalidInputError
from mitoscope.slide import detect_tissue, open_slide
from mitoscope.synth import CELL_PX, build_he_mosaic_slide, load_crops, mosaic_layout


@pytest.fixture(scope="module")
def crops() -> np.ndarray:
    return load_crops(shared_file("amibr-train"), max_crops=48, seed=0)


@pytest.fixture(scope="module")
def mosaic(tmp_path_factory: pytest.TempPathFactory, crops: np.ndarray) -> Path:
    path = tmp_path_factory.mktemp("synth") / "mosaic.tif"
    return build_he_mosaic_slide(
        path, width=3000, height=2200, seed=3, tissue_fraction=0.4, crops=crops, min_level_px=256
    )


def test_crops_are_real_he(crops: np.ndarray) -> None:
    assert crops.shape == (48, CELL_PX, CELL_PX, 3) and crops.dtype == np.uint8
    # H&E: red and blue dominate green on average, and the crops are not flat
    mean = crops.reshape(-1, 3).mean(axis=0)
    assert mean[0] > mean[1] and mean[2] > mean[1]
    assert crops.std() > 20


def test_layout_fraction_and_determinism() -> None:
    a, oa = mosaic_layout(60, 80, n_crops=10, tissue_fraction=0.3, seed=1)
    b, ob = mosaic_layout(60, 80, n_crops=10, tissue_fraction=0.3, seed=1)
    assert np.array_equal(a, b) and np.array_equal(oa, ob)
    frac = (a >= 0).mean()
    assert 0.28 <= frac <= 0.32
    assert a.max() < 10 and oa.min() >= 0 and oa.max() < 8


def test_mosaic_is_an_openslide_pyramid(mosaic: Path, crops: np.ndarray) -> None:
    import openslide

    assert openslide.OpenSlide.detect_format(str(mosaic)) == "generic-tiff"
    with open_slide(mosaic) as reader:
        info = reader.info
        assert info.backend == "openslide"
        assert (info.width, info.height) == (3000, 2200)
        assert info.mpp == pytest.approx(0.25, rel=1e-3)
        assert info.levels == 2 and info.level_downsamples[1] == pytest.approx(4.0, rel=1e-2)
        # level-0 cells are (JPEG-compressed) real crops from the source set
        index, orient = mosaic_layout(
            *(-(-s // CELL_PX) for s in (2200, 3000)), n_crops=48, tissue_fraction=0.4, seed=3
        )
        r, c = np.argwhere(index >= 0)[0]
        cell = reader.read_region((c * CELL_PX, r * CELL_PX), 0, (CELL_PX, CELL_PX))
        expected = np.rot90(crops[index[r, c]], k=int(orient[r, c]) % 4)
        if orient[r, c] >= 4:
            expected = expected[:, ::-1]
        assert np.abs(cell.astype(int) - expected.astype(int)).mean() < 6
        # tissue detection finds roughly the tissue share laid out
        tissue = detect_tissue(reader)
        assert 0.25 * info.area_mm2 < tissue.area_mm2 < 0.6 * info.area_mm2


def test_fast_read_path_matches_openslide(mosaic: Path) -> None:
    import openslide

    bare = openslide.OpenSlide(str(mosaic))
    with open_slide(mosaic) as reader:
        for loc, level, size in [
            ((0, 0), 0, (700, 500)),
            ((1234, 777), 0, (512, 300)),
            ((100, 40), 1, (300, 200)),
        ]:
            ours = reader.read_region(loc, level, size)
            ref = np.asarray(bare.read_region(loc, level, size))
            assert ours.shape == (size[1], size[0], 3) and ours.dtype == np.uint8
            assert np.array_equal(ours, ref[..., :3])
        # partly outside with clip=True: outside is white, inside equals OpenSlide
        out = reader.read_region((2900, 2100), 0, (200, 200), clip=True)
        ref = np.asarray(bare.read_region((2900, 2100), 0, (100, 100)))[..., :3]
        assert np.array_equal(out[:100, :100], ref)
        assert (out[100:, :] == 255).all() and (out[:, 100:] == 255).all()
    bare.close()


def test_bad_arguments(tmp_path: Path, crops: np.ndarray) -> None:
    with pytest.raises(InvalidInputError):
        build_he_mosaic_slide(tmp_path / "x.tif", width=0, height=10, crops=crops)
    with pytest.raises(InvalidInputError):
        build_he_mosaic_slide(
            tmp_path / "x.tif", width=10, height=10, tissue_fraction=0, crops=crops
        )
    with pytest.raises(InvalidInputError):
        build_he_mosaic_slide(tmp_path / "x.tif", width=10, height=10, tile=100, crops=crops)
    assert not (tmp_path / "x.tif").exists()
