"""Train the bundled cascade screen (``mitoscope_screen.pt``) on the AMi-Br training crops.

Run (from the repository root)::

    .venv/bin/python -m mitoscope.train.screen_train

Samples come from the detection path itself (:func:`mitoscope.candidates.tiles.propose_tile`): every
crop is reflect-padded by 32 px, read at the classifier's 0.25 um/px, downsampled to the
screen's 0.5 um/px and proposed on there; the screen's patches are cut around those candidates
exactly as during detection. A candidate within ``--pos-um`` (5 um) of an expert-labelled
mitotic figure is a positive, one further than 7.5 um from every figure a negative (the sources
label every figure, so these are real non-mitotic objects and imposters); the ones in between
are not used.

The slide split is the bundled classifier's (``val_fraction`` 0.15, ``split_seed`` 0): the
screen never trains on the classifier's validation slides. The keep-threshold is chosen there
*per figure* — a figure survives the screen when any of its candidates (within 7.5 um, the
MIDOG radius) scores at or above it — for ``--target-recall`` of the figures the proposer found.
The recall it gives on unseen slides is estimated by choosing the threshold on one half of the
validation slides and measuring on the other (both ways); all of it goes into the model card.

The network trains on the classifier's path (:func:`train_screen`): a
:class:`~mitoscope.train.data.PatchDataset` drawn by :func:`~mitoscope.train.data.make_loader`
with :func:`~mitoscope.train.data.mf_sample_weights`, :class:`~mitoscope.train.module.ScreenModule`
(:class:`~mitoscope.train.module.MitosisModule`'s training step) in
:func:`~mitoscope.train.module.make_trainer`'s Lightning Trainer.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InvalidInputError

MATCH_UM = 7.5
PAD_PX = 32


@dataclass
class ScreenSamples:
    patches: np.ndarray  # (N, S, S, 3) uint8 at the screen's pixel size
    masks: np.ndarray  # (N, S, S) bool
    dist_um: np.ndarray  # (N,) distance to the nearest labelled figure (inf: none in the crop)
    figure: np.ndarray  # (N,) global index of the nearest figure within MATCH_UM, else -1
    slide: np.ndarray  # (N,) "<dataset>/<slide>"
    figure_slide: np.ndarray  # (F,) slide of each labelled figure
    mpp: float


def crop_figures(root: Path, neighbours_csv: Path | None) -> list[dict[str, Any]]:
    """Each AMi-Br crop with its pixel size and every labelled figure inside it (crop px)."""
    from .samples import amibr_scanner

    nb: dict[str, list[tuple[float, float]]] = {}
    if neighbours_csv is not None and neighbours_csv.is_file():
        with open(neighbours_csv, newline="") as f:
            for r in csv.DictReader(f):
                if r["neighbour_class"] == "MF":
                    nb.setdefault(r["crop_file"], []).append((float(r["dx_px"]), float(r["dy_px"])))
    out = []
    with open(root / "labels.csv", newline="") as f:
        for r in csv.DictReader(f):
            _, mpp = amibr_scanner(r["dataset"], r["slide"])
            img_path = root / r["file"]
            w = h = 128
            figs = [(w / 2, h / 2)]
            for dx, dy in nb.get(Path(r["file"]).name, []):
                if 0 <= w / 2 + dx < w and 0 <= h / 2 + dy < h:
                    figs.append((w / 2 + dx, h / 2 + dy))
            out.append(
                {
                    "path": img_path,
                    "slide": f"{r['dataset']}/{r['slide']}",
                    "mpp": mpp,
                    "figures": figs,
                }
            )
    return out


def build_screen_samples(
    crops: list[dict[str, Any]],
    *,
    work_mpp: float = 0.25,
    screen_mpp: float = 0.5,
    size_px: int = 40,
    progress: bool = True,
) -> ScreenSamples:
    """Candidates of every crop as detection sees them, with their distance to the figures."""
    from PIL import Image
    from tqdm.auto import tqdm

    from ..candidates import get_proposer
    from ..candidates.tiles import propose_tile
    from ..classify.patches import extract_patches
    from ..slide import ArraySlide
    from ..types import Region, Tile

    prop = get_proposer("classical")
    patches, masks, dist, fig, slide = [], [], [], [], []
    fig_slide: list[str] = []
    for c in tqdm(crops, desc="screen samples", disable=not progress):
        img = np.asarray(Image.open(c["path"]).convert("RGB"))
        h, w = img.shape[:2]
        padded = np.pad(img, ((PAD_PX, PAD_PX), (PAD_PX, PAD_PX), (0, 0)), mode="reflect")
        reader = ArraySlide(padded, mpp=c["mpp"], path=str(c["path"]))
        ph, pw = padded.shape[:2]
        tile = Tile(index=0, x=0, y=0, width=pw, height=ph, core=Region(PAD_PX, PAD_PX, w, h))
        _, small, fx, fy, cands, _ = propose_tile(
            reader, tile, proposer=prop, work_mpp=work_mpp, propose_mpp=screen_mpp
        )
        first = len(fig_slide)
        fig_slide.extend([c["slide"]] * len(c["figures"]))
        if not len(cands):
            continue
        sx, sy = fx * work_mpp / c["mpp"], fy * work_mpp / c["mpp"]
        x0 = (cands.x_px + 0.5) * sx - 0.5 - PAD_PX  # crop px
        y0 = (cands.y_px + 0.5) * sy - 0.5 - PAD_PX
        f = np.asarray(c["figures"], dtype=np.float64)
        d = np.hypot(x0[:, None] - f[None, :, 0], y0[:, None] - f[None, :, 1]) * c["mpp"]
        k = np.argmin(d, axis=1)
        dmin = d[np.arange(len(d)), k]
        p, m = extract_patches(small, cands.x_px, cands.y_px, size_px, candidates=cands)
        patches.append(p)
        masks.append(m)
        dist.append(dmin)
        fig.append(np.where(dmin <= MATCH_UM, first + k, -1))
        slide.extend([c["slide"]] * len(cands))
    return ScreenSamples(
        patches=np.concatenate(patches),
        masks=np.concatenate(masks),
        dist_um=np.concatenate(dist),
        figure=np.concatenate(fig).astype(np.int64),
        slide=np.asarray(slide),
        figure_slide=np.asarray(fig_slide),
        mpp=float(screen_mpp),
    )


def train_screen(
    train: Any,
    val: Any,
    *,
    size_px: int = 32,
    steps: int = 1500,
    batch_size: int = 256,
    lr: float = 3e-3,
    width: int = 8,
    target_recall: float = 0.995,
    seed: int = 0,
    jitter_px: int = 2,
    progress: bool = False,
) -> tuple[Any, dict[str, Any]]:
    """Train a screen on ``train`` and choose its threshold on ``val`` (both SampleSets).

    The classifier's Lightning path: ``steps`` batches of ``batch_size`` drawn with replacement,
    mitotic figures and non-figures (proposer objects and imposters) with equal mass, uniform
    within each (:func:`~mitoscope.train.data.mf_sample_weights`, no domain balancing); each
    patch shifted by up to ``jitter_px``, flipped (p 0.5) and turned by a multiple of 90 degrees
    (:class:`~mitoscope.train.data.PatchDataset`, no stain jitter); brightness and colour-shift
    jitter, loss and one-cycle schedule in :class:`~mitoscope.train.module.ScreenModule`.
    The threshold keeps ``target_recall`` of the validation positives; the returned metrics give
    that recall and the share of validation non-figures discarded. (:func:`main` then re-chooses
    the threshold per *figure*: a figure is kept when any candidate on it passes.)
    """
    import lightning as L

    from ..classify.classifier import resolve_device
    from ..classify.patches import centre_crop
    from ..classify.screen import Screen, build_screen_net, recall_threshold
    from .data import PatchDataset, make_loader, mf_sample_weights
    from .module import ScreenModule, make_trainer

    if not (train.is_mf == 1).any() or not (train.is_mf == 0).any():
        raise InvalidInputError("screen training needs both mitotic figures and other objects")
    mpp = float(train.meta.get("mpp", 0.5))
    L.seed_everything(int(seed), workers=True, verbose=False)
    module = ScreenModule(build_screen_net(width), lr=lr, steps=int(steps))
    ds = PatchDataset(
        train, size_px=int(size_px), stain_sigma=0.0, shift_px=int(jitter_px), seed=int(seed),
        input_mpp=mpp, p_flip=0.5,
    )  # fmt: skip
    loader = make_loader(
        ds,
        weights=mf_sample_weights(train, neg_ratio=1.0, domain_balanced=False),
        num_samples=int(steps) * int(batch_size),
        batch_size=int(batch_size),
        seed=int(seed),
    )
    t0 = time.time()
    make_trainer(resolve_device("auto"), progress=progress).fit(module, train_dataloaders=loader)
    seconds = time.time() - t0
    net = module.screen.cpu().eval()
    screen = Screen(net=net, input_mpp=mpp, patch_size_px=int(size_px), threshold=0.5, width=width)
    sv = screen.scores(centre_crop(val.patches, size_px), centre_crop(val.masks, size_px))
    yv = val.is_mf == 1
    thr = recall_threshold(sv[yv], target_recall)
    screen.threshold = thr
    metrics = {
        "val_recall": float(np.mean(sv[yv] >= thr)),
        "val_discarded": float(np.mean(sv[~yv] < thr)),
        "val_mf": int(yv.sum()),
        "val_other": int((~yv).sum()),
        "target_recall": float(target_recall),
        "threshold": thr,
        "train_seconds": round(seconds, 1),
        "steps": int(steps),
        "seed": int(seed),
    }
    screen.card = {"metrics": metrics, "input_mpp": mpp, "patch_size_px": int(size_px)}
    return screen, metrics


def figure_recall(
    scores: np.ndarray, figure: np.ndarray, figures: np.ndarray, threshold: float
) -> tuple[float, int]:
    """Share of ``figures`` (global indices) with a candidate scoring >= ``threshold``."""
    best = _best_per_figure(scores, figure, figures)
    found = np.isfinite(best)
    return float(np.mean(best[found] >= threshold)) if found.any() else float("nan"), int(
        found.sum()
    )


def _best_per_figure(scores: np.ndarray, figure: np.ndarray, figures: np.ndarray) -> np.ndarray:
    best = np.full(len(figures), -np.inf)
    pos = {int(g): i for i, g in enumerate(figures)}
    for s, g in zip(scores, figure, strict=True):
        i = pos.get(int(g))
        if i is not None and s > best[i]:
            best[i] = s
    best[best == -np.inf] = np.nan
    return best


def figure_threshold(
    scores: np.ndarray, figure: np.ndarray, figures: np.ndarray, target_recall: float
) -> float:
    """Largest threshold keeping ``target_recall`` of the (proposer-found) ``figures``."""
    from ..classify.screen import recall_threshold

    best = _best_per_figure(scores, figure, figures)
    return recall_threshold(best[np.isfinite(best)], target_recall)


def _subset(s: ScreenSamples, keep: np.ndarray, y: np.ndarray) -> Any:
    from .samples import SampleSet

    n = int(keep.sum())
    return SampleSet(
        patches=s.patches[keep],
        masks=s.masks[keep],
        is_mf=y[keep].astype(np.int8),
        atypical=np.full(n, -1, np.int8),
        agreement=np.ones(n, np.float32),
        subtype=np.full(n, -1, np.int16),
        kind=np.where(y[keep], 0, 3).astype(np.int8),
        crop=np.zeros(n, np.int32),
        slide=s.slide[keep],
        group=s.slide[keep],
        meta={"mpp": s.mpp},
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="../shared/data/amibr-train")
    ap.add_argument("--mpp", type=float, default=0.5)
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--width", type=int, default=8)
    ap.add_argument("--pos-um", type=float, default=5.0)
    ap.add_argument("--target-recall", type=float, default=0.995)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--limit", type=int, default=0, help="first N crops only (tests)")
    ap.add_argument("--out", default="src/mitoscope/data/mitoscope_screen.pt")
    args = ap.parse_args(argv)

    import torch

    from .data import slide_split

    torch.set_num_threads(int(args.threads))
    root = Path(args.data)
    crops = crop_figures(root, root.parent / "annotations" / "amibr_train_crop_neighbours.csv")
    if args.limit:
        crops = crops[: args.limit]
    # the classifier's split: slide_split over the slides of the samples (every crop's slide)
    all_slides = np.array([c["slide"] for c in crops])
    tr_mask, va_mask = slide_split(all_slides, val_fraction=0.15, seed=0)
    val_slides = set(all_slides[va_mask].tolist())
    s = build_screen_samples(crops, screen_mpp=args.mpp, size_px=args.size + 8)
    in_val = np.isin(s.slide, list(val_slides))
    pos = s.dist_um <= args.pos_um
    neg = s.dist_um > MATCH_UM
    y = pos.astype(np.int8)
    train_set = _subset(s, ~in_val & (pos | neg), y)
    val_set = _subset(s, in_val & (pos | neg), y)
    screen, metrics = train_screen(
        train_set,
        val_set,
        size_px=args.size,
        steps=args.steps,
        width=args.width,
        target_recall=args.target_recall,
        seed=args.seed,
        progress=True,
    )
    # per-figure threshold on the validation slides
    vidx = np.flatnonzero(in_val)
    sv = screen.scores(s.patches[vidx], s.masks[vidx])
    fig_v = s.figure[vidx]
    figs = np.flatnonzero(np.isin(s.figure_slide, list(val_slides)))
    thr = figure_threshold(sv, fig_v, figs, args.target_recall)
    screen.threshold = thr
    rec, n_found = figure_recall(sv, fig_v, figs, thr)
    negv = neg[vidx]
    metrics.update(
        {
            "threshold": thr,
            "val_recall": rec,
            "val_figures": int(len(figs)),
            "val_figures_proposed": n_found,
            "val_discarded": float(np.mean(sv[negv] < thr)),
            "val_other": int(negv.sum()),
        }
    )
    # out-of-sample estimate: threshold from one half of the validation slides, used on the other
    vs = np.array(sorted(val_slides))
    perm = np.random.default_rng(1).permutation(vs)
    halves = [set(perm[: len(perm) // 2].tolist()), set(perm[len(perm) // 2 :].tolist())]
    cross = []
    for a, b in ((0, 1), (1, 0)):
        fa = figs[np.isin(s.figure_slide[figs], list(halves[a]))]
        fb = figs[np.isin(s.figure_slide[figs], list(halves[b]))]
        t = figure_threshold(sv, fig_v, fa, args.target_recall)
        r, _ = figure_recall(sv, fig_v, fb, t)
        nb_ = negv & np.isin(s.slide[vidx], list(halves[b]))
        cross.append({"recall": r, "discarded": float(np.mean(sv[nb_] < t)), "figures": len(fb)})
    metrics["half_split"] = cross
    screen.card.update(
        {
            "metrics": metrics,
            "data": "AMi-Br training crops (../shared/data/amibr-train, MIT licence); the "
            "classifier's slide split (val_fraction 0.15, split_seed 0)",
            "command": "python -m mitoscope.train.screen_train " + " ".join(argv or sys.argv[1:]),
            "n_train": int(len(train_set)),
            "n_val": int(len(val_set)),
            "positives": f"candidates within {args.pos_um} um of a labelled figure",
        }
    )
    screen.save(args.out)
    print(json.dumps(metrics, indent=1))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
