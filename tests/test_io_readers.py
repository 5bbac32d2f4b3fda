"""Annotation readers on the real files in ../shared/data and on small files written here."""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from conftest import shared_file
from mitoscope.errors import InvalidInputError
from mitoscope.io import (
    MITOTIC,
    NON_MITOTIC,
    PointAnnotations,
    canonical_label,
    read_amibr_labels,
    read_annotations,
    read_csv_points,
    read_geojson,
    read_icpr_tupac,
    read_midog_points_json,
    read_midogpp_json,
    read_sliderunner,
)


@pytest.fixture(scope="module")
def midogpp() -> Path:
    return shared_file("annotations", "MIDOGpp.json")


@pytest.fixture(scope="module")
def split_csv() -> Path:
    return shared_file("annotations", "MIDOGpp_datasets_xvalidation.csv")


@pytest.fixture(scope="module")
def tupac_db() -> Path:
    return shared_file("annotations", "TUPAC_alternativeLabels_augmented_training.sqlite")


# -- MIDOG++ ---------------------------------------------------------------------------------
def test_midogpp_counts(midogpp: Path) -> None:
    ann = read_midogpp_json(midogpp)
    counts = Counter(ann.label.tolist())
    assert counts == {MITOTIC: 11937, NON_MITOTIC: 14349}
    assert int(ann.is_mitosis.sum()) == 11937
    assert len(ann.images()) == 553  # all images, including the unlabelled ones
    assert len(set(ann.image.tolist())) == 503
    assert "151.tiff" in ann.images() and len(ann.for_image("151.tiff")) == 0
    # boxes are [x1, y1, x2, y2], 50 px, centred on the point
    assert np.all(ann.bbox[:, 2] - ann.bbox[:, 0] == 50)
    np.testing.assert_allclose(ann.x_px, ann.bbox[:, 0] + 25)
    np.testing.assert_allclose(ann.y_px, ann.bbox[:, 1] + 25)
    # rater votes -> agreement: 2 or 3 raters, agreement 1 or 2/3
    assert set(ann.n_raters.tolist()) == {2, 3}
    assert set(np.round(ann.agreement, 4).tolist()) == {1.0, 0.6667}
    assert ann.meta["tumor_type"][0] == "human breast cancer"
    assert np.isnan(ann.score).all()


def test_midogpp_first_annotation_matches_file(midogpp: Path) -> None:
    raw = json.loads(midogpp.read_text())
    a0 = raw["annotations"][0]
    ann = read_midogpp_json(midogpp)
    x1, y1, x2, y2 = a0["bbox"]
    assert ann.x_px[0] == (x1 + x2) / 2 and ann.y_px[0] == (y1 + y2) / 2
    assert ann.uid[0] == str(a0["id"])
    assert ann.label[0] == (MITOTIC if a0["category_id"] == 1 else NON_MITOTIC)


def test_midogpp_split(midogpp: Path, split_csv: Path) -> None:
    test = read_midogpp_json(midogpp, split_csv=split_csv, split="test")
    train = read_midogpp_json(midogpp, split_csv=split_csv, split="train")
    assert len(test.images()) == 111
    assert len(train.images()) == 392
    assert set(test.meta["split"].tolist()) == {"test"}
    assert not set(test.images()) & set(train.images())
    # 2,467 mitotic figures in the test split (measured from the file with this reader)
    assert int(test.is_mitosis.sum()) == 2467
    assert {"tumor", "scanner", "species", "origin"} <= set(test.meta)
    assert test.image_meta[test.images()[0]]["split"] == "test"
    # images 151-200 (no labels) are not in the split table
    full = read_midogpp_json(midogpp, split_csv=split_csv)
    assert full.image_meta["151.tiff"]["split"] == ""


def test_midogpp_split_errors(midogpp: Path, split_csv: Path) -> None:
    with pytest.raises(InvalidInputError, match="split_csv"):
        read_midogpp_json(midogpp, split="test")
    with pytest.raises(InvalidInputError, match="choose one of"):
        read_midogpp_json(midogpp, split_csv=split_csv, split="validation")


def test_midogpp_is_cached_and_fast(midogpp: Path) -> None:
    read_midogpp_json(midogpp)
    t0 = time.perf_counter()
    a = read_midogpp_json(midogpp)
    elapsed = time.perf_counter() - t0
    assert elapsed < 1.0
    a.label[0] = "changed"  # copies: the cache is not modified
    assert read_midogpp_json(midogpp).label[0] != "changed"


