package tub

import (
	"math"
	"math/rand/v2"
	"time"
)

// Defaults of Backoff: the original's first delay, factor and jitter, and
// a lower cap than its 3600 s.
const (
	DefaultInitialBackoff = time.Second
	DefaultMaxBackoff     = 600 * time.Second
	DefaultBackoffFactor  = math.E
	DefaultBackoffJitter  = 0.12
)

// Backoff is a reconnection schedule, Foolscap's: after the first failure
// wait Initial, then Factor times longer after each further failure, each
// delay drawn from a normal distribution around it with relative standard
// deviation Jitter (clamped to three deviations), never more than Max.
// Reset starts the schedule again, as after an established connection
// drops. The zero value is the default schedule; a Backoff is not safe for
// concurrent use.
type Backoff struct {
	// Initial is the first delay; 0 means DefaultInitialBackoff.
	Initial time.Duration
	// Max caps every delay; 0 means DefaultMaxBackoff.
	Max time.Duration
	// Factor multiplies the delay after each failure; 0 means
	// DefaultBackoffFactor, 1 a constant delay.
	Factor float64
	// Jitter is the relative standard deviation of each delay; 0 means
	// DefaultBackoffJitter, a negative value none.
	Jitter float64

	norm func() float64 // standard normal deviates; nil means math/rand/v2
	base time.Duration  // centre of the next delay; 0 means Initial
}

func (b *Backoff) initial() time.Duration {
	if b.Initial <= 0 {
		return DefaultInitialBackoff
	}
	return b.Initial
}

// Cap returns the longest delay the schedule waits.
func (b *Backoff) Cap() time.Duration {
	if b.Max <= 0 {
		return DefaultMaxBackoff
	}
	return b.Max
}

// Next returns the delay to wait after a failure and advances the schedule.
func (b *Backoff) Next() time.Duration {
	maxD := b.Cap()
	factor := b.Factor
	if factor <= 0 {
		factor = DefaultBackoffFactor
	}
	jitter := b.Jitter
	switch {
	case jitter == 0:
		jitter = DefaultBackoffJitter
	case jitter < 0:
		jitter = 0
	}
	base := b.base
	if base <= 0 {
		base = b.initial()
	}
	base = min(base, maxD)
	norm := b.norm
	if norm == nil {
		norm = rand.NormFloat64
	}
	z := max(-3, min(3, norm()))
	d := time.Duration(float64(base) * (1 + jitter*z))
	d = max(d, base/2)
	d = min(d, maxD)
	if next := float64(base) * factor; next >= float64(maxD) {
		b.base = maxD
	} else {
		b.base = time.Duration(next)
	}
	return d
}

// Reset starts the schedule again from Initial.
func (b *Backoff) Reset() { b.base = 0 }
