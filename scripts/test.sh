#!/usr/bin/env bash
# The test command of README.md (and of .ci/run): install what the suite needs into .venv from the
# lock file (scripts/setup.sh --test), then run pytest there; arguments go to pytest.
#   bash scripts/test.sh --upgrade ...   re-resolve the dependencies and rewrite the lock first
set -euo pipefail
cd "$(dirname "$0")/.."
SETUP=(--test)
if [ "${1:-}" = "--upgrade" ]; then
  SETUP+=(--upgrade)
  shift
fi
bash scripts/setup.sh "${SETUP[@]}"
exec .venv/bin/python -m pytest "$@"
