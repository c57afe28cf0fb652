package tokencache

import (
	"strconv"
	"strings"
	"testing"
	"time"
)

func tableKey(i int) Key {
	return Key{Tenant: "tenant-" + strconv.Itoa(i%1000), User: "user-" + strconv.Itoa(i)}
}

// TestTableChurnKeepsProbesShort cycles ten times the table's bound through
// it: eviction must not gather the entries into long probe runs (with the
// hand moving up, or at a load of 3/4, runs grew to tens of thousands).
func TestTableChurnKeepsProbesShort(t *testing.T) {
	const bound, total = 20_000, 200_000
	tb := newTable(bound)
	tok := Token{Value: "v", Expiry: time.Now().Add(time.Hour)}
	for i := range total {
		k := tableKey(i)
		tb.put(tb.hash(k), k, tok, 0)
	}
	if tb.len() != bound {
		t.Fatalf("len = %d, want %d", tb.len(), bound)
	}
	longest, run, displacement := 0, 0, 0
	for j := range tb.slots {
		if tb.slots[j].expiry == 0 {
			run = 0
			continue
		}
		run++
		longest = max(longest, run)
		d := j - tb.home(tb.slots[j].hash)
		if d < 0 {
			d += len(tb.slots)
		}
		displacement += d
	}
	mean := float64(displacement) / bound
	t.Logf("after %d entries through %d slots: longest run %d, mean displacement %.2f", total, len(tb.slots), longest, mean)
	if mean > 2 || longest > 500 {
		t.Errorf("probe runs grew: longest %d, mean displacement %.2f", longest, mean)
	}
	for i := total - bound/2; i < total; i++ { // the newest are all there
		if k := tableKey(i); !found(tb.peek(tb.hash(k), k)) {
			t.Fatalf("entry %d missing", i)
		}
	}
}

// TestTableSameHash stores keys under one forced hash: each still finds its
// own token, and removing one leaves the others reachable.
func TestTableSameHash(t *testing.T) {
	tb := newTable(10)
	const h = 42
	expiry := time.Now().Add(time.Hour)
	keys := []Key{{"a", "bc"}, {"ab", "c"}, {"abc", ""}, {"x", "y"}}
	for i, k := range keys {
		tb.put(h, k, Token{Value: "tok-" + strconv.Itoa(i), Expiry: expiry}, 0)
	}
	for i, k := range keys {
		if v, exp, ok := tb.lookup(h, k); !ok || v != "tok-"+strconv.Itoa(i) || exp != unixNanos(expiry) {
			t.Fatalf("lookup(%v) = %q, %v, %v", k, v, exp, ok)
		}
	}
	if !tb.remove(h, keys[1]) || tb.remove(h, keys[1]) {
		t.Fatal("remove did not report the removal once")
	}
	for i, k := range keys {
		if _, got := tb.peek(h, k); got != (i != 1) {
			t.Fatalf("after removing %v: peek(%v) found = %v", keys[1], k, got)
		}
	}
	if tb.len() != 3 {
		t.Fatalf("len = %d, want 3", tb.len())
	}
}

func TestTableEvictsExpiredFirst(t *testing.T) {
	tb := newTable(3)
	now := time.Now()
	live, stale := Token{Value: "live", Expiry: now.Add(time.Hour)}, Token{Value: "stale", Expiry: now.Add(-time.Second)}
	for i, tok := range []Token{live, stale, live} {
		k := tableKey(i)
		tb.put(tb.hash(k), k, tok, now.UnixNano())
	}
	k := tableKey(3)
	if evicted, ok := tb.put(tb.hash(k), k, live, now.UnixNano()); !ok || evicted != tableKey(1) {
		t.Fatalf("evicted %v (%v), want the expired %v", evicted, ok, tableKey(1))
	}
}

func TestTableKeepsNoOverlongKey(t *testing.T) {
	tb := newTable(3)
	k := Key{Tenant: "t", User: strings.Repeat("u", maxKeyPart+1)}
	tb.put(tb.hash(k), k, Token{Value: "v", Expiry: time.Now().Add(time.Hour)}, 0)
	if tb.len() != 0 || found(tb.peek(tb.hash(k), k)) {
		t.Fatal("a key part longer than 65535 bytes was stored")
	}
}

func found(_ string, ok bool) bool { return ok }
