"""detect_slide: tiling, core ownership, level-0 conversion, merging, counts, outputs.

Stages are injected: the real classical proposer, and a tiny *random* torch classifier with the
classifier interface (``predict_candidates``, ``models``, ``gradcam_layer``, ...), so the tests
run offline on CPU in seconds.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from conftest import synthetic_he, write_pyramid_tiff
from mitoscope.candidates.merge import merge_detections
from mitoscope.detect import DetectConfig, TileWork, detect_slide, output_stem, tile_detections
from mitoscope.errors import NoTissueError, OutputError
from mitoscope.geometry import mask_contour
from mitoscope.slide import ArraySlide
from mitoscope.summary import summary_dict
from mitoscope.types import Candidates, Detections, Region, Tile

SUMMARY_KEYS = {
    "mpp",
    "tissue_area_mm2",
    "n_mitoses",
    "mitoses_per_mm2",
    "hotspot_2mm2",
    "hotspot_10hpf",
    "atypical_ratio",
    "model",
    "proposer",
    "seconds",
}


def make_tiny_classifier(
    path: Path, *, input_mpp: float = 0.25, threshold: float = 0.5, bias: float = 0.0, seed: int = 0
):
    """A tiny *random* CNN saved as a real classifier checkpoint and loaded back (CPU).

    Not a model: its weights are random (seeded); the MF head is scaled so probabilities spread
    over (0, 1), and ``bias`` shifts them (negative: fewer mitoses).
    """
    import torch

    from mitoscope.classify import create_model, load_classifier, save_checkpoint

    torch.manual_seed(seed)
    net = create_model("tiny_cnn", use_mask=True)
    with torch.no_grad():
        net.mf_head.weight.mul_(40.0)
        net.mf_head.bias.fill_(bias)
        net.mask_conv.weight.normal_(0, 0.3)
    save_checkpoint(
        path,
        arch="tiny_cnn",
        members=[net.state_dict()],
        arch_kwargs={"use_mask": True},
        input_mpp=input_mpp,
        patch_size_px=32,
        threshold=threshold,
        atypical_threshold=0.5,
        name="tiny_cnn-random",
    )
    return load_classifier(path, device="cpu")


class TinyClassifier:
    """A loaded tiny random classifier that counts its calls (delegates everything)."""

    def __init__(self, path: Path, **kwargs) -> None:
        self._c = make_tiny_classifier(path, **kwargs)
        self.calls = 0

    def __getattr__(self, name: str):
        return getattr(self._c, name)

    def predict_patches(self, patches, masks=None, *, batch_size=256):
        self.calls += 1
        return self._c.predict_patches(patches, masks, batch_size=batch_size)


class PerTileOnly:
    """The same classifier seen through ``predict_candidates`` only (no cross-tile batches)."""

    def __init__(self, clf) -> None:
        self._c = clf

    def __getattr__(self, name: str):
        if name in ("predict_patches", "patch_size_px"):
            raise AttributeError(name)
        return getattr(self._c, name)


class FixedClassifier:
    """Probability = a function of the candidate's darkness score (deterministic)."""

    input_mpp = 0.25
    threshold = 0.5
    atypical_threshold = 0.5
    has_atypical = False
    name = "fixed"
    models: list = []

    def predict_candidates(self, image, cands, batch_size=64):
        p = np.clip((cands.score.astype(np.float64) - 0.3) / 0.6, 0, 1)
        return p, np.full(len(cands), np.nan)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> TinyClassifier:
    return TinyClassifier(tmp_path_factory.mktemp("model") / "tiny.pt")


