"""Registration for the label-transfer commands, on real images under known transforms.

Paired scans are not available, so the second "scan" is the real image warped by a known
similarity transform (rotation, shift, and the scale of another pixel size) and saved with
that pixel size; the true position of every point is known, so the error is measured in um.
"""

from __future__ import annotations

import numpy as np
import pytest

from conftest import shared_file, write_pyramid_tiff
from mitoscope.curate.registration import (
    RegistrationError,
    check_points_in_slide,
    group_points,
    register_slides,
    transfer_points,
)
from mitoscope.errors import InvalidInputError
from mitoscope.slide.reader import ArraySlide, open_slide


def _rgb(path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def warp_known(img: np.ndarray, mpp_src: float, mpp_dst: float, *, rot_deg: float, shift):
    """``img`` as scanned at ``mpp_dst`` after a rotation and shift: (image, true transform
    mapping source px to target px)."""
    from skimage.transform import SimilarityTransform, warp

    s = mpp_src / mpp_dst
    true = SimilarityTransform(rotation=np.deg2rad(rot_deg), scale=s, translation=shift)
    shape = (int(img.shape[0] * s) + 20, int(img.shape[1] * s) + 20)
    out = warp(img, true.inverse, output_shape=shape, cval=1.0, order=1)
    return (out * 255 + 0.5).astype(np.uint8), true


def test_real_he_known_transform_within_half_a_micrometre() -> None:
    img = _rgb(shared_file("tissue", "images", "TCGA-18-5592-01Z-00-DX1.png"))[:640, :640]
    mpp_s, mpp_t = 0.2527, 0.24
    warped, true = warp_known(img, mpp_s, mpp_t, rot_deg=4.0, shift=(35, -20))
    src = ArraySlide(img, mpp=mpp_s, path="src.png")
    tgt = ArraySlide(warped, mpp=mpp_t, path="tgt.png")
    pts = np.array([[260.0, 250.0], [300.0, 320.0], [330.0, 270.0]])  # one patch window
    moved = transfer_points(src, tgt, pts)
    err_um = np.hypot(*(moved.xy - true(pts)).T) * mpp_t
    assert list(moved.level) == ["patch"] * 3
    assert err_um.max() < 0.5, err_um
    s = moved.slide.summary()
    assert abs(s["rotation_deg"] - 4.0) < 0.1
    assert abs(s["scale_change"] - 1.0) < 0.01  # same size in micrometres
    assert 0 < moved.summary()["residual_median_um"] < 1.0


def test_real_ihc_against_haematoxylin_rendering() -> None:
    """Cross-stain: the real IHC image against a haematoxylin-only rendering of itself."""
    from skimage import data
    from skimage.color import hed2rgb, rgb2hed

    ihc = data.immunohistochemistry()
    hed = rgb2hed(ihc)
    hed[..., 1:] = 0
    h_only = (hed2rgb(hed) * 255).clip(0, 255).astype(np.uint8)
    warped, true = warp_known(h_only, 0.5, 0.46, rot_deg=-6.0, shift=(25, 30))
    src = ArraySlide(ihc, mpp=0.5, path="ihc.png")  # the image has no pixel size: given
    tgt = ArraySlide(warped, mpp=0.46, path="h.png")
    pts = np.array([[200.0, 200.0], [240.0, 260.0]])
    moved = transfer_points(src, tgt, pts, channel="haematoxylin")
    err_um = np.hypot(*(moved.xy - true(pts)).T) * 0.46
    assert err_um.max() < 0.5, err_um
    # total optical density differs too much between the stains to match
    with pytest.raises(RegistrationError, match="no overlap found"):
        register_slides(src, tgt, channel="od")


def test_real_svs_slide_level(tmp_path) -> None:
    """The real Aperio slide against a rotated re-scan written as a pyramidal TIFF at 0.46 um/px."""
    path = shared_file("slides", "cmu_small_region.svs")
    with open_slide(path) as s:
        img = s.read_region((0, 0), 0, (s.info.width, s.info.height))
        mpp = s.info.mpp
    crop = img[:1400, :1400]
    warped, true = warp_known(crop, mpp, 0.46, rot_deg=2.0, shift=(60, 40))
    tif = write_pyramid_tiff(tmp_path / "rescan.tif", warped, mpp=0.46, levels=2)
    with open_slide(path) as src, open_slide(tif) as tgt:
        pts = np.array([[500.0, 600.0], [540.0, 650.0]])
        moved = transfer_points(src, tgt, pts, patch_mpp=0.5)
    err_um = np.hypot(*(moved.xy - true(pts)).T) * 0.46
    assert err_um.max() < 1.0, err_um


def test_unrelated_images_do_not_register() -> None:
    a = _rgb(shared_file("tissue", "images", "TCGA-18-5592-01Z-00-DX1.png"))[:512, :512]
    b = _rgb(shared_file("tissue", "images", "TCGA-A7-A13E-01Z-00-DX1.png"))[:512, :512]
    with pytest.raises(RegistrationError, match="no overlap found"):
        register_slides(
            ArraySlide(a, mpp=0.25, path="a.png"), ArraySlide(b, mpp=0.25, path="b.png")
        )


def test_wrong_pixel_size_is_caught() -> None:
    img = _rgb(shared_file("tissue", "images", "TCGA-18-5592-01Z-00-DX1.png"))[:512, :512]
    warped, _ = warp_known(img, 0.25, 0.25, rot_deg=3.0, shift=(10, 10))
    src = ArraySlide(img, mpp=0.25, path="a.png")
    tgt = ArraySlide(warped, mpp=0.5, path="b.png")  # declared 0.5 um/px: wrong
    with pytest.raises(RegistrationError, match="pixel size is wrong"):
        register_slides(src, tgt)


def test_labels_outside_the_slide_or_in_mm() -> None:
    info = ArraySlide(np.zeros((2000, 3000, 3), np.uint8), mpp=0.25, path="s.png").info
    check_points_in_slide(np.array([[10.0, 20.0], [2999.0, 1999.0]]), info)
    with pytest.raises(InvalidInputError, match="outside"):
        check_points_in_slide(np.array([[10.0, 20.0], [3500.0, 10.0]]), info)
    with pytest.raises(InvalidInputError, match="millimetres"):
        check_points_in_slide(np.array([[1.2, 0.4], [2.5, 1.1], [0.3, 3.0]]), info)


def test_group_points_keep_context() -> None:
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 5000, (300, 2))
    g = group_points(xy, 640.0)
    assert (g >= 0).all()
    for k in np.unique(g):
        span = np.ptp(xy[g == k], axis=0)
        assert (span <= 320.0).all()
