"""Stage timings in ``summary.json`` and the progress bar in mm² of tissue (issue 13).

Runs ``detect_slide`` / ``mitoscope detect`` on a real tissue image (MoNuSeg, 0.2527 um/px,
../shared/data/tissue) with a tiny random classifier (timings, not detection quality, are
tested here).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import shared_file, write_pyramid_tiff
from mitoscope.cli import main
from mitoscope.detect import DetectConfig, detect_slide
from mitoscope.detect.tiles import TILE_STAGES
from mitoscope.slide import ArraySlide
from test_pipeline import make_tiny_classifier

TISSUE_MPP = 0.2527
PHASES = {"tissue_s", "tiles_s", "count_s", "write_s"}
CFG = {"tile_um": 96, "overlap_um": 16, "floor": 0.0, "cascade": False}


@pytest.fixture(scope="module")
def tissue_rgb() -> np.ndarray:
    from PIL import Image

    path = shared_file("tissue", "images", "TCGA-A7-A13E-01Z-00-DX1.png")
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))[:600, :700]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("timing") / "tiny.pt"
    make_tiny_classifier(path, input_mpp=0.25)
    return path


def _check_timing(summary: dict, *, workers: int) -> dict:
    t = summary["timing_s"]
    assert PHASES <= set(t) and t["workers"] == workers
    assert set(t["stages_s"]) == set(TILE_STAGES) == set(t["per_tile_s"])
    for k in PHASES:
        assert 0.0 <= t[k] < 600.0, (k, t[k])
    # the run's phases add up to its time (the outputs are written after it)
    run = t["tissue_s"] + t["tiles_s"] + t["count_s"]
    assert run == pytest.approx(summary["seconds"], abs=0.01)
    stages = t["stages_s"]
    assert all(v >= 0.0 for v in stages.values())
    for k in ("propose_s", "classify_s"):  # each real tile was proposed on and scored
        assert stages[k] > 0.0, k
    # summed over the tile workers: at most every worker busy for the whole tile loop
    assert sum(stages.values()) <= workers * t["tiles_s"] * 1.05 + 0.05
    n = summary["n_tiles"]
    assert n >= 3
    for k, v in stages.items():
        assert t["per_tile_s"][k] == pytest.approx(v / n, abs=1e-4)
    return t


def test_summary_has_stage_timings_in_process(
    tmp_path: Path, tissue_rgb: np.ndarray, tiny_model: Path
) -> None:
    from mitoscope.classify import load_classifier

    reader = ArraySlide(tissue_rgb, mpp=TISSUE_MPP, path="tissue.png")
    clf = load_classifier(tiny_model, device="cpu")
    res = detect_slide(
        reader, classifier=clf, config=DetectConfig(report=True, **CFG), out_dir=tmp_path,
        progress=False, stem="tissue",
    )  # fmt: skip
    assert res.stats.workers == 1 and set(res.stats.stage_s) == set(TILE_STAGES)
    summary = json.loads((tmp_path / "tissue.summary.json").read_text())
    t = _check_timing(summary, workers=1)
    assert t["write_s"] > 0.0  # GeoJSON, MIDOG json, CSV and the HTML report were written
    assert t["stages_s"]["screen_s"] == 0.0  # no cascade: nothing screened


def test_stage_timings_come_back_from_worker_processes(
    tmp_path: Path, tissue_rgb: np.ndarray, tiny_model: Path
) -> None:
    path = write_pyramid_tiff(tmp_path / "tissue.tif", tissue_rgb, mpp=TISSUE_MPP, levels=2)
    out = tmp_path / "out"
    rc = main(
        ["detect", str(path), "--out", str(out), "--model", str(tiny_model), "--workers", "2",
         "--device", "cpu", "--no-cascade", "--tile-um", "96", "--no-report", "-q"]
    )  # fmt: skip
    assert rc == 0
    summary = json.loads((out / "tissue.summary.json").read_text())
    t = _check_timing(summary, workers=2)
    # read from the file (decoded) and classified in the workers, and timed there
    assert t["stages_s"]["read_s"] > 0.0 and t["stages_s"]["classify_s"] > 0.0


def test_progress_bar_counts_mm2_of_tissue(
    tissue_rgb: np.ndarray, tiny_model: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from mitoscope.classify import load_classifier

    reader = ArraySlide(tissue_rgb, mpp=TISSUE_MPP, path="tissue.png")
    clf = load_classifier(tiny_model, device="cpu")
    res = detect_slide(reader, classifier=clf, config=DetectConfig(report=False, **CFG))
    err = capsys.readouterr().err
    area = res.tissue_area_mm2
    n = res.stats.n_tiles
    assert area > 0.0 and n >= 3
    # updates: mm² of tissue done of the slide's total, tiles done, a speed in mm²/s and the
    # time left (elapsed<remaining); tqdm redraws at most every 0.1 s, so on a fast machine the
    # final state, drawn once before the bar goes, may be the only one (checked on
    # TissueProgress below)
    lines = [ln for ln in err.replace("\r", "\n").splitlines() if "tiles]" in ln]
    assert lines, err[-400:]
    for ln in lines:
        assert f"/{area:.2f} mm² tissue [" in ln and "mm²/s" in ln and "<" in ln, ln
        assert f"/{n} tiles]" in ln, ln


def test_progress_shares_add_up_to_the_tissue_area() -> None:
    from mitoscope.detect.run import TissueProgress
    from mitoscope.types import Region, Tile

    tiles = [
        Tile(index=i, x=0, y=0, width=10, height=10, core=Region(0, 0, 8, w), tissue_fraction=f)
        for i, (w, f) in enumerate([(8, 1.0), (8, 0.5), (4, 0.25), (8, 0.0)])
    ]
    bar = TissueProgress("x", tiles, 3.5)
    try:
        shares = [bar.share[t.index] for t in tiles]
        assert sum(shares) == pytest.approx(3.5)
        # proportional to tissue fraction x core area: 64, 32, 8, 0
        assert np.allclose(np.array(shares) / 3.5, np.array([64, 32, 8, 0]) / 104)
        for t in tiles:
            bar.tile_done(t)
        assert bar.bar.n == pytest.approx(3.5) and bar.done == 4
    finally:
        bar.close()
