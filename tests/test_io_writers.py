"""Result writers (GeoJSON, MIDOG JSON, CSV, SlideRunner SQLite), round trips through the readers,
and atomic output."""

from __future__ import annotations

import json
import shutil
import sqlite3
import uuid
from pathlib import Path

import numpy as np
import pytest

from conftest import shared_file
from mitoscope.errors import InvalidInputError, OutputError
from mitoscope.io import (
    MITOTIC,
    NON_MITOTIC,
    SlideRunnerDB,
    atomic_path,
    atomic_write_text,
    read_annotations,
    read_csv_points,
    read_geojson,
    read_midog_points_json,
    read_sliderunner,
    write_detections_csv,
    write_midog_json,
    write_qupath_geojson,
)
from mitoscope.io.sliderunner import SCHEMA
from mitoscope.types import Detections

MPP = 0.25


def _square(cx: float, cy: float, r: float = 6.0) -> np.ndarray:
    return np.array([[cx - r, cy - r], [cx + r, cy - r], [cx + r, cy + r], [cx - r, cy + r]])


@pytest.fixture
def dets() -> Detections:
    x = np.array([1000.0, 2500.5, 300.0, 4000.0, 50.0])
    y = np.array([800.0, 1200.25, 90.0, 3000.0, 60.0])
    return Detections(
        x_px=x,
        y_px=y,
        mf_probability=[0.95, 0.7, 0.4, 0.1, 0.02],
        atypical_probability=[0.8, 0.1, np.nan, 0.5, np.nan],
        area_um2=[40.0, 35.5, 20.0, 18.0, 10.0],
        contours=[_square(a, b) for a, b in zip(x, y, strict=True)],
    )


# -- GeoJSON ---------------------------------------------------------------------------------
def test_qupath_geojson_structure(tmp_path: Path, dets: Detections) -> None:
    out = write_qupath_geojson(
        tmp_path / "s.geojson", dets, threshold=0.5, atypical_threshold=0.5, mpp=MPP
    )
    fc = json.loads(out.read_text())
    assert fc["type"] == "FeatureCollection"
    feats = fc["features"]
    assert len(feats) == 2  # p >= 0.5 only
    ids = [f["id"] for f in feats]
    assert len(set(ids)) == 2 and all(uuid.UUID(i) for i in ids)  # QuPath >= 0.4 keeps UUIDs
    for f in feats:
        assert f["type"] == "Feature"
        g = f["geometry"]
        assert g["type"] == "Polygon"
        ring = g["coordinates"][0]
        assert ring[0] == ring[-1] and len(ring) == 5  # closed ring
        props = f["properties"]
        assert props["objectType"] == "detection"
        assert set(props["classification"]) == {"name", "color"}
        assert len(props["classification"]["color"]) == 3
        meas = props["measurements"]
        assert isinstance(meas, dict)
        assert all(isinstance(v, (int, float)) for v in meas.values())
    names = [f["properties"]["classification"]["name"] for f in feats]
    assert names == ["Atypical mitotic figure", "Mitotic figure"]
    m0 = feats[0]["properties"]["measurements"]
    assert m0["mf_probability"] == 0.95 and m0["atypical_probability"] == 0.8
    assert m0["area_um2"] == 40.0 and m0["x_um"] == 250.0
    # deterministic ids: writing again gives the same ids
    again = write_qupath_geojson(tmp_path / "s2.geojson", dets, threshold=0.5)
    assert [f["id"] for f in json.loads(again.read_text())["features"]] == ids


def test_qupath_geojson_round_trip(tmp_path: Path, dets: Detections) -> None:
    out = write_qupath_geojson(tmp_path / "case.geojson", dets, threshold=0.3)
    ann = read_geojson(out)
    assert len(ann) == 3 and ann.images() == ["case"]
    np.testing.assert_allclose(ann.x_px, dets.x_px[:3], atol=0.01)
    np.testing.assert_allclose(ann.y_px, dets.y_px[:3], atol=0.01)
    np.testing.assert_allclose(ann.score, dets.mf_probability[:3])
    assert ann.is_mitosis.all()
    assert ann.atypical[0] == 1.0
    np.testing.assert_allclose(ann.meta["area_um2"], [40.0, 35.5, 20.0])
    # with negatives and without contours -> Points
    nocont = Detections.cat([dets])
    nocont.contours = None
    out2 = write_qupath_geojson(
        tmp_path / "b.geojson", nocont, threshold=0.5, include_negatives=True, floor=0.05
    )
    fc = json.loads(out2.read_text())
    assert {f["geometry"]["type"] for f in fc["features"]} == {"Point"}
    back = read_annotations(out2)
    assert back.label.tolist() == [MITOTIC, MITOTIC, NON_MITOTIC, NON_MITOTIC]


