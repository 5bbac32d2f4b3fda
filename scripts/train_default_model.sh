#!/usr/bin/env bash
# Train the bundled default classifier and the bundled cascade screen on ../shared/data
# (CPU, 2 cores) and regenerate the model card.
#   stage 1: AMi-Br crops only          -> benchmarks/.cache/mitoscope_base_amibr.pt
#   stage 2: fine-tuned from stage 1 with ordinary-tissue negatives (../shared/data/tissue,
#            CC BY-NC-SA 4.0), hard-negative mining and domain augmentation
#                                        -> src/mitoscope/data/mitoscope_default_classifier.pt
# Run from anywhere:  scripts/train_default_model.sh [extra mitoscope train options of stage 2]
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1
mkdir -p benchmarks/.cache
.venv/bin/mitoscope train --config configs/default_model.toml --out benchmarks/.cache/mitoscope_base_amibr.pt
.venv/bin/mitoscope train --config configs/default_model_tissue.toml "$@"
.venv/bin/python -m mitoscope.train.screen_train --out src/mitoscope/data/mitoscope_screen.pt
.venv/bin/python -m mitoscope.train.card src/mitoscope/data/mitoscope_default_classifier.pt > docs/model_card.md
