"""Model registry, patch extraction, checkpoints and the classify CLI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from conftest import shared_file
from mitoscope.classify import (
    create_model,
    default_model_path,
    extract_patches,
    list_models,
    load_classifier,
    save_checkpoint,
)
from mitoscope.cli import main
from mitoscope.errors import ModelLoadError
from mitoscope.types import Candidates

torch = pytest.importorskip("torch")


@pytest.mark.parametrize("name", ["omgnet_resnet18", "farooq_dilated", "effnet_lite0", "tiny_cnn"])
def test_every_model_forward_backward_on_cpu(name):
    torch.manual_seed(0)
    net = create_model(name, pretrained=False, n_subtypes=3)
    x = torch.rand(2, 3, 32, 32)
    m = torch.zeros(2, 1, 32, 32)
    m[:, :, 12:20, 12:20] = 1
    out = net(x, m)
    assert out["mf"].shape == (2,) and out["atypical"].shape == (2,)
    assert out["subtype"].shape == (2, 3)
    loss = out["mf"].sum() + out["atypical"].sum() + out["subtype"].sum()
    loss.backward()
    grads = [p.grad for p in net.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert net.mask_conv.weight.grad is not None  # the mask branch is trained


def test_registry_lists_all_architectures():
    assert {"omgnet_resnet18", "farooq_dilated", "effnet_lite0", "tiny_cnn"} <= set(list_models())


def test_farooq_parameter_count_is_about_3_1_million():
    n = sum(p.numel() for p in create_model("farooq_dilated").parameters())
    assert 0.85 * 3.1e6 <= n <= 1.15 * 3.1e6


def test_mask_branch_starts_at_zero_so_rgb_weights_stay_valid():
    net = create_model("tiny_cnn").eval()
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        a = net(x, torch.ones(2, 1, 32, 32))["mf"]
        b = net(x, None)["mf"]
    assert torch.allclose(a, b)


def test_effnet_lite0_loads_imagenet_weights_from_the_wheel():
    from mitoscope.classify.networks import lite0_checkpoint_path

    state = torch.load(lite0_checkpoint_path(), map_location="cpu", weights_only=True)
    net = create_model("effnet_lite0", pretrained=True)
    assert torch.equal(net.stem.weight, state["_conv_stem.weight"])


def test_user_weights_path_for_resnet18(tmp_path):
    from torchvision.models import resnet18

    ref = resnet18(weights=None)
    torch.save(ref.state_dict(), tmp_path / "r18.pth")
    net = create_model("omgnet_resnet18", weights_path=str(tmp_path / "r18.pth"))
    assert torch.equal(net.stem.weight, ref.conv1.weight)
    torch.save({"conv1.weight": torch.zeros(3, 3, 3, 3)}, tmp_path / "bad.pth")
    with pytest.raises(ModelLoadError):
        create_model("omgnet_resnet18", weights_path=str(tmp_path / "bad.pth"))


def test_extract_patches_reflects_at_border_and_pastes_masks():
    img = np.zeros((20, 30, 3), np.uint8)
    img[:, :, 0] = np.arange(30, dtype=np.uint8)[None, :]
    cand = Candidates(
        x_px=[1.0, 15.0],
        y_px=[1.0, 10.0],
        bbox=[[0, 0, 3, 3], [13, 8, 17, 12]],
        area_um2=[1, 1],
        score=[1, 1],
        masks=[np.ones((3, 3), bool), np.ones((4, 4), bool)],
    )
    p, m = extract_patches(img, cand.x_px, cand.y_px, 8, candidates=cand)
    assert p.shape == (2, 8, 8, 3) and m.shape == (2, 8, 8)
    # patch 0 starts at x=-3: reflected columns 3,2,1 then 0,1,2,...
    assert list(p[0, 0, :5, 0]) == [3, 2, 1, 0, 1]
    assert m[0].sum() == 9 and m[1].sum() == 16
    assert m[1, 2:6, 2:6].all()


def _tiny_checkpoint(path: Path, **kw) -> Path:
    torch.manual_seed(0)
    net = create_model("tiny_cnn")
    return save_checkpoint(
        path,
        arch="tiny_cnn",
        members=[net.state_dict(), net.state_dict()],
        arch_kwargs={"use_mask": True},
        input_mpp=0.25,
        patch_size_px=32,
        threshold=0.4,
        atypical_threshold=0.6,
        **kw,
    )


def test_checkpoint_roundtrip_and_predict(tmp_path):
    path = _tiny_checkpoint(tmp_path / "tiny.pt")
    clf = load_classifier(path, device="cpu")
    assert clf.threshold == pytest.approx(0.4) and clf.atypical_threshold == pytest.approx(0.6)
    assert len(clf.models) == 2 and clf.uses_mask and clf.has_atypical
    assert clf.gradcam_layer(clf.models[0]) is clf.models[0].cam_layer
    rng = np.random.default_rng(0)
    patches = rng.integers(0, 255, (5, 40, 40, 3), dtype=np.uint8)
    masks = np.zeros((5, 40, 40), bool)
    mf, at = clf.predict_patches(patches, masks, batch_size=2)
    assert mf.shape == (5,) and at.shape == (5,)
    assert np.all((mf >= 0) & (mf <= 1)) and np.all((at >= 0) & (at <= 1))
    img = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
    cand = Candidates(
        x_px=[5.0, 40.0],
        y_px=[5.0, 30.0],
        bbox=[[3, 3, 8, 8], [38, 28, 43, 33]],
        area_um2=[1, 1],
        score=[1, 1],
        masks=[np.ones((5, 5), bool)] * 2,
    )
    mf2, at2 = clf.predict_candidates(img, cand)
    assert mf2.shape == (2,) and np.isfinite(at2).all()


def test_corrupt_checkpoint_gives_clear_error(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint at all")
    with pytest.raises(ModelLoadError, match="corrupt"):
        load_classifier(bad, device="cpu")
    with pytest.raises(ModelLoadError, match="not found"):
        load_classifier(tmp_path / "missing.pt", device="cpu")


def test_mismatched_checkpoint_gives_clear_error(tmp_path):
    net = create_model("farooq_dilated")
    path = save_checkpoint(
        tmp_path / "mismatch.pt",
        arch="tiny_cnn",
        members=[net.state_dict()],
        arch_kwargs={"use_mask": True},
        input_mpp=0.25,
        patch_size_px=32,
        threshold=0.5,
        atypical_threshold=0.5,
    )
    with pytest.raises(ModelLoadError, match="does not match"):
        load_classifier(path, device="cpu")
    torch.save({"hello": 1}, tmp_path / "other.pt")
    with pytest.raises(ModelLoadError, match="not a mitoscope classifier"):
        load_classifier(tmp_path / "other.pt", device="cpu")


def test_classify_cli_exit_2_on_corrupt_model_and_bad_image(tmp_path, capsys):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"\x00garbage")
    img = tmp_path / "crop.png"
    from PIL import Image

    Image.fromarray(np.full((64, 64, 3), 200, np.uint8)).save(img)
    rc = main(["classify", str(img), "--model", str(bad), "--out", str(tmp_path / "o.csv")])
    assert rc == 2
    assert "mitoscope: error:" in capsys.readouterr().err
    tiny = _tiny_checkpoint(tmp_path / "tiny.pt")
    notimg = tmp_path / "notimg.png"
    notimg.write_text("nope")
    rc = main(["classify", str(notimg), "--model", str(tiny), "--out", str(tmp_path / "o.csv")])
    assert rc == 2
    assert not (tmp_path / "o.csv").exists()


def test_classify_cli_with_tiny_model(tmp_path):
    from PIL import Image

    from conftest import synthetic_he

    paths = []
    for i in range(3):
        p = tmp_path / f"c{i}.png"
        Image.fromarray(synthetic_he(60, 60, seed=i)).save(p)
        paths.append(str(p))
    tiny = _tiny_checkpoint(tmp_path / "tiny.pt")
    out = tmp_path / "out.csv"
    # the tiny model's own atypical head (the bundled dedicated model: tests/test_atypical.py)
    args = ["classify", *paths, "--model", str(tiny), "--mpp", "0.23", "--out", str(out)]
    assert main([*args, "--atypical-model", "head"]) == 0
    lines = out.read_text().strip().splitlines()
    assert lines[0] == "file,mf_probability,is_mitosis,atypical_probability,is_atypical"
    assert len(lines) == 4
    row = lines[1].split(",")
    assert 0 <= float(row[1]) <= 1 and row[2] in ("0", "1") and 0 <= float(row[3]) <= 1


def test_bundled_model_classifies_real_crops(tmp_path):
    if not default_model_path().is_file():
        pytest.fail(f"bundled default model missing: {default_model_path()}")
    root = shared_file("amibr-train")
    import csv

    rows = list(csv.DictReader(open(root / "labels.csv")))[:4]
    paths = [str(root / r["file"]) for r in rows]
    out = tmp_path / "real.csv"
    assert main(["classify", *paths, "--mpp", "0.25", "--out", str(out)]) == 0
    lines = out.read_text().strip().splitlines()[1:]
    assert len(lines) == 4
    clf = load_classifier(None, device="cpu")
    assert clf.has_atypical and 0 < clf.threshold < 1
    assert clf.card.get("validation_metrics")
    for line in lines:
        cells = line.split(",")
        assert 0 <= float(cells[1]) <= 1 and 0 <= float(cells[3]) <= 1


def test_onnx_runtime_backend_matches_torch(tmp_path, monkeypatch):
    import pickle

    from mitoscope.errors import InvalidInputError

    path = _tiny_checkpoint(tmp_path / "tiny.pt")
    ort_clf = load_classifier(path, device="cpu", backend="onnx")
    torch_clf = load_classifier(path, device="cpu", backend="torch")
    assert ort_clf.backend == "onnx" and torch_clf.backend == "torch"
    rng = np.random.default_rng(1)
    patches = rng.integers(0, 255, (37, 32, 32, 3), dtype=np.uint8)
    masks = rng.random((37, 32, 32)) > 0.6
    a = ort_clf.predict_patches(patches, masks, batch_size=16)
    b = torch_clf.predict_patches(patches, masks, batch_size=16)
    np.testing.assert_allclose(a[0], b[0], atol=1e-5)
    np.testing.assert_allclose(a[1], b[1], atol=1e-5)
    # a loaded classifier pickles (worker processes, Ray): sessions are rebuilt there
    c = pickle.loads(pickle.dumps(ort_clf))
    np.testing.assert_allclose(c.predict_patches(patches, masks)[0], a[0], atol=1e-7)
    assert load_classifier(path, device="cpu").backend == "onnx"  # the CPU default
    monkeypatch.setenv("MITOSCOPE_BACKEND", "torch")
    assert load_classifier(path, device="cpu").backend == "torch"
    with pytest.raises(InvalidInputError, match="backend"):
        load_classifier(path, device="cpu", backend="tensorrt")


def test_atypical_test_time_augmentation(tmp_path):
    path = _tiny_checkpoint(tmp_path / "tta.pt", atypical_views=8)
    clf = load_classifier(path, device="cpu")
    assert clf.atypical_views == 8
    rng = np.random.default_rng(3)
    patches = rng.integers(0, 255, (6, 32, 32, 3), dtype=np.uint8)
    masks = rng.random((6, 32, 32)) > 0.5
    scored = []
    score = clf._score
    clf._score = lambda a, m, b: (scored.append(len(a)), score(a, m, b))[1]
    mf, at = clf.predict_patches(patches, masks)
    del clf._score
    assert sum(scored) == 6 * 8  # the identity view is scored once, not again for the average
    clf.atypical_views = 1
    views = []
    for k in range(4):
        for flip in (False, True):
            p, m = np.rot90(patches, k, axes=(1, 2)), np.rot90(masks, k, axes=(1, 2))
            if flip:
                p, m = p[:, :, ::-1], m[:, :, ::-1]
            views.append(clf.predict_patches(np.ascontiguousarray(p), np.ascontiguousarray(m)))
    np.testing.assert_allclose(mf, views[0][0], atol=1e-7)  # the MF probability: one view
    np.testing.assert_allclose(at, np.mean([v[1] for v in views], axis=0), atol=1e-6)
    # only patches at or above atypical_min_mf get the extra views (detection: the mitoses)
    clf.atypical_views = 8
    cut = float(np.median(mf))
    _, at2 = clf.predict_patches(patches, masks, atypical_min_mf=cut)
    hi = mf >= cut
    np.testing.assert_allclose(at2[hi], at[hi], atol=1e-7)
    np.testing.assert_allclose(at2[~hi], views[0][1][~hi], atol=1e-7)


def test_set_threshold_replaces_it_and_records_why(tmp_path):
    """The end-to-end operating point (benchmarks/cascade_recall.py --write-threshold) is
    written into the checkpoint with its rule and evidence; the training threshold is kept."""
    from mitoscope.classify.checkpoint import set_threshold
    from mitoscope.train.card import render_model_card

    path = _tiny_checkpoint(tmp_path / "tiny.pt", card={"config": {}})
    before = load_classifier(path, device="cpu")
    p0 = before.predict_patches(np.zeros((1, 32, 32, 3), np.uint8), np.zeros((1, 32, 32), bool))
    set_threshold(path, 0.123, rule="MF: recall 0.93 end to end", evidence={"target_recall": 0.93})
    clf = load_classifier(path, device="cpu")
    assert clf.threshold == pytest.approx(0.123)
    assert clf.atypical_threshold == pytest.approx(0.6)
    assert clf.card["threshold_at_training"] == pytest.approx(0.4)
    assert clf.card["threshold_choice"].startswith("MF: recall 0.93 end to end")
    p1 = clf.predict_patches(np.zeros((1, 32, 32, 3), np.uint8), np.zeros((1, 32, 32), bool))
    np.testing.assert_allclose(p0[0], p1[0])  # the weights are untouched
    text = render_model_card(clf.card, threshold=clf.threshold, atypical_threshold=0.6)
    assert "0.1230 (`mitoscope detect` finds 0.93" in text and "0.4000 at training" in text
