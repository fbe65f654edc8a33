#!/usr/bin/env bash
# Runs the test suite: installs the test extras (and Chromium for the browser tests) if missing, then pytest.
# Usage: scripts/test.sh [pytest args...]   (uses the active virtualenv, else ./.venv, creating it if needed)
# The default suite leaves out the tests marked slow; `scripts/test.sh -m slow` runs those (CI runs both:
# .ci/run), `scripts/test.sh -m ""` runs everything. Two pytest-xdist workers, one test file each at a time
# (module fixtures are built once): much of a test's time is a subprocess importing or a server booting, one
# core's work. A -m or -n given here wins over the default (`-n 0`: one process).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -z "${VIRTUAL_ENV:-}" ]; then
  [ -d .venv ] || python3 -m venv .venv
  # shellcheck disable=SC1091
  . .venv/bin/activate
fi
python -m pip install -q --upgrade pip
python -m pip install -q -e ".[test]"

# Browser tests drive Debian's Chromium through Playwright (Playwright's own browser download does not work offline).
if ! command -v chromium >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq chromium chromium-driver >/dev/null
fi

export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1
exec python -m pytest -q -m "not slow" -n 2 --dist loadfile --durations=25 "$@"
