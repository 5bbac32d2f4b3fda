"""The annotation-format registry: one lookup by name, sniffing by suffix and content."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mitoscope.errors import InvalidInputError
from mitoscope.io import read_annotations
from mitoscope.io import registry as reg


def test_every_format_is_registered_with_its_functions() -> None:
    from mitoscope.io import (
        read_amibr_labels,
        read_csv_points,
        read_geojson,
        read_icpr_tupac,
        read_midog_points_json,
        read_midogpp_json,
        read_sliderunner,
        write_detections_csv,
        write_midog_json,
        write_qupath_geojson,
    )

    got = {f.name: (f.reader, f.writer) for f in reg.formats()}
    assert got == {
        "amibr": (read_amibr_labels, None),
        "csv": (read_csv_points, write_detections_csv),
        "geojson": (read_geojson, write_qupath_geojson),
        "midog": (read_midog_points_json, write_midog_json),
        "midogpp": (read_midogpp_json, None),
        "sliderunner": (read_sliderunner, None),
        "tupac": (read_icpr_tupac, None),
    }
    assert reg.get_format(" GeoJSON ").writer is write_qupath_geojson
    with pytest.raises(InvalidInputError, match="unknown annotation format 'qp'.*geojson"):
        reg.get_format("qp")


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_sniffing_picks_the_reader_by_suffix_and_content(tmp_path: Path) -> None:
    midogpp = {"images": [], "annotations": [], "categories": []}
    points = {"type": "Multiple points", "points": []}
    fc = {"type": "FeatureCollection", "features": []}
    cases = {
        "a.json": (json.dumps(midogpp), "midogpp"),
        "b.json": (json.dumps(points), "midog"),
        "c.json": (json.dumps(fc), "geojson"),
        "d.geojson": (json.dumps(fc), "geojson"),
        "e.csv": ("file,label,dataset,expert1_atypical\n", "amibr"),
        "f.csv": ("10,20\n30,40\n", "tupac"),
        "g.csv": ("x,y\n10,20\n", "csv"),
        "h.txt": ("x\ty\n1\t2\n", "csv"),
    }
    for name, (text, want) in cases.items():
        assert reg.sniff_format(_write(tmp_path / name, text)).name == want, name
    (tmp_path / "dir").mkdir()
    assert reg.sniff_format(tmp_path / "dir").name == "tupac"
    assert reg.sniff_format(_write(tmp_path / "x.sqlite", "")).name == "sliderunner"
    with pytest.raises(InvalidInputError, match="unrecognised JSON structure; expected midogpp"):
        reg.sniff_format(_write(tmp_path / "z.json", "[1, 2]"))
    with pytest.raises(InvalidInputError, match="unsupported annotation file type .xml"):
        reg.sniff_format(_write(tmp_path / "z.xml", "<a/>"))
    with pytest.raises(InvalidInputError, match="not found"):
        reg.sniff_format(tmp_path / "missing.json")


def test_format_argument_is_one_lookup(tmp_path: Path) -> None:
    fc = {
        "type": "FeatureCollection",
        "features": [
            {
                "type": "Feature",
                "geometry": {"type": "Point", "coordinates": [12.0, 34.0]},
                "properties": {"classification": {"name": "Mitotic figure"}},
            }
        ],
    }
    # a .txt file the sniffer would give to the CSV reader, read as GeoJSON by name
    p = _write(tmp_path / "export.txt", json.dumps(fc))
    ann = read_annotations(p, format="geojson")
    assert ann.x_px.tolist() == [12.0] and ann.y_px.tolist() == [34.0]
    with pytest.raises(InvalidInputError, match="MIDOG points format"):
        read_annotations(_write(tmp_path / "m.json", json.dumps({"points": []})))
    with pytest.raises(InvalidInputError, match="unknown annotation format"):
        read_annotations(p, format="nope")


def test_a_registered_format_is_sniffed(tmp_path: Path) -> None:
    def sniff(peek: reg.Peek) -> bool:
        return peek.first_line == "#mine"

    @reg.register_reader("mine", suffixes=(".csv",), sniff=sniff, priority=99, description="t")
    def read_mine(path: Path) -> Path:
        return path

    try:
        p = _write(tmp_path / "a.csv", "#mine\n")
        assert reg.sniff_format(p).name == "mine"
        assert reg.sniff_format(_write(tmp_path / "b.csv", "x,y\n1,2\n")).name == "csv"
        assert reg.get_format("mine").reader is read_mine
        assert read_annotations(p) == p
    finally:
        reg._FORMATS.pop("mine")
