#!/usr/bin/env bash
# Install facefoundry into its own virtual environment (.venv), from the lock file.
#
#   bash scripts/setup.sh             the server: system packages, .venv, pinned Python packages
#   bash scripts/setup.sh --test      also what the test suite needs (test extra, ffmpeg, chromium, ...)
#   bash scripts/setup.sh --upgrade   re-resolve within pyproject.toml's ranges and rewrite the lock
#
# Works as root and as a user: apt-get runs only for missing tools, through sudo when not root.
# A venv, not the system Python: Debian's refuses pip installs (PEP 668).
set -euo pipefail
cd "$(dirname "$0")/.."

TEST=0
UPGRADE=0
for arg in "$@"; do
  case "$arg" in
    --test) TEST=1 ;;
    --upgrade) UPGRADE=1 ;;
    *) echo "setup.sh: unknown option $arg (use --test, --upgrade)" >&2; exit 2 ;;
  esac
done

VENV=.venv
LOCK=requirements/constraints.txt
# The CPU build on Linux x86 (its wheel is what CI tests); a GPU user installs the CUDA build of
# the same version into .venv afterwards (README).
TORCH="torch==2.13.0"
EXTRAS=""
[ "$TEST" = 1 ] && EXTRAS="[test]"

# tool -> Debian package; the server needs ffmpeg for audio/video, the tests also speak and measure
# sound (espeak-ng, sox), drive a real browser (chromium) and start a Redis for the scale-out store.
declare -A PACKAGES=([ffmpeg]=ffmpeg [ffprobe]=ffmpeg)
if [ "$TEST" = 1 ]; then
  PACKAGES+=([espeak-ng]=espeak-ng [sox]=sox [chromium]=chromium [redis-server]=redis-server)
fi

missing=()
for tool in "${!PACKAGES[@]}"; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("${PACKAGES[$tool]}")
done
python3 -c "import venv, ensurepip" >/dev/null 2>&1 || missing+=(python3-venv)
if [ "${#missing[@]}" -gt 0 ]; then
  mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
  if [ "$(id -u)" -eq 0 ]; then
    SUDO=()
  elif command -v sudo >/dev/null 2>&1; then
    SUDO=(sudo)
  else
    echo "setup.sh: needs ${missing[*]} (apt-get install as root, or install sudo)" >&2
    exit 1
  fi
  echo "setup.sh: installing ${missing[*]} with apt-get"
  "${SUDO[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${SUDO[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
PY="$VENV/bin/python"

if [ "$UPGRADE" = 1 ]; then
  # Resolve afresh within pyproject.toml's ranges (every extra, so one lock serves all installs).
  "$PY" -m pip install -q --upgrade pip
  "$PY" -m pip install -q --upgrade "$TORCH"
  "$PY" -m pip install -q --upgrade --upgrade-strategy eager -e ".[test]"
  mkdir -p "$(dirname "$LOCK")"
  {
    echo "# Every package facefoundry and its test extra install, pinned: the set CI last passed with."
    echo "# Made by 'bash scripts/setup.sh --upgrade' with $("$PY" -c 'import platform; print("Python", platform.python_version(), "on", platform.machine())')."
    "$PY" -m pip freeze --exclude-editable | grep -vE '^(#|-e |facefoundry)' | sed 's/+cpu$//'
  } > "$LOCK"
  echo "setup.sh: wrote $LOCK; run the tests, then commit it"
fi

# Reinstall only when the project's requirements or the lock changed since the last install.
STAMP="$VENV/.facefoundry-installed"
want="$(cat pyproject.toml "$LOCK" | sha256sum | cut -c1-16) $EXTRAS"
if [ "$UPGRADE" = 1 ] || [ ! -f "$STAMP" ] || ! grep -qxF -- "$want" "$STAMP"; then
  "$PY" -m pip install -q -c "$LOCK" "$TORCH"
  "$PY" -m pip install -q -c "$LOCK" -e ".$EXTRAS"
  # A test install also satisfies a server install: remember both.
  { echo "$want"; [ "$TEST" = 1 ] && echo "${want% *} "; } > "$STAMP"
fi