def _nuclei_image(h: int, w: int, centres: list[tuple[int, int]], r: int = 9) -> np.ndarray:
    img = synthetic_he(h, w, seed=3)
    img[:] = (232, 160, 200)
    yy, xx = np.mgrid[0:h, 0:w]
    for cx, cy in centres:
        img[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = (40, 20, 70)
    return img


def test_config_validation() -> None:
    from mitoscope.errors import InvalidInputError

    with pytest.raises(InvalidInputError):
        DetectConfig(tile_um=10, overlap_um=20)
    with pytest.raises(InvalidInputError, match="threshold"):
        DetectConfig(threshold=1.5)
    with pytest.raises(InvalidInputError, match="workers"):
        DetectConfig(workers=0)


def test_output_stem() -> None:
    assert output_stem("/a/b/slide.svs") == "slide"
    assert output_stem("x.ome.tiff") == "x"
    assert output_stem("crop.png") == "crop"


def test_mask_contour_to_level0() -> None:
    mask = np.zeros((10, 10), bool)
    mask[2:8, 3:9] = True
    ring = mask_contour(mask, np.array([100, 50, 110, 60]), scale=2.0, x0=1000, y0=0)
    # mask pixels x 103..108 (work px) -> level 0 ((x + .5) * 2 - .5) + 1000
    assert ring[:, 0].min() >= (102.5 + 0.5) * 2 - 0.5 + 1000 - 1e-6
    assert ring[:, 0].max() <= (108.5 + 0.5) * 2 - 0.5 + 1000 + 1e-6
    assert ring[:, 1].min() >= (51.5 + 0.5) * 2 - 0.5 - 1e-6
    box = mask_contour(None, np.array([0, 0, 4, 4]), scale=1.0, x0=0, y0=0)
    assert box.shape == (5, 2)


def test_tile_detections_floor_and_core_coordinates() -> None:
    tile = Tile(0, x=500, y=300, width=100, height=100, core=Region(510, 310, 80, 80))
    c = Candidates(
        x_px=[10, 20, 30],
        y_px=[10, 20, 30],
        bbox=[[8, 8, 12, 12], [18, 18, 22, 22], [28, 28, 32, 32]],
        area_um2=[5, 6, 7],
        score=[0.1, 0.2, 0.3],
        masks=[np.ones((4, 4), bool)] * 3,
    )
    work = TileWork(tile=tile, image=np.zeros((50, 50, 3), np.uint8), candidates=c)
    d = tile_detections(
        work, [0.01, 0.5, 0.9], [0.1, 0.2, 0.3], slide_mpp=0.25, work_mpp=0.5, floor=0.05
    )
    assert len(d) == 2
    np.testing.assert_allclose(d.x_px, [(20 + 0.5) * 2 - 0.5 + 500, (30 + 0.5) * 2 - 0.5 + 500])
    np.testing.assert_allclose(d.mf_probability, [0.5, 0.9])
    assert d.contours is not None and all(len(r) >= 4 for r in d.contours)


def test_merge_detections_keeps_higher_probability() -> None:
    d = Detections(
        x_px=[100, 104, 900],
        y_px=[100, 100, 100],
        mf_probability=[0.4, 0.8, 0.6],
        atypical_probability=[0.1, 0.2, 0.3],
        area_um2=[10, 10, 10],
        contours=[np.zeros((4, 2))] * 3,
    )
    m = merge_detections(d, mpp=0.25, radius_um=4.0)
    assert sorted(m.mf_probability.tolist()) == [0.6, 0.8]


def test_each_object_reported_once_across_tiles() -> None:
    # nuclei on a grid crossing many tile borders (small tiles: 64 um, overlap 16 um)
    centres = [(x, y) for x in range(40, 1000, 75) for y in range(40, 760, 75)]
    img = _nuclei_image(800, 1024, centres)
    reader = ArraySlide(img, mpp=0.25, path="grid.png")
    cfg = DetectConfig(tile_um=64, overlap_um=16, floor=0.0, report=False)
    res = detect_slide(reader, classifier=FixedClassifier(), config=cfg, progress=False)
    assert res.stats.n_tiles > 20
    pts = np.column_stack([res.detections.x_px, res.detections.y_px])
    from scipy.spatial import cKDTree

    tree = cKDTree(pts)
    d, _ = tree.query(np.array(centres, float))
    assert (d < 3).all(), "every nucleus found, at the right level-0 position"
    assert len(tree.query_pairs(8.0)) == 0, "no object reported twice"
    assert res.model == "fixed" and res.proposer == "classical"
    assert res.counts.atypical_ratio is None  # model without atypical head


def test_work_mpp_differs_from_slide_mpp() -> None:
    # slide at 0.5 um/px read at 0.25 um/px: positions come back in level-0 pixels
    centres = [(100, 100), (300, 200), (420, 80)]
    img = _nuclei_image(300, 500, centres, r=5)
    reader = ArraySlide(img, mpp=0.5, path="half.png")
    cfg = DetectConfig(floor=0.0, report=False)
    res = detect_slide(reader, classifier=FixedClassifier(), config=cfg, progress=False)
    pts = np.column_stack([res.detections.x_px, res.detections.y_px])
    for c in centres:
        assert np.min(np.hypot(*(pts - c).T)) < 1.5
    ring = res.detections.contours[0]
    assert np.ptp(ring[:, 0]) < 14  # contour in level-0 px (diameter ~10 px), not work px


def test_small_region_is_all_tissue(tiny: TinyClassifier) -> None:
    img = _nuclei_image(128, 128, [(64, 64), (20, 30)])
    res = detect_slide(
        ArraySlide(img, mpp=0.25, path="crop.png"),
        classifier=tiny,
        config=DetectConfig(report=False),
        progress=False,
    )
    assert res.tissue_area_mm2 == pytest.approx(128 * 128 * 0.25**2 / 1e6)
    assert res.stats.n_tiles == 1
    assert res.hotspot_2mm2 is not None and res.hotspot_2mm2.field_fits is False
    assert "smaller than" in res.hotspot_2mm2.note


def test_no_tissue_slide_is_empty_and_stated(tmp_path: Path, tiny: TinyClassifier) -> None:
    """No tissue: an empty result marked ``no_tissue``, and nothing written."""
    path = write_pyramid_tiff(tmp_path / "glass.tif", synthetic_he(1536, 2048, tissue=False))
    out = tmp_path / "out"
    with pytest.warns(RuntimeWarning, match="no tissue"):
        res = detect_slide(path, classifier=tiny, out_dir=out, progress=False)
    assert len(res.detections) == 0 and res.tissue_area_mm2 == 0
    assert res.stats is not None and res.stats.no_tissue
    assert NoTissueError.NOTE in res.stats.notes
    assert list(out.iterdir()) == []


def test_outputs_and_summary_on_synthetic_slide(tmp_path: Path, tiny: TinyClassifier) -> None:
    path = write_pyramid_tiff(tmp_path / "syn.tif", synthetic_he(1024, 1280, seed=2))
    out = tmp_path / "out"
    res = detect_slide(path, classifier=tiny, out_dir=out, progress=False)
    s = json.loads((out / "syn.summary.json").read_text())
    assert SUMMARY_KEYS <= set(s)
    assert s == summary_dict(res) | {"seconds": s["seconds"]}
    assert s["n_mitoses"] == len(res.mitoses)
    assert s["hotspot_10hpf"]["area_mm2"] == 2.37
    assert s["hotspot_2mm2"]["radius_um"] == pytest.approx(797.885, abs=1e-3)
    assert s["hotspot_2mm2"]["count"] <= s["n_mitoses"]
    assert res.tissue_area_mm2 > 0
    assert tiny.calls > 0
    midog = json.loads((out / "syn.midog.json").read_text())
    assert len(midog["points"]) == len(res.detections)  # every candidate above the floor


def test_unwritable_out_dir(
    tmp_path: Path, tiny: TinyClassifier, monkeypatch: pytest.MonkeyPatch
) -> None:
    img = ArraySlide(synthetic_he(64, 64), mpp=0.25)
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    with pytest.raises(OutputError, match="cannot create output directory"):
        detect_slide(img, classifier=tiny, out_dir=blocker / "sub")
    with pytest.raises(OutputError, match="is a file"):
        detect_slide(img, classifier=tiny, out_dir=blocker)
    ro = tmp_path / "ro"
    ro.mkdir()
    if os.geteuid() == 0:  # root ignores permissions: simulate a read-only directory
        real = os.access
        monkeypatch.setattr(os, "access", lambda p, m: False if Path(p) == ro else real(p, m))
    else:
        ro.chmod(0o500)
    try:
        with pytest.raises(OutputError, match="not writable"):
            detect_slide(img, classifier=tiny, out_dir=ro)
    finally:
        ro.chmod(0o700)
    assert list(ro.iterdir()) == []


def test_failure_mid_run_leaves_no_files(tmp_path: Path, tiny: TinyClassifier) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "crop.summary.json").write_text("earlier\n")
    img = _nuclei_image(128, 128, [(64, 64)])

    class Boom:
        def __getattr__(self, name: str):
            return getattr(tiny, name)

        def predict_candidates(self, *a, **k):
            raise RuntimeError("simulated crash")

        predict_patches = predict_candidates

    with pytest.raises(RuntimeError, match="simulated"):
        detect_slide(ArraySlide(img, mpp=0.25, path="crop.png"), classifier=Boom(), out_dir=out)
    assert sorted(p.name for p in out.iterdir()) == ["crop.summary.json"]
    assert (out / "crop.summary.json").read_text() == "earlier\n"


