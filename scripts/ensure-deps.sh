#!/usr/bin/env bash
# Installs what the tests need and a fresh Debian machine lacks: the Cap'n
# Proto compiler (to check generated code is current), munin-node (the real
# munin-run / munin-node / munin-node-configure), promtool (prometheus),
# chromium (the status page test), lintian (the .deb test), and for the
# sidecar tests a real Prometheus exporter (prometheus-node-exporter) and a
# real StatsD client (python3-statsd). Only missing pieces are installed.
set -euo pipefail

need=()
command -v capnp >/dev/null || need+=(capnproto)
command -v munin-run >/dev/null || need+=(munin-node)
command -v promtool >/dev/null || need+=(prometheus)
command -v chromium >/dev/null || need+=(chromium)
command -v prometheus-node-exporter >/dev/null || need+=(prometheus-node-exporter)
/usr/bin/python3 -c 'import statsd' 2>/dev/null || need+=(python3-statsd)
command -v lintian >/dev/null || need+=(lintian)

[ ${#need[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
	echo "ensure-deps: missing Debian packages: ${need[*]}" >&2
	echo "ensure-deps: install them as root: apt-get install -y --no-install-recommends ${need[*]}" >&2
	exit 1
fi
echo "ensure-deps: installing ${need[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
