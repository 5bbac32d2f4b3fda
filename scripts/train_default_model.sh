#!/usr/bin/env bash
# Train the bundled default classifier and the bundled cascade screen on
# ../shared/data/amibr-train (CPU, 2 cores) and regenerate the model card.
# Run from anywhere:  scripts/train_default_model.sh [extra mitoscope train options]
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1
.venv/bin/mitoscope train --config configs/default_model.toml "$@"
.venv/bin/python -m mitoscope.train.screen_train --out src/mitoscope/data/mitoscope_screen.pt
# the operating point end to end: the threshold at which `mitoscope detect` (proposer, screen,
# classifier) finds 0.93 of the validation slides' labelled figures, written into the checkpoint
.venv/bin/python benchmarks/cascade_recall.py --threads 2 --write-threshold
.venv/bin/python -m mitoscope.train.card src/mitoscope/data/mitoscope_default_classifier.pt > docs/model_card.md
# The classifier is trained with the ordinary-tissue images (CC BY-NC-SA 4.0) as negatives, so
# its weights are for non-commercial use (the model card says so).
# The first bundled classifier (64 px, AMi-Br only, MIT) and its tissue fine-tuning, for reference:
#   .venv/bin/mitoscope train --config configs/amibr_64.toml
#   .venv/bin/mitoscope train --config configs/default_model_tissue.toml
