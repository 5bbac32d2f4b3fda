"""Render a detector checkpoint's model card (stored inside the checkpoint) as Markdown.

``python -m mitoscope.detector.card DETECTOR.pt > detector_card.md``

:func:`card_sections` and :func:`card_value` also serve the dedicated atypical classifier's card
(:func:`mitoscope.train.atypical.render_atypical_card`).
"""

from __future__ import annotations

import sys
from typing import Any


def card_sections(card: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """A model card's ``validation_metrics``, ``data`` and ``split`` sections (``{}`` if absent)."""
    return card.get("validation_metrics", {}), card.get("data", {}), card.get("split", {})


def card_value(x: Any) -> str:
    """A card value as Markdown text: a float with 3 decimals, anything else as ``str``."""
    return f"{x:.3f}" if isinstance(x, float) else str(x)


def render_detector_card(card: dict[str, Any], *, path: str = "") -> str:
    """Markdown model card from the ``card`` dict written by ``mitoscope train-detector``."""
    m, d, sp = card_sections(card)
    cfg = card.get("config", {})
    f = card_value
    lines = [
        "# Model card: mitoscope detector",
        "",
        f"File: `{path}`. Used by `mitoscope detect --proposer detector --detector FILE` "
        "(candidates for the classifier) and `--mode detector --detector FILE` (final detections).",
        "",
        "## Architecture",
        f"- {card.get('description', '')}",
        f"- input at {card.get('input_mpp')} um/px, boxes of {card.get('box_um')} um around each "
        f"labelled point (MIDOG); inference on {card.get('tile_px')} px tiles overlapping by "
        f"{card.get('overlap_px')} px, box NMS across tiles",
        "",
        "## Training data",
        *[f"- {p.strip()}" for p in str(d.get("licence", "")).split(";") if p.strip()],
        *[
            f"- source `{s.get('name')}` ({s.get('type')}): {s.get('n_scenes')} scenes, "
            f"{s.get('n_mf')} mitotic figures, sampling weight {s.get('weight')}"
            for s in d.get("sources", [])
        ],
        f"- {d.get('n_train_scenes')} training scenes ({d.get('n_train_mf')} figures) from "
        f"{d.get('n_train_slides')} slides; {d.get('n_val_scenes')} validation scenes from "
        f"{d.get('n_val_slides')} slides",
        "",
        "## Split",
        f"- by {sp.get('by')}: validation fraction {sp.get('val_fraction')}, split seed "
        f"{sp.get('split_seed')} (the classifier's rule: the same slides for the same sources)",
        "",
        "## Thresholds (validation slides only)",
        f"- {card.get('threshold_choice', '')}",
        f"- detection threshold {f(m.get('threshold'))}; proposer threshold "
        f"{f(m.get('proposer_threshold'))}",
        "",
        "## Validation metrics (the same slides as the thresholds: optimistic)",
        f"- at the detection threshold: F1 {f(m.get('f1'))}, precision {f(m.get('precision'))}, "
        f"recall {f(m.get('recall'))} of {m.get('n_val_mf')} figures; "
        f"{f(m.get('detections_per_mm2_labelled_val'))} detections/mm² on labelled scenes, "
        f"{f(m.get('detections_per_mm2_tissue_val'))} on ordinary-tissue scenes",
        f"- at the proposer threshold: recall {f(m.get('recall_at_proposer_threshold'))}, "
        f"{f(m.get('candidates_per_mm2_labelled_val'))} candidates/mm² on labelled scenes, "
        f"{f(m.get('candidates_per_mm2_tissue_val'))} on ordinary tissue",
        f"- training time {m.get('train_seconds')} s",
        "",
        "## Training recipe",
        "```",
        *[f"{k} = {v}" for k, v in cfg.items() if k != "progress"],
        "```",
        "",
        "## Intended use and known limits",
        "- Research use on H&E at ~0.25 um/px; the domain is that of its training sources (see "
        "above). Not a diagnostic device. Measured against the classical proposer and the "
        "bundled classifier in docs/benchmarks.md (benchmarks/detector.py).",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    from pathlib import Path

    from .detector import load_detector

    args = sys.argv[1:] if argv is None else argv
    if not args:
        print("usage: python -m mitoscope.detector.card DETECTOR.pt", file=sys.stderr)
        return 2
    det = load_detector(Path(args[0]), device="cpu")
    sys.stdout.write(render_detector_card(det.card, path=str(args[0])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
