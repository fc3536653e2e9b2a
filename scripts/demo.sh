#!/usr/bin/env bash
# The main job, end to end on one machine: a gatherer, three nodes, one
# poll round, and what munin would be shown. Everything lives in a temp dir
# and every process is stopped on exit. DEMO_KEEP=1 keeps it running until
# Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-$PWD/bin}
INTERVAL=${DEMO_INTERVAL:-2s}
work=$(mktemp -d "${TMPDIR:-/tmp}/capstats-demo.XXXXXX")
pids=()

cleanup() {
	trap - EXIT INT TERM
	for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
	for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
	if [ "${DEMO_KEEP_FILES:-}" = 1 ]; then
		echo "files kept in $work"
	else
		rm -rf "$work"
	fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# wait_for SECONDS DESCRIPTION COMMAND...: bounded wait for a condition.
wait_for() {
	local secs=$1 what=$2
	shift 2
	local deadline=$((SECONDS + secs))
	until "$@"; do
		if [ $SECONDS -ge $deadline ]; then
			echo "demo: timed out after ${secs}s waiting for $what" >&2
			echo "--- gatherer log:" >&2
			tail -n 20 "$work/gatherer.log" >&2 || true
			exit 1
		fi
		sleep 0.2
	done
}

section() { printf '\n== %s\n' "$*"; }

"$BIN/gatherer" create --basedir "$work/gatherer" --hostname 127.0.0.1 >/dev/null
"$BIN/gatherer" run --basedir "$work/gatherer" --interval "$INTERVAL" --http 127.0.0.1:0 --verbose \
	>"$work/gatherer.out" 2>"$work/gatherer.log" &
pids+=($!)
wait_for 15 "the gatherer's furl" test -s "$work/gatherer/stats_gatherer.furl"

mkdir -p "$work/storage"
for nick in alpha beta gamma; do
	mkdir -p "$work/$nick"
	cp "$work/gatherer/stats_gatherer.furl" "$work/$nick/"
	extra=()
	if [ "$nick" = gamma ]; then extra=(--storage-dir "$work/storage"); fi
	"$BIN/capstats-node" --basedir "$work/$nick" --nickname "$nick" "${extra[@]}" \
		>"$work/$nick.log" 2>&1 &
	pids+=($!)
done
# Something for the storage node to measure.
for i in 1 2 3 4 5; do head -c $((i * 200000)) /dev/zero >"$work/storage/share$i"; done

polled() {
	[ "$("$BIN/gatherer" status --basedir "$work/gatherer" 2>/dev/null | awk 'NR > 1 && $3 == "yes" && $4 != "never"' | wc -l)" -ge 3 ]
}
wait_for 25 "three nodes polled" polled

section "Gatherer furl (what each node's stats_gatherer.furl holds)"
cat "$work/gatherer/stats_gatherer.furl"

section "Nodes in stats.json (gatherer status)"
"$BIN/gatherer" status --basedir "$work/gatherer"

if http=$(grep -o 'http://[^ "]*' "$work/gatherer.out" "$work/gatherer.log" 2>/dev/null | head -n 1 | cut -d: -f2-); [ -n "$http" ]; then
	section "Status page and OpenMetrics"
	echo "status page: $http"
	echo "metrics:     ${http%/}/metrics"
	if [ "${DEMO_KEEP:-}" != 1 ]; then
		echo "(these URLs stop working when the demo ends, in a moment; \`make run\` keeps them up until Ctrl-C)"
	fi
fi

mkdir -p "$work/plugins"
for graph in tahoe_runtime_load_avg tahoe_storage_consumed tahoe_runtime_load_peak; do
	ln -sf "$BIN/tahoe_stats" "$work/plugins/$graph"
	section "munin: $graph config"
	statsfile="$work/gatherer/stats.json" "$work/plugins/$graph" config
	section "munin: $graph fetch"
	statsfile="$work/gatherer/stats.json" "$work/plugins/$graph"
done

if [ "${DEMO_KEEP:-}" = 1 ]; then
	section "Running; Ctrl-C to stop. Work dir: $work"
	echo "watch it:  $BIN/gatherer status --basedir $work/gatherer"
	wait "${pids[0]}"
fi
section "Stopping"
