"""The dedicated atypical-vs-normal classifier: network, training, checkpoint, integration.

Tiny random models (``tiny_cnn``) stand in for trained weights; real AMi-Br crops come from
../shared/data (skipped when absent).
"""

from __future__ import annotations

import csv
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from mitoscope.classify.atypical import (
    WithAtypicalModel,
    attach_atypical_model,
    atypical_model_from_networks,
    build_network,
    load_atypical_model,
    save_atypical_model,
)
from mitoscope.classify.checkpoint import save_checkpoint
from mitoscope.classify.classifier import load_classifier
from mitoscope.classify.registry import create_model
from mitoscope.cli import main

torch.set_num_threads(1)


def _tiny_atypical(path: Path, *, size: int = 64, mpp: float = 0.25, views: int = 2) -> Path:
    torch.manual_seed(1)
    net = build_network("tiny_cnn", size_px=size)
    with torch.no_grad():  # a head that separates: the probability depends on the image
        net.atypical_head.weight.mul_(40.0)
    return save_atypical_model(
        path,
        arch="tiny_cnn",
        members=[net.state_dict()],
        input_mpp=mpp,
        patch_size_px=size,
        threshold=0.5,
        tta_views=views,
        card={"kind": "test"},
    )


def _tiny_classifier(path: Path, *, threshold: float = 0.4) -> Path:
    torch.manual_seed(0)
    net = create_model("tiny_cnn")
    return save_checkpoint(
        path,
        arch="tiny_cnn",
        members=[net.state_dict()],
        arch_kwargs={"use_mask": True},
        input_mpp=0.25,
        patch_size_px=32,
        threshold=threshold,
        atypical_threshold=0.6,
    )


def _amibr_crops(tmp_path: Path, limit: int = 60):
    from conftest import shared_file
    from mitoscope.train.atypical import load_amibr_crops

    root = shared_file("amibr-train")
    return root, load_amibr_crops(root, limit=limit, cache_dir=tmp_path, progress=False)


# ------------------------------------------------------------------------------ network
def test_tiny_model_forward_backward_and_augmentation():
    from mitoscope.train.atypical import AtypicalConfig, augment_batch

    net = build_network("tiny_cnn", size_px=64).train()
    cfg = AtypicalConfig(patch_size_px=64)
    rng = np.random.default_rng(0)
    patches = rng.integers(0, 256, (4, 64, 64, 3), dtype=np.uint8)
    x = augment_batch(patches, cfg=cfg, rng=rng)
    assert x.shape == (4, 3, 64, 64) and x.dtype == torch.float32
    assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0
    assert not torch.allclose(x, torch.from_numpy(patches).permute(0, 3, 1, 2).float() / 255)
    logit = net(x)["atypical"]
    assert logit.shape == (4,)
    loss = torch.nn.functional.binary_cross_entropy_with_logits(logit, torch.tensor([0, 1, 0, 1.0]))
    loss.backward()
    assert (
        net.atypical_head.weight.grad is not None and net.atypical_head.weight.grad.abs().sum() > 0
    )
    # EfficientNet-Lite0 with the offline ImageNet weights, at the dedicated model's field
    eff = build_network("effnet_lite0", size_px=128, pretrained=True).eval()
    with torch.no_grad():
        assert eff(torch.rand(2, 3, 128, 128))["atypical"].shape == (2,)


def test_pretrained_only_for_effnet():
    from mitoscope.errors import InvalidInputError

    with pytest.raises(InvalidInputError, match="no ImageNet weights"):
        build_network("omgnet_resnet18", size_px=64, pretrained=True)


