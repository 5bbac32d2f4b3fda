"""Behaviour equality: ``mitoscope detect`` gives the recorded detections, counts and outputs.

The golden file ``tests/data/detect_equivalence.json`` was recorded with
``benchmarks/detect_equivalence.py record --mosaic`` before the detection code was reorganised
(issue 17); every later change to that code must keep this test green or explain the difference.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _script():
    spec = importlib.util.spec_from_file_location(
        "detect_equivalence", ROOT / "benchmarks" / "detect_equivalence.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return mod


def _check(tmp_path: Path, *, mosaic: bool) -> None:
    eq = _script()
    if not (eq.TISSUE / "images" / eq.TISSUE_IMAGE).exists():
        pytest.skip(f"real data not available: {eq.TISSUE}")
    golden = json.loads(eq.GOLDEN.read_text())
    if golden["_models"] != eq.model_hashes():
        pytest.skip(
            "the bundled models changed since the golden file was recorded: record it again"
        )
    cases = eq.cases(mosaic=mosaic, work=tmp_path)
    for case in cases if not mosaic else cases[-1:]:
        now = eq.record_case(case, tmp_path)
        assert now["exit_code"] == 0
        assert len(now["files"]) == 5, now["files"]
        assert eq.differences(golden[case["name"]], now) == [], case["name"]


def test_detect_outputs_equal_the_recorded_ones(tmp_path: Path) -> None:
    """The bundled sample slide and one tissue image (sample: 26 tiles, ~15 s)."""
    _check(tmp_path, mosaic=False)


@pytest.mark.slow
def test_detect_outputs_equal_the_recorded_ones_on_a_mosaic(tmp_path: Path) -> None:
    _check(tmp_path, mosaic=True)


def test_differences_names_what_changed() -> None:
    eq = _script()
    a = {"summary": {"n_mitoses": 3, "floor": 0.05}, "mitoses": [[1.0, 2.0, 0.9, None]]}
    b = {"summary": {"n_mitoses": 4, "floor": 0.05}, "mitoses": [[1.0, 2.0, 0.9 + 1e-9, None]]}
    assert eq.differences(a, a) == []
    assert eq.differences(a, b) == ["summary.n_mitoses: 3 -> 4"]
