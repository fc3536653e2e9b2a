#!/bin/sh
# build-deb.sh OUTDIR: builds capstats_VERSION_ARCH.deb in OUTDIR with
# dpkg-deb (`make deb` runs it). The package holds the three binaries, the
# systemd units of scripts/systemd (pointed at /usr/bin), the munin plugin
# and its plugin-conf.d snippet, man pages made from --help, and the
# maintainer scripts of this directory. Needs go and dpkg-deb; not root.
#
# DEB_VERSION (default from git: 0.0~gitDATE.REV), DEB_MAINTAINER and
# GO may be set in the environment.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
out=${1:?usage: build-deb.sh OUTDIR}
GO=${GO:-go}
command -v dpkg-deb >/dev/null || { echo "build-deb.sh: needs dpkg-deb (Debian's dpkg)" >&2; exit 1; }

cd "$root"
if [ -z "${DEB_VERSION:-}" ]; then
	if rev=$(git rev-parse --short=12 HEAD 2>/dev/null); then
		DEB_VERSION=0.0~git$(TZ=UTC git log -1 --format=%cd --date=format-local:%Y%m%d%H%M%S HEAD).$rev
	else
		DEB_VERSION=0.0~unknown
	fi
fi
maintainer=${DEB_MAINTAINER:-capstats maintainers <capstats@example.org>}
goarch=$($GO env GOARCH)
case $goarch in
386) arch=i386 ;;
arm) arch=armhf ;;
ppc64le) arch=ppc64el ;;
*) arch=$goarch ;;
esac

stage=$(mktemp -d "${TMPDIR:-/tmp}/capstats-deb.XXXXXX")
trap 'rm -rf "$stage"' EXIT
pkg=$stage/capstats
doc=$pkg/usr/share/doc/capstats

install -d "$pkg/DEBIAN" "$pkg/usr/bin" "$pkg/usr/sbin" "$pkg/usr/lib/systemd/system" \
	"$pkg/usr/share/munin/plugins" "$pkg/usr/share/man/man1" "$pkg/usr/share/man/man8" \
	"$pkg/etc/default" "$pkg/etc/munin/plugin-conf.d" "$doc"

# Static PIE binaries: no libc dependency, ASLR, the git revision stamped
# in for --version. (A static non-PIE binary is a lintian error, since
# lintian only knows Go binaries built from a Debian source package.)
CGO_ENABLED=0 $GO build -trimpath -buildvcs="${BUILDVCS:-auto}" -buildmode=pie -ldflags='-s -w' \
	-o "$pkg/usr/bin/" ./cmd/gatherer ./cmd/capstats-node ./cmd/tahoe_stats
install -m 0755 scripts/install-munin.sh "$pkg/usr/sbin/capstats-install-munin"
ln -s ../../../bin/tahoe_stats "$pkg/usr/share/munin/plugins/tahoe_"

