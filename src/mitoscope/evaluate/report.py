"""A self-contained evaluation report (HTML or Markdown) with embedded PNG plots."""

from __future__ import annotations

import base64
import html
import io
import os
from pathlib import Path
from typing import Any

from ..errors import MissingDependencyError, OutputError
from .metrics import Evaluation, FrocCurve, ThresholdSweep


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def plot_images(sweep: ThresholdSweep | None, froc: FrocCurve | None) -> dict[str, str]:
    """PR curve, F1-vs-threshold and FROC plots as base64 PNG strings."""
    try:
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
    except ImportError:
        raise MissingDependencyError("matplotlib", "report") from None
    out: dict[str, str] = {}
    if sweep is not None and len(sweep.thresholds):
        fig, ax = plt.subplots(figsize=(4.2, 3.6))
        ax.plot(sweep.recall, sweep.precision, marker=".", lw=1)
        ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1.02), ylim=(0, 1.02))
        ax.set_title("Precision-recall (MIDOG matching)")
        ax.grid(alpha=0.3)
        out["pr_curve"] = _png(fig)
        plt.close(fig)
        fig, ax = plt.subplots(figsize=(4.2, 3.6))
        ax.plot(sweep.thresholds, sweep.f1, marker=".", lw=1, label="F1")
        ax.plot(sweep.thresholds, sweep.precision, lw=1, alpha=0.6, label="precision")
        ax.plot(sweep.thresholds, sweep.recall, lw=1, alpha=0.6, label="recall")
        ax.axvline(sweep.best_threshold, color="k", ls=":", lw=1)
        ax.set(xlabel="threshold", ylabel="score", ylim=(0, 1.02))
        ax.set_title("F1 vs threshold")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
        out["f1_threshold"] = _png(fig)
        plt.close(fig)
    if froc is not None and len(froc.thresholds):
        fig, ax = plt.subplots(figsize=(4.2, 3.6))
        ax.plot(froc.fp_per_image, froc.sensitivity, marker=".", lw=1)
        ax.set(xlabel="false positives per image", ylabel="sensitivity", ylim=(0, 1.02))
        ax.set_title("FROC")
        ax.grid(alpha=0.3)
        out["froc"] = _png(fig)
        plt.close(fig)
    return out


def _rows(result: Evaluation) -> list[tuple[str, str, dict[str, Any]]]:
    rows = [("all", "all", {**result.overall.to_dict(), "ap": result.ap})]
    for by, table in result.groups.items():
        for name, c in table.items():
            rows.append((by, name, {**c.to_dict(), "ap": result.group_ap.get(by, {}).get(name)}))
    return rows


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4f}"
    return str(v)


_COLS = ("tp", "fp", "fn", "precision", "recall", "f1", "ap")


def render_markdown(result: Evaluation, plots: dict[str, str], notes: list[str]) -> str:
    lines = ["# mitoscope evaluation", ""]
    lines += [f"- {n}" for n in notes] + [""]
    lines.append("| group | value | " + " | ".join(_COLS) + " |")
    lines.append("|---|---|" + "---|" * len(_COLS))
    for by, name, d in _rows(result):
        lines.append(f"| {by} | {name} | " + " | ".join(_fmt(d.get(c)) for c in _COLS) + " |")
    lines.append("")
    for key, title in (
        ("pr_curve", "PR curve"),
        ("f1_threshold", "F1 vs threshold"),
        ("froc", "FROC"),
    ):
        if key in plots:
            lines += [f"## {title}", "", f"![{title}](data:image/png;base64,{plots[key]})", ""]
    return "\n".join(lines)


def render_html(result: Evaluation, plots: dict[str, str], notes: list[str]) -> str:
    esc = html.escape
    head = "".join(f"<th>{esc(c)}</th>" for c in ("group", "value", *_COLS))
    body = "".join(
        "<tr>"
        + f"<td>{esc(by)}</td><td>{esc(name)}</td>"
        + "".join(f"<td>{esc(_fmt(d.get(c)))}</td>" for c in _COLS)
        + "</tr>"
        for by, name, d in _rows(result)
    )
    imgs = "".join(
        f'<figure><img alt="{esc(k)}" src="data:image/png;base64,{v}"/>'
        f"<figcaption>{esc(k)}</figcaption></figure>"
        for k, v in plots.items()
    )
    note_html = "".join(f"<li>{esc(n)}</li>" for n in notes)
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>mitoscope evaluation</title>"
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #bbb;padding:3px 8px;text-align:right}"
        "figure{display:inline-block;margin:1em}</style></head><body>"
        f"<h1>mitoscope evaluation</h1><ul>{note_html}</ul>"
        f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>{imgs}"
        "</body></html>"
    )


def write_report(
    path: str | os.PathLike[str],
    result: Evaluation,
    *,
    sweep: ThresholdSweep | None = None,
    froc: FrocCurve | None = None,
    notes: list[str] | None = None,
) -> Path:
    """Write an HTML (``.html``/``.htm``) or Markdown (``.md``) report atomically."""
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix not in (".html", ".htm", ".md", ".markdown"):
        raise OutputError(f"report must end in .html or .md, got {p.name}")
    plots = plot_images(sweep, froc)
    notes = notes or []
    text = (
        render_html(result, plots, notes)
        if suffix in (".html", ".htm")
        else render_markdown(result, plots, notes)
    )
    tmp = p.with_name(f".{p.name}.tmp{os.getpid()}")
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, p)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise OutputError(f"cannot write report {p}: {exc.strerror or exc}") from None
    return p
