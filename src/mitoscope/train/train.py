"""``train(cfg)``: samples -> slide-grouped split -> seeds -> heads -> thresholds -> checkpoint.

Stage 1 (PyTorch Lightning): the encoder and the MF head (plus, when ``multitask``, the
atypical head on labelled figures, agreement-weighted, and the optional subtype head) with
AdamW + cosine annealing, domain-balanced sampling and a settable negative:positive ratio.
Stage 2 (Fick et al.): the encoder is frozen; the atypical head is refitted on mitotic figures
only, with normal and atypical figures balanced, on features of ``atypical_views`` augmented
views of each training figure. Decision thresholds are chosen on the held-out validation
slides only. Several seeds form an ensemble (probabilities averaged).

Over 400 lines: the classifier's training recipe (config and config files, slide-grouped split,
samples, both stages, thresholds, evaluation, checkpoint and card) read top to bottom in one
module, and the other trainers reuse its config loader and split. A future split would move
:class:`TrainConfig` with ``load_config`` (about 180 lines) into ``train/config.py``.
"""

from __future__ import annotations

import json
import math
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
TISSUE_LICENCE = (
    "ordinary-tissue negatives: MoNuSeg 2018 training images of TCGA tumour tissue, "
    "CC BY-NC-SA 4.0 (weights trained on them are for non-commercial use only, share-alike)"
)


def data_licences(samples: SampleSet, cfg: TrainConfig) -> tuple[str, bool]:
    """The licence line of the training data and whether it restricts use to non-commercial."""
    parts = []
    tis = is_tissue_slide(samples.slide)
    if (~tis).any():
        srcs = samples.meta.get("sources")
        parts.append(
            DATA_LICENCE
            if cfg.data == "amibr" and not cfg.sources
            else "labelled sources: " + json.dumps(srcs, default=str)[:400]
        )
    if tis.any():
        parts.append(TISSUE_LICENCE)
    return "; ".join(parts), bool(tis.any())


