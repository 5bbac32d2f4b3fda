"""Render a checkpoint's model card (stored inside the checkpoint) as Markdown.

``python -m mitoscope.train.card MODEL.pt > docs/model_card.md``
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any


def render_model_card(
    card: dict[str, Any],
    *,
    threshold: float,
    atypical_threshold: float,
    path: str = "",
    screen_card: dict[str, Any] | None = None,
) -> str:
    """Markdown model card from the ``card`` dict written by :func:`mitoscope.train.train`."""
    m = card.get("validation_metrics", {})
    d = card.get("data", {})
    sm = d.get("sample_meta", {})
    sp = card.get("split", {})
    cfg = card.get("config", {})

    tta = int(card.get("atypical_tta") or cfg.get("atypical_tta") or 1)

    def f(x: Any) -> str:
        return f"{x:.3f}" if isinstance(x, float) else str(x)

    lines = [
        "# Model card: mitoscope default classifier",
        "",
        f"File: `{path or 'src/mitoscope/data/mitoscope_default_classifier.pt'}` "
        "(float16 weights). Loaded by `mitoscope classify` and by detection when no `--model` is given.",
        "",
        "## Architecture",
        f"- `{card.get('architecture')}`: {card.get('description', '')}",
        f"- input: {card.get('patch_size_px')} x {card.get('patch_size_px')} px RGB at "
        f"{card.get('input_mpp')} um/px, candidate mask branch: {card.get('uses_mask')}",
        "- heads: MF vs non-MF (stage 1, with the atypical head jointly when multi-task), atypical "
        "vs normal refitted on frozen-encoder features of mitotic figures only, classes balanced, "
        "agreement-weighted (stage 2, Fick et al.)",
        f"- ensemble of {card.get('ensemble_size')} member(s), seeds {card.get('seeds')}",
        "",
        "## Training data",
        *[f"- {part.strip()}" for part in str(d.get("licence", "")).split(";") if part.strip()],
        *(
            [
                "- **Licence of these weights: CC BY-NC-SA 4.0** (non-commercial, share-alike), "
                "because ordinary-tissue images under that licence are among the training data.",
                f"- ordinary-tissue negatives: {len(d.get('tissue_images', []))} images of "
                f"{len({t.split('/')[1] for t in d.get('tissue_images', [])})} organs "
                "(../shared/data/tissue): every candidate the proposer finds is a negative",
            ]
            if d.get("non_commercial")
            else []
        ),
        f"- {sm.get('n_crops')} crops resampled to {sm.get('mpp')} um/px; positives at the crop "
        "centres (+ labelled MF neighbours), negatives = labelled imposters + every other object "
        f"the `{sm.get('proposer')}` proposer finds more than {sm.get('exclusion_um')} um from any "
        "labelled MF (the sources are exhaustively labelled).",
        f"- the proposer matched {sm.get('centres_matched_by_proposer')} of {sm.get('n_crops')} "
        f"crop-centre figures within {sm.get('match_um')} um; {sm.get('mask_fallbacks')} labelled "
        "points got a 3 um disc mask instead",
        f"- {d.get('n_train_samples')} training samples from {d.get('n_train_slides')} slides / "
        f"images; {d.get('n_val_samples')} validation samples from {d.get('n_val_slides')}",
        *(
            [
                "- positional augmentation: each training patch shifted by up to "
                f"{card['shift_px']} px ({card['shift_px'] * float(card.get('input_mpp') or 0):g} "
                "um) in x and y from its centre (`shift_um`"
                + (
                    f" = {cfg['shift_um']})"
                    if cfg.get("shift_um") is not None
                    else ": default, 1 um limited to the room in the stored patches)"
                )
            ]
            if card.get("shift_px") is not None
            else []
        ),
        "",
        "## Split",
        f"- by {sp.get('by')}, never by crop: validation fraction {sp.get('val_fraction')}, "
        f"split seed {sp.get('split_seed')}",
        f"- validation slides: {', '.join(sp.get('val_slides', []))}",
        "",
        "## Thresholds (chosen on the validation slides only)",
        f"- rule: {card.get('threshold_choice', 'MF: maximum F1; atypical: maximum balanced accuracy')}",
        f"- MF: {threshold:.4f} ("
        + (
            f"`mitoscope detect` finds {card['threshold_evidence'].get('target_recall')} of the "
            f"labelled validation figures end to end; {card.get('threshold_at_training', 0):.4f} "
            "at training, on the validation patches"
            if card.get("threshold_evidence")
            else f"keeps recall {cfg['mf_threshold_recall']} of the labelled validation figures"
            if cfg.get("mf_threshold_recall")
            else "maximum F1"
        )
        + f"); atypical: {atypical_threshold:.4f} "
        "(maximum balanced accuracy"
        + (
            f", on the atypical probability averaged over {tta} "
            "views (90-degree rotations, then mirrored) — test-time augmentation, applied to "
            "mitoses during detection)"
            if tta > 1
            else ")"
        ),
        "",
        "## Validation metrics (slide-grouped held-out slides; same slides as the thresholds)",
        f"- MF vs non-MF: ROC AUC {f(m.get('mf_roc_auc'))}, F1 {f(m.get('mf_f1'))} "
        f"({m.get('n_mf')} MF among {m.get('n_samples')} candidates)",
        f"- atypical vs normal: balanced accuracy {f(m.get('atypical_balanced_accuracy'))}, "
        f"ROC AUC {f(m.get('atypical_roc_auc'))} ({m.get('n_atypical_labelled')} figures)"
        + (
            f"; one view (no test-time augmentation): balanced accuracy "
            f"{f(m.get('atypical_balanced_accuracy_single_view'))}, ROC AUC "
            f"{f(m.get('atypical_roc_auc_single_view'))}"
            if m.get("atypical_roc_auc_single_view") is not None
            else ""
        ),
        "- Caveat: the thresholds were tuned on these same validation slides, so F1 and "
        "balanced accuracy here are optimistic; see docs/benchmarks.md for cross-validation on "
        "unseen slides. The published AMi-Br reference (balanced accuracy 0.8135) is on the "
        "official held-out test split, which is not available here.",
        f"- training time: {m.get('train_seconds')} s on a shared 2-core CPU",
        "",
        "## Training recipe",
        "```",
        *[f"{k} = {v}" for k, v in cfg.items() if k not in ("progress",)],
        "```",
        "Reproduce: stage 1 `mitoscope train --config configs/amibr_64.toml` (AMi-Br crops), "
        "then stage 2 `mitoscope train --config configs/default_model_tissue.toml` (fine-tuned "
        "from stage 1: tissue negatives, hard-negative mining, domain augmentation)"
        if cfg.get("init_from")
        else "Reproduce with `scripts/train_default_model.sh` (= `mitoscope train --config "
        "configs/default_model.toml`).",
        "",
        "## Intended use and known limits",
        "- Research use: scoring candidate nuclei in H&E images at ~0.25 um/px. Mitotic "
        "figures it learned from are human breast cancer only (MIDOG21 Hamamatsu/Aperio, "
        "TUPAC16, 0.23-0.25 um/px); "
        + (
            "negatives also come from ordinary TCGA tumour tissue of 7 organs. Detections per "
            "mm² on ordinary tissue of organs left out of training, recall on held-out labelled "
            "figures and a gallery of the bundled sample's detections are in docs/benchmarks.md "
            '("Credible counts"). Other tumour types\' mitoses, species, frozen sections and '
            "scanners remain out of the labelled domain: fine-tune with `mitoscope train` "
            "(docs/training.md) on labelled data of yours. On ordinary tissue it may still call "
            "dark interphase, stromal and pyknotic nuclei (the bundled model: >= 100 per mm² "
            "of organs left out of training, docs/benchmarks.md): "
            "look at the detections (the HTML report's gallery, `mitoscope review`) before "
            "grading with the count."
            if d.get("non_commercial")
            else "other tumours, species, stains, scanners and lower resolutions are out of "
            "domain. **Counts outside breast-cancer mitosis crops are not credible**: on "
            "ordinary TCGA tumour tissue of 7 organs (../shared/data/tissue) it reports ~390 "
            "detections per mm² (real tumours: ~1-50 mitoses per mm²), 927 per mm² on the "
            "bundled skin sample; nearly all are dark interphase, stromal or pyknotic nuclei "
            '(docs/benchmarks.md, "Credible counts", with a gallery). Fine-tune it on '
            "labelled data of your domain (docs/training.md)."
        ),
        "- Trained on a CPU with a very small budget; not a diagnostic device.",
        "- Re-measure the saved (float16) checkpoint with "
        "`.venv/bin/python benchmarks/classifier_validation.py`; cross-validation on unseen "
        "slides and the architecture / ablation comparison are in docs/benchmarks.md.",
    ]
    if screen_card:
        sm = screen_card.get("metrics", {})
        hs = sm.get("half_split", [])
        lines += [
            "",
            "## Detection cascade: the bundled screen (`mitoscope_screen.pt`)",
            f"- a {sm.get('steps')}-step tiny CNN on {screen_card.get('patch_size_px')} px patches "
            f"(RGB + candidate mask) at {screen_card.get('input_mpp')} um/px, in front of this "
            "classifier during `mitoscope detect` (`--no-cascade` turns it off)",
            f"- data: {screen_card.get('data', '')}; positives: {screen_card.get('positives', '')}",
            f"- keep-threshold {f(sm.get('threshold'))}, chosen per figure on the validation "
            f"slides for recall {sm.get('target_recall')}: recall {f(sm.get('val_recall'))} of "
            f"{sm.get('val_figures_proposed')} proposer-found figures, "
            f"{f(sm.get('val_discarded'))} of {sm.get('val_other')} other objects discarded",
            "- out-of-sample estimate (threshold from one half of the validation slides, "
            "measured on the other): recall "
            + " / ".join(f(h.get("recall")) for h in hs)
            + ", discarded "
            + " / ".join(f(h.get("discarded")) for h in hs),
            f"- reproduce: `{screen_card.get('command', '')}`",
        ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    from ..classify import load_classifier

    args = sys.argv[1:] if argv is None else argv
    path = args[0] if args else None
    from ..classify.screen import default_screen_path, load_screen

    clf = load_classifier(path, device="cpu", backend="torch")
    shown = str(Path(path)) if path else ""
    screen = load_screen().card if default_screen_path().is_file() else None
    sys.stdout.write(
        render_model_card(
            clf.card,
            threshold=clf.threshold,
            atypical_threshold=clf.atypical_threshold,
            path=shown,
            screen_card=screen,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
