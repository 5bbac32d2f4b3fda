"""Property-based tests of the annotation parsers (issue 18): malformed and adversarial MIDOG
JSON, MIDOG++ JSON, GeoJSON, CSV points and SlideRunner databases either parse or raise the
documented one-line :class:`~mitoscope.errors.MitoscopeError`; nothing else escapes.

``MITOSCOPE_FUZZ_EXAMPLES`` sets the examples per parser (default 150 here; a benchmark run
uses 100,000).
"""

from __future__ import annotations

import json
import os
import sqlite3
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mitoscope.errors import MitoscopeError

N = int(os.environ.get("MITOSCOPE_FUZZ_EXAMPLES", "150"))
SETTINGS = settings(
    max_examples=N, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None
)

_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(10**12), 10**12)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12)
)
_json = st.recursive(
    _scalars,
    lambda kids: (
        st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids, max_size=4)
    ),
    max_leaves=20,
)
_number = st.integers(-(10**9), 10**9) | st.floats(allow_nan=True, allow_infinity=True)
_value = _number | st.text(max_size=6) | st.none() | st.lists(_number, max_size=4)


def _point() -> st.SearchStrategy:
    return st.fixed_dictionaries(
        {"point": _value},
        optional={"probability": _value, "name": _value | st.just("mitotic figure")},
    )


_midog_points = st.one_of(
    _json,
    st.fixed_dictionaries(
        {"type": st.sampled_from(["Multiple points", "Point", "x"]), "points": st.lists(_point())}
    ),
)
_geojson = st.one_of(
    _json,
    st.fixed_dictionaries(
        {
            "type": st.sampled_from(["FeatureCollection", "Feature", "x"]),
            "features": st.lists(
                st.fixed_dictionaries(
                    {
                        "type": st.just("Feature"),
                        "geometry": st.one_of(
                            _json,
                            st.fixed_dictionaries(
                                {
                                    "type": st.sampled_from(["Point", "Polygon", "MultiPolygon"]),
                                    "coordinates": _json,
                                }
                            ),
                        ),
                    },
                    optional={"properties": _json},
                ),
                max_size=4,
            ),
        }
    ),
)
_midogpp = st.one_of(
    _json,
    st.fixed_dictionaries(
        {
            "images": st.lists(
                st.fixed_dictionaries({"id": _value, "file_name": _value}, optional={"x": _json}),
                max_size=3,
            ),
            "annotations": st.lists(
                st.fixed_dictionaries(
                    {"image_id": _value, "bbox": _value, "category_id": _value},
                    optional={"labels": _json},
                ),
                max_size=4,
            ),
            "categories": _json,
        }
    ),
)


def _check(read, path: Path, **kwargs) -> None:
    try:
        read(path, **kwargs)
    except MitoscopeError as exc:
        msg = str(exc).strip()
        assert msg and "\n" not in msg, repr(msg)


def _write(suffix: str, data: bytes) -> Path:
    fd, name = tempfile.mkstemp(suffix=suffix)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    return Path(name)


def _run(read, suffix: str, data: bytes, **kwargs) -> None:
    path = _write(suffix, data)
    try:
        _check(read, path, **kwargs)
    finally:
        path.unlink()


@SETTINGS
@given(_midog_points)
def test_midog_points_json(data) -> None:
    from mitoscope.io.midog import read_midog_points_json

    _run(read_midog_points_json, ".json", json.dumps(data).encode(), mpp=0.25)


@SETTINGS
@given(_midogpp)
def test_midogpp_json(data) -> None:
    from mitoscope.io.midog import read_midogpp_json

    _run(read_midogpp_json, ".json", json.dumps(data).encode())


@SETTINGS
@given(_geojson)
def test_geojson(data) -> None:
    from mitoscope.io.geojson import read_geojson

    _run(read_geojson, ".geojson", json.dumps(data).encode())


_cell = st.text(max_size=6) | _number.map(str)


@SETTINGS
@given(
    st.lists(st.sampled_from(["x_px", "y_px", "x", "y", "image", "label", "probability", "z"]))
    | st.lists(st.text(max_size=6), max_size=4),
    st.lists(st.lists(_cell, max_size=5), max_size=5),
    st.sampled_from([",", ";", "\t"]),
)
def test_csv_points(header, rows, sep) -> None:
    from mitoscope.io.csvpoints import read_csv_points

    text = sep.join(header) + "\n" + "".join(sep.join(r) + "\n" for r in rows)
    _run(read_csv_points, ".csv", text.encode("utf-8", "surrogatepass"), mpp=0.25)


@SETTINGS
@given(st.binary(max_size=300))
def test_arbitrary_bytes_in_every_format(data) -> None:
    from mitoscope.io.annotations import read_annotations

    for suffix in (".json", ".geojson", ".csv", ".sqlite"):
        _run(read_annotations, suffix, data)


_SLIDERUNNER_TABLES = ["Slides", "Annotations", "Annotations_coordinates", "Annotations_label",
                       "Classes", "Persons"]  # fmt: skip


@SETTINGS
@given(
    st.lists(
        st.tuples(
            st.sampled_from(_SLIDERUNNER_TABLES),
            st.lists(
                st.sampled_from(
                    [
                        "uid",
                        "slide",
                        "coordinateX",
                        "coordinateY",
                        "type",
                        "agreedClass",
                        "annoId",
                        "class",
                        "person",
                        "name",
                        "filename",
                        "deleted",
                        "width",
                    ]
                ),  # fmt: skip
                min_size=1,
                max_size=5,
                unique=True,
            ),  # fmt: skip
            st.lists(
                st.lists(
                    _scalars.filter(lambda v: not isinstance(v, float) or v == v),
                    min_size=5,
                    max_size=5,
                ),
                max_size=3,
            ),  # fmt: skip
        ),
        max_size=6,
        unique_by=lambda t: t[0],
    )
)
def test_sliderunner_databases(tables) -> None:
    from mitoscope.io.sliderunner import read_sliderunner

    fd, name = tempfile.mkstemp(suffix=".sqlite")
    os.close(fd)
    path = Path(name)
    try:
        con = sqlite3.connect(name)
        with con:
            for table, cols, rows in tables:
                con.execute(f"CREATE TABLE {table} ({', '.join(cols)})")
                for r in rows:
                    marks = ", ".join("?" * len(cols))
                    con.execute(f"INSERT INTO {table} VALUES ({marks})", r[: len(cols)])
        con.close()
        _check(read_sliderunner, path)
    finally:
        path.unlink()


@pytest.mark.parametrize("text", ["", "{", "[]", "null", '{"points": 5}', '"x"'])
def test_small_adversarial_json(text: str) -> None:
    from mitoscope.io.annotations import read_annotations

    _run(read_annotations, ".json", text.encode())
