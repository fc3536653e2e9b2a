#!/bin/sh
# Installs the tahoe_stats munin plugin for a capstats gatherer's stats.json.
#
#   scripts/install-munin.sh --statsfile PATH [--bin PATH]
#       [--lib-dir /usr/share/munin/plugins] [--plugins-dir /etc/munin/plugins]
#       [--conf-dir /etc/munin/plugin-conf.d] [--user USER] [--all | --multigraph]
#
# - installs the binary as "tahoe_" in munin's plugin library (a wildcard
#   plugin: munin-node-configure can run its autoconf and suggest);
# - links the graphs the stats file has data for (what "tahoe_ suggest"
#   prints) into the plugins dir as tahoe_<graph> -> <lib-dir>/tahoe_; with
#   --all, all 26 graphs; with --multigraph, instead one tahoe_multigraph that
#   prints every graph in one run (a copy, not a link into the library, so that
#   munin-node-configure does not take it for a wildcard instance and suggest
#   removing it). Switching to --multigraph removes the single graphs' links,
#   and switching back removes tahoe_multigraph, so graphs never show up
#   twice; links are otherwise only added, never removed;
# - writes <conf-dir>/tahoe_stats with a [tahoe_*] section holding
#   env.statsfile (and "user USER" with --user);
# - prints what it did and how to restart munin-node.
#
# Running it again with the same arguments changes nothing.
set -eu

prog=install-munin.sh
lib_dir=/usr/share/munin/plugins
plugins_dir=/etc/munin/plugins
conf_dir=/etc/munin/plugin-conf.d
statsfile=
bin=
user=
mode=suggested

usage() {
	sed -n '4,6p' "$0" | sed 's/^# \{0,1\}//'
}
die() {
	echo "$prog: $*" >&2
	exit 1
}
need_arg() {
	[ $# -ge 2 ] && [ -n "$2" ] || die "$1 needs a value"
}

while [ $# -gt 0 ]; do
	case $1 in
	--lib-dir) need_arg "$@"; lib_dir=$2; shift 2 ;;
	--lib-dir=*) lib_dir=${1#*=}; shift ;;
	--plugins-dir) need_arg "$@"; plugins_dir=$2; shift 2 ;;
	--plugins-dir=*) plugins_dir=${1#*=}; shift ;;
	--conf-dir) need_arg "$@"; conf_dir=$2; shift 2 ;;
	--conf-dir=*) conf_dir=${1#*=}; shift ;;
	--statsfile) need_arg "$@"; statsfile=$2; shift 2 ;;
	--statsfile=*) statsfile=${1#*=}; shift ;;
	--bin) need_arg "$@"; bin=$2; shift 2 ;;
	--bin=*) bin=${1#*=}; shift ;;
	--user) need_arg "$@"; user=$2; shift 2 ;;
	--user=*) user=${1#*=}; shift ;;
	--all) [ "$mode" = multigraph ] && die "--all and --multigraph exclude each other"; mode=all; shift ;;
	--multigraph) [ "$mode" = all ] && die "--all and --multigraph exclude each other"; mode=multigraph; shift ;;
	-h | --help) usage; exit 0 ;;
	*) echo "$prog: unknown argument: $1" >&2; usage >&2; exit 2 ;;
	esac
done

