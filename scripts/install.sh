#!/usr/bin/env bash
# Create .venv (if missing) and install the project with its test tools.
# torch: the CPU build 2.13.0 is installed only when the environment has no torch yet, so a
# GPU user's own torch build is kept (the project accepts torch>=2.4,<3).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
    .venv/bin/pip install --quiet torch==2.13.0
fi
.venv/bin/pip install --quiet -e ".[dev,diffusion]"
echo "Installed into .venv ($(.venv/bin/python -c 'import flwr, torch; print("flwr", flwr.__version__, "torch", torch.__version__)'))"
