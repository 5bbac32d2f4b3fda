"""`mitoscope evaluate` on real annotation files and on per-image MIDOG result JSON."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import shared_file
from mitoscope.cli import main
from mitoscope.evaluate.loading import load_eval_set
from mitoscope.evaluate.metrics import Counts, evaluate

MPP = 0.25


def _midogpp():
    return (
        shared_file("annotations", "MIDOGpp.json"),
        shared_file("annotations", "MIDOGpp_datasets_xvalidation.csv"),
    )


def _run(argv, capsys):
    rc = main(argv)
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def _write_points(path: Path, xy_px: np.ndarray, *, probs=None, names=None) -> None:
    pts = []
    for i, (x, y) in enumerate(xy_px):
        pts.append(
            {
                "name": names[i] if names is not None else "mitotic figure",
                "point": [x * MPP / 1000, y * MPP / 1000, 0],
                "probability": float(probs[i]) if probs is not None else 0.9,
            }
        )
    path.write_text(
        json.dumps({"type": "Multiple points", "points": pts, "version": {"major": 1, "minor": 0}})
    )


@pytest.fixture(scope="module")
def test_truth():
    from mitoscope.io.annotations import read_annotations

    js, csv = _midogpp()
    return read_annotations(js, split_csv=csv, split="test")


def _pred_dir(tmp_path, truth, images, *, drop_every=0, shift_px=0.0):
    d = tmp_path / "pred"
    d.mkdir()
    removed = 0
    for name in images:
        t = truth.for_image(name)
        t = t.filter(t.is_mitosis)
        xy = np.c_[t.x_px, t.y_px] + shift_px
        if drop_every:
            keep = np.arange(len(xy)) % drop_every != 0
            removed += int((~keep).sum())
            xy = xy[keep]
        _write_points(d / f"{Path(name).stem}.midog.json", xy)
    return d, removed


def test_midogpp_truth_vs_itself_json(capsys):
    js, csv = _midogpp()
    rc, out, _ = _run(
        [
            "evaluate",
            "--truth",
            str(js),
            "--pred",
            str(js),
            "--split",
            str(csv),
            "--split-name",
            "test",
            "--mpp",
            "0.25",
            "--by",
            "tumor",
            "--json",
            "--bootstrap",
            "0",
        ],
        capsys,
    )
    assert rc == 0
    d = json.loads(out)
    for key in ("tp", "fp", "fn", "precision", "recall", "f1"):
        assert key in d
    assert d["fp"] == 0 and d["fn"] == 0 and d["f1"] == 1.0
    assert d["tp"] == 2467  # mitotic figures of the 111 official test images
    assert d["n_images"] == 111
    tumors = d["groups"]["tumor"]
    assert len(tumors) == 7
    assert sum(g["tp"] for g in tumors.values()) == d["tp"]
    for g in tumors.values():
        assert set(("tp", "fp", "fn", "precision", "recall", "f1")) <= set(g)


def test_per_image_midog_json_directory_with_removed_points(tmp_path, capsys, test_truth):
    js, csv = _midogpp()
    images = test_truth.images()[:12]
    pred, removed = _pred_dir(tmp_path, test_truth, images, drop_every=3, shift_px=5.0)
    assert removed > 0
    rc, out, err = _run(
        [
            "evaluate",
            "--truth",
            str(js),
            "--pred",
            str(pred),
            "--split",
            str(csv),
            "--split-name",
            "test",
            "--mpp",
            "0.25",
            "--json",
            "--bootstrap",
            "50",
        ],
        capsys,
    )
    assert rc == 0
    d = json.loads(out)
    n_mf = sum(int(test_truth.for_image(n).is_mitosis.sum()) for n in images)
    # 5 px diagonal shift = 1.77 um < 7.5 um: every kept point is still a TP
    assert (d["tp"], d["fp"], d["fn"]) == (n_mf - removed, 0, removed)
    assert d["n_images"] == 12
    assert len(d["missing_predictions"]) == 111 - 12  # skipped, as the official evaluator
    assert "skipped" in err
    assert d["f1_ci95"]["low"] <= d["f1"] <= d["f1_ci95"]["high"]
    assert "tile_level" in d and d["tile_level"]["tpr"] > 0.5


def test_threshold_chosen_on_validation_and_report(tmp_path, capsys, test_truth):
    js, csv = _midogpp()
    images = test_truth.images()[:3]
    d = tmp_path / "pred"
    d.mkdir()
    rng = np.random.default_rng(0)
    for name in images:
        t = test_truth.for_image(name)
        t = t.filter(t.is_mitosis)
        xy = np.c_[t.x_px, t.y_px]
        fp = xy[:3] + 200.0  # false positives, 50 um away
        w, h = test_truth.image_meta[name]["width"], test_truth.image_meta[name]["height"]
        fp = np.clip(fp, 0, [w - 1, h - 1])
        probs = np.r_[rng.uniform(0.6, 1.0, len(xy)), rng.uniform(0.1, 0.4, len(fp))]
        names = ["non-mitotic figure"] * (len(xy) + len(fp))  # names ignored with a threshold
        _write_points(d / f"{Path(name).stem}.midog.json", np.r_[xy, fp], probs=probs, names=names)
    report = tmp_path / "r" / "report.html"
    rc, out, _ = _run(
        [
            "evaluate",
            "--truth",
            str(js),
            "--pred",
            str(d),
            "--split",
            str(csv),
            "--split-name",
            "test",
            "--mpp",
            "0.25",
            "--val-truth",
            str(js),
            "--val-pred",
            str(d),
            "--val-split-name",
            "test",
            "--json",
            "--bootstrap",
            "0",
            "--out",
            str(report),
        ],
        capsys,
    )
    assert rc == 0
    res = json.loads(out)
    assert 0.4 <= res["threshold"] <= 0.6 + 0.4
    assert res["fp"] == 0 and res["fn"] == 0
    assert "validation" in res["threshold_source"]
    html = report.read_text()
    assert html.count("data:image/png;base64,") == 3 and "<table>" in html
    md = tmp_path / "report.md"
    rc, _, _ = _run(
        [
            "evaluate",
            "--truth",
            str(js),
            "--pred",
            str(d),
            "--split",
            str(csv),
            "--split-name",
            "test",
            "--mpp",
            "0.25",
            "--threshold",
            "0.5",
            "--bootstrap",
            "0",
            "--out",
            str(md),
        ],
        capsys,
    )
    assert rc == 0 and "| all | all |" in md.read_text()


def test_sliderunner_truth_vs_itself_and_with_removed_points():
    db = shared_file("annotations", "TUPAC_alternativeLabels_augmented_training.sqlite")
    full = load_eval_set(db, db, mpp=MPP)
    res = evaluate(full.images)
    assert res.overall.fp == 0 and res.overall.fn == 0
    assert res.overall.tp == 1999  # the consensus mitotic figures of the database
    # the same database without a third of each image's figures -> those are FNs
    imgs = []
    removed = 0
    for img in full.images:
        keep = np.arange(len(img.pred_xy)) % 3 != 0
        keep |= ~img.pred_is_mitosis  # only remove mitoses
        removed += int((~keep).sum())
        imgs.append(
            type(img)(
                img.image,
                img.truth_xy,
                img.pred_xy[keep],
                pred_score=img.pred_score[keep],
                pred_is_mitosis=img.pred_is_mitosis[keep],
            )
        )
    c = Counts.total([evaluate([i]).overall for i in imgs])
    assert (c.tp, c.fp, c.fn) == (1999 - removed, 0, removed)


def test_bad_json_is_one_line_exit_2(tmp_path, capsys):
    js, csv = _midogpp()
    bad = tmp_path / "bad.midog.json"
    bad.write_text("{not json")
    rc, _, err = _run(["evaluate", "--truth", str(js), "--pred", str(bad), "--mpp", "0.25"], capsys)
    lines = err.strip().splitlines()
    assert rc == 2 and len(lines) == 1 and lines[0].startswith("mitoscope: error:")


def test_pixels_written_as_mm_exit_2(tmp_path, capsys, test_truth):
    js, csv = _midogpp()
    name = test_truth.images()[0]
    t = test_truth.for_image(name)
    d = tmp_path / "pred"
    d.mkdir()
    pts = [
        {"name": "mitotic figure", "point": [float(x), float(y), 0], "probability": 0.9}
        for x, y in zip(t.x_px, t.y_px, strict=True)
    ]  # pixels in the mm format
    (d / f"{Path(name).stem}.midog.json").write_text(
        json.dumps({"type": "Multiple points", "points": pts})
    )
    rc, _, err = _run(
        [
            "evaluate",
            "--truth",
            str(js),
            "--pred",
            str(d),
            "--split",
            str(csv),
            "--split-name",
            "test",
            "--mpp",
            "0.25",
        ],
        capsys,
    )
    lines = err.strip().splitlines()
    assert rc == 2 and len(lines) == 1
    assert "pixel" in lines[0].lower() or "units" in lines[0].lower()


def test_wrong_mpp_puts_points_outside_the_image_exit_2(tmp_path, capsys, test_truth):
    js, csv = _midogpp()
    pred, _ = _pred_dir(tmp_path, test_truth, test_truth.images()[:3])
    # files written at 0.25 um/px, read back at 0.05 um/px: points land 5x further out
    rc, _, err = _run(
        [
            "evaluate",
            "--truth",
            str(js),
            "--pred",
            str(pred),
            "--split",
            str(csv),
            "--split-name",
            "test",
            "--mpp",
            "0.05",
        ],
        capsys,
    )
    assert rc == 2 and "outside image" in err and len(err.strip().splitlines()) == 1


def test_mm_file_without_mpp_and_bad_options_exit_2(tmp_path, capsys, test_truth):
    js, csv = _midogpp()
    pred, _ = _pred_dir(tmp_path, test_truth, test_truth.images()[:1])
    for argv in (
        ["evaluate", "--truth", str(js), "--pred", str(pred)],
        ["evaluate", "--truth", str(js), "--pred", str(pred), "--mpp", "0.25", "--by", "colour"],
        ["evaluate", "--truth", str(js), "--pred", str(pred), "--mpp", "0.25", "--radius-um", "-1"],
        [
            "evaluate",
            "--truth",
            str(js),
            "--pred",
            str(pred),
            "--mpp",
            "0.25",
            "--threshold",
            "0.5",
            "--val-truth",
            str(js),
            "--val-pred",
            str(pred),
        ],
    ):
        rc, _, err = _run(argv, capsys)
        assert rc == 2 and len(err.strip().splitlines()) == 1, argv
