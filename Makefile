# capstats: see README.md. `make demo` runs the main job, `make test` all tests.
GO        ?= go
PREFIX    ?= /usr/local
BINARIES  := gatherer capstats-node tahoe_stats
CAPNP_STD  = $(shell $(GO) mod download capnproto.org/go/capnp/v3 && $(GO) list -m -f '{{.Dir}}' capnproto.org/go/capnp/v3)/std
FUZZTIME  ?= 30s
# Stamp the git revision into the binaries (--version prints it) where the
# go command can: a checkout with git; BUILDVCS=false turns it off.
BUILDVCS  ?= auto

DEB_OUT   ?= dist

.PHONY: all build test test-loaded test-short generate bench demo run install deb lint fuzz deps clean

all: build

build:
	@mkdir -p bin
	$(GO) build -buildvcs=$(BUILDVCS) -o bin/ $(addprefix ./cmd/,$(BINARIES))

deps:
	@scripts/ensure-deps.sh

# The whole suite, race detector on, never from the test cache (a second
# make test-loaded must run the tests again). Installs the Debian tools tests need.
test: deps
	$(GO) vet ./...
	$(GO) test -race -count=1 -timeout 45m ./...

# The same suite with one core kept busy by a bounded loop of its own:
# the tests assert outcomes, not speed, so they hold on a loaded machine.
test-loaded: deps
	scripts/test-loaded.sh $(MAKE) --no-print-directory test

test-short:
	$(GO) test -short ./...

generate:
	@command -v capnp >/dev/null || { echo "generate: needs the capnp compiler (apt-get install capnproto)" >&2; exit 1; }
	capnp compile -I$(CAPNP_STD) -o"$$($(GO) tool -n capnpc-go)":capnp/statsrpc --src-prefix=schema schema/stats.capnp
	capnp compile -I$(CAPNP_STD) -o"$$($(GO) tool -n capnpc-go)":capnp/tubrpc --src-prefix=schema schema/tub.capnp

bench:
	scripts/bench.sh

demo: build
	scripts/demo.sh

run: build
	DEMO_KEEP=1 scripts/demo.sh

# For systems without the Debian package: the binaries, the munin setup
# script, the systemd units (pointed at PREFIX) and the README. The units run
# as the user capstats, which this does not create (see README, "Deploying").
install: build
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/sbin $(DESTDIR)$(PREFIX)/lib/systemd/system $(DESTDIR)$(PREFIX)/share/doc/capstats
	install -m 0755 $(addprefix bin/,$(BINARIES)) $(DESTDIR)$(PREFIX)/bin/
	install -m 0755 scripts/install-munin.sh $(DESTDIR)$(PREFIX)/sbin/capstats-install-munin
	for u in scripts/systemd/*.service; do \
		sed -e 's|/usr/local/bin/|$(PREFIX)/bin/|g' -e 's|/usr/local/share/doc/|$(PREFIX)/share/doc/|g' $$u >$(DESTDIR)$(PREFIX)/lib/systemd/system/$${u##*/} && \
		chmod 0644 $(DESTDIR)$(PREFIX)/lib/systemd/system/$${u##*/} || exit 1; \
	done
	install -m 0644 README.md $(DESTDIR)$(PREFIX)/share/doc/capstats/
	@getent passwd capstats >/dev/null || echo "make install: the units run as the system user capstats; create it (as root): adduser --system --group --home /var/lib/capstats --no-create-home capstats"

# A Debian package in DEB_OUT, built with dpkg-deb (packaging/deb).
deb:
	GO="$(GO)" BUILDVCS="$(BUILDVCS)" packaging/deb/build-deb.sh $(DEB_OUT)

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed: $$out" >&2; exit 1; fi
	$(GO) vet ./...
	$(GO) tool staticcheck ./...

fuzz:
	scripts/fuzz.sh $(FUZZTIME)

clean:
	rm -rf bin dist
