"""Pooled metrics, AP / FROC as the MIDOG evaluators, threshold choice, statistics."""

from __future__ import annotations

import numpy as np
import pytest

from mitoscope.errors import InvalidInputError
from mitoscope.evaluate import (
    Counts,
    EvalImage,
    average_precision,
    balanced_accuracy,
    bootstrap_ci,
    choose_threshold,
    evaluate,
    froc_score,
    mann_whitney,
    roc_auc,
    roc_curve,
    score_images,
    threshold_sweep,
    tile_level_rates,
)

H = 0.01125  # the official half box (mm)


def test_counts_formulas_and_degenerate_cases():
    c = Counts(8, 2, 4)
    assert c.precision == 0.8
    assert c.recall == 8 / 12
    assert c.f1 == 16 / 22
    assert Counts(0, 0, 0).f1 == 1.0  # official: (0 + eps) / (0 + eps)
    assert Counts(0, 0, 0).precision == 0.0
    assert Counts(0, 3, 0).f1 == 0.0
    assert Counts(1, 2, 3) + Counts(1, 1, 1) == Counts(2, 3, 4)


def _img(name, truth, pred, score=None, names=None, **groups):
    return EvalImage(name, truth, pred, pred_score=score, pred_is_mitosis=names, groups=groups)


def test_pooling_is_over_counts_not_a_mean_of_f1():
    a = _img("a", [[0, 0]], [[0, 0]])  # 1 TP
    b = _img("b", [[0, 0], [1, 1], [2, 2]], np.zeros((0, 2)))  # 3 FN
    res = evaluate([a, b])
    assert res.overall == Counts(1, 0, 3)
    assert res.overall.f1 == pytest.approx(2 / 5)  # mean of per-image F1 would be 0.5


def test_groups_and_official_name_filter():
    a = _img("a", [[0, 0]], [[0, 0], [0.5, 0.5]], names=[True, False], tumor="breast")
    b = _img("b", [[0, 0]], [[0.001, 0]], tumor="lung")
    res = evaluate([a, b], by="tumor")
    # the non-mitotic named prediction is not an FP for F1
    assert res.overall == Counts(2, 0, 0)
    assert set(res.groups["tumor"]) == {"breast", "lung"}
    d = res.to_dict()
    for key in ("tp", "fp", "fn", "precision", "recall", "f1"):
        assert key in d and key in d["groups"]["tumor"]["breast"]


def test_threshold_uses_scores_not_names():
    a = _img("a", [[0, 0]], [[0, 0], [0.5, 0.5]], score=[0.9, 0.3], names=[False, True])
    assert Counts.total(score_images([a])) == Counts(0, 1, 1)
    assert Counts.total(score_images([a], threshold=0.5)) == Counts(1, 0, 0)
    assert Counts.total(score_images([a], threshold=0.2)) == Counts(1, 1, 0)


def test_choose_threshold_on_validation_then_apply_to_test():
    rng = np.random.default_rng(0)
    truth = rng.uniform(0, 1, (40, 2))
    fps = rng.uniform(0, 1, (40, 2)) + 2  # far away
    pred = np.r_[truth, fps]
    score = np.r_[rng.uniform(0.6, 1.0, 40), rng.uniform(0.0, 0.5, 40)]
    val = [_img("v", truth, pred, score=score)]
    t = choose_threshold(val)
    assert score[40:].max() < t <= score[:40].min()
    test = [_img("t", truth, pred, score=score)]
    assert Counts.total(score_images(test, threshold=t)) == Counts(40, 0, 0)
    sweep = threshold_sweep(val)
    assert sweep.f1.max() == 1.0 and sweep.best_threshold == t
    with pytest.raises(InvalidInputError):
        choose_threshold([_img("e", truth, np.zeros((0, 2)))])


def test_ap_hand_computed():
    # 2 truths; detections: TP (0.9), FP (0.8), TP (0.7) -> precision 1, 1/2, 2/3 at
    # recall 0.5, 0.5, 1; interpolated: 1 up to recall 0.5, 2/3 after.
    img = _img(
        "a",
        [[0, 0], [1, 0]],
        [[0, 0.001], [0.5, 0.5], [1.001, 0]],
        score=[0.9, 0.8, 0.7],
        names=[True, True, True],
    )
    expected = (51 * 1.0 + 50 * (2 / 3)) / 101
    assert average_precision([img]) == pytest.approx(expected)
    assert average_precision([_img("x", np.zeros((0, 2)), [[0, 0]])]) == -1.0


def test_ap_iou_half_equals_seven_and_a_half_um():
    # a horizontal offset of 7.4 um gives IoU > 0.5, 7.6 um below
    near = _img("n", [[0, 0]], [[0.0074, 0]], score=[0.9])
    far = _img("f", [[0, 0]], [[0.0076, 0]], score=[0.9])
    assert average_precision([near]) == pytest.approx(1.0)
    assert average_precision([far]) == 0.0


