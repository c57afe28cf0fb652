package tokencache

import (
	"hash/maphash"
	"math"
	"math/bits"
	"sync/atomic"
	"time"
)

// maxKeyPart is the longest tenant or user a table stores (lengths are kept
// in 16 bits); longer keys are never cached.
const maxKeyPart = math.MaxUint16

// preallocEntries is how many entries a table has room for from the start
// (up to 12 MiB of slots): enough for the default cache size. A larger table
// doubles as entries arrive, and each doubling reinserts every entry under
// the write lock, a pause of about 0.25 µs per entry.
const preallocEntries = 1 << 17

// table holds the cached tokens in an open-addressing hash table (linear
// probing), bounded by CLOCK eviction: an LRU approximation in which a hit
// sets a bit instead of moving the entry, so hits only read shared state and
// run in parallel under a read lock. It is laid out for the hit path and the
// garbage collector:
//
//   - a hit reads one slot (48 bytes, next to its probe neighbours) and the
//     entry's string, and nothing else, however large the table;
//   - each slot has a single pointer, to a string holding the tenant, the
//     user and the token back to back: one allocation per entry and one
//     object for the GC to mark;
//   - a lookup compares the full key, never just its hash.
//
// A table is not safe for concurrent use; Cache guards it. lookup may run
// under a read lock, everything else needs the write lock.
type table struct {
	seedTenant, seedUser maphash.Seed
	slots                []slot // empty slots have expiry 0
	n                    int    // entries
	max                  int    // entry bound
	hand                 int    // CLOCK hand: the next slot considered for eviction
	steps                uint32 // hand moves so far (wrapping)
}

type slot struct {
	hash      uint64
	expiry    int64  // token expiry, Unix nanoseconds; 0 marks an empty slot
	data      string // tenant + user + token
	tenantLen uint16
	userLen   uint16
	used      atomic.Uint32 // CLOCK reference bit, set by hits under the read lock
	born      uint32        // table.steps when stored
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

func (s *slot) key() Key {
	tl, ul := int(s.tenantLen), int(s.userLen)
	return Key{Tenant: s.data[:tl], User: s.data[tl : tl+ul]}
}

func (s *slot) token() Token {
	return Token{Value: s.data[int(s.tenantLen)+int(s.userLen):], Expiry: time.Unix(0, s.expiry)}
}

func (s *slot) holds(h uint64, k Key) bool {
	tl := int(s.tenantLen)
	return s.hash == h && int(s.userLen) == len(k.User) && tl == len(k.Tenant) &&
		s.data[:tl] == k.Tenant && s.data[tl:tl+len(k.User)] == k.User
}

// find returns the index of k's slot, or -1.
func (t *table) find(h uint64, k Key) int {
	for i := t.home(h); t.slots[i].expiry != 0; i = t.next(i) {
		if t.slots[i].holds(h, k) {
			return i
		}
	}
	return -1
}

// lookup returns the slot holding k, or nil, and marks it used.
func (t *table) lookup(h uint64, k Key) *slot {
	i := t.find(h, k)
	if i < 0 {
		return nil
	}
	s := &t.slots[i]
	if s.used.Load() == 0 { // read first: a hot entry's line stays clean
		s.used.Store(1)
	}
	return s
}

// peek is lookup without marking the slot used.
func (t *table) peek(h uint64, k Key) *slot {
	if i := t.find(h, k); i >= 0 {
		return &t.slots[i]
	}
	return nil
}

// put stores tok for k. When the table is full it first evicts one entry
// and returns its key; expired entries (expiry ≤ now) go first.
func (t *table) put(h uint64, k Key, tok Token, now int64) (evicted Key, didEvict bool) {
	if len(k.Tenant) > maxKeyPart || len(k.User) > maxKeyPart {
		return Key{}, false
	}
	i := t.find(h, k)
	if i < 0 {
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
	s.hash = h
	s.data = k.Tenant + k.User + tok.Value
	s.tenantLen, s.userLen = uint16(len(k.Tenant)), uint16(len(k.User))
	s.expiry = unixNanos(tok.Expiry)
	s.used.Store(0)
	s.born = t.steps
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
		k := s.key()
		t.deleteAt(i)
		return k
	}
}

// remove empties k's slot, reporting whether k was cached.
func (t *table) remove(h uint64, k Key) bool {
	i := t.find(h, k)
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
}

func (s *slot) moveFrom(o *slot) {
	s.hash, s.expiry, s.data, s.tenantLen, s.userLen, s.born = o.hash, o.expiry, o.data, o.tenantLen, o.userLen, o.born
	s.used.Store(o.used.Load())
}

func (s *slot) clear() {
	s.hash, s.expiry, s.data, s.tenantLen, s.userLen, s.born = 0, 0, "", 0, 0, 0 // drops the string for the GC
	s.used.Store(0)
}

func (t *table) len() int { return t.n }

func (t *table) purge() {
	t.resize(initialSlots(t.max))
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
