// Package tub connects Cap'n Proto capabilities between hosts the way
// Foolscap's Tub did: each side has a persistent TLS identity whose hash is
// its tub ID, and an object is reached through a furl,
// capnp://TUBID@HINTS/SWISSNUM, where the tub ID pins the server's key and
// the swiss number is the secret that grants access to the object.
package tub

import (
	"crypto/rand"
	"encoding/base32"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
)

// Scheme is the prefix of every capstats furl.
const Scheme = "capnp://"

// idLen is the length of tub IDs and swiss numbers: 160 bits in base32.
const idLen = 32

var b32 = base32.StdEncoding.WithPadding(base32.NoPadding)

// Furl names one capability on one tub.
type Furl struct {
	// TubID is the hash of the server's public key, checked during the TLS
	// handshake, so that the hints need not be trusted.
	TubID string
	// Hints are "host:port" addresses tried in order.
	Hints []string
	// Swissnum is the unguessable secret that grants use of the object.
	Swissnum string
}

// FurlError explains why a furl was refused. It never includes the swiss
// number, so it is safe to log.
type FurlError struct{ Reason string }

func (e *FurlError) Error() string { return "bad furl: " + e.Reason }

func furlErr(format string, args ...any) error {
	return &FurlError{Reason: fmt.Sprintf(format, args...)}
}

// ParseFurl parses capnp://TUBID@HINT[,HINT...]/SWISSNUM. Hints take the
// forms tcp:HOST:PORT, HOST:PORT and tcp:[IPV6]:PORT; hints of other forms
// are skipped as Foolscap did, but at least one must be usable.
func ParseFurl(s string) (Furl, error) {
	if strings.HasPrefix(s, "pb://") {
		return Furl{}, furlErr("this is a Foolscap (pb://) furl; capstats speaks Cap'n Proto and needs the capnp:// furl its gatherer prints")
	}
	if !strings.HasPrefix(s, Scheme) {
		scheme := s
		if i := strings.Index(s, "://"); i >= 0 {
			scheme = s[:i+3]
		} else {
			scheme = "none"
		}
		return Furl{}, furlErr("scheme is %q, want %q", scheme, Scheme)
	}
	rest := s[len(Scheme):]
	at := strings.IndexByte(rest, '@')
	if at < 0 {
		return Furl{}, furlErr("no '@' after the tub ID")
	}
	tubID := rest[:at]
	if !isBase32ID(tubID) {
		return Furl{}, furlErr("tub ID must be %d lowercase base32 characters (a-z, 2-7), got %d characters", idLen, len(tubID))
	}
	rest = rest[at+1:]
	slash := strings.IndexByte(rest, '/')
	if slash < 0 {
		return Furl{}, furlErr("no '/' before the swiss number")
	}
	hintList, swiss := rest[:slash], rest[slash+1:]
	if swiss == "" {
		return Furl{}, furlErr("empty swiss number")
	}
	if i := strings.IndexAny(swiss, "/?#, \t\r\n"); i >= 0 {
		return Furl{}, furlErr("unexpected characters after the swiss number")
	}
	if !isBase32ID(swiss) {
		return Furl{}, furlErr("swiss number must be %d lowercase base32 characters (a-z, 2-7)", idLen)
	}
	var hints []string
	for _, h := range strings.Split(hintList, ",") {
		if addr, ok := parseHint(h); ok {
			hints = append(hints, addr)
		}
	}
	if len(hints) == 0 {
		return Furl{}, furlErr("no usable connection hint in %q (want tcp:HOST:PORT)", hintList)
	}
	return Furl{TubID: tubID, Hints: hints, Swissnum: swiss}, nil
}

// parseHint turns one hint into a dialable "host:port".
func parseHint(h string) (string, bool) {
	h = strings.TrimPrefix(h, "tcp:")
	host, port, err := net.SplitHostPort(h)
	if err != nil || host == "" || strings.ContainsAny(host, "/@ ") {
		return "", false
	}
	if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
		return "", false
	}
	return net.JoinHostPort(host, port), true
}

func isBase32ID(s string) bool {
	if len(s) != idLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= '2' && c <= '7') {
			return false
		}
	}
	return true
}

// String formats f as a furl; hints are written as tcp:HOST:PORT.
func (f Furl) String() string {
	var b strings.Builder
	b.WriteString(Scheme)
	b.WriteString(f.TubID)
	b.WriteByte('@')
	for i, h := range f.Hints {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString("tcp:")
		b.WriteString(h)
	}
	b.WriteByte('/')
	b.WriteString(f.Swissnum)
	return b.String()
}

// Redacted formats f with the swiss number hidden, for logs.
func (f Furl) Redacted() string {
	g := f
	g.Swissnum = "<swissnum>"
	return g.String()
}

// NewSwissnum returns a fresh 160-bit swiss number.
func NewSwissnum() string {
	var b [20]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic("tub: crypto/rand failed: " + err.Error())
	}
	return strings.ToLower(b32.EncodeToString(b[:]))
}

// ValidSwissnum reports whether s has the form of a swiss number.
func ValidSwissnum(s string) bool { return isBase32ID(s) }

// errNoHints is returned by Dial for a furl built by hand without hints.
var errNoHints = errors.New("furl has no connection hints")
