package reliability

import (
	"bufio"
	"context"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"capstats/internal/attack"
	"capstats/internal/fakenode"
	"capstats/internal/testutil"
)

// The attacks of issue 14 that need no furl (1 to 3), against the gatherer
// binary with an honest node attached. The attacker connects from
// 127.0.0.2, the honest nodes from 127.0.0.1: the per-address limits tell
// them apart as they would a node and an attacker on the internet.

const attackerAddr = "127.0.0.2"

// preauthEnv is a gatherer run with --http, polling every second, and an
// honest node attached.
type preauthEnv struct {
	g      *gathererProc
	http   string
	honest *fakenode.Provider
}

func startPreauth(t *testing.T) *preauthEnv {
	t.Helper()
	if testing.Short() {
		t.Skip("runs the gatherer binary under attack")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	httpAddr := ln.Addr().String()
	ln.Close()
	dir := createGatherer(t)
	g := startGatherer(t, dir, "--interval", "1s", "--http", httpAddr)
	e := &preauthEnv{g: g, http: httpAddr}
	e.honest, _ = fakenode.Connect(t, g.furl, "honest", fakenode.AnswerWith(fakenode.SnapshotOf(20)))
	testutil.WaitFor(t, "the honest node polled", 20*time.Second, func() bool { return e.honest.Calls() > 0 })
	return e
}

// metric returns the value of the /metrics sample whose line starts with
// series (a name, with labels if any), -1 if there is none.
func (e *preauthEnv) metric(t *testing.T, series string) int64 {
	t.Helper()
	resp, err := (&http.Client{Timeout: 20 * time.Second}).Get("http://" + e.http + "/metrics")
	if err != nil {
		t.Fatalf("/metrics during the attack: %v", err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), series+" "); ok {
			v, err := strconv.ParseFloat(rest, 64)
			if err != nil {
				t.Fatalf("/metrics: %q", sc.Text())
			}
			return int64(v)
		}
	}
	return -1
}

func (e *preauthEnv) refusals(t *testing.T, reason string) int64 {
	return e.metric(t, `capstats_tub_refusals_total{reason="`+reason+`"}`)
}

// everyRound notes the gatherer's rounds and the honest node's polls; the
// function it returns checks that the node was polled in every round
// since (one round of slack for a round running at either end).
func (e *preauthEnv) everyRound(t *testing.T) func() {
	t.Helper()
	rounds0, calls0 := e.metric(t, "capstats_gatherer_rounds_total"), e.honest.Calls()
	return func() {
		t.Helper()
		rounds, calls := e.metric(t, "capstats_gatherer_rounds_total")-rounds0, e.honest.Calls()-calls0
		if rounds < 2 {
			t.Fatalf("only %d rounds during the attack", rounds)
		}
		if calls < rounds-1 {
			t.Errorf("honest node polled %d times in %d rounds during the attack", calls, rounds)
		}
		if up := e.metric(t, `capstats_gatherer_nodes_connected`); up < 1 {
			t.Errorf("%d nodes connected after the attack, want the honest one", up)
		}
	}
}

// boundedMemory checks the gatherer's peak RSS (VmHWM) against a generous
// bound: the attacks used to take it to hundreds of MB or more.
func (e *preauthEnv) boundedMemory(t *testing.T) {
	t.Helper()
	if rss := e.g.peakRSS(t); rss > 150<<20 {
		t.Errorf("gatherer peak RSS %d MiB, want < 150 MiB", rss>>20)
	}
}

// Attack 1: pipelined fetches with wrong swiss numbers, never finished,
// replies never read. It took the gatherer to 687 MB on one connection;
// now each connection is closed after its first unknown swiss number or
// the 4,096th message held for it, whichever comes first.
func TestPreauthPipelinedFetches(t *testing.T) {
	e := startPreauth(t)
	check := e.everyRound(t)
	d := attack.Dialer{Source: attackerAddr}
	end := time.Now().Add(5 * time.Second)
	attacks := 0
	for time.Now().Before(end) || attacks < 3 {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		res, err := d.PipelineFetches(ctx, e.g.furl.Hints[0], 3, 300_000)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		for i, r := range res {
			if !r.Closed {
				t.Fatalf("attack %d connection %d: still open after %d pipelined fetches", attacks, i, r.Sent)
			}
		}
		attacks++
	}
	check()
	if n := e.refusals(t, "unknown_swissnum") + e.refusals(t, "calls_in_flight"); n < int64(3*attacks) {
		t.Errorf("%d refusals counted for %d attacking connections", n, 3*attacks)
	}
	e.boundedMemory(t)
	e.g.stop(t)
}

