#!/usr/bin/env bash
# Set up everything the test suite needs on a fresh machine, then run it.
# Usage: bash scripts/test.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
# the package with every extra and the test tools (torch/torchvision are pinned in pyproject.toml)
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[dev]" 2>&1 \
  | grep -v "is ignored: it is neither a file nor a directory" || true

# a real browser for the HTML report tests (Debian's chromium; playwright drives it)
if [ ! -x /usr/bin/chromium ] && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
    || echo "warning: could not install chromium; browser tests will be skipped" >&2
fi

export HF_HUB_OFFLINE=1
export PYTHONDONTWRITEBYTECODE=1
exec .venv/bin/python -m pytest -p no:cacheprovider "$@"
