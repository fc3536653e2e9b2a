package node

import (
	"sync"
	"testing"
)

func TestCounterUncontendedStaysOneWord(t *testing.T) {
	var c Counter
	for range 10000 {
		c.Add(3)
	}
	if c.stripes.Load() != nil {
		t.Fatal("a counter only one goroutine adds to grew stripes")
	}
	if got := c.Load(); got != 30000 {
		t.Fatalf("Load = %d, want 30000", got)
	}
}

// The striped path is what two cores adding to one counter take; it is
// driven directly here because whether the cores collide in a test run is
// up to the scheduler.
func TestCounterStripedExactTotal(t *testing.T) {
	var c Counter
	c.Add(5) // lands in base before the stripes exist
	c.addStriped(7)
	s := c.stripes.Load()
	if s == nil {
		t.Fatal("addStriped did not grow stripes")
	}
	if n := len(s.stripes); n < 8 || n&(n-1) != 0 {
		t.Fatalf("%d stripes, want a power of two >= 8", n)
	}
	const goroutines, perG = 8, 20000
	var wg sync.WaitGroup
	for range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range perG {
				c.Add(1) // every add now goes to a stripe
			}
		}()
	}
	wg.Wait()
	if got, want := c.Load(), int64(5+7+goroutines*perG); got != want {
		t.Fatalf("Load = %d, want %d", got, want)
	}
	if got := c.base.Load(); got != 5 {
		t.Fatalf("base = %d after striping, want 5: adds still went to the shared word", got)
	}
}
