"""``curate phh3`` on the real IHC image of scikit-image's data module.

No paired pHH3 / H&E slides exist here. The IHC image (haematoxylin + DAB, no pixel size: 0.5
um/px is given) plays the pHH3 slide; its haematoxylin-only rendering, rotated, shifted and
resampled to 0.46 um/px, plays the H&E slide of the same section. DAB detection is checked on
the IHC image itself, on its stain-separated renderings and on real H&E images (no DAB).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import shared_file
from mitoscope.cli import main
from mitoscope.curate.phh3 import PHH3Config, curate_phh3, dab_mask, detect_dab

PHH3_MPP, HE_MPP = 0.5, 0.46


def _renderings() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The IHC image, its haematoxylin-only and its DAB-only renderings."""
    from skimage import data
    from skimage.color import hed2rgb, rgb2hed

    ihc = data.immunohistochemistry()
    hed = rgb2hed(ihc)
    h, d = hed.copy(), hed.copy()
    h[..., 1:] = 0
    d[..., :2] = 0
    render = [(hed2rgb(x) * 255).clip(0, 255).astype(np.uint8) for x in (h, d)]
    return ihc, render[0], render[1]


def _pair(tmp_path):
    from PIL import Image
    from skimage.transform import SimilarityTransform, warp

    ihc, h_only, _ = _renderings()
    s = PHH3_MPP / HE_MPP
    true = SimilarityTransform(rotation=np.deg2rad(-6.0), scale=s, translation=(25, 30))
    shape = (int(512 * s) + 40, int(512 * s) + 40)
    he = (warp(h_only, true.inverse, output_shape=shape, cval=1.0) * 255 + 0.5).astype(np.uint8)
    Image.fromarray(ihc).save(tmp_path / "case_phh3.png")
    Image.fromarray(he).save(tmp_path / "case_he.png")
    return tmp_path / "case_he.png", tmp_path / "case_phh3.png", true


def test_dab_separation_on_real_ihc() -> None:
    ihc, h_only, d_only = _renderings()
    pos = dab_mask(ihc)
    assert 0.05 < pos.mean() < 0.95
    # positive pixels are brown (red well over blue); haematoxylin-dominated ones are blue
    r, b = ihc[..., 0].astype(float), ihc[..., 2].astype(float)
    assert (r[pos] - b[pos]).mean() > (r[~pos] - b[~pos]).mean() + 25
    from mitoscope.curate.phh3 import stain_densities

    hed = stain_densities(ihc)
    blue = hed[..., 0] > hed[..., 2]
    assert (b[blue] - r[blue]).mean() > 0 and not (pos & blue).any()
    # the DAB channel alone gives the same mask; the haematoxylin alone gives none
    d_pos = dab_mask(d_only)
    iou = (pos & d_pos).sum() / (pos | d_pos).sum()
    assert iou > 0.9, iou
    assert dab_mask(h_only).mean() == 0.0
    obj = detect_dab(ihc, PHH3_MPP)
    assert len(obj) > 10
    assert (obj.area_um2 >= 10).all() and (obj.area_um2 <= 250).all()
    assert len(detect_dab(h_only, PHH3_MPP)) == 0


def test_dab_on_real_he_images_is_rare() -> None:
    """H&E has no DAB: positive pixels are counterstain leak and must stay rare."""
    for name in ("TCGA-A7-A13E-01Z-00-DX1.png", "TCGA-21-5784-01Z-00-DX1.png"):
        from PIL import Image

        with Image.open(shared_file("tissue", "images", name)) as im:
            rgb = np.asarray(im.convert("RGB"))
        assert dab_mask(rgb).mean() < 0.01


