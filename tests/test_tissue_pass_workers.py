"""A single-level slide's banded tissue pass runs in the ``--workers`` processes (issue 13).

The slide is real tissue (MoNuSeg, ../shared/data/tissue) written as a flat tiled TIFF; the
band budget is made small so that a 2,000 px slide is read in many bands, as a 40,000 px one is.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np
import pytest

import mitoscope.slide.reader as reader_mod
from conftest import shared_file, write_pyramid_tiff
from mitoscope.detect import DetectConfig, detect_slide
from mitoscope.detect import parallel as parallel_mod
from mitoscope.slide import open_slide


@pytest.fixture(scope="module")
def flat_slide(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from PIL import Image

    with Image.open(shared_file("tissue", "images", "TCGA-A7-A13E-01Z-00-DX1.png")) as im:
        rgb = np.asarray(im.convert("RGB"))
    big = np.full((1600, 2200, 3), 240, np.uint8)  # glass around a block of real tissue
    big[300:1300, 400:1400] = rgb
    big[500:1100, 1500:2000] = rgb[:600, :500]
    path = tmp_path_factory.mktemp("flat") / "flat.tif"
    return write_pyramid_tiff(path, big, mpp=0.25, levels=1, compression="jpeg")


@pytest.fixture
def small_bands(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reader_mod, "THUMBNAIL_READ_BYTES", 2200 * 3 * 400)
    monkeypatch.setattr(reader_mod, "THUMBNAIL_BAND_BYTES", 2200 * 3 * 64)  # 64 rows a band


def test_banded_thumbnail_in_worker_processes_equals_serial(
    flat_slide: Path, small_bands: None
) -> None:
    calls: list[int] = []

    def counting_map(fn, items, *, workers):
        items = list(items)
        calls.append(len(items))
        return parallel_mod.band_map(fn, items, workers=workers)

    with open_slide(flat_slide) as r:
        assert r.info.levels == 1
        serial = r.get_thumbnail(512)
    with open_slide(flat_slide) as r:
        r.band_map = (partial(counting_map, workers=2), 2)
        parallel = r.get_thumbnail(512)
    assert calls and calls[0] >= 20  # one job per band of 64 rows
    assert parallel.shape == serial.shape and np.array_equal(parallel, serial)


def test_detect_runs_the_tissue_pass_in_its_workers(
    flat_slide: Path, small_bands: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    from test_pipeline import make_tiny_classifier

    used: list[int] = []
    real = parallel_mod.band_map

    def spy(fn, items, *, workers):
        used.append(workers)
        return real(fn, items, workers=workers)

    monkeypatch.setattr(parallel_mod, "band_map", spy)
    clf = make_tiny_classifier(flat_slide.parent / "tiny.pt")
    cfg = {"report": False, "cascade": False, "tile_um": 128}
    one = detect_slide(flat_slide, classifier=clf, config=DetectConfig(**cfg), progress=False)
    assert used == []  # one process: the pass runs here
    two = detect_slide(
        flat_slide, classifier=clf, config=DetectConfig(workers=2, **cfg), progress=False
    )
    assert used == [2]  # the tissue pass ran in 2 worker processes
    assert one.tissue_area_mm2 > 0.05
    assert two.tissue_area_mm2 == pytest.approx(one.tissue_area_mm2)
    assert two.stats.n_tiles == one.stats.n_tiles and len(two.detections) == len(one.detections)
