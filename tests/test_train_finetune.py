"""Fine-tuning with ordinary-tissue negatives: frozen batch-norm statistics, hard-negative
mining, the tissue split and the sampling weights (tiny model, real tissue images)."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import shared_file


def _tiny_loader(n: int = 32):
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    g = torch.Generator().manual_seed(0)
    x = torch.rand(n, 3, 32, 32, generator=g)
    m = (torch.rand(n, 1, 32, 32, generator=g) > 0.5).float()
    y = (torch.rand(n, generator=g) > 0.5).float()

    def collate(items):
        xs, ms, ys = zip(*items, strict=True)
        return {
            "image": torch.stack(xs),
            "mask": torch.stack(ms),
            "is_mf": torch.stack(ys),
            "atypical": torch.full((len(ys),), -1),
            "agreement": torch.ones(len(ys)),
            "subtype": torch.full((len(ys),), -1),
        }

    return DataLoader(TensorDataset(x, m, y), batch_size=8, collate_fn=collate)


@pytest.mark.parametrize("freeze", [True, False])
def test_freeze_bn_keeps_running_statistics(freeze):
    import lightning as L
    import torch

    from mitoscope.classify.registry import create_model
    from mitoscope.train.module import MitosisModule

    net = create_model("tiny_cnn", use_mask=True)
    bns = [m for m in net.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    assert bns
    before = [b.running_mean.clone() for b in bns]
    module = MitosisModule(net, epochs=1, freeze_bn=freeze)
    L.Trainer(
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
    ).fit(module, train_dataloaders=_tiny_loader())
    same = all(torch.equal(a, b.running_mean) for a, b in zip(before, bns, strict=True))
    assert same is freeze
    # the weights themselves were trained either way
    assert any(p.grad is not None for p in net.parameters())


def test_hard_negative_weights_give_the_top_negatives_their_share():
    from mitoscope.train.train import hard_negative_weights

    w = np.full(100, 0.01)
    y = np.zeros(100, dtype=np.int8)
    y[:10] = 1
    scores = np.linspace(0, 1, 100)
    w2, hard = hard_negative_weights(w, y, scores, fraction=0.1, share=0.5)
    assert sorted(hard.tolist()) == list(range(91, 100))  # the 9 top-scoring negatives
    assert np.isclose(w2.sum(), 1.0)
    assert np.isclose(w2[y == 1].sum(), 0.1)  # positives keep their mass
    assert np.isclose(w2[hard].sum(), 0.45)  # half of the negative mass


def test_tissue_images_split_by_organ_and_labelled_slides_unmoved():
    from mitoscope.train.data import slide_split
    from mitoscope.train.train import source_split

    lab = np.array([f"MIDOG21/{i:03d}.tiff" for i in range(40)])
    tis = np.array([f"tissue/{o}/{o}{k}" for o in ("lung", "kidney", "colon") for k in range(3)])
    tis = np.concatenate([tis, ["tissue/stomach/only"]])
    slides = np.concatenate([lab, tis])
    tr, va = source_split(slides, val_fraction=0.15, seed=0, tissue_val_per_organ=1)
    _, va_lab = slide_split(lab, val_fraction=0.15, seed=0)
    assert np.array_equal(va[: len(lab)], va_lab)  # labelled split unchanged by tissue
    val_tissue = slides[len(lab) :][va[len(lab) :]]
    assert sorted(s.split("/")[1] for s in val_tissue) == ["colon", "kidney", "lung"]
    assert "tissue/stomach/only" not in set(val_tissue)  # an organ's only image trains


def test_tissue_negatives_from_real_images(tmp_path):
    import shutil

    from mitoscope.train.samples import build_tissue_samples

    root = shared_file("tissue")
    rows = (root / "images.csv").read_text().splitlines()
    (tmp_path / "images").mkdir()
    keep = [rows[0], *[r for r in rows[1:] if ",kidney," in r or ",colon," in r][:2]]
    for r in keep[1:]:
        shutil.copy(root / r.split(",")[0], tmp_path / r.split(",")[0])
    (tmp_path / "images.csv").write_text("\n".join(keep) + "\n")
    s = build_tissue_samples(tmp_path, cache_dir="none", progress=False)
    assert len(s) > 200  # a 1000 px TCGA image has hundreds of nuclei
    assert not s.is_mf.any()
    assert set(np.unique(s.group)) <= {"tissue_kidney", "tissue_colon"}
    assert all(x.startswith("tissue/") for x in np.unique(s.slide))
    assert s.masks.reshape(len(s), -1).any(axis=1).mean() > 0.95  # candidate masks pasted


def test_uncertain_labels_are_left_out_of_training():
    from mitoscope.io.annotations import PointAnnotations
    from mitoscope.train.sources import drop_uncertain

    ann = PointAnnotations.from_columns(
        image="a.png",
        x_px=[10, 20, 30, 40],
        y_px=[10, 20, 30, 40],
        label=["Mitotic figure", "Equivocal", "Non-mitotic figure", "ignore"],
    )
    kept = drop_uncertain(ann)
    assert len(kept) == 2
    assert kept.is_mitosis.tolist() == [True, False]
