#!/usr/bin/env bash
# Refresh requirements/lock.txt: the whole tested environment (Python 3.11, Linux x86_64, CPU
# torch) resolved from pyproject.toml with its dev and diffusion extras, every package pinned.
# scripts/install.sh installs with it as pip constraints. After a refresh, reinstall
# (rm -rf .venv && bash scripts/install.sh) and run the tests before committing the new lock.
#
# torch is held at the CPU build in requirements/torch.txt. uv reads that wheel from
# TORCH_WHEELS: a folder of wheels, or by default PyTorch's CPU wheel page.
set -euo pipefail
cd "$(dirname "$0")/.."
torch_wheels="${TORCH_WHEELS:-https://download.pytorch.org/whl/cpu/torch/}"
uv=".venv/bin/uv"                     # flwr installs uv; any uv >= 0.5 works
[ -x "$uv" ] || uv="uv"
"$uv" pip compile pyproject.toml \
    --extra dev --extra diffusion \
    --override requirements/torch.txt \
    --find-links "$torch_wheels" \
    --python-version 3.11 --python-platform x86_64-manylinux_2_28 \
    --no-header --annotation-style line --quiet \
    --output-file requirements/lock.txt
sed -i '1i # The tested environment (Python 3.11, Linux x86_64, CPU torch), made by scripts/lock.sh: do not edit by hand.' requirements/lock.txt
echo "Wrote requirements/lock.txt ($(grep -c '==' requirements/lock.txt) pinned packages)"
