"""Slide readers, tissue detection, tiling and `mitoscope info` (issue 2)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import synthetic_he, write_pyramid_tiff
from mitoscope.errors import InvalidInputError, MissingMetadataError, RegionError, SlideOpenError
from mitoscope.slide import ArraySlide, detect_tissue, open_slide, plan_tiles
from mitoscope.types import Region


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mitoscope", *args], capture_output=True, text=True, timeout=120
    )


# -- real slide -------------------------------------------------------------------------------
def test_real_svs_metadata(cmu_svs: Path) -> None:
    with open_slide(cmu_svs) as s:
        info = s.info
        assert info.backend == "openslide"
        assert (info.width, info.height) == (2220, 2967)
        assert info.mpp == pytest.approx(0.499, abs=1e-3)
        assert info.mpp_source == "metadata"
        tile = s.read_region((100, 200), 0, (64, 32))
        assert tile.shape == (32, 64, 3) and tile.dtype == np.uint8
        thumb = s.get_thumbnail(256)
        assert max(thumb.shape[:2]) <= 256


def test_real_svs_tissue_area_checked_by_eye(cmu_svs: Path) -> None:
    # The thumbnail shows a strip of skin covering roughly a third of the 1.64 mm² image; the mask
    # was overlaid on the thumbnail and inspected (docs/tissue.md). 0.61 mm² measured.
    with open_slide(cmu_svs) as s:
        tissue = detect_tissue(s)
    assert 0.45 < tissue.area_mm2 < 0.8
    assert 0.25 < tissue.mask.mean() < 0.5


def test_mpp_override(cmu_svs: Path) -> None:
    with open_slide(cmu_svs, mpp=0.25) as s:
        assert s.info.mpp == 0.25 and s.info.mpp_source == "user"


# -- synthetic pyramids -----------------------------------------------------------------------
def test_pyramid_tiff_levels_openslide(pyramid_tiff: Path) -> None:
    with open_slide(pyramid_tiff) as s:
        assert s.info.backend == "openslide"
        assert s.info.levels >= 2
        assert s.info.level_downsamples[1] == pytest.approx(2.0)
        assert s.info.mpp == pytest.approx(0.25, rel=1e-3)
        full = s.read_region((0, 0), 0, (512, 512))
        half = s.read_region((0, 0), 1, (256, 256))
        # the same area at two levels looks the same (zlib is lossless; downsampling by mean)
        small = full.reshape(256, 2, 256, 2, 3).mean(axis=(1, 3))
        assert np.abs(small - half.astype(float)).mean() < 3.0


def test_tiffslide_backend_reads_same_pixels(pyramid_tiff: Path) -> None:
    with open_slide(pyramid_tiff) as a, open_slide(pyramid_tiff, backend="tiffslide") as b:
        assert b.info.backend == "tiffslide"
        assert (a.info.width, a.info.height) == (b.info.width, b.info.height)
        assert b.info.mpp == pytest.approx(a.info.mpp, rel=1e-3)
        ra = a.read_region((300, 200), 0, (100, 80))
        rb = b.read_region((300, 200), 0, (100, 80))
        np.testing.assert_array_equal(ra, rb)


def test_read_region_mpp_resamples(pyramid_tiff: Path) -> None:
    with open_slide(pyramid_tiff) as s:
        img = s.read_region_mpp(Region(0, 0, 1000, 800), 0.5)
        assert img.shape == (400, 500, 3)
        assert s.best_level_for_mpp(0.5) == 1
        assert s.best_level_for_mpp(0.3) == 0


def test_region_outside_slide(pyramid_tiff: Path) -> None:
    with open_slide(pyramid_tiff) as s:
        with pytest.raises(RegionError, match="outside the slide"):
            s.read_region((2000, 0), 0, (200, 200))
        padded = s.read_region((2000, 0), 0, (200, 200), clip=True)
        assert padded.shape == (200, 200, 3)
        assert (padded[:, 60:] == 255).all()
        with pytest.raises(RegionError):
            s.read_region((0, 0), 9, (10, 10))


def test_plain_image_needs_mpp(he_image: Path) -> None:
    with pytest.raises(MissingMetadataError, match="--mpp"):
        open_slide(he_image)
    with open_slide(he_image, mpp=0.25) as s:
        assert s.info.backend == "image"
        assert (s.info.width, s.info.height) == (1000, 1000)


def test_png_with_dpi_metadata(tmp_path: Path) -> None:
    path = tmp_path / "region.png"
    Image.fromarray(synthetic_he(100, 120)).save(path, dpi=(101600, 101600))  # 0.25 um/px
    with open_slide(path) as s:
        assert s.info.mpp == pytest.approx(0.25, rel=1e-3)


def test_flat_tiff_with_resolution(tmp_path: Path) -> None:
    import tifffile

    path = tmp_path / "flat.tif"
    tifffile.imwrite(
        path, synthetic_he(200, 300), resolution=(1e4 / 0.5, 1e4 / 0.5), resolutionunit="CENTIMETER"
    )
    with open_slide(path) as s:
        assert s.info.mpp == pytest.approx(0.5, rel=1e-3)
        assert (s.info.width, s.info.height) == (300, 200)


def test_array_slide() -> None:
    s = ArraySlide(synthetic_he(300, 400), mpp=0.25)
    assert s.read_region((10, 10), 0, (20, 20)).shape == (20, 20, 3)
    assert s.info.area_mm2 == pytest.approx(300 * 400 * 0.25**2 / 1e6)


# -- bad input --------------------------------------------------------------------------------
def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(SlideOpenError, match="no such file"):
        open_slide(tmp_path / "nope.svs")


def test_directory(tmp_path: Path) -> None:
    with pytest.raises(SlideOpenError, match="directory"):
        open_slide(tmp_path)


def test_text_file_named_svs(tmp_path: Path) -> None:
    path = tmp_path / "fake.svs"
    path.write_text("this is not a slide\n")
    with pytest.raises(SlideOpenError):
        open_slide(path)


def test_truncated_tiff(tmp_path: Path) -> None:
    good = write_pyramid_tiff(tmp_path / "good.tif", synthetic_he(1024, 1024), levels=2)
    data = good.read_bytes()
    bad = tmp_path / "truncated.tif"
    bad.write_bytes(data[: len(data) // 3])
    with pytest.raises(SlideOpenError):
        open_slide(bad)


def test_tiff_without_mpp(tmp_path: Path) -> None:
    path = write_pyramid_tiff(tmp_path / "nompp.tif", synthetic_he(600, 600), mpp=None, levels=1)
    with pytest.raises(MissingMetadataError, match="--mpp"):
        open_slide(path)
    with open_slide(path, mpp=0.3) as s:
        assert s.info.mpp == 0.3


@pytest.mark.parametrize("mpp", [-0.25, 0.0, 1000.0, float("nan")])
def test_absurd_mpp(cmu_svs: Path, mpp: float) -> None:
    with pytest.raises(InvalidInputError, match="mpp"):
        open_slide(cmu_svs, mpp=mpp)


# -- tissue and tiling ------------------------------------------------------------------------
def test_tissue_ignores_background_pen_and_dark() -> None:
    img = np.full((400, 400, 3), 240, dtype=np.uint8)
    img[100:300, 100:300] = (220, 140, 180)  # tissue: 200x200 px
    img[10:40, 10:390] = (20, 60, 200)  # blue pen mark
    img[350:390, 10:60] = (5, 5, 5)  # black artefact
    s = ArraySlide(img, mpp=8.0)
    t = detect_tissue(s)
    expected = 200 * 200 * (8.0 / 1000) ** 2
    assert t.area_mm2 == pytest.approx(expected, rel=0.1)
    assert not t.contains(np.array([200.0]), np.array([25.0]))[0]
    assert t.contains(np.array([200.0]), np.array([200.0]))[0]


def test_empty_slide_has_no_tissue() -> None:
    s = ArraySlide(np.full((500, 500, 3), 245, dtype=np.uint8), mpp=2.0)
    t = detect_tissue(s)
    assert t.area_mm2 == 0.0
    assert plan_tiles(s.info, t) == []


def test_tiling_cores_partition_and_overlap() -> None:
    s = ArraySlide(synthetic_he(1500, 1700), mpp=0.25)
    tiles = plan_tiles(s.info, None, tile_um=128, overlap_um=16)
    cover = np.zeros((1500, 1700), dtype=np.int32)
    for t in tiles:
        c = t.core
        cover[c.y : c.y1, c.x : c.x1] += 1
        assert t.x <= c.x and t.y <= c.y and t.x + t.width >= c.x1 and t.y + t.height >= c.y1
        assert t.width <= 128 / 0.25 + 2
    assert (cover == 1).all()  # every pixel owned by exactly one tile
    inner = [t for t in tiles if t.core.x > 0 and t.core.x1 < 1700]
    assert all(t.core.x - t.x == 32 for t in inner)  # 8 um margin = 32 px at 0.25


def test_tiling_in_micrometres_scales_with_mpp() -> None:
    a = ArraySlide(np.zeros((2000, 2000, 3), np.uint8), mpp=0.25)
    b = ArraySlide(np.zeros((1000, 1000, 3), np.uint8), mpp=0.5)  # same physical size
    assert len(plan_tiles(a.info, None)) == len(plan_tiles(b.info, None))


def test_tiling_skips_background(pyramid_tiff: Path) -> None:
    with open_slide(pyramid_tiff) as s:
        tissue = detect_tissue(s, thumb_mpp=2.0)
        kept = plan_tiles(s.info, tissue, tile_um=64, overlap_um=8)
        every = plan_tiles(s.info, None, tile_um=64, overlap_um=8)
    assert 0 < len(kept) < len(every)


# -- CLI --------------------------------------------------------------------------------------
def test_cli_info_json_real_slide(cmu_svs: Path) -> None:
    r = run_cli("info", str(cmu_svs), "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["width"] == 2220 and out["height"] == 2967
    assert out["mpp"] == pytest.approx(0.499, abs=1e-3)
    assert out["levels"] == 1 and out["backend"] == "openslide"
    assert 0.45 < out["tissue_area_mm2"] < 0.8
    assert out["n_tiles"] > 0


@pytest.mark.parametrize(
    "make, extra, needle",
    [
        (lambda d: d / "missing.svs", [], "no such file"),
        (lambda d: d, [], "directory"),
        (lambda d: (d / "t.svs").write_text("hello") and d / "t.svs", [], "t.svs"),
        (
            lambda d: Image.fromarray(synthetic_he(50, 50)).save(d / "x.png") or d / "x.png",
            [],
            "--mpp",
        ),
        (
            lambda d: Image.fromarray(synthetic_he(50, 50)).save(d / "y.png") or d / "y.png",
            ["--mpp", "-1"],
            "mpp",
        ),
        (
            lambda d: Image.fromarray(synthetic_he(50, 50)).save(d / "z.png") or d / "z.png",
            ["--mpp", "500"],
            "mpp",
        ),
    ],
)
def test_cli_bad_input_one_line_exit_2(tmp_path: Path, make, extra, needle) -> None:
    path = make(tmp_path)
    r = run_cli("info", str(path), *extra)
    assert r.returncode == 2, (r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mitoscope: error:"), r.stderr
    assert needle in lines[0]
    assert "Traceback" not in r.stderr


def test_cli_verbose_shows_traceback(tmp_path: Path) -> None:
    r = run_cli("--verbose", "info", str(tmp_path / "missing.svs"))
    assert r.returncode == 2
    assert "Traceback" in r.stderr


def test_dicom_wsi(tmp_path: Path, cmu_svs: Path) -> None:
    """A real DICOM WSI (the SVS converted by wsidicomizer) reads like the original."""
    pytest.importorskip("wsidicom")
    wsidicomizer = pytest.importorskip("wsidicomizer")
    from wsidicomizer.sources import TiffSlideSource

    out = tmp_path / "dicom"
    out.mkdir()
    wsidicomizer.WsiDicomizer.convert(
        cmu_svs,
        out,
        include_label=False,
        include_overview=False,
        include_thumbnail=False,
        preferred_source=TiffSlideSource,
    )
    with open_slide(out) as d, open_slide(cmu_svs) as s:
        assert d.info.backend == "dicom"
        assert (d.info.width, d.info.height) == (2220, 2967)
        assert d.info.mpp == pytest.approx(0.499, abs=1e-3)
        a = d.read_region((500, 700), 0, (128, 96)).astype(int)
        b = s.read_region((500, 700), 0, (128, 96)).astype(int)
        assert np.abs(a - b).mean() < 3  # re-encoded JPEG tiles


def test_thumbnail_of_a_big_single_level_image_is_read_in_bands(tmp_path, monkeypatch) -> None:
    """A single-level slide is not read whole for its thumbnail (bounded memory at any size)."""
    import mitoscope.slide.reader as reader_mod

    img = synthetic_he(1500, 2200, seed=4)
    path = write_pyramid_tiff(tmp_path / "flat.tif", img, levels=1)
    with open_slide(path) as s:
        assert s.info.levels == 1
        whole = s.get_thumbnail(300)  # 9.9 MB level: read in one piece
        sizes: list[int] = []
        read = s._read
        monkeypatch.setattr(
            s, "_read", lambda x, y, lv, w, h: (sizes.append(w * h), read(x, y, lv, w, h))[1]
        )
        monkeypatch.setattr(reader_mod, "THUMBNAIL_READ_BYTES", 2200 * 3 * 100)  # ~100 rows
        banded = s.get_thumbnail(300)
        n_reads = len(sizes)
        smaller = s.get_thumbnail(200)  # shrunk from the kept pass: nothing read again
    assert len(sizes) == n_reads and max(smaller.shape[:2]) == 200
    assert whole.shape == (205, 300, 3) and banded.shape[1] == 300
    assert abs(banded.shape[0] - 205) <= 1  # shrunk from the kept 2048 px pass: rounding
    assert n_reads >= 15 and max(sizes) <= 2200 * 100
    same = np.asarray(Image.fromarray(banded).resize((300, 205), Image.Resampling.BILINEAR))
    diff = np.abs(same.astype(int) - whole.astype(int))
    assert diff.mean() < 2.0  # the same picture, up to resampling at band seams


@pytest.mark.parametrize("slide_mpp", [0.5, 0.23, 0.2, 1.0, 0.1])
def test_read_region_mpp_resamples_like_bilinear_interpolation(slide_mpp: float) -> None:
    """Pillow's resampler (fast) matches scikit-image's bilinear resize to the pixel."""
    from skimage.transform import resize

    img = synthetic_he(300, 340, seed=2)
    s = ArraySlide(img, mpp=slide_mpp)
    out = s.read_region_mpp(Region(0, 0, 340, 300), 0.25)
    want_w, want_h = round(340 * slide_mpp / 0.25), round(300 * slide_mpp / 0.25)
    assert out.shape == (want_h, want_w, 3) and out.dtype == np.uint8 and out.flags.writeable
    shrink = want_w < 340
    ref = resize(img, (want_h, want_w), order=1, preserve_range=True, anti_aliasing=shrink)
    ref = np.clip(ref + 0.5, 0, 255).astype(np.uint8)
    delta = np.abs(out.astype(int) - ref.astype(int))[2:-2, 2:-2]  # edges: padding differs
    if slide_mpp >= 0.25 or slide_mpp / 0.25 >= 0.75:  # point-sampled bilinear
        assert delta.max() <= 2 and delta.mean() < 0.5
    else:  # a strong shrink: both anti-alias, with different filters
        assert delta.mean() < 4.0
