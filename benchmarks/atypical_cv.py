"""Slide-grouped cross-validation of atypical-vs-normal classifiers on amibr-train.

The 146 slides are split into ``--folds`` slide-grouped folds (``train.data.slide_folds``, seed
0: the same folds as ``benchmarks/classifier_cv.py``). For every candidate, fold and seed, a
model is trained on the other folds' slides only (its epoch and decision threshold chosen on a
slide-grouped validation split *inside* those slides) and measured on the held-out fold's
figures: balanced accuracy at the validation threshold and ROC AUC (scikit-learn). Nothing
measured here was seen in training or threshold choice.

Candidates (``--candidates``, comma-separated):

- ``dedicated``: the dedicated classifier, ``configs/atypical.toml`` (``mitoscope
  train-atypical``); rows for 1 view and for its test-time views (same networks, each with its
  own validation threshold), and the seeds' ensemble (probabilities averaged, threshold chosen
  on the averaged validation probabilities);
- ``dedicated_96``: the same at 96 px (24 um); ``dedicated_no_stain``: without stain / domain
  augmentation; ``dedicated_resnet18_scratch``: ResNet18 trained from scratch;
- ``head``: the baseline, the current first bundled model's recipe (``configs/amibr_64.toml``:
  multi-task EfficientNet-Lite0 on 64 px + the atypical head refitted on frozen features, 4
  rotations) **retrained per fold** on the same training slides and measured on the same
  held-out figures (the bundled checkpoint itself was trained on most of these slides, so it
  cannot be measured on them).

Every finished run is stored in ``--json`` at once (and trained members in the cache), so an
interrupted run resumes. ``--report`` prints the table of a saved run.

Full run (CPU-heavy; see docs/benchmarks.md for the time it took):

    nice -n 19 .venv/bin/python benchmarks/atypical_cv.py --folds 3 --seeds 0,1 \\
        --candidates dedicated,head --threads 2 --json benchmarks/results/atypical_cv.json

Check the script end to end in a few minutes (tiny data, not a measurement):

    .venv/bin/python benchmarks/atypical_cv.py --quick --threads 1
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
CACHE = ROOT / "benchmarks" / ".cache"

#: dedicated candidates: AtypicalConfig overrides on top of configs/atypical.toml
DEDICATED = {
    "dedicated": {},
    "dedicated_96": {"patch_size_px": 96},
    "dedicated_no_stain": {"stain_sigma": 0.0, "domain_augment": ()},
    "dedicated_resnet18_scratch": {"arch": "omgnet_resnet18", "pretrained": False},
}
CANDIDATES = (*DEDICATED, "head")


def metrics(y: np.ndarray, p: np.ndarray, thr: float) -> dict[str, float]:
    """Balanced accuracy at ``thr`` and ROC AUC (scikit-learn)."""
    from sklearn.metrics import balanced_accuracy_score, roc_auc_score

    y = np.asarray(y).astype(bool)
    p = np.asarray(p, dtype=float)
    if y.all() or (~y).all():
        return {"balanced_accuracy": float("nan"), "roc_auc": float("nan")}
    return {
        "balanced_accuracy": float(balanced_accuracy_score(y, p >= thr)),
        "roc_auc": float(roc_auc_score(y, p)),
    }


def best_threshold(y: np.ndarray, p: np.ndarray) -> float:
    from mitoscope.train.metrics import best_balanced_accuracy_threshold

    return float(best_balanced_accuracy_threshold(np.asarray(y) == 1, np.asarray(p))[0])


def _fmt(vals: list[float]) -> str:
    v = np.asarray([x for x in vals if x is not None and np.isfinite(x)], dtype=float)
    if len(v) == 0:
        return "n/a"
    if len(v) == 1:
        return f"{v[0]:.3f}"
    return f"{v.mean():.3f} ± {v.std(ddof=1):.3f}"


def run_dedicated(name, base, crops, test_mask, seed, args) -> dict:
    from mitoscope.train.atypical import predict_views, train_atypical

    cfg = replace(base, seeds=(seed,), **DEDICATED[name])
    t0 = time.time()
    res = train_atypical(cfg, crops=crops.subset(np.flatnonzero(~test_mask)), save=False)
    test = crops.subset(np.flatnonzero(test_mask))
    out: dict = {
        "test_file": test.file.tolist(),
        "test_label": test.atypical.tolist(),
        "val_label": res.val["label"],
        "views": {},
        "history": res.history,
    }
    for views, r in res.metrics["by_views"].items():
        p = predict_views(res.model, test.patches, int(views))
        out["views"][views] = {
            "val_threshold": r["threshold"],
            "val_probs": res.val["probs"][views],
            "test_probs": p.tolist(),
            "metrics": metrics(test.atypical, p, r["threshold"]),
        }
    out["seconds"] = round(time.time() - t0, 1)
    return out


def run_head(samples, test_mask, seed, args) -> dict:
    """The bundled model's recipe retrained on the training folds; its atypical head measured
    on the held-out fold's figures (crop-centre samples with a label)."""
    from mitoscope.train.samples import KIND_CENTRE
    from mitoscope.train.train import TrainConfig, load_config, train

    fields = load_config(ROOT / "configs" / "amibr_64.toml")
    fields.pop("out", None)
    cfg = TrainConfig(**fields)
    cfg = replace(
        cfg,
        seeds=(seed,),
        progress=False,
        threads=args.threads,
        cache_dir=str(args.cache),
        fast_dev_run=bool(args.quick),
    )
    t0 = time.time()
    res = train(cfg, samples=samples.subset(np.flatnonzero(~test_mask)), save=False)
    clf = res.classifier
    sel = np.flatnonzero(test_mask & (samples.kind == KIND_CENTRE) & (samples.atypical >= 0))
    test = samples.subset(sel)
    _, at = clf.predict_patches(test.patches, test.masks)
    thr = float(clf.atypical_threshold)
    return {
        "test_label": test.atypical.tolist(),
        "views": {
            str(int(clf.atypical_views)): {
                "val_threshold": thr,
                "test_probs": at.tolist(),
                "metrics": metrics(test.atypical, at, thr),
            }
        },
        "seconds": round(time.time() - t0, 1),
    }


