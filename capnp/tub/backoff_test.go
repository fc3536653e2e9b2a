package tub

import (
	"math"
	"math/rand/v2"
	"testing"
	"time"
)

func seq(zs ...float64) func() float64 {
	i := 0
	return func() float64 {
		z := zs[i%len(zs)]
		i++
		return z
	}
}

func secs(f float64) time.Duration { return time.Duration(f * float64(time.Second)) }

func TestBackoffSchedule(t *testing.T) {
	e := math.E
	cases := []struct {
		name string
		max  time.Duration
		norm func() float64
		want []time.Duration
	}{
		{"no jitter", 600 * time.Second, seq(0), []time.Duration{
			secs(1), secs(e), secs(e * e), secs(e * e * e), secs(math.Pow(e, 4)),
			secs(math.Pow(e, 5)), secs(math.Pow(e, 6)), 600 * time.Second, 600 * time.Second,
		}},
		{"one deviation up", 600 * time.Second, seq(1), []time.Duration{
			secs(1.12), secs(e * 1.12), secs(e * e * 1.12),
		}},
		{"one deviation down", 600 * time.Second, seq(-1), []time.Duration{
			secs(0.88), secs(e * 0.88), secs(e * e * 0.88),
		}},
		{"clamped to three deviations", 600 * time.Second, seq(10, -10), []time.Duration{
			secs(1.36), secs(e * 0.64), secs(e * e * 1.36), secs(e * e * e * 0.64),
		}},
		{"cap respected even with jitter up", 10 * time.Second, seq(3), []time.Duration{
			secs(1.36), secs(e * 1.36), secs(10), secs(10), secs(10),
		}},
		{"cap is the centre once reached", 10 * time.Second, seq(0, 0, 0, -1), []time.Duration{
			secs(1), secs(e), secs(e * e), secs(8.8),
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			b := Backoff{Max: c.max, norm: c.norm}
			for i, want := range c.want {
				got := b.Next()
				if d := got - want; d < -time.Microsecond || d > time.Microsecond {
					t.Errorf("delay %d = %v, want %v", i, got, want)
				}
			}
		})
	}
}

// Factor 1 and a negative Jitter make a constant delay.
func TestBackoffConstant(t *testing.T) {
	b := Backoff{Initial: 100 * time.Millisecond, Factor: 1, Jitter: -1}
	for i := range 5 {
		if got := b.Next(); got != 100*time.Millisecond {
			t.Fatalf("delay %d = %v, want 100ms", i, got)
		}
	}
}

func TestBackoffReset(t *testing.T) {
	var b Backoff // the zero value is the default schedule
	b.norm = seq(0)
	if b.Cap() != DefaultMaxBackoff {
		t.Fatalf("default cap %v, want %v", b.Cap(), DefaultMaxBackoff)
	}
	for range 5 {
		b.Next()
	}
	b.Reset()
	if got := b.Next(); got != time.Second {
		t.Fatalf("after Reset: %v, want 1s", got)
	}
	if got := b.Next(); got != secs(math.E) {
		t.Fatalf("second after Reset: %v, want e s", got)
	}
}

// With a real random source every delay stays within three deviations of
// its centre and under the cap, and the jitter is about 12%.
func TestBackoffJitterBounds(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	max := 600 * time.Second
	var sumSq float64
	n := 0
	for run := 0; run < 200; run++ {
		b := Backoff{Max: max, norm: r.NormFloat64}
		centre := float64(time.Second)
		for i := 0; i < 10; i++ {
			got := float64(b.Next())
			c := min(centre, float64(max))
			if got < 0.64*c*(1-1e-6) || got > min(1.36*c, float64(max))*(1+1e-6) {
				t.Fatalf("run %d delay %d = %v, centre %v", run, i, time.Duration(got), time.Duration(c))
			}
			if centre < float64(max)/1.5 { // below the cap: jitter is symmetric
				rel := got/c - 1
				sumSq += rel * rel
				n++
			}
			centre *= math.E
		}
	}
	sd := math.Sqrt(sumSq / float64(n))
	if sd < 0.10 || sd > 0.14 {
		t.Fatalf("relative jitter sd %.3f over %d delays, want about 0.12", sd, n)
	}
}
