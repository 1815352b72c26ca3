#!/usr/bin/env bash
# Fresh machine -> installed project -> the default FedA2V simulation, run to the end.
# Extra arguments go to feda2v-sim, e.g.:  bash scripts/quickstart.sh --set federation.global_rounds=3
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
export FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1
exec .venv/bin/feda2v-sim --config configs/default.json "$@"
