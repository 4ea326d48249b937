#!/usr/bin/env bash
# The test command of README.md (and of .ci/run): system packages, Python packages, the suite.
set -euo pipefail
cd "$(dirname "$0")/.."
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq ffmpeg espeak-ng sox
python3 -m pip install "torch==2.13.0"
python3 -m pip install -e ".[test]"
python3 -m pytest "$@"
