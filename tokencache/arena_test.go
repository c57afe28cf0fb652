package tokencache

import (
	"context"
	"math/rand/v2"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// checkArena verifies the arena's accounting against the table: every slot
// refers to a record holding its key, the live bytes are exactly the slots'
// records, and no page other than the current one is empty.
func checkArena(t *testing.T, tb *table) {
	t.Helper()
	a := &tb.arena
	pageLive := make(map[uint32]int)
	live := 0
	for i := range tb.slots {
		s := &tb.slots[i]
		if s.expiry == 0 {
			continue
		}
		k, v := a.view(s.rec)
		if tb.hash(k) != s.hash {
			t.Fatalf("slot %d: record holds %v, which does not hash to the slot", i, k)
		}
		n := recordSize(len(k.Tenant), len(k.User), len(v))
		pageLive[refPage(s.rec)] += n
		live += n
	}
	written, size := 0, 0
	for i := range a.pages {
		p := &a.pages[i]
		written += len(p.buf)
		size += cap(p.buf)
		if p.live != pageLive[uint32(i)] {
			t.Fatalf("page %d counts %d live bytes, its slots' records take %d", i, p.live, pageLive[uint32(i)])
		}
		if p.buf != nil && p.live == 0 && !a.isCur(uint32(i)) {
			t.Fatalf("page %d is empty but kept", i)
		}
	}
	if a.live != live || a.written != written || a.size != size {
		t.Fatalf("arena counts %d live of %d written in %d, pages hold %d of %d in %d", a.live, a.written, a.size, live, written, size)
	}
}

// TestArenaCompactionBoundsGarbage churns entries of varied sizes (new
// keys, refreshed keys, removals) through a table: the arena's garbage
// stays within a quarter of what it holds (plus a page), and every entry
// keeps its own token.
func TestArenaCompactionBoundsGarbage(t *testing.T) {
	const bound = 5_000
	tb := newTable(bound)
	rng := rand.New(rand.NewPCG(7, 7))
	exp := time.Now().Add(time.Hour)
	want := map[Key]string{}
	for i := range 200_000 {
		k := tableKey(rng.IntN(3 * bound))
		switch op := rng.IntN(10); {
		case op == 0:
			tb.remove(tb.hash(k), k)
			delete(want, k)
		default:
			v := strings.Repeat("v", rng.IntN(300)) + strconv.Itoa(i)
			if evicted, ok := tb.put(tb.hash(k), k, Token{Value: v, Expiry: exp}, 0); ok {
				delete(want, evicted)
			}
			want[k] = v
		}
		if a := &tb.arena; a.written-a.live > max(pageSize, a.written/4)+pageSize {
			t.Fatalf("after %d operations: %d of %d bytes written are garbage", i, a.written-a.live, a.written)
		}
	}
	checkArena(t, tb)
	if len(want) != tb.len() {
		t.Fatalf("table holds %d entries, want %d", tb.len(), len(want))
	}
	for k, v := range want {
		if got, ok := tb.peek(tb.hash(k), k); !ok || got != v {
			t.Fatalf("%v: wrong or missing token", k)
		}
	}
	t.Logf("%d entries: %d live bytes, %d written, %d pages", tb.len(), tb.arena.live, tb.arena.written, len(tb.arena.pages)-len(tb.arena.free))
}

// TestArenaTokenOutlivesEntry: a token handed out shares the arena's bytes,
// so it must keep its value after its entry is replaced, evicted and its
// page compacted away and collected.
func TestArenaTokenOutlivesEntry(t *testing.T) {
	tb := newTable(100)
	exp := time.Now().Add(time.Hour)
	k := tableKey(0)
	tb.put(tb.hash(k), k, Token{Value: "first-token", Expiry: exp}, 0)
	held, _ := tb.peek(tb.hash(k), k)
	tb.put(tb.hash(k), k, Token{Value: "second-token", Expiry: exp}, 0)
	for i := range 50_000 { // many pages' worth of churn through 100 entries
		k := tableKey(i + 1)
		tb.put(tb.hash(k), k, Token{Value: strings.Repeat("x", 100), Expiry: exp}, 0)
		if i%10_000 == 0 {
			runtime.GC()
		}
	}
	runtime.GC()
	if held != "first-token" {
		t.Fatalf("a handed-out token changed to %q", held)
	}
	checkArena(t, tb)
}

// TestArenaLargeToken: a record over a quarter page gets a page of its own,
// dropped as soon as the entry goes.
func TestArenaLargeToken(t *testing.T) {
	exp := time.Now().Add(time.Hour)
	big := strings.Repeat("b", pageSize) // larger than a page
	k := tableKey(1)
	for _, first := range []string{"small", big} { // after a small token, and into an empty arena
		tb := newTable(10)
		tb.put(tb.hash(k), k, Token{Value: first, Expiry: exp}, 0)
		tb.put(tb.hash(k), k, Token{Value: big, Expiry: exp}, 0)
		if v, ok := tb.peek(tb.hash(k), k); !ok || v != big {
			t.Fatal("large token not stored")
		}
		checkArena(t, tb)
		tb.remove(tb.hash(k), k)
		checkArena(t, tb)
		if tb.arena.live != 0 || tb.arena.written >= pageSize/4 {
			t.Fatalf("after removing every entry: %d bytes written, %d live (a large page was kept)", tb.arena.written, tb.arena.live)
		}
	}
}

// TestConcurrentHitsDuringCompaction runs hits while misses evict, refill
// and compact the arena: every token is its own key's, and tokens held
// across the churn keep their values (run it with -race too).
func TestConcurrentHitsDuringCompaction(t *testing.T) {
	// 500 tokens of 1 KB outgrow a page, so the churn compacts.
	tokenFor := func(k Key) string { return "tok/" + k.Tenant + "/" + k.User + "/" + strings.Repeat("p", 1000) }
	c, err := New(Config{Size: 500, RefreshAhead: -1}, func(_ context.Context, k Key) (Token, error) {
		return Token{Value: tokenFor(k), Expiry: time.Now().Add(time.Hour)}, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w), 1))
			held := map[Key]string{}
			for range 20_000 {
				k := tableKey(rng.IntN(2_000))
				tok, _, err := c.Get(context.Background(), k)
				if err != nil {
					t.Error(err)
					return
				}
				if tok.Value != tokenFor(k) {
					t.Errorf("%v got %q", k, tok.Value)
					return
				}
				if len(held) < 100 {
					held[k] = tok.Value
				}
			}
			for k, v := range held {
				if v != tokenFor(k) {
					t.Errorf("a held token for %v changed to %q", k, v)
				}
			}
		})
	}
	wg.Wait()
	c.mu.RLock()
	checkArena(t, c.tokens)
	c.mu.RUnlock()
}

