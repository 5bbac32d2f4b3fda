"""``mitoscope select --strategy disagreement``: the spread of a classifier's members and views
on a run's detections, scored again from the slide (a real tissue image of ../shared/data with
the classical proposer's nuclei as detections; tiny random two-member classifiers)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import shared_file
from mitoscope.errors import InvalidInputError

torch = pytest.importorskip("torch")


def _tiny(path: Path, seeds: tuple[int, ...]) -> Path:
    from mitoscope.classify.checkpoint import save_checkpoint
    from mitoscope.classify.registry import create_model

    members = []
    for s in seeds:
        torch.manual_seed(s)
        members.append(create_model("tiny_cnn").state_dict())
    return save_checkpoint(
        path, arch="tiny_cnn", members=members, arch_kwargs={"use_mask": True}, input_mpp=0.25,
        patch_size_px=32, threshold=0.5, atypical_threshold=0.5,
    )  # fmt: skip


@pytest.fixture(scope="module")
def tissue_run(tmp_path_factory) -> dict:
    """A run over a corner of a real tissue image (MoNuSeg, 0.2527 um/px) whose detections are
    12 nuclei the classical proposer finds; its summary.json records the pixel size."""
    import csv

    from PIL import Image

    from mitoscope.candidates import get_proposer
    from mitoscope.io.sliderunner import SlideRunnerDB
    from mitoscope.types import Detections

    root = shared_file("tissue")
    with open(root / "images.csv", newline="") as f:
        row = next(csv.DictReader(f))
    base = tmp_path_factory.mktemp("sel")
    slides, run = base / "slides", base / "run"
    slides.mkdir()
    run.mkdir()
    src = root / row["file"]
    mpp = float(row["mpp"])
    img = np.asarray(Image.open(src).convert("RGB"))[:384, :384]  # a corner keeps it quick
    Image.fromarray(img).save(slides / src.name)
    cands = get_proposer("classical").propose(img, mpp=mpp)
    keep = np.flatnonzero(
        (cands.x_px > 40) & (cands.y_px > 40)
        & (cands.x_px < img.shape[1] - 40) & (cands.y_px < img.shape[0] - 40)
    )[::2][:12]  # fmt: skip
    assert len(keep) == 12
    rng = np.random.default_rng(0)
    dets = Detections(
        x_px=cands.x_px[keep], y_px=cands.y_px[keep], mf_probability=rng.uniform(0.05, 0.95, 12),
        atypical_probability=np.full(12, 0.1), area_um2=np.full(12, 30.0),
    )  # fmt: skip
    with SlideRunnerDB(run / "mitoscope.sqlite") as db:
        db.add_slide(
            src.name, width=img.shape[1], height=img.shape[0], directory=str(slides),
            detections=dets, threshold=0.5, include_negatives=True,
        )  # fmt: skip
    summary = {"slide": src.name, "mpp": mpp, "threshold": 0.5}
    (run / f"{src.stem}.summary.json").write_text(json.dumps(summary))
    return {"run": run, "slides": slides, "base": base}


def test_member_view_spread_matches_the_classifier(tissue_run):
    """The per-member, per-view probabilities average to what the classifier itself gives, and
    their spread is the disagreement select ranks by."""
    from mitoscope.classify import load_classifier
    from mitoscope.review.disagreement import (
        classifier_disagreement,
        detection_patches,
        disagreement,
        member_view_probabilities,
    )  # fmt: skip
    from mitoscope.review.store import ReviewStore
    from mitoscope.slide import open_slide

    clf = load_classifier(_tiny(tissue_run["base"] / "two.pt", (0, 1)), device="cpu",
                          backend="torch")  # fmt: skip
    store = ReviewStore(tissue_run["run"])
    items = sorted(store.items, key=lambda it: it.uid)
    path = tissue_run["slides"] / items[0].slide_name
    with open_slide(path, mpp=0.2527) as reader:
        patches, masks = detection_patches(reader, [(it.x, it.y) for it in items], clf)
    assert patches.shape == (12, 32, 32, 3) and masks.shape == (12, 32, 32)
    from mitoscope.classify.patches import disc_mask

    disc = disc_mask(32, 3.0 / 0.25)  # the fallback when the proposer finds no object there
    assert sum(not np.array_equal(m, disc) for m in masks) >= 9  # the nuclei are found again
    probs = member_view_probabilities(clf, patches, masks, views=4)
    assert probs.shape == (12, 8)
    mean, _ = clf.predict_patches(patches, masks)  # the ensemble, first view
    np.testing.assert_allclose(probs[:, :2].mean(axis=1), mean, rtol=1e-5, atol=1e-6)
    d = disagreement(probs)
    np.testing.assert_allclose(d, probs.std(axis=1))
    assert (d > 0).all()
    # the scorer select uses reads the slides again and gives the same numbers
    scorer = classifier_disagreement(clf, tissue_run["slides"], views=4)
    got = scorer(store, [it.uid for it in items])
    np.testing.assert_allclose([got[it.uid] for it in items], d, rtol=1e-5, atol=1e-7)
    # one member agrees with itself in one view: that is not an ensemble
    one = load_classifier(_tiny(tissue_run["base"] / "one.pt", (0,)), device="cpu",
                          backend="torch")  # fmt: skip
    with pytest.raises(InvalidInputError, match="--views"):
        classifier_disagreement(one, tissue_run["slides"], views=1)
    assert classifier_disagreement(one, tissue_run["slides"], views=2)(store, [items[0].uid])


def test_disagreement_strategy_picks_the_largest_spread_across_slides(tmp_path):
    from mitoscope.review.select import select_for_review
    from mitoscope.review.store import ReviewStore
    from review_helpers import make_run

    run_a, _ = make_run(tmp_path / "a", probs=(0.50, 0.51, 0.52, 0.99, 0.98))
    run_b, _ = make_run(tmp_path / "b", probs=(0.60, 0.97, 0.96))
    # spreads keyed by probability: the confident 0.99 / 0.97 split the ensemble most
    spread = {0.50: 0.01, 0.51: 0.02, 0.52: 0.03, 0.99: 0.40, 0.98: 0.30, 0.60: 0.05, 0.97: 0.25,
              0.96: 0.01}  # fmt: skip
    calls = []

    def scorer(store: ReviewStore, uids: list[int]) -> dict[int, float]:
        calls.append(len(uids))
        return {u: spread[store.by_uid[u].probability] for u in uids}

    store_a = ReviewStore(run_a)
    done = next(u for u in store_a.by_uid if store_a.by_uid[u].probability == 0.99)
    store_a.answer(done, "alice", "not")  # answered ones are neither scored nor chosen
    items = select_for_review([run_a, run_b], budget=3, strategy="disagreement",
                              disagreement=scorer)  # fmt: skip
    assert calls == [4, 3]
    got = [(Path(i["db"]).parent.parent.name, i["probability"], i["score"]) for i in items]
    # keys d / (1 + k): a's 0.98 -> 0.30; b's 0.97 -> 0.25; a's next best 0.52 -> 0.03 / 2
    # loses to b's 0.60 -> 0.05 / 2
    assert got == [("a", 0.98, 0.3), ("b", 0.97, 0.25), ("b", 0.60, 0.025)]
    assert all(i["strategy"] == "disagreement" and "disagreement" in i for i in items)
    plain = select_for_review([run_a, run_b], budget=3)  # uncertainty: another choice
    assert [i["probability"] for i in plain] != [i["probability"] for i in items]
    with pytest.raises(InvalidInputError, match="classifier"):
        select_for_review([run_a], budget=2, strategy="disagreement")
    with pytest.raises(InvalidInputError, match="strategy"):
        select_for_review([run_a], budget=2, strategy="entropy")


def _cli(args: list[str], capsys) -> tuple[int, list[str], list[str]]:
    from mitoscope.cli import main

    rc = main(args)
    cap = capsys.readouterr()
    return rc, cap.out.strip().splitlines(), cap.err.strip().splitlines()


def test_cli_select_by_disagreement_and_its_bad_input(tissue_run, tmp_path, capsys):
    model = _tiny(tmp_path / "two.pt", (0, 1))
    out = tmp_path / "queue.json"
    rc, lines, err = _cli(
        ["select", str(tissue_run["run"]), "--budget", "4", "--strategy", "disagreement",
         "--slides", str(tissue_run["slides"]), "--model", str(model), "--views", "2",
         "--out", str(out)], capsys,
    )  # fmt: skip
    assert rc == 0, err
    assert lines[-1].startswith("4 detections chosen")
    items = json.loads(out.read_text())["items"]
    d = [i["disagreement"] for i in items]
    assert len(items) == 4 and all(i["strategy"] == "disagreement" for i in items)
    assert d[0] == max(d) > 0  # one slide: the largest spread first (then 1/(1+k) each)
    one = _tiny(tmp_path / "one.pt", (0,))
    bad = [
        (["--strategy", "disagreement"], "--slides"),
        (["--strategy", "disagreement", "--slides", str(tissue_run["slides"]), "--model",
          str(one), "--views", "1"], "--views"),
        (["--strategy", "disagreement", "--slides", str(tissue_run["slides"]), "--views", "9"],
         "--views"),
        (["--strategy", "entropy"], "--strategy"),
    ]  # fmt: skip
    for args, expect in bad:
        rc, _, err = _cli(["select", str(tissue_run["run"]), "--budget", "2", "--out",
                           str(tmp_path / "bad.json"), *args], capsys)  # fmt: skip
        assert rc == 2 and len(err) == 1 and expect in err[0], (args, err)
        assert not (tmp_path / "bad.json").exists()


def test_min_dist_is_in_micrometres_with_each_slides_pixel_size(tmp_path, capsys):
    """--min-dist-um becomes pixels with the mpp of each slide's summary.json; a slide without
    one is refused (never an assumed 0.25 um/px) unless the distance rule is off."""
    from mitoscope.review.select import select_for_review
    from review_helpers import make_run

    run, _ = make_run(tmp_path / "r", probs=(0.50, 0.51, 0.52, 0.53, 0.54, 0.55))
    # neighbours 73.8 px apart (56 px in x, 48 in y), others 147 px and more
    summary = next(run.glob("*.summary.json"))

    def chosen(**kw) -> list[float]:
        return [i["probability"] for i in select_for_review([run], budget=6, **kw)]

    assert chosen() == [0.50, 0.51, 0.52, 0.53, 0.54, 0.55]  # 12.5 um = 50 px at 0.25 um/px
    assert chosen(min_dist_um=20.0) == [0.50, 0.52, 0.54]  # 80 px: each neighbour too close
    meta = json.loads(summary.read_text())
    summary.write_text(json.dumps({**meta, "mpp": 0.5}))  # 20 um = 40 px: none too close
    assert chosen(min_dist_um=20.0) == [0.50, 0.51, 0.52, 0.53, 0.54, 0.55]
    assert chosen(min_dist_um=40.0) == [0.50, 0.52, 0.54]  # 80 px again
    for bad in (-1.0, float("nan")):
        with pytest.raises(InvalidInputError, match="--min-dist-um"):
            chosen(min_dist_um=bad)
    summary.write_text(json.dumps({k: v for k, v in meta.items() if k != "mpp"}))
    with pytest.raises(InvalidInputError, match="pixel size unknown for 'slide.png'"):
        chosen()
    assert len(chosen(min_dist_um=0)) == 6  # no distance rule: no pixel size needed
    # the command: one line on stderr, exit 2, no queue written
    out = tmp_path / "queue.json"
    rc, _, err = _cli(["select", str(run), "--budget", "2", "--out", str(out)], capsys)
    assert rc == 2 and len(err) == 1 and "pixel size unknown" in err[0], err
    assert "--min-dist-um 0" in err[0] and not out.exists()
    rc, lines, err = _cli(
        ["select", str(run), "--budget", "6", "--min-dist-um", "0", "--out", str(out)], capsys
    )
    assert rc == 0, err
    assert lines[-1] == "6 detections chosen on 1 slide(s)"
    summary.unlink()  # no summary.json at all
    rc, _, err = _cli(["select", str(run), "--budget", "2", "--out", str(out)], capsys)
    assert rc == 2 and len(err) == 1 and "pixel size unknown" in err[0], err
