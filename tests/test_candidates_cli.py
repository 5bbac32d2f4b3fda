"""``mitoscope candidates`` command."""

from __future__ import annotations

import csv

import numpy as np
from PIL import Image

from mitoscope.cli import main

COLUMNS = ["x_px", "y_px", "area_um2", "score", "bbox_x0_px", "bbox_y0_px", "bbox_x1_px"]


def _rows(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_cli_writes_csv_for_real_image(he_image, tmp_path, capsys):
    out = tmp_path / "cands.csv"
    assert main(["candidates", str(he_image), "--mpp", "0.25", "--out", str(out)]) == 0
    rows = _rows(out)
    assert list(rows[0])[: len(COLUMNS)] == COLUMNS and "bbox_y1_px" in rows[0]
    assert 300 <= len(rows) <= 900
    xs = np.array([float(r["x_px"]) for r in rows])
    assert xs.min() >= 0 and xs.max() < 1000
    a = np.array([float(r["area_um2"]) for r in rows])
    assert a.min() >= 2.25 and a.max() <= 225
    assert f"{len(rows)} candidates" in capsys.readouterr().out
    assert not list(tmp_path.glob(".*tmp"))  # atomic: no temporary left behind


def test_cli_level0_coordinates_on_pyramid(tmp_path):
    from conftest import write_pyramid_tiff

    img = np.full((1024, 1024, 3), (232, 170, 200), np.uint8)
    yy, xx = np.mgrid[0:1024, 0:1024]
    centres = [(200, 300), (700, 650), (513, 100)]
    for cx, cy in centres:
        img[(xx - cx) ** 2 + (yy - cy) ** 2 <= 14**2] = (90, 50, 140)
    slide = write_pyramid_tiff(tmp_path / "s.tif", img, mpp=0.25, levels=3)
    out = tmp_path / "c.csv"
    # work at 0.5 um/px: coordinates must still come back in level-0 pixels
    rc = main(["candidates", str(slide), "--out", str(out), "--work-mpp", "0.5", "--all-tiles"])
    assert rc == 0
    rows = _rows(out)
    assert len(rows) == 3
    got = sorted((float(r["x_px"]), float(r["y_px"])) for r in rows)
    for (gx, gy), (cx, cy) in zip(got, sorted(centres), strict=True):
        assert abs(gx - cx) < 2 and abs(gy - cy) < 2


def test_cli_bad_inputs_exit_2(tmp_path, capsys):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    out = tmp_path / "x.csv"
    assert main(["candidates", str(bad), "--mpp", "0.25", "--out", str(out)]) == 2
    assert "mitoscope: error:" in capsys.readouterr().err
    assert not out.exists()
    ok = tmp_path / "ok.png"
    Image.fromarray(np.full((64, 64, 3), 240, np.uint8)).save(ok)
    assert main(["candidates", str(ok), "--out", str(out)]) == 2  # no pixel size
    assert "--mpp" in capsys.readouterr().err
    assert main(["candidates", str(ok), "--mpp", "0.25", "--proposer", "x", "--out", str(out)]) == 2
    assert (
        main(["candidates", str(ok), "--mpp", "0.25", "--proposer", "sam", "--out", str(out)]) == 2
    )
    assert "--sam-checkpoint" in capsys.readouterr().err
    missing_dir = tmp_path / "nope" / "c.csv"
    assert main(["candidates", str(ok), "--mpp", "0.25", "--out", str(missing_dir)]) == 2
    assert not out.exists()


def test_cli_empty_image_writes_header_only(tmp_path):
    ok = tmp_path / "white.png"
    Image.fromarray(np.full((64, 64, 3), 250, np.uint8)).save(ok)
    out = tmp_path / "c.csv"
    assert main(["candidates", str(ok), "--mpp", "0.25", "--out", str(out)]) == 0
    assert out.read_text().startswith("x_px,y_px,area_um2,score") and _rows(out) == []