def test_geojson_bad_threshold(tmp_path: Path, dets: Detections) -> None:
    with pytest.raises(InvalidInputError, match="threshold"):
        write_qupath_geojson(tmp_path / "x.geojson", dets, threshold=1.5)
    assert not (tmp_path / "x.geojson").exists()


# -- MIDOG JSON ------------------------------------------------------------------------------
def test_midog_json_round_trip(tmp_path: Path, dets: Detections) -> None:
    out = write_midog_json(tmp_path / "s.midog.json", dets, mpp=MPP, threshold=0.5, floor=0.05)
    doc = json.loads(out.read_text())
    assert doc["type"] == "Multiple points"
    assert doc["version"] == {"major": 1, "minor": 0}
    pts = doc["points"]
    assert [p["probability"] for p in pts] == [0.95, 0.7, 0.4, 0.1]  # >= floor, sorted
    assert [p["name"] for p in pts] == [MITOTIC, MITOTIC, "non-mitotic figure", NON_MITOTIC]
    assert pts[0]["point"] == [1000 * MPP / 1000, 800 * MPP / 1000, 0]
    ann = read_midog_points_json(out, mpp=MPP)
    assert ann.images() == ["s"]
    np.testing.assert_allclose(ann.x_px, dets.x_px[:4], atol=1e-6)
    np.testing.assert_allclose(ann.y_px, dets.y_px[:4], atol=1e-6)
    assert ann.is_mitosis.tolist() == [True, True, False, False]


# -- CSV -------------------------------------------------------------------------------------
def test_detections_csv_round_trip(tmp_path: Path, dets: Detections) -> None:
    out = write_detections_csv(tmp_path / "s.csv", dets, mpp=MPP, threshold=0.5)
    lines = out.read_text().splitlines()
    assert lines[0] == "x_px,y_px,x_um,y_um,mf_probability,atypical_probability,area_um2"
    assert len(lines) == 3
    ann = read_csv_points(out)
    np.testing.assert_allclose(ann.x_px, dets.x_px[:2])
    np.testing.assert_allclose(ann.meta["x_um"], dets.x_px[:2] * MPP)
    np.testing.assert_allclose(ann.score, [0.95, 0.7])
    np.testing.assert_allclose(ann.meta["atypical_probability"], [0.8, 0.1])
    assert ann.is_mitosis.all()
    # empty result: header only, still readable
    empty = write_detections_csv(tmp_path / "e.csv", Detections.empty(), mpp=MPP, threshold=0.5)
    assert len(read_csv_points(empty)) == 0


# -- atomic ----------------------------------------------------------------------------------
def test_atomic_keeps_old_file_on_error(tmp_path: Path) -> None:
    target = tmp_path / "out.json"
    atomic_write_text(target, "old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("partial")
        raise RuntimeError("crash while writing")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]  # temp file removed
    with pytest.raises(OutputError, match="does not exist"):
        atomic_write_text(tmp_path / "missing" / "x.txt", "x")
    with pytest.raises(OutputError, match="is a directory"):
        atomic_write_text(tmp_path, "x")


def test_atomic_unwritable_dir(tmp_path: Path) -> None:
    import os

    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        if os.access(ro, os.W_OK):  # running as root: permissions are not enforced
            pytest.skip("directory permissions are not enforced for this user")
        with pytest.raises(OutputError, match="not writable"):
            atomic_write_text(ro / "x.txt", "x")
    finally:
        ro.chmod(0o700)


# -- SlideRunner -----------------------------------------------------------------------------
def test_sliderunner_schema_matches_real_file(tmp_path: Path) -> None:
    real = shared_file("annotations", "TUPAC_alternativeLabels_augmented_training.sqlite")
    con = sqlite3.connect(f"{real.resolve().as_uri()}?mode=ro", uri=True)
    real_sql = {
        r[0]
        for r in con.execute("SELECT sql FROM sqlite_master WHERE type='table'")
        if not r[0].startswith("CREATE TABLE sqlite_sequence")
    }
    con.close()
    with SlideRunnerDB(tmp_path / "new.sqlite"):
        pass
    con = sqlite3.connect(tmp_path / "new.sqlite")
    ours = {
        r[0]
        for r in con.execute("SELECT sql FROM sqlite_master WHERE type='table'")
        if not r[0].startswith("CREATE TABLE sqlite_sequence")
    }
    con.close()
    assert ours == real_sql == set(SCHEMA)


