package tokencache

import (
	"hash/maphash"
	"math"
	"math/bits"
	"strings"
	"sync/atomic"
	"time"
	"unsafe"
)

// maxKeyPart is the longest tenant or user a table stores (lengths are kept
// in 16 bits); longer keys are never cached.
const maxKeyPart = math.MaxUint16

// maxTokenLen is the longest token a table stores (its length is kept in 32
// bits, and a record's size must fit an int); a longer one is never cached.
const maxTokenLen = math.MaxInt32 - 2*maxKeyPart - recordHeader - 7

// preallocEntries is how many entries a table has room for from the start
// (up to 8 MiB of slots): enough for the default cache size. A larger table
// doubles as entries arrive, and each doubling reinserts every entry under
// the write lock, a pause of about 0.25 µs per entry.
const preallocEntries = 1 << 17

// table holds the cached tokens in an open-addressing hash table (linear
// probing), bounded by CLOCK eviction: an LRU approximation in which a hit
// sets a bit instead of moving the entry, so hits only read shared state and
// run in parallel under a read lock. It is laid out for the hit path and the
// garbage collector:
//
//   - a hit reads one slot (32 bytes, next to its probe neighbours) and the
//     entry's record in the arena (tenant, user and token back to back), and
//     nothing else, however large the table;
//   - neither slots nor records hold pointers, so the GC neither scans nor
//     marks the cached entries: a GC cycle costs the same with ten tokens
//     cached as with a million;
//   - a lookup compares the full key, never just its hash.
//
// A table is not safe for concurrent use; Cache guards it. lookup may run
// under a read lock, everything else needs the write lock.
type table struct {
	seedTenant, seedUser maphash.Seed
	slots                []slot // empty slots have expiry 0
	arena                arena  // the entries' bytes
	n                    int    // entries
	max                  int    // entry bound
	hand                 int    // CLOCK hand: the next slot considered for eviction
	steps                uint32 // hand moves so far (wrapping)
}

type slot struct {
	hash   uint64
	expiry int64         // token expiry, Unix nanoseconds; 0 marks an empty slot
	rec    uint64        // the entry's record in table.arena
	used   atomic.Uint32 // CLOCK reference bit, set by hits under the read lock
	born   uint32        // table.steps when stored
}

func newTable(max int) *table {
	t := &table{seedTenant: maphash.MakeSeed(), seedUser: maphash.MakeSeed(), max: max}
	t.resize(initialSlots(max))
	return t
}

// resize gives the table n empty slots and restarts the hand.
func (t *table) resize(n int) {
	t.slots = make([]slot, n)
	t.hand = 0
}

func initialSlots(max int) int { return slotsFor(min(max, preallocEntries)) }

// slotsFor is the capacity that holds n entries at a load below 1/2. Linear
// probes stay short then even under constant eviction; at 3/4 the holes the
// hand leaves gather into long runs.
func slotsFor(n int) int { return 2*n + 1 }

// hash mixes independently seeded hashes of the two parts, so ("ab", "c")
// and ("a", "bc") hash apart.
func (t *table) hash(k Key) uint64 {
	return maphash.String(t.seedTenant, k.Tenant) ^ maphash.String(t.seedUser, k.User)
}

// home is where probing for h starts: h scaled onto the capacity, which
// need not be a power of two.
func (t *table) home(h uint64) int {
	hi, _ := bits.Mul64(h, uint64(len(t.slots)))
	return int(hi)
}

func (t *table) next(i int) int {
	if i++; i == len(t.slots) {
		return 0
	}
	return i
}

// find returns the index of k's slot and its token value, or -1. The value
// shares the arena's bytes, so a hit copies nothing.
func (t *table) find(h uint64, k Key) (int, string) {
	for i := t.home(h); t.slots[i].expiry != 0; i = t.next(i) {
		if t.slots[i].hash == h {
			if v, ok := t.arena.match(t.slots[i].rec, k); ok {
				return i, v
			}
		}
	}
	return -1, ""
}

// lookup returns k's token value and expiry (Unix nanoseconds), and marks
// its slot used.
func (t *table) lookup(h uint64, k Key) (value string, expiry int64, ok bool) {
	i, v := t.find(h, k)
	if i < 0 {
		return "", 0, false
	}
	s := &t.slots[i]
	if s.used.Load() == 0 { // read first: a hot entry's line stays clean
		s.used.Store(1)
	}
	return v, s.expiry, true
}

// peek is lookup without marking the slot used.
func (t *table) peek(h uint64, k Key) (value string, ok bool) {
	i, v := t.find(h, k)
	return v, i >= 0
}

// put stores tok for k. When the table is full it first evicts one entry
// and returns its key; expired entries (expiry ≤ now) go first.
func (t *table) put(h uint64, k Key, tok Token, now int64) (evicted Key, didEvict bool) {
	if len(k.Tenant) > maxKeyPart || len(k.User) > maxKeyPart || len(tok.Value) > maxTokenLen {
		return Key{}, false
	}
	i, _ := t.find(h, k)
	replacing := i >= 0
	if !replacing {
		if t.n >= t.max {
			evicted, didEvict = t.evict(now), true
		}
		if 2*(t.n+1) > len(t.slots) && len(t.slots) < slotsFor(t.max) {
			t.grow()
		}
		i = t.home(h)
		for t.slots[i].expiry != 0 {
			i = t.next(i)
		}
		t.n++
	}
	s := &t.slots[i]
	old := s.rec
	s.hash = h
	s.rec = t.arena.alloc(k.Tenant, k.User, tok.Value)
	s.expiry = unixNanos(tok.Expiry)
	s.used.Store(0)
	s.born = t.steps
	if replacing {
		t.release(old)
	}
	return evicted, didEvict
}

