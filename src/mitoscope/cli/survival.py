"""``mitoscope survival``: Kaplan-Meier, log-rank and Cox over a cohort (Fick et al.)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    app.command("survival")(survival)


def survival(
    summaries: Path = typer.Option(..., "--summaries", help="Directory of <stem>.summary.json."),
    clinical: Path = typer.Option(..., "--clinical", help="Clinical CSV (one row per slide)."),
    id_col: str = typer.Option("slide_id", "--id-col", help="Slide id column (= summary stem)."),
    time_col: str = typer.Option("time", "--time-col", help="Follow-up time column."),
    event_col: str = typer.Option(
        "event", "--event-col", help="Event column (1 event, 0 censored)."
    ),
    out: Path = typer.Option(..., "--out", help="Output directory (survival.json, KM plots)."),
    no_cutoff: bool = typer.Option(False, "--no-cutoff", help="Skip the optimal cut-off search."),
    json_out: bool = typer.Option(False, "--json", help="Print the result as one JSON object."),
) -> None:
    """Stratify survival by hotspot mitotic count and atypical ratio."""
    from ..errors import OutputError
    from ..evaluate.survival import analyse_cohort, join_clinical, load_summaries

    df = join_clinical(
        load_summaries(summaries), clinical, id_col=id_col, time_col=time_col, event_col=event_col
    )
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create output directory {out}: {exc.strerror}") from None
    res = analyse_cohort(df, out_dir=out, cutoff_search=not no_cutoff)
    text = json.dumps(res, indent=1)
    tmp = out / f".survival.json.tmp{os.getpid()}"
    tmp.write_text(text + "\n", encoding="utf-8")
    os.replace(tmp, out / "survival.json")
    if json_out:
        typer.echo(json.dumps(res))
        return
    typer.echo(f"slides  {res['n_slides']}")
    for var, r in res["variables"].items():
        line = (
            f"{var}: Cox HR {r['cox_hr']:.3g} (95% CI {r['cox_hr_ci95'][0]:.3g}-"
            f"{r['cox_hr_ci95'][1]:.3g}, p {r['cox_p']:.3g}); log-rank (median) p "
            f"{r['logrank_p_median']:.3g}"
        )
        if r["cutoff"]:
            c = r["cutoff"]
            line += (
                f"; best cut-off {c['cutoff']:.3g} p {c['p_value']:.3g} "
                f"(Altman-corrected {c['p_corrected']:.3g})"
            )
        typer.echo(line)
    for var, why in res["skipped"].items():
        typer.echo(f"{var}: skipped ({why})")
    typer.echo(f"wrote {Path(out) / 'survival.json'}")
