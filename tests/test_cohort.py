"""Cohorts: serial vs local processes vs Ray give the same outputs; resume; failing slides.

Slides are tiny real-H&E mosaics (mitoscope.synth); the classifier is a deterministic fake
(darkness of the candidate's box) so that the tests measure the cohort machinery, not a model.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import shared_file
from mitoscope.detect import DetectConfig
from mitoscope.errors import InvalidInputError, MissingDependencyError

TESTS = Path(__file__).resolve().parent

#: small tiles so that each tiny slide still has several tiles (and overlaps to merge)
CONFIG = DetectConfig(tile_um=96.0, overlap_um=16.0, report=False)


class FakeClassifier:
    """Deterministic stand-in for the classifier: darker candidates are more likely MFs."""

    name = "fake-darkness"
    input_mpp = 0.25
    threshold = 0.5
    atypical_threshold = 0.5
    has_atypical = True

    def predict_candidates(self, image, candidates, batch_size=256):
        mf = np.empty(len(candidates))
        for i, (x0, y0, x1, y1) in enumerate(candidates.bbox):
            mf[i] = 1.0 - image[max(y0, 0) : y1, max(x0, 0) : x1].mean() / 255.0
        mf = np.clip((mf - 0.35) * 3.0, 0.0, 1.0)
        return mf, np.clip(candidates.area_um2 / 100.0, 0.0, 1.0)


@pytest.fixture(scope="module")
def slides(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    from mitoscope.synth import build_he_mosaic_slide, load_crops

    crops = load_crops(shared_file("amibr-train"), max_crops=40, seed=1)
    d = tmp_path_factory.mktemp("cohort_slides")
    return [
        build_he_mosaic_slide(
            d / f"slide{i}.tif", width=w, height=h, seed=i, tissue_fraction=0.6, crops=crops,
            min_level_px=128, tile=256,
        )
        for i, (w, h) in enumerate([(768, 640), (640, 512), (896, 512)])
    ]  # fmt: skip


@pytest.fixture(scope="module")
def corrupt(tmp_path_factory: pytest.TempPathFactory, slides: list[Path]) -> Path:
    p = tmp_path_factory.mktemp("bad") / "broken.tif"
    data = slides[0].read_bytes()
    p.write_bytes(data[: len(data) // 3])  # truncated TIFF
    return p


@pytest.fixture(scope="module")
def ray_local():
    """One local Ray instance for the module (2 CPUs, no dashboard); workers can import the
    fake classifier from this test module."""
    ray = pytest.importorskip("ray")
    from mitoscope.cohort import reaper
    from mitoscope.cohort.executors import _failed_start

    path = os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]).strip(os.pathsep)
    for attempt in range(3):  # Ray's node start-up limit (30 s) can pass on a loaded machine
        before = reaper.children(os.getpid()) if reaper.available() else None
        try:
            ray.init(
                num_cpus=2,
                include_dashboard=False,
                configure_logging=False,
                log_to_driver=False,
                runtime_env={"env_vars": {"PYTHONPATH": path, "OMP_NUM_THREADS": "1"}},
            )
            break
        except Exception:
            _failed_start(ray, before)  # as mitoscope does: no Ray process left behind
            if attempt == 2:
                raise
    yield ray
    ray.shutdown()


def _run(slides, out, **kw):
    from mitoscope.cohort import run_cohort

    kw.setdefault("classifier", FakeClassifier())
    kw.setdefault("config", CONFIG)
    kw.setdefault("progress", False)
    return run_cohort(slides, out_dir=out, **kw)


def _outputs(out: Path) -> dict[str, object]:
    """Every per-slide output file, with timing fields removed from the summaries."""
    found: dict[str, object] = {}
    for f in sorted(out.iterdir()):
        if f.name.endswith(".summary.json"):
            d = json.loads(f.read_text())
            for timing in ("seconds", "timing_s"):  # run times differ from run to run
                d.pop(timing, None)
            found[f.name] = d
        elif f.suffix in (".geojson", ".csv", ".json") and not f.name.endswith(".done.json"):
            if f.name != "cohort_summary.csv":
                found[f.name] = f.read_bytes()
    return found


def _db_rows(out: Path) -> dict[str, list[tuple]]:
    con = sqlite3.connect(out / "mitoscope.sqlite")
    try:
        rows = con.execute(
            "SELECT s.filename, c.coordinateX, c.coordinateY, k.name, a.description "
            "FROM Annotations a JOIN Slides s ON s.uid = a.slide "
            "JOIN Annotations_coordinates c ON c.annoId = a.uid "
            "JOIN Classes k ON k.uid = a.agreedClass"
        ).fetchall()
    finally:
        con.close()
    by_slide: dict[str, list[tuple]] = {}
    for r in rows:
        by_slide.setdefault(r[0], []).append(r[1:])
    return {k: sorted(v) for k, v in by_slide.items()}


def _table(out: Path) -> list[dict[str, str]]:
    with open(out / "cohort_summary.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        r.pop("seconds")
    return rows


@pytest.fixture(scope="module")
def serial_out(tmp_path_factory: pytest.TempPathFactory, slides: list[Path]) -> Path:
    out = tmp_path_factory.mktemp("serial")
    res = _run(slides, out, workers=1)
    assert res.exit_code == 0 and res.counts()["done"] == len(slides)
    return out


def test_serial_run_outputs(serial_out: Path, slides: list[Path]) -> None:
    table = _table(serial_out)
    assert [r["slide"] for r in table] == [s.name for s in slides]
    assert all(r["status"] == "done" and r["error"] == "" for r in table)
    for s in slides:
        marker = json.loads((serial_out / f"{s.stem}.done.json").read_text())
        assert set(marker["files"]) == {
            f"{s.stem}{x}" for x in (".geojson", ".midog.json", ".csv", ".summary.json")
        }
        summary = json.loads((serial_out / f"{s.stem}.summary.json").read_text())
        assert marker["summary"]["n_mitoses"] == summary["n_mitoses"]
    rows = _db_rows(serial_out)
    assert set(rows) == {s.name for s in slides}
    n = {r["slide"]: int(r["n_mitoses"]) for r in table}
    assert sum(n.values()) > 0
    assert {k: len(v) for k, v in rows.items()} == n


def test_local_processes_match_serial(serial_out: Path, slides: list[Path], tmp_path: Path) -> None:
    res = _run(slides, tmp_path, workers=2)
    assert res.exit_code == 0
    assert _outputs(tmp_path) == _outputs(serial_out)
    assert _db_rows(tmp_path) == _db_rows(serial_out)
    assert _table(tmp_path) == _table(serial_out)


def test_ray_matches_serial_and_reports_corrupt_slide(
    ray_local, serial_out: Path, slides: list[Path], corrupt: Path, tmp_path: Path
) -> None:
    inputs = [slides[0], corrupt, *slides[1:]]
    res = _run(inputs, tmp_path, executor="ray", workers=2)
    assert res.exit_code == 2
    assert [r.status for r in res.records] == ["done", "failed", "done", "done"]
    bad = res.records[1]
    assert "broken.tif" in bad.error and "\n" not in bad.error
    assert not list(tmp_path.glob("broken.*"))  # nothing written for the failed slide
    assert _outputs(tmp_path) == _outputs(serial_out)
    assert _db_rows(tmp_path) == _db_rows(serial_out)
    table = _table(tmp_path)
    assert table[1]["slide"] == "broken.tif" and table[1]["status"] == "failed"
    assert table[1]["error"] == bad.error
    assert [r for i, r in enumerate(table) if i != 1] == _table(serial_out)

    # resume on Ray: delete one slide's marker and another's output; only those two rerun
    (tmp_path / f"{slides[0].stem}.done.json").unlink()
    (tmp_path / f"{slides[2].stem}.csv").unlink()
    res2 = _run(inputs, tmp_path, executor="ray", workers=2)
    status = {r.slide: r.status for r in res2.records}
    assert status == {
        slides[0].name: "done",
        "broken.tif": "failed",
        slides[1].name: "skipped",
        slides[2].name: "done",
    }
    assert _outputs(tmp_path) == _outputs(serial_out)
    assert _db_rows(tmp_path) == _db_rows(serial_out)  # re-added slides replace their rows


def test_resume_after_sigkill(serial_out: Path, slides: list[Path], tmp_path: Path) -> None:
    """Kill a serial cohort run with SIGKILL after its first slide; the re-run completes it
    with nothing lost or duplicated."""
    many = slides * 1  # three slides, run one after another
    script = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {str(TESTS)!r})
        from pathlib import Path
        from test_cohort import _run
        _run({[str(s) for s in many]!r}, Path({str(tmp_path)!r}), workers=1)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script])
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not list(tmp_path.glob("*.done.json")):
            if proc.poll() is not None:
                break
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    done_before = sorted(p.name for p in tmp_path.glob("*.done.json"))
    assert 1 <= len(done_before) < len(slides), "the kill should land mid-cohort"
    res = _run(slides, tmp_path, workers=1)
    assert res.exit_code == 0
    skipped = {r.slide for r in res.records if r.status == "skipped"}
    assert {f"{s}.tif" for s in (n[: -len(".done.json")] for n in done_before)} == skipped
    assert _outputs(tmp_path) == _outputs(serial_out)
    assert _db_rows(tmp_path) == _db_rows(serial_out)
    assert not list(tmp_path.glob(".*.tmp"))


def test_changed_options_are_redone(serial_out: Path, slides: list[Path], tmp_path: Path) -> None:
    import shutil

    for f in serial_out.iterdir():
        shutil.copy2(f, tmp_path / f.name)
    res = _run(slides[:1], tmp_path, workers=1)
    assert [r.status for r in res.records] == ["skipped"]
    res = _run(slides[:1], tmp_path, workers=1, config=DetectConfig(tile_um=128, report=False))
    assert [r.status for r in res.records] == ["done"]


def test_bad_arguments(slides: list[Path], tmp_path: Path, monkeypatch) -> None:
    from mitoscope.cohort import run_cohort

    with pytest.raises(InvalidInputError, match="executor"):
        run_cohort(slides, out_dir=tmp_path, executor="spark")
    with pytest.raises(InvalidInputError, match="--address"):
        run_cohort(slides, out_dir=tmp_path, address="auto")
    with pytest.raises(InvalidInputError, match="workers"):
        run_cohort(slides, out_dir=tmp_path, workers=0)
    monkeypatch.setitem(sys.modules, "ray", None)  # as if ray were not installed
    with pytest.raises(MissingDependencyError, match=r"mitoscope\[ray\]"):
        _run(slides[:1], tmp_path, executor="ray")


def test_resume_key_changes_when_the_model_is_retrained_under_the_same_name(tmp_path: Path) -> None:
    from mitoscope.classify import load_classifier
    from mitoscope.cohort.run import options_key
    from test_pipeline import make_tiny_classifier

    path = tmp_path / "model.pt"
    make_tiny_classifier(path, seed=0)
    a = options_key(
        proposer=None, classifier=load_classifier(path, device="cpu"), config=None, mpp=None
    )
    b = options_key(
        proposer=None, classifier=load_classifier(path, device="cpu"), config=None, mpp=None
    )
    assert a == b
    make_tiny_classifier(path, seed=1)  # "retrained": same file, same name, other weights
    c = options_key(
        proposer=None, classifier=load_classifier(path, device="cpu"), config=None, mpp=None
    )
    assert c != a
