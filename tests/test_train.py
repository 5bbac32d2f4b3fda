"""Training pipeline: samples from real crops, splits, samplers, fast_dev_run, config, CLI."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import shared_file, synthetic_he
from mitoscope.errors import InvalidInputError
from mitoscope.train.data import (
    atypical_sample_weights,
    mf_sample_weights,
    slide_folds,
    slide_split,
)
from mitoscope.train.metrics import (
    balanced_accuracy_at,
    best_balanced_accuracy_threshold,
    best_f1_threshold,
    roc_auc,
)
from mitoscope.train.samples import KIND_CANDIDATE, KIND_CENTRE, SampleSet

pytest.importorskip("lightning")


def synthetic_samples(n: int = 48, size: int = 40, seed: int = 0) -> SampleSet:
    rng = np.random.default_rng(seed)
    patches = np.stack([synthetic_he(size, size, seed=i) for i in range(n)])
    is_mf = (np.arange(n) % 3 == 0).astype(np.int8)
    patches[is_mf == 1, size // 2 - 4 : size // 2 + 4, size // 2 - 4 : size // 2 + 4] = (40, 20, 90)
    atyp = np.where(is_mf == 1, rng.integers(0, 2, n), -1).astype(np.int8)
    return SampleSet(
        patches=patches,
        masks=np.zeros((n, size, size), bool),
        is_mf=is_mf,
        atypical=atyp,
        agreement=np.where(is_mf == 1, 2 / 3, 1.0).astype(np.float32),
        subtype=np.where(is_mf == 1, rng.integers(0, 3, n), -1).astype(np.int16),
        kind=np.where(is_mf == 1, KIND_CENTRE, KIND_CANDIDATE).astype(np.int8),
        crop=np.arange(n, dtype=np.int32) // 3,
        slide=np.array([f"s{i % 8}" for i in range(n)]),
        group=np.array(["a" if i % 2 else "b" for i in range(n)]),
        meta={"mpp": 0.25, "size_px": size, "subtypes": ["x", "y", "z"]},
    )


def test_slide_split_and_folds_never_share_a_slide():
    slides = np.array([f"s{i % 10}" for i in range(200)])
    tr, va = slide_split(slides, val_fraction=0.2, seed=1)
    assert not set(slides[tr]) & set(slides[va])
    assert len(set(slides[va])) == 2
    folds = slide_folds(slides, n_folds=3, seed=0)
    assert np.sum(folds, axis=0).tolist() == [1] * 200
    for a in range(3):
        for b in range(a + 1, 3):
            assert not set(slides[folds[a]]) & set(slides[folds[b]])
    with pytest.raises(InvalidInputError):
        slide_split(np.array(["one"] * 5))


def test_samplers_balance_classes_domains_and_ratio():
    s = synthetic_samples()
    w = mf_sample_weights(s, neg_ratio=3.0)
    assert w[s.is_mf == 1].sum() == pytest.approx(0.25)
    pos = s.is_mf == 1
    for g in ("a", "b"):
        assert w[pos & (s.group == g)].sum() == pytest.approx(0.125)
    wa = atypical_sample_weights(s)
    assert wa[s.atypical == 1].sum() == pytest.approx(0.5)
    assert wa[s.atypical < 0].sum() == 0


def test_metrics_on_known_values():
    y = np.array([0, 0, 1, 1])
    assert roc_auc(y, np.array([0.1, 0.4, 0.35, 0.8])) == pytest.approx(0.75)
    assert balanced_accuracy_at(y, np.array([0.1, 0.4, 0.35, 0.8]), 0.3) == pytest.approx(0.75)
    t, f = best_f1_threshold(y, np.array([0.1, 0.2, 0.7, 0.8]))
    assert f == pytest.approx(1.0) and 0.2 < t <= 0.7
    t, b = best_balanced_accuracy_threshold(y, np.array([0.1, 0.2, 0.7, 0.8]))
    assert b == pytest.approx(1.0)


def test_fast_dev_run_training_writes_a_loadable_checkpoint(tmp_path):
    from mitoscope.classify import load_classifier
    from mitoscope.train.train import TrainConfig, train

    cfg = TrainConfig(
        arch="tiny_cnn",
        fast_dev_run=True,
        batch_size=8,
        seeds=(0, 1),
        subtype_head=True,
        out=str(tmp_path / "m.pt"),
        progress=False,
        data_dir=str(tmp_path),
        val_fraction=0.25,
        atypical_tta=2,
    )
    res = train(cfg, samples=synthetic_samples())
    assert res.path is not None and res.path.is_file()
    for key in ("mf_roc_auc", "mf_f1", "atypical_balanced_accuracy", "threshold"):
        assert key in res.metrics
    clf = load_classifier(res.path, device="cpu")
    assert len(clf.models) == 2 and clf.models[0].subtype_head is not None
    assert clf.atypical_views == 2  # its atypical threshold was chosen with 2 views
    assert clf.card["split"]["by"] == "slide"
    val = set(clf.card["split"]["val_slides"])
    assert val and len(val) == 2
    mf, at = clf.predict_patches(synthetic_samples(4).patches)
    assert mf.shape == (4,) and np.isfinite(at).all()


def test_real_amibr_samples_positives_and_far_negatives():
    from mitoscope.train.samples import build_amibr_samples

    root = shared_file("amibr-train")
    s = build_amibr_samples(root, limit=6, size_px=64, cache_dir="none", progress=False)
    assert (s.kind == KIND_CENTRE).sum() == 6
    assert s.is_mf[s.kind == KIND_CENTRE].all()
    assert (s.atypical[s.kind == KIND_CENTRE] >= 0).all()
    neg = s.kind == KIND_CANDIDATE
    assert neg.sum() > 0 and not s.is_mf[neg].any()
    assert s.patches.shape[1:] == (64, 64, 3) and s.masks[neg].any(axis=(1, 2)).all()
    assert len(np.unique(s.slide)) >= 1 and s.meta["n_crops"] == 6


def test_config_file_and_cli_fast_dev_run(tmp_path):
    from mitoscope.cli import main
    from mitoscope.train.train import load_config

    root = shared_file("amibr-train")
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        f'[train]\narch = "tiny_cnn"\ndata_dir = "{root}"\nlimit_crops = 12\n'
        f'cache_dir = "none"\nbatch_size = 4\nprogress = false\nval_fraction = 0.3\n'
    )
    assert load_config(cfg)["limit_crops"] == 12
    out = tmp_path / "cli.pt"
    rc = main(["train", "--config", str(cfg), "--fast-dev-run", "--out", str(out), "--seeds", "3"])
    assert rc == 0 and out.is_file()
    bad = tmp_path / "bad.toml"
    bad.write_text("[train]\nnot_a_key = 1\n")
    assert main(["train", "--config", str(bad)]) == 2
    assert main(["train", "--arch", "no_such_net", "--fast-dev-run"]) == 2


def test_shift_um_default_converts_and_bad_values_are_one_line(tmp_path, capsys):
    from mitoscope.cli import main
    from mitoscope.train.data import PatchDataset
    from mitoscope.train.train import TrainConfig, check_shift, shift_px

    # default (None): 1 um at 0.25 um/px = the former hard-coded 4 px, limited to the room
    assert TrainConfig().shift_um is None
    assert check_shift(None, input_mpp=0.25, patch_px=64, stored_px=100) == 4
    assert check_shift(None, input_mpp=0.25, patch_px=96, stored_px=100) == 2  # room (100-96)//2
    assert check_shift(1.0, input_mpp=0.25, patch_px=64, stored_px=100) == 4
    # at 0.5 um/px the same micrometres are half the pixels
    assert shift_px(1.0, 0.5) == 2 and shift_px(2.0, 0.5) == 4 and shift_px(0.0, 0.5) == 0
    assert check_shift(1.5, input_mpp=0.5, patch_px=64, stored_px=100) == 3
    assert shift_px(0.3, 0.1) == 3  # rounded, not truncated (0.3 / 0.1 = 2.999...)
    # the dataset draws the same shifts from the same seed as with the former shift_px=4
    s = synthetic_samples(4)
    old = PatchDataset(s, size_px=32, seed=5)
    new = PatchDataset(
        s, size_px=32, seed=5, shift_px=check_shift(None, input_mpp=0.25, patch_px=32, stored_px=40)
    )
    for i in range(4):
        assert np.array_equal(old[i]["image"].numpy(), new[i]["image"].numpy())
    # bad values: one line, before any training
    for bad, words in ((-0.5, "0 or more"), (float("nan"), "finite"), (3.0, "12 px at 0.25 um/px")):
        with pytest.raises(InvalidInputError, match=words) as err:
            TrainConfig(arch="effnet_lite0_96", shift_um=bad).validate()
        assert "\n" not in str(err.value)
    with pytest.raises(InvalidInputError, match="at most 0.5 um"):
        TrainConfig(arch="effnet_lite0_96", shift_um=1.0).validate()
    TrainConfig(arch="effnet_lite0_96", shift_um=0.5).validate()
    with pytest.raises(InvalidInputError, match="shift_um must be a number"):
        TrainConfig(shift_um="1").validate()
    for text in ("shift_um = nan", "shift_um = 5.0", "shift_um = -1"):
        cfg = tmp_path / "c.toml"
        cfg.write_text(f'[train]\narch = "effnet_lite0"\nprogress = false\n{text}\n')
        capsys.readouterr()
        assert main(["train", "--config", str(cfg), "--fast-dev-run"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "shift_um" in err[0], err


def test_shift_um_is_checked_against_the_samples_and_written_to_the_card(tmp_path):
    from mitoscope.train.train import TrainConfig, train

    base = dict(
        arch="tiny_cnn",
        fast_dev_run=True,
        batch_size=8,
        progress=False,
        data_dir=str(tmp_path),
        val_fraction=0.25,
        out=str(tmp_path / "m.pt"),
    )
    with pytest.raises(InvalidInputError, match="inside the 40 px stored patches"):
        train(TrainConfig(**base, shift_um=1.5), samples=synthetic_samples(), save=False)
    res = train(TrainConfig(**base, shift_um=0.5), samples=synthetic_samples(), save=False)
    card = res.classifier.card
    assert card["shift_px"] == 2 and card["config"]["shift_um"] == 0.5
    from mitoscope.train.card import render_model_card

    text = render_model_card(card, threshold=0.5, atypical_threshold=0.5)
    assert "shifted by up to 2 px (0.5 um)" in text and "`shift_um` = 0.5" in text
