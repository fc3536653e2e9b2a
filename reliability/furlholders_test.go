package reliability

//lint:file-ignore SA5001 attack.Dialer.Flood returns the identities it opened even when it fails, and those are closed whatever happened

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unicode"

	"capstats/internal/attack"
	"capstats/internal/fakenode"
	"capstats/internal/testbin"
	"capstats/internal/testutil"
	"capstats/muninplugin"
	"capstats/stats"
	"capstats/statsfile"
)

// The attacks of issue 14 by a furl holder (4 to 9), against the gatherer
// binary with an honest node attached. Every node's basedir holds the
// furl, so these are what any node can do. The attackers connect from
// 127.0.0.2, the honest node from 127.0.0.1.

// startFurlEnv is startPreauth with extra gatherer flags.
func startFurlEnv(t *testing.T, args ...string) *preauthEnv {
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
	g := startGatherer(t, dir, append([]string{"--interval", "1s", "--http", httpAddr}, args...)...)
	e := &preauthEnv{g: g, http: httpAddr}
	e.honest, _ = fakenode.Connect(t, g.furl, "honest", fakenode.AnswerWith(fakenode.SnapshotOf(20)))
	testutil.WaitFor(t, "the honest node polled", 20*time.Second, func() bool { return e.honest.Calls() > 0 })
	return e
}

var furlHolder = attack.Dialer{Source: attackerAddr}

