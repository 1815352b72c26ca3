#!/usr/bin/env bash
# Install (if needed), lint, and run every test, the end-to-end flwr simulations included.
# With no arguments, the deployment fault drills (marker `drill`: they mostly wait for
# heartbeats and round timeouts) run in a second pytest beside the rest, and their report follows
# the main one; any arguments go to one plain pytest (e.g. -m "not slow", -k NAME, -m drill).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
export FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1 HF_HUB_OFFLINE=1
.venv/bin/ruff check .
.venv/bin/ruff format --check .
if [ "$#" -gt 0 ]; then
    exec .venv/bin/python -m pytest "$@"
fi
scratch=$(mktemp -d)
set -m  # job control: the background pytest keeps SIGINT (a background job without it ignores SIGINT)
.venv/bin/python -m pytest -m drill -p no:cacheprovider --basetemp "$scratch/tmp" > "$scratch/drills.log" 2>&1 &
drills=$!
set +m
# On exit (or Ctrl-C) the drills' pytest gets SIGINT, so that its deployments are torn down.
stop_drills() { if [ -n "$drills" ]; then kill -INT "$drills" 2> /dev/null || true; wait "$drills" || true; fi; }
trap 'stop_drills; rm -rf "$scratch"' EXIT
main=0
.venv/bin/python -m pytest -m "not drill" || main=$?
drill=0
wait "$drills" || drill=$?
drills=""  # finished: nothing to stop
echo "---------------- deployment fault drills (pytest -m drill, run beside the tests above) ----------------"
cat "$scratch/drills.log"
if [ "$main" -ne 0 ] || [ "$drill" -ne 0 ]; then
    echo "FAILED: tests exited $main, drills exited $drill"
    exit 1
fi