[ -n "$statsfile" ] || die "--statsfile PATH is required (the gatherer's stats.json)"
case $statsfile in
/*) ;;
*) statsfile=$(cd "$(dirname "$statsfile")" 2>/dev/null && pwd)/$(basename "$statsfile") ||
	die "--statsfile: no such directory: $(dirname "$statsfile")" ;;
esac
case $statsfile in
*[[:space:]]*) die "--statsfile must not contain white space (munin's plugin-conf.d cannot quote it): $statsfile" ;;
esac

if [ -z "$bin" ]; then
	here=$(cd "$(dirname "$0")/.." && pwd)
	for b in "$here/bin/tahoe_stats" "$(command -v tahoe_stats 2>/dev/null || true)"; do
		if [ -n "$b" ] && [ -x "$b" ]; then
			bin=$b
			break
		fi
	done
	[ -n "$bin" ] || die "no tahoe_stats binary found (run 'make build', or pass --bin PATH)"
fi
[ -f "$bin" ] && [ -x "$bin" ] || die "--bin $bin is not an executable file"
"$bin" --list >/dev/null 2>&1 || die "$bin does not run as tahoe_stats (tahoe_stats --list failed)"

for d in "$lib_dir" "$plugins_dir" "$conf_dir"; do
	[ -d "$d" ] || die "no such directory: $d (is munin-node installed?)"
done

plugin=$lib_dir/tahoe_

# 1. The binary, as the wildcard plugin tahoe_.
if [ -f "$plugin" ] && cmp -s "$bin" "$plugin"; then
	echo "unchanged: $plugin"
else
	tmp=$lib_dir/.tahoe_.tmp.$$
	cp "$bin" "$tmp"
	chmod 0755 "$tmp"
	mv -f "$tmp" "$plugin"
	echo "installed: $plugin (from $bin)"
fi

# 2. The conf file.
conf=$conf_dir/tahoe_stats
want_conf="# Written by capstats scripts/install-munin.sh; run it again to change this.
[tahoe_*]
env.statsfile $statsfile"
if [ -n "$user" ]; then
	want_conf="$want_conf
user $user"
fi
if [ -f "$conf" ] && [ "$(cat "$conf")" = "$want_conf" ]; then
	echo "unchanged: $conf"
else
	printf '%s\n' "$want_conf" >"$conf.tmp.$$"
	chmod 0644 "$conf.tmp.$$"
	mv -f "$conf.tmp.$$" "$conf"
	echo "wrote: $conf ([tahoe_*] env.statsfile $statsfile${user:+, user $user})"
fi

# 3. Which graphs.
graphs=
case $mode in
all)
	graphs=$("$bin" --list)
	;;
suggested)
	if suggestions=$(statsfile=$statsfile "$bin" --graph tahoe_ suggest 2>&1); then
		for s in $suggestions; do
			graphs="$graphs tahoe_$s"
		done
	else
		echo "note: cannot read the stats file yet: $suggestions" >&2
	fi
	if [ -z "$graphs" ]; then
		echo "note: $statsfile has no data for any graph yet; no graph linked." >&2
		echo "note: run this again once the gatherer has polled its nodes, or use --all." >&2
	fi
	;;
esac

# is_ours FILE: a link to our tahoe_, or a copy of a tahoe_stats binary.
is_ours() {
	if [ -L "$1" ]; then
		[ "$(readlink "$1")" = "$plugin" ]
	else
		[ -f "$1" ] && grep -q 'Munin plugin for the capstats stats gatherer' "$1" 2>/dev/null
	fi
}

# 4. Remove the other mode's plugins (only ours).
for f in "$plugins_dir"/tahoe_*; do
	[ -e "$f" ] || [ -L "$f" ] || continue
	is_ours "$f" || continue
	case $mode:$(basename "$f") in
	multigraph:tahoe_multigraph) continue ;;
	multigraph:*) ;;
	*:tahoe_multigraph) ;;
	*) continue ;;
	esac
	rm -f "$f"
	echo "removed: $f"
done

# 5. Link the graphs, or install the multigraph copy.

if [ "$mode" = multigraph ]; then
	target=$plugins_dir/tahoe_multigraph
	if [ -f "$target" ] && [ ! -L "$target" ] && cmp -s "$bin" "$target"; then
		echo "unchanged: $target"
	else
		if { [ -e "$target" ] || [ -L "$target" ]; } && ! is_ours "$target"; then
			die "$target exists and is not ours; remove it first"
		fi
		tmp=$plugins_dir/.tahoe_multigraph.tmp.$$
		cp "$bin" "$tmp"
		chmod 0755 "$tmp"
		mv -f "$tmp" "$target"
		echo "installed: $target (all graphs in one run; needs a munin master with multigraph support)"
	fi
else
	for g in $graphs; do
		link=$plugins_dir/$g
		if [ -L "$link" ] && [ "$(readlink "$link")" = "$plugin" ]; then
			echo "unchanged: $link -> $plugin"
		elif [ -e "$link" ] || [ -L "$link" ]; then
			echo "skipped: $link exists and is not a link to $plugin; remove it to let this script manage it" >&2
		else
			ln -s "$plugin" "$link"
			echo "linked: $link -> $plugin"
		fi
	done
fi

# 6. Can munin's plugin user read the stats file?
check_user=${user:-nobody}
if [ "$(id -u)" -eq 0 ] && command -v runuser >/dev/null 2>&1 && id "$check_user" >/dev/null 2>&1; then
	if ! runuser -u "$check_user" -- test -r "$statsfile" 2>/dev/null; then
		echo "warning: user $check_user cannot read $statsfile (or it does not exist yet); munin-node runs plugins as $check_user unless told otherwise: make the file and its directories readable, or pass --user" >&2
	fi
fi

echo "done. Restart munin-node to pick up the changes:"
echo "  systemctl restart munin-node    (or: service munin-node restart)"
if [ "$mode" = multigraph ]; then
	echo "Check with: munin-run tahoe_multigraph config"
else
	echo "Check with: munin-run tahoe_storage_allocated config   (or another linked graph)"
fi
