package gateway

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync/atomic"
	"unicode/utf8"
)

// maxIdentityLen bounds an identity value; ids longer than this are not ids.
const maxIdentityLen = 256

// The refusals of identity; the code doubles as the metric label.
var (
	ErrIdentityMissing   = &Error{Status: http.StatusUnauthorized, Code: "identity_missing", Message: "the request carries no identity headers"}
	ErrIdentityUntrusted = &Error{Status: http.StatusForbidden, Code: "identity_untrusted", Message: "identity headers are only accepted from trusted sources"}
	ErrIdentityInvalid   = &Error{Status: http.StatusBadRequest, Code: "identity_invalid", Message: "an identity header must appear once, with 1-256 printable bytes"}
)

// IdentityRules read the trusted identity of a request: the one way every
// route (zapier_auth's proxy and every capability) learns who the user is.
type IdentityRules struct {
	userHeader   string // canonical
	tenantHeader string // canonical
	trusted      []netip.Prefix
	// lastTrusted is the host part of the last RemoteAddr found trusted. A
	// sidecar's callers are nearly always one host, so most requests skip
	// parsing it. Nil disables the memo.
	lastTrusted *atomic.Pointer[string]
}

// NewIdentityRules returns the rules for the two (canonical) header names
// and the peers trusted to assert them.
func NewIdentityRules(userHeader, tenantHeader string, trusted []netip.Prefix) IdentityRules {
	return IdentityRules{userHeader: userHeader, tenantHeader: tenantHeader, trusted: trusted, lastTrusted: new(atomic.Pointer[string])}
}

// Extract returns the (tenant, user) asserted by the request and removes
// every spelling of the identity headers from it, so they never travel
// upstream. Header names not in Go's canonical form that fold to an identity
// header (X_Zapier_User, x-zapier_user) are spoofing attempts: removed, never
// read.
func (ir *IdentityRules) Extract(r *http.Request) (tenant, user string, ierr *Error) {
	users := r.Header[ir.userHeader]
	tenants := r.Header[ir.tenantHeader]
	delete(r.Header, ir.userHeader)
	delete(r.Header, ir.tenantHeader)
	spoofed := ir.removeVariants(r.Header)

	if len(users) == 0 && len(tenants) == 0 && !spoofed {
		return "", "", ErrIdentityMissing
	}
	if !ir.IsTrusted(r.RemoteAddr) {
		return "", "", ErrIdentityUntrusted
	}
	if len(users) == 0 || len(tenants) == 0 {
		if len(users) > 1 || len(tenants) > 1 {
			return "", "", ErrIdentityInvalid
		}
		return "", "", ErrIdentityMissing
	}
	if len(users) != 1 || len(tenants) != 1 || !ValidIdentity(users[0]) || !ValidIdentity(tenants[0]) {
		return "", "", ErrIdentityInvalid
	}
	return tenants[0], users[0], nil
}

// removeVariants deletes header names that are not canonical but fold to an
// identity header when '_' is read as '-' and case is ignored.
func (ir *IdentityRules) removeVariants(h http.Header) (found bool) {
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

// IsTrusted checks the immediate peer, never X-Forwarded-For: a forwarded
// header is just another claim by the peer.
func (ir *IdentityRules) IsTrusted(remoteAddr string) bool {
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

func (ir *IdentityRules) trusts(addr netip.Addr) bool {
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

// ValidIdentity accepts 1-256 bytes of valid UTF-8 without control
// characters.
func ValidIdentity(v string) bool {
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

// LogHash is how an identity appears in logs: a short keyed hash, so
// lines about one user can be correlated without naming the user.
func LogHash(tenant, user string) string {
	m := hmac.New(sha256.New, identityHashKey)
	m.Write([]byte(tenant))
	m.Write([]byte{0})
	m.Write([]byte(user))
	return hex.EncodeToString(m.Sum(nil)[:6])
}

// Strip removes every spelling of the identity headers from r without
// reading them: a refused request still never carries them upstream.
func (ir *IdentityRules) Strip(r *http.Request) {
	delete(r.Header, ir.userHeader)
	delete(r.Header, ir.tenantHeader)
	ir.removeVariants(r.Header)
}

// ParseTrustedSources accepts CIDRs and single addresses. An empty list is
// refused: it would make every identity header untrusted by accident.
func ParseTrustedSources(sources []string) ([]netip.Prefix, error) {
	if len(sources) == 0 {
		return nil, errors.New("at least one CIDR is required")
	}
	prefixes := make([]netip.Prefix, 0, len(sources))
	for _, s := range sources {
		if strings.Contains(s, "/") {
			p, err := netip.ParsePrefix(s)
			if err != nil {
				return nil, fmt.Errorf("malformed CIDR %q", s)
			}
			prefixes = append(prefixes, p.Masked())
			continue
		}
		addr, err := netip.ParseAddr(s)
		if err != nil {
			return nil, fmt.Errorf("malformed address %q", s)
		}
		prefixes = append(prefixes, netip.PrefixFrom(addr, addr.BitLen()))
	}
	return prefixes, nil
}

// TrustsEveryone reports whether the list holds 0.0.0.0/0 or ::/0. That is
// allowed, because it is spelled out, but never the default.
func TrustsEveryone(prefixes []netip.Prefix) bool {
	for _, p := range prefixes {
		if p.Bits() == 0 {
			return true
		}
	}
	return false
}
