"""``curate crowd``: consensus, agreement and soft labels from the real MIDOG++, TUPAC and AMi-Br
rater votes; Ji et al.'s event-tile sampling; bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import shared_file
from mitoscope.cli import main
from mitoscope.curate.crowd import (
    EventTileSampler,
    aggregate,
    crowd_summary,
    crowd_table,
    read_votes,
)


def test_rules_on_hand_made_votes():
    cols = {
        "image": ["a"] * 5,
        "x_px": [1, 2, 3, 4, 5],
        "y_px": [1, 2, 3, 4, 5],
        "uid": list("12345"),
        "raters": [["r1", "r2"], ["r1", "r2"], ["r1", "r2", "r3"], ["r1", "r2", "r3"], ["r1"]],
        "votes": [[1, 1], [1, 0], [0, 1, 1], [0, 0, None], [None]],
        "stored": [1, 0, 1, 0, 1],
    }
    df = aggregate(cols, source="t", task="mitosis")
    assert df["consensus"].tolist() == [1, 0, 1, 0, 1]  # the tie takes the stored label
    assert df["soft_label"].tolist()[:4] == [1.0, 0.5, 2 / 3, 0.0]
    assert np.allclose(df["agreement"].tolist()[:4], [1.0, 0.5, 2 / 3, 1.0])
    assert np.isnan(df["agreement"][4]) and df["n_raters"].tolist() == [2, 2, 3, 2, 0]
    assert df["rule_unanimous"].tolist() == [1, 0, 0, 0, -1]
    assert df["rule_any"].tolist() == [1, 1, 1, 0, -1]
    assert df["rule_first"].tolist() == [1, 1, 0, 0, -1]
    s = crowd_summary(df)["t/mitosis"]
    assert s["rules_vs_stored"]["unanimous"] == {"changed": 1, "pos_to_neg": 1, "neg_to_pos": 0}
    assert s["rules_vs_stored"]["any"]["neg_to_pos"] == 1 and s["ties_resolved_by_stored"] == 1


def test_real_midogpp_votes():
    path = shared_file("annotations", "MIDOGpp.json")
    from mitoscope.io.midog import read_midogpp_json

    df = crowd_table([path])
    s = crowd_summary(df)["midog++/mitosis"]
    assert s["objects"] == 26286 and s["positives_stored"] == 11937
    assert s["raters_per_object"] == {2: 17727, 3: 8559}
    # the stored category is the majority of the votes for every object
    assert s["rules_vs_stored"]["majority"]["changed"] == 0
    assert s["agreement_histogram"] == {"0.667": 5515, "1.000": 20771}
    assert s["rules_vs_stored"]["unanimous"]["changed"] == 3020
    assert s["rules_vs_stored"]["any"]["changed"] == 2495
    # agreement equals the reader's (share of votes equal to the category)
    ann = read_midogpp_json(path)
    assert np.allclose(df["agreement"].to_numpy(), ann.agreement)


def test_real_tupac_votes_and_table_read_by_training(tmp_path, capsys):
    path = shared_file("annotations", "TUPAC_alternativeLabels_augmented_training.sqlite")
    out, summary = tmp_path / "tupac.csv", tmp_path / "tupac.json"
    assert main(["curate", "crowd", str(path), "--out", str(out), "--summary", str(summary)]) == 0
    said = capsys.readouterr().out
    assert "sliderunner/mitosis: 12482 objects" in said
    s = json.loads(summary.read_text())["sliderunner/mitosis"]
    assert s["agreement_histogram"] == {"0.500": 1182, "1.000": 11300}
    assert s["rules_vs_stored"]["unanimous"]["changed"] == 234
    assert s["rules_vs_stored"]["any"]["changed"] == 948
    assert set(s["cohen_kappa"]) == {"Christof~Robert"}
    # mitoscope train's csv source reads the table: labels, agreement, raters
    from mitoscope.train.sources import source_labels

    lab = source_labels({"type": "csv", "path": str(out)}, check_images=False)
    ann = lab.ann
    assert len(ann) == 12482 and int(ann.is_mitosis.sum()) == 1999
    assert set(np.round(ann.agreement, 3)) == {0.5, 1.0}
    assert int((ann.n_raters == 2).sum()) == 12481


def test_real_amibr_expert_votes():
    path = shared_file("amibr-train", "labels.csv")
    from mitoscope.io.amibr import read_amibr_labels

    cols, source, task = read_votes(path)
    assert (source, task) == ("amibr", "atypia")
    df = aggregate(cols, source=source, task=task)
    ann = read_amibr_labels(path)
    assert np.allclose(df["agreement"].to_numpy(), ann.agreement)
    assert (df["is_atypical"].to_numpy() == ann.atypical).all()


def test_event_tile_sampler():
    xy = np.array([[100.0, 100.0], [600.0, 600.0], [960.0, 30.0]])
    s = EventTileSampler(
        ["a", "a", "b"], xy[:, 0], xy[:, 1], {"a": (1000, 1000), "b": (1000, 500)},
        agreement=[1.0, 0.5, 1.0],
    )  # fmt: skip
    draws = s.sample(3000, seed=0)
    counts = np.bincount([d[0] for d in draws], minlength=3)
    assert (np.abs(counts / 3000 - 1 / 3) < 0.04).all()  # events drawn equally often
    for i, img, x0, y0 in draws[:300]:
        x, y = xy[i]
        assert img == ["a", "a", "b"][i]
        assert x0 <= x - 25 and x + 25 <= x0 + 250 and y0 <= y - 25 and y + 25 <= y0 + 250
    # event 1 lies in 4 tiles of the 250/125 grid; every one is drawn
    assert len(s.tiles_of(1)) == 4
    assert {(x0, y0) for i, _, x0, y0 in draws if i == 1} == set(s.tiles_of(1))
    assert s.targets("a", 500, 500) == pytest.approx(0.5)  # whole box, agreement 0.5
    assert s.targets("a", 0, 0) == pytest.approx(1.0)
    assert s.targets("a", 75, 0) == pytest.approx(1.0)  # box 75..125 px: still inside
    assert s.targets("a", 100, 0) == pytest.approx(0.5)  # half of event 0's box
    with pytest.raises(Exception, match="size"):
        EventTileSampler(["c"], [1.0], [1.0], {"a": (10, 10)})
    # the class lives in mitoscope.train (train-detector's sampling = "event_tile" draws with it)
    from mitoscope.train.event_tiles import EventTileSampler as in_train

    assert EventTileSampler is in_train
    i, img, x0, y0 = s.draw(np.random.default_rng(1))  # one draw with the caller's generator
    assert (x0, y0) in s.tiles_of(i) and img == ["a", "a", "b"][i]


@pytest.mark.parametrize(
    "case",
    ["geojson", "not_csv", "twice", "json_without_votes", "unknown_format", "csv_without_votes",
     "no_output_folder"],
)  # fmt: skip
def test_bad_input_one_line_exit_2(case, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    table = out / "t.csv"
    labels = [str(tmp_path / "x.geojson")]
    if case == "geojson":
        (tmp_path / "x.geojson").write_text('{"type": "FeatureCollection", "features": []}')
    elif case == "not_csv":
        labels = [str(shared_file("amibr-train", "labels.csv"))]
        table = out / "t.xlsx"
    elif case == "twice":
        p = str(shared_file("amibr-train", "labels.csv"))
        labels = [p, p]
    elif case == "json_without_votes":
        (tmp_path / "x.json").write_text('{"type": "Multiple points", "points": []}')
        labels = [str(tmp_path / "x.json")]
    elif case == "unknown_format":
        (tmp_path / "x.xyz").write_text("1 2 3\n")
        labels = [str(tmp_path / "x.xyz")]
    elif case == "csv_without_votes":  # a real CSV of ../shared that is not a vote table
        labels = [str(shared_file("annotations", "MIDOGpp_datasets_xvalidation.csv"))]
    elif case == "no_output_folder":
        labels = [str(shared_file("amibr-train", "labels.csv"))]
        table = out / "missing" / "t.csv"
    rc = main(["curate", "crowd", *labels, "--out", str(table)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith("mitoscope: error: "), (rc, err)
    assert list(out.iterdir()) == []


# -- training with the crowd table -------------------------------------------------------------
def test_training_samples_carry_the_labels_agreement(tmp_path):
    """A crowd table trains as a csv source: each labelled sample's ``mf_agreement`` is its
    label's agreement; proposer negatives and AMi-Br-style sources keep 1."""
    from PIL import Image

    from mitoscope.train.sources import build_source_samples

    src = shared_file("tissue", "images", "TCGA-18-5592-01Z-00-DX1.png")
    Image.open(src).convert("RGB").crop((0, 0, 400, 400)).save(tmp_path / "a.png")
    table = tmp_path / "crowd.csv"
    table.write_text(
        "image,x_px,y_px,label,agreement,n_raters\n"
        "a.png,100,100,mitotic figure,0.667,3\n"
        "a.png,300,250,non-mitotic figure,0.5,2\n"
    )
    s = build_source_samples(
        [{"type": "csv", "path": str(table), "mpp": 0.2527}], cache_dir="none", progress=False
    )
    lab = s.kind != 3  # KIND_CANDIDATE
    order = np.argsort(s.is_mf[lab])
    assert s.is_mf[lab][order].tolist() == [0, 1]
    assert np.allclose(s.mf_agreement[lab][order], [0.5, 0.667], atol=1e-4)
    assert (s.mf_agreement[~lab] == 1).all() and (s.agreement == 1).all()


def test_mf_loss_agreement_weighted_and_soft():
    torch = pytest.importorskip("torch")
    from mitoscope.train.module import MitosisModule

    m = {k: MitosisModule(torch.nn.Identity(), mf_loss=k) for k in ("hard", "agreement", "soft")}
    logits = torch.tensor([2.0, -1.0, 0.5])
    batch = {"is_mf": torch.tensor([1.0, 0.0, 1.0]), "mf_agreement": torch.tensor([1.0, 0.5, 0.6])}
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    per = bce(logits, batch["is_mf"], reduction="none")
    assert torch.isclose(m["hard"]._mf_loss(logits, batch), per.mean())
    w = batch["mf_agreement"]
    assert torch.isclose(m["agreement"]._mf_loss(logits, batch), (per * w).sum() / w.sum())
    soft = torch.tensor([1.0, 0.5, 0.6])  # share of raters calling each a mitotic figure
    assert torch.isclose(m["soft"]._mf_loss(logits, batch), bce(logits, soft))
    with pytest.raises(ValueError, match="mf_loss"):
        MitosisModule(torch.nn.Identity(), mf_loss="nope")
