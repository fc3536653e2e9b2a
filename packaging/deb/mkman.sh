#!/bin/sh
# mkman.sh BIN SECTION VERSION "one-line summary" [SUBCOMMAND...]: a man page
# on stdout made from BIN --help (and BIN SUBCOMMAND --help), so that the
# pages never drift from the commands.
set -eu
bin=$1 section=$2 version=$3 summary=$4
shift 4
name=$(basename "$bin")

# roff-safe: backslashes escaped, a leading . or ' defused.
esc() {
	sed -e 's/\\/\\e/g' -e "s/^\\([.']\\)/\\\\\\&\\1/"
}
help() {
	COLUMNS=78 "$@" --help | esc
}

upper=$(printf '%s' "$name" | tr '[:lower:]-' '[:upper:]_')
date=${SOURCE_DATE:-$(date -u +%Y-%m-%d)}
printf '.TH %s %s "%s" "capstats %s" "capstats"\n' "$upper" "$section" "$date" "$version"
printf '.SH NAME\n%s \\- %s\n' "$(printf '%s' "$name" | esc | sed 's/-/\\-/g')" "$summary"
printf '.SH DESCRIPTION\nWhat\n.B %s \\-\\-help\nprints:\n.PP\n.nf\n' "$name"
help "$bin"
printf '.fi\n'
for sub in "$@"; do
	printf '.SS %s\n.nf\n' "$sub"
	help "$bin" "$sub"
	printf '.fi\n'
done
printf '.SH VERSION\n.B %s \\-\\-version\nprints the version and VCS revision it was built from.\n' "$name"
printf '.SH SEE ALSO\n/usr/share/doc/capstats/README.md, /usr/share/doc/capstats/README.Debian\n'
