"""Screen training on the classifier's Lightning path: the CLI on real AMi-Br crops writes a
screen the detection loader reads, and training sees the patches as detection scores them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT, shared_file
from mitoscope.errors import InvalidInputError


def _samples(n: int = 12, size: int = 40, *, is_mf: np.ndarray | None = None):
    from mitoscope.train.samples import SampleSet

    rng = np.random.default_rng(0)
    y = (np.arange(n) % 2).astype(np.int8) if is_mf is None else is_mf.astype(np.int8)
    slides = np.array([f"s{i % 3}" for i in range(n)])
    return SampleSet(
        patches=rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8),
        masks=rng.random((n, size, size)) > 0.5,
        is_mf=y, atypical=np.full(n, -1, np.int8), agreement=np.ones(n, np.float32),
        subtype=np.full(n, -1, np.int16), kind=np.where(y == 1, 0, 3).astype(np.int8),
        crop=np.arange(n, dtype=np.int32), slide=slides, group=slides, meta={"mpp": 0.5},
    )  # fmt: skip


def test_screen_train_cli_on_real_crops_writes_a_loadable_screen(
    tmp_path: Path, capsys, monkeypatch
) -> None:
    """``screen_train`` (60 real crops, 5 steps) -> a checkpoint that ``load_screen`` reads
    (ONNX and torch), with the bundled screen's card fields and a per-figure threshold that keeps
    the target recall of the validation figures; ``python -m`` still offers the same options."""
    import torch

    from mitoscope.classify.screen import default_screen_path, load_screen
    from mitoscope.train.card import render_model_card
    from mitoscope.train.screen_train import main

    data = shared_file("amibr-train")
    monkeypatch.setenv("MITOSCOPE_CACHE", str(tmp_path / "cache"))  # its ONNX graph goes here
    bundled = default_screen_path().read_bytes()
    out = tmp_path / "screen.pt"
    argv = ["--data", str(data), "--limit", "60", "--steps", "5", "--threads", "1"]
    threads = torch.get_num_threads()
    try:
        assert main([*argv, "--out", str(out)]) == 0
    finally:
        torch.set_num_threads(threads)  # main sets --threads for the whole process
    stdout = capsys.readouterr().out
    assert f"wrote {out}" in stdout
    printed = json.loads(stdout[stdout.index("{") : stdout.rindex("}") + 1])
    usage = subprocess.run(
        [sys.executable, "-m", "mitoscope.train.screen_train", "--help"],
        cwd=ROOT, env=dict(os.environ, OMP_NUM_THREADS="1"), capture_output=True, text=True,
    )  # fmt: skip
    assert usage.returncode == 0
    for opt in ("--data", "--mpp", "--size", "--steps", "--width", "--pos-um", "--target-recall",
                "--seed", "--threads", "--limit", "--out"):  # fmt: skip
        assert opt in usage.stdout

    sc = load_screen(out)
    assert sc.onnx is not None  # the detection path scores it in ONNX Runtime
    torch_sc = load_screen(out, onnx=False)
    assert sc.input_mpp == 0.5 and sc.patch_size_px == 32 and sc.width == 8
    m = sc.card["metrics"]
    assert m == printed and m["steps"] == 5
    assert sc.threshold == m["threshold"] and 0.0 <= sc.threshold <= 1.0
    assert m["val_figures_proposed"] > 0 and m["val_recall"] >= m["target_recall"] - 1e-9
    assert 0.0 <= m["val_discarded"] <= 1.0 and len(m["half_split"]) == 2
    assert sc.card["n_train"] > 0 and sc.card["n_val"] > 0
    assert sc.card["command"].startswith("python -m mitoscope.train.screen_train --data")
    # the card carries every field the bundled screen's card has (the model card reads them)
    ref = load_screen().card
    assert set(ref) <= set(sc.card) and set(ref["metrics"]) <= set(m)
    md = render_model_card(
        {"config": {}, "data": {}}, threshold=0.5, atypical_threshold=0.5, screen_card=sc.card
    )
    assert f"keep-threshold {sc.threshold:.3f}" in md

    rng = np.random.default_rng(1)
    p = rng.integers(0, 256, (6, 40, 40, 3), dtype=np.uint8)
    mk = rng.random((6, 40, 40)) > 0.5
    s_onnx, s_torch = sc.scores(p, mk), torch_sc.scores(p, mk)
    assert ((s_onnx >= 0) & (s_onnx <= 1)).all()
    np.testing.assert_allclose(s_onnx, s_torch, atol=1e-5)
    assert default_screen_path().read_bytes() == bundled  # the bundled screen is not retrained


def test_training_sees_the_patches_as_detection_scores_them() -> None:
    """The Lightning module's logits on a PatchDataset batch (no augmentation) are the logits
    of ``Screen.scores`` on the same patches: same crop, channel order (RGB, then the mask) and
    scaling at training and at detection."""
    import torch

    from mitoscope.classify.screen import Screen, build_screen_net
    from mitoscope.train.data import PatchDataset
    from mitoscope.train.module import ScreenModule

    torch.manual_seed(0)
    s = _samples()
    module = ScreenModule(build_screen_net(4), steps=10).eval()
    ds = PatchDataset(s, size_px=32, augment=False, stain_sigma=0.0)
    batch = torch.utils.data.default_collate([ds[i] for i in range(len(ds))])
    with torch.no_grad():
        logits = module(batch["image"], batch["mask"])["mf"]
        loss = module.losses(batch)["mf"]
    screen = Screen(net=module.screen, input_mpp=0.5, patch_size_px=32, threshold=0.5, width=4)
    np.testing.assert_allclose(
        torch.sigmoid(logits).numpy(), screen.scores(s.patches, s.masks), atol=1e-6
    )
    want = torch.nn.functional.binary_cross_entropy_with_logits(logits, batch["is_mf"])
    assert torch.isclose(loss, want)


def test_brightness_jitter_is_a_gain_and_shift_per_patch_and_channel() -> None:
    import torch

    from mitoscope.classify.screen import build_screen_net
    from mitoscope.train.module import ScreenModule

    module = ScreenModule(build_screen_net(4), steps=10)
    x = torch.full((64, 3, 8, 8), 0.5)
    out = module.brightness_jitter(x)
    assert float(x.max()) == 0.5  # the input is left as it was
    assert 0.0 <= float(out.min()) and float(out.max()) <= 1.0
    assert torch.allclose(out, out[:, :, :1, :1].expand_as(x))  # uniform within a patch
    per = out[:, :, 0, 0]
    assert float(per.std()) > 0.02 and float((per[:, 0] - per[:, 1]).abs().max()) > 0
    off = ScreenModule(build_screen_net(4), steps=10, gain_sigma=0.0, shift_sigma=0.0)
    assert torch.equal(off.brightness_jitter(x), x)


def test_screen_training_needs_both_classes() -> None:
    from mitoscope.train.screen_train import train_screen

    s = _samples(is_mf=np.ones(12))
    with pytest.raises(InvalidInputError, match="both mitotic figures and other objects"):
        train_screen(s, s, steps=2, batch_size=4, width=4)