# ------------------------------------------------------------------------------ training
def test_real_crops_resampled_by_scanner_and_fast_dev_run(tmp_path):
    from mitoscope.train.atypical import (
        AtypicalConfig,
        load_amibr_crops,
        render_atypical_card,
        train_atypical,
    )
    from mitoscope.train.samples import amibr_scanner

    root, crops = _amibr_crops(tmp_path, limit=60)
    assert crops.patches.shape == (60, 128, 128, 3) and crops.patches.dtype == np.uint8
    rows = list(csv.DictReader(open(root / "labels.csv")))[:60]
    assert crops.atypical.tolist() == [int(r["label"] == "Atypical") for r in rows]
    votes = np.array([[r[f"expert{i}_atypical"] in ("True", "1") for i in (1, 2, 3)] for r in rows])
    assert np.array_equal(crops.votes.astype(bool), votes)
    agree = (votes == crops.atypical[:, None].astype(bool)).mean(1)
    assert np.allclose(crops.agreement, agree)
    # crops at 0.23 um/px shrink to ~118 px at 0.25 um/px and are reflect-padded to 128
    n023 = sum(amibr_scanner(r["dataset"], r["slide"])[1] == 0.23 for r in rows)
    assert crops.meta["n_reflect_padded"] == n023
    again = load_amibr_crops(root, limit=60, cache_dir=tmp_path, progress=False)  # the cache
    assert np.array_equal(again.patches, crops.patches) and list(again.file) == list(crops.file)

    cfg = AtypicalConfig(
        data_dir=str(root), arch="tiny_cnn", pretrained=False, batch_size=8, tta_views=2,
        val_fraction=0.3, fast_dev_run=True, cache_dir=str(tmp_path), progress=False,
        out=str(tmp_path / "at.pt"),
    )  # fmt: skip
    res = train_atypical(cfg.validate(), crops=crops)
    assert res.path is not None and res.path.is_file()
    assert len(res.history) == 1 and res.history[0][0]["steps"] == 2
    m = res.metrics
    assert set(m["by_views"]) == {"1", "2"} and 0 <= m["threshold"] <= 1
    val_slides = set(res.model.card["split"]["val_slides"])
    train_slides = set(crops.slide) - val_slides
    assert val_slides and train_slides and not val_slides & train_slides
    assert m["n_val_crops"] == int(np.isin(crops.slide, sorted(val_slides)).sum())
    text = render_atypical_card(res.model.card, threshold=res.model.threshold)
    assert "validation slides only" in text and "tiny_cnn" in text