def default_data_dir() -> str:
    """The AMi-Br training crops of the shared data folder ($MITOSCOPE_SHARED_DATA, else
    ../shared/data from the working directory)."""
    env = os.environ.get("MITOSCOPE_SHARED_DATA")
    base = Path(env) if env else Path.cwd().parent / "shared" / "data"
    return str(base / "amibr-train")


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run (frozen; build variants with ``replace``)."""

    data: str = "amibr"
    data_dir: str = field(default_factory=default_data_dir)
    # label sources ([[train.sources]] tables, see train.sources); when given they replace
    # data / data_dir / tissue_dir
    sources: tuple[dict[str, Any], ...] = ()
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
    # MF loss: "hard" | "agreement" (weighted by the raters' agreement) | "soft" (soft labels)
    mf_loss: str = "hard"
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
    # ordinary-tissue negatives (every candidate negative) and hard-negative mining
    tissue_dir: str | None = None
    tissue_exclude_organs: tuple[str, ...] = ()
    tissue_val_per_organ: int = 1
    init_from: str | None = None
    freeze_bn: bool | None = None  # default: on when fine-tuning (init_from)
    domain_augment: tuple[str, ...] = ()
    domain_p: float = 0.5
    # random positional shift of each training patch, at most this far (um) in x and y, converted
    # to px with the model's input pixel size; a number must fit in the room the patch has inside
    # the stored patches. None (default): 1 um (4 px at 0.25 um/px), limited to that room, as
    # before this setting existed (effnet_lite0_96 in 100 px stored patches: 2 px = 0.5 um)
    shift_um: float | None = None
    hard_negative_rounds: int = 0
    hard_negative_fraction: float = 0.05
    hard_negative_share: float = 0.5
    hard_negative_epochs: int | None = None
    # MF threshold: None = max F1 on the validation data; a number = the highest threshold that
    # keeps this recall of the labelled validation figures (the count's operating point)
    mf_threshold_recall: float | None = None

    def validate(self) -> TrainConfig:
        from ..classify.registry import get_spec
        from .sources import check_config_types, check_review_loss, list_sources, validate_sources

        check_config_types(self)
        get_spec(self.arch)
        if self.sources:
            check_review_loss(validate_sources(self.sources), self.mf_loss)
        elif self.data not in list_sources():
            raise InvalidInputError(
                f"unknown --data {self.data!r}; choose one of {', '.join(list_sources())}"
            )
        elif self.data != "amibr":
            validate_sources(_short_sources(self))
        for name in ("epochs", "samples_per_epoch", "batch_size"):
            if int(getattr(self, name)) < 1:
                raise InvalidInputError(f"{name} must be at least 1")
        if not self.seeds:
            raise InvalidInputError("give at least one seed")
        if not 0 < self.val_fraction < 1:
            raise InvalidInputError("val_fraction must be between 0 and 1")
        if self.neg_ratio <= 0:
            raise InvalidInputError("neg_ratio must be positive")
        if self.mf_loss not in ("hard", "agreement", "soft"):
            raise InvalidInputError(
                f"mf_loss must be hard, agreement or soft, got {self.mf_loss!r}"
            )
        if not 1 <= int(self.atypical_tta) <= 8:
            raise InvalidInputError("atypical_tta must be between 1 and 8 views")
        from ..stain.augment import DOMAIN_AUGMENTATIONS

        bad = sorted(set(self.domain_augment) - set(DOMAIN_AUGMENTATIONS))
        if bad:
            raise InvalidInputError(
                f"unknown domain_augment {', '.join(bad)}; known: {', '.join(DOMAIN_AUGMENTATIONS)}"
            )
        if not 0 <= float(self.domain_p) <= 1:
            raise InvalidInputError("domain_p must be in [0, 1]")
        from .sources import BuildOptions

        spec = get_spec(self.arch)
        check_shift(
            self.shift_um,
            input_mpp=spec.input_mpp,
            patch_px=spec.patch_size_px,
            stored_px=BuildOptions.size_px,  # the patch size build_samples stores
        )
        if self.mf_threshold_recall is not None and not 0 < float(self.mf_threshold_recall) <= 1:
            raise InvalidInputError("mf_threshold_recall must be in (0, 1]")
        if int(self.hard_negative_rounds) < 0:
            raise InvalidInputError("hard_negative_rounds must be 0 or more")
        if not 0 < float(self.hard_negative_fraction) <= 1:
            raise InvalidInputError("hard_negative_fraction must be in (0, 1]")
        if not 0 < float(self.hard_negative_share) < 1:
            raise InvalidInputError("hard_negative_share must be in (0, 1)")
        if self.init_from is not None and not Path(self.init_from).is_file():
            raise InvalidInputError(f"init_from checkpoint not found: {self.init_from}")
        if self.tissue_dir is not None and not (Path(self.tissue_dir) / "images.csv").is_file():
            raise InvalidInputError(f"tissue_dir {self.tissue_dir} has no images.csv")
        return self


def shift_px(shift_um: float, input_mpp: float) -> int:
    """The training shift ``shift_um`` (um) in pixels of the model's input (``input_mpp`` um/px),
    rounded to the nearest pixel (1.0 um at 0.25 um/px = 4 px)."""
    return int(math.floor(float(shift_um) / float(input_mpp) + 0.5))


DEFAULT_SHIFT_UM = 1.0  # the shift when ``shift_um`` is None, limited to the room (as before)


def check_shift(shift_um: Any, *, input_mpp: float, patch_px: int, stored_px: int) -> int:
    """``shift_um`` in px after checking it: finite, 0 or more, and not more than the room a
    ``patch_px`` model patch has to move inside the ``stored_px`` stored sample patches.
    ``None``: :data:`DEFAULT_SHIFT_UM`, limited to that room."""
    room = max(0, (int(stored_px) - int(patch_px)) // 2)
    if shift_um is None:
        return min(shift_px(DEFAULT_SHIFT_UM, input_mpp), room)
    value = float(shift_um)
    if not math.isfinite(value) or value < 0:
        raise InvalidInputError(
            f"shift_um must be a finite number of um, 0 or more, got {shift_um}"
        )
    px = shift_px(value, input_mpp)
    if px > room:
        raise InvalidInputError(
            f"shift_um = {value:g} um is {px} px at {input_mpp:g} um/px, more than the {room} px "
            f"a {patch_px} px patch can move inside the {stored_px} px stored patches; "
            f"use at most {room * input_mpp:g} um"
        )
    return px


@dataclass
class TrainResult:
    """What :func:`train` produced."""

    path: Path | None
    metrics: dict[str, Any]
    classifier: Any
    config: TrainConfig


def load_config(path: str | Path, *, cls: Any = None, table: str = "train") -> dict[str, Any]:
    """Read a TOML or YAML config file into a dict of :class:`TrainConfig` fields (or of
    another config dataclass ``cls``, from its ``[table]``)."""
    p = Path(path)
    if not p.is_file():
        raise InvalidInputError(f"config file not found: {p}")
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInputError(f"cannot read config {p.name}: {type(exc).__name__}") from None
    if p.suffix.lower() == ".toml":
        import tomllib

        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise InvalidInputError(f"{p.name} is not valid TOML: {exc}") from None
    elif p.suffix.lower() in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError:
            raise InvalidInputError("reading YAML needs PyYAML; use a .toml config") from None
        try:
            data = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            where = getattr(exc, "problem_mark", None)
            at = f" (line {where.line + 1})" if where is not None else ""
            raise InvalidInputError(f"{p.name} is not valid YAML{at}") from None
    else:
        raise InvalidInputError(f"config must be .toml or .yaml, got {p.name}")
    cls = TrainConfig if cls is None else cls
    if isinstance(data, dict) and table in data:
        data = data[table]
    if not isinstance(data, dict):
        raise InvalidInputError(f"{p.name} must hold a table of {cls.__name__} fields ([{table}])")
    known = {f for f in cls.__dataclass_fields__}
    unknown = sorted(set(data) - known)
    if unknown:
        raise InvalidInputError(f"unknown config keys in {p.name}: {', '.join(unknown)}")
    if "seeds" in data:
        seeds = data["seeds"]
        seeds = [seeds] if isinstance(seeds, int) and not isinstance(seeds, bool) else seeds
        if not isinstance(seeds, list) or not all(
            isinstance(s, int) and not isinstance(s, bool) for s in seeds
        ):
            raise InvalidInputError(
                f"{p.name}: seeds must be a list of integers, got {seeds!r:.60}"
            )
        data["seeds"] = tuple(seeds)
    if "sources" in data:
        src = data["sources"]
        if not isinstance(src, list) or not all(isinstance(t, dict) for t in src):
            raise InvalidInputError(
                f"{p.name}: sources must be a list of tables ([[train.sources]] in TOML)"
            )
        data["sources"] = tuple(dict(t) for t in src)
    for key in ("domain_augment", "tissue_exclude_organs"):
        if key in data:
            if not isinstance(data[key], list):
                raise InvalidInputError(f"{p.name}: {key} must be a list of names")
            data[key] = tuple(str(v) for v in data[key])
    return data


def is_tissue_slide(slides: np.ndarray) -> np.ndarray:
    """Which samples come from ordinary-tissue images (slide names ``tissue/<organ>/...``)."""
    return np.char.startswith(np.asarray(slides, dtype=str), "tissue/")


def source_split(
    slides: np.ndarray, *, val_fraction: float, seed: int, tissue_val_per_organ: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """Slide-grouped ``(train, val)`` masks; labelled slides and tissue images split apart.

    Labelled slides are split exactly as :func:`~mitoscope.train.data.slide_split` splits them
    alone (adding tissue images does not move a labelled slide between train and validation);
    of each organ's tissue images, ``tissue_val_per_organ`` (random, seeded) go to validation,
    so thresholds are chosen on data that contains ordinary tissue.
    """
    from .data import slide_split

    slides = np.asarray(slides, dtype=str)
    tis = is_tissue_slide(slides)
    val = np.zeros(len(slides), dtype=bool)
    if (~tis).any():
        _, v = slide_split(slides[~tis], val_fraction=val_fraction, seed=seed)
        val[~tis] = v
    if tis.any() and tissue_val_per_organ > 0:
        rng = np.random.default_rng(seed)
        uniq = np.unique(slides[tis])
        organs = sorted({s.split("/")[1] for s in uniq})
        chosen: set[str] = set()
        for organ in organs:
            mine = sorted(s for s in uniq if s.split("/")[1] == organ)
            if len(mine) < 2:
                continue  # one image: keep it for training
            k = min(int(tissue_val_per_organ), len(mine) - 1)
            chosen.update(rng.permutation(mine)[:k].tolist())
        val |= np.isin(slides, sorted(chosen))
    return ~val, val


def _short_sources(cfg: TrainConfig) -> tuple[dict[str, Any], ...]:
    """``data`` / ``data_dir`` / ``tissue_dir`` as source tables (for data other than amibr)."""
    out: list[dict[str, Any]] = [{"type": cfg.data, "path": cfg.data_dir}]
    if cfg.limit_crops:
        out[0]["limit"] = cfg.limit_crops
    if cfg.tissue_dir:
        tissue: dict[str, Any] = {"type": "tissue", "path": cfg.tissue_dir}
        if cfg.tissue_exclude_organs:
            tissue["exclude_organs"] = list(cfg.tissue_exclude_organs)
        out.append(tissue)
    return tuple(out)


def build_samples(cfg: TrainConfig) -> SampleSet:
    """The training samples a config names: its ``sources``; else AMi-Br crops (``data_dir``),
    plus tissue negatives if given; other ``data`` types go through the sources."""
    from .samples import build_amibr_samples, build_tissue_samples, concat_samples

    if cfg.sources or cfg.data != "amibr":
        from .sources import build_source_samples

        return build_source_samples(
            cfg.sources or _short_sources(cfg), cache_dir=cfg.cache_dir, progress=cfg.progress
        )
    samples = build_amibr_samples(
        cfg.data_dir, limit=cfg.limit_crops, cache_dir=cfg.cache_dir, progress=cfg.progress
    )
    if cfg.tissue_dir:
        from .samples import read_tissue_index

        organs = sorted({r["organ"] for r in read_tissue_index(cfg.tissue_dir)})
        keep = [o for o in organs if o not in set(cfg.tissue_exclude_organs)]
        tissue = build_tissue_samples(
            cfg.tissue_dir, organs=keep, cache_dir=cfg.cache_dir, progress=cfg.progress
        )
        samples = concat_samples(samples, tissue)
    return samples


def score_samples(net: Any, samples: SampleSet, idx: np.ndarray, *, size_px: int) -> np.ndarray:
    """MF probability of ``net`` (one member, eval mode) on the centre patches ``idx``."""
    import torch

    off = (samples.patches.shape[1] - size_px) // 2
    out = []
    net.eval()
    with torch.inference_mode():
        for s in range(0, len(idx), 512):
            sel = idx[s : s + 512]
            img = samples.patches[sel, off : off + size_px, off : off + size_px]
            msk = samples.masks[sel, off : off + size_px, off : off + size_px]
            x = torch.from_numpy(np.ascontiguousarray(img)).permute(0, 3, 1, 2).float().div_(255)
            m = torch.from_numpy(np.ascontiguousarray(msk))[:, None].float()
            x = x.contiguous(memory_format=torch.channels_last)
            out.append(torch.sigmoid(net(x, m)["mf"].float()).reshape(-1).numpy())
    return np.concatenate(out) if out else np.zeros(0)


def hard_negative_weights(
    weights: np.ndarray,
    is_mf: np.ndarray,
    scores: np.ndarray,
    *,
    fraction: float,
    share: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Re-weight sampling so the top-``fraction`` scoring negatives get ``share`` of the
    negative mass (hard-negative mining). Returns ``(weights, hard_index)``."""
    neg = np.flatnonzero(~is_mf.astype(bool))
    k = max(1, int(round(len(neg) * float(fraction))))
    hard = neg[np.argsort(-scores[neg], kind="stable")[:k]]
    w = weights.copy()
    neg_mass = w[neg].sum()
    is_hard = np.zeros(len(w), dtype=bool)
    is_hard[hard] = True
    easy = neg[~is_hard[neg]]
    if len(easy):
        w[easy] *= (1 - share) * neg_mass / max(w[easy].sum(), 1e-12)
    w[hard] = share * neg_mass / k
    return w / w.sum(), hard


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
    shift_px: int = 4,
) -> None:
    """Stage 2: refit ``net.atypical_head`` on frozen features of labelled figures (balanced)."""
    import torch
    from torch.nn import functional as F

    from .data import PatchDataset

    idx = np.flatnonzero(samples.atypical >= 0)
    if len(idx) == 0 or len(np.unique(samples.atypical[idx])) < 2:
        return
    ds = PatchDataset(
        samples,
        size_px=size_px,
        augment=views > 1,
        stain_sigma=stain_sigma,
        seed=seed,
        shift_px=shift_px,
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
    from .data import PatchDataset, make_loader, mf_sample_weights
    from .metrics import best_balanced_accuracy_threshold, best_f1_threshold, threshold_at_recall
    from .module import MitosisModule, make_trainer

    cfg = cfg.validate()
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    t_start = time.time()
    spec = get_spec(cfg.arch)
    if samples is None:
        samples = build_samples(cfg)
    tr_mask, va_mask = source_split(
        samples.slide,
        val_fraction=cfg.val_fraction,
        seed=cfg.split_seed,
        tissue_val_per_organ=cfg.tissue_val_per_organ,
    )
    tr, va = samples.subset(np.flatnonzero(tr_mask)), samples.subset(np.flatnonzero(va_mask))
    n_sub = len(samples.meta.get("subtypes", [])) if cfg.subtype_head else 0
    lab = tr.atypical[tr.atypical >= 0]
    pos_weight = float((lab == 0).sum() / max(1, (lab == 1).sum()))
    size = spec.patch_size_px
    input_mpp = float(samples.meta.get("mpp", spec.input_mpp))  # the model's input pixel size
    shift = check_shift(
        cfg.shift_um, input_mpp=input_mpp, patch_px=size, stored_px=samples.patches.shape[1]
    )
    weights = mf_sample_weights(tr, neg_ratio=cfg.neg_ratio, domain_balanced=cfg.domain_balanced)
    dev = resolve_device("auto")
    init_members: list[Any] = []
    if cfg.init_from:
        from ..classify.classifier import load_classifier

        base = load_classifier(cfg.init_from, device="cpu", backend="torch")
        if base.arch != cfg.arch or base.patch_size_px != size:
            raise InvalidInputError(
                f"init_from {cfg.init_from} is {base.arch} at {base.patch_size_px} px; "
                f"the config trains {cfg.arch} at {size} px"
            )
        init_members = [m.to(memory_format=torch.contiguous_format) for m in base.models]
    hnm: dict[str, Any] = {}

    def fit(net: Any, w: np.ndarray, epochs: int, seed: int) -> Any:
        net.train()  # Lightning keeps the mode it is given (scoring left it in eval mode)
        module = MitosisModule(
            net,
            lr=cfg.lr,
            weight_decay=cfg.weight_decay,
            epochs=epochs,
            multitask=cfg.multitask,
            atypical_weight=cfg.atypical_weight,
            atypical_pos_weight=pos_weight,
            freeze_bn=bool(cfg.init_from) if cfg.freeze_bn is None else bool(cfg.freeze_bn),
            mf_loss=cfg.mf_loss,
        )
        ds = PatchDataset(
            tr,
            size_px=size,
            stain_sigma=cfg.stain_sigma,
            seed=int(seed),
            domain_ops=tuple(cfg.domain_augment),
            domain_p=cfg.domain_p,
            input_mpp=input_mpp,
            shift_px=shift,
        )
        loader = make_loader(
            ds,
            weights=w,
            num_samples=cfg.samples_per_epoch,
            batch_size=cfg.batch_size,
            seed=int(seed),
        )
        trainer = make_trainer(
            dev, epochs=epochs, progress=cfg.progress, fast_dev_run=cfg.fast_dev_run
        )
        trainer.fit(module, train_dataloaders=loader)
        return module.net

    members = []
    for mi, seed in enumerate(cfg.seeds):
        L.seed_everything(int(seed), workers=True, verbose=False)
        net = create_model(
            cfg.arch,
            use_mask=cfg.use_mask,
            pretrained=cfg.pretrained if not init_members else False,
            weights_path=cfg.weights_path,
            n_subtypes=n_sub,
        )
        if init_members:
            src = init_members[mi % len(init_members)]
            net.load_state_dict(
                {k: v.float() if v.is_floating_point() else v for k, v in src.state_dict().items()}
            )
        net = net.to(memory_format=torch.channels_last)
        w = weights
        net = fit(net, w, cfg.epochs, int(seed))
        for r in range(int(cfg.hard_negative_rounds)):
            scores = score_samples(net.cpu(), tr, np.arange(len(tr)), size_px=size)
            w, hard = hard_negative_weights(
                weights,
                tr.is_mf,
                scores,
                fraction=cfg.hard_negative_fraction,
                share=cfg.hard_negative_share,
            )
            hnm.setdefault("rounds", []).append(
                {
                    "seed": int(seed),
                    "n_hard": int(len(hard)),
                    "min_hard_score": float(scores[hard].min()),
                    "hard_from_tissue": int(is_tissue_slide(tr.slide[hard]).sum()),
                    "negatives_above_0.5": int(((scores >= 0.5) & ~tr.is_mf.astype(bool)).sum()),
                }
            )
            L.seed_everything(int(seed) + 1000 * (r + 1), workers=True, verbose=False)
            net = fit(net.to(dev), w, int(cfg.hard_negative_epochs or cfg.epochs), int(seed))
        net = net.cpu().eval()
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
            shift_px=shift,
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
        input_mpp=input_mpp,
        patch_size_px=size,
        uses_mask=cfg.use_mask,
        has_atypical=True,
        threshold=0.5,
        atypical_threshold=0.5,
        device=dev,
        atypical_views=int(cfg.atypical_tta),
    )
    mf, at = clf.predict_patches(va.patches, va.masks)
    if cfg.mf_threshold_recall is not None:
        thr = threshold_at_recall(va.is_mf, mf, cfg.mf_threshold_recall)
    else:
        thr, _ = best_f1_threshold(va.is_mf, mf)
    has = va.atypical >= 0
    athr, _ = best_balanced_accuracy_threshold(va.atypical[has] == 1, at[has])
    clf.threshold, clf.atypical_threshold = thr, athr
    metrics = evaluate_predictions(va, mf, at, threshold=thr, atypical_threshold=athr)
    metrics["threshold"] = thr
    metrics["atypical_threshold"] = athr
    tis_va = is_tissue_slide(va.slide)
    if tis_va.any():
        lab_va = ~tis_va
        metrics["labelled_val"] = evaluate_predictions(
            va.subset(np.flatnonzero(lab_va)),
            mf[lab_va],
            at[lab_va],
            threshold=thr,
            atypical_threshold=athr,
        )
        metrics["mf_recall_labelled_val"] = float(
            (mf[lab_va & va.is_mf.astype(bool)] >= thr).mean()
        )
        metrics["tissue_val_candidates"] = int(tis_va.sum())
        metrics["tissue_val_above_threshold"] = int((mf[tis_va] >= thr).sum())
    if hnm:
        metrics["hard_negative_mining"] = hnm
    metrics["train_seconds"] = round(time.time() - t_start, 1)
    licence, non_commercial = data_licences(samples, cfg)
    card = {
        "architecture": cfg.arch,
        "description": spec.description,
        "input_mpp": clf.input_mpp,
        "patch_size_px": size,
        "shift_px": shift,
        "uses_mask": cfg.use_mask,
        "ensemble_size": len(members),
        "seeds": list(cfg.seeds),
        "n_subtypes": n_sub,
        "subtypes": samples.meta.get("subtypes", []) if n_sub else [],
        "data": {
            "source": cfg.data if not cfg.sources else "sources",
            "licence": licence,
            "non_commercial": non_commercial,
            "tissue_images": sorted(
                np.unique(samples.slide[is_tissue_slide(samples.slide)]).tolist()
            ),
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
        "threshold_choice": (
            f"MF: the highest threshold keeping recall {cfg.mf_threshold_recall} of the labelled "
            "validation figures"
            if cfg.mf_threshold_recall is not None
            else "MF: max F1 on the validation slides"
            + (
                " and validation tissue images (every candidate a negative)"
                if non_commercial
                else ""
            )
        )
        + "; atypical: max balanced accuracy on the validation figures",
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
