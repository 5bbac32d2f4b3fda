"""Survival analysis over a cohort (Fick et al.): Kaplan-Meier, log-rank, Cox, cut-off search.

Inputs are per-slide summaries (``<stem>.summary.json`` as ``mitoscope detect`` writes them)
joined to a clinical table. lifelines is imported lazily (extra ``survival``).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InvalidInputError, MissingDependencyError

#: variables analysed by default: column name -> dotted key in the summary JSON
SUMMARY_VARIABLES: dict[str, str] = {
    "hotspot_mc": "hotspot_2mm2.count",
    "mitoses_per_mm2": "mitoses_per_mm2",
    "atypical_ratio": "atypical_ratio",
}


def _lifelines() -> Any:
    try:
        import lifelines
    except ImportError:
        raise MissingDependencyError("lifelines", "survival") from None
    return lifelines


def _get(d: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(d, dict) or part not in d:
            return None
        d = d[part]
    return d


def load_summaries(directory: str | os.PathLike[str]) -> Any:
    """Read every ``*.summary.json`` in ``directory`` into a DataFrame (one row per slide).

    The slide id is the file stem (``a.summary.json`` -> ``a``). Columns: ``slide_id`` plus
    :data:`SUMMARY_VARIABLES` (NaN when a key is absent).
    """
    import pandas as pd

    d = Path(directory)
    if not d.is_dir():
        raise InvalidInputError(f"--summaries must be a directory of *.summary.json files: {d}")
    files = sorted(d.glob("*.summary.json"))
    if not files:
        raise InvalidInputError(f"no *.summary.json files in {d}; run `mitoscope detect` first")
    rows = []
    for f in files:
        try:
            data = json.loads(f.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise InvalidInputError(f"{f.name} is not valid JSON: {exc}") from None
        row: dict[str, Any] = {"slide_id": f.name[: -len(".summary.json")]}
        for col, key in SUMMARY_VARIABLES.items():
            v = _get(data, key)
            try:
                row[col] = float(v) if v is not None else math.nan
            except (TypeError, ValueError):
                raise InvalidInputError(f"{f.name}: {key} must be a number, got {v!r}") from None
        rows.append(row)
    return pd.DataFrame(rows)


def join_clinical(
    summaries: Any,
    clinical_csv: str | os.PathLike[str],
    *,
    id_col: str = "slide_id",
    time_col: str = "time",
    event_col: str = "event",
) -> Any:
    """Inner-join summaries with a clinical CSV on the slide id; validate time and event."""
    import pandas as pd

    p = Path(clinical_csv)
    if not p.is_file():
        raise InvalidInputError(f"clinical CSV not found: {p}")
    try:
        clin = pd.read_csv(p, sep=None, engine="python", dtype={id_col: str})
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise InvalidInputError(f"cannot read clinical CSV {p.name}: {exc}") from None
    for col, opt in ((id_col, "--id-col"), (time_col, "--time-col"), (event_col, "--event-col")):
        if col not in clin.columns:
            raise InvalidInputError(
                f"clinical CSV has no column {col!r} (columns: {', '.join(map(str, clin.columns))}); "
                f"pass {opt}"
            )
    clin = clin.rename(columns={id_col: "slide_id", time_col: "time", event_col: "event"})
    clin["slide_id"] = clin["slide_id"].astype(str)
    df = summaries.merge(clin[["slide_id", "time", "event"]], on="slide_id", how="inner")
    if len(df) == 0:
        raise InvalidInputError(
            f"no slide id of the summaries matches column {id_col!r} of {p.name}"
        )
    df["time"] = pd.to_numeric(df["time"], errors="coerce")
    df["event"] = pd.to_numeric(df["event"], errors="coerce")
    if df["time"].isna().any() or (df["time"] < 0).any():
        raise InvalidInputError(f"{time_col!r} must be non-negative numbers for every slide")
    if not set(df["event"].dropna().unique()) <= {0, 1} or df["event"].isna().any():
        raise InvalidInputError(f"{event_col!r} must be 0 (censored) or 1 (event)")
    return df


@dataclass(frozen=True)
class CutoffResult:
    """An optimal cut-off found by minimising the log-rank p-value (with its caveat)."""

    cutoff: float
    p_value: float
    p_corrected: float
    n_low: int
    n_high: int
    n_candidates: int
    caveat: str


def altman_corrected_p(p: float, *, epsilon: float = 0.1) -> float:
    """Altman et al. (1994) correction of the minimum p-value of an optimal cut-off search.

    For a search between the ``epsilon`` and ``1 - epsilon`` quantiles:
    ``epsilon = 0.1``: ``p_cor = -1.63 p (1 + 2.35 ln p)``; ``epsilon = 0.05``:
    ``p_cor = -3.13 p (1 + 1.65 ln p)``. Clipped to ``[p, 1]`` (the approximation is meant for
    ``0.0001 <= p <= 0.1``).
    """
    if not 0 < p <= 1:
        return float(p)
    if abs(epsilon - 0.1) < 1e-9:
        cor = -1.63 * p * (1 + 2.35 * math.log(p))
    elif abs(epsilon - 0.05) < 1e-9:
        cor = -3.13 * p * (1 + 1.65 * math.log(p))
    else:
        raise InvalidInputError("Altman's correction is tabulated for epsilon 0.05 or 0.1 only")
    return float(min(1.0, max(p, cor)))


def logrank_p(time: np.ndarray, event: np.ndarray, high: np.ndarray) -> float:
    """Two-sided log-rank p-value between ``high`` and the rest."""
    from lifelines.statistics import logrank_test

    r = logrank_test(
        time[high], time[~high], event_observed_A=event[high], event_observed_B=event[~high]
    )
    return float(r.p_value)


def optimal_cutoff(
    time: Sequence[float],
    event: Sequence[int],
    values: Sequence[float],
    *,
    epsilon: float = 0.1,
) -> CutoffResult:
    """Search the cut-off (between the ``epsilon`` and ``1 - epsilon`` quantiles) with the
    smallest log-rank p-value. That minimum is optimistic; the Altman-corrected p-value and a
    caveat are reported with it.
    """
    _lifelines()
    t = np.asarray(time, dtype=np.float64)
    e = np.asarray(event, dtype=np.int64)
    v = np.asarray(values, dtype=np.float64)
    lo, hi = np.quantile(v, [epsilon, 1 - epsilon])
    cands = np.unique(v[(v >= lo) & (v < hi)])
    best: tuple[float, float] | None = None
    for c in cands:
        high = v > c
        if high.sum() == 0 or (~high).sum() == 0:
            continue
        p = logrank_p(t, e, high)
        if best is None or p < best[1]:
            best = (float(c), p)
    if best is None:
        raise InvalidInputError("no valid cut-off: the variable has too few distinct values")
    c, p = best
    return CutoffResult(
        cutoff=c,
        p_value=p,
        p_corrected=altman_corrected_p(p, epsilon=epsilon),
        n_low=int((v <= c).sum()),
        n_high=int((v > c).sum()),
        n_candidates=len(cands),
        caveat=(
            f"minimum p-value over {len(cands)} candidate cut-offs (quantiles {epsilon:g}-"
            f"{1 - epsilon:g}); it overstates significance -- use the Altman-corrected p-value "
            "and validate the cut-off on an independent cohort"
        ),
    )


@dataclass
class VariableResult:
    """Survival statistics of one variable."""

    variable: str
    n: int
    n_events: int
    median_split: float
    logrank_p_median: float
    cox_hr: float
    cox_hr_ci95: tuple[float, float]
    cox_p: float
    cox_hr_per_sd: float
    cutoff: CutoffResult | None = None
    plot: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in self.__dict__.items() if k != "cutoff"}
        out["cox_hr_ci95"] = list(self.cox_hr_ci95)
        out["cutoff"] = None if self.cutoff is None else dict(self.cutoff.__dict__)
        return out


def cox_univariate(time: np.ndarray, event: np.ndarray, values: np.ndarray) -> dict[str, float]:
    """Univariate Cox model: hazard ratio per unit (with 95% CI and p) and per SD."""
    import pandas as pd

    CoxPHFitter = _lifelines().CoxPHFitter
    df = pd.DataFrame({"time": time, "event": event, "x": values})
    cph = CoxPHFitter()
    cph.fit(df, duration_col="time", event_col="event")
    s = cph.summary.loc["x"]
    sd = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
    return {
        "hr": float(s["exp(coef)"]),
        "lo": float(s["exp(coef) lower 95%"]),
        "hi": float(s["exp(coef) upper 95%"]),
        "p": float(s["p"]),
        "hr_per_sd": float(math.exp(float(s["coef"]) * sd)),
    }


def analyse_variable(
    df: Any,
    variable: str,
    *,
    cutoff_search: bool = True,
    plot_path: str | os.PathLike[str] | None = None,
) -> VariableResult:
    """Median split (KM + log-rank), univariate Cox, optional cut-off search and KM plot."""
    _lifelines()
    sub = df[["time", "event", variable]].dropna()
    if len(sub) < 4:
        raise InvalidInputError(f"{variable}: fewer than 4 slides with a value; cannot analyse")
    t = sub["time"].to_numpy(dtype=np.float64)
    e = sub["event"].to_numpy(dtype=np.int64)
    v = sub[variable].to_numpy(dtype=np.float64)
    if np.unique(v).size < 2:
        raise InvalidInputError(f"{variable} is constant over the cohort; nothing to analyse")
    med = float(np.median(v))
    high = v > med
    if high.all() or not high.any():
        high = v >= med
    p_med = logrank_p(t, e, high)
    cox = cox_univariate(t, e, v)
    cut = optimal_cutoff(t, e, v) if cutoff_search else None
    res = VariableResult(
        variable=variable,
        n=len(sub),
        n_events=int(e.sum()),
        median_split=med,
        logrank_p_median=p_med,
        cox_hr=cox["hr"],
        cox_hr_ci95=(cox["lo"], cox["hi"]),
        cox_p=cox["p"],
        cox_hr_per_sd=cox["hr_per_sd"],
        cutoff=cut,
    )
    if plot_path is not None:
        res.plot = str(
            plot_km(
                t,
                e,
                high,
                title=f"{variable} (median split {med:.3g})",
                path=plot_path,
                p_value=p_med,
            )
        )
    return res


def plot_km(
    time: np.ndarray,
    event: np.ndarray,
    high: np.ndarray,
    *,
    title: str,
    path: str | os.PathLike[str],
    p_value: float | None = None,
) -> Path:
    """Kaplan-Meier curves of the low and high groups to a PNG (atomic write)."""
    try:
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
    except ImportError:
        raise MissingDependencyError("matplotlib", "survival") from None
    KaplanMeierFitter = _lifelines().KaplanMeierFitter
    fig, ax = plt.subplots(figsize=(5, 3.8))
    for mask, label in ((~high, "low"), (high, "high")):
        km = KaplanMeierFitter()
        km.fit(time[mask], event_observed=event[mask], label=f"{label} (n={int(mask.sum())})")
        km.plot_survival_function(ax=ax, ci_show=True)
    if p_value is not None:
        ax.text(0.02, 0.04, f"log-rank p = {p_value:.3g}", transform=ax.transAxes)
    ax.set(title=title, xlabel="time", ylabel="survival probability", ylim=(0, 1.05))
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.stem}.tmp{os.getpid()}.png")
    fig.savefig(tmp, dpi=110, bbox_inches="tight")
    plt.close(fig)
    os.replace(tmp, p)
    return p


def analyse_cohort(
    df: Any,
    *,
    variables: Sequence[str] = ("hotspot_mc", "atypical_ratio"),
    out_dir: str | os.PathLike[str] | None = None,
    cutoff_search: bool = True,
) -> dict[str, Any]:
    """Analyse each variable that has values; skipped ones are reported with the reason."""
    results: dict[str, Any] = {"n_slides": int(len(df)), "variables": {}, "skipped": {}}
    for var in variables:
        if var not in df.columns or df[var].notna().sum() == 0:
            results["skipped"][var] = "no values in the summaries"
            continue
        plot = None if out_dir is None else Path(out_dir) / f"km_{var}.png"
        try:
            r = analyse_variable(df, var, cutoff_search=cutoff_search, plot_path=plot)
        except InvalidInputError as exc:
            results["skipped"][var] = str(exc)
            continue
        results["variables"][var] = r.to_dict()
    return results