@pytest.mark.parametrize("exc", [RuntimeError("report crashed"), KeyboardInterrupt()])
def test_failure_while_writing_leaves_no_files(
    tmp_path: Path, tiny: TinyClassifier, monkeypatch: pytest.MonkeyPatch, exc: BaseException
) -> None:
    """An error or Ctrl-C while the outputs are written (the report is rendered after the
    GeoJSON, MIDOG json, CSV and summary are in their temporary files) leaves nothing new."""
    from mitoscope.io import SlideRunnerDB

    out = tmp_path / "out"
    out.mkdir()
    (out / "crop.geojson").write_text("earlier\n")
    img = _nuclei_image(128, 128, [(64, 64)])

    def boom(*a, **k):
        raise exc

    monkeypatch.setattr("mitoscope.report.render_report", boom)
    with SlideRunnerDB(out / "run.sqlite") as db, pytest.raises(type(exc)):
        detect_slide(
            ArraySlide(img, mpp=0.25, path="crop.png"), classifier=tiny, out_dir=out, db=db
        )
    assert sorted(p.name for p in out.iterdir()) == ["crop.geojson", "run.sqlite"]
    assert (out / "crop.geojson").read_text() == "earlier\n"
    with SlideRunnerDB(out / "run.sqlite") as db:
        assert db.slides() == {}  # the database transaction never happened


