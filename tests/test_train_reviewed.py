"""Training from reviewed run databases (``reviewed`` source): real AMi-Br crops tiled into region
images, their labelled objects written as a run's detections, answered through the review app's
store (some equivocal, some contested), then read back with their review weights, which reach
the MF loss."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import shared_file
from mitoscope.errors import InvalidInputError
from mitoscope.train.samples import KIND_CANDIDATE, KIND_CENTRE, KIND_IMPOSTER

pytest.importorskip("lightning")

from test_train_sources import MPP, _tile

ANSWER = {"mitotic figure": "mitotic", "atypical mitotic figure": "atypical",
          "not mitotic figure": "not"}  # fmt: skip


def _plan(i: int) -> str:
    """What the reviewers do with the i-th item (by uid)."""
    return {3: "contested", 5: "equivocal", 6: "open"}.get(i % 7, "answered")


@pytest.fixture(scope="module")
def reviewed(tmp_path_factory) -> dict:
    """A run database over 3 region images, one detection per labelled object, reviewed."""
    from mitoscope.io.sliderunner import SlideRunnerDB
    from mitoscope.review.store import ReviewStore
    from mitoscope.types import Detections

    base = tmp_path_factory.mktemp("reviewed")
    images = _tile(shared_file("amibr-train"), base / "slides")
    run = base / "run"
    run.mkdir()
    truth: dict[tuple[str, int, int], str] = {}
    with SlideRunnerDB(run / "mitoscope.sqlite") as db:
        for im in images:
            xs = np.array([x for x, _, _ in im["labels"]], float)
            ys = np.array([y for _, y, _ in im["labels"]], float)
            p = np.array([0.2 if "not" in c else 0.9 for *_, c in im["labels"]])
            dets = Detections(
                x_px=xs, y_px=ys, mf_probability=p, atypical_probability=np.full(len(p), 0.1),
                area_um2=np.full(len(p), 30.0),
            )  # fmt: skip
            db.add_slide(
                im["file"], width=im["width"], height=im["height"], directory=str(base / "slides"),
                detections=dets, threshold=0.5, include_negatives=True,
            )  # fmt: skip
            for x, y, c in im["labels"]:
                truth[(im["file"], int(x), int(y))] = ANSWER[c]
    store = ReviewStore(run)
    plan: dict[int, str] = {}
    for i, uid in enumerate(sorted(store.by_uid)):
        it = store.by_uid[uid]
        answer = truth[(it.slide_name, int(it.x), int(it.y))]
        plan[uid] = _plan(i)
        if plan[uid] == "answered":
            store.answer(uid, "alice", answer)
        elif plan[uid] == "contested":
            store.answer(uid, "alice", "equivocal")
            store.answer(uid, "bob", answer)
        elif plan[uid] == "equivocal":
            store.answer(uid, "alice", "equivocal")
            store.answer(uid, "bob", "equivocal")
    where = {uid: (store.by_uid[uid].slide_name, store.by_uid[uid].x, store.by_uid[uid].y)
             for uid in plan}  # fmt: skip
    return {"run": run, "slides": base / "slides", "plan": plan, "truth": truth, "where": where,
            "cache": base / "cache"}  # fmt: skip


#: the down-weighting the sample and training tests share (their samples are cached once)
DOWN = {"contested_weight": 0.5, "equivocal_as": "not", "equivocal_weight": 0.25}


def _spec(reviewed: dict, **kw) -> dict:
    return {"type": "reviewed", "path": str(reviewed["run"]), "images": str(reviewed["slides"]),
            "mpp": MPP, **kw}  # fmt: skip


def test_reviewed_source_reads_latest_answers_with_their_weights(reviewed):
    from mitoscope.io.reviewed import read_reviewed
    from mitoscope.train.sources import build_source_samples, source_labels

    plan = reviewed["plan"]
    n = {k: sum(1 for v in plan.values() if v == k) for k in set(plan.values())}
    assert n["contested"] >= 2 and n["equivocal"] >= 2 and n["open"] >= 2
    # default: equivocal and unanswered items left out, contested ones count fully
    lab = source_labels(_spec(reviewed))
    assert not lab.exhaustive
    assert len(lab.ann) == n["answered"] + n["contested"]
    assert (lab.ann.agreement == 1.0).all()
    # down-weighted: contested at 0.5, still-equivocal kept as "not" at 0.25
    ann = read_reviewed(reviewed["run"], contested_weight=0.5, equivocal_as="not",
                        equivocal_weight=0.25)  # fmt: skip
    assert len(ann) == len(plan) - n["open"]
    want_w = {"answered": 1.0, "contested": 0.5, "equivocal": 0.25}
    for uid, w, is_mf in zip(ann.uid, ann.agreement, ann.is_mitosis, strict=True):
        kind = plan[int(uid)]
        assert w == want_w[kind]
        slide, x, y = reviewed["where"][int(uid)]
        truth = reviewed["truth"][(slide, int(x), int(y))]
        assert is_mf == (truth != "not" if kind != "equivocal" else False)
    # the samples: one per reviewed detection (no candidate negatives), weight as mf_agreement
    s = build_source_samples(
        [_spec(reviewed, **DOWN)], mpp=MPP, size_px=100, cache_dir=str(reviewed["cache"]),
        progress=False,
    )  # fmt: skip
    assert len(s) == len(ann)
    assert not (s.kind == KIND_CANDIDATE).any()
    assert int((s.kind == KIND_CENTRE).sum()) == int(ann.is_mitosis.sum())
    assert int((s.kind == KIND_IMPOSTER).sum()) == int((~ann.is_mitosis).sum())
    # samples follow the labels' order per image: the weights are the labels' weights
    order = np.lexsort((ann.y_px, ann.x_px, ann.image))
    got = np.sort(s.mf_agreement)
    np.testing.assert_allclose(got, np.sort(ann.agreement[order]).astype(np.float32))
    assert set(np.round(s.mf_agreement, 3).tolist()) == {1.0, 0.5, 0.25}
    # contested answers that decided a mitosis stay positives at weight 0.5
    assert ((s.mf_agreement == 0.5) & (s.is_mf == 1)).any()


def test_weights_need_the_agreement_loss_and_bad_weights_are_one_line_errors(reviewed, tmp_path):
    from mitoscope.train.train import TrainConfig

    spec = _spec(reviewed, contested_weight=0.5)
    for loss in ("hard", "soft"):
        with pytest.raises(InvalidInputError, match='mf_loss = "agreement"'):
            TrainConfig(sources=(spec,), mf_loss=loss, arch="tiny_cnn").validate()
    TrainConfig(sources=(spec,), mf_loss="agreement", arch="tiny_cnn").validate()
    TrainConfig(sources=(_spec(reviewed),), arch="tiny_cnn").validate()  # weights all 1: fine
    from mitoscope.train.sources import source_labels

    for bad in ({"contested_weight": 1.5}, {"equivocal_as": "maybe"}):
        with pytest.raises(InvalidInputError) as e:
            source_labels(_spec(reviewed, **bad))
        assert "\n" not in str(e.value)
    empty = tmp_path / "run"
    empty.mkdir()
    from mitoscope.io.sliderunner import SlideRunnerDB

    with SlideRunnerDB(empty / "mitoscope.sqlite") as db:
        db.add_slide("region0.png", width=256, height=256)
    with pytest.raises(InvalidInputError, match="no reviewed detections"):
        source_labels({**_spec(reviewed), "path": str(empty)})


def test_review_weights_reach_the_mf_loss(reviewed):
    """The batch the training loader gives carries each sample's review weight, and the
    ``agreement`` MF loss is the weight-normalised BCE of exactly those weights."""
    import torch
    from torch.nn import functional as F

    from mitoscope.classify.registry import create_model, get_spec
    from mitoscope.train.data import PatchDataset
    from mitoscope.train.module import MitosisModule
    from mitoscope.train.sources import build_source_samples

    s = build_source_samples(
        [_spec(reviewed, **DOWN)], mpp=MPP, size_px=100, cache_dir=str(reviewed["cache"]),
        progress=False,
    )  # fmt: skip
    torch.manual_seed(0)
    net = create_model("tiny_cnn", pretrained=False)
    ds = PatchDataset(s, size_px=get_spec("tiny_cnn").patch_size_px, augment=False)
    batch = torch.utils.data.default_collate([ds[i] for i in range(len(ds))])
    np.testing.assert_allclose(batch["mf_agreement"].numpy(), s.mf_agreement)
    mod = MitosisModule(net, mf_loss="agreement", multitask=False).eval()
    with torch.no_grad():
        logits = net(batch["image"], batch["mask"])["mf"].float()
        got = mod.losses(batch)["mf"]
        w = batch["mf_agreement"]
        per = F.binary_cross_entropy_with_logits(logits, batch["is_mf"], reduction="none")
        assert torch.isclose(got, (per * w).sum() / w.sum(), rtol=1e-5)
        # the same labels at full weight give another loss: the weights change training
        ones = dict(batch, mf_agreement=torch.ones_like(w))
        full = mod.losses(ones)["mf"]
        assert torch.isclose(full, per.mean(), rtol=1e-5)
        assert not torch.isclose(got, full, rtol=1e-4)
    # a down-weighted sample's gradient shrinks by its weight (per unit of its own BCE slope)
    low = int(np.flatnonzero(s.mf_agreement == 0.25)[0])
    one = int(np.flatnonzero(s.mf_agreement == 1.0)[0])
    x = torch.zeros(len(s), requires_grad=True)
    loss = mod._mf_loss(logits.detach() + x, batch)
    loss.backward()
    g = x.grad.abs() / per.detach().new_tensor(
        [abs(torch.sigmoid(logits[i]).item() - batch["is_mf"][i].item()) for i in range(len(s))]
    )
    assert torch.isclose(g[low] / g[one], torch.tensor(0.25), rtol=1e-4)


def test_fast_dev_run_from_a_reviewed_database(reviewed, tmp_path, monkeypatch):
    from mitoscope.classify import load_classifier
    from mitoscope.train import module as module_mod
    from mitoscope.train.train import TrainConfig, train

    seen: list = []
    original = module_mod.MitosisModule._mf_loss

    def spy(self, logits, batch):
        seen.append((self.mf_loss, batch["mf_agreement"].detach().clone()))
        return original(self, logits, batch)

    monkeypatch.setattr(module_mod.MitosisModule, "_mf_loss", spy)
    cfg = TrainConfig(
        arch="tiny_cnn", fast_dev_run=True, batch_size=32, progress=False,
        cache_dir=str(reviewed["cache"]), val_fraction=0.34, out=str(tmp_path / "m.pt"),
        mf_loss="agreement", sources=(_spec(reviewed, **DOWN),),
    )  # fmt: skip
    res = train(cfg)
    assert res.path is not None and res.path.is_file()
    assert seen and all(loss == "agreement" for loss, _ in seen)
    weights = np.concatenate([w.numpy() for _, w in seen])
    assert len(weights) > 0 and set(np.round(weights, 3).tolist()) <= {1.0, 0.5, 0.25}
    card = load_classifier(res.path, device="cpu").card
    assert card["data"]["sample_meta"]["sources"][0]["type"] == "reviewed"
    assert card["config"]["mf_loss"] == "agreement"


def test_cli_trains_from_reviewed_answers_and_refuses_weights_without_agreement(
    reviewed, tmp_path, capsys
):
    from mitoscope.cli import main

    src = (f"reviewed:{reviewed['run']},images={reviewed['slides']},mpp={MPP},"
           "contested_weight=0.5")  # fmt: skip
    code = main(["train", "--source", src, "--arch", "tiny_cnn", "--fast-dev-run",
                    "--cache-dir", "none", "--out", str(tmp_path / "bad.pt")])  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("mitoscope: error: "), err
    assert "mf_loss" in err[0]
    assert not (tmp_path / "bad.pt").exists()
    # with the loss that applies the weights it trains (the samples cached by the tests above)
    src = f"reviewed:{reviewed['run']},images={reviewed['slides']},mpp={MPP}," + ",".join(
        f"{k}={v}" for k, v in DOWN.items()
    )
    out = tmp_path / "ok.pt"
    code = main(["train", "--source", src, "--arch", "tiny_cnn", "--fast-dev-run", "--mf-loss",
                 "agreement", "--cache-dir", str(reviewed["cache"]), "--out", str(out)])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    assert out.is_file()
