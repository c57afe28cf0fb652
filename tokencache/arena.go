package tokencache

import (
	"encoding/binary"
	"unsafe"
)

// pageSize is the size of an arena page. A record larger than a quarter of
// it gets a page of its own, so a page never wastes more than a quarter on
// its tail.
const pageSize = 256 << 10

// recordHeader precedes every record: the tenant's and the user's lengths
// (16 bits each) and the token's (32 bits).
const recordHeader = 8

// arena stores the cached entries' bytes (tenant + user + token, after a
// header) in pages of plain bytes, so the garbage collector never scans or
// marks them one by one: the cache costs each GC cycle a few objects however
// many tokens it holds.
//
// Pages are append-only: bytes once written are never written again. That
// is what lets lookups hand out strings that point into a page without
// copying: a freed record's bytes stay as they were, and a page
// leaves the arena only by being dropped, never reused, so a string the
// caller still holds keeps its page alive through the GC and keeps its value.
// Freed records are garbage until their page is dropped: compaction copies a
// page's live records to the current page and drops it once garbage exceeds
// a quarter of the bytes written.
type arena struct {
	pages   []arenaPage // by page number; a dropped page has a nil buf
	free    []uint32    // dropped page numbers, for reuse by new pages
	cur     uint32      // the page appends go to, if hasCur
	hasCur  bool
	written int // bytes in the pages' records, live or not
	live    int // bytes in live records
	size    int // bytes in the pages, written or not
}

type arenaPage struct {
	buf  []byte // records; cap is the page's size
	live int    // bytes in its live records
}

// ref is where a record starts: its page number in the high 32 bits and its
// offset in the page in the low 32.
func ref(page uint32, off int) uint64 { return uint64(page)<<32 | uint64(off) }

func refPage(r uint64) uint32 { return uint32(r >> 32) }
func refOff(r uint64) int     { return int(uint32(r)) }

// recordSize is a record's size, padded to 8 bytes to keep headers aligned.
func recordSize(tenant, user, token int) int {
	return (recordHeader + tenant + user + token + 7) &^ 7
}

// alloc appends a record and returns its ref. tenant and user must be at
// most maxKeyPart bytes long, token at most maxTokenLen.
func (a *arena) alloc(tenant, user, token string) uint64 {
	n := recordSize(len(tenant), len(user), len(token))
	var pageNo uint32
	switch {
	case n > pageSize/4:
		pageNo = a.newPage(n) // a page of its own; appends stay on cur
	case !a.hasCur || cap(a.pages[a.cur].buf)-len(a.pages[a.cur].buf) < n:
		if a.hasCur && a.pages[a.cur].live == 0 { // release kept it only for appends
			a.drop(a.cur)
		}
		a.cur, a.hasCur = a.newPage(pageSize), true
		pageNo = a.cur
	default:
		pageNo = a.cur
	}
	p := &a.pages[pageNo]
	off := len(p.buf)
	p.buf = p.buf[:off+n]
	rec := p.buf[off:]
	binary.LittleEndian.PutUint16(rec, uint16(len(tenant)))
	binary.LittleEndian.PutUint16(rec[2:], uint16(len(user)))
	binary.LittleEndian.PutUint32(rec[4:], uint32(len(token)))
	data := rec[recordHeader:]
	data = data[copy(data, tenant):]
	data = data[copy(data, user):]
	copy(data, token)
	p.live += n
	a.written += n
	a.live += n
	return ref(pageNo, off)
}

func (a *arena) newPage(size int) uint32 {
	p := arenaPage{buf: make([]byte, 0, size)}
	a.size += size
	if k := len(a.free); k > 0 {
		i := a.free[k-1]
		a.free = a.free[:k-1]
		a.pages[i] = p
		return i
	}
	a.pages = append(a.pages, p)
	return uint32(len(a.pages) - 1)
}

// record returns the record at r and the lengths from its header.
func (a *arena) record(r uint64) (rec []byte, tenant, user, token int) {
	rec = a.pages[refPage(r)].buf[refOff(r):]
	tenant, user, token = header(rec)
	return rec, tenant, user, token
}

// header reads the lengths at the start of a record.
func header(rec []byte) (tenant, user, token int) {
	h := binary.LittleEndian.Uint64(rec)
	return int(uint16(h)), int(uint16(h >> 16)), int(h >> 32)
}

// match returns the token in the record at r if the record is k's. The
// token shares the page's bytes (see arena).
func (a *arena) match(r uint64, k Key) (token string, ok bool) {
	rk, v := a.view(r)
	return v, rk == k
}

// view returns the record's parts as strings sharing the page's bytes
// (safe because pages are append-only; see arena).
func (a *arena) view(r uint64) (k Key, token string) {
	rec, tl, ul, vl := a.record(r)
	rec = rec[recordHeader : recordHeader+tl+ul+vl]
	return Key{Tenant: bytesString(rec[:tl]), User: bytesString(rec[tl : tl+ul])}, bytesString(rec[tl+ul:])
}

func bytesString(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	return unsafe.String(&b[0], len(b))
}

// release marks the record at r garbage. A page left without live records
// is dropped at once (unless appends still go to it).
func (a *arena) release(r uint64) {
	_, tl, ul, vl := a.record(r)
	n := recordSize(tl, ul, vl)
	pageNo := refPage(r)
	p := &a.pages[pageNo]
	p.live -= n
	a.live -= n
	if p.live == 0 && !a.isCur(pageNo) {
		a.drop(pageNo)
	}
}

func (a *arena) isCur(pageNo uint32) bool { return a.hasCur && pageNo == a.cur }

func (a *arena) drop(pageNo uint32) {
	p := &a.pages[pageNo]
	a.written -= len(p.buf)
	a.size -= cap(p.buf)
	*p = arenaPage{} // the GC frees buf once no handed-out token points into it
	a.free = append(a.free, pageNo)
}

// victim returns the page compaction should empty next, if garbage outside
// the current page exceeds a quarter of the bytes written: the page with the
// most garbage, which holds at least the average, so copying its live bytes
// costs at most three bytes per byte of garbage freed.
func (a *arena) victim() (uint32, bool) {
	garbage := a.written - a.live
	if a.hasCur {
		garbage -= len(a.pages[a.cur].buf) - a.pages[a.cur].live
	}
	if garbage < pageSize || 4*garbage <= a.written {
		return 0, false
	}
	best, most := uint32(0), 0
	for i := range a.pages {
		p := &a.pages[i]
		if g := len(p.buf) - p.live; !a.isCur(uint32(i)) && g > most {
			best, most = uint32(i), g
		}
	}
	return best, most > 0
}
