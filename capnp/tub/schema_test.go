package tub

import (
	"context"
	"net"
	"os/exec"
	"strings"
	"testing"

	"capnproto.org/go/capnp/v3"
	"capnproto.org/go/capnp/v3/rpc"
	"capnproto.org/go/capnp/v3/server"

	"capstats/capnp/tubrpc"
)

// previousFetch is the fetch method exactly as the generated code of the
// versions that declared Tub in stats.capnp (up to a012d04) sent and
// dispatched it. Only the two IDs travel on the wire.
var previousFetch = capnp.Method{
	InterfaceID:   0xd9995d9d0d8c8af4,
	MethodID:      0,
	InterfaceName: "stats.capnp:Tub",
	MethodName:    "fetch",
}

// The transport must build without the stats schema.
func TestTubDoesNotImportTheStatsSchema(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "-f", "{{.ImportPath}}", "capstats/capnp/tub").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	deps := strings.Fields(string(out))
	for _, d := range deps {
		if d == "capstats/capnp/statsrpc" {
			t.Fatal("capnp/tub depends on capnp/statsrpc")
		}
	}
	found := false
	for _, d := range deps {
		found = found || d == "capstats/capnp/tubrpc"
	}
	if !found {
		t.Fatalf("capnp/tub does not depend on capnp/tubrpc: %v", deps)
	}
}

// Moving Tub to its own schema kept its interface ID (an explicit ID in
// tub.capnp), so the new code and the previous version's generated code
// call and dispatch the same method.
func TestTubInterfaceIDIsThePreviousOne(t *testing.T) {
	if tubrpc.Tub_TypeID != previousFetch.InterfaceID {
		t.Fatalf("Tub interface ID is %#x, was %#x: nodes and gatherers of earlier versions could not fetch", uint64(tubrpc.Tub_TypeID), previousFetch.InterfaceID)
	}
}

// oldFetch calls fetch as the previous version's generated client did.
func oldFetch(ctx context.Context, boot capnp.Client, method capnp.Method, swissnum string) (capnp.Client, capnp.ReleaseFunc, error) {
	ans, release := boot.SendCall(ctx, capnp.Send{
		Method:   method,
		ArgsSize: capnp.ObjectSize{PointerCount: 1},
		PlaceArgs: func(s capnp.Struct) error {
			return s.SetNewText(0, swissnum)
		},
	})
	res, err := ans.Struct()
	if err != nil {
		release()
		return capnp.Client{}, func() {}, err
	}
	p, err := res.Ptr(0)
	if err != nil {
		release()
		return capnp.Client{}, func() {}, err
	}
	return p.Interface().Client(), release, nil
}

// A node or gatherer of the previous version, speaking the old generated
// code's method, fetches from a listener of this version, and this
// version's client fetches from the previous version's restorer. A call on
// an interface the listener does not know fails at once with a clear error.
func TestPreviousVersionInteroperates(t *testing.T) {
	ctx := ctxT(t)

	t.Run("old client, new listener", func(t *testing.T) {
		l, p, f := listen(t, Options{})
		nc, err := dialTLS(ctx, f.Hints[0], f.TubID, newID(t), Options{})
		if err != nil {
			t.Fatal(err)
		}
		conn := rpc.NewConn(newTransport(newCodec(nc, DefaultMaxMessageSize)), nil)
		defer conn.Close()
		boot := conn.Bootstrap(ctx)
		defer boot.Release()
		obj, release, err := oldFetch(ctx, boot, previousFetch, f.Swissnum)
		if err != nil {
			t.Fatalf("old-style fetch: %v", err)
		}
		defer release()
		if err := ping(ctx, obj); err != nil {
			t.Fatalf("ping the fetched object: %v", err)
		}
		p.mu.Lock()
		n := len(p.callers)
		p.mu.Unlock()
		if n != 1 {
			t.Fatalf("provider pinged %d times, want 1", n)
		}

		other := previousFetch
		other.InterfaceID++
		_, release2, err := oldFetch(ctx, boot, other, f.Swissnum)
		release2()
		if err == nil || !strings.Contains(err.Error(), "unimplemented") {
			t.Fatalf("fetch on an unknown interface ID: err = %v, want an unimplemented error", err)
		}
		if ctx.Err() != nil {
			t.Fatal("the unknown interface ID hung the call")
		}
		if l.UnknownSwissnums() != 0 {
			t.Error("a wrong interface was counted as a swiss number guess")
		}
	})

	t.Run("new client, old restorer", func(t *testing.T) {
		_, p, f := listen(t, Options{})
		// The previous version's restorer, with its method table as the
		// old generated code built it, serving this test's provider.
		target, err := Dial(ctx, f, newID(t), capnp.Client{}, Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer target.Close()
		old := capnp.NewClient(server.New([]server.Method{{
			Method: previousFetch,
			Impl: func(_ context.Context, call *server.Call) error {
				res, err := call.AllocResults(capnp.ObjectSize{PointerCount: 1})
				if err != nil {
					return err
				}
				seg := res.Segment()
				return res.SetPtr(0, capnp.NewInterface(seg, seg.Message().CapTable().Add(target.Object().AddRef())).ToPtr())
			},
		}}, nil, nil))

		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		served := make(chan *rpc.Conn, 1)
		go func() {
			nc, err := ln.Accept()
			if err != nil {
				old.Release()
				served <- nil
				return
			}
			served <- rpc.NewConn(newTransport(newCodec(nc, DefaultMaxMessageSize)), &rpc.Options{BootstrapClient: old})
		}()
		nc, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		conn := rpc.NewConn(newTransport(newCodec(nc, DefaultMaxMessageSize)), nil)
		defer conn.Close()
		srv := <-served
		if srv == nil {
			t.Fatal("accept failed")
		}
		defer srv.Close()

		boot := tubrpc.Tub(conn.Bootstrap(ctx))
		defer boot.Release()
		fut, release := boot.Fetch(ctx, func(p tubrpc.Tub_fetch_Params) error { return p.SetSwissnum(f.Swissnum) })
		defer release()
		res, err := fut.Struct()
		if err != nil {
			t.Fatalf("fetch from the old restorer: %v", err)
		}
		if err := ping(ctx, res.Object()); err != nil {
			t.Fatalf("ping the fetched object: %v", err)
		}
		p.mu.Lock()
		n := len(p.callers)
		p.mu.Unlock()
		if n != 1 {
			t.Fatalf("provider pinged %d times, want 1", n)
		}
	})
}