def test_workers_give_the_same_result(tmp_path: Path) -> None:
    path = write_pyramid_tiff(tmp_path / "syn.tif", synthetic_he(700, 900, seed=5))
    cfg1 = DetectConfig(tile_um=128, overlap_um=16, report=False, floor=0.0)
    cfg2 = DetectConfig(tile_um=128, overlap_um=16, report=False, floor=0.0, workers=2)
    r1 = detect_slide(path, classifier=FixedClassifier(), config=cfg1, progress=False)
    r2 = detect_slide(path, classifier=FixedClassifier(), config=cfg2, progress=False)
    assert len(r1.detections) == len(r2.detections) > 0
    np.testing.assert_allclose(np.sort(r1.detections.x_px), np.sort(r2.detections.x_px))


def test_cross_tile_batches_equal_per_tile_scoring(tmp_path: Path, tiny: TinyClassifier) -> None:
    centres = [(x, y) for x in range(30, 460, 50) for y in range(30, 360, 50)]
    reader = ArraySlide(_nuclei_image(380, 480, centres), mpp=0.25, path="b.png")
    cfg = DetectConfig(tile_um=64, overlap_um=16, floor=0.0, report=False, batch_size=7)
    a = detect_slide(reader, classifier=tiny, config=cfg, progress=False)
    b = detect_slide(reader, classifier=PerTileOnly(tiny._c), config=cfg, progress=False)
    assert len(a.detections) == len(b.detections) > 20
    ia = np.lexsort((a.detections.y_px, a.detections.x_px))
    ib = np.lexsort((b.detections.y_px, b.detections.x_px))
    np.testing.assert_allclose(a.detections.x_px[ia], b.detections.x_px[ib])
    np.testing.assert_allclose(
        a.detections.mf_probability[ia], b.detections.mf_probability[ib], rtol=1e-5, atol=1e-6
    )
    assert set(a.stats.timing) == {"tissue_s", "tiles_s", "count_s"}  # write_s: with outputs


def test_mask_contour_of_a_coarse_mask_traces_the_coarse_grid() -> None:
    small = np.zeros((10, 10), bool)
    small[2:8, 3:9] = True
    big = np.repeat(np.repeat(small, 2, axis=0), 2, axis=1)  # 2x upsampled, 20 x 20
    box = np.array([0, 0, 20, 20])
    fine = mask_contour(big, box, scale=1.0, x0=0, y0=0)
    coarse = mask_contour(small, box, scale=1.0, x0=0, y0=0)  # a 10 x 10 mask of a 20 px box
    for ring in (fine, coarse):  # the same rectangle x 6..17, y 4..15 to within a pixel
        assert abs(ring[:, 0].min() - 6) <= 1 and abs(ring[:, 0].max() - 17) <= 1
        assert abs(ring[:, 1].min() - 4) <= 1 and abs(ring[:, 1].max() - 15) <= 1
    assert len(coarse) <= len(fine)


def test_mask_at_bbox_is_a_nearest_neighbour_resize() -> None:
    from skimage.transform import resize

    from mitoscope.classify.patches import mask_at_bbox

    rng = np.random.default_rng(0)
    for shape, bbox in (
        ((7, 5), (10, 20, 24, 30)),
        ((6, 9), (0, 0, 13, 11)),
        ((4, 4), (2, 2, 6, 6)),
    ):
        m = rng.random(shape) > 0.5
        bh, bw = bbox[3] - bbox[1], bbox[2] - bbox[0]
        ref = resize(m, (bh, bw), order=0, anti_aliasing=False) > 0.5
        np.testing.assert_array_equal(mask_at_bbox(m, np.array(bbox)), ref)


def test_workers_from_a_script_without_main_guard_explain_themselves(tmp_path: Path) -> None:
    """forkserver workers import the calling script: without a __main__ guard they cannot
    start, and the error says what to do instead of a bare BrokenPipeError."""
    import subprocess
    import sys

    script = tmp_path / "noguard.py"
    script.write_text(
        "from mitoscope.data import sample_slide\n"
        "from mitoscope.detect import DetectConfig, detect_slide\n"
        "detect_slide(sample_slide(), config=DetectConfig(workers=2, report=False), "
        "progress=False)\n"
    )
    res = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert res.returncode != 0
    assert 'if __name__ == "__main__":' in res.stderr.strip().splitlines()[-1]
