package tub

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"capnproto.org/go/capnp/v3"

	"capstats/internal/clock/clocktest"
)

// scripted is an Attempt whose results the test hands out one by one.
type scripted struct {
	calls chan chan result
}

type result struct {
	established bool
	err         error
}

func newScripted() *scripted { return &scripted{calls: make(chan chan result, 16)} }

func (s *scripted) attempt(ctx context.Context) (bool, error) {
	reply := make(chan result, 1)
	select {
	case s.calls <- reply:
	case <-ctx.Done():
		return false, ctx.Err()
	}
	select {
	case r := <-reply:
		return r.established, r.err
	case <-ctx.Done():
		return false, ctx.Err()
	}
}

func (s *scripted) next(t *testing.T) chan result {
	t.Helper()
	select {
	case c := <-s.calls:
		return c
	case <-time.After(10 * time.Second):
		t.Fatal("no attempt within 10 s")
		return nil
	}
}

func (s *scripted) none(t *testing.T) {
	t.Helper()
	select {
	case <-s.calls:
		t.Fatal("unexpected attempt")
	case <-time.After(50 * time.Millisecond):
	}
}

type retries struct {
	mu  sync.Mutex
	all []Retry
}

func (r *retries) add(x Retry) { r.mu.Lock(); r.all = append(r.all, x); r.mu.Unlock() }

func (r *retries) get() []Retry {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Retry(nil), r.all...)
}

func runReconnector(t *testing.T, r *Reconnector) (stop func() error) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	var once sync.Once
	var err error
	stop = func() error {
		once.Do(func() {
			cancel()
			select {
			case err = <-done:
			case <-time.After(10 * time.Second):
				t.Error("Run did not return within 10 s of cancel")
			}
		})
		return err
	}
	t.Cleanup(func() { stop() })
	return stop
}

// Failures wait along the schedule; an established connection that ends
// starts it again, and Run returns ctx.Err() when stopped.
func TestReconnectorSchedule(t *testing.T) {
	c := clocktest.New()
	s := newScripted()
	var got retries
	r := NewReconnector(s.attempt, ReconnectOptions{
		Backoff: Backoff{Initial: time.Second, Max: 5 * time.Second, Factor: 2, Jitter: -1},
		OnRetry: got.add, Clock: c,
	})
	stop := runReconnector(t, r)
	refused := errors.New("refused")
	for _, d := range []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 5 * time.Second} {
		s.next(t) <- result{err: refused}
		c.WaitTimer(t, d, 1)
		s.none(t)
		c.Advance(d)
	}
	s.next(t) <- result{established: true, err: errors.New("dropped")}
	c.WaitTimer(t, time.Second, 1)
	c.Advance(time.Second)
	s.next(t) <- result{established: true} // ended without a reason
	c.WaitTimer(t, time.Second, 1)
	if err := stop(); !errors.Is(err, context.Canceled) {
		t.Fatalf("Run = %v, want context.Canceled", err)
	}
	want := []Retry{
		{Err: refused, Failures: 1, Delay: time.Second},
		{Err: refused, Failures: 2, Delay: 2 * time.Second},
		{Err: refused, Failures: 3, Delay: 4 * time.Second},
		{Err: refused, Failures: 4, Delay: 5 * time.Second},
		{Established: true, Failures: 0, Delay: time.Second},
		{Established: true, Failures: 0, Delay: time.Second},
	}
	all := got.get()
	if len(all) != len(want) {
		t.Fatalf("retries %+v, want %+v", all, want)
	}
	for i, w := range want {
		g := all[i]
		if g.Established != w.Established || g.Failures != w.Failures || g.Delay != w.Delay || g.Err == nil {
			t.Errorf("retry %d = %+v, want %+v", i, g, w)
		}
		if w.Err != nil && !errors.Is(g.Err, w.Err) {
			t.Errorf("retry %d err %v, want %v", i, g.Err, w.Err)
		}
	}
	if all[4].Err.Error() != "dropped" || all[5].Err.Error() != "connection closed" {
		t.Errorf("drop reasons %q, %q", all[4].Err, all[5].Err)
	}
}

