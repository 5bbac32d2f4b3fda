#!/usr/bin/env bash
# Train the bundled default classifier on ../shared/data/amibr-train (CPU; see docs/model_card.md).
# Run from the repository root:  scripts/train_default_model.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1
exec .venv/bin/mitoscope train --config configs/default_model.toml "$@"
