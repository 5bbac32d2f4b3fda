"""``curate rescan`` on a simulated re-scan of a real image with real mitotic figures.

The "original scan" is a real H&E image of breast tissue (MoNuSeg, 0.2527 um/px) with four real
mitotic-figure crops of AMi-Br (TUPAC16, 0.25 um/px) placed in it, labelled at their centres.
The "re-scan" is that image rotated, shifted and resampled to 0.24 um/px (another scanner), with
one area out of focus (Gaussian blur, sigma 2 um) over two of the figures. The labels must land
within a micrometre of where the known transform puts them; the blurred two become "ignore".
"""

from __future__ import annotations

import csv

import numpy as np
import pytest

from conftest import shared_file
from mitoscope.cli import main
from mitoscope.curate.rescan import RescanConfig, curate_rescan

SRC_MPP, DST_MPP = 0.2527, 0.24
#: label centres (x, y): two sharp, two in the out-of-focus area
SHARP = [(220.0, 230.0), (360.0, 270.0)]
BLURRED = [(560.0, 560.0), (660.0, 610.0)]


def _crops() -> list[np.ndarray]:
    from PIL import Image

    table = shared_file("amibr-train", "labels.csv")
    rows = [r for r in csv.DictReader(open(table)) if r["dataset"] == "TUPAC16"]
    out = []
    for i in (0, 4, 5, 7):  # crops the bundled model scores as mitoses (> 0.98)
        with Image.open(table.parent / rows[i]["file"]) as im:
            out.append(np.asarray(im.convert("RGB")))
    return out


@pytest.fixture(scope="module")
def scans(tmp_path_factory):
    from PIL import Image
    from scipy import ndimage as ndi
    from skimage.transform import SimilarityTransform, warp

    d = tmp_path_factory.mktemp("rescan")
    with Image.open(shared_file("tissue", "images", "TCGA-A7-A13E-01Z-00-DX1.png")) as im:
        img = np.asarray(im.convert("RGB"))[:800, :800].copy()
    pts = np.array(SHARP + BLURRED)
    for (x, y), crop in zip(pts, _crops(), strict=True):
        h = crop.shape[0] // 2
        img[int(y) - h : int(y) + h, int(x) - h : int(x) + h] = crop
    s = SRC_MPP / DST_MPP
    true = SimilarityTransform(rotation=np.deg2rad(3.0), scale=s, translation=(30.0, -15.0))
    shape = (int(800 * s) + 30, int(800 * s) + 30)
    re = warp(img, true.inverse, output_shape=shape, cval=1.0, order=1) * 255.0
    blurred = ndi.gaussian_filter(re, (2.0 / DST_MPP, 2.0 / DST_MPP, 0))
    cx, cy = true(np.array(BLURRED)).mean(axis=0)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    area = np.hypot(xx - cx, yy - cy) < 40.0 / DST_MPP
    re[area] = blurred[area]
    Image.fromarray(img).save(d / "case.png")
    Image.fromarray((re + 0.5).clip(0, 255).astype(np.uint8)).save(d / "case_rescan.png")
    with open(d / "labels.csv", "w") as fh:
        fh.write("image,x,y,label\n")
        for x, y in pts:
            fh.write(f"case.png,{x},{y},mitotic figure\n")
    return d, true


def test_labels_move_and_blurred_ones_are_ignored(scans) -> None:
    from mitoscope.classify.classifier import load_classifier
    from mitoscope.io.sliderunner import read_sliderunner
    from mitoscope.train.sources import drop_uncertain

    d, true = scans
    clf = load_classifier(None, backend="torch")
    res = curate_rescan(
        d / "case.png", d / "case_rescan.png", d / "labels.csv", d / "out",
        mpp=SRC_MPP, target_mpp=DST_MPP, classifiers=[clf],
    )  # fmt: skip
    assert len(res.labels) == 4 and list(res.source_index) == [0, 1, 2, 3]
    got = np.array([[lab.x, lab.y] for lab in res.labels])
    err_um = np.hypot(*(got - true(np.array(SHARP + BLURRED))).T) * DST_MPP
    assert err_um.max() < 1.0, err_um
    sharp, blurred = res.labels[:2], res.labels[2:]
    assert [lab.cls for lab in sharp] == ["Mitotic figure"] * 2
    assert all(lab.measurements["mf_probability"] >= clf.threshold for lab in sharp)
    assert [lab.cls for lab in blurred] == ["ignore"] * 2
    assert {lab.notes["ignore_reason"] for lab in blurred} == {"out_of_focus"}
    assert all(lab.measurements["sharpness_ratio"] < 0.5 for lab in blurred)
    r = res.report
    assert r["mitotic_ignored"] == 2 and r["mitotic_kept"] == 2
    assert r["registration"]["residual_median_um"] < 1.0
    # training reads the database and leaves the ignored labels out
    db = read_sliderunner(res.paths["database"])
    assert len(db) == 4 and len(drop_uncertain(db)) == 2
    assert set(db.image) == {"case_rescan.png"}
    # the review app opens the output folder with the ignored (flagged) labels queued first
    from mitoscope.review.store import ReviewStore

    store = ReviewStore(d / "out")
    ignored = {it.uid for it in store.items if it.model_class == "ignore"}
    assert len(store.items) == 4 and len(ignored) == 2
    assert set(store.queues["selected"][:2]) == ignored


