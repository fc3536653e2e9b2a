package httpserve

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"testing"
	"time"
)

// keepAlive opens a connection, makes one request on it and leaves it open.
func keepAlive(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	c.SetReadDeadline(time.Now().Add(20 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	c.SetReadDeadline(time.Time{})
	return c
}

func TestIdleConnectionsBeyondTheBoundDoNotLockOthersOut(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := New(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }), Options{MaxConns: 4})
	done := make(chan error, 1)
	go func() { done <- s.Serve(ln) }()
	defer func() {
		s.Close()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	}()
	addr := ln.Addr().String()
	for range 4 {
		keepAlive(t, addr)
	}
	if n := s.Open(); n != 4 {
		t.Fatalf("%d connections open after 4 keep-alive requests", n)
	}
	// Four more that never send anything, then four more keep-alive ones:
	// each new one pushes out the idle connection longest unused.
	for range 4 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
	}
	for range 4 {
		keepAlive(t, addr)
	}
	if n := s.Open(); n > 4 {
		t.Errorf("%d connections open, bound 4", n)
	}
	cl := &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	for i := range 10 {
		resp, err := cl.Get("http://" + addr + "/")
		if err != nil {
			t.Fatalf("request %d with the bound reached: %v", i, err)
		}
		resp.Body.Close()
		if n := s.Open(); n > 4 {
			t.Errorf("%d connections open, bound 4", n)
		}
	}
}

func TestShutdownWhileWaitingForRoom(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	block := make(chan struct{})
	s := New(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-block }), Options{MaxConns: 1})
	done := make(chan error, 1)
	go func() { done <- s.Serve(ln) }()
	go http.Get("http://" + ln.Addr().String() + "/")
	for deadline := time.Now().Add(20 * time.Second); s.Open() == 0; {
		if time.Now().After(deadline) {
			t.Fatal("the request never arrived")
		}
		time.Sleep(10 * time.Millisecond)
	}
	close(block)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := s.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Errorf("Serve: %v", err)
	}
}
