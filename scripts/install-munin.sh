#!/bin/sh
# Installs the tahoe_stats munin plugin for a capstats gatherer's stats.json.
#
#   install-munin.sh --statsfile PATH [--bin PATH]
#       [--lib-dir /usr/share/munin/plugins] [--plugins-dir /etc/munin/plugins]
#       [--conf-dir /etc/munin/plugin-conf.d] [--user USER]
#       [--all | --only-with-data | --multigraph]
#   install-munin.sh --uninstall [--lib-dir ...] [--plugins-dir ...] [--conf-dir ...]
#
# - links the binary as "tahoe_" into munin's plugin library (a wildcard
#   plugin: munin-node-configure can run its autoconf and suggest). It is a
#   link to the installed binary (--bin, else tahoe_stats in PATH, else this
#   checkout's bin/), so an upgrade of the binary needs no re-run;
# - links every graph (the original's 26 and capstats's additions; by
#   default, or --all) into the plugins dir as
#   tahoe_<graph> -> <lib-dir>/tahoe_; a graph with no data yet shows as
#   unknown in munin until the nodes report it. With --only-with-data, only
#   the graphs the stats file has data for now (what "tahoe_ suggest"
#   prints). With --multigraph, instead one tahoe_multigraph that prints
#   every graph in one run (a link straight to the binary, not into the
#   library, so that munin-node-configure does not take it for a wildcard
#   instance and suggest removing it). Switching to --multigraph removes the
#   single graphs' links, and switching back removes tahoe_multigraph, so
#   graphs never show up twice; links are otherwise only added, never removed;
# - writes <conf-dir>/tahoe_stats with a [tahoe_*] section holding
#   env.statsfile (and "user USER" with --user), unless that file exists and
#   was not written by this script (such as the Debian package's conffile):
#   then it is left as it is;
# - prints what it did and how to restart munin-node.
# --uninstall removes what this script installed (links, the library link
# unless a package owns it, its conf file) and nothing else.
#
# Running it again with the same arguments changes nothing.
set -eu

prog=${0##*/}
lib_dir=/usr/share/munin/plugins
plugins_dir=/etc/munin/plugins
conf_dir=/etc/munin/plugin-conf.d
statsfile=
bin=
user=
mode=all
mode_flag=
uninstall=

usage() {
	sed -n '4,8p' "$0" | sed 's/^# \{0,1\}//'
}
full_help() {
	sed -n '2,/^set -eu$/p' "$0" | sed -e '/^set -eu$/d' -e 's/^# \{0,1\}//'
}
die() {
	echo "$prog: $*" >&2
	exit 1
}
need_arg() {
	[ $# -ge 2 ] && [ -n "$2" ] || die "$1 needs a value"
}
set_mode() {
	[ -z "$mode_flag" ] || [ "$mode_flag" = "$1" ] || die "$mode_flag and $1 exclude each other"
	mode_flag=$1
	mode=$2
}

conf_header="# Written by capstats scripts/install-munin.sh; run it again to change this."

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
	--all) set_mode --all all; shift ;;
	--only-with-data) set_mode --only-with-data suggested; shift ;;
	--multigraph) set_mode --multigraph multigraph; shift ;;
	--uninstall) uninstall=1; shift ;;
	-h | --help) full_help; exit 0 ;;
	*) echo "$prog: unknown argument: $1" >&2; usage >&2; exit 2 ;;
	esac
done

for d in "$lib_dir" "$plugins_dir" "$conf_dir"; do
	[ -d "$d" ] || die "no such directory: $d (is munin-node installed?)"
done
# Absolute, because the links hold these paths.
lib_dir=$(cd "$lib_dir" && pwd)
plugins_dir=$(cd "$plugins_dir" && pwd)
conf_dir=$(cd "$conf_dir" && pwd)

plugin=$lib_dir/tahoe_
conf=$conf_dir/tahoe_stats

# runs_as_plugin FILE: FILE is a tahoe_stats binary (or a link to one).
runs_as_plugin() {
	[ -x "$1" ] && "$1" --list >/dev/null 2>&1
}

# is_ours FILE: a link to our tahoe_, or a tahoe_stats binary or a link to
# one (older versions of this script installed copies).
is_ours() {
	{ [ -L "$1" ] && [ "$(readlink "$1")" = "$plugin" ]; } ||
		{ [ -f "$1" ] && grep -q 'Munin plugin for the capstats stats gatherer' "$1" 2>/dev/null; }
}

# packaged FILE: a Debian package owns FILE (dpkg would restore it).
packaged() {
	command -v dpkg-query >/dev/null 2>&1 && dpkg-query -S "$1" >/dev/null 2>&1
}

restart_hint() {
	echo "done. Restart munin-node to pick up the changes:"
	echo "  systemctl restart munin-node    (or: service munin-node restart)"
}