def test_sliderunner_write_read_round_trip(tmp_path: Path, dets: Detections) -> None:
    db_path = tmp_path / "run.sqlite"
    with SlideRunnerDB(db_path) as db:
        uid = db.add_slide(
            "a.svs", width=5000, height=4000, directory="/slides", detections=dets, threshold=0.5
        )
        db.add_slide("b.svs", width=100, height=100, detections=dets, threshold=0.3)
    ann = read_sliderunner(db_path)
    assert ann.images() == ["a.svs", "b.svs"]
    a = ann.for_image("a.svs")
    assert len(a) == 2 and a.is_mitosis.all()
    np.testing.assert_allclose(a.x_px, np.round(dets.x_px[:2]))
    np.testing.assert_allclose(a.score, [0.95, 0.7])
    assert a.meta["class_name"].tolist() == ["Atypical mitotic figure", "Mitotic figure"]
    assert a.atypical[0] == 1.0
    assert ann.image_meta["a.svs"] == {
        "slide": uid,
        "width": 5000,
        "height": 4000,
        "directory": "/slides",
    }
    assert len(ann.for_image("b.svs")) == 3

    # re-running slide a replaces its detections (no duplicates), b stays untouched
    with SlideRunnerDB(db_path) as db:
        assert db.add_slide("a.svs", width=5000, height=4000, detections=dets, threshold=0.9) == uid
    ann2 = read_sliderunner(db_path)
    assert len(ann2.for_image("a.svs")) == 1
    assert len(ann2.for_image("b.svs")) == 3
    con = sqlite3.connect(db_path)
    n_coords = con.execute("SELECT count(*) FROM Annotations_coordinates").fetchone()[0]
    n_labels = con.execute("SELECT count(*) FROM Annotations_label").fetchone()[0]
    n_slides = con.execute("SELECT count(*) FROM Slides").fetchone()[0]
    con.close()
    assert (n_coords, n_labels, n_slides) == (4, 4, 2)


def test_sliderunner_keeps_human_labels(tmp_path: Path, dets: Detections) -> None:
    db_path = tmp_path / "run.sqlite"
    with SlideRunnerDB(db_path) as db:
        slide = db.add_slide("a.svs", width=10, height=10, detections=dets, threshold=0.5)
    con = sqlite3.connect(db_path)
    with con:
        con.execute("INSERT INTO Persons (name) VALUES ('Pathologist')")
        cls = con.execute("SELECT uid FROM Classes WHERE name='Mitotic figure'").fetchone()[0]
        cur = con.execute(
            "INSERT INTO Annotations (slide, type, agreedClass) VALUES (?, 1, ?)", (slide, cls)
        )
        anno = cur.lastrowid
        con.execute(
            "INSERT INTO Annotations_coordinates (coordinateX, coordinateY, slide, annoId, "
            "orderIdx) VALUES (7, 7, ?, ?, 1)",
            (slide, anno),
        )
        con.execute(
            "INSERT INTO Annotations_label (person, class, annoId) VALUES (2, ?, ?)", (cls, anno)
        )
    con.close()
    with SlideRunnerDB(db_path) as db:
        db.add_slide("a.svs", width=10, height=10, detections=None)
    ann = read_sliderunner(db_path)
    assert len(ann) == 1 and (ann.x_px[0], ann.y_px[0]) == (7.0, 7.0)


def test_sliderunner_append_to_real_database(tmp_path: Path, dets: Detections) -> None:
    """Appending to a database written by SlideRunner (with its triggers) works."""
    real = shared_file("annotations", "TUPAC_alternativeLabels_augmented_training.sqlite")
    copy = tmp_path / "tupac.sqlite"
    shutil.copyfile(real, copy)
    copy.chmod(0o600)
    with SlideRunnerDB(copy) as db:
        db.add_slide("new.svs", width=10, height=10, detections=dets, threshold=0.5)
    ann = read_sliderunner(copy)
    assert len(ann.images()) == 74
    assert len(ann.for_image("new.svs")) == 2
    assert int(ann.is_mitosis.sum()) == 1999 + 2


def test_sliderunner_db_refuses_other_files(tmp_path: Path) -> None:
    p = tmp_path / "x.sqlite"
    p.write_text("not sqlite" * 200)
    with pytest.raises(OutputError, match="not a SQLite database"):
        SlideRunnerDB(p)
    q = tmp_path / "y.sqlite"
    con = sqlite3.connect(q)
    con.execute("CREATE TABLE foo (a)")
    con.commit()
    con.close()
    with pytest.raises(OutputError, match="not a SlideRunner database"):
        SlideRunnerDB(q)


def test_sliderunner_parallel_writers(tmp_path: Path, dets: Detections) -> None:
    """Several processes appending to one new database lose nothing (cohort workers)."""
    import multiprocessing as mp

    db_path = tmp_path / "run.sqlite"
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_add_one, args=(db_path, f"s{i}.svs")) for i in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert all(p.exitcode == 0 for p in procs)
    ann = read_sliderunner(db_path)
    assert sorted(ann.images()) == [f"s{i}.svs" for i in range(4)]
    assert len(ann) == 4 * 2


def _add_one(db_path: Path, name: str) -> None:
    x = np.array([10.0, 20.0])
    d = Detections(x, x, [0.9, 0.8], [np.nan, np.nan], [1.0, 1.0])
    with SlideRunnerDB(db_path) as db:
        db.add_slide(name, width=100, height=100, detections=d, threshold=0.5)
