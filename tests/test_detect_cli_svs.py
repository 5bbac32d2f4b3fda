"""``mitoscope detect`` end to end on the real Aperio SVS (its own file: ~20 s)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from conftest import shared_file
from mitoscope.cli import main
from test_detect_cli import check_outputs
from test_pipeline import make_tiny_classifier


@pytest.fixture(scope="module")
def model_050(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Tiny random classifier at 0.5 um/px (the sample slide's native resolution)."""
    path = tmp_path_factory.mktemp("m050") / "tiny050.pt"
    make_tiny_classifier(path, input_mpp=0.5, bias=-10.0, threshold=0.05)
    return path


def test_detect_real_svs_end_to_end(tmp_path: Path, model_050: Path, capsys) -> None:
    from mitoscope.io import read_sliderunner

    svs = shared_file("slides", "cmu_small_region.svs")
    out = tmp_path / "results"
    rc = main(["detect", str(svs), "--out", str(out), "--model", str(model_050), "--quiet"])
    assert rc == 0, capsys.readouterr().err
    s = check_outputs(out, "cmu_small_region", width=2220, height=2967, mpp=0.499)
    assert s["n_mitoses"] > 0 and s["tissue_area_mm2"] > 0.1
    # the region (1.1 x 1.5 mm) is smaller than the 2 mm² field (1.6 mm across): stated
    assert s["hotspot_2mm2"]["field_fits"] is False and "smaller than" in s["hotspot_2mm2"]["note"]
    assert s["work_mpp"] == pytest.approx(0.499)  # within 3 % of 0.5: read natively
    assert s["model"] == "tiny_cnn-random"
    # one SQLite database, readable by the SlideRunner reader
    db = out / "mitoscope.sqlite"
    ann = read_sliderunner(db)
    assert set(ann.images()) == {"cmu_small_region.svs"}
    assert int(ann.is_mitosis.sum()) == s["n_mitoses"]
    con = sqlite3.connect(db)
    ((w, h),) = con.execute("SELECT width, height FROM Slides").fetchall()
    con.close()
    assert (w, h) == (2220, 2967)
    # every reported object lies on tissue (tiles also cover the glass around it)
    from mitoscope.slide import detect_tissue, open_slide

    with open_slide(svs) as reader:
        tissue = detect_tissue(reader)
    midog = json.loads((out / "cmu_small_region.midog.json").read_text())
    xy = np.array([p["point"][:2] for p in midog["points"]]) * 1000 / 0.499
    assert len(xy) > 0 and tissue.contains(xy[:, 0], xy[:, 1]).all()