if [ -n "$uninstall" ]; then
	[ -z "$mode_flag" ] || die "--uninstall and $mode_flag exclude each other"
	for f in "$plugins_dir"/tahoe_*; do
		[ -e "$f" ] || [ -L "$f" ] || continue
		is_ours "$f" || continue
		rm -f "$f"
		echo "removed: $f"
	done
	if [ -e "$plugin" ] || [ -L "$plugin" ]; then
		if packaged "$plugin"; then
			echo "kept: $plugin (it belongs to a Debian package)"
		elif is_ours "$plugin"; then
			rm -f "$plugin"
			echo "removed: $plugin"
		fi
	fi
	if [ -f "$conf" ] && [ "$(head -n 1 "$conf")" = "$conf_header" ]; then
		rm -f "$conf"
		echo "removed: $conf"
	elif [ -f "$conf" ]; then
		echo "kept: $conf (not written by this script)"
	fi
	restart_hint
	exit 0
fi

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
	for b in "$(command -v tahoe_stats 2>/dev/null || true)" "$here/bin/tahoe_stats"; do
		if [ -n "$b" ] && [ -x "$b" ]; then
			bin=$b
			break
		fi
	done
	[ -n "$bin" ] || die "no tahoe_stats binary found (install it, run 'make build', or pass --bin PATH)"
fi
[ -f "$bin" ] && [ -x "$bin" ] || die "--bin $bin is not an executable file"
case $bin in
/*) ;;
*) bin=$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin") ;;
esac
"$bin" --list >/dev/null 2>&1 || die "$bin does not run as tahoe_stats (tahoe_stats --list failed)"

# 1. The wildcard plugin tahoe_: a link to the binary, so that installing a
#    new binary upgrades the plugin.
if [ -L "$plugin" ] && [ "$(readlink "$plugin")" = "$bin" ]; then
	echo "unchanged: $plugin -> $bin"
elif packaged "$plugin" && runs_as_plugin "$plugin"; then
	echo "kept: $plugin (it belongs to a Debian package)"
else
	ln -sfn "$bin" "$lib_dir/.tahoe_.tmp.$$"
	mv -f "$lib_dir/.tahoe_.tmp.$$" "$plugin"
	echo "linked: $plugin -> $bin"
fi

# 2. The conf file.
want_conf="$conf_header
[tahoe_*]
env.statsfile $statsfile"
if [ -n "$user" ]; then
	want_conf="$want_conf
user $user"
fi
if [ -f "$conf" ] && [ "$(cat "$conf")" = "$want_conf" ]; then
	echo "unchanged: $conf"
elif [ -f "$conf" ] && [ "$(head -n 1 "$conf")" != "$conf_header" ]; then
	echo "kept: $conf (not written by this script: edit it to set env.statsfile $statsfile${user:+ and user $user})"
	if ! grep -q "^[[:space:]]*env\.statsfile[[:space:]][[:space:]]*$statsfile[[:space:]]*\$" "$conf"; then
		echo "warning: $conf does not set env.statsfile $statsfile" >&2
	fi
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
		echo "note: run this again once the gatherer has polled its nodes, or leave out --only-with-data to link every graph." >&2
	fi
	;;
esac

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

# 5. Link the graphs, or tahoe_multigraph. $shown is a graph now in place,
#    for the closing hint.
shown=
if [ "$mode" = multigraph ]; then
	target=$plugins_dir/tahoe_multigraph
	if [ -L "$target" ] && [ "$(readlink "$target")" = "$bin" ]; then
		echo "unchanged: $target -> $bin"
	else
		if { [ -e "$target" ] || [ -L "$target" ]; } && ! is_ours "$target"; then
			die "$target exists and is not ours; remove it first"
		fi
		ln -sfn "$bin" "$plugins_dir/.tahoe_multigraph.tmp.$$"
		mv -f "$plugins_dir/.tahoe_multigraph.tmp.$$" "$target"
		echo "linked: $target -> $bin (all graphs in one run; needs a munin master with multigraph support)"
	fi
	shown=tahoe_multigraph
else
	for g in $graphs; do
		link=$plugins_dir/$g
		if [ -L "$link" ] && [ "$(readlink "$link")" = "$plugin" ]; then
			echo "unchanged: $link -> $plugin"
		elif [ -e "$link" ] || [ -L "$link" ]; then
			echo "skipped: $link exists and is not a link to $plugin; remove it to let this script manage it" >&2
			continue
		else
			ln -s "$plugin" "$link"
			echo "linked: $link -> $plugin"
		fi
		[ -n "$shown" ] || shown=$g
	done
fi

# 6. Can munin's plugin user run the binary and read the stats file?
check_user=${user:-nobody}
if [ "$(id -u)" -eq 0 ] && command -v runuser >/dev/null 2>&1 && id "$check_user" >/dev/null 2>&1; then
	if ! runuser -u "$check_user" -- test -x "$bin" 2>/dev/null; then
		echo "warning: user $check_user cannot run $bin (the plugins link to it): install it where $check_user can reach it, or pass --bin" >&2
	fi
	if ! runuser -u "$check_user" -- test -r "$statsfile" 2>/dev/null; then
		echo "warning: user $check_user cannot read $statsfile (or it does not exist yet); munin-node runs plugins as $check_user unless told otherwise: make the file and its directories readable, or pass --user" >&2
	fi
fi

restart_hint
if [ -n "$shown" ]; then
	echo "Check with: munin-run $shown config"
elif [ "$mode" = suggested ]; then
	echo "No graph is linked yet: run this again once the gatherer has polled its nodes."
else
	echo "No graph is linked: see the skipped lines above."
fi