// grow doubles the capacity, up to what max entries need, and reinserts
// every entry. It runs about log2(max/preallocEntries) times while a cache
// larger than preallocEntries fills.
func (t *table) grow() {
	old := t.slots
	t.resize(min(2*len(old), slotsFor(t.max)))
	for i := range old {
		if old[i].expiry == 0 {
			continue
		}
		j := t.home(old[i].hash)
		for t.slots[j].expiry != 0 {
			j = t.next(j)
		}
		t.slots[j].moveFrom(&old[i])
	}
}

// evict removes the entry CLOCK picks and returns its key: the first, from
// the hand on, that is expired, or that was not used since the hand last
// passed and has been in the table for a whole sweep. The hand clears the
// bits it passes, so it stops within three sweeps.
//
// In classic CLOCK a new entry takes the evicted one's place just behind the
// hand; here it lands where it hashes, so its age stands in for that place.
// The hand moves down the table because filling a hole moves entries down
// (deleteAt): from slots the hand has passed in this sweep to others it has
// passed, so no entry skips its visit. A hand moving up would let every
// moved entry skip one.
func (t *table) evict(now int64) Key {
	for {
		i := t.hand
		if t.hand--; t.hand < 0 {
			t.hand = len(t.slots) - 1
		}
		t.steps++
		s := &t.slots[i]
		if s.expiry == 0 {
			continue
		}
		if s.expiry > now {
			if t.steps-s.born <= uint32(len(t.slots)) {
				continue // new this sweep
			}
			if s.used.Load() != 0 {
				s.used.Store(0)
				continue
			}
		}
		k, _ := t.arena.view(s.rec)
		k = Key{Tenant: strings.Clone(k.Tenant), User: strings.Clone(k.User)} // the caller may keep it
		t.deleteAt(i)
		return k
	}
}

// remove empties k's slot, reporting whether k was cached.
func (t *table) remove(h uint64, k Key) bool {
	i, _ := t.find(h, k)
	if i < 0 {
		return false
	}
	t.deleteAt(i)
	return true
}

// deleteAt empties slot i and shifts later entries of its probe run back,
// so that every entry stays reachable from its home without tombstones.
func (t *table) deleteAt(i int) {
	t.n--
	rec := t.slots[i].rec
	for j := t.next(i); t.slots[j].expiry != 0; j = t.next(j) {
		// The entry at j may fill the hole at i unless its home lies
		// cyclically in (i, j]: then it would end up before its home.
		h := t.home(t.slots[j].hash)
		if (i < j && (h <= i || h > j)) || (i > j && h <= i && h > j) {
			t.slots[i].moveFrom(&t.slots[j])
			i = j
		}
	}
	t.slots[i].clear()
	t.release(rec)
}

func (s *slot) moveFrom(o *slot) {
	s.hash, s.expiry, s.rec, s.born = o.hash, o.expiry, o.rec, o.born
	s.used.Store(o.used.Load())
}

func (s *slot) clear() {
	s.hash, s.expiry, s.rec, s.born = 0, 0, 0, 0
	s.used.Store(0)
}

// release frees a record that no slot refers to any more, and compacts the
// arena when its garbage has grown past a quarter.
func (t *table) release(rec uint64) {
	t.arena.release(rec)
	if page, ok := t.arena.victim(); ok {
		t.compact(page)
	}
}

// compact moves the live records of an arena page to the current page and
// repoints their slots; the page is dropped when its last record leaves.
// A record is live if the slot for its key refers to it.
func (t *table) compact(page uint32) {
	buf := t.arena.pages[page].buf
	for off := 0; off < len(buf) && t.arena.pages[page].live > 0; {
		tl, ul, vl := header(buf[off:])
		rec := ref(page, off)
		off += recordSize(tl, ul, vl)
		k, tok := t.arena.view(rec)
		if i, _ := t.find(t.hash(k), k); i >= 0 && t.slots[i].rec == rec {
			t.slots[i].rec = t.arena.alloc(k.Tenant, k.User, tok)
			t.arena.release(rec)
		}
	}
}

func (t *table) len() int { return t.n }

// bytes is the memory the table holds: its slots and the arena's pages.
func (t *table) bytes() int { return len(t.slots)*int(unsafe.Sizeof(slot{})) + t.arena.size }

func (t *table) purge() {
	t.resize(initialSlots(t.max))
	t.arena = arena{}
	t.n = 0
}

// unixNanos is an expiry as Unix nanoseconds, saturating outside the
// int64 range (years before 1678 count as expired, after 2262 as never).
func unixNanos(t time.Time) int64 {
	switch {
	case t.Before(time.Unix(0, 1)):
		return 1 // still non-zero: 0 marks an empty slot
	case t.After(time.Unix(0, math.MaxInt64)):
		return math.MaxInt64
	}
	return t.UnixNano()
}
