package tokencache

import (
	"context"
	"fmt"
	"math/rand/v2"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

var benchSizes = []struct {
	name string
	n    int
}{{"1k", 1_000}, {"100k", 100_000}, {"1M", 1_000_000}}

type benchSet struct {
	c    *Cache
	keys []Key // shuffled, so lookups do not follow allocation order
}

var (
	benchMu   sync.Mutex
	benchSets = map[int]*benchSet{}
)

func benchKey(i int) Key {
	return Key{Tenant: fmt.Sprintf("tenant-%04d", i%1000), User: fmt.Sprintf("user-%08d", i)}
}

func benchToken(k Key) Token {
	return Token{Value: "zap_at_" + k.User + "-0123456789abcdef0123456789", Expiry: time.Now().Add(24 * time.Hour)}
}

// benchCache returns a cache holding n entries, built once per size: the
// testing package calls a benchmark function several times.
func benchCache(b *testing.B, n int) *benchSet {
	benchMu.Lock()
	defer benchMu.Unlock()
	if s := benchSets[n]; s != nil {
		return s
	}
	c, err := New(Config{Size: n}, func(_ context.Context, k Key) (Token, error) { return benchToken(k), nil })
	if err != nil {
		b.Fatal(err)
	}
	s := &benchSet{c: c, keys: make([]Key, n)}
	for i := range s.keys {
		s.keys[i] = benchKey(i)
		// Populate directly: a fetch goroutine per entry would make a 1M
		// setup slow without changing what is stored.
		c.tokens.put(c.tokens.hash(s.keys[i]), s.keys[i], benchToken(s.keys[i]), 0)
	}
	rand.New(rand.NewPCG(1, 1)).Shuffle(n, func(i, j int) { s.keys[i], s.keys[j] = s.keys[j], s.keys[i] })
	benchSets[n] = s
	runtime.GC() // not concurrently with the first measurement
	return s
}

// queryKeys are the keys a benchmark looks up. The hot set is copied, as a
// server looks up the strings it has just parsed from a request, not the
// ones it stored (which sit among all the others in the heap).
func queryKeys(s *benchSet, pattern string) []Key {
	if pattern != "hot1k" {
		return s.keys
	}
	keys := make([]Key, 1000)
	for i, k := range s.keys[:len(keys)] {
		keys[i] = Key{Tenant: strings.Clone(k.Tenant), User: strings.Clone(k.User)}
	}
	return keys
}

// BenchmarkGetHit measures the hit path, the hottest code of the gateway.
// "uniform" draws keys from all entries (memory-latency bound at large
// sizes); "hot1k" repeats 1k keys among the N entries (a typical working
// set), which isolates the cost of the data structure itself.
func BenchmarkGetHit(b *testing.B) {
	ctx := context.Background()
	for _, size := range benchSizes {
		for _, pattern := range []string{"uniform", "hot1k"} {
			b.Run(fmt.Sprintf("entries=%s/%s", size.name, pattern), func(b *testing.B) {
				s := benchCache(b, size.n)
				keys := queryKeys(s, pattern)
				b.ReportAllocs()
				i := 0
				for b.Loop() {
					if _, res, _ := s.c.Get(ctx, keys[i]); res != Hit {
						b.Fatal("not a hit")
					}
					if i++; i == len(keys) {
						i = 0
					}
				}
			})
			b.Run(fmt.Sprintf("entries=%s/%s/parallel", size.name, pattern), func(b *testing.B) {
				s := benchCache(b, size.n)
				keys := queryKeys(s, pattern)
				b.ReportAllocs()
				b.ResetTimer()
				b.RunParallel(func(pb *testing.PB) {
					i := rand.IntN(len(keys))
					for pb.Next() {
						if _, res, _ := s.c.Get(ctx, keys[i]); res != Hit {
							b.Fatal("not a hit")
						}
						if i++; i == len(keys) {
							i = 0
						}
					}
				})
			})
		}
	}
}

// BenchmarkMapBaseline is a plain map lookup with the same keys and access
// patterns as BenchmarkGetHit: the memory-latency floor that any hash-based
// cache pays at large sizes, for comparison.
func BenchmarkMapBaseline(b *testing.B) {
	for _, size := range benchSizes {
		for _, pattern := range []string{"uniform", "hot1k"} {
			b.Run(fmt.Sprintf("entries=%s/%s", size.name, pattern), func(b *testing.B) {
				s := benchCache(b, size.n)
				m := make(map[Key]Token, size.n)
				for _, k := range s.keys {
					m[k] = benchToken(k)
				}
				keys := queryKeys(s, pattern)
				i := 0
				for b.Loop() {
					_ = m[keys[i]]
					if i++; i == len(keys) {
						i = 0
					}
				}
			})
		}
	}
}

// BenchmarkMemoryPerEntry fills a fresh cache through Get (the real miss
// path) and reports heap bytes per entry beyond the key and token bytes.
// ns/op is the time to fill the cache.
func BenchmarkMemoryPerEntry(b *testing.B) {
	// Drop the hit benchmarks' caches: a large live heap only slows GC.
	benchMu.Lock()
	clear(benchSets)
	benchMu.Unlock()
	for _, n := range []int{10_000, 100_000} {
		b.Run(fmt.Sprintf("entries=%d", n), func(b *testing.B) {
			var perEntry float64
			for b.Loop() {
				perEntry = memoryPerEntry(b, n)
			}
			b.ReportMetric(perEntry, "B/entry")
		})
	}
}

func memoryPerEntry(b *testing.B, n int) float64 {
	ctx := context.Background()
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)

	c, err := New(Config{Size: n}, func(_ context.Context, k Key) (Token, error) { return benchToken(k), nil })
	if err != nil {
		b.Fatal(err)
	}
	payload := 0
	for i := range n {
		tok, _, err := c.Get(ctx, benchKey(i))
		if err != nil {
			b.Fatal(err)
		}
		payload += len(benchKey(i).Tenant) + len(benchKey(i).User) + len(tok.Value)
	}

	runtime.GC()
	runtime.ReadMemStats(&after)
	if c.Len() != n {
		b.Fatalf("Len = %d, want %d", c.Len(), n)
	}
	runtime.KeepAlive(c)
	c.Close()
	return float64(int64(after.HeapAlloc)-int64(before.HeapAlloc)-int64(payload)) / float64(n)
}

// filledCache returns a cache holding n entries and nothing else: the keys
// are not kept, so only the cache's own memory is live.
func filledCache(b *testing.B, n int) *Cache {
	c, err := New(Config{Size: n}, func(_ context.Context, k Key) (Token, error) { return benchToken(k), nil })
	if err != nil {
		b.Fatal(err)
	}
	for i := range n {
		k := benchKey(i)
		c.tokens.put(c.tokens.hash(k), k, benchToken(k), 0)
	}
	return c
}

// BenchmarkGCCycle times a full garbage collection with a filled cache
// alive: the work every GC cycle of a server spends on the cached tokens.
// entries=0 is the process without a cache, for comparison.
func BenchmarkGCCycle(b *testing.B) {
	benchMu.Lock()
	clear(benchSets)
	benchMu.Unlock()
	for _, n := range []int{0, 10_000, 100_000} {
		b.Run(fmt.Sprintf("entries=%d", n), func(b *testing.B) {
			var c *Cache
			if n > 0 {
				c = filledCache(b, n)
			}
			runtime.GC()
			for b.Loop() {
				runtime.GC()
			}
			runtime.KeepAlive(c)
		})
	}
}