// Attack 2: TLS connections with a self-signed certificate that never
// fetch. 3,000 were kept for ever; now each is closed after the fetch
// timeout (5s), while an attacker keeps 1,000 open at a time.
func TestPreauthIdleTLS(t *testing.T) {
	e := startPreauth(t)
	check := e.everyRound(t)
	ctx, cancel := context.WithTimeout(context.Background(), 14*time.Second)
	defer cancel()
	h := attack.Dialer{Source: attackerAddr}.IdleTLS(ctx, e.g.furl.Hints[0], 1000)
	testutil.WaitFor(t, "idle connections closed by the gatherer", 60*time.Second, func() bool { return h.Closed.Load() >= 100 })
	<-ctx.Done()
	h.Wait()
	check()
	if n := e.refusals(t, "fetch_timeout"); n < h.Closed.Load() {
		t.Errorf("fetch_timeout counted %d, the attacker saw %d closed", n, h.Closed.Load())
	}
	if longest := h.Longest(); longest > 12*time.Second {
		t.Errorf("an idle connection lived %v, want about the 5s fetch timeout", longest)
	}
	t.Logf("opened %d, closed by the gatherer %d, failed %d, longest %v", h.Opened.Load(), h.Closed.Load(), h.Failed.Load(), h.Longest())
	e.boundedMemory(t)
	e.g.stop(t)
}

// Attack 3: 200 TCP sockets that never send a ClientHello, refilled as
// they are dropped. They kept every new node out for the whole attack; now
// they hold only their own address's handshake slots, and a new node gets
// in while they are all still there. They are closed after the handshake
// timeout (10s).
func TestPreauthSilentSockets(t *testing.T) {
	e := startPreauth(t)
	check := e.everyRound(t)
	ctx, cancel := context.WithTimeout(context.Background(), 16*time.Second)
	defer cancel()
	h := attack.Dialer{Source: attackerAddr}.SilentSockets(ctx, e.g.furl.Hints[0], 200)
	testutil.WaitFor(t, "200 silent sockets open", 20*time.Second, func() bool { return h.Open() >= 200 })
	testutil.WaitFor(t, "the gatherer holding them", 20*time.Second, func() bool {
		return e.metric(t, "capstats_tub_pending_handshakes") >= 200
	})

	// A new node, with a bound below the handshake timeout: it cannot get
	// in by waiting for a silent socket to be dropped.
	fresh := fakenode.New(t, fakenode.AnswerWith(fakenode.SnapshotOf(5)))
	dctx, dcancel := context.WithTimeout(ctx, 8*time.Second)
	conn, err := fresh.Attach(dctx, e.g.furl, "fresh")
	dcancel()
	if err != nil {
		t.Fatalf("a new node could not get in during the attack: %v", err)
	}
	defer conn.Close()
	if open := h.Open(); open < 150 {
		t.Fatalf("only %d silent sockets open when the node got in", open)
	}
	testutil.WaitFor(t, "the new node polled", 10*time.Second, func() bool { return fresh.Calls() > 0 })

	testutil.WaitFor(t, "silent sockets closed by the gatherer", 40*time.Second, func() bool { return h.Closed.Load() >= 100 })
	<-ctx.Done()
	h.Wait()
	check()
	if longest := h.Longest(); longest > 14*time.Second {
		t.Errorf("a silent socket lived %v, want about the 10s handshake timeout", longest)
	}
	if n := e.refusals(t, "handshake_timeout"); n < 100 {
		t.Errorf("handshake_timeout counted %d, want every silent socket dropped", n)
	}
	e.boundedMemory(t)
	e.g.stop(t)
}
