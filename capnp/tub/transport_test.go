package tub

import (
	"context"
	"fmt"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"capnproto.org/go/capnp/v3"
	rpccp "capnproto.org/go/capnp/v3/std/capnp/rpc"

	"capstats/capnp/statsrpc"
)

// bigReplier answers getStats with n entries named e.0000, e.0001, ...
type bigReplier struct{ n int }

func (b bigReplier) GetStats(_ context.Context, call statsrpc.Provider_getStats) error {
	res, err := call.AllocResults()
	if err != nil {
		return err
	}
	st, err := res.NewStats()
	if err != nil {
		return err
	}
	e, err := st.NewCounters()
	if err != nil {
		return err
	}
	values, err := e.NewValues(int32(b.n))
	if err != nil {
		return err
	}
	var names []byte
	for i := range b.n {
		names = fmt.Appendf(names, "storage_server.e.%04d\x00", i)
		values.At(i).SetInt(int64(i))
	}
	if err := e.SetNames(names); err != nil {
		return err
	}
	return nil
}

func (bigReplier) Ping(context.Context, statsrpc.Provider_ping) error { return nil }

// The stock transport spread a reply over segments of about 1 KiB, with a
// far pointer for every name that landed in another segment than its
// entry; replies from a tub arrive in one segment, whatever their size.
func TestRepliesArriveInOneSegment(t *testing.T) {
	for _, n := range []int{50, 5000} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			l, err := Listen("127.0.0.1:0", newID(t), Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			f := l.Register(capnp.Client(statsrpc.Provider_ServerToClient(bigReplier{n})))
			ctx := ctxT(t)
			conn, err := Dial(ctx, f, newID(t), capnp.Client{}, Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			fut, release := statsrpc.Provider(conn.Object()).GetStats(ctx, nil)
			defer release()
			res, err := fut.Struct()
			if err != nil {
				t.Fatal(err)
			}
			if segs := res.Message().NumSegments(); segs != 1 {
				t.Errorf("reply of %d entries in %d segments, want 1", n, segs)
			}
			st, err := res.Stats()
			if err != nil {
				t.Fatal(err)
			}
			e, err := st.Counters()
			if err != nil {
				t.Fatal(err)
			}
			values, err := e.Values()
			if err != nil {
				t.Fatal(err)
			}
			names, err := e.Names()
			if err != nil {
				t.Fatal(err)
			}
			split := strings.Split(strings.TrimSuffix(string(names), "\x00"), "\x00")
			if values.Len() != n || len(split) != n {
				t.Fatalf("%d values and %d names, want %d", values.Len(), len(split), n)
			}
			for _, i := range []int{0, n / 2, n - 1} {
				if want := fmt.Sprintf("storage_server.e.%04d", i); split[i] != want || values.At(i).Int() != int64(i) {
					t.Errorf("entry %d = %q, %d; want %q, %d", i, split[i], values.At(i).Int(), want, i)
				}
			}
		})
	}
}

// countingConn counts the writes made to a connection.
type countingConn struct {
	net.Conn
	writes atomic.Int32
}

func (c *countingConn) Write(b []byte) (int, error) {
	c.writes.Add(1)
	return c.Conn.Write(b)
}

// The Finish go-capnp sends a while after each call returns rides with the
// next message instead of costing a write of its own; a Finish that
// cancels a call is written at once. Both arrive, in order.
func TestFinishWaitsForTheNextMessage(t *testing.T) {
	nc, peer := loopbackPair(t)
	cc := &countingConn{Conn: nc}
	cd := newCodec(cc, 1<<20)
	cd.holdFor = time.Hour // only the next message may take the Finish along
	tr := newTransport(cd)

	send := func(build func(rpccp.Message) error) {
		t.Helper()
		out, err := tr.NewMessage()
		if err != nil {
			t.Fatal(err)
		}
		defer out.Release()
		if err := build(out.Message()); err != nil {
			t.Fatal(err)
		}
		if err := out.Send(); err != nil {
			t.Fatal(err)
		}
	}
	finish := func(id uint32, release bool) func(rpccp.Message) error {
		return func(m rpccp.Message) error {
			fin, err := m.NewFinish()
			fin.SetQuestionId(id)
			fin.SetReleaseResultCaps(release)
			return err
		}
	}

	send(finish(7, false))
	if n := cc.writes.Load(); n != 0 {
		t.Fatalf("a Finish after a return was written at once (%d writes), want it held", n)
	}
	send(func(m rpccp.Message) error {
		call, err := m.NewCall()
		call.SetQuestionId(8)
		return err
	})
	if n := cc.writes.Load(); n != 1 {
		t.Fatalf("held Finish and next call took %d writes, want 1", n)
	}
	send(finish(8, true))
	if n := cc.writes.Load(); n != 2 {
		t.Fatalf("a cancelling Finish was not written at once (%d writes in all, want 2)", n)
	}

	dec := capnp.NewDecoder(peer)
	var got []string
	for range 3 {
		msg, err := dec.Decode()
		if err != nil {
			t.Fatal(err)
		}
		m, err := rpccp.ReadRootMessage(msg)
		if err != nil {
			t.Fatal(err)
		}
		switch m.Which() {
		case rpccp.Message_Which_finish:
			fin, _ := m.Finish()
			got = append(got, fmt.Sprintf("finish %d %v", fin.QuestionId(), fin.ReleaseResultCaps()))
		case rpccp.Message_Which_call:
			call, _ := m.Call()
			got = append(got, fmt.Sprintf("call %d", call.QuestionId()))
		default:
			got = append(got, m.Which().String())
		}
	}
	if want := "finish 7 false, call 8, finish 8 true"; strings.Join(got, ", ") != want {
		t.Errorf("peer read %s, want %s", strings.Join(got, ", "), want)
	}
}