// TestCacheBytes: Bytes counts the table and the arena's pages, follows
// large tokens in and out, and drops to the table alone after Purge.
func TestCacheBytes(t *testing.T) {
	big := strings.Repeat("t", pageSize)
	c, err := New(Config{Size: 10}, func(_ context.Context, k Key) (Token, error) {
		v := "small"
		if k.User == "big" {
			v = big
		}
		return Token{Value: v, Expiry: time.Now().Add(time.Hour)}, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	empty := c.Bytes()
	if want := slotsFor(10) * 32; empty != want {
		t.Fatalf("empty cache: %d bytes, want %d (the slots)", empty, want)
	}
	for _, user := range []string{"small", "big"} {
		if _, _, err := c.Get(context.Background(), Key{Tenant: "t", User: user}); err != nil {
			t.Fatal(err)
		}
	}
	if got, want := c.Bytes(), empty+pageSize+recordSize(1, 3, len(big)); got != want {
		t.Fatalf("with a small and a large token: %d bytes, want %d", got, want)
	}
	c.Evict(Key{Tenant: "t", User: "big"})
	if got, want := c.Bytes(), empty+pageSize; got != want {
		t.Fatalf("after evicting the large token: %d bytes, want %d", got, want)
	}
	c.Purge()
	if got := c.Bytes(); got != empty {
		t.Fatalf("after Purge: %d bytes, want %d", got, empty)
	}
}