def test_midogpp_wrong_structure(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(InvalidInputError, match="not valid JSON"):
        read_midogpp_json(bad)
    bad.write_text(json.dumps({"images": []}))
    with pytest.raises(InvalidInputError, match="missing"):
        read_midogpp_json(bad)
    bad.write_text(json.dumps([1, 2]))
    with pytest.raises(InvalidInputError, match="not a MIDOG"):
        read_midogpp_json(bad)
    doc = {
        "images": [{"id": 1, "file_name": "a.tiff"}],
        "categories": [{"id": 1, "name": "mitotic figure"}],
        "annotations": [{"id": 1, "image_id": 2, "category_id": 1, "bbox": [0, 0, 1, 1]}],
    }
    bad.write_text(json.dumps(doc))
    with pytest.raises(InvalidInputError, match="annotation #0"):
        read_midogpp_json(bad)
    doc["annotations"][0].update(image_id=1, bbox=[10, 10, 5, 5])  # COCO w/h smaller than x/y
    bad.write_text(json.dumps(doc))
    with pytest.raises(InvalidInputError, match="xywh"):
        read_midogpp_json(bad)
    ok = read_midogpp_json(bad, bbox_format="xywh")
    assert (ok.x_px[0], ok.y_px[0]) == (12.5, 12.5)
    with pytest.raises(InvalidInputError, match="not found"):
        read_midogpp_json(tmp_path / "missing.json")


# -- SlideRunner -----------------------------------------------------------------------------
def test_sliderunner_tupac(tupac_db: Path) -> None:
    ann = read_sliderunner(tupac_db)
    assert Counter(ann.label.tolist()) == {MITOTIC: 1999, NON_MITOTIC: 10483}
    assert len(ann.images()) == 73
    assert ann.images()[0] == "01_stitched1.tif"
    assert ann.image_meta["01_stitched1.tif"]["width"] == 16000
    # first annotation: spot at (6566, 376) on slide 1, agreed class 2 (hard negative)
    assert (ann.x_px[0], ann.y_px[0]) == (6566.0, 376.0)
    assert ann.label[0] == NON_MITOTIC and ann.uid[0] == "1"
    # votes of the two pathologists; the "Consensus" pseudo-person is not a rater
    assert set(ann.n_raters.tolist()) <= {1, 2}
    assert set(ann.agreement.tolist()) == {0.5, 1.0}
    assert ann.bbox is None
    assert set(ann.meta["class_name"].tolist()) == {"Mitose", "Hard negative"}
    with_consensus = read_sliderunner(tupac_db, exclude_persons=())
    assert with_consensus.n_raters.max() == 3


def test_sliderunner_not_a_database(tmp_path: Path) -> None:
    bad = tmp_path / "x.sqlite"
    bad.write_text("hello, I am not SQLite" * 100)
    with pytest.raises(InvalidInputError, match="not a SQLite database"):
        read_sliderunner(bad)
    import sqlite3

    other = tmp_path / "other.sqlite"
    con = sqlite3.connect(other)
    con.execute("CREATE TABLE foo (a INTEGER)")
    con.commit()
    con.close()
    with pytest.raises(InvalidInputError, match="not a SlideRunner database"):
        read_sliderunner(other)


# -- AMi-Br ----------------------------------------------------------------------------------
def test_amibr_labels() -> None:
    path = shared_file("amibr-train", "labels.csv")
    ann = read_amibr_labels(path)
    assert len(ann) == 2894
    assert ann.is_mitosis.all()
    assert int((ann.atypical == 1).sum()) == 307 + 341
    assert int((ann.atypical == 0).sum()) == 985 + 1261
    assert len(ann.images()) == 146
    assert set(ann.n_raters.tolist()) == {3}
    assert set(np.round(ann.agreement, 4).tolist()) == {0.6667, 1.0}  # 3 votes, majority agrees
    assert Path(ann.meta["file"][0]).is_file()
    assert ann.meta["subtype"][0].startswith(("NMF", "AMF"))
    # the row of the header's example: Normal/MIDOG21_6.png at (4422, 216) in 002.tiff
    i = int(np.flatnonzero(ann.meta["crop"] == "Normal/MIDOG21_6.png")[0])
    assert (ann.image[i], ann.x_px[i], ann.y_px[i], ann.atypical[i]) == ("002.tiff", 4422, 216, 0)


def test_amibr_wrong_table(tmp_path: Path) -> None:
    bad = tmp_path / "labels.csv"
    bad.write_text("a,b\n1,2\n")
    with pytest.raises(InvalidInputError, match="missing column"):
        read_amibr_labels(bad)


# -- GeoJSON ---------------------------------------------------------------------------------
def test_geojson_qupath_shapes(tmp_path: Path) -> None:
    fc = {
        "type": "FeatureCollection",
        "features": [
            {
                "type": "Feature",
                "id": "a",
                "geometry": {"type": "Point", "coordinates": [10, 20]},
                "properties": {
                    "objectType": "annotation",
                    "classification": {"name": "Mitotic figure", "color": [255, 0, 0]},
                },
            },
            {
                "type": "Feature",
                "id": "b",
                "geometry": {
                    "type": "Polygon",
                    "coordinates": [[[0, 0], [4, 0], [4, 2], [0, 2], [0, 0]]],
                },
                "properties": {
                    "objectType": "detection",
                    "classification": {"name": "Atypical mitotic figure"},
                    "measurements": {"mf_probability": 0.9, "atypical_probability": 0.7},
                },
            },
            {
                "type": "Feature",
                "geometry": {
                    "type": "MultiPolygon",
                    "coordinates": [
                        [[[0, 0], [2, 0], [2, 2], [0, 2], [0, 0]]],
                        [[[10, 0], [12, 0], [12, 2], [10, 2], [10, 0]]],
                    ],
                },
                "properties": {
                    "classification": {"name": "Imposter"},
                    "measurements": [{"name": "Probability", "value": 0.2}],  # QuPath <= 0.3
                },
            },
            {
                "type": "Feature",
                "geometry": {"type": "MultiPoint", "coordinates": [[1, 1], [3, 3]]},
                "properties": {"objectType": "annotation"},
            },
            {"type": "Feature", "geometry": None, "properties": {}},
        ],
    }
    path = tmp_path / "slide1.geojson"
    path.write_text(json.dumps(fc))
    ann = read_geojson(path)
    assert len(ann) == 5
    assert ann.images() == ["slide1"]
    np.testing.assert_allclose(ann.x_px, [10, 2, 6, 1, 3])
    np.testing.assert_allclose(ann.y_px, [20, 1, 1, 1, 3])
    assert ann.label.tolist() == [MITOTIC, MITOTIC, NON_MITOTIC, MITOTIC, MITOTIC]
    np.testing.assert_allclose(ann.score[1:3], [0.9, 0.2])
    assert ann.atypical[1] == 1.0 and np.isnan(ann.atypical[0])
    assert ann.uid[:2].tolist() == ["a", "b"]
    np.testing.assert_allclose(ann.bbox[1], [0, 0, 4, 2])
    assert ann.meta["atypical_probability"][1] == 0.7
    # bare list of features (older QuPath) and dispatch by content from .json
    lst = tmp_path / "list.json"
    lst.write_text(json.dumps(fc["features"][:2]))
    assert len(read_annotations(lst)) == 2


def test_geojson_errors(tmp_path: Path) -> None:
    p = tmp_path / "x.geojson"
    p.write_text(json.dumps({"type": "Topology"}))
    with pytest.raises(InvalidInputError, match="not GeoJSON"):
        read_geojson(p)
    p.write_text(
        json.dumps(
            {
                "type": "FeatureCollection",
                "features": [{"type": "Feature", "geometry": {"type": "LineString"}}],
            }
        )
    )
    with pytest.raises(InvalidInputError, match="unsupported geometry"):
        read_geojson(p)
    p.write_text('{"type": "FeatureCollection", "features": [')
    with pytest.raises(InvalidInputError, match="not valid JSON"):
        read_geojson(p)


@pytest.mark.filterwarnings("error")  # no "mean of empty slice" before the error (fuzzing found it)
@pytest.mark.parametrize(
    ("geometry", "says"),
    [
        ({"type": "MultiPolygon", "coordinates": []}, "no polygon"),
        ({"type": "Polygon", "coordinates": [[]]}, "non-empty list of \\[x, y\\] vertices"),
        ({"type": "MultiPolygon", "coordinates": [[[]]]}, "non-empty list"),
        ({"type": "Polygon", "coordinates": [[1, 2, 3]]}, "non-empty list"),
    ],
)
def test_geojson_empty_shapes_are_one_line_errors(
    tmp_path: Path, geometry: dict, says: str
) -> None:
    p = tmp_path / "x.geojson"
    feature = {"type": "Feature", "geometry": geometry, "properties": {"classification": "x"}}
    p.write_text(json.dumps({"type": "FeatureCollection", "features": [feature]}))
    with pytest.raises(InvalidInputError, match=f"malformed .*{says}") as err:
        read_geojson(p)
    assert "\n" not in str(err.value)


# -- CSV points ------------------------------------------------------------------------------
def test_csv_points_variants(tmp_path: Path) -> None:
    p = tmp_path / "pts.csv"
    p.write_text("image;x;y;label;score\na.png;1;2;mitosis;0.9\nb.png;3;4;imposter;0.1\n")
    ann = read_csv_points(p)
    assert ann.image.tolist() == ["a.png", "b.png"]
    assert ann.label.tolist() == [MITOTIC, NON_MITOTIC]
    np.testing.assert_allclose(ann.score, [0.9, 0.1])
    # a mitoscope detection CSV: every row is a mitosis; extra columns kept in meta
    det = tmp_path / "case1.csv"
    det.write_text(
        "x_px,y_px,x_um,y_um,mf_probability,atypical_probability,area_um2\n"
        "10.5,20.0,2.625,5.0,0.93,,40.1\n"
    )
    d = read_csv_points(det)
    assert d.images() == ["case1"] and d.is_mitosis.all() and d.score[0] == 0.93
    assert d.meta["area_um2"][0] == 40.1 and np.isnan(d.meta["atypical_probability"][0])
    # threshold decides when there is neither label nor is_mitosis
    t = read_csv_points(det, threshold=0.95)
    assert not t.is_mitosis.any()
    # is_mitosis column overrides; x_um/y_um with mpp
    q = tmp_path / "q.csv"
    q.write_text("x_um,y_um,is_mitosis\n25,50,false\n")
    with pytest.raises(InvalidInputError, match="mpp"):
        read_csv_points(q)
    r = read_csv_points(q, mpp=0.25)
    assert (r.x_px[0], r.y_px[0], bool(r.is_mitosis[0])) == (100.0, 200.0, False)


def test_csv_points_errors(tmp_path: Path) -> None:
    p = tmp_path / "bad.csv"
    p.write_text("a,b\n1,2\n")
    with pytest.raises(InvalidInputError, match="x_px,y_px"):
        read_csv_points(p)
    p.write_text("x,y\n1,abc\n")
    with pytest.raises(InvalidInputError, match="not a number"):
        read_csv_points(p)
    p.write_text("")
    with pytest.raises(InvalidInputError, match="empty"):
        read_csv_points(p)


# -- MIDOG points ----------------------------------------------------------------------------
def test_midog_points(tmp_path: Path) -> None:
    doc = {
        "type": "Multiple points",
        "points": [
            {"point": [0.25, 0.5, 0], "probability": 0.9, "name": "mitotic figure"},
            {"point": [1.0, 2.0, 0], "probability": 0.3, "name": "non-mitotic figure"},
        ],
        "version": {"major": 1, "minor": 0},
    }
    p = tmp_path / "case7.midog.json"
    p.write_text(json.dumps(doc))
    ann = read_midog_points_json(p, mpp=0.25)
    np.testing.assert_allclose(ann.x_px, [1000, 4000])
    np.testing.assert_allclose(ann.y_px, [2000, 8000])
    assert ann.is_mitosis.tolist() == [True, False]
    assert ann.images() == ["case7"]
    with pytest.raises(InvalidInputError, match="mpp"):
        read_annotations(p)
    assert len(read_annotations(p, mpp=0.25)) == 2


def test_midog_points_rejects_pixels(tmp_path: Path) -> None:
    doc = {"type": "Multiple points", "points": [{"point": [4000, 8000, 0], "probability": 1}]}
    p = tmp_path / "px.json"
    p.write_text(json.dumps(doc))
    with pytest.raises(InvalidInputError, match="look like pixels"):
        read_midog_points_json(p, mpp=0.25)
    p.write_text(json.dumps({"type": "Multiple points", "points": [{"pt": [1, 2]}]}))
    with pytest.raises(InvalidInputError, match="point #0"):
        read_midog_points_json(p, mpp=0.25)
    p.write_text(json.dumps({"foo": 1}))
    with pytest.raises(InvalidInputError, match="not a MIDOG points"):
        read_midog_points_json(p, mpp=0.25)


# -- TUPAC / ICPR ----------------------------------------------------------------------------
def test_tupac_and_icpr(tmp_path: Path) -> None:
    d = tmp_path / "gt" / "01"
    d.mkdir(parents=True)
    (d / "01.csv").write_text("100,200\n300,400\n")  # row, column
    (d / "02.csv").write_text("")  # an image without mitoses
    ann = read_icpr_tupac(tmp_path / "gt")
    assert ann.images() == ["01/01", "01/02"]
    np.testing.assert_allclose(ann.x_px, [200, 400])
    np.testing.assert_allclose(ann.y_px, [100, 300])
    assert ann.is_mitosis.all()
    icpr = tmp_path / "A00_00.csv"
    icpr.write_text("10,20,12,22,14,24\n100,5,102,7\n")
    a = read_icpr_tupac(icpr)
    np.testing.assert_allclose(a.x_px, [12, 101])
    np.testing.assert_allclose(a.y_px, [22, 6])
    assert a.meta["format"][0] == "icpr"
    np.testing.assert_allclose(a.bbox[0], [10, 20, 15, 25])
    b = read_icpr_tupac(icpr, order="yx")
    np.testing.assert_allclose(b.x_px, [22, 6])
    assert len(read_annotations(icpr)) == 2  # headerless numbers -> TUPAC/ICPR reader
    icpr.write_text("1,2,3\n1,2,3,4,5\n")
    with pytest.raises(InvalidInputError, match="even number"):
        read_icpr_tupac(icpr, fmt="icpr")


# -- dispatch and the container --------------------------------------------------------------
def test_read_annotations_dispatch(midogpp: Path, tupac_db: Path, tmp_path: Path) -> None:
    assert read_annotations(midogpp).source == "midog++"
    assert read_annotations(tupac_db).source == "sliderunner"
    amibr = shared_file("amibr-train", "labels.csv")
    assert read_annotations(amibr).source == "amibr"
    weird = tmp_path / "x.json"
    weird.write_text(json.dumps({"hello": 1}))
    with pytest.raises(InvalidInputError, match="unrecognised JSON"):
        read_annotations(weird)
    other = tmp_path / "x.xml"
    other.write_text("<a/>")
    with pytest.raises(InvalidInputError, match="unsupported annotation file type"):
        read_annotations(other)


def test_canonical_labels() -> None:
    assert canonical_label("Mitose")[:2] == (MITOTIC, True)
    assert canonical_label("Hard negative")[:2] == (NON_MITOTIC, False)
    assert canonical_label("not mitotic figure")[:2] == (NON_MITOTIC, False)
    assert canonical_label("Non-mitotic figure")[:2] == (NON_MITOTIC, False)
    assert canonical_label("Atypical mitotic figure") == (MITOTIC, True, 1.0)
    assert canonical_label("Tumor")[:2] == ("Tumor", False)


def test_container_filter_cat() -> None:
    a = PointAnnotations.from_columns(
        image=["a", "a", "b"], x_px=[1, 2, 3], y_px=[4, 5, 6], label=["MF", "imposter", "MF"],
        meta={"slide": np.array([1, 1, 2])}, images_all=["a", "b", "c"],
    )  # fmt: skip
    assert len(a) == 3 and a.images() == ["a", "b", "c"]
    from mitoscope.io import annotations as mod

    assert mod.read_midogpp_json is read_midogpp_json  # readers importable from the module too
    assert len(a.mitoses()) == 2
    assert a.for_image("c").images() == ["c"] and len(a.for_image("c")) == 0
    b = PointAnnotations.from_columns(image="d", x_px=[7], y_px=[8], bbox=np.array([[0, 0, 1, 1]]))
    c = PointAnnotations.cat([a, b])
    assert len(c) == 4 and c.images() == ["a", "b", "c", "d"]
    assert np.isnan(c.bbox[0]).all() and c.bbox[3].tolist() == [0, 0, 1, 1]
    assert c.meta["slide"][3] is None
    df = c.to_pandas()
    assert len(df) == 4 and "bbox_x0" in df.columns
    with pytest.raises(ValueError, match="length"):
        PointAnnotations.from_columns(image="a", x_px=[1, 2], y_px=[1])