def test_ap_agrees_with_torchmetrics_mean_average_precision():
    """The official evaluators call torchmetrics MeanAveragePrecision(...)['map_50']."""
    pytest.importorskip("pycocotools")
    torch = pytest.importorskip("torch")
    from torchmetrics.detection.mean_ap import MeanAveragePrecision

    rng = np.random.default_rng(3)
    for _ in range(12):
        metric = MeanAveragePrecision(
            box_format="xyxy",
            iou_type="bbox",
            max_detection_thresholds=[1, 10, 1000000],
            rec_thresholds=np.arange(0, 1.01, 0.01).tolist(),
        )
        images = []
        for i in range(int(rng.integers(1, 5))):
            n = int(rng.integers(0, 8))
            t = rng.uniform(0, 0.3, (n, 2))
            k = int(rng.integers(0, 10))
            near = np.zeros((0, 2))
            if n:
                near = t[rng.integers(0, n, k // 2)] + rng.normal(0, 0.006, (k // 2, 2))
            p = np.r_[near, rng.uniform(0, 0.3, (k - len(near), 2))]
            s = rng.uniform(0, 1, len(p))
            images.append(_img(str(i), t, p, score=s))

            def boxes(xy):
                return torch.tensor(
                    [[x - H, y - H, x + H, y + H] for x, y in xy], dtype=torch.float32
                ).reshape(-1, 4)

            metric.update(
                [
                    {
                        "boxes": boxes(p),
                        "labels": torch.ones(len(p), dtype=torch.int32),
                        "scores": torch.tensor(s, dtype=torch.float32),
                    }
                ],
                [{"boxes": boxes(t), "labels": torch.ones(len(t), dtype=torch.int32)}],
            )
        ref = float(metric.compute()["map_50"])
        assert average_precision(images) == pytest.approx(ref, abs=1e-6)


def test_froc_score_hand_computed():
    # one image, one truth, a TP at 0.9 and an FP at 0.1: thresholds linspace(0.1, 0.9, 40);
    # at t=0.1 sensitivity ~1 with 1 FP, above it ~1 with 0 FP -> ~1 * 8 after interpolation
    img = _img("a", [[0, 0]], [[0, 0], [1, 1]], score=[0.9, 0.1])
    s = froc_score([img])
    assert s == pytest.approx(8.0, rel=1e-5)
    assert np.isnan(froc_score([_img("e", [[0, 0]], np.zeros((0, 2)))]))


def test_bootstrap_ci_contains_estimate_and_is_seeded():
    rng = np.random.default_rng(0)
    counts = [Counts(*rng.integers(0, 10, 3)) for _ in range(30)]
    a = bootstrap_ci(counts, n_boot=500, rng=7)
    b = bootstrap_ci(counts, n_boot=500, rng=7)
    assert a == b
    assert a.low <= a.estimate <= a.high
    assert 0 < a.high - a.low < 0.5
    same = bootstrap_ci([Counts(5, 0, 0)] * 10, n_boot=100)
    assert same.low == same.high == 1.0


def test_mann_whitney_separates_runs():
    better = [0.78, 0.79, 0.80, 0.81, 0.82]
    worse = [0.69, 0.70, 0.71, 0.72, 0.73]
    r = mann_whitney(better, worse)
    assert r.statistic == 25.0
    assert r.p_value == pytest.approx(2 / 252)  # exact two-sided: 2 of C(10, 5) orderings
    assert mann_whitney(better, better).p_value == pytest.approx(1.0)


def test_tile_level_rates_hand_computed():
    # 500x500 px: tiles at 0, 125, 250 in each axis -> 9 tiles of 250 px
    truth = [[10, 10]]  # only tile (0, 0)
    pred = [[10, 10], [480, 480]]  # tile (0,0) and tile (250,250)
    r = tile_level_rates(truth, pred, width_px=500, height_px=500)
    assert (r.tp, r.fp, r.fn, r.tn) == (1, 1, 0, 7)
    assert r.tpr == 1.0 and r.fpr == pytest.approx(1 / 8)
    # a point at (200, 200) lies in the 4 tiles starting at 0 and 125
    r2 = tile_level_rates([[200, 200]], np.zeros((0, 2)), width_px=500, height_px=500)
    assert (r2.tp, r2.fn, r2.tn) == (0, 4, 5)


def test_balanced_accuracy_and_auc_hand_computed():
    assert balanced_accuracy([1, 1, 0, 0, 0, 0], [1, 0, 0, 0, 0, 1]) == 0.625
    assert roc_auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == 0.75
    assert roc_auc([0, 1], [0.5, 0.5]) == 0.5  # tie counts one half
    fpr, tpr, _ = roc_curve([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    assert fpr.tolist() == [0.0, 0.0, 0.5, 0.5, 1.0]
    assert tpr.tolist() == [0.0, 0.5, 0.5, 1.0, 1.0]
    with pytest.raises(InvalidInputError):
        roc_auc([1, 1], [0.2, 0.3])
    with pytest.raises(InvalidInputError):
        balanced_accuracy([0, 2], [0, 1])


def test_atypical_metrics_agree_with_sklearn():
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(5)
    for _ in range(20):
        y = rng.integers(0, 2, 60)
        y[:2] = [0, 1]
        s = np.round(rng.uniform(0, 1, 60), 1)  # ties on purpose
        assert roc_auc(y, s) == pytest.approx(metrics.roc_auc_score(y, s))
        p = s > 0.5
        assert balanced_accuracy(y, p) == pytest.approx(metrics.balanced_accuracy_score(y, p))
