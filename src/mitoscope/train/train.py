"""``train(cfg)``: samples -> slide-grouped split -> seeds -> heads -> thresholds -> checkpoint.

Stage 1 (PyTorch Lightning): the encoder and the MF head (plus, when ``multitask``, the
atypical head on labelled figures, agreement-weighted, and the optional subtype head) with
AdamW + cosine annealing, domain-balanced sampling and a settable negative:positive ratio.
Stage 2 (Fick et al.): the encoder is frozen; the atypical head is refitted on mitotic figures
only, with normal and atypical figures balanced, on features of ``atypical_views`` augmented
views of each training figure. Decision thresholds are chosen on the held-out validation
slides only. Several seeds form an ensemble (probabilities averaged).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InvalidInputError
from .samples import SampleSet

DATA_LICENCE = (
    "AMi-Br training split (DeepMicroscopy/AMi-Br_Benchmark), MIT licence; crops from "
    "MIDOG21 and TUPAC16 (alternative labels) human breast cancer images"
)


def _default_data_dir() -> str:
    env = os.environ.get("MITOSCOPE_SHARED_DATA")
    base = Path(env) if env else Path.cwd().parent / "shared" / "data"
    return str(base / "amibr-train")


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run (frozen; build variants with ``replace``)."""

    data: str = "amibr"
    data_dir: str = field(default_factory=_default_data_dir)
    arch: str = "effnet_lite0"
    use_mask: bool = True
    pretrained: bool | None = None
    weights_path: str | None = None
    epochs: int = 6
    samples_per_epoch: int = 4096
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-4
    seeds: tuple[int, ...] = (0,)
    neg_ratio: float = 1.0
    domain_balanced: bool = True
    stain_sigma: float = 0.14
    multitask: bool = True
    atypical_weight: float = 0.5
    subtype_head: bool = False
    atypical_views: int = 3
    atypical_tta: int = 1
    atypical_steps: int = 300
    val_fraction: float = 0.15
    split_seed: int = 0
    out: str = "mitoscope-classifier.pt"
    fast_dev_run: bool = False
    limit_crops: int | None = None
    cache_dir: str | None = None
    threads: int | None = None
    progress: bool = True

    def validate(self) -> TrainConfig:
        from ..classify.registry import get_spec

        get_spec(self.arch)
        if self.data != "amibr":
            raise InvalidInputError(
                f"--data {self.data!r} is not supported for training yet; use amibr"
            )
        for name in ("epochs", "samples_per_epoch", "batch_size"):
            if int(getattr(self, name)) < 1:
                raise InvalidInputError(f"{name} must be at least 1")
        if not self.seeds:
            raise InvalidInputError("give at least one seed")
        if not 0 < self.val_fraction < 1:
            raise InvalidInputError("val_fraction must be between 0 and 1")
        if self.neg_ratio <= 0:
            raise InvalidInputError("neg_ratio must be positive")
        if not 1 <= int(self.atypical_tta) <= 8:
            raise InvalidInputError("atypical_tta must be between 1 and 8 views")
        return self


@dataclass
class TrainResult:
    """What :func:`train` produced."""

    path: Path | None
    metrics: dict[str, Any]
    classifier: Any
    config: TrainConfig


def load_config(path: str | Path) -> dict[str, Any]:
    """Read a TOML or YAML config file into a dict of :class:`TrainConfig` fields."""
    p = Path(path)
    if not p.is_file():
        raise InvalidInputError(f"config file not found: {p}")
    text = p.read_text()
    if p.suffix.lower() == ".toml":
        import tomllib

        data = tomllib.loads(text)
    elif p.suffix.lower() in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError:
            raise InvalidInputError("reading YAML needs PyYAML; use a .toml config") from None
        data = yaml.safe_load(text) or {}
    else:
        raise InvalidInputError(f"config must be .toml or .yaml, got {p.name}")
    data = data.get("train", data)
    known = {f for f in TrainConfig.__dataclass_fields__}
    unknown = sorted(set(data) - known)
    if unknown:
        raise InvalidInputError(f"unknown config keys in {p.name}: {', '.join(unknown)}")
    if "seeds" in data:
        data["seeds"] = tuple(int(s) for s in data["seeds"])
    return data


def _features(net: Any, ds: Any, idx: np.ndarray, views: int, batch: int = 256) -> np.ndarray:
    import torch

    feats = []
    net.eval()
    with torch.inference_mode():
        for _ in range(views):
            out = []
            for s in range(0, len(idx), batch):
                items = [ds[int(i)] for i in idx[s : s + batch]]
                x = torch.stack([it["image"] for it in items]).contiguous(
                    memory_format=torch.channels_last
                )
                m = torch.stack([it["mask"] for it in items])
                out.append(net.features(x, m).float())
            feats.append(torch.cat(out).numpy())
    return np.stack(feats)  # (views, n, d)


