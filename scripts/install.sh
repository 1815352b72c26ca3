#!/usr/bin/env bash
# Create .venv (if missing) and install the project with its test tools, every package at the
# version of requirements/lock.txt (the tested environment; refresh it with scripts/lock.sh).
# torch: the lock's CPU build is installed only when the environment has no torch yet; a torch
# that is already there (a GPU user's own build) is kept: then torch and the packages only it
# needs are left to it.
set -euo pipefail
cd "$(dirname "$0")/.."
lock=requirements/lock.txt
pip=".venv/bin/pip"
if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
torch_pin=$(grep '^torch==' "$lock" | cut -d' ' -f1)       # torch==2.13.0+cpu
installed_torch() { .venv/bin/python -c "import importlib.metadata as m; print(m.version('torch'))" 2>/dev/null; }
if [ -z "$(installed_torch)" ]; then
    # A local wheel folder (pip's find-links) or PyPI first, then PyTorch's CPU index.
    "$pip" install --quiet "$torch_pin" 2>/dev/null \
        || "$pip" install --quiet "$torch_pin" --extra-index-url https://download.pytorch.org/whl/cpu
fi
constraints="$lock"
own_torch=$(installed_torch)
if [ "torch==$own_torch" != "$torch_pin" ]; then
    # Pin the installed torch itself, so that pip fails loudly rather than swap it, and leave
    # free what only the lock's torch needs (its own sympy, networkx... pins).
    echo "Keeping the installed torch $own_torch (the lock's is ${torch_pin#torch==}); every other package follows $lock."
    constraints=$(mktemp)
    trap 'rm -f "$constraints"' EXIT
    { grep -v -e '^torch==' -e '# via torch$' "$lock"; echo "torch==$own_torch"; } > "$constraints"
fi
"$pip" install --quiet --constraint "$constraints" -e ".[dev,diffusion]"
"$pip" install --quiet --no-deps -r requirements/no-deps.txt   # aisfx: its pins do not fit Python 3.11
echo "Installed into .venv ($(.venv/bin/python -c 'import flwr, torch; print("flwr", flwr.__version__, "torch", torch.__version__)'))"
