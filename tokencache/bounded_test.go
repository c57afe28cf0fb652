package tokencache

import (
	"context"
	"fmt"
	"runtime"
	"strconv"
	"sync"
	"testing"
	"time"
)

// TestMillionIdentitiesStayBounded cycles 1,000,000 identities through a
// 100,000-entry cache from 8 goroutines: it must stop growing once the cache
// is full. The heap is measured only between rounds, when no goroutine is
// allocating, after a forced GC, so the figures depend on what the cache
// holds and not on how loaded the machine is or when a sample happened to
// land. The figures are reported in the test log.
func TestMillionIdentitiesStayBounded(t *testing.T) {
	if raceEnabled {
		t.Skip("slow and memory-distorting under -race; `make test` runs it without")
	}
	const size, identities, workers = 100_000, 1_000_000, 8
	token := "fzat_" + string(make([]byte, 32)) // the fake's token length
	heap := func() uint64 {
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapAlloc
	}
	base := heap() // before the cache, whose table is allocated up front
	c, err := New(Config{Size: size}, func(ctx context.Context, k Key) (Token, error) {
		return Token{Value: token, Expiry: time.Now().Add(time.Hour)}, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// round asks for identities [from, to) from the workers and returns once
	// every one was answered.
	round := func(from, to int) {
		var wg sync.WaitGroup
		for w := range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := from + w; i < to; i += workers {
					key := Key{Tenant: "tenant-" + strconv.Itoa(i%1000), User: "user-" + strconv.Itoa(i)}
					if _, _, err := c.Get(context.Background(), key); err != nil {
						t.Error(err)
						return
					}
				}
			}()
		}
		wg.Wait()
	}
	round(0, size)
	if c.Len() != size {
		t.Fatalf("after %d identities the cache holds %d entries, want %d", size, c.Len(), size)
	}
	atFull := heap()
	peak := atFull
	for from := size; from < identities; from += size {
		round(from, from+size)
		if t.Failed() {
			return
		}
		if c.Len() != size {
			t.Fatalf("after %d identities the cache holds %d entries, want %d", from+size, c.Len(), size)
		}
		peak = max(peak, heap())
	}
	final := heap()
	t.Logf("1,000,000 identities through a %d-entry cache: heap %s at start, %s when full, peak %s after a round, %s at the end (%.0f B per entry)",
		size, mib(base), mib(atFull), mib(peak), mib(final), float64(final-base)/size)
	// Bounded: after the cache filled, 900,000 more identities may churn the
	// map (it does not shrink in place) but must stay below what twice the
	// entries would take; unbounded growth would reach ten times.
	if atFull <= base || peak > base+2*(atFull-base) {
		t.Errorf("heap kept growing after the cache was full: %s at start, %s when full, peak %s", mib(base), mib(atFull), mib(peak))
	}
}

func mib(b uint64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }
