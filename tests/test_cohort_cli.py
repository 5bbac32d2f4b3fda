"""``mitoscope detect SLIDES...``: the cohort branch (resume, failing input, summary table)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from conftest import shared_file
from mitoscope.cli import main


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised tiny_cnn checkpoint (no trained weights are needed here)."""
    import torch

    from mitoscope.classify.classifier import save_checkpoint
    from mitoscope.classify.registry import create_model

    torch.manual_seed(0)
    net = create_model("tiny_cnn", use_mask=True, n_subtypes=0, pretrained=False)
    return save_checkpoint(
        tmp_path_factory.mktemp("model") / "tiny.pt",
        arch="tiny_cnn",
        members=[net.state_dict()],
        arch_kwargs={"use_mask": True, "n_subtypes": 0},
        input_mpp=0.25,
        patch_size_px=32,
        threshold=0.5,
        atypical_threshold=0.5,
    )


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    from mitoscope.synth import build_he_mosaic_slide, load_crops

    crops = load_crops(shared_file("amibr-train"), max_crops=24, seed=2)
    d = tmp_path_factory.mktemp("cli_slides")
    good = [
        build_he_mosaic_slide(
            d / f"case{i}.tif", width=640, height=512, seed=10 + i, crops=crops, min_level_px=128
        )
        for i in range(2)
    ]
    bad = d / "corrupt.svs"
    bad.write_text("not a slide\n")
    return [good[0], bad, good[1]]


def test_detect_cohort_cli(
    inputs: list[Path], tiny_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    args = ["detect", *map(str, inputs), "--out", str(tmp_path), "--model", str(tiny_model)]
    args += ["--device", "cpu", "--no-report", "--tile-um", "96", "--overlap-um", "16"]
    assert main(args) == 2
    cap = capsys.readouterr()
    assert "corrupt.svs" in cap.err and "1 of 3 input(s) failed" in cap.err
    assert "case0.tif:" in cap.out and "case1.tif:" in cap.out
    with open(tmp_path / "cohort_summary.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["slide"], r["status"]) for r in rows] == [
        ("case0.tif", "done"),
        ("corrupt.svs", "failed"),
        ("case1.tif", "done"),
    ]
    for r in rows:
        if r["status"] == "done":
            s = json.loads((tmp_path / f"{Path(r['slide']).stem}.summary.json").read_text())
            assert int(r["n_mitoses"]) == s["n_mitoses"]
            assert float(r["tissue_area_mm2"]) == pytest.approx(s["tissue_area_mm2"])
        else:
            assert r["error"]
    before = {p.name: p.stat().st_mtime_ns for p in tmp_path.glob("case*.csv")}

    # a re-run skips the complete slides and reports the bad one again
    assert main(args) == 2
    cap = capsys.readouterr()
    assert cap.out.count("complete from an earlier run") == 2
    assert {p.name: p.stat().st_mtime_ns for p in tmp_path.glob("case*.csv")} == before

    # --no-resume redoes them; the results are the same
    old = (tmp_path / "case0.csv").read_bytes()
    assert main([*args[:1], str(inputs[0]), str(inputs[2]), *args[4:], "--no-resume", "-q"]) == 0
    assert (tmp_path / "case0.csv").read_bytes() == old


def test_detect_cohort_cli_bad_options(
    inputs: list[Path], tiny_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    args = ["detect", str(inputs[0]), "--out", str(tmp_path), "--model", str(tiny_model)]
    assert main([*args, "--executor", "spark"]) == 2
    assert "executor" in capsys.readouterr().err