func TestReconnectorGivesUp(t *testing.T) {
	calls := 0
	last := errors.New("refused again")
	r := NewReconnector(func(context.Context) (bool, error) {
		calls++
		if calls == 2 {
			return true, nil // a connection resets the count
		}
		return false, last
	}, ReconnectOptions{Backoff: Backoff{Initial: time.Millisecond, Max: time.Millisecond}, MaxFailures: 3})
	err := r.Run(context.Background())
	if !errors.Is(err, ErrGaveUp) || !errors.Is(err, last) {
		t.Fatalf("Run = %v, want ErrGaveUp wrapping %v", err, last)
	}
	if calls != 5 {
		t.Fatalf("%d attempts, want 5 (1 failure, a connection, 3 failures)", calls)
	}
}

// RetryNow ends a wait at once, without touching the schedule; it does
// nothing to an attempt in progress.
func TestReconnectorRetryNow(t *testing.T) {
	c := clocktest.New()
	s := newScripted()
	r := NewReconnector(s.attempt, ReconnectOptions{
		Backoff: Backoff{Initial: time.Minute, Max: time.Hour, Factor: 2, Jitter: -1}, Clock: c,
	})
	runReconnector(t, r)
	reply := s.next(t)
	r.RetryNow() // during the attempt: ignored
	reply <- result{err: errors.New("refused")}
	c.WaitTimer(t, time.Minute, 1)
	s.none(t)
	r.RetryNow()
	s.next(t) <- result{err: errors.New("refused")}
	c.WaitTimer(t, 2*time.Minute, 1) // the schedule went on
}

// A RetryNow between an attempt's end and the wait, as when a furl file is
// re-read just then, is not lost.
func TestReconnectorRetryNowBeforeWait(t *testing.T) {
	c := clocktest.New()
	s := newScripted()
	var r *Reconnector
	kicked := false
	r = NewReconnector(s.attempt, ReconnectOptions{
		Backoff: Backoff{Initial: time.Hour, Max: time.Hour, Factor: 1, Jitter: -1}, Clock: c,
		OnRetry: func(Retry) {
			if !kicked {
				kicked = true
				r.RetryNow()
			}
		},
	})
	runReconnector(t, r)
	s.next(t) <- result{err: errors.New("refused")}
	s.next(t) <- result{err: errors.New("refused")} // no Advance: the kick ended the wait
	c.WaitTimer(t, time.Hour, 1)
	s.none(t)
}

// Over real connections: a reconnector keeps a connection to a listener
// that goes away and comes back on the same address.
func TestReconnectorFollowsRestartedListener(t *testing.T) {
	id, clientID := newID(t), newID(t)
	swiss := NewSwissnum()
	listenAt := func(addr string) (*Listener, Furl) {
		t.Helper()
		l, err := Listen(addr, id, Options{})
		if err != nil {
			t.Fatal(err)
		}
		f, err := l.RegisterAs(swiss, capnp.ErrorClient(errors.New("nothing here")))
		if err != nil {
			t.Fatal(err)
		}
		return l, f
	}
	l, f := listenAt("127.0.0.1:0")
	connected := make(chan struct{}, 16)
	var got retries
	r := NewReconnector(func(ctx context.Context) (bool, error) {
		dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		conn, err := Dial(dctx, f, clientID, capnp.Client{}, Options{})
		cancel()
		if err != nil {
			return false, err
		}
		defer conn.Close()
		connected <- struct{}{}
		select {
		case <-conn.Done():
		case <-ctx.Done():
		}
		return true, conn.Err()
	}, ReconnectOptions{Backoff: Backoff{Initial: 10 * time.Millisecond, Max: 50 * time.Millisecond}, OnRetry: got.add})
	stop := runReconnector(t, r)
	waitConnected := func() {
		t.Helper()
		select {
		case <-connected:
		case <-time.After(20 * time.Second):
			t.Fatalf("no connection within 20 s; retries %+v", got.get())
		}
	}
	waitConnected()
	l.Close()
	deadline := time.Now().Add(20 * time.Second)
	for {
		all := got.get()
		if n := len(all); n > 0 && all[n-1].Failures >= 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no failed attempts while the listener was away: %+v", all)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if all := got.get(); !all[0].Established {
		t.Fatalf("first retry %+v, want the dropped connection", all[0])
	}
	l2, _ := listenAt(f.Hints[0])
	defer l2.Close()
	waitConnected()
	if err := stop(); !errors.Is(err, context.Canceled) {
		t.Fatalf("Run = %v", err)
	}
}
