#!/usr/bin/env bash
# scripts/bench.sh (make bench): runs every benchmark of the project, times
# the munin plugin as whole processes with hyperfine when it is installed,
# and prints a summary table with the targets of BENCHMARKS.md.
#
# Environment:
#   BENCH=REGEXP      only benchmarks matching (go test -bench), default "."
#   BENCHTIME=T       go test -benchtime (e.g. 5x, 2s), default go's 1s
#   COUNT=N           go test -count, default 1
#   BENCH_OUT=DIR     keep raw output there (default: a new temp dir)
#   CAPSTATS_BENCH_MAX_PROVIDERS=N  largest poll-round size (default 10000)
#
# Benchmarks run one package at a time (-p 1): the machine is shared, and
# two benchmark binaries at once would measure each other.
set -euo pipefail
cd "$(dirname "$0")/.."

GO=${GO:-go}
BENCH=${BENCH:-.}
COUNT=${COUNT:-1}
OUT=${BENCH_OUT:-$(mktemp -d "${TMPDIR:-/tmp}/capstats-bench.XXXXXX")}
mkdir -p "$OUT"
RAW="$OUT/bench.txt"
: >"$RAW"

# The scale benchmarks raise RLIMIT_NOFILE themselves (to the hard limit);
# raise the soft limit here too so that everything below inherits it.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

cpu=$(grep -m1 'model name' /proc/cpuinfo 2>/dev/null | sed 's/.*: //' || echo unknown)
{
	echo "# capstats benchmarks"
	echo "# date:   $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
	echo "# commit: $(git rev-parse --short HEAD 2>/dev/null || echo none)$(git diff --quiet HEAD 2>/dev/null || echo ' (+ uncommitted changes)')"
	echo "# host:   nproc=$(nproc) cpu=\"$cpu\" $($GO version | cut -d' ' -f3-) kernel=$(uname -r)"
	echo "# limits: RLIMIT_NOFILE soft=$(ulimit -n) hard=$(ulimit -Hn); load average: $(cut -d' ' -f1-3 /proc/loadavg)"
} | tee -a "$RAW"

# Every package with a benchmark, the scale benchmarks last.
mapfile -t pkgs < <(grep -rl --include='*_test.go' '^func Benchmark' . |
	xargs -n1 dirname | sort -u | grep -v '^\./bench$' || true)
[ -d bench ] && pkgs+=(./bench)
echo "# packages: ${pkgs[*]}" | tee -a "$RAW"

args=(-run '^$' -bench "$BENCH" -benchmem -count "$COUNT" -p 1 -timeout 120m)
[ -n "${BENCHTIME:-}" ] && args+=(-benchtime "$BENCHTIME")
status=0
$GO test "${args[@]}" "${pkgs[@]}" 2>&1 | tee -a "$RAW" || status=$?

# The munin plugin as munin runs it: a whole process per graph, on a
# 1,000-node file, against the encoding/json baseline.
if command -v hyperfine >/dev/null && [ -d cmd/tahoe_stats ] && [[ "Plugin1000" =~ $BENCH || "$BENCH" == "." ]]; then
	tools="$OUT/plugin"
	mkdir -p "$tools"
	$GO build -o "$tools/tahoe_stats" ./cmd/tahoe_stats
	$GO build -o "$tools/jsonmap" ./bench/cmd/jsonmap
	$GO build -o "$tools/mkstatsfile" ./bench/cmd/mkstatsfile
	ln -sf tahoe_stats "$tools/tahoe_runtime_load_avg"
	"$tools/mkstatsfile" -n 1000 -o "$tools/stats.json"
	echo "# hyperfine: munin plugin on a 1,000-node stats.json ($(stat -c %s "$tools/stats.json") bytes)" | tee -a "$RAW"
	(cd "$tools" && statsfile="$tools/stats.json" hyperfine -N --warmup 5 --runs 100 \
		--export-json "$OUT/hyperfine.json" \
		-n fetch ./tahoe_runtime_load_avg \
		-n config './tahoe_runtime_load_avg config' \
		-n jsonmap ./jsonmap) 2>&1 | tee -a "$RAW" || status=$?
fi