def fit_atypical_head(
    net: Any,
    samples: SampleSet,
    *,
    size_px: int,
    views: int = 3,
    steps: int = 300,
    stain_sigma: float = 0.14,
    seed: int = 0,
) -> None:
    """Stage 2: refit ``net.atypical_head`` on frozen features of labelled figures (balanced)."""
    import torch
    from torch.nn import functional as F

    from .data import PatchDataset

    idx = np.flatnonzero(samples.atypical >= 0)
    if len(idx) == 0 or len(np.unique(samples.atypical[idx])) < 2:
        return
    ds = PatchDataset(
        samples, size_px=size_px, augment=views > 1, stain_sigma=stain_sigma, seed=seed
    )
    f = _features(net, ds, idx, max(1, views))
    x = torch.from_numpy(f.reshape(-1, f.shape[-1]))
    y = torch.from_numpy(np.tile(samples.atypical[idx], f.shape[0]).astype(np.float32))
    a = torch.from_numpy(np.tile(samples.agreement[idx], f.shape[0]).astype(np.float32))
    n1 = float(y.sum())
    n0 = float(len(y) - n1)
    w = torch.where(y > 0, 0.5 / n1, 0.5 / n0) * a  # balanced classes, agreement-weighted
    head = net.atypical_head
    torch.manual_seed(seed)
    opt = torch.optim.AdamW(head.parameters(), lr=1e-2, weight_decay=1e-3)
    for _ in range(int(steps)):
        opt.zero_grad()
        loss = (
            F.binary_cross_entropy_with_logits(head(x).squeeze(1), y, reduction="none") * w
        ).sum()
        loss.backward()
        opt.step()


def evaluate_predictions(
    samples: SampleSet,
    mf: np.ndarray,
    at: np.ndarray,
    *,
    threshold: float,
    atypical_threshold: float,
) -> dict[str, float]:
    """MF ROC AUC / F1 and atypical balanced accuracy / ROC AUC on a sample set."""
    from .metrics import balanced_accuracy_at, f1_at, roc_auc

    y = samples.is_mf.astype(bool)
    lab = samples.atypical
    has = lab >= 0
    return {
        "mf_roc_auc": roc_auc(y, mf),
        "mf_f1": f1_at(y, mf, threshold),
        "atypical_balanced_accuracy": balanced_accuracy_at(
            lab[has] == 1, at[has], atypical_threshold
        ),
        "atypical_roc_auc": roc_auc(lab[has] == 1, at[has]),
        "n_samples": int(len(y)),
        "n_mf": int(y.sum()),
        "n_atypical_labelled": int(has.sum()),
    }


