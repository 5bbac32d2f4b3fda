"""Cascade: the screening model, proposing at a coarser pixel size, and detection with both."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mitoscope.classify.screen import Screen, build_screen_net, load_screen, recall_threshold
from mitoscope.detect import DetectConfig, detect_slide, process_tile
from mitoscope.errors import InvalidInputError, ModelLoadError
from mitoscope.slide import ArraySlide
from mitoscope.types import Region, Tile
from test_pipeline import FixedClassifier, _nuclei_image


def _screen(threshold: float, seed: int = 0) -> Screen:
    import torch

    torch.manual_seed(seed)
    net = build_screen_net(4).eval()
    with torch.no_grad():  # random weights; spread the scores over (0, 1)
        net[-1].weight.mul_(30.0)
        net[-1].bias.zero_()
    return Screen(
        net=net,
        input_mpp=0.5,
        patch_size_px=32,
        threshold=threshold,
        width=4,
    )


def test_recall_threshold_keeps_the_target_share() -> None:
    s = np.linspace(0.0, 1.0, 1000)
    thr = recall_threshold(s, 0.99)
    assert np.mean(s >= thr) >= 0.99
    assert np.mean(s >= np.nextafter(thr, 2)) < 0.99  # the largest such threshold
    with pytest.raises(InvalidInputError):
        recall_threshold(np.array([]), 0.99)


def test_screen_checkpoint_round_trip(tmp_path: Path) -> None:
    sc = _screen(0.3)
    rng = np.random.default_rng(0)
    p = rng.integers(0, 255, (5, 40, 40, 3), dtype=np.uint8)
    m = rng.random((5, 40, 40)) > 0.5
    path = sc.save(tmp_path / "s.pt")
    back = load_screen(path)
    np.testing.assert_allclose(back.scores(p, m), sc.scores(p, m), rtol=1e-6)
    assert back.threshold == 0.3 and back.input_mpp == 0.5 and back.patch_size_px == 32
    assert (back.keep(p, m) == (back.scores(p, m) >= 0.3)).all()


def test_bad_screen_files(tmp_path: Path) -> None:
    import torch

    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ModelLoadError, match="corrupt"):
        load_screen(bad)
    other = tmp_path / "other.pt"
    torch.save({"format": "something-else"}, other)
    with pytest.raises(ModelLoadError, match="not a mitoscope screening model"):
        load_screen(other)
    with pytest.raises(ModelLoadError, match="not found"):
        load_screen(tmp_path / "missing.pt")
    wrong = tmp_path / "wrong.pt"
    blob = torch.load(_screen(0.5).save(tmp_path / "ok.pt"), weights_only=True)
    blob["width"] = 16  # weights of width 4 do not fit a width-16 network
    torch.save(blob, wrong)
    with pytest.raises(ModelLoadError, match="do not fit"):
        load_screen(wrong)


def test_bundled_screen_loads_and_states_its_validation() -> None:
    sc = load_screen()
    assert sc.input_mpp == 0.5 and sc.patch_size_px == 32
    m = sc.card["metrics"]
    assert m["val_recall"] >= m["target_recall"] - 1e-9
    assert 0.0 < m["val_discarded"] < 1.0


def test_train_screen_learns_dark_blobs() -> None:
    """A few hundred steps separate dark round 'figures' from pale ones; recall target kept."""
    from mitoscope.train.samples import SampleSet
    from mitoscope.train.screen_train import train_screen

    rng = np.random.default_rng(0)
    n = 240
    patches = np.full((n, 40, 40, 3), 225, np.uint8)
    masks = np.zeros((n, 40, 40), bool)
    yy, xx = np.mgrid[0:40, 0:40]
    disc = (yy - 20) ** 2 + (xx - 20) ** 2 <= 36
    is_mf = (np.arange(n) % 2).astype(np.int8)
    for i in range(n):
        colour = (40, 20, 80) if is_mf[i] else (150, 110, 170)
        patches[i][disc] = colour
        patches[i] = np.clip(patches[i] + rng.integers(-10, 10, (40, 40, 3)), 0, 255)
        masks[i] = disc
    slides = np.array([f"s{i % 6}" for i in range(n)])

    def subset(idx):
        return SampleSet(
            patches=patches[idx], masks=masks[idx], is_mf=is_mf[idx],
            atypical=np.full(len(idx), -1, np.int8), agreement=np.ones(len(idx), np.float32),
            subtype=np.full(len(idx), -1, np.int16), kind=np.where(is_mf[idx] == 1, 0, 3).astype(np.int8),
            crop=np.arange(len(idx), dtype=np.int32), slide=slides[idx], group=slides[idx],
            meta={"mpp": 0.5},
        )  # fmt: skip

    tr = np.flatnonzero(np.isin(slides, ["s0", "s1", "s2", "s3"]))
    va = np.flatnonzero(np.isin(slides, ["s4", "s5"]))
    sc, metrics = train_screen(
        subset(tr), subset(va), steps=120, batch_size=32, width=4, target_recall=0.99
    )
    assert metrics["val_recall"] >= 0.99
    assert metrics["val_discarded"] > 0.9  # the pale ones are easy
    assert sc.input_mpp == 0.5


def test_proposing_at_half_resolution_maps_back_to_work_pixels() -> None:
    centres = [(100, 100), (300, 220), (420, 80), (250, 400)]
    img = _nuclei_image(512, 512, centres, r=12)
    reader = ArraySlide(img, mpp=0.25, path="r.png")
    tile = Tile(index=0, x=0, y=0, width=512, height=512, core=Region(0, 0, 512, 512))
    from mitoscope.candidates import get_proposer

    prop = get_proposer("classical")
    full = process_tile(reader, tile, proposer=prop, work_mpp=0.25)
    half = process_tile(reader, tile, proposer=prop, work_mpp=0.25, propose_mpp=0.5)
    assert len(full.candidates) == len(half.candidates) == len(centres)
    for c in (full.candidates, half.candidates):
        pts = np.column_stack([c.x_px, c.y_px])
        for cx, cy in centres:
            assert np.min(np.hypot(*(pts - (cx, cy)).T)) < 1.0
    # masks stay at the proposal's pixel size (mask_downsample 2) and, resized to their work-px
    # boxes as patches do, cover the same nucleus
    from mitoscope.classify.patches import mask_at_bbox

    h = half.candidates
    assert h.mask_downsample == 2.0
    for k in range(len(h)):
        x0, y0, x1, y1 = h.bbox[k]
        assert h.masks[k].shape == ((y1 - y0) // 2, (x1 - x0) // 2)
        m = mask_at_bbox(h.masks[k], h.bbox[k])
        assert m.shape == (y1 - y0, x1 - x0)
        assert abs(m.sum() - np.pi * 12.5**2) < 0.2 * np.pi * 12.5**2
    assert half.image.shape == img.shape  # the classifier still gets full resolution


def test_screen_threshold_controls_what_reaches_the_classifier() -> None:
    centres = [(x, y) for x in range(40, 500, 80) for y in range(40, 380, 80)]
    reader = ArraySlide(_nuclei_image(400, 512, centres), mpp=0.25, path="c.png")
    cfg = DetectConfig(floor=0.0, report=False, cascade=True)
    keep_all = detect_slide(
        reader, classifier=FixedClassifier(), config=cfg, screen=_screen(0.0), progress=False
    )
    assert keep_all.stats.cascade and keep_all.stats.propose_mpp == 0.5
    assert keep_all.stats.n_screened_out == 0
    assert len(keep_all.detections) == len(centres)
    drop_all = detect_slide(
        reader, classifier=FixedClassifier(), config=cfg, screen=_screen(1.01), progress=False
    )
    assert drop_all.stats.n_screened_out == drop_all.stats.n_proposed == len(centres)
    assert len(drop_all.detections) == 0
    off = detect_slide(
        reader,
        classifier=FixedClassifier(),
        config=DetectConfig(floor=0.0, report=False),
        progress=False,
    )
    assert not off.stats.cascade and off.stats.propose_mpp == 0.25


def test_cascade_with_workers_matches_in_process(tmp_path: Path) -> None:
    from conftest import synthetic_he, write_pyramid_tiff

    path = write_pyramid_tiff(tmp_path / "syn.tif", synthetic_he(700, 900, seed=5))
    sc = _screen(0.5, seed=1)
    kw = dict(tile_um=128, overlap_um=16, report=False, floor=0.0, cascade=True)
    r1 = detect_slide(
        path, classifier=FixedClassifier(), config=DetectConfig(**kw), screen=sc, progress=False
    )
    r2 = detect_slide(
        path,
        classifier=FixedClassifier(),
        config=DetectConfig(workers=2, **kw),
        screen=sc,
        progress=False,
    )
    assert r1.stats.n_screened_out == r2.stats.n_screened_out > 0
    assert len(r1.detections) == len(r2.detections) > 0
    np.testing.assert_allclose(np.sort(r1.detections.x_px), np.sort(r2.detections.x_px))


def test_propose_mpp_must_match_the_screen() -> None:
    reader = ArraySlide(_nuclei_image(128, 128, [(64, 64)]), mpp=0.25, path="m.png")
    cfg = DetectConfig(report=False, cascade=True, propose_mpp=1.0)
    with pytest.raises(InvalidInputError, match="--no-cascade"):
        detect_slide(
            reader, classifier=FixedClassifier(), config=cfg, screen=_screen(0.5), progress=False
        )
    with pytest.raises(InvalidInputError, match="propose-mpp"):
        DetectConfig(propose_mpp=0.0)


def test_model_card_renders_limits_and_the_screen() -> None:
    from mitoscope.classify import load_classifier
    from mitoscope.train.card import render_model_card

    clf = load_classifier(backend="torch", device="cpu")
    md = render_model_card(
        clf.card,
        threshold=clf.threshold,
        atypical_threshold=clf.atypical_threshold,
        screen_card=load_screen().card,
    )
    assert "## Intended use and known limits" in md
    assert "## Detection cascade" in md and "out-of-sample estimate" in md


def test_classifying_in_worker_processes_equals_in_process(tmp_path: Path) -> None:
    from conftest import synthetic_he, write_pyramid_tiff
    from test_pipeline import make_tiny_classifier

    clf = make_tiny_classifier(tmp_path / "tiny.pt")
    assert clf.backend == "onnx"
    path = write_pyramid_tiff(tmp_path / "syn.tif", synthetic_he(700, 900, seed=5))
    kw = dict(tile_um=128, overlap_um=16, report=False, floor=0.0)
    r1 = detect_slide(path, classifier=clf, config=DetectConfig(**kw), progress=False)
    r2 = detect_slide(path, classifier=clf, config=DetectConfig(workers=2, **kw), progress=False)
    assert not r1.stats.classified_in_workers and r2.stats.classified_in_workers
    assert len(r1.detections) == len(r2.detections) > 0
    i1 = np.lexsort((r1.detections.y_px, r1.detections.x_px))
    i2 = np.lexsort((r2.detections.y_px, r2.detections.x_px))
    np.testing.assert_allclose(r1.detections.x_px[i1], r2.detections.x_px[i2])
    np.testing.assert_allclose(
        r1.detections.mf_probability[i1], r2.detections.mf_probability[i2], atol=1e-6
    )
    # the workers also trace the contours (the main process only collects detections)
    c1 = [r1.detections.contours[i] for i in i1]
    c2 = [r2.detections.contours[i] for i in i2]
    assert sum(c is not None for c in c1) > 0
    for a, b in zip(c1, c2, strict=True):
        assert (a is None) == (b is None)
        if a is not None:
            np.testing.assert_allclose(a, b)


def test_worker_copies_do_not_need_torch(tmp_path: Path) -> None:
    """What --workers processes receive unpickles and predicts without importing torch."""
    import pickle
    import subprocess
    import sys

    from mitoscope.classify import load_classifier

    clf = load_classifier(device="cpu")
    sc = load_screen()
    blob = tmp_path / "w.pkl"
    blob.write_bytes(pickle.dumps((clf.for_workers(), sc.for_workers())))
    rng = np.random.default_rng(0)
    n = int(clf.patch_size_px)  # the classifier's field; the screen sees its centre 40 px
    o = (n - 40) // 2
    p = rng.integers(0, 255, (3, n, n, 3), dtype=np.uint8)
    m = rng.random((3, n, n)) > 0.6
    np.save(tmp_path / "p.npy", p)
    np.save(tmp_path / "m.npy", m)
    code = (
        "import pickle, sys, numpy as np\n"
        f"c, s = pickle.loads(open({str(blob)!r}, 'rb').read())\n"
        f"p = np.load({str(tmp_path / 'p.npy')!r}); m = np.load({str(tmp_path / 'm.npy')!r})\n"
        "mf, at = c.predict_patches(p, m)\n"
        f"sc = s.scores(p[:, {o}:{o + 40}, {o}:{o + 40}], m[:, {o}:{o + 40}, {o}:{o + 40}])\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
        "print(' '.join(f'{v:.8f}' for v in [*mf, *at, *sc]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    got = np.array(out.stdout.split(), dtype=float)
    mf, at = clf.predict_patches(p, m)
    want = np.concatenate(
        [mf, at, sc.scores(p[:, o : o + 40, o : o + 40], m[:, o : o + 40, o : o + 40])]
    )
    np.testing.assert_allclose(got, want, atol=1e-6)


def test_cli_bad_screen_model_and_propose_mpp_exit_2(tmp_path: Path, capsys) -> None:
    from mitoscope.cli import main

    bad = tmp_path / "bad.pt"
    bad.write_text("junk")
    out = tmp_path / "out"
    assert main(["detect", "--sample", "--out", str(out), "--screen-model", str(bad), "-q"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "screening model" in err[0]
    assert not any(out.glob("*")) if out.exists() else True  # nothing written
    assert main(["detect", "--sample", "--out", str(out), "--propose-mpp", "0", "-q"]) == 2
    assert "--propose-mpp" in capsys.readouterr().err
