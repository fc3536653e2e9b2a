package main

import (
	"strings"
	"testing"
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
		{"-furl", testFurl, "extra"},
	} {
		if _, err := parseFlags(bad); err == nil {
			t.Errorf("parseFlags(%s) accepted", strings.Join(bad, " "))
		}
	}
}
