#!/usr/bin/env bash
# scripts/test-loaded.sh (make test-loaded): runs a command (make test) while
# a busy loop of its own keeps one core busy, as a shared CI machine would.
# The tests assert outcomes, not speed, so they must pass like this. The
# loop is bounded in time (LOAD_LIMIT, default 60m) and stopped when the
# command ends, whichever way it ends.
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -gt 0 ] || { echo "usage: $0 COMMAND [ARG...]" >&2; exit 2; }

pin=()
command -v taskset >/dev/null && pin=(taskset -c 0)
"${pin[@]}" timeout "${LOAD_LIMIT:-60m}" sh -c 'while :; do :; done' &
spinner=$!
trap 'kill "$spinner" 2>/dev/null || true; wait "$spinner" 2>/dev/null || true' EXIT
echo "test-loaded: busy loop (pid $spinner) on one core while: $*" >&2
"$@"
