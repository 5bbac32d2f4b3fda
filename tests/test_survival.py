"""Survival analysis: a synthetic cohort with a known effect, a lifelines data set, the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("lifelines")

from mitoscope.cli import main
from mitoscope.errors import InvalidInputError
from mitoscope.evaluate.survival import (
    altman_corrected_p,
    analyse_variable,
    cox_univariate,
    join_clinical,
    load_summaries,
    logrank_p,
    optimal_cutoff,
)


def _cohort(n=120, seed=0):
    """High mitotic count -> hazard x e^(0.08 * MC): shorter survival."""
    rng = np.random.default_rng(seed)
    mc = rng.poisson(rng.choice([2, 25], n))  # bimodal: low and high mitotic activity
    ratio = rng.uniform(0, 0.3, n)  # no effect
    t_event = rng.exponential(60 * np.exp(-0.08 * mc))
    t_cens = rng.uniform(20, 120, n)
    time = np.minimum(t_event, t_cens)
    event = (t_event <= t_cens).astype(int)
    return mc, ratio, time, event


def _write_cohort(tmp_path: Path, n=120, seed=0):
    mc, ratio, time, event = _cohort(n, seed)
    sdir = tmp_path / "summaries"
    sdir.mkdir()
    lines = ["case,os_months,death"]
    for i in range(n):
        summary = {
            "hotspot_2mm2": {"count": int(mc[i]), "area_mm2": 2.0},
            "mitoses_per_mm2": float(mc[i]) / 2.0,
            "atypical_ratio": float(ratio[i]),
        }
        (sdir / f"S{i:03d}.summary.json").write_text(json.dumps(summary))
        lines.append(f"S{i:03d},{time[i]:.4f},{event[i]}")
    clin = tmp_path / "clinical.csv"
    clin.write_text("\n".join(lines) + "\n")
    return sdir, clin


def test_synthetic_cohort_high_mc_means_shorter_survival(tmp_path):
    sdir, clin = _write_cohort(tmp_path)
    df = join_clinical(
        load_summaries(sdir), clin, id_col="case", time_col="os_months", event_col="death"
    )
    assert len(df) == 120
    r = analyse_variable(df, "hotspot_mc", plot_path=tmp_path / "km.png")
    assert r.logrank_p_median < 1e-4
    assert r.cox_hr > 1 and r.cox_hr_ci95[0] > 1 and r.cox_p < 1e-4
    assert r.cox_hr == pytest.approx(np.exp(0.08), rel=0.3)
    assert r.cutoff is not None and r.cutoff.p_corrected >= r.cutoff.p_value
    assert "overstates" in r.cutoff.caveat
    assert (tmp_path / "km.png").stat().st_size > 1000
    # the variable without an effect is not significant
    null = analyse_variable(df, "atypical_ratio", cutoff_search=False)
    assert null.cox_p > 0.01


def test_lifelines_waltons_dataset_logrank():
    from lifelines.datasets import load_waltons

    df = load_waltons()  # bundled with lifelines: miR-137 vs control flies
    high = (df["group"] == "miR-137").to_numpy()
    p = logrank_p(df["T"].to_numpy(float), df["E"].to_numpy(int), high)
    assert p < 1e-5  # the known, strong difference between the groups


def test_lifelines_rossi_cox_matches_published_direction():
    from lifelines.datasets import load_rossi

    df = load_rossi()  # recidivism; more prior arrests -> higher hazard
    c = cox_univariate(
        df["week"].to_numpy(float), df["arrest"].to_numpy(int), df["prio"].to_numpy(float)
    )
    assert c["hr"] > 1 and c["p"] < 0.01


def test_altman_correction_values():
    assert altman_corrected_p(0.01) == pytest.approx(-1.63 * 0.01 * (1 + 2.35 * np.log(0.01)))
    assert altman_corrected_p(0.001) > 0.001
    assert altman_corrected_p(0.5) == pytest.approx(-1.63 * 0.5 * (1 + 2.35 * np.log(0.5)))
    with pytest.raises(InvalidInputError):
        altman_corrected_p(0.01, epsilon=0.2)


def test_optimal_cutoff_finds_the_step():
    mc, _, time, event = _cohort(150, seed=3)
    res = optimal_cutoff(time, event, mc)
    assert 5 < res.cutoff < 20  # between the two modes (Poisson 2 and 25)
    assert res.n_low > 10 and res.n_high > 10


def test_survival_cli_writes_json_and_plots(tmp_path):
    sdir, clin = _write_cohort(tmp_path, n=60, seed=1)
    out = tmp_path / "out"
    rc = main(
        [
            "survival",
            "--summaries",
            str(sdir),
            "--clinical",
            str(clin),
            "--id-col",
            "case",
            "--time-col",
            "os_months",
            "--event-col",
            "death",
            "--out",
            str(out),
        ]
    )
    assert rc == 0
    data = json.loads((out / "survival.json").read_text())
    assert data["n_slides"] == 60
    assert set(data["variables"]) == {"hotspot_mc", "atypical_ratio"}
    assert data["variables"]["hotspot_mc"]["cox_hr"] > 1
    assert (out / "km_hotspot_mc.png").exists()


def test_survival_cli_bad_column_is_one_line_exit_2(tmp_path, capsys):
    sdir, clin = _write_cohort(tmp_path, n=20)
    rc = main(
        [
            "survival",
            "--summaries",
            str(sdir),
            "--clinical",
            str(clin),
            "--out",
            str(tmp_path / "o"),
        ]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "--id-col" in err[0]