func loadStats(t *testing.T, e *preauthEnv) *statsfile.File {
	t.Helper()
	f, err := statsfile.Load(filepath.Join(e.g.dir, "stats.json"))
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// waitRounds lets n more rounds of the gatherer pass.
func waitRounds(t *testing.T, e *preauthEnv, n int64) {
	t.Helper()
	r0 := e.metric(t, "capstats_gatherer_rounds_total")
	testutil.WaitFor(t, "more rounds", 60*time.Second, func() bool { return e.metric(t, "capstats_gatherer_rounds_total") >= r0+n })
}

// Attack 4: long nicknames. The 128 bytes kept pinned the whole string,
// about 10 MB per identity for good; now the nickname is copied, and a
// message over the gatherer's 1 MiB limit closes the connection.
func TestFurlHolderLongNicknames(t *testing.T) {
	e := startFurlEnv(t)
	check := e.everyRound(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	// 150 × 900 KiB: 130 MiB if each were pinned.
	r, err := furlHolder.Flood(ctx, t, e.g.furl, 150, strings.Repeat("n", 900<<10), fakenode.AnswerWith(fakenode.SnapshotOf(2)), true)
	defer r.Close()
	if err != nil || r.Accepted != 150 {
		t.Fatalf("accepted %d of 150: %v (first refusal: %v)", r.Accepted, err, r.FirstRefusal)
	}
	p := fakenode.New(t, fakenode.AnswerWith(fakenode.SnapshotOf(2)))
	if conn, err := furlHolder.Provide(ctx, e.g.furl, p, strings.Repeat("n", 8<<20)); err == nil {
		conn.Close()
		t.Error("an 8 MiB nickname was accepted")
	}
	waitRounds(t, e, 2)
	check()
	for _, n := range loadStats(t, e).Nodes {
		if len(n.Nickname) > 128 {
			t.Fatalf("a nickname of %d bytes in stats.json", len(n.Nickname))
		}
	}
	t.Logf("gatherer peak RSS %d MiB", e.g.peakRSS(t)>>20)
	e.boundedMemory(t)
	e.g.stop(t)
}

// Attack 5: getStats answered with an exception whose text is long and
// full of terminal escapes. It went verbatim into last_error, the log,
// stats.json (7 MB from one node) and `gatherer status`.
func TestFurlHolderHostileErrorText(t *testing.T) {
	e := startFurlEnv(t)
	check := e.everyRound(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	msg := "\x1b[2J\x1b[31mNICKNAME  TUBID\nforged  row\r" + strings.Repeat("\x1b[1mx", 100<<10)
	r, err := furlHolder.Flood(ctx, t, e.g.furl, 20, "evil", fakenode.Fail(msg), true)
	defer r.Close()
	if err != nil || r.Accepted != 20 {
		t.Fatalf("accepted %d of 20: %v (first refusal: %v)", r.Accepted, err, r.FirstRefusal)
	}
	waitRounds(t, e, 3)
	check()
	f := loadStats(t, e)
	failing := 0
	for _, n := range f.Nodes {
		if n.LastError == "" {
			continue
		}
		failing++
		if len(n.LastError) > 1024 {
			t.Errorf("last_error of %d bytes", len(n.LastError))
		}
		for _, c := range n.LastError {
			if unicode.IsControl(c) {
				t.Fatalf("control character %U in last_error %.60q", c, n.LastError)
			}
		}
	}
	if failing < 20 {
		t.Errorf("%d nodes with an error, want the 20 attackers", failing)
	}
	if fi, _ := os.Stat(filepath.Join(e.g.dir, "stats.json")); fi.Size() > 200<<10 {
		t.Errorf("stats.json is %d bytes", fi.Size())
	}
	if log := e.g.stderr.String(); strings.Contains(log, "\x1b") || len(log) > 1<<20 {
		t.Errorf("the log holds escapes or is %d bytes", len(log))
	}
	out, err := exec.Command(testbin.Build(t, "gatherer"), "status", "--basedir", e.g.dir).Output()
	if err != nil {
		t.Fatal(err)
	}
	if bytes.ContainsAny(out, "\x1b\r") {
		t.Error("gatherer status printed an escape")
	}
	if rows := bytes.Count(out, []byte("\n")); rows > len(f.Nodes)+4 {
		t.Errorf("gatherer status printed %d lines for %d nodes:\n%s", rows, len(f.Nodes), out)
	}
	e.g.stop(t)
}

// Attack 6: identities are free and entries were kept for ever. With
// --max-nodes, a new identity evicts the node down longest and never one
// that is up; when all are up it is refused, counted and warned about.
func TestFurlHolderManyIdentities(t *testing.T) {
	e := startFurlEnv(t, "--max-nodes", "200")
	check := e.everyRound(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	// 400 that provide once and leave: they replace one another.
	r, err := furlHolder.Flood(ctx, t, e.g.furl, 400, "once", fakenode.AnswerWith(fakenode.SnapshotOf(2)), false)
	if err != nil || r.Accepted != 400 {
		t.Fatalf("accepted %d of 400 that left: %v", r.Accepted, err)
	}
	// 250 that stay: 199 fit beside the honest node, the rest are refused.
	stay, err := furlHolder.Flood(ctx, t, e.g.furl, 250, "stay", fakenode.AnswerWith(fakenode.SnapshotOf(2)), true)
	defer stay.Close()
	if err != nil {
		t.Fatal(err)
	}
	if stay.Accepted != 199 || stay.Refused != 51 {
		t.Errorf("of 250 that stay: %d accepted, %d refused; want 199 and 51", stay.Accepted, stay.Refused)
	}
	waitRounds(t, e, 2)
	check()
	f := loadStats(t, e)
	if len(f.Nodes) > 200 {
		t.Errorf("%d entries, --max-nodes 200", len(f.Nodes))
	}
	honest := false
	for _, n := range f.Nodes {
		honest = honest || n.TubID == e.honest.TubID()
	}
	if !honest {
		t.Error("the honest node was displaced")
	}
	if n := e.metric(t, "capstats_gatherer_nodes_refused_total"); n != int64(stay.Refused) {
		t.Errorf("refusals counted %d, the attacker saw %d", n, stay.Refused)
	}
	if n := e.metric(t, "capstats_gatherer_nodes_evicted_total"); n < 400+int64(stay.Accepted)-199 {
		t.Errorf("evictions counted %d", n)
	}
	if !strings.Contains(e.g.stderr.String(), `level=WARN msg="new node refused"`) {
		t.Error("no warning for the refusals")
	}
	t.Logf("gatherer peak RSS %d MiB", e.g.peakRSS(t)>>20)
	e.boundedMemory(t)
	e.g.stop(t)
}

// Attack 7: the most entries a reply may hold, from 100 nodes. 10,000 were
// allowed and /metrics was 229 MB; now 2,000 are, and /metrics stays small
// enough to serve within a scrape.
func TestFurlHolderManyEntries(t *testing.T) {
	e := startFurlEnv(t)
	check := e.everyRound(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	r, err := furlHolder.Flood(ctx, t, e.g.furl, 100, "wide", fakenode.AnswerWith(fakenode.SnapshotOf(1000)), true)
	defer r.Close()
	if err != nil || r.Accepted != 100 {
		t.Fatalf("accepted %d of 100: %v", r.Accepted, err)
	}
	over, err := furlHolder.Flood(ctx, t, e.g.furl, 1, "wider", fakenode.AnswerWith(stats.Snapshot{
		Counters: fakenode.SnapshotOf(1001).Counters, Stats: fakenode.SnapshotOf(1000).Stats}), true)
	defer over.Close()
	if err != nil {
		t.Fatal(err)
	}
	waitRounds(t, e, 2)
	check()
	resp, err := (&http.Client{Timeout: 60 * time.Second}).Get("http://" + e.http + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	series := bytes.Count(body, []byte("\ntest_"))
	if series > 101*2000 || len(body) > 64<<20 {
		t.Errorf("/metrics: %d node series, %d MiB", series, len(body)>>20)
	}
	f := loadStats(t, e)
	for _, n := range f.Nodes {
		if n.Nickname == "wider" && !strings.Contains(n.LastError, "limit is 2000") {
			t.Errorf("a reply of 2,001 entries: last_error %q", n.LastError)
		}
	}
	t.Logf("gatherer peak RSS %d MiB", e.g.peakRSS(t)>>20)
	e.boundedMemory(t)
	e.g.stop(t)
}

// Attack 8: replies just under the message limit from 100 providers, at
// once, every round (peak 1.6 GB at the old 8 MiB limit). The gatherer now
// refuses messages larger than a reply within its entry limits can be
// (1 MiB): an 8 MiB reply closes the connection before it is read, and
// replies just under 1 MiB arrive and are refused. What all connections
// hold at once is bounded too (tub.Options.MaxBufferedBytes): 100 such
// repliers at once had peaked at 78-185 MiB under the race detector.
func TestFurlHolderBigReplies(t *testing.T) {
	// Rounds of 3s: the attacker, in this process, has 40 MiB of replies
	// to build and encrypt per round, slowly under the race detector.
	e := startFurlEnv(t, "--interval", "3s")
	check := e.everyRound(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	huge, err := furlHolder.Flood(ctx, t, e.g.furl, 10, "huge", attack.BigReply(8<<20-64<<10, 250), true)
	defer huge.Close()
	if err != nil {
		t.Fatal(err)
	}
	const bigRepliers = 100
	big, err := furlHolder.Flood(ctx, t, e.g.furl, bigRepliers, "big", attack.BigReply(1<<20-96<<10, 300), true)
	defer big.Close()
	if err != nil || big.Accepted != bigRepliers {
		t.Fatalf("accepted %d of %d: %v", big.Accepted, bigRepliers, err)
	}
	waitRounds(t, e, 4)
	check()
	for i, c := range huge.Conns {
		select {
		case <-c.Done():
		case <-time.After(20 * time.Second):
			t.Fatalf("the connection of 8 MiB replier %d is still open", i)
		}
	}
	for i, p := range big.Providers {
		if p.Calls() < 3 {
			t.Errorf("1 MiB replier %d polled %d times: its connection should stay", i, p.Calls())
		}
	}
	f := loadStats(t, e)
	for _, n := range f.Nodes {
		// Refused once arrived; or, when the attacker was too slow to
		// build them all in time, timed out, and after three timeouts in
		// a row disconnected by the gatherer.
		if n.Nickname == "big" && !strings.Contains(n.LastError, "limit is") && !strings.Contains(n.LastError, "timed out") &&
			!strings.Contains(n.LastError, "connection closed") {
			t.Errorf("a 1 MiB reply of long names: last_error %q", n.LastError)
		}
	}
	// The budget holds the 1 MiB repliers back; it closes none of them.
	for _, reason := range []string{"message_timeout", "message_stalled", "held_bytes"} {
		if n := e.refusals(t, reason); n != 0 {
			t.Errorf("%s counted %d: replies that arrive whole, waiting for room, must not close their connection", reason, n)
		}
	}
	t.Logf("gatherer peak RSS %d MiB; refused: message_size %d, message_timeout %d, message_stalled %d, held_bytes %d; %d waits for room",
		e.g.peakRSS(t)>>20, e.refusals(t, "message_size"), e.refusals(t, "message_timeout"), e.refusals(t, "message_stalled"),
		e.refusals(t, "held_bytes"), e.metric(t, "capstats_tub_buffer_waits_total"))
	e.boundedMemory(t)
	e.g.stop(t)
}

// Attack 8, stalled: furl holders that send the frame header of a message
// just under the limit, and all of it but the last byte. A reader that
// allocates when the header arrives holds a message's size for each of
// them for as long as they like; 160 of them held 336 MiB. Now a message
// takes its size from the listener's budget before its body is read, one
// address may take a quarter of it, connections waiting for room are not
// read, and a message not finished within the message timeout (20 s)
// closes its connection. Spread over five addresses they fill the whole
// budget; then, while the honest node's reply waits for room, messages
// arriving for over 5 s are closed, so it waits seconds, within a round.
func TestFurlHolderStalledMessages(t *testing.T) {
	for _, tc := range []struct {
		name     string
		sources  []string
		interval string
		reason   string // why the gatherer closes stalled connections
	}{
		{"one address", []string{attackerAddr}, "1s", "message_timeout"},
		{"five addresses", []string{"127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5", "127.0.0.6"}, "10s", "message_stalled"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := startFurlEnv(t, "--interval", tc.interval)
			check := e.everyRound(t)
			ctx, cancel := context.WithTimeout(context.Background(), 32*time.Second)
			defer cancel()
			const stallers = 160
			var hs []*attack.Holder
			for _, src := range tc.sources {
				hs = append(hs, attack.Dialer{Source: src}.StalledMessages(ctx, e.g.furl, stallers/len(tc.sources), 1<<20-64<<10))
			}
			sum := func(f func(h *attack.Holder) int64) (n int64) {
				for _, h := range hs {
					n += f(h)
				}
				return n
			}
			testutil.WaitFor(t, "the stalled connections open", 20*time.Second, func() bool {
				return sum(func(h *attack.Holder) int64 { return h.Open() }) >= stallers
			})
			max := e.metric(t, "capstats_tub_max_buffered_bytes")
			share := max / 4 * int64(len(tc.sources))
			var peak int64
			for ctx.Err() == nil {
				peak = maxOf(peak, e.metric(t, "capstats_tub_buffered_bytes"))
				time.Sleep(200 * time.Millisecond)
			}
			for _, h := range hs {
				h.Wait()
			}
			check()
			if peak > min(max, share+1<<20) {
				t.Errorf("the gatherer buffered %d bytes at once, bound %d (a quarter from one address)", peak, max)
			}
			if peak < min(max, share)/2 {
				t.Errorf("the gatherer buffered at most %d bytes: the attack did not reach the budget", peak)
			}
			if w := e.metric(t, "capstats_tub_buffer_waits_total"); w < stallers/2 {
				t.Errorf("%d connections waited for room, want most of %d", w, stallers)
			}
			closed := sum(func(h *attack.Holder) int64 { return h.Closed.Load() })
			if n := e.refusals(t, tc.reason); n < 1 || closed < 1 {
				t.Errorf("%s counted %d, the attacker saw %d closed", tc.reason, n, closed)
			}
			t.Logf("opened %d, closed by the gatherer %d, failed %d; buffered at most %d MiB of %d; message_timeout %d, message_stalled %d; gatherer peak RSS %d MiB",
				sum(func(h *attack.Holder) int64 { return h.Opened.Load() }), closed, sum(func(h *attack.Holder) int64 { return h.Failed.Load() }),
				peak>>20, max>>20, e.refusals(t, "message_timeout"), e.refusals(t, "message_stalled"), e.g.peakRSS(t)>>20)
			e.boundedMemory(t)
			e.g.stop(t)
		})
	}
}

func maxOf(a, b int64) int64 {
	if a > b {
		return a
	}
	return b
}

// Attack 9: an identity whose tub ID shares its first 4 characters with a
// victim's printed a munin line under the victim's field name. Now the
// node seen first keeps its name and the newcomer gets a longer one.
func TestFurlHolderFieldNameCollision(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the gatherer binary under attack")
	}
	victimID, attackerID, err := attack.CollidingPair(100_000)
	if err != nil {
		t.Fatal(err)
	}
	dir := createGatherer(t)
	g := startGatherer(t, dir, "--interval", "1s")
	answer := func(v int64) fakenode.Answer {
		return fakenode.AnswerWith(stats.Snapshot{Stats: stats.SetOf(stats.Map{"storage_server.allocated": stats.Int(v)})})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	victim := fakenode.New(t, answer(1))
	victim.ID = victimID
	vconn, err := victim.Attach(ctx, g.furl, "storage")
	if err != nil {
		t.Fatal(err)
	}
	defer vconn.Close()
	attacker := fakenode.New(t, answer(666))
	attacker.ID = attackerID
	aconn, err := furlHolder.Provide(ctx, g.furl, attacker, "storage")
	if err != nil {
		t.Fatal(err)
	}
	defer aconn.Close()
	var f *statsfile.File
	testutil.WaitFor(t, "both in stats.json with a sample", 30*time.Second, func() bool {
		f, err = statsfile.Load(filepath.Join(dir, "stats.json"))
		if err != nil || len(f.Nodes) != 2 {
			return false
		}
		return f.Nodes[0].Timestamp > 0 && f.Nodes[1].Timestamp > 0
	})
	// What the munin plugin prints for the file, as munin runs it.
	var fetched bytes.Buffer
	plugin := muninplugin.Plugin{Name: "tahoe_storage_allocated", StatsFile: filepath.Join(dir, "stats.json"), Stdout: &fetched}
	if err := plugin.Run(""); err != nil {
		t.Fatal(err)
	}
	out := fetched.String()
	victimField := muninplugin.FieldName("storage", victimID.TubID())
	if !strings.Contains(out, victimField+".value 1\n") || strings.Contains(out, victimField+".value 666\n") {
		t.Errorf("the victim's field %s:\n%s", victimField, out)
	}
	if strings.Count(out, ".value ") != 2 || !strings.Contains(out, "storage_"+attackerID.TubID()[:5]+".value 666\n") {
		t.Errorf("the attacker's line:\n%s", out)
	}
	g.stop(t)
}