def train(cfg: TrainConfig, *, samples: SampleSet | None = None, save: bool = True) -> TrainResult:
    """Train an ensemble classifier and (optionally) write its checkpoint to ``cfg.out``.

    Parameters
    ----------
    cfg : TrainConfig
    samples : SampleSet, optional
        Pre-built samples (tests, cross-validation); default: built from ``cfg.data_dir``.
    save : bool
        Write the checkpoint (with its model card) to ``cfg.out``.
    """
    import lightning as L
    import torch

    from ..classify.classifier import Classifier, resolve_device, save_checkpoint
    from ..classify.registry import create_model, get_spec
    from .data import PatchDataset, make_loader, mf_sample_weights, slide_split
    from .metrics import best_balanced_accuracy_threshold, best_f1_threshold
    from .module import MitosisModule
    from .samples import build_amibr_samples

    cfg = cfg.validate()
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    t_start = time.time()
    spec = get_spec(cfg.arch)
    if samples is None:
        samples = build_amibr_samples(
            cfg.data_dir, limit=cfg.limit_crops, cache_dir=cfg.cache_dir, progress=cfg.progress
        )
    tr_mask, va_mask = slide_split(
        samples.slide, val_fraction=cfg.val_fraction, seed=cfg.split_seed
    )
    tr, va = samples.subset(np.flatnonzero(tr_mask)), samples.subset(np.flatnonzero(va_mask))
    n_sub = len(samples.meta.get("subtypes", [])) if cfg.subtype_head else 0
    lab = tr.atypical[tr.atypical >= 0]
    pos_weight = float((lab == 0).sum() / max(1, (lab == 1).sum()))
    size = spec.patch_size_px
    weights = mf_sample_weights(tr, neg_ratio=cfg.neg_ratio, domain_balanced=cfg.domain_balanced)
    dev = resolve_device("auto")
    members = []
    for seed in cfg.seeds:
        L.seed_everything(int(seed), workers=True, verbose=False)
        net = create_model(
            cfg.arch,
            use_mask=cfg.use_mask,
            pretrained=cfg.pretrained,
            weights_path=cfg.weights_path,
            n_subtypes=n_sub,
        ).to(memory_format=torch.channels_last)
        module = MitosisModule(
            net,
            lr=cfg.lr,
            weight_decay=cfg.weight_decay,
            epochs=cfg.epochs,
            multitask=cfg.multitask,
            atypical_weight=cfg.atypical_weight,
            atypical_pos_weight=pos_weight,
        )
        ds = PatchDataset(tr, size_px=size, stain_sigma=cfg.stain_sigma, seed=int(seed))
        loader = make_loader(
            ds,
            weights=weights,
            num_samples=cfg.samples_per_epoch,
            batch_size=cfg.batch_size,
            seed=int(seed),
        )
        trainer = L.Trainer(
            max_epochs=cfg.epochs,
            accelerator="gpu" if dev.type == "cuda" else "cpu",
            devices=1,
            precision="16-mixed" if dev.type == "cuda" else "32-true",
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=cfg.progress,
            enable_model_summary=False,
            fast_dev_run=cfg.fast_dev_run,
        )
        trainer.fit(module, train_dataloaders=loader)
        net = module.net.cpu().eval()
        for p in net.encoder_parameters():
            p.requires_grad_(False)
        fit_atypical_head(
            net,
            tr,
            size_px=size,
            views=1 if cfg.fast_dev_run else cfg.atypical_views,
            steps=5 if cfg.fast_dev_run else cfg.atypical_steps,
            stain_sigma=cfg.stain_sigma,
            seed=int(seed),
        )
        with torch.no_grad():  # thresholds must see the float16 weights the checkpoint stores
            for t in net.state_dict().values():
                if t.is_floating_point():
                    t.copy_(t.half().float())
        members.append(net.to(dev))
    clf = Classifier(
        name=Path(cfg.out).stem,
        arch=cfg.arch,
        models=members,
        input_mpp=float(samples.meta.get("mpp", spec.input_mpp)),
        patch_size_px=size,
        uses_mask=cfg.use_mask,
        has_atypical=True,
        threshold=0.5,
        atypical_threshold=0.5,
        device=dev,
        atypical_views=int(cfg.atypical_tta),
    )
    mf, at = clf.predict_patches(va.patches, va.masks)
    thr, _ = best_f1_threshold(va.is_mf, mf)
    has = va.atypical >= 0
    athr, _ = best_balanced_accuracy_threshold(va.atypical[has] == 1, at[has])
    clf.threshold, clf.atypical_threshold = thr, athr
    metrics = evaluate_predictions(va, mf, at, threshold=thr, atypical_threshold=athr)
    metrics["threshold"] = thr
    metrics["atypical_threshold"] = athr
    metrics["train_seconds"] = round(time.time() - t_start, 1)
    card = {
        "architecture": cfg.arch,
        "description": spec.description,
        "input_mpp": clf.input_mpp,
        "patch_size_px": size,
        "uses_mask": cfg.use_mask,
        "ensemble_size": len(members),
        "seeds": list(cfg.seeds),
        "n_subtypes": n_sub,
        "subtypes": samples.meta.get("subtypes", []) if n_sub else [],
        "data": {
            "source": cfg.data,
            "licence": DATA_LICENCE,
            "sample_meta": {k: v for k, v in samples.meta.items() if k != "subtypes"},
            "n_train_samples": len(tr),
            "n_val_samples": len(va),
            "n_train_slides": len(np.unique(tr.slide)),
            "n_val_slides": len(np.unique(va.slide)),
        },
        "split": {
            "by": "slide",
            "val_fraction": cfg.val_fraction,
            "split_seed": cfg.split_seed,
            "val_slides": sorted(np.unique(va.slide).tolist()),
        },
        "validation_metrics": metrics,
        "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(cfg).items()},
        "threshold_choice": "MF: max F1 on validation slides; atypical: max balanced accuracy",
    }
    clf.card = card
    path = None
    if save:
        path = save_checkpoint(
            cfg.out,
            arch=cfg.arch,
            members=[m.state_dict() for m in members],
            arch_kwargs={"use_mask": cfg.use_mask, "n_subtypes": n_sub},
            input_mpp=clf.input_mpp,
            patch_size_px=size,
            threshold=thr,
            atypical_threshold=athr,
            card=json.loads(json.dumps(card, default=str)),
            name=Path(cfg.out).stem,
            atypical_views=int(cfg.atypical_tta),
        )
    return TrainResult(path=path, metrics=metrics, classifier=clf, config=replace(cfg))