# The summary: every benchmark, then the targets.
awk -v hyperfine="$OUT/hyperfine.json" '
function fmt_t(ns) {
	if (ns >= 1e9) return sprintf("%.3f s", ns / 1e9)
	if (ns >= 1e6) return sprintf("%.2f ms", ns / 1e6)
	if (ns >= 1e3) return sprintf("%.2f µs", ns / 1e3)
	return sprintf("%.2f ns", ns)
}
function has(k) { return (k in v) }
function check(what, got, op, want, unit,   ok) {
	if (got == "") { printf "  %-58s %s\n", what, "not measured"; return }
	ok = (op == "<=") ? (got + 0 <= want + 0) : (op == ">=") ? (got + 0 >= want + 0) : (got + 0 == want + 0)
	printf "  %-58s %12s %-4s (target %s %s)  %s\n", what, sprintf("%.4g", got), unit, op, want, ok ? "MET" : "MISSED"
}
/^pkg: / { pkg = $2; sub(/^capstats\//, "", pkg) }
/^Benchmark[^ \t]*[ \t]+[0-9]+[ \t]/ {
	name = $1; sub(/-[0-9]+$/, "", name)
	key = pkg "." name
	order[++n] = key
	# Mean over -count repetitions.
	runs[key]++
	for (i = 3; i + 1 <= NF; i += 2) {
		sum[key, $(i + 1)] += $i
		units[key] = units[key] (index(units[key], "|" $(i + 1) "|") ? "" : "|" $(i + 1) "|")
	}
}
END {
	print ""
	print "== Summary (mean of each benchmark'"'"'s runs) =="
	printf "%-46s %12s  %s\n", "benchmark", "time/op", "other metrics"
	for (j = 1; j <= n; j++) {
		key = order[j]
		if (done[key]++) continue
		line = ""
		split(units[key], us, "|")
		for (u in us) if (us[u] != "" && us[u] != "ns/op") {
			val = sum[key, us[u]] / runs[key]
			v[key, us[u]] = val
			line = line sprintf("%s=%.4g ", us[u], val)
		}
		v[key, "ns/op"] = sum[key, "ns/op"] / runs[key]
		printf "%-46s %12s  %s\n", key, fmt_t(v[key, "ns/op"]), line
	}
	print ""
	print "== Targets (issue 8) =="
	c = "node.BenchmarkCount"; a = "node.BenchmarkAtomicAdd"
	if ((c, "ns/op") in v && (a, "ns/op") in v) {
		check("1. Count / atomic.AddInt64, 1 goroutine", v[c, "ns/op"] / v[a, "ns/op"], "<=", 2, "x")
		check("1. Count allocs/op", v[c, "allocs/op"], "<=", 0, "")
	}
	c = "node.BenchmarkCountParallel"; a = "node.BenchmarkAtomicAddParallel"
	if ((c, "ns/op") in v && (a, "ns/op") in v)
		check("1. Count / atomic.AddInt64, parallel", v[c, "ns/op"] / v[a, "ns/op"], "<=", 2, "x")
	k = "bench.BenchmarkGetStatsVsNoop"
	if ((k, "ratio") in v) check("2. getStats(50) / no-op call, interleaved", v[k, "ratio"], "<=", 1.5, "x")
	if (("bench.BenchmarkGetStatsRoundTrip", "ns/op") in v && ("bench.BenchmarkNoopCall", "ns/op") in v)
		check("2. getStats(50) / no-op call, separate runs", v["bench.BenchmarkGetStatsRoundTrip", "ns/op"] / v["bench.BenchmarkNoopCall", "ns/op"], "<=", 1.5, "x")
	k = "bench.BenchmarkPollRound/1000"
	if ((k, "ns/op") in v) {
		check("3. 1,000 providers: round wall time", v[k, "ns/op"] / 1e9, "<=", 1, "s")
		check("3. 1,000 providers: gatherer CPU per provider per round", v[k, "cpu-us/provider"], "<=", 50, "µs")
		check("3. 1,000 providers: stats.json writes per round", v[k, "writes/round"], "==", 1, "")
	}
	k = "bench.BenchmarkPollRound/10000"
	if ((k, "ns/op") in v) {
		check("3. 10,000 providers: round wall time", v[k, "ns/op"] / 1e9, "<=", 5, "s")
		check("3. 10,000 providers: gatherer RSS per provider", v[k, "rss-KiB/provider"], "<=", 50, "KiB")
		check("3. 10,000 providers: stats.json writes per round", v[k, "writes/round"], "==", 1, "")
	}
	split("cold paced restart", modes, " ")
	paced = "bench.BenchmarkHandshakeStorm/paced"
	for (s = 1; s <= 3; s++) {
		k = "bench.BenchmarkHandshakeStorm/" modes[s]
		if (!((k, "storm-s") in v)) continue
		printf "  4. 1,000 connecting (%s): all polled in %.3f s%s, gave up %d, goroutines peak %d vs settled %d (+%d)\n",
			modes[s], v[k, "storm-s"],
			(modes[s] == "cold" && (paced, "storm-s") in v) ? sprintf(" (%.2fx paced)", v[k, "storm-s"] / v[paced, "storm-s"]) : "",
			v[k, "gave-up"], v[k, "peak-goroutines"], v[k, "steady-goroutines"], v[k, "peak-goroutines"] - v[k, "steady-goroutines"]
		check("4. storm (" modes[s] "): providers never polled", v[k, "gave-up"], "==", 0, "")
	}
	k = "statsd.BenchmarkIngest"
	if ((k, "lines/s") in v) check("15. StatsD ingest, one goroutine", v[k, "lines/s"], ">=", 500000, "lines/s")
	k = "scrape.BenchmarkSnapshotWithScrape"
	if ((k, "cpu-us/poll") in v) printf "  15. node CPU per poll, 1,000-series scrape: %.0f µs\n", v[k, "cpu-us/poll"]
	k = "bench.BenchmarkPlugin1000"
	if ((k, "fetch-ms") in v) {
		check("5. plugin fetch, 1,000 nodes, whole process", v[k, "fetch-ms"], "<=", 10, "ms")
		check("5. plugin config, 1,000 nodes, whole process", v[k, "config-ms"], "<=", 10, "ms")
		printf "  5. ratio to encoding/json into a map (jsonmap, %.2f ms): fetch %.2f, config %.2f\n", v[k, "jsonmap-ms"], v[k, "fetch-ratio"], v[k, "config-ratio"]
	}
	base = "bench.BenchmarkPollRound/100"
	if ((base, "ns/op") in v) {
		print ""
		print "== Growth: poll round, 100 -> 10,000 providers (x = per-provider figure over the 100 case) =="
		printf "%9s %11s %16s %16s %16s %14s %12s %10s\n", "providers", "round", "round/provider", "cpu µs/provider", "RSS KiB/provider", "goroutines/p", "file bytes", "write ms"
		split("100 1000 10000", sizes, " ")
		for (i = 1; i <= 3; i++) {
			k = "bench.BenchmarkPollRound/" sizes[i]
			if (!((k, "ns/op") in v)) continue
			per = v[k, "ns/op"] / sizes[i] / 1e3
			per0 = v[base, "ns/op"] / 100 / 1e3
			printf "%9d %11s %9.2f µs %4.2fx %9.2f %4.2fx %9.1f %4.2fx %14.2f %12d %10.2f\n", sizes[i], fmt_t(v[k, "ns/op"]),
				per, per / per0, v[k, "cpu-us/provider"], v[k, "cpu-us/provider"] / v[base, "cpu-us/provider"],
				v[k, "rss-KiB/provider"], v[k, "rss-KiB/provider"] / v[base, "rss-KiB/provider"],
				v[k, "goroutines/provider"], v[k, "file-bytes"], v[k, "write-ms"]
		}
	}
}' "$RAW" | tee "$OUT/summary.txt"

if [ -f "$OUT/hyperfine.json" ]; then
	{ echo; echo "== hyperfine: munin plugin, whole process, mean ± σ =="; } | tee -a "$OUT/summary.txt"
	# Pull "command" and "mean"/"stddev" (seconds) out without needing jq.
	tr -d '\n ' <"$OUT/hyperfine.json" | grep -o '"command":"[^"]*","mean":[0-9.e-]*,"stddev":[0-9.e-]*' |
		awk -F'[:,"]+' '{ m[$3] = $5 * 1000; s[$3] = $7 * 1000; o[++n] = $3 }
			END { for (i = 1; i <= n; i++) printf "  %-8s %7.2f ms ± %.2f ms   (%.2fx jsonmap)\n", o[i], m[o[i]], s[o[i]], m[o[i]] / m["jsonmap"] }' |
		tee -a "$OUT/summary.txt"
fi
echo
echo "raw output: $RAW; summary: $OUT/summary.txt"
exit "$status"
