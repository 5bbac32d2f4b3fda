"""Slide-grouped cross-validation of the candidate classifiers on amibr-train.

For every configuration (architecture, or an ablation of the default recipe) and seed, train on
the slides outside the test fold (the decision thresholds are chosen on a slide-grouped
validation split *inside* those training slides), then measure on the test fold's slides:

- MF vs non-MF candidates: ROC AUC and F1 at the validation threshold,
- atypical vs normal (mitotic figures with an atypia label): balanced accuracy at the
  validation threshold and ROC AUC.

The "ensemble" row averages the probabilities of the default configuration's seeds.
Results are mean ± sd over seeds (and folds), printed as Markdown and written to JSON.

Run (slow; the patch cache is built once, ~2 min):

    .venv/bin/python benchmarks/classifier_cv.py --folds 3 --run-folds 0 --seeds 0,1 \
        --epochs 1 --samples-per-epoch 1024 --out benchmarks/.cache/classifier_cv.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("MITOSCOPE_SHARED_DATA", ROOT.parent / "shared" / "data"))

#: name -> TrainConfig overrides (on top of the default recipe)
CONFIGS = {
    "effnet_lite0 (default recipe)": {},
    "farooq_dilated": {"arch": "farooq_dilated"},
    "omgnet_resnet18": {"arch": "omgnet_resnet18"},
    "ablation: no stain augmentation": {"stain_sigma": 0.0},
    "ablation: no mask branch": {"use_mask": False},
    "ablation: no multi-task (MF loss only in stage 1)": {"multitask": False},
    "effnet_lite0 + atypical test-time augmentation (4 rotations)": {"atypical_tta": 4},
}


def _subsample_test(samples, *, neg_per_pos: float, seed: int):
    """All labelled figures and imposters, plus a random subset of proposer negatives."""
    from mitoscope.train.samples import KIND_CANDIDATE

    rng = np.random.default_rng(seed)
    cand = np.flatnonzero(samples.kind == KIND_CANDIDATE)
    keep = np.flatnonzero(samples.kind != KIND_CANDIDATE)
    n = min(len(cand), int(neg_per_pos * int(samples.is_mf.sum())))
    keep = np.sort(np.concatenate([keep, rng.choice(cand, n, replace=False)]))
    return samples.subset(keep)


def _fmt(vals: list[float]) -> str:
    v = np.asarray([x for x in vals if np.isfinite(x)], dtype=float)
    if len(v) == 0:
        return "n/a"
    if len(v) == 1:
        return f"{v[0]:.3f}"
    return f"{v.mean():.3f} ± {v.std(ddof=1):.3f}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--folds", type=int, default=3)
    ap.add_argument("--run-folds", default="0", help="comma-separated fold indices to run")
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--samples-per-epoch", type=int, default=1024)
    ap.add_argument("--atypical-views", type=int, default=1)
    ap.add_argument("--test-neg-per-pos", type=float, default=2.0)
    ap.add_argument("--configs", default="all", help="comma-separated config indices or 'all'")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / ".cache" / "classifier_cv.json"))
    ap.add_argument(
        "--merge",
        nargs="*",
        default=[],
        help="result files of other runs (e.g. run in parallel) to add to --out before the table",
    )
    args = ap.parse_args(argv)

    import torch

    from mitoscope.classify.classifier import Classifier
    from mitoscope.train.data import slide_folds
    from mitoscope.train.samples import build_amibr_samples
    from mitoscope.train.train import TrainConfig, evaluate_predictions, train

    torch.set_num_threads(args.threads)
    samples = build_amibr_samples(DATA / "amibr-train", cache_dir=ROOT / "benchmarks" / ".cache")
    seeds = [int(s) for s in args.seeds.split(",")]
    folds = slide_folds(samples.slide, n_folds=args.folds, seed=0)
    names = list(CONFIGS)
    if args.configs != "all":
        names = [names[int(i)] for i in args.configs.split(",")]
    base = TrainConfig(
        epochs=args.epochs,
        samples_per_epoch=args.samples_per_epoch,
        atypical_views=args.atypical_views,
        val_fraction=0.1,
        progress=False,
        threads=args.threads,
    )
    out_path = Path(args.out)
    results: dict = json.loads(out_path.read_text()) if out_path.is_file() else {}
    for extra in args.merge:
        for key, v in json.loads(Path(extra).read_text()).items():
            results.setdefault(key, v)
    for k in [int(f) for f in args.run_folds.split(",")]:
        test = _subsample_test(
            samples.subset(np.flatnonzero(folds[k])), neg_per_pos=args.test_neg_per_pos, seed=k
        )
        trainset = samples.subset(np.flatnonzero(~folds[k]))
        for name in names:
            probs = []
            for seed in seeds:
                key = f"{name}|fold{k}|seed{seed}"
                if key in results:
                    print("cached", key, flush=True)
                    continue
                t0 = time.time()
                cfg = replace(base, seeds=(seed,), **CONFIGS[name])
                res = train(cfg, samples=trainset, save=False)
                clf: Classifier = res.classifier
                mf, at = clf.predict_patches(test.patches, test.masks)
                m = evaluate_predictions(
                    test, mf, at, threshold=clf.threshold, atypical_threshold=clf.atypical_threshold
                )
                m["seconds"] = round(time.time() - t0, 1)
                m["val_threshold"] = clf.threshold
                m["val_atypical_threshold"] = clf.atypical_threshold
                results[key] = {"metrics": m, "mf": mf.tolist(), "at": at.tolist()}
                out_path.parent.mkdir(parents=True, exist_ok=True)
                out_path.write_text(json.dumps(results))
                print(key, json.dumps(m), flush=True)
            probs = [
                results[f"{name}|fold{k}|seed{s}"]
                for s in seeds
                if f"{name}|fold{k}|seed{s}" in results
            ]
            if name == names[0] and len(probs) > 1 and f"ensemble|fold{k}" not in results:
                mf = np.mean([p["mf"] for p in probs], axis=0)
                at = np.mean([p["at"] for p in probs], axis=0)
                thr = float(np.mean([p["metrics"]["val_threshold"] for p in probs]))
                athr = float(np.mean([p["metrics"]["val_atypical_threshold"] for p in probs]))
                m = evaluate_predictions(test, mf, at, threshold=thr, atypical_threshold=athr)
                results[f"ensemble|fold{k}"] = {"metrics": m}
                out_path.write_text(json.dumps(results))
    # Markdown table: each seed's mean over its folds, then mean ± sd over the seeds
    rows = [
        "| configuration | folds x seeds | MF ROC AUC | MF F1 @ val thr "
        "| atypical bal. acc. @ val thr | atypical ROC AUC |",
        "|---|---|---|---|---|---|",
    ]
    metrics_keys = ("mf_roc_auc", "mf_f1", "atypical_balanced_accuracy", "atypical_roc_auc")
    for name in [*CONFIGS, "ensemble"]:
        runs = {key: v["metrics"] for key, v in results.items() if key.split("|")[0] == name}
        if not runs:
            continue
        by_seed: dict[str, list[dict]] = {}
        for key, m in runs.items():
            seed = key.split("|")[2] if key.count("|") >= 2 else "seeds 0+1"
            by_seed.setdefault(seed, []).append(m)
        n_folds = sorted({len(v) for v in by_seed.values()})
        label = (
            "ensemble of seeds 0+1 (default recipe, probabilities averaged)"
            if name == "ensemble"
            else name
        )
        cells = []
        for k in metrics_keys:
            per_seed = [float(np.nanmean([m[k] for m in ms])) for ms in by_seed.values()]
            cells.append(_fmt(per_seed))
        rows.append(
            f"| {label} | {'/'.join(map(str, n_folds))} x {len(by_seed)} | "
            + " | ".join(cells)
            + " |"
        )
    print("\n".join(rows))
    (out_path.with_suffix(".md")).write_text("\n".join(rows) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
