#!/usr/bin/env bash
# Install (if needed), lint, and run every test, the end-to-end flwr simulations included.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
export FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1 HF_HUB_OFFLINE=1
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/python -m pytest "$@"
