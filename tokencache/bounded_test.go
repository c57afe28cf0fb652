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
// 100,000-entry cache from 8 goroutines and samples the heap: it must stop
// growing once the cache is full. The peak is reported in the test log.
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
	var peak, atFull uint64
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < identities; i += workers {
				key := Key{Tenant: "tenant-" + strconv.Itoa(i%1000), User: "user-" + strconv.Itoa(i)}
				if _, _, err := c.Get(context.Background(), key); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	for sampling := true; sampling; {
		select {
		case <-done:
			sampling = false
		case <-time.After(50 * time.Millisecond):
		}
		h := heap()
		peak = max(peak, h)
		if atFull == 0 && c.Len() >= size {
			atFull = h
		}
	}
	if c.Len() != size {
		t.Fatalf("cache holds %d entries, want %d", c.Len(), size)
	}
	final := heap()
	t.Logf("1,000,000 identities through a %d-entry cache: heap %s at start, %s when first full, peak %s, %s at the end (%.0f B per entry)",
		size, mib(base), mib(atFull), mib(peak), mib(final), float64(final-base)/size)
	// Bounded: after the cache filled, 900,000 more identities may churn the
	// map (it does not shrink in place) but must stay below what twice the
	// entries would take; unbounded growth would reach ten times.
	if atFull == 0 || peak > base+2*(atFull-base) {
		t.Errorf("heap kept growing after the cache was full: %s when full, peak %s", mib(atFull), mib(peak))
	}
}

func mib(b uint64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }
