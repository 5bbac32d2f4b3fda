"""``--stain-normalize``: every tile is normalised right after reading, in process and in
workers, and bad options are one-line exit-2 errors before any work."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import shared_file, synthetic_he
from mitoscope.candidates import get_proposer
from mitoscope.candidates.tiles import propose_tile
from mitoscope.detect import DetectConfig, detect_slide
from mitoscope.errors import InvalidInputError
from mitoscope.slide import ArraySlide
from mitoscope.stain.normalize import fitted_normalizer, normalize_tile
from mitoscope.types import Region, Tile
from test_pipeline import make_tiny_classifier


def _target(tmp_path: Path) -> Path:
    p = tmp_path / "target.png"
    img = synthetic_he(256, 256, seed=5)
    img = np.clip(img.astype(np.int16) + np.array([-30, 10, -40]), 0, 255).astype(np.uint8)
    Image.fromarray(img).save(p)
    return p


def test_propose_tile_sees_the_normalised_tile(tmp_path: Path) -> None:
    img = synthetic_he(300, 300, seed=1)
    reader = ArraySlide(img, mpp=0.25)
    tile = Tile(index=0, x=0, y=0, width=300, height=300, core=Region(0, 0, 300, 300))
    norm = fitted_normalizer("macenko", _target(tmp_path))
    raw, *_ = propose_tile(reader, tile, proposer=get_proposer("classical"), work_mpp=0.25)
    got, *_ = propose_tile(
        reader, tile, proposer=get_proposer("classical"), work_mpp=0.25, stain=norm
    )
    np.testing.assert_array_equal(got, norm.transform(raw))
    assert not np.array_equal(got, raw)
    glass = np.full((64, 64, 3), 245, np.uint8)  # nothing to fit: left as it is
    assert normalize_tile(norm, glass) is glass


def test_detection_with_normalisation_in_process_equals_workers(tmp_path: Path) -> None:
    path = shared_file("slides", "tiatoolbox_target_image.png")
    clf = make_tiny_classifier(tmp_path / "tiny.pt")
    cfg = dict(stain_normalize="reinhard", stain_target=str(_target(tmp_path)), report=False)
    from mitoscope.slide import open_slide

    runs = []
    for workers in (1, 2):
        with open_slide(path, mpp=0.25) as rd:
            runs.append(
                detect_slide(
                    rd,
                    classifier=clf,
                    config=DetectConfig(workers=workers, **cfg),
                    progress=False,
                )  # fmt: skip
            )
    a, b = runs
    np.testing.assert_array_equal(a.detections.x_px, b.detections.x_px)
    np.testing.assert_array_equal(a.detections.mf_probability, b.detections.mf_probability)
    assert any("stain-normalised (reinhard)" in n for n in a.stats.notes)
    with open_slide(path, mpp=0.25) as rd:
        plain = detect_slide(rd, classifier=clf, config=DetectConfig(report=False), progress=False)
    assert not np.array_equal(plain.detections.mf_probability, a.detections.mf_probability)


def test_bad_options(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="go together"):
        DetectConfig(stain_normalize="macenko")
    with pytest.raises(InvalidInputError, match="must be one of reinhard, macenko"):
        DetectConfig(stain_normalize="learned", stain_target="t.png")
    with pytest.raises(InvalidInputError, match="not found"):
        fitted_normalizer("macenko", tmp_path / "missing.png")
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    with pytest.raises(InvalidInputError, match="cannot read stain target"):
        fitted_normalizer("reinhard", bad)


def test_cli_refuses_a_missing_target_before_any_work(tmp_path: Path, capsys) -> None:
    from mitoscope.cli import main

    img = tmp_path / "crop.png"
    Image.fromarray(synthetic_he(128, 128)).save(img)
    out = tmp_path / "out"
    rc = main(
        ["detect", str(img), "--mpp", "0.25", "--out", str(out), "-q",
         "--stain-normalize", "macenko", "--stain-target", str(tmp_path / "nope.png")]
    )  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "stain target image not found" in err[0]
    assert not out.exists() or not any(out.iterdir())
