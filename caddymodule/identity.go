package caddymodule

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync/atomic"
	"unicode/utf8"
)

// maxIdentityLen bounds an identity value; ids longer than this are not ids.
const maxIdentityLen = 256

// identityError is a refusal with its error code; the reason doubles as the
// metric label.
type identityError struct {
	status  int
	code    string
	message string
}

var (
	errIdentityMissing   = &identityError{http.StatusUnauthorized, "identity_missing", "the request carries no identity headers"}
	errIdentityUntrusted = &identityError{http.StatusForbidden, "identity_untrusted", "identity headers are only accepted from trusted sources"}
	errIdentityInvalid   = &identityError{http.StatusBadRequest, "identity_invalid", "an identity header must appear once, with 1-256 printable bytes"}
)

// identityRules is the plain part of identity handling, kept apart from the
// handler so it can be tested and fuzzed directly.
type identityRules struct {
	userHeader   string // canonical
	tenantHeader string // canonical
	trusted      []netip.Prefix
	// lastTrusted is the host part of the last RemoteAddr found trusted. A
	// sidecar's callers are nearly always one host, so most requests skip
	// parsing it. Nil disables the memo.
	lastTrusted *atomic.Pointer[string]
}

func newIdentityRules(userHeader, tenantHeader string, trusted []netip.Prefix) identityRules {
	return identityRules{userHeader: userHeader, tenantHeader: tenantHeader, trusted: trusted, lastTrusted: new(atomic.Pointer[string])}
}

// extract returns the (tenant, user) asserted by the request and removes
// every spelling of the identity headers from it, so they never travel
// upstream. Header names not in Go's canonical form that fold to an identity
// header (X_Zapier_User, x-zapier_user) are spoofing attempts: removed, never
// read.
func (ir *identityRules) extract(r *http.Request) (tenant, user string, ierr *identityError) {
	users := r.Header[ir.userHeader]
	tenants := r.Header[ir.tenantHeader]
	delete(r.Header, ir.userHeader)
	delete(r.Header, ir.tenantHeader)
	spoofed := ir.removeVariants(r.Header)

	if len(users) == 0 && len(tenants) == 0 && !spoofed {
		return "", "", errIdentityMissing
	}
	if !ir.isTrusted(r.RemoteAddr) {
		return "", "", errIdentityUntrusted
	}
	if len(users) == 0 || len(tenants) == 0 {
		if len(users) > 1 || len(tenants) > 1 {
			return "", "", errIdentityInvalid
		}
		return "", "", errIdentityMissing
	}
	if len(users) != 1 || len(tenants) != 1 || !validIdentity(users[0]) || !validIdentity(tenants[0]) {
		return "", "", errIdentityInvalid
	}
	return tenants[0], users[0], nil
}

// removeVariants deletes header names that are not canonical but fold to an
// identity header when '_' is read as '-' and case is ignored.
func (ir *identityRules) removeVariants(h http.Header) (found bool) {
	for name := range h {
		if name == ir.userHeader || name == ir.tenantHeader {
			continue
		}
		if foldsTo(name, ir.userHeader) || foldsTo(name, ir.tenantHeader) {
			delete(h, name)
			found = true
		}
	}
	return found
}

// foldsTo reports whether name equals canonical ignoring ASCII case and
// treating '_' as '-'.
func foldsTo(name, canonical string) bool {
	if len(name) != len(canonical) {
		return false
	}
	for i := 0; i < len(name); i++ {
		a, b := name[i], canonical[i]
		if a == '_' {
			a = '-'
		}
		if 'A' <= a && a <= 'Z' {
			a += 'a' - 'A'
		}
		if 'A' <= b && b <= 'Z' {
			b += 'a' - 'A'
		}
		if a != b {
			return false
		}
	}
	return true
}

// isTrusted checks the immediate peer, never X-Forwarded-For: a forwarded
// header is just another claim by the peer.
func (ir *identityRules) isTrusted(remoteAddr string) bool {
	i := strings.LastIndexByte(remoteAddr, ':')
	if ir.lastTrusted != nil && i > 0 {
		if last := ir.lastTrusted.Load(); last != nil && *last == remoteAddr[:i] {
			return true
		}
	}
	ap, err := netip.ParseAddrPort(remoteAddr)
	if err != nil { // not "ip:port": parsed the slow way, never memoized
		addr, err := peerAddr(remoteAddr)
		return err == nil && ir.trusts(addr)
	}
	if !ir.trusts(ap.Addr()) {
		return false
	}
	if ir.lastTrusted != nil {
		// remoteAddr[:i] is exactly the address ParseAddrPort read, so any
		// RemoteAddr with this host part is this address.
		host := strings.Clone(remoteAddr[:i])
		ir.lastTrusted.Store(&host)
	}
	return true
}

func (ir *identityRules) trusts(addr netip.Addr) bool {
	addr = addr.Unmap()
	for _, p := range ir.trusted {
		if p.Contains(addr) {
			return true
		}
	}
	return false
}

// peerAddr parses a RemoteAddr that is not "ip:port": whatever
// net.SplitHostPort and netip.ParseAddr make of it.
func peerAddr(remoteAddr string) (netip.Addr, error) {
	host, _, err := net.SplitHostPort(remoteAddr)
	if err != nil {
		host = remoteAddr
	}
	return netip.ParseAddr(host)
}

// validIdentity accepts 1-256 bytes of valid UTF-8 without control
// characters.
func validIdentity(v string) bool {
	if len(v) == 0 || len(v) > maxIdentityLen {
		return false
	}
	// Ids are nearly always ASCII: one pass over the bytes decides.
	for i := 0; i < len(v); i++ {
		c := v[i]
		if c >= utf8.RuneSelf {
			return validUTF8Identity(v)
		}
		if c < 0x20 || c == 0x7f {
			return false
		}
	}
	return true
}

// validUTF8Identity is validIdentity for values with non-ASCII bytes: valid
// UTF-8, no C0 or C1 control character, no DEL.
func validUTF8Identity(v string) bool {
	if !utf8.ValidString(v) {
		return false
	}
	for _, c := range v {
		if c < 0x20 || c == 0x7f || (c >= 0x80 && c < 0xa0) {
			return false
		}
	}
	return true
}

// identityHashKey makes identity hashes in logs unlinkable across processes
// and unguessable from a list of user ids.
var identityHashKey = func() []byte {
	k := make([]byte, 32)
	_, _ = rand.Read(k)
	return k
}()

// identityHash is how an identity appears in logs: a short keyed hash, so
// lines about one user can be correlated without naming the user.
func identityHash(tenant, user string) string {
	m := hmac.New(sha256.New, identityHashKey)
	m.Write([]byte(tenant))
	m.Write([]byte{0})
	m.Write([]byte(user))
	return hex.EncodeToString(m.Sum(nil)[:6])
}
