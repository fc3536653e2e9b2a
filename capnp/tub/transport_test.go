package tub

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"capnproto.org/go/capnp/v3"

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
			l, err := Listen("127.0.0.1:0", newID(t), nil)
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			f := l.Register(capnp.Client(statsrpc.Provider_ServerToClient(bigReplier{n})))
			ctx := ctxT(t)
			conn, err := Dial(ctx, f, newID(t), capnp.Client{}, nil)
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
