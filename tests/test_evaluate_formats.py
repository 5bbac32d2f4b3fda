"""`mitoscope evaluate` with CSV and GeoJSON truth and predictions (formats written by mitoscope).

The truth is a real subset of the MIDOG++ test split; predictions are the truth with every third
figure removed, the rest shifted by 5 px, and one spurious point per image. The expected counts
follow directly: TP = kept, FN = removed, FP = one per image.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from conftest import shared_file
from mitoscope.cli import main
from mitoscope.io import write_detections_csv, write_qupath_geojson
from mitoscope.io.annotations import read_annotations
from mitoscope.types import Detections

MPP = 0.25


def _subset(n_images: int = 4):
    truth = read_annotations(
        shared_file("annotations", "MIDOGpp.json"),
        split_csv=shared_file("annotations", "MIDOGpp_datasets_xvalidation.csv"),
        split="test",
    ).mitoses()
    names = [n for n in truth.images() if len(truth.for_image(n)) >= 3][:n_images]
    return {n: truth.for_image(n) for n in names}


def _prediction(t) -> tuple[Detections, int, int]:
    keep = np.arange(len(t)) % 3 != 0
    x = np.concatenate([t.x_px[keep] + 5.0, [t.x_px.max() + 500.0]])
    y = np.concatenate([t.y_px[keep], [t.y_px.max() + 500.0]])
    n = len(x)
    det = Detections(x, y, np.full(n, 0.9), np.full(n, 0.1), np.full(n, 40.0))
    return det, int(keep.sum()), int((~keep).sum())


def _run(argv, capsys):
    rc = main(argv)
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def test_csv_truth_with_geojson_and_csv_predictions(tmp_path: Path, capsys) -> None:
    subset = _subset()
    truth_csv = tmp_path / "truth.csv"
    with open(truth_csv, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["image", "x_px", "y_px", "label"])
        for name, t in subset.items():
            for x, y in zip(t.x_px, t.y_px, strict=True):
                w.writerow([name, x, y, "mitotic figure"])
    exp_tp = exp_fn = 0
    geo_dir, csv_dir = tmp_path / "geo", tmp_path / "csvpred"
    geo_dir.mkdir()
    csv_dir.mkdir()
    for name, t in subset.items():
        det, tp, fn = _prediction(t)
        exp_tp += tp
        exp_fn += fn
        stem = Path(name).stem
        write_qupath_geojson(geo_dir / f"{stem}.geojson", det, threshold=0.5, mpp=MPP)
        write_detections_csv(csv_dir / f"{stem}.csv", det, threshold=0.5, mpp=MPP)
    for pred in (geo_dir, csv_dir):
        rc, out, err = _run(
            [
                "evaluate",
                "--truth",
                str(truth_csv),
                "--pred",
                str(pred),
                "--mpp",
                str(MPP),
                "--json",
                "--bootstrap",
                "0",
            ],
            capsys,
        )
        assert rc == 0, err
        res = json.loads(out)
        overall = res.get("overall", res)
        assert (overall["tp"], overall["fn"], overall["fp"]) == (exp_tp, exp_fn, len(subset)), pred


def test_geojson_truth_single_image(tmp_path: Path, capsys) -> None:
    name, t = next(iter(_subset(1).items()))
    stem = Path(name).stem
    truth = Detections(t.x_px, t.y_px, np.ones(len(t)), np.zeros(len(t)), np.full(len(t), 40.0))
    truth_path = tmp_path / f"{stem}.geojson"
    write_qupath_geojson(truth_path, truth, threshold=0.5, mpp=MPP)
    det, tp, fn = _prediction(t)
    pred_dir = tmp_path / "pred"
    pred_dir.mkdir()
    write_detections_csv(pred_dir / f"{stem}.csv", det, threshold=0.5, mpp=MPP)
    rc, out, err = _run(
        [
            "evaluate",
            "--truth",
            str(truth_path),
            "--pred",
            str(pred_dir),
            "--mpp",
            str(MPP),
            "--json",
            "--bootstrap",
            "0",
        ],
        capsys,
    )
    assert rc == 0, err
    overall = json.loads(out)
    overall = overall.get("overall", overall)
    assert (overall["tp"], overall["fn"], overall["fp"]) == (tp, fn, 1)
