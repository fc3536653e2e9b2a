package node

import (
	"math"
	"math/rand/v2"
	"time"
)

// Defaults of the reconnection schedule: the original's first delay,
// factor and jitter, and a lower cap than its 3600 s.
const (
	DefaultInitialBackoff = time.Second
	DefaultMaxBackoff     = 600 * time.Second
	DefaultBackoffFactor  = math.E
	DefaultBackoffJitter  = 0.12
)

// Backoff is the reconnection schedule: after the first failure wait
// Initial, then Factor times longer after each further failure, each delay
// drawn from a normal distribution around it with relative standard
// deviation Jitter (clamped to three deviations), never more than Max.
// Reset starts the schedule again, as after an established connection
// drops. A Backoff is not safe for concurrent use.
type Backoff struct {
	Initial time.Duration
	Max     time.Duration
	Factor  float64
	Jitter  float64
	// Norm returns standard normal deviates; nil means math/rand/v2.
	Norm func() float64

	base time.Duration // centre of the next delay; 0 means Initial
}

// NewBackoff returns the default schedule with the given cap (0 means
// DefaultMaxBackoff) and source of normal deviates (nil means math/rand/v2).
func NewBackoff(max time.Duration, norm func() float64) *Backoff {
	if max <= 0 {
		max = DefaultMaxBackoff
	}
	return &Backoff{
		Initial: DefaultInitialBackoff,
		Max:     max,
		Factor:  DefaultBackoffFactor,
		Jitter:  DefaultBackoffJitter,
		Norm:    norm,
	}
}

// Next returns the delay to wait after a failure and advances the schedule.
func (b *Backoff) Next() time.Duration {
	base := b.base
	if base <= 0 {
		base = b.Initial
	}
	if base > b.Max {
		base = b.Max
	}
	norm := b.Norm
	if norm == nil {
		norm = rand.NormFloat64
	}
	z := max(-3, min(3, norm()))
	d := time.Duration(float64(base) * (1 + b.Jitter*z))
	d = max(d, base/2)
	d = min(d, b.Max)
	next := float64(base) * b.Factor
	if next >= float64(b.Max) {
		b.base = b.Max
	} else {
		b.base = time.Duration(next)
	}
	return d
}

// Reset starts the schedule again from Initial.
func (b *Backoff) Reset() { b.base = 0 }
