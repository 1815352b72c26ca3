#!/usr/bin/env bash
# Create .venv (if missing) and install the project with its test tools, every package at the
# version of requirements/lock.txt (the tested environment; refresh it with scripts/lock.sh).
# torch: the lock's CPU build is installed only when the environment has no torch yet; a torch
# that is already there (a GPU user's own build) is kept, and only torch is then left unpinned.
set -euo pipefail
cd "$(dirname "$0")/.."
lock=requirements/lock.txt
pip=".venv/bin/pip"
if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
torch_pin=$(grep '^torch==' "$lock" | cut -d' ' -f1)       # torch==2.13.0+cpu
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
    # A local wheel folder (pip's find-links) or PyPI first, then PyTorch's CPU index.
    "$pip" install --quiet "$torch_pin" 2>/dev/null \
        || "$pip" install --quiet "$torch_pin" --extra-index-url https://download.pytorch.org/whl/cpu
fi
constraints="$lock"
installed_torch=$(.venv/bin/python -c "import importlib.metadata as m; print(m.version('torch'))")
if [ "torch==$installed_torch" != "$torch_pin" ]; then
    echo "Keeping the installed torch $installed_torch (the lock's is ${torch_pin#torch==}); every other package follows $lock."
    constraints=$(mktemp)
    trap 'rm -f "$constraints"' EXIT
    grep -v '^torch==' "$lock" > "$constraints"
fi
"$pip" install --quiet --constraint "$constraints" -e ".[dev,diffusion]"
echo "Installed into .venv ($(.venv/bin/python -c 'import flwr, torch; print("flwr", flwr.__version__, "torch", torch.__version__)'))"