def _run(argv, capsys):
    rc = main(argv)
    return rc, capsys.readouterr().err.strip().splitlines()


def test_cli_and_bad_input(scans, tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("MITOSCOPE_BACKEND", "torch")  # no ONNX export in the test
    d, _ = scans
    base = ["curate", "rescan", "--mpp", str(SRC_MPP), "--target-mpp", str(DST_MPP)]
    out = tmp_path / "ok"
    rc, _ = _run([*base, str(d / "case.png"), str(d / "case_rescan.png"), str(d / "labels.csv"),
                  "--out", str(out), "--no-patch"], capsys)  # fmt: skip
    assert (
        rc == 0 and (out / "mitoscope.sqlite").is_file() and (out / "review_queue.json").is_file()
    )
    bad = tmp_path / "bad"
    # labels in other units (x10): outside the slide
    um = tmp_path / "um.csv"
    um.write_text("image,x,y\ncase.png,2200,2300\ncase.png,5600,5600\n")
    rc, err = _run([*base, str(d / "case.png"), str(d / "case_rescan.png"), str(um),
                    "--out", str(bad)], capsys)  # fmt: skip
    assert rc == 2 and len(err) == 1 and "outside" in err[0]
    assert not bad.exists()
    # a re-scan of another slide: no overlap found by registration
    other = shared_file("tissue", "images", "TCGA-18-5592-01Z-00-DX1.png")
    rc, err = _run([*base, str(d / "case.png"), str(other), str(d / "labels.csv"),
                    "--out", str(bad)], capsys)  # fmt: skip
    assert rc == 2 and len(err) == 1 and "no overlap found" in err[0]
    assert not bad.exists()
    # a labels file of other slides
    rc, err = _run([*base, str(d / "case.png"), str(d / "case_rescan.png"),
                    str(shared_file("annotations", "MIDOGpp.json")), "--out", str(bad)], capsys)  # fmt: skip
    assert rc == 2 and len(err) == 1 and "no labels for case.png" in err[0]
    assert not bad.exists()
    with pytest.raises(Exception, match="min-probability"):
        RescanConfig(min_probability=1.5).check()


@pytest.mark.parametrize(
    ("mpp_args", "expect"),
    [
        # wrong units: the re-scan declared at twice its pixel size
        (["--mpp", str(SRC_MPP), "--target-mpp", str(2 * DST_MPP)], ["pixel size is wrong"]),
        # PNGs record no pixel size: the message names the option of the slide that lacks it
        (["--mpp", str(SRC_MPP)], ["case_rescan.png has no usable pixel size", "--target-mpp"]),
        (["--target-mpp", str(DST_MPP)], ["case.png has no usable pixel size", "with --mpp "]),
        # a pixel size in nanometres
        (["--mpp", str(SRC_MPP), "--target-mpp", "240"], ["--target-mpp=240 um/px is outside"]),
    ],
)
def test_bad_pixel_sizes_one_line_exit_2_nothing_written(mpp_args, expect, scans, tmp_path, capsys):
    d, _ = scans
    before = sorted(d.rglob("*"))
    out = tmp_path / "bad"
    rc, err = _run(["curate", "rescan", *mpp_args, str(d / "case.png"), str(d / "case_rescan.png"),
                    str(d / "labels.csv"), "--out", str(out)], capsys)  # fmt: skip
    assert rc == 2 and len(err) == 1 and err[0].startswith("mitoscope: error: "), (rc, err)
    assert all(e in err[0] for e in expect), err
    assert not out.exists() and list(tmp_path.iterdir()) == [] and sorted(d.rglob("*")) == before
