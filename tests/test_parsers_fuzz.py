"""Property-based tests of the annotation parsers (issue 18): malformed and adversarial MIDOG
JSON, MIDOG++ JSON, GeoJSON, CSV points and SlideRunner databases either parse or raise the
documented one-line :class:`~mitoscope.errors.MitoscopeError`; nothing else escapes.

``MITOSCOPE_FUZZ_EXAMPLES`` sets the examples per fuzz target (default 500: 3,000 in all over
the six targets). ``TARGETS`` maps each target to its strategy and check;
``benchmarks/parser_fuzz.py`` runs them for 100,000 examples and counts crashes.
"""

from __future__ import annotations

import json
import os
import sqlite3
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mitoscope.errors import MitoscopeError

N = int(os.environ.get("MITOSCOPE_FUZZ_EXAMPLES", "500"))
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


def fuzz_midog_points_json(data) -> None:
    from mitoscope.io.midog import read_midog_points_json

    _run(read_midog_points_json, ".json", json.dumps(data).encode(), mpp=0.25)


def fuzz_midogpp_json(data) -> None:
    from mitoscope.io.midog import read_midogpp_json

    _run(read_midogpp_json, ".json", json.dumps(data).encode())


def fuzz_geojson(data) -> None:
    from mitoscope.io.geojson import read_geojson

    _run(read_geojson, ".geojson", json.dumps(data).encode())


_cell = st.text(max_size=6) | _number.map(str)
_csv = st.tuples(
    st.lists(st.sampled_from(["x_px", "y_px", "x", "y", "image", "label", "probability", "z"]))
    | st.lists(st.text(max_size=6), max_size=4),
    st.lists(st.lists(_cell, max_size=5), max_size=5),
    st.sampled_from([",", ";", "\t"]),
)


def fuzz_csv_points(data) -> None:
    from mitoscope.io.csvpoints import read_csv_points

    header, rows, sep = data
    text = sep.join(header) + "\n" + "".join(sep.join(r) + "\n" for r in rows)
    _run(read_csv_points, ".csv", text.encode("utf-8", "surrogatepass"), mpp=0.25)


def fuzz_arbitrary_bytes(data: bytes) -> None:
    from mitoscope.io.annotations import read_annotations

    for suffix in (".json", ".geojson", ".csv", ".sqlite"):
        _run(read_annotations, suffix, data)


_SLIDERUNNER_TABLES = ["Slides", "Annotations", "Annotations_coordinates", "Annotations_label",
                       "Classes", "Persons"]  # fmt: skip
_SLIDERUNNER_COLUMNS = ["uid", "slide", "coordinateX", "coordinateY", "type", "agreedClass",
                        "annoId", "class", "person", "name", "filename", "deleted", "width"]  # fmt: skip
_sliderunner = st.lists(
    st.tuples(
        st.sampled_from(_SLIDERUNNER_TABLES),
        st.lists(st.sampled_from(_SLIDERUNNER_COLUMNS), min_size=1, max_size=5, unique=True),
        st.lists(
            st.lists(
                _scalars.filter(lambda v: not isinstance(v, float) or v == v),
                min_size=5,
                max_size=5,
            ),
            max_size=3,
        ),
    ),
    max_size=6,
    unique_by=lambda t: t[0],
)


def fuzz_sliderunner_database(tables) -> None:
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


#: fuzz target name -> (strategy of one input, check that raises on anything but a parse or the
#: documented one-line MitoscopeError)
TARGETS: dict[str, tuple[st.SearchStrategy, Callable[..., None]]] = {
    "midog_points_json": (_midog_points, fuzz_midog_points_json),
    "midogpp_json": (_midogpp, fuzz_midogpp_json),
    "geojson": (_geojson, fuzz_geojson),
    "csv_points": (_csv, fuzz_csv_points),
    "arbitrary_bytes": (st.binary(max_size=300), fuzz_arbitrary_bytes),
    "sliderunner_database": (_sliderunner, fuzz_sliderunner_database),
}


@SETTINGS
@given(_midog_points)
def test_midog_points_json(data) -> None:
    fuzz_midog_points_json(data)


@SETTINGS
@given(_midogpp)
def test_midogpp_json(data) -> None:
    fuzz_midogpp_json(data)


@SETTINGS
@given(_geojson)
def test_geojson(data) -> None:
    fuzz_geojson(data)


@SETTINGS
@given(_csv)
def test_csv_points(data) -> None:
    fuzz_csv_points(data)


@SETTINGS
@given(st.binary(max_size=300))
def test_arbitrary_bytes_in_every_format(data) -> None:
    fuzz_arbitrary_bytes(data)


@SETTINGS
@given(_sliderunner)
def test_sliderunner_databases(tables) -> None:
    fuzz_sliderunner_database(tables)


@pytest.mark.parametrize("text", ["", "{", "[]", "null", '{"points": 5}', '"x"'])
def test_small_adversarial_json(text: str) -> None:
    from mitoscope.io.annotations import read_annotations

    _run(read_annotations, ".json", text.encode())


def test_error_messages_are_one_line() -> None:
    """File content quoted in a message cannot break it over lines (found by the fuzzer: a CSV
    header with a quote character runs over the next lines)."""
    from mitoscope.errors import InvalidInputError, MissingDependencyError

    assert str(InvalidInputError("found: a\nb\r\n c\u2028d")) == "found: a b c d"
    assert str(InvalidInputError("one line")) == "one line"
    assert str(MissingDependencyError("ray", "ray")).count("\n") == 0
    p = _write(".csv", b'"x\n1,2\n3,4\n')
    try:
        _check(__import__("mitoscope.io.csvpoints", fromlist=["x"]).read_csv_points, p, mpp=0.25)
    finally:
        p.unlink()


@pytest.mark.parametrize(
    "doc",
    [
        {"images": [{"id": "inf", "file_name": "a"}], "annotations": [], "categories": []},
        {
            "images": [{"id": 1, "file_name": "a"}],
            "annotations": [{"bbox": [0, 0, 50, 50], "category_id": "inf", "image_id": 1}],
            "categories": [{"id": 1, "name": "mitotic figure"}],
        },
        {
            "images": [{"id": 1, "file_name": "a"}],
            "annotations": [{"bbox": [0, 0, 50, 50], "category_id": 1, "image_id": "inf"}],
            "categories": [{"id": 1, "name": "mitotic figure"}],
        },
    ],
)
def test_midogpp_infinite_ids_are_one_line_errors(doc: dict, tmp_path) -> None:
    """Found by the 100,000-example run: an id of Infinity raised OverflowError."""
    from mitoscope.errors import InvalidInputError
    from mitoscope.io.midog import read_midogpp_json

    text = json.dumps(doc).replace('"inf"', "Infinity")  # JSON as Python's json writes inf
    p = tmp_path / "x.json"
    p.write_text(text)
    with pytest.raises(InvalidInputError):
        read_midogpp_json(p)