def test_train_atypical_cli_fast_dev_run_and_bad_config(tmp_path, capsys):
    from conftest import shared_file

    root = shared_file("amibr-train")
    cfg = tmp_path / "a.toml"
    cfg.write_text(
        f'[atypical]\ndata_dir = "{root}"\narch = "tiny_cnn"\npretrained = false\n'
        f'batch_size = 8\nval_fraction = 0.3\ntta_views = 1\ncache_dir = "{tmp_path}"\n'
    )
    out = tmp_path / "m.pt"
    card = tmp_path / "card.md"
    args = ["train-atypical", "--config", str(cfg), "--fast-dev-run", "--limit-crops", "60"]
    assert main([*args, "--out", str(out), "--card", str(card), "-q"]) == 0
    assert out.is_file() and "dedicated atypical" in card.read_text()
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["out"] == str(out)
    bad = tmp_path / "bad.toml"
    bad.write_text("[atypical]\nepochz = 3\n")
    assert main(["train-atypical", "--config", str(bad), "--out", str(tmp_path / "x.pt")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "epochz" in err[0] and not (tmp_path / "x.pt").exists()


def test_lightning_path_trains_keeps_the_best_epoch_and_writes_a_loadable_checkpoint(tmp_path):
    """Members train through AtypicalModule in make_trainer's Trainer: 2 epochs of 2 steps on
    synthetic crops; the kept epoch is the best by validation ROC AUC, the same seed gives the
    same weights, the schedule warms up then decays, and the checkpoint loads and predicts as the
    returned model."""
    from mitoscope.train.atypical import (
        AtypicalConfig,
        CropSet,
        split_crops,
        train_atypical,
        train_member,
    )
    from mitoscope.train.module import AtypicalModule

    n = 32
    rng = np.random.default_rng(0)
    lab = (np.arange(n) % 2).astype(np.int8)
    slides = np.array([f"d/s{i % 8 // 2}" for i in range(n)])  # both classes on every slide
    crops = CropSet(
        patches=rng.integers(0, 256, (n, 64, 64, 3), dtype=np.uint8), atypical=lab,
        votes=np.repeat(lab[:, None], 3, 1), agreement=np.where(lab == 1, 1.0, 2 / 3).astype(
            np.float32), slide=slides, group=np.full(n, "g"),
        file=np.array([f"c{i}.png" for i in range(n)]), meta={"source": "synthetic"},
    )  # fmt: skip
    cfg = AtypicalConfig(
        arch="tiny_cnn", pretrained=False, patch_size_px=64, epochs=2, batch_size=8,
        samples_per_epoch=16, seeds=(5,), tta_views=1, val_fraction=0.25, cache_dir="none",
        progress=False, out=str(tmp_path / "a.pt"),
    )  # fmt: skip
    res = train_atypical(cfg, crops=crops)
    (hist,) = res.history
    assert [h["epoch"] for h in hist] == [1, 2] and all(h["steps"] == 2 for h in hist)
    assert all(np.isfinite(h["train_loss"]) for h in hist)
    aucs = [-0.5 if h["val_roc_auc"] is None else h["val_roc_auc"] for h in hist]
    assert [h["selected"] for h in hist] == [i == int(np.argmax(aucs)) for i in range(2)]
    loaded = load_atypical_model(res.path, device="cpu", backend="torch")
    tr, va = split_crops(crops, cfg)
    assert np.allclose(loaded.predict_patches(va.patches), res.model.predict_patches(va.patches),
                       atol=1e-6)  # fmt: skip
    assert loaded.threshold == res.metrics["threshold"]
    # the same seed, the same member; training moved it away from its initial weights
    a, ha = train_member(cfg, tr, va, seed=5)
    b, _ = train_member(cfg, tr, va, seed=5)
    torch.manual_seed(5)
    init = build_network("tiny_cnn", size_px=64).state_dict()
    assert all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())
    assert [h["train_loss"] for h in ha] == [h["train_loss"] for h in hist]
    assert any(not torch.equal(v, init[k]) for k, v in a.state_dict().items())
    # linear warm-up over 2 steps, then a cosine over the remaining 2
    m = AtypicalModule(a, steps_per_epoch=2, epochs=2, warmup_steps=2)
    assert np.allclose([m.lr_factor(k) for k in range(4)], [1 / 3, 2 / 3, 1.0, 0.5])


# ------------------------------------------------------------------------------ checkpoint
def test_checkpoint_round_trip(tmp_path):
    path = _tiny_atypical(tmp_path / "at.pt", views=4)
    m = load_atypical_model(path, device="cpu")
    assert (m.arch, m.patch_size_px, m.input_mpp, m.tta_views) == ("tiny_cnn", 64, 0.25, 4)
    assert m.card == {"kind": "test"} and "dedicated tiny_cnn, 64 px at 0.25 um/px" in m.describe()
    blob = torch.load(path, weights_only=True)
    assert all(
        v.dtype == torch.float16 for v in blob["members"][0].values() if v.is_floating_point()
    )
    rng = np.random.default_rng(0)
    patches = rng.integers(0, 256, (5, 80, 80, 3), dtype=np.uint8)
    p = m.predict_patches(patches)
    assert p.shape == (5,) and np.all((p >= 0) & (p <= 1)) and p.std() > 1e-4
    torch_m = load_atypical_model(path, device="cpu", backend="torch")
    assert np.allclose(torch_m.predict_patches(patches), p, atol=1e-4)  # ONNX == torch
    # the 4 views: the mean over the rotations of one-view scores
    one = atypical_model_from_networks(torch_m.engine.models, arch="tiny_cnn", input_mpp=0.25,
                                       patch_size_px=64, tta_views=1)  # fmt: skip
    c = patches[:, 8:72, 8:72]
    rot = np.mean([one.predict_patches(np.rot90(c, k, axes=(1, 2)).copy()) for k in range(4)], 0)
    assert np.allclose(torch_m.predict_patches(patches), rot, atol=1e-6)
    w = m.for_workers()
    assert np.allclose(pickle.loads(pickle.dumps(w)).predict_patches(patches), p, atol=1e-6)


@pytest.mark.parametrize("kind", ["garbage", "classifier", "truncated", "missing"])
def test_corrupt_atypical_checkpoint_exit_2(tmp_path, capsys, kind):
    from PIL import Image

    from conftest import synthetic_he

    crop = tmp_path / "c.png"
    Image.fromarray(synthetic_he(64, 64, seed=0)).save(crop)
    bad = tmp_path / "bad.pt"
    if kind == "garbage":
        bad.write_bytes(b"not a checkpoint")
    elif kind == "classifier":  # a candidate classifier is not an atypical model
        _tiny_classifier(bad)
    elif kind == "truncated":
        good = _tiny_atypical(tmp_path / "good.pt")
        bad.write_bytes(good.read_bytes()[:2000])
    tiny = _tiny_classifier(tmp_path / "clf.pt")
    out = tmp_path / "o.csv"
    rc = main(["classify", str(crop), "--model", str(tiny), "--atypical-model", str(bad),
               "--out", str(out)])  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith("mitoscope: error:")
    assert ("not found" if kind == "missing" else "atypical model") in err[0]
    assert not out.exists()


# ------------------------------------------------------------------------------ integration
def test_with_atypical_model_scores_mitoses_only_at_its_own_field(tmp_path):
    from mitoscope.detect.tiles import Batcher, classify_in_workers, tta_kwargs

    base = load_classifier(_tiny_classifier(tmp_path / "c.pt"), device="cpu", backend="torch")
    at = load_atypical_model(_tiny_atypical(tmp_path / "a.pt", size=64, mpp=0.5), device="cpu")
    comp = WithAtypicalModel(base, at)
    assert comp.cut_size_px == 128  # 64 px at 0.5 um/px = 128 px at the classifier's 0.25
    assert comp.patch_size_px == 32 and comp.threshold == base.threshold
    assert comp.atypical_threshold == 0.5 and comp.has_atypical
    assert tta_kwargs(comp, 0.4) == {"atypical_min_mf": 0.4}
    assert classify_in_workers(comp, 2) and not classify_in_workers(comp, 1)
    rng = np.random.default_rng(0)
    patches = rng.integers(0, 256, (6, 128, 128, 3), dtype=np.uint8)
    masks = np.zeros((6, 128, 128), bool)
    mf, atp = comp.predict_patches(patches, masks, atypical_min_mf=float(np.median(
        base.predict_patches(patches[:, 48:80, 48:80], masks[:, 48:80, 48:80])[0])))  # fmt: skip
    mf0, _ = base.predict_patches(patches[:, 48:80, 48:80], masks[:, 48:80, 48:80])
    assert np.allclose(mf, mf0)
    called = mf >= np.median(mf0)
    assert np.isnan(atp[~called]).all() and np.isfinite(atp[called]).all()
    from mitoscope.classify.atypical import resample_patches

    want = at.predict_patches(resample_patches(patches[called], 0.5, 64))
    assert np.allclose(atp[called], want)
    # the batcher cuts the larger field; workers get a picklable copy that predicts the same
    assert Batcher(comp, batch_size=8).classifier.cut_size_px == 128
    w = pickle.loads(pickle.dumps(comp.for_workers()))
    assert np.allclose(np.nan_to_num(w.predict_patches(patches, masks)[1]),
                       np.nan_to_num(comp.predict_patches(patches, masks)[1]), atol=1e-5)  # fmt: skip
    assert attach_atypical_model(comp, "head") is base
    assert comp.fingerprint() != WithAtypicalModel(base, load_atypical_model(
        _tiny_atypical(tmp_path / "b.pt", size=64, mpp=0.25), device="cpu")).fingerprint()  # fmt: skip


def test_classify_cli_reports_the_dedicated_model(tmp_path):
    from conftest import shared_file
    from mitoscope.classify.crops import read_rgb

    root = shared_file("amibr-train")
    rows = list(csv.DictReader(open(root / "labels.csv")))[:3]
    paths = [str(root / r["file"]) for r in rows]
    clf = _tiny_classifier(tmp_path / "c.pt")
    atp = _tiny_atypical(tmp_path / "a.pt", size=128)
    out = tmp_path / "o.csv"
    assert main(["classify", *paths, "--model", str(clf), "--atypical-model", str(atp),
                 "--mpp", "0.23", "--out", str(out)]) == 0  # fmt: skip
    got = list(csv.DictReader(open(out)))
    assert len(got) == 3 and "a (dedicated tiny_cnn, 128 px" in got[0]["atypical_model"]
    m = load_atypical_model(atp)
    want = m.predict_images([read_rgb(p) for p in paths], mpp=0.23)
    assert np.allclose([float(r["atypical_probability"]) for r in got], want, atol=2e-6)
    assert [r["is_atypical"] for r in got] == [str(int(v >= 0.5)) for v in want]
    out2 = tmp_path / "head.csv"
    assert main(["classify", *paths, "--model", str(clf), "--atypical-model", "head",
                 "--out", str(out2)]) == 0  # fmt: skip
    assert out2.read_text().splitlines()[0].endswith("atypical_probability,is_atypical")


def test_detect_outputs_carry_the_dedicated_model(tmp_path, he_image):
    from mitoscope.classify.crops import read_rgb
    from mitoscope.classify.patches import extract_patches

    clf = _tiny_classifier(tmp_path / "c.pt", threshold=0.0)  # every candidate is a "mitosis"
    atp = _tiny_atypical(tmp_path / "a.pt", size=128, views=1)
    out = tmp_path / "out"
    rc = main(["detect", str(he_image), "--mpp", "0.25", "--model", str(clf),
               "--atypical-model", str(atp), "--out", str(out), "--no-report", "--workers", "1",
               "-q"])  # fmt: skip
    assert rc == 0
    stem = Path(he_image).stem
    summary = json.loads((out / f"{stem}.summary.json").read_text())
    assert summary["atypical_model"].startswith("a (dedicated tiny_cnn, 128 px at 0.25 um/px")
    assert summary["atypical_threshold"] == 0.5
    gj = json.loads((out / f"{stem}.geojson").read_text())
    assert gj["atypical_model"] == summary["atypical_model"]
    rows = list(csv.DictReader(open(out / f"{stem}.csv")))
    assert len(rows) > 10 and {r["atypical_model"] for r in rows} == {summary["atypical_model"]}
    # each mitosis' probability is the dedicated model's on a 128 px crop around it (away
    # from the image border, where tiles and the whole image pad differently)
    img = read_rgb(he_image)
    x = np.array([float(r["x_px"]) for r in rows])
    y = np.array([float(r["y_px"]) for r in rows])
    inner = (x > 70) & (y > 70) & (x < img.shape[1] - 70) & (y < img.shape[0] - 70)
    assert inner.sum() > 5
    patches, _ = extract_patches(img, x[inner], y[inner], 128)
    want = load_atypical_model(atp).predict_patches(patches)
    got = np.array([float(r["atypical_probability"]) for r in rows])[inner]
    assert np.mean(np.abs(got - want) < 1e-4) > 0.9
    # --atypical-model head: the classifier's own head, the output format as before
    out2 = tmp_path / "head"
    assert main(["detect", str(he_image), "--mpp", "0.25", "--model", str(clf),
                 "--atypical-model", "head", "--out", str(out2), "--no-report", "--workers", "1",
                 "-q"]) == 0  # fmt: skip
    assert "atypical_model" not in json.loads((out2 / f"{stem}.summary.json").read_text())
    assert "atypical_model" not in (out2 / f"{stem}.csv").read_text().splitlines()[0]
