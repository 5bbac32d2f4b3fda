"""``mitoscope detect`` end to end on real data: every output file's structure, bad input.

The classifier is a tiny *random* CNN saved as a real checkpoint and passed with ``--model``
(the structure of the outputs is what is tested here, not detection quality); the proposer is
the real classical one.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest

from conftest import shared_file
from mitoscope.cli import main
from test_pipeline import SUMMARY_KEYS, make_tiny_classifier

CSV_COLUMNS = ["x_px", "y_px", "x_um", "y_um", "mf_probability", "atypical_probability", "area_um2"]


@pytest.fixture(scope="module")
def model_025(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("m025") / "tiny025.pt"
    make_tiny_classifier(path, input_mpp=0.25, bias=-10.0, threshold=0.05)
    return path


def check_outputs(out: Path, stem: str, *, width: int, height: int, mpp: float) -> dict:
    """Validate every per-slide output file; return the summary."""
    summary = json.loads((out / f"{stem}.summary.json").read_text())
    assert SUMMARY_KEYS <= set(summary)
    assert summary["mpp"] == pytest.approx(mpp)
    n = summary["n_mitoses"]
    thr = summary["threshold"]
    for key in ("hotspot_2mm2", "hotspot_10hpf"):
        h = summary[key]
        assert {"count", "center_px", "radius_um", "area_mm2"} <= set(h)
        assert 0 <= h["count"] <= n and len(h["center_px"]) == 2
    assert summary["hotspot_2mm2"]["radius_um"] == pytest.approx(797.885, abs=1e-3)
    assert summary["hotspot_10hpf"]["area_mm2"] == 2.37
    if summary["tissue_area_mm2"] > 0:
        assert summary["mitoses_per_mm2"] == pytest.approx(
            n / summary["tissue_area_mm2"], rel=1e-3, abs=1e-4
        )
    assert summary["atypical_ratio"] is None or 0 <= summary["atypical_ratio"] <= 1
    assert isinstance(summary["model"], str) and summary["proposer"] == "classical"
    assert summary["seconds"] > 0

    # QuPath GeoJSON: a FeatureCollection of detections with a classification and measurements
    gj = json.loads((out / f"{stem}.geojson").read_text())
    assert gj["type"] == "FeatureCollection"
    assert len(gj["features"]) == n
    for f in gj["features"]:
        assert f["type"] == "Feature"
        geom = f["geometry"]
        assert geom["type"] in ("Polygon", "Point")
        if geom["type"] == "Polygon":
            ring = np.asarray(geom["coordinates"][0])
            assert ring.shape[1] == 2 and len(ring) >= 4
            assert ring[0].tolist() == ring[-1].tolist()  # closed
            assert (ring[:, 0] >= -1).all() and (ring[:, 0] <= width + 1).all()
            assert (ring[:, 1] >= -1).all() and (ring[:, 1] <= height + 1).all()
        props = f["properties"]
        assert props["objectType"] == "detection"
        assert props["classification"]["name"] in ("Mitotic figure", "Atypical mitotic figure")
        color = props["classification"]["color"]
        assert len(color) == 3 and all(isinstance(c, int) and 0 <= c <= 255 for c in color)
        assert props["measurements"]["mf_probability"] >= thr - 1e-6
        assert "area_um2" in props["measurements"]

    # MIDOG result format: mm coordinates, every candidate above the floor
    mj = json.loads((out / f"{stem}.midog.json").read_text())
    assert mj["type"] == "Multiple points"
    assert mj["version"] == {"major": 1, "minor": 0}
    names = [p["name"] for p in mj["points"]]
    assert set(names) <= {"mitotic figure", "non-mitotic figure"}
    assert names.count("mitotic figure") == n
    for p in mj["points"]:
        x_mm, y_mm, z = p["point"]
        assert z == 0 and 0 <= x_mm <= width * mpp / 1000 and 0 <= y_mm <= height * mpp / 1000
        assert 0 <= p["probability"] <= 1
        assert (p["probability"] >= thr) == (p["name"] == "mitotic figure")

    # CSV: one row per mitosis with exactly the documented columns
    with open(out / f"{stem}.csv", newline="") as fh:
        rows = list(csv.reader(fh))
    # + the dedicated atypical model's name when one made the atypical calls (the bundled one)
    at_model = summary.get("atypical_model")
    assert rows[0] == CSV_COLUMNS + (["atypical_model"] if at_model else [])
    if at_model:
        assert all(r[-1] == at_model for r in rows[1:])
    assert len(rows) - 1 == n
    for r in rows[1:]:
        assert float(r[2]) == pytest.approx(float(r[0]) * mpp, abs=0.01)
        assert float(r[4]) >= thr - 1e-6

    # HTML: self-contained, with images and the numbers
    html = (out / f"{stem}.report.html").read_text()
    assert html.startswith("<!doctype html>")
    assert html.count('src="data:image/png;base64,') >= 2
    assert "http://" not in html and "https://" not in html
    assert f"<b>{n}</b>" in html
    return summary


def test_detect_real_crop_with_mpp(tmp_path: Path, model_025: Path) -> None:
    crop = shared_file("amibr-train", "Normal", "MIDOG21_10.png")
    out = tmp_path / "o"
    rc = main(
        ["detect", str(crop), "--mpp", "0.25", "--out", str(out), "--model", str(model_025), "-q"]
    )
    assert rc == 0
    s = check_outputs(out, "MIDOG21_10", width=128, height=128, mpp=0.25)
    assert s["tissue_area_mm2"] == pytest.approx(128 * 128 * 0.0625 / 1e6)
    assert s["n_tiles"] == 1 and s["n_candidates"] > 0
    assert s["hotspot_2mm2"]["field_fits"] is False
    assert (out / "mitoscope.sqlite").exists()


def test_several_inputs_one_bad(tmp_path: Path, model_025: Path, capsys) -> None:
    crop = shared_file("amibr-train", "Normal", "MIDOG21_10.png")
    bad = tmp_path / "corrupt.svs"
    bad.write_bytes(b"not a slide at all" * 100)
    out = tmp_path / "o"
    rc = main(
        [
            "detect",
            str(bad),
            str(tmp_path / "missing.svs"),
            str(crop),
            "--mpp",
            "0.25",
            "--out",
            str(out),
            "--model",
            str(model_025),
            "-q",
        ]
    )
    err = capsys.readouterr().err
    assert rc == 2
    assert "missing.svs: no such file" in err and "corrupt.svs" in err
    # the rule: one line per failed input (with -q nothing else on stderr)
    assert len(err.strip().splitlines()) == 2
    assert all(line.startswith("mitoscope: error: ") for line in err.strip().splitlines())
    assert (out / "MIDOG21_10.summary.json").exists()  # the good one was done
    assert not list(out.glob("corrupt*")) and not list(out.glob("missing*"))


def test_unreadable_model_file(tmp_path: Path, capsys) -> None:
    crop = shared_file("amibr-train", "Normal", "MIDOG21_10.png")
    out = tmp_path / "o"
    out.mkdir()
    (out / "MIDOG21_10.csv").write_text("earlier\n")
    bad = tmp_path / "model.pt"
    bad.write_bytes(b"\x00garbage" * 50)
    rc = main(["detect", str(crop), "--mpp", "0.25", "--out", str(out), "--model", str(bad)])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert err.startswith("mitoscope: error:") and len(err.splitlines()) == 1
    assert "model.pt" in err
    assert sorted(p.name for p in out.iterdir()) == ["MIDOG21_10.csv"]
    assert (out / "MIDOG21_10.csv").read_text() == "earlier\n"


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        ([], "--mpp"),  # a PNG crop without a pixel size
        (["--mpp", "100"], "outside the plausible range"),
        (["--mpp", "0.25", "--threshold", "2"], "threshold"),
        (["--mpp", "0.25", "--proposer", "sam"], "--sam-checkpoint"),
        (["--mpp", "0.25", "--device", "tpu"], "--device"),
        (["--mpp", "0.25", "--workers", "0"], "--workers must be a positive integer or auto"),
        (["--mpp", "0.25", "--workers", "many"], "--workers must be a positive integer or auto"),
    ],
)
def test_bad_arguments_exit_2(
    tmp_path: Path,
    model_025: Path,
    capsys,
    extra: list[str],
    needle: str,
) -> None:
    crop = shared_file("amibr-train", "Normal", "MIDOG21_10.png")
    out = tmp_path / "o"
    rc = main(["detect", str(crop), "--out", str(out), "--model", str(model_025), "-q", *extra])
    err = capsys.readouterr().err
    assert rc == 2
    assert needle in err
    assert not list(out.glob("MIDOG21_10.*")) if out.exists() else True


def test_unwritable_out_is_exit_2(tmp_path: Path, model_025: Path, capsys) -> None:
    crop = shared_file("amibr-train", "Normal", "MIDOG21_10.png")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    rc = main(
        [
            "detect",
            str(crop),
            "--mpp",
            "0.25",
            "--out",
            str(blocker / "sub"),
            "--model",
            str(model_025),
        ]
    )
    assert rc == 2
    assert "cannot create output directory" in capsys.readouterr().err


def test_no_tissue_slide_is_stated_and_exits_2(tmp_path: Path, model_025: Path, capsys) -> None:
    """Empty tissue is bad input: exit 2, one line, nothing written (no database either)."""
    from conftest import synthetic_he, write_pyramid_tiff

    glass = write_pyramid_tiff(tmp_path / "glass.tif", synthetic_he(1024, 1024, tissue=False))
    out = tmp_path / "o"
    rc = main(["detect", str(glass), "--out", str(out), "--model", str(model_025), "-q"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert len(err) == 1 and err[0].startswith("mitoscope: error:") and "no tissue found" in err[0]
    assert list(out.iterdir()) == []


def test_sam_with_unreadable_checkpoint(tmp_path: Path, model_025: Path, capsys) -> None:
    crop = shared_file("amibr-train", "Normal", "MIDOG21_10.png")
    bad = tmp_path / "sam.pth"
    bad.write_bytes(b"junk" * 10)
    argv = ["detect", str(crop), "--mpp", "0.25", "--out", str(tmp_path / "o")]
    argv += ["--model", str(model_025), "--proposer", "sam", "--sam-checkpoint", str(bad)]
    rc = main(argv)
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith("mitoscope: error:") and len(err.splitlines()) == 1


def test_sample_slide_is_the_real_file() -> None:
    from mitoscope.data import sample_slide

    p = sample_slide()
    assert p.stat().st_size == 1938955
    shared = shared_file("slides", "cmu_small_region.svs")
    assert p.read_bytes() == shared.read_bytes()


@pytest.mark.slow
def test_sample_command_with_bundled_model(tmp_path: Path) -> None:
    """The README's first command: ``mitoscope detect --sample --out results/`` (bundled model)."""
    from mitoscope.classify import default_model_path

    if not default_model_path().exists():
        pytest.skip("the bundled model is not in this checkout yet")
    out = tmp_path / "results"
    assert main(["detect", "--sample", "--out", str(out), "--device", "cpu", "-q"]) == 0
    s = check_outputs(out, "cmu_small_region", width=2220, height=2967, mpp=0.499)
    assert math.isfinite(s["seconds"])


def test_workers_auto_is_the_usable_cores_capped() -> None:
    from mitoscope.detect import MAX_AUTO_WORKERS, resolve_workers, usable_cores

    assert resolve_workers("auto") == min(usable_cores(), MAX_AUTO_WORKERS) >= 1
    assert resolve_workers(" AUTO ") == resolve_workers("auto")
    assert resolve_workers("3") == 3 and resolve_workers(2) == 2