def ensemble_rows(results: dict, name: str, folds: list[int], seeds: list[int]) -> dict:
    """Per fold: the seeds' probabilities averaged (test and validation), threshold chosen on
    the averaged validation probabilities."""
    out = {}
    for k in folds:
        runs = [results.get(f"{name}|fold{k}|seed{s}") for s in seeds]
        if len(runs) < 2 or any(r is None for r in runs):
            continue
        views = max(runs[0]["views"], key=int)
        vp = np.mean([r["views"][views]["val_probs"] for r in runs], axis=0)
        tp = np.mean([r["views"][views]["test_probs"] for r in runs], axis=0)
        thr = best_threshold(runs[0]["val_label"], vp)
        out[k] = {"views": views, "metrics": metrics(runs[0]["test_label"], tp, thr)}
    return out


def table(results: dict, *, folds: list[int], seeds: list[int]) -> str:
    rows = [
        "| candidate | runs (folds x seeds) | atypical balanced accuracy @ val thr | "
        "atypical ROC AUC | s per run | s per epoch |",
        "|---|---|---|---|---|---|",
    ]
    names = [n for n in CANDIDATES if any(k.startswith(f"{n}|") for k in results)]
    for name in names:
        runs = {
            (k, s): results[f"{name}|fold{k}|seed{s}"]
            for k in folds
            for s in seeds
            if f"{name}|fold{k}|seed{s}" in results
        }
        if not runs:
            continue
        all_views = sorted({v for r in runs.values() for v in r["views"]}, key=int)
        secs = [r["seconds"] for r in runs.values()]
        ep = [
            e["train_seconds"] + e.get("val_seconds", 0)
            for r in runs.values()
            for h in r.get("history", [])
            for e in h
        ]
        for v in all_views:
            ms = [r["views"][v]["metrics"] for r in runs.values() if v in r["views"]]
            label = (
                "baseline: bundled recipe retrained per fold (atypical head, "
                f"{v} view{'s' if int(v) > 1 else ''})"
                if name == "head"
                else f"{name} ({v} view{'s' if int(v) > 1 else ''})"
            )
            rows.append(
                f"| {label} | {len({k for k, _ in runs})} x {len({s for _, s in runs})} | "
                f"{_fmt([m['balanced_accuracy'] for m in ms])} | {_fmt([m['roc_auc'] for m in ms])} "
                f"| {np.mean(secs):.0f} | {np.mean(ep) if ep else float('nan'):.0f} |"
            )
        if name != "head":
            ens = ensemble_rows(results, name, folds, seeds)
            if ens:
                ms = [e["metrics"] for e in ens.values()]
                v = next(iter(ens.values()))["views"]
                rows.append(
                    f"| {name}, ensemble of seeds {'+'.join(map(str, seeds))} ({v} views) | "
                    f"{len(ens)} x 1 | {_fmt([m['balanced_accuracy'] for m in ms])} | "
                    f"{_fmt([m['roc_auc'] for m in ms])} | | |"
                )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--folds", type=int, default=3)
    ap.add_argument("--run-folds", default=None, help="comma-separated fold indices (default all)")
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--candidates", default="dedicated,head", help=", ".join(CANDIDATES))
    ap.add_argument("--config", default=str(ROOT / "configs" / "atypical.toml"))
    ap.add_argument("--epochs", type=int, default=None, help="override the config's epochs")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--cache", type=Path, default=CACHE, help="crop / sample / member cache")
    ap.add_argument("--json", type=Path, default=None, help="results (read to resume, written)")
    ap.add_argument("--quick", action="store_true", help="tiny data and training: a check only")
    ap.add_argument("--report", action="store_true", help="print the table of --json and exit")
    args = ap.parse_args(argv)
    if args.json is None:
        args.json = CACHE / ("atypical_cv_quick.json" if args.quick else "atypical_cv.json")
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    folds = list(range(args.folds))
    run_folds = folds if args.run_folds is None else [int(f) for f in args.run_folds.split(",")]
    results: dict = json.loads(args.json.read_text()) if args.json.is_file() else {}
    if args.report:
        print(table(results, folds=folds, seeds=seeds))
        return 0
    names = [n.strip() for n in args.candidates.split(",") if n.strip()]
    bad = sorted(set(names) - set(CANDIDATES))
    if bad:
        print(f"unknown candidates {bad}; choose from {list(CANDIDATES)}", file=sys.stderr)
        return 2
    if not (DATA / "amibr-train" / "labels.csv").is_file():
        print(f"no AMi-Br crops at {DATA / 'amibr-train'}", file=sys.stderr)
        return 2

    import torch

    from mitoscope.train.atypical import (
        AtypicalConfig,
        coerce_config,
        load_amibr_crops,
        load_atypical_config,
    )
    from mitoscope.train.data import slide_folds

    torch.set_num_threads(int(args.threads))
    fields = load_atypical_config(args.config)
    fields.update(data_dir=str(DATA / "amibr-train"), cache_dir=str(args.cache), progress=False)
    fields.update(threads=int(args.threads))
    limit = None
    if args.quick:
        limit = 240
        fields.update(epochs=1, samples_per_epoch=32, batch_size=16, tta_views=4, val_fraction=0.3)
    elif args.epochs is not None:
        fields.update(epochs=int(args.epochs))
    base = AtypicalConfig(**coerce_config(fields)).validate()
    crops_by_size: dict[int, object] = {}

    def crops_for(size: int):
        if size not in crops_by_size:
            crops_by_size[size] = load_amibr_crops(
                base.data_dir, mpp=base.input_mpp, size_px=size, limit=limit,
                cache_dir=args.cache, progress=False,
            )  # fmt: skip
        return crops_by_size[size]

    samples = None
    t_all = time.time()
    for name in names:
        for k in run_folds:
            for seed in seeds:
                key = f"{name}|fold{k}|seed{seed}"
                if key in results:
                    print("cached", key, flush=True)
                    continue
                if name == "head":
                    if samples is None:
                        from mitoscope.train.samples import build_amibr_samples

                        samples = build_amibr_samples(
                            DATA / "amibr-train", cache_dir=args.cache, limit=limit, progress=False
                        )
                    mask = slide_folds(samples.slide, n_folds=args.folds, seed=0)[k]
                    res = run_head(samples, mask, seed, args)
                else:
                    size = int(DEDICATED[name].get("patch_size_px", base.patch_size_px))
                    crops = crops_for(size)
                    mask = slide_folds(crops.slide, n_folds=args.folds, seed=0)[k]
                    res = run_dedicated(name, base, crops, mask, seed, args)
                results[key] = res
                args.json.parent.mkdir(parents=True, exist_ok=True)
                tmp = args.json.with_name(f".{args.json.name}.tmp")
                tmp.write_text(json.dumps(results))
                os.replace(tmp, args.json)
                print(
                    key,
                    json.dumps({v: r["metrics"] for v, r in res["views"].items()}),
                    f"{res['seconds']} s",
                    flush=True,
                )
    print(f"total {time.time() - t_all:.0f} s; results in {args.json}")
    print(table(results, folds=folds, seeds=seeds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