for u in gatherer:capstats-gatherer.service capstats-node:capstats-node.service; do
	b=${u%%:*} u=${u#*:}
	sed -e 's|/usr/local/bin/|/usr/bin/|g' \
		-e "s|^Documentation=.*|Documentation=man:$b(1) file:///usr/share/doc/capstats/README.Debian|" \
		"scripts/systemd/$u" >"$pkg/usr/lib/systemd/system/$u"
	chmod 0644 "$pkg/usr/lib/systemd/system/$u"
done
install -d "$pkg/usr/share/lintian/overrides"
install -m 0644 "$here/lintian-overrides" "$pkg/usr/share/lintian/overrides/capstats"
install -m 0644 "$here/capstats-gatherer.default" "$pkg/etc/default/capstats-gatherer"
install -m 0644 "$here/capstats-node.default" "$pkg/etc/default/capstats-node"
install -m 0644 "$here/munin-plugin-conf" "$pkg/etc/munin/plugin-conf.d/tahoe_stats"

# Man pages, from --help.
subcommands=$("$pkg/usr/bin/gatherer" --help | sed -n '/^Commands:/,/^Run /s/^  \([a-z][a-z-]*\) .*/\1/p')
SOURCE_DATE=$(TZ=UTC git log -1 --format=%cd --date=format-local:%Y-%m-%d HEAD 2>/dev/null || date -u +%Y-%m-%d)
export SOURCE_DATE
# shellcheck disable=SC2086 # one word per subcommand
"$here/mkman.sh" "$pkg/usr/bin/gatherer" 1 "$DEB_VERSION" "gather runtime statistics from capstats nodes into stats.json" $subcommands >"$pkg/usr/share/man/man1/gatherer.1"
"$here/mkman.sh" "$pkg/usr/bin/capstats-node" 1 "$DEB_VERSION" "report this host's runtime statistics to a capstats gatherer" >"$pkg/usr/share/man/man1/capstats-node.1"
"$here/mkman.sh" "$pkg/usr/bin/tahoe_stats" 1 "$DEB_VERSION" "munin plugin for the capstats gatherer's stats.json" >"$pkg/usr/share/man/man1/tahoe_stats.1"
"$here/mkman.sh" "$pkg/usr/sbin/capstats-install-munin" 8 "$DEB_VERSION" "link the tahoe_stats munin plugin's graphs" >"$pkg/usr/share/man/man8/capstats-install-munin.8"
gzip -9n "$pkg"/usr/share/man/man*/*

install -m 0644 README.md "$here/README.Debian" "$doc/"
# The copyright file: capstats's paragraph, then each Go module linked into
# the binaries with its license text (MIT, BSD and Apache-2.0 all ask for
# the notice to travel with binaries).
{
	cat "$here/copyright"
	$GO list -deps -f '{{with .Module}}{{if not .Main}}{{.Path}} {{.Version}} {{.Dir}}{{end}}{{end}}' \
		./cmd/gatherer ./cmd/capstats-node ./cmd/tahoe_stats | LC_ALL=C sort -u |
		while read -r path modversion dir; do
			lic=$(find "$dir" -maxdepth 1 -type f \( -iname 'LICENSE*' -o -iname 'COPYING*' \) | LC_ALL=C sort | head -n 1)
			[ -n "$lic" ] || { echo "build-deb.sh: $path has no LICENSE file" >&2; exit 1; }
			printf '\nFiles: linked Go module %s %s\nCopyright: see the license text\n' "$path" "$modversion"
			if head -n 5 "$lic" | grep -q 'Apache License' && head -n 5 "$lic" | grep -q 'Version 2\.0'; then
				# Debian policy: refer to the common copy, keep the NOTICE.
				printf 'License: Apache-2.0\n On Debian systems the full text of the Apache License 2.0 is in\n /usr/share/common-licenses/Apache-2.0.\n'
				for n in "$dir"/NOTICE*; do
					[ -f "$n" ] || continue
					printf ' .\n Its NOTICE file:\n .\n'
					sed -e 's/[[:space:]]*$//' -e 's/^$/./' -e 's/^/ /' "$n"
				done
			else
				printf 'License: %s\n' "$path"
				sed -e 's/[[:space:]]*$//' -e 's/^$/./' -e 's/^/ /' "$lic"
			fi
		done
	goroot=$($GO env GOROOT)
	printf '\nFiles: the Go runtime and standard library, %s\nCopyright: see the license text\nLicense: Go\n' "$($GO env GOVERSION)"
	sed -e 's/[[:space:]]*$//' -e 's/^$/./' -e 's/^/ /' "$goroot/LICENSE"
} >"$doc/copyright"
chmod 0644 "$doc/copyright"
gzip -9n "$doc/README.md"
{
	printf 'capstats (%s) unstable; urgency=medium\n\n' "$DEB_VERSION"
	printf '  * Built with make deb from git revision\n    %s.\n\n' "$(git rev-parse HEAD 2>/dev/null || echo unknown)"
	printf ' -- %s  %s\n' "$maintainer" "$(git log -1 --format=%aD HEAD 2>/dev/null || date -R)"
} | gzip -9n >"$doc/changelog.gz"

install -m 0755 "$here/postinst" "$here/prerm" "$here/postrm" "$pkg/DEBIAN/"
install -m 0644 "$here/conffiles" "$pkg/DEBIAN/"
(cd "$pkg" && find . -path ./DEBIAN -prune -o -type f -print | sed 's|^\./||' | LC_ALL=C sort | xargs md5sum) >"$pkg/DEBIAN/md5sums"
chmod 0644 "$pkg/DEBIAN/md5sums"
size=$(du -sk --exclude=DEBIAN "$pkg" | cut -f1)
sed -e "s|@VERSION@|$DEB_VERSION|" -e "s|@ARCH@|$arch|" -e "s|@MAINTAINER@|$maintainer|" \
	-e "s|@SIZE@|$size|" -e "/^Homepage: @HOMEPAGE@$/d" "$here/control.in" >"$pkg/DEBIAN/control"

mkdir -p "$out"
deb=$out/capstats_${DEB_VERSION}_$arch.deb
dpkg-deb --root-owner-group -Zxz --build "$pkg" "$deb" >/dev/null
echo "$deb"
