package gatherer

import (
	"errors"
	"net"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// Config returns the configuration in use, defaults filled in.
func (g *Gatherer) Config() Config { return g.cfg }

// Bounds on what a furl holder can make the gatherer keep. Every node's
// basedir holds the furl, so a furl holder is a node, not an administrator.
const (
	// DefaultMaxNodes is the default of Config.MaxNodes.
	DefaultMaxNodes = 10000
	// maxNicknameLen and maxErrorLen bound the text a node controls.
	maxNicknameLen = 128
	maxErrorLen    = 1024
	// Defaults of Config.NewNodeBurst and NewNodeEvery: a whole grid behind
	// one NAT address may attach at once on first start; after that, an
	// address gets another new identity every NewNodeEvery.
	DefaultNewNodeBurst = 1000
	DefaultNewNodeEvery = 6 * time.Second
	// maxAddrBuckets bounds the per-address rate limiter's memory; past
	// it, full buckets are dropped.
	maxAddrBuckets = 16384
)

// errTooManyNew and errFull are what a refused provide says.
var (
	errTooManyNew = errors.New("provide: too many new node identities from this address; try again later")
	errFull       = errors.New("provide: the gatherer holds as many nodes as it may (--max-nodes) and all of them are up")
)

// cleanNickname keeps nicknames printable and short, whatever a node sends,
// and copies them, so that a short nickname never pins the long message it
// was cut from.
func cleanNickname(s string) string {
	return cleanText(strings.TrimSpace(s), maxNicknameLen, false)
}

// cleanError is error text that came from a node (an exception's text can
// be anything): printable, on one line, at most about 1 KiB, a copy.
func cleanError(s string) string {
	return cleanText(s, maxErrorLen, true)
}

// cleanText makes s valid UTF-8 without control characters (dropped, or
// with spaces for them when space), cut to at most max bytes on a rune
// boundary ("…" marks a cut), in memory of its own.
func cleanText(s string, max int, space bool) string {
	var b strings.Builder
	n := min(len(s), max+utf8.UTFMax)
	b.Grow(n)
	cut := false
	for _, r := range s {
		if unicode.IsControl(r) || r == '\u2028' || r == '\u2029' {
			if !space {
				continue
			}
			r = ' '
		}
		if b.Len()+utf8.RuneLen(r) > max {
			cut = true
			break
		}
		b.WriteRune(r) // an invalid byte arrives as U+FFFD
	}
	out := b.String()
	if cut {
		const mark = "…"
		for len(out)+len(mark) > max {
			_, size := utf8.DecodeLastRuneInString(out)
			out = out[:len(out)-size]
		}
		out += mark
	}
	return out
}

// addrKey is the part of a remote address the new-identity limit counts
// by: the IPv4 address, or the /64 of an IPv6 one (one host's share).
func addrKey(a net.Addr) string {
	var ip net.IP
	switch a := a.(type) {
	case *net.TCPAddr:
		ip = a.IP
	default:
		if a == nil {
			return ""
		}
		host, _, err := net.SplitHostPort(a.String())
		if err != nil {
			return a.String()
		}
		ip = net.ParseIP(host)
	}
	if ip4 := ip.To4(); ip4 != nil {
		return ip4.String()
	}
	if ip == nil {
		return ""
	}
	return ip.Mask(net.CIDRMask(64, 128)).String()
}

// bucket is a token bucket of new identities for one address.
type bucket struct {
	tokens float64
	at     time.Time
}

// allowNew takes a token for a new identity from addr's bucket. g.mu held.
func (g *Gatherer) allowNew(addr string, now time.Time) bool {
	if g.buckets == nil {
		g.buckets = make(map[string]*bucket)
	}
	burst := float64(g.cfg.NewNodeBurst)
	refill := func(b *bucket) {
		b.tokens = min(burst, b.tokens+now.Sub(b.at).Seconds()/g.cfg.NewNodeEvery.Seconds())
		b.at = now
	}
	b := g.buckets[addr]
	if b == nil {
		if len(g.buckets) >= maxAddrBuckets {
			for k, o := range g.buckets {
				if refill(o); o.tokens >= burst {
					delete(g.buckets, k)
				}
			}
		}
		if len(g.buckets) >= maxAddrBuckets {
			return false
		}
		b = &bucket{tokens: burst, at: now}
		g.buckets[addr] = b
	}
	refill(b)
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// makeRoom makes room for one more node entry when the cap is reached: it
// forgets the node that has been down longest. It never displaces a node
// that is up; with all of them up it returns false. g.mu held.
func (g *Gatherer) makeRoom() bool {
	if len(g.nodes) < g.cfg.MaxNodes {
		return true
	}
	victim := ""
	var since float64
	for _, id := range g.order {
		n := g.nodes[id]
		if n.peer != nil {
			continue
		}
		if s := n.downSince(); victim == "" || s < since {
			victim, since = id, s
		}
	}
	if victim == "" {
		return false
	}
	g.removeLocked(victim)
	g.metrics.update(func(m *Metrics) { m.NodesEvicted++ })
	return true
}

// downSince is when the node was last heard of (epoch seconds): when its
// connection ended, or for an entry loaded from the file, its last poll.
func (n *node) downSince() float64 {
	if n.down > 0 {
		return n.down
	}
	return max(n.entry.LastPoll, n.entry.Timestamp)
}

// forgetDown drops the entries of nodes down longer than ForgetAfter.
func (g *Gatherer) forgetDown() {
	if g.cfg.ForgetAfter <= 0 {
		return
	}
	cutoff := epoch(g.cfg.Now().Add(-g.cfg.ForgetAfter))
	var forgot []string
	g.mu.Lock()
	for _, id := range g.order {
		if n := g.nodes[id]; n.peer == nil && n.downSince() < cutoff {
			forgot = append(forgot, id)
		}
	}
	for _, id := range forgot {
		g.removeLocked(id)
	}
	g.mu.Unlock()
	g.metrics.update(func(m *Metrics) { m.NodesForgotten += int64(len(forgot)) })
	for _, id := range forgot {
		g.cfg.Logger.Info("forgot a node down longer than --forget-after", "tubid", id, "forget_after", g.cfg.ForgetAfter)
	}
}

// warnRefused logs a refused provide at warn, at most once per 10 s with
// the count since the last line, so a flood makes few lines.
func (g *Gatherer) warnRefused(reason error, tubID, remote string) {
	g.metrics.update(func(m *Metrics) { m.NodesRefused++ })
	g.mu.Lock()
	g.refused++
	now := g.cfg.Now()
	if !g.refusedLogged.IsZero() && now.Sub(g.refusedLogged) < 10*time.Second {
		g.mu.Unlock()
		return
	}
	count := g.refused
	g.refused = 0
	g.refusedLogged = now
	g.mu.Unlock()
	g.cfg.Logger.Warn("new node refused", "err", reason, "tubid", tubID, "remote", remote, "refused_since_last_line", count)
}
