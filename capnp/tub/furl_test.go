package tub

import (
	"errors"
	"strings"
	"testing"
)

const (
	goodTub   = "abcdefghijklmnopqrstuvwxyz234567"
	goodSwiss = "swissnumswissnumswissnumswissnum"
)

func TestParseFurlGood(t *testing.T) {
	cases := []struct {
		in    string
		hints []string
	}{
		{"capnp://" + goodTub + "@tcp:example.org:1234/" + goodSwiss, []string{"example.org:1234"}},
		{"capnp://" + goodTub + "@example.org:1234/" + goodSwiss, []string{"example.org:1234"}},
		{"capnp://" + goodTub + "@tcp:[::1]:99/" + goodSwiss, []string{"[::1]:99"}},
		{"capnp://" + goodTub + "@tcp:a:1,tcp:b:2/" + goodSwiss, []string{"a:1", "b:2"}},
		// Unusable hints are skipped, as Foolscap did.
		{"capnp://" + goodTub + "@tor:xyz.onion:80x,tcp:b:2/" + goodSwiss, []string{"b:2"}},
	}
	for _, c := range cases {
		f, err := ParseFurl(c.in)
		if err != nil {
			t.Errorf("ParseFurl(%q): %v", c.in, err)
			continue
		}
		if f.TubID != goodTub || f.Swissnum != goodSwiss || strings.Join(f.Hints, " ") != strings.Join(c.hints, " ") {
			t.Errorf("ParseFurl(%q) = %+v, want hints %v", c.in, f, c.hints)
		}
	}
}

func TestParseFurlBad(t *testing.T) {
	cases := []struct{ name, in, want string }{
		{"foolscap", "pb://" + goodTub + "@tcp:h:1/" + goodSwiss, "Foolscap"},
		{"scheme", "http://" + goodTub + "@tcp:h:1/" + goodSwiss, "scheme"},
		{"no scheme", goodTub + "@tcp:h:1/" + goodSwiss, "scheme"},
		{"no at", "capnp://" + goodTub + "tcp:h:1/" + goodSwiss, "'@'"},
		{"short tub", "capnp://abc@tcp:h:1/" + goodSwiss, "tub ID"},
		{"upper tub", "capnp://" + strings.ToUpper(goodTub) + "@tcp:h:1/" + goodSwiss, "tub ID"},
		{"tub with 1", "capnp://" + goodTub[:31] + "1@tcp:h:1/" + goodSwiss, "tub ID"},
		{"no slash", "capnp://" + goodTub + "@tcp:h:1", "'/'"},
		{"empty swiss", "capnp://" + goodTub + "@tcp:h:1/", "empty swiss"},
		{"bad swiss", "capnp://" + goodTub + "@tcp:h:1/" + goodSwiss[:31] + "!", "swiss number must"},
		{"short swiss", "capnp://" + goodTub + "@tcp:h:1/abc", "swiss number must"},
		{"no hint", "capnp://" + goodTub + "@/" + goodSwiss, "no usable"},
		{"bad port", "capnp://" + goodTub + "@tcp:h:99999/" + goodSwiss, "no usable"},
		{"no port", "capnp://" + goodTub + "@tcp:h/" + goodSwiss, "no usable"},
		{"trailing path", "capnp://" + goodTub + "@tcp:h:1/" + goodSwiss + "/x", "after the swiss"},
		{"trailing space", "capnp://" + goodTub + "@tcp:h:1/" + goodSwiss + " x", "after the swiss"},
		{"trailing query", "capnp://" + goodTub + "@tcp:h:1/" + goodSwiss + "?a=b", "after the swiss"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := ParseFurl(c.in)
			if err == nil {
				t.Fatalf("ParseFurl(%q) succeeded", c.in)
			}
			var fe *FurlError
			if !errors.As(err, &fe) {
				t.Errorf("error %v is not a *FurlError", err)
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Errorf("error %q does not mention %q", err, c.want)
			}
			if strings.Contains(err.Error(), "swissnumswissnum") {
				t.Errorf("error %q echoes the swiss number", err)
			}
		})
	}
}

func TestFurlRoundTrip(t *testing.T) {
	f := Furl{TubID: goodTub, Hints: []string{"127.0.0.1:4", "[::1]:5", "example.org:6"}, Swissnum: NewSwissnum()}
	g, err := ParseFurl(f.String())
	if err != nil {
		t.Fatal(err)
	}
	if g.String() != f.String() {
		t.Fatalf("round trip: %q != %q", g, f)
	}
	if strings.Contains(f.Redacted(), f.Swissnum) {
		t.Fatal("Redacted shows the swiss number")
	}
	if a, b := NewSwissnum(), NewSwissnum(); a == b || !ValidSwissnum(a) {
		t.Fatalf("NewSwissnum gave %q and %q", a, b)
	}
}

func FuzzParseFurl(f *testing.F) {
	f.Add("capnp://" + goodTub + "@tcp:example.org:1234/" + goodSwiss)
	f.Add("capnp://" + goodTub + "@tcp:[::1]:1,h:2/" + goodSwiss)
	f.Add("pb://" + goodTub + "@tcp:h:1/" + goodSwiss)
	f.Add("capnp://@/")
	f.Fuzz(func(t *testing.T, s string) {
		fu, err := ParseFurl(s)
		if err != nil {
			if strings.Contains(err.Error(), goodSwiss) {
				t.Fatalf("error echoes swissnum: %v", err)
			}
			return
		}
		// Whatever parses must format to a furl that parses the same.
		again, err := ParseFurl(fu.String())
		if err != nil {
			t.Fatalf("reparse of %q: %v", fu.String(), err)
		}
		if again.String() != fu.String() {
			t.Fatalf("not stable: %q vs %q", again.String(), fu.String())
		}
	})
}
