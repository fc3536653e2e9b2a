package main

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"capnproto.org/go/capnp/v3"

	"capstats/capnp/statsrpc"
	"capstats/capnp/tub"
)

const testFurl = "capnp://ep53em7xf2e4kxm2dzevplihrpesh347@tcp:127.0.0.1:35309/zmezny73gr2ilborqqrpmroqujs7cptw"

func TestParseFlags(t *testing.T) {
	c, err := parseFlags([]string{"-furl", testFurl, "-n", "10", "-storm"})
	if err != nil {
		t.Fatal(err)
	}
	if c.n != 10 || c.concurrency != 10 || c.counters != 20 || c.stats != 20 {
		t.Errorf("got n=%d concurrency=%d counters=%d stats=%d", c.n, c.concurrency, c.counters, c.stats)
	}
	if c, _ := parseFlags([]string{"-furl", testFurl, "-n", "1000"}); c.concurrency != 64 {
		t.Errorf("default concurrency %d, want 64", c.concurrency)
	}
	for _, bad := range [][]string{
		{},
		{"-furl", "pb://x@tcp:1.2.3.4:5/y"},
		{"-furl", testFurl, "-n", "0"},
		{"-furl", testFurl, "-counters", "6000", "-stats", "6000"},
		{"-furl", testFurl, "-attempts", "0"},
		{"-furl", testFurl, "-sources", "-1"},
		{"-furl", testFurl, "-sources", "251"},
		{"-furl", testFurl, "extra"},
	} {
		if _, err := parseFlags(bad); err == nil {
			t.Errorf("parseFlags(%s) accepted", strings.Join(bad, " "))
		}
	}
}

// countingGatherer accepts every provide and counts them.
type countingGatherer struct{ provides chan string }

func (g countingGatherer) Provide(ctx context.Context, call statsrpc.Gatherer_provide) error {
	nick, err := call.Args().Nickname()
	if err != nil {
		return err
	}
	g.provides <- nick
	return nil
}

// With -reconnect, every provider dials again when its gatherer goes away
// and comes back on the same address.
func TestReconnectsAfterGathererRestart(t *testing.T) {
	id, err := tub.NewIdentity()
	if err != nil {
		t.Fatal(err)
	}
	swiss := tub.NewSwissnum()
	g := countingGatherer{provides: make(chan string, 100)}
	listen := func(addr string) (*tub.Listener, tub.Furl) {
		t.Helper()
		l, err := tub.Listen(addr, id, tub.Options{})
		if err != nil {
			t.Fatal(err)
		}
		f, err := l.RegisterAs(swiss, capnp.Client(statsrpc.Gatherer_ServerToClient(g)))
		if err != nil {
			t.Fatal(err)
		}
		return l, f
	}
	l, f := listen("127.0.0.1:0")
	waitProvides := func(want ...string) {
		t.Helper()
		seen := map[string]bool{}
		deadline := time.After(20 * time.Second)
		for len(seen) < len(want) {
			select {
			case nick := <-g.provides:
				seen[nick] = true
			case <-deadline:
				t.Fatalf("provides from %v within 20 s, want %v", seen, want)
			}
		}
	}
	cfg, err := parseFlags([]string{"-furl", f.String(), "-n", "2", "-counters", "1", "-stats", "1",
		"-reconnect", "20ms", "-attempts", "1000", "-nickname", "t"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx, cfg) }()
	defer func() {
		cancel()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			t.Error("run did not return within 20 s of cancel")
		}
	}()
	waitProvides("t-0", "t-1")
	l.Close()
	time.Sleep(100 * time.Millisecond) // a few failed dials
	l2, _ := listen(f.Hints[0])
	defer l2.Close()
	waitProvides("t-0", "t-1")
}

// sourceGatherer records the address each provide came from.
type sourceGatherer struct{ hosts chan string }

func (g sourceGatherer) Provide(ctx context.Context, call statsrpc.Gatherer_provide) error {
	p, ok := tub.PeerFromContext(ctx)
	if !ok {
		return errors.New("no peer")
	}
	host, _, _ := net.SplitHostPort(p.RemoteAddr.String())
	g.hosts <- host
	return nil
}

// -sources spreads the providers over loopback source addresses, so a
// gatherer sees them as many hosts.
func TestSourcesSpreadProviders(t *testing.T) {
	id, err := tub.NewIdentity()
	if err != nil {
		t.Fatal(err)
	}
	g := sourceGatherer{hosts: make(chan string, 10)}
	l, err := tub.Listen("127.0.0.1:0", id, tub.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	f := l.Register(capnp.Client(statsrpc.Gatherer_ServerToClient(g)))
	cfg, err := parseFlags([]string{"-furl", f.String(), "-n", "3", "-sources", "3", "-counters", "1", "-stats", "1"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx, cfg) }()
	defer func() {
		cancel()
		<-done
	}()
	seen := map[string]bool{}
	deadline := time.After(20 * time.Second)
	for len(seen) < 3 {
		select {
		case h := <-g.hosts:
			seen[h] = true
		case <-deadline:
			t.Fatalf("provides from %v within 20 s", seen)
		}
	}
	for _, want := range []string{"127.0.0.1", "127.0.0.2", "127.0.0.3"} {
		if !seen[want] {
			t.Errorf("no provider from %s: %v", want, seen)
		}
	}
}