def test_phh3_labels_move_with_masks(tmp_path) -> None:
    he, phh3, true = _pair(tmp_path)
    res = curate_phh3(he, phh3, tmp_path / "out", he_mpp=HE_MPP, phh3_mpp=PHH3_MPP)
    assert len(res.labels) == len(res.objects) > 10
    src = np.column_stack([res.objects.x, res.objects.y])
    got = np.array([[lab.x, lab.y] for lab in res.labels])
    err_um = np.hypot(*(got - true(src)).T) * HE_MPP
    assert err_um.max() < 1.0, err_um
    # masks: the moved outline against the truly mapped outline
    ring, truth = res.labels[0].contour, true(res.objects.contours[0])
    assert np.abs(ring - truth).max() * HE_MPP < 1.0
    assert res.report["registration"]["residual_median_um"] < 1.0
    # standard outputs: the review app's database + queue, GeoJSON polygons, training reads it
    from mitoscope.io.geojson import read_geojson
    from mitoscope.io.sliderunner import read_sliderunner
    from mitoscope.train.sources import drop_uncertain

    db = read_sliderunner(res.paths["database"])
    assert len(drop_uncertain(db)) == len(res.labels) and db.is_mitosis.all()
    assert set(db.image) == {"case_he.png"}
    gj = json.loads(res.paths["geojson"].read_text())
    assert {f["geometry"]["type"] for f in gj["features"]} == {"Polygon"}
    assert len(read_geojson(res.paths["geojson"])) == len(res.labels)
    queue = json.loads(res.paths["queue"].read_text())
    assert len(queue["items"]) == len(res.labels)
    from mitoscope.review.store import ReviewStore

    store = ReviewStore(tmp_path / "out", queue_file=res.paths["queue"])
    assert len(store.items) == len(res.labels) and len(store.queues["selected"]) == len(res.labels)
    assert all(it.outline for it in store.items)  # the mask is shown in review


def _run(argv, capsys):
    rc = main(argv)
    return rc, capsys.readouterr().err.strip().splitlines()


def test_cli_and_bad_input(tmp_path, capsys) -> None:
    he, phh3, _ = _pair(tmp_path)
    out = tmp_path / "run"
    base = ["curate", "phh3", "--he-mpp", str(HE_MPP), "--phh3-mpp", str(PHH3_MPP)]
    rc, _ = _run([*base, str(he), str(phh3), "--out", str(out), "--no-patch"], capsys)
    assert rc == 0 and (out / "mitoscope.sqlite").is_file()
    # the H&E given as the pHH3 slide: no positive nucleus; one line, exit 2, nothing written
    bad = tmp_path / "bad"
    rc, err = _run([*base, str(phh3), str(he), "--out", str(bad)], capsys)
    assert rc == 2 and len(err) == 1 and "no pHH3-positive" in err[0]
    assert not bad.exists()
    # an unrelated H&E image: no overlap found by registration
    other = shared_file("tissue", "images", "TCGA-A7-A13E-01Z-00-DX1.png")
    rc, err = _run(
        [
            "curate",
            "phh3",
            "--he-mpp",
            "0.2527",
            "--phh3-mpp",
            "0.5",
            str(other),
            str(phh3),
            "--out",
            str(bad),
        ],
        capsys,
    )
    assert rc == 2 and len(err) == 1 and "no overlap found" in err[0]
    assert not bad.exists()
    # wrong units: the H&E declared at twice its pixel size
    rc, err = _run(
        ["curate", "phh3", "--he-mpp", "0.92", "--phh3-mpp", "0.5", str(he), str(phh3),
         "--out", str(bad)],
        capsys,
    )  # fmt: skip
    assert rc == 2 and len(err) == 1 and "pixel size is wrong" in err[0]
    assert not bad.exists()
    with pytest.raises(Exception, match="min_area_um2"):
        PHH3Config(min_area_um2=300).check()


@pytest.mark.parametrize(
    ("args", "expect"),
    [
        # PNGs record no pixel size: the message names the option of the slide that lacks it
        (["--phh3-mpp", str(PHH3_MPP)], ["case_he.png has no usable pixel size", "--he-mpp"]),
        (["--he-mpp", str(HE_MPP)], ["case_phh3.png has no usable pixel size", "--phh3-mpp"]),
        # a pixel size in nanometres
        (["--he-mpp", str(HE_MPP), "--phh3-mpp", "500"], ["--phh3-mpp=500 um/px is outside"]),
        (["--he-mpp", str(HE_MPP), "--phh3-mpp", str(PHH3_MPP), "--dab-threshold", "-1"],
         ["dab_threshold (--dab-threshold) must be a positive number"]),
    ],
)  # fmt: skip
def test_bad_pixel_sizes_and_options_one_line_exit_2(args, expect, tmp_path, capsys) -> None:
    he, phh3, _ = _pair(tmp_path)
    before = sorted(tmp_path.iterdir())
    bad = tmp_path / "bad"
    rc, err = _run(["curate", "phh3", *args, str(he), str(phh3), "--out", str(bad)], capsys)
    assert rc == 2 and len(err) == 1 and err[0].startswith("mitoscope: error: "), (rc, err)
    assert all(e in err[0] for e in expect), err
    assert not bad.exists() and sorted(tmp_path.iterdir()) == before
